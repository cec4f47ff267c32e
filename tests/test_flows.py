"""Flows without devices: validation errors name their key, gates are pure data, and the
model selector picks (device, model) by ECT with deadline / locality / capability rules."""
from __future__ import annotations

import dataclasses
import time

import pytest
from bid_helpers import make_bid

from adbflow.errors import FlowError, JobError
from adbflow.flows import gates, load
from adbflow.flows.model import (
    Drift,
    Flow,
    Gate,
    GateKind,
    Locality,
    ModelAsk,
    OnMiss,
    Placement,
    Run,
    Stage,
    Tier,
)
from adbflow.runtime.flow_engine import ask_of, check_flow
from adbflow.scheduling.bids import Bid
from adbflow.scheduling.policy import Task
from adbflow.scheduling.profiles import ProfileBook
from adbflow.scheduling.selector import Ask, SelectorPolicy

NOW = time.time()
MID = "adbflow-virtual midrange_2023"
LOW = "adbflow-virtual lowend_2020"


def bid(serial: str, model: str = MID, **kw) -> Bid:
    return make_bid(serial, **{"model": model, "timestamp": NOW, "cpu_load": 5.0, **kw})


@pytest.fixture(scope="module")
def book() -> ProfileBook:
    return ProfileBook.load()


def labels(*scores: float, first: int = 281) -> list[dict]:
    return [{"score": s, "index": first + i, "name": f"l{i}"} for i, s in enumerate(scores)]


# ------------------------------------------------------------------ files and validation

def test_shipped_flows_load_and_pass_the_feasibility_check(book) -> None:
    names = set(load.shipped())
    assert {"classify-story", "cascade", "filter"} <= names
    for name in names:
        flow = load.load(name)
        check_flow(flow, book)
    assert load.load("classify-story").is_default
    cascade = load.load("cascade")
    assert [s.name for s in cascade.stages] == ["small", "big", "story"]
    assert cascade.stages[0].placement.locality is Locality.STRICT_ORIGIN
    assert cascade.stages[1].gate == Gate(GateKind.ESCALATE, on="small", tau=0.5)
    animals = load.load("filter").stages[1].gate.labels
    assert animals == tuple(range(398))


def _write(tmp_path, text: str):
    p = tmp_path / "f.toml"
    p.write_text(text)
    return str(p)


GOOD = """
name = "x"
[[stages]]
name = "small"
run = "classify"
[[stages]]
name = "big"
run = "classify"
gate = { kind = "escalate", on = "small", tau = 0.5 }
"""


@pytest.mark.parametrize("change, where", [
    (("tau = 0.5", "tau = 1.5"), "stages[1].gate.tau"),
    (("tau = 0.5", "tua = 0.5"), "stages[1].gate.tua: unknown key"),
    (('on = "small"', 'on = "nope"'), "stages[1].gate.on"),
    (('run = "classify"\ngate', 'run = "paint"\ngate'), "stages[1].run"),
    (('name = "big"', 'name = "small"'), "stages[1].name"),
    (("tau = 0.5", 'tau = "high"'), "stages[1].gate.tau: expected"),
])
def test_semantic_errors_name_the_key_path(tmp_path, change, where) -> None:
    text = GOOD.replace(*change)
    assert text != GOOD
    with pytest.raises(FlowError) as err:
        load.load(_write(tmp_path, text))
    assert where in str(err.value)


def test_syntax_errors_name_the_line(tmp_path) -> None:
    with pytest.raises(FlowError, match=r"line 4"):
        load.load(_write(tmp_path, 'name = "x"\n[[stages]]\nname = "a"\nrun = classify\n'))


def test_unknown_flow_name_lists_the_shipped_ones() -> None:
    with pytest.raises(FlowError, match="cascade"):
        load.resolve("no-such-flow")


