"""Temperatures: `dumpsys thermalservice`, and thermal zone listings (sysfs type/temp).

Why a unit normaliser: thermal_zone*/temp is millidegrees on most kernels but plain degrees
or tenths on some (see SOURCES.md gap note); a bid needs degrees C.

Why zones are chosen by *type*: a bid wants the CPU/SoC temperature, and the hottest zone
is often not one. Qualcomm BCL zones (`bcl*`, `*-lvl*`, `vbat*`, `ibat*`, `soc` as state of
charge) report battery levels, currents or a percentage as their "temp": a charged phone's
`soc` reads 85, which looks like 85 degrees. Battery, charger, skin, PMIC and RF-board
zones are real temperatures but not the CPU's. So: CPU zones (`cpu*`, `cpuss*`, `apc*`,
`kryo*`, `mtktscpu`, Exynos/Tensor `BIG`/`MID`/`LITTLE`, `x86_pkg_temp` ...) first, else
SoC zones (`tsens_tz_sensor*`, `soc_thermal`, `*-usr`, `gpu*`, Samsung `ap` ...), else none
(the caller then uses thermalservice's CPU temperatures or the battery's).
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
    kind: str | None = None         # thermal zones: ZoneKind by type (None: from thermalservice)


class ZoneKind:
    CPU = "cpu"
    SOC = "soc"
    OTHER = "other"           # a real temperature, not the CPU's (skin, board, PMIC, battery)
    NOT_TEMP = "not-temp"     # BCL/level zones: battery %, voltage, current


_NOT_TEMP = re.compile(r"^(?:bcl.*|.*-lvl.*|.*lvl\d*|vbat.*|ibat.*|vph.*|.*_ocv|.*-ocv|"
                       r"pmic-bcl.*|socd|soc-lvl.*|batt_current.*|.*ibat.*|.*vbat.*)$")
_OTHER = re.compile(r"^(?:battery.*|bms.*|batt.*|bat|subbat.*|charger.*|chg.*|usb.*|skin.*|"
                    r".*xo[_-]therm.*|pa[_-]?therm.*|.*pa\d*[_-]therm.*|quiet[_-]therm.*|"
                    r"ufs[_-]therm.*|flash[_-]therm.*|case[_-]therm.*|msm[_-]therm.*|"
                    r"pm\d+.*|pmi\d+.*|pmic.*|.*_tz|.*-tz|sdm-therm.*|conn[_-]therm.*|"
                    r"wifi.*|wlan.*|modem.*|mmw.*|rf.*|lcd.*|disp.*|camera.*|cam[_-].*|"
                    r"nfc.*|wpc.*|wireless.*|backlight.*|emmc.*|ntc.*)$")
_CPU = re.compile(r"^(?:.*cpu.*|kryo.*|apc\d*.*|big.*|mid.*|little.*|cluster\d*.*|"
                  r"x86_pkg_temp|core\d*.*|prime.*|gold.*|silver.*|titanium.*)$")
_SOC = re.compile(r"^(?:tsens.*|soc_thermal|soc|ap|aps|.*-usr|gpu.*|g3d.*|ddr.*|"
                  r"mtkts(?:ap|soc).*|.*soc.*|tpu.*|npu.*|isp.*|aoss.*|mdm.*core.*)$")


def zone_kind(zone_type: str, raw: int | None = None) -> str:
    """What a thermal zone of this type measures (by its type; `raw` decides only `soc`,
    which is a SoC sensor in millidegrees on some kernels and the battery's state of
    charge in percent on Qualcomm BCL)."""
    t = zone_type.strip().lower()
    if t == "soc" and (raw is None or abs(raw) < 1000):
        return ZoneKind.NOT_TEMP
    if _NOT_TEMP.match(t):
        return ZoneKind.NOT_TEMP
    if _OTHER.match(t):
        return ZoneKind.OTHER
    if _CPU.match(t):
        return ZoneKind.CPU
    if _SOC.match(t):
        return ZoneKind.SOC
    return ZoneKind.OTHER


def _plausible(v: float | None) -> bool:
    return v is not None and 0.0 < v < 150.0


@dataclass(frozen=True)
class ThermalInfo:
    status: int | None              # PowerManager THERMAL_STATUS_* (0 none .. 6 shutdown)
    readings: list[ThermalReading]

    def hottest_c(self) -> float | None:
        temps = [r.temp_c for r in self.readings if r.temp_c is not None and _plausible(r.temp_c)]
        return max(temps) if temps else None

    def cpu_c(self) -> float | None:
        """The CPU/SoC temperature for a bid: thermalservice's CPU entries (TYPE_CPU = 0),
        else zones by type (CPU zones, else SoC zones); never battery/BCL/skin zones.
        None when the device shows none (the caller decides the fallback)."""
        hal = [r.temp_c for r in self.readings
               if r.type_code == 0 and r.temp_c is not None and _plausible(r.temp_c)]
        if hal:
            return max(hal)
        kinds: dict[str, list[float]] = {ZoneKind.CPU: [], ZoneKind.SOC: []}
        for r in self.readings:
            if r.type_code is None and r.temp_c is not None and _plausible(r.temp_c) \
                    and r.kind in kinds:
                kinds[r.kind].append(r.temp_c)
        for k in (ZoneKind.CPU, ZoneKind.SOC):
            if kinds[k]:
                return max(kinds[k])
        return None


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
        raw_s = z.get("temp", "")
        raw = int(raw_s) if re.fullmatch(r"-?\d{1,12}", raw_s) else None
        name = z.get("type") or f"thermal_zone{idx}"
        kind = zone_kind(name, raw)
        temp = normalize_temp(raw) if raw is not None and kind != ZoneKind.NOT_TEMP else None
        readings.append(ThermalReading(name, temp, kind=kind))
    return ThermalInfo(None, readings)


def parse_thermal(text: str) -> ThermalInfo:
    """Either format, detected from the text."""
    if "Temperature{" in text or "Thermal Status:" in text:
        return parse_thermalservice(text)
    return parse_thermal_zones(text)
