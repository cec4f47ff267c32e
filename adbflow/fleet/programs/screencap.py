"""Stand-in for Android's screencap: a real PNG (or raw RGBA) of the virtual screen.

`screencap -p` writes a PNG to stdout; `screencap FILE.png` (or `-p FILE`) writes a PNG
file; without -p and without a .png file name it writes screencap's raw format: a header
of u32 width, height, pixel format (1 = RGBA_8888) and, from Android 9, the data space,
then the pixels (frameworks/base/cmds/screencap/screencap.cpp). The picture is the
virtual home screen: status bar, wallpaper gradient, navigation bar, drawn here (the
device has no GPU); RGBA 8-bit, as real screenshots are.
"""
from __future__ import annotations

import os
import struct
import sys
import zlib

from adbflow.fleet.programs import display
from adbflow.fleet.programs import framework_client as fw

DATASPACE_SRGB = 142671872  # HAL_DATASPACE_SRGB, what screencap reports for RGBA_8888


def pixels(width: int, height: int) -> list[bytes]:
    """One bytes row per scanline (RGBA)."""
    rows = []
    status, nav = max(1, height // 40), max(1, height // 20)
    for y in range(height):
        if y < status or y >= height - nav:
            rows.append(b"\x10\x10\x10\xff" * width)
            continue
        f = y / max(1, height - 1)
        px = bytes((int(30 + 40 * f), int(60 + 90 * f), int(140 + 80 * f), 255))
        rows.append(px * width)
    return rows


def png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    raw = b"".join(b"\x00" + row for row in pixels(width, height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6,
                                                             0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def raw_dump(width: int, height: int, sdk: int) -> bytes:
    header = struct.pack("<III", width, height, 1)
    if sdk >= 28:
        header += struct.pack("<I", DATASPACE_SRGB)
    return header + b"".join(pixels(width, height))


def main(argv: list[str]) -> int:
    want_png = False
    path = None
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == "-p":
            want_png = True
        elif a in ("-d", "--display-id") and args:
            args.pop(0)
        elif a in ("-a", "-j"):
            pass
        elif a in ("-h", "--help"):
            print("usage: screencap [-hp] [-d display-id] [FILENAME]\n   -h: this message\n"
                  "   -p: save the file as a png.\nIf FILENAME ends with .png it will be saved "
                  "as a png.\nIf FILENAME is not given, the results will be printed to stdout.")
            return 0
        elif a.startswith("-"):
            print(f"screencap: invalid option -- '{a[1:2]}'", file=sys.stderr)
            return 1
        else:
            path = a
    if path is not None and path.endswith(".png"):
        want_png = True
    w, h, _d = display.current()
    try:
        sdk = int(fw.build_props().get("ro.build.version.sdk", "35"))
    except ValueError:
        sdk = 35
    data = png(w, h) if want_png else raw_dump(w, h, sdk)
    if path is None:
        out = sys.stdout.buffer
        out.write(data)
        out.flush()
        return 0
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o664)
    except OSError as exc:
        print(f"Error opening file: {path} ({exc.strerror})", file=sys.stderr)
        return 1
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
