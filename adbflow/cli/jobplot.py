"""`adbflow jobs --plot`: a terminal chart of the last jobs, for people on SSH.

Why plotext (optional extra `term`): it draws with Unicode characters in the terminal, needs
no display and no other dependency; the HTML report (`adbflow report`) is the full view.
Two panels, oldest job left: end-to-end latency per job (the user's wait, from the first
stage start to the last stage end), and the time of each stage (pull or ingest, classify,
generate) stacked per job, so a slow job shows which stage made it slow.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from adbflow.errors import AdbflowError

#: stages in drawing order; "pull" and "ingest" (laptop pictures) share the first slot
STAGE_ROWS = (("pull", ("pull", "ingest")), ("classify", ("classify",)),
              ("generate", ("generate",)))


def _plotext() -> Any:
    try:
        import plotext  # noqa: PLC0415 - optional extra
    except ImportError:
        raise AdbflowError("`adbflow jobs --plot` needs plotext",
                           hint="pip install 'adbflow[term]'; `adbflow report` draws "
                                "the same in HTML") from None
    return plotext


def plot_rows(jobs: Sequence[Any]) -> list[dict[str, Any]]:
    """Per finished job (oldest first): id, end-to-end seconds and seconds per stage row.
    Jobs without timings (pending, failed before a stage ended) are left out (pure)."""
    rows = []
    for job in sorted(jobs, key=lambda j: j.id):
        result = job.result or {}
        total = (result.get("timings") or {}).get("total_s")
        if not isinstance(total, (int, float)):
            continue
        stage_s = result.get("stage_seconds") or {}
        per = {}
        for row, names in STAGE_ROWS:
            vals = [stage_s.get(n) for n in names]
            per[row] = float(sum(v for v in vals if isinstance(v, (int, float))))
        rows.append({"job": job.id, "total_s": float(total), "stages": per})
    return rows


def jobs_chart(jobs: Sequence[Any], *, width: int | None = None,
               height: int | None = None, color: bool = True) -> str:
    """The chart as text (plotext's build(); terminal size unless width and height are
    given; no escape codes with color=False, for pipes and logs). Raises AdbflowError
    without plotext and when no job has finished stages to draw."""
    plt = _plotext()
    rows = plot_rows(jobs)
    if not rows:
        raise AdbflowError("no finished jobs with timings to plot",
                           hint="run `adbflow watch` first, or widen --limit / drop --state")
    labels = [str(r["job"]) for r in rows]
    # plotext keeps one global figure and the last active subplot: back to the master
    # before clearing, or a second chart nests inside the previous one's subplot
    plt.main()
    plt.clear_figure()
    plt.subplots(2, 1)
    if width and height:
        plt.plotsize(width, height)
    xs = list(range(1, len(rows) + 1))
    plt.subplot(1, 1)
    plt.title("end-to-end latency per job (s)")
    plt.plot(xs, [r["total_s"] for r in rows], marker="braille")
    plt.xticks(xs, labels)
    plt.xlabel("job")
    plt.subplot(2, 1)
    plt.title("time per stage (s)")
    plt.stacked_bar(labels, [[r["stages"][name] for r in rows] for name, _ in STAGE_ROWS],
                    labels=[name for name, _ in STAGE_ROWS])
    plt.xlabel("job")
    text = str(plt.build())
    return text if color else str(plt.uncolorize(text))
