"""Scheduling policies as pure functions: filters, cost parts, ties, inflight, baselines."""
from __future__ import annotations

import json
import math
import random
from dataclasses import replace

import pytest
from bid_helpers import make_bid

from adbflow.errors import AdbflowError
from adbflow.scheduling.bids import Bid
from adbflow.scheduling.policy import (
    POLICY_NAMES,
    CostModel,
    Task,
    background_load,
    format_decision,
    get_policy,
    prior_service_s,
    task_units,
)
from adbflow.scheduling.profiles import ProfileBook
from adbflow.scheduling.service_times import ServiceTimes, load_factor

NOW = 1_000_000.0
FAST = "adbflow-virtual flagship_2025"
SLOW = "adbflow-virtual old_2017"


def bid(serial: str, model: str | None = FAST, **kw) -> Bid:
    return make_bid(serial, **{"model": model, "timestamp": NOW, **kw})


@pytest.fixture(scope="module")
def book() -> ProfileBook:
    return ProfileBook.load()


def choose(name, task, bids, book, inflight=None, st=None, seed=0):
    return get_policy(name).choose(task, bids, inflight=inflight or {}, profiles=book,
                                   service_times=st, rng=random.Random(seed), now=NOW)


GEN = Task("generate", prompt_tokens=40, n_predict=64)
CLS = Task("classify", input_bytes=300_000)


@pytest.mark.parametrize("name", POLICY_NAMES)
@pytest.mark.parametrize("bad, why", [
    (dict(error="timeout after 5 s"), "probe failed"),
    (dict(cpu_load=math.nan), "cpu load unknown"),
    (dict(mem_available_kb=50 << 10), "memory"),
    (dict(battery_level=5, battery_charging=False), "battery"),
    (dict(thermal_status=4), "thermal"),
])
def test_hard_filters_apply_to_every_policy(name, bad, why, book):
    bids = [bid("bad", FAST, **{"cpu_load": 0.0, **bad}), bid("ok", SLOW, cpu_load=90.0)]
    for seed in range(5):
        d = choose(name, GEN, bids, book, seed=seed)
        assert d.winner == "ok"
    cost = d.cost_of("bad")
    assert not cost.eligible and why in cost.excluded and math.isinf(cost.total_s)


def test_low_battery_is_fine_while_charging(book):
    d = choose("ect", GEN, [bid("a", battery_level=5, battery_charging=True)], book)
    assert d.winner == "a"


def test_no_eligible_device_gives_no_winner_and_says_why(book):
    d = choose("ect", GEN, [bid("a", error="offline"), bid("b", thermal_status=5)], book)
    assert d.winner is None
    assert "a: probe failed: offline" in d.reason and "b: thermal" in d.reason
    assert choose("ect", GEN, [], book).winner is None


def test_ect_prefers_the_fast_phone_even_when_busier(book):
    bids = [bid("fast", FAST, cpu_load=40.0), bid("slow", SLOW, cpu_load=2.0)]
    assert choose("ect", GEN, bids, book).winner == "fast"
    assert choose("lowest-cpu", GEN, bids, book).winner == "slow"


def test_ect_counts_work_already_awarded(book):
    bids = [bid("fast", FAST), bid("slow", SLOW)]
    one = prior_service_s(GEN, book.for_model(FAST))
    queue = {"fast": [GEN] * 8}
    d = choose("ect", GEN, bids, book, inflight=queue)
    assert d.winner == "slow"
    assert d.cost_of("fast").parts["wait"] > 7 * one
    # a running task counts only its remaining time
    running = {"fast": [Task("generate", prompt_tokens=40, n_predict=64, started_at=NOW - 100)]}
    d = choose("ect", GEN, bids, book, inflight=running)
    assert d.winner == "fast"
    assert d.cost_of("fast").parts["wait"] < 0.2 * one + 0.1


