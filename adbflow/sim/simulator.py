"""Discrete-event simulation of a phone fleet, to compare scheduling policies against a bound.

Why simulate: a live fleet gives one noisy run per hour; the simulator replays the same
picture stream, the same phones and the same foreground-app interruptions under every policy
(common random numbers), so differences are the policies' and the gap to optimal is a number.

What is modelled (each piece is something the real scheduler has to cope with):
- devices: one per profile (the six real-phone classes by default); each phone differs from
  its class's numbers by a fixed random factor (`profile_error`), which only learning finds;
- a job = one picture: classify (push the BMP, run label_image) then generate (llama-cli on
  the labels); two bids, two awards; each device runs its awarded tasks one at a time, FIFO;
- work size varies per picture (`size_cv`); the same sizes are used for every policy;
- background load, and foreground apps that come and go (exponential on/off periods) and
  take `fg_load` of the CPU: a task started meanwhile runs load_factor(...) slower;
- thermal throttling: heat follows the device's busy fraction with time constant
  `thermal_tau_s`; above `thermal_h0` the device slows linearly up to `thermal_max`
  (Pixel 8 Pro sustained CNN: ~1.4x after 7 min, device-profiles.md);
- stale telemetry: policies see CPU load as it was `telemetry_age_s` ago (probe interval
  plus /proc/stat window), with noise. They know exactly what they awarded (inflight).

Lower bounds on the same sampled instance, each proved in its docstring: `lower_bound`
(pooled fleet, SRPT; valid even for preemptive, split work) and `time_indexed_bound` (a
Lagrangian relaxation of the time-indexed formulation; valid for every non-preemptive
schedule, clairvoyant included, and much tighter under load). `compare` reports the larger.
Neither includes heat (it depends on the schedule), so at sustained high load part of any
policy's gap to them is thermal throttling, not scheduling. From the other side,
`local_search` improves a policy's schedule with hindsight (heat included), so the offline
optimum is bracketed: bound <= optimum <= best schedule found.
"""
from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from adbflow.scheduling.bids import Bid
from adbflow.scheduling.policy import POLICY_NAMES, Task, background_load, get_policy, prior_service_s, task_units
from adbflow.scheduling.profiles import DeviceProfile, ProfileBook
from adbflow.scheduling.service_times import ServiceTimes, load_factor

SIX_CLASSES = ("flagship_2025", "flagship_2023", "midrange_2023", "flagship_2019", "lowend_2020",
               "old_2017")


@dataclass(frozen=True)
class SimConfig:
    utilisation: float = 0.6            # offered work / fleet capacity (see capacity_jobs_s)
    n_jobs: int = 1000
    seed: int = 1
    telemetry_age_s: float = 3.0
    load_noise_pct: float = 3.0
    image_bytes: int = 299 * 299 * 3 + 54   # Inception-V3 input as 24-bit BMP
    prompt_tokens: int = 48
    n_predict: int = 64
    size_cv: float = 0.15               # lognormal sigma of per-picture work
    profile_error: float = 0.15         # lognormal sigma of a phone's speed vs its class
    background_load: float = 8.0        # percent, always there
    fg_load: float = 40.0               # percent taken by a foreground app while active
    fg_on_mean_s: float = 30.0
    fg_off_mean_s: float = 120.0
    thermal: bool = True
    thermal_tau_s: float = 300.0
    thermal_h0: float = 0.5
    thermal_max: float = 1.4
    learn: bool = True                  # policies get a ServiceTimes fed by finished tasks
    threads: int = 4
    cores: int = 8

    def without_noise(self) -> SimConfig:
        """Deterministic variant: no foreground apps, no heat, fresh exact telemetry."""
        return replace(self, telemetry_age_s=0.0, load_noise_pct=0.0, fg_load=0.0,
                       thermal=False, size_cv=0.0, profile_error=0.0)


@dataclass
class SimDevice:
    serial: str
    profile: DeviceProfile
    speed: float            # >1: this phone is slower than its class's numbers


