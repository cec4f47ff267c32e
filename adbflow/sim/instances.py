"""Simulated fleets and picture streams: `SimConfig`, one `Instance` sampled from it.

Why apart: the engine, the bounds and the offline search all read the same sampled
instance (common random numbers: every policy sees the same pictures, phones and
foreground-app interruptions), so it is built once here and only read elsewhere.
See adbflow.sim for what is modelled.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from adbflow.scheduling.policy import Task, prior_service_s
from adbflow.scheduling.profiles import DeviceProfile, ProfileBook
from adbflow.scheduling.service_times import load_factor

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
    tc: list[float] = []
    tg: list[float] = []
    for d, dev in enumerate(inst.devices):
        for stage, out in (("classify", tc), ("generate", tg)):
            base = prior_service_s(inst.task(stage), dev.profile) * dev.speed
            out.append((inst.fixed_s(d, stage) + base * load_factor(c.background_load)) * f_avg)
    return _lp_throughput(np.array(tc), np.array(tg))[0]


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
