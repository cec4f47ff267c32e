"""Which device gets a stage: scheduling policies behind one interface, and the ECT cost model.

Why a cost model instead of "lowest CPU load": a phone at 5 % load that is four times slower,
already has three pictures queued, or needs the 270 kB picture pushed over USB2 is a worse
choice than a busy flagship. Loads are also seconds old when we read them, so every device
looks idle right after a burst and lowest-load herds the whole burst onto one phone.

The decision is one pure function (like Dask's `worker_objective`): for each device

    total = transfer_in + wait + model_load + service + transfer_out + congestion

    transfer_in  = adb latency + input bytes / bandwidth     (0 when the data is already there)
    wait         = remaining time of the work we already awarded to it that runs before
                   this task (inflight, our own bookkeeping, never stale): same-stage work
                   with the pipeline's per-stage slots (other-stage work adds CPU load
                   instead), all of it with queueing="fifo"
    model_load   = what loading the model costs before the first token: 0 where a resident
                   program already holds it (Task.resident_on: a session's llama-server),
                   else the profile's load time per start of the one-shot program
                   (*_load_ms) plus its cold-start cost when the stage has not run there
                   recently (*_cold_ms: the model file is not in the page cache)
    service      = (learned seconds/unit, else the profile prior) * units
                   * load factor (background load, minus our own work in that reading)
                   * thermal factor * frequency factor * overrun factor
                   + adb latency of the run call
    transfer_out = adb latency + output bytes / bandwidth
    congestion   = service * number of our tasks already queued or running there (same queue)
    energy       = energy_weight_s_per_j * expected joules of the task there (default 0: off)

The first five parts are this task's expected completion. `congestion` is what the task
costs the pictures that come after it: a phone with a queue is a phone in demand, and every
second we add there delays the work that will queue behind it. The number already in the
queue estimates how many will (in an M/M/1 queue the mean number in the system,
rho/(1-rho), is also the mean delay multiplier of added work), so the marginal cost of the
award is service * queue length. Pure earliest-completion ignores it and at high load piles
work onto the fast phones until their queues are as long as a slow phone's run (simulated
six-phone fleet at 90 %: mean latency 7 % lower with the term, 4 % lower at 60 %, equal at
30 %; `CostModel.congestion` = 0 turns it off).

`energy` prices battery: joules per job weighed against latency, in seconds per joule (a
weight of 0.1 trades one second of latency for 10 J). Expected joules are learned per device
and stage from metered attempts (scheduling/energy_rates.py, `--energy`), else the bid's
measured power or the profile's `active_w` times the zero-load run time. With the weight 0
the part is absent and every decision is today's. Phones on battery are not charged more
than charging ones: the joules are the same work either way, the battery floor already keeps
low phones out, and a surcharge would be a number we never measured (energy from the wall
still costs; battery wear per cycle has no reading over adb to calibrate it against).

after hard filters (probe error, memory for the model, battery floor unless charging,
critical thermal state). Two corrections use only our own bookkeeping, which is exact and
current where the load reading is seconds old: "our work in that reading" comes from the
spells in which each phone was working for us (CostModel.observe: awards, starts, recorded
completions), so a task that ran and finished between two decisions is not mistaken for
someone else's load; and a task of ours running past its estimate marks the phone as slower
right now (overrun factor, capped at 2x). Devices within `tie_tolerance` (10 %) of the best
are near-equal: the coolest of them (within 1 C) are drawn at random, so equal phones share
a burst and work goes to the phone that heats least. Every part is kept in DeviceCost so
`--explain` can print it.

Why one module of ~520 lines: this docstring is the cost model's specification and the
code below is its only implementation (cost parts, CostModel, the four policies that rank
its output); kept together so the formula and the code are read and changed side by side.
"""
from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tabulate import tabulate

from adbflow.errors import AdbflowError
from adbflow.scheduling.bids import Bid, lowest_cpu_key
from adbflow.scheduling.cores import program_threads
from adbflow.scheduling.energy_rates import EnergyRates, expected_joules
from adbflow.scheduling.profiles import DeviceProfile, ProfileBook
from adbflow.scheduling.service_times import ServiceTimes, load_factor

