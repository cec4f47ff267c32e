"""Stand-in for Android's `log` (toybox log): write a message to the device's log ring.

`log [-p PRI] [-t TAG] MESSAGE...`: priority one of v d i w e f (default i), tag default
"log"; the message is the arguments joined by spaces (AOSP toybox toys/android/log.c).
"""
from __future__ import annotations

import os
import sys

from adbflow.fleet.programs.framework_client import call_or_exit

USAGE = "usage: log [-p PRI] [-t TAG] [MESSAGE...]"


def main(argv: list[str]) -> int:
    prio, tag = 4, "log"
    args = list(argv)
    while args and args[0].startswith("-") and len(args[0]) > 1:
        opt = args.pop(0)
        if opt == "--":
            break
        if opt[1] not in "pt":
            print(f"log: Unknown option '{opt}'\n{USAGE}", file=sys.stderr)
            return 1
        val = opt[2:] or (args.pop(0) if args else None)
        if val is None:
            print(f"log: Missing argument to -{opt[1]}\n{USAGE}", file=sys.stderr)
            return 1
        if opt[1] == "t":
            tag = val
        else:
            idx = "vdiwef".find(val[:1].lower())
            if idx < 0:
                print(f"log: bad -p '{val}'", file=sys.stderr)
                return 1
            prio = idx + 2
    if not args:  # toybox log needs at least one argument ("<1")
        print(f"log: Need 1 argument\n{USAGE}", file=sys.stderr)
        return 1
    msg = " ".join(args)
    call_or_exit({"op": "log", "entries": [{"prio": prio, "tag": tag, "msg": msg,
                                             "pid": os.getpid(), "tid": os.getpid(),
                                             "uid": os.getuid()}]}, "log")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
