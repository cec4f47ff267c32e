"""One probe = one `adb shell` round trip running device_scripts/probe.sh inline.

Why inline and sectioned: nothing is left on the phone (no push), and the whole state a bid
needs (/proc/stat, meminfo, cpu topology, cpufreq, thermal, battery, props) comes back in one
round trip. Sections are introduced by `=:adbflow:NONCE:NAME` lines with a fresh random nonce,
so device files cannot forge a section; the output is size-bounded by the shell call.
"""
from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass, field, replace

from adbflow.device.lease_rules import SlotState, parse_record, slot_state
from adbflow.device.port import DevicePort
from adbflow.device.results import ShellResult
from adbflow.errors import ParseError
from adbflow.parsers.battery import parse_dumpsys_battery
from adbflow.parsers.cpuinfo import CpuinfoDump, parse_dumpsys_cpuinfo
from adbflow.parsers.getprop import parse_getprop
from adbflow.parsers.meminfo import MemInfo, parse_meminfo
from adbflow.parsers.proc_stat import ProcStat, parse_proc_stat
from adbflow.parsers.sysfs import CpuFreq, parse_cpu_list, parse_cpufreq, parse_key_values, parse_power_supply
from adbflow.parsers.thermal import ThermalInfo, parse_thermal_zones, parse_thermalservice
from adbflow.paths import DEVICE_SCRIPTS_DIR

PROBE_MAX_OUTPUT = 1 << 20          # a healthy probe is 4-30 KB (300 KB with dumpsys cpuinfo)
FIRST_SAMPLE_WINDOW_S = 0.2          # must match `sleep 0.2` in probe.sh


