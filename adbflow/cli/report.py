"""`adbflow report [--since T] [-o report.html]`: the journal as one HTML page to look at."""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Annotated, Optional

import typer

from adbflow.cli.trace import DataDir, Since, parse_since
from adbflow.errors import AdbflowError
from adbflow.paths import data_home


def load_report_data(data_dir: Path, *, since: float | None = None, last_n: int = 20):
    """ReportData from the journal; AdbflowError when it is missing, corrupt or empty."""
    from adbflow.report.data import build
    from adbflow.runtime.journal import Journal

    path = Path(data_dir) / "journal.sqlite"
    if not path.is_file():
        raise AdbflowError(f"no journal at {path}", hint="pass the --data-dir used by watch/run")
    try:
        with Journal(path) as journal:
            jobs = journal.jobs(limit=None)
            attempts = {j.id: journal.attempts(j.id) for j in jobs}
    except (sqlite3.DatabaseError, ValueError) as exc:
        raise AdbflowError(f"the journal {path} is corrupt ({exc})",
                           hint="restore it from a backup or move it away to start afresh"
                           ) from None
    data = build(jobs, attempts, since=since, last_n=last_n)
    if data.jobs == 0:
        raise AdbflowError(f"the journal {path} has no jobs" + (" in that period" if since else ""),
                           hint="run some jobs first (`adbflow watch`, `adbflow run IMAGE`)")
    return data


def report_cmd(
    since: Since = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="HTML file to write.")
                      ] = Path("report.html"),
    last: Annotated[int, typer.Option("--last", min=1, help="Jobs on the timeline.")] = 20,
    sweeps: Annotated[Optional[list[Path]], typer.Option(
        "--sweep", help="An `adbflow sweep` CSV to include (repeatable; default: "
                        "DATA/sweeps/*.csv when present).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Write a self-contained HTML report: fleet summary, per-stage latency per device, a
    timeline of the last jobs, queueing and failures, energy per job (plots need the
    `report` extra: matplotlib)."""
    from adbflow.report.html import render

    base = Path(data_dir or data_home())
    data = load_report_data(base, since=parse_since(since), last_n=last)
    from adbflow.report.data import read_sweep
    for path in sweeps or sorted((base / "sweeps").glob("*.csv")):
        try:
            data.sweeps.append({"name": path.name, "rows": read_sweep(path)})
        except (OSError, ValueError) as exc:
            data.notes.append(f"sweep {path.name} left out: {exc}")
    output.write_text(render(data, source=str(base / "journal.sqlite")), encoding="utf-8")
    typer.echo(f"{data.jobs} jobs -> {output}", err=True)


def register(app: typer.Typer) -> None:
    app.command("report")(report_cmd)
