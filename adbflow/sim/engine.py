"""The discrete-event simulation: the picture stream through the fleet under one policy.

Why it calls `adbflow.scheduling.dispatch.decide`: the simulated scheduler must make the
live pipeline's decision, not a copy of it; the pipeline calls the same function.
Simulated phones run one task at a time (FIFO); telemetry is stale and noisy, the awarded
work (inflight) is exact, as in the pipeline.
"""
from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from adbflow.scheduling.bids import Bid
from adbflow.scheduling.dispatch import decide
from adbflow.scheduling.policy import (
    POLICY_NAMES,
    Task,
    background_load,
    get_policy,
    task_units,
)
from adbflow.scheduling.profiles import ProfileBook
from adbflow.scheduling.service_times import ServiceTimes
from adbflow.sim.instances import Instance, SimConfig

# ------------------------------------------------------------------------------ simulation

@dataclass
class SimResult:
    policy: str
    latencies: np.ndarray
    makespan_s: float
    awards: dict[str, dict[str, int]]     # serial -> stage -> count
    processing: np.ndarray | None = None  # per job: time its two stages ran (no waiting)
    assignment: list[list[int]] | None = None   # per job: [classify device, generate device]

    @property
    def mean_s(self) -> float:
        return float(np.mean(self.latencies))

    @property
    def p95_s(self) -> float:
        return float(np.percentile(self.latencies, 95))

    def to_json(self) -> dict[str, Any]:
        return {"policy": self.policy, "mean_latency_s": round(self.mean_s, 4),
                "mean_processing_s": round(float(np.mean(self.processing)), 4)
                if self.processing is not None else None,
                "p95_latency_s": round(self.p95_s, 4), "makespan_s": round(self.makespan_s, 3),
                "awards": self.awards}


@dataclass
class _DevState:
    queue: deque = field(default_factory=deque)   # (job, stage, Task)
    current: tuple[int, str, Task, float, float] | None = None  # job, stage, task, start, compute
    busy_times: list[float] = field(default_factory=lambda: [0.0])   # toggles, idle first
    heat: float = 0.0
    heat_t: float = 0.0

    def busy_at(self, t: float) -> bool:
        return bool((bisect.bisect_right(self.busy_times, t) - 1) % 2)

    def set_busy(self, t: float, busy: bool) -> None:
        if self.busy_at(t) != busy:
            self.busy_times.append(t)

    def heat_at(self, t: float, tau: float) -> float:
        """Advance heat to t (busy or idle since heat_t, as `current` says)."""
        self.heat = _heat_after(self.heat, t - self.heat_t, self.current is not None, tau)
        self.heat_t = t
        return self.heat


def _heat_after(heat: float, dt: float, busy: bool, tau: float) -> float:
    """Heat after dt seconds of one state: exponential approach to 1 while busy, to 0 while
    idle. The one heat model: the simulator and the replay (evaluate_assignment) both step
    it, so a replayed schedule heats exactly as it did when simulated."""
    target = 1.0 if busy else 0.0
    return target + (heat - target) * math.exp(-dt / tau)


def _thermal_slowdown(heat: float, c: SimConfig) -> float:
    if not c.thermal:
        return 1.0
    return 1.0 + (c.thermal_max - 1.0) * min(1.0, max(0.0, (heat - c.thermal_h0) / (1 - c.thermal_h0)))


def _thermal_status(slow: float) -> int:
    return 0 if slow < 1.05 else 1 if slow < 1.2 else 2 if slow < 1.35 else 3


def sim_profile_book(inst: Instance) -> ProfileBook:
    """Profiles as the scheduler knows them: each class matched by its serial (= class)."""
    profs = [replace(dev.profile, name=dev.serial, match_models=[dev.serial])
             for dev in inst.devices]
    default = replace(inst.devices[0].profile, name="default", match_models=[])
    return ProfileBook(profs + [default])