@functools.lru_cache(maxsize=1)
def probe_script() -> str:
    """probe.sh without comments and blank lines (fewer bytes per round trip)."""
    lines = (DEVICE_SCRIPTS_DIR / "probe.sh").read_text().splitlines()
    return "\n".join(ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")) + "\n"


def probe_command(nonce: str, *, first: bool, with_cpuinfo: bool, with_props: bool,
                  with_thermalservice: bool = False) -> str:
    """The shell text sent to the device. The nonce is hex (no quoting needed, but quoted anyway)."""
    if not nonce.isalnum():
        raise ValueError("nonce must be alphanumeric")
    flags = " ".join("1" if f else "0"
                     for f in (first, with_cpuinfo, with_props, with_thermalservice))
    return f"set -- {nonce} {flags}\n{probe_script()}"


def split_sections(text: str, nonce: str) -> dict[str, str]:
    """Section name -> body. Lines before the first marker are dropped (e.g. motd noise)."""
    prefix = f"=:adbflow:{nonce}:"
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(prefix):
            name = line[len(prefix):].strip()
            current = sections.setdefault(name, [])
            continue
        if current is not None:
            current.append(line)
    return {k: "\n".join(v).strip("\n") for k, v in sections.items()}


@dataclass
class ProbeReport:
    """Everything one probe round trip learned. `problems` lists sections that failed to parse."""
    stat: ProcStat
    meminfo: MemInfo
    stat_a: ProcStat | None = None           # first-contact sample taken 0.2 s before `stat`
    present: list[int] = field(default_factory=list)
    online: list[int] = field(default_factory=list)
    freqs: dict[int, CpuFreq] = field(default_factory=dict)
    thermal: ThermalInfo | None = None
    battery_level: int | None = None
    battery_charging: bool | None = None
    battery_temp_c: float | None = None
    battery_power_w: float | None = None     # current x voltage while discharging
    props: dict[str, str] = field(default_factory=dict)
    cpuinfo: CpuinfoDump | None = None
    # `dumpsys thermalservice` (asked for every ~30 s): None = not asked; an empty
    # ThermalInfo-less answer (no service, Android < 10) sets `thermalservice_missing`
    thermalservice: ThermalInfo | None = None
    thermalservice_missing: bool = False
    slots: dict[str, SlotState] = field(default_factory=dict)   # slot leases, by slot
    complete: bool = True                    # the end marker arrived
    problems: list[str] = field(default_factory=list)
    light: bool = False                      # probe.sh LIGHT: stat, meminfo, leases only


def with_slow_parts(light: ProbeReport, full: ProbeReport) -> ProbeReport:
    """Pure: a LIGHT report (fresh stat, meminfo, leases) completed with the parts that change
    over seconds (cpus, cpufreq, thermal, battery) from the stream's last full report, so a
    requested bid reads like any other; the load and the leases are the fresh ones."""
    return replace(full, stat=light.stat, meminfo=light.meminfo, slots=light.slots,
                   stat_a=None, props={}, cpuinfo=None, thermalservice=None,
                   thermalservice_missing=False, complete=light.complete,
                   problems=list(light.problems), light=True)


def parse_probe_output(text: str, nonce: str) -> ProbeReport:
    """Pure: probe stdout -> ProbeReport. /proc/stat and meminfo are required (ParseError);
    every other section is best effort and its failure is noted in `problems`."""
    sec = split_sections(text, nonce)
    if "stat" not in sec:
        raise ParseError("probe", "no /proc/stat section in the probe output", text)
    if "meminfo" not in sec:
        raise ParseError("probe", "no /proc/meminfo section in the probe output", text)
    rep = ProbeReport(stat=parse_proc_stat(sec["stat"]), meminfo=parse_meminfo(sec["meminfo"]),
                      complete="end" in sec, light="light" in sec)
    problems = rep.problems
    if "stat_a" in sec:
        try:
            rep.stat_a = parse_proc_stat(sec["stat_a"])
        except ParseError as exc:
            problems.append(f"stat_a: {exc.detail}")
    cpus = parse_key_values(sec.get("cpus", ""))
    for key in ("present", "online"):
        if key in cpus:
            try:
                setattr(rep, key, parse_cpu_list(cpus[key]))
            except ParseError as exc:
                problems.append(f"{key}: {exc.detail}")
    rep.freqs = parse_cpufreq(sec.get("cpufreq", ""))
    if sec.get("thermal", "").strip():
        try:
            rep.thermal = parse_thermal_zones(sec["thermal"])
        except ParseError as exc:
            problems.append(f"thermal: {exc.detail}")
    try:
        if "battery_sysfs" in sec:
            ps = parse_power_supply(sec["battery_sysfs"])
            rep.battery_level, rep.battery_charging, rep.battery_temp_c = ps.level, ps.charging, ps.temperature_c
            rep.battery_power_w = ps.power_w
        elif sec.get("battery", "").strip():
            bi = parse_dumpsys_battery(sec["battery"])
            rep.battery_level, rep.battery_charging, rep.battery_temp_c = bi.level, bi.charging, bi.temperature_c
    except ParseError as exc:
        problems.append(f"battery: {exc.detail}")
    if sec.get("props", "").strip():
        try:
            rep.props = parse_getprop(sec["props"])
        except ParseError as exc:
            problems.append(f"props: {exc.detail}")
    if "thermalservice" in sec:
        body = sec["thermalservice"]
        try:
            rep.thermalservice = parse_thermalservice(body) if body.strip() else None
        except ParseError as exc:
            problems.append(f"thermalservice: {exc.detail}")
        rep.thermalservice_missing = rep.thermalservice is None
    if sec.get("cpuinfo", "").strip():
        try:
            rep.cpuinfo = parse_dumpsys_cpuinfo(sec["cpuinfo"])
        except ParseError as exc:
            problems.append(f"cpuinfo: {exc.detail}")
    if sec.get("leases", "").strip():
        try:
            rep.slots = parse_leases(sec["leases"])
        except ParseError as exc:
            problems.append(f"leases: {exc.detail}")
    return rep


def uptime_ds(text: str) -> int:
    """/proc/uptime's first field in deciseconds, as lease.sh computes it."""
    whole, _, frac = text.partition(".")
    if not whole.isdigit() or not (frac[:1].isdigit() or frac == ""):
        raise ParseError("leases", f"bad uptime {text[:30]!r}", text)
    return int(whole) * 10 + (int(frac[0]) if frac else 0)


def parse_leases(body: str) -> dict[str, SlotState]:
    """The probe's `leases` section -> slot name -> state (lease_rules decides busy)."""
    lines = body.splitlines()
    head = lines[0].split() if lines else []
    if len(head) < 2 or head[0] != "now":
        raise ParseError("leases", "no clock line", body)
    now, boot = uptime_ds(head[1]), (head[2] if len(head) > 2 else "-")
    out: dict[str, SlotState] = {}
    for line in lines[1:]:
        name, _, record = line.partition(" ")
        if not (name.startswith("slot-") and name.endswith(".lease")):
            continue
        slot = name[len("slot-"):-len(".lease")]
        if slot.isascii() and slot.replace("-", "").replace("_", "").isalnum():
            out[slot] = slot_state(slot, parse_record(record), now, boot)
    return out


def run_probe(device: DevicePort, *, timeout: float, first: bool, with_cpuinfo: bool = False,
              with_props: bool = True, with_thermalservice: bool = False
              ) -> tuple[ProbeReport, ShellResult]:
    """One round trip. Raises AdbError/AdbTimeoutError/DeviceUnavailableError/ParseError."""
    nonce = secrets.token_hex(8)
    cmd = probe_command(nonce, first=first, with_cpuinfo=with_cpuinfo, with_props=with_props,
                        with_thermalservice=with_thermalservice)
    res = device.shell(cmd, timeout=timeout, check=False, max_output=PROBE_MAX_OUTPUT)
    return parse_probe_output(res.stdout, nonce), res
