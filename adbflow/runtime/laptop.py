"""Laptop-side storage faults (disk full, read-only, permissions) named as such.

Why: these errors surface deep inside a pull (the temp file), the BMP conversion, a story
write or a SQLite commit, where they used to look like "device unavailable", "damaged
picture" or a raw `sqlite3.OperationalError`. A phone got quarantined for the laptop's
full disk, and jobs failed for good. Here every such error becomes one `LaptopFault` that
names the path and the fix; the pipeline keeps the jobs pending until `writable()` says
the data directory accepts writes again.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from adbflow.errors import LaptopFault

# errnos that only a local file system gives (sockets never do)
LAPTOP_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                 errno.EFBIG, errno.EIO}
_PROBE_BYTES = 64 * 1024


def hint_for(code: int | None, path: str) -> tuple[str, str]:
    """(problem, fix) for an errno."""
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "no space left on the disk", (f"free space on the disk that holds {path} (or "
                                             "pass another --data-dir); waiting jobs resume")
    if code == errno.EROFS:
        return "the file system is read-only", (f"remount {path} read-write (or pass another "
                                                "--data-dir); waiting jobs resume")
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied", (f"make {path} writable for this user (chown/chmod) or "
                                     "pass another --data-dir; waiting jobs resume")
    if code == errno.EIO:
        return "I/O error", f"check the disk that holds {path} (dmesg); waiting jobs resume"
    return "cannot write", f"check {path}"


def fault_from_os(exc: OSError, path: Path | str | None = None) -> LaptopFault:
    where = str(path or exc.filename or "the data directory")
    problem, fix = hint_for(exc.errno, where)
    return LaptopFault(where, f"{problem} ({exc.strerror or exc})", hint=fix)


def laptop_cause(exc: BaseException) -> OSError | None:
    """The local OSError behind an adb error (e.g. the pull's temp file hit a full disk),
    walking the cause chain; None when the error is the device's or the link's."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in LAPTOP_ERRNOS:
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


_SQLITE_PATTERNS = (("database or disk is full", errno.ENOSPC),
                    ("readonly database", errno.EROFS),
                    ("unable to open database file", errno.EACCES),
                    ("disk i/o error", errno.EIO))


def fault_from_sqlite(exc: sqlite3.Error, path: Path | str) -> LaptopFault | None:
    """A SQLite error that is the disk's (full, read-only, unopenable), else None."""
    text = str(exc).lower()
    for pattern, code in _SQLITE_PATTERNS:
        if pattern in text:
            if code in (errno.EROFS, errno.EACCES):
                code = errno.EROFS if _read_only_fs(Path(path).parent) else errno.EACCES
            problem, fix = hint_for(code, str(path))
            return LaptopFault(str(path), f"{problem} (sqlite: {exc})", hint=fix)
    return None


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


@contextlib.contextmanager
def laptop_io(path: Path | str) -> Iterator[None]:
    """Turn a local storage OSError inside into a LaptopFault naming `path`."""
    try:
        yield
    except OSError as exc:
        if exc.errno in LAPTOP_ERRNOS:
            raise fault_from_os(exc, exc.filename or path) from exc
        raise


def writable(data_dir: Path) -> LaptopFault | None:
    """None when data_dir takes a 64 KiB write (and fsync) again, else the fault."""
    probe = Path(data_dir) / f".adbflow-write-probe-{os.getpid()}"
    try:
        with probe.open("wb") as fh:
            fh.write(b"\0" * _PROBE_BYTES)
            fh.flush()
            os.fsync(fh.fileno())
        return None
    except OSError as exc:
        return fault_from_os(exc, data_dir)
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


_PULL_PART = re.compile(r"^\..+\.part-(\d+)-\d+$")   # Device.pull: .NAME.part-PID-TID
STALE_PARTIAL_S = 120.0


def clean_stale_partials(data_dir: Path, *, now: float | None = None) -> list[Path]:
    """Remove temp files a killed adbflow left behind: pull temps of processes that are
    gone (their name carries the pid), other `.part`/`.tmp` files older than 2 minutes (a
    live `run` next to us writes its own only for moments). Returns what was removed."""
    import psutil
    now = time.time() if now is None else now
    removed: list[Path] = []
    d = Path(data_dir)
    dirs = [d / "stories"]
    for top in ("pictures", "work"):
        with contextlib.suppress(OSError):
            dirs += [p for p in (d / top).iterdir() if p.is_dir()]
    for sub in dirs:
        try:
            entries = list(sub.iterdir())
        except OSError:
            continue
        for p in entries:
            m = _PULL_PART.match(p.name)
            try:
                if m:
                    stale = not psutil.pid_exists(int(m.group(1)))
                elif p.name.endswith((".part", ".tmp")):
                    stale = now - p.stat().st_mtime > STALE_PARTIAL_S
                else:
                    continue
                if stale:
                    p.unlink()
                    removed.append(p)
            except OSError:
                continue
    return removed
