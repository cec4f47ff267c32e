"""Fleet side of the per-device spawner (see spawner.py for why it exists).

SpawnerClient talks to one device's resident spawner over a unix socket: a command becomes
one SPAWN frame carrying three fds; its exit status comes back as an EXITED frame. The
fleet's event loop never forks, never blocks in vfork/exec and starts no child-watcher
thread per command; the pipes are read with plain non-blocking reads (PipeReader) so a
slow adb stream pushes back on the command exactly as before.

DeviceProcess offers the subset of asyncio.subprocess.Process the shell service and tests
use (stdin/stdout/stderr, wait, communicate, returncode) plus killpg(sig), because its
process group is signalled by the spawner (the fleet does not know the pid until exit).
"""
from __future__ import annotations

import array
import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from adbflow.errors import FleetError
from adbflow.fleet import spawner as W

log = logging.getLogger("adbflow.fleet.spawn_client")

SPAWNER_SCRIPT = Path(W.__file__).resolve()
_READ_CHUNK = 64 * 1024


class PipeReader:
    """asyncio.StreamReader subset over a non-blocking fd: reads only when asked (backpressure)."""

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop) -> None:
        self._fd: int | None = fd
        self._loop = loop
        os.set_blocking(fd, False)

    async def read(self, n: int = -1) -> bytes:
        """Up to n bytes (all until EOF when n < 0); b"" at EOF."""
        if n < 0:
            chunks = []
            while chunk := await self.read(_READ_CHUNK):
                chunks.append(chunk)
            return b"".join(chunks)
        while self._fd is not None:
            try:
                data = os.read(self._fd, n)
            except BlockingIOError:
                await _wait_fd(self._loop, self._fd, writer=False)
                continue
            if not data:
                self.close()
            return data
        return b""

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        self.close()


