"""Temperatures: `dumpsys thermalservice`, and thermal zone listings (sysfs type/temp).

Why a unit normaliser: thermal_zone*/temp is millidegrees on most kernels but plain degrees
or tenths on some (see SOURCES.md gap note); a bid needs degrees C.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from adbflow.errors import ParseError
from adbflow.parsers.numbers import finite_float


@dataclass(frozen=True)
class ThermalReading:
    name: str
    temp_c: float | None            # None: type known, temperature not read/unknown
    type_code: int | None = None    # android.os.Temperature TYPE_* (0 CPU, 1 GPU, 2 BATTERY, 3 SKIN ...)
    status: int | None = None


@dataclass(frozen=True)
class ThermalInfo:
    status: int | None              # PowerManager THERMAL_STATUS_* (0 none .. 6 shutdown)
    readings: list[ThermalReading]

    def hottest_c(self) -> float | None:
        temps = [r.temp_c for r in self.readings if r.temp_c is not None and 0.0 < r.temp_c < 150.0]
        return max(temps) if temps else None


def normalize_temp(raw: int) -> float | None:
    """Millidegrees, tenths or degrees -> degrees C; None when implausible."""
    a = abs(raw)
    if a >= 1000:
        v = raw / 1000.0
    elif a >= 200:
        v = raw / 10.0
    else:
        v = float(raw)
    return v if -40.0 <= v <= 200.0 else None


_TEMP_OBJ = re.compile(r"Temperature\{mValue=(-?[\d.]+(?:[eE][-+]?\d+)?), mType=(-?\d+), "
                       r"mName=([^,}]*), mStatus=(-?\d+)\}")
_STATUS = re.compile(r"^\s*Thermal Status:\s*(\d+)")
_ZONE_TSV = re.compile(r"^thermal_zone(\d+)\t([^\t]*)\t(-?\d*)\s*$")
_ZONE_CAT = re.compile(r"thermal_zone(\d+)/(type|temp)\s*$")


def parse_thermalservice(text: str) -> ThermalInfo:
    """Prefer `Current temperatures from HAL:`; fall back to `Cached temperatures:`."""
    status = None
    cached: dict[str, ThermalReading] = {}
    current: dict[str, ThermalReading] = {}
    section = None
    for line in text.splitlines():
        m = _STATUS.match(line)
        if m:
            status = int(m[1])
            continue
        s = line.strip()
        if s.startswith("Cached temperatures"):
            section = cached
        elif s.startswith("Current temperatures"):
            section = current
        elif s.endswith(":") and not s.startswith("Temperature{"):
            section = None
        for t in _TEMP_OBJ.finditer(line):
            if section is None:
                continue
            section.setdefault(t[3], ThermalReading(t[3], finite_float(t[1]), int(t[2]), int(t[4])))
    chosen = current or cached
    if status is None and not chosen:
        raise ParseError("thermal", "no `Thermal Status:` nor Temperature{...} entries", text)
    return ThermalInfo(status, list(chosen.values()))


def parse_thermal_zones(text: str) -> ThermalInfo:
    """Zone lines `thermal_zoneN<TAB>type<TAB>rawtemp` (probe.sh) or a transcript of
    `cat .../thermal_zoneN/type` commands each followed by the value line."""
    zones: dict[int, dict[str, str]] = {}
    pending: tuple[int, str] | None = None
    for line in text.splitlines():
        m = _ZONE_TSV.match(line)
        if m:
            zones[int(m[1])] = {"type": m[2].strip(), "temp": m[3]}
            pending = None
            continue
        m = _ZONE_CAT.search(line)
        if m:
            pending = (int(m[1]), m[2])
            continue
        if pending is not None:
            zones.setdefault(pending[0], {})[pending[1]] = line.strip()
            pending = None
    if not zones:
        raise ParseError("thermal", "no thermal_zoneN entries", text)
    readings = []
    for idx in sorted(zones):
        z = zones[idx]
        raw = z.get("temp", "")
        temp = normalize_temp(int(raw)) if re.fullmatch(r"-?\d+", raw) else None
        readings.append(ThermalReading(z.get("type") or f"thermal_zone{idx}", temp))
    return ThermalInfo(None, readings)


def parse_thermal(text: str) -> ThermalInfo:
    """Either format, detected from the text."""
    if "Temperature{" in text or "Thermal Status:" in text:
        return parse_thermalservice(text)
    return parse_thermal_zones(text)
