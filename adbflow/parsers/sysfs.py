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
    #: /sys/devices/system/cpu/cpuN/cpu_capacity: the kernel's relative performance of the
    #: core (1024 = the fastest; micro-architecture x max frequency), None where unreadable
    capacity: int | None = None


def _field(tok: str | None) -> int | None:
    return int(tok) if tok is not None and tok.isdigit() and len(tok) <= 12 else None


def parse_cpufreq(text: str) -> dict[int, CpuFreq]:
    """probe.sh lines `cpuN CUR MAX CAPACITY`, `-` for a file it could not read (older
    probes: `cpuN CUR MAX`, a missing value left empty). A line with any other token is
    not a cpufreq line and is skipped (device text)."""
    out: dict[int, CpuFreq] = {}
    for line in text.splitlines():
        toks = line.split()
        if not toks or len(toks) > 4 or not toks[0].startswith("cpu"):
            continue
        num = toks[0][3:]
        vals: list[str | None] = [*toks[1:], *[None] * (4 - len(toks))]
        if not (num.isdigit() and len(num) <= 4) or any(
                v is not None and v != "-" and not v.isdigit() for v in vals):
            continue
        out[int(num)] = CpuFreq(_field(vals[0]), _field(vals[1]), _field(vals[2]))
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
