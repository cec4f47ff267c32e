"""`LineStream`: the stdout lines of a long-running device command (inotifyd, logcat).

Why a class of its own: a stream outlives the call that opened it, ends in three ways
(the command exits, the device disconnects, the per-stream deadline passes) and must kill
the command when closed: closing the socket makes the adb server CLSE the stream, and
adbd (or the virtual adbd) kills the command's process group.
"""
from __future__ import annotations

import socket
from collections.abc import Iterator

from adbflow.device.failures import timeout_error
from adbflow.device.wire import Wire, read_shell_packet, shell_packet

_MAX_LINE = 1 << 20


class LineStream:
    """Lines of a running device command. close() kills it on the device.

    Iteration ends when the command exits (exit_code is then set) or the device disconnects.
    A per-stream deadline (timeout) ends iteration with AdbTimeoutError.
    """

    def __init__(self, wire: Wire, serial: str, cmd: str, *, v2: bool) -> None:
        self._wire, self.serial, self.cmd, self._v2 = wire, serial, cmd, v2
        self.exit_code: int | None = None
        self._buf = bytearray()
        self._done = False
        if v2:
            try:
                wire.send(shell_packet(4))            # close stdin
            except OSError:
                self._done = True

    def __enter__(self) -> LineStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl]).rstrip(b"\r")
                del self._buf[:nl + 1]
                return line.decode("utf-8", "replace")
            if self._done:
                if self._buf:
                    line = bytes(self._buf)
                    self._buf.clear()
                    return line.decode("utf-8", "replace")
                raise StopIteration
            self._fill()

    def _fill(self) -> None:
        try:
            if self._v2:
                kind, payload = read_shell_packet(self._wire)
                if kind == 1:
                    self._buf += payload
                elif kind == 3:
                    self.exit_code = payload[0] if payload else 255
                    self._finish()
            else:
                chunk = self._wire.recv_some()
                if chunk:
                    self._buf += chunk
                else:
                    self._finish()
        except TimeoutError as exc:
            self._finish()
            raise timeout_error(self.serial, self.cmd,
                                message="stream timed out; command killed") from exc
        except (OSError, ValueError):
            self._finish()        # the device went away: the stream simply ends
        if len(self._buf) > _MAX_LINE:             # a 1 MiB line is garbage: cut it
            self._buf += b"\n"

    def _finish(self) -> None:
        self._done = True
        self._wire.close()

    def close(self) -> None:
        """Kill the device command (the adb server closes the stream) and stop iterating."""
        self._done = True
        try:
            self._wire.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._wire.close()
