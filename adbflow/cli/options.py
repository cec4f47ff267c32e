"""Option types shared by every adbflow command, so `-s`, `--adb-server` and `--json` mean
the same thing everywhere.

Why module-level Annotated aliases: typer reads options per command; users expect
`adbflow bid --once --adb-server host:5037`, i.e. options after the subcommand.
"""
from __future__ import annotations

from typing import Annotated, Optional

import typer

Serials = Annotated[
    Optional[list[str]],
    typer.Option("--serial", "-s", envvar="ANDROID_SERIAL",
                 help="Only these devices (repeatable). Default: $ANDROID_SERIAL, else all."),
]
AdbServers = Annotated[
    Optional[list[str]],
    typer.Option("--adb-server", metavar="HOST:PORT",
                 help="adb server(s) to read devices from (repeatable): devices of several adb "
                      "servers on several hosts form one inventory. Default: "
                      "127.0.0.1:$ANDROID_ADB_SERVER_PORT or 127.0.0.1:5037."),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
Timeout = Annotated[float, typer.Option("--timeout", min=0.1,
                                        help="Seconds allowed for each adb call.")]
EnergyWeight = Annotated[float, typer.Option(
    "--energy-weight", min=0.0, metavar="S_PER_J",
    help="ect: seconds of latency one expected joule is worth (0 = ignore energy). Joules "
         "are learned per device from --energy runs, else estimated from the profile.")]
