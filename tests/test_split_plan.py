"""Split inference without devices: cutting a .tflite, the benchmark_model stand-in's new
flags run as a host process, the op-profile table and its parser, the planner and the
re-partitioning rule."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from adbflow.errors import CutError, SplitError
from adbflow.parsers.benchmark_model import parse_benchmark_model
from adbflow.parsers.tflite_model import model_cost, op_infos
from adbflow.paths import ASSETS_DIR, PROFILES_DIR, REPO_DIR
from adbflow.scheduling.bids import Bid
from adbflow.scheduling.profiles import ProfileBook
from adbflow.split.plan import (
    Cut,
    Link,
    OpTimes,
    Snapshot,
    choose_plan,
    format_plan,
    phone_state,
    replan_reason,
)
from adbflow.split.profiling import op_ms_from_profile
from adbflow.split.session import PlanLog, SplitSession
from adbflow.split.tflite_cut import cut_points, find_cut, split_model

LITE0 = ASSETS_DIR / "efficientnet_lite0_imagenet.tflite"


@pytest.fixture(scope="module")
def lite0() -> bytes:
    return LITE0.read_bytes()


def _interp(data: bytes):
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_content=data, num_threads=1)
    it.allocate_tensors()
    return it


def _invoke(data: bytes, x: np.ndarray) -> np.ndarray:
    it = _interp(data)
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]).copy()


# ------------------------------------------------------------------------------ cutting

def test_lite0_has_38_single_tensor_cut_points_with_shapes_and_bytes(lite0):
    pts = cut_points(lite0)
    assert len(pts) == 38
    assert all(p.nbytes == int(np.prod(p.shape)) * 4 for p in pts)   # float32
    assert [p.op_index for p in pts] == sorted(p.op_index for p in pts)
    assert pts[-1].shape == (1, 1000) and pts[-2].shape == (1, 1280)


def test_head_then_tail_is_bit_exact_at_every_cut_point(lite0):
    x = (np.random.default_rng(7).random((1, 224, 224, 3)) * 255).astype(np.float32)
    ref = _invoke(lite0, x)
    for p in cut_points(lite0):
        sm = split_model(lite0, p.op_index, input_name="input")
        head = _interp(sm.head)
        assert head.get_input_details()[0]["name"] == "input"
        assert [d["name"] for d in head.get_output_details()] == ["cut"]
        head.set_tensor(head.get_input_details()[0]["index"], x)
        head.invoke()
        cut = head.get_tensor(head.get_output_details()[0]["index"])
        assert cut.nbytes == p.nbytes
        y = _invoke(sm.tail, cut)
        assert np.max(np.abs(y.astype(np.float64) - ref)) == 0.0, p.describe()


def test_parts_drop_unused_buffers_and_the_signature(lite0):
    from ai_edge_litert import schema_py_generated as schema
    p = cut_points(lite0)[10]
    sm = split_model(lite0, p.op_index)
    assert len(sm.head) + len(sm.tail) < len(lite0) * 1.05
    assert len(sm.head) < len(lite0) / 4
    for part in (sm.head, sm.tail):
        m = schema.ModelT.InitFromPackedBuf(bytearray(part), 0)
        assert not m.signatureDefs and not m.metadata
        used = {t.buffer for t in m.subgraphs[0].tensors}
        assert used | {0} == set(range(len(m.buffers)))
    assert model_cost(sm.head) + model_cost(sm.tail) == pytest.approx(model_cost(lite0), rel=0.01)


def test_int8_model_cuts_bit_exact():
    data = (ASSETS_DIR / "efficientnet_lite0_int8.tflite").read_bytes()   # shipped, sha256 checked
    pts = cut_points(data)
    assert len(pts) >= 30
    x = np.random.default_rng(3).integers(0, 255, (1, 224, 224, 3)).astype(np.uint8)
    ref = _invoke(data, x)
    for p in (pts[2], pts[len(pts) // 2], pts[-2]):
        sm = split_model(data, p.op_index)
        assert np.array_equal(_invoke(sm.tail, _invoke(sm.head, x)), ref)


def test_a_one_op_model_has_no_cut_point_and_says_so(lite0):
    last = cut_points(lite0)[-1]
    one_op = split_model(lite0, last.op_index).tail      # just the SOFTMAX
    assert len(op_infos(one_op)) == 1
    assert cut_points(one_op) == []
    with pytest.raises(CutError, match="no valid single-tensor cut point"):
        find_cut(one_op, 1)


def test_bad_cut_index_and_non_model_bytes_are_clear_errors(lite0):
    with pytest.raises(CutError, match="not a valid cut point") as exc:
        find_cut(lite0, 0)
    assert "valid:" in str(exc.value)
    with pytest.raises(CutError, match="TFL3"):
        cut_points(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(CutError):
        cut_points(lite0[:4] + b"TFL3" + b"\xff" * 64)


# --------------------------------------------------------- benchmark_model as a host process

def _bench(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_DIR), "ADBFLOW_VIRTUAL_STATE": str(cwd / "none.json")}
    return subprocess.run([sys.executable, "-m", "adbflow.fleet.programs.benchmark_model", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_stand_in_reads_exact_size_value_files_and_writes_raw_outputs(lite0, tmp_path):
    p = cut_points(lite0)[15]
    sm = split_model(lite0, p.op_index, input_name="input")
    (tmp_path / "head.tflite").write_bytes(sm.head)
    x = (np.random.default_rng(1).random((1, 224, 224, 3)) * 255).astype(np.float32)
    x.tofile(tmp_path / "in.raw")
    one = ["--num_runs=1", "--warmup_runs=0", "--min_secs=0", "--warmup_min_secs=0"]
    r = _bench(["--graph=head.tflite", "--input_layer=input", "--input_layer_shape=1,224,224,3",
                "--input_layer_value_files=input:in.raw", "--output_filepath=cut.raw",
                "--enable_op_profiling=true", *one], tmp_path)
    assert r.returncode == 0, r.stderr
    head = _interp(sm.head)
    head.set_tensor(head.get_input_details()[0]["index"], x)
    head.invoke()
    assert (tmp_path / "cut.raw").read_bytes() == head.get_tensor(head.get_output_details()[0]["index"]).tobytes()
    res = parse_benchmark_model(r.stderr)
    assert [o.node_type for o in res.ops] == [o.node_type for o in op_infos(sm.head)]
    assert "SIMULATED" in r.stderr and "Top by Computation Time" in r.stderr
    # the wrong file for the input: the real tool's message, exit 1, no output written
    (tmp_path / "small.raw").write_bytes(b"\0" * 1000)
    r = _bench(["--graph=head.tflite", "--input_layer=input", "--input_layer_shape=1,224,224,3",
                "--input_layer_value_files=input:small.raw", "--output_filepath=out2.raw", *one],
               tmp_path)
    assert r.returncode == 1
    assert "The size of small.raw is 1000 bytes. It should be 602112 bytes." in r.stderr
    assert not (tmp_path / "out2.raw").exists()
    r = _bench(["--graph=head.tflite", "--input_layer=input,x", "--input_layer_shape=1,224,224,3",
                *one], tmp_path)
    assert r.returncode == 1 and "must match the number of items" in r.stderr


# ------------------------------------------------------------------------- op profile parse

def test_parser_keeps_only_run_order_rows_of_the_regular_runs(tmp_path):
    from adbflow.fleet.programs.op_profile import OpRow, format_profile, op_rows
    ops = op_infos(LITE0.read_bytes())
    text = ("INFO: " + format_profile("Profiling Info for Benchmark Initialization:",
                                      [OpRow("AllocateTensors", 5.0, 5.0, 1, "AllocateTensors/0")], [5000])
            + "INFO: " + format_profile("Operator-wise Profiling Info for Regular Benchmark Runs:",
                                        op_rows(ops, [400_000, 380_000]), [400_000, 380_000]))
    res = parse_benchmark_model(text)
    assert len(res.ops) == len(ops) == 66
    assert [o.name for o in res.ops] == [o.profile_name for o in ops]
    assert sum(o.avg_ms for o in res.ops) == pytest.approx(390.0, rel=1e-3)
    op_ms, source = op_ms_from_profile(res, ops)
    assert source == "measured op profile" and len(op_ms) == 66
    # rows that do not map onto ops (a delegate): the total is shared out, and said so
    fused = parse_benchmark_model((REPO_DIR / "tests/fixtures/tflite_benchmark/"
                                   "UNATTRIBUTED_synaptics_astra_android_op_profiling_newer_layout_no_start_column.txt").read_text())
    op_ms, source = op_ms_from_profile(fused, ops)
    assert "shared by op cost" in source and sum(op_ms) == pytest.approx(fused.avg_ms)


# --------------------------------------------------------------------------- planner (pure)

def _bid(serial: str, load: float = 0.0, temp: float = 30.0, **kw) -> Bid:
    base = dict(serial=serial, model="adbflow-virtual lowend_2020", cores=8, cpu_load=load,
                per_core_load=[], mem_available_kb=4 << 20, mem_total_kb=8 << 20, battery_level=80,
                battery_charging=True, temperature_c=temp, freq_ratio=1.0, probe_rtt_s=0.01,
                timestamp=time.time())
    base.update(kw)
    return Bid(**base)


def _times(total_ms: float, n: int = 10, launch: float = 0.1) -> OpTimes:
    return OpTimes(tuple([total_ms / n] * n), launch)


@pytest.fixture(scope="module")
def book() -> ProfileBook:
    return ProfileBook.load(PROFILES_DIR)


def _phones(book, specs):
    prof = book.for_model("adbflow-virtual lowend_2020")
    return [phone_state(_bid(s, load), prof, _times(ms), Link(0.005, bw)) for s, load, ms, bw in specs]


CUTS = [Cut(3, 600_000), Cut(5, 20_000), Cut(8, 4_000)]


def test_two_equal_idle_phones_stream_is_split_in_the_middle(book):
    phones = _phones(book, [("A", 0, 2000, 300e6), ("B", 0, 2000, 300e6)])
    plan = choose_plan(phones, CUTS, n_ops=10, input_bytes=600_000, output_bytes=4000,
                       objective="throughput")
    assert plan.chosen.is_split and plan.chosen.cut == 5
    assert plan.chosen.period_s < 0.7 * plan.candidates[-1].period_s
    assert "x1." in plan.reason
    # for one picture the same fleet runs whole: a split only adds a launch and transfers
    lat = choose_plan(phones, CUTS, n_ops=10, input_bytes=600_000, output_bytes=4000)
    assert not lat.chosen.is_split and "no split beats it" in lat.reason


def test_busy_phone_gets_the_small_part_and_slow_link_avoids_big_tensors(book):
    phones = _phones(book, [("A", 0, 2000, 300e6), ("B", 60, 2000, 300e6)])
    plan = choose_plan(phones, CUTS, n_ops=10, input_bytes=600_000, output_bytes=4000,
                       objective="throughput")
    c = plan.chosen
    ops_on_b = c.cut if c.a == "B" else 10 - c.cut
    assert c.is_split and ops_on_b < 10 - ops_on_b             # the busy phone gets fewer ops
    slow = _phones(book, [("A", 0, 2000, 0.05e6), ("B", 0, 2000, 0.05e6)])
    plan = choose_plan(slow, CUTS, n_ops=10, input_bytes=600_000, output_bytes=4000,
                       objective="throughput")
    assert plan.chosen.cut != 3                                   # never ship 600 kB twice


def test_privacy_keeps_the_head_and_whole_runs_on_the_origin(book):
    phones = _phones(book, [("A", 80, 2000, 300e6), ("B", 0, 2000, 300e6)])
    free = choose_plan(phones, CUTS, n_ops=10, input_bytes=600_000, output_bytes=4000)
    assert free.chosen.a == "B"                                    # busy A: B does it all
    priv = choose_plan(phones, CUTS, n_ops=10, input_bytes=600_000, output_bytes=4000,
                       origin="A", privacy=True)
    assert priv.chosen.a == "A" and all(c.a == "A" for c in priv.candidates)
    assert priv.chosen.is_split and priv.chosen.b == "B"


def test_excluded_phones_and_no_cut_points(book):
    prof = book.for_model("adbflow-virtual lowend_2020")
    phones = [phone_state(_bid("A"), prof, _times(2000), Link(0.005, 3e8)),
              phone_state(_bid("B", battery_level=5, battery_charging=False), prof, _times(500),
                          Link(0.005, 3e8))]
    plan = choose_plan(phones, CUTS, n_ops=10, input_bytes=1, output_bytes=1, objective="throughput")
    assert not plan.chosen.is_split and "battery" in plan.excluded["B"]
    plan = choose_plan(phones[:1], [], n_ops=10, input_bytes=1, output_bytes=1)
    assert plan.chosen.label == "whole:A"
    both_out = [phone_state(_bid("A", error="timeout"), prof, _times(1), Link(0.005, 3e8))]
    plan = choose_plan(both_out, CUTS, n_ops=10, input_bytes=1, output_bytes=1)
    assert plan.chosen is None and "no eligible device" in plan.reason
    assert "excluded A" in format_plan(plan)


def test_thermal_and_load_terms_are_policy_py_s(book):
    from adbflow.scheduling.policy import thermal_factor
    from adbflow.scheduling.service_times import load_factor
    prof = book.for_model("adbflow-virtual lowend_2020")
    hot = _bid("A", load=50, temp=55.0)
    st = phone_state(hot, prof, _times(1000), Link(0.005, 3e8))
    assert st.slowdown == pytest.approx(load_factor(50, prof.timing.load_sensitivity) * thermal_factor(hot))


def test_replan_reason_threshold():
    a = Snapshot({"A": 1.0, "B": 1.0}, {"A": 3e8, "B": 3e8}, frozenset())
    assert replan_reason(None, a) == "first plan"
    assert replan_reason(a, Snapshot({"A": 1.1, "B": 1.0}, {"A": 3e8, "B": 3e8}, frozenset())) is None
    why = replan_reason(a, Snapshot({"A": 1.5, "B": 1.0}, {"A": 3e8, "B": 3e8}, frozenset()))
    assert why.startswith("A: slowdown x1.00 -> x1.50")
    why = replan_reason(a, Snapshot({"A": 1.0, "B": 1.0}, {"A": 3e8, "B": 1e8}, frozenset()))
    assert "bandwidth" in why and why.startswith("B")
    why = replan_reason(a, Snapshot({"A": 1.0}, {"A": 3e8, "B": 3e8}, frozenset({"B"})))
    assert "gone: B" in why


def test_session_replans_when_a_bid_moves_and_logs_the_reason(lite0, book, tmp_path):
    bids = {"A": _bid("A"), "B": _bid("B")}
    sess = SplitSession({"A": object(), "B": object()}, {s: b.model for s, b in bids.items()},   # type: ignore[dict-item]
                        book, lite0, "efficientnet_lite0.tflite", tmp_path,
                        lambda: list(bids.values()), objective="throughput")
    first = sess.decide()
    assert first.chosen.is_split                     # two idle equal phones, a stream
    assert sess.decide() is first                    # nothing moved: same plan, no log line
    bids["B"] = _bid("B", load=90)
    second = sess.decide()
    assert second is not first
    log = PlanLog(tmp_path / "split" / "plans.jsonl").entries()
    assert [e["reason"] for e in log][0] == "first plan"
    assert log[1]["reason"].startswith("B: slowdown") and log[1]["previous"] == first.chosen.label
    assert json.dumps(log)                           # plain JSON
    with pytest.raises(SplitError, match="not a candidate"):
        sess.candidate("A:9999:B")
    assert sess.candidate(f"A:{sess.cuts[3].op_index}:B").is_split
    assert math.isfinite(sess.candidate("whole:A").total_s)


def test_privacy_session_refuses_a_plan_that_moves_the_picture(lite0, book, tmp_path):
    bids = {"A": _bid("A"), "B": _bid("B")}
    sess = SplitSession({"A": object(), "B": object()}, {s: b.model for s, b in bids.items()},   # type: ignore[dict-item]
                        book, lite0, "efficientnet_lite0.tflite", tmp_path,
                        lambda: list(bids.values()), origin="A", privacy=True)
    cut = sess.cuts[5].op_index
    assert sess.candidate(f"A:{cut}:B").a == "A"
    with pytest.raises(SplitError, match="would send the picture to B"):
        sess.candidate(f"B:{cut}:A")
    with pytest.raises(SplitError, match="would send the picture"):
        sess.candidate("whole:B")
    assert sess.runner.private_to == "A"
    assert all(c.a == "A" for c in sess.decide().candidates)


def test_fallback_runs_whole_on_a_phone_that_answers_and_keeps_privacy(lite0, tmp_path):
    from adbflow.split.plan import Candidate
    from adbflow.split.run import SplitRunner, StageResult

    class Runner(SplitRunner):
        def __init__(self, broken: set[str], **kw) -> None:
            super().__init__({"A": object(), "B": object(), "C": object()}, lite0, tmp_path,   # type: ignore[dict-item]
                             binary="benchmark_model", **kw)
            self.broken, self.tried = broken, []

        def whole(self, d, tensor, job=None):
            self.tried.append(d)
            if d in self.broken:
                raise SplitError("gone", serial=d, step="push_in")
            return StageResult(b"out", plan=f"whole:{d}")

    cand = Candidate("A", 10, "B")
    failure = SplitError("lost", serial="B", step="push_cut")
    r = Runner(broken=set())
    res = r.fallback_whole(cand, b"", failure)
    assert res.plan == "whole:A" and "[B] push_cut" in res.fallback and r.tried == ["A"]
    r = Runner(broken={"A"})
    assert r.fallback_whole(cand, b"", failure).plan == "whole:C" and r.tried == ["A", "C"]
    r = Runner(broken={"A"})
    r.private_to = "A"                        # privacy: the picture may not go to C
    with pytest.raises(SplitError, match="no phone could run the model whole"):
        r.fallback_whole(cand, b"", failure)
    assert r.tried == ["A"]


def test_session_learns_a_phone_slower_than_its_op_profile(lite0, book, tmp_path):
    bids = {"A": _bid("A"), "B": _bid("B")}
    sess = SplitSession({"A": object(), "B": object()}, {s: b.model for s, b in bids.items()},   # type: ignore[dict-item]
                        book, lite0, "efficientnet_lite0.tflite", tmp_path,
                        lambda: list(bids.values()))
    before = {p.serial: p.slowdown for p in sess.phones(list(bids.values()))}
    cut = sess.cuts[20].op_index
    head_s = sess.times["B"].compute_s(0, cut) * before["B"]
    for _ in range(6):                          # B's heads run twice as long as predicted
        sess._observe_run("B", f"{sess.digest}-{cut}-head.tflite", 1.0, 2 * head_s + 0.3, 2 * head_s)
    after = {p.serial: p for p in sess.phones(list(bids.values()))}
    assert after["A"].slowdown == pytest.approx(before["A"])
    assert after["B"].slowdown == pytest.approx(2 * before["B"], rel=0.15)
    assert after["B"].factors["learned_x"] > 1.8
    assert sess.times["B"].launch_s == pytest.approx(0.3, abs=0.05)    # launch learned too
    sess._observe_run("B", "something-else.tflite", 1.0, 9.0, 1.0)      # not ours: ignored
    assert sess.learned["B"] > 1.8
