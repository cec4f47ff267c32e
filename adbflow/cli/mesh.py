"""`adbflow mesh up|status|logs|down`: the phones' own mesh, installed and removed over adb.

Why thin: the work is in adbflow/mesh/control.py (what is pushed, how it is started and
stopped); this module picks the devices, parses `--addr SERIAL=IP`, and keeps the session
(peer list and key) in the data dir, chmod 600, so later commands and the laptop can talk
to the workers.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer
from tabulate import tabulate

from adbflow.cli.options import AdbServers, JsonOut, Serials
from adbflow.device import Inventory, resolve_servers
from adbflow.errors import AdbflowError
from adbflow.mesh import control
from adbflow.mesh.election import ElectionTiming
from adbflow.paths import data_home

mesh_app = typer.Typer(help="The phones' own mesh (issue 16): workers that serve each other "
                            "over Wi-Fi, installed and removed over adb.", no_args_is_help=True)


def session_path() -> Path:
    return data_home() / "mesh" / "session.json"


def _save(session: control.MeshSession) -> Path:
    path = session_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"key": session.key, "peers": [asdict(p) for p in session.peers]}, f)
    return path


def _devices(adb_server: list[str] | None, serial: list[str] | None):
    devs = Inventory(resolve_servers(adb_server), serial).devices()
    if not devs:
        raise AdbflowError("no device online", hint="check `adbflow devices`")
    return sorted(devs, key=lambda d: d.serial)


def _addrs(values: list[str] | None) -> dict[str, str]:
    out = {}
    for v in values or []:
        serial, sep, ip = v.rpartition("=")
        if not sep or not serial or not ip:
            raise typer.BadParameter(f"--addr wants SERIAL=IP, got {v!r}")
        out[serial] = ip
    return out


Addr = Annotated[Optional[list[str]], typer.Option(
    "--addr", metavar="SERIAL=IP", help="Wi-Fi address of a phone (default: read from wlan0).")]


@mesh_app.command("up")
def up_cmd(adb_server: AdbServers = None, serial: Serials = None, addr: Addr = None,
           port: Annotated[int, typer.Option(min=1024, max=65535)] = control.DEFAULT_PORT,
           orchestrator: Annotated[Optional[list[str]], typer.Option(
               "--orchestrator", metavar="SERIAL",
               help="a phone that watches its camera and farms the work out (mode single: "
                    "one; mode p2p: repeat it, default every phone)")] = None,
           mode: Annotated[Optional[control.MeshMode], typer.Option(
               help="single: one orchestrating phone; without --orchestrator the phones "
                    "elect it (and elect again when it stops answering); p2p: each listed "
                    "phone orchestrates its own pictures, borrowing the others' workers. "
                    "Neither: workers only (with --orchestrator: single)")] = None,
           lease: Annotated[float, typer.Option(
               "--lease", min=1.0, max=600.0,
               help="election: seconds without the leader's heartbeat before the others "
                    "elect again")] = 10.0,
           json_out: JsonOut = False) -> None:
    """Push the mesh runtime and a fresh session key to every phone and start its worker
    (and the orchestrator on the phones named by --orchestrator / mode p2p; with --mode
    single and no phone named, the election on every phone)."""
    devs = _devices(adb_server, serial)
    named = list(orchestrator or [])
    if mode is not control.MeshMode.P2P and len(named) > 1:
        raise typer.BadParameter("mode single has one --orchestrator; several need --mode p2p")
    elect = None
    if mode is control.MeshMode.SINGLE and not named:
        lease_ds = max(10, round(lease * 10))
        elect = ElectionTiming(lease_ds=lease_ds, beat_ds=max(1, lease_ds // 5))
    with tempfile.TemporaryDirectory(prefix="adbflow-mesh-") as tmp:
        session = control.up(devs, addrs=_addrs(addr), port=port, tmp=Path(tmp),
                             mode=mode or control.MeshMode.SINGLE,
                             orchestrator=named[0] if mode is not control.MeshMode.P2P and named
                             else None,
                             orchestrators=named if mode is control.MeshMode.P2P else (),
                             elect=elect)
    path = _save(session)
    if json_out:
        typer.echo(json.dumps({**control.session_json(session), "session": str(path)}))
        return
    typer.echo(tabulate([[p.name, p.serial, f"{p.addr}:{p.port}"] for p in session.peers],
                        headers=["peer", "serial", "listens on"]))
    typer.echo(f"session (key, chmod 600): {path}")


@mesh_app.command("status")
def status_cmd(adb_server: AdbServers = None, serial: Serials = None,
               json_out: JsonOut = False) -> None:
    """What the mesh runs on each phone (recorded pids alive?) and which files it left."""
    rows = control.status(_devices(adb_server, serial))
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(tabulate([[r["serial"], r.get("name", "-"), "yes" if r["present"] else "no",
                          " ".join(f"{k}:{v['pid']}{'' if v['alive'] else '(dead)'}"
                                   for k, v in r["pids"].items()) or "-",
                          "-" if r.get("term") is None else f"{r.get('leader') or '-'} "
                                                            f"(term {r['term']})"]
                         for r in rows],
                        headers=["serial", "peer", "installed", "processes", "leader"]))
    agreed = control.leader(rows)
    if agreed:
        typer.echo(f"orchestrator: {agreed[1]} (term {agreed[0]}, a majority agrees)")


@mesh_app.command("logs")
def logs_cmd(adb_server: AdbServers = None, serial: Serials = None,
             lines: Annotated[int, typer.Option(min=1, max=10000)] = 50) -> None:
    """The mesh logs of each phone (device text, printed as data)."""
    for d in _devices(adb_server, serial):
        typer.echo(f"== {d.serial}")
        typer.echo(control.logs_one(d, lines=lines))


@mesh_app.command("restart")
def restart_cmd(adb_server: AdbServers = None, serial: Serials = None,
                json_out: JsonOut = False) -> None:
    """Start again the mesh processes that are no longer running (a killed worker or
    orchestrator), keeping each phone's state: unfinished jobs resume, done ones stay done."""
    rows = [control.restart_one(d) for d in _devices(adb_server, serial)]
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        typer.echo(f"{r['serial']}: " + " ".join(
            f"{k}:{v['pid']}{'' if v['alive'] else '(dead)'}" for k, v in r["pids"].items()))


