"""Resident per-device command spawner (the fork/exec half of a virtual adbd).

Why: every `adb shell` used to run `nsenter -t HOLDER -m -p -r -w /system/bin/sh -c CMD`
forked from the fleet process. Measured per command on a 2-core laptop: the fleet's event
loop blocked ~0.5 ms in vfork+exec, a child-watcher thread per process, and nsenter's own
exec + library loading ~1 ms of CPU, on top of mksh (~0.8 ms). All devices share one
fleet process, so those costs serialise parallel commands (8 parallel `adb shell true`
took 3x one), unlike real phones, each with its own adbd and CPU.

This program is started ONCE per device with `nsenter --no-fork -t HOLDER -m -r -w [-p]`:
it lives in the device's mount namespace and root, and its children are created in the
device's pid namespace (setns(CLONE_NEWPID) applies to children). For each request it
posix_spawns (vfork) the device's real `/system/bin/sh -c CMD` with the three fds the fleet
sent (SCM_RIGHTS), in a new session, and reports the exit status. Nothing is cached or
skipped: each request is one real process inside the device.

It runs as `python -S -I -B spawner.py CTL_FD [UID:GID:G1,G2,...]` (no site, stdlib C
modules only: small and fast to start) and must stay importable by the fleet for the wire
constants below. With the credentials argument the spawner itself drops to that user before
it reports READY, exactly like adbd on a user build drops to uid 2000 (shell) with the
shell's groups at start (losing every capability): every command it spawns then runs as
the shell user, at no cost per command.

Wire format (unix stream socket, fd number in argv[1]): frames `u32 payload_len, u8 op, u32 id, payload`.
fleet -> spawner: SPAWN (3 fds attached: stdin, stdout, stderr; payload `u8 pty, u16 argc,
  u16 envc, NUL-terminated argv then env "K=V" strings`), KILLPG (payload `i32 signal`:
  signal the process group of request `id`, also after its leader exited).
spawner -> fleet: READY (id 0, payload `i32 pid` of the spawner) once at start,
  EXITED (payload `i32 host pid, i32 returncode`: -N when killed by signal N, like
  asyncio; 127/126 when the exec failed, with the reason written to the command's stderr).
EOF from the fleet: every live process group gets SIGKILL and the spawner exits.
"""
from __future__ import annotations

# C modules only (not `signal`/`struct`: they pull in enum etc., +5 ms and +0.8 MB per device)
import _signal as signal
import os
import sys
from _struct import Struct, unpack

HEADER = Struct("<IBI")
OP_SPAWN, OP_KILLPG, OP_READY, OP_EXITED = 1, 2, 3, 4
SPAWN_HEAD = Struct("<BHH")
I32 = Struct("<i")
EXITED = Struct("<ii")
#: Exited process groups remembered for late KILLPG (background jobs of a finished shell).
_RECENT_MAX = 256


def encode_spawn(argv: list[str], env: dict[str, str], pty: bool) -> bytes:
    """SPAWN payload (shared with the fleet side)."""
    parts = [os.fsencode(a) for a in argv] + [os.fsencode(f"{k}={v}") for k, v in env.items()]
    if any(b"\0" in p for p in parts):
        raise ValueError("NUL byte in a command or environment string")
    return SPAWN_HEAD.pack(1 if pty else 0, len(argv), len(env)) + b"".join(p + b"\0" for p in parts)


def decode_spawn(payload: bytes) -> tuple[bool, list[bytes], list[bytes]]:
    pty, argc, envc = SPAWN_HEAD.unpack_from(payload)
    strings = payload[SPAWN_HEAD.size:].split(b"\0")[:-1]
    if len(strings) != argc + envc or argc < 1:
        raise ValueError("bad SPAWN payload")
    return bool(pty), strings[:argc], strings[argc:]


def _env_map(env: list[bytes]) -> dict[bytes, bytes]:
    out = {}
    for item in env:
        key, _, value = item.partition(b"=")
        out[key] = value
    return out


def parse_creds(text: str) -> tuple[int, int, list[int]] | None:
    """`2000:2000:1004,1007` -> (uid, gid, groups); "" -> None (keep the spawner's)."""
    if not text:
        return None
    uid, gid, groups = text.split(":")
    return int(uid), int(gid), [int(g) for g in groups.split(",") if g]


def encode_creds(uid: int, gid: int, groups: list[int]) -> str:
    return f"{uid}:{gid}:{','.join(str(g) for g in groups)}"


