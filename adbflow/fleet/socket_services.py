"""Socket services of a virtual adbd: `tcp:`, `localabstract:`, `localfilesystem:`,
`localreserved:` streams (what `adb forward` opens) and `reverse:` (what `adb reverse` sets up).

Why these semantics (AOSP packages/modules/adb socket_spec.cpp, adb_listeners.cpp, adb.cpp
handle_forward_request, daemon/services.cpp reverse_service):
- A socket-spec service connects *synchronously* when the host OPENs it; if nobody listens
  the OPEN is refused with CLSE (no OKAY), which the adb server turns into a closed
  forwarded connection. adbd only connects to the device's own loopback: `tcp:PORT` or
  `tcp:localhost:PORT`; any other host is refused ("adbd does not support arbitrary tcp
  connections").
- Bytes flow both ways until one side closes; adb streams have no half-close: when the
  device program closes (or shuts down writing), adbd closes the stream (CLSE); when the
  host closes, queued data is still delivered, then the device socket is closed.
- `reverse:forward:[norebind:]LOCAL;REMOTE` makes adbd listen on LOCAL inside the device;
  each accepted connection becomes a *device-initiated* stream: OPEN(id, window, REMOTE).
  The host answers OKAY or CLSE (and the adb server aborts if REMOTE is not a reverse it
  set up, so only configured REMOTE specs are ever opened). Replies: "OKAY" (+ the
  resolved port as a length-prefixed string for tcp:0), "FAIL"+len+message; list-forward
  answers a length-prefixed "<transport> LOCAL REMOTE\\n" list. Reverse listeners belong to
  one transport and vanish when it drops.

The virtual device's "world" shares the host's network namespace (devices are chroots in
mount+pid namespaces only): device port D *is* host 127.0.0.1:D and an abstract socket
name is global. So two devices cannot listen on the same port or abstract name; tests
and users pick distinct ports per device (e.g. base + device index). adbd on a user
build runs as uid 2000 (shell) and cannot bind ports below 1024: neither can we.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from adbflow.fleet.backend_api import DeviceBackend
from adbflow.fleet.stream import ReverseLink, Stream, StreamClosed

_CHUNK = 256 * 1024
CONNECT_TIMEOUT_S = 3.0
RESERVED_SOCKET_DIR = "/dev/socket"   # ANDROID_SOCKET_DIR, for localreserved:
LOCAL_HOSTS = ("", "localhost")       # socket_spec.cpp tcp_host_is_local
_SPEC_KINDS = ("tcp", "localabstract", "localfilesystem", "localreserved")


class SpecError(ValueError):
    """A socket spec adbd would reject; the message is adbd's wording."""


@dataclass(frozen=True)
class SocketSpec:
    kind: str          # tcp | localabstract | localfilesystem | localreserved
    port: int = 0      # tcp
    name: str = ""     # the unix socket name/path

    def __str__(self) -> str:
        return f"tcp:{self.port}" if self.kind == "tcp" else f"{self.kind}:{self.name}"


def is_socket_spec(name: str) -> bool:
    return any(name.startswith(k + ":") for k in _SPEC_KINDS)


def parse_spec(spec: str) -> SocketSpec:
    """`tcp:PORT`, `tcp:localhost:PORT`, `localabstract:NAME`, ... (pure)."""
    kind, _, rest = spec.partition(":")
    if kind not in _SPEC_KINDS or not rest:
        raise SpecError(f"unknown socket specification '{spec}'")
    if kind != "tcp":
        return SocketSpec(kind, name=rest)
    host, sep, port_text = rest.rpartition(":")
    if not sep:
        host, port_text = "", rest
    try:
        port = int(port_text, 10)
    except ValueError:
        raise SpecError(f"bad port number '{port_text}'") from None
    if not 0 <= port <= 65535:
        raise SpecError(f"bad port number '{port}'")
    if host not in LOCAL_HOSTS:
        raise SpecError("adbd does not support arbitrary tcp connections")
    return SocketSpec("tcp", port=port)