@mesh_app.command("down")
def down_cmd(adb_server: AdbServers = None, serial: Serials = None,
             json_out: JsonOut = False) -> None:
    """Stop every process the mesh started and remove every file it pushed (verified)."""
    rows = control.down(_devices(adb_server, serial))
    if json_out:
        typer.echo(json.dumps(rows))
    else:
        for r in rows:
            typer.echo(f"{r['serial']}: stopped, removed")


def _session_peers() -> dict[str, str]:
    """Peer name -> serial from the saved session (the key is not read into anything)."""
    try:
        doc = json.loads(session_path().read_text())
        return {str(p["name"]): str(p["serial"]) for p in doc.get("peers", [])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


@mesh_app.command("results")
def results_cmd(adb_server: AdbServers = None, serial: Serials = None,
                json_out: JsonOut = False,
                record: Annotated[bool, typer.Option(
                    "--record/--no-record", help="Write finished jobs to the journal and their "
                    "spans to the traces (`adbflow trace`), on the phones that ran them.")] = True
                ) -> None:
    """The jobs the phones' orchestrators recorded: picture, where each stage ran, labels,
    story (device text: shown as data, never interpreted)."""
    from adbflow.mesh.trace import record_mesh_jobs
    jobs = []
    recorded: list[int] = []
    peers = _session_peers()
    for d in _devices(adb_server, serial):
        found, head = control.results_and_clock(d)
        jobs += found
        if record and found:
            recorded += record_mesh_jobs(data_home(), d, found, head, peers)
    if recorded:
        typer.echo(f"{len(recorded)} mesh job(s) recorded for `adbflow trace`: "
                   + " ".join(map(str, recorded)), err=True)
    if json_out:
        typer.echo(json.dumps(jobs, indent=2))
        return
    if not jobs:
        typer.echo("no mesh jobs recorded")
        return
    for j in jobs:
        typer.echo(f"{j['serial']} job {j['job']}: {j.get('state', '?')}  "
                   f"{j.get('source', '')!r}  classify on {j.get('classify.who') or '-'}, "
                   f"story on {j.get('generate.who') or '-'}")
        if j["labels"]:
            typer.echo("  labels: " + ", ".join(j["labels"][:3]))
        if j.get("story"):
            typer.echo("  story: " + " ".join(j["story"].split())[:400])


def register(app: typer.Typer) -> None:
    app.add_typer(mesh_app, name="mesh")
