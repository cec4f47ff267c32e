"""A long-lived device shell driven line by line over stdin (shell protocol v2).

Why: some measurements need request/response round trips on a process that is already
running on the device — a clock exchange must not pay for spawning a shell per sample, or
the round trip (and so the error bound) grows by the spawn time. Device.shell closes stdin
at once and Device.stream_lines only reads; this is the third shape: write a line, read a
line, with one deadline per read. Devices without shell_v2 have no separate stdin channel
(their `shell:` is a pty that echoes input): callers fall back to one Device.shell per
request there (see runtime/clocksync.py).
"""
from __future__ import annotations

import socket
import struct
import time

from adbflow.device.device import Device
from adbflow.errors import AdbTimeoutError, DeviceUnavailableError

_MAX_LINE = 64 << 10


class ShellSession:
    """`shell,v2,raw:CMD` kept open; send_line() writes stdin, read_line() reads stdout.

    close() closes the stream, which kills CMD on the device (adbd sends SIGHUP)."""

    def __init__(self, device: Device, cmd: str, *, timeout: float) -> None:
        self.serial, self.cmd = device.serial, cmd
        # the open deadline only; each read_line gets its own
        self._wire = device._open(f"shell,v2,raw:{cmd}", cmd, time.monotonic() + timeout)
        self._buf = bytearray()
        self.exit_code: int | None = None

    def __enter__(self) -> ShellSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_line(self, text: str) -> None:
        """Write one line to the command's stdin (no timeout beyond the read's)."""
        data = text.encode() + b"\n"
        try:
            self._wire.deadline = time.monotonic() + 5.0
            self._wire.send(struct.pack("<BI", 0, len(data)) + data)
        except OSError as exc:
            raise DeviceUnavailableError(self.serial, self.cmd,
                                         message=f"connection lost writing stdin ({exc})") from exc

    def read_line(self, *, timeout: float) -> str:
        """The next stdout line (without newline); stderr is discarded.

        Raises AdbTimeoutError after `timeout` s, DeviceUnavailableError when the command
        exits or the device disconnects."""
        self._wire.deadline = time.monotonic() + timeout
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl]).rstrip(b"\r")
                del self._buf[:nl + 1]
                return line.decode("utf-8", "replace")
            if len(self._buf) > _MAX_LINE:
                raise DeviceUnavailableError(self.serial, self.cmd,
                                             message="device sent a line longer than 64 KiB",
                                             hint="the device command misbehaves")
            try:
                header = self._wire.read_exact(5)
                kind, length = header[0], struct.unpack("<I", header[1:])[0]
                payload = self._wire.read_exact(length) if length else b""
            except TimeoutError as exc:
                raise AdbTimeoutError(self.serial, self.cmd,
                                      message=f"no answer in {timeout:.1f}s") from exc
            except OSError as exc:
                raise DeviceUnavailableError(self.serial, self.cmd,
                                             message=f"connection lost ({exc})") from exc
            if kind == 1:
                self._buf += payload
            elif kind == 3:
                self.exit_code = payload[0] if payload else 255
                raise DeviceUnavailableError(self.serial, self.cmd,
                                             message=f"command exited ({self.exit_code})")

    def close(self) -> None:
        try:
            self._wire.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._wire.close()
