"""The device boundary: everything that talks to a phone goes through this package.

    server.py     which adb servers (AdbServer, resolve_servers), the adb binary
    wire.py       smart-socket and sync framing with one deadline (bytes only)
    failures.py   the one mapping from wire faults / adb messages to adbflow.errors
    results.py    ShellResult, RemoteEntry
    stream.py     LineStream (a long-running command's lines)
    device.py     Device: shell v2/v1, run, sync stat/list/push/pull, stream_lines
    inventory.py  Inventory, DeviceRef, list_server
    probe.py      the one-round-trip probe that reads a phone's state
    port.py       DevicePort, the Protocol `Device` and every test fake implement

Layers above see only `DevicePort` and the error classes in `adbflow.errors`.
"""

from adbflow.device.device import Device
from adbflow.device.inventory import DeviceRef, Inventory
from adbflow.device.port import DevicePort
from adbflow.device.results import RemoteEntry, ShellResult
from adbflow.device.server import AdbServer, resolve_servers
from adbflow.device.stream import LineStream

__all__ = ["AdbServer", "Device", "DeviceRef", "DevicePort", "Inventory", "LineStream",
           "RemoteEntry", "ShellResult", "resolve_servers"]
