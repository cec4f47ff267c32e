"""The `adbflow` command line: a root typer app that each concern module registers into.

Why registration functions: the commands live next to the code they drive (inventory,
pipeline, simulator, fleet), and this file stays a table of contents.
"""
from __future__ import annotations

import importlib
import sys

import typer

from adbflow import __version__
from adbflow.errors import AdbflowError

app = typer.Typer(
    name="adbflow",
    help="Share AI compute across Android devices driven only over adb: pictures taken on any "
         "phone are classified and turned into a story by the phones that bid best.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

# module -> registers its commands on `app`
COMMAND_MODULES = (
    "adbflow.cli.inventory",   # devices, bid
    "adbflow.cli.pipeline",    # watch, run, jobs, show, demo
    "adbflow.cli.simulate",    # simulate
    "adbflow.cli.fleet",       # fleet up/status/load/snap/fault/down
    "adbflow.cli.flows",       # flows list/show/validate, sweep
    "adbflow.cli.trace",       # trace (Chrome/Perfetto, jsonl, csv)
    "adbflow.cli.report",      # report (one HTML page)
    "adbflow.cli.split",       # split cuts/profile/plan/run
    "adbflow.cli.journal",     # journal check/recover
    "adbflow.cli.provision",   # provision FILE=REMOTE ...
    "adbflow.cli.mesh",        # mesh up/status/logs/down (issue 16)
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"adbflow {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """adbflow: orchestrate AI work across Android devices over adb."""


for _name in COMMAND_MODULES:
    try:
        _mod = importlib.import_module(_name)
    except ModuleNotFoundError as exc:  # a concern not installed in this build
        if exc.name != _name:
            raise
        continue
    _mod.register(app)


def main() -> None:
    """Console entry point: AdbflowError becomes a one-line message and exit code 2."""
    try:
        app()
    except AdbflowError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)

