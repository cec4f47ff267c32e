"""The contract between the adb transport (protocol side) and a device backend.

Why a Protocol: the transport (`transport.py`, shell/sync services) must not know how a
device's root, namespace, procfs simulation or stand-in programs are built; the backend
(`backend.py`) must not know the adb wire format. Both are tested through this seam.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from adbflow.fleet.faults import FaultState

if TYPE_CHECKING:  # pragma: no cover - types only
    from adbflow.fleet.spawn_client import DeviceProcess


class DeviceBackend(Protocol):
    serial: str
    faults: FaultState

    def banner_props(self) -> dict[str, str]:
        """ro.product.name / ro.product.model / ro.product.device for the CNXN banner."""

    async def start(self) -> None:
        """Create the root and the namespace holder; start the load model."""

    async def stop(self) -> None:
        """Kill every device process and the holder; keep the root on disk."""

    async def spawn(self, command: str | None, *, pty: bool, env: dict[str, str] | None = None,
                    merge_stderr: bool = False
                    ) -> tuple[asyncio.subprocess.Process | DeviceProcess, int | None]:
        """Run `command` with the device's /system/bin/sh (-c) inside the device, or an
        interactive shell when None.

        pty=False: the Process has three pipes (stdin, stdout, stderr); returns (proc, None).
        merge_stderr=True: the child's stderr is its stdout pipe (proc.stderr is None), as
        adbd's shell v1 and exec: give a command one socket for both, so the two streams
        keep the order the command wrote them in.
        pty=True: stdin/stdout/stderr of the child are a pty slave; returns (proc, master_fd)
        and the caller reads/writes master_fd (proc.stdin/stdout are None).
        The process leads its own process group (start_new_session) so the transport can
        SIGHUP then SIGKILL the whole group when the stream closes: with `proc.killpg(sig)`
        when the object has it (NamespaceBackend's spawner.DeviceProcess: the fleet does not
        know the pid while it runs), else os.killpg(proc.pid, sig). Either object offers
        stdin/stdout/stderr, wait(), communicate() and returncode like asyncio's Process."""

    def resolve(self, device_path: str, *, follow_last: bool = True) -> Path:
        """Host path for an absolute device path, symlinks resolved relative to the device
        root (never escaping it). Raises PermissionError for paths outside writable areas
        when writing is attempted by the caller."""

    def set_load(self, percent: float) -> None:
        """Configured extra CPU load (0-100) on top of the profile's background load."""
