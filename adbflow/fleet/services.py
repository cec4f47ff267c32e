"""Which service answers which adb service name (`shell,v2,raw:..`, `sync:`, `reboot:`...).

Why a separate router: the transport only moves streams; what a name means lives here, and
unknown names are refused with CLSE exactly like adbd refuses a service it lacks (the
adb CLI then prints `error: closed`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from adbflow.fleet import shell_service, socket_services, sync_service
from adbflow.fleet.backend_api import DeviceBackend

if TYPE_CHECKING:
    from adbflow.fleet.transport import DeviceTransport, ServiceHandler, Stream


def route(name: str, device: "DeviceTransport") -> "ServiceHandler | None":
    if name.startswith(("shell", "exec:")):
        req = shell_service.parse_service(name)
        if req is None:
            return None
        if not req.v2 and not req.pty:
            return shell_service.serve_raw
        return shell_service.serve
    if name.startswith("reverse:") or socket_services.is_socket_spec(name):
        return socket_services.route(name, device)
    if name == "sync:":
        return sync_service.serve
    if name.startswith("reboot:"):
        async def reboot(stream: "Stream", backend: DeviceBackend) -> None:
            device.request_reboot()
        return reboot
    if name.startswith(("root:", "unroot:", "remount:")):
        # A production build refuses; the text is what a user phone prints.
        text = {"root:": "adbd cannot run as root in production builds\n",
                "unroot:": "adbd not running as root\n"}.get(name.split(":")[0] + ":",
                                                              "Not running as root. Try \"adb root\" first.\n")

        async def refuse(stream: "Stream", backend: DeviceBackend) -> None:
            await stream.write(text.encode())
        return refuse
    return None
