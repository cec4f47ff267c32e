"""ECT's energy part: joules per job weighed against latency (pure, fake bids), learning
joules per unit from metered attempts, and the zero-weight default changing nothing."""
from __future__ import annotations

import math
import random
from dataclasses import replace
from pathlib import Path

import pytest
from test_policy import FAST, NOW, SLOW, bid

from adbflow.runtime.stages import JobStages, StageTimeouts
from adbflow.scheduling.energy_rates import EnergyRates, attempt_joules, expected_joules
from adbflow.scheduling.policy import (
    POLICY_NAMES,
    Task,
    format_decision,
    get_policy,
    prior_service_s,
    task_units,
)
from adbflow.scheduling.profiles import ProfileBook
from adbflow.scheduling.service_times import ServiceTimes

CLS = Task("classify", input_bytes=300_000)
GEN = Task("generate", prompt_tokens=40, n_predict=64)


@pytest.fixture(scope="module")
def book() -> ProfileBook:
    return ProfileBook.load()


def decide(task, bids, book, *, weight=0.0, rates=None, st=None, inflight=None, seed=0,
           name="ect", **kw):
    pol = get_policy(name, energy_weight_s_per_j=weight, energy_rates=rates, **kw)
    return pol.choose(task, bids, inflight=inflight or {}, profiles=book, service_times=st,
                      rng=random.Random(seed), now=NOW)


def hungry_and_frugal() -> tuple[list, EnergyRates]:
    """A fast phone that burns 12 J per picture and a slow one that needs 0.5 J."""
    rates = EnergyRates(None)
    rates.record("hungry", "classify", 12.0)
    rates.record("frugal", "classify", 0.5)
    return [bid("hungry", FAST), bid("frugal", SLOW)], rates


def test_fast_hungry_and_slow_frugal_swap_as_the_weight_grows(book):
    bids, rates = hungry_and_frugal()
    base = decide(CLS, bids, book, rates=rates, tie_tolerance=0.0, tie_abs_s=0.0)
    assert base.winner == "hungry"
    gap_s = base.cost_of("frugal").total_s - base.cost_of("hungry").total_s
    assert gap_s > 0.1
    swap = gap_s / (12.0 - 0.5)          # the weight at which both cost the same
    winners = []
    for w in [0.0, 0.25 * swap, 0.9 * swap, 1.1 * swap, 4 * swap, 100 * swap]:
        d = decide(CLS, bids, book, weight=w, rates=rates, tie_tolerance=0.0, tie_abs_s=0.0)
        winners.append(d.winner)
        if w == 0:
            assert "energy" not in d.cost_of("hungry").parts
            continue
        assert d.cost_of("hungry").parts["energy"] == pytest.approx(w * 12.0)
        assert d.cost_of("frugal").factors["joules"] == pytest.approx(0.5)
    assert winners == ["hungry"] * 3 + ["frugal"] * 3


def test_energy_part_is_its_own_explain_column_only_when_weighted(book):
    bids, rates = hungry_and_frugal()
    on = format_decision(decide(CLS, bids, book, weight=0.5, rates=rates))
    assert "energy_s" in on.splitlines()[1] and "joules" in on.splitlines()[1]
    assert "12.00" in on                              # the hungry phone's joules
    assert "lowest expected cost" in on and " J)" in on.splitlines()[0]
    off = format_decision(decide(CLS, bids, book, rates=rates))
    assert "energy" not in off and "joules" not in off


def scenarios(n: int = 60):
    """Random fleets and queues like the ones test_policy.py builds by hand."""
    rng = random.Random(7)
    models = [FAST, SLOW, "adbflow-virtual midrange_2023", None]
    for i in range(n):
        bids = [bid(f"d{k}", rng.choice(models), cpu_load=rng.uniform(0, 95),
                    temperature_c=rng.uniform(25, 48),
                    thermal_status=rng.choice([None, 0, 1, 2, 3]),
                    battery_level=rng.randint(5, 100), battery_charging=rng.random() < 0.5,
                    freq_ratio=rng.uniform(0.4, 1.0), power_w=rng.choice([None, 3.0]))
                for k in range(rng.randint(1, 5))]
        inflight = {b.serial: [replace(GEN, started_at=NOW - rng.uniform(0, 5))
                               for _ in range(rng.randint(0, 2))] for b in bids}
        yield rng.choice([CLS, GEN]), bids, inflight, i


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_zero_weight_decides_exactly_as_without_the_energy_part(name, book):
    rates = EnergyRates(None)
    for k in range(5):
        rates.record(f"d{k}", "classify", 1.0 + 3 * k)
        rates.record(f"d{k}", "generate", 0.2 * (5 - k))
    st = ServiceTimes(None)
    st.record("d1", "classify", 0.5, cpu_load=0.0, at=NOW - 30)
    changed = 0
    for task, bids, inflight, seed in scenarios():
        plain = get_policy(name).choose(task, bids, inflight=inflight, profiles=book,
                                        service_times=st, rng=random.Random(seed), now=NOW)
        zero = decide(task, bids, book, name=name, rates=rates, st=st, inflight=inflight,
                      seed=seed)
        assert zero.winner == plain.winner and zero.reason == plain.reason
        assert zero.to_json() == plain.to_json()
        assert all("energy" not in c.parts for c in zero.costs)
        weighted = decide(task, bids, book, name=name, weight=1.0, rates=rates, st=st,
                          inflight=inflight, seed=seed)
        changed += weighted.to_json() != plain.to_json()
    assert changed > 10          # the scenarios are ones where energy would matter


def test_negative_or_nan_weight_is_refused():
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="energy weight"):
            get_policy("ect", energy_weight_s_per_j=bad)


