"""benchmark_model's `--enable_op_profiling` tables, in TFLite's own layout.

Why: adbflow measures per-op profiles the way it would on a phone (split planning needs
the time of every op prefix), so the stand-in prints what TFLite's ProfileSummarizer /
ProfileSummaryDefaultFormatter print (tensorflow/lite/profiling/profile_summary_formatter.cc
and tensorflow/core/util/stats_calculator.cc; newer layout without the [start] column, as
in captured XNNPACK-era output): a "Run Order" table, "Top by Computation Time" (10 rows),
"Number of nodes executed", "Summary by node type", then the Timings / Memory lines.

The times are SIMULATED: ai-edge-litert's Python interpreter exposes no per-op profiler,
so each run's (padded, simulated) total is shared out over the ops in proportion to an op
cost estimate (adbflow.parsers.tflite_model.op_infos). The caller says so in its INFO line.
"""
from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from adbflow.parsers.tflite_model import OpInfo

RULE = "=============================="
TOP_N = 10


@dataclass(frozen=True)
class OpRow:
    node_type: str
    first_ms: float
    avg_ms: float
    times_called: int
    name: str


def op_rows(ops: Sequence[OpInfo], run_us: Sequence[float]) -> list[OpRow]:
    """Per-op first/avg times: each run's total shared out by op cost."""
    total = sum(o.cost for o in ops) or 1.0
    first = run_us[0] / 1000.0
    avg = statistics.fmean(run_us) / 1000.0
    return [OpRow(o.node_type, first * o.cost / total, avg * o.cost / total, 1, o.profile_name)
            for o in ops]


def _op_header() -> str:
    return (f"{'[node type]':>48}{'[first]':>17}{'[avg ms]':>16}{'[%]':>15}{'[cdf%]':>16}"
            f"{'[mem KB]':>18}{'[times called]':>22}  [Name]")


def _op_lines(rows: Sequence[OpRow], total_ms: float) -> list[str]:
    out, cdf = [], 0.0
    for r in rows:
        pct = 100.0 * r.avg_ms * r.times_called / total_ms if total_ms else 0.0
        cdf += pct
        out.append(f"{r.node_type:>48}{r.first_ms:>17.3f}{r.avg_ms:>16.3f}{pct:>14.3f}%"
                   f"{min(cdf, 100.0):>15.3f}%{0.0:>18.3f}{r.times_called:>17}       {r.name}")
    return out


def _timings(us: Sequence[float]) -> str:
    if len(us) == 1:
        return f"count=1 curr={int(us[0])}"
    return (f"count={len(us)} first={int(us[0])} curr={int(us[-1])} min={int(min(us))} "
            f"max={int(max(us))} avg={statistics.fmean(us):g} std={int(statistics.pstdev(us))}")


def format_profile(header: str, rows: Sequence[OpRow], run_us: Sequence[float]) -> str:
    """One profile block (`header` is e.g. "Operator-wise Profiling Info for Regular
    Benchmark Runs:"), as ProfilingListener::WriteOutput prints it."""
    total_ms = sum(r.avg_ms * r.times_called for r in rows)
    lines = [header, f"{RULE} Run Order {RULE}", _op_header(), *_op_lines(rows, total_ms), ""]
    top = sorted(rows, key=lambda r: -r.avg_ms * r.times_called)[:TOP_N]
    lines += [f"{RULE} Top by Computation Time {RULE}", _op_header(), *_op_lines(top, total_ms), ""]
    lines.append(f"Number of nodes executed: {len(rows)}")
    lines.append(f"{RULE} Summary by node type {RULE}")
    lines.append(f"{'[Node type]':>48}{'[count]':>17}{'[avg ms]':>17}{'[avg %]':>17}"
                 f"{'[cdf %]':>16}{'[mem KB]':>15}{'[times called]':>22}")
    by_type: dict[str, list[OpRow]] = {}
    for r in rows:
        by_type.setdefault(r.node_type, []).append(r)
    cdf = 0.0
    for node_type, rs in sorted(by_type.items(), key=lambda kv: -sum(r.avg_ms for r in kv[1])):
        ms = sum(r.avg_ms * r.times_called for r in rs)
        pct = 100.0 * ms / total_ms if total_ms else 0.0
        cdf += pct
        lines.append(f"{node_type:>48}{len(rs):>17}{ms:>17.3f}{pct:>16.3f}%{min(cdf, 100.0):>15.3f}%"
                     f"{0.0:>15.3f}{sum(r.times_called for r in rs):>17}")
    lines += ["", f"Timings (microseconds): {_timings(run_us)}", "Memory (bytes): count=0",
              f"{len(rows)} nodes observed", "", ""]
    return "\n".join(lines)
