"""Stand-in for Android's `svc` (wifi/data/power/usb control), recorded in settings.

`svc wifi enable|disable` and `svc data enable|disable` flip Settings.Global wifi_on /
mobile_data (what the real services persist); `svc power stayon` sets
stay_on_while_plugged_in; `svc usb getFunctions` prints the current function. No output
on success, like the real command.
"""
from __future__ import annotations

import sys

from adbflow.fleet.programs import framework_client as fw

USAGE = ("Available commands:\n    help     Show information about the subcommands\n"
         "    power    Control the power manager\n    data     Control mobile data "
         "connectivity\n    wifi     Control the Wi-Fi manager\n    usb      Control Usb "
         "state\n")


def put(key: str, value: str) -> None:
    fw.call_or_exit({"op": "settings", "action": "put", "namespace": "global", "key": key,
                     "value": value}, "svc")


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] in ("wifi", "data") and argv[1] in ("enable", "disable"):
        put("wifi_on" if argv[0] == "wifi" else "mobile_data",
            "1" if argv[1] == "enable" else "0")
        return 0
    if len(argv) >= 3 and argv[:2] == ["power", "stayon"]:
        put("stay_on_while_plugged_in", {"true": "7", "false": "0", "usb": "2", "ac": "1",
                                         "wireless": "4"}.get(argv[2], "0"))
        return 0
    if argv[:2] == ["usb", "getFunctions"]:
        print("adb")
        return 0
    sys.stdout.write(USAGE)
    return 0 if not argv or argv[0] == "help" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