def test_python_built_flow_is_validated_by_the_same_rules(book) -> None:
    small = Stage("small", Run.CLASSIFY, model=ModelAsk(name="lite0-int8"))
    story = Stage("story", Run.STORY, input="small")
    Flow("py", (small, story)).validate()
    with pytest.raises(FlowError, match=r"stages\[1\]\.input"):
        Flow("py", (small, Stage("story", Run.STORY, input="picture"))).validate()
    with pytest.raises(FlowError, match=r"drift\.on"):
        Flow("py", (small, story), drift=Drift(on="story")).validate()
    # unknown model / impossible policy: rejected before any picture
    with pytest.raises(FlowError, match="no profile carries a model named 'lite9'"):
        check_flow(Flow("py", (Stage("s", Run.CLASSIFY, model=ModelAsk(name="lite9")),)), book)
    with pytest.raises(FlowError, match="accuracy >= 0.99"):
        check_flow(Flow("py", (Stage("s", Run.CLASSIFY,
                                     model=ModelAsk(min_accuracy=0.99)),)), book)
    never = Placement(deadline_s=0.001, on_miss=OnMiss.REJECT)
    with pytest.raises(FlowError, match="fastest idle run time"):
        check_flow(Flow("py", (Stage("s", Run.CLASSIFY, placement=never),)), book)


# ------------------------------------------------------------------ gates (pure)

def test_escalate_gate_on_tau_and_margin() -> None:
    g = Gate(GateKind.ESCALATE, on="small", tau=0.5, margin=0.2)
    assert gates.decide(g, [("small", {"labels": labels(0.45, 0.1)})]).run
    sure = gates.decide(g, [("small", {"labels": labels(0.7, 0.1)})])
    assert not sure.run and sure.top1 == 0.7 and "confident" in sure.reason
    close = gates.decide(g, [("small", {"labels": labels(0.55, 0.4)})])
    assert close.run and "margin" in close.reason
    assert gates.decide(g, [("small", {"labels": labels(0.9)})], drifting=True).run


def test_filter_and_confident_gates_read_the_latest_classification() -> None:
    animals = Gate(GateKind.FILTER, labels=tuple(range(398)))
    ran = [("small", {"labels": labels(0.4, first=281)}),
           ("big", {"labels": labels(0.8, first=967)})]   # big says: espresso
    d = gates.decide(animals, ran)
    assert not d.run and d.on == "big" and d.label == 967
    assert gates.decide(dataclasses.replace(animals, on="small"), ran).run
    conf = Gate(GateKind.CONFIDENT, min_confidence=0.85)
    assert not gates.decide(conf, ran).run
    assert not gates.decide(conf, []).run   # nothing classified: nothing to gate on


def test_gate_labels_are_data_never_code() -> None:
    hostile = [{"score": 0.9, "index": "__import__('os').system('touch pwned')",
                "name": "<script>"}]
    d = gates.decide(Gate(GateKind.FILTER, labels=(1, 2)), [("a", {"labels": hostile})])
    assert not d.run and d.label is None


def test_drift_monitor_raises_and_clears() -> None:
    m = gates.DriftMonitor(Drift(on="small", window=3, level=0.5))
    assert [m.observe(x) for x in (0.9, 0.3, 0.2)] == [None, None, "raised"]
    assert m.switching
    assert m.observe(0.2) is None
    assert [m.observe(x) for x in (0.9, 0.95)] == [None, "cleared"]
    assert not m.switching


# ------------------------------------------------------------------ model selector

def _choose(ask: Ask, bids, book, inflight=None):
    pol = SelectorPolicy(ask)
    return pol.choose(Task("classify", input_bytes=150_000, output_bytes=1024), bids,
                      inflight=inflight or {}, profiles=book, now=NOW)


def test_deadline_picks_the_most_accurate_variant_then_switches_as_devices_load(book) -> None:
    ask = Ask(deadline_s=0.35)
    idle = _choose(ask, [bid("a"), bid("b")], book)
    assert idle.detail["model"] == "lite2" and idle.detail["deadline_met"]
    # both phones get busy: Lite2 no longer fits 0.35 s, the next most accurate one does
    busy = _choose(ask, [bid("a", cpu_load=75.0), bid("b", cpu_load=80.0)], book)
    assert busy.detail["model"] == "lite0" and busy.detail["deadline_met"], busy.reason
    # busy and queued with our own work: nothing fits, the fastest runs, the miss is recorded
    hot = [bid("a", cpu_load=80.0), bid("b", cpu_load=80.0)]
    queue = {s: (Task("classify", prior_s=0.25),) * 2 for s in "ab"}
    jam = _choose(ask, hot, book, inflight=queue)
    assert jam.detail["model"] == "lite0-int8" and jam.detail["deadline_met"] is False
    assert "missed" in jam.reason
    with pytest.raises(JobError, match="rejected"):
        _choose(dataclasses.replace(ask, reject_on_miss=True), hot, book, inflight=queue)


