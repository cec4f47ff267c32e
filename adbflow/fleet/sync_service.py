"""The `sync:` service: file transfer as adbd does it (AOSP file_sync_service.cpp).

Why byte-level fidelity matters: `adb push/pull` (STA2/LIS2/SND2/RCV2, SEND for small
files) and adbutils (v1 STAT/LIST/SEND/RECV, one connection per operation, no QUIT)
both talk to the same service, and the orchestrator moves 100 MB model files with them.

Requests are `id(4) + u32 len + path`. Device paths are mapped to host paths with
backend.resolve() (symlinks resolved inside the device root). Errors go back the way
adbd sends them: in-band errno for STA2/LST2/DNT2, `FAIL` + message otherwise, after
which the connection is closed (adbd does the same).
"""
from __future__ import annotations

import errno
import os
import stat as stat_mod
import struct
from pathlib import Path

from adbflow.fleet.access import ShellAccess
from adbflow.fleet.backend_api import DeviceBackend
from adbflow.fleet.stream import Stream

SYNC_DATA_MAX = 64 * 1024
MAX_PATH = 1024
#: Flush RECV data to the host in writes of about this size (fewer, larger WRTEs).
_OUT_BATCH = 1024 * 1024

FLAG_DRY_RUN = 0x80000000
_COMPRESSION = 0x7  # brotli | lz4 | zstd: never advertised, so refused

_REQ = struct.Struct("<4sI")
_STAT_V1 = struct.Struct("<4sIII")
_STAT_V2 = struct.Struct("<4sIQQIIIIQqqq")
_DENT_V1 = struct.Struct("<4sIIII")
_DENT_V2 = struct.Struct("<4sIQQIIIIQqqqI")
_SETUP = struct.Struct("<4sII")  # SND2: id, mode, flags
_RECV_SETUP = struct.Struct("<4sI")  # RCV2: id, flags


class _StreamBytes:
    """readexactly() over an adb stream's chunks."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def readexactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = await self.stream.read()
            if chunk is None:
                raise EOFError("host closed the sync stream")
            self.buf += chunk
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


class _SyncFail(Exception):
    """Reply FAIL with this message and end the sync session."""


def _fail_errno(prefix: str, exc: OSError) -> _SyncFail:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return _SyncFail(f"{prefix}: {reason}" if prefix else reason)


async def serve(stream: Stream, backend: DeviceBackend) -> None:
    rd = _StreamBytes(stream)
    try:
        while True:
            ident, length = _REQ.unpack(await rd.readexactly(_REQ.size))
            if ident == b"QUIT":
                return
            if length > MAX_PATH:
                await _send_fail(stream, "path too long")
                return
            path = (await rd.readexactly(length)).decode("utf-8", "surrogateescape")
            try:
                await _handle(ident, path, rd, stream, backend)
            except _SyncDone:
                return
            except _SyncFail as exc:
                await _send_fail(stream, str(exc))
                return
    except EOFError:
        return


async def _send_fail(stream: Stream, message: str) -> None:
    data = message.encode("utf-8", "replace")
    await stream.write(_REQ.pack(b"FAIL", len(data)) + data)


#: sync requests that need a banner feature: an older adbd answers them "unknown command".
_NEEDS_FEATURE = {b"STA2": "stat_v2", b"LST2": "stat_v2", b"LIS2": "ls_v2",
                  b"SND2": "sendrecv_v2", b"RCV2": "sendrecv_v2"}


def _access(backend: DeviceBackend) -> ShellAccess | None:
    """The backend's ShellAccess (NamespaceBackend), None for test backends without one."""
    return getattr(backend, "access", None)


async def _handle(ident: bytes, path: str, rd: _StreamBytes, stream: Stream,
                  backend: DeviceBackend) -> None:
    features = getattr(backend, "adbd_features", None)
    need = _NEEDS_FEATURE.get(ident)
    if need and callable(features) and need not in features():
        raise _SyncFail(f"unknown command {ident.decode('ascii', 'replace')}")
    if ident == b"STAT":
        await stream.write(_stat_v1(backend, path))
    elif ident in (b"STA2", b"LST2"):
        await stream.write(_stat_v2(backend, path, follow=ident == b"STA2"))
    elif ident == b"LIST":
        await _list(backend, path, stream, v2=False)
    elif ident == b"LIS2":
        await _list(backend, path, stream, v2=True)
    elif ident == b"RECV":
        await _recv(backend, path, stream)
    elif ident == b"RCV2":
        _, flags = _RECV_SETUP.unpack(await rd.readexactly(_RECV_SETUP.size))
        if flags & _COMPRESSION:
            raise _SyncFail("compression is not supported by this device")
        await _recv(backend, path, stream)
    elif ident == b"SEND":
        spath, _, mode_text = path.rpartition(",")
        try:
            mode = int(mode_text)
        except ValueError:
            raise _SyncFail("missing or invalid mode") from None
        await _send(backend, spath or path, mode, False, rd, stream)
    elif ident == b"SND2":
        setup_id, mode, flags = _SETUP.unpack(await rd.readexactly(_SETUP.size))
        if setup_id != b"SND2":
            raise _SyncFail("SND2 setup message expected")
        if flags & _COMPRESSION:
            raise _SyncFail("compression is not supported by this device")
        await _send(backend, path, mode, bool(flags & FLAG_DRY_RUN), rd, stream)
    else:
        raise _SyncFail(f"unknown command {ident!r}")


