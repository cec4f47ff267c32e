"""The laptop tier without devices: the host's bid goes through the selector's one ECT
cost against phone bids (fake bids), tier rules keep it off unless a stage allows it, and
the host really classifies a picture in-process with ai-edge-litert."""
from __future__ import annotations

import dataclasses
import json
import time

import pytest

from adbflow.errors import FlowError
from adbflow.flows import load
from adbflow.flows.model import Locality, Tier
from adbflow.paths import ASSETS_DIR
from adbflow.runtime.flow_engine import ask_of, check_flow, uses_host
from adbflow.scheduling.bids import Bid
from adbflow.scheduling.host_bid import HOST_SERIAL, HostModel, catalogue, host_bid, host_profile
from adbflow.scheduling.policy import CostModel, Task
from adbflow.scheduling.profiles import ProfileBook
from adbflow.scheduling.selector import Ask, SelectorPolicy, feasible

NOW = time.time()
MID = "adbflow-virtual midrange_2023"
BMP_BYTES = 150_000


def phone(serial: str, **kw) -> Bid:
    base = dict(serial=serial, model=MID, cores=8, cpu_load=5.0, per_core_load=[],
                mem_available_kb=4 << 20, mem_total_kb=8 << 20, battery_level=80,
                battery_charging=False, temperature_c=30.0, freq_ratio=1.0, probe_rtt_s=0.02,
                timestamp=NOW)
    base.update(kw)
    return Bid(**base)


def laptop(load: float = 10.0, **kw) -> Bid:
    return host_bid(cpu_percent=load, cores=8, mem_available_kb=8 << 20,
                    mem_total_kb=16 << 20, now=NOW, **kw)


@pytest.fixture(scope="module")
def book() -> ProfileBook:
    return ProfileBook.load()


def _host(book, lite2_ms: float, lite0_ms: float = 5.0):
    specs = {m.name: m for m in catalogue({"lite0-int8": "/m/l0i8.tflite",
                                           "lite2": "/m/l2.tflite"},
                                          list(book.profiles.values()))}
    return host_profile([HostModel(specs["lite0-int8"], lite0_ms),
                         HostModel(specs["lite2"], lite2_ms)], labels_path="/m/labels.txt")


def choose(book, ask, bids, host, inflight=None):
    pol = SelectorPolicy(ask, CostModel(), host_profile=host)
    return pol.choose(Task("classify", input_bytes=BMP_BYTES, output_bytes=1024), bids,
                      inflight=inflight or {}, profiles=book, now=NOW)


def test_host_profile_speeds_are_its_measurements_and_accuracy_comes_from_the_phones(book):
    host = _host(book, lite2_ms=40.0, lite0_ms=8.0)
    by = {m.name: m for m in host.models}
    assert by["lite2"].ms(host.timing) == pytest.approx(40.0)
    assert by["lite0-int8"].ms(host.timing) == pytest.approx(8.0)
    phone_lite2 = book.for_model(MID).model("lite2")
    assert by["lite2"].accuracy == phone_lite2.accuracy and by["lite2"].input_size == 260
    assert by["lite2"].path == "/m/l2.tflite"
    assert host.timing.adb_latency_ms == 0


def test_fast_idle_host_wins_against_phones_with_no_transfer(book):
    ask = Ask(model_name="lite2", tier="any")
    d = choose(book, ask, [phone("p1"), phone("p2"), laptop()], _host(book, lite2_ms=30.0))
    assert d.winner == HOST_SERIAL
    host_cost = d.cost_of(HOST_SERIAL)
    assert host_cost.parts["transfer_in"] == 0.0      # the pixels are on the laptop
    assert host_cost.parts["transfer_out"] < 1e-6     # in-memory, no adb call
    assert d.cost_of("p1").parts["transfer_in"] > 0       # phones need the BMP pushed
    assert d.detail["model"] == "lite2"


