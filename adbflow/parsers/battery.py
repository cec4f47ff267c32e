"""`dumpsys battery` -> level, charging, temperature.

Why first-occurrence-wins and indentation tolerance: Samsung adds unindented vendor keys,
an empty-valued `LLB MAN:`, a `BatteryInfoBackUp` sub-section and a second lower-case
`charge counter`; only the standard fields of the first block matter for a bid.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from adbflow.errors import ParseError

_KV = re.compile(r"^\s*([A-Za-z][A-Za-z0-9 _]*?):\s*(.*?)\s*$")

# BatteryManager.BATTERY_STATUS_*
STATUS_NAMES = {1: "unknown", 2: "charging", 3: "discharging", 4: "not-charging", 5: "full"}


@dataclass(frozen=True)
class BatteryInfo:
    level: int | None              # percent (level * 100 / scale)
    status: int | None
    powered: bool | None           # any of AC/USB/Wireless/Dock powered
    charging: bool | None          # status charging, or full while plugged in
    temperature_c: float | None    # None when the device reports 0 (emulators, no sensor)
    voltage_mv: int | None
    fields: dict[str, str]


def _int(v: str | None) -> int | None:
    if v is None:
        return None
    v = v.strip()
    return int(v) if re.fullmatch(r"-?\d+", v) else None


def parse_dumpsys_battery(text: str) -> BatteryInfo:
    fields: dict[str, str] = {}
    seen_header = False
    for line in text.splitlines():
        if "Battery Service state" in line:
            seen_header = True
            continue
        m = _KV.match(line)
        if m and m[1] not in fields:
            fields[m[1]] = m[2]
    if "level" not in fields or _int(fields["level"]) is None:
        raise ParseError("battery", "no numeric `level:` field"
                         + ("" if seen_header else " and no `Current Battery Service state:` header"), text)
    level = _int(fields["level"])
    assert level is not None  # checked above
    scale = _int(fields.get("scale")) or 100
    pct = round(level * 100 / scale) if scale > 0 else level
    status = _int(fields.get("status"))
    power_keys = [k for k in ("AC powered", "USB powered", "Wireless powered", "Dock powered") if k in fields]
    powered = any(fields[k] == "true" for k in power_keys) if power_keys else None
    if status == 2:
        charging: bool | None = True
    elif status in (3, 4):
        charging = False
    elif status == 5:
        charging = powered
    else:
        charging = powered
    temp = _int(fields.get("temperature"))
    return BatteryInfo(level=max(0, min(100, pct)), status=status, powered=powered, charging=charging,
                       temperature_c=temp / 10.0 if temp else None,
                       voltage_mv=_int(fields.get("voltage")) or None, fields=fields)
