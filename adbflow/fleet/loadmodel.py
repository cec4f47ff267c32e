"""Load model of a virtual device: simulated /proc/stat, /proc/meminfo, cpufreq, thermal, battery.

Why over ~500 lines: every simulated /proc and /sys file is rendered from one state
(busy, heat, battery) advanced on one tick; the renderers are pure one-screen functions.

Why simulated: the orchestrator bids with what a phone reports (CPU busy from /proc/stat
deltas, free memory, temperatures). Virtual devices share two host cores, so their real
numbers would be meaningless; instead each device reports

    busy = min(1, background(profile) + set_load + real CPU used by its own processes / ncores)

The pure functions (advance_cpu_times, render_*, contention_factor, ...) carry all the
arithmetic and are unit-tested; DeviceLoad applies them to files; LoadTicker drives every
device of the process from ONE asyncio task (100 devices must stay cheap: no threads,
fast tick writes only /proc/stat, everything else on a slow tick and only when changed).
"""
from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from adbflow.fleet.battery import BatteryModel

HZ = 100  # USER_HZ: /proc/stat counts in 1/100 s on Android kernels too
# How busy time splits over user/nice/system/irq/softirq and idle time over idle/iowait
# (ratios typical of an Android phone /proc/stat, e.g. the fixtures in tests/fixtures/proc_stat).
BUSY_SPLIT = (0.70, 0.04, 0.21, 0.02, 0.03)
IDLE_SPLIT = (0.985, 0.015)
FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest",
          "guest_nice")
SLOW_TICK_S = 1.0   # own-process sampling, meminfo, loadavg, uptime
try:  # keep /sys fds open only when the fd limit leaves room (~20 per device)
    import resource
    _KEEP_FDS = resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 8192
except (ImportError, ValueError):  # pragma: no cover
    _KEEP_FDS = False
SYS_TICK_S = 3.0    # /sys files (cpufreq, thermal, battery): many small files, slow physics


# ---------------------------------------------------------------- pure functions

def busy_fraction(background_pct: float, set_load_pct: float, own_cpu_cores: float,
                  ncores: int) -> float:
    """Fraction (0..1) of every simulated core that is busy.

    own_cpu_cores: real CPU used by the device's own processes, in host cores (1.0 = one
    host core fully busy); it is spread over the device's ncores."""
    f = background_pct / 100.0 + max(0.0, set_load_pct) / 100.0 + own_cpu_cores / max(1, ncores)
    return max(0.0, min(1.0, f))


def advance_cpu_times(times: list[list[float]], busy: list[float] | float, dt: float,
                      hz: int = HZ) -> list[list[float]]:
    """Per-cpu jiffy counters after `dt` seconds at the given busy fraction(s). Pure.

    times[i] has the 10 /proc/stat fields of cpu i (floats; rendered floored). The sum of
    all fields of one cpu grows by exactly dt*hz, the non-idle part by busy*dt*hz."""
    out: list[list[float]] = []
    for i, row in enumerate(times):
        b = busy[i] if isinstance(busy, list) else busy
        b = max(0.0, min(1.0, b))
        ticks = dt * hz
        bt, it = b * ticks, (1.0 - b) * ticks
        new = list(row)
        new[0] += bt * BUSY_SPLIT[0]
        new[1] += bt * BUSY_SPLIT[1]
        new[2] += bt * BUSY_SPLIT[2]
        new[5] += bt * BUSY_SPLIT[3]
        new[6] += bt * BUSY_SPLIT[4]
        new[3] += it * IDLE_SPLIT[0]
        new[4] += it * IDLE_SPLIT[1]
        out.append(new)
    return out


