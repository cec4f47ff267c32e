"""The inventory: every device of every adb server, as one list (a bid round's audience).

Why apart from `Device`: listing asks the *servers* (`host:devices-l`), may start a local
server, and must never raise for one unreachable server (it becomes one
`server-unreachable` line), while `Device` calls fail loudly with context.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from adbflow.device.device import Device
from adbflow.device.failures import state_error
from adbflow.device.server import AdbServer, resolve_servers, start_local_server
from adbflow.device.wire import Refused, Wire
from adbflow.errors import DeviceNotFound, ParseError
from adbflow.parsers.adb_messages import parse_adb_devices

_SERVER_LIST_TIMEOUT = 3.0


@dataclass(frozen=True)
class DeviceRef:
    """A line of the inventory: what an adb server says about one device."""
    serial: str
    state: str
    server: AdbServer
    model: str | None = None


def list_server(server: AdbServer, *, timeout: float = _SERVER_LIST_TIMEOUT,
                start_server: bool = False) -> list[DeviceRef]:
    """`adb devices -l` of one server; unreachable -> one `server-unreachable` ref."""
    for attempt in (0, 1):
        try:
            wire = Wire(server, time.monotonic() + timeout)
        except OSError:
            if attempt == 0 and start_server and start_local_server(server):
                continue
            return [DeviceRef(serial="-", state="server-unreachable", server=server)]
        try:
            wire.request("host:devices-l")
            text = wire.read_block().decode("utf-8", "replace")
        except (OSError, Refused):
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
            raise state_error(serial, "devices", refs[0].state)
        raise DeviceNotFound(serial, "devices", message="no such device on "
                             + ", ".join(map(str, self.servers)),
                             hint="see `adbflow devices`")