def test_deadline_counts_queued_work_of_our_own(book) -> None:
    ask = Ask(deadline_s=0.35)
    queued = {"a": (Task("classify", prior_s=0.25),), "b": (Task("classify", prior_s=0.25),)}
    d = _choose(ask, [bid("a"), bid("b")], book, inflight=queued)
    assert d.detail["model"] != "lite2"


def test_min_accuracy_and_name_asks(book) -> None:
    d = _choose(Ask(min_accuracy=0.86), [bid("a"), bid("b", model=LOW)], book)
    assert d.detail["model"] == "lite2" and d.winner == "a"   # the faster class
    d = _choose(Ask(model_name="lite0-int8"), [bid("a")], book)
    assert d.detail["model"] == "lite0-int8"
    # without a deadline: the earliest pair among those meeting the floor
    d = _choose(Ask(), [bid("a")], book)
    assert d.detail["model"] == "lite0-int8"


def test_strict_origin_never_leaves_the_origin_even_when_it_is_slow(book) -> None:
    bids = [bid("fast", cpu_load=0.0), bid("origin", model=LOW, cpu_load=90.0)]
    d = _choose(Ask(locality="strict-origin", origin="origin"), bids, book)
    assert d.winner == "origin"
    assert _choose(Ask(), bids, book).winner == "fast"
    none = _choose(Ask(locality="strict-origin", origin="gone"), bids, book)
    assert none.winner is None and "not the origin" in none.reason


def test_prefer_origin_saves_the_transfer(book) -> None:
    bids = [bid("a"), bid("origin")]
    d = _choose(Ask(locality="prefer-origin", origin="origin", model_name="lite0"), bids, book)
    assert d.winner == "origin"
    cost = d.cost_of("origin")
    assert cost is not None and cost.parts["transfer_in"] == 0.0


def test_capability_floors_are_hard_filters(book) -> None:
    bids = [bid("small", cores=4, mem_total_kb=3 << 20), bid("big", cores=8, cpu_load=60.0)]
    assert _choose(Ask(), bids, book).winner == "small"
    assert _choose(Ask(min_cores=8), bids, book).winner == "big"
    assert _choose(Ask(min_ram_mb=6000), bids, book).winner == "big"
    assert _choose(Ask(abi="riscv64"), bids, book).winner is None


def test_ask_of_a_flow_stage() -> None:
    st = load.load("cascade").stages[0]
    a = ask_of(st, "phone1")
    assert (a.model_name, a.locality, a.origin) == ("lite0-int8", "strict-origin", "phone1")


# ------------------------------------------------------------------ sweep (pure parts)

def test_replay_counts_escalations_accuracy_and_latency(tmp_path) -> None:
    from adbflow.runtime.sweep import Outcome, Sample, replay
    samples = [Sample("a", 0, 1, tmp_path), Sample("a", 1, 1, tmp_path),
               Sample("b", 0, 2, tmp_path), Sample("c", 0, 3, tmp_path)]
    small = [Outcome(1, 0.9, 0.8, 0.1, 0.05), Outcome(9, 0.3, 0.1, 0.1, 0.05),
             Outcome(2, 0.6, 0.5, 0.1, 0.05), Outcome(9, 0.4, 0.0, 0.1, 0.05)]
    big = [Outcome(1, 0.8, 0.7, 0.3, 0.2), Outcome(1, 0.7, 0.5, 0.3, 0.2),
           Outcome(2, 0.9, 0.8, 0.3, 0.2), Outcome(3, 0.9, 0.8, 0.3, 0.2)]
    always_small = replay(samples, small, big, 0.0)
    assert always_small.escalated == 0 and always_small.accuracy == 0.5
    assert always_small.mean_latency_s == pytest.approx(0.1)
    always_big = replay(samples, small, big, 2.0)
    assert always_big.accuracy == 1.0 and always_big.escalated == 1.0
    assert always_big.mean_latency_s == pytest.approx(0.3)
    c = replay(samples, small, big, 0.5)
    assert c.escalated == 0.5 and c.accuracy == 1.0 and c.agree_big == 1.0
    assert c.mean_latency_s == pytest.approx((0.1 + 0.4 + 0.1 + 0.4) / 4)
    assert c.device_s == pytest.approx(4 * 0.05 + 2 * 0.2)
    assert 0.0 <= c.ci_low <= c.accuracy <= c.ci_high <= 1.0


