"""The sync data phase (adbflow.device.transfer) frame by frame: sizes around the 64 KiB
frame and the 16-frame send batch, short reads, the streaming hook, FAIL and faults."""
from __future__ import annotations

import hashlib
import io
import os
import socket
import struct
import threading

import pytest

from adbflow.device.transfer import FRAMES_PER_SEND, recv_file, send_file
from adbflow.device.wire import SYNC_CHUNK, SyncFail

SIZES = [0, 1, SYNC_CHUNK - 1, SYNC_CHUNK, SYNC_CHUNK + 1, 16 * SYNC_CHUNK,
         16 * SYNC_CHUNK + 5, (3 << 20) + 17]


class _Wire:
    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.deadline = sock, None


class ShortReads(io.RawIOBase):
    """A file that returns at most 1000 bytes per read (pipes, FUSE)."""

    def __init__(self, data: bytes) -> None:
        self.src = io.BytesIO(data)

    def readinto(self, b) -> int:
        chunk = self.src.read(min(len(b), 1000))
        b[:len(chunk)] = chunk
        return len(chunk)


def _frames(raw: bytes) -> list[tuple[bytes, bytes]]:
    out, i = [], 0
    while i < len(raw):
        kind, n = struct.unpack("<4sI", raw[i:i + 8])
        out.append((kind, raw[i + 8:i + 8 + n]))
        i += 8 + n
    return out


def _collect(sock: socket.socket, box: list) -> None:
    buf = bytearray()
    while chunk := sock.recv(1 << 20):
        buf += chunk
    box.append(bytes(buf))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("short", [False, True])
def test_send_file_frames_every_byte_once(size: int, short: bool) -> None:
    data = os.urandom(size)
    a, b = socket.socketpair()
    box: list = []
    t = threading.Thread(target=_collect, args=(b, box))
    t.start()
    seen = hashlib.sha256()
    src = ShortReads(data) if short else io.BytesIO(data)
    n = send_file(_Wire(a), src, on_data=seen.update)
    a.close()
    t.join()
    frames = _frames(box[0])
    assert n == size and seen.hexdigest() == hashlib.sha256(data).hexdigest()
    assert all(k == b"DATA" and 0 < len(p) <= SYNC_CHUNK for k, p in frames)
    assert b"".join(p for _, p in frames) == data
    assert all(len(p) == SYNC_CHUNK for _, p in frames[:-1])     # only the last is short


def _serve(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(payload)
    sock.close()


def _data_frames(data: bytes, step: int = SYNC_CHUNK) -> bytes:
    return b"".join(b"DATA" + struct.pack("<I", len(data[i:i + step])) + data[i:i + step]
                    for i in range(0, len(data), step))


@pytest.mark.parametrize("size", SIZES)
def test_recv_file_writes_every_payload(size: int) -> None:
    data = os.urandom(size)
    a, b = socket.socketpair()
    threading.Thread(target=_serve, args=(b, _data_frames(data, 40_000) + b"DONE\0\0\0\0")).start()
    out = io.BytesIO()
    seen = hashlib.sha256()
    assert recv_file(_Wire(a), out, on_data=seen.update) == size
    assert out.getvalue() == data and seen.hexdigest() == hashlib.sha256(data).hexdigest()


def test_recv_file_fail_too_large_and_faults() -> None:
    a, b = socket.socketpair()
    msg = b"No such file or directory"
    threading.Thread(target=_serve, args=(b, b"FAIL" + struct.pack("<I", len(msg)) + msg)).start()
    with pytest.raises(SyncFail, match="No such file"):
        recv_file(_Wire(a), io.BytesIO())
    a, b = socket.socketpair()
    threading.Thread(target=_serve, args=(b, _data_frames(b"x" * 100_000))).start()
    with pytest.raises(ValueError, match="big"):
        recv_file(_Wire(a), io.BytesIO(), max_bytes=70_000, too_large=lambda: ValueError("big"))
    a, b = socket.socketpair()
    threading.Thread(target=_serve, args=(b, b"DATA" + struct.pack("<I", SYNC_CHUNK + 1))).start()
    with pytest.raises(OSError, match="protocol fault"):
        recv_file(_Wire(a), io.BytesIO())
    a, b = socket.socketpair()
    threading.Thread(target=_serve, args=(b, _data_frames(b"y" * 10)[:12])).start()
    with pytest.raises(ConnectionResetError):                    # cut mid-frame
        recv_file(_Wire(a), io.BytesIO())


def test_an_on_data_failure_stops_the_push_with_its_own_error() -> None:
    """on_data runs on a helper thread beside sendall: its exception must still reach the
    caller (a provision whose hash callback fails must not report a good copy)."""
    a, b = socket.socketpair()
    box: list = []
    t = threading.Thread(target=_collect, args=(b, box))
    t.start()
    calls = []

    def boom(chunk: memoryview) -> None:
        calls.append(len(chunk))
        if len(calls) == 20:
            raise ValueError("hash callback failed")
    with pytest.raises(ValueError, match="hash callback failed"):
        send_file(_Wire(a), io.BytesIO(os.urandom(4 * FRAMES_PER_SEND * SYNC_CHUNK)), on_data=boom)
    a.close()
    t.join()
    assert len(calls) == 20
