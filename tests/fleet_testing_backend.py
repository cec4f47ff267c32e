"""A test double at the DeviceBackend seam: a plain directory as the device root.

Why: the transport/protocol tests must check the adb wire behaviour (streams, shell v1/v2,
sync, faults) without needing namespaces or root. This backend runs commands with the
host's /bin/sh in the root directory (no isolation: tests only) and maps device paths
into the root directory with symlinks resolved inside it, like the real backend does.
"""
from __future__ import annotations

import asyncio
import os
import pty as pty_mod
import signal
from pathlib import Path

from adbflow.fleet.faults import FaultState


class DirBackend:
    """DeviceBackend over a host directory; the host commands run with cwd=root."""

    def __init__(self, serial: str, profile: str = "test", root_dir: Path | None = None,
                 faults: FaultState | None = None) -> None:
        self.serial = serial
        self.profile = profile
        self.root = Path(root_dir) if root_dir else Path("/tmp") / f"adbflow-dir-{os.getpid()}"
        self.faults = faults or FaultState()
        self.load = 0.0
        self.started = 0
        self._pgids: set[int] = set()  # every group ever spawned: background jobs too

    def banner_props(self) -> dict[str, str]:
        return {"ro.product.name": f"adbflow_{self.profile}",
                "ro.product.model": f"adbflow-virtual {self.profile}",
                "ro.product.device": f"vdev_{self.profile}"}

    async def start(self) -> None:
        for sub in ("storage/emulated/0/Pictures", "storage/emulated/0/DCIM",
                    "storage/emulated/0/Download", "data/local/tmp", "system/bin"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        sdcard = self.root / "sdcard"
        if not sdcard.is_symlink():
            sdcard.symlink_to("/storage/emulated/0")
        self.started += 1

    async def stop(self) -> None:
        for pgid in list(self._pgids):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._pgids.clear()

    async def spawn(self, command: str | None, *, pty: bool, env: dict[str, str] | None = None,
                    merge_stderr: bool = False
                    ) -> tuple[asyncio.subprocess.Process, int | None]:
        argv = ["/bin/sh", "-c", command] if command is not None else ["/bin/sh", "-i"]
        full_env = dict(os.environ, ADBFLOW_DEVICE_ROOT=str(self.root), **(env or {}))
        if pty:
            master, slave = pty_mod.openpty()
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=slave, stdout=slave, stderr=slave, cwd=self.root,
                    env=full_env, start_new_session=True,
                    preexec_fn=lambda: _set_ctty(),
                )
            finally:
                os.close(slave)
            self._track(proc)
            return proc, master
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT if merge_stderr else asyncio.subprocess.PIPE,
            cwd=self.root, env=full_env, start_new_session=True)
        self._track(proc)
        return proc, None

    def _track(self, proc: asyncio.subprocess.Process) -> None:
        self._pgids.add(proc.pid)

    def resolve(self, device_path: str, *, follow_last: bool = True) -> Path:
        parts = [p for p in device_path.split("/") if p and p != "."]
        current: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if current:
                    current.pop()
                continue
            candidate = self.root.joinpath(*current, part)
            if candidate.is_symlink() and (parts or follow_last):
                hops += 1
                if hops > 40:
                    raise OSError(40, "Too many levels of symbolic links", device_path)
                target = os.readlink(candidate)
                if target.startswith("/"):
                    current = []
                parts = [p for p in target.split("/") if p and p != "."] + parts
                continue
            current.append(part)
        return self.root.joinpath(*current)

    def writable(self, device_path: str) -> bool:
        """Same rule as a phone for adb: /data, /storage (and /sdcard into it) only."""
        real = "/" + str(self.resolve(device_path).relative_to(self.root)).lstrip(".")
        return any(real == p or real.startswith(p + "/") for p in ("/data", "/storage"))

    def set_load(self, percent: float) -> None:
        self.load = float(percent)


def _set_ctty() -> None:
    import fcntl
    import termios
    try:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    except OSError:
        pass


def make_backend(serial: str, profile: str, root_dir: Path, faults: FaultState) -> DirBackend:
    """Backend factory in the shape FleetHost expects (`--backend tests.fleet_testing_backend:make_backend`)."""
    return DirBackend(serial, profile, root_dir, faults)


class _BrokenBackend(DirBackend):
    async def start(self) -> None:
        raise RuntimeError("device root exploded on purpose (test)")


def broken_backend(serial: str, profile: str, root_dir: Path, faults: FaultState) -> DirBackend:
    """A backend whose start fails: the fleet must report it and clean up."""
    return _BrokenBackend(serial, profile, root_dir, faults)
