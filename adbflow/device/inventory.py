"""The inventory: every device of every adb server, as one list (a bid round's audience).

Why apart from `Device`: listing asks the *servers* (`host:devices-l`), may start a local
server, and must never raise for one unreachable server (it becomes one
`server-unreachable` line), while `Device` calls fail loudly with context.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from adbflow.device import identity
from adbflow.device.device import Device
from adbflow.device.failures import state_error
from adbflow.device.server import AdbServer, resolve_servers, start_local_server
from adbflow.device.wire import Refused, Wire
from adbflow.errors import AdbError, AmbiguousDevice, DeviceNotFound, ParseError
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
    """Every device of every adb server, as one list (the bid round's audience).

    Keyed by (server, serial). The same physical phone reached twice (two servers, or USB
    and `adb tcpip` Wi-Fi) is one device, used over its fastest link; one serial that is two
    phones on two servers is two devices named SERIAL@HOST:PORT (adbflow.device.identity).
    The hardware serial is read once per (server, serial) line while it stays listed."""

    HWID_TIMEOUT_S = 5.0

    def __init__(self, servers: list[AdbServer] | None = None, serials: list[str] | None = None,
                 *, start_server: bool = True, dedupe: bool = True) -> None:
        self.servers = servers or resolve_servers(None)
        self.serials = [s for s in (serials or []) if s]
        self.start_server = start_server
        self.dedupe = dedupe
        self._devices: dict[tuple[AdbServer, str], Device] = {}
        self._hwids: dict[tuple[str, str], str | None] = {}
        self._lock = threading.Lock()
        self.last_choice: identity.Choice | None = None

    def refs(self) -> list[DeviceRef]:
        with ThreadPoolExecutor(max_workers=min(8, len(self.servers))) as pool:
            lists = pool.map(lambda s: list_server(s, start_server=self.start_server and s.is_local),
                             self.servers)
            return [ref for lst in lists for ref in lst]

    def _device_for(self, ref: DeviceRef, name: str | None = None) -> Device:
        """Reuse Device objects: they cache adbd features between rounds."""
        key = (ref.server, ref.serial)
        dev = self._devices.get(key)
        if dev is None or dev.serial != (name or ref.serial):
            dev = self._devices[key] = Device(name or ref.serial, ref.server, model=ref.model,
                                              adb_serial=ref.serial)
        return dev

    def _hwid(self, ref: DeviceRef) -> str | None:
        """ro.serialno (else ro.boot.serialno) of one line, cached; None when unknown. A
        line that does not answer is not cached: it is asked again next round."""
        key = (str(ref.server), ref.serial)
        with self._lock:
            if key in self._hwids:
                return self._hwids[key]
        dev = Device(ref.serial, ref.server, model=ref.model)
        hwid = None
        try:
            for prop in ("ro.serialno", "ro.boot.serialno"):
                res = dev.run(["getprop", prop], timeout=self.HWID_TIMEOUT_S, check=False,
                              max_output=4096)
                hwid = identity.clean_hwid(res.stdout) if res.exit_code == 0 else None
                if hwid:
                    break
        except AdbError:
            return None
        with self._lock:
            self._hwids[key] = hwid
        return hwid

    def _choice(self, refs: list[DeviceRef]) -> tuple[identity.Choice, list[identity.Line],
                                                       dict[tuple[str, str], DeviceRef]]:
        ready = [r for r in refs if r.state == "device"]
        by_key = {(str(r.server), r.serial): r for r in ready}
        with self._lock:        # forget lines that left: a reconnected serial may be another phone
            for k in [k for k in self._hwids if k not in by_key]:
                del self._hwids[k]
        hwids: list[str | None] = [None] * len(ready)
        if self.dedupe and ready:
            with self._lock:
                new = [r for r in ready if (str(r.server), r.serial) not in self._hwids]
            if len(new) > 1:
                with ThreadPoolExecutor(max_workers=min(16, len(new))) as pool:
                    list(pool.map(self._hwid, new))
            hwids = [self._hwid(r) for r in ready]
        lines = [identity.Line(r.server, r.serial, h) for r, h in zip(ready, hwids, strict=True)]
        choice = identity.choose(lines)
        self.last_choice = choice
        return choice, lines, by_key

    def devices(self) -> list[Device]:
        choice, _lines, by_key = self._choice(self.refs())
        out = []
        for ln in choice.lines:
            name = choice.names[ln.key]
            if self.serials and ln.serial not in self.serials and name not in self.serials:
                continue
            out.append(self._device_for(by_key[ln.key], name))
        return out

    def device(self, serial: str) -> Device:
        refs = self.refs()
        choice, lines, by_key = self._choice(refs)
        line = identity.resolve_name(serial, choice, lines)
        if line is not None:
            return self._device_for(by_key[line.key], choice.names[line.key])
        refs = [r for r in refs if r.serial == serial]
        if refs and any(r.state == "device" for r in refs):
            raise AmbiguousDevice(serial, "devices", message="serial names different phones on "
                                  + ", ".join(str(r.server) for r in refs),
                                  hint="name it SERIAL@HOST:PORT (see `adbflow devices`)")
        if refs:
            raise state_error(serial, "devices", refs[0].state)
        raise DeviceNotFound(serial, "devices", message="no such device on "
                             + ", ".join(map(str, self.servers)),
                             hint="see `adbflow devices`")
