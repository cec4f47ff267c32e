"""Talking to the REAL adb server of the fleet: smart-socket requests, start/kill.

Why speak the smart-socket protocol instead of running `adb connect` per device: 100
registrations as subprocesses cost ~1 s of process start-up; the server's own
`host:connect:` request is the same operation, takes milliseconds and can run
concurrently. Starting/killing the server still goes through the adb binary
(`adb -P PORT start-server` / `kill-server`), with a timeout like every other call.
"""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from pathlib import Path

from adbflow.errors import FleetError

DEFAULT_TIMEOUT_S = 15.0


def adb_binary() -> str:
    """ADBFLOW_ADB if set, else the adb 36 binary shipped in the adbutils wheel."""
    env = os.environ.get("ADBFLOW_ADB")
    if env:
        return env
    import adbutils
    return str(adbutils.adb_path())


def _frame(service: str) -> bytes:
    data = service.encode()
    return f"{len(data):04x}".encode() + data


async def request(port: int, service: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> str:
    """One host request (`host:devices`, `host:connect:H:P`...); returns the reply text.

    Raises FleetError on FAIL or when the server cannot be reached in time."""
    async def talk() -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(_frame(service))
            await writer.drain()
            status = await reader.readexactly(4)
            if status == b"OKAY":
                if service in ("host:kill",):
                    return ""
                try:
                    size = int(await reader.readexactly(4), 16)
                except asyncio.IncompleteReadError:
                    return ""
                return (await reader.readexactly(size)).decode("utf-8", "replace")
            size = int(await reader.readexactly(4), 16)
            msg = (await reader.readexactly(size)).decode("utf-8", "replace")
            raise FleetError(f"adb server on port {port} refused `{service}`: {msg}")
        finally:
            writer.close()

    try:
        return await asyncio.wait_for(talk(), timeout)
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        raise FleetError(f"adb server on port {port} unreachable for `{service}`: {exc}",
                         hint=f"is `adb -P {port} start-server` running?") from exc
    except asyncio.TimeoutError:
        raise FleetError(f"adb server on port {port} did not answer `{service}` "
                         f"within {timeout:.0f} s") from None


def request_sync(port: int, service: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> str:
    """Blocking variant of request() for code without an event loop."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(_frame(service))
            status = _recv_exact(sock, 4)
            size = int(_recv_exact(sock, 4), 16)
            text = _recv_exact(sock, size).decode("utf-8", "replace")
    except (OSError, ValueError) as exc:
        raise FleetError(f"adb server on port {port} unreachable for `{service}`: {exc}",
                         hint=f"is `adb -P {port} start-server` running?") from exc
    if status != b"OKAY":
        raise FleetError(f"adb server on port {port} refused `{service}`: {text}")
    return text


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionResetError("adb server closed the connection")
        buf += chunk
    return bytes(buf)


def parse_devices(text: str) -> dict[str, str]:
    """`host:devices` payload ("SERIAL\\tSTATE" lines) -> {serial: state}."""
    out = {}
    for line in text.splitlines():
        serial, _, state = line.partition("\t")
        if serial and state:
            out[serial.strip()] = state.strip()
    return out


def server_alive(port: int, timeout: float = 1.0) -> bool:
    try:
        request_sync(port, "host:version", timeout=timeout)
        return True
    except FleetError:
        return False


def start_server(port: int, *, adb: str | None = None, log_path: Path | None = None,
                 timeout: float = 30.0) -> None:
    """`adb -P PORT start-server` (returns once the server answers).

    ADB_LIBUSB=0: with libusb, adb 36 spends 3 s failing to initialise USB in a
    container before it answers; the native Linux USB scanner starts in milliseconds.
    A fleet only needs TCP devices, so this costs nothing."""
    adb = adb or adb_binary()
    env = {**os.environ, "ADB_LIBUSB": os.environ.get("ADB_LIBUSB", "0")}
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        # The server daemonizes: never capture its stdout/stderr through a pipe, the
        # daemon would inherit it and run() would wait for EOF forever.
        proc = subprocess.run([adb, "-P", str(port), "start-server"], stdin=subprocess.DEVNULL,
                              stdout=out, stderr=out, timeout=timeout, check=False, env=env)
    except subprocess.TimeoutExpired:
        raise FleetError(f"`adb -P {port} start-server` did not finish in {timeout:.0f} s") from None
    finally:
        if log_path:
            out.close()  # type: ignore[union-attr]
    if proc.returncode != 0 or not server_alive(port, timeout=5):
        raise FleetError(f"`adb -P {port} start-server` failed (exit {proc.returncode})",
                         hint=f"see {log_path}" if log_path else None)


def kill_server(port: int, *, adb: str | None = None, timeout: float = 10.0) -> None:
    """`adb -P PORT kill-server`; quiet when no server runs there."""
    adb = adb or adb_binary()
    try:
        subprocess.run([adb, "-P", str(port), "kill-server"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout,
                       check=False)
    except subprocess.TimeoutExpired:
        pass


#: "K/W": every range free_port searches is cut into W equal slices and only slice K (0-based)
#: is used, so W processes starting fleets at once (parallel test workers, two benches) never
#: pick the same port between choosing it and binding it. Unset: the whole range.
PORT_SLICE_ENV = "ADBFLOW_PORT_SLICE"


def port_slice(start: int, stop: int, spec: str | None = None) -> tuple[int, int]:
    """The part of [start, stop) this process may use (PORT_SLICE_ENV); the whole range
    when unset or malformed (a bad value must not stop a fleet from starting)."""
    spec = os.environ.get(PORT_SLICE_ENV, "") if spec is None else spec
    k_text, _, w_text = spec.partition("/")
    if not (k_text.isdigit() and w_text.isdigit()):
        return start, stop
    k, w = int(k_text), int(w_text)
    if w < 1 or k >= w or (stop - start) // w < 16:
        return start, stop
    size = (stop - start) // w
    return start + k * size, start + (k + 1) * size


def free_port(start: int = 15037, stop: int = 16000) -> int:
    """A TCP port nobody listens on in [start, stop), avoiding adb's 5037 and 5555-5585;
    only this process's slice of the range when PORT_SLICE_ENV is set."""
    import random
    lo, hi = port_slice(start, stop)
    candidates = list(range(lo, hi))
    random.shuffle(candidates)
    for port in candidates:
        if port == 5037 or 5555 <= port <= 5585:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise FleetError(f"no free TCP port in {lo}-{hi}",
                     hint=f"stop fleets or adb servers left running, or unset {PORT_SLICE_ENV}")
