"""`adbflow journal check|recover`: the journal's health, and a way back from damage."""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from adbflow.cli.options import JsonOut
from adbflow.errors import AdbflowError
from adbflow.paths import data_home

journal_app = typer.Typer(help="Check or recover the journal (journal.sqlite in the data "
                               "directory).", no_args_is_help=True)

DataDir = Annotated[Optional[Path], typer.Option(
    "--data-dir", envvar="ADBFLOW_HOME", help="Data directory (journal.sqlite, pictures/, ...).")]


def _path(data_dir: Path | None) -> Path:
    return Path(data_dir or data_home()) / "journal.sqlite"


@journal_app.command("check")
def check_cmd(data_dir: DataDir = None, json_out: JsonOut = False) -> None:
    """SQLite's integrity check of the journal. Exit 0 healthy, 1 damaged."""
    from adbflow.runtime.journal_repair import check
    rep = check(_path(data_dir))
    if json_out:
        typer.echo(json.dumps(rep.to_json()))
    elif rep.ok:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(rep.jobs_by_state.items())) or "no jobs"
        typer.echo(f"{rep.path}: ok ({counts})")
    else:
        typer.echo(f"{rep.path}: DAMAGED")
        for p in rep.problems[:20]:
            typer.echo(f"  {p}")
        typer.echo("run `adbflow journal recover` to keep what can be read (the damaged "
                   "file is kept next to it)")
    raise typer.Exit(0 if rep.ok else 1)


@journal_app.command("recover")
def recover_cmd(data_dir: DataDir = None, json_out: JsonOut = False) -> None:
    """Move the damaged journal aside and rebuild it from every readable row."""
    from adbflow.runtime.journal_repair import recover
    from adbflow.runtime.pipeline import highest_output_id
    path = _path(data_dir)
    lock = path.parent / "watch.lock"
    if lock.exists():       # a running `watch` holds it: do not pull the file from under it
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            raise AdbflowError(f"an `adbflow watch` is running on {path.parent}",
                               hint="stop it first") from None
        finally:
            os.close(fd)
    rep = recover(path, reserve_above=highest_output_id(path.parent))
    if json_out:
        typer.echo(json.dumps(rep.to_json()))
    else:
        kept = ", ".join(f"{n} {t}" for t, n in rep.rows.items())
        typer.echo(f"recovered {path} with {rep.method}: kept {kept}; the damaged file is "
                   f"{rep.damaged_copy}")


def register(app: typer.Typer) -> None:
    app.add_typer(journal_app, name="journal")
