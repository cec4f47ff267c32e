"""Persistent namespace holder: one tiny mksh process per virtual device.

Why persistent: entering an existing mount+pid namespace with nsenter costs 2-3 ms per
command, building one per command (unshare + mounts + chroot) 17-21 ms. Commands normally
do not even pay nsenter: the device's resident spawner (spawner.py), entered once with
`nsenter --no-fork`, forks them (nsenter per command remains the fallback). The holder is
`unshare --mount --pid --fork` running a host sh that sets up the mounts and then execs
`chroot ROOT /system/bin/sh` (mksh) as PID 1 of the device, which only reaps zombies.

As root (the normal case, also in CI) no user namespace is used. Without root we fall
back to `--user --map-root-user` (device processes are "root" only inside it).
Nothing here uses threads: the holder is a plain Popen polled by the caller.
"""
from __future__ import annotations

import asyncio
import ctypes
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adbflow.errors import FleetError

READY_MARK = "ADBFLOW_HOLDER_READY"
# PID 1 of the device: reap orphans (mksh's SIGCHLD handler waits for any child),
# exit cleanly on TERM. A long sleep keeps it from forking every second.
INIT_LOOP = 'trap "exit 0" TERM; while :; do sleep 86400 & wait; done'
NSENTER = "/usr/bin/nsenter"
UNSHARE = "/usr/bin/unshare"


@dataclass(frozen=True)
class Bind:
    """One bind mount: host `source` appears at device path `target`."""

    source: str
    target: str
    readonly: bool = True
    recursive: bool = False


@dataclass(frozen=True)
class Overlay:
    """An overlayfs view at device path `target` of the host directory `upper` (`lower`
    an empty dir, `work` overlayfs' scratch dir on upper's file system).

    Why overlayfs: it is a second, stacked view of the same files, like Android's FUSE
    or sdcardfs over /data/media. inotify on the view reports operations done through the
    view only; a rename done directly in `upper` is visible in listings but raises no
    event on the view. When overlayfs is unavailable the holder binds `upper` instead
    (then every change raises events; NamespaceHolder.storage_kind says which)."""

    lower: str
    upper: str
    work: str
    target: str


def use_user_namespace() -> bool:
    """Root gets plain mount+pid namespaces; anybody else needs a user namespace.

    ADBFLOW_FLEET_USERNS=1 forces the unprivileged path (used to test the fallback)."""
    if os.environ.get("ADBFLOW_FLEET_USERNS") == "1":
        return True
    return os.geteuid() != 0


def holder_script(root: Path, binds: list[Bind], *, userns: bool,
                  overlays: tuple[Overlay, ...] = (), rw_dirs: tuple[str, ...] = ()) -> str:
    """The host-side sh script run inside the new namespaces (pure, for tests).

    Order matters: binds first (they need the host paths), fresh procfs next, then the
    file binds over /proc/stat etc. (targets must exist inside that procfs), then
    read-only self-binds of /system and /vendor, then chroot into mksh as PID 1.
    In a user namespace remounting read-only can be refused for mounts with locked
    flags; that is tolerated there (the device still cannot see outside its root).
    With rw_dirs (top-level directory names) the root itself becomes a read-only bind
    and only those directories stay writable (each its own rw bind), like a phone's
    read-only / with /data on its own file system. Overlays come after the binds.
    """
    r = shlex.quote(str(root))
    ro_fail = " || true" if userns else ""
    lines = ["set -e", "mount --make-rprivate / 2>/dev/null || true"]
    if rw_dirs:
        lines.append(f"mount --bind {r} {r}")
        for d in rw_dirs:
            lines.append(f"mount --bind {r}/{shlex.quote(d)} {r}/{shlex.quote(d)}")
        lines.append(f"mount -o remount,bind,ro {r}{ro_fail}")
    proc_binds = [b for b in binds if b.target.startswith("/proc/")]
    late = [b for b in binds if b.target in ("/system", "/vendor")]
    early = [b for b in binds if b not in proc_binds and b not in late]

    def emit(b: Bind) -> None:
        tgt = shlex.quote(str(root) + b.target)
        src = shlex.quote(b.source)
        lines.append(f"mount {'--rbind' if b.recursive else '--bind'} {src} {tgt}")
        if b.readonly:
            lines.append(f"mount -o remount,bind,ro {tgt}{ro_fail}")

    for b in early:
        emit(b)
    for o in overlays:
        tgt = shlex.quote(str(root) + o.target)
        opts = shlex.quote(f"lowerdir={o.lower},upperdir={o.upper},workdir={o.work}")
        lines.append(f"mount -t overlay -o {opts} adbflow-storage {tgt} 2>/dev/null || "
                     f"mount --bind {shlex.quote(o.upper)} {tgt}")
    lines.append(f"mount -t proc -o nosuid,nodev,noexec proc {r}/proc")
    # a private /dev/shm: libfaketime (fleet/clock.py) keeps per-process shm named by pid,
    # and pids repeat across device pid namespaces; never share (or leak) the host's
    lines.append(f"mount -t tmpfs -o nosuid,nodev,size=4m,mode=1777 tmpfs {r}/dev/shm "
                 "2>/dev/null || true")
    for b in proc_binds:
        emit(b)
    for b in late:
        emit(b)
    lines.append(f"echo {READY_MARK}")
    lines.append(f"cd {r}")
    lines.append(f"exec chroot {r} /system/bin/sh -c {shlex.quote(INIT_LOOP)} "
                 "</dev/null >/dev/null 2>&1")
    return "\n".join(lines) + "\n"


