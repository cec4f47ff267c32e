"""Stand-in for Android's `am` (cmd activity): start, broadcast, force-stop, startservice.

Accepted and recorded (the device's focused activity changes, the log gets the lines
ActivityTaskManager writes); output as ActivityManagerShellCommand prints it, e.g.
`Starting: Intent { act=... cat=[...] cmp=pkg/.Cls }`, `Broadcasting: Intent { ... }` +
`Broadcast completed: result=0`, and `Error type 3` for an activity that does not exist.
"""
from __future__ import annotations

import random
import sys

from adbflow.fleet.programs import framework_client as fw
from adbflow.fleet.programs.packages import find, short_component, split_component

#: options that take one value / two (name value) / none; from `am help`'s intent spec
ONE = {"-a", "-d", "-t", "-i", "-c", "-n", "-f", "-p", "--user", "-r", "-P", "--start-profiler",
       "--sampling", "--attach-agent", "--display", "--windowingMode", "--activityType"}
TWO = {"-e", "--es", "--ei", "--el", "--ef", "--ez", "--eu", "--ecn", "--eia", "--ela",
       "--efa", "--esa", "--esal", "--eial", "--elal", "--efal", "--esn"}
NONE = {"-W", "-S", "-D", "-N", "--streaming", "--track-allocation", "--receiver-permission",
        "--activity-clear-top", "--activity-new-task", "--activity-single-top",
        "--grant-read-uri-permission", "--include-stopped-packages", "--exclude-stopped-packages"}


class Intent:
    def __init__(self) -> None:
        self.action = ""
        self.categories: list[str] = []
        self.data = ""
        self.mime = ""
        self.flags = 0
        self.package = ""
        self.component = ""
        self.extras = False
        self.wait = False

    def inner(self, broadcast: bool = False) -> str:
        """`{act=... cmp=...}`, as ActivityTaskManager logs an intent."""
        return "{" + self.short(broadcast)[len("Intent { "):-2] + "}"

    def short(self, broadcast: bool = False) -> str:
        """Intent.toShortString(false, true, true, false) as `am` prints it."""
        parts = []
        if self.action:
            parts.append(f"act={self.action}")
        if self.categories:
            parts.append("cat=[" + ",".join(self.categories) + "]")
        if self.data:
            parts.append(f"dat={self.data}")
        if self.mime:
            parts.append(f"typ={self.mime}")
        flags = self.flags | (0x400000 if broadcast else 0)
        if flags:
            parts.append(f"flg=0x{flags:x}")
        if self.package:
            parts.append(f"pkg={self.package}")
        if self.component:
            parts.append(f"cmp={short_component(*split_component(self.component))}")
        if self.extras:
            parts.append("(has extras)")
        return "Intent { " + " ".join(parts) + " }"


def parse_intent(args: list[str]) -> Intent:
    it = Intent()
    i = 0
    while i < len(args):
        a = args[i]
        val = args[i + 1] if i + 1 < len(args) else ""
        if a in ONE:
            if a == "-a":
                it.action = val
            elif a == "-c":
                it.categories.append(val)
            elif a == "-d":
                it.data = val
            elif a == "-t":
                it.mime = val
            elif a == "-n":
                it.component = val
            elif a == "-f":
                it.flags |= int(val, 0)
            elif a == "-p":
                it.package = val
            i += 2
        elif a in TWO:
            it.extras = True
            i += 3
        elif a in NONE:
            it.wait = it.wait or a == "-W"
            i += 1
        elif "/" in a and not it.component:
            it.component = a
            i += 1
        elif ":" in a and not it.data:
            it.data = a
            i += 1
        else:
            i += 1
    return it


def start(args: list[str]) -> int:
    it = parse_intent(args)
    print(f"Starting: {it.short()}", flush=True)
    target = ""
    if it.component:
        pkg, cls = split_component(it.component)
        p = find(pkg)
        if p is None or not p.activity or split_component(p.component)[1] != cls:
            print("Error type 3")
            print(f"Error: Activity class {{{pkg}/{cls}}} does not exist.", file=sys.stderr)
            return 255
        target = short_component(pkg, cls)
    elif "android.intent.category.HOME" in it.categories:
        target = "home"
    elif it.package and find(it.package) and find(it.package).activity:  # type: ignore[union-attr]
        target = find(it.package).component  # type: ignore[union-attr]
    if target == "home":
        ans = fw.call_or_exit({"op": "activity", "home": True}, "am")
    elif target:
        ans = fw.call_or_exit({"op": "activity", "start": target}, "am")
    else:
        ans = fw.call_or_exit({"op": "activity"}, "am")
    fw.log("ActivityTaskManager", f"START u0 {it.inner()} from uid 2000")
    if it.wait:
        total = random.randint(180, 450)
        print("Status: ok")
        print("LaunchState: COLD")
        print(f"Activity: {ans.get('focus', '')}")
        print(f"TotalTime: {total}")
        print(f"WaitTime: {total + random.randint(2, 12)}")
        print("Complete")
    return 0


def main(argv: list[str]) -> int:
    if not argv:
        print("Activity manager (activity) commands:\n  help\n  start ...\n  broadcast ...\n"
              "  force-stop PACKAGE\n  startservice ...", file=sys.stderr)
        return 1
    cmd, args = argv[0], argv[1:]
    if cmd in ("start", "start-activity"):
        return start(args)
    if cmd == "broadcast":
        it = parse_intent(args)
        print(f"Broadcasting: {it.short(broadcast=True)}")
        fw.log("ActivityManager", f"Broadcast {it.inner(broadcast=True)} from uid 2000", 3)
        print("Broadcast completed: result=0")
        return 0
    if cmd in ("startservice", "start-service", "start-foreground-service"):
        it = parse_intent(args)
        print(f"Starting service: {it.short()}")
        fw.log("ActivityManager", f"Start service {it.inner()} from uid 2000")
        return 0
    if cmd == "force-stop":
        names = [a for a in args if not a.startswith("-")]
        if names:
            fw.call_or_exit({"op": "activity", "force_stop": names[-1]}, "am")
            fw.log("ActivityManager", f"Force stopping {names[-1]} appid=0 user=0: from pid "
                   "2000")
        return 0
    if cmd == "get-current-user":
        print(0)
        return 0
    print(f"Unknown command: {cmd}", file=sys.stderr)
    return 255


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