STAGES = ("classify", "generate")
POLICY_NAMES = ("ect", "lowest-cpu", "random", "round-robin")
DEFAULT_POLICY = "ect"

#: a prompt token costs about a fifth of a generated token on phone CPUs (prompt eval is
#: batched); used only to put both into one "units" number for learning
PROMPT_TOKEN_WEIGHT = 0.2
#: Android PowerManager THERMAL_STATUS_CRITICAL: the platform itself is shedding load
THERMAL_EXCLUDE_STATUS = 4
#: slowdown per Android thermal status (NONE, LIGHT, MODERATE, SEVERE); anchored on the
#: Pixel 8 Pro sustained-CNN measurements (~1.25x, ~1.4x, ~2.1x) in device-profiles.md
THERMAL_STATUS_FACTOR = {0: 1.0, 1: 1.1, 2: 1.25, 3: 1.6}


@dataclass(frozen=True)
class Task:
    """One stage of one job, as the scheduler sees it.

    `started_at` (time.time()) is set by the orchestrator for inflight tasks already running,
    so only their remaining time counts as wait. n_predict 0 = the profile's default.
    """

    stage: str
    input_bytes: int = 0
    output_bytes: int = 0
    data_on: str | None = None
    prompt_tokens: int = 0
    n_predict: int = 0
    started_at: float | None = None
    #: the chosen model variant's idle run time (a flow's model selector sets it; None: the
    #: profile's [label_image] model, learned per device)
    prior_s: float | None = None
    #: devices where this stage's model is resident (a session's llama-server holds it
    #: loaded): their model_load is 0. Set by the stage from the live servers (runtime/
    #: resident.py), so the decision stays a function of its arguments.
    resident_on: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; expected one of {STAGES}")


@dataclass
class DeviceCost:
    """Expected completion of a task on one device, in seconds, with its parts.

    `factors` holds the multipliers behind `service` (load, thermal, freq) and, for the
    baseline policies, the key they ranked by; they are not seconds.
    """

    serial: str
    eligible: bool
    excluded: str | None
    total_s: float
    parts: dict[str, float]
    factors: dict[str, float] = field(default_factory=dict)


@dataclass
class Decision:
    policy: str
    winner: str | None
    costs: list[DeviceCost]
    reason: str
    #: what a flow's model selector chose with the device (model, deadline met); {} otherwise
    detail: dict[str, Any] = field(default_factory=dict)

    def cost_of(self, serial: str) -> DeviceCost | None:
        return next((c for c in self.costs if c.serial == serial), None)

    def to_json(self) -> dict[str, Any]:
        return {"policy": self.policy, "winner": self.winner, "reason": self.reason,
                "costs": [{"serial": c.serial, "eligible": c.eligible, "excluded": c.excluded,
                           "total_s": None if math.isinf(c.total_s) else round(c.total_s, 4),
                           "parts": {k: round(v, 4) for k, v in c.parts.items()},
                           "factors": {k: round(v, 4) for k, v in c.factors.items()}}
                          for c in self.costs]}


class Policy(Protocol):
    name: str

    def choose(self, task: Task, bids: Sequence[Bid], *, inflight: Mapping[str, Sequence[Task]],
               profiles: ProfileBook, service_times: ServiceTimes | None = None,
               rng: random.Random | None = None, now: float | None = None) -> Decision: ...


# ------------------------------------------------------------------------- cost model parts

def task_units(task: Task, profile: DeviceProfile | None = None) -> float:
    """Work in the units ServiceTimes learns: 1 per classify, weighted tokens per generate."""
    if task.stage == "classify":
        return 1.0
    n_predict = task.n_predict or (profile.llama.n_predict if profile else 64)
    return max(1.0, n_predict + PROMPT_TOKEN_WEIGHT * task.prompt_tokens)