def core_weights(cores_little: int, cores_mid: int, cores_big: int) -> list[float]:
    """How a device's busy time spreads over its cores (mean 1.0): Android's scheduler puts
    background work on the little cores first, so they run busier than the big ones, and
    every /proc/stat cpuN line differs like on a phone."""
    raw = [1.3] * cores_little + [0.9] * cores_mid + [0.6] * cores_big
    # and no two cores of a cluster are exactly alike (cpu0 also takes most interrupts)
    raw = [w * (1.0 + 0.04 * (((i * 3) % 5) - 2)) for i, w in enumerate(raw)]
    mean = sum(raw) / len(raw) if raw else 1.0
    return [w / mean for w in raw]


def spread_busy(busy: float, weights: list[float]) -> list[float]:
    """Per-core busy fractions in [0, 1] whose mean is exactly `busy` (pure): cores that
    would exceed 1 are capped and their excess goes to the others, by weight."""
    busy = max(0.0, min(1.0, busy))
    n = len(weights)
    out = [0.0] * n
    free = list(range(n))
    left = busy * n
    while free:
        wsum = sum(weights[i] for i in free)
        share = {i: left * weights[i] / wsum if wsum > 0 else left / len(free) for i in free}
        over = [i for i in free if share[i] >= 1.0]
        if not over:
            for i in free:
                out[i] = share[i]
            break
        for i in over:
            out[i] = 1.0
            left -= 1.0
            free.remove(i)
    return out


def render_proc_stat(times: list[list[float]], *, btime: int, ctxt: int, intr: int,
                     processes: int, procs_running: int = 1, procs_blocked: int = 0) -> str:
    """/proc/stat text in the kernel's format (cpu aggregate = sum of the per-cpu lines)."""
    ints = [[int(v) for v in row] for row in times]
    total = [sum(col) for col in zip(*ints)] if ints else [0] * 10
    lines = ["cpu  " + " ".join(map(str, total))]
    lines += [f"cpu{i} " + " ".join(map(str, row)) for i, row in enumerate(ints)]
    lines.append(f"intr {intr} 0 0 0 {intr // 3} 0 {intr // 20} 0 0 0 0")
    lines.append(f"ctxt {ctxt}")
    lines.append(f"btime {btime}")
    lines.append(f"processes {processes}")
    lines.append(f"procs_running {procs_running}")
    lines.append(f"procs_blocked {procs_blocked}")
    soft = intr // 2
    lines.append(f"softirq {soft} {soft // 10} {soft // 3} 0 {soft // 20} {soft // 25} 0 "
                 f"{soft // 30} {soft // 4} 0 {soft // 6}")
    return "\n".join(lines) + "\n"


def parse_proc_stat(text: str) -> dict[str, list[int]]:
    """cpu lines of /proc/stat: {"cpu": [...], "cpu0": [...], ...}."""
    out: dict[str, list[int]] = {}
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0].startswith("cpu"):
            out[parts[0]] = [int(x) for x in parts[1:]]
    return out


def cpu_busy_percent(before: list[int], after: list[int]) -> float:
    """Busy percent between two samples of one cpu line (idle = idle + iowait)."""
    delta = [a - b for a, b in zip(after, before)]
    total = sum(delta[:8])
    if total <= 0:
        return 0.0
    idle = delta[3] + delta[4]
    return 100.0 * (total - idle) / total


