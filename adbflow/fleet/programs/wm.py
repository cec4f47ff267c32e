"""Stand-in for Android's `wm` (cmd window): size and density, with overrides.

Output as WindowManagerShellCommand prints it: `Physical size: 1080x2400`, then
`Override size: WxH` when one is set; `Physical density: 440` / `Override density: N`.
`wm size WxH` / `wm size reset`, `wm density N` / `reset` change the override (persisted).
"""
from __future__ import annotations

import re
import sys

from adbflow.fleet.programs import display
from adbflow.fleet.programs import framework_client as fw


def main(argv: list[str]) -> int:
    if not argv:
        print("Window manager (window) commands:\n  size [reset|WxH|WdpxHdp]\n"
              "  density [reset|DENSITY]", file=sys.stderr)
        return 1
    cmd, args = argv[0], list(argv[1:])
    if args[:1] == ["-d"]:  # -d DISPLAY_ID: the virtual device has display 0 only
        args = args[2:]
    w, h, d = display.physical()
    if cmd == "size":
        if not args:
            print(f"Physical size: {w}x{h}")
            over = display.override("size")
            if over:
                print(f"Override size: {over}")
            return 0
        if args[0] == "reset":
            fw.call_or_exit({"op": "wm", "key": "size", "value": ""}, "wm")
            return 0
        m = re.fullmatch(r"(\d+)x(\d+)", args[0])
        if not m:
            print(f"Error: bad size {args[0]}", file=sys.stderr)
            return 255
        fw.call_or_exit({"op": "wm", "key": "size", "value": args[0]}, "wm")
        return 0
    if cmd == "density":
        if not args:
            print(f"Physical density: {d}")
            over = display.override("density")
            if over:
                print(f"Override density: {over}")
            return 0
        if args[0] == "reset":
            fw.call_or_exit({"op": "wm", "key": "density", "value": ""}, "wm")
            return 0
        if not args[0].isdigit():
            print(f"Error: bad number {args[0]}", file=sys.stderr)
            return 255
        fw.call_or_exit({"op": "wm", "key": "density", "value": args[0]}, "wm")
        return 0
    print(f"Unknown command: {cmd}", file=sys.stderr)
    return 255


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
