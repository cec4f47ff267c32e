"""The narrow device layer: everything adbflow does to a phone goes through `Device`.

Why our own smart-socket client instead of adbutils' connection object: every call here
needs ONE deadline covering connect + request + output (adbutils sets per-recv socket
timeouts, its sync has no timeout at all, its connection starts a local adb server when a
remote one is unreachable and sleeps 10 ms on every close). The wire format used is tiny and
stable (host services, `shell,v2:`, `sync:` v1), see AOSP adb docs/dev/{protocol,services,sync}.md.
adbutils still provides the adb binary (`adbutils.adb_path()`) used to start a local server.

Timeouts kill: closing the socket makes the adb server CLSE the stream, and adbd (or our
virtual adbd) kills the command's process group. Every shell argument built from data is
quoted by the caller through `Device.run(argv)` (shlex.join).
"""
from __future__ import annotations

import errno
import os
import secrets
import shlex
import shutil
import socket
import stat as stat_mod
import struct
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from adbflow.errors import AdbError, AdbTimeoutError, DeviceUnavailableError, ParseError
from adbflow.parsers.adb_messages import classify_adb_error, parse_adb_devices

DEFAULT_PORT = 5037
_SERVER_LIST_TIMEOUT = 3.0


# --------------------------------------------------------------------------- servers