def prior_service_s(task: Task, profile: DeviceProfile) -> float:
    """Profile estimate of the stage's run time on an idle, cool device with the model cached."""
    t = profile.timing
    if task.prior_s is not None:
        return task.prior_s
    if task.stage == "classify":
        return t.classify_ms / 1000.0
    n_predict = task.n_predict or profile.llama.n_predict
    return task.prompt_tokens / t.prompt_tok_s + n_predict / t.gen_tok_s


def model_load_s(stage: str, timing: Any, *, resident: bool, page_cached: bool) -> float:
    """Seconds before the stage's first useful work goes to loading its model: none where a
    resident program holds it; else every start of the one-shot program loads it (load_ms),
    and reads it from flash first when it is not in the page cache (cold_ms)."""
    if resident:
        return 0.0
    load_ms = timing.classify_load_ms if stage == "classify" else timing.generate_load_ms
    cold_ms = timing.classify_cold_ms if stage == "classify" else timing.generate_cold_ms
    return (load_ms + (0.0 if page_cached else cold_ms)) / 1000.0


def thermal_factor(bid: Bid) -> float:
    """Slowdown from heat: Android thermal status when known, else skin/CPU temperature."""
    status = bid.thermal_status
    if status is not None and status in THERMAL_STATUS_FACTOR:
        return THERMAL_STATUS_FACTOR[status]
    temp = bid.temperature_c
    if temp is None or not math.isfinite(temp):
        return 1.0
    # phones start to cap clocks around 40-45 C; +4 % per degree, capped at the 2.1x measured
    return min(2.1, 1.0 + 0.04 * max(0.0, temp - 42.0))


def _temperature(bid: Bid) -> float | None:
    temp = bid.temperature_c
    return float(temp) if temp is not None and math.isfinite(temp) else None


def freq_factor(bid: Bid, background_load: float) -> float:
    """Slowdown from capped clocks. Only meaningful on a busy CPU: an idle phone's cores sit
    at low DVFS frequencies that rise as soon as work arrives, which is not throttling."""
    ratio = bid.freq_ratio
    if ratio is None or not math.isfinite(ratio) or ratio <= 0 or background_load < 50.0:
        return 1.0
    return 1.0 / max(0.4, min(1.0, ratio))


def exclusion(task: Task, bid: Bid, profile: DeviceProfile, *, battery_floor: int) -> str | None:
    """Why the device must not get this task, or None. Hard filters before any ranking."""
    if bid.error:
        return f"probe failed: {bid.error}"
    load = bid.cpu_load
    if load is None or not math.isfinite(load):
        return "cpu load unknown"
    need_mb = (profile.timing.classify_mem_mb if task.stage == "classify"
               else profile.timing.generate_mem_mb)
    avail_kb = bid.mem_available_kb or 0
    if bid.mem_total_kb and avail_kb / 1024.0 < need_mb:
        return f"memory: {avail_kb // 1024} MB free < {need_mb:.0f} MB for {task.stage}"
    level = bid.battery_level
    if level is not None and level < battery_floor and not bid.battery_charging:
        return f"battery {level} % < {battery_floor} % and not charging"
    status = bid.thermal_status
    if status is not None and status >= THERMAL_EXCLUDE_STATUS:
        return f"thermal status {status} (critical or worse)"
    return None


def stage_threads(profile: Any, stage: str, bid: Bid) -> int:
    """The threads a stage's program runs with on this phone: label_image the profile's
    (its classify_ms is measured at that count), llama.cpp at most the phone's performance
    cores (adbflow.scheduling.cores: a thread on a little core slows every token)."""
    if stage == "classify":
        return int(profile.label_image.threads)
    return program_threads(profile.llama.threads, bid.perf_cores)