class PipeWriter:
    """asyncio.StreamWriter subset over a non-blocking fd (write/drain/close/is_closing)."""

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop) -> None:
        self._fd: int | None = fd
        self._loop = loop
        self._buf = bytearray()
        self._closing = False
        self._error: OSError | None = None
        self._flushed: asyncio.Future[None] | None = None
        os.set_blocking(fd, False)

    def write(self, data: bytes) -> None:
        if self._closing or self._error is not None or self._fd is None or not data:
            return
        if self._buf:
            self._buf += data
            return
        try:
            n = os.write(self._fd, data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self._fail(exc)
            return
        if n < len(data):
            self._buf += data[n:]
            self._loop.add_writer(self._fd, self._on_writable)

    def _on_writable(self) -> None:
        assert self._fd is not None
        try:
            n = os.write(self._fd, self._buf)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(exc)
            return
        del self._buf[:n]
        if not self._buf:
            self._loop.remove_writer(self._fd)
            self._wake()
            if self._closing:
                self._close_fd()

    def _fail(self, exc: OSError) -> None:
        self._error = exc
        self._buf.clear()
        self._close_fd()
        self._wake()

    def _wake(self) -> None:
        if self._flushed is not None and not self._flushed.done():
            self._flushed.set_result(None)
        self._flushed = None

    async def drain(self) -> None:
        while self._buf and self._error is None:
            if self._flushed is None:
                self._flushed = self._loop.create_future()
            await self._flushed
        if self._error is not None:
            raise BrokenPipeError(self._error.errno, self._error.strerror)

    def is_closing(self) -> bool:
        return self._closing or self._fd is None

    def close(self) -> None:
        self._closing = True
        if not self._buf:
            self._close_fd()

    async def wait_closed(self) -> None:
        await self.drain()

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            self._loop.remove_writer(fd)
            os.close(fd)

    def __del__(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


async def _wait_fd(loop: asyncio.AbstractEventLoop, fd: int, *, writer: bool) -> None:
    fut = loop.create_future()
    add, remove = (loop.add_writer, loop.remove_writer) if writer else (loop.add_reader,
                                                                         loop.remove_reader)
    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    add(fd, ready)
    try:
        await fut
    finally:
        remove(fd)


class DeviceProcess:
    """One command running in a device through its spawner."""

    def __init__(self, client: SpawnerClient, rid: int, stdin: PipeWriter | None,
                 stdout: PipeReader | None, stderr: PipeReader | None) -> None:
        self._client = client
        self.rid = rid
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.pid: int | None = None          # host pid, known once it exited
        self.returncode: int | None = None
        self._done = client.loop.create_future()

    def _exited(self, pid: int, code: int) -> None:
        self.pid = pid or None
        self.returncode = code
        if not self._done.done():
            self._done.set_result(code)

    async def wait(self) -> int:
        return await asyncio.shield(self._done)

    def killpg(self, sig: int) -> None:
        """Signal the command's process group (also its background jobs after it exited)."""
        self._client.killpg(self.rid, sig)

    def kill(self) -> None:
        self.killpg(signal.SIGKILL)

    async def communicate(self, input: bytes | None = None) -> tuple[bytes, bytes]:
        async def feed() -> None:
            if self.stdin is None:
                return
            if input:
                self.stdin.write(input)
                try:
                    await self.stdin.drain()
                except (BrokenPipeError, ConnectionResetError):
                    pass
            self.stdin.close()

        async def slurp(r: PipeReader | None) -> bytes:
            return await r.read() if r is not None else b""

        _, out, err = await asyncio.gather(feed(), slurp(self.stdout), slurp(self.stderr))
        await self.wait()
        return out, err

    def close_pipes(self) -> None:
        for p in (self.stdin, self.stdout, self.stderr):
            if p is not None:
                p.close()


class SpawnerClient:
    """Connection to one device's spawner; start() it once per device start."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 popen: subprocess.Popen[bytes], label: str) -> None:
        self.loop = loop
        self.sock = sock
        self.popen = popen
        self.label = label
        self._buf = b""
        self._next = 1
        self._procs: dict[int, DeviceProcess] = {}
        self._out: list[tuple[bytes, list[int]]] = []   # frames waiting for the socket
        self._ready: asyncio.Future[int] = loop.create_future()
        self.closed = False
        loop.add_reader(sock.fileno(), self._on_readable)

    @classmethod
    async def start(cls, enter_prefix: list[str], label: str, *,
                    preexec_fn: Callable[[], None] | None = None,
                    creds: str = "", timeout: float = 15.0) -> SpawnerClient:
        """Run the spawner with `enter_prefix` (an `nsenter ... --no-fork --` argv) and
        wait for its READY frame. Must run in a long-lived thread (the event loop's):
        the preexec_fn's parent-death signal is tied to the creating thread."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [*enter_prefix, os.path.realpath(sys.executable), "-S", "-I", "-B"]
        if sys.version_info >= (3, 11):
            argv.append("-P")  # no script dir on sys.path
        argv += [str(SPAWNER_SCRIPT), str(theirs.fileno())] + ([creds] if creds else [])
        try:
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     pass_fds=(theirs.fileno(),), close_fds=True,
                                     preexec_fn=preexec_fn)
        finally:
            theirs.close()
        ours.setblocking(False)
        client = cls(asyncio.get_running_loop(), ours, popen, label)
        try:
            await asyncio.wait_for(asyncio.shield(client._ready), timeout)
        except (asyncio.TimeoutError, FleetError) as exc:
            await client.close()
            raise FleetError(f"[{label}] command spawner did not start: {exc or 'timeout'}",
                             hint="see the fleet log; set ADBFLOW_FLEET_SPAWNER=0 to use "
                                  "nsenter per command") from None
        return client

    @property
    def alive(self) -> bool:
        return not self.closed

    # -- requests ---------------------------------------------------------------------------
    def spawn(self, argv: list[str], env: dict[str, str], *, pty_slave: int | None = None,
              merge_stderr: bool = False) -> DeviceProcess:
        """Start argv (device paths) in the device. The caller keeps pty_slave's ownership.
        merge_stderr: the child's stderr is its stdout pipe (sent twice; proc.stderr None)."""
        if self.closed:
            raise FleetError(f"[{self.label}] command spawner is gone",
                             hint="restart the device")
        payload = W.encode_spawn(argv, env, pty_slave is not None)
        rid = self._next
        self._next = rid + 1 if rid < 0x7FFFFFFF else 1
        if pty_slave is not None:
            send_fds = [os.dup(pty_slave)] * 3  # one dup, sent three times, closed once
            proc = DeviceProcess(self, rid, None, None, None)
        else:
            in_r, in_w = os.pipe2(os.O_CLOEXEC)
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err: PipeReader | None = None
            if merge_stderr:
                send_fds = [in_r, out_w, out_w]      # _close_all closes it once
            else:
                err_r, err_w = os.pipe2(os.O_CLOEXEC)
                send_fds = [in_r, out_w, err_w]
                err = PipeReader(err_r, self.loop)
            proc = DeviceProcess(self, rid, PipeWriter(in_w, self.loop),
                                 PipeReader(out_r, self.loop), err)
        self._procs[rid] = proc
        self._send(W.HEADER.pack(len(payload), W.OP_SPAWN, rid) + payload, send_fds)
        return proc

    def killpg(self, rid: int, sig: int) -> None:
        if not self.closed:
            self._send(W.HEADER.pack(4, W.OP_KILLPG, rid) + W.I32.pack(sig), [])

    def _send(self, frame: bytes, fds: list[int]) -> None:
        self._out.append((frame, fds))
        if len(self._out) == 1:
            self._flush()

    def _flush(self) -> None:
        while self._out:
            frame, fds = self._out[0]
            try:
                anc = ([(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
                       if fds else [])
                n = self.sock.sendmsg([frame], anc)
            except BlockingIOError:
                self.loop.add_writer(self.sock.fileno(), self._flush)
                return
            except OSError as exc:
                log.warning("[%s] spawner socket: %s", self.label, exc)
                self._lost()
                return
            _close_all(fds)
            if n < len(frame):
                self._out[0] = (frame[n:], [])
                continue
            self._out.pop(0)
        self.loop.remove_writer(self.sock.fileno())

    # -- replies ----------------------------------------------------------------------------
    def _on_readable(self) -> None:
        try:
            data = self.sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._lost()
            return
        buf = self._buf + data
        hsize = W.HEADER.size
        while len(buf) >= hsize:
            length, op, rid = W.HEADER.unpack_from(buf)
            if len(buf) < hsize + length:
                break
            payload, buf = buf[hsize:hsize + length], buf[hsize + length:]
            if op == W.OP_EXITED:
                proc = self._procs.pop(rid, None)
                if proc is not None:
                    proc._exited(*W.EXITED.unpack(payload))
            elif op == W.OP_READY and not self._ready.done():
                self._ready.set_result(W.I32.unpack(payload)[0])
        self._buf = buf

    def _lost(self, *, expected: bool = False) -> None:
        """Spawner gone (device stopped, or it died): every pending command is reported
        killed, as nsenter reported a command killed with its namespace. The backend then
        runs further commands with nsenter (see NamespaceBackend.spawn)."""
        if self.closed:
            return
        self.closed = True
        if not expected and self._ready.done():
            log.warning("[%s] command spawner exited (code %s); %d running command(s) "
                        "reported killed", self.label, self.popen.poll(), len(self._procs))
        fileno = self.sock.fileno()
        if fileno >= 0:
            self.loop.remove_reader(fileno)
            self.loop.remove_writer(fileno)
        for _, fds in self._out:
            _close_all(fds)
        self._out.clear()
        for proc in self._procs.values():
            proc._exited(0, -signal.SIGKILL)
        self._procs.clear()
        if not self._ready.done():
            code = self.popen.poll()
            self._ready.set_exception(FleetError(f"spawner exited (code {code})"))
            self._ready.exception()  # retrieved: no "never retrieved" warning
        self.sock.close()

    async def close(self, timeout: float = 2.0) -> None:
        """EOF to the spawner (it SIGKILLs its live groups and exits); reap it."""
        self._lost(expected=True)
        deadline = time.monotonic() + timeout
        while self.popen.poll() is None:
            if time.monotonic() > deadline:
                self.popen.kill()
                self.popen.wait(5)
                break
            await asyncio.sleep(0.005)


def _close_all(fds: list[int]) -> None:
    for fd in set(fds):
        try:
            os.close(fd)
        except OSError:
            pass