class Spawner:
    """The request loop (single-threaded: poll on the control socket and a SIGCHLD pipe)."""

    def __init__(self, sock) -> None:  # noqa: ANN001 - stdlib-only file (runs with -S -I)
        self.sock = sock
        self.buf = b""
        self.fds: list[int] = []
        self.live: dict[int, int] = {}      # host pid -> request id
        self.groups: dict[int, int] = {}    # request id -> pgid (live + recently exited)

    # -- fleet -> spawner -----------------------------------------------------------------
    def on_readable(self) -> bool:
        """Read what the fleet sent; False on EOF."""
        import _socket
        data, anc, flags, _ = self.sock.recvmsg(1 << 16, _socket.CMSG_SPACE(16 * 4),
                                               _socket.MSG_CMSG_CLOEXEC)
        for level, kind, raw in anc:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                n = len(raw) // 4
                self.fds.extend(unpack(f"<{n}i", raw[:n * 4]))
        if flags & _socket.MSG_CTRUNC:
            raise RuntimeError("control message truncated: fds lost")
        if not data:
            return False
        self.buf += data
        while len(self.buf) >= HEADER.size:
            length, op, rid = HEADER.unpack_from(self.buf)
            end = HEADER.size + length
            if len(self.buf) < end:
                break
            payload, self.buf = self.buf[HEADER.size:end], self.buf[end:]
            if op == OP_SPAWN:
                fds, self.fds = self.fds[:3], self.fds[3:]
                try:
                    self.spawn(rid, payload, fds)
                finally:
                    for fd in fds:
                        os.close(fd)
            elif op == OP_KILLPG:
                self.killpg(rid, I32.unpack(payload)[0])
        return True

    def spawn(self, rid: int, payload: bytes, fds: list[int]) -> None:
        if len(fds) != 3:
            raise RuntimeError("SPAWN without its 3 fds")
        pty, argv, env = decode_spawn(payload)
        try:
            if pty:
                pid = self._fork_pty(argv, env, fds)
            else:
                pid = os.posix_spawn(argv[0], argv, _env_map(env), setsid=True,
                                     setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
                                     file_actions=[(os.POSIX_SPAWN_DUP2, fds[0], 0),
                                                   (os.POSIX_SPAWN_DUP2, fds[1], 1),
                                                   (os.POSIX_SPAWN_DUP2, fds[2], 2)])
        except OSError as exc:  # like a shell: say why on stderr, 127 not found / 126 other
            msg = f"{os.fsdecode(argv[0])}: {exc.strerror}\n".encode()
            try:
                os.write(fds[2], msg)
            except OSError:
                pass
            self.send(OP_EXITED, rid, EXITED.pack(0, 127 if exc.errno == 2 else 126))
            return
        self.live[pid] = rid
        self.groups[rid] = pid
        if len(self.groups) > 2 * _RECENT_MAX + len(self.live):
            for old in [r for r, p in self.groups.items() if p not in self.live][:-_RECENT_MAX]:
                del self.groups[old]

    @staticmethod
    def _fork_pty(argv: list[bytes], env: list[bytes], fds: list[int]) -> int:
        """pty shells need TIOCSCTTY after setsid, which posix_spawn cannot do: fork (rare)."""
        import fcntl
        import termios
        pid = os.fork()
        if pid == 0:
            try:
                os.setsid()
                for i, fd in enumerate(fds):
                    os.dup2(fd, i)
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)
                for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                signal.set_wakeup_fd(-1)
                os.execve(argv[0], argv, _env_map(env))
            except OSError as exc:
                os.write(2, f"{os.fsdecode(argv[0])}: {exc.strerror}\n".encode())
            finally:
                os._exit(127)
        return pid

    def killpg(self, rid: int, sig: int) -> None:
        pgid = self.groups.get(rid)
        if pgid:
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    # -- spawner -> fleet -------------------------------------------------------------------
    def send(self, op: int, rid: int, payload: bytes = b"") -> None:
        self.sock.sendall(HEADER.pack(len(payload), op, rid) + payload)

    def reap(self) -> None:
        while self.live:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            rid = self.live.pop(pid, None)
            if rid is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            self.send(OP_EXITED, rid, EXITED.pack(pid, code))

    def kill_all(self) -> None:
        for pid in list(self.live):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def main() -> int:
    import _socket
    import select
    try:  # `ps` on the host shows which device's spawner this is
        with open("/proc/self/comm", "w") as f:
            f.write("adbd-spawner")
    except OSError:
        pass
    ctl_fd = int(sys.argv[1])
    os.set_inheritable(ctl_fd, False)
    sock = _socket.socket(fileno=ctl_fd)
    sock.setblocking(True)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    creds = parse_creds(sys.argv[2]) if len(sys.argv) > 2 else None
    # adbd's drop_privileges: groups, then gid, then uid (capabilities go). The kernel
    # clears the parent-death signal on a uid change; the fleet's death still ends the
    # spawner: its control socket reaches EOF and every process group is killed.
    if creds is not None:
        uid, gid, groups = creds
        os.setgroups(groups)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    sp = Spawner(sock)
    sp.send(OP_READY, 0, I32.pack(os.getpid()))
    poller = select.poll()
    poller.register(ctl_fd, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    try:
        while True:
            for fd, _ in poller.poll():
                if fd == wake_r:
                    try:
                        while os.read(wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                    sp.reap()
                elif not sp.on_readable():
                    return 0
    except (BrokenPipeError, ConnectionResetError):
        return 0
    finally:
        sp.kill_all()


if __name__ == "__main__":
    sys.exit(main())
