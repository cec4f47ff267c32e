"""`adbflow report`: one self-contained HTML page (no network, no CDN, no script).

Why no script at all: the page shows text from devices (file names, labels, errors);
every such string goes through html.escape, and a Content-Security-Policy that allows no
script and only data: images is defence in depth — a label `<script>` stays text even if
an escape were ever forgotten.
"""
from __future__ import annotations

import html
import time
from collections.abc import Callable
from typing import Any

from adbflow.report import plots
from adbflow.report.data import ReportData

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left;vertical-align:top}th{background:#f3f3f3}td.n{text-align:right;
font-variant-numeric:tabular-nums}img.plot{max-width:100%;display:block;margin:.5em 0 1.5em}
.note{color:#555}.bad{color:#a00}
"""


def esc(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _num(v: Any, fmt: str = "{:.2f}") -> str:
    return esc(fmt.format(v)) if isinstance(v, (int, float)) else "–"


def _when(t: float | None) -> str:
    return "–" if t is None else esc(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)))


def _table(headers: list[str], rows: list[list[str]],
           numeric: frozenset[int] | set[int] = frozenset()) -> str:
    """headers/rows are ALREADY escaped cells."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _plot(fn: Callable[[ReportData], str | None], data: ReportData, alt: str,
          problems: list[str]) -> str:
    if not plots.available():
        return ""
    try:
        uri = fn(data)
    except Exception as exc:  # noqa: BLE001 - a plot must not lose the whole report
        problems.append(f"{alt}: plot failed ({type(exc).__name__}: {exc})")
        return ""
    return f'<img class="plot" alt="{esc(alt)}" src="{uri}">' if uri else ""


def _sweep_plot(sweep: dict[str, Any]) -> Callable[[ReportData], str | None]:
    def draw(_data: ReportData) -> str | None:
        return plots.sweep_tradeoff(sweep)
    return draw


def render(data: ReportData, *, title: str = "adbflow report", source: str = "") -> str:
    problems: list[str] = []
    parts: list[str] = []
    parts.append(f"<h1>{esc(title)}</h1><p class=note>{esc(source)} · generated "
                 f"{_when(time.time())}</p>")
    if not plots.available():
        parts.append("<p class=note>Plots need matplotlib: <code>pip install "
                     "'adbflow[report]'</code>. Tables follow.</p>")
    states = ", ".join(f"{esc(k)}: {v}" for k, v in sorted(data.states.items()))
    parts.append("<h2>Fleet summary</h2>"
                 f"<p>{data.jobs} jobs ({states}) from {_when(data.first)} to {_when(data.last)}; "
                 f"{len(data.devices)} devices did work.</p>")
    stages = sorted({s for d in data.devices.values() for s in d})
    parts.append(_table(["device"] + [esc(s) for s in stages],
                        [[esc(dev)] + [esc(d.get(s, 0)) for s in stages]
                         for dev, d in sorted(data.devices.items())],
                        numeric=set(range(1, len(stages) + 1))))
    parts.append("<h2>Per-stage latency per device</h2>")
    parts.append(_plot(plots.latency_breakdown, data, "latency breakdown per device", problems))
    parts.append(_table(["device", "stage", "attempts", "median s", "p90 s", "max s"],
                        [[esc(r["serial"]), esc(r["stage"]), esc(r["n"]), _num(r["median_s"]),
                          _num(r["p90_s"]), _num(r["max_s"])] for r in data.latency],
                        numeric={2, 3, 4, 5}))
    wait_rows = [[esc(k), _num(v.get("bid_s"), "{:.3f}"), _num(v.get("slot_wait_s"), "{:.3f}")]
                 for k, v in data.parts.items() if "bid_s" in v or "slot_wait_s" in v]
    if wait_rows:
        parts.append("<h3>Queueing: bid rounds and waits for a device slot (median s)</h3>")
        parts.append(_table(["device stage", "bid", "slot wait"], wait_rows, numeric={1, 2}))
    parts.append("<h2>Timeline of the last jobs</h2>")
    parts.append(_plot(plots.timeline, data, "timeline of the last jobs", problems))
    parts.append(_table(["job", "picture", "state", "top label", "stages"],
                        [[esc(r["job"]), esc(r["name"]), esc(r["state"]), esc(r["label"]),
                          esc(", ".join(f"{s['stage']}@{s['serial']} {s['end'] - s['start']:.2f}s"
                                        + ("" if s["state"] == "done" else f" ({s['state']})")
                                        for s in r["segments"]))] for r in data.timeline]))
    parts.append("<h2>Failures</h2>")
    if data.failures:
        parts.append(_table(["when", "job", "stage", "try", "device", "kind", "error"],
                            [[_when(f["at"]), esc(f["job"]), esc(f["stage"]), esc(f["attempt"]),
                              esc(f["serial"]), esc(f["kind"]), esc(f["error"][:500])]
                             for f in data.failures[:200]]))
    else:
        parts.append("<p>No failed attempts.</p>")
    parts.append("<h2>Energy per job</h2>")
    if data.energy:
        parts.append(_plot(plots.energy_per_job, data, "energy per job", problems))
        parts.append(_table(["job", "stage", "device", "battery J", "over idle J", "idle W",
                             "notes"],
                            [[esc(e["job"]), esc(e["stage"]), esc(e["serial"]),
                              _num(e["gross_j"]), _num(e["net_j"]), _num(e["baseline_w"]),
                              esc("; ".join(([e["error"]] if e["error"] else []) + e["flags"]))]
                             for e in data.energy], numeric={3, 4, 5}))
    else:
        parts.append("<p class=note>No metered jobs (run with <code>--energy</code>).</p>")
    for sw in data.sweeps:
        parts.append(f"<h2>Cascade sweep: {esc(sw['name'])}</h2>")
        parts.append(_plot(_sweep_plot(sw), data, f"sweep {sw['name']}", problems))
        parts.append(_table(["tau", "n", "escalated", "accuracy", "CI", "mean s", "p95 s"],
                            [[_num(r["tau"], "{:g}"), _num(r.get("n"), "{:.0f}"),
                              _num(r.get("escalated"), "{:.0%}"), _num(r["accuracy"], "{:.3f}"),
                              esc(f"[{r.get('ci_low', float('nan')):.3f}, "
                                  f"{r.get('ci_high', float('nan')):.3f}]"),
                              _num(r["mean_latency_s"], "{:.3f}"),
                              _num(r.get("p95_latency_s"), "{:.3f}")] for r in sw["rows"]],
                            numeric={0, 1, 2, 3, 5, 6}))
    for n in data.notes + problems:
        parts.append(f"<p class=bad>{esc(n)}</p>")
    body = "\n".join(p for p in parts if p)
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n"
            "</body></html>\n")
