"""The bid temperature comes from CPU/SoC zones chosen by type: a Qualcomm BCL zone (battery
percentage as "temp"), battery, skin or PMIC zones never become it; units are normalised;
the probe reads zones in numeric order and, with more than 64, picks them by type; its
output bounds work without `head -c` (Android 7 toybox); thermalservice is asked for every
~30 s per device, not per bid, and its status reaches the bid."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from test_probes_bids import MKSH, TOYBOX, FakeDevice, needs_shells, toybox_path  # noqa: F401

from adbflow.device.probe import probe_script
from adbflow.parsers.thermal import (
    ZoneKind,
    parse_thermal,
    parse_thermal_zones,
    parse_thermalservice,
    zone_kind,
)
from adbflow.scheduling import bids as bids_mod
from adbflow.scheduling.bids import Bidder, thermal_due

FIX = Path(__file__).parent / "fixtures" / "thermal"


def zones(*rows: tuple[str, str]) -> str:
    return "".join(f"thermal_zone{i}\t{t}\t{v}\n" for i, (t, v) in enumerate(rows))


def test_zone_kinds_from_real_type_names() -> None:
    # types from the Sony fixtures (msm8996/msm8998) and Pixel / Samsung / MediaTek phones
    kugo = re.findall(r"^(\S+)$", (FIX / "sony_kugo_XperiaXCompact_pr28_2017_thermal_zone_types"
                                         "_TRUNCATED.txt").read_text(), re.M)
    kinds = {t: zone_kind(t, 35000) for t in kugo}
    assert kinds["bms"] == kinds["battery"] == kinds["xo_therm"] == ZoneKind.OTHER
    assert kinds["tsens_tz_sensor0"] == ZoneKind.SOC
    for t in ("cpu-1-0-usr", "cpuss-0-usr", "cpu0-silver-usr", "mtktscpu", "BIG", "LITTLE",
              "MID", "apc1-cpu0-usr", "x86_pkg_temp", "kryo-l3-0"):
        assert zone_kind(t, 40000) == ZoneKind.CPU, t
    for t in ("gpuss-0-usr", "soc_thermal", "AP", "tsens_tz_sensor12", "aoss0-usr"):
        assert zone_kind(t, 40000) == ZoneKind.SOC, t
    for t in ("bcl-warn", "pm8998-bcl-lvl0", "vbat", "ibat-high", "socd", "smb1390-vbat-lvl1",
              "pmi8998-ibat-lvl0"):
        assert zone_kind(t, 85) == ZoneKind.NOT_TEMP, t
    assert zone_kind("soc", 85) == ZoneKind.NOT_TEMP          # state of charge: 85 %
    assert zone_kind("soc", 41000) == ZoneKind.SOC            # a SoC sensor in millidegrees
    for t in ("battery", "skin-therm", "pm8150_tz", "usb", "pa_therm0", "quiet_therm", "wifi"):
        assert zone_kind(t, 30000) == ZoneKind.OTHER, t


def test_bcl_and_battery_zones_never_become_the_temperature() -> None:
    # a charged Qualcomm phone: `soc` says 85 (percent), bcl levels, a hot battery/skin
    t = parse_thermal_zones(zones(("soc", "85"), ("pm8998-bcl-lvl0", "100"), ("battery", "45000"),
                                  ("skin-therm", "52000"), ("cpu-0-0-usr", "38500"),
                                  ("cpu-1-0-usr", "41200"), ("gpuss-0-usr", "60000")))
    assert [r.temp_c for r in t.readings[:2]] == [None, None]   # levels are not temperatures
    assert t.hottest_c() == 60.0
    assert t.cpu_c() == 41.2                 # CPU zones first, GPU/SoC only without them
    only_soc = parse_thermal_zones(zones(("soc", "85"), ("tsens_tz_sensor1", "44"),
                                         ("tsens_tz_sensor2", "468")))   # degrees, tenths
    assert only_soc.cpu_c() == 46.8
    none = parse_thermal_zones(zones(("soc", "100"), ("bcl-lvl", "1"), ("battery", "30000"),
                                     ("cpu-0-0-usr", "")))            # unreadable CPU zone
    assert none.cpu_c() is None


def test_thermalservice_cpu_entries_and_status() -> None:
    a52 = parse_thermalservice((FIX / "samsung_A52_5G_android12_androidSE_246774_thermalservice"
                                      ".txt").read_text())
    assert a52.status == 0 and a52.cpu_c() == 25.6               # AP (TYPE_CPU), not PA 25.7
    shield = parse_thermal((FIX / "shield_tv_pro_2019_shield_optimizer_issue6_thermalservice_"
                                  "TRUNCATED.txt").read_text())
    assert shield.cpu_c() == 37.0


@pytest.mark.parametrize("junk", [
    "thermal_zone0\tcpu\t99999999999999999999\n",     # absurd: no reading
    "thermal_zone0\tcpu\t-273150\nthermal_zone1\tcpu-1\tNaN\n",
    "thermal_zone0\t$(reboot)\t45000\n",
    "thermal_zone0\tcpu\t1e309\n",
])
def test_hostile_zone_output_gives_no_temperature(junk: str) -> None:
    from adbflow.errors import ParseError
    try:
        t = parse_thermal_zones(junk)
    except ParseError:
        return                              # the probe notes it as a problem; no temperature
    assert t.cpu_c() is None


def _thermal_block() -> str:
    s = probe_script()
    return s[s.index("z=0; k=0; miss=0"):s.index("b=/sys/class/power_supply")]


@needs_shells
def test_probe_reads_zones_in_numeric_order_and_picks_by_type(tmp_path, toybox_path) -> None:
    root = tmp_path / "thermal"
    types = (["battery", "soc", "pm8998-bcl-lvl0", "skin-therm"] +
             [f"pa_therm{i}" for i in range(70)] + ["cpu-0-0-usr", "cpu-1-0-usr"] +
             [f"tsens_tz_sensor{i}" for i in range(80)])
    for i, t in enumerate(types):
        d = root / f"thermal_zone{i}"
        d.mkdir(parents=True)
        (d / "type").write_text(t + "\n")
        (d / "temp").write_text(("85" if t == "soc" else str(30000 + i)) + "\n")
    script = "m() { echo \"=:adbflow:n:$1\"; }\nm thermal\n" + \
        _thermal_block().replace("/sys/class/thermal", str(root)) + "m end\n"
    p = subprocess.run([MKSH, "-c", script], capture_output=True, text=True, timeout=20,
                       env={"PATH": toybox_path})
    assert p.returncode == 0 and p.stderr == "", p.stderr
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("thermal_zone")]
    nums = [int(ln.split("\t")[0][12:]) for ln in lines]
    assert nums == sorted(nums) and len(lines) == 64          # bounded, numeric order
    got = {ln.split("\t")[1] for ln in lines}
    assert {"cpu-0-0-usr", "cpu-1-0-usr", "soc"} <= got       # chosen by type past zone 64
    assert not got & {"battery", "pm8998-bcl-lvl0", "skin-therm", "pa_therm0"}
    t = parse_thermal_zones("\n".join(lines))
    assert t.cpu_c() == pytest.approx((30000 + types.index("cpu-1-0-usr")) / 1000)


@needs_shells
def test_lim_bounds_output_without_head_c(tmp_path, toybox_path) -> None:
    """Android 7.x toybox head has no -c: the probe's lim() falls back to a read loop."""
    old = tmp_path / "old-bin"
    old.mkdir()
    for a in os.listdir(toybox_path):
        if a != "head":
            (old / a).symlink_to(TOYBOX)
    (old / "head").write_text("#!" + MKSH + "\ncase \"$1\" in -c) echo \"head: Unknown option 'c'\" >&2;"
                              " exit 1;; esac\nexec " + TOYBOX + " head \"$@\"\n")
    (old / "head").chmod(0o755)
    s = probe_script()
    lim = s[s.index("lim() {"):s.index("st() {")] if "st() {" in s[s.index("lim() {"):] else ""
    assert lim
    for path in (toybox_path, str(old)):
        p = subprocess.run([MKSH, "-c", lim + "i=0; while [ $i -lt 5000 ]; do "
                            "echo \"line $i of the dumpsys output\"; i=$((i+1)); done | lim 1000"],
                           capture_output=True, text=True, timeout=20, env={"PATH": path})
        assert p.returncode == 0
        assert 900 <= len(p.stdout) <= 1000 and p.stdout.startswith("line 0 of"), path


