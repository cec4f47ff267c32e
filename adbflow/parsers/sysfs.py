"""Small sysfs formats: cpu lists (`0-2,4-7`), probe.sh's cpufreq and power_supply lines."""
from __future__ import annotations

import re
from dataclasses import dataclass

from adbflow.errors import ParseError

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")
MAX_CPUS = 4096


def parse_cpu_list(text: str) -> list[int]:
    """Kernel cpulist format -> sorted cpu ids. An empty file (no cpu offline) -> []."""
    s = text.strip()
    if not s:
        return []
    cpus: set[int] = set()
    for part in s.split(","):
        m = _RANGE.match(part.strip())
        if not m:
            raise ParseError("cpu_list", f"bad range {part!r}", text)
        lo, hi = int(m[1]), int(m[2] or m[1])
        if hi < lo or hi >= MAX_CPUS:
            raise ParseError("cpu_list", f"bad range {part!r}", text)
        cpus.update(range(lo, hi + 1))
    return sorted(cpus)


@dataclass(frozen=True)
class CpuFreq:
    cur_khz: int | None
    max_khz: int | None


_FREQ = re.compile(r"^cpu(\d+)(?:\s+(\d+))?(?:\s+(\d+))?\s*$")


def parse_cpufreq(text: str) -> dict[int, CpuFreq]:
    """probe.sh lines `cpuN CUR MAX` (either may be missing when the file is unreadable)."""
    out: dict[int, CpuFreq] = {}
    for line in text.splitlines():
        m = _FREQ.match(line.strip())
        if m:
            out[int(m[1])] = CpuFreq(int(m[2]) if m[2] else None, int(m[3]) if m[3] else None)
    return out


def freq_ratio(freqs: dict[int, CpuFreq], online: list[int] | None = None) -> float | None:
    """Mean cur/max over (online) cpus with both values: 1.0 = running flat out or boosted."""
    ratios = [min(1.0, f.cur_khz / f.max_khz) for c, f in freqs.items()
              if f.cur_khz is not None and f.max_khz and (online is None or c in online)]
    return sum(ratios) / len(ratios) if ratios else None


def parse_key_values(text: str) -> dict[str, str]:
    """`key=value` lines (probe.sh cpu lists, power_supply files)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep and re.fullmatch(r"[A-Za-z0-9_.]+", k.strip()):
            out[k.strip()] = v.strip()
    return out


@dataclass(frozen=True)
class PowerSupply:
    level: int | None
    charging: bool | None
    temperature_c: float | None
    #: |current_now| x voltage_now in W while discharging (None: unread, charging, absurd)
    power_w: float | None = None


def power_from_sysfs(current: str, voltage: str) -> float | None:
    """Watts from one current_now / voltage_now reading. The same unit guesses as the
    energy meter (runtime/energy.py detect_units): current µA unless |value| < 10000 (mA
    drivers), voltage µV unless 1000-6000 (mV); the sign differs between drivers, so the
    magnitude is used (the caller only asks while discharging). Outside 0.01-30 W: None."""
    if not (re.fullmatch(r"-?\d{1,12}", current) and re.fullmatch(r"\d{1,12}", voltage)):
        return None
    amps = abs(int(current)) * (1e-6 if abs(int(current)) >= 10_000 else 1e-3)
    mv = int(voltage)
    volts = mv * 1e-3 if 1_000 <= mv <= 6_000 else mv * 1e-6
    watts = amps * volts
    return round(watts, 4) if 0.01 <= watts <= 30.0 else None


def parse_power_supply(text: str) -> PowerSupply:
    """/sys/class/power_supply/battery capacity/status/temp (temp in tenths of a degree),
    current_now/voltage_now when present (power estimate for the energy prior)."""
    kv = parse_key_values(text)
    cap = kv.get("capacity", "")
    if not re.fullmatch(r"\d+", cap):
        raise ParseError("power_supply", "no numeric capacity", text)
    status = kv.get("status", "").lower()
    charging = {"charging": True, "full": True, "discharging": False,
                "not charging": False}.get(status)
    temp = kv.get("temp", "")
    # on USB the charger feeds the load: current_now then says nothing about the work
    power = power_from_sysfs(kv.get("current_now", ""), kv.get("voltage_now", "")) \
        if charging is False else None
    return PowerSupply(min(100, int(cap)), charging,
                       int(temp) / 10.0 if re.fullmatch(r"-?\d+", temp) and int(temp) != 0 else None,
                       power)
