"""The device boundary: the adb server client (wire and sync framing), `Device`, the
inventory of every server's devices, and the probe that reads a phone's state.

Everything that talks to a phone goes through this package; layers above see only
`DevicePort` and the error classes in `adbflow.errors`."""

from adbflow.device.adb import (AdbServer, Device, DeviceRef, Inventory, LineStream,
                                RemoteEntry, ShellResult, resolve_servers)
from adbflow.device.port import DevicePort

__all__ = ["AdbServer", "Device", "DeviceRef", "DevicePort", "Inventory", "LineStream",
           "RemoteEntry", "ShellResult", "resolve_servers"]