@dataclass(frozen=True)
class AdbServer:
    """An adb server (the thing on :5037), local or on another host."""
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT

    @classmethod
    def parse(cls, text: str) -> AdbServer:
        """`HOST:PORT`, `PORT` or `HOST` (also `tcp:HOST:PORT` as in $ADB_SERVER_SOCKET)."""
        t = text.strip()
        if t.startswith("tcp:"):
            t = t[4:]
        if not t:
            raise AdbError(None, f"--adb-server {text!r}", message="empty adb server address",
                           hint="use HOST:PORT, PORT or HOST")
        if t.isdigit():
            return cls(port=_port(t, text))
        if t.startswith("[") and "]" in t:          # [::1]:5037
            host, _, rest = t[1:].partition("]")
            return cls(host=host, port=_port(rest.lstrip(":"), text) if rest else DEFAULT_PORT)
        if t.count(":") == 1:
            host, port = t.split(":")
            return cls(host=host or "127.0.0.1", port=_port(port, text))
        return cls(host=t)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_local(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1")


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise AdbError(None, f"--adb-server {whole!r}", message=f"bad port {text!r}",
                       hint="use HOST:PORT with a port between 1 and 65535")
    return int(text)


def resolve_servers(values: list[str] | None) -> list[AdbServer]:
    """The servers to read devices from, duplicates removed, order kept.

    Default: $ADB_SERVER_SOCKET (tcp:HOST:PORT), else 127.0.0.1:$ANDROID_ADB_SERVER_PORT, else :5037.
    """
    if values:
        servers = [AdbServer.parse(v) for v in values]
    elif os.environ.get("ADB_SERVER_SOCKET", "").startswith("tcp:"):
        servers = [AdbServer.parse(os.environ["ADB_SERVER_SOCKET"])]
    else:
        env_port = os.environ.get("ANDROID_ADB_SERVER_PORT", "").strip()
        servers = [AdbServer(port=_port(env_port, env_port) if env_port else DEFAULT_PORT)]
    return list(dict.fromkeys(servers))


def adb_binary() -> str:
    """$ADBFLOW_ADB, else `adb` on PATH, else the adb shipped in the adbutils wheel."""
    env = os.environ.get("ADBFLOW_ADB")
    if env:
        return env
    found = shutil.which("adb")
    if found:
        return found
    import adbutils
    return adbutils.adb_path()


# --------------------------------------------------------------------------- wire

class _Wire:
    """One smart-socket connection to an adb server, with one absolute deadline.

    Raises socket.timeout when the deadline passes and OSError on connection faults;
    `Device` translates those into AdbTimeoutError / DeviceUnavailableError with context.
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
            raise socket.timeout("deadline passed")
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
        """Send a host request; raise _Refused(message) on FAIL."""
        data = service.encode("utf-8")
        self.send(b"%04x" % len(data) + data)
        status = self.read_exact(4)
        if status == b"OKAY":
            return
        if status == b"FAIL":
            raise _Refused(self.read_block().decode("utf-8", "replace"))
        raise ConnectionResetError(errno.EPROTO, f"protocol fault: status {status!r}")

    def read_block(self) -> bytes:
        length = int(self.read_exact(4), 16)
        return self.read_exact(length)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class _Refused(Exception):
    """The adb server answered FAIL (device not found, unauthorized, ...)."""


def _raise_refused(serial: str | None, cmd: str, message: str) -> None:
    problem = classify_adb_error(message)
    hint = problem.hint if problem else None
    if problem is None or problem.unavailable:
        raise DeviceUnavailableError(serial, cmd, stderr=message, message=message, hint=hint)
    raise AdbError(serial, cmd, stderr=message, message=message, hint=hint)


# --------------------------------------------------------------------------- results

@dataclass(frozen=True)
class DeviceRef:
    """A line of the inventory: what an adb server says about one device."""
    serial: str
    state: str
    server: AdbServer
    model: str | None = None


@dataclass(frozen=True)
class ShellResult:
    serial: str
    cmd: str
    exit_code: int
    stdout: str
    stderr: str
    elapsed_s: float


@dataclass(frozen=True)
class RemoteEntry:
    """A file on the device. `name` is untrusted: sanitize before using it on the laptop."""
    name: str
    size: int
    mtime: float
    is_file: bool


# --------------------------------------------------------------------------- device

class Device:
    """One device on one adb server: shell (v2, real exit codes), sync, streaming."""

    def __init__(self, serial: str, server: AdbServer | None = None, *,
                 model: str | None = None) -> None:
        self.serial = serial
        self.server = server or AdbServer()
        self.model = model
        self._features: frozenset[str] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Device({self.serial!r}, {str(self.server)!r})"

    # -- plumbing
    def _open(self, service: str, cmd: str, deadline: float | None) -> _Wire:
        """A connection bound to this device with `service` opened on it."""
        try:
            wire = _Wire(self.server, deadline)
        except socket.timeout as exc:
            raise AdbTimeoutError(self.serial, cmd, message=f"adb server {self.server} did not answer in time",
                                  hint="is the adb server host reachable?") from exc
        except OSError as exc:
            raise DeviceUnavailableError(self.serial, cmd, message=f"adb server {self.server} unreachable: {exc}",
                                         hint="start it (`adb start-server`) or fix --adb-server") from exc
        try:
            wire.request(f"host:transport:{self.serial}")
            wire.request(service)
        except _Refused as exc:
            wire.close()
            _raise_refused(self.serial, cmd, str(exc))
        except socket.timeout as exc:
            wire.close()
            raise AdbTimeoutError(self.serial, cmd, message="timed out opening the device service") from exc
        except OSError as exc:
            wire.close()
            raise DeviceUnavailableError(self.serial, cmd, message=f"connection lost: {exc}") from exc
        return wire

    def features(self, *, timeout: float = 5.0) -> frozenset[str]:
        """adbd's feature list (cached: it changes only when adbd restarts)."""
        with self._lock:
            if self._features is not None:
                return self._features
        cmd = "features"
        deadline = time.monotonic() + timeout
        try:
            wire = _Wire(self.server, deadline)
        except OSError as exc:
            raise DeviceUnavailableError(self.serial, cmd, message=f"adb server {self.server} unreachable: {exc}") from exc
        try:
            wire.request(f"host-serial:{self.serial}:features")
            feats = frozenset(wire.read_block().decode("utf-8", "replace").strip().split(","))
        except _Refused as exc:
            _raise_refused(self.serial, cmd, str(exc))
        except socket.timeout as exc:
            raise AdbTimeoutError(self.serial, cmd, message="timed out reading features") from exc
        except OSError as exc:
            raise DeviceUnavailableError(self.serial, cmd, message=f"connection lost: {exc}") from exc
        finally:
            wire.close()
        with self._lock:
            self._features = feats
        return feats

    # -- shell
    def shell(self, cmd: str, *, timeout: float, stdin: bytes | None = None, check: bool = True,
              max_output: int = 16 << 20) -> ShellResult:
        """Run `cmd` with the device's sh. Real exit code and separate stderr (shell v2).

        On timeout the stream is closed, which kills the command on the device. Output beyond
        `max_output` bytes (stdout+stderr) aborts the command: device output is untrusted.
        Devices without shell_v2 (Android < 7) get a v1 fallback that runs the command in a
        subshell followed by a random end marker, so `exit` inside cmd cannot hide the status.
        """
        start = time.monotonic()
        deadline = start + timeout
        if "shell_v2" in self.features(timeout=timeout):
            code, out, err = self._shell_v2(cmd, deadline, stdin, max_output)
        else:
            code, out, err = self._shell_v1(cmd, deadline, stdin, max_output)
        res = ShellResult(self.serial, cmd, code, out.decode("utf-8", "replace"),
                          err.decode("utf-8", "replace"), time.monotonic() - start)
        if check and code != 0:
            problem = classify_adb_error(res.stderr) if res.stderr else None
            raise AdbError(self.serial, cmd, stdout=res.stdout, stderr=res.stderr, exit_code=code,
                           hint=problem.hint if problem else None)
        return res

    def _shell_v2(self, cmd: str, deadline: float, stdin: bytes | None,
                  max_output: int) -> tuple[int, bytes, bytes]:
        wire = self._open(f"shell,v2,raw:{cmd}", cmd, deadline)
        out, err = bytearray(), bytearray()
        try:
            if stdin:
                for i in range(0, len(stdin), 32768):
                    chunk = stdin[i:i + 32768]
                    wire.send(struct.pack("<BI", 0, len(chunk)) + chunk)
            wire.send(struct.pack("<BI", 4, 0))          # close stdin: commands never wait on it
            while True:
                header = wire.read_exact(5)
                kind, length = header[0], struct.unpack("<I", header[1:])[0]
                payload = wire.read_exact(length) if length else b""
                if kind == 1:
                    out += payload
                elif kind == 2:
                    err += payload
                elif kind == 3:
                    return (payload[0] if payload else 255), bytes(out), bytes(err)
                if len(out) + len(err) > max_output:
                    raise AdbError(self.serial, cmd, stdout=_tail(out), stderr=_tail(err),
                                   message=f"output exceeded {max_output} bytes; command killed",
                                   hint="the device printed far more than expected")
        except socket.timeout as exc:
            raise AdbTimeoutError(self.serial, cmd, stdout=_tail(out), stderr=_tail(err),
                                  message="timed out; command killed on the device",
                                  hint="raise --timeout or check the device's load") from exc
        except OSError as exc:
            raise DeviceUnavailableError(self.serial, cmd, stdout=_tail(out), stderr=_tail(err),
                                         message=f"connection lost before the exit code ({exc})",
                                         hint="the device disconnected or rebooted") from exc
        finally:
            wire.close()

    def _shell_v1(self, cmd: str, deadline: float, stdin: bytes | None,
                  max_output: int) -> tuple[int, bytes, bytes]:
        if stdin:
            raise AdbError(self.serial, cmd, message="stdin needs shell v2 (Android 7+)")
        marker = "ADBFLOW_EXIT_" + secrets.token_hex(8)
        wrapped = f"( {cmd}\n) </dev/null 2>&1; echo {marker}$?"
        wire = self._open(f"shell:{wrapped}", cmd, deadline)
        buf = bytearray()
        try:
            while True:
                chunk = wire.recv_some()
                if not chunk:
                    break
                buf += chunk
                if len(buf) > max_output:
                    raise AdbError(self.serial, cmd, stdout=_tail(buf),
                                   message=f"output exceeded {max_output} bytes; command killed")
        except socket.timeout as exc:
            raise AdbTimeoutError(self.serial, cmd, stdout=_tail(buf),
                                  message="timed out; command killed on the device") from exc
        except OSError as exc:
            raise DeviceUnavailableError(self.serial, cmd, stdout=_tail(buf),
                                         message=f"connection lost ({exc})") from exc
        finally:
            wire.close()
        idx = buf.rfind(marker.encode())
        if idx < 0:
            raise DeviceUnavailableError(self.serial, cmd, stdout=_tail(buf),
                                         message="connection ended before the exit status")
        tail = bytes(buf[idx + len(marker):]).strip()
        code = int(tail) if tail.isdigit() else 255
        return code, bytes(buf[:idx]).replace(b"\r\n", b"\n"), b""

    def run(self, argv: Sequence[str], **kw) -> ShellResult:
        """Run a program with every argument quoted: data never becomes shell syntax."""
        return self.shell(shlex.join(list(argv)), **kw)

    def getprop(self, key: str, *, timeout: float) -> str:
        return self.run(["getprop", key], timeout=timeout).stdout.strip()

    def stream_lines(self, cmd: str, *, timeout: float | None = None) -> LineStream:
        """Stream stdout lines of a long-running command (inotifyd, logcat)."""
        deadline = time.monotonic() + timeout if timeout else None
        v2 = "shell_v2" in self.features(timeout=timeout or 10.0)
        # opening always has a deadline; only the open-ended stream itself may run without one
        wire = self._open(f"shell,v2,raw:{cmd}" if v2 else f"shell:{cmd}", cmd,
                          deadline or time.monotonic() + 10.0)
        wire.deadline = deadline
        return LineStream(wire, self.serial, cmd, v2=v2)

    # -- sync
    def _sync(self, cmd: str, timeout: float) -> _Wire:
        return self._open("sync:", cmd, time.monotonic() + timeout)

    def _sync_errors(self, cmd: str):
        return _SyncErrors(self.serial, cmd)

    def stat(self, remote: str, *, timeout: float) -> RemoteEntry | None:
        """lstat of a device path; None when it does not exist."""
        cmd = f"stat {remote}"
        with self._sync_errors(cmd):
            wire = self._sync(cmd, timeout)
            try:
                mode, size, mtime = _sync_stat(wire, remote)
            finally:
                _sync_quit(wire)
        if mode == 0:
            return None
        return RemoteEntry(remote.rstrip("/").rsplit("/", 1)[-1] or "/", size, float(mtime),
                           stat_mod.S_ISREG(mode))

    def list_dir(self, remote: str, *, timeout: float) -> list[RemoteEntry]:
        """Entries of a device directory (no `.`/`..`). Names are untrusted device data."""
        cmd = f"ls {remote}"
        entries: list[RemoteEntry] = []
        with self._sync_errors(cmd):
            wire = self._sync(cmd, timeout)
            try:
                path = remote.encode()
                wire.send(b"LIST" + struct.pack("<I", len(path)) + path)
                while True:
                    head = wire.read_exact(20)
                    if head[:4] == b"DONE":
                        break
                    if head[:4] != b"DENT":
                        raise ConnectionResetError(errno.EPROTO, f"protocol fault: {head[:4]!r}")
                    mode, size, mtime, namelen = struct.unpack("<IIII", head[4:])
                    name = wire.read_exact(namelen).decode("utf-8", "replace")
                    if name in (".", ".."):
                        continue
                    entries.append(RemoteEntry(name, size, float(mtime), stat_mod.S_ISREG(mode)))
            finally:
                _sync_quit(wire)
        return entries

    def push(self, local: Path, remote: str, *, timeout: float, mode: int = 0o644) -> int:
        """Copy a laptop file to `remote` (a file path). Returns bytes sent."""
        local = Path(local)
        cmd = f"push {local} {remote}"
        total = 0
        with self._sync_errors(cmd), local.open("rb") as src:
            wire = self._sync(cmd, timeout)
            try:
                spec = f"{remote},{stat_mod.S_IFREG | mode}".encode()
                wire.send(b"SEND" + struct.pack("<I", len(spec)) + spec)
                while True:
                    chunk = src.read(64 * 1024)
                    if not chunk:
                        break
                    wire.send(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
                    total += len(chunk)
                wire.send(b"DONE" + struct.pack("<I", int(time.time())))
                status = wire.read_exact(8)
                if status[:4] == b"FAIL":
                    msg = wire.read_exact(struct.unpack("<I", status[4:])[0]).decode("utf-8", "replace")
                    raise _SyncFail(msg)
                if status[:4] != b"OKAY":
                    raise ConnectionResetError(errno.EPROTO, f"protocol fault: {status[:4]!r}")
            finally:
                _sync_quit(wire)
        return total

    def pull(self, remote: str, local: Path, *, timeout: float, max_bytes: int | None = None) -> int:
        """Copy a device file to `local`, atomically (temp file + rename). Returns bytes."""
        local = Path(local)
        cmd = f"pull {remote} {local}"
        tmp = local.with_name(f".{local.name}.part-{os.getpid()}-{threading.get_ident()}")
        total = 0
        try:
            with self._sync_errors(cmd), tmp.open("wb") as dst:
                wire = self._sync(cmd, timeout)
                try:
                    path = remote.encode()
                    wire.send(b"RECV" + struct.pack("<I", len(path)) + path)
                    while True:
                        head = wire.read_exact(8)
                        kind, length = head[:4], struct.unpack("<I", head[4:])[0]
                        if kind == b"DONE":
                            break
                        if kind == b"FAIL":
                            raise _SyncFail(wire.read_exact(length).decode("utf-8", "replace"))
                        if kind != b"DATA" or length > 64 * 1024:
                            raise ConnectionResetError(errno.EPROTO, f"protocol fault: {kind!r}")
                        total += length
                        if max_bytes is not None and total > max_bytes:
                            raise AdbError(self.serial, cmd, message=f"file larger than {max_bytes} bytes",
                                           hint="the device file is bigger than allowed; not pulled")
                        dst.write(wire.read_exact(length))
                finally:
                    _sync_quit(wire)
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)
        return total


class _SyncFail(Exception):
    """A sync FAIL reply (No such file, Read-only file system, ...)."""


class _SyncErrors:
    """Context manager translating wire faults of one sync op into adbflow errors."""

    def __init__(self, serial: str, cmd: str) -> None:
        self.serial, self.cmd = serial, cmd

    def __enter__(self) -> None:
        return None

    def __exit__(self, et, exc, tb) -> bool:
        if exc is None or isinstance(exc, AdbError):
            return False
        if isinstance(exc, _SyncFail):
            problem = classify_adb_error(str(exc))
            raise AdbError(self.serial, self.cmd, stderr=str(exc), message=str(exc),
                           hint=problem.hint if problem else None) from exc
        if isinstance(exc, socket.timeout):
            raise AdbTimeoutError(self.serial, self.cmd, message="timed out",
                                  hint="raise --timeout; a slow USB link moves ~20-40 MB/s") from exc
        if isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, PermissionError,
                                                             IsADirectoryError)):
            raise DeviceUnavailableError(self.serial, self.cmd, message=f"connection lost ({exc})") from exc
        return False


