"""Which service answers which adb service name (`shell,v2,raw:..`, `sync:`, `reboot:`...).

Why a separate router: the transport only moves streams; what a name means lives here, and
unknown names are refused with CLSE exactly like adbd refuses a service it lacks (the
adb CLI then prints `error: closed`).
"""
from __future__ import annotations

import struct
from typing import Protocol

from adbflow.fleet import shell_service, socket_services, sync_service
from adbflow.fleet.backend_api import DeviceBackend
from adbflow.fleet.stream import ServiceHandler, Stream


class Rebootable(Protocol):
    """The one thing a service may ask of its device transport (`adb reboot`)."""

    def request_reboot(self) -> None: ...


def route(name: str, device: Rebootable) -> ServiceHandler | None:
    if name.startswith(("shell", "exec:")):
        req = shell_service.parse_service(name)
        if req is None:
            return None
        # the adbd version of the device decides (DeviceTransport carries its backend)
        features = getattr(getattr(device, "backend", None), "adbd_features", None)
        if name.startswith("shell,") and callable(features) and "shell_v2" not in features():
            return None  # an adbd before Nougat knows only `shell:` (the client falls back)
        if not req.v2 and not req.pty:
            return shell_service.serve_raw
        return shell_service.serve
    if name.startswith("reverse:") or socket_services.is_socket_spec(name):
        return socket_services.route(name, device)
    if name.startswith("framebuffer:"):
        return framebuffer
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


#: fbinfo of adbd's framebuffer_service (DDMS_RAWIMAGE_VERSION 2): version, bpp, colorSpace,
#: size, width, height, then offset/length of red, blue, green, alpha.
_FBINFO = struct.Struct("<14I")
_RGBA_8888 = 1


async def framebuffer(stream: Stream, backend: DeviceBackend) -> None:
    """`framebuffer:` as adbd serves it: run screencap (raw), send fbinfo + the pixels."""
    proc, _ = await backend.spawn("screencap", pty=False)
    out, _err = await proc.communicate()
    if len(out) < 12:
        return
    width, height, fmt = struct.unpack_from("<III", out)
    sdk_header = 16 if len(out) >= 16 + width * height * 4 else 12
    if fmt != _RGBA_8888:
        return  # the virtual screen is RGBA_8888 only
    size = width * height * 4
    await stream.write(_FBINFO.pack(2, 32, 1, size, width, height, 0, 8, 16, 8, 8, 8, 24, 8))
    await stream.write(out[sdk_header:sdk_header + size])
