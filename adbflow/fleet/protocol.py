"""adb wire format: the 24-byte packet header, command constants and the CNXN banner.

Why a module of pure functions: the transport (`transport.py`) is asyncio plumbing; the
byte layout is what the real adb server checks, so it is kept here where it can be
unit-tested without sockets. Layout from AOSP packages/modules/adb docs/dev/protocol.md.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

A_SYNC = 0x434E5953
A_CNXN = 0x4E584E43
A_OPEN = 0x4E45504F
A_OKAY = 0x59414B4F
A_CLSE = 0x45534C43
A_WRTE = 0x45545257
A_AUTH = 0x48545541
A_STLS = 0x534C5453

#: Protocol version that lets both sides skip the payload checksum.
VERSION = 0x01000001
#: Largest payload we accept and advertise (adb's MAX_PAYLOAD).
MAX_PAYLOAD = 1024 * 1024
#: The banner must stay below this (adb host's limit for a CNXN payload).
MAX_BANNER = 4096

HEADER = struct.Struct("<6I")

#: Features we advertise. No compression (adb push would then compress on loopback for
#: nothing), no cmd/abb (so `adb install` falls back to `pm` over shell, which we can
#: serve or refuse honestly).
DEVICE_FEATURES = (
    "shell_v2", "stat_v2", "ls_v2", "fixed_push_mkdir", "fixed_push_symlink_timestamp",
    "sendrecv_v2", "sendrecv_v2_dry_run_send", "delayed_ack",
)

_NAMES = {A_SYNC: "SYNC", A_CNXN: "CNXN", A_OPEN: "OPEN", A_OKAY: "OKAY", A_CLSE: "CLSE",
          A_WRTE: "WRTE", A_AUTH: "AUTH", A_STLS: "STLS"}


class ProtocolError(Exception):
    """The peer sent bytes that are not an adb packet; the connection must be dropped."""


@dataclass(frozen=True)
class Header:
    command: int
    arg0: int
    arg1: int
    length: int
    crc: int

    @property
    def name(self) -> str:
        return command_name(self.command)


def command_name(command: int) -> str:
    return _NAMES.get(command, f"0x{command:08x}")


def header(command: int, arg0: int, arg1: int, length: int) -> bytes:
    """The 24-byte header. The checksum field is 0: both sides speak VERSION >= 0x01000001."""
    return HEADER.pack(command, arg0 & 0xFFFFFFFF, arg1 & 0xFFFFFFFF, length, 0,
                       command ^ 0xFFFFFFFF)


def pack(command: int, arg0: int, arg1: int, data: bytes = b"") -> bytes:
    """One whole packet (header + payload)."""
    return header(command, arg0, arg1, len(data)) + data


def unpack_header(raw: bytes) -> Header:
    if len(raw) != HEADER.size:
        raise ProtocolError(f"short header ({len(raw)} bytes)")
    command, arg0, arg1, length, crc, magic = HEADER.unpack(raw)
    if magic != command ^ 0xFFFFFFFF:
        raise ProtocolError(f"bad magic for command 0x{command:08x}")
    if length > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {length} bytes exceeds {MAX_PAYLOAD}")
    return Header(command, arg0, arg1, length, crc)


def device_banner(props: dict[str, str], features: tuple[str, ...] = DEVICE_FEATURES) -> bytes:
    """`device::ro.product.name=..;ro.product.model=..;ro.product.device=..;features=..`.

    Values are stripped of the separators `;` and `=` so an odd profile cannot break
    the banner the adb server parses."""
    parts = []
    for key in ("ro.product.name", "ro.product.model", "ro.product.device"):
        value = str(props.get(key, "")).replace(";", "_").replace("=", "_")
        parts.append(f"{key}={value}")
    parts.append("features=" + ",".join(features))
    banner = ("device::" + ";".join(parts)).encode()
    if len(banner) > MAX_BANNER:
        raise ValueError(f"CNXN banner of {len(banner)} bytes exceeds {MAX_BANNER}")
    return banner


def banner_features(banner: bytes) -> set[str]:
    """The `features=` set of a host or device CNXN banner (empty if absent)."""
    text = banner.rstrip(b"\0").decode("utf-8", "replace")
    _, _, props = text.partition("::")
    for item in props.split(";"):
        key, _, value = item.partition("=")
        if key == "features":
            return {f for f in value.split(",") if f}
    return set()