def test_bootstrap_resamples_source_images_together() -> None:
    from adbflow.runtime.sweep import bootstrap_ci
    lo, hi = bootstrap_ci({"a": [True] * 5, "b": [False] * 5})
    assert lo == 0.0 and hi == 1.0      # two sources: a resample may hold either twice
    assert bootstrap_ci({"a": [True], "b": [True]}) == (1.0, 1.0)


def test_sweep_labels_file_is_untrusted(tmp_path) -> None:
    from adbflow.errors import AdbflowError
    from adbflow.runtime.sweep import read_labels
    (tmp_path / "ok.png").write_bytes(b"x")
    (tmp_path / "labels.csv").write_text("file,class_index\nok.png,3\n../etc/passwd,1\n")
    with pytest.raises(AdbflowError, match="labels.csv:3"):
        read_labels(tmp_path)
    (tmp_path / "labels.csv").write_text("file,class_index\nok.png,3\n")
    assert read_labels(tmp_path) == [("ok.png", 3)]


def test_cli_validate_names_the_problem(tmp_path) -> None:
    from typer.testing import CliRunner

    from adbflow.cli.main import app
    bad = _write(tmp_path, GOOD.replace("tau = 0.5", "tau = -1"))
    res = CliRunner().invoke(app, ["flows", "validate", "cascade", bad])
    assert res.exit_code != 0
    assert isinstance(res.exception, FlowError) and "stages[1].gate.tau" in str(res.exception)
    res = CliRunner().invoke(app, ["flows", "show", "cascade"])
    assert res.exit_code == 0 and "strict-origin" in res.output


# ------------------------------------------------------------------ engine with fakes

def _pictures(tmp_path, n: int):
    from adbflow.paths import ASSETS_DIR
    data = (ASSETS_DIR / "chelsea.png").read_bytes()
    out = []
    for i in range(n):
        f = tmp_path / f"in{i}.png"
        f.write_bytes(data)
        out.append(f)
    return out


def _fake_pipeline(tmp_path, flow, book):
    import sys
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from pipeline_fakes import FakeBidder, FakeDevice, FakeInventory

    from adbflow.runtime.pipeline import Pipeline, PipelineConfig
    devs = [FakeDevice("dev1"), FakeDevice("dev2")]
    cfg = PipelineConfig(data_dir=tmp_path / "data", retry_wait_s=0.01, device_wait_s=0.2,
                         use_inotify=False)
    events: list = []
    p = Pipeline(cfg, FakeInventory(devs), bidder=FakeBidder({"dev1": 5.0, "dev2": 50.0}),
                 profiles=book, flow=flow, on_event=events.append)
    return p, devs, events


def test_default_flow_keeps_the_pipelines_own_journal_rows(tmp_path, book) -> None:
    p, _devs, _ = _fake_pipeline(tmp_path, load.load("classify-story"), book)
    try:
        assert p.flow_runner is None
        job = p.run_image(_pictures(tmp_path, 1)[0])
        assert job.state == "done", job.error
        assert {a.stage for a in p.journal.attempts(job.id)} == {"ingest", "classify",
                                                                 "generate"}
        assert "flow" not in job.result and job.result["devices"]["classify"]
    finally:
        p.close()


