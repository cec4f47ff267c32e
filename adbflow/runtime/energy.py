"""Energy of a piece of work from battery fuel-gauge samples (pure; sampling is in
energymeter.py).

Why so careful with the numbers: power_supply drivers disagree. current_now is µA on most
phones but mA on some; its sign is + when charging on AOSP's convention and reversed on
others; charge_counter (µAh) is frozen on some gauges; voltage_now is µV (mV on a few).
Every guess below is flagged in the report, never used silently. The gauge reports an
average over its update period, so a sample describes the half period before it: samples
are shifted back by half the measured period before integrating. On USB power the battery
only sees what the charger does not cover: the gross energy of the device is unknown
then, and only the energy above the idle baseline (taken just before) is reported.
"""
from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class PowerSample:
    """One reading: laptop time it arrived, raw sysfs integers (None when unreadable)."""

    t: float
    current: int | None
    voltage: int | None
    counter: int | None
    usb_online: bool | None = None
    status: str = ""


@dataclass(frozen=True)
class Units:
    current_a: float           # multiply raw current_now by this to get amperes ...
    voltage_v: float           # ... raw voltage_now to volts
    sign: int                  # +1: AOSP (+ = charging); -1: reversed driver
    flags: tuple[str, ...] = ()


@dataclass
class EnergyReport:
    """Energy of one window. gross_j: energy drawn from the battery (None on USB power),
    net_j: above the idle baseline, baseline_w: idle power measured just before."""

    seconds: float
    gross_j: float | None
    net_j: float | None
    baseline_w: float | None
    mean_w: float | None
    counter_j: float | None            # the same from charge_counter (None when frozen)
    gauge_period_s: float | None
    sample_period_s: float | None
    samples: int
    usb_charging: bool
    flags: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, float):
                d[k] = round(v, 4)
        return d


def _median(xs: Sequence[float]) -> float | None:
    return statistics.median(xs) if xs else None


def detect_units(samples: Sequence[PowerSample], baseline: Sequence[PowerSample] = ()
                 ) -> Units:
    """Scale and sign of the raw counters (pure). Flags every non-standard finding."""
    flags: list[str] = []
    cur = [abs(s.current) for s in samples if s.current is not None]
    mc = _median(cur) or 0.0
    if mc >= 10_000 or mc == 0:
        ca = 1e-6
    else:
        ca = 1e-3
        flags.append(f"current_now looks like mA (|median| {mc:.0f} < 10000): scaled x1000")
    volts = [s.voltage for s in samples if s.voltage is not None and s.voltage > 0]
    mv = _median(volts) or 0.0
    if mv >= 100_000:
        va = 1e-6
    elif 1_000 <= mv <= 6_000:
        va = 1e-3
        flags.append("voltage_now looks like mV: scaled x1000")
    else:
        va = 1e-6
        flags.append(f"voltage_now implausible ({mv:g}): energy uses it as µV")
    sign = 1
    signed = [s.current for s in samples if s.current is not None]
    unplugged = [s for s in samples if s.usb_online is False]
    if unplugged and signed and len(unplugged) * 2 >= len(samples):
        if statistics.median(signed) > 0:     # discharging on battery yet "charging" current
            sign = -1
            flags.append("current_now sign reversed (positive while discharging on battery)")
    elif baseline and signed:
        base = [s.current for s in baseline if s.current is not None]
        if base and statistics.mean(signed) - statistics.mean(base) > 0.05 * max(1.0, mc):
            sign = -1                          # more load made it *more* positive: reversed
            flags.append("current_now sign reversed (load raised it)")
    return Units(ca, va, sign, tuple(flags))


def gauge_period(samples: Sequence[PowerSample]) -> float | None:
    """Median time between gauge updates: changes of current, voltage or charge counter
    (a steady load keeps current_now constant, the voltage and counter still move)."""
    changes = [b.t for a, b in zip(samples, samples[1:], strict=False)
               if (b.current, b.voltage, b.counter) != (a.current, a.voltage, a.counter)]
    gaps = [b - a for a, b in zip(changes, changes[1:], strict=False) if b > a]
    return _median(gaps)


