"""/proc/meminfo -> kB fields, with MemAvailable estimated on kernels older than 3.14."""
from __future__ import annotations

import re
from dataclasses import dataclass

from adbflow.errors import ParseError

_LINE = re.compile(r"^\s*([A-Za-z0-9_()]+):\s+(\d+)(?:\s*kB)?\s*$")


@dataclass(frozen=True)
class MemInfo:
    total_kb: int
    available_kb: int
    available_estimated: bool        # True: no MemAvailable line (old kernel), Free+Buffers+Cached
    fields: dict[str, int]


def parse_meminfo(text: str) -> MemInfo:
    fields: dict[str, int] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m and m[1] not in fields:
            fields[m[1]] = int(m[2])
    if "MemTotal" not in fields:
        raise ParseError("meminfo", "no MemTotal line", text)
    if "MemAvailable" in fields:
        return MemInfo(fields["MemTotal"], fields["MemAvailable"], False, fields)
    est = fields.get("MemFree", 0) + fields.get("Buffers", 0) + fields.get("Cached", 0)
    return MemInfo(fields["MemTotal"], min(est, fields["MemTotal"]), True, fields)