# -- stat / list -----------------------------------------------------------------------------

def _host_path(backend: DeviceBackend, path: str, follow: bool) -> Path:
    if not path.startswith("/"):
        raise FileNotFoundError(errno.ENOENT, "relative path", path)
    return backend.resolve(path, follow_last=follow)


def _do_stat(backend: DeviceBackend, path: str, follow: bool) -> os.stat_result:
    host = _host_path(backend, path, follow)
    access = _access(backend)
    if access is not None:
        access.check_stat(path, follow=follow)
    return os.stat(host) if follow else os.lstat(host)


def _os_errno(exc: Exception) -> int:
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    return errno.ENOENT


def _stat_v1(backend: DeviceBackend, path: str) -> bytes:
    try:
        st = _do_stat(backend, path, follow=False)
    except (OSError, ValueError):
        return _STAT_V1.pack(b"STAT", 0, 0, 0)
    return _STAT_V1.pack(b"STAT", st.st_mode & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF,
                         int(st.st_mtime) & 0xFFFFFFFF)


def _v2_fields(st: os.stat_result) -> tuple[int, ...]:
    return (0, st.st_dev, st.st_ino, st.st_mode, st.st_nlink, st.st_uid, st.st_gid,
            st.st_size, int(st.st_atime), int(st.st_mtime), int(st.st_ctime))


