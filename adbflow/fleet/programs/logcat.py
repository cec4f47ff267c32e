"""Stand-in for Android's logcat: prints the device's log ring in logcat's real formats.

Why: adb automation tools (and people) run `adb logcat -d`, `-c`, `-v threadtime`,
`-s TAG`, `-t N`, or stream `adb logcat` and kill it. The entries come from the device's
framework server (adbflow/fleet/framework.py): written by `log`, by `am`/`input`, and by
the stand-in programs. Line layouts follow AOSP liblog logprint.cpp, e.g. threadtime:
`MM-DD HH:MM:SS.mmm  PID  TID P TAG     : message`. Device time zone: UTC.
"""
from __future__ import annotations

import re
import signal
import sys
import time
from typing import Any

from adbflow.fleet.programs.framework_client import PRIO_LETTERS, call_or_exit

FORMATS = ("brief", "process", "tag", "thread", "raw", "time", "threadtime", "long")
MODIFIERS = ("color", "descriptive", "epoch", "monotonic", "printable", "uid", "usec",
             "UTC", "year", "zone", "nsec")
BUFFERS = ("main", "system", "radio", "events", "crash", "kernel", "security", "stats",
           "default", "all")
POLL_S = 0.2
USAGE = "Usage: logcat [options] [filterspecs]"


class Options:
    def __init__(self) -> None:
        self.dump = False
        self.clear = False
        self.fmt = "threadtime"
        self.mods: set[str] = set()
        self.silent_default = False
        self.specs: list[str] = []
        self.tail: int | None = None
        self.max_count: int | None = None
        self.regex: re.Pattern[str] | None = None
        self.pid: int | None = None
        self.get_size = False
        self.out_file: str | None = None


def fail(msg: str) -> None:
    print(f"logcat: {msg}", file=sys.stderr)
    print(USAGE, file=sys.stderr)
    raise SystemExit(1)


def parse_args(argv: list[str]) -> Options:
    o = Options()
    it = iter(range(len(argv)))
    i = 0

    def value(opt: str) -> str:
        nonlocal i
        i += 1
        if i >= len(argv):
            fail(f"option requires an argument -- '{opt}'")
        return argv[i]

    while i < len(argv):
        a = argv[i]
        if a.startswith("--pid="):
            o.pid = int(a[6:])
        elif a in ("-d",):
            o.dump = True
        elif a == "-c" or a == "--clear":
            o.clear = True
        elif a == "-s":
            o.silent_default = True
        elif a == "-g" or a == "--buffer-size":
            o.get_size = True
        elif a == "-D" or a == "--dividers" or a == "-B" or a == "--binary":
            pass
        elif a.startswith("-v") or a == "--format":
            fmt = a[2:] if len(a) > 2 and a.startswith("-v") else value("v")
            for part in re.split(r"[ ,]", fmt):
                if part in FORMATS:
                    o.fmt = part
                elif part in MODIFIERS:
                    o.mods.add(part)
                elif part:
                    fail(f'Invalid parameter "{part}" to -v.')
        elif a.startswith("-b"):
            buf = a[2:] or value("b")
            if any(b not in BUFFERS for b in buf.split(",")):
                fail(f"Unknown buffer '{buf}'")
        elif a.startswith("-t") or a.startswith("-T"):
            n = a[2:] or value(a[1])
            try:
                o.tail = int(n)
            except ValueError:
                fail(f"invalid count '{n}' (time stamps are not supported here)")
            if a[1] == "t":
                o.dump = True
        elif a.startswith("-m"):
            o.max_count = int(a[2:] or value("m"))
        elif a.startswith("-e") or a == "--regex":
            o.regex = re.compile(a[2:] if a.startswith("-e") and len(a) > 2 else value("e"))
        elif a.startswith("-f") or a == "--file":
            o.out_file = a[2:] if a.startswith("-f") and len(a) > 2 else value("f")
        elif a.startswith("-") and a != "-":
            fail(f"invalid option -- '{a.lstrip('-')[:1]}'")
        else:
            o.specs.append(a)
        i += 1
    del it
    return o


