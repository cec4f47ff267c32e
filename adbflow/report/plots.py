"""The report's charts, drawn with matplotlib (optional `report` extra) as SVG.

Why SVG in <img src="data:..."> and glyphs as paths: the page stays one self-contained
file (no CDN, no network), and an SVG shown through <img> can never run script — labels
taken from devices end up as outlines, not as markup. Without matplotlib the report says
so and keeps its tables.
"""
from __future__ import annotations

import base64
import io
from typing import Any

from adbflow.report.data import PARTS, ReportData

STAGE_COLORS = {"pull": "#4e79a7", "ingest": "#4e79a7", "classify": "#f28e2b",
                "generate": "#59a14f", "bid_s": "#bab0ac", "convert_s": "#76b7b2",
                "slot_wait_s": "#e15759", "push_s": "#4e79a7", "run_s": "#f28e2b"}


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "path"     # text as outlines: nothing to inject
    matplotlib.rcParams["svg.hashsalt"] = "adbflow"  # stable ids: same data, same file
    import matplotlib.pyplot as plt
    return plt


def _svg(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    fig.clf()
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _short(text: str, n: int = 28) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def latency_breakdown(data: ReportData) -> str | None:
    """Stacked bars: median seconds per part (bid, convert, wait, push, run) per device+stage."""
    if not data.parts:
        return None
    plt = _plt()
    keys = list(data.parts)
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * len(keys)))
    left = [0.0] * len(keys)
    for part in PARTS:
        vals = [data.parts[k].get(part, 0.0) for k in keys]
        if any(vals):
            ax.barh(range(len(keys)), vals, left=left, color=STAGE_COLORS[part],
                    label=part.removesuffix("_s"))
            left = [a + b for a, b in zip(left, vals, strict=False)]
    ax.set_yticks(range(len(keys)), [_short(k, 40) for k in keys])
    ax.invert_yaxis()
    ax.set_xlabel("median seconds")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Where a stage's time goes, per device")
    return _svg(fig)


def timeline(data: ReportData) -> str | None:
    """One row per job, its stage attempts as bars on the laptop clock (failed: hatched)."""
    rows = [r for r in data.timeline if r["segments"]]
    if not rows:
        return None
    plt = _plt()
    t0 = min(s["start"] for r in rows for s in r["segments"])
    fig, ax = plt.subplots(figsize=(9, 0.6 + 0.35 * len(rows)))
    for i, r in enumerate(rows):
        for s in r["segments"]:
            ax.barh(i, max(0.02, s["end"] - s["start"]), left=s["start"] - t0,
                    color=STAGE_COLORS.get(s["stage"], "#999999"),
                    hatch="//" if s["state"] != "done" else None, edgecolor="black",
                    linewidth=0.3)
    ax.set_yticks(range(len(rows)), [f"job {r['job']}" for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the first shown job started")
    handles = [plt.Rectangle((0, 0), 1, 1, color=STAGE_COLORS[s]) for s in
               ("pull", "classify", "generate")]
    ax.legend(handles, ["pull / ingest", "classify", "generate"], fontsize=8, loc="lower right")
    ax.set_title(f"Last {len(rows)} jobs")
    return _svg(fig)


def energy_per_job(data: ReportData) -> str | None:
    rows = [e for e in data.energy if isinstance(e.get("gross_j") or e.get("net_j"), (int, float))]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3))
    labels = [f"{e['job']} {e['stage']}" for e in rows]
    vals = [e["gross_j"] if isinstance(e["gross_j"], (int, float)) else e["net_j"] for e in rows]
    ax.bar(range(len(rows)), vals, color=[STAGE_COLORS.get(e["stage"], "#999") for e in rows])
    ax.set_xticks(range(len(rows)), labels, rotation=60, fontsize=7, ha="right")
    ax.set_ylabel("joules")
    ax.set_title("Battery energy per job stage (net over idle where on USB power)")
    return _svg(fig)


def sweep_tradeoff(sweep: dict[str, Any]) -> str | None:
    """Accuracy against mean latency, one point per threshold (tau), with its CI."""
    rows = sweep["rows"]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = [r["mean_latency_s"] for r in rows]
    ys = [r["accuracy"] for r in rows]
    lo = [r["accuracy"] - r.get("ci_low", r["accuracy"]) for r in rows]
    hi = [r.get("ci_high", r["accuracy"]) - r["accuracy"] for r in rows]
    ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o-", color="#4e79a7", capsize=3)
    for r, x, y in zip(rows, xs, ys, strict=True):
        t = r["tau"]
        ax.annotate("small" if t == 0 else ("big" if t > 1 else f"{t:g}"), (x, y),
                    textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("mean latency per picture (s)")
    ax.set_ylabel("top-1 accuracy")
    ax.set_title("Cascade threshold: accuracy vs latency")
    return _svg(fig)