def test_slow_or_loaded_host_loses_to_an_idle_phone_by_the_same_cost(book):
    ask = Ask(model_name="lite2", tier="any")
    phone_s = choose(book, ask, [phone("p1")], None).cost_of("p1").total_s
    # a host whose lite2 takes longer than the phone's whole ECT loses
    slow = _host(book, lite2_ms=phone_s * 1000 * 1.5)
    assert choose(book, ask, [phone("p1"), laptop(load=0.0)], slow).winner == "p1"
    # one that is faster idle but 90 % loaded loses too (load factor 1/(1-0.9) = 10x)
    quick = _host(book, lite2_ms=phone_s * 1000 * 0.3)
    assert choose(book, ask, [phone("p1"), laptop(load=0.0)], quick).winner == HOST_SERIAL
    loaded = choose(book, ask, [phone("p1"), laptop(load=90.0)], quick)
    assert loaded.winner == "p1"
    assert loaded.cost_of(HOST_SERIAL).factors["load_x"] == pytest.approx(10.0)


def test_host_queue_counts_like_a_phone_queue(book):
    ask = Ask(model_name="lite2", tier="any")
    phone_s = choose(book, ask, [phone("p1")], None).cost_of("p1").total_s
    host = _host(book, lite2_ms=phone_s * 1000 * 0.4)
    queued = {HOST_SERIAL: tuple(Task("classify", prior_s=phone_s * 0.4) for _ in range(3))}
    d = choose(book, ask, [phone("p1"), laptop(load=0.0)], host, inflight=queued)
    assert d.cost_of(HOST_SERIAL).parts["wait"] > 0
    assert d.winner == "p1"


def test_tier_rules_keep_the_host_off_by_default_and_alone_when_asked(book):
    host = _host(book, lite2_ms=1.0)
    bids = [phone("p1"), laptop()]
    assert choose(book, Ask(model_name="lite2"), bids, host).winner == "p1"
    assert choose(book, Ask(model_name="lite2", tier="host"), bids, host).winner == HOST_SERIAL
    # tier = host with a very slow host still picks the host (phones are not candidates)
    slow = _host(book, lite2_ms=60_000.0)
    assert choose(book, Ask(model_name="lite2", tier="host"), bids, slow).winner == HOST_SERIAL
    # strict origin never lets the host (or another phone) run it
    strict = Ask(model_name="lite2", tier="any", locality="strict-origin", origin="p1")
    assert choose(book, strict, bids, host).winner == "p1"
    # an abi floor drops the host (it reports none)
    d = choose(book, Ask(model_name="lite2", tier="any", abi="arm64-v8a"),
               [phone("p1", abi="arm64-v8a"), laptop()], host)
    assert d.winner == "p1"


def test_host_never_bids_for_a_story(book):
    host = _host(book, lite2_ms=1.0)
    c = CostModel().cost(Task("generate", prompt_tokens=20), laptop(), host, inflight=(),
                         service_times=None, now=NOW)
    assert not c.eligible and "memory" in c.excluded


def test_edge_cloud_flow_validates_and_host_models_are_checked(book, tmp_path):
    flow = load.load("edge-cloud")
    check_flow(flow, book)
    assert uses_host(flow) and not uses_host(load.load("cascade"))
    big = flow.stage("big")
    assert big.placement.tier is Tier.HOST and ask_of(big, "p1").tier == "host"
    assert flow.stage("small").placement.locality is Locality.STRICT_ORIGIN
    # a model the host does not carry is rejected before any picture
    assert "laptop tier carries no model" in feasible(
        Ask(model_name="lite1", tier="host"), book, [])
    bad = dataclasses.replace(flow, stages=(
        flow.stages[0], dataclasses.replace(big, model=dataclasses.replace(big.model,
                                                                          name="nope"))))
    with pytest.raises(FlowError, match="laptop tier carries no model"):
        check_flow(bad, book)


def test_tier_with_strict_origin_is_an_error_naming_the_key(tmp_path):
    p = tmp_path / "f.toml"
    p.write_text('name = "x"\n[[stages]]\nname = "a"\nrun = "classify"\n'
                 'placement = { strict = "origin", tier = "any" }\n')
    with pytest.raises(FlowError, match=r"stages\[0\]\.placement\.tier"):
        load.load(str(p))
    p.write_text('name = "x"\n[[stages]]\nname = "a"\nrun = "classify"\n'
                 'placement = { tier = "cloud" }\n')
    with pytest.raises(FlowError, match=r"placement\.tier: 'cloud' is not one of"):
        load.load(str(p))


def test_cli_validate_edge_cloud():
    from typer.testing import CliRunner

    from adbflow.cli.main import app
    res = CliRunner().invoke(app, ["flows", "validate", "edge-cloud"])
    assert res.exit_code == 0, res.output
    assert "edge-cloud: ok (3 stages" in res.output and "laptop tier ready" in res.output


