"""`adb forward`: a laptop TCP port that reaches a port on the phone's own loopback.

Why through the adb server and not a direct stream per request: a forward is what every
llama.cpp-on-Android guide uses (`adb forward tcp:8080 tcp:8080`), any HTTP client reaches it,
and the adb server multiplexes every connection over the one USB (or TCP) link. The cost is a
listener the adb server keeps until told otherwise, so whoever opens one owns its release
(`Forward.close`, also on Ctrl-C; the adb server drops it by itself when the phone goes).

Wire format (AOSP adb docs/dev/services.txt, adb.cpp handle_forward_request):
`host-serial:SERIAL:forward:LOCAL;REMOTE` answers OKAY (request taken) and OKAY again (listener
installed), then, for `tcp:0`, the port the server picked as a length-prefixed string;
`killforward:LOCAL` answers OKAY OKAY; either second status may be FAIL + message.
"""
from __future__ import annotations

import time

from adbflow.device.device import Device
from adbflow.device.failures import adb_failures, connect
from adbflow.device.wire import Refused, Wire
from adbflow.errors import AdbError


def _second_status(wire: Wire) -> None:
    """The listener's own OKAY/FAIL after the request's OKAY."""
    status = wire.read_exact(4)
    if status == b"FAIL":
        raise Refused(wire.read_block().decode("utf-8", "replace"))
    if status != b"OKAY":
        raise ConnectionResetError(f"protocol fault: status {status!r}")


class Forward:
    """One `adb forward tcp:LOCAL tcp:REMOTE` of one device; close() removes it.

    `local_port` is the laptop's 127.0.0.1 port (picked by the adb server: tcp:0). Raises the
    device layer's error classes (AdbTimeoutError, DeviceUnavailableError, AdbError)."""

    def __init__(self, device: Device, remote_port: int, *, timeout: float = 10.0) -> None:
        self.device = device
        self.remote_port = int(remote_port)
        self.timeout = timeout
        self.local_port = 0
        cmd = f"forward tcp:0 tcp:{self.remote_port}"
        wire = connect(device.server, device.serial, cmd, time.monotonic() + timeout)
        try:
            with adb_failures(device.serial, cmd, timeout_message="timed out setting up the forward"):
                wire.request(f"host-serial:{device.adb_serial}:forward:tcp:0;tcp:{self.remote_port}")
                _second_status(wire)
                self.local_port = int(wire.read_block().decode("ascii", "replace").strip())
        finally:
            wire.close()

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
    """`adb forward --remove tcp:LOCAL`; False when there was nothing to remove (or no
    adb server: then there is no listener either)."""
    cmd = f"forward --remove tcp:{int(local_port)}"
    try:
        wire = connect(device.server, device.serial, cmd, time.monotonic() + timeout)
    except AdbError:
        return False
    try:
        with adb_failures(device.serial, cmd):
            wire.request(f"host-serial:{device.adb_serial}:killforward:tcp:{int(local_port)}")
            _second_status(wire)
        return True
    except AdbError:            # already gone (the device dropped, or removed before)
        return False
    finally:
        wire.close()


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
