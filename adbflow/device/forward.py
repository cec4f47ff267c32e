"""`adb forward`: a laptop TCP port that reaches a port on the phone's own loopback.

Why through the adb server and not a direct stream per request: a forward is what every
llama.cpp-on-Android guide uses (`adb forward tcp:8080 tcp:8080`), any HTTP client reaches it,
and the adb server multiplexes every connection over the one USB (or TCP) link. The cost is a
listener the adb server keeps until told otherwise, so whoever opens one owns its release
(`Forward.close`, also on Ctrl-C; the adb server drops it by itself when the phone goes).

The wire requests (`host-serial:SERIAL:forward:LOCAL;REMOTE`, `killforward:`) are
Device.forward / remove_forward; this module adds ownership (close on exit) and the listing.
"""
from __future__ import annotations

import time

from adbflow.device.device import Device
from adbflow.device.failures import adb_failures, connect
from adbflow.errors import AdbError


class Forward:
    """One `adb forward tcp:LOCAL tcp:REMOTE` of one device, owned: close() removes it.

    `local_port` is the laptop's 127.0.0.1 port (picked by the adb server: tcp:0). The
    request itself is Device.forward (the one implementation, shared with the split's RPC
    tunnels). Raises the device layer's error classes (AdbTimeoutError,
    DeviceUnavailableError, AdbError)."""

    def __init__(self, device: Device, remote_port: int, *, timeout: float = 10.0) -> None:
        self.device = device
        self.remote_port = int(remote_port)
        self.timeout = timeout
        self.local_port = 0
        self.local_port = device.forward("tcp:0", f"tcp:{self.remote_port}", timeout=timeout)

    def close(self) -> None:
        """Remove the listener (idempotent; a device that is gone took it with it)."""
        if not self.local_port:
            return
        port, self.local_port = self.local_port, 0
        remove_forward(self.device, port, timeout=self.timeout)

    def __enter__(self) -> Forward:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def remove_forward(device: Device, local_port: int, *, timeout: float = 10.0) -> bool:
    """`adb forward --remove tcp:LOCAL`; False when there was nothing to remove (the device
    dropped, or it was removed before; or no adb server: then there is no listener either)."""
    try:
        device.remove_forward(f"tcp:{int(local_port)}", timeout=timeout)
        return True
    except AdbError:
        return False


def list_forwards(device: Device, *, timeout: float = 10.0) -> list[tuple[str, str, str]]:
    """(serial, local, remote) of every forward the device's adb server holds (`adb forward
    --list`); what tests and the exit check look at."""
    cmd = "forward --list"
    wire = connect(device.server, device.serial, cmd, time.monotonic() + timeout)
    try:
        with adb_failures(device.serial, cmd):
            wire.request("host:list-forward")
            text = wire.read_block().decode("utf-8", "replace")
    finally:
        wire.close()
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3:
            out.append((parts[0], parts[1], parts[2]))
    return out
