"""`shell:`, `shell,v2,...:` and `exec:` services of a virtual device.

Why these exact semantics: adbflow (and adbutils, and the adb CLI) behave differently per
protocol, and tests must see what a real phone does:
- v1 (`shell:CMD`, `exec:CMD`): stdout and stderr on one pipe (adbd: one socketpair), so
  merged in the order the command wrote them; no exit code, the stream closes when the
  output ends.
- v2 (`shell,v2[,raw|,pty][,TERM=x]:CMD`): packets `u8 id, u32 LE len, payload`; ids
  0 stdin, 1 stdout, 2 stderr, 3 exit (1 byte), 4 close-stdin, 5 window size
  ("ROWSxCOLS,XxY"). Killed by signal N -> exit 128+N.
- No command -> interactive shell with a pty; `raw`/`pty` override.
- Closing, as adbd does it (daemon/shell_service.cpp):
  * shell protocol (v2) and pty streams: when the host closes the stream (adb killed,
    Ctrl-C, client timeout) the command gets SIGHUP (adbd: kill(pid, SIGHUP) when the
    protocol socket dies; a pty hangs up its session); we signal the whole process group
    and SIGKILL it shortly after, so a timed-out command does not keep running.
  * raw without protocol (`exec:CMD`, `shell:CMD` v1 without pty): adbd hooks the
    command's socketpair straight into the adb socket, so a host CLSE first delivers every
    byte already queued, then EOF on the command's stdin; the command is NOT killed (it
    finishes, e.g. `adb exec-in 'cat > f'` writes the whole file); its later writes fail
    with SIGPIPE/EPIPE because nobody reads its output any more.
"""
from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import signal
import struct
import termios
from dataclasses import dataclass
from typing import Any

from adbflow.errors import AdbflowError
from adbflow.fleet.backend_api import DeviceBackend
from adbflow.fleet.stream import Stream, StreamClosed

ID_STDIN, ID_STDOUT, ID_STDERR, ID_EXIT, ID_CLOSE_STDIN, ID_WINDOW_SIZE = range(6)
_V2_HEADER = struct.Struct("<BI")
_READ_CHUNK = 64 * 1024
#: Time between SIGHUP and SIGKILL when the host abandons a command.
KILL_GRACE_S = 0.2

_background: set[asyncio.Task[None]] = set()


@dataclass(frozen=True)
class ShellRequest:
    command: str | None   # None: interactive shell
    v2: bool
    pty: bool
    term: str | None


def parse_service(name: str) -> ShellRequest | None:
    """Decode a shell/exec service name; None if it is not one."""
    if name.startswith("exec:"):
        return ShellRequest(name[5:] or None, v2=False, pty=False, term=None)
    if not name.startswith("shell"):
        return None
    head, sep, cmd = name.partition(":")
    if not sep:
        return None
    args = head.split(",")
    if args[0] != "shell":
        return None
    v2 = False
    pty: bool | None = None
    term = None
    for arg in args[1:]:
        if arg == "v2":
            v2 = True
        elif arg == "raw":
            pty = False
        elif arg == "pty":
            pty = True
        elif arg.startswith("TERM="):
            term = arg[5:]
    if pty is None:
        pty = cmd == ""
    return ShellRequest(cmd or None, v2=v2, pty=pty, term=term)


def exit_status(returncode: int | None) -> int:
    """adbd's exit byte: the code, or 128+N for a death by signal N."""
    if returncode is None:
        return 255
    if returncode < 0:
        return (128 - returncode) & 0xFF
    return returncode & 0xFF


def v2_packet(packet_id: int, payload: bytes = b"") -> bytes:
    return _V2_HEADER.pack(packet_id, len(payload)) + payload


class V2Parser:
    """Reassembles v2 packets from WRTE payloads (packets may span or share WRTEs)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out = []
        while len(self._buf) >= _V2_HEADER.size:
            pid, length = _V2_HEADER.unpack_from(self._buf)
            end = _V2_HEADER.size + length
            if len(self._buf) < end:
                break
            out.append((pid, bytes(self._buf[_V2_HEADER.size:end])))
            del self._buf[:end]
        return out


def parse_window_size(payload: bytes) -> tuple[int, int, int, int] | None:
    """"ROWSxCOLS,XPIXxYPIX" -> (rows, cols, xpix, ypix)."""
    try:
        text = payload.rstrip(b"\0").decode()
        rc, _, px = text.partition(",")
        rows, cols = (int(v) for v in rc.split("x"))
        xpix, ypix = (int(v) for v in px.split("x")) if px else (0, 0)
        return rows, cols, xpix, ypix
    except (ValueError, UnicodeDecodeError):
        return None


def _signal_group(proc: Any, sig: int) -> None:
    """Signal the command's process group: through the device's spawner (DeviceProcess
    .killpg) or, for an asyncio Process (nsenter fallback, test backends), os.killpg."""
    killpg = getattr(proc, "killpg", None)
    try:
        if killpg is not None:
            killpg(sig)
        elif proc.pid:
            os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_process_group(proc: Any) -> None:
    """SIGHUP the command's process group now, SIGKILL it shortly after (in background)."""
    _signal_group(proc, signal.SIGHUP)

    async def finish() -> None:
        try:
            await asyncio.wait_for(proc.wait(), KILL_GRACE_S)
        except asyncio.TimeoutError:
            pass
        _signal_group(proc, signal.SIGKILL)
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except asyncio.TimeoutError:
            pass

    task = asyncio.ensure_future(finish())
    _background.add(task)
    task.add_done_callback(_background.discard)


