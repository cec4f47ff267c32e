"""Helpers shared by the virtual-fleet pipeline tests (test_pipeline_fleet, test_fault_suite,
test_hostile): one module-scoped fleet per test module, a fixture that leaves every device
healthy after each test, cheap profiles, and the small adb/journal conveniences.

Why a module and not conftest.py: only these three modules use them, and each names its
own fleet size; `module_fleet(...)` builds the fixture, `healthy` is imported by name.
"""
from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from adbflow.device import AdbServer, Device, Inventory
from adbflow.paths import ASSETS_DIR, PROFILES_DIR
from adbflow.runtime.journal import FINAL_STATES, Journal

CHELSEA = ASSETS_DIR / "chelsea.png"
COFFEE = ASSETS_DIR / "coffee.png"
#: fleet.snap(..., **PICTURES_APP): an app writing Pictures/ through the File API (it
#: renames its own .pending- file, so inotify sees the final name). The pipeline watches
#: only Pictures today; camera-style snaps (DCIM/Camera, MediaStore publish) need the
#: detection of issue 13 (phones-host), then these tests can use the default camera.
PICTURES_APP = {"directory": "Pictures", "publish": "file"}
CAT_WORDS = ("cat", "lynx", "tabby")
COFFEE_WORDS = ("cup", "espresso", "coffee", "mug")


def module_fleet(devices: int, profiles: list[str]):
    """A module-scoped `fleet` fixture: `fleet = module_fleet(3, ["midrange_2023"])`."""
    @pytest.fixture(scope="module")
    def fleet(fleet_factory):
        """A private virtual fleet shared by the module's tests (started once)."""
        client = fleet_factory(devices=devices, profiles=profiles)
        yield client
        fleet_factory.release(client)
    return fleet


def restore_devices(fleet) -> None:
    """Every device back online, without faults and without extra load."""
    for s in fleet.serials:
        if fleet.adb_states().get(s) != "device":
            fleet.restart(s)
        fleet.clear_faults(s)
        fleet.load(s, 0)


@pytest.fixture
def healthy(fleet):
    """Every test starts with healthy devices (as loaded as it says) and leaves them so."""
    yield fleet
    restore_devices(fleet)


def cheap_profiles(dst: Path, n_predict: int = 16) -> Path:
    """profiles/ copied with a short generation for the virtual fleet (same binaries/models)."""
    shutil.copytree(PROFILES_DIR, dst)
    vf = dst / "virtual_fleet.toml"
    text, n = re.subn(r"(?m)^n_predict\s*=\s*\d+", f"n_predict = {n_predict}", vf.read_text())
    assert n >= 1, "virtual_fleet.toml has no n_predict to shorten"
    vf.write_text(text)
    return dst


def inventory(fleet) -> Inventory:
    return Inventory([AdbServer(port=fleet.adb_port)])


def device(fleet, serial: str) -> Device:
    return Device(serial, AdbServer(port=fleet.adb_port))


def labels_of(job) -> str:
    """The job's labels as one string (for `"cat" in labels_of(job)`)."""
    return " ".join(lb["name"] for lb in (job.result or {}).get("labels", []))


def wait_final(journal: Journal, n: int, timeout: float, *, poll_s: float = 0.5,
               abort: Callable[[], bool] = lambda: False,
               final: tuple[str, ...] = FINAL_STATES) -> bool:
    """Wait until the journal holds >= n jobs, all in a `final` state; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not abort():
        jobs = journal.jobs(limit=None)
        if len(jobs) >= n and all(j.state in final for j in jobs):
            return True
        time.sleep(poll_s)
    return False
