"""Clock offsets: the pure NTP-style estimator and drift fit, then the real exchange over
one persistent adb shell against virtual devices whose wall clocks are skewed by a known
offset and drift (fleet/clock.py, libfaketime)."""
from __future__ import annotations

import random
import time

import pytest

from adbflow.device import AdbServer, Device, ShellResult
from adbflow.fleet.clock import ClockSkew, libfaketime_path
from adbflow.runtime.clock import (
    ClockOffset,
    ClockSample,
    ClockSource,
    ClockTrack,
    estimate,
    parse_device_time,
    percentile,
)
from adbflow.runtime.clocksync import device_script, sync_clock

# ------------------------------------------------------------------ pure

def test_estimate_keeps_the_minimum_rtt_sample_and_bounds_by_half_of_it():
    true_off = 3.25
    samples = [ClockSample(100.0, 100.0 + true_off + 0.004, 100.010),   # asymmetric, slow
               ClockSample(101.0, 101.0 + true_off + 0.0004, 101.001),  # fast
               ClockSample(102.0, 102.0 + true_off + 0.0001, 102.005)]
    est = estimate("s", ClockSource.EPOCHREALTIME, samples)
    assert est.rtt == pytest.approx(0.001)
    assert est.offset == pytest.approx(true_off - 0.0001, abs=1e-9)
    assert est.bound == pytest.approx(0.0005 + 1e-6)
    assert abs(est.offset - true_off) <= est.bound


def test_uptime_source_gets_a_wider_bound_and_is_not_an_epoch_clock():
    s = [ClockSample(10.0, 5.0, 10.001)]
    up = estimate("s", ClockSource.UPTIME, s)
    ep = estimate("s", ClockSource.EPOCHREALTIME, s)
    assert up.bound > ep.bound + 0.009
    assert not ClockSource.UPTIME.is_epoch and ClockSource.DATE_NS.is_epoch


@pytest.mark.parametrize("text,source,want", [
    ("1796115342.652564", ClockSource.EPOCHREALTIME, 1796115342.652564),
    ("1796115389026018258", ClockSource.DATE_NS, 1796115389.026018258),
    ("806.83 869.73", ClockSource.UPTIME, 806.83),
    ("", ClockSource.EPOCHREALTIME, None),                 # mksh without $EPOCHREALTIME
    ("1796115389N", ClockSource.DATE_NS, None),            # old date: no %N
    ("%N", ClockSource.DATE_NS, None),
    ("$(reboot)", ClockSource.EPOCHREALTIME, None),        # untrusted text is not a time
    ("1e309", ClockSource.EPOCHREALTIME, None),
])
def test_parse_device_time_accepts_only_plain_numbers(text, source, want):
    got = parse_device_time(text, source)
    assert (got is None) if want is None else got == pytest.approx(want, abs=1e-6)


def test_track_fits_the_drift_and_maps_device_times_back():
    off0, drift = -4.5, 80e-6
    track = ClockTrack("s")
    for t in (1000.0, 1030.0, 1060.0):
        track.add(ClockOffset("s", ClockSource.EPOCHREALTIME, off0 + drift * (t - 1000.0),
                              0.0003, t, 0.0006, 20))
    assert track.drift_ppm == pytest.approx(80.0, abs=0.5)
    off, bound = track.offset_at(1100.0)   # extrapolated 40 s past the last sync
    assert off == pytest.approx(off0 + drift * 100.0, abs=1e-6)
    assert bound > 0.0003
    host, _ = track.device_to_host(1045.0 + off0 + drift * 45.0)
    assert host == pytest.approx(1045.0, abs=1e-6)


def test_single_sync_assumes_worst_case_drift_in_the_bound():
    track = ClockTrack("s", [ClockOffset("s", ClockSource.DATE_NS, 2.0, 0.001, 50.0, 0.002, 20)])
    assert track.drift_ppm is None
    off, bound = track.offset_at(150.0)
    assert off == 2.0 and bound == pytest.approx(0.001 + 100e-6 * 100.0)


def test_skew_truth_and_faketime_value_are_continuous():
    skew = ClockSkew(offset_s=3.5, drift_ppm=50.0, ref=1000.0)
    assert skew.offset_at(1000.0) == 3.5
    assert skew.offset_at(1100.0) == pytest.approx(3.505)
    assert skew.faketime_value(1100.0) == "+3.505000000 x1.000050000000"


class _FakeShellDevice:
    """A DevicePort-shaped fake (no shell_v2 session): answers `echo $EPOCHREALTIME` with a
    clock 2 s ahead after a random, asymmetric delay; one-shot fallback path."""

    serial = "fake"

    def __init__(self, offset: float) -> None:
        self.offset = offset
        self.rng = random.Random(7)

    def shell(self, cmd: str, *, timeout: float, check: bool = True, **kw) -> ShellResult:
        time.sleep(self.rng.uniform(0, 0.0005))
        out = f"{time.time() + self.offset:.6f}\n" if "EPOCHREALTIME" in cmd else ""
        time.sleep(self.rng.uniform(0, 0.002))
        return ShellResult(self.serial, cmd, 0, out, "", 0.001)


def test_one_shot_fallback_for_devices_without_a_session():
    est = sync_clock(_FakeShellDevice(2.0), samples=10, budget_s=0.2)
    assert est.source is ClockSource.EPOCHREALTIME and est.samples == 10
    assert abs(est.offset - 2.0) <= est.bound