class _PtyIO:
    """Non-blocking reads/writes on a pty master from asyncio."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self.loop = asyncio.get_running_loop()

    async def read(self) -> bytes:
        """Next output chunk; b"" at EOF (EIO once every slave fd is closed)."""
        while True:
            try:
                return os.read(self.fd, _READ_CHUNK)
            except BlockingIOError:
                await self._wait(self.loop.add_reader, self.loop.remove_reader)
            except OSError as exc:
                if exc.errno == errno.EIO:
                    return b""
                raise

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
                view = view[n:]
            except BlockingIOError:
                await self._wait(self.loop.add_writer, self.loop.remove_writer)

    async def _wait(self, add: Any, remove: Any) -> None:
        fut: asyncio.Future[None] = self.loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        add(self.fd, ready)
        try:
            await fut
        finally:
            remove(self.fd)

    def resize(self, rows: int, cols: int, xpix: int, ypix: int) -> None:
        try:
            fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, xpix, ypix))
        except OSError:
            pass


async def serve_raw(stream: Stream, backend: DeviceBackend) -> None:
    """`exec:CMD` and `shell:CMD` (v1, no pty): adbd's SubprocessProtocol::kNone + kRaw.

    The host's CLSE does not cancel this service (drains_on_close): queued input is still
    written, then stdin is closed; the command runs to its end, unkilled."""
    req = parse_service(stream.service)
    if req is None:
        return
    try:
        # one pipe for stdout and stderr, as adbd's one socketpair: the order is the command's
        proc, master = await backend.spawn(req.command, pty=False, env=None, merge_stderr=True)
    except (OSError, AdbflowError) as exc:
        await stream.write(f"adbflow virtual device: cannot start shell: {exc}\n".encode())
        return
    assert master is None
    finished = False
    try:
        await _run_pipes_raw(stream, proc)
        finished = True
    finally:
        if not finished:  # cancelled (fleet shutting down): do not leave it behind
            kill_process_group(proc)
        close_pipes = getattr(proc, "close_pipes", None)
        if close_pipes is not None:
            close_pipes()


serve_raw.drains_on_close = True  # type: ignore[attr-defined]


async def serve(stream: Stream, backend: DeviceBackend) -> None:
    """Entry point from the service router (v2 and pty streams; raw v1 is serve_raw)."""
    req = parse_service(stream.service)
    if req is None:
        return
    env = {"TERM": req.term} if req.term else None
    try:
        proc, master = await backend.spawn(req.command, pty=req.pty, env=env,
                                           merge_stderr=not req.v2)
    except (OSError, AdbflowError) as exc:
        # Like adbd when fork/exec fails: a message and a failing exit, not a hang.
        text = f"adbflow virtual device: cannot start shell: {exc}\n".encode()
        if req.v2:
            await stream.write(v2_packet(ID_STDERR, text) + v2_packet(ID_EXIT, bytes([255])))
        else:
            await stream.write(text)
        return
    finished = False
    try:
        if master is not None:
            await _run_pty(stream, proc, _PtyIO(master), req.v2)
        elif req.v2:
            await _run_pipes_v2(stream, proc)
        else:
            await _run_pipes_v1(stream, proc)
        finished = True
    finally:
        if not finished or proc.returncode is None:
            kill_process_group(proc)
        close_pipes = getattr(proc, "close_pipes", None)
        if close_pipes is not None:
            close_pipes()
        if master is not None:
            try:
                os.close(master)
            except OSError:
                pass


async def _pump_out(reader: asyncio.StreamReader, stream: Stream, packet_id: int | None) -> None:
    while True:
        chunk = await reader.read(_READ_CHUNK)
        if not chunk:
            return
        await stream.write(chunk if packet_id is None else v2_packet(packet_id, chunk))


async def _write_stdin(proc: asyncio.subprocess.Process, data: bytes) -> bool:
    """False once the command stopped reading (its stdin is gone): drop further input."""
    if proc.stdin is None or proc.stdin.is_closing():
        return False
    try:
        proc.stdin.write(data)
        await proc.stdin.drain()
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False


def _close_reader(proc: Any, which: str) -> None:
    """Stop reading the command's stdout/stderr: its next write gets EPIPE/SIGPIPE, as when
    adbd closes its end of the command's socketpair."""
    reader = getattr(proc, which, None)
    close = getattr(reader, "close", None)
    if close is not None:  # spawn_client.PipeReader
        close()
        return
    transport = getattr(proc, "_transport", None)  # asyncio Process
    if transport is not None:
        pipe = transport.get_pipe_transport(1 if which == "stdout" else 2)
        if pipe is not None:
            pipe.close()


