"""Energy per job: the pure estimator (units, sign, frozen counters, gauge lag), and the
meter against the fleet's battery model (truth = the model's own ∫V·I dt), each injected
driver quirk flagged, USB charging noted."""
from __future__ import annotations

import time

import pytest

from adbflow.fleet.battery import GAUGE_PERIOD_S, BatteryModel, load_current_a
from adbflow.runtime.energy import (
    PowerSample,
    counter_frozen,
    detect_units,
    energy_report,
    gauge_period,
    integrate,
)
from adbflow.runtime.energymeter import parse_sample


def _gauge_samples(model: BatteryModel, busy_at, t_end: float, dt: float = 0.05,
                   tick: float = 0.1):
    """Drive the model with ticks and read its gauge every dt, like the meter does."""
    out, t, next_tick = [], 0.0, 0.0
    while t <= t_end + 1e-9:
        while next_tick <= t + 1e-9:
            model.step(next_tick, busy_at(next_tick))
            next_tick += tick
        g = model.gauge
        out.append(PowerSample(t, g["current_now"], g["voltage_now"], g["charge_counter"],
                               model.usb_online, model.status))
        t += dt
    return out


def _busy(t: float) -> float:
    """90 % busy from 2 s to 4 s, idle-ish around it."""
    return 0.9 if 2.0 <= t < 4.0 else 0.05


def _run(quirks=frozenset(), usb=False):
    m = BatteryModel(level_pct=70.0, usb_online=usb, quirks=frozenset(quirks))
    smp = _gauge_samples(m, _busy, 6.5)
    return m, smp


def test_model_truth_and_estimate_agree_within_5_percent():
    _m, smp = _run()
    # truth over [1, 3.5]: re-run a model to read energy_at at the window edges
    m2 = BatteryModel(level_pct=70.0, usb_online=False)
    busy = _busy
    t, e = 0.0, {}
    while t <= 6.5 + 1e-9:
        m2.step(t, busy(t))
        e[round(t, 1)] = m2.energy_at(t)
        t += 0.1
    truth = e[4.5] - e[2.0]
    base = [s for s in smp if s.t < 2.0]
    win = [s for s in smp if s.t >= 2.0]
    rep = energy_report(base, win, 2.0, 4.5)
    assert rep.gross_j == pytest.approx(truth, rel=0.05)
    assert rep.baseline_w == pytest.approx(load_current_a(0.05) * 3.99, rel=0.05)
    assert rep.gauge_period_s == pytest.approx(GAUGE_PERIOD_S, abs=0.11)   # ticks of 0.1 s
    assert rep.flags == [] and not rep.usb_charging
    assert rep.counter_j == pytest.approx(truth, rel=0.1)


@pytest.mark.parametrize("quirk,needle", [("ma", "mA"), ("reversed", "reversed"),
                                          ("frozen", "frozen"), ("mv", "mV")])
def test_each_quirk_is_flagged_and_corrected(quirk, needle):
    _m, clean = _run()
    _q, quirky = _run({quirk})
    ref = energy_report([s for s in clean if s.t < 2], [s for s in clean if s.t >= 2], 2.0, 4.5)
    rep = energy_report([s for s in quirky if s.t < 2], [s for s in quirky if s.t >= 2], 2.0, 4.5)
    assert any(needle in f for f in rep.flags), rep.flags
    assert rep.gross_j == pytest.approx(ref.gross_j, rel=0.02)
    if quirk == "frozen":
        assert rep.counter_j is None


def test_usb_charging_is_noted_and_only_net_energy_reported():
    _m, smp = _run(usb=True)
    rep = energy_report([s for s in smp if s.t < 2], [s for s in smp if s.t >= 2], 2.0, 4.5)
    assert rep.usb_charging and rep.gross_j is None and any("USB" in f for f in rep.flags)
    _m2, unplugged = _run()
    ref = energy_report([s for s in unplugged if s.t < 2], [s for s in unplugged if s.t >= 2],
                        2.0, 4.5)
    assert rep.net_j == pytest.approx(ref.net_j, rel=0.1)


def test_units_sign_and_counter_rules_on_raw_numbers():
    s = [PowerSample(i * 0.25, -400_000 - i, 3_900_000, 1000, False, "Discharging")
         for i in range(8)]
    u = detect_units(s)
    assert (u.current_a, u.voltage_v, u.sign, u.flags) == (1e-6, 1e-6, 1, ())
    assert counter_frozen(s, u) is False or True      # 0.7 s of 0.4 A = 78 µAh: too little to tell
    long = [PowerSample(i * 0.25, -1_500_000, 3_900_000, 1000, False) for i in range(40)]
    assert counter_frozen(long, detect_units(long))
    assert gauge_period([PowerSample(t, c, 1, 1) for t, c in
                         ((0, 1), (0.1, 1), (0.2, 2), (0.3, 2), (0.45, 3), (0.6, 4))]) == \
        pytest.approx(0.2, abs=0.06)
    assert integrate([], 0, 1, u) is None


def test_parse_sample_accepts_only_integers():
    assert parse_sample("P -398000 4068225 3959893 0 Discharging", 1.0) == \
        PowerSample(1.0, -398000, 4068225, 3959893, False, "Discharging")
    smp = parse_sample("P $(reboot) 1e309 - 1 Not charging<script>", 2.0)
    assert smp is not None and smp.current is None and smp.voltage is None and smp.counter is None
    assert smp.status == "Not chargingscript"
    assert parse_sample("garbage", 0.0) is None


