"""The virtual device's display: physical size/density from build.prop, `wm` overrides.

Why shared: `wm size`, `screencap` and `dumpsys window` must agree on one screen size.
"""
from __future__ import annotations

from adbflow.fleet.programs import framework_client as fw

DEFAULT = (1080, 2400, 440)


def physical() -> tuple[int, int, int]:
    props = fw.build_props()
    w, h, d = DEFAULT
    try:
        w, h = (int(v) for v in props.get("ro.adbflow.display.size", f"{w}x{h}").split("x"))
        d = int(props.get("ro.sf.lcd_density", d))
    except ValueError:
        pass
    return w, h, d


def override(key: str) -> str | None:
    try:
        return fw.call({"op": "wm", "key": key}).get("value")
    except fw.FrameworkUnavailable:
        return None


def current() -> tuple[int, int, int]:
    """(width, height, density) as the display currently is (overrides applied)."""
    w, h, d = physical()
    size = override("size")
    if size and "x" in size:
        w, h = (int(v) for v in size.split("x"))
    dens = override("density")
    if dens and dens.isdigit():
        d = int(dens)
    return w, h, d
