"""`adbflow trace [JOB] [--since T] --format chrome|jsonl|csv`: where a job's time went.

Spans come from DATA/traces/*.jsonl (written as jobs finish, with the devices' clocks
synced); jobs the files miss (a crash before the write, a journal from an older adbflow)
are rebuilt from the journal with the clock syncs kept in DATA/clock.jsonl.
"""
from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer

from adbflow.errors import AdbflowError
from adbflow.paths import data_home

DataDir = Annotated[Optional[Path], typer.Option(
    "--data-dir", help="Journal and traces live here. Default: $ADBFLOW_HOME, else "
                       "$XDG_DATA_HOME/adbflow, else ~/.local/share/adbflow.")]
Since = Annotated[Optional[str], typer.Option(
    "--since", help="Only jobs since T: epoch seconds, an ISO date/time (UTC unless it "
                    "says), or an age like 30m, 2h, 1d.")]

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")


def parse_since(text: str | None, now: float | None = None) -> float | None:
    """`--since` as epoch seconds (pure). Raises AdbflowError on anything else."""
    if text is None:
        return None
    now = time.time() if now is None else now
    m = _AGE.match(text)
    if m:
        return now - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise AdbflowError(f"--since {text!r}: not a time",
                           hint="use epoch seconds, 2026-12-01T09:00 or an age like 2h") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def collect_spans(data_dir: Path, *, job: int | None = None, since: float | None = None):
    """Spans from the trace files, completed from the journal for jobs they miss."""
    from adbflow.runtime.journal import Journal
    from adbflow.runtime.tracestore import JobTracer, TraceStore

    spans = TraceStore(data_dir).read(since=since, job=job)
    have = {sp.job for sp in spans}
    path = data_dir / "journal.sqlite"
    if not path.exists():
        return spans
    tracer = JobTracer(data_dir)
    with Journal(path) as journal:
        if job is not None:
            wanted = [] if job in have else [job]
        else:
            wanted = [j.id for j in journal.jobs(limit=100000)
                      if j.id not in have and (since is None or j.updated >= since)]
        for jid in wanted:
            try:
                spans += tracer.spans_for(journal, jid, sync=False)
            except (KeyError, LookupError, AdbflowError):
                if job is not None:
                    raise AdbflowError(f"no job {job} in {path}",
                                       hint="see `adbflow jobs`") from None
    return sorted(spans, key=lambda sp: (sp.start, -sp.end))


def trace_cmd(
    job: Annotated[Optional[int], typer.Argument(help="Job id (default: every job).")] = None,
    since: Since = None,
    fmt: Annotated[str, typer.Option("--format", "-f",
                                     help="chrome (Perfetto / chrome://tracing), jsonl or csv.")
                   ] = "chrome",
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Write here "
                                                   "instead of stdout.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Export job traces: spans per device and stage on the laptop's clock (device times
    corrected by measured clock offsets, each with its error bound)."""
    from adbflow.report.trace_export import export

    if fmt not in ("chrome", "jsonl", "csv"):
        raise AdbflowError(f"--format {fmt!r}: use chrome, jsonl or csv")
    base = Path(data_dir or data_home())
    spans = collect_spans(base, job=job, since=parse_since(since))
    if not spans:
        raise AdbflowError(f"no traced jobs in {base}" + (f" for job {job}" if job else ""),
                           hint="run some jobs first (`adbflow watch`, `adbflow run IMAGE`)")
    text = export(spans, fmt)
    if output:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"{len(spans)} spans of {len({s.job for s in spans})} job(s) -> {output}",
                   err=True)
    else:
        typer.echo(text, nl=False)


def register(app: typer.Typer) -> None:
    app.command("trace")(trace_cmd)