def _unix_path(spec: SocketSpec, backend: DeviceBackend) -> str:
    """Host address of a device unix socket: abstract names are shared with the host."""
    if spec.kind == "localabstract":
        return "\0" + spec.name
    device_path = (spec.name if spec.kind == "localfilesystem"
                   else f"{RESERVED_SOCKET_DIR}/{spec.name}")
    if not device_path.startswith("/"):
        device_path = "/" + device_path
    return str(backend.resolve(device_path))


@contextlib.contextmanager
def _short_path(path: str) -> Iterator[str]:
    """sun_path holds 108 bytes; a device path under /proc/PID/root may be longer, so go
    through an O_PATH fd of its directory (/proc/self/fd/N/NAME)."""
    if path.startswith("\0") or len(path.encode()) < 100:
        yield path
        return
    fd = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{os.path.basename(path)}"
    finally:
        os.close(fd)


async def connect(spec: SocketSpec, backend: DeviceBackend
                  ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to a listener in the device's world (OSError if nobody listens)."""
    if spec.kind == "tcp":
        return await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", spec.port, limit=_CHUNK), CONNECT_TIMEOUT_S)
    with _short_path(_unix_path(spec, backend)) as path:
        return await asyncio.wait_for(asyncio.open_unix_connection(path, limit=_CHUNK),
                                      CONNECT_TIMEOUT_S)


async def bridge(stream: Stream, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
    """Carry bytes both ways until either side closes (no half-close, as in adb)."""

    async def host_to_device() -> None:
        while True:
            data = await stream.read()
            if data is None:
                return
            writer.write(data)
            await writer.drain()

    async def device_to_host() -> None:
        while True:
            chunk = await reader.read(_CHUNK)
            if not chunk:
                return
            await stream.write(chunk)

    up = asyncio.ensure_future(host_to_device())
    down = asyncio.ensure_future(device_to_host())
    try:
        await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (up, down):
            task.cancel()
        for task in (up, down):
            with contextlib.suppress(asyncio.CancelledError, StreamClosed, ConnectionError,
                                     OSError):
                await task
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


# ------------------------------------------------------------------ forward (host OPENs)

class ForwardService:
    """The handler for one socket-spec OPEN: connect first (refuse if that fails)."""

    drains_on_close = True

    def __init__(self, spec: SocketSpec) -> None:
        self.spec = spec
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def prepare(self, backend: DeviceBackend) -> bool:
        try:
            self._conn = await connect(self.spec, backend)
        except (OSError, asyncio.TimeoutError):
            return False
        return True

    async def __call__(self, stream: Stream, backend: DeviceBackend) -> None:
        if self._conn is None and not await self.prepare(backend):
            return
        assert self._conn is not None
        await bridge(stream, *self._conn)


def forward_handler(name: str) -> ForwardService | None:
    try:
        return ForwardService(parse_spec(name))
    except SpecError:
        return None


# ------------------------------------------------------------------ reverse (device OPENs)

@dataclass
class ReverseRule:
    local: str
    remote: str
    server: asyncio.base_events.Server
    port: int = 0


@dataclass
class ReverseTable:
    """The reverse forwards of one transport (one adb server connection)."""

    transport_name: str
    rules: dict[str, ReverseRule] = field(default_factory=dict)
    connections: set[asyncio.Task[None]] = field(default_factory=set)

    def close_all(self) -> None:
        for rule in self.rules.values():
            rule.server.close()
        self.rules.clear()
        for task in list(self.connections):
            task.cancel()

    def listing(self) -> str:
        return "".join(f"{self.transport_name} {r.local} {r.remote}\n"
                       for r in self.rules.values())


def _table(conn: ReverseLink) -> ReverseTable:
    table = conn.service_state.get("reverse")
    if not isinstance(table, ReverseTable):
        # daemon/transport_socket_server.cpp names a TCP host transport "host-<fd>"
        table = ReverseTable(transport_name=f"host-{10 + id(conn) % 90}")
        conn.service_state["reverse"] = table
        conn.on_drop.append(table.close_all)
    return table


def okay() -> bytes:
    return b"OKAY"


def fail(message: str) -> bytes:
    data = message.encode()
    return b"FAIL" + f"{len(data):04x}".encode() + data


def protocol_string(text: str) -> bytes:
    data = text.encode()
    return f"{len(data):04x}".encode() + data


async def _listen(spec: SocketSpec, backend: DeviceBackend, on_client: Any
                  ) -> tuple[asyncio.base_events.Server, int]:
    if spec.kind == "tcp":
        if 0 < spec.port < 1024:
            raise OSError(13, f"cannot bind to 127.0.0.1:{spec.port}: Permission denied")
        server = await asyncio.start_server(on_client, "127.0.0.1", spec.port, limit=_CHUNK)
        port = server.sockets[0].getsockname()[1]
        return server, port
    path = _unix_path(spec, backend)
    if spec.kind != "localabstract":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    with _short_path(path) as short:
        server = await asyncio.start_unix_server(on_client, short, limit=_CHUNK)
    return server, 0


async def _reverse_forward(conn: ReverseLink, backend: DeviceBackend, args: str) -> bytes:
    no_rebind = args.startswith("norebind:")
    if no_rebind:
        args = args[len("norebind:"):]
    pieces = args.split(";")
    if len(pieces) != 2 or not pieces[0] or not pieces[1] or pieces[1].startswith("*"):
        return fail(f"bad forward: {args}")
    local_text, remote = pieces
    try:
        local = parse_spec(local_text)
    except SpecError as exc:
        return fail(f"cannot bind listener: {exc}")
    table = _table(conn)
    old = table.rules.get(local_text)
    if old is not None:
        if no_rebind:
            return fail("cannot rebind existing socket")
        if local.kind != "tcp" or local.port != 0:
            old.remote = remote  # adbd rebinds in place: same listener, new target
            return okay()

    holder: dict[str, ReverseRule] = {}

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            table.connections.add(task)
        try:
            for _ in range(200):  # a client may arrive before the rule is registered
                rule = holder.get("rule")
                if rule is not None:
                    break
                await asyncio.sleep(0.005)
            else:
                return
            if table.rules.get(rule.local) is not rule:
                return  # removed meanwhile
            stream = await conn.open_stream(rule.remote)
            if stream is None:  # host refused (nobody listens on its side)
                return
            try:
                await bridge(stream, reader, writer)
            finally:
                await stream.close()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            if task is not None:
                table.connections.discard(task)

    try:
        server, port = await _listen(local, backend, on_client)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return fail(f"cannot bind listener: {reason}")
    key = f"tcp:{port}" if local.kind == "tcp" else local_text
    holder["rule"] = table.rules[key] = ReverseRule(key, remote, server, port)
    if local.kind == "tcp" and local.port == 0:
        return okay() + protocol_string(str(port))
    return okay()


async def reverse_request(conn: ReverseLink, backend: DeviceBackend, request: str) -> bytes:
    """The reply adbd writes for one `reverse:` request (see module docstring)."""
    table = _table(conn)
    if request == "list-forward":
        return protocol_string(table.listing())
    if request == "killforward-all":
        table.close_all()
        return okay()
    if request.startswith("killforward:"):
        local = request[len("killforward:"):]
        if not local or ";" in local:
            return fail(f"bad killforward: {local}")
        rule = table.rules.pop(local, None)
        if rule is None:
            return fail(f"listener '{local}' not found")
        rule.server.close()
        return okay()
    if request.startswith("forward:"):
        return await _reverse_forward(conn, backend, request[len("forward:"):])
    return fail("not a reverse forwarding command")


async def serve_reverse(stream: Stream, backend: DeviceBackend) -> None:
    conn = cast(ReverseLink, stream.conn)  # the transport's Connection: reverse needs it all
    await stream.write(await reverse_request(conn, backend,
                                             stream.service[len("reverse:"):]))


def route(name: str, device: object) -> Any:
    """Handler for a socket-spec or reverse service name, else None."""
    if name.startswith("reverse:"):
        return serve_reverse
    if is_socket_spec(name):
        return forward_handler(name)
    return None

