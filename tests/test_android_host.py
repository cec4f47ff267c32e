"""The orchestrator against the fleet's Android releases (7.1, 9, 11, 15): what real phones of
those versions do, and what adbflow must make of it.

- Android 11+: a camera publishes through MediaStore (`.pending-` then a rename the watched
  view gets no event for): adbflow finds the picture through `content query`; a video beside
  it is ignored.
- Android 7.1: no MediaStore publish, no `head -c` in toybox, no thermalservice: the probe
  still completes, the picture is found by inotify/listings.
- Qualcomm profiles: BCL zones (`soc` = battery %, `*-lvl*`, `vbat`, `ibat`) are there; a
  bid's temperature is never one of them; >64 zones: the CPU zones are still read.
"""
from __future__ import annotations

import time

import pytest

pytest.importorskip("adbflow.fleet.android", reason="needs the fleet's Android-release axis")

from fleet_helpers import CHELSEA, module_fleet  # noqa: E402

from adbflow.device import AdbServer, Device, Inventory  # noqa: E402
from adbflow.device.probe import run_probe  # noqa: E402
from adbflow.runtime.detect import WATCH_DIRS, Watcher  # noqa: E402
from adbflow.scheduling.bids import Bidder  # noqa: E402

pytestmark = pytest.mark.fleet

# legacy_2016: Android 7.1.2, Qualcomm BCL zones; old_2017: Android 11; flagship_2024:
# Android 15, Qualcomm with >64 zones
fleet = module_fleet(3, ["legacy_2016", "old_2017", "flagship_2024"])


def _by_sdk(fleet) -> dict[int, str]:
    out = {}
    for s in fleet.serials:
        dev = Device(s, AdbServer(port=fleet.adb_port))
        out[int(dev.run(["getprop", "ro.build.version.sdk"], timeout=10).stdout.strip())] = s
    return out


def test_probe_and_bids_per_release(fleet) -> None:
    sdks = _by_sdk(fleet)
    assert set(sdks) == {25, 30, 35}
    bidder = Bidder(timeout=15)
    devices = Inventory([AdbServer(port=fleet.adb_port)], start_server=False).devices()
    bids = {b.serial: b for b in bidder.gather(devices)}
    for sdk, serial in sdks.items():
        b = bids[serial]
        assert b.ok, (sdk, b.error)
        rep = bidder.last_reports[serial]
        assert rep.complete and not rep.problems, (sdk, rep.problems)
        assert b.temperature_c is not None and 20.0 < b.temperature_c < 110.0, (sdk, b)
        if rep.thermal is not None:
            kinds = {r.name: r.kind for r in rep.thermal.readings}
            bcl = [n for n, k in kinds.items() if k == "not-temp"]
            # the BCL zones the Qualcomm profiles carry are never a temperature
            assert all(r.temp_c is None for r in rep.thermal.readings if r.name in bcl)
            if sdk in (25, 35):
                assert "soc" in bcl, kinds
            assert b.temperature_c != b.battery_level
            cpu = [r.temp_c for r in rep.thermal.readings if r.kind == "cpu" and r.temp_c]
            assert cpu and b.temperature_c == max(cpu), (sdk, kinds)
    assert bids[sdks[25]].thermal_status is None          # Android 7.1: no thermalservice
    assert isinstance(bids[sdks[35]].thermal_status, int)  # Android 10+: the status is read


def test_many_zones_are_chosen_by_type(fleet) -> None:
    serial = _by_sdk(fleet)[35]
    dev = Device(serial, AdbServer(port=fleet.adb_port))
    n = int(dev.shell("ls /sys/class/thermal | grep -c thermal_zone", timeout=10).stdout)
    assert n > 64
    rep, _ = run_probe(dev, timeout=15, first=True)
    names = [r.name for r in rep.thermal.readings]
    assert len(names) <= 64 and "cpu-1-7-usr" in names          # zone numbers past 64
    assert not {"battery", "skin-therm", "xo-therm"} & set(names)


def test_camera_snaps_are_found_on_every_release(fleet, tmp_path) -> None:
    sdks = _by_sdk(fleet)
    inv = Inventory([AdbServer(port=fleet.adb_port)], start_server=False)
    found: dict[str, str] = {}
    errors: list[str] = []
    w = Watcher(lambda s, d, e: {(x.name, x.size, x.mtime) for x in e}, directories=WATCH_DIRS,
                on_error=lambda s, m: errors.append(f"{s}: {m}"))
    try:
        w.sync(inv.devices())
        time.sleep(1.0)
        snapped = {}
        for sdk, serial in sdks.items():
            name = f"IMG_{sdk}.jpg"
            fleet.snap(serial, CHELSEA, name=name, with_video=True)
            snapped[name] = serial
        deadline = time.monotonic() + 30
        while len(found) < len(snapped) and time.monotonic() < deadline:
            for pic in w.wait_events(0.3) + w.recheck() + w.poll():
                found[pic.name] = pic.how
        assert set(found) == set(snapped), (found, errors)    # the videos are not pictures
        assert found["IMG_30.jpg"] == "mediastore" and found["IMG_35.jpg"] == "mediastore"
        assert found["IMG_25.jpg"] in ("inotify", "listing")
        for sdk in (30, 35):
            assert w.watches[sdks[sdk]].mediastore_after is not None
        assert w.watches[sdks[25]].mediastore_after is None
    finally:
        w.stop()
