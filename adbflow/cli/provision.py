"""`adbflow provision FILE=REMOTE ...`: the same files on every phone, in parallel.

Why a thin view: the work (skip by digest, temp name, verify, rename, one thread per phone)
is adbflow.runtime.provision; this file turns its progress callbacks into one rich bar per
phone (stderr, so `--json` on stdout stays clean) and its outcomes into a table or JSON.
Exit codes: 0 every phone has every file, 1 some phone failed (the reason is printed),
2 usage / adbflow error.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from tabulate import tabulate

from adbflow.cli.options import AdbServers, JsonOut, Serials
from adbflow.errors import AdbflowError
from adbflow.paths import data_home
from adbflow.runtime import provision as prov

Items = Annotated[list[str], typer.Argument(
    metavar="FILE=REMOTE...",
    help="Local file (or http/https URL) = absolute device path, e.g. "
         "models/m.gguf=/data/local/tmp/m.gguf. Repeatable.")]
NoProgress = Annotated[bool, typer.Option("--no-progress", help="No progress bars.")]


class Bars:
    """One bar per phone over the bytes of all its files; thread-safe."""

    def __init__(self, progress: Progress, serials: list[str], files: list[prov.LocalFile]):
        self.progress = progress
        self.total = sum(f.size for f in files) or 1
        self.sizes = {f.item.remote: f.size for f in files}
        self.done: dict[str, dict[str, int]] = {s: {} for s in serials}
        self.tasks: dict[str, TaskID] = {
            s: progress.add_task(s, total=self.total, what="waiting") for s in serials}
        self._lock = threading.Lock()

    def __call__(self, serial: str, remote: str, n: int, total: int, phase: str) -> None:
        with self._lock:
            per = self.done.setdefault(serial, {})
            per[remote] = total if phase in ("done", "skip", "fail", "verify") else n
            what = {"hash": "comparing", "push": "pushing", "verify": "verifying",
                    "done": "done", "skip": "up to date", "fail": "FAILED"}[phase]
            self.progress.update(self.tasks[serial], completed=sum(per.values()),
                                 what=f"{what} {remote.rsplit('/', 1)[-1]}")


def provision_cmd(items: Items, adb_server: AdbServers = None, serial: Serials = None,
                  json_out: JsonOut = False, no_progress: NoProgress = False) -> None:
    """Copy files to every phone in parallel: skipped where the phone's sha256 already
    matches, else pushed to a temporary name, verified on the phone, then renamed."""
    from adbflow.device import Inventory, resolve_servers  # noqa: PLC0415
    parsed = [prov.parse_item(x) for x in items]
    files = prov.prepare(parsed, data_home() / "cache" / "downloads")
    devices = Inventory(resolve_servers(adb_server), serial).devices()
    if not devices:
        raise AdbflowError("no device to provision", hint="check `adbflow devices`")
    err = Console(stderr=True)
    t0 = time.monotonic()
    if no_progress or not err.is_terminal:
        outcomes = prov.provision(devices, files)
    else:
        columns = (TextColumn("{task.description:<22}"), BarColumn(), DownloadColumn(),
                   TransferSpeedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[what]}"))
        with Progress(*columns, console=err) as progress:
            bars = Bars(progress, [d.serial for d in devices], files)
            outcomes = prov.provision(devices, files, progress=bars)
    seconds = time.monotonic() - t0
    if json_out:
        typer.echo(json.dumps(prov.summary(files, outcomes, seconds), indent=2))
    else:
        rows = [[o.serial, f.remote, f.state.value, f.method.value if f.method else "-",
                 f.bytes, f"{f.seconds:.2f}", f.reason or ""]
                for o in outcomes for f in o.files]
        typer.echo(tabulate(rows, headers=["serial", "remote", "state", "compared by",
                                           "bytes sent", "s", "reason"]))
        if any(f.method is prov.Method.SIZE_MD5 for o in outcomes for f in o.files):
            typer.echo("note: some phones have no sha256sum; compared by size + md5sum")
        typer.echo(f"{sum(o.ok for o in outcomes)}/{len(outcomes)} phones ok in {seconds:.1f} s")
    raise typer.Exit(0 if all(o.ok for o in outcomes) else 1)


def register(app: typer.Typer) -> None:
    app.command("provision")(provision_cmd)