def _power_w(s: PowerSample, u: Units) -> float | None:
    """Power flowing OUT of the battery (W, >0 when discharging)."""
    if s.current is None or s.voltage is None:
        return None
    return -(u.sign * s.current * u.current_a) * (s.voltage * u.voltage_v)


def integrate(samples: Sequence[PowerSample], t0: float, t1: float, u: Units,
              gauge_s: float = 0.0) -> float | None:
    """∫ P dt over [t0, t1] from gauge readings.

    A fuel gauge publishes, at each update, the average since its previous update; a
    reading therefore describes the interval *before* it. The update instants are seen as
    changes of (current, voltage, counter) between two samples (midpoint taken), so value
    k covers (update k-1, update k]; the first value covers the `gauge_s` before its
    update; after the last update seen the last value is held. Unchanged values across an
    update merge into one interval, which is the same integral."""
    updates: list[tuple[float, float]] = []      # (update instant, power published then)
    prev: PowerSample | None = None
    for smp in samples:
        p = _power_w(smp, u)
        if p is None:
            continue
        if prev is None:
            updates.append((smp.t, p))
        elif (smp.current, smp.voltage, smp.counter) != (prev.current, prev.voltage, prev.counter):
            updates.append(((prev.t + smp.t) / 2, p))
        prev = smp
    if not updates:
        return None
    # segments: value k from the previous update to its own update
    segs: list[tuple[float, float, float]] = []
    start = updates[0][0] - gauge_s
    for t_up, p in updates:
        segs.append((start, t_up, p))
        start = t_up
    segs.append((start, max(t1, start), updates[-1][1]))        # hold the last value
    segs = _split_steps(segs)
    total = 0.0
    for lo_s, hi_s, p in segs:
        lo, hi = max(lo_s, t0), min(hi_s, t1)
        if hi > lo:
            total += p * (hi - lo)
    if t0 < segs[0][0]:                 # before the first reading: hold it backwards
        total += segs[0][2] * (min(segs[0][0], t1) - t0)
    return total


def _counter_energy(samples: Sequence[PowerSample], t0: float, t1: float, u: Units,
                    base_w: float | None) -> float | None:
    """The same energy from charge_counter (µAh): its drop between the gauge updates
    around the window, times the mean voltage, minus the baseline outside the window —
    an independent check of the current integral (needs a baseline)."""
    ups = [(t, smp) for t, smp in _updates(samples) if smp.counter is not None]
    first = max((i for i, (t, _s) in enumerate(ups) if t <= t0), default=None)
    if first is None or base_w is None or not ups or ups[-1][0] <= t1:
        return None
    (ta, sa), (tb, sb) = ups[first], ups[-1]
    volts = [smp.voltage * u.voltage_v for t, smp in ups[first:] if smp.voltage]
    if not volts or sa.counter is None or sb.counter is None:
        return None
    span_j = (sa.counter - sb.counter) * 3.6e-3 * statistics.mean(volts)
    return span_j - base_w * ((tb - ta) - (t1 - t0))


def _updates(samples: Sequence[PowerSample]) -> list[tuple[float, PowerSample]]:
    """Gauge update instants (midpoint of the two samples that saw a change) and the
    sample that carries the new values."""
    out: list[tuple[float, PowerSample]] = []
    prev: PowerSample | None = None
    for smp in samples:
        if prev is not None and (smp.current, smp.voltage, smp.counter) != \
                (prev.current, prev.voltage, prev.counter):
            out.append(((prev.t + smp.t) / 2, smp))
        prev = smp
    return out