def _sync_stat(wire: _Wire, remote: str) -> tuple[int, int, int]:
    path = remote.encode()
    wire.send(b"STAT" + struct.pack("<I", len(path)) + path)
    head = wire.read_exact(16)
    if head[:4] != b"STAT":
        raise ConnectionResetError(errno.EPROTO, f"protocol fault: {head[:4]!r}")
    mode, size, mtime = struct.unpack("<III", head[4:])
    return mode, size, mtime


def _sync_quit(wire: _Wire) -> None:
    try:
        wire.sock.settimeout(0.5)
        wire.sock.sendall(b"QUIT" + b"\0\0\0\0")
    except OSError:
        pass
    wire.close()


def _tail(buf: bytes | bytearray, limit: int = 4000) -> str:
    return bytes(buf[-limit:]).decode("utf-8", "replace")


class LineStream:
    """Lines of a running device command. close() kills it on the device.

    Iteration ends when the command exits (exit_code is then set) or the device disconnects.
    A per-stream deadline (timeout) ends iteration with AdbTimeoutError.
    """

    def __init__(self, wire: _Wire, serial: str, cmd: str, *, v2: bool) -> None:
        self._wire, self.serial, self.cmd, self._v2 = wire, serial, cmd, v2
        self.exit_code: int | None = None
        self._buf = bytearray()
        self._done = False
        if v2:
            try:
                wire.send(struct.pack("<BI", 4, 0))
            except OSError:
                self._done = True

    def __enter__(self) -> LineStream:
        return self

    def __exit__(self, *exc) -> None:
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
                header = self._wire.read_exact(5)
                kind, length = header[0], struct.unpack("<I", header[1:])[0]
                payload = self._wire.read_exact(length) if length else b""
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
        except socket.timeout as exc:
            self._finish()
            raise AdbTimeoutError(self.serial, self.cmd, message="stream timed out; command killed") from exc
        except (OSError, ValueError):
            self._finish()
        if len(self._buf) > 1 << 20:             # a 1 MiB line is garbage: cut it
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