def _stat_v2(backend: DeviceBackend, path: str, follow: bool) -> bytes:
    ident = b"STA2" if follow else b"LST2"
    try:
        st = _do_stat(backend, path, follow)
    except (OSError, ValueError) as exc:
        return _STAT_V2.pack(ident, _os_errno(exc), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    return _STAT_V2.pack(ident, *_v2_fields(st))


async def _list(backend: DeviceBackend, path: str, stream: Stream, *, v2: bool) -> None:
    out: list[bytes] = []
    try:
        host = _host_path(backend, path, True)
        access = _access(backend)
        if access is not None:
            access.check_list(path)
        names = [".", ".."] + sorted(os.listdir(host))
    except (OSError, ValueError):
        names, host = [], Path("/nonexistent")
    for name in names:
        raw = name.encode("utf-8", "surrogateescape")
        try:
            st = os.lstat(host / name)
        except OSError as exc:
            if v2:
                out.append(_DENT_V2.pack(b"DNT2", _os_errno(exc), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                         len(raw)) + raw)
            continue
        if v2:
            out.append(_DENT_V2.pack(b"DNT2", *_v2_fields(st), len(raw)) + raw)
        else:
            out.append(_DENT_V1.pack(b"DENT", st.st_mode & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF,
                                     int(st.st_mtime) & 0xFFFFFFFF, len(raw)) + raw)
    out.append(_DENT_V2.pack(b"DONE", *([0] * 12)) if v2 else _DENT_V1.pack(b"DONE", 0, 0, 0, 0))
    await stream.write(b"".join(out))


# -- pull ------------------------------------------------------------------------------------

async def _recv(backend: DeviceBackend, path: str, stream: Stream) -> None:
    try:
        access = _access(backend)
        if access is not None:
            access.check_read(path)
        fh = open(_host_path(backend, path, True), "rb")
    except (OSError, ValueError) as exc:
        raise _fail_errno("", exc if isinstance(exc, OSError) else OSError(errno.ENOENT, "")) \
            from None
    with fh:
        batch: list[bytes] = []
        size = 0
        while True:
            try:
                data = fh.read(SYNC_DATA_MAX)
            except OSError as exc:
                raise _fail_errno("read failed", exc) from None
            if not data:
                break
            batch.append(_REQ.pack(b"DATA", len(data)))
            batch.append(data)
            size += len(data)
            if size >= _OUT_BATCH:
                await stream.write(b"".join(batch))
                batch, size = [], 0
        batch.append(_REQ.pack(b"DONE", 0))
        await stream.write(b"".join(batch))


# -- push ------------------------------------------------------------------------------------

async def _drain_until_done(rd: _StreamBytes) -> None:
    """After a FAIL adbd keeps reading DATA until DONE so the host sees the error."""
    while True:
        ident, size = _REQ.unpack(await rd.readexactly(_REQ.size))
        if ident == b"DONE":
            return
        if ident != b"DATA":
            return
        await rd.readexactly(size)


async def _receive_chunks(rd: _StreamBytes, sink) -> int:  # noqa: ANN001
    """Feed DATA payloads to sink(bytes) until DONE; returns DONE's mtime."""
    while True:
        ident, size = _REQ.unpack(await rd.readexactly(_REQ.size))
        if ident == b"DONE":
            return size
        if ident != b"DATA":
            raise _SyncFail("invalid data message")
        if size > SYNC_DATA_MAX:
            raise _SyncFail("oversize data message")
        sink(await rd.readexactly(size))


async def _send(backend: DeviceBackend, path: str, mode: int, dry_run: bool,
                rd: _StreamBytes, stream: Stream) -> None:
    if stat_mod.S_ISLNK(mode):
        await _send_symlink(backend, path, dry_run, rd, stream)
        return
    if dry_run:
        await _receive_chunks(rd, lambda data: None)
        await stream.write(_REQ.pack(b"OKAY", 0))
        return
    if backend.faults.storage_full:
        # What a full /data looks like: the first write fails with ENOSPC, the partial
        # file is removed, the host reads "remote write failed: No space left on device".
        first = await rd.readexactly(_REQ.size)
        ident, size = _REQ.unpack(first)
        if ident == b"DONE":  # an empty file needs no space
            _open_for_write(backend, path, mode)[0].close()
            await stream.write(_REQ.pack(b"OKAY", 0))
            return
        await rd.readexactly(size)
        await _send_fail(stream, "write failed: No space left on device")
        await _drain_until_done(rd)
        raise _SyncDone()
    try:
        fh, host = _open_for_write(backend, path, mode)
    except _SyncFail as exc:
        await _send_fail(stream, str(exc))
        await _drain_until_done(rd)
        raise _SyncDone() from None
    ok = False
    try:
        with fh:
            try:
                mtime = await _receive_chunks(rd, fh.write)
            except OSError as exc:
                await _send_fail(stream, str(_fail_errno("write failed", exc)))
                await _drain_until_done(rd)
                raise _SyncDone() from None
        try:
            os.utime(host, (mtime, mtime))
        except OSError:
            pass
        ok = True
        written = getattr(backend, "on_file_written", None)
        if callable(written):  # e.g. MediaProvider indexing what arrives in storage
            written(path, host)
    finally:
        if not ok:
            try:
                host.unlink()
            except OSError:
                pass
    await stream.write(_REQ.pack(b"OKAY", 0))


class _SyncDone(_SyncFail):
    """FAIL was already sent: end the session without another message."""


def _open_for_write(backend: DeviceBackend, path: str, mode: int):  # noqa: ANN201
    """(binary file object, host path) for a pushed file, creating parent dirs like
    adbd's secure_mkdirs (fixed_push_mkdir), with the shell user's rights: /system and
    / are read-only ("remote couldn't create file: Read-only file system"), /data outside
    /data/local/tmp is "Permission denied"; what is created belongs to the shell."""
    access = _access(backend)
    writable = getattr(backend, "writable", None)
    try:
        if access is not None:
            access.check_create(path)
        elif callable(writable) and not writable(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        host = _host_path(backend, path, True)
    except OSError as exc:
        raise _fail_errno("couldn't create file", exc) from None
    except ValueError as exc:
        raise _SyncFail(f"couldn't create file: {exc}") from None
    perm = (mode & 0o777) or 0o644
    try:
        fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, perm)
    except FileNotFoundError:
        try:
            _makedirs(host.parent, access)
        except OSError as exc:
            raise _fail_errno("secure_mkdirs failed", exc) from None
        try:
            fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, perm)
        except OSError as exc:
            raise _fail_errno("couldn't create file", exc) from None
    except OSError as exc:
        raise _fail_errno("couldn't create file", exc) from None
    try:
        os.fchmod(fd, perm)
    except OSError:
        pass
    if access is not None:
        access.give_to_shell(host)
    return os.fdopen(fd, "wb", buffering=0), host


def _makedirs(host_dir: Path, access: ShellAccess | None) -> None:
    """mkdir -p, each new directory owned by the shell (adbd runs as uid 2000)."""
    missing = []
    d = host_dir
    while not d.exists():
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        os.mkdir(d, 0o771)
        if access is not None:
            access.give_to_shell(d)


async def _send_symlink(backend: DeviceBackend, path: str, dry_run: bool, rd: _StreamBytes,
                        stream: Stream) -> None:
    parts: list[bytes] = []
    await _receive_chunks(rd, parts.append)
    target = b"".join(parts).rstrip(b"\0").decode("utf-8", "surrogateescape")
    if not dry_run:
        try:
            access = _access(backend)
            writable = getattr(backend, "writable", None)
            if access is not None:
                access.check_create(path, follow=False)
            elif callable(writable) and not writable(path.rsplit("/", 1)[0] or "/"):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
            host = _host_path(backend, path, False)
            _makedirs(host.parent, access)
            if host.is_symlink() or host.exists():
                host.unlink()
            os.symlink(target, host)
            if access is not None:
                access.give_to_shell(host)
        except OSError as exc:
            raise _fail_errno("symlink failed", exc) from None
        except ValueError as exc:
            raise _SyncFail(f"symlink failed: {exc}") from None
    await stream.write(_REQ.pack(b"OKAY", 0))
