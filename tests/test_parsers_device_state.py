"""Parsers of device state over every real fixture of their kind, plus fuzzing.

Each fixture test pins values read by hand from the file, so a parser that returns
something plausible-but-wrong fails."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adbflow.errors import ParseError
from adbflow.parsers.battery import parse_dumpsys_battery
from adbflow.parsers.cpuinfo import parse_dumpsys_cpuinfo
from adbflow.parsers.getprop import parse_getprop
from adbflow.parsers.meminfo import parse_meminfo
from adbflow.parsers.proc_stat import cpu_load, parse_proc_stat, parse_proc_stat_snapshots
from adbflow.parsers.sysfs import freq_ratio, parse_cpu_list, parse_cpufreq, parse_power_supply
from adbflow.parsers.thermal import normalize_temp, parse_thermal

FIX = Path(__file__).parent / "fixtures"


def files(kind: str, pattern: str = "*.txt") -> list[Path]:
    found = sorted((FIX / kind).glob(pattern))
    assert found, kind
    return found


def text(p: Path) -> str:
    return p.read_text(encoding="utf-8", errors="replace")


# ---------------------------------------------------------------- /proc/stat
PROC_STAT = {  # file -> (#snapshots, #per-cpu lines, cpu0 user of the first snapshot)
    "LINUX_not_android_below_issue8190_after_cpu2_offline.txt": (1, 3, 26136),
    "UNATTRIBUTED_HWCOL_Honor10_two_snapshots_irq_zero_elided.txt": (2, 8, 5818716),
    "UNATTRIBUTED_OnePlus7T_SM8150_cpu_lines_only.txt": (1, 8, 3045634),
    "UNATTRIBUTED_cepheus_Mi9_cpu_lines_only.txt": (1, 8, 261151),
    "perfetto_sys_stats_unittest_kMockStat_8core_android.txt": (1, 8, 762178),
}


def test_proc_stat_fixture_table_is_complete():
    assert {p.name for p in files("proc_stat")} == set(PROC_STAT)


@pytest.mark.parametrize("path", files("proc_stat"), ids=lambda p: p.name[:40])
def test_proc_stat_every_fixture(path):
    snaps, ncpu, user0 = PROC_STAT[path.name]
    got = parse_proc_stat_snapshots(text(path))
    assert len(got) == snaps
    assert len(got[0].per_cpu) == ncpu
    assert got[0].per_cpu[0].user == user0
    assert got[0].total.total > got[0].total.idle_all


def test_proc_stat_offline_cpu_is_absent():
    s = parse_proc_stat(text(FIX / "proc_stat/LINUX_not_android_below_issue8190_after_cpu2_offline.txt"))
    assert sorted(s.per_cpu) == [0, 1, 3]


def test_proc_stat_delta_between_real_snapshots():
    a, b = parse_proc_stat_snapshots(text(FIX / "proc_stat/UNATTRIBUTED_HWCOL_Honor10_two_snapshots_irq_zero_elided.txt"))
    load = cpu_load(a, b)
    # aggregate: busy delta = 91+239+76+0+0+5 = 411, idle delta = 1566+1 -> 411/1978
    assert load.cpu_load == pytest.approx(100 * 411 / 1978, abs=0.01)
    assert load.per_core[7] == pytest.approx(0.0)           # cpu7 only idled
    assert load.per_core[4] == pytest.approx(100 * 155 / (155 + 94))
    assert cpu_load(b, a) is None                               # backwards counters: unknown


def test_proc_stat_rejects_garbage():
    with pytest.raises(ParseError):
        parse_proc_stat("intr 1 2 3\nctxt 5\n")


# ---------------------------------------------------------------- meminfo
MEMINFO = {  # file -> (total, available, estimated?)
    "almindor_lighthouse_issue23_xperia_xa2plus_sailfish_first3_lines.txt": (3730976, 2436460, False),
    "aosp_ddmuilib_BugReportParserTest_meminfo_eclair_fragment.txt": (516528, 401036, True),
    "perfetto_sys_stats_unittest_kMockMeminfo_android_3.7GB_CmaTotal.txt": (3744240, 629896, False),
    "proc_meminfo_awesomeadb_armv7_1GB.txt": (1027424, 486564 + 15224 + 72464, True),
}


def test_meminfo_fixture_table_is_complete():
    assert {p.name for p in files("meminfo")} == set(MEMINFO)


@pytest.mark.parametrize("path", files("meminfo"), ids=lambda p: p.name[:40])
def test_meminfo_every_fixture(path):
    total, avail, est = MEMINFO[path.name]
    m = parse_meminfo(text(path))
    assert (m.total_kb, m.available_kb, m.available_estimated) == (total, avail, est)


def test_meminfo_keeps_cma_and_parenthesised_names():
    m = parse_meminfo(text(FIX / "meminfo/perfetto_sys_stats_unittest_kMockMeminfo_android_3.7GB_CmaTotal.txt"))
    assert m.fields["CmaFree"] == 60 and m.fields["Active(anon)"] == 1322636


# ---------------------------------------------------------------- dumpsys cpuinfo
CPUINFO = {  # file -> (load1, [(span_ms, rows, threads, total pct)])
    "UNATTRIBUTED_huawei_2024_bugreport_section_elided.txt": (5.64, [(22031, 11, 0, 25.0)]),
    "UNATTRIBUTED_xiaomi_android11_2021_ANR_logcat_excerptA_header.txt": (0.13, [(5796, 7, 0, None)]),
    "UNATTRIBUTED_xiaomi_android11_2021_ANR_logcat_excerptB_tail_two_windows.txt":
        (None, [(None, 20, 0, 14.0), (398, 14, 6, 8.9)]),
    "aosp_ddmuilib_BugReportParserTest_eclair_android2.1.txt": (0.53, [(5182, 3, 0, 98.0)]),
    "csdn_lindroid_90904947_2019_plus0_no_irq.txt": (0.72, [(565669, 21, 0, 17.0)]),
    "stackoverflow_40186347_android_wear_2016_no_TOTAL.txt": (4.03, [(7140, 6, 0, None)]),
}


def test_cpuinfo_fixture_table_is_complete():
    assert {p.name for p in files("cpuinfo_dumpsys")} == set(CPUINFO)


@pytest.mark.parametrize("path", files("cpuinfo_dumpsys"), ids=lambda p: p.name[:40])
def test_cpuinfo_every_fixture(path):
    load1, windows = CPUINFO[path.name]
    d = parse_dumpsys_cpuinfo(text(path))
    assert (d.load_avg[0] if d.load_avg else None) == load1
    got = [(w.span_ms, len(w.rows), sum(r.thread for r in w.rows), w.total.pct if w.total else None)
           for w in d.windows]
    assert got == windows


def test_cpuinfo_row_details():
    d = parse_dumpsys_cpuinfo(text(FIX / "cpuinfo_dumpsys/UNATTRIBUTED_huawei_2024_bugreport_section_elided.txt"))
    long = [r for r in d.windows[0].rows if r.pid == 26561][0]
    assert long.name.startswith("com.huawei.webview:sandboxed_process0:org.chromium")
    assert (long.pct, long.user_pct, long.kernel_pct) == (5.1, 2.9, 2.1)
    t = d.windows[0].total
    assert (t.iowait_pct, t.irq_pct, t.softirq_pct) == (0.1, 2.2, 0.5)
    b = parse_dumpsys_cpuinfo(text(FIX / "cpuinfo_dumpsys/UNATTRIBUTED_xiaomi_android11_2021_ANR_logcat_excerptB_tail_two_windows.txt"))
    names = [r.name for r in b.windows[0].rows]
    assert "android.hardware.health@2.1-service" in names      # the logcat-prefixed row
    posix = [r for r in b.windows[1].rows if r.pid == 28191][0]
    assert posix.name == "POSIX timer 269" and posix.thread
    old = parse_dumpsys_cpuinfo(text(FIX / "cpuinfo_dumpsys/aosp_ddmuilib_BugReportParserTest_eclair_android2.1.txt"))
    assert old.windows[0].rows[0].name == "system_server" and old.windows[0].rows[0].pct == 56
    assert old.total_pct == 98.0


# ---------------------------------------------------------------- battery
BATTERY = {  # file -> (level, charging, temp_c, voltage)
    "appium-adb_issue133_2016_ac_powered_zero_voltage_temp.txt": (89, True, None, None),
    "dumpsys_battery_awesomeadb_2016.txt": (44, True, 28.0, 3872),
    "samsung_2023_zebrunner_mcloud-device_issue150_vendor_fields.txt": (100, True, 30.9, 4312),
}


def test_battery_fixture_table_is_complete():
    assert {p.name for p in files("battery")} == set(BATTERY)


@pytest.mark.parametrize("path", files("battery"), ids=lambda p: p.name[:40])
def test_battery_every_fixture(path):
    b = parse_dumpsys_battery(text(path))
    assert (b.level, b.charging, b.temperature_c, b.voltage_mv) == BATTERY[path.name]


def test_battery_samsung_vendor_fields_do_not_override():
    b = parse_dumpsys_battery(text(FIX / "battery/samsung_2023_zebrunner_mcloud-device_issue150_vendor_fields.txt"))
    assert b.status == 5 and b.powered is True
    assert b.fields["Charge counter"] == "2967000" and b.fields["LLB MAN"] == ""


def test_battery_discharging_and_garbage():
    b = parse_dumpsys_battery("Current Battery Service state:\n  AC powered: false\n  USB powered: false\n"
                              "  status: 3\n  level: 7\n  scale: 100\n  temperature: 412\n")
    assert (b.level, b.charging, b.temperature_c) == (7, False, 41.2)
    with pytest.raises(ParseError):
        parse_dumpsys_battery("Can't find service: battery\n")


# ---------------------------------------------------------------- thermal
def test_thermal_every_fixture():
    got = {p.name: parse_thermal(text(p)) for p in files("thermal")}
    a52 = got["samsung_A52_5G_android12_androidSE_246774_thermalservice.txt"]
    assert a52.status == 0 and len(a52.readings) == 9
    assert {r.name: r.temp_c for r in a52.readings}["AP"] == 25.6 and a52.hottest_c() == 25.7
    shield = got["shield_tv_pro_2019_shield_optimizer_issue6_thermalservice_TRUNCATED.txt"]
    assert shield.status == 0 and shield.hottest_c() == 37.0 and len(shield.readings) == 5
    kugo = got["sony_kugo_XperiaXCompact_pr28_2017_thermal_zone_types_TRUNCATED.txt"]
    assert [r.name for r in kugo.readings][:3] == ["bms", "battery", "pa_therm1"] and len(kugo.readings) == 15
    assert kugo.hottest_c() is None                             # types only, no temps
    lilac = got["sony_lilac_XZ1Compact_pr3_2017_root_shell_thermal_zone_types_TRUNCATED.txt"]
    assert lilac.readings[16].name == "tsens_tz_sensor7"        # numbering gap kept
    assert len(got) == 4


def test_thermal_probe_zone_lines_and_units():
    t = parse_thermal("thermal_zone0\tcpu-1-0-usr\t45300\nthermal_zone1\tbattery\t312\n"
                      "thermal_zone2\tpa\t38\nthermal_zone3\tbroken\t\n")
    assert [r.temp_c for r in t.readings] == [45.3, 31.2, 38.0, None]
    assert normalize_temp(-5000) == -5.0 and normalize_temp(999999) is None
    with pytest.raises(ParseError):
        parse_thermal("nothing here\n")


# ---------------------------------------------------------------- getprop
def test_getprop_every_fixture():
    fl = parse_getprop(text(FIX / "getprop/flutter_issue4009_nexus5_hammerhead_5.1_userdebug_indented_TRUNCATED.txt"))
    assert fl["ro.build.date"] == "Tue Jan  6 22:40:00 UTC 2015"
    assert fl["ro.boot.hardware"] == "hammerhead"
    em = parse_getprop(text(FIX / "getprop/native-run_issue45_emulator_android_P_preview_ranchu_TRUNCATED.txt"))
    assert em["ro.build.version.base_os"] == "" and em["ro.build.version.release"] == "P"
    assert em["ro.hardware"] == "ranchu"
    assert len(files("getprop")) == 2
    with pytest.raises(ParseError):
        parse_getprop("/system/bin/sh: getprop: not found\n")


# ---------------------------------------------------------------- sysfs cpu lists
def _tsv_rows():
    rows = []
    for line in (FIX / "sys_cpu/sys_devices_system_cpu_pytorch_cpuinfo_mocks.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        rows.append(line.split("\t"))
    return rows


def test_cpu_list_every_tsv_value():
    rows = _tsv_rows()
    assert len(rows) == 82
    for dev, _kmax, possible, present, online, offline in rows:
        parsed = {}
        for name, raw in (("possible", possible), ("present", present), ("online", online),
                          ("offline", offline)):
            if raw == "-":
                continue
            parsed[name] = parse_cpu_list(raw.replace("\\n", "\n"))
        if "online" in parsed and "present" in parsed:
            assert set(parsed["online"]) <= set(parsed["possible"]), dev


def test_cpu_list_raw_files():
    got = {p.name.split("__")[0] + ":" + p.stem.rsplit("_", 1)[1]: parse_cpu_list(text(p))
           for p in files("sys_cpu")}
    assert len(got) == 24
    assert got["alcatel-revvl:present"] == [0, 4, 5, 6, 7] and got["alcatel-revvl:online"] == [4, 5, 6]
    assert got["meizu-pro-6:online"] == [4, 8]
    assert got["pixel-8:offline"] == [] and got["pixel-8:possible"] == list(range(9))
    assert got["galaxy-c9-pro:online"] == [0, 1, 2, 3, 4, 5, 7]
    with pytest.raises(ParseError):
        parse_cpu_list("0-x")
    with pytest.raises(ParseError):
        parse_cpu_list("5-2")


def test_cpufreq_and_power_supply():
    f = parse_cpufreq("cpu0 300000 1800000\ncpu1 1800000 1800000\ncpu2  \ncpu10 2400000 2400000\n")
    assert f[2].cur_khz is None and f[10].max_khz == 2400000
    assert freq_ratio(f) == pytest.approx((1 / 6 + 1 + 1) / 3)
    assert freq_ratio(f, online=[0]) == pytest.approx(1 / 6)
    assert freq_ratio({}) is None
    ps = parse_power_supply("capacity=57\nstatus=Discharging\ntemp=315\n")
    assert (ps.level, ps.charging, ps.temperature_c) == (57, False, 31.5)
    with pytest.raises(ParseError):
        parse_power_supply("status=Full\n")


# ---------------------------------------------------------------- fuzz: only ParseError
PARSERS = [parse_proc_stat, parse_meminfo, parse_dumpsys_cpuinfo, parse_dumpsys_battery,
           parse_thermal, parse_getprop, parse_cpu_list, parse_power_supply, parse_cpufreq]
_alphabet = st.sampled_from(list("cpu0123456789 \t\n:%-/+.,[]=kBTOTALuserkernelTemperature{mValue=}"))


@pytest.mark.parametrize("parser", PARSERS, ids=lambda f: f.__name__)
@settings(max_examples=150, deadline=None)
@given(data=st.one_of(st.text(max_size=300), st.lists(_alphabet, max_size=300).map("".join)))
def test_parsers_raise_only_parse_error(parser, data):
    try:
        parser(data)
    except ParseError:
        pass


@pytest.mark.parametrize("kind,parser", [("proc_stat", parse_proc_stat), ("meminfo", parse_meminfo),
                                         ("cpuinfo_dumpsys", parse_dumpsys_cpuinfo),
                                         ("battery", parse_dumpsys_battery), ("thermal", parse_thermal),
                                         ("getprop", parse_getprop)])
@settings(max_examples=40, deadline=None)
@given(cut=st.floats(min_value=0.0, max_value=1.0))
def test_truncated_fixtures_never_crash(kind, parser, cut):
    for p in files(kind):
        t = text(p)
        try:
            parser(t[: int(len(t) * cut)])
        except ParseError:
            pass