def test_prior_is_measured_power_then_profile_watts_then_nothing(book):
    fast = book.for_model(FAST)
    run_s = prior_service_s(CLS, fast)
    units = task_units(CLS, fast)
    learned = EnergyRates(None)
    learned.record("a", "classify", 7.0)
    assert expected_joules("a", "classify", units, run_s, rates=learned, power_w=3.0,
                           active_w=2.0) == (pytest.approx(7.0), "learned")
    assert expected_joules("b", "classify", units, run_s, rates=learned, power_w=3.0,
                           active_w=2.0) == (pytest.approx(3.0 * run_s), "measured")
    assert expected_joules("b", "classify", units, run_s, rates=None, power_w=math.nan,
                           active_w=2.0) == (pytest.approx(2.0 * run_s), "profile")
    assert expected_joules("b", "classify", units, run_s, rates=None, power_w=None,
                           active_w=0.0) == (0.0, "none")
    # in the cost: a phone drawing more power pays more for the same work
    d = decide(CLS, [bid("cool", FAST, power_w=1.0), bid("hot", FAST, power_w=6.0)], book,
               weight=1.0)
    assert d.cost_of("hot").parts["energy"] == pytest.approx(6 * d.cost_of("cool").parts["energy"])
    assert d.winner == "cool"


def test_profile_active_watts_is_read_from_timing(book):
    prof = book.for_model(FAST)
    hot = replace(prof, timing=replace(prof.timing, active_w=5.0))
    assert prof.timing.active_w == 0.0
    model = get_policy("ect", energy_weight_s_per_j=2.0).model
    cost = model.cost(CLS, bid("a", FAST), hot, inflight=(), service_times=None, now=NOW)
    assert cost.parts["energy"] == pytest.approx(2.0 * 5.0 * prior_service_s(CLS, hot))


def test_attempt_joules_gross_on_battery_net_on_usb_nothing_when_unmetered():
    assert attempt_joules({"gross_j": 9.5, "net_j": 4.0}) == 9.5
    assert attempt_joules({"gross_j": None, "net_j": 4.0, "usb_charging": True}) == 4.0
    assert attempt_joules({"error": "energy meter failed: x", "gross_j": 3.0}) is None
    assert attempt_joules({}) is None and attempt_joules(None) is None
    assert attempt_joules({"gross_j": -1.0, "net_j": math.nan}) is None


def test_rates_learn_an_ewma_per_device_and_stage_and_persist(tmp_path: Path):
    db = tmp_path / "journal.sqlite"
    rates = EnergyRates(db, alpha=0.5)
    rates.record_attempt("a", "classify", {"energy": {"gross_j": 10.0}})
    rates.record_attempt("a", "classify", {"energy": {"gross_j": 20.0}})
    rates.record_attempt("a", "classify", {"energy": {"error": "meter did not start"}})
    rates.record_attempt("a", "classify", {})                      # not metered
    rates.record("a", "generate", 64.0, units=32.0)
    assert rates.estimate("a", "classify") == pytest.approx(15.0)
    assert rates.samples("a", "classify") == 2
    assert rates.estimate("a", "generate") == pytest.approx(2.0)
    assert rates.estimate("b", "classify") is None
    rates.close()
    again = EnergyRates(db)
    assert again.estimate("a", "classify") == pytest.approx(15.0)
    assert again.samples("a", "generate") == 1
    again.close()


def test_stage_bodies_learn_joules_per_unit_from_metered_attempts(tmp_path, book):
    rates = EnergyRates(None)
    stages = JobStages(data_dir=tmp_path, journal=None, inventory=None, dispatcher=None,
                       profiles=book, service_times=None, max_bytes=1,
                       timeouts=StageTimeouts(), leases=None, energy=True,
                       energy_rates=rates)
    prof = book.for_model(FAST)
    task = replace(GEN, n_predict=int(prof.llama.n_predict))
    stages._learn_energy("a", "generate", {"gross_j": 30.0, "net_j": 20.0}, task, prof)
    stages._learn_energy("a", "classify", {"gross_j": None, "net_j": 2.5,
                                           "usb_charging": True}, CLS, prof)
    assert rates.estimate("a", "generate") == pytest.approx(30.0 / task_units(task, prof))
    assert rates.estimate("a", "classify") == pytest.approx(2.5)
    # the learned number is what the policy then weighs
    d = decide(CLS, [bid("a", FAST), bid("b", FAST)], book, weight=1.0, rates=rates)
    assert d.cost_of("a").factors["joules"] == pytest.approx(2.5)
    assert d.cost_of("b").factors["joules"] == 0.0


def test_probe_power_estimate_from_battery_sysfs():
    from adbflow.parsers.sysfs import parse_power_supply, power_from_sysfs
    # µA / µV (AOSP), negative while discharging on AOSP's sign convention
    assert power_from_sysfs("-750000", "3900000") == pytest.approx(0.75 * 3.9)
    assert power_from_sysfs("750000", "3900000") == pytest.approx(0.75 * 3.9)   # reversed sign
    assert power_from_sysfs("-750", "3900") == pytest.approx(0.75 * 3.9)         # mA / mV
    for cur, volt in [("", "3900000"), ("$(reboot)", "3900000"), ("1", "3900000"),
                      ("-750000", "-1"), ("99999999999", "3900000")]:
        assert power_from_sysfs(cur, volt) is None
    text = "capacity=57\nstatus=Discharging\ntemp=315\ncurrent_now=-500000\nvoltage_now=4000000\n"
    assert parse_power_supply(text).power_w == pytest.approx(2.0)
    # on USB the charger feeds the load: no estimate
    assert parse_power_supply(text.replace("Discharging", "Charging")).power_w is None
    assert parse_power_supply("capacity=57\nstatus=Discharging\n").power_w is None
