"""`Device`: one phone on one adb server; shell (v2, and a v1 fallback), sync, streams.

Why this is the only class that talks to a phone: every call here has ONE deadline
covering connect + request + output, and every failure goes through
`adbflow.device.failures`, so the layers above see `DevicePort` and typed errors only.

Timeouts kill: closing the socket makes the adb server CLSE the stream, and adbd (or our
virtual adbd) kills the command's process group. Every shell argument built from data is
quoted by the caller through `Device.run(argv)` (shlex.join).
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shlex
import stat as stat_mod
import struct
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from adbflow.device.failures import adb_failures, connect, exit_error, tail
from adbflow.device.results import RemoteEntry, ShellResult
from adbflow.device.server import AdbServer
from adbflow.device.stream import LineStream
from adbflow.device.transfer import OnData, recv_file, send_file
from adbflow.device.wire import (
    DENT_V2,
    Wire,
    read_shell_packet,
    shell_packet,
    sync_fail_message,
    sync_lstat_v2,
    sync_quit,
    sync_request,
    sync_stat,
)
from adbflow.errors import AdbError, ConnectionLost, OutputTooLarge, ServerUnreachable, TransferTooLarge

#: one `adb reverse tcp:0` at a time in this process, from request to rebind (Device.reverse)
_REVERSE_ANY_PORT = threading.Lock()
_SYNC_TIMEOUT_HINT = "raise --timeout; a slow USB link moves ~20-40 MB/s"


class Device:
    """One device on one adb server: shell (v2, real exit codes), sync, streaming.

    Implements `adbflow.device.port.DevicePort`.
    """

    def __init__(self, serial: str, server: AdbServer | None = None, *,
                 model: str | None = None, adb_serial: str | None = None) -> None:
        # `serial` names the device in adbflow (bids, journal, errors); `adb_serial` is what
        # its adb server calls it. They differ only when one serial is two phones on two
        # servers (then serial = SERIAL@HOST:PORT, see adbflow.device.identity).
        self.serial = serial
        self.adb_serial = adb_serial or serial
        self.server = server or AdbServer()
        self.model = model
        self._features: frozenset[str] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Device({self.serial!r}, {str(self.server)!r})"

    # -- plumbing
    def _open(self, service: str, cmd: str, deadline: float | None) -> Wire:
        """A connection bound to this device with `service` opened on it."""
        wire = connect(self.server, self.serial, cmd, deadline)
        try:
            with adb_failures(self.serial, cmd, timeout_message="timed out opening the device service",
                              lost_message="connection lost: {exc}"):
                wire.request(f"host:transport:{self.adb_serial}")
                wire.request(service)
        except BaseException:
            wire.close()
            raise
        return wire

    def features(self, *, timeout: float = 5.0) -> frozenset[str]:
        """adbd's feature list (cached: it changes only when adbd restarts)."""
        with self._lock:
            if self._features is not None:
                return self._features
        cmd = "features"
        try:
            wire = Wire(self.server, time.monotonic() + timeout)
        except OSError as exc:      # a connect timeout too: the server is not there
            raise ServerUnreachable(self.serial, cmd,
                                    message=f"adb server {self.server} unreachable: {exc}") from exc
        try:
            with adb_failures(self.serial, cmd, timeout_message="timed out reading features",
                              lost_message="connection lost: {exc}"):
                wire.request(f"host-serial:{self.adb_serial}:features")
                feats = frozenset(wire.read_block().decode("utf-8", "replace").strip().split(","))
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
            raise exit_error(self.serial, cmd, stdout=res.stdout, stderr=res.stderr, exit_code=code)
        return res

    def _shell_v2(self, cmd: str, deadline: float, stdin: bytes | None,
                  max_output: int) -> tuple[int, bytes, bytes]:
        wire = self._open(f"shell,v2,raw:{cmd}", cmd, deadline)
        out, err = bytearray(), bytearray()
        try:
            with adb_failures(self.serial, cmd, timeout_message="timed out; command killed on the device",
                              timeout_hint="raise --timeout or check the device's load",
                              lost_message="connection lost before the exit code ({exc})",
                              lost_hint="the device disconnected or rebooted",
                              output=lambda: (tail(out), tail(err))):
                if stdin:
                    for i in range(0, len(stdin), 32768):
                        wire.send(shell_packet(0, stdin[i:i + 32768]))
                wire.send(shell_packet(4))          # close stdin: commands never wait on it
                while True:
                    kind, payload = read_shell_packet(wire)
                    if kind == 1:
                        out += payload
                    elif kind == 2:
                        err += payload
                    elif kind == 3:
                        return (payload[0] if payload else 255), bytes(out), bytes(err)
                    if len(out) + len(err) > max_output:
                        raise OutputTooLarge(self.serial, cmd, stdout=tail(out), stderr=tail(err),
                                             message=f"output exceeded {max_output} bytes; command killed",
                                             hint="the device printed far more than expected")
        finally:
            wire.close()

    def _shell_v1(self, cmd: str, deadline: float, stdin: bytes | None,
                  max_output: int) -> tuple[int, bytes, bytes]:
        if stdin:
            raise AdbError(self.serial, cmd, message="stdin needs shell v2 (Android 7+)",
                           kind="needs-shell-v2")
        marker = "ADBFLOW_EXIT_" + secrets.token_hex(8)
        wrapped = f"( {cmd}\n) </dev/null 2>&1; echo {marker}$?"
        wire = self._open(f"shell:{wrapped}", cmd, deadline)
        buf = bytearray()
        try:
            with adb_failures(self.serial, cmd, timeout_message="timed out; command killed on the device",
                              output=lambda: (tail(buf), "")):
                while True:
                    chunk = wire.recv_some()
                    if not chunk:
                        break
                    buf += chunk
                    if len(buf) > max_output:
                        raise OutputTooLarge(self.serial, cmd, stdout=tail(buf),
                                             message=f"output exceeded {max_output} bytes; command killed")
        finally:
            wire.close()
        idx = buf.rfind(marker.encode())
        if idx < 0:
            raise ConnectionLost(self.serial, cmd, stdout=tail(buf),
                                 message="connection ended before the exit status")
        rest = bytes(buf[idx + len(marker):]).strip()
        code = int(rest) if rest.isdigit() else 255
        return code, bytes(buf[:idx]).replace(b"\r\n", b"\n"), b""

    def run(self, argv: Sequence[str], *, timeout: float, stdin: bytes | None = None,
            check: bool = True, max_output: int = 16 << 20) -> ShellResult:
        """Run a program with every argument quoted: data never becomes shell syntax."""
        return self.shell(shlex.join(list(argv)), timeout=timeout, stdin=stdin, check=check,
                          max_output=max_output)

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

    # -- port forwards (adb forward: laptop -> phone; adb reverse: phone -> laptop)
    def _host_serial(self, request: str, timeout: float, reply: bool = False) -> bytes:
        """A `host-serial:` request that the adb server answers OKAY, then OKAY or FAIL
        (AOSP adb.cpp handle_forward_request), and then maybe a length-prefixed result."""
        cmd = f"adb forward {request}"
        wire = connect(self.server, self.serial, cmd, time.monotonic() + timeout)
        try:
            with adb_failures(self.serial, cmd, timeout_message="timed out setting up a forward"):
                wire.request(f"host-serial:{self.adb_serial}:{request}")
                wire.status()      # the second status: the listener is installed
                return wire.recv_rest() if reply else b""
        finally:
            wire.close()

    def forward(self, local: str, remote: str, *, timeout: float) -> int:
        """`adb forward LOCAL REMOTE` (socket specs, e.g. `tcp:0`, `tcp:8080`): the laptop's
        LOCAL now reaches REMOTE inside the phone. Returns the laptop port (the one the
        server picked for `tcp:0`). Remove it with remove_forward."""
        extra = self._host_serial(f"forward:{local};{remote}", timeout, local == "tcp:0")
        return _port_of(local, extra)

    def remove_forward(self, local: str, *, timeout: float) -> None:
        """`adb forward --remove LOCAL`."""
        self._host_serial(f"killforward:{local}", timeout)

    def _reverse_service(self, request: str, timeout: float, reply: bool = False) -> bytes:
        cmd = f"adb reverse {request}"
        wire = self._open(f"reverse:{request}", cmd, time.monotonic() + timeout)
        try:
            with adb_failures(self.serial, cmd, timeout_message="timed out setting up a reverse"):
                wire.status()      # adbd's own OKAY or FAIL after the service's
                return wire.recv_rest() if reply else b""
        finally:
            wire.close()

    def reverse(self, remote: str, local: str, *, timeout: float) -> int:
        """`adb reverse REMOTE LOCAL`: the phone's REMOTE (e.g. `tcp:0`) now reaches the
        laptop's LOCAL. Returns the phone port. Remove it with remove_reverse.

        `tcp:0` is rebound at once to the port the phone picked. Why: the adb server lets a
        phone connect back only to a LOCAL in its table of reverses, which it keys by the
        REMOTE *as requested* (transport.cpp UpdateReverseConfig: `reverse_forwards_[remote]
        = local`). A second `tcp:0` reverse on the same phone replaces the first's entry,
        and the phone's next connection through the first makes the server abort
        (adb.cpp: LOG(FATAL) "disallowed connect to tcp:L", every device dropped: seen
        with two llama.cpp RPC workers). Keyed by the concrete port each entry stays; the
        `tcp:0` entry is then dropped (the server records a killforward before the phone
        answers, and the phone's "not found" is expected)."""
        if remote != "tcp:0":
            self._reverse_service(f"forward:{remote};{local}", timeout)
            return _port_of(remote, b"")
        with _REVERSE_ANY_PORT:
            port = _port_of(remote, self._reverse_service(f"forward:tcp:0;{local}", timeout,
                                                          True))
            try:
                self._reverse_service(f"forward:tcp:{port};{local}", timeout)
            except BaseException:
                with contextlib.suppress(AdbError):
                    self._reverse_service(f"killforward:tcp:{port}", timeout)
                raise
            with contextlib.suppress(AdbError):
                self._reverse_service("killforward:tcp:0", timeout)
        return port

    def remove_reverse(self, remote: str, *, timeout: float) -> None:
        """`adb reverse --remove REMOTE`."""
        self._reverse_service(f"killforward:{remote}", timeout)

    # -- sync
    def _sync(self, cmd: str, timeout: float) -> Wire:
        return self._open("sync:", cmd, time.monotonic() + timeout)

    def _sync_failures(self, cmd: str) -> adb_failures:
        return adb_failures(self.serial, cmd, timeout_hint=_SYNC_TIMEOUT_HINT)

    def stat(self, remote: str, *, timeout: float) -> RemoteEntry | None:
        """lstat of a device path; None when it does not exist. With adbd's stat_v2
        (Android 9+) the entry carries the inode (picture identity, see RemoteEntry)."""
        cmd = f"stat {remote}"
        v2 = "stat_v2" in self.features(timeout=timeout)
        ino = 0
        with self._sync_failures(cmd):
            wire = self._sync(cmd, timeout)
            try:
                if v2:
                    mode, size, mtime, ino = sync_lstat_v2(wire, remote)
                else:
                    mode, size, mtime = sync_stat(wire, remote)
            finally:
                sync_quit(wire)
        if mode == 0:
            return None
        return RemoteEntry(remote.rstrip("/").rsplit("/", 1)[-1] or "/", size, float(mtime),
                           stat_mod.S_ISREG(mode), ino=ino)

    def list_dir(self, remote: str, *, timeout: float) -> list[RemoteEntry]:
        """Entries of a device directory (no `.`/`..`). Names are untrusted device data.
        With adbd's ls_v2 (Android 11+) entries carry their inode (LIS2); else LIST."""
        cmd = f"ls {remote}"
        v2 = "ls_v2" in self.features(timeout=timeout)
        entries: list[RemoteEntry] = []
        with self._sync_failures(cmd):
            wire = self._sync(cmd, timeout)
            try:
                sync_request(wire, b"LIS2" if v2 else b"LIST", remote.encode())
                while True:
                    ino = 0
                    if v2:
                        head = wire.read_exact(DENT_V2.size)
                        (ident, err, _dev, ino, mode, _nl, _u, _g, size, _at, mtime, _ct,
                         namelen) = DENT_V2.unpack(head)
                        want = b"DNT2"
                    else:
                        head = wire.read_exact(20)
                        ident, err = head[:4], 0
                        mode, size, mtime, namelen = struct.unpack("<IIII", head[4:])
                        want = b"DENT"
                    if ident == b"DONE":
                        break
                    if ident != want:
                        raise ConnectionResetError(errno.EPROTO, f"protocol fault: {ident!r}")
                    name = wire.read_exact(namelen).decode("utf-8", "replace")
                    if name in (".", "..") or err:      # err: lstat of that entry failed
                        continue
                    entries.append(RemoteEntry(name, size, float(mtime), stat_mod.S_ISREG(mode),
                                               stat_mod.S_ISDIR(mode), ino=ino))
            finally:
                sync_quit(wire)
        return entries

    def push(self, local: Path, remote: str, *, timeout: float, mode: int = 0o644) -> int:
        """Copy a laptop file to `remote` (a file path). Returns bytes sent."""
        return self.push_file(local, remote, timeout=timeout, mode=mode)

    def push_file(self, local: Path, remote: str, *, timeout: float, mode: int = 0o644,
                  on_data: OnData | None = None) -> int:
        """`push`, with `on_data(memoryview)` called on every chunk as it is sent (a
        streaming sha256, a progress bar). Not part of DevicePort: callers check for it."""
        local = Path(local)
        cmd = f"push {local} {remote}"
        with self._sync_failures(cmd), local.open("rb", buffering=0) as src:
            wire = self._sync(cmd, timeout)
            try:
                sync_request(wire, b"SEND", f"{remote},{stat_mod.S_IFREG | mode}".encode())
                total = send_file(wire, src, on_data)
                wire.send(b"DONE" + struct.pack("<I", int(time.time())))
                status = wire.read_exact(8)
                if status[:4] == b"FAIL":
                    raise sync_fail_message(wire, struct.unpack("<I", status[4:])[0])
                if status[:4] != b"OKAY":
                    raise ConnectionResetError(errno.EPROTO, f"protocol fault: {status[:4]!r}")
            finally:
                sync_quit(wire)
        return total

    def pull(self, remote: str, local: Path, *, timeout: float, max_bytes: int | None = None) -> int:
        """Copy a device file to `local`, atomically (temp file + rename). Returns bytes."""
        return self.pull_file(remote, local, timeout=timeout, max_bytes=max_bytes)

    def pull_file(self, remote: str, local: Path, *, timeout: float,
                  max_bytes: int | None = None, on_data: OnData | None = None) -> int:
        """`pull`, with `on_data(memoryview)` on every chunk as it arrives."""
        local = Path(local)
        cmd = f"pull {remote} {local}"
        tmp = local.with_name(f".{local.name}.part-{os.getpid()}-{threading.get_ident()}")

        def too_large() -> Exception:
            return TransferTooLarge(self.serial, cmd, message=f"file larger than {max_bytes} bytes",
                                    hint="the device file is bigger than allowed; not pulled")
        try:
            with self._sync_failures(cmd), tmp.open("wb") as dst:
                wire = self._sync(cmd, timeout)
                try:
                    sync_request(wire, b"RECV", remote.encode())
                    total = recv_file(wire, dst, max_bytes=max_bytes, on_data=on_data,
                                      too_large=too_large)
                finally:
                    sync_quit(wire)
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)
        return total


def _port_of(spec: str, reply: bytes) -> int:
    """The tcp port of a forward: the one in the spec, or the one the server reported for
    `tcp:0` (a length-prefixed decimal; anything else from the wire is refused)."""
    kind, _, port = spec.partition(":")
    if kind != "tcp":
        return 0
    if port != "0":
        return int(port)
    text = reply[4:].decode("ascii", "replace") if len(reply) >= 4 else ""
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise AdbError(None, f"forward {spec}", message=f"no port in the reply {reply[:16]!r}")
    return int(text)
