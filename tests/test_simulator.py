"""Simulator sanity: the lower bound is below every policy and below the exhaustive optimum,
the optimum is below every policy, and ect beats the seed policy on the six-profile fleet."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from adbflow.cli import simulate as cli_simulate
from adbflow.scheduling.policy import POLICY_NAMES
from adbflow.scheduling.profiles import ProfileBook
from adbflow.sim import (
    SimConfig,
    compare,
    evaluate_assignment,
    exhaustive_optimum,
    fleet_profiles,
    local_search,
    lower_bound,
    make_instance,
    simulate,
    time_indexed_bound,
)
from adbflow.sim.bounds import _srpt_completions, _WorkClock, steady_state_bound
from adbflow.sim.instances import _lp_throughput


@pytest.fixture(scope="module")
def profs():
    return fleet_profiles(ProfileBook.load())


def test_srpt_single_server():
    # job 0 (size 4) arrives at 0; job 1 (size 1) at 1 preempts it
    done = _srpt_completions(np.array([0.0, 1.0]), np.array([4.0, 1.0]), 1.0)
    assert list(done) == [5.0, 2.0]
    done = _srpt_completions(np.array([0.0, 10.0]), np.array([2.0, 2.0]), 2.0)
    assert list(done) == [1.0, 11.0]


def test_lp_throughput_two_specialists():
    # device 0 only good at classify, device 1 only at generate: 1 job/s each
    lam, _ = _lp_throughput(np.array([1.0, 1e9]), np.array([1e9, 1.0]))
    assert lam == pytest.approx(1.0, rel=1e-6)
    lam, _ = _lp_throughput(np.array([1.0, 1.0]), np.array([1.0, 1.0]))
    assert lam == pytest.approx(1.0)      # two devices, two seconds of work per job


def test_foreground_app_slows_tasks_mid_run(profs):
    inst = make_instance(SimConfig(n_jobs=5, seed=4), profs[:1])
    tog = inst.fg_toggles[0]
    slow = inst.fg_slowdown()
    assert slow > 1.5
    start = float(tog[0]) - 1.0                      # one second before the app starts
    end = inst.finish_time(0, start, 3.0)
    assert end == pytest.approx(tog[0] + 2.0 * slow)
    assert inst.finish_time(0, start, 0.5) == pytest.approx(start + 0.5)


@pytest.mark.parametrize("u", [0.3, 0.9])
def test_bound_is_below_every_policy(profs, u):
    rep = compare(SimConfig(utilisation=u, n_jobs=150, seed=2), profs, bound_iters=60)
    b = rep["bound"]["mean_latency_s"]
    assert b == max(rep["bound"]["pooled_srpt_s"], rep["bound"]["time_indexed_s"])
    assert b <= rep["bound"]["greedy_clairvoyant_no_heat_s"]
    assert b >= rep["bound"]["no_queue_mean_s"] > 0
    for p in rep["policies"]:
        assert p["mean_latency_s"] >= b, p["policy"]
        assert p["mean_processing_s"] <= p["mean_latency_s"] + 1e-9


@pytest.mark.parametrize("seed", [1, 2])
def test_exhaustive_optimum_between_bound_and_policies(profs, seed):
    cfg = SimConfig(utilisation=0.9, n_jobs=3, seed=seed).without_noise()
    three = [profs[0], profs[2], profs[5]]
    inst = make_instance(cfg, three)
    opt, assign = exhaustive_optimum(inst)
    assert float(np.mean(evaluate_assignment(inst, assign))) == pytest.approx(opt)
    assert lower_bound(inst).mean_latency_s <= opt + 1e-9
    for name in POLICY_NAMES:
        res = simulate(inst, name)
        assert res.mean_s >= opt - 1e-9, name
    # the deterministic simulator and the assignment evaluator agree on the same schedule
    ect = simulate(inst, "ect")
    replay = evaluate_assignment(inst, [tuple(a) for a in ect.assignment])
    assert np.allclose(replay, ect.latencies)


def test_same_seed_same_run_and_steady_state_bound_sane(profs):
    cfg = SimConfig(utilisation=0.6, n_jobs=120, seed=5)
    a = compare(cfg, profs, ("ect", "lowest-cpu"), bound_iters=10)
    b = compare(cfg, profs, ("ect", "lowest-cpu"), bound_iters=10)
    assert a == b
    inst = make_instance(cfg, profs)
    ss = steady_state_bound(inst)
    fastest = min(inst.min_duration(d, "classify", 0) for d in range(6)) + \
        min(inst.min_duration(d, "generate", 0) for d in range(6))
    assert 0.5 * fastest < ss < 5 * fastest


def test_work_clock_matches_finish_time(profs):
    inst = make_instance(SimConfig(n_jobs=200, seed=3, fg_on_mean_s=5.0, fg_off_mean_s=5.0), profs[:2])
    clock = _WorkClock(inst, 1, 2000.0)
    starts = np.linspace(0.0, 300.0, 97)
    ends = clock.finish(starts, np.full(97, 2.5))
    assert np.allclose(ends, [inst.finish_time(1, float(s), 2.5) for s in starts])
    assert (ends > starts + 2.5 + 1e-9).any()          # some starts hit the foreground app


def _random_small_instance(profs, seed):
    """3 jobs on 2-3 random phone classes; half with foreground apps that toggle every few
    seconds (so they matter inside a 3-job run), heat off (the bound leaves it out)."""
    rng = np.random.default_rng(seed)
    k = 2 + seed % 2
    devs = [profs[i] for i in rng.choice(len(profs), size=k, replace=False)]
    cfg = replace(SimConfig(utilisation=float(rng.uniform(0.5, 2.0)), n_jobs=3, seed=seed),
                  thermal=False, telemetry_age_s=0.0, load_noise_pct=0.0,
                  fg_on_mean_s=float(rng.uniform(0.5, 4)), fg_off_mean_s=float(rng.uniform(0.5, 4)))
    if seed % 2:
        cfg = cfg.without_noise()
    return make_instance(cfg, devs)


def test_time_indexed_bound_never_exceeds_the_exhaustive_optimum(profs):
    """Validity, checked: on random small instances (overload included), the Lagrangian bound
    is <= the best FIFO assignment found exhaustively, and it is a real improvement on the
    no-queue bound somewhere (it could be, but is not, trivially small)."""
    gains = []
    for seed in range(16):
        inst = _random_small_instance(profs, seed)
        opt, _ = exhaustive_optimum(inst)
        b = time_indexed_bound(inst, iters=40, slot_s=0.05)
        assert b.no_queue_mean_s - 1e-9 <= b.mean_latency_s <= opt + 1e-9, seed
        assert b.mean_latency_s <= b.feasible_mean_s + 1e-9
        gains.append(b.mean_latency_s / b.no_queue_mean_s)
        assert lower_bound(inst).mean_latency_s <= opt + 1e-9
    assert max(gains) > 1.1


def test_time_indexed_bound_is_tighter_than_pooled_srpt_under_load(profs):
    inst = make_instance(SimConfig(utilisation=0.9, n_jobs=120, seed=3), profs)
    ti = time_indexed_bound(inst, iters=40)
    pooled = lower_bound(inst)
    assert ti.mean_latency_s > 1.1 * pooled.mean_latency_s
    for name in ("ect", "lowest-cpu"):
        assert simulate(inst, name).mean_s >= ti.mean_latency_s


def test_ect_beats_lowest_cpu_on_the_six_profile_fleet(profs):
    """Ratios only, never absolute times. lowest-cpu sees 3 s old loads and ignores speed."""
    rep = compare(SimConfig(utilisation=0.6, n_jobs=400, seed=1), profs, ("ect", "lowest-cpu"),
                  bound_iters=0)
    ect, low = (p["mean_latency_s"] for p in rep["policies"])
    assert low / ect > 1.5
    fresh = compare(replace(SimConfig(utilisation=0.6, n_jobs=400, seed=1), telemetry_age_s=0.0,
                            load_noise_pct=0.0), profs, ("lowest-cpu",), bound_iters=0)
    assert fresh["policies"][0]["mean_latency_s"] < low        # staleness is what hurts it


def test_congestion_part_lowers_latency_at_high_load(profs):
    """The congestion part (service x queue length) against pure earliest completion, same
    pictures and phones: better on every seed at 90 %, about equal at 30 %."""
    for seed in (1, 2, 3):
        inst = make_instance(SimConfig(utilisation=0.9, n_jobs=400, seed=seed), profs)
        assert simulate(inst, "ect").mean_s < simulate(inst, "ect", congestion=0.0).mean_s, seed
    inst = make_instance(SimConfig(utilisation=0.3, n_jobs=400, seed=1), profs)
    with_c, without = simulate(inst, "ect").mean_s, simulate(inst, "ect", congestion=0.0).mean_s
    assert abs(with_c / without - 1) < 0.05


def test_replay_with_heat_reproduces_the_simulation(profs):
    """evaluate_assignment(heat=True) is the simulator's schedule class exactly: replaying a
    policy's assignment gives that policy's latencies, so searches over assignments score
    the same schedules the policies produce."""
    # phones that heat up in 30 s instead of 5 min, so a short run is throttled
    inst = make_instance(SimConfig(utilisation=0.9, n_jobs=150, seed=2, thermal_tau_s=30.0), profs)
    for name in ("ect", "lowest-cpu"):
        res = simulate(inst, name)
        assert np.allclose(evaluate_assignment(inst, res.assignment, heat=True), res.latencies)
    # and heat matters in it: without heat the same assignment is faster
    res = simulate(inst, "ect")
    assert evaluate_assignment(inst, res.assignment).mean() < res.mean_s


def test_local_search_lands_between_the_bound_and_the_policy(profs):
    inst = make_instance(SimConfig(utilisation=0.9, n_jobs=80, seed=3), profs)
    res = simulate(inst, "lowest-cpu")            # a poor start leaves room to improve
    best, assign = local_search(inst, res.assignment, tries=300, seed=1)
    assert best < 0.9 * res.mean_s
    assert best == pytest.approx(float(np.mean(evaluate_assignment(inst, assign, heat=True))))
    assert best >= time_indexed_bound(inst, iters=20).mean_latency_s


def test_cli_simulate_json():
    app = typer.Typer()
    cli_simulate.register(app)
    app.command("noop")(lambda: None)
    res = CliRunner().invoke(app, ["simulate", "--json", "-n", "60", "-u", "0.5", "--policy", "ect",
                                   "--policy", "lowest-cpu"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert [p["policy"] for p in doc[0]["policies"]] == ["ect", "lowest-cpu"]
    assert doc[0]["bound"]["mean_latency_s"] <= doc[0]["policies"][0]["mean_latency_s"]
    res = CliRunner().invoke(app, ["simulate", "-n", "3", "-u", "0.9", "--optimum", "--class",
                                   "flagship_2025", "--class", "old_2017"])
    assert res.exit_code == 0, res.output
    assert "offline optimum" in res.output


def test_cli_simulate_quick_and_bound_iters():
    app = typer.Typer()
    cli_simulate.register(app)
    app.command("noop")(lambda: None)
    res = CliRunner().invoke(app, ["simulate", "--quick", "-u", "0.5", "--policy", "ect"])
    assert res.exit_code == 0, res.output
    assert f"{cli_simulate.QUICK_JOBS} pictures" in res.output
    assert "preemptive" not in res.output and "time-indexed" in res.output
    assert f"{cli_simulate.QUICK_BOUND_ITERS} steps" in res.output
    res = CliRunner().invoke(app, ["simulate", "--json", "-n", "40", "-u", "0.5", "--policy", "ect",
                                   "--bound-iters", "0"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc[0]["config"]["n_jobs"] == 40
    # no subgradient steps: the time-indexed bound is the no-queue one (prices all zero)
    assert doc[0]["bound"]["time_indexed_s"] == pytest.approx(doc[0]["bound"]["no_queue_mean_s"], abs=1e-3)


def test_offline_search_bench_runs_and_never_reports_worse_than_ect():
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "bench" / "offline_search.py"), "--jobs", "60",
                          "--tries", "60", "--seeds", "1", "--utilisation", "0.9", "--json"],
                         capture_output=True, text=True, timeout=120, cwd=root)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert len(doc) == 1 and doc[0]["utilisation"] == 0.9
    assert doc[0]["best_found_mean_s"] <= doc[0]["ect_mean_s"]
    assert doc[0]["ect_over_best_found"] >= 1.0