def background_load(bid: Bid, inflight: Sequence[Task], profile: DeviceProfile, *,
                    ours_in_reading: bool | None = None) -> float:
    """The bid's CPU load (percent) minus the share of our own work in that reading.

    Why: the measured load includes the stage we started on that device; counting it as
    slowdown too would charge the device twice (once as wait, once as load). The reading is
    seconds old, so "ours" means: our work ran there when the load was measured
    (`ours_in_reading`, known to CostModel), defaulting to "a task is running now".
    Pipelines should record learned service times with this same number.
    """
    load = float(bid.cpu_load or 0.0)
    if not math.isfinite(load):
        return 0.0
    running = [x for x in inflight if x.started_at is not None]
    if ours_in_reading is None:
        ours_in_reading = bool(running)
    if ours_in_reading:
        cores = max(1, bid.cores or 1)
        stage = running[0].stage if running else "generate"
        threads = stage_threads(profile, stage, bid)
        load = max(0.0, load - 100.0 * min(1.0, threads / cores))
    return load


def _transfer_s(nbytes: int, profile: DeviceProfile) -> float:
    if nbytes <= 0:
        return 0.0
    t = profile.timing
    return t.adb_latency_ms / 1000.0 + nbytes / (t.bandwidth_mb_s * 1e6)


