"""Stand-in for Android's `monkey`, enough for the common `monkey -p PKG -c
android.intent.category.LAUNCHER 1` (launch an app's main activity).

The launch is recorded like `am start` (the focused activity changes); random UI events
are not simulated (the device has no UI): other event counts are accepted and reported.
"""
from __future__ import annotations

import sys
import time

from adbflow.fleet.programs import framework_client as fw
from adbflow.fleet.programs.packages import find


def main(argv: list[str]) -> int:
    t0 = time.monotonic()
    pkgs: list[str] = []
    count = 0
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "-p" and i + 1 < len(argv):
            pkgs.append(argv[i + 1])
            i += 2
            continue
        if a in ("-c", "-s", "--throttle", "--pct-touch", "--pct-motion") and i + 1 < len(argv):
            i += 2
            continue
        if a.isdigit():
            count = int(a)
        i += 1
    if not count:
        print("** Error: Count not specified", file=sys.stderr)
        return 1
    target = next((find(p) for p in pkgs if find(p) and find(p).activity), None)  # type: ignore[union-attr]
    if target is None:
        print("** No activities found to run, monkey aborted.", file=sys.stderr)
        return 251
    fw.call_or_exit({"op": "activity", "start": target.component}, "monkey")
    fw.log("ActivityTaskManager", f"START u0 {{act=android.intent.action.MAIN cat=[android."
           f"intent.category.LAUNCHER] flg=0x10200000 cmp={target.component}}} from uid 2000")
    print(f"  bash arg: -p\n  bash arg: {target.name}")
    print(f"Events injected: {count}")
    ms = int((time.monotonic() - t0) * 1000)
    print(f"## Network stats: elapsed time={ms}ms (0ms mobile, 0ms wifi, {ms}ms not connected)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
