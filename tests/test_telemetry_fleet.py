"""Live telemetry on a virtual fleet behind a real adb server: streamed bids follow the set
load, a stalled loop (SIGSTOP on the phone) or a lost device is restarted with backoff and
bids fall back to one-shot probes meanwhile, and nothing stays running once adbflow exits
(`ps -A` on every device)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest
from fleet_helpers import (
    device,
    healthy,  # noqa: F401 - a fixture, found by name
    inventory,
    module_fleet,
)

from adbflow.scheduling import telemetry as tel
from adbflow.scheduling.bids import Bidder
from adbflow.scheduling.telemetry import Telemetry

pytestmark = pytest.mark.fleet

fleet = module_fleet(2, ["midrange_2023"])


def loop_pids(fleet, serial: str) -> list[int]:
    """PIDs of telemetry loops on a device (its `sh -c set -- NONCE 0 0 1 ...` shell)."""
    res = device(fleet, serial).run(["ps", "-A", "-o", "PID,ARGS"], timeout=20)
    return [int(ln.split()[0]) for ln in res.stdout.splitlines()[1:]
            if "read -t" in ln and "=:adbflow:" in ln]


def wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_streamed_bids_follow_the_load_and_carry_their_age(healthy) -> None:
    fleet = healthy
    devs = inventory(fleet).devices()
    fleet.load(devs[0].serial, 70)
    with Bidder(timeout=10, telemetry=Telemetry(interval_s=0.3, max_age_s=0.5)) as bidder:
        first = bidder.gather(devs)
        assert {b.source for b in first} == {"probe"}          # streams start meanwhile
        wait_for(lambda: {b.source for b in bidder.gather(devs)} == {"stream"}, 15,
                 "streamed bids")
        time.sleep(1.0)
        bids = {b.serial: b for b in bidder.gather(devs)}
        assert all(b.ok and b.age_s is not None and b.age_s <= 0.5 + 1.0 for b in bids.values())
        assert bids[devs[0].serial].cpu_load > bids[devs[1].serial].cpu_load + 30
        assert all(b.model and "midrange_2023" in b.model for b in bids.values())
        assert all(len(loop_pids(fleet, d.serial)) == 1 for d in devs)    # one loop each
    wait_for(lambda: all(loop_pids(fleet, d.serial) == [] for d in devs), 5,
             "closed streams to end their loops")                        # closed: gone


def test_requested_samples_are_light_and_bids_keep_the_full_parts(healthy) -> None:
    """The real mksh loop: a request line gets probe.sh LIGHT (stat, meminfo, leases only);
    the bid still shows the thermal zones and battery of the last full sample."""
    fleet = healthy
    devs = inventory(fleet).devices()
    # a generous request timeout: this is about what a requested sample holds, not how fast
    # it comes (a parallel test run once took more than the default 1 s: a probe then)
    telemetry = Telemetry(interval_s=30.0, max_age_s=0.0, request_timeout_s=10.0)
    with Bidder(timeout=10, telemetry=telemetry) as bidder:
        for d in devs:
            telemetry.stream(d)
        wait_for(lambda: all(telemetry.stream(d).latest() is not None for d in devs), 15,
                 "first samples")
        full = {d.serial: telemetry.stream(d).latest().report for d in devs}
        assert not any(r.light for r in full.values())
        assert all(r.freqs and r.battery_level is not None for r in full.values())
        bids = bidder.gather(devs)
        assert all(b.ok and b.source == "stream" for b in bids)
        for d in devs:
            rep = telemetry.stream(d).latest().report
            assert rep.light
            assert rep.freqs == full[d.serial].freqs and rep.battery_level is not None
        assert all(b.battery_level is not None and b.cpu_load is not None for b in bids)


def test_a_stalled_loop_is_restarted_and_bids_fall_back(healthy, monkeypatch) -> None:
    fleet = healthy
    monkeypatch.setattr(tel, "BACKOFF_START_S", 0.2)
    devs = inventory(fleet).devices()
    target = devs[0]
    telemetry = Telemetry(interval_s=0.3, max_age_s=0.2, request_timeout_s=0.5)
    with Bidder(timeout=10, telemetry=telemetry) as bidder:
        bidder.gather(devs)
        wait_for(lambda: {b.source for b in bidder.gather(devs)} == {"stream"}, 15,
                 "streamed bids")
        [pid] = loop_pids(fleet, target.serial)
        target.run(["kill", "-STOP", str(pid)], timeout=10)
        time.sleep(0.5)                              # the cached sample is now too old
        # while stalled: requests time out, the bid is a one-shot probe, still ok
        b = next(x for x in bidder.gather(devs) if x.serial == target.serial)
        assert b.ok and b.source == "probe"
        wait_for(lambda: telemetry.status()[target.serial]["restarts"] >= 1, 15, "a restart")
        assert "stalled" in (telemetry.status()[target.serial]["error"] or "")
        wait_for(lambda: next(x for x in bidder.gather(devs)
                              if x.serial == target.serial).source == "stream", 15,
                 "the restarted stream")
        assert pid not in loop_pids(fleet, target.serial)          # the stopped one was killed
    wait_for(lambda: all(loop_pids(fleet, d.serial) == [] for d in devs), 5,
             "closed streams to end their loops")


def test_nothing_left_running_after_adbflow_exits(healthy) -> None:
    """A separate adbflow process bids from streams, then exits without closing anything
    (as on Ctrl-C): the adb connections drop and the phones kill the loops."""
    fleet = healthy
    code = textwrap.dedent(f"""
        import time
        from adbflow.device import AdbServer, Inventory
        from adbflow.scheduling.bids import Bidder
        from adbflow.scheduling.telemetry import Telemetry
        devs = Inventory([AdbServer(port={fleet.adb_port})]).devices()
        b = Bidder(timeout=10, telemetry=Telemetry(interval_s=0.3))
        b.gather(devs)
        for _ in range(100):
            if {{x.source for x in b.gather(devs)}} == {{"stream"}}:
                print("streaming", flush=True)
                break
            time.sleep(0.1)
        time.sleep(30)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ})
    try:
        assert proc.stdout.readline().strip() == "streaming"
        assert all(len(loop_pids(fleet, s)) == 1 for s in fleet.serials)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    wait_for(lambda: all(loop_pids(fleet, s) == [] for s in fleet.serials), 10,
             "the loops to end on every device")
