"""Where to run a CNN: whole on one phone, or head on phone A and tail on phone B.

Why a cost model per (A, cut, B): the best cut depends on both phones' speed right now
(load, heat), the size of the tensor that crosses, and the adb links (Neurosurgeon: per-layer
latency + data size pick the split). The decision is one readable pure function, like the
ECT cost in adbflow.scheduling.policy (whose load / thermal / frequency terms it reuses):

    whole on D    = push_in(D) + run(D, all ops)                       + pull_out(D)
    split A,k,B   = push_in(A) + run(A, ops[:k]) + pull_cut(A) + push_cut(B)
                                 + run(B, ops[k:])                      + pull_out(B)

    run(D, ops)   = launch(D, MB of the part) + sum(per-op ms of D over ops) * slowdown(D)
    launch(D, MB) = base + per_mb * MB    (process start, then loading the part's weights)
    slowdown(D)   = load factor (background CPU load, the device's load sensitivity)
                    * thermal factor * frequency factor          (policy.py's terms)
                    * learned factor (measured / predicted inference of our recent runs
                      there, an EWMA kept by adbflow.split.session: heat building up, a
                      phone slower than its op profile)
    transfer(D,n) = adb latency(D, dir) + n bytes / measured bandwidth(D, dir)  (0 when n = 0)
                    dir = push (push_in, push_cut) or pull (pull_cut, pull_out): a push
                    also creates the file and sets its mode and mtime on the phone, so its
                    fixed cost differs from a pull's (bench/split.py measured both)

Tensors go through the laptop (pull from A, then push to B). Per-op ms come from the
op-profiling table of `benchmark_model` measured on the phone (adbflow.split.profiling),
`launch` is what one benchmark_model call costs beyond its inference (process start, model
load, the adb round trip). For a stream the phones work side by side (head of job n+1 on A
while the tail of job n runs on B), so the rate is set by the busier phone:

    period(split) = max(push_in + run(A) + pull_cut,  push_cut + run(B) + pull_out)
    period(whole) = whole

`objective="latency"` ranks by the first formula, `"throughput"` by the period. A split
must beat the best whole run by `min_gain` (5 %): two phones and a transfer are more
things that can fail. `privacy=True`: the head (and a whole run) only on the origin
phone, so the picture's pixels never leave it; only the cut tensor does.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tabulate import tabulate

from adbflow.scheduling.policy import Task, background_load, exclusion, freq_factor, thermal_factor
from adbflow.scheduling.profiles import DeviceProfile
from adbflow.scheduling.service_times import load_factor

OBJECTIVES = ("latency", "throughput")


@dataclass(frozen=True)
class Link:
    """The adb link between the laptop and one phone, each direction on its own (fixed
    cost and bandwidth); the pull side defaults to the push side's numbers."""

    latency_s: float
    bytes_per_s: float
    pull_latency_s: float | None = None
    pull_bytes_per_s: float | None = None

    def push_s(self, nbytes: int) -> float:
        return _transfer(nbytes, self.latency_s, self.bytes_per_s)

    def pull_s(self, nbytes: int) -> float:
        return _transfer(nbytes, self.latency_s if self.pull_latency_s is None else self.pull_latency_s,
                         self.bytes_per_s if self.pull_bytes_per_s is None else self.pull_bytes_per_s)


def _transfer(nbytes: int, latency_s: float, bytes_per_s: float) -> float:
    return 0.0 if nbytes <= 0 else latency_s + nbytes / max(1.0, bytes_per_s)


@dataclass(frozen=True)
class OpTimes:
    """Per-op milliseconds of one model on one phone (idle, cool), in execution order,
    and the fixed cost of one benchmark_model call there. `source` says where they came
    from (measured op profile, profile file, or a prior from the classify time)."""

    op_ms: tuple[float, ...]
    launch_s: float
    source: str = "measured"
    launch_s_per_mb: float = 0.0

    def compute_s(self, start: int, stop: int) -> float:
        return sum(self.op_ms[start:stop]) / 1000.0

    def launch(self, model_mb: float) -> float:
        return self.launch_s + self.launch_s_per_mb * model_mb


@dataclass(frozen=True)
class PhoneState:
    """What the planner knows about one phone now."""

    serial: str
    times: OpTimes
    link: Link
    slowdown: float
    excluded: str | None = None
    factors: dict[str, float] = field(default_factory=dict)

    def run_s(self, start: int, stop: int, model_mb: float) -> float:
        return self.times.launch(model_mb) + self.times.compute_s(start, stop) * self.slowdown