def meminfo_values(total_kb: int, used_kb: int) -> dict[str, int]:
    """A consistent set of /proc/meminfo values for `used_kb` of `total_kb` in use."""
    used_kb = max(0, min(total_kb - 16384, used_kb))
    avail = total_kb - used_kb
    cached = int(avail * 0.55)
    free = int(avail * 0.18)
    buffers = int(avail * 0.01)
    anon = int(used_kb * 0.72)
    swap_total = min(total_kb // 2, 4 * 1024 * 1024)
    return {
        "MemTotal": total_kb, "MemFree": free, "MemAvailable": avail, "Buffers": buffers,
        "Cached": cached, "SwapCached": swap_total // 200,
        "Active": int(anon * 0.7 + cached * 0.5), "Inactive": int(anon * 0.3 + cached * 0.5),
        "Active(anon)": int(anon * 0.7), "Inactive(anon)": int(anon * 0.3),
        "Active(file)": int(cached * 0.5), "Inactive(file)": int(cached * 0.5),
        "Unevictable": 142152, "Mlocked": 142152, "SwapTotal": swap_total,
        "SwapFree": int(swap_total * 0.6), "Dirty": 124, "Writeback": 0, "AnonPages": anon,
        "Mapped": int(cached * 0.6), "Shmem": 18604, "KReclaimable": int(used_kb * 0.04),
        "Slab": int(used_kb * 0.07), "SReclaimable": int(used_kb * 0.04),
        "SUnreclaim": int(used_kb * 0.03), "KernelStack": 62672, "ShadowCallStack": 15680,
        "PageTables": int(used_kb * 0.02), "NFS_Unstable": 0, "Bounce": 0, "WritebackTmp": 0,
        "CommitLimit": total_kb // 2 + swap_total, "Committed_AS": used_kb * 20,
        "VmallocTotal": 263061440, "VmallocUsed": 0, "VmallocChunk": 0, "Percpu": 9216,
        "CmaTotal": 196608, "CmaFree": 60,
    }


def render_meminfo(values: dict[str, int]) -> str:
    """/proc/meminfo lines: the kernel pads label to 16 columns, value to 8 (show_val_kb)."""
    return "".join(f"{k + ':':<16}{v:>8} kB\n" for k, v in values.items())


def render_loadavg(l1: float, l5: float, l15: float, running: int, total: int, last_pid: int
                   ) -> str:
    return f"{l1:.2f} {l5:.2f} {l15:.2f} {running}/{total} {last_pid}\n"


def decay_loadavg(avg: float, active: float, dt: float, period_s: float) -> float:
    """Kernel-style exponentially damped load average."""
    e = math.exp(-dt / period_s)
    return avg * e + active * (1.0 - e)


def cur_freq_khz(min_khz: int, max_khz: int, busy: float, step_khz: int = 38400) -> int:
    """scaling_cur_freq under schedutil-like scaling: idle near min, busy near max."""
    if max_khz <= 0:
        return 0
    if busy * 1.25 >= 1.0:
        return max_khz
    target = min_khz + (max_khz - min_khz) * busy * 1.25
    return max(min_khz, min(max_khz, int(round(target / step_khz)) * step_khz))


THERMAL_ZONES = (  # (type, ambient C, C added at 100% busy, time constant s)
    ("battery", 27.0, 9.0, 300.0),
    ("xo-therm", 29.0, 14.0, 200.0),
    ("cpu-0-0-usr", 33.0, 42.0, 20.0),
    ("cpu-1-0-usr", 34.0, 50.0, 20.0),
    ("gpuss-0-usr", 31.0, 18.0, 40.0),
    ("skin-therm", 29.0, 17.0, 240.0),
)


@dataclass(frozen=True)
class Zone:
    """One /sys/class/thermal zone. `reads` says what its `temp` file holds:
    "heat": millidegrees C of a simulated sensor (ambient + rise * busy, lagged by tau);
    "soc": the battery percentage, unscaled (Qualcomm's bcl_soc driver registers a zone
    named `soc` whose "temperature" is the state of charge: 85 on a charged phone);
    a number: a fixed BCL threshold reading (mA for ibat, mV for vbat, 0/1 for bcl-lvl)."""

    type: str
    ambient: float = 0.0
    rise: float = 0.0
    tau: float = 60.0
    reads: str = "heat"


def _pmic_bcl(pmic: str) -> list[Zone]:
    """The battery-current-limit zones of a Qualcomm PMIC (bcl_pmic5 / bcl_soc drivers)."""
    return ([Zone(f"{pmic}-ibat-lvl{i}", reads=str(v)) for i, v in enumerate((4500, 5000))]
            + [Zone(f"{pmic}-vbat-lvl{i}", reads=str(v)) for i, v in enumerate((3200, 2800, 2600))]
            + [Zone(f"{pmic}-bcl-lvl{i}", reads="0") for i in range(3)]
            + [Zone("soc", reads="soc"), Zone("vbat", reads="4123")])


def thermal_zones(kind: str, pmic: str = "pm8550b") -> tuple[Zone, ...]:
    """The zone list of a profile's `thermal` kind (profile.THERMAL_KINDS), in zone order.
    The first six are always the basic sensors, so zone numbers stay stable."""
    zones = [Zone(*z) for z in THERMAL_ZONES]
    if kind in ("qualcomm", "qualcomm_many"):
        zones += _pmic_bcl(pmic)
    if kind == "qualcomm_many":  # SM8550-class: per-core tsens, subsystems, board sensors
        zones += [Zone(f"cpu-{c}-{i}-usr", 33.0 + c, 44.0 + 4 * c, 20.0)
                  for c in range(2) for i in range(1, 8)]
        zones += [Zone(f"cpuss-{i}-usr", 33.0, 40.0, 25.0) for i in range(4)]
        zones += [Zone(f"gpuss-{i}-usr", 31.0, 18.0, 40.0) for i in range(1, 8)]
        zones += [Zone(f"nspss-{i}-usr", 30.0, 6.0, 60.0) for i in range(4)]
        zones += [Zone(f"mdmss-{i}-usr", 30.0, 4.0, 80.0) for i in range(4)]
        zones += [Zone(f"aoss-{i}-usr", 30.0, 8.0, 60.0) for i in range(2)]
        zones += [Zone(name, 30.0, 10.0, 60.0) for name in
                  ("ddr-usr", "video-usr", "camera-0-usr", "camera-1-usr", "mdmss-lte",
                   "qtm-0-usr", "qtm-1-usr", "pm8550-tz", "pm8550b-tz", "pm8550vs-c-tz",
                   "pm8550vs-d-tz", "pm8550vs-e-tz", "pm8550vs-g-tz", "pm8550ve-tz",
                   "pmr735d-tz", "pm8010-tz", "pm8010m-tz")]
        zones += [Zone(f"sys-therm-{i}", 29.0, 12.0, 200.0) for i in range(6)]
    return tuple(zones)


#: android.os.Temperature TYPE_* of the zones the thermal HAL reports (others it hides,
#: BCL zones included: the HAL knows what they are).
HAL_TYPES = {"cpu-0-0-usr": 0, "cpu-1-0-usr": 0, "gpuss-0-usr": 1, "battery": 2,
             "skin-therm": 3, "xo-therm": 5}
#: Where the device's thermal HAL stand-in publishes (read by dumpsys thermalservice,
#: which on a phone runs in system_server and so reads zones the shell may not).
THERMAL_HAL_PATH = "vendor/etc/adbflow-thermal-hal.json"


def hal_temperatures(temps: dict[str, float]) -> list[dict[str, object]]:
    """The thermal HAL's view: [{name, type, value}] for the zones it knows."""
    return [{"name": n, "type": t, "value": round(temps[n], 1)}
            for n, t in HAL_TYPES.items() if n in temps]


def zone_reading(zone: Zone, temp_c: float, battery_level: int) -> str:
    """The text of a zone's `temp` file."""
    if zone.reads == "heat":
        return f"{int(round(temp_c * 10)) * 100}\n"
    if zone.reads == "soc":
        return f"{battery_level}\n"
    return f"{zone.reads}\n"


def approach(value: float, target: float, dt: float, tau: float) -> float:
    """First-order lag (heat capacity): move `value` towards `target` over `dt`."""
    return target + (value - target) * math.exp(-dt / tau)


def thermal_status(skin_c: float) -> int:
    """Android thermal status (0 NONE .. 6 SHUTDOWN) from the skin temperature."""
    for status, limit in ((4, 52.0), (3, 48.0), (2, 45.0), (1, 42.0)):
        if skin_c >= limit:
            return status
    return 0


def contention_factor(other_load_pct: float) -> float:
    """How much slower a CPU-bound job runs when `other_load_pct` of the device is busy.

    1.0 idle; ~1.6 at 50 %; ~3 at 90 % (fewer free cores, shared caches and memory
    bandwidth; cf. -35..-50 % LLM throughput under a foreground app, device-profiles.md)."""
    load = max(0.0, min(95.0, other_load_pct)) / 100.0
    return 1.0 / (1.0 - 0.75 * load)


def thermal_factor(skin_c: float) -> float:
    """Sustained-load throttling: ~1.25x at 45 C skin, ~1.4x at 48 C, 2x+ beyond 52 C."""
    if skin_c <= 40.0:
        return 1.0
    return 1.0 + 0.05 * (skin_c - 40.0) + 0.004 * max(0.0, skin_c - 48.0) ** 2 * 10


# ---------------------------------------------------------------- per-device state

@dataclass
class OwnUsage:
    """Running total of CPU ticks of the device's live processes (to compute deltas)."""

    prev: dict[int, int] = field(default_factory=dict)
    last_t: float = 0.0
    cores: float = 0.0      # host cores used, averaged over the last slow tick
    rss_kb: int = 0
    nprocs: int = 1
    max_pid: int = 1


def sample_device_procs(proc_dir: Path, usage: OwnUsage, now: float) -> None:
    """Read utime+stime of every process in the device's own procfs (device pids)."""
    ticks: dict[int, int] = {}
    rss = 0
    try:
        names = os.listdir(proc_dir)
    except OSError:
        return
    page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
    for n in names:
        if not n.isdigit():
            continue
        pid = int(n)
        try:
            with open(proc_dir / n / "stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        rest = raw[raw.rfind(b")") + 2:].split()
        try:
            ticks[pid] = int(rest[11]) + int(rest[12])
            rss += int(rest[21]) * page_kb
        except (IndexError, ValueError):
            continue
    used = sum(t - usage.prev.get(pid, 0) for pid, t in ticks.items() if pid != 1)
    dt = now - usage.last_t if usage.last_t else 0.0
    clk = os.sysconf("SC_CLK_TCK")
    usage.cores = (used / clk / dt) if dt > 0 else 0.0
    usage.prev, usage.last_t = ticks, now
    usage.rss_kb, usage.nprocs = rss, max(1, len(ticks))
    usage.max_pid = max(ticks) if ticks else 1


class DeviceLoad:
    """The simulated kernel counters of one device, written to its sim files and /sys."""

    def __init__(self, profile, sim_dir: Path, sys_root: Path,
                 proc_dir: Callable[[], Path | None]) -> None:
        self.profile = profile
        self.sim_dir = Path(sim_dir)
        self.sys_root = Path(sys_root)
        self.proc_dir = proc_dir
        self.set_load_pct = 0.0
        self.boot_wall = time.time()
        self.boot_mono = time.monotonic()
        n = profile.ncores
        # cores came online at slightly different times during boot (hotplug), so their
        # idle counters start apart, as every cpuN line of a phone's /proc/stat does
        self.times: list[list[float]] = [[0.0, 0.0, 0.0, 37.0 * i] + [0.0] * 6
                                         for i in range(n)]
        self.busy = busy_fraction(profile.background_load, 0.0, 0.0, n)
        self.weights = core_weights(profile.cores_little, profile.cores_mid, profile.cores_big)
        self.usage = OwnUsage()
        self.last_fast = self.boot_mono
        self.last_slow = 0.0
        self.last_sys = 0.0
        self.ctxt = 0.0
        self.loadavg = [0.0, 0.0, 0.0]
        self.zones = thermal_zones(getattr(profile, "thermal", "basic"))
        #: "locked": temp files root:system 0440 (SELinux keeps the shell out on such phones)
        self.zones_locked = getattr(profile, "thermal", "basic") == "locked"
        self.temps = {z.type: z.ambient for z in self.zones}
        self.on_slow: Callable[[], None] | None = None  # e.g. backend republishes faults
        self.battery = BatteryModel(level_pct=float(profile.battery_level))
        self._written: dict[str, str] = {}
        self._fds: dict[str, int] = {}
        self._sys_fds: dict[str, int] = {}
        self._sizes: dict[str, int] = {}
        self.sim_dir.mkdir(parents=True, exist_ok=True)
        self.write_static()

    # -- file output
    def _put(self, name: str, text: str) -> None:
        """Rewrite a sim file IN PLACE: it is bind-mounted, a rename would detach it."""
        data = text.encode()
        fd = self._fds.get(name)
        if fd is None:
            fd = os.open(self.sim_dir / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o444)
            self._fds[name] = fd
            self._sizes[name] = os.fstat(fd).st_size
        os.pwrite(fd, data, 0)
        if len(data) < self._sizes[name]:
            os.ftruncate(fd, len(data))
        self._sizes[name] = len(data)

    def _sys(self, rel: str, value: str, keep: bool = False) -> None:
        """Write a /sys file of the device when its value changed (fd kept open: opening
        files costs more than writing them, and 100 devices write ~500 files per second)."""
        if self._written.get(rel) == value:
            return
        data = value.encode()
        fd = self._sys_fds.get(rel)
        if fd is None:
            path = self.sys_root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            if keep and _KEEP_FDS:
                self._sys_fds[rel] = fd
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        if rel not in self._sys_fds:
            os.close(fd)
        self._written[rel] = value

    def close(self) -> None:
        for fd in [*self._fds.values(), *self._sys_fds.values()]:
            os.close(fd)
        self._fds.clear()
        self._sys_fds.clear()

    def write_static(self) -> None:
        """Files that do not change with load (cpu topology, zone types, cpuinfo)."""
        p = self.profile
        n = p.ncores
        rng = f"0-{n - 1}\n" if n > 1 else "0\n"
        for f in ("present", "online", "possible"):
            self._sys(f"devices/system/cpu/{f}", rng)
        self._sys("devices/system/cpu/offline", "\n")
        self._sys("devices/system/cpu/kernel_max", f"{max(7, n - 1)}\n")
        maxs, mins, caps = p.core_max_khz(), p.core_min_khz(), p.core_capacity()
        for i in range(n):
            self._sys(f"devices/system/cpu/cpu{i}/cpu_capacity", f"{caps[i]}\n")
            base = f"devices/system/cpu/cpu{i}/cpufreq/"
            self._sys(base + "cpuinfo_max_freq", f"{maxs[i]}\n")
            self._sys(base + "cpuinfo_min_freq", f"{mins[i]}\n")
            self._sys(base + "scaling_max_freq", f"{maxs[i]}\n")
            self._sys(base + "scaling_min_freq", f"{mins[i]}\n")
            self._sys(base + "scaling_governor", "schedutil\n")
            self._sys(f"devices/system/cpu/cpu{i}/online", "1\n")
        for z, zone in enumerate(self.zones):
            self._sys(f"class/thermal/thermal_zone{z}/type", f"{zone.type}\n")
            self._sys(f"class/thermal/thermal_zone{z}/mode", "enabled\n")
            temp = self.sys_root / f"class/thermal/thermal_zone{z}/temp"
            temp.parent.mkdir(parents=True, exist_ok=True)
            temp.touch()
            if self.zones_locked:
                os.chown(temp, 0, 1000)
            os.chmod(temp, 0o440 if self.zones_locked else 0o644)
        bat = "class/power_supply/battery/"
        for k, v in (("type", "Battery"), ("present", "1"), ("health", "Good"),
                     ("technology", "Li-ion"), ("status", self.battery_status()),
                     ("capacity", str(p.battery_level)), ("voltage_now", "4123000")):
            self._sys(bat + k, v + "\n")
        self._sys("class/power_supply/usb/online", "1\n")
        self._sys("class/power_supply/usb/type", "USB\n")
        self._put("cpuinfo", render_cpuinfo(p))

    def battery_status(self) -> str:
        if not self.battery.usb_online:
            return "Discharging"
        return "Full" if self.profile.battery_level >= 100 else "Charging"

    def set_battery(self, *, usb_online: bool, quirks: frozenset[str]) -> None:
        """Plug/unplug USB power and pick the driver quirks (fleet faults)."""
        b = self.battery
        if (b.usb_online, b.quirks) == (usb_online, quirks):
            return
        b.usb_online, b.quirks = usb_online, quirks
        self._sys("class/power_supply/usb/online", "1\n" if usb_online else "0\n")
        self._sys("class/power_supply/battery/status", self.battery_status() + "\n")

    def write_battery(self) -> None:
        """The fuel gauge's values (battery.py), each written when it changed."""
        for name, value in self.battery.gauge.items():
            if name != "capacity":      # the level stays the profile's (bids read it)
                self._sys(f"class/power_supply/battery/{name}", f"{value}\n", keep=True)

    # -- model
    def other_load_pct(self) -> float:
        """Load that is not the calling program itself: background + configured."""
        return min(100.0, self.profile.background_load + self.set_load_pct)

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if now - self.last_slow >= SLOW_TICK_S:
            self.slow_tick(now)
        dt = max(0.0, now - self.last_fast)
        self.last_fast = now
        self.busy = busy_fraction(self.profile.background_load, self.set_load_pct,
                                  self.usage.cores, self.profile.ncores)
        if self.battery.step(now, self.busy):
            self.write_battery()
        self.times = advance_cpu_times(self.times, spread_busy(self.busy, self.weights), dt)
        self.ctxt += dt * (800 + 9000 * self.busy) * self.profile.ncores
        self._put("stat", render_proc_stat(
            self.times, btime=int(self.boot_wall), ctxt=int(self.ctxt),
            intr=int(self.ctxt * 0.6), processes=1000 + self.usage.max_pid,
            procs_running=max(1, min(9, round(self.busy * self.profile.ncores)))))

    def slow_tick(self, now: float) -> None:
        dt = now - self.last_slow if self.last_slow else SLOW_TICK_S
        self.last_slow = now
        pdir = self.proc_dir()
        if pdir is not None:
            sample_device_procs(pdir, self.usage, now)
        p = self.profile
        busy = busy_fraction(p.background_load, self.set_load_pct, self.usage.cores, p.ncores)
        total_kb = int(p.ram_gb * 1024 * 1024 * 0.94)  # carve-outs: a "8 GB" phone shows ~7.5
        used_kb = int(total_kb * (0.42 + 0.25 * busy)) + self.usage.rss_kb
        self._put("meminfo", render_meminfo(meminfo_values(total_kb, used_kb)))
        active = busy * p.ncores
        self.loadavg = [decay_loadavg(a, active, dt, s) for a, s in
                        zip(self.loadavg, (60.0, 300.0, 900.0))]
        l1, l5, l15 = self.loadavg
        self._put("loadavg", render_loadavg(l1, l5, l15, running=max(1, round(active)),
                                            total=700 + self.usage.nprocs,
                                            last_pid=20000 + self.usage.max_pid))
        up = now - self.boot_mono
        idle = sum(row[3] for row in self.times) / HZ
        self._put("uptime", f"{up:.2f} {idle:.2f}\n")
        for zone in self.zones:
            if zone.reads == "heat":
                self.temps[zone.type] = approach(self.temps[zone.type],
                                                 zone.ambient + zone.rise * busy, dt, zone.tau)
        if now - self.last_sys >= SYS_TICK_S:
            self.last_sys = now
            self.write_sys(busy)
        if self.on_slow is not None:
            self.on_slow()

    def write_sys(self, busy: float) -> None:
        """cpufreq, thermal and battery files (each written only when its value changed)."""
        p = self.profile
        maxs, mins = p.core_max_khz(), p.core_min_khz()
        for i in range(p.ncores):
            self._sys(f"devices/system/cpu/cpu{i}/cpufreq/scaling_cur_freq",
                      f"{cur_freq_khz(mins[i], maxs[i], busy)}\n", keep=True)
        for z, zone in enumerate(self.zones):
            self._sys(f"class/thermal/thermal_zone{z}/temp",
                      zone_reading(zone, self.temps[zone.type], p.battery_level), keep=True)
        self._sys("class/power_supply/battery/temp", f"{int(self.temps['battery'] * 10)}\n",
                  keep=True)
        self.write_hal()

    def write_hal(self) -> None:
        """Publish the thermal HAL's temperatures (atomic rename: /vendor/etc is a
        directory bind, so the device sees the new file at once)."""
        import json
        hal = {"status": thermal_status(self.temps["skin-therm"]),
               "temperatures": hal_temperatures(self.temps)}
        path = self.sys_root.parent / THERMAL_HAL_PATH
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(hal))
        os.chmod(tmp, 0o444)
        os.replace(tmp, path)

    def snapshot(self) -> dict[str, float]:
        """Numbers for the device state file and `fleet status`."""
        return {"busy_pct": round(self.busy * 100, 1), "set_load_pct": self.set_load_pct,
                "background_pct": self.profile.background_load,
                "own_cpu_cores": round(self.usage.cores, 3),
                "skin_c": round(self.temps["skin-therm"], 1),
                **self.battery.snapshot(time.monotonic())}