@dataclass
class Instance:
    """Everything random about one run, sampled once and replayed for every policy."""

    config: SimConfig
    devices: list[SimDevice]
    arrivals: np.ndarray            # seconds, sorted
    size: np.ndarray                # [2, n_jobs] work multipliers (classify, generate), mean 1
    fg_toggles: list[np.ndarray]    # per device: times the foreground app starts/stops (off first)

    @property
    def n_jobs(self) -> int:
        return len(self.arrivals)

    def task(self, stage: str) -> Task:
        c = self.config
        if stage == "classify":
            return Task("classify", input_bytes=c.image_bytes)
        return Task("generate", prompt_tokens=c.prompt_tokens, n_predict=c.n_predict)

    def fixed_s(self, d: int, stage: str) -> float:
        """Transfer and adb round trips of a stage: not scaled by load or heat."""
        t = self.devices[d].profile.timing
        lat = t.adb_latency_ms / 1000.0
        if stage == "classify":
            return 2 * lat + self.config.image_bytes / (t.bandwidth_mb_s * 1e6)
        return lat

    def compute_s(self, d: int, stage: str, j: int) -> float:
        """CPU time of the stage on an idle, cool device."""
        dev = self.devices[d]
        k = 0 if stage == "classify" else 1
        return prior_service_s(self.task(stage), dev.profile) * dev.speed * float(self.size[k, j])

    def fg_active(self, d: int, t: float) -> bool:
        return bool(np.searchsorted(self.fg_toggles[d], t, side="right") % 2)

    def fg_slowdown(self) -> float:
        """How much slower everything runs while a foreground app is active (vs background)."""
        c = self.config
        return load_factor(c.background_load + c.fg_load) / load_factor(c.background_load)

    def finish_time(self, d: int, start: float, work: float, theta: float = 1.0) -> float:
        """When a task of `work` seconds (minimal duration) started at `start` ends: it
        progresses at 1/theta, and at 1/(theta*fg_slowdown) while the foreground app runs
        (the app may start or stop mid-task). theta (heat) is fixed for the task."""
        toggles = self.fg_toggles[d]
        slow_fg = self.fg_slowdown()
        i = int(np.searchsorted(toggles, start, side="right"))
        t, left = start, work
        while True:
            factor = theta * (slow_fg if i % 2 else 1.0)
            end = float(toggles[i]) if i < len(toggles) else math.inf
            if t + left * factor <= end:
                return t + left * factor
            left -= (end - t) / factor
            t, i = end, i + 1

    def min_duration(self, d: int, stage: str, j: int) -> float:
        """The shortest the stage can take on device d: background load only, no heat."""
        return self.fixed_s(d, stage) + self.compute_s(d, stage, j) * load_factor(
            self.config.background_load)


def fleet_profiles(book: ProfileBook, classes: Sequence[str] = SIX_CLASSES) -> list[DeviceProfile]:
    return [book.get(c) for c in classes]


def make_instance(config: SimConfig, profiles: Sequence[DeviceProfile]) -> Instance:
    rng = np.random.default_rng(config.seed)
    devices = [SimDevice(p.name, p, float(np.exp(rng.normal(0.0, config.profile_error))))
               for p in profiles]
    n = config.n_jobs
    size = np.exp(rng.normal(-config.size_cv ** 2 / 2, config.size_cv, size=(2, n))) \
        if config.size_cv > 0 else np.ones((2, n))
    probe = Instance(config, devices, np.zeros(0), size, [])
    lam = config.utilisation * capacity_jobs_s(probe)
    arrivals = np.cumsum(rng.exponential(1.0 / lam, size=n))
    horizon = float(arrivals[-1]) * 3 + 3600.0
    toggles = []
    for _ in devices:
        if config.fg_load <= 0:
            toggles.append(np.array([horizon * 10]))
            continue
        # off first; alternate off/on periods
        k = int(horizon / (config.fg_on_mean_s + config.fg_off_mean_s) * 2) + 8
        means = np.where(np.arange(k) % 2 == 0, config.fg_off_mean_s, config.fg_on_mean_s)
        toggles.append(np.cumsum(rng.exponential(means)))
    return Instance(config, devices, arrivals, size, toggles)