@dataclass(frozen=True)
class Cut:
    """A cut point as the planner needs it: op index, the bytes that cross, and the sizes
    (MB) of the head and tail parts."""

    op_index: int
    nbytes: int
    head_mb: float = 0.0
    tail_mb: float = 0.0


@dataclass(frozen=True)
class Candidate:
    """One way to run the job, with its predicted parts (seconds)."""

    a: str
    cut: int | None = None      # None: whole on `a`
    b: str | None = None
    parts: dict[str, float] = field(default_factory=dict)
    total_s: float = math.inf
    period_s: float = math.inf

    @property
    def is_split(self) -> bool:
        return self.cut is not None

    def split_of(self) -> tuple[str, int, str]:
        """(A, cut, B) of a split candidate."""
        if self.cut is None or self.b is None:
            raise ValueError(f"{self.label} is not a split")
        return self.a, self.cut, self.b

    @property
    def label(self) -> str:
        return f"{self.a}:{self.cut}:{self.b}" if self.is_split else f"whole:{self.a}"

    def stage_s(self) -> dict[str, float]:
        """Predicted time of each stage as the runner measures them."""
        return dict(self.parts)


@dataclass
class Plan:
    """The chosen candidate and every candidate considered (for --explain)."""

    chosen: Candidate | None
    objective: str
    reason: str
    candidates: list[Candidate]
    excluded: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        def c(x: Candidate) -> dict[str, Any]:
            return {"plan": x.label, "a": x.a, "cut": x.cut, "b": x.b,
                    "total_s": round(x.total_s, 4), "period_s": round(x.period_s, 4),
                    "parts": {k: round(v, 4) for k, v in x.parts.items()}}
        return {"objective": self.objective, "reason": self.reason,
                "chosen": c(self.chosen) if self.chosen else None,
                "excluded": self.excluded, "candidates": [c(x) for x in self.candidates]}


def phone_state(bid: Any, profile: DeviceProfile, times: OpTimes, link: Link, *,
                ours_in_reading: bool = False, battery_floor: int = 15) -> PhoneState:
    """A phone's slowdown from its live bid, by the ECT cost's own terms (policy.py):
    background load (minus our own work when it ran during the reading), thermal status or
    temperature, capped clocks; hard exclusions (probe error, memory, battery, critical heat)
    as for a classify stage."""
    why = exclusion(Task(stage="classify"), bid, profile, battery_floor=battery_floor)
    if why:
        return PhoneState(bid.serial, times, link, math.inf, why)
    load = background_load(bid, [], profile, ours_in_reading=ours_in_reading)
    f_load = load_factor(load, profile.timing.load_sensitivity)
    f_therm = thermal_factor(bid)
    f_freq = freq_factor(bid, load)
    return PhoneState(bid.serial, times, link, f_load * f_therm * f_freq, None,
                      {"load_x": f_load, "thermal_x": f_therm, "freq_x": f_freq})


def whole_candidate(d: PhoneState, n_ops: int, input_bytes: int, output_bytes: int,
                    model_mb: float = 0.0) -> Candidate:
    parts = {"push_in": d.link.push_s(input_bytes), "run": d.run_s(0, n_ops, model_mb),
             "pull_out": d.link.pull_s(output_bytes)}
    total = sum(parts.values())
    return Candidate(d.serial, None, None, parts, total, total)


def split_candidate(a: PhoneState, cut: Cut, b: PhoneState, n_ops: int, input_bytes: int,
                    output_bytes: int) -> Candidate:
    parts = {"push_in": a.link.push_s(input_bytes), "head": a.run_s(0, cut.op_index, cut.head_mb),
             "pull_cut": a.link.pull_s(cut.nbytes), "push_cut": b.link.push_s(cut.nbytes),
             "tail": b.run_s(cut.op_index, n_ops, cut.tail_mb), "pull_out": b.link.pull_s(output_bytes)}
    a_busy = parts["push_in"] + parts["head"] + parts["pull_cut"]
    b_busy = parts["push_cut"] + parts["tail"] + parts["pull_out"]
    return Candidate(a.serial, cut.op_index, b.serial, parts, sum(parts.values()),
                     max(a_busy, b_busy))