def make_filter(o: Options) -> Any:
    """logcat filterspecs: TAG[:P] ... with `*:P` for the default; -s means `*:S`."""
    default = 8 if o.silent_default else 2  # S(ilent) above F(atal)
    tags: dict[str, int] = {}
    for spec in o.specs:
        tag, _, prio = spec.partition(":")
        level = 2 if not prio else "VDIWEFS".find(prio.upper()[:1]) + 2
        if level < 2:
            fail(f"Invalid filter expression '{spec}'")
        if tag == "*":
            default = level
        else:
            tags[tag] = level

    def keep(entry: dict[str, Any]) -> bool:
        if entry["prio"] < tags.get(entry["tag"], default):
            return False
        if o.pid is not None and entry["pid"] != o.pid:
            return False
        if o.regex is not None and not o.regex.search(entry["msg"]):
            return False
        return True
    return keep


def stamp(t: float, mods: set[str]) -> str:
    if "epoch" in mods:
        return f"{t:.3f}".rjust(14)
    tm = time.gmtime(t)
    base = time.strftime("%Y-%m-%d %H:%M:%S" if "year" in mods else "%m-%d %H:%M:%S", tm)
    frac = f"{int(t * 1e6) % 1000000:06d}" if "usec" in mods else f"{int(t * 1000) % 1000:03d}"
    return f"{base}.{frac}" + (" +0000" if "zone" in mods else "")


def render(e: dict[str, Any], fmt: str, mods: set[str]) -> str:
    """One entry in logcat format `fmt` (one output line per message line)."""
    p = PRIO_LETTERS[e["prio"]] if 0 <= e["prio"] < len(PRIO_LETTERS) else "?"
    tag, pid, tid = e["tag"], e["pid"], e["tid"]
    ts = stamp(e["t"], mods)
    uid = f"{e.get('uid', 2000):5d} " if "uid" in mods else ""
    prefix, suffix = {
        "brief": (f"{p}/{tag:<8s}({pid:5d}): ", ""),
        "process": (f"{p}({pid:5d}) ", f"  ({tag})"),
        "tag": (f"{p}/{tag:<8s}: ", ""),
        "thread": (f"{p}({pid:5d}:{tid:5d}) ", ""),
        "raw": ("", ""),
        "time": (f"{ts} {p}/{tag:<8s}({pid:5d}): ", ""),
        "threadtime": (f"{ts} {uid}{pid:5d} {tid:5d} {p} {tag:<8s}: ", ""),
        "long": (f"[ {ts} {uid}{pid:5d}:{tid:5d} {p}/{tag:<8s} ]\n", "\n"),
    }[fmt]
    if fmt == "long":
        return prefix + e["msg"] + "\n" + suffix
    lines = e["msg"].split("\n") or [""]
    return "".join(f"{prefix}{line}{suffix}\n" for line in lines)


def buffer_size_report(size: int) -> str:
    used_kib = max(1, size * 120 // 1024)
    return (f"main: ring buffer is 256 KiB ({used_kib} KiB consumed, {used_kib} KiB "
            "readable), max entry is 5120 B, max payload is 4068 B\n")


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    o = parse_args(argv)
    if o.clear:
        call_or_exit({"op": "logcat", "clear": True}, "logcat")
        return 0
    answer = call_or_exit({"op": "logcat", "since": 0}, "logcat")
    if o.get_size:
        sys.stdout.write(buffer_size_report(int(answer.get("size", 0))))
        return 0
    keep = make_filter(o)
    out = open(o.out_file, "a", encoding="utf-8") if o.out_file else sys.stdout
    entries = [e for e in answer["entries"] if keep(e)]
    if o.tail is not None:
        entries = entries[-o.tail:] if o.tail > 0 else []
    printed = 0
    started = False

    def emit(batch: list[dict[str, Any]]) -> bool:
        nonlocal printed, started
        for e in batch:
            if o.max_count is not None and printed >= o.max_count:
                return False
            if not started and o.fmt != "raw":
                out.write("--------- beginning of main\n")
            started = True
            out.write(render(e, o.fmt, o.mods))
            printed += 1
        out.flush()
        return True

    if not emit(entries) or o.dump:
        return 0
    seq = int(answer.get("seq", 0))
    while True:  # follow, like logcat without -d: until killed (SIGHUP/SIGPIPE) or -m
        time.sleep(POLL_S)
        answer = call_or_exit({"op": "logcat", "since": seq}, "logcat")
        seq = int(answer.get("seq", seq))
        if not emit([e for e in answer["entries"] if keep(e)]):
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