@dataclass
class CostModel:
    """Parameters of the ECT estimate (defaults documented in the module docstring)."""

    battery_floor: int = 15
    residency_s: float = 600.0     # a model run within this many seconds is still in page cache
    #: how a device works through awarded tasks: "per-stage" = one task per stage at a time,
    #: stages side by side (adbflow.runtime.pipeline's slots); "fifo" = one task at a time
    queueing: str = "per-stage"
    #: largest slowdown inferred from one of our tasks running past its estimate (1 = off)
    overrun_cap: float = 2.0
    #: weight of the congestion part (the delay an award adds to later work; 0 = pure ECT)
    congestion: float = 1.0
    #: seconds of latency one expected joule is worth (0 = energy ignored, the default)
    energy_weight_s_per_j: float = 0.0
    #: learned joules per unit (None: only the measured-power / profile prior)
    energy_rates: EnergyRates | None = None
    #: serial -> [start, end or None while open] spells of our work there (a few recent ones)
    busy_spells: dict[str, list[list[Any]]] = field(default_factory=dict)

    def observe(self, inflight: Mapping[str, Sequence[Task]], now: float,
                service_times: ServiceTimes | None = None) -> None:
        """Update, per device, the intervals in which it was working for us (our own exact
        bookkeeping, never stale). A device with awarded work now is busy at `now`, since the
        earliest start among its running tasks (or since now). Once it has none left, its
        busy spell ended at its last recorded completion (ServiceTimes.last_run: the pipeline
        records every finished stage), or "by now" when unknown. Looking only at the tasks
        seen running at decision times would miss the ones that ran in between (queued at
        one decision, done before the next) and make the phone look half busy with someone
        else's work in a seconds-old load reading."""
        for serial, tasks in inflight.items():
            spells = self.busy_spells.setdefault(serial, [])
            is_open = bool(spells) and spells[-1][1] is None
            if tasks:
                starts = [x.started_at for x in tasks if x.started_at is not None]
                if not is_open:
                    spells.append([min(starts) if starts else now, None])
                elif starts:
                    opened = spells[-1][0]
                    assert opened is not None   # a spell always has its start
                    spells[-1][0] = min(opened, min(starts))
            elif is_open:
                runs = [service_times.last_run(serial, st) for st in STAGES] \
                    if service_times is not None else []
                ends = [e for e in runs if e is not None and spells[-1][0] <= e <= now]
                spells[-1][1] = max(ends) if ends else now
            if len(spells) > 8:
                del spells[:-8]

    def ours_in_reading(self, bid: Bid, now: float) -> bool:
        """Did our own work run on the device while its load was measured? Loads are
        averaged over a window ending at bid.timestamp, possibly seconds ago: a job that
        finished since still inflates the reading, one that started since does not.
        Known from the busy spells observe() keeps (call it first)."""
        read_end = float(bid.timestamp or now)
        read_start = read_end - float(bid.load_window_s or 0.0)
        return any(start <= read_end and (end is None or end >= read_start)
                   for start, end in self.busy_spells.get(bid.serial, []))

    def service_s(self, task: Task, serial: str, profile: DeviceProfile,
                  service_times: ServiceTimes | None) -> float:
        """Zero-load, cool-device run time: learned when we have samples, else the prior."""
        if service_times is not None and task.prior_s is None:
            per_unit = service_times.estimate(serial, task.stage)
            if per_unit is not None:
                return per_unit * task_units(task, profile)
        return prior_service_s(task, profile)

    def cost(self, task: Task, bid: Bid, profile: DeviceProfile, *,
             inflight: Sequence[Task], service_times: ServiceTimes | None,
             now: float) -> DeviceCost:
        serial = bid.serial
        why = exclusion(task, bid, profile, battery_floor=self.battery_floor)
        if why:
            return DeviceCost(serial, False, why, math.inf, {})
        t = profile.timing
        lat = t.adb_latency_ms / 1000.0
        load = background_load(bid, inflight, profile,
                               ours_in_reading=self.ours_in_reading(bid, now))
        ahead = list(inflight)
        if self.queueing == "per-stage":
            # other-stage work runs beside ours: it does not delay the start, it shares the CPU
            ahead = [x for x in inflight if x.stage == task.stage]
            others = {x.stage for x in inflight if x.stage != task.stage}
            cores = max(1, bid.cores or 1)
            for stage in others:
                threads = stage_threads(profile, stage, bid)
                load += 100.0 * min(1.0, threads / cores)
        f_load = load_factor(load, t.load_sensitivity)
        f_therm = thermal_factor(bid)
        f_freq = freq_factor(bid, load)
        scale = f_load * f_therm * f_freq

        def run_s(x: Task, slow: float = 1.0) -> float:
            return self.service_s(x, serial, profile, service_times) * scale * slow + lat

        def full_s(x: Task, slow: float = 1.0) -> float:
            return (0.0 if x.data_on == serial else _transfer_s(x.input_bytes, profile)) \
                + run_s(x, slow) + _transfer_s(x.output_bytes, profile)

        # Overrun: a task of ours that has run longer than estimated is fresh evidence
        # (our own clock, not a seconds-old load) that the phone is slower right now: a
        # foreground app started, or it got hotter. Everything else there is scaled alike.
        f_over = 1.0
        for x in ahead:
            if x.started_at is not None and self.overrun_cap > 1.0:
                f_over = max(f_over, min(self.overrun_cap, (now - x.started_at) / full_s(x)))
        wait = 0.0
        for x in ahead:
            full = full_s(x, f_over)
            if x.started_at is not None:
                # unknown progress beyond elapsed time; keep 10 % so an overdue job still counts
                full = max(0.1 * full, full - max(0.0, now - x.started_at))
            wait += full
        if self.queueing == "per-stage":
            # k slots of this stage work through the queue k at a time (Dask: occupancy/nthreads)
            wait /= profile.slots.of(task.stage)
        warm = any(x.stage == task.stage for x in inflight)
        if not warm and service_times is not None:
            last = service_times.last_run(serial, task.stage)
            warm = last is not None and now - last < self.residency_s
        service = run_s(task, f_over)
        resident = serial in task.resident_on
        parts = {
            "transfer_in": 0.0 if task.data_on == serial else _transfer_s(task.input_bytes, profile),
            "wait": wait,
            "model_load": model_load_s(task.stage, t, resident=resident, page_cached=warm),
            "service": service,
            "transfer_out": _transfer_s(task.output_bytes, profile),
            "congestion": self.congestion * service * len(ahead),
        }
        factors = {"load_x": f_load, "thermal_x": f_therm, "freq_x": f_freq,
                   "overrun_x": f_over}
        if task.resident_on:
            factors["resident"] = 1.0 if resident else 0.0
        if self.energy_weight_s_per_j > 0:
            # the work's own energy: zero-load run time, not stretched by others' load
            joules, _source = expected_joules(
                serial, task.stage, task_units(task, profile),
                self.service_s(task, serial, profile, service_times),
                rates=self.energy_rates, power_w=bid.power_w, active_w=t.active_w)
            parts["energy"] = self.energy_weight_s_per_j * joules
            factors["joules"] = joules
        return DeviceCost(serial, True, None, sum(parts.values()), parts, factors)

    def costs(self, task: Task, bids: Sequence[Bid], *, inflight: Mapping[str, Sequence[Task]],
              profiles: ProfileBook, service_times: ServiceTimes | None,
              now: float) -> list[DeviceCost]:
        by_model: dict[str | None, DeviceProfile] = {}
        out = []
        self.observe(inflight, now, service_times)
        for bid in bids:
            model = bid.model
            if model not in by_model:
                by_model[model] = profiles.for_model(model)
            out.append(self.cost(task, bid, by_model[model], inflight=inflight.get(bid.serial, ()),
                                 service_times=service_times, now=now))
        return out


