"""The offline side: evaluate a fixed assignment, improve it with hindsight (local
search), the exhaustive optimum of tiny instances, and `compare` (policies vs bounds).

`local_search` improves a policy's schedule with hindsight (heat included), so the offline
optimum is bracketed: bound <= optimum <= best schedule found.
"""
from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from adbflow.scheduling.policy import POLICY_NAMES
from adbflow.scheduling.profiles import DeviceProfile
from adbflow.sim.bounds import lower_bound, steady_state_bound, time_indexed_bound
from adbflow.sim.engine import _heat_after, _thermal_slowdown, simulate
from adbflow.sim.instances import Instance, SimConfig, capacity_jobs_s, make_instance

# ------------------------------------------------------------------------ offline optimum

def evaluate_assignment(inst: Instance, assign: Sequence[Sequence[int]], *,
                        heat: bool = False) -> np.ndarray:
    """Latencies when job j's classify runs on device assign[j][0] and its generate on
    assign[j][1]; each device serves its tasks FIFO by the time they became ready, with
    minimal durations slowed by the (exogenous) foreground apps and, with heat=True, by
    the heat the schedule itself builds (the simulator's model, so replaying a policy's
    assignment gives that policy's latencies); with SimConfig.without_noise() and no heat
    that is the deterministic instance. This is the schedule class every policy here
    produces (award when ready, FIFO per device)."""
    c = inst.config
    n, D = inst.n_jobs, len(inst.devices)
    free = [0.0] * D
    hot = [0.0] * D          # heat at hot_t[d], the device's last start
    hot_t = [0.0] * D
    # tasks become ready at arrival (classify) or classify end (generate): process in
    # ready-time order with a heap so generate tasks interleave correctly
    heap = [(float(inst.arrivals[j]), 0, j) for j in range(n)]
    heapq.heapify(heap)
    done = np.zeros(n)
    while heap:
        ready, k, j = heapq.heappop(heap)
        stage = "classify" if k == 0 else "generate"
        d = assign[j][k]
        start = max(ready, free[d])
        theta = 1.0
        if heat and c.thermal:
            # busy from the last start until free[d], idle since
            h = _heat_after(hot[d], free[d] - hot_t[d], True, c.thermal_tau_s)
            h = _heat_after(h, start - free[d], False, c.thermal_tau_s)
            hot[d], hot_t[d] = h, start
            theta = _thermal_slowdown(h, c)
        end = inst.finish_time(d, start, inst.min_duration(d, stage, j), theta)
        free[d] = end
        if k == 0:
            heapq.heappush(heap, (end, 1, j))
        else:
            done[j] = end
    return done - inst.arrivals


def local_search(inst: Instance, assign: Sequence[Sequence[int]], *, tries: int,
                 seed: int = 0, heat: bool = True) -> tuple[float, list[list[int]]]:
    """Improve an assignment with hindsight: move one random stage of one random picture to
    another phone, keep the move if the mean latency (evaluate_assignment) drops. Why: the
    bound says how far below every schedule nobody can go; this finds a concrete schedule,
    knowing every future picture, foreground app and the heat it causes, and so says how
    much better than a policy the offline optimum is at least. Slow (one full replay per
    try): a few thousand tries on 2000 pictures take minutes."""
    rng = random.Random(seed)
    cur = [list(x) for x in assign]
    best = float(np.mean(evaluate_assignment(inst, cur, heat=heat)))
    D = len(inst.devices)
    for _ in range(tries):
        j, k, d = rng.randrange(inst.n_jobs), rng.randrange(2), rng.randrange(D)
        if cur[j][k] == d:
            continue
        old, cur[j][k] = cur[j][k], d
        val = float(np.mean(evaluate_assignment(inst, cur, heat=heat)))
        if val < best:
            best = val
        else:
            cur[j][k] = old
    return best, cur


def exhaustive_optimum(inst: Instance) -> tuple[float, list[tuple[int, int]]]:
    """Best mean latency over every assignment (D^(2n) of them: keep n*D small)."""
    D = len(inst.devices)
    pairs = [(a, b) for a in range(D) for b in range(D)]
    best, best_assign = math.inf, []
    for combo in itertools.product(pairs, repeat=inst.n_jobs):
        val = float(np.mean(evaluate_assignment(inst, combo)))
        if val < best:
            best, best_assign = val, list(combo)
    return best, best_assign


# ------------------------------------------------------------------------------- reports

MAX_EXHAUSTIVE = 2_000_000


def exhaustive_size(n_jobs: int, n_devices: int) -> int:
    return n_devices ** (2 * n_jobs)


def compare(config: SimConfig, profiles: Sequence[DeviceProfile],
            policies: Sequence[str] = POLICY_NAMES, *, optimum: bool = False,
            bound_iters: int = 200) -> dict[str, Any]:
    """Every policy on one instance, with the bounds and ratios to them.

    "bound" is the larger of two provable per-run bounds (pooled SRPT, time-indexed
    Lagrangian); "time_indexed" adds the greedy clairvoyant schedule it was steered by,
    which brackets the offline optimum from above (without heat).

    optimum=True adds the exhaustive offline optimum; it needs the deterministic variant
    (SimConfig.without_noise(): durations are then exactly the minimal ones) and a tiny case.
    """
    inst = make_instance(config, profiles)
    pooled = lower_bound(inst)
    ti = time_indexed_bound(inst, iters=bound_iters)
    best = max(pooled.mean_latency_s, ti.mean_latency_s)   # both provable: keep the tighter
    ss = steady_state_bound(inst)
    results = [simulate(inst, p) for p in policies]
    extra: dict[str, Any] = {}
    if optimum:
        if config.fg_load > 0 or config.thermal or config.telemetry_age_s > 0:
            raise ValueError("the exhaustive optimum needs SimConfig.without_noise()")
        size = exhaustive_size(config.n_jobs, len(profiles))
        if size > MAX_EXHAUSTIVE:
            raise ValueError(f"{size} assignments to try: use fewer jobs or devices")
        opt, assign = exhaustive_optimum(inst)
        extra = {"optimum": {"mean_latency_s": round(opt, 4),
                             "ratio_to_bound": round(opt / best, 3),
                             "assignment": [[inst.devices[a].serial, inst.devices[b].serial]
                                            for a, b in assign]}}
    return {
        "config": asdict(config),
        "devices": [{"serial": d.serial, "speed_vs_profile": round(d.speed, 3)}
                    for d in inst.devices],
        "capacity_jobs_s": round(capacity_jobs_s(inst), 4),
        "rate_jobs_s": round(config.utilisation * capacity_jobs_s(inst), 4),
        "steady_state_bound_s": round(ss, 4),
        "bound": {"mean_latency_s": round(best, 4),
                  "pooled_srpt_s": round(pooled.mean_latency_s, 4),
                  "time_indexed_s": round(ti.mean_latency_s, 4),
                  "no_queue_mean_s": round(max(pooled.no_queue_mean_s, ti.no_queue_mean_s), 4),
                  "greedy_clairvoyant_no_heat_s": round(ti.feasible_mean_s, 4),
                  "alpha": pooled.alpha, "pooled_speed": round(pooled.pooled_speed, 4)},
        "policies": [dict(r.to_json(), ratio_to_bound=round(r.mean_s / best, 3),
                          ratio_to_steady_state_bound=round(r.mean_s / ss, 3))
                     for r in results],
        **extra,
    }