# ------------------------------------------------------------------ fleet

@pytest.fixture(scope="module")
def battery_fleet(fleet_factory):
    client = fleet_factory(devices=1)
    yield client
    fleet_factory.release(client)


def _metered(fleet, serial, *, quirks="", usb=False, busy_s=2.0):
    from adbflow.device import AdbServer, Device
    from adbflow.runtime.energymeter import EnergyMeter

    fleet.fault(serial, battery_usb=usb, battery_quirks=quirks)
    fleet.load(serial, 0)
    time.sleep(1.5)              # one gauge update after (un)plugging: a steady baseline
    meter = EnergyMeter(Device(serial, AdbServer(port=fleet.adb_port))).start()
    meter.mark_start()
    e0 = fleet.call("model", serial=serial)["battery_energy_j"]
    fleet.load(serial, 90)
    time.sleep(busy_s)
    fleet.load(serial, 0)
    e1 = fleet.call("model", serial=serial)["battery_energy_j"]
    rep = meter.stop()
    return rep, e1 - e0


@pytest.mark.fleet
def test_energy_of_a_busy_window_is_within_10_percent_of_the_model(battery_fleet):
    serial = battery_fleet.serials[0]
    rep, truth = _metered(battery_fleet, serial)
    assert rep.gross_j is not None and rep.gross_j == pytest.approx(truth, rel=0.10), (rep, truth)
    assert rep.baseline_w and rep.net_j and 0 < rep.net_j < rep.gross_j
    assert rep.gauge_period_s == pytest.approx(GAUGE_PERIOD_S, abs=0.15)  # measured, not assumed
    assert rep.sample_period_s >= 0.05 and rep.flags == []


@pytest.mark.fleet
@pytest.mark.parametrize("quirk,needle", [("ma", "mA"), ("reversed", "reversed"),
                                          ("frozen", "frozen")])
def test_injected_quirks_are_flagged_on_the_fleet(battery_fleet, quirk, needle):
    serial = battery_fleet.serials[0]
    try:
        rep, truth = _metered(battery_fleet, serial, quirks=quirk, busy_s=1.5)
    finally:
        battery_fleet.clear_faults(serial)
    assert any(needle in f for f in rep.flags), rep.flags
    assert rep.gross_j == pytest.approx(truth, rel=0.10)


@pytest.mark.fleet
def test_usb_power_is_noted_on_the_fleet(battery_fleet):
    serial = battery_fleet.serials[0]
    try:
        rep, _truth = _metered(battery_fleet, serial, usb=True, busy_s=1.0)
    finally:
        battery_fleet.clear_faults(serial)
    assert rep.usb_charging and rep.gross_j is None and rep.net_j and rep.net_j > 0


@pytest.mark.fleet
def test_a_pipeline_job_stores_energy_per_stage_within_10_percent(battery_fleet, tmp_path,
                                                                  monkeypatch):
    """`adbflow run --energy`: each device stage attempt carries its energy in the journal,
    `adbflow show` prints it, and it matches the model over the meter's own window."""
    import os
    import subprocess
    import sys

    from fleet_helpers import CHELSEA, cheap_profiles

    from adbflow.device import AdbServer, Inventory
    from adbflow.runtime import energymeter
    from adbflow.runtime.pipeline import Pipeline, PipelineConfig

    fleet = battery_fleet
    serial = fleet.serials[0]
    fleet.fault(serial, battery_usb=False)
    time.sleep(2.5)      # faults reach the gauge within a second, its next update a second on
    truth: list[dict[str, float]] = []
    real_mark, real_stop = energymeter.EnergyMeter.mark_start, energymeter.EnergyMeter.stop

    def model() -> dict:
        return {**fleet.call("model", serial=serial), "t": time.time()}

    # test instrumentation: the model's truth at the meter's own window edges
    def mark(self):
        t = real_mark(self)
        truth.append({"start": model()})
        return t

    def stop(self):
        truth[-1]["t1"] = model()
        rep = real_stop(self)
        truth[-1]["end"] = model()
        return rep

    monkeypatch.setattr(energymeter.EnergyMeter, "mark_start", mark)
    monkeypatch.setattr(energymeter.EnergyMeter, "stop", stop)
    data = tmp_path / "data"
    p = Pipeline(PipelineConfig(data_dir=data, energy=True,
                                profiles_dir=cheap_profiles(tmp_path / "profiles")),
                 Inventory([AdbServer(port=fleet.adb_port)]))
    try:
        job = p.run_image(CHELSEA)
        assert job.state == "done", job.error
        atts = {a.stage: a for a in p.journal.attempts(job.id) if a.state == "done"}
    finally:
        p.close()
        fleet.clear_faults(serial)
    truths = [w["t1"]["battery_energy_j"] - w["start"]["battery_energy_j"] for w in truth]
    for stage, want in zip(("classify", "generate"), truths, strict=True):
        e = atts[stage].output["energy"]
        assert e["gross_j"] == pytest.approx(want, rel=0.10), (stage, e, want)
        assert e["baseline_w"] > 0
        assert not [f for f in e["flags"] if "mA" in f or "reversed" in f or "charge_counter" in f]
    env = {k: v for k, v in os.environ.items() if k != "ANDROID_SERIAL"}
    res = subprocess.run([sys.executable, "-m", "adbflow.cli", "show", str(job.id),
                          "--data-dir", str(data)], capture_output=True, text=True, timeout=60,
                         env=env)
    assert res.returncode == 0 and "energy" in res.stdout and " J" in res.stdout, res.stdout
