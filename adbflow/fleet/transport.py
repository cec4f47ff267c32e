"""The device side of one adb transport: a TCP listener that the real adb server connects to.

Why asyncio and not a thread per stream: one fleet process hosts up to 100 devices, each
with a handful of concurrent streams (shell, sync); coroutines keep that in a few MB.

Protocol (AOSP docs/dev/protocol.md): the host sends CNXN, we answer CNXN with our banner
and never AUTH (AUTH would make the device `unauthorized`). Streams are OPEN -> OKAY ->
WRTE/OKAY... -> CLSE. Flow control: without `delayed_ack` each side keeps at most one
unacknowledged WRTE per stream; with `delayed_ack` (only when the adb server runs with
ADB_BURST_MODE=1) OPEN carries the host's window, OKAY carries an i32 byte count.
We acknowledge host data only once the service has consumed it, so a slow consumer
(a shell command that does not read stdin) pushes back on the host instead of
buffering without bound.
"""
from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable, Coroutine
from typing import Any

from adbflow.fleet import protocol as P
from adbflow.fleet.backend_api import DeviceBackend
from adbflow.fleet.services import route
from adbflow.fleet.stream import ServiceHandler, Stream, StreamClosed

__all__ = ["Connection", "DeviceTransport", "ServiceHandler", "Stream", "StreamClosed"]

log = logging.getLogger("adbflow.fleet.transport")

#: Receive window we grant the host when delayed_ack is on (bytes it may send unacked).
DELAYED_ACK_WINDOW = 4 * 1024 * 1024

_I32 = struct.Struct("<i")

