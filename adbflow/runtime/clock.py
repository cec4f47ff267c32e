"""Device clock offsets, estimated the NTP way (pure; device I/O is in clocksync.py).

Why: every phone's wall clock is off from the laptop's by up to seconds and drifts by tens
of ppm, so device-side timestamps (a program's start on the phone, its own timing lines)
cannot be put next to laptop timestamps raw. One exchange gives host send time t0, the
device's time td read somewhere between, and host receive time t1; if the device read its
clock at the midpoint, offset = td - (t0 + t1) / 2, and wherever it read it inside the
round trip the error is at most rtt / 2 (plus the device clock's resolution). Of ~20
exchanges the one with the smallest round trip has the tightest bound (NTP's clock filter
keeps the minimum-delay sample for the same reason). Drift is tracked by re-syncing: a
weighted straight-line fit of offsets over time.

Offsets are device minus host: host_time = device_time - offset.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class ClockSource(str, Enum):
    """Which device clock the exchange read, best first."""

    EPOCHREALTIME = "epochrealtime"   # mksh builtin, µs, no fork
    DATE_NS = "date_ns"               # toybox `date +%s%N`: a fork per sample
    UPTIME = "uptime"                 # /proc/uptime: 10 ms ticks, since boot, not epoch

    @property
    def resolution_s(self) -> float:
        return {"epochrealtime": 1e-6, "date_ns": 1e-9, "uptime": 0.01}[self.value]

    @property
    def is_epoch(self) -> bool:
        """False for uptime: its offset maps boot time, not the device's wall clock."""
        return self is not ClockSource.UPTIME


@dataclass(frozen=True)
class ClockSample:
    """One exchange, all in seconds: host send, device clock, host receive."""

    t0: float
    td: float
    t1: float

    @property
    def rtt(self) -> float:
        return self.t1 - self.t0

    @property
    def mid(self) -> float:
        return (self.t0 + self.t1) / 2.0

    @property
    def offset(self) -> float:
        return self.td - self.mid


@dataclass(frozen=True)
class ClockOffset:
    """The estimate of one sync: offset (device - host, s) at host time `at`, with its bound.

    bound: the true offset lies within offset ± bound (rtt/2 of the best sample plus the
    device clock's resolution); uptime-based estimates say so with their wider bound."""

    serial: str
    source: ClockSource
    offset: float
    bound: float
    at: float
    rtt: float
    samples: int
    probe_s: float = 0.0

    def to_host(self, device_time: float) -> float:
        return device_time - self.offset

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["source"] = self.source.value
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ClockOffset:
        return cls(str(d["serial"]), ClockSource(d["source"]), float(d["offset"]),
                   float(d["bound"]), float(d["at"]), float(d["rtt"]), int(d["samples"]),
                   float(d.get("probe_s", 0.0)))


def parse_device_time(text: str, source: ClockSource) -> float | None:
    """A device reply as seconds, or None when it is not a plain number (untrusted text).

    $EPOCHREALTIME is "SECONDS.MICROS"; `date +%s%N` is integer nanoseconds (an old date
    prints a literal 'N' or '%N': rejected); /proc/uptime's first field is "SECONDS.CC"."""
    t = text.strip().split(" ", 1)[0] if source is ClockSource.UPTIME else text.strip()
    if not t or len(t) > 40:
        return None
    if source is ClockSource.DATE_NS:
        return int(t) / 1e9 if t.isdigit() and len(t) >= 16 else None
    head, dot, tail = t.partition(".")
    if not head.isdigit() or (dot and not tail.isdigit()):
        return None
    return float(t)


def estimate(serial: str, source: ClockSource, samples: Sequence[ClockSample], *,
             probe_s: float = 0.0) -> ClockOffset:
    """The minimum-RTT sample's offset and bound. Raises ValueError without samples."""
    good = [s for s in samples if s.rtt >= 0 and math.isfinite(s.td)]
    if not good:
        raise ValueError(f"{serial}: no usable clock samples")
    best = min(good, key=lambda s: s.rtt)
    return ClockOffset(serial, source, best.offset, best.rtt / 2.0 + source.resolution_s,
                       best.mid, best.rtt, len(good), probe_s)


