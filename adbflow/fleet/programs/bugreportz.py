"""Stand-in for bugreportz (what `adb bugreport` runs since Android 7): a zipped bug report.

Protocol (AOSP frameworks/native/cmds/bugreportz, adb client/bugreport.cpp): `-v` prints
the version on stderr; `-p` prints `BEGIN:PATH`, `PROGRESS:N/TOTAL` lines and finally
`OK:PATH` (or `FAIL:reason`) on stdout; adb then pulls PATH. The report is what dumpstate
collects that exists here: system properties, every dumpsys service, the log, /proc
memory and CPU files, in dumpstate's section format. Written to
/data/local/tmp/bugreports (a phone uses the shell app's own files dir, /bugreports).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile

from adbflow.fleet.programs import framework_client as fw

VERSION = "1.2"
OUT_DIR = "/data/local/tmp/bugreports"
SECTIONS = (("SYSTEM PROPERTIES", ["getprop"]), ("DUMPSYS", ["dumpsys"]),
            ("LOGCAT", ["logcat", "-d", "-v", "threadtime"]),
            ("MEMORY INFO", ["cat", "/proc/meminfo"]), ("CPU INFO", ["cat", "/proc/cpuinfo"]),
            ("UPTIME", ["cat", "/proc/uptime"]))


def section(title: str, argv: list[str]) -> str:
    t0 = time.monotonic()
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        out = f"*** {argv[0]}: {exc}\n"
    return (f"------ {title} ({' '.join(argv)}) ------\n{out}"
            f"------ {time.monotonic() - t0:.3f}s was the duration of '{title}' ------\n")


def main(argv: list[str]) -> int:
    if argv[:1] == ["-v"]:
        print(VERSION, file=sys.stderr)
        return 0
    if argv[:1] == ["-s"]:
        print("bugreportz: streaming is not supported here (use `adb bugreport DIR`)",
              file=sys.stderr)
        return 1
    progress = "-p" in argv
    props = fw.build_props()
    stamp = time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime())
    name = (f"bugreport-{props.get('ro.product.device', 'device')}-"
            f"{props.get('ro.build.id', 'UNKNOWN')}-{stamp}")
    os.makedirs(OUT_DIR, exist_ok=True)
    path = f"{OUT_DIR}/{name}.zip"
    print(f"BEGIN:{path}", flush=True)
    parts = [f"========================================================\n== dumpstate: "
             f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())}\n"
             "========================================================\n\n"
             f"Build: {props.get('ro.build.display.id', '')}\n"
             f"Build fingerprint: '{props.get('ro.build.fingerprint', '')}'\n\n"]
    for i, (title, cmd) in enumerate(SECTIONS, 1):
        parts.append(section(title, cmd))
        if progress:
            print(f"PROGRESS:{i}/{len(SECTIONS)}", flush=True)
    try:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"{name}.txt", "".join(parts))
            zf.writestr("main_entry.txt", f"{name}.txt")
            zf.writestr("version.txt", "2.0")
    except OSError as exc:
        print(f"FAIL:could not write {path}: {exc.strerror}", flush=True)
        return 1
    print(f"OK:{path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