def test_device_script_quotes_nothing_from_outside():
    # the loop is a constant: no device or user text is ever put into it
    assert device_script() == device_script()
    assert "$EPOCHREALTIME" in device_script() and "/proc/uptime" in device_script()


# ------------------------------------------------------------------ fleet

SKEWS = [(3.7, 40.0), (-5.2, -120.0), (8.05, 250.0)]
needs_faketime = pytest.mark.skipif(libfaketime_path() is None,
                                    reason="libfaketime not installed (apt-get install faketime "
                                           "libfaketime): the fleet cannot skew device clocks")


@pytest.fixture(scope="module")
def skewed(fleet_factory):
    if libfaketime_path() is None:
        pytest.skip("libfaketime not installed (apt-get install faketime libfaketime)")
    client = fleet_factory(devices=len(SKEWS))
    truths = {}
    for serial, (off, ppm) in zip(client.serials, SKEWS, strict=False):
        faults = client.fault(serial, clock_offset_s=off, clock_drift_ppm=ppm)["faults"]
        truths[serial] = ClockSkew(faults["clock_offset_s"], faults["clock_drift_ppm"],
                                   faults["clock_ref"])
    yield client, truths
    fleet_factory.release(client)


@pytest.mark.fleet
@needs_faketime
def test_device_date_and_epochrealtime_show_the_injected_offset(skewed):
    client, truths = skewed
    serial = client.serials[1]
    dev = Device(serial, AdbServer(port=client.adb_port))
    t0 = time.time()
    out = dev.shell('echo "$EPOCHREALTIME"; date +%s', timeout=10).stdout.split()
    t1 = time.time()
    truth = truths[serial].offset_at(t1)
    assert t0 + truth - 0.01 <= float(out[0]) <= t1 + truth + 0.01
    assert abs(int(out[1]) - (t1 + truth)) <= 1.5


@pytest.mark.fleet
@needs_faketime
def test_estimated_offsets_within_1ms_p95_of_the_injected_truth(skewed):
    client, truths = skewed
    errors: dict[str, list[float]] = {}
    for _ in range(8):
        for serial in client.serials:
            est = sync_clock(Device(serial, AdbServer(port=client.adb_port)))
            assert est.source is ClockSource.EPOCHREALTIME
            assert est.probe_s <= 0.1 + 0.02          # one exchange may finish past the budget
            err = est.offset - truths[serial].offset_at(est.at)
            errors.setdefault(serial, []).append(abs(err))
            assert abs(err) <= est.bound + 1e-4        # the bound holds (1e-4: scheduling noise)
    for serial, errs in errors.items():
        assert percentile(errs, 95) < 0.001, (serial, errs)


@pytest.mark.fleet
@needs_faketime
def test_resyncs_track_the_injected_drift(skewed):
    client, truths = skewed
    serial = client.serials[2]            # 250 ppm
    dev = Device(serial, AdbServer(port=client.adb_port))
    track = ClockTrack(serial)
    for i in range(4):
        track.add(sync_clock(dev))
        if i < 3:
            time.sleep(1.0)
    # 3 s of baseline and a ~0.3 ms bound: the slope is known to ~±200 ppm; the sign and
    # size are right, and the fitted offset stays on the truth at the last sync
    assert track.drift_ppm is not None and abs(track.drift_ppm - 250.0) < 200.0
    off, bound = track.offset_at(track.syncs[-1].at)
    assert abs(off - truths[serial].offset_at(track.syncs[-1].at)) < max(bound, 0.001)


@pytest.mark.fleet
@needs_faketime
@pytest.mark.parametrize("source", [ClockSource.DATE_NS, ClockSource.UPTIME])
def test_fallback_sources_work_on_the_device_with_their_own_bounds(skewed, source):
    client, truths = skewed
    serial = client.serials[0]
    est = sync_clock(Device(serial, AdbServer(port=client.adb_port)), force=source)
    assert est.source is source
    if source is ClockSource.DATE_NS:
        assert abs(est.offset - truths[serial].offset_at(est.at)) <= est.bound + 1e-4
    else:
        assert est.bound >= 0.01            # 10 ms ticks: the bound says so
        # boot-relative: host now + offset = the device's uptime (a fresh virtual
        # device: seconds to minutes), not its wall clock
        assert 0.0 < time.time() + est.offset < 3600.0


def test_a_stepped_device_clock_restarts_the_track():
    track = ClockTrack("s")
    for t in (0.0, 30.0, 60.0):
        track.add(ClockOffset("s", ClockSource.EPOCHREALTIME, 2.0 + 50e-6 * t, 0.0002, t, 0.0004, 20))
    # the phone's NTP client set its clock: 2 s offset gone at once
    track.add(ClockOffset("s", ClockSource.EPOCHREALTIME, 0.003, 0.0002, 90.0, 0.0004, 20))
    assert track.steps == 1 and len(track.syncs) == 1
    assert track.offset_at(95.0)[0] == pytest.approx(0.003)
    # ordinary drift never looks like a step
    track2 = ClockTrack("s")
    for i in range(40):
        track2.add(ClockOffset("s", ClockSource.EPOCHREALTIME, 2.0 + 120e-6 * i * 60, 0.0003,
                               i * 60.0, 0.0006, 20))
    assert track2.steps == 0 and len(track2.syncs) == track2.keep
    assert track2.drift_ppm == pytest.approx(120.0, abs=1.0)
