"""Framing of adb's smart-socket protocol and its `sync:` service, with one deadline.

Why our own smart-socket client instead of adbutils' connection object: every call needs
ONE deadline covering connect + request + output (adbutils sets per-recv socket timeouts,
its sync has no timeout at all, its connection starts a local adb server when a remote one
is unreachable and sleeps 10 ms on every close). The wire format is tiny and stable (host
services, `shell,v2:`, `sync:` v1), see AOSP adb docs/dev/{protocol,services,sync}.md.

This module only moves bytes: it raises socket.timeout, OSError, `Refused` (server FAIL)
and `SyncFail` (sync FAIL); `adbflow.device.failures` turns those into adbflow errors.
"""
from __future__ import annotations

import errno
import socket
import struct
import time

from adbflow.device.server import AdbServer

SYNC_CHUNK = 64 * 1024          # the sync protocol's largest DATA payload


class Refused(Exception):
    """The adb server answered FAIL (device not found, unauthorized, ...)."""


class SyncFail(Exception):
    """A sync FAIL reply (No such file, Read-only file system, ...)."""


class Wire:
    """One smart-socket connection to an adb server, with one absolute deadline.

    Raises socket.timeout when the deadline passes and OSError on connection faults.
    """

    def __init__(self, server: AdbServer, deadline: float | None) -> None:
        self.deadline = deadline
        connect_timeout = self._remaining(default=10.0)
        self.sock = socket.create_connection((server.host, server.port), timeout=connect_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _remaining(self, default: float | None = None) -> float | None:
        if self.deadline is None:
            return default
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        return left

    def send(self, data: bytes) -> None:
        self.sock.settimeout(self._remaining())
        self.sock.sendall(data)

    def recv_some(self, n: int = 65536) -> bytes:
        self.sock.settimeout(self._remaining())
        return self.sock.recv(n)

    def read_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.recv_some(n - len(buf))
            if not chunk:
                raise ConnectionResetError(errno.ECONNRESET, "adb connection closed")
            buf += chunk
        return bytes(buf)

    def request(self, service: str) -> None:
        """Send a host request; raise Refused(message) on FAIL."""
        data = service.encode("utf-8")
        self.send(b"%04x" % len(data) + data)
        self.status()

    def status(self) -> None:
        """Read one OKAY (return) or FAIL (raise Refused with its message)."""
        status = self.read_exact(4)
        if status == b"OKAY":
            return
        if status == b"FAIL":
            raise Refused(self.read_block().decode("utf-8", "replace"))
        raise ConnectionResetError(errno.EPROTO, f"protocol fault: status {status!r}")

    def recv_rest(self, limit: int = 4096) -> bytes:
        """What the peer sends until it closes, at most `limit` bytes (a short reply)."""
        buf = bytearray()
        while len(buf) < limit:
            chunk = self.recv_some(limit - len(buf))
            if not chunk:
                break
            buf += chunk
        return bytes(buf)

    def read_block(self) -> bytes:
        length = int(self.read_exact(4), 16)
        return self.read_exact(length)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------- shell v2

def shell_packet(kind: int, payload: bytes = b"") -> bytes:
    """One shell-protocol packet: id (0 stdin, 1 stdout, 2 stderr, 3 exit, 4 close stdin)."""
    return struct.pack("<BI", kind, len(payload)) + payload


def read_shell_packet(wire: Wire) -> tuple[int, bytes]:
    header = wire.read_exact(5)
    kind, length = header[0], struct.unpack("<I", header[1:])[0]
    return kind, (wire.read_exact(length) if length else b"")


# --------------------------------------------------------------------------- sync

#: STA2/LST2 answers; DNT2 entries are the same plus a u32 name length (adb's sync v2)
STAT_V2 = struct.Struct("<4sIQQIIIIQqqq")
DENT_V2 = struct.Struct("<4sIQQIIIIQqqqI")


def sync_request(wire: Wire, op: bytes, arg: bytes) -> None:
    wire.send(op + struct.pack("<I", len(arg)) + arg)


def sync_stat(wire: Wire, remote: str) -> tuple[int, int, int]:
    """(mode, size, mtime) of `remote`; mode 0 means it does not exist."""
    sync_request(wire, b"STAT", remote.encode())
    head = wire.read_exact(16)
    if head[:4] != b"STAT":
        raise ConnectionResetError(errno.EPROTO, f"protocol fault: {head[:4]!r}")
    mode, size, mtime = struct.unpack("<III", head[4:])
    return mode, size, mtime


def sync_lstat_v2(wire: Wire, remote: str) -> tuple[int, int, int, int]:
    """(mode, size, mtime, ino) of `remote` by LST2 (adbd with the stat_v2 feature); mode
    0 means it does not exist (the in-band errno is non-zero)."""
    sync_request(wire, b"LST2", remote.encode())
    head = wire.read_exact(STAT_V2.size)
    if head[:4] != b"LST2":
        raise ConnectionResetError(errno.EPROTO, f"protocol fault: {head[:4]!r}")
    _id, err, _dev, ino, mode, _nl, _uid, _gid, size, _at, mtime, _ct = STAT_V2.unpack(head)
    if err:
        return 0, 0, 0, 0
    return mode, size, mtime, ino


def sync_fail_message(wire: Wire, length: int) -> SyncFail:
    return SyncFail(wire.read_exact(length).decode("utf-8", "replace"))


def sync_quit(wire: Wire) -> None:
    try:
        wire.sock.settimeout(0.5)
        wire.sock.sendall(b"QUIT" + b"\0\0\0\0")
    except OSError:
        pass
    wire.close()