def test_thermalservice_is_asked_every_30_s_not_per_bid(monkeypatch) -> None:
    mem = bids_mod._Memory()
    assert thermal_due(mem, 100.0)
    mem.thermal_t = 100.0
    assert not thermal_due(mem, 129.0) and thermal_due(mem, 130.0)
    mem.thermal_missing = True                   # Android < 10: retried rarely
    assert not thermal_due(mem, 600.0) and thermal_due(mem, 700.0)

    class Dev(FakeDevice):
        status = 4

        def shell(self, cmd: str, **kw):
            res = super().shell(cmd, **kw)
            if cmd.split("\n", 1)[0].split()[6] == "1":
                nonce = cmd.split()[2]
                text = res.stdout.replace(f"=:adbflow:{nonce}:end", (
                    f"=:adbflow:{nonce}:thermalservice\nThermal Status: {self.status}\n"
                    "Current temperatures from HAL:\n\tTemperature{mValue=71.5, mType=0, "
                    f"mName=CPU0, mStatus={self.status}}}\n=:adbflow:{nonce}:end"))
                res = type(res)(res.serial, res.cmd, 0, text, "", res.elapsed_s)
            return res

    monkeypatch.setattr("adbflow.scheduling.bids.MIN_WINDOW_S", 0.0)
    dev = Dev("T", 30)
    bidder = Bidder()
    b1 = bidder.bid(dev)
    assert b1.thermal_status == 4                          # critical: the policy's exclusion
    dev.status = 0
    b2 = bidder.bid(dev)
    assert b2.thermal_status == 4                          # cached: no dumpsys this bid
    assert [c.split("\n", 1)[0].split()[6] for c in dev.calls] == ["1", "0"]
