"""Stand-in for Android's `input`: tap, swipe, text, keyevent (accepted and recorded).

The virtual device has no UI; injected events are recorded in the log (tag `Input`, the
virtual device's record, not a line real Android writes) and KEYCODE_HOME brings the
launcher to the front. Bad arguments fail like InputShellCommand: a message and exit 1.
"""
from __future__ import annotations

import sys

from adbflow.fleet.programs import framework_client as fw

SOURCES = ("keyboard", "mouse", "joystick", "touchnavigation", "touchpad", "trackball",
           "dpad", "stylus", "gamepad", "touchscreen", "rotaryencoder")
KEYCODES = {"HOME": 3, "BACK": 4, "CALL": 5, "ENDCALL": 6, "DPAD_UP": 19, "DPAD_DOWN": 20,
            "DPAD_LEFT": 21, "DPAD_RIGHT": 22, "DPAD_CENTER": 23, "VOLUME_UP": 24,
            "VOLUME_DOWN": 25, "POWER": 26, "CAMERA": 27, "ENTER": 66, "DEL": 67, "MENU": 82,
            "SEARCH": 84, "APP_SWITCH": 187, "WAKEUP": 224, "SLEEP": 223, "TAB": 61,
            "SPACE": 62, "ESCAPE": 111}
USAGE = ("Usage: input [<source>] [-d DISPLAY_ID] <command> [<arg>...]\n\nThe commands and "
         "default sources are:\n      text <string> (Default: touchscreen)\n      keyevent "
         "[--longpress|--doubletap] <key code number or name> ... (Default: keyboard)\n"
         "      tap <x> <y> (Default: touchscreen)\n      swipe <x1> <y1> <x2> <y2> "
         "[duration(ms)] (Default: touchscreen)\n")


def bad(msg: str) -> int:
    print(f"Error: {msg}", file=sys.stderr)
    sys.stderr.write(USAGE)
    return 1


def ints(values: list[str], n_min: int, n_max: int) -> list[int] | None:
    if not n_min <= len(values) <= n_max:
        return None
    try:
        return [int(float(v)) for v in values]
    except ValueError:
        return None


def keycode(text: str) -> int | None:
    if text.isdigit():
        return int(text)
    return KEYCODES.get(text.upper().removeprefix("KEYCODE_"))


def main(argv: list[str]) -> int:
    args = list(argv)
    source = ""
    if args and args[0] in SOURCES:
        source = args.pop(0)
    if args[:1] == ["-d"] and len(args) > 1:
        args = args[2:]
    if not args:
        sys.stderr.write(USAGE)
        return 1
    cmd, rest = args[0], args[1:]
    if cmd == "tap":
        xy = ints(rest, 2, 2)
        if xy is None:
            return bad("Invalid arguments for command: tap")
        fw.log("Input", f"injected tap ({xy[0]}, {xy[1]}) source={source or 'touchscreen'}")
        return 0
    if cmd in ("swipe", "draganddrop"):
        v = ints(rest, 4, 5)
        if v is None:
            return bad(f"Invalid arguments for command: {cmd}")
        ms = v[4] if len(v) == 5 else 300
        fw.log("Input", f"injected {cmd} ({v[0]}, {v[1]}) -> ({v[2]}, {v[3]}) in {ms} ms")
        return 0
    if cmd == "text":
        if not rest:
            return bad("Invalid arguments for command: text")
        text = " ".join(rest).replace("%s", " ")
        fw.log("Input", f"injected text {text!r}")
        return 0
    if cmd == "keyevent":
        keys = [k for k in rest if not k.startswith("--")]
        if not keys:
            return bad("Invalid arguments for command: keyevent")
        for k in keys:
            code = keycode(k)
            if code is None:
                return bad(f"Unknown keycode: {k}")  # real: exits quietly with KEYCODE_UNKNOWN
            fw.log("Input", f"injected keyevent {code}")
            if code == 3:
                fw.call_or_exit({"op": "activity", "home": True}, "input")
            elif code in (26, 223, 224):
                fw.call_or_exit({"op": "activity", "power": {26: "toggle", 223: "sleep",
                                                             224: "wakeup"}[code]}, "input")
        return 0
    if cmd in ("roll", "press", "motionevent", "keycombination"):
        fw.log("Input", f"injected {cmd} {' '.join(rest)}")
        return 0
    return bad(f"Unknown command: {cmd}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