def test_congestion_charges_the_delay_an_award_adds_to_a_queue(book):
    """A fast phone with a queue is in demand: the award's own completion there may still be
    the earliest, but every second added there delays the work that queues behind it."""
    fast, slow = book.for_model(FAST), book.for_model(SLOW)
    one_fast = prior_service_s(GEN, fast)
    one_slow = prior_service_s(GEN, slow)
    # enough queued on the fast phone to be worse than the slow one with the charge, few
    # enough that the completion alone still favours it
    k = next(k for k in range(1, 50) if (k + 1) * one_fast < one_slow < (2 * k + 1) * one_fast)
    bids = [bid("fast", FAST, cpu_load=8.0), bid("slow", SLOW, cpu_load=8.0)]
    queue = {"fast": [GEN] * k}
    ect = get_policy("ect", queueing="fifo")
    pure = get_policy("ect", queueing="fifo", congestion=0.0)
    d = ect.choose(GEN, bids, inflight=queue, profiles=book, rng=random.Random(0), now=NOW)
    d0 = pure.choose(GEN, bids, inflight=queue, profiles=book, rng=random.Random(0), now=NOW)
    c = d.cost_of("fast")
    assert c.parts["congestion"] == pytest.approx(k * c.parts["service"])
    assert d.cost_of("slow").parts["congestion"] == 0.0          # nothing queued there
    assert d0.cost_of("fast").parts["congestion"] == 0.0
    assert d0.winner == "fast" and d.winner == "slow"
    # an empty queue costs nothing extra: the fast phone wins either way
    d = ect.choose(GEN, bids, inflight={}, profiles=book, rng=random.Random(0), now=NOW)
    assert d.winner == "fast" and d.cost_of("fast").parts["congestion"] == 0.0


def test_own_running_job_is_not_counted_as_load_too(book):
    prof = book.for_model(FAST)
    b = bid("a", cpu_load=60.0)
    running = [Task("generate", started_at=NOW - 1)]
    assert background_load(b, [], prof) == 60.0
    assert background_load(b, running, prof) == pytest.approx(10.0)   # 4 of 8 cores were ours
    # a reading taken before our job started does not contain it
    late = bid("a", cpu_load=60.0, timestamp=NOW - 10)
    sens = prof.timing.load_sensitivity
    got = CostModel().cost(GEN, late, prof, inflight=[Task("generate", started_at=NOW - 1)],
                           service_times=None, now=NOW).factors["load_x"]
    assert got == pytest.approx(load_factor(60.0, sens)) and got > load_factor(10.0, sens)


def test_load_heat_and_capped_clocks_slow_the_estimate(book):
    prof = book.for_model(FAST)
    m = CostModel()
    base = m.cost(GEN, bid("a", cpu_load=0.0), prof, inflight=[], service_times=None, now=NOW)
    busy = m.cost(GEN, bid("a", cpu_load=50.0), prof, inflight=[], service_times=None, now=NOW)
    hot = m.cost(GEN, bid("a", cpu_load=0.0, thermal_status=3), prof, inflight=[],
                 service_times=None, now=NOW)
    capped = m.cost(GEN, bid("a", cpu_load=80.0, freq_ratio=0.5), prof, inflight=[],
                    service_times=None, now=NOW)
    idle_low_clock = m.cost(GEN, bid("a", cpu_load=0.0, freq_ratio=0.3), prof, inflight=[],
                            service_times=None, now=NOW)
    lat = prof.timing.adb_latency_ms / 1000
    assert busy.parts["service"] - lat == pytest.approx(
        (base.parts["service"] - lat) * load_factor(50.0, prof.timing.load_sensitivity))
    assert hot.parts["service"] > 1.5 * base.parts["service"] - 0.1
    assert capped.factors["freq_x"] == pytest.approx(2.0)
    assert idle_low_clock.factors["freq_x"] == 1.0      # DVFS at idle is not throttling


def test_transfer_is_free_where_the_data_already_is(book):
    big = Task("classify", input_bytes=50_000_000, data_on="b")
    d = choose("ect", big, [bid("a"), bid("b")], book)
    assert d.winner == "b"
    assert d.cost_of("b").parts["transfer_in"] == 0.0
    t = book.for_model(FAST).timing
    assert d.cost_of("a").parts["transfer_in"] == pytest.approx(
        t.adb_latency_ms / 1000 + 50 / t.bandwidth_mb_s)