class Connection:
    """One TCP connection from the adb server (one 'transport' in adb's words)."""

    def __init__(self, device: DeviceTransport, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.device = device
        self.reader = reader
        self.writer = writer
        self.max_payload = P.MAX_PAYLOAD
        self.host_features: set[str] = set()
        self.delayed_ack = False
        self.online = False
        self.cnxn_pending = False  # host said CNXN while we were 'offline'
        self.streams: dict[int, Stream] = {}
        self._next_id = 1
        self._dropped = False
        # Packets queued during one event-loop iteration leave in ONE send() (e.g. the exit
        # WRTE and the CLSE of a shell): a loopback send costs as much as a small packet's
        # whole handling, and the fleet's single process serves every device.
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._flush_scheduled = False
        #: Called once when the transport goes away (reverse listeners close themselves).
        self.on_drop: list[Callable[[], None]] = []
        #: Per-connection state of services (e.g. the reverse forwards of this host).
        self.service_state: dict[str, object] = {}
        self._link_free_at = 0.0          # simulated link busy until (monotonic)

    async def _link(self, nbytes: int) -> None:
        """The simulated link (FaultState.link_mb_s): data waits its turn on the wire."""
        rate = self.device.backend.faults.link_mb_s
        if rate <= 0 or nbytes <= 0:
            return
        now = time.monotonic()
        self._link_free_at = max(now, self._link_free_at) + nbytes / (rate * 1e6)
        if self._link_free_at > now:
            await asyncio.sleep(self._link_free_at - now)

    async def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        delay = self.device.backend.faults.transport_delay_s
        if delay > 0:
            await asyncio.sleep(delay)
        await self._link(len(data))
        if self._dropped or self.writer.is_closing():
            raise ConnectionResetError("transport dropped")
        self._pending.append(P.header(command, arg0, arg1, len(data)))
        if data:
            self._pending.append(data)
            self._pending_bytes += len(data)
        if self._pending_bytes >= P.MAX_PAYLOAD:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        if self.writer.transport.get_write_buffer_size() > 2 * P.MAX_PAYLOAD:
            await self.writer.drain()

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        if pending and not self.writer.is_closing():
            self.writer.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def forget(self, stream: Stream) -> None:
        self.streams.pop(stream.local_id, None)

    async def run(self) -> None:
        try:
            while True:
                raw = await self.reader.readexactly(P.HEADER.size)
                hdr = P.unpack_header(raw)
                data = await self.reader.readexactly(hdr.length) if hdr.length else b""
                await self._link(len(data))
                await self._dispatch(hdr, data)
        except (asyncio.IncompleteReadError, ConnectionError, P.ProtocolError) as exc:
            log.debug("%s: connection ended: %s", self.device.serial, exc)
        finally:
            self.drop()

    def drop(self) -> None:
        """Abort every stream (their services kill their processes) and close the socket."""
        if self._dropped:
            return
        self._flush()  # what was sent before the drop still goes out (like a CLSE)
        self._dropped = True
        for stream in list(self.streams.values()):
            stream._on_host_close()
            if stream.task is not None and not stream.drains_on_close:
                stream.task.cancel()
        self.streams.clear()
        for hook in list(self.on_drop):
            hook()
        self.on_drop.clear()
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001 - closing a dead socket must not raise
            pass

    async def answer_cnxn(self) -> None:
        features = getattr(self.device.backend, "adbd_features", None)
        props = self.device.backend.banner_props()
        banner = (P.device_banner(props, features()) if callable(features)
                  else P.device_banner(props))
        self.online = True
        self.cnxn_pending = False
        await self.send(P.A_CNXN, P.VERSION, P.MAX_PAYLOAD, banner)

    async def _dispatch(self, hdr: P.Header, data: bytes) -> None:
        cmd = hdr.command
        if cmd == P.A_CNXN:
            self.max_payload = max(4096, min(hdr.arg1, P.MAX_PAYLOAD))
            self.host_features = P.banner_features(data)
            self.delayed_ack = "delayed_ack" in self.host_features
            if self.device.backend.faults.offline:
                self.cnxn_pending = True  # stay silent: adb shows the device 'offline'
                return
            await self.answer_cnxn()
            return
        if not self.online:
            return  # before CNXN (or while offline) nothing is answered
        if cmd == P.A_OPEN:
            await self._open(hdr, data)
        elif cmd == P.A_OKAY:
            stream = self.streams.get(hdr.arg1)
            if stream is not None and (stream.remote_id == hdr.arg0 or (
                    stream.opened is not None and not stream.opened.done())):
                stream._on_okay(hdr.arg0, data)
        elif cmd == P.A_WRTE:
            stream = self.streams.get(hdr.arg1)
            if stream is not None and stream.remote_id == hdr.arg0:
                stream._on_data(data)
            else:  # unknown stream: tell the host it is gone
                await self.send(P.A_CLSE, 0, hdr.arg0)
        elif cmd == P.A_CLSE:
            stream = self.streams.pop(hdr.arg1, None)
            if stream is not None:
                stream._on_host_close()
                if stream.task is not None and not stream.drains_on_close:
                    stream.task.cancel()
        # AUTH/STLS/SYNC from a host are ignored: we never asked for them.

    async def _open(self, hdr: P.Header, data: bytes) -> None:
        name = data.rstrip(b"\0").decode("utf-8", "replace")
        handler = self.device.route(name)
        prepare = getattr(handler, "prepare", None)
        if handler is None or hdr.arg0 == 0 or (
                prepare is not None and not await prepare(self.device.backend)):
            # like adbd: a service that cannot start (e.g. nobody listens on a forwarded
            # port) is refused with CLSE, without OKAY
            log.info("%s: refused service %r", self.device.serial, name[:80])
            await self.send(P.A_CLSE, 0, hdr.arg0)
            return
        local_id = self._next_id
        self._next_id += 1
        window = hdr.arg1 if self.delayed_ack else None
        stream = Stream(self, local_id, hdr.arg0, name, window)
        stream.drains_on_close = bool(getattr(handler, "drains_on_close", False))
        self.streams[local_id] = stream
        ack = _I32.pack(DELAYED_ACK_WINDOW) if self.delayed_ack else b""
        await self.send(P.A_OKAY, local_id, hdr.arg0, ack)
        stream.task = asyncio.create_task(self._serve(stream, handler),
                                          name=f"{self.device.serial}:{name[:40]}")
        if stream.drains_on_close:  # may outlive the stream's entry: keep a reference
            self.device.keep(stream.task)

    async def open_stream(self, service: str, timeout: float = 10.0) -> Stream | None:
        """Open a stream from the device to the host (what adbd does for `adb reverse`).

        OPEN(local_id, window-or-0, "service\0"); the host answers OKAY(its_id, local_id)
        or CLSE(0, local_id). Returns the open Stream, or None if the host refused."""
        if self._dropped or not self.online:
            return None
        local_id = self._next_id
        self._next_id += 1
        stream = Stream(self, local_id, 0, service, None)
        stream.drains_on_close = True
        stream.opened = asyncio.get_running_loop().create_future()
        stream._can_send.clear()
        self.streams[local_id] = stream
        window = DELAYED_ACK_WINDOW if self.delayed_ack else 0
        await self.send(P.A_OPEN, local_id, window, service.encode() + b"\0")
        try:
            ok = await asyncio.wait_for(asyncio.shield(stream.opened), timeout)
        except asyncio.TimeoutError:
            ok = False
        if not ok:
            self.forget(stream)
            stream.closed = True
            return None
        if self.delayed_ack and stream._window is None:
            stream._window = DELAYED_ACK_WINDOW  # host sent no window: assume its default
        return stream

    async def _serve(self, stream: Stream, handler: ServiceHandler) -> None:
        try:
            await handler(stream, self.device.backend)
        except (asyncio.CancelledError, StreamClosed, ConnectionError):
            pass
        except Exception:  # noqa: BLE001 - one broken service must not kill the transport
            log.exception("%s: service %r failed", self.device.serial, stream.service[:80])
        finally:
            if not self._dropped:
                try:
                    await stream.close()
                except (ConnectionError, asyncio.CancelledError):
                    pass
            else:
                self.forget(stream)


class DeviceTransport:
    """The adbd of one virtual device: listens on 127.0.0.1:port, serves every connection.

    `router(name)` maps a service name (`shell,v2,raw:ls`, `sync:`, ...) to a handler;
    `services.route` is the default. Faults are read live from backend.faults; after
    flipping `offline` call `apply_offline()`."""

    def __init__(self, backend: DeviceBackend, port: int, *, host: str = "127.0.0.1",
                 router: Callable[[str, DeviceTransport], ServiceHandler | None] | None = None
                 ) -> None:
        self.backend = backend
        self.port = port
        self.host = host
        self._router = router
        self._server: asyncio.base_events.Server | None = None
        self.connections: set[Connection] = set()
        self.on_reboot: Callable[[], Coroutine[Any, Any, None]] | None = None
        self._bg: set[asyncio.Task[None]] = set()

    @property
    def serial(self) -> str:
        return self.backend.serial

    @property
    def listening(self) -> bool:
        return self._server is not None

    def route(self, name: str) -> ServiceHandler | None:
        if self._router is not None:
            return self._router(name, self)
        return route(name, self)

    async def start(self) -> None:
        """Listen. Raises OSError (EADDRINUSE) if the port is taken."""
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, self.host, self.port,
                                                      reuse_address=True, limit=2 * P.MAX_PAYLOAD)

    async def stop(self) -> None:
        """Stop listening and drop every connection: adb sees the device go offline."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self.drop_connections()
        if server is not None:
            try:
                await asyncio.wait_for(server.wait_closed(), 2)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001
                pass

    def drop_connections(self) -> None:
        for conn in list(self.connections):
            conn.drop()

    async def apply_offline(self) -> None:
        """Called after backend.faults.offline changed.

        Going offline drops live connections (the adb server reconnects, gets no CNXN
        answer and shows `offline`); coming back answers the CNXN it is waiting on."""
        if self.backend.faults.offline:
            for conn in list(self.connections):
                if conn.online:
                    conn.drop()
        else:
            for conn in list(self.connections):
                if conn.cnxn_pending:
                    try:
                        await conn.answer_cnxn()
                    except ConnectionError:
                        conn.drop()

    def keep(self, task: asyncio.Task[None]) -> None:
        """Hold a reference to a background task until it ends."""
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    def request_reboot(self) -> None:
        """`adb reboot`: the service replies, then the transport drops and comes back."""
        if self.on_reboot is None:
            task = asyncio.create_task(self._bounce())
        else:
            task = asyncio.create_task(self.on_reboot())
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _bounce(self) -> None:
        await asyncio.sleep(0.05)
        await self.stop()
        await asyncio.sleep(0.5)
        await self.start()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(self, reader, writer)
        self.connections.add(conn)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)
