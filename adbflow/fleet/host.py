"""FleetHost: one asyncio process hosting N virtual devices for the real adb server.

Why this module is over ~500 lines: the control operations (snap, load, fault, kill, restart,
wifi, clock, battery) are one request table over the same device registry; splitting it would
scatter one small dispatcher over several files.

Why one process: 100 devices as 100 processes would cost ~100x a Python interpreter;
as coroutines they cost a few MB. The host owns the lifecycle (start, kill, restart,
reboot, down), registers each device with the adb server (`host:connect:`, the request
`adb connect` sends) and answers a control socket (unix, JSON lines) so tests and the
`adbflow fleet` CLI can flip faults, set load and drop pictures into a device.

Run: `python -m adbflow.fleet.host --state-dir D --devices N [--profile P ...]
      [--adb-port P] [--base-port P] [--backend MODULE:FACTORY]`
It writes D/fleet.json once every device shows `device` in the adb server, and removes
it on `down` (control op, SIGTERM or SIGINT).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import importlib
import json
import logging
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adbflow.errors import AdbflowError, FleetError
from adbflow.fleet import adb_server, wifi
from adbflow.fleet.backend_api import DeviceBackend
from adbflow.fleet.camera import DEFAULT_DIR as DEFAULT_SNAP_DIR
from adbflow.fleet.camera import Camera, check_dir, copy_plain
from adbflow.fleet.faults import FaultState, ProgramFault
from adbflow.fleet.transport import DeviceTransport

log = logging.getLogger("adbflow.fleet.host")

#: The six device classes of profiles/virtual (device-profiles.md), cycled by default.
DEFAULT_PROFILES = ("flagship_2025", "flagship_2023", "midrange_2023", "flagship_2019",
                    "lowend_2020", "old_2017")
DEFAULT_BASE_PORT = 20000
MAX_DEVICES = 100
PICTURES_DIR = "/storage/emulated/0/Pictures"
STORAGE_ROOT = "/storage/emulated/0"
FLEET_JSON = "fleet.json"
#: Time allowed for every device to show `device` in the adb server after registration.
ONLINE_TIMEOUT_S = 30.0

BackendFactory = Callable[[str, str, Path, FaultState], DeviceBackend]


def namespace_backend(serial: str, profile: str, root_dir: Path, faults: FaultState
                      ) -> DeviceBackend:
    """The real device backend (F2's NamespaceBackend) for one device."""
    from adbflow.fleet.backend import NamespaceBackend
    from adbflow.fleet.profile import load_virtual_profile
    return NamespaceBackend(serial=serial, profile=load_virtual_profile(profile),
                            root_dir=root_dir, faults=faults)


def load_factory(spec: str) -> BackendFactory:
    """`package.module:callable` -> the callable."""
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise FleetError(f"bad backend factory {spec!r}", hint="use MODULE:CALLABLE")
    return getattr(importlib.import_module(module), attr)


def safe_serial(serial: str) -> str:
    """A directory name for a serial (127.0.0.1:20000 -> 127.0.0.1_20000)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", serial)


def snap_name(source: Path, now: float) -> str:
    """Camera-style default name, keeping the source extension: IMG_YYYYMMDD_HHMMSS_mmm.ext."""
    stamp = time.strftime("%Y%m%d_%H%M%S", time.localtime(now))
    ext = source.suffix.lower() or ".jpg"
    return f"IMG_{stamp}_{int(now * 1000) % 1000:03d}{ext}"


def check_picture_name(name: str) -> str:
    """A picture name must be one path component. Anything else in it is allowed on
    purpose (spaces, `$(...)`, quotes): tests use hostile names to check quoting."""
    if not name or "/" in name or "\0" in name or name in (".", "..") or len(name.encode()) > 240:
        raise FleetError(f"invalid picture name {name!r}",
                         hint="one file name, no '/', at most 240 bytes")
    return name


def control_socket_path(state_dir: Path) -> Path:
    """STATE_DIR/control.sock, or a /tmp path if that would exceed the unix socket limit."""
    path = state_dir / "control.sock"
    if len(str(path)) < 100:
        return path
    digest = hashlib.sha1(str(state_dir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"adbflow-fleet-{digest}.sock"


@dataclass
class VirtualDevice:
    serial: str
    port: int
    profile: str
    root: Path
    backend: DeviceBackend
    transport: DeviceTransport
    state: str = "starting"   # starting | running | killed | rebooting
    load: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def describe(self) -> dict[str, Any]:
        return {"serial": self.serial, "port": self.port, "profile": self.profile,
                "root": str(self.root), "holder_pid": getattr(self.backend, "holder_pid", None),
                "state": self.state, "load": self.load,
                "faults": self.backend.faults.to_json(),
                "connections": len(self.transport.connections),
                "delayed_ack": any(c.delayed_ack for c in self.transport.connections),
                # the Android release the device runs (None for test backends)
                "sdk": getattr(self.backend, "sdk", None)}


class FleetHost:
    def __init__(self, state_dir: Path, *, devices: int, profiles: list[str] | None = None,
                 adb_port: int = 5037, base_port: int = DEFAULT_BASE_PORT,
                 backend_factory: BackendFactory = namespace_backend,
                 adb: str | None = None) -> None:
        if not 1 <= devices <= MAX_DEVICES:
            raise FleetError(f"--devices must be 1..{MAX_DEVICES}, got {devices}")
        self.state_dir = Path(state_dir).resolve()
        self.n_devices = devices
        self.profiles = list(profiles or DEFAULT_PROFILES)
        self.adb_port = adb_port
        self.base_port = base_port
        self.backend_factory = backend_factory
        self.adb = adb or adb_server.adb_binary()
        self.devices: dict[str, VirtualDevice] = {}
        self.started_adb_server = False
        self.control_path = control_socket_path(self.state_dir)
        self._control: asyncio.base_events.Server | None = None
        self._stop = asyncio.Event()
        self._down_done = False

    # -- lifecycle -------------------------------------------------------------------------
    async def run(self) -> None:
        """Start everything, serve until `down`, then clean up (also on failure)."""
        try:
            await self.start()
            log.info("fleet ready: %d devices on adb server port %d", len(self.devices),
                     self.adb_port)
            watch = asyncio.create_task(self._watch_adb_server())
            await self._stop.wait()
            watch.cancel()
        finally:
            await self.down()

    async def start(self) -> None:
        t0 = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._refuse_if_running()
        if not await asyncio.to_thread(adb_server.server_alive, self.adb_port):
            await asyncio.to_thread(adb_server.start_server, self.adb_port, adb=self.adb,
                                    log_path=self.state_dir / "adb-server.log")
            self.started_adb_server = True
        t_adb = time.monotonic()
        await self._create_devices()
        await asyncio.gather(*(self._start_device(d) for d in self.devices.values()))
        t_backends = time.monotonic()
        await asyncio.gather(*(self._connect(d) for d in self.devices.values()))
        await self.wait_states({s: "device" for s in self.devices}, ONLINE_TIMEOUT_S)
        log.info("start phases: adb server %.2f s, backends %.2f s, adb connect %.2f s",
                 t_adb - t0, t_backends - t_adb, time.monotonic() - t_backends)
        for dev in self.devices.values():
            dev.state = "running"
        await self._start_control()
        self.write_state()
        log.info("started %d devices in %.2f s", len(self.devices), time.monotonic() - t0)

    def _refuse_if_running(self) -> None:
        path = self.state_dir / FLEET_JSON
        if not path.exists():
            return
        try:
            pid = int(json.loads(path.read_text()).get("pid", 0))
        except (ValueError, OSError):
            pid = 0
        if pid and pid != os.getpid() and _pid_alive(pid):
            raise FleetError(f"a fleet (pid {pid}) already runs in {self.state_dir}",
                             hint="run `adbflow fleet down` first or use another --state-dir")
        path.unlink(missing_ok=True)

    async def _create_devices(self) -> None:
        port = self.base_port
        for i in range(self.n_devices):
            profile = self.profiles[i % len(self.profiles)]
            while True:
                if 5555 <= port <= 5585 or port == self.adb_port:
                    port += 1
                    continue
                serial = f"127.0.0.1:{port}"
                root = self.state_dir / "devices" / safe_serial(serial) / "root"
                backend = self.backend_factory(serial, profile, root, FaultState())
                transport = DeviceTransport(backend, port)
                try:
                    await transport.start()
                except OSError:
                    port += 1
                    continue
                break
            dev = VirtualDevice(serial, port, profile, root, backend, transport)
            transport.on_reboot = lambda dev=dev: self.reboot(dev)
            self.devices[serial] = dev
            port += 1

    async def _start_device(self, dev: VirtualDevice) -> None:
        try:
            await dev.backend.start()
        except Exception as exc:
            raise FleetError(f"[{dev.serial}] device backend did not start: {exc}") from exc

    async def _connect(self, dev: VirtualDevice) -> None:
        reply = await adb_server.request(self.adb_port, f"host:connect:{dev.serial}", timeout=15)
        if "connected to" not in reply:
            raise FleetError(f"[{dev.serial}] adb connect failed: {reply.strip()}")

    async def adb_states(self) -> dict[str, str]:
        return adb_server.parse_devices(await adb_server.request(self.adb_port, "host:devices",
                                                                 timeout=5))

    async def wait_states(self, wanted: dict[str, str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = await self.adb_states()
            missing = {s: states.get(s, "absent") for s, w in wanted.items() if states.get(s) != w}
            if not missing:
                return
            if time.monotonic() > deadline:
                raise FleetError(f"devices not in the expected adb state after {timeout:.0f} s: "
                                 + ", ".join(f"{s}={st} (want {wanted[s]})"
                                             for s, st in sorted(missing.items())[:8]))
            await asyncio.sleep(0.05)

    async def _watch_adb_server(self, period: float = 2.0) -> None:
        """Re-register devices the adb server forgot (`adb kill-server` then any adb
        command restarts it with an empty list), the way USB phones reappear."""
        while True:
            await asyncio.sleep(period)
            try:
                states = await self.adb_states()
            except FleetError:
                continue  # no server right now: try again later
            for dev in self.devices.values():
                if (dev.serial not in states and dev.state == "running"
                        and not dev.lock.locked() and not dev.backend.faults.offline):
                    with contextlib.suppress(FleetError):
                        reply = await adb_server.request(self.adb_port,
                                                         f"host:connect:{dev.serial}", timeout=15)
                        log.info("[%s] re-registered: %s", dev.serial, reply.strip())

    async def down(self) -> None:
        """Stop every device, the adb server if we started it, and remove fleet.json."""
        if self._down_done:
            return
        self._down_done = True
        if self._control is not None:
            self._control.close()
        for dev in self.devices.values():
            await dev.transport.stop()
        await asyncio.gather(*(self._stop_backend(d) for d in self.devices.values()))
        if self.started_adb_server:
            await asyncio.to_thread(adb_server.kill_server, self.adb_port, adb=self.adb)
        else:
            for serial in self.devices:
                with contextlib.suppress(FleetError):
                    await adb_server.request(self.adb_port, f"host:disconnect:{serial}", timeout=5)
        (self.state_dir / FLEET_JSON).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.control_path.unlink()
        log.info("fleet down")

    async def _stop_backend(self, dev: VirtualDevice) -> None:
        try:
            await asyncio.wait_for(dev.backend.stop(), 15)
        except Exception:  # noqa: BLE001 - keep stopping the others
            log.exception("[%s] backend stop failed", dev.serial)

    def request_stop(self) -> None:
        self._stop.set()

    # -- per-device operations ---------------------------------------------------------------
    def device(self, serial: str) -> VirtualDevice:
        try:
            return self.devices[serial]
        except KeyError:
            raise FleetError(f"no virtual device {serial!r}",
                             hint="known: " + ", ".join(self.devices)) from None

    async def kill(self, dev: VirtualDevice) -> None:
        """The device dies: transport down (adb shows it offline), its processes killed."""
        async with dev.lock:
            if dev.state == "killed":
                return
            await dev.transport.stop()
            await dev.backend.stop()
            dev.state = "killed"
        self.write_state()

    async def restart(self, dev: VirtualDevice, *, timeout: float = 20.0) -> None:
        """Bring a killed device back and re-register it; returns once adb says `device`."""
        async with dev.lock:
            if dev.state != "killed":
                await dev.transport.stop()
                await dev.backend.stop()
            await dev.backend.start()
            await dev.transport.start()
            dev.state = "running"
            self.write_state()
            await self._reconnect(dev, timeout)

    async def _reconnect(self, dev: VirtualDevice, timeout: float = 20.0) -> None:
        """Make the adb server see `dev` as `device` again.

        A lost `adb connect` device stays `offline` in the server, which retries only
        every 3 s (and gives up after ~60 s); `connect` then answers "already connected".
        So: an offline entry is disconnected, an absent one is connected, until it shows
        `device`. Disconnect is asynchronous in the server, hence the loop."""
        deadline = time.monotonic() + timeout
        last_action = 0.0
        while True:
            state = (await self.adb_states()).get(dev.serial)
            if state == "device" or dev.backend.faults.offline:
                return
            now = time.monotonic()
            if now > deadline:
                raise FleetError(f"[{dev.serial}] adb state {state or 'absent'} after restart, "
                                 f"expected device within {timeout:.0f} s",
                                 hint="see fleet.log and adb-server.log in the state dir")
            if now - last_action > 1.0:
                last_action = now
                with contextlib.suppress(FleetError):
                    if state is None:
                        reply = await adb_server.request(self.adb_port,
                                                         f"host:connect:{dev.serial}", timeout=15)
                        log.info("[%s] reconnect: %s", dev.serial, reply.strip())
                    elif state == "offline":
                        await adb_server.request(self.adb_port, f"host:disconnect:{dev.serial}",
                                                 timeout=5)
                        last_action = 0.0  # connect as soon as it is gone
            await asyncio.sleep(0.05)

    async def reboot(self, dev: VirtualDevice) -> None:
        """`adb reboot`: the transport drops, processes die, the device comes back."""
        await asyncio.sleep(0.05)  # let the reboot stream's CLSE go out first
        async with dev.lock:
            dev.state = "rebooting"
            await dev.transport.stop()
            await dev.backend.stop()
        self.write_state()
        await asyncio.sleep(1.0)
        await self.restart(dev)

    def set_faults(self, dev: VirtualDevice, fields: dict[str, Any]) -> None:
        faults = dev.backend.faults
        known = {f.name for f in dataclasses.fields(FaultState)} - {"programs"}
        program = fields.pop("program", None)
        prog_fields = {k: fields.pop(k) for k in ("mode", "exit_code", "message") if k in fields}
        if {"clock_offset_s", "clock_drift_ppm"} & fields.keys():
            fields.setdefault("clock_ref", 0.0)  # a new skew starts now (backend rebases)
        for key, value in fields.items():
            if key not in known:
                raise FleetError(f"unknown fault {key!r}", hint="one of: " + ", ".join(sorted(known)))
            current = getattr(faults, key)
            setattr(faults, key, type(current)(value))
        if program:
            faults.programs[str(program)] = ProgramFault(**prog_fields)
        elif prog_fields:
            raise FleetError("mode/exit_code/message need program=NAME")
        notify = getattr(dev.backend, "update_faults", None)
        if callable(notify):  # NamespaceBackend republishes the device state file at once
            notify()

    async def snap(self, dev: VirtualDevice, image: str, name: str | None,
                   directory: str = DEFAULT_SNAP_DIR, publish: str | None = None,
                   with_video: bool = False) -> dict[str, Any]:
        """Drop a picture into the device the way a camera app of its Android version does
        (camera.py): DCIM/Camera by default, `.pending-` + MediaStore publish on 11+."""
        src = Path(image)
        if not src.is_file():
            raise FleetError(f"snap: no such image {image!r}")
        if dev.state != "running":
            raise FleetError(f"[{dev.serial}] snap: device is {dev.state}")
        name = check_picture_name(name or snap_name(src, time.time()))
        directory = check_dir(directory)
        store = getattr(dev.backend, "mediastore", None)
        sdk = getattr(dev.backend, "sdk", None)
        if store is None or sdk is None:  # a test backend without storage model
            vname = await asyncio.to_thread(
                copy_plain, src, dev.backend.resolve(f"{STORAGE_ROOT}/{directory}"), name,
                with_video)
            return {"path": f"{STORAGE_ROOT}/{directory}/{name}",
                    "video": f"{STORAGE_ROOT}/{directory}/{vname}" if vname else None,
                    "pending": f".pending-{name}", "publish": "file", "storage": "plain",
                    "row_ids": []}
        camera = Camera(dev.backend.resolve, int(sdk), store)
        shot = await asyncio.to_thread(camera.snap, src, name, directory, publish, with_video)
        return shot.to_json()

    # -- state file & control socket -----------------------------------------------------------
    def state_json(self) -> dict[str, Any]:
        return {"adb_port": self.adb_port, "control_socket": str(self.control_path),
                "pid": os.getpid(), "adb_server_started": self.started_adb_server,
                "state_dir": str(self.state_dir),
                "devices": [d.describe() for d in self.devices.values()]}

    def write_state(self) -> None:
        if self._down_done:
            return
        path = self.state_dir / FLEET_JSON
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.state_json(), indent=1))
        os.replace(tmp, path)

    async def _start_control(self) -> None:
        with contextlib.suppress(OSError):
            self.control_path.unlink()
        self._control = await asyncio.start_unix_server(self._serve_control,
                                                        path=str(self.control_path))
        os.chmod(self.control_path, 0o600)

    async def _serve_control(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    req = json.loads(line)
                    result = await self.handle(req)
                    reply: dict[str, Any] = {"ok": True, "result": result}
                except AdbflowError as exc:
                    reply = {"ok": False, "error": exc.message, "hint": exc.hint}
                except (ValueError, TypeError, KeyError, OSError) as exc:
                    reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "hint": None}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def handle(self, req: dict[str, Any]) -> Any:
        op = req.get("op")
        if op == "status":
            states = await self.adb_states()
            out = self.state_json()
            for d in out["devices"]:
                d["adb_state"] = states.get(d["serial"], "absent")
            return out
        if op == "down":
            asyncio.get_running_loop().call_later(0.05, self.request_stop)
            return {"pid": os.getpid()}
        dev = self.device(str(req.get("serial")))
        if op == "model":        # the simulation's own numbers (truth for tests: battery energy)
            status = getattr(dev.backend, "status", None)   # NamespaceBackend has it
            return status() if callable(status) else {}
        if op == "load":
            pct = float(req["percent"])
            if not 0 <= pct <= 100:
                raise FleetError(f"load must be 0..100, got {pct}")
            dev.backend.set_load(pct)
            dev.load = pct
            self.write_state()
            return dev.describe()
        if op == "snap":
            return await self.snap(dev, str(req["image"]), req.get("name"),
                                   str(req.get("directory") or DEFAULT_SNAP_DIR),
                                   req.get("publish"), bool(req.get("with_video", False)))
        if op == "fault":
            was_offline = dev.backend.faults.offline
            self.set_faults(dev, dict(req.get("fields") or {}))
            if dev.backend.faults.offline != was_offline:
                await dev.transport.apply_offline()
            self.write_state()
            return dev.describe()
        if op == "clear_faults":
            was_offline = dev.backend.faults.offline
            fresh = FaultState()
            for f in dataclasses.fields(FaultState):
                setattr(dev.backend.faults, f.name, getattr(fresh, f.name))
            self.set_faults(dev, {})
            if was_offline:
                await dev.transport.apply_offline()
            self.write_state()
            return dev.describe()
        if op == "wifi":       # cut the device off the loopback Wi-Fi (fleet/wifi.py)
            port = wifi.port_of(dev.serial)
            if port is None:
                raise FleetError(f"[{dev.serial}] has no Wi-Fi address")
            on = wifi.set_wifi(self.state_dir, wifi.wifi_address(port), bool(req["on"]))
            return {"serial": dev.serial, "wifi": on, "addr": wifi.wifi_address(port)}
        if op == "kill":
            await self.kill(dev)
            return dev.describe()
        if op == "restart":
            await self.restart(dev)
            return dev.describe()
        raise FleetError(f"unknown control op {op!r}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adbflow.fleet.host")
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--devices", type=int, default=3)
    parser.add_argument("--profile", action="append", default=[])
    parser.add_argument("--adb-port", type=int, default=5037)
    parser.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT)
    parser.add_argument("--backend", default="adbflow.fleet.host:namespace_backend",
                        help="MODULE:FACTORY(serial, profile, root_dir, faults)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    async def amain() -> None:
        host = FleetHost(args.state_dir, devices=args.devices, profiles=args.profile or None,
                         adb_port=args.adb_port, base_port=args.base_port,
                         backend_factory=load_factory(args.backend))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, host.request_stop)
        await host.run()

    try:
        asyncio.run(amain())
    except AdbflowError as exc:
        print(f"fleet failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