def _lp_throughput(tc: np.ndarray, tg: np.ndarray) -> tuple[float, float]:
    """Max jobs/s when device d takes tc[d] per classify and tg[d] per generate, and the
    dual weight alpha of classify work: max_f min(sum f/tc, sum (1-f)/tg) =
    min_alpha sum_d max(alpha/tc, (1-alpha)/tg), piecewise linear: check the breakpoints."""
    cands = np.concatenate([[0.0, 1.0], tc / (tc + tg)])
    vals = [float(np.sum(np.maximum(a / tc, (1 - a) / tg))) for a in cands]
    i = int(np.argmin(vals))
    return vals[i], float(cands[i])


def capacity_jobs_s(inst: Instance) -> float:
    """Sustainable fleet throughput: mean work, background load, the time-average foreground
    slowdown and the sustained thermal slowdown of a device kept busy (thermal_max):
    utilisation 1.0 means this many pictures per second. Measured against the cool
    capacity instead, 90 % would be overload once the phones heat up, for every policy."""
    c = inst.config
    p_on = c.fg_on_mean_s / (c.fg_on_mean_s + c.fg_off_mean_s) if c.fg_load > 0 else 0.0
    f_avg = (1 - p_on) + p_on * inst.fg_slowdown()
    if c.thermal:
        f_avg *= c.thermal_max
    tc, tg = [], []
    for d, dev in enumerate(inst.devices):
        for stage, out in (("classify", tc), ("generate", tg)):
            base = prior_service_s(inst.task(stage), dev.profile) * dev.speed
            out.append((inst.fixed_s(d, stage) + base * load_factor(c.background_load)) * f_avg)
    return _lp_throughput(np.array(tc), np.array(tg))[0]


# ----------------------------------------------------------------------------- lower bound

def _srpt_completions(release: np.ndarray, work: np.ndarray, speed: float) -> np.ndarray:
    """Completion times on one preemptive server of `speed` running SRPT (jobs by release)."""
    order = np.argsort(release, kind="stable")
    done = np.empty(len(release))
    heap: list[tuple[float, int]] = []
    t = 0.0
    i = 0
    n = len(order)
    while i < n or heap:
        if not heap:
            t = max(t, float(release[order[i]]))
        while i < n and release[order[i]] <= t:
            j = int(order[i])
            heapq.heappush(heap, (float(work[j]), j))
            i += 1
        rem, j = heapq.heappop(heap)
        next_rel = float(release[order[i]]) if i < n else math.inf
        finish = t + rem / speed
        if finish <= next_rel:
            t = finish
            done[j] = t
        else:
            heapq.heappush(heap, (rem - (next_rel - t) * speed, j))
            t = next_rel
    return done