def _split_steps(segs: list[tuple[float, float, float]]) -> list[tuple[float, float, float]]:
    """A value between its neighbours' (low, mixed, high) is the average over a step: split
    its interval at the instant that keeps that average, old level first. Same integral
    over the interval; a window edge inside it (a job starting) then cuts it right."""
    out: list[tuple[float, float, float]] = []
    for i, (lo, hi, p) in enumerate(segs):
        if 0 < i < len(segs) - 1:
            a, b = segs[i - 1][2], segs[i + 1][2]
            if (a < p < b or a > p > b) and hi > lo:
                f_new = (p - a) / (b - a)               # share of the interval at level b
                cut = hi - f_new * (hi - lo)
                out += [(lo, cut, a), (cut, hi, b)]
                continue
        out.append((lo, hi, p))
    return out


def counter_frozen(samples: Sequence[PowerSample], u: Units) -> bool:
    """charge_counter never moved while current says ≥ 100 µAh went through."""
    qs = [s.counter for s in samples if s.counter is not None]
    if len(qs) < 2 or len(set(qs)) > 1:
        return False
    amp_s = sum(abs(s.current or 0) * u.current_a * (b.t - s.t) for s, b in zip(samples, samples[1:], strict=False))
    return amp_s / 3.6 * 1000 >= 100       # A·s -> µAh


def energy_report(baseline: Sequence[PowerSample], window: Sequence[PowerSample],
                  t0: float, t1: float) -> EnergyReport:
    """The energy of [t0, t1] from samples around it and a baseline just before."""
    allsamples = sorted([*baseline, *window], key=lambda s: s.t)
    u = detect_units(allsamples, baseline)
    flags = list(u.flags)
    period = gauge_period(allsamples)
    lag = period or 0.0
    gaps = [b.t - a.t for a, b in zip(window, window[1:], strict=False)]
    usb = any(s.usb_online for s in allsamples)
    if usb:
        flags.append("USB power: the charger feeds the load; gross energy unknown, "
                     "net above the idle baseline reported")
    if period is None:
        flags.append("current_now never changed: frozen gauge or idle device")
    inside = [s for s in window if t0 <= s.t <= t1 + lag]
    base_w = None
    if len(baseline) >= 2:
        b0, b1 = baseline[0].t, baseline[-1].t
        e = integrate(baseline, b0, b1, u, lag)
        base_w = e / (b1 - b0) if e is not None and b1 > b0 else None
    gross = integrate(allsamples, t0, t1, u, lag)
    secs = t1 - t0
    net = gross - base_w * secs if gross is not None and base_w is not None else None
    frozen = counter_frozen(inside or window, u)
    counter_j = None
    if frozen:
        flags.append("charge_counter frozen (did not move while current flowed): ignored")
    else:
        counter_j = _counter_energy(allsamples, t0, t1, u, base_w)
    return EnergyReport(seconds=secs, gross_j=None if usb else gross, net_j=net,
                        baseline_w=base_w, mean_w=(gross / secs if gross is not None and secs > 0
                                                   and not usb else None),
                        counter_j=None if usb else counter_j, gauge_period_s=period,
                        sample_period_s=_median(gaps), samples=len(allsamples),
                        usb_charging=usb, flags=flags)


def format_energy(energy: Any) -> str:
    """One table cell for `adbflow show`: '12.3 J (+8.1 over idle)', 'net +3.2 J (USB)',
    with '!' when a quirk was flagged. Empty when the attempt was not metered."""
    if not isinstance(energy, dict) or not energy:
        return ""
    if energy.get("error"):
        return "error"
    gross, net = energy.get("gross_j"), energy.get("net_j")
    mark = " !" if energy.get("flags") and not (energy.get("usb_charging")
                                                 and len(energy["flags"]) == 1) else ""
    if isinstance(gross, (int, float)):
        extra = f" (+{net:.1f} over idle)" if isinstance(net, (int, float)) else ""
        return f"{gross:.1f} J{extra}{mark}"
    if isinstance(net, (int, float)):
        return f"net {net:+.1f} J{' (USB)' if energy.get('usb_charging') else ''}{mark}"
    return "?" + mark
