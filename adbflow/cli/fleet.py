"""`adbflow fleet ...`: start, inspect, fault and stop the virtual device fleet.

Why a CLI over FleetClient: CI scripts and people reproduce field problems by hand
("what does the orchestrator do when phone 2 goes offline mid-push?") without writing
Python. Every command finds the fleet through --state-dir (default: data_home()/fleet).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from tabulate import tabulate

from adbflow.cli.options import JsonOut
from adbflow.fleet.control import FleetClient, default_adb_port, default_state_dir, start_fleet
from adbflow.fleet.faults import FaultState
from adbflow.fleet.host import DEFAULT_BASE_PORT, MAX_DEVICES

StateDir = Annotated[
    Optional[Path],
    typer.Option("--state-dir", envvar="ADBFLOW_FLEET_DIR",
                 help="Fleet state directory (fleet.json, device roots, fleet.log). "
                      "Default: $ADBFLOW_HOME/fleet."),
]
Serial = Annotated[str, typer.Argument(help="Device serial, e.g. 127.0.0.1:20000.")]

fleet_app = typer.Typer(help="Virtual Android devices served to the real adb server.",
                        no_args_is_help=True)


def _client(state_dir: Path | None) -> FleetClient:
    return FleetClient(state_dir or default_state_dir())


def _device_rows(status: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for d in status["devices"]:
        faults = d.get("faults") or {}
        healthy = FaultState().to_json()
        active = [k for k, v in faults.items() if k != "programs" and v != healthy.get(k)]
        active += [f"{name}:{p['mode']}" for name, p in (faults.get("programs") or {}).items()
                   if p.get("mode") != "ok"]
        rows.append([d["serial"], d["profile"], d["state"], d.get("adb_state", "?"),
                     f"{d.get('load', 0):.0f}%", ",".join(active) or "-", d.get("holder_pid") or "-"])
    return rows


def _print_status(status: dict[str, Any]) -> None:
    typer.echo(f"adb server port {status['adb_port']}, fleet pid {status['pid']}, "
               f"state dir {status['state_dir']}")
    typer.echo(tabulate(_device_rows(status),
                        headers=["serial", "profile", "state", "adb", "load", "faults", "holder"]))


@fleet_app.command("up")
def up_cmd(
    devices: Annotated[int, typer.Option("--devices", "-n", min=1, max=MAX_DEVICES,
                                         help="Number of virtual devices.")] = 3,
    profile: Annotated[Optional[list[str]], typer.Option(
        "--profile", help="Device class(es) from profiles/virtual, cycled over the devices "
                          "(repeatable). Default: all six classes.")] = None,
    adb_port: Annotated[Optional[int], typer.Option(
        "--adb-port", help="adb server port (started if not running). Default: "
                           "$ANDROID_ADB_SERVER_PORT or 5037.")] = None,
    base_port: Annotated[int, typer.Option("--base-port",
                                           help="First device port.")] = DEFAULT_BASE_PORT,
    state_dir: StateDir = None,
    timeout: Annotated[float, typer.Option("--timeout", min=1,
                                           help="Seconds allowed to come up.")] = 60.0,
    json_out: JsonOut = False,
) -> None:
    """Start a fleet in the background; returns when `adb devices` lists every device."""
    client = start_fleet(state_dir or default_state_dir(), devices=devices, profiles=profile,
                         adb_port=adb_port if adb_port is not None else default_adb_port(),
                         base_port=base_port, timeout=timeout)
    status = client.status()
    if json_out:
        typer.echo(json.dumps(status, indent=1))
    else:
        _print_status(status)
        typer.echo(f"stop with: adbflow fleet down --state-dir {client.state_dir}")


@fleet_app.command("status")
def status_cmd(state_dir: StateDir = None, json_out: JsonOut = False) -> None:
    """Devices, their adb state, load and active faults."""
    status = _client(state_dir).status()
    if json_out:
        typer.echo(json.dumps(status, indent=1))
    else:
        _print_status(status)


@fleet_app.command("load")
def load_cmd(serial: Serial,
             percent: Annotated[float, typer.Argument(min=0, max=100,
                                                      help="Extra CPU load, 0-100.")],
             state_dir: StateDir = None) -> None:
    """Set a device's extra CPU load (shows in /proc/stat, dumpsys cpuinfo, program speed)."""
    _client(state_dir).load(serial, percent)
    typer.echo(f"{serial}: load {percent:.0f}%")


@fleet_app.command("snap")
def snap_cmd(serial: Serial,
             image: Annotated[Path, typer.Argument(exists=True, dir_okay=False,
                                                   help="Picture on this computer.")],
             name: Annotated[Optional[str], typer.Option(
                 "--name", help="File name on the device (default IMG_<time>.<ext>).")] = None,
             directory: Annotated[str, typer.Option(
                 "--dir", help="Folder under /storage/emulated/0 (e.g. Pictures, "
                               "Pictures/Screenshots).")] = "DCIM/Camera",
             publish: Annotated[Optional[str], typer.Option(
                 "--publish", help="mediastore (a camera app; default) or file (an app "
                                   "renaming the file itself: inotify sees the name).")] = None,
             with_video: Annotated[bool, typer.Option(
                 "--with-video", help="Also record a short VID_*.mp4 beside it.")] = False,
             state_dir: StateDir = None) -> None:
    """'Take a picture' on a device like its camera app: into DCIM/Camera, on Android 11+
    as `.pending-<ts>-NAME` that MediaProvider then renames (no inotify event for NAME;
    `content query` lists it), on 6-10 through the app's own storage view."""
    shot = _client(state_dir).snap_info(serial, image, name=name, directory=directory,
                                        publish=publish, with_video=with_video)
    typer.echo(shot["path"])
    if shot.get("video"):
        typer.echo(shot["video"])


