"""What the shell user (uid 2000) may do with a device path, for the fleet's own file I/O.

Why: on a phone adbd's sync service runs as the shell user, so `adb push` to /system or
/data (outside /data/local/tmp) fails with the kernel's answer. The fleet's sync service
runs in the fleet process (root, outside the device), so it asks this module first and
then does the I/O itself. The rules are the kernel's: search (x) on every directory of
the canonical path, write+search on the directory that gets a new entry, read/write on
the file itself, owner/group/other bits against uid 2000 and the shell's groups,
EROFS for read-only mounts (/, /system, /vendor). Pure decision: `permits`.
"""
from __future__ import annotations

import errno
import os
import stat as stat_mod
from pathlib import Path
from typing import Protocol

R, W, X = 4, 2, 1


def permits(st: os.stat_result, want: int, uid: int, gids: frozenset[int]) -> bool:
    """POSIX permission check of `want` (R|W|X bits) for a user without capabilities."""
    mode = st.st_mode
    if st.st_uid == uid:
        bits = (mode >> 6) & 7
    elif st.st_gid in gids:
        bits = (mode >> 3) & 7
    else:
        bits = mode & 7
    return (bits & want) == want


class _Resolver(Protocol):
    def device_realpath(self, device_path: str, *, follow_last: bool = True) -> str: ...

    def resolve(self, device_path: str, *, follow_last: bool = True) -> Path: ...


def _denied(path: str) -> PermissionError:
    return PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)


def _read_only(path: str) -> OSError:
    return OSError(errno.EROFS, os.strerror(errno.EROFS), path)


class ShellAccess:
    """Permission checks as `uid` with `gid` + `groups`, on the device behind `paths`."""

    def __init__(self, paths: _Resolver, uid: int, gid: int, groups: list[int]) -> None:
        self.paths = paths
        self.uid = uid
        self.gids = frozenset([gid, *groups])

    def _stat(self, canonical: str) -> os.stat_result:
        return os.stat(self.paths.resolve(canonical, follow_last=False))

    def _ok(self, st: os.stat_result, want: int) -> bool:
        return permits(st, want, self.uid, self.gids)

    def _search_to(self, canonical: str) -> None:
        """x on / and every directory above `canonical` (ENOENT passes: the caller's
        own open then reports it)."""
        parts = [p for p in canonical.split("/") if p]
        for i in range(len(parts)):
            d = "/" + "/".join(parts[:i])
            try:
                st = self._stat(d)
            except FileNotFoundError:
                return
            if not self._ok(st, X):
                raise _denied(canonical)

    def check_stat(self, device_path: str, *, follow: bool = True) -> None:
        self._search_to(self.paths.device_realpath(device_path, follow_last=follow))

    def check_read(self, device_path: str) -> None:
        real = self.paths.device_realpath(device_path)
        self._search_to(real)
        try:
            st = self._stat(real)
        except FileNotFoundError:
            return
        if not self._ok(st, X | R if stat_mod.S_ISDIR(st.st_mode) else R):
            raise _denied(device_path)

    def check_list(self, device_path: str) -> None:
        self.check_read(device_path)

    def check_create(self, device_path: str, *, follow: bool = True) -> None:
        """May the shell create (or truncate) `device_path`, making missing parents?"""
        real = self.paths.device_realpath(device_path, follow_last=follow)
        self._search_to(real)
        host = self.paths.resolve(real, follow_last=False)
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            st = None
        if st is not None and not stat_mod.S_ISLNK(st.st_mode):
            if _mount_read_only(host):
                raise _read_only(device_path)
            if stat_mod.S_ISDIR(st.st_mode) or not self._ok(st, W):
                raise _denied(device_path) if not stat_mod.S_ISDIR(st.st_mode) else \
                    IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), device_path)
            return
        parent = real.rsplit("/", 1)[0] or "/"
        while True:  # the deepest existing ancestor gets the new entry
            hp = self.paths.resolve(parent, follow_last=False)
            try:
                pst = os.stat(hp)
                break
            except FileNotFoundError:
                parent = parent.rsplit("/", 1)[0] or "/"
        if _mount_read_only(hp):
            raise _read_only(device_path)
        if not self._ok(pst, W | X):
            raise _denied(device_path)

    def give_to_shell(self, host_path: Path) -> None:
        """A file/dir the fleet created for the shell belongs to it, as if adbd (uid 2000)
        had made it; a setgid parent keeps its group (storage: sdcard_rw)."""
        try:
            parent = os.stat(host_path.parent)
            gid = -1 if parent.st_mode & stat_mod.S_ISGID else self.uid
            os.chown(host_path, self.uid, gid, follow_symlinks=False)
        except OSError:
            pass  # e.g. the unprivileged fallback: uid 2000 is not mapped there


def _mount_read_only(host_path: Path) -> bool:
    try:
        return bool(os.statvfs(host_path).f_flag & os.ST_RDONLY)
    except OSError:
        return False