def render_cpuinfo(profile) -> str:
    """/proc/cpuinfo of the simulated cores (x86 layout: the device runs host binaries)."""
    out = []
    maxs = profile.core_max_khz()
    for i in range(profile.ncores):
        out.append(f"processor\t: {i}\nvendor_id\t: adbflow\nmodel name\t: adbflow virtual cpu "
                   f"({profile.soc} class, simulated)\ncpu MHz\t\t: {maxs[i] / 1000:.3f}\n"
                   f"core id\t\t: {i}\ncpu cores\t: {profile.ncores}\n\n")
    return "".join(out)


# ---------------------------------------------------------------- the shared ticker

def tick_interval(n_devices: int) -> float:
    """Fast-tick period: 100 ms for small fleets, up to 400 ms for 100 devices."""
    return max(0.1, min(0.4, 0.004 * n_devices))


class LoadTicker:
    """One asyncio task per event loop ticking every registered DeviceLoad."""

    _by_loop: dict[int, LoadTicker] = {}

    def __init__(self) -> None:
        self.models: list[DeviceLoad] = []
        self.task: asyncio.Task[None] | None = None
        self.cost_s = 0.0  # duration of the last tick over all devices

    @classmethod
    def for_running_loop(cls) -> LoadTicker:
        loop = asyncio.get_running_loop()
        key = id(loop)
        t = cls._by_loop.get(key)
        if t is None:
            t = cls._by_loop[key] = LoadTicker()
        return t

    def add(self, model: DeviceLoad) -> None:
        if model not in self.models:
            self.models.append(model)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run(), name="adbflow-load")

    def remove(self, model: DeviceLoad) -> None:
        if model in self.models:
            self.models.remove(model)
        if not self.models and self.task is not None:
            self.task.cancel()
            self.task = None

    async def _run(self) -> None:
        while self.models:
            t0 = time.monotonic()
            for m in list(self.models):
                try:
                    m.tick(t0)
                except OSError:
                    pass  # a device being torn down; its backend removes it
            self.cost_s = time.monotonic() - t0
            await asyncio.sleep(max(0.02, tick_interval(len(self.models)) - self.cost_s))