@fleet_app.command("fault")
def fault_cmd(
    serial: Serial,
    offline: Annotated[Optional[bool], typer.Option(
        "--offline/--online", help="Stop answering adb (device shows `offline`).")] = None,
    delay: Annotated[Optional[float], typer.Option(
        "--delay", min=0, help="Seconds added before every reply packet.")] = None,
    storage_full: Annotated[Optional[bool], typer.Option(
        "--storage-full/--storage-ok", help="Pushes fail: No space left on device.")] = None,
    slow: Annotated[Optional[float], typer.Option(
        "--slow", min=0.01, help="Device programs run this many times slower.")] = None,
    program: Annotated[Optional[str], typer.Option(
        "--program", help="Program to fault: label_image, llama-cli, benchmark_model.")] = None,
    mode: Annotated[Optional[str], typer.Option(
        "--mode", help="Program fault: ok, fail, hang, garbage, flood.")] = None,
    exit_code: Annotated[Optional[int], typer.Option("--exit-code",
                                                     help="Exit code for --mode fail.")] = None,
    message: Annotated[Optional[str], typer.Option("--message",
                                                   help="stderr text for --mode fail.")] = None,
    clock_offset: Annotated[Optional[float], typer.Option(
        "--clock-offset", help="Device wall clock ahead of the host by this many seconds "
                               "(negative: behind; needs libfaketime).")] = None,
    clock_drift: Annotated[Optional[float], typer.Option(
        "--clock-drift", help="Device clock gains this many ppm (negative: loses).")] = None,
    usb_power: Annotated[Optional[bool], typer.Option(
        "--usb-power/--on-battery", help="USB charger plugged in (default) or unplugged.")
                         ] = None,
    battery_quirks: Annotated[Optional[str], typer.Option(
        "--battery-quirks", help="Battery driver quirks: ma, reversed, frozen, mv "
                                 "(comma-separated; empty: none).")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Reset every fault first.")] = False,
    kill: Annotated[bool, typer.Option("--kill", help="Kill the device (transport down).")] = False,
    restart: Annotated[bool, typer.Option("--restart",
                                          help="Bring a killed device back.")] = False,
    state_dir: StateDir = None,
) -> None:
    """Inject faults into one device (combine freely; --clear resets first)."""
    client = _client(state_dir)
    if clear:
        client.clear_faults(serial)
    # fault field -> the option's value; options left unset are not sent
    given = {"offline": offline, "transport_delay_s": delay, "storage_full": storage_full,
             "slow_factor": slow, "clock_offset_s": clock_offset,
             "clock_drift_ppm": clock_drift, "battery_usb": usb_power,
             "battery_quirks": battery_quirks}
    fields: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if program:
        fields["program"] = program
        fields["mode"] = mode or "fail"
        if exit_code is not None:
            fields["exit_code"] = exit_code
        if message is not None:
            fields["message"] = message
    elif mode or exit_code is not None or message is not None:
        raise typer.BadParameter("--mode/--exit-code/--message need --program")
    if fields:
        client.fault(serial, **fields)
    if kill:
        client.kill(serial)
    if restart:
        client.restart(serial)
    info = {d["serial"]: d for d in client.status()["devices"]}[serial]
    typer.echo(f"{serial}: state {info['state']}, adb {info.get('adb_state')}, "
               f"faults {json.dumps(info['faults'])}")


@fleet_app.command("kill")
def kill_cmd(serial: Serial, state_dir: StateDir = None) -> None:
    """The device dies: adb sees it go offline."""
    _client(state_dir).kill(serial)
    typer.echo(f"{serial}: killed")


@fleet_app.command("wifi")
def wifi_cmd(serial: Serial, state: Annotated[str, typer.Argument(help="on or off")],
             state_dir: StateDir = None) -> None:
    """Cut a device off its loopback "Wi-Fi" (off) or restore it (on); adb is untouched."""
    if state not in ("on", "off"):
        raise typer.BadParameter("on or off")
    out = _client(state_dir).wifi(serial, state == "on")
    typer.echo(f"{serial}: wifi {state} ({out['addr']})")


@fleet_app.command("restart")
def restart_cmd(serial: Serial, state_dir: StateDir = None) -> None:
    """Bring a device back (returns once adb lists it as `device`)."""
    _client(state_dir).restart(serial)
    typer.echo(f"{serial}: running")


@fleet_app.command("down")
def down_cmd(state_dir: StateDir = None) -> None:
    """Stop the fleet: devices, their processes, and the adb server if the fleet started it."""
    client = _client(state_dir)
    if not (client.state_dir / "fleet.json").exists():
        typer.echo(f"no fleet running in {client.state_dir}")
        return
    client.down()
    typer.echo(f"fleet in {client.state_dir} stopped")


def register(app: typer.Typer) -> None:
    app.add_typer(fleet_app, name="fleet")