def _capacity_curve(inst: Instance, rates_off: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Breakpoints (t, cumulative pooled capacity) when device d delivers rates_off[d], or
    rates_off[d]/fg_slowdown while its foreground app runs (exogenous, known in hindsight)."""
    slow = inst.fg_slowdown()
    horizon = float(inst.arrivals[-1]) * 3 + 3600.0
    pts = [np.array([0.0, horizon])]
    for tog in inst.fg_toggles:
        pts.append(tog[tog < horizon])
    ts = np.unique(np.concatenate(pts))
    mids = (ts[:-1] + ts[1:]) / 2
    speed = np.zeros(len(mids))
    for d, tog in enumerate(inst.fg_toggles):
        on = (np.searchsorted(tog, mids, side="right") % 2).astype(bool)
        speed += np.where(on, rates_off[d] / slow, rates_off[d])
    cap = np.concatenate([[0.0], np.cumsum(speed * np.diff(ts))])
    return ts, cap


def steady_state_bound(inst: Instance, rate: float | None = None, grid: int = 120) -> float:
    """Fluid (LP) lower bound on mean processing time per job in steady state.

    Jobs arrive at `rate`; fraction x[d,s] of stage s goes to device d. Any policy that
    keeps up must respect each device's capacity, rate * sum_s x[d,s]*t[d,s] <= cap_d
    (cap_d = time-average speed given its foreground app), and its
    mean latency is at least the mean processing time sum x*t. With t = minimal durations
    (no foreground app, no heat) the LP minimum is a lower bound. We evaluate the LP DUAL
    g(mu) = mu_c + mu_g - (1/rate) * sum_d cap_d*max(0, mu_c/t_dc - 1, mu_g/t_dg - 1): by weak
    duality every mu gives a valid bound, so a grid search cannot overstate it.
    Valid for long runs of stable policies (time averages), not per sample path: see
    lower_bound() for that one.
    """
    n = inst.n_jobs
    if rate is None:
        rate = (n - 1) / float(inst.arrivals[-1] - inst.arrivals[0]) if n > 1 else 1e-9
    D = len(inst.devices)
    tc = np.array([np.mean([inst.min_duration(d, "classify", j) for j in range(n)]) for d in range(D)])
    tg = np.array([np.mean([inst.min_duration(d, "generate", j) for j in range(n)]) for d in range(D)])

    # long-run share of a second device d can work at full speed (foreground app known)
    t0, t1 = float(inst.arrivals[0]), float(inst.arrivals[-1])
    cap = np.ones(D)
    slow = inst.fg_slowdown()
    for d in range(D):
        grid_t = np.linspace(t0, t1, 2000)
        on = np.searchsorted(inst.fg_toggles[d], grid_t, side="right") % 2
        cap[d] = float(np.mean(np.where(on, 1.0 / slow, 1.0)))

    def g(mc: np.ndarray, mg: np.ndarray) -> np.ndarray:
        pen = np.maximum(0.0, np.maximum(mc[..., None] / tc - 1, mg[..., None] / tg - 1))
        return mc + mg - (pen * cap).sum(axis=-1) / rate

    lo_c, hi_c, lo_g, hi_g = 0.0, 4 * tc.max(), 0.0, 4 * tg.max()
    best = 0.0
    for _ in range(4):   # grid, then zoom in around the best point
        mc, mg = np.meshgrid(np.linspace(lo_c, hi_c, grid), np.linspace(lo_g, hi_g, grid))
        vals = g(mc, mg)
        k = np.unravel_index(np.argmax(vals), vals.shape)
        best = max(best, float(vals[k]))
        wc, wg = (hi_c - lo_c) / 8, (hi_g - lo_g) / 8
        lo_c, hi_c = max(0.0, mc[k] - wc), mc[k] + wc
        lo_g, hi_g = max(0.0, mg[k] - wg), mg[k] + wg
    return best


@dataclass
class Bound:
    mean_latency_s: float
    alpha: float                     # classify weight of the pooled machine (best found)
    pooled_speed: float              # weighted jobs per second
    no_queue_mean_s: float           # mean of each job's own fastest processing alone


def lower_bound(inst: Instance, alphas: int = 41) -> Bound:
    """A lower bound on the mean job latency of every policy on this instance.

    Two relaxations, each valid per sample path, combined by order statistics:
    (1) r_j = a_j + min_d classify_j(d) + min_d generate_j(d): a job cannot finish before
        its own stages ran back to back on the fastest devices (durations with background
        load only: no foreground app, no heat, both of which only slow things down);
    (2) pool the devices into ONE machine: give classify work weight alpha and generate
        1-alpha; device d does weighted work at most y_d = max over jobs and stages of
        weight*size/duration (y_d/fg_slowdown while its foreground app runs: that schedule
        is exogenous, so a clairvoyant policy knows it too), so the fleet does at most
        Y(t) = sum_d of those per second, whatever the schedule. One machine of speed Y(t)
        running preemptive SRPT maximises the number of finished jobs at every instant
        (Schrage 1968; time-varying speed is a change of clock), so its k-th completion
        u_(k) is <= the k-th completion of any fleet schedule.
    Every schedule has C_(k) >= max(u_(k), r_(k)) for the sorted completions, so
    mean latency >= mean_k max(u_(k), r_(k)) - mean(a). Any alpha is valid: take the best.
    It ignores precedence, non-preemption and that one job cannot use two phones at once,
    so it is optimistic; exhaustive_optimum() measures how optimistic on small cases.
    """
    n, D = inst.n_jobs, len(inst.devices)
    dc = np.array([[inst.min_duration(d, "classify", j) for j in range(n)] for d in range(D)])
    dg = np.array([[inst.min_duration(d, "generate", j) for j in range(n)] for d in range(D)])
    a = inst.arrivals
    r = np.sort(a + dc.min(axis=0) + dg.min(axis=0))
    sc, sg = inst.size[0], inst.size[1]
    best = None
    for alpha in np.linspace(0.0, 1.0, alphas):
        y = np.maximum((alpha * sc / dc).max(axis=1), ((1 - alpha) * sg / dg).max(axis=1))
        work = alpha * sc + (1 - alpha) * sg
        # SRPT on a machine of time-varying speed = unit-speed SRPT in capacity time
        ts, cap = _capacity_curve(inst, y)
        u_cap = _srpt_completions(np.interp(a, ts, cap), work, 1.0)
        u = np.sort(np.interp(u_cap, cap, ts))
        val = float(np.mean(np.maximum(u, r)) - np.mean(a))
        if best is None or val > best.mean_latency_s:
            best = Bound(val, float(alpha), float(y.sum()), float(np.mean(r) - np.mean(a)))
    assert best is not None
    return best


# ------------------------------------------------------------- time-indexed Lagrangian bound

class _WorkClock:
    """One device's foreground-app schedule as a clock: W(t) = work (seconds at full speed)
    it can do by t, at rate 1, or 1/fg_slowdown while the app runs. F(s, w) = W^-1(W(s) + w)
    is exactly Instance.finish_time(d, s, w) without heat, vectorised."""

    def __init__(self, inst: Instance, d: int, horizon: float) -> None:
        tog = inst.fg_toggles[d]
        self.tog = tog[tog < horizon]
        self.slow = inst.fg_slowdown()
        ts = np.concatenate([[0.0], self.tog, [4.0 * horizon + 1e6]])
        rates = np.where(np.arange(len(ts) - 1) % 2 == 1, 1.0 / self.slow, 1.0)
        self.ts = ts
        self.w = np.concatenate([[0.0], np.cumsum(rates * np.diff(ts))])

    def finish(self, start: np.ndarray, work: np.ndarray) -> np.ndarray:
        return np.interp(np.interp(start, self.ts, self.w) + work, self.w, self.ts)

    def min_rate(self, g: np.ndarray) -> np.ndarray:
        """Lowest progress rate within each [g[i], g[i+1]): 1/slowdown if the app runs there."""
        on = (np.searchsorted(self.tog, g[:-1], side="right") % 2).astype(bool)
        toggles_inside = np.searchsorted(self.tog, g[1:], side="left") \
            - np.searchsorted(self.tog, g[:-1], side="right")
        return np.where(on | (toggles_inside > 0), 1.0 / self.slow, 1.0)


def _greedy_schedule(inst: Instance, clocks: list[_WorkClock], wc: np.ndarray,
                     wg: np.ndarray) -> np.ndarray:
    """Latencies of a simple feasible schedule of the bound's relaxed instance (earliest
    finish per stage, FIFO by ready time, no heat): an upper bound on its optimum, used only
    to size steps and the time window."""
    n, D = wc.shape
    free = np.zeros(D)
    heap = [(float(inst.arrivals[j]), 0, j) for j in range(n)]
    heapq.heapify(heap)
    done = np.zeros(n)
    while heap:
        ready, k, j = heapq.heappop(heap)
        w = wc[j] if k == 0 else wg[j]
        ends = np.array([float(clocks[d].finish(np.array([max(ready, free[d])]), np.array([w[d]]))[0])
                         for d in range(D)])
        d = int(np.argmin(ends))
        free[d] = ends[d]
        if k == 0:
            heapq.heappush(heap, (ends[d], 1, j))
        else:
            done[j] = ends[d]
    return done - inst.arrivals


@dataclass
class TimeIndexedBound:
    mean_latency_s: float
    no_queue_mean_s: float        # lambda = 0: each job alone, foreground apps included
    feasible_mean_s: float        # the greedy schedule used as the step target (an upper value)
    iterations: int
    slot_s: float


def time_indexed_bound(inst: Instance, *, slot_s: float = 0.2, iters: int = 200,
                       stage1_points: int = 24, window_s: float | None = None) -> TimeIndexedBound:
    """Lagrangian lower bound on mean job latency over every NON-PREEMPTIVE schedule of this
    instance (each stage runs on one device from start to end, one stage at a time per
    device: what label_image and llama-cli allow), even a clairvoyant one that idles on
    purpose, reorders queues or knows every foreground app in advance.

    Proof. Let e_d(s, w) be when a stage of minimal duration w (background load only)
    started at s on device d ends without heat; the foreground app's on/off times are
    exogenous, so e_d is known, and heat (theta >= 1) only delays the real end. Any schedule
    gives job j stage intervals [s1, x1) on d1 and [s2, x2) on d2 with a_j <= s1,
    x1 >= e_d1(s1, wc), x1 <= s2, x2 >= e_d2(s2, wg), and a device's intervals are disjoint:
    occupancy occ_d(t) <= 1. Take any prices lambda_d(t) >= 0 (piecewise constant on slots
    of `slot_s`, zero outside the grid). Then
        sum_j (x2_j - a_j) >= sum_j (x2_j - a_j) + sum_d int lambda_d (occ_d - 1) dt
                           = sum_j cost_j - int sum_d lambda_d,
    cost_j = x2 - a + int over j's own intervals of lambda. Each cost_j is at least the
    minimum of that expression over every (d1, s1, d2, s2) that respects a_j <= s1 and
    s2 >= e(s1): computed per job below, with lower bounds wherever a start time lies
    between grid points (Lambda = int lambda is nondecreasing and continuous, e is
    nondecreasing with slope >= the slowest progress rate in the interval, and between two
    consecutive kinks the cost is linear, so the minimum sits at an end or a kink), and
    catch-all bounds (start time beyond the window + fastest durations) past a finite window.
    So every lambda >= 0 gives a valid bound (weak duality); lambda only decides how tight.
    We pick lambda by projected subgradient ascent (Polyak steps towards a greedy feasible
    schedule) and report the best value seen. This is the Lagrangian dual of the classic
    time-indexed formulation (x[j, d, t] = j starts on d at t), i.e. about its LP value.
    Heat is left out (it depends on the schedule; every real run can only be slower), so
    at high utilisation part of any policy's gap to this bound is throttling.
    """
    n, D = inst.n_jobs, len(inst.devices)
    a = np.asarray(inst.arrivals, dtype=float)
    wc = np.array([[inst.min_duration(d, "classify", j) for d in range(D)] for j in range(n)])
    wg = np.array([[inst.min_duration(d, "generate", j) for d in range(D)] for j in range(n)])
    slow = inst.fg_slowdown()
    delta = float(slot_s)
    t0 = float(a.min())
    rough = float(a.max()) + 10 * slow * float(wc.max() + wg.max()) + 1000.0
    clocks = [_WorkClock(inst, d, rough) for d in range(D)]
    greedy = _greedy_schedule(inst, clocks, wc, wg)
    ub = float(greedy.sum())
    if window_s is None:
        window_s = float(min(120.0, max(8.0 * np.max(wc.min(1) + wg.min(1)),
                                        1.2 * np.quantile(greedy, 0.995))))
    K2 = int(math.ceil((window_s + slow * wc.max()) / delta)) + 2
    i0 = np.floor((a - t0) / delta).astype(int)
    M = int(i0.max()) + K2 + int(math.ceil(slow * wg.max() / delta)) + 4
    g = t0 + delta * np.arange(M + 1)
    clocks = [_WorkClock(inst, d, float(g[-1]) + 10.0) for d in range(D)]
    rho = np.concatenate([np.stack([c.min_rate(g) for c in clocks]), np.ones((D, 1))], axis=1)
    dD = np.arange(D)[None, :, None]
    d4 = np.arange(D)[None, None, None, :]
    jj = np.arange(n)[:, None, None]
    rows = np.arange(n)

    # stage 2 (generate) may start at the job's grid points g[i0 + k], k < K2
    idx2 = i0[:, None] + np.arange(K2)[None, :]
    s2 = g[idx2]
    F2 = np.stack([clocks[d].finish(s2, wg[:, d:d + 1]) for d in range(D)], axis=1)   # [n,D,K2]
    ib = np.clip(np.ceil((F2 - t0) / delta).astype(int), 1, M - 1)
    sstar = g[ib] - (F2 - s2[:, None, :])        # start whose end hits the next grid point
    free2 = ((rho[dD, idx2[:, None, :]] == 1.0) & (rho[dD, ib - 1] == 1.0) & (rho[dD, ib] == 1.0)
             & (sstar >= s2[:, None, :]) & (sstar <= s2[:, None, :] + delta))
    # stage 1 (classify) start intervals [a + m h, a + (m+1) h)
    h1 = window_s / stage1_points
    s1 = a[:, None] + h1 * np.arange(stage1_points)[None, :]
    v1 = s1 + h1
    F1 = np.stack([clocks[d].finish(s1, wc[:, d:d + 1]) for d in range(D)], axis=1)   # [n,D,M1]
    beyond1 = h1 * stage1_points + wc.min(1) + wg.min(1)
    beyond2 = g[i0 + K2] - a + wg.min(1)
    kt = np.floor((F1 - t0) / delta).astype(int) - i0[:, None, None]
    kt_in = kt < K2
    ktc = np.clip(kt, 0, K2 - 1)
    gk = g[i0[:, None, None] + ktc][..., None]
    tau = F1[..., None]
    w2 = wg[:, None, None, :]

    def job_minima(lam: np.ndarray, want_choice: bool = False):
        lamp = np.concatenate([lam, np.zeros((D, 1))], axis=1)
        cum = np.concatenate([np.zeros((D, 1)), np.cumsum(lam * delta, axis=1)], axis=1)

        def Lam(dix, x):
            i = np.clip(np.floor((x - t0) / delta).astype(int), 0, M)
            return cum[dix, i] + (x - g[i]) * lamp[dix, i]

        lam2 = lamp[dD, idx2[:, None, :]]
        cost2 = F2 - a[:, None, None] + Lam(dD, F2) - cum[dD, idx2[:, None, :]]
        slope = rho[dD, idx2[:, None, :]] - lam2
        cstar = g[ib] - a[:, None, None] + cum[dD, ib] - cum[dD, idx2[:, None, :]] \
            - (sstar - s2[:, None, :]) * lam2
        lbF = np.where(free2, np.minimum(cost2, cstar), cost2 + np.minimum(0.0, delta * slope))
        lbmin, lbd = lbF.min(axis=1), lbF.argmin(axis=1)
        suf = np.minimum.accumulate(lbmin[:, ::-1], axis=1)[:, ::-1]
        suf = np.concatenate([np.minimum(suf, beyond2[:, None]), beyond2[:, None]], axis=1)
        # G(tau) = cheapest generate starting at or after tau = classify end
        pick = (jj[..., None], d4, ktc[..., None])
        part = cost2[pick] + np.minimum((tau - gk) * slope[pick], delta * slope[pick])
        ctau = tau + w2 - a[:, None, None, None] + Lam(d4, tau + w2) \
            - Lam(d4, np.broadcast_to(tau, part.shape))
        exact = np.minimum(ctau, np.where(sstar[pick] >= tau, cstar[pick], np.inf))
        part = np.where(free2[pick], exact, part)
        G = np.minimum(part.min(axis=-1), suf[jj, ktc + 1])
        G = np.where(kt_in, G, F1 - a[:, None, None] + wg.min(1)[:, None, None])
        p1 = np.maximum(0.0, Lam(dD, F1) - Lam(dD, np.broadcast_to(v1[:, None, :], F1.shape)))
        flat = (p1 + G).reshape(n, -1)
        am = flat.argmin(axis=1)
        best = np.minimum(flat[rows, am], beyond1)
        val = float(best.sum() - cum[:, -1].sum())
        if not want_choice:
            return val, None
        # the minimising intervals, for the subgradient (any choice keeps the bound valid)
        d1, m = np.unravel_index(am, (D, stage1_points))
        cs, ce = s1[rows, m], F1[rows, d1, m]
        k1 = ktc[rows, d1, m]
        use_part = part[rows, d1, m].min(axis=1) <= suf[rows, k1 + 1]
        rec = np.where(lbmin <= suf[:, :K2], np.arange(K2)[None, :], K2 - 1)
        nxt = np.minimum.accumulate(rec[:, ::-1], axis=1)[:, ::-1]
        k2 = nxt[rows, np.clip(k1 + 1, 0, K2 - 1)]
        dg = np.where(use_part, part[rows, d1, m].argmin(axis=1), lbd[rows, k2])
        gs = np.where(use_part, ce, s2[rows, k2])
        ge = np.empty(n)
        for d in range(D):
            sel = dg == d
            ge[sel] = clocks[d].finish(gs[sel], wg[sel, d])
        return val, (d1, cs, ce, dg, gs, ge)

    def occupancy(dev: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        occ = np.zeros((D, M))
        for d in range(D):
            sel = dev == d
            xs, ys = np.sort(x[sel]), np.sort(y[sel])
            cx = np.concatenate([[0.0], np.cumsum(xs)])
            cy = np.concatenate([[0.0], np.cumsum(ys)])
            ix, iy = np.searchsorted(xs, g), np.searchsorted(ys, g)
            occ[d] = np.diff((g * ix - cx[ix]) - (g * iy - cy[iy]))
        return occ

    lam = np.zeros((D, M))
    no_queue, _ = job_minima(lam)
    best_val, theta, stall, it = no_queue, 1.0, 0, 0
    for it in range(1, iters + 1):
        val, ch = job_minima(lam, True)
        if val > best_val + 1e-9 * abs(best_val):
            best_val, stall = val, 0
        else:
            stall += 1
            if stall >= 6:
                theta, stall = theta / 2, 0
        d1, cs, ce, dg, gs, ge = ch  # type: ignore[misc]
        sub = occupancy(d1, cs, ce) + occupancy(dg, gs, ge) - delta
        sub[(lam <= 0) & (sub < 0)] = 0.0
        nrm = float((sub ** 2).sum())
        if nrm <= 0 or theta < 1e-3:
            break
        lam = np.maximum(0.0, lam + theta * max(ub - val, 1e-6 * ub) / nrm * sub)
    return TimeIndexedBound(best_val / n, no_queue / n, ub / n, it, delta)


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
            if devs[d].current is not None:
                lst.append(replace(devs[d].current[2], started_at=devs[d].current[3]))
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
        dec = policy.choose(task, bs, inflight=fl, profiles=book, service_times=st, rng=rng, now=t)
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