# ------------------------------------------------------------------------------- policies

class _Base:
    name = "base"

    def __init__(self, *, battery_floor: int = 15, residency_s: float = 600.0,
                 queueing: str = "per-stage", congestion: float = 1.0,
                 energy_weight_s_per_j: float = 0.0,
                 energy_rates: EnergyRates | None = None) -> None:
        if queueing not in ("per-stage", "fifo"):
            raise ValueError(f"queueing must be 'per-stage' or 'fifo', not {queueing!r}")
        if not (math.isfinite(energy_weight_s_per_j) and energy_weight_s_per_j >= 0):
            raise ValueError(f"energy weight must be >= 0 s/J, not {energy_weight_s_per_j!r}")
        self.model = CostModel(battery_floor=battery_floor, residency_s=residency_s,
                               queueing=queueing, congestion=congestion,
                               energy_weight_s_per_j=energy_weight_s_per_j,
                               energy_rates=energy_rates)

    def choose(self, task: Task, bids: Sequence[Bid], *, inflight: Mapping[str, Sequence[Task]],
               profiles: ProfileBook, service_times: ServiceTimes | None = None,
               rng: random.Random | None = None, now: float | None = None) -> Decision:
        now = time.time() if now is None else now
        rng = rng or random.Random()
        costs = self.model.costs(task, bids, inflight=inflight, profiles=profiles,
                                 service_times=service_times, now=now)
        eligible = [c for c in costs if c.eligible]
        if not eligible:
            why = "; ".join(f"{c.serial}: {c.excluded}" for c in costs) or "no devices"
            return Decision(self.name, None, costs, f"no eligible device ({why})")
        bid_of = {b.serial: b for b in bids}
        winner, reason = self._pick(eligible, bid_of, rng)
        return Decision(self.name, winner, costs, reason)

    def _pick(self, eligible: list[DeviceCost], bid_of: Mapping[str, Bid],
              rng: random.Random) -> tuple[str, str]:
        raise NotImplementedError