@dataclass
class ClockTrack:
    """The syncs of one device over time; offset_at() interpolates with the drift fit.

    With one sync the offset is taken as constant; with two or more a weighted
    least-squares line offset(t) = a + b (t - t_first), weights 1/bound², is used
    (b is the drift). The bound at time t grows with the distance to the nearest sync by
    the drift's own uncertainty (or, with one sync, by an assumed 100 ppm worst case)."""

    serial: str
    syncs: list[ClockOffset] = field(default_factory=list)
    assumed_drift_ppm: float = 100.0
    keep: int = 30                 # newest syncs used by the fit (old drift is not today's)
    steps: int = 0                 # clock steps seen (NTP set, reboot, user changed the time)

    def add(self, est: ClockOffset) -> None:
        """Add a sync; a sync far off the fitted line means the device clock was stepped:
        the line restarts from it (mixing both sides of a step would be wrong on both)."""
        if self.syncs and est.at >= self.syncs[-1].at:
            predicted, bound = self.offset_at(est.at)
            if abs(est.offset - predicted) > max(0.005, 10 * (bound + est.bound)):
                self.syncs.clear()
                self.steps += 1
        self.syncs.append(est)
        self.syncs.sort(key=lambda e: e.at)
        del self.syncs[:-self.keep]

    @property
    def source(self) -> ClockSource | None:
        return self.syncs[-1].source if self.syncs else None

    def fit(self) -> tuple[float, float, float]:
        """(a, b, t_first): offset(t) ≈ a + b (t - t_first). Pure."""
        if not self.syncs:
            raise ValueError(f"{self.serial}: no clock syncs")
        t_first = self.syncs[0].at
        if len(self.syncs) == 1 or self.syncs[-1].at - t_first < 1e-3:
            w = [1.0 / max(e.bound, 1e-9) ** 2 for e in self.syncs]
            a = sum(wi * e.offset for wi, e in zip(w, self.syncs, strict=False)) / sum(w)
            return a, 0.0, t_first
        w = [1.0 / max(e.bound, 1e-9) ** 2 for e in self.syncs]
        xs = [e.at - t_first for e in self.syncs]
        ys = [e.offset for e in self.syncs]
        sw = sum(w)
        mx = sum(wi * x for wi, x in zip(w, xs, strict=False)) / sw
        my = sum(wi * y for wi, y in zip(w, ys, strict=False)) / sw
        sxx = sum(wi * (x - mx) ** 2 for wi, x in zip(w, xs, strict=False))
        sxy = sum(wi * (x - mx) * (y - my) for wi, x, y in zip(w, xs, ys, strict=False))
        b = sxy / sxx if sxx > 0 else 0.0
        return my - b * mx, b, t_first

    @property
    def drift_ppm(self) -> float | None:
        if len(self.syncs) < 2:
            return None
        return self.fit()[1] * 1e6

    def offset_at(self, host_time: float) -> tuple[float, float]:
        """(offset, bound) at a host time."""
        a, b, t_first = self.fit()
        nearest = min(self.syncs, key=lambda e: abs(e.at - host_time))
        gap = abs(nearest.at - host_time)
        if len(self.syncs) >= 2:
            span = self.syncs[-1].at - t_first
            slope_err = 2 * max(e.bound for e in self.syncs) / span if span > 0 else 0.0
        else:
            slope_err = self.assumed_drift_ppm * 1e-6
        return a + b * (host_time - t_first), nearest.bound + slope_err * gap

    def device_to_host(self, device_time: float) -> tuple[float, float]:
        """(host time, bound) of a device wall-clock time (one fixed-point step suffices:
        the offset changes by ppm over the seconds it shifts)."""
        off, _ = self.offset_at(device_time - self.syncs[-1].offset if self.syncs else device_time)
        off, bound = self.offset_at(device_time - off)
        return device_time - off, bound


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty sequence. Pure."""
    xs = sorted(values)
    if not xs:
        raise ValueError("percentile of nothing")
    k = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)