async def _pump_out_raw(reader: Any, stream: Stream) -> None:
    while True:
        try:
            chunk = await reader.read(_READ_CHUNK)
        except (OSError, ValueError):
            return
        if not chunk:
            return
        try:
            await stream.write(chunk)
        except StreamClosed:
            return


async def _feed_raw(stream: Stream, proc: Any) -> None:
    """Every byte the host sent (also what was queued when it closed), then EOF."""
    alive = True
    while True:
        data = await stream.read()
        if data is None:
            break
        if alive:
            alive = await _write_stdin(proc, data)
    if proc.stdin is not None and not proc.stdin.is_closing():
        proc.stdin.close()
        try:
            await proc.stdin.wait_closed()
        except (BrokenPipeError, ConnectionResetError):
            pass


async def _run_pipes_raw(stream: Stream, proc: Any) -> None:
    assert proc.stdout is not None and proc.stderr is None   # merged (spawn merge_stderr)
    out = asyncio.ensure_future(_pump_out_raw(proc.stdout, stream))
    feeder = asyncio.ensure_future(_feed_raw(stream, proc))
    try:
        pending: set[asyncio.Future[Any]] = {out, feeder}
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if not out.done():
            # the host closed first: input delivered + EOF; nobody reads the output now
            await feeder
            out.cancel()
            try:
                await out
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise
            _close_reader(proc, "stdout")
        else:
            await out
        await proc.wait()
    finally:
        feeder.cancel()
        out.cancel()


async def _pump_stdin_v1(stream: Stream, proc: asyncio.subprocess.Process) -> None:
    alive = True
    while True:
        data = await stream.read()
        if data is None:
            return
        if alive:
            alive = await _write_stdin(proc, data)


async def _run_pipes_v1(stream: Stream, proc: Any) -> None:
    assert proc.stdout is not None and proc.stderr is None   # merged (spawn merge_stderr)
    feeder = asyncio.create_task(_pump_stdin_v1(stream, proc))
    try:
        await _pump_out(proc.stdout, stream, None)
        await proc.wait()
    finally:
        feeder.cancel()


async def _pump_stdin_v2(stream: Stream, proc: asyncio.subprocess.Process,
                         pty: _PtyIO | None) -> None:
    parser = V2Parser()
    alive = True
    while True:
        data = await stream.read()
        if data is None:
            return
        for pid, payload in parser.feed(data):
            if pid == ID_STDIN and payload and alive:
                if pty is not None:
                    await pty.write(payload)
                else:
                    alive = await _write_stdin(proc, payload)
            elif pid == ID_CLOSE_STDIN:
                # A pty cannot half-close; adbd ignores close-stdin for pty shells too.
                if pty is None and proc.stdin is not None and not proc.stdin.is_closing():
                    proc.stdin.close()
                    alive = False
            elif pid == ID_WINDOW_SIZE and pty is not None:
                size = parse_window_size(payload)
                if size:
                    pty.resize(*size)


async def _run_pipes_v2(stream: Stream, proc: Any) -> None:
    assert proc.stdout is not None and proc.stderr is not None
    feeder = asyncio.create_task(_pump_stdin_v2(stream, proc, None))
    try:
        await asyncio.gather(_pump_out(proc.stdout, stream, ID_STDOUT),
                             _pump_out(proc.stderr, stream, ID_STDERR))
        code = await proc.wait()
        await stream.write(v2_packet(ID_EXIT, bytes([exit_status(code)])))
    finally:
        feeder.cancel()


async def _run_pty(stream: Stream, proc: Any, pty: _PtyIO,
                   v2: bool) -> None:
    if v2:
        feeder = asyncio.create_task(_pump_stdin_v2(stream, proc, pty))
    else:
        feeder = asyncio.create_task(_pump_stdin_pty_v1(stream, pty))
    try:
        while True:
            chunk = await pty.read()
            if not chunk:
                break
            await stream.write(v2_packet(ID_STDOUT, chunk) if v2 else chunk)
        code = await proc.wait()
        if v2:
            await stream.write(v2_packet(ID_EXIT, bytes([exit_status(code)])))
    finally:
        feeder.cancel()


async def _pump_stdin_pty_v1(stream: Stream, pty: _PtyIO) -> None:
    while True:
        data = await stream.read()
        if data is None:
            return
        await pty.write(data)