def choose_plan(phones: Sequence[PhoneState], cuts: Sequence[Cut], *, n_ops: int,
                input_bytes: int, output_bytes: int, model_mb: float = 0.0,
                objective: str = "latency",
                origin: str | None = None, privacy: bool = False,
                min_gain: float = 0.05, allow_split: bool = True) -> Plan:
    """The best way to run one job (pure). Ties between candidates go to the lower label,
    so the same inputs always give the same plan."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, not {objective!r}")
    if privacy and origin is None:
        raise ValueError("privacy needs the origin phone")
    excluded = {p.serial: p.excluded for p in phones if p.excluded}
    ok = [p for p in phones if not p.excluded]
    key = (lambda c: (c.total_s, c.label)) if objective == "latency" \
        else (lambda c: (c.period_s, c.label))
    heads = [p for p in ok if not privacy or p.serial == origin]
    wholes = [whole_candidate(p, n_ops, input_bytes, output_bytes, model_mb) for p in heads]
    splits = [split_candidate(a, cut, b, n_ops, input_bytes, output_bytes)
              for a in heads for b in ok if b.serial != a.serial for cut in cuts] \
        if allow_split else []
    cands = sorted(wholes + splits, key=key)
    if not wholes:
        why = "; ".join(f"{s}: {w}" for s, w in excluded.items()) or "no devices"
        if privacy:
            why = f"origin {origin} cannot run the head ({excluded.get(origin or '', 'not found')})"
        return Plan(None, objective, f"no eligible device ({why})", cands, excluded)
    best_whole = min(wholes, key=key)
    best_split = min(splits, key=key) if splits else None
    metric = (lambda c: c.total_s) if objective == "latency" else (lambda c: c.period_s)
    if best_split is not None and metric(best_split) < metric(best_whole) * (1 - min_gain):
        gain = metric(best_whole) / metric(best_split)
        return Plan(best_split, objective,
                    f"split {best_split.label}: {objective} {metric(best_split):.3f} s, "
                    f"x{gain:.2f} better than whole on {best_whole.a}", cands, excluded)
    why = ("no valid cut point" if not cuts else "only one eligible phone" if len(ok) < 2
           else f"no split beats it by {min_gain:.0%}") if allow_split else "split disabled"
    return Plan(best_whole, objective, f"whole on {best_whole.a}: {objective} "
                f"{metric(best_whole):.3f} s ({why})", cands, excluded)


def format_plan(plan: Plan, limit: int = 12) -> str:
    """The candidates table for `adbflow split plan --explain`: best first."""
    keys: list[str] = []
    for c in plan.candidates:
        keys += [k for k in c.parts if k not in keys]
    rows = []
    for c in plan.candidates[:limit]:
        rows.append(["*" if c is plan.chosen else "", c.label, f"{c.total_s:.3f}",
                     f"{c.period_s:.3f}"] + [f"{c.parts[k]:.3f}" if k in c.parts else ""
                                             for k in keys])
    table = tabulate(rows, headers=["", "plan", "total_s", "period_s"] + [f"{k}_s" for k in keys],
                     disable_numparse=True)
    more = f"\n({len(plan.candidates) - limit} more candidates)" if len(plan.candidates) > limit else ""
    excl = "".join(f"\nexcluded {s}: {w}" for s, w in plan.excluded.items())
    return f"objective {plan.objective}: {plan.reason}\n{table}{more}{excl}"


# ------------------------------------------------------------------ re-partitioning

@dataclass(frozen=True)
class Snapshot:
    """The planning inputs that move: per phone slowdown and link bandwidth, exclusions."""

    slowdown: dict[str, float]
    bandwidth: dict[str, float]
    excluded: frozenset[str]

    @classmethod
    def of(cls, phones: Sequence[PhoneState]) -> Snapshot:
        return cls({p.serial: p.slowdown for p in phones if not p.excluded},
                   {p.serial: p.link.bytes_per_s for p in phones},
                   frozenset(p.serial for p in phones if p.excluded))


def replan_reason(prev: Snapshot | None, now: Snapshot, threshold: float = 0.2) -> str | None:
    """Why the next job needs a new plan, or None to keep the current one: first job, a
    phone came or went (or was excluded), or a slowdown / bandwidth moved by more than
    `threshold` (relative)."""
    if prev is None:
        return "first plan"
    if set(prev.slowdown) != set(now.slowdown) or prev.excluded != now.excluded:
        gone = sorted(set(prev.slowdown) - set(now.slowdown))
        new = sorted(set(now.slowdown) - set(prev.slowdown))
        return f"phones changed (gone: {', '.join(gone) or '-'}; new: {', '.join(new) or '-'})"
    for s, v in now.slowdown.items():
        old = prev.slowdown[s]
        if abs(v - old) > threshold * old:
            return f"{s}: slowdown x{old:.2f} -> x{v:.2f} (> {threshold:.0%})"
    for s, v in now.bandwidth.items():
        bw = prev.bandwidth.get(s)
        if bw and abs(v - bw) > threshold * bw:
            return f"{s}: bandwidth {bw / 1e6:.1f} -> {v / 1e6:.1f} MB/s (> {threshold:.0%})"
    return None