def simulate(inst: Instance, policy_name: str, **options: Any) -> SimResult:
    """Run the picture stream through the fleet with one policy (`options` go to its
    constructor, e.g. congestion=0.0 for pure earliest completion)."""
    c = inst.config
    # simulated phones run one task at a time
    policy = get_policy(policy_name, **{"queueing": "fifo", **options})
    book = sim_profile_book(inst)
    rng = random.Random(c.seed * 7919 + POLICY_NAMES.index(policy_name))
    noise = np.random.default_rng(c.seed + 17)
    st = ServiceTimes(None) if c.learn else None
    D = len(inst.devices)
    devs = [_DevState() for _ in range(D)]
    index = {dev.serial: d for d, dev in enumerate(inst.devices)}
    awards = {dev.serial: {"classify": 0, "generate": 0} for dev in inst.devices}
    events: list[tuple[float, int, str, int]] = []
    seq = itertools.count()
    for j, t in enumerate(inst.arrivals):
        heapq.heappush(events, (float(t), next(seq), "arrive", j))
    finished = np.full(inst.n_jobs, np.nan)
    processing = np.zeros(inst.n_jobs)
    assignment = [[-1, -1] for _ in range(inst.n_jobs)]
    bid_load: dict[tuple[int, str], float] = {}

    def true_load(d: int, t: float) -> float:
        share = 100.0 * min(1.0, c.threads / c.cores)
        return min(100.0, c.background_load + (c.fg_load if inst.fg_active(d, t) else 0.0)
                   + (share if devs[d].busy_at(t) else 0.0))

    def bids(t: float) -> list[Bid]:
        out = []
        for d, dev in enumerate(inst.devices):
            seen = max(0.0, t - c.telemetry_age_s)
            load = true_load(d, seen)
            if c.load_noise_pct > 0:
                load = float(np.clip(load + noise.normal(0, c.load_noise_pct), 0, 100))
            heat = devs[d].heat_at(t, c.thermal_tau_s)
            slow = _thermal_slowdown(heat, c)
            out.append(Bid(serial=dev.serial, model=dev.serial, cores=c.cores, cpu_load=load,
                           per_core_load=[], mem_available_kb=4 << 20, mem_total_kb=8 << 20,
                           battery_level=80, battery_charging=True,
                           temperature_c=30.0 + 15.0 * heat, freq_ratio=1.0 / slow,
                           probe_rtt_s=dev.profile.timing.adb_latency_ms / 1000.0,
                           timestamp=t - c.telemetry_age_s,
                           thermal_status=_thermal_status(slow) if c.thermal else None))
        return out

    def inflight() -> dict[str, list[Task]]:
        out: dict[str, list[Task]] = {}
        for d, dev in enumerate(inst.devices):
            lst = []
            current = devs[d].current
            if current is not None:
                lst.append(replace(current[2], started_at=current[3]))
            lst += [task for _, _, task in devs[d].queue]
            out[dev.serial] = lst
        return out

    def start_next(d: int, t: float) -> None:
        s = devs[d]
        if s.current is not None or not s.queue:
            return
        s.heat_at(t, c.thermal_tau_s)
        j, stage, task = s.queue.popleft()
        end = inst.finish_time(d, t, inst.min_duration(d, stage, j), _thermal_slowdown(s.heat, c))
        # what the pipeline measures: the stage's wall time minus the adb/transfer part
        compute = max(1e-6, end - t - inst.fixed_s(d, stage))
        s.current = (j, stage, task, t, compute)
        s.set_busy(t, True)
        heapq.heappush(events, (end, next(seq), "done", d))

    def award(j: int, stage: str, t: float) -> None:
        task = inst.task(stage)
        bs = bids(t)
        fl = inflight()
        # the pipeline's decision (no quarantine or failed devices in the simulated fleet)
        dec = decide(task, bs, fl, {}, t, policy=policy, profiles=book, service_times=st,
                     rng=rng).decision
        if dec.winner is None:
            raise RuntimeError(f"simulated fleet has no eligible device: {dec.reason}")
        d = index[dec.winner]
        bid = next(b for b in bs if b.serial == dec.winner)
        bid_load[(j, stage)] = background_load(
            bid, fl[dec.winner], book.get(dec.winner),
            ours_in_reading=policy.model.ours_in_reading(bid, t))  # type: ignore[attr-defined]
        awards[dec.winner][stage] += 1
        assignment[j][0 if stage == "classify" else 1] = d
        devs[d].queue.append((j, stage, task))
        start_next(d, t)

    while events:
        t, _, kind, x = heapq.heappop(events)
        if kind == "arrive":
            award(x, "classify", t)
            continue
        d = x
        s = devs[d]
        s.heat_at(t, c.thermal_tau_s)
        j, stage, task, t0, compute = s.current  # type: ignore[misc]
        s.current = None
        s.set_busy(t, False)
        processing[j] += t - t0
        if st is not None:
            # what a pipeline can know: stage run time, the load it saw at award time
            st.record(inst.devices[d].serial, stage, compute, cpu_load=bid_load.pop((j, stage)),
                      units=task_units(task, inst.devices[d].profile), at=t)
        if stage == "classify":
            award(j, "generate", t)
        else:
            finished[j] = t
        start_next(d, t)
    lat = finished - inst.arrivals
    return SimResult(policy_name, lat, float(np.nanmax(finished) - inst.arrivals[0]), awards,
                     processing, assignment)
