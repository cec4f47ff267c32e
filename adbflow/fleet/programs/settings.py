"""Stand-in for Android's `settings` (cmd settings): get/put/delete/list per namespace.

Output as SettingsService prints it: `get` prints the value or `null`; `put` and `delete`
print nothing / "Deleted N rows"; `list` prints `key=value` lines sorted. Values persist
per device (the framework server keeps them next to the device root).
"""
from __future__ import annotations

import sys

from adbflow.fleet.programs.framework_client import call_or_exit

USAGE = """Settings provider (settings) commands:
  help
      Print this help text.
  get [--user <USER_ID> | current] NAMESPACE KEY
      Retrieve the current value of KEY.
  put [--user <USER_ID> | current] NAMESPACE KEY VALUE [TAG] [default]
      Change the contents of KEY to VALUE.
  delete [--user <USER_ID> | current] NAMESPACE KEY
      Delete the entry for KEY.
  list [--user <USER_ID> | current] NAMESPACE
      Print all defined keys.

NAMESPACE is one of {system, secure, global}, case-insensitive
"""


def main(argv: list[str]) -> int:
    args = [a for a in argv]
    if not args or args[0] in ("help", "-h"):
        sys.stdout.write(USAGE)
        return 0 if args else 1
    verb = args.pop(0)
    if args[:1] == ["--user"]:
        args = args[2:]
    if not args:
        sys.stderr.write("Invalid arguments\n" + USAGE)
        return 1
    ns = args.pop(0).lower()
    if ns not in ("system", "secure", "global"):
        sys.stderr.write(f"Invalid namespace '{ns}'\n")
        return 1
    if verb == "get" and len(args) == 1:
        ans = call_or_exit({"op": "settings", "action": "get", "namespace": ns,
                            "key": args[0]}, "settings")
        print("null" if ans.get("value") is None else ans["value"])
        return 0
    if verb == "put" and len(args) >= 2:
        call_or_exit({"op": "settings", "action": "put", "namespace": ns, "key": args[0],
                      "value": args[1]}, "settings")
        return 0
    if verb == "delete" and len(args) == 1:
        ans = call_or_exit({"op": "settings", "action": "delete", "namespace": ns,
                            "key": args[0]}, "settings")
        print(f"Deleted {ans.get('deleted', 0)} rows")
        return 0
    if verb == "list" and not args:
        ans = call_or_exit({"op": "settings", "action": "list", "namespace": ns}, "settings")
        for key, value in ans["items"]:
            print(f"{key}={value}")
        return 0
    sys.stderr.write(f"Invalid command: {verb}\n" + USAGE)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
