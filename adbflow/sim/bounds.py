"""Lower bounds on the mean latency of a sampled instance, each proved in its docstring.

`lower_bound` (pooled fleet, SRPT; valid even for preemptive, split work) and
`time_indexed_bound` (a Lagrangian relaxation of the time-indexed formulation; valid for
every non-preemptive schedule, clairvoyant included, and much tighter under load).
Neither includes heat (it depends on the schedule), so at sustained high load part of any
policy's gap to them is thermal throttling, not scheduling.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from adbflow.sim.instances import Instance

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
    for it in range(1, iters + 1):  # noqa: B007 - the count is reported after the loop
        val, ch = job_minima(lam, True)
        if val > best_val + 1e-9 * abs(best_val):
            best_val, stall = val, 0
        else:
            stall += 1
            if stall >= 6:
                theta, stall = theta / 2, 0
        d1, cs, ce, dg, gs, ge = ch
        sub = occupancy(d1, cs, ce) + occupancy(dg, gs, ge) - delta
        sub[(lam <= 0) & (sub < 0)] = 0.0
        nrm = float((sub ** 2).sum())
        if nrm <= 0 or theta < 1e-3:
            break
        lam = np.maximum(0.0, lam + theta * max(ub - val, 1e-6 * ub) / nrm * sub)
    return TimeIndexedBound(best_val / n, no_queue / n, ub / n, it, delta)
