"""Stand-in for `uiautomator dump [FILE]`: the view hierarchy of the virtual screen.

The virtual device draws one screen (programs/screencap.py: status bar, the focused app's
content area, navigation bar); this dumps exactly those three views, with their real
bounds and the focused package, in UiAutomator's XML format (AccessibilityNodeInfoDumper).
Nothing else is pretended: there are no widgets inside the app area. Other uiautomator
commands (runtest, events) are refused.
"""
from __future__ import annotations

import os
import sys
from xml.sax.saxutils import quoteattr

from adbflow.fleet.programs import display
from adbflow.fleet.programs import framework_client as fw

DEFAULT_FILE = "/sdcard/window_dump.xml"
FLAGS = ('checkable="false" checked="false" clickable="false" enabled="true" '
         'focusable="false" focused="false" scrollable="false" long-clickable="false" '
         'password="false" selected="false"')


def node(index: int, cls: str, pkg: str, rid: str, bounds: tuple[int, int, int, int],
         children: str = "") -> str:
    x1, y1, x2, y2 = bounds
    attrs = (f'index="{index}" text="" resource-id={quoteattr(rid)} class={quoteattr(cls)} '
             f'package={quoteattr(pkg)} content-desc="" {FLAGS} bounds="[{x1},{y1}][{x2},{y2}]"')
    return f"<node {attrs}>{children}</node>" if children else f"<node {attrs} />"


def hierarchy() -> str:
    w, h, _d = display.current()
    try:
        focus = str(fw.call({"op": "activity"}).get("focus") or "")
    except fw.FrameworkUnavailable:
        focus = ""
    pkg = focus.split("/")[0] or "com.android.launcher3"
    status, nav = max(1, h // 40), max(1, h // 20)
    inner = (node(0, "android.view.View", "com.android.systemui",
                  "com.android.systemui:id/status_bar", (0, 0, w, status))
             + node(1, "android.widget.FrameLayout", pkg, "android:id/content",
                    (0, status, w, h - nav))
             + node(2, "android.view.View", "com.android.systemui",
                    "com.android.systemui:id/navigation_bar_frame", (0, h - nav, w, h)))
    root = node(0, "android.widget.FrameLayout", pkg, "", (0, 0, w, h), inner)
    return ("<?xml version='1.0' encoding='UTF-8' standalone='yes' ?>"
            f'<hierarchy rotation="0">{root}</hierarchy>')


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "dump":
        print("Usage: uiautomator <subcommand> [options]\n\nAvailable subcommands:\n\n"
              "dump: creates an XML dump of current UI hierarchy", file=sys.stderr)
        return 1
    args = [a for a in argv[1:] if a not in ("--compressed", "--verbose")]
    path = args[0] if args else DEFAULT_FILE
    if path == "/dev/tty":
        sys.stdout.write(hierarchy())
    else:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o664)
        except OSError as exc:
            print(f"ERROR: could not write {path}: {exc.strerror}", file=sys.stderr)
            return 1
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(hierarchy())
    print(f"UI hierchary dumped to: {path}")  # sic: the real tool's spelling
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
