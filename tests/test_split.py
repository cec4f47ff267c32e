"""Split inference on a 2-phone virtual fleet: head and tail through the fleet's
benchmark_model, op profiles measured on the phones, bad input, a phone lost between the
head and the tail, the pipelined stream."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from adbflow.errors import SplitError
from adbflow.paths import ASSETS_DIR, PROFILES_DIR
from adbflow.scheduling.bids import Bidder
from adbflow.scheduling.profiles import ProfileBook
from adbflow.split.run import StageResult, image_tensor
from adbflow.split.session import SplitSession
from adbflow.split.stream import run_pipelined
from tests.fleet_helpers import CHELSEA, COFFEE, device, healthy, module_fleet  # noqa: F401

fleet = module_fleet(2, ["midrange_2023"])
MODEL = ASSETS_DIR / "efficientnet_lite0_imagenet.tflite"


@pytest.fixture(scope="module")
def session(fleet, tmp_path_factory):
    devs = {s: device(fleet, s) for s in fleet.serials}
    bidder = Bidder(timeout=10.0)
    bids = bidder.gather(list(devs.values()))
    assert all(b.ok for b in bids), [b.error for b in bids]
    sess = SplitSession(devs, {b.serial: b.model for b in bids}, ProfileBook.load(PROFILES_DIR),
                        MODEL.read_bytes(), "efficientnet_lite0.tflite",
                        tmp_path_factory.mktemp("split-data"),
                        lambda: bidder.gather(list(devs.values())), objective="throughput")
    yield sess
    bidder.close()


@pytest.fixture(scope="module")
def picture(session) -> bytes:
    return image_tensor(CHELSEA, session.runner.input_spec)


@pytest.fixture(scope="module")
def whole_out(session, picture, fleet) -> bytes:
    return session.runner.whole(fleet.serials[0], picture).output


def ok_bids(session, timeout: float = 15.0):
    """Bids of every phone once all probe fine (a restarted phone needs a second sample)."""
    deadline = time.monotonic() + timeout
    while True:
        bids = session.bids()
        if all(b.ok for b in bids) or time.monotonic() > deadline:
            return bids
        time.sleep(0.5)


def _in_process(model: bytes, tensor: bytes) -> bytes:
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_content=model, num_threads=1)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.frombuffer(tensor, dtype=d["dtype"]).reshape(d["shape"]))
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]).tobytes()


def test_whole_run_through_benchmark_model_is_the_model_s_output(session, picture, whole_out):
    assert whole_out == _in_process(session.model, picture)
    probs = np.frombuffer(whole_out, dtype=np.float32)
    labels = (ASSETS_DIR / "imagenet_labels_1000.txt").read_text().splitlines()
    assert any(w in labels[int(np.argmax(probs))] for w in ("cat", "tabby", "lynx"))


def test_head_then_tail_on_two_phones_is_bit_exact_for_three_cut_points(session, fleet, picture,
                                                                       whole_out, healthy):
    a, b = fleet.serials
    cuts = [session.cuts[4], session.cuts[len(session.cuts) // 2], session.cuts[-2]]
    for i, cut in enumerate(cuts):
        src, dst = (a, b) if i % 2 == 0 else (b, a)
        res = session.runner.split(src, cut.op_index, dst, picture)
        assert res.output == whole_out, f"cut {cut.op_index}"
        assert set(res.parts) == {"push_in", "head", "pull_cut", "push_cut", "tail", "pull_out"}
        assert res.inference_s["head"] > 0 and res.inference_s["tail"] > 0


def test_op_profiles_are_measured_on_the_phones(session, fleet, healthy):
    times = session.measure(runs=2)
    for s in fleet.serials:
        t = times[s]
        assert t.source == "measured op profile" and len(t.op_ms) == len(session.ops) == 66
        # midrange_2023 class: 110 ms for the whole classifier (simulated, see the stand-in)
        assert 80.0 < sum(t.op_ms) < 160.0
        assert t.launch_s > 0 and t.launch_s_per_mb >= 0
    again = SplitSession(session.devices, session.models_of, session.book, session.model,
                         session.model_name, session.data_dir, session.bids)
    assert again.times[fleet.serials[0]].op_ms == times[fleet.serials[0]].op_ms   # stored


def test_a_cut_tensor_of_the_wrong_size_is_a_clear_error(session, fleet, picture, healthy):
    a, b = fleet.serials
    cut = session.cuts[10].op_index
    res = StageResult(b"")
    with pytest.raises(SplitError, match=r"cut tensor has 10 bytes, expected \d+") as exc:
        session.runner.tail(b, cut, b"\0" * 10, "jbad", res)
    assert exc.value.serial == b and exc.value.step == "push_cut"
    # on the phone: benchmark_model itself refuses a value file of the wrong size
    sm = session.runner.parts(cut)
    graph = session.runner.ensure_part(b, cut, "tail")
    session.runner._push(b, b"\0" * 12, "/data/local/tmp/adbflow-split/jbad-cut.raw", "push_cut", res)
    with pytest.raises(SplitError, match=rf"It should be {sm.cut.nbytes} bytes") as exc:
        session.runner._bench(b, graph, "cut", sm.cut.shape,
                              "/data/local/tmp/adbflow-split/jbad-cut.raw",
                              "/data/local/tmp/adbflow-split/jbad-out.raw", "tail", res)
    assert exc.value.serial == b


def test_wrong_input_and_no_picture_are_clear_errors(session, tmp_path):
    with pytest.raises(SplitError, match="input tensor has 3 bytes"):
        session.runner.whole(next(iter(session.devices)), b"abc")
    bad = tmp_path / "$(touch pwned).jpg"
    bad.write_bytes(b"not a picture")
    with pytest.raises(SplitError, match="not a readable image"):
        image_tensor(bad, session.runner.input_spec)
    assert not Path("pwned").exists()


def test_worker_dying_between_head_and_tail_runs_the_job_whole(session, fleet, picture, whole_out,
                                                               healthy, monkeypatch):
    a, b = fleet.serials
    cand = session.candidate(f"{a}:{session.cuts[20].op_index}:{b}", ok_bids(session))
    session.runner.prepare(cand)
    dev_b = session.runner.devices[b]
    real_push = dev_b.push

    def dies_mid_transfer(local, remote, **kw):
        if remote.endswith("-push_cut.raw"):
            fleet.kill(b)                          # the phone vanishes as the cut tensor goes out
        return real_push(local, remote, **kw)
    monkeypatch.setattr(dev_b, "push", dies_mid_transfer)
    res = session.runner.run_with_fallback(cand, picture)
    assert res.output == whole_out
    assert res.plan == f"whole:{a}"
    assert res.fallback and f"[{b}] push_cut" in res.fallback


def test_pipelined_stream_overlaps_head_n_plus_1_with_tail_n(session, fleet, healthy):
    a, b = fleet.serials
    pics = [image_tensor(p, session.runner.input_spec) for p in (CHELSEA, COFFEE, CHELSEA)]
    cand = session.candidate(f"{a}:{session.cuts[len(session.cuts) // 2].op_index}:{b}",
                             ok_bids(session))
    out = run_pipelined(session.runner, cand, pics)
    assert not out.errors and len(out.results) == 3
    assert [r.output for r in out.results] == [_in_process(session.model, p) for p in pics]
    r0, r1 = out.results[0], out.results[1]
    assert r1.marks["head"][0] < r0.marks["tail"][1]       # head of job 1 ran during tail of job 0


def test_cli_plan_explain_and_split_runs(fleet, tmp_path, healthy):
    import json as json_mod

    from typer.testing import CliRunner

    from adbflow.cli.main import app
    cli = CliRunner()
    common = ["--adb-server", f"127.0.0.1:{fleet.adb_port}", "--data-dir", str(tmp_path)]
    res = cli.invoke(app, ["split", "plan", "--explain", "--objective", "throughput", *common])
    assert res.exit_code == 0, res.output
    assert "objective throughput" in res.output and "period_s" in res.output and "*" in res.output
    a, b = fleet.serials
    res = cli.invoke(app, ["split", "run", str(CHELSEA), "--plan", f"{a}:40:{b}", "--json", *common])
    assert res.exit_code == 0, res.output
    doc = json_mod.loads(res.output)[0]
    assert doc["plan"] == f"{a}:40:{b}" and doc["fallback"] is None
    assert any(w in doc["labels"][0]["name"] for w in ("cat", "tabby", "lynx"))
    assert set(doc["measured_s"]) == set(doc["predicted_s"])
    res = cli.invoke(app, ["split", "run", str(CHELSEA), str(COFFEE), "--plan", "none", *common])
    assert res.exit_code == 0 and res.output.count("whole:") == 2, res.output
    res = cli.invoke(app, ["split", "run", str(CHELSEA), "--plan", f"{a}:0:{b}", *common])
    assert res.exit_code != 0 and "not a candidate" in str(res.exception or res.output)
    res = cli.invoke(app, ["split", "plan", "--json", "--privacy", "--origin", b, *common])
    assert res.exit_code == 0, res.output
    doc = json_mod.loads(res.output)
    assert doc["candidates"] and all(c["a"] == b for c in doc["candidates"])
    res = cli.invoke(app, ["split", "run", str(CHELSEA), str(COFFEE), "--stream", "--plan",
                           f"{a}:40:{b}", "--json", *common])
    assert res.exit_code == 0, res.output
    docs = json_mod.loads(res.output)
    assert [d["plan"] for d in docs] == [f"{a}:40:{b}"] * 2
    assert any(w in docs[1]["labels"][0]["name"] for w in ("cup", "espresso", "coffee", "mug"))
    log = (tmp_path / "split" / "plans.jsonl").read_text().splitlines()
    assert json_mod.loads(log[0])["reason"] in ("asked", "first plan")


def test_benchmark_label_image_records_op_profiles_the_planner_uses(fleet, session, tmp_path, healthy):
    import shutil

    from benchmark_label_image.run import main
    out = tmp_path / "profiles"
    shutil.copytree(PROFILES_DIR, out)
    rc = main(["--adb-server", f"127.0.0.1:{fleet.adb_port}", "--serial", fleet.serials[0],
               "--loads", "0", "--runs", "2", "--op-profile", "--out", str(out),
               "--profiles-dir", str(out), "--fleet-state-dir", str(fleet.state_dir)])
    assert rc == 0
    book = ProfileBook.load(out)
    prof = book.for_model(session.models_of[fleet.serials[0]])
    entry = [m for m in prof.measurements if m.get("stage") == "op_profile"][-1]
    assert len(entry["op_ms"]) == 66 and entry["launch_ms"] > 0
    fresh = SplitSession(session.devices, session.models_of, book, session.model,
                         session.model_name, tmp_path / "empty-data", session.bids)
    t = fresh.times[fleet.serials[0]]
    assert t.source.startswith("profile ") and list(t.op_ms) == entry["op_ms"]
