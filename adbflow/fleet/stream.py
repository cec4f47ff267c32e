"""`Stream`: one adb stream as a service sees it (read host data, write replies, close).

Why its own module: the transport creates streams and routes them to services, and the
services (shell, sync) read and write streams; with `Stream` inside transport.py the two
imported each other. Here a stream knows its connection only through `StreamLink`, the
three things it needs from it, so transport -> services -> stream has no way back.
"""
from __future__ import annotations

import asyncio
import collections
import struct
from collections.abc import Awaitable, Callable
from typing import Protocol

from adbflow.fleet import protocol as P
from adbflow.fleet.backend_api import DeviceBackend

_I32 = struct.Struct("<i")


class StreamLink(Protocol):
    """What a stream needs from its transport connection."""

    max_payload: int
    delayed_ack: bool

    async def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None: ...

    def forget(self, stream: Stream) -> None: ...


class ReverseLink(StreamLink, Protocol):
    """What `adb reverse` needs from the transport connection beyond a stream's needs:
    per-connection service state, hooks run when the transport drops, and device-initiated
    streams. Declared here so socket_services never imports the transport (no cycle)."""

    service_state: dict[str, object]
    on_drop: list[Callable[[], None]]

    async def open_stream(self, service: str, timeout: float = 10.0) -> Stream | None: ...


ServiceHandler = Callable[["Stream", DeviceBackend], Awaitable[None]]


class StreamClosed(Exception):
    """The host closed the stream (or the transport dropped) while we were writing."""


class Stream:
    """One adb stream as seen by a service: read() host data, write() replies, close()."""

    def __init__(self, conn: StreamLink, local_id: int, remote_id: int, service: str,
                 host_window: int | None) -> None:
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self.service = service
        self.closed = False
        self._inbox: collections.deque[bytes] = collections.deque()
        self._inbox_ready = asyncio.Event()
        self._can_send = asyncio.Event()
        self._can_send.set()
        self._window = host_window  # None: classic one-WRTE-in-flight flow control
        self._write_lock = asyncio.Lock()
        self.task: asyncio.Task[None] | None = None
        #: The host's CLSE ends input but does not cancel the service (adbd's raw sockets:
        #: queued data is still delivered, then the far end sees EOF). Set from the handler.
        self.drains_on_close = False
        #: Device-initiated streams (reverse forwards): resolved True on the host's OKAY,
        #: False on its CLSE; None for streams the host opened.
        self.opened: asyncio.Future[bool] | None = None

    # -- host -> device -------------------------------------------------------------------
    async def read(self) -> bytes | None:
        """Next chunk the host wrote, or None once the host closed the stream.

        Acknowledging here (not on arrival) is what gives the host backpressure."""
        while not self._inbox:
            if self.closed:
                return None
            self._inbox_ready.clear()
            await self._inbox_ready.wait()
        data = self._inbox.popleft()
        if not self.closed:
            ack = _I32.pack(len(data)) if self._window is not None else b""
            await self.conn.send(P.A_OKAY, self.local_id, self.remote_id, ack)
        return data

    def _on_data(self, data: bytes) -> None:
        self._inbox.append(data)
        self._inbox_ready.set()

    def _on_okay(self, remote_id: int, payload: bytes) -> None:
        if self.opened is not None and not self.opened.done():
            # the host accepted our OPEN: its OKAY names its id and (delayed_ack) its window
            self.remote_id = remote_id
            if self.conn.delayed_ack and len(payload) == 4:
                self._window = _I32.unpack(payload)[0]
            self.opened.set_result(True)
            self._can_send.set()
            return
        if self._window is not None and len(payload) == 4:
            self._window += _I32.unpack(payload)[0]
        self._can_send.set()

    def _on_host_close(self) -> None:
        self.closed = True
        self._inbox_ready.set()
        self._can_send.set()
        if self.opened is not None and not self.opened.done():
            self.opened.set_result(False)

    # -- device -> host -------------------------------------------------------------------
    async def write(self, data: bytes) -> None:
        """Send `data`, split to the negotiated payload size, honouring flow control."""
        if not data:
            return
        view = memoryview(data)
        step = self.conn.max_payload
        async with self._write_lock:
            for off in range(0, len(view), step):
                chunk = bytes(view[off:off + step])
                if self._window is not None:
                    while self._window <= 0 and not self.closed:
                        self._can_send.clear()
                        await self._can_send.wait()
                    self._window -= len(chunk)
                else:
                    await self._can_send.wait()
                    self._can_send.clear()
                if self.closed:
                    raise StreamClosed(self.service)
                await self.conn.send(P.A_WRTE, self.local_id, self.remote_id, chunk)

    async def close(self) -> None:
        """Tell the host we are done (CLSE). Idempotent."""
        if self.closed:
            self.conn.forget(self)
            return
        self.closed = True
        self._inbox_ready.set()
        self.conn.forget(self)
        try:
            await self.conn.send(P.A_CLSE, self.local_id, self.remote_id)
        except ConnectionError:
            pass