class ECTPolicy(_Base):
    """Earliest expected completion time (the default)."""

    name = "ect"

    def __init__(self, *, tie_tolerance: float = 0.10, tie_abs_s: float = 0.005,
                 cool_margin_c: float = 1.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.tie_tolerance = tie_tolerance
        self.tie_abs_s = tie_abs_s
        self.cool_margin_c = cool_margin_c

    def _pick(self, eligible, bid_of, rng):
        best = min(c.total_s for c in eligible)
        near = sorted((c for c in eligible
                       if c.total_s <= best * (1 + self.tie_tolerance) + self.tie_abs_s),
                      key=lambda c: c.serial)
        # Among near-equal phones the cooler one: heat builds over minutes with the work we
        # give a phone and then slows everything it runs (convex in heat), so spreading work
        # over cool phones keeps the fleet's sustained speed up. The cost already has the
        # current thermal slowdown; this is about the slowdown this task would add later.
        temps = {c.serial: _temperature(bid_of[c.serial]) for c in near}
        known = [t for t in temps.values() if t is not None]
        cooler = ""
        if known and max(known) - min(known) > self.cool_margin_c:
            coolest = min(known)
            near = [c for c in near
                    if (t := temps[c.serial]) is None or t <= coolest + self.cool_margin_c]
            cooler = f", coolest within {self.cool_margin_c:g} C"
        win = near[0] if len(near) == 1 else rng.choice(near)
        tie = (f"; random among {len(near)} within {self.tie_tolerance:.0%}{cooler}"
               if len(near) > 1 or cooler else "")
        if "energy" in win.parts:   # latency plus the priced joules, not a completion time
            return win.serial, (f"lowest expected cost {win.total_s:.3f} s (energy "
                                f"{win.parts['energy']:.3f} s for {win.factors['joules']:.1f} J)"
                                f"{tie}")
        return win.serial, f"earliest expected completion {win.total_s:.3f} s{tie}"


class LowestCpuPolicy(_Base):
    """The seed policy: `adbflow.scheduling.bids.lowest_cpu_key`, the rule `bid` uses too
    (lowest whole-device CPU load; ties go to more free memory, then serial). Ignores
    speed, queued work and transfers; the ECT estimate is still computed so `--explain`
    shows what the choice costs."""

    name = "lowest-cpu"

    def _pick(self, eligible, bid_of, rng):
        for c in eligible:
            c.factors["rank_cpu_load"] = float(bid_of[c.serial].cpu_load)
        win = min(eligible, key=lambda c: lowest_cpu_key(bid_of[c.serial]))
        return win.serial, f"lowest cpu load {win.factors['rank_cpu_load']:.1f} %"


class RandomPolicy(_Base):
    """Uniform among eligible devices: the no-information baseline."""

    name = "random"

    def _pick(self, eligible, bid_of, rng):
        win = rng.choice(sorted(eligible, key=lambda c: c.serial))
        return win.serial, f"random among {len(eligible)} eligible"


class RoundRobinPolicy(_Base):
    """Next eligible serial after the previous winner (serials in sorted order). Keeps state:
    one instance per run."""

    name = "round-robin"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._last: str | None = None

    def _pick(self, eligible, bid_of, rng):
        order = sorted(c.serial for c in eligible)
        nxt = next((s for s in order if self._last is None or s > self._last), order[0])
        self._last = nxt
        return nxt, f"round-robin turn ({len(order)} eligible)"


_POLICIES: dict[str, type[_Base]] = {
    "ect": ECTPolicy, "lowest-cpu": LowestCpuPolicy, "random": RandomPolicy,
    "round-robin": RoundRobinPolicy,
}


def get_policy(name: str, **options: Any) -> Policy:
    """A fresh policy instance by CLI name (`--policy`)."""
    try:
        cls = _POLICIES[name]
    except KeyError:
        raise AdbflowError(f"unknown policy {name!r}",
                           hint=f"choose one of: {', '.join(POLICY_NAMES)}") from None
    return cls(**options)


def format_decision(decision: Decision) -> str:
    """A table of every device's expected completion and its parts (for `bid --explain`)."""
    part_keys: list[str] = []
    factor_keys: list[str] = []
    for c in decision.costs:
        part_keys += [k for k in c.parts if k not in part_keys]
        factor_keys += [k for k in c.factors if k not in factor_keys]
    rows = []
    for c in sorted(decision.costs, key=lambda c: (not c.eligible, c.total_s, c.serial)):
        mark = "*" if c.serial == decision.winner else ""
        row = [mark, c.serial, "-" if not c.eligible else f"{c.total_s:.3f}"]
        row += [f"{c.parts[k]:.3f}" if k in c.parts else "" for k in part_keys]
        row += [f"{c.factors[k]:.2f}" if k in c.factors else "" for k in factor_keys]
        row.append(c.excluded or "")
        rows.append(row)
    headers = ["", "serial", "total_s"] + [f"{k}_s" for k in part_keys] + factor_keys + ["excluded"]
    table = tabulate(rows, headers=headers, disable_numparse=True)
    return f"policy {decision.policy}: winner {decision.winner or 'none'} ({decision.reason})\n{table}"
