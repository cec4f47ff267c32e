"""Which service answers which adb service name (`shell,v2,raw:..`, `sync:`, `reboot:`...).

Why a separate router: the transport only moves streams; what a name means lives here, and
unknown names are refused with CLSE exactly like adbd refuses a service it lacks (the
adb CLI then prints `error: closed`).
"""
from __future__ import annotations

from typing import Protocol

from adbflow.fleet import shell_service, sync_service
from adbflow.fleet.backend_api import DeviceBackend
from adbflow.fleet.stream import ServiceHandler, Stream


class Rebootable(Protocol):
    """The one thing a service may ask of its device transport (`adb reboot`)."""

    def request_reboot(self) -> None: ...


def route(name: str, device: Rebootable) -> ServiceHandler | None:
    if name.startswith(("shell", "exec:")):
        return shell_service.serve if shell_service.parse_service(name) else None
    if name == "sync:":
        return sync_service.serve
    if name.startswith("reboot:"):
        async def reboot(stream: Stream, backend: DeviceBackend) -> None:
            device.request_reboot()
        return reboot
    if name.startswith(("root:", "unroot:", "remount:")):
        # A production build refuses; the text is what a user phone prints.
        text = {"root:": "adbd cannot run as root in production builds\n",
                "unroot:": "adbd not running as root\n"}.get(name.split(":")[0] + ":",
                                                              "Not running as root. Try \"adb root\" first.\n")

        async def refuse(stream: Stream, backend: DeviceBackend) -> None:
            await stream.write(text.encode())
        return refuse
    return None