class NamespaceHolder:
    """Starts, watches and kills the holder of one device."""

    def __init__(self, root: Path, binds: list[Bind], *, label: str,
                 overlays: tuple[Overlay, ...] = (), rw_dirs: tuple[str, ...] = ()) -> None:
        self.root = Path(root)
        self.binds = list(binds)
        self.overlays = tuple(overlays)
        self.rw_dirs = tuple(rw_dirs)
        self.label = label
        self.userns = use_user_namespace()
        self._popen: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None  # host pid of the device's PID 1 (mksh)

    async def start(self, timeout: float = 15.0) -> int:
        """Spawn the holder and wait until its mounts are in place; return PID 1's host pid."""
        if self.alive():
            assert self.pid is not None
            return self.pid
        argv = [UNSHARE, "--mount", "--pid", "--fork", "--kill-child"]
        if self.userns:
            argv[1:1] = ["--user", "--map-root-user"]
        # the script goes to a file next to the root: keeps `ps` readable, same content
        script = self.root.parent / "holder.sh"
        script.write_text(holder_script(self.root, self.binds, userns=self.userns,
                                        overlays=self.overlays, rw_dirs=self.rw_dirs))
        argv += ["/bin/sh", str(script)]
        self._popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, close_fds=True,
                                       preexec_fn=die_with_parent)
        out = await self._read_until_ready(timeout)
        pid = _first_child(self._popen.pid)
        if pid is None:
            await self.stop()
            raise FleetError(f"[{self.label}] namespace holder lost its init process",
                             hint=f"holder output: {out[-500:]!r}")
        await self._wait_chrooted(pid, time.monotonic() + timeout, out)
        self.pid = pid
        return pid

    async def _wait_chrooted(self, pid: int, deadline: float, out: str) -> None:
        """Until PID 1 has run `exec chroot ROOT`. Why: the holder prints READY just before
        that exec, and `nsenter -r -w` (every command, the spawner) takes the target's root
        and cwd as they are at that moment: entered between the two, a device ran on the
        namespace's `/` (the host tree, no /system/bin/sh: "No such file or directory"),
        which a loaded machine made likely enough to fail a test module's every test."""
        want = os.path.realpath(self.root)
        while True:
            try:
                if os.readlink(f"/proc/{pid}/root") == want:
                    return
            except OSError:
                pass
            if self._popen is not None and self._popen.poll() is not None:
                raise FleetError(f"[{self.label}] namespace holder exited before its chroot",
                                 hint=f"holder output: {out[-500:]!r}")
            if time.monotonic() > deadline:
                await self.stop()
                raise FleetError(f"[{self.label}] namespace holder did not enter the device root",
                                 hint=f"holder output: {out[-500:]!r}")
            await asyncio.sleep(0.005)

    async def _read_until_ready(self, timeout: float) -> str:
        assert self._popen is not None and self._popen.stdout is not None
        fd = self._popen.stdout.fileno()
        os.set_blocking(fd, False)
        buf = b""
        deadline = time.monotonic() + timeout
        while READY_MARK.encode() not in buf:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                chunk = None
            if chunk == b"" or (chunk is None and self._popen.poll() is not None):
                self._popen.wait()
                raise FleetError(
                    f"[{self.label}] namespace holder failed to start (exit "
                    f"{self._popen.returncode}): {buf.decode(errors='replace').strip()[-800:]}",
                    hint="needs util-linux unshare/nsenter and root, or unprivileged user "
                         "namespaces (sysctl kernel.unprivileged_userns_clone=1)")
            if chunk:
                buf += chunk
                continue
            if time.monotonic() > deadline:
                await self.stop()
                raise FleetError(f"[{self.label}] namespace holder not ready after {timeout:.0f} s",
                                 hint=f"output so far: {buf.decode(errors='replace')[-500:]!r}")
            await asyncio.sleep(0.005)
        self._popen.stdout.close()  # nothing more is written there (init is on /dev/null)
        return buf.decode(errors="replace")

    def alive(self) -> bool:
        """True while the holder (and therefore the device's namespaces) exists."""
        if self._popen is None or self.pid is None:
            return False
        if self._popen.poll() is not None:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    async def stop(self) -> None:
        """SIGKILL PID 1 of the device: the kernel then kills every process in it."""
        for pid in (self.pid, self._popen.pid if self._popen else None):
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self._popen is not None:
            for _ in range(400):
                if self._popen.poll() is not None:
                    break
                await asyncio.sleep(0.005)
            else:  # pragma: no cover - kernel did not deliver SIGKILL in 2 s
                self._popen.wait(timeout=5)
        if self.pid:  # PID 1 is re-parented to the host's init once unshare died
            for _ in range(400):
                if not _exists(self.pid):
                    break
                await asyncio.sleep(0.005)
        self._popen = None
        self.pid = None

    def enter_argv(self, argv: list[str], *, fork: bool = True) -> list[str]:
        """nsenter prefix to run `argv` (device paths) inside the device as its root user.

        fork=False (`--no-fork`): the program itself gets the device's mounts and root but
        stays in the host pid namespace; only its children are created inside the device's
        pid namespace (what the resident spawner wants: no nsenter parent left around)."""
        if self.pid is None:
            raise FleetError(f"[{self.label}] device is not running", hint="start or restart it")
        pre = [NSENTER, "-t", str(self.pid)]
        if self.userns:
            pre += ["-U", "--preserve-credentials"] if os.geteuid() == 0 else ["-U"]
        return pre + ["-m", "-p", "-r", "-w"] + ([] if fork else ["--no-fork"]) + ["--"] + argv

    def mount_type(self, device_path: str) -> str | None:
        """File system type mounted exactly at `device_path` in the device (mountinfo)."""
        if self.pid is None:
            return None
        try:
            info = Path(f"/proc/{self.pid}/mountinfo").read_text()
        except OSError:
            return None
        found = None
        for line in info.splitlines():
            left, _, right = line.partition(" - ")
            fields = left.split()
            if len(fields) > 4 and fields[4] == device_path and right:
                found = right.split()[0]  # the last mount at a path is the visible one
        return found

    @property
    def host_root(self) -> Path:
        """The device root as seen through its own mount namespace (binds included)."""
        if self.pid is None:
            raise FleetError(f"[{self.label}] device is not running", hint="start or restart it")
        return Path(f"/proc/{self.pid}/root")


_PR_SET_PDEATHSIG = 1
_PRCTL: Any
try:  # resolved here, not in the forked child: importing there can deadlock on a lock
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # another thread held at fork time
except (OSError, AttributeError):  # pragma: no cover - non-glibc
    _PRCTL = None


def die_with_parent() -> None:  # runs in the child between fork and exec
    """New session (no terminal signals) + SIGKILL when the fleet host dies, even by
    SIGKILL: unshare --kill-child then takes the whole device down, so a crashed host
    leaves no orphaned namespaces behind. The signal fires when the creating THREAD
    exits: call Popen from the event loop thread, never from a worker thread."""
    os.setsid()
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _exists(pid: int) -> bool:
    """True while `pid` is a live (non-zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:stat.rfind(")") + 3] not in ("Z", "X")


def _first_child(pid: int) -> int | None:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(kids[0]) if kids else None