# --------------------------------------------------------------------------- inventory

def start_local_server(server: AdbServer, *, timeout: float = 15.0) -> bool:
    """Start an adb server on a local port (as `adb` itself does on first use)."""
    if not server.is_local:
        return False
    try:
        subprocess.run([adb_binary(), "-P", str(server.port), "start-server"], timeout=timeout,
                       capture_output=True, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return True


def list_server(server: AdbServer, *, timeout: float = _SERVER_LIST_TIMEOUT,
                start_server: bool = False) -> list[DeviceRef]:
    """`adb devices -l` of one server; unreachable -> one `server-unreachable` ref."""
    for attempt in (0, 1):
        try:
            wire = _Wire(server, time.monotonic() + timeout)
        except OSError:
            if attempt == 0 and start_server and start_local_server(server):
                continue
            return [DeviceRef(serial="-", state="server-unreachable", server=server)]
        try:
            wire.request("host:devices-l")
            text = wire.read_block().decode("utf-8", "replace")
        except (OSError, _Refused):
            return [DeviceRef(serial="-", state="server-unreachable", server=server)]
        finally:
            wire.close()
        break
    try:
        listing = parse_adb_devices(text) if text.strip() else []
    except ParseError:
        listing = []
    return [DeviceRef(serial=d.serial, state=d.state, server=server,
                      model=d.tags.get("model") or None) for d in listing]


class Inventory:
    """Every device of every adb server, as one list (the bid round's audience)."""

    def __init__(self, servers: list[AdbServer] | None = None, serials: list[str] | None = None,
                 *, start_server: bool = True) -> None:
        self.servers = servers or resolve_servers(None)
        self.serials = [s for s in (serials or []) if s]
        self.start_server = start_server
        self._devices: dict[tuple[AdbServer, str], Device] = {}

    def refs(self) -> list[DeviceRef]:
        with ThreadPoolExecutor(max_workers=min(8, len(self.servers))) as pool:
            lists = pool.map(lambda s: list_server(s, start_server=self.start_server and s.is_local),
                             self.servers)
            return [ref for lst in lists for ref in lst]

    def _device_for(self, ref: DeviceRef) -> Device:
        """Reuse Device objects: they cache adbd features between rounds."""
        key = (ref.server, ref.serial)
        dev = self._devices.get(key)
        if dev is None:
            dev = self._devices[key] = Device(ref.serial, ref.server, model=ref.model)
        return dev

    def devices(self) -> list[Device]:
        return [self._device_for(r) for r in self.refs() if r.state == "device"
                and (not self.serials or r.serial in self.serials)]

    def device(self, serial: str) -> Device:
        refs = [r for r in self.refs() if r.serial == serial]
        ready = [r for r in refs if r.state == "device"]
        if ready:
            return self._device_for(ready[0])
        if refs:
            problem = classify_adb_error(refs[0].state)
            raise DeviceUnavailableError(serial, "devices", message=f"device is {refs[0].state}",
                                         hint=problem.hint if problem else None)
        raise DeviceUnavailableError(serial, "devices", message="no such device on "
                                     + ", ".join(map(str, self.servers)),
                                     hint="see `adbflow devices`")