def test_missing_litert_is_said_clearly(monkeypatch, book):
    import builtins

    from adbflow.runtime import host_tier
    real = builtins.__import__

    def no_litert(name, *a, **kw):
        if name.startswith("ai_edge_litert"):
            raise ImportError("No module named 'ai_edge_litert'")
        return real(name, *a, **kw)
    monkeypatch.setattr(builtins, "__import__", no_litert)
    with pytest.raises(host_tier.HostTierError, match="needs ai-edge-litert") as exc:
        host_tier.HostTier(list(book.profiles.values()))
    assert "adbflow[fleet]" in exc.value.hint


# ------------------------------------------------------------------ real local inference

def test_host_tier_classifies_chelsea_locally_and_caches_its_speed(book, tmp_path):
    pytest.importorskip("ai_edge_litert")
    from adbflow.runtime.host_tier import HostTier
    tier = HostTier(list(book.profiles.values()), cache_dir=tmp_path)
    prof = tier.profile()
    names = {m.name for m in prof.models}
    assert {"lite0-int8", "lite2"} <= names
    assert all(m.ms(prof.timing) > 0 for m in prof.models)
    cache = json.loads((tmp_path / "host_tier.json").read_text())
    assert len(cache) == len(prof.models)
    for model in ("lite0-int8", "lite2"):
        out = tier.classify(ASSETS_DIR / "chelsea.png", model)
        top = out["labels"][0]
        assert "cat" in top["name"] or "tabby" in top["name"], out["labels"]
        assert 0 < top["score"] <= 1 and out["pushed_bytes"] == 0
    # a second tier reads the cached speeds instead of measuring again
    again = HostTier(list(book.profiles.values()), cache_dir=tmp_path)
    again.measure = lambda spec: pytest.fail("measured again despite the cache")
    assert {m.name: m.speed_x for m in again.profile().models} == \
        {m.name: m.speed_x for m in prof.models}
    b = tier.bid()
    assert b.serial == HOST_SERIAL and b.ok and b.cores >= 1 and b.mem_total_kb > 0


def test_host_bid_rounds_reuse_a_too_young_load_sample(book, tmp_path):
    pytest.importorskip("ai_edge_litert")
    from adbflow.runtime.host_tier import HostTier
    tier = HostTier(list(book.profiles.values()), cache_dir=tmp_path)
    first = tier.bid()
    assert first.load_window_s == pytest.approx(0.2) and 0 <= first.cpu_load <= 100
    again = tier.bid()          # within 0.15 s: the same sample, not psutil's empty delta
    assert again.cpu_load == first.cpu_load and again.load_window_s == first.load_window_s
    time.sleep(0.2)
    later = tier.bid()
    assert later.load_window_s >= 0.15


def test_host_classify_of_an_unreadable_picture_names_the_laptop(book, tmp_path):
    pytest.importorskip("ai_edge_litert")
    from adbflow.runtime.host_tier import HostTier, HostTierError
    bad = tmp_path / "$(touch pwned).bmp"
    bad.write_bytes(b"not a picture")
    tier = HostTier(list(book.profiles.values()), cache_dir=tmp_path)
    with pytest.raises(HostTierError, match="laptop: lite0-int8"):
        tier.classify(bad, "lite0-int8")
    with pytest.raises(HostTierError, match="carries no model 'lite9'"):
        tier.classify(ASSETS_DIR / "chelsea.png", "lite9")
    assert not (tmp_path / "pwned").exists()


def test_host_models_folder_from_the_environment(book, tmp_path, monkeypatch):
    import shutil

    from adbflow.runtime.host_tier import MODELS_ENV, host_models
    mine = tmp_path / "models"
    mine.mkdir()
    shutil.copy(ASSETS_DIR / "efficientnet_lite0_int8.tflite", mine)
    monkeypatch.setenv(MODELS_ENV, str(mine))
    got = host_models(list(book.profiles.values()))
    assert [(m.name, m.path) for m in got] == [
        ("lite0-int8", str(mine / "efficientnet_lite0_int8.tflite"))]
    # edge-cloud asks the laptop for lite2, which this folder lacks: rejected up front
    with pytest.raises(FlowError, match="laptop tier carries no model"):
        check_flow(load.load("edge-cloud"), book)
