"""FleetClient and start_fleet(): drive a running fleet daemon from tests, CLI or scripts.

Why a client over a unix socket: the fleet runs detached (it must outlive `adbflow fleet
up`), so the CLI and pytest talk to it by STATE_DIR/fleet.json -> control socket, one
JSON request per line, with a timeout on every call.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from adbflow.errors import FleetError
from adbflow.fleet import adb_server
from adbflow.fleet.host import DEFAULT_BASE_PORT, FLEET_JSON
from adbflow.fleet.interpreter import module_argv
from adbflow.paths import data_home

#: Control requests that restart a device wait for adb to see it again: allow for that.
CONTROL_TIMEOUT_S = 60.0


def default_state_dir() -> Path:
    return data_home() / "fleet"


def default_adb_port() -> int:
    """The port the user's `adb` talks to: ANDROID_ADB_SERVER_PORT or 5037."""
    try:
        return int(os.environ.get("ANDROID_ADB_SERVER_PORT", "5037"))
    except ValueError:
        return 5037


class FleetClient:
    """Handle on a running fleet (found through STATE_DIR/fleet.json)."""

    def __init__(self, state_dir: Path | str | None = None, *,
                 process: subprocess.Popen[bytes] | None = None) -> None:
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        self._process = process

    # -- state -----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Contents of fleet.json (raises FleetError when no fleet runs there)."""
        path = self.state_dir / FLEET_JSON
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise FleetError(f"no fleet running in {self.state_dir}",
                             hint="start one with `adbflow fleet up`") from None
        except (OSError, ValueError) as exc:
            raise FleetError(f"unreadable {path}: {exc}") from exc

    @property
    def adb_port(self) -> int:
        return int(self.state()["adb_port"])

    @property
    def serials(self) -> list[str]:
        return [d["serial"] for d in self.state()["devices"]]

    @property
    def pid(self) -> int:
        return int(self.state()["pid"])

    def adb(self) -> Any:
        """An adbutils.AdbClient bound to the fleet's adb server."""
        import adbutils
        return adbutils.AdbClient(host="127.0.0.1", port=self.adb_port)

    def adb_states(self) -> dict[str, str]:
        """{serial: state} as the adb server reports them (`device`, `offline`, ...)."""
        return adb_server.parse_devices(adb_server.request_sync(self.adb_port, "host:devices",
                                                                timeout=5))

    def wait_adb_state(self, serial: str, state: str | None, timeout: float = 20.0) -> None:
        """Wait until adb shows `serial` in `state` (None: absent from the list)."""
        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            seen = self.adb_states().get(serial)
            if seen == state:
                return
            time.sleep(0.05)
        raise FleetError(f"[{serial}] adb state is {seen!r}, expected {state!r} after {timeout} s")

    # -- control requests ---------------------------------------------------------------------
    def call(self, op: str, timeout: float = CONTROL_TIMEOUT_S, **args: Any) -> Any:
        req = json.dumps({"op": op, **args}).encode() + b"\n"
        path = self.state()["control_socket"]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(path)
                sock.sendall(req)
                buf = bytearray()
                while not buf.endswith(b"\n"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
        except OSError as exc:
            raise FleetError(f"fleet control socket {path}: {exc}",
                             hint="is the fleet still running? see fleet.log in the state dir") \
                from exc
        try:
            reply = json.loads(buf)
        except ValueError:
            raise FleetError(f"fleet control: bad reply to {op}: {bytes(buf[:200])!r}") from None
        if not reply.get("ok"):
            raise FleetError(f"fleet {op}: {reply.get('error')}", hint=reply.get("hint"))
        return reply.get("result")

    def status(self) -> dict[str, Any]:
        """fleet.json plus each device's live `adb_state`."""
        return self.call("status", timeout=15)

    def load(self, serial: str, percent: float) -> dict[str, Any]:
        return self.call("load", serial=serial, percent=percent)

    def snap(self, serial: str, local_image: str | Path, name: str | None = None, *,
             directory: str = "DCIM/Camera", publish: str | None = None,
             with_video: bool = False) -> str:
        """Take a picture like the device's camera app (see fleet/camera.py); returns its
        device path. directory is relative to /storage/emulated/0; publish "mediastore"
        (default: on Android 11+ `.pending-` then a rename inotify does not see) or "file"
        (an app renaming it itself through the shared view: inotify sees the name)."""
        return str(self.snap_info(serial, local_image, name, directory=directory,
                                  publish=publish, with_video=with_video)["path"])

    def snap_info(self, serial: str, local_image: str | Path, name: str | None = None, *,
                  directory: str = "DCIM/Camera", publish: str | None = None,
                  with_video: bool = False) -> dict[str, Any]:
        """Like snap(), with everything camera.Snapped says (video path, pending name...)."""
        return self.call("snap", serial=serial, image=str(Path(local_image).resolve()),
                         name=name, directory=directory, publish=publish,
                         with_video=with_video)

    def fault(self, serial: str, **fields: Any) -> dict[str, Any]:
        """Flip FaultState fields (offline=, slow_factor=, transport_delay_s=, link_mb_s=,
        storage_full=) or a program fault (program="label_image", mode="fail", ...)."""
        return self.call("fault", serial=serial, fields=fields)

    def clear_faults(self, serial: str) -> dict[str, Any]:
        return self.call("clear_faults", serial=serial)

    def wifi(self, serial: str, on: bool) -> dict[str, Any]:
        """Cut (False) or restore (True) the device's loopback Wi-Fi, adb untouched."""
        return self.call("wifi", serial=serial, on=on)

    def kill(self, serial: str) -> dict[str, Any]:
        return self.call("kill", serial=serial)

    def restart(self, serial: str) -> dict[str, Any]:
        return self.call("restart", serial=serial)

    def down(self, timeout: float = 30.0) -> None:
        """Stop the fleet and wait for its process to exit (SIGKILL after `timeout`)."""
        try:
            pid = self.pid
        except FleetError:
            self._reap()
            return
        try:
            self.call("down", timeout=10)
        except FleetError:
            _signal(pid, signal.SIGTERM)
        if not _wait_exit(pid, timeout, self._process):
            _signal(pid, signal.SIGKILL)
            _wait_exit(pid, 5, self._process)
            (self.state_dir / FLEET_JSON).unlink(missing_ok=True)
        self._reap()

    def _reap(self) -> None:
        if self._process is not None:
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_exit(pid: int, timeout: float, proc: subprocess.Popen[bytes] | None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.pid == pid:
            if proc.poll() is not None:
                return True
        else:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
        time.sleep(0.05)
    return False


def log_tail(state_dir: Path, lines: int = 25) -> str:
    try:
        return "\n".join((state_dir / "fleet.log").read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no fleet.log)"


def start_fleet(state_dir: Path | str | None = None, devices: int = 3,
                profiles: list[str] | None = None, adb_port: int | None = None,
                base_port: int = DEFAULT_BASE_PORT, *, backend: str | None = None,
                timeout: float = 60.0, env: dict[str, str] | None = None) -> FleetClient:
    """Spawn `python -m adbflow.fleet.host` detached and wait until every device is
    `device` in the adb server. Raises FleetError with the daemon's log tail on failure.

    backend: MODULE:FACTORY for another DeviceBackend (tests); default NamespaceBackend."""
    state = Path(state_dir) if state_dir else default_state_dir()
    state.mkdir(parents=True, exist_ok=True)
    port = adb_port if adb_port is not None else default_adb_port()
    existing = state / FLEET_JSON
    if existing.exists():
        try:
            FleetClient(state).status()
        except FleetError:
            existing.unlink(missing_ok=True)  # stale: its daemon is gone
        else:
            raise FleetError(f"a fleet already runs in {state}",
                             hint="`adbflow fleet down` first, or use another --state-dir")
    # the imported adbflow, never one the current directory happens to hold (interpreter.py)
    cmd = [*module_argv("adbflow.fleet.host", python=sys.executable), "--state-dir", str(state),
           "--devices", str(devices), "--adb-port", str(port), "--base-port", str(base_port)]
    for profile in profiles or []:
        cmd += ["--profile", profile]
    if backend:
        cmd += ["--backend", backend]
    with open(state / "fleet.log", "ab") as logf:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                start_new_session=True, env={**os.environ, **(env or {})})
    client = FleetClient(state, process=proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise FleetError(f"fleet daemon exited with code {proc.returncode} during start:\n"
                             + log_tail(state), hint=f"full log: {state / 'fleet.log'}")
        try:
            info = json.loads(existing.read_text())
        except (OSError, ValueError):
            info = None
        if info and info.get("pid") == proc.pid:
            states = client.adb_states()
            if all(states.get(d["serial"]) == "device" for d in info["devices"]):
                return client
        time.sleep(0.05)
    _signal(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        _signal(proc.pid, signal.SIGKILL)
    raise FleetError(f"fleet did not come up within {timeout:.0f} s:\n" + log_tail(state),
                     hint=f"full log: {state / 'fleet.log'}")
