"""`dumpsys cpuinfo` (ProcessCpuTracker) -> load averages, per-process rows, TOTAL.

Why tolerant: the same block appears raw, inside bugreports, inside ANR logcat (extra indent,
logcat prefixes on some lines, thread sub-rows, several windows), and in the Android 2.x
`name: X% = Y% user + Z% kernel` form. Rows are matched anywhere in a line; lines we do not
understand (elisions, headers) are skipped. Rules: see the FORMAT_NOTES fixture.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from adbflow.errors import ParseError
from adbflow.parsers.numbers import finite_float

_NUM = r"[\d.]+"
_LOAD = re.compile(r"Load:\s*(" + _NUM + r")\s*/\s*(" + _NUM + r")\s*/\s*(" + _NUM + r")")
_WINDOW = re.compile(r"CPU usage from (-?\d+)ms to (-?\d+)ms (ago|later)")
_ROW = re.compile(r"(?P<sign>[+-]?)(?P<pct>" + _NUM + r")% (?:(?P<pid>\d+)/)?(?P<name>.+?): "
                  r"(?P<user>" + _NUM + r")% user \+ (?P<kernel>" + _NUM + r")% kernel(?P<rest>.*)$")
_OLD_ROW = re.compile(r"^\s*(?P<name>\S.*?): (?P<pct>" + _NUM + r")% = (?P<user>" + _NUM
                      + r")% user \+ (?P<kernel>" + _NUM + r")% kernel(?P<rest>.*)$")
_EXTRA = re.compile(r"\+ (" + _NUM + r")% (iowait|irq|softirq)")
_LOGCAT = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ +\S+ [VDIWEF]/[^:]*:")


@dataclass(frozen=True)
class CpuRow:
    name: str
    pid: int | None
    pct: float
    user_pct: float
    kernel_pct: float
    thread: bool = False            # a thread sub-row of the process above (ANR dumps)


@dataclass(frozen=True)
class CpuTotal:
    pct: float
    user_pct: float
    kernel_pct: float
    iowait_pct: float = 0.0
    irq_pct: float = 0.0
    softirq_pct: float = 0.0


@dataclass
class CpuWindow:
    span_ms: int | None             # length of the sampling window
    rows: list[CpuRow] = field(default_factory=list)
    total: CpuTotal | None = None


@dataclass(frozen=True)
class CpuinfoDump:
    load_avg: tuple[float, float, float] | None
    windows: list[CpuWindow]

    @property
    def total_pct(self) -> float | None:
        """TOTAL of the first window that has one.

        Note: Android normalises TOTAL by all cores' time, so 100% = every core busy."""
        for w in self.windows:
            if w.total is not None:
                return w.total.pct
        return None


def _f(v: str) -> float:
    value = finite_float(v)   # "1.2.3" or a 400-digit run: unreadable, counted as 0 %
    return 0.0 if value is None else value


def parse_dumpsys_cpuinfo(text: str) -> CpuinfoDump:
    load = None
    windows: list[CpuWindow] = []
    raw_rows: list[tuple[CpuWindow, int, CpuRow]] = []
    for raw in text.splitlines():
        line = _LOGCAT.sub("", raw)
        if load is None:
            m = _LOAD.search(line)
            if m:
                load = (_f(m[1]), _f(m[2]), _f(m[3]))
                continue
        m = _WINDOW.search(line)
        if m:
            windows.append(CpuWindow(span_ms=abs(int(m[1]) - int(m[2]))))
            continue
        m = _ROW.search(line) or _OLD_ROW.match(line)
        if not m:
            continue
        if not windows:
            windows.append(CpuWindow(span_ms=None))
        w = windows[-1]
        name = m["name"].strip()
        extras = {k: _f(v) for v, k in _EXTRA.findall(m["rest"])}
        if name.endswith("TOTAL") and m.groupdict().get("pid") is None:
            w.total = CpuTotal(_f(m["pct"]), _f(m["user"]), _f(m["kernel"]), extras.get("iowait", 0.0),
                               extras.get("irq", 0.0), extras.get("softirq", 0.0))
            continue
        if name == "TOTAL":
            continue
        pid = m.groupdict().get("pid")
        row = CpuRow(name, int(pid) if pid else None, _f(m["pct"]), _f(m["user"]), _f(m["kernel"]))
        # column where the percentage digits start: process rows share one, threads are deeper
        raw_rows.append((w, m.start("pct"), row))
    if not windows or (not raw_rows and all(w.total is None for w in windows)):
        raise ParseError("cpuinfo", "no `CPU usage from` window nor process/TOTAL rows", text)
    by_window: dict[int, list[tuple[int, CpuRow]]] = {}
    for w, col, row in raw_rows:
        by_window.setdefault(id(w), []).append((col, row))
    for w in windows:
        entries = by_window.get(id(w), [])
        if not entries:
            continue
        proc_col = Counter(c for c, _ in entries).most_common(1)[0][0]
        w.rows = [CpuRow(r.name, r.pid, r.pct, r.user_pct, r.kernel_pct, thread=c > proc_col)
                  for c, r in entries]
    return CpuinfoDump(load, windows)