def test_model_residency(book):
    st = ServiceTimes(None)
    prof = book.for_model(None)          # default profile has cold-start costs
    m = CostModel()
    load_s = prof.timing.generate_load_ms / 1000       # every one-shot start loads the model
    assert load_s > 0
    cold = m.cost(GEN, bid("a", None), prof, inflight=[], service_times=st, now=NOW)
    assert cold.parts["model_load"] == pytest.approx(prof.timing.generate_cold_ms / 1000
                                                     + load_s)
    st.record("a", "generate", 3.0, cpu_load=0.0, units=64, at=NOW - 60)
    cached = m.cost(GEN, bid("a", None), prof, inflight=[], service_times=st, now=NOW)
    assert cached.parts["model_load"] == pytest.approx(load_s)     # in the page cache
    resident = m.cost(replace(GEN, resident_on=frozenset({"a"})), bid("a", None), prof,
                      inflight=[], service_times=st, now=NOW)
    assert resident.parts["model_load"] == 0.0                      # a llama-server holds it
    stale = m.cost(GEN, bid("a", None), prof, inflight=[], service_times=st, now=NOW + 3600)
    assert stale.parts["model_load"] == pytest.approx(cold.parts["model_load"])


def test_learned_service_time_overrides_the_profile(book):
    st = ServiceTimes(None)
    bids = [bid("a", FAST), bid("b", FAST)]
    units = task_units(GEN)
    st.record("a", "generate", 20.0 * units, cpu_load=0.0, units=units)   # this phone crawls
    d = choose("ect", GEN, bids, book, st=st)
    assert d.winner == "b"
    assert d.cost_of("a").parts["service"] > 19 * units


def test_ties_are_broken_randomly_among_near_equal_devices(book):
    bids = [bid("a", cpu_load=10.0), bid("b", cpu_load=10.5), bid("c", SLOW)]
    winners = {choose("ect", GEN, bids, book, seed=s).winner for s in range(40)}
    assert winners == {"a", "b"}
    d = choose("ect", GEN, bids, book)
    assert "random among 2" in d.reason


def test_lowest_cpu_ties_prefer_memory_then_serial(book):
    bids = [bid("b", cpu_load=5.0, mem_available_kb=1 << 20), bid("a", cpu_load=5.0, mem_available_kb=2 << 20)]
    assert choose("lowest-cpu", GEN, bids, book).winner == "a"
    bids = [bid("b", cpu_load=5.0), bid("a", cpu_load=5.0)]
    assert choose("lowest-cpu", GEN, bids, book).winner == "a"


def test_round_robin_cycles_over_eligible_devices(book):
    pol = get_policy("round-robin")
    bids = [bid("c"), bid("a"), bid("b"), bid("x", error="gone")]
    got = [pol.choose(GEN, bids, inflight={}, profiles=book, now=NOW).winner for _ in range(5)]
    assert got == ["a", "b", "c", "a", "b"]


def test_random_spreads_over_eligible_devices(book):
    bids = [bid("a"), bid("b"), bid("x", battery_level=1)]
    winners = {choose("random", GEN, bids, book, seed=s).winner for s in range(30)}
    assert winners == {"a", "b"}


def test_get_policy_and_explain_output(book):
    with pytest.raises(AdbflowError, match="unknown policy"):
        get_policy("fastest")
    bids = [bid("a"), bid("dead", error="timeout")]
    d = choose("ect", CLS, bids, book)
    text = format_decision(d)
    assert "winner a" in text and "transfer_in_s" in text and "probe failed: timeout" in text
    assert text.splitlines()[3].startswith("*")       # winner row first, marked
    doc = json.loads(json.dumps(d.to_json()))
    assert doc["costs"][1]["total_s"] is None and doc["winner"] == "a"


def test_task_validates_stage_and_units():
    with pytest.raises(ValueError):
        Task("upscale")
    assert task_units(Task("classify")) == 1.0
    assert task_units(Task("generate", prompt_tokens=50, n_predict=64)) == pytest.approx(74.0)


def test_queueing_discipline_decides_what_counts_as_wait(book):
    """The pipeline runs one task per stage per device, stages side by side: queued
    generates do not delay a classify there, they only share the CPU with it."""
    queued = {"a": [Task("generate", started_at=NOW - 0.5), GEN, GEN]}
    per_stage = get_policy("ect").choose(CLS, [bid("a", cpu_load=0.0)], inflight=queued,
                                         profiles=book, now=NOW).cost_of("a")
    fifo = get_policy("ect", queueing="fifo").choose(CLS, [bid("a", cpu_load=0.0)], inflight=queued,
                                                     profiles=book, now=NOW).cost_of("a")
    assert per_stage.parts["wait"] == 0.0 and per_stage.factors["load_x"] > 1.2
    assert fifo.parts["wait"] > 2 * prior_service_s(GEN, book.for_model(FAST))
    with pytest.raises(ValueError):
        get_policy("ect", queueing="lifo")


