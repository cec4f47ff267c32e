"""Stand-in for Android's `pm` (cmd package): list packages, path, install (refused), clear.

Output formats of PackageManagerShellCommand: `package:NAME`, with -f
`package:APK=NAME`, with -U ` uid:N`; `pm path` prints `package:APK` or exits 1 silently.
Installing is refused with a real-format `Failure [...]` line: a virtual device runs no
APKs, and saying so is better than pretending.
"""
from __future__ import annotations

import sys

from adbflow.fleet.programs.packages import PACKAGES, find

INSTALL_REFUSED = ("Failure [INSTALL_FAILED_INTERNAL_ERROR: adbflow virtual device: "
                   "installing apps is not supported]")
FEATURES = ("android.hardware.camera", "android.hardware.camera.any",
            "android.hardware.screen.portrait", "android.hardware.touchscreen",
            "android.hardware.wifi", "android.software.webview")


def list_packages(args: list[str]) -> int:
    show_path = show_uid = third_party = False
    needle = ""
    for a in args:
        if a.startswith("-") and len(a) > 1:
            for flag in a[1:]:
                if flag == "f":
                    show_path = True
                elif flag == "U":
                    show_uid = True
                elif flag == "3":
                    third_party = True
                elif flag in "sdeiua":
                    pass
                else:
                    print(f"Error: Unknown option: -{flag}", file=sys.stderr)
                    return 255
        else:
            needle = a
    if third_party:
        return 0  # every package here is a system package
    for p in sorted(PACKAGES, key=lambda p: p.name):
        if needle and needle not in p.name:
            continue
        line = f"package:{p.apk}={p.name}" if show_path else f"package:{p.name}"
        print(line + (f" uid:{p.uid}" if show_uid else ""))
    return 0


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: pm [list|path|install|uninstall|clear|...]", file=sys.stderr)
        return 1
    cmd, args = argv[0], argv[1:]
    if cmd == "list" and args[:1] == ["packages"]:
        return list_packages(args[1:])
    if cmd == "list" and args[:1] == ["features"]:
        for f in FEATURES:
            print(f"feature:{f}")
        return 0
    if cmd == "path":
        names = [a for a in args if not a.startswith("-")]
        pkg = find(names[-1]) if names else None
        if pkg is None:
            return 1
        print(f"package:{pkg.apk}")
        return 0
    if cmd in ("install", "install-create", "install-multiple"):
        print(INSTALL_REFUSED)
        return 1
    if cmd == "uninstall":
        print("Failure [DELETE_FAILED_INTERNAL_ERROR]")  # system apps cannot be removed
        return 1
    if cmd == "clear":
        names = [a for a in args if not a.startswith("-")]
        if not names or find(names[-1]) is None:
            print("Failed")
            return 1
        print("Success")
        return 0
    if cmd in ("grant", "revoke", "enable", "disable-user", "set-install-location"):
        names = [a for a in args if not a.startswith("-")]
        if not names or find(names[0]) is None:
            print(f"Exception occurred while executing '{cmd}':", file=sys.stderr)
            print(f"java.lang.IllegalArgumentException: Unknown package: "
                  f"{names[0] if names else ''}", file=sys.stderr)
            return 255
        return 0
    print(f"Unknown command: {cmd}", file=sys.stderr)
    return 255


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