def test_drift_raises_an_event_and_switches_to_the_big_model(tmp_path, book) -> None:
    from adbflow.runtime.events import DriftChanged, GateDecided
    small = Stage("small", Run.CLASSIFY, model=ModelAsk(name="lite0-int8"))
    big = Stage("big", Run.CLASSIFY, model=ModelAsk(min_accuracy=0.86),
                gate=Gate(GateKind.ESCALATE, on="small", tau=0.5))
    flow = Flow("drifty", (small, big), drift=Drift(on="small", window=2, level=0.7))
    p, devs, events = _fake_pipeline(tmp_path, flow, book)
    try:
        jobs = [p.run_image(f) for f in _pictures(tmp_path, 3)]   # fake top-1: 0.61
        assert all(j.state == "done" for j in jobs), [j.error for j in jobs]
        # the window (this picture included) is full and low from the 2nd picture on
        ran_big = [j.result["stages"]["big"]["ran"] for j in jobs]
        assert ran_big == [False, True, True]
        assert "confident" in jobs[0].result["stages"]["big"]["gate"]["reason"]
        assert "drift" in jobs[2].result["stages"]["big"]["gate"]["reason"]
        drift = [e for e in events if isinstance(e, DriftChanged)]
        assert [(e.stage, e.state) for e in drift] == [("small", "raised")]
        assert sum(isinstance(e, GateDecided) for e in events) == 3
        # the big model ran with its own file and input size on the device
        runs = [c for d in devs for c in d.calls if c[0].endswith("label_image")]
        models = [c[c.index("-m") + 1] for c in runs]
        assert models.count("/data/local/tmp/efficientnet_lite2.tflite") == 2
        assert models.count("/data/local/tmp/efficientnet_lite0_int8.tflite") == 3
    finally:
        p.close()


def test_strict_origin_rejects_laptop_pictures_with_the_reason(tmp_path, book) -> None:
    p, _devs, _ = _fake_pipeline(tmp_path, load.load("cascade"), book)
    try:
        job = p.run_image(_pictures(tmp_path, 1)[0])
        assert job.state == "failed" and "strict" in (job.error or "")
    finally:
        p.close()


def test_tier_any_sends_the_big_stage_to_the_idle_laptop_and_not_to_a_loaded_one(
        tmp_path, book, monkeypatch) -> None:
    """The laptop bids with the phones through the same cost: idle, its measured Lite2 beats
    a phone's profiled Lite2 plus the push; at 95 % load (20x) it does not. The host's load
    is faked at the bid boundary (like FakeBidder's phones); the inference is real."""
    pytest.importorskip("ai_edge_litert")
    from adbflow.runtime.host_tier import HostTier
    from adbflow.scheduling.host_bid import host_bid
    host_load = {"pct": 0.0}
    monkeypatch.setattr(HostTier, "bid", lambda self: host_bid(
        cpu_percent=host_load["pct"], cores=8, mem_available_kb=8 << 20,
        mem_total_kb=16 << 20))
    small = Stage("small", Run.CLASSIFY, model=ModelAsk(name="lite0-int8"))
    big = Stage("big", Run.CLASSIFY, model=ModelAsk(name="lite2"),
                placement=Placement(tier=Tier.ANY),
                gate=Gate(GateKind.ESCALATE, on="small", tau=0.9))
    p, devs, _ = _fake_pipeline(tmp_path, Flow("edgy", (small, big)), book)
    try:
        a, b = _pictures(tmp_path, 2)
        job = p.run_image(a)
        assert job.state == "done", job.error
        r = job.result["stages"]["big"]
        assert r["ran"] and r["serial"] == "laptop" and r["model"] == "lite2"
        assert job.result["devices"]["big"] == "laptop"
        assert "cat" in " ".join(lb["name"] for lb in job.result["labels"])   # real Lite2
        row = next(x for x in p.journal.attempts(job.id) if x.stage == "big")
        assert row.serial == "laptop" and row.output["pushed_bytes"] == 0
        pairs = {x["serial"] for x in row.output["selection"]["pairs"]}
        assert {"laptop", "dev1", "dev2"} <= pairs          # one ranking over all three
        host_load["pct"] = 95.0
        job = p.run_image(b)
        assert job.state == "done", job.error
        assert job.result["stages"]["big"]["serial"] in {"dev1", "dev2"}
        runs = [c for d in devs for c in d.calls if c[0].endswith("label_image")]
        lite2 = [c for c in runs if "/data/local/tmp/efficientnet_lite2.tflite" in c]
        assert len(lite2) == 1                               # only the second picture's
    finally:
        p.close()