def test_overrunning_task_of_ours_marks_the_phone_slower_now(book):
    """Our own clock is fresh evidence: a task running well past its estimate means the
    phone is slower right now (foreground app, heat) than its seconds-old load says."""
    prof = book.for_model(FAST)
    m = CostModel()
    est = m.cost(GEN, bid("a"), prof, inflight=[], service_times=None, now=NOW)
    one = est.parts["service"]
    on_time = m.cost(GEN, bid("a"), prof, inflight=[Task("generate", started_at=NOW - 0.5 * one)],
                     service_times=None, now=NOW)
    assert on_time.factors["overrun_x"] == 1.0
    assert on_time.parts["service"] == pytest.approx(one)
    late = m.cost(GEN, bid("a"), prof, inflight=[Task("generate", started_at=NOW - 1.5 * one)],
                  service_times=None, now=NOW)
    # 1.5x our estimate, or more: that estimate no longer counts our own job as load
    assert 1.45 < late.factors["overrun_x"] < m.overrun_cap
    assert late.parts["service"] > 1.3 * one
    stuck = m.cost(GEN, bid("a"), prof, inflight=[Task("generate", started_at=NOW - 50 * one)],
                   service_times=None, now=NOW)
    assert stuck.factors["overrun_x"] == m.overrun_cap        # capped: one stuck job is not a verdict
    off = CostModel(overrun_cap=1.0).cost(GEN, bid("a"), prof,
                                          inflight=[Task("generate", started_at=NOW - 50 * one)],
                                          service_times=None, now=NOW)
    assert off.factors["overrun_x"] == 1.0


def test_ect_prefers_the_cooler_of_near_equal_phones(book):
    # same class, same cost now (both below the temperature where clocks are capped)
    bids = [bid("warm", temperature_c=39.0), bid("cool", temperature_c=31.0), bid("c", SLOW)]
    d0 = choose("ect", GEN, bids, book)
    assert d0.cost_of("warm").total_s == pytest.approx(d0.cost_of("cool").total_s)
    assert {choose("ect", GEN, bids, book, seed=s).winner for s in range(30)} == {"cool"}
    assert "coolest within" in d0.reason
    # within the margin it stays a random draw (identical phones share a burst)
    close = [bid("a", temperature_c=31.5), bid("b", temperature_c=31.0)]
    assert {choose("ect", GEN, close, book, seed=s).winner for s in range(30)} == {"a", "b"}
    # a much faster phone still wins even when it is warmer
    fast_warm = [bid("fast", FAST, temperature_c=39.0), bid("slow", SLOW, temperature_c=30.0)]
    assert choose("ect", GEN, fast_warm, book).winner == "fast"


def test_busy_spells_recognise_our_work_in_a_stale_load_reading(book):
    """A task queued at one decision and finished before the next never shows as running,
    yet it was in a load reading taken while it ran; our bookkeeping still knows."""
    m = CostModel(queueing="fifo")
    st = ServiceTimes(None)
    queued = Task("generate", prompt_tokens=40, n_predict=64)
    running = Task("generate", prompt_tokens=40, n_predict=64, started_at=NOW - 5)
    m.observe({"a": [running, queued]}, NOW)
    # both finished: the second at NOW + 8 (recorded by the pipeline), seen at NOW + 10
    st.record("a", "generate", 4.0, cpu_load=0.0, units=64, at=NOW + 8)
    m.observe({"a": []}, NOW + 10, st)
    assert m.ours_in_reading(bid("a", timestamp=NOW + 7), NOW + 10)         # ran then
    assert not m.ours_in_reading(bid("a", timestamp=NOW + 9), NOW + 10)     # had finished
    assert not m.ours_in_reading(bid("a", timestamp=NOW - 6), NOW + 10)     # not yet started
    # without a recorded end time we only know "finished by now"
    m2 = CostModel()
    m2.observe({"b": [running]}, NOW)
    m2.observe({"b": []}, NOW + 10)
    assert m2.ours_in_reading(bid("b", timestamp=NOW + 9), NOW + 10)
