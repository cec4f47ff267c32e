"""/proc/stat cpu lines -> cumulative jiffies, and the load between two samples.

Why deltas: /proc/stat counters are cumulative since boot; the load of "now" is the busy share
of the jiffies that passed between two samples. guest/guest_nice are already inside user/nice,
so only the first 8 columns are summed. Offline CPUs are simply absent (hotplug kernels).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from adbflow.errors import ParseError

_CPU_LINE = re.compile(r"^\s*cpu(\d*)\s+(\d+(?:\s+\d+)*)\s*$")


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative jiffies of one cpu line (missing trailing columns of old kernels = 0)."""
    user: int
    nice: int
    system: int
    idle: int
    iowait: int = 0
    irq: int = 0
    softirq: int = 0
    steal: int = 0

    @property
    def total(self) -> int:
        return (self.user + self.nice + self.system + self.idle + self.iowait + self.irq
                + self.softirq + self.steal)

    @property
    def idle_all(self) -> int:
        return self.idle + self.iowait


@dataclass(frozen=True)
class ProcStat:
    """One /proc/stat sample: the aggregate line and the per-cpu lines present."""
    total: CpuTimes
    per_cpu: dict[int, CpuTimes]


def _times(numbers: str) -> CpuTimes:
    vals = [int(v) for v in numbers.split()][:8]
    vals += [0] * (8 - len(vals))
    return CpuTimes(*vals)


def parse_proc_stat_snapshots(text: str) -> list[ProcStat]:
    """Every sample in the text (a new aggregate `cpu ` line starts a new one)."""
    snaps: list[ProcStat] = []
    total: CpuTimes | None = None
    per: dict[int, CpuTimes] = {}
    for line in text.splitlines():
        m = _CPU_LINE.match(line)
        if not m or len(m[2].split()) < 4:
            continue
        if m[1] == "":
            if total is not None:
                snaps.append(ProcStat(total, per))
            total, per = _times(m[2]), {}
        elif total is not None:
            per[int(m[1])] = _times(m[2])
    if total is not None:
        snaps.append(ProcStat(total, per))
    if not snaps:
        raise ParseError("proc_stat", "no aggregate `cpu` line with at least 4 counters", text)
    return snaps


def parse_proc_stat(text: str) -> ProcStat:
    """The first sample in the text."""
    return parse_proc_stat_snapshots(text)[0]


@dataclass(frozen=True)
class CpuLoad:
    """Busy percent between two samples: whole device and per core (cores in both samples)."""
    cpu_load: float
    per_core: dict[int, float]
    jiffies: int                 # aggregate jiffies elapsed: tiny windows are noisy


def _busy_pct(a: CpuTimes, b: CpuTimes) -> float | None:
    dt = b.total - a.total
    didle = b.idle_all - a.idle_all
    if dt <= 0 or didle < 0 or didle > dt:
        return None              # counter reset (hotplug, reboot) or no time passed
    return 100.0 * (dt - didle) / dt


def cpu_load(prev: ProcStat, cur: ProcStat) -> CpuLoad | None:
    """Load between two samples; None when the aggregate counters did not move forward."""
    whole = _busy_pct(prev.total, cur.total)
    if whole is None:
        return None
    per = {}
    for cpu, t in cur.per_cpu.items():
        if cpu in prev.per_cpu:
            pct = _busy_pct(prev.per_cpu[cpu], t)
            if pct is not None:
                per[cpu] = pct
    return CpuLoad(whole, dict(sorted(per.items())), cur.total.total - prev.total.total)
