"""Stand-in for Android's dumpsys (cpuinfo, battery, meminfo, thermalservice) on a virtual device.

Why: adbflow's bidding reads these services on real phones; on a virtual device they are
rendered in the real Android text formats (see tests/fixtures) from the device's
simulated kernel files (/proc/stat, /proc/meminfo, /proc/loadavg, /sys thermal and
battery), which the load model keeps up to date. Processes listed are the device's real
processes; system services of a phone (system_server...) are not invented.
"""
from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path

from adbflow.fleet.android import has_thermalservice
from adbflow.fleet.loadmodel import THERMAL_HAL_PATH, parse_proc_stat
from adbflow.fleet.programs import dumpsys_framework
from adbflow.fleet.programs.common import device_sdk as sdk

PROC = Path("/proc")
SYS = Path("/sys")
# previous sample, like ProcessCpuTracker's (which lives in system_server on a phone; the
# stand-in runs as the shell user, so it keeps it in a shell-owned simulation dir)
CACHE = Path("/data/misc/adbflow/dumpsys/cpuinfo.json")
HAL = Path("/") / THERMAL_HAL_PATH


def services() -> tuple[str, ...]:
    base = ("battery", "cpuinfo", "meminfo")
    return base + (("thermalservice",) if has_thermalservice(sdk()) else ())


def ratio(num: float, den: float) -> str:
    """ProcessCpuTracker.printRatio: integer >= 10, one decimal below 10 unless .0."""
    if den <= 0:
        return "0"
    thousands = int(num * 1000 // den)
    hundreds = thousands // 10
    if hundreds < 10:
        rem = thousands - hundreds * 10
        return f"{hundreds}.{rem}" if rem else str(hundreds)
    return str(hundreds)


def cpu_row(prefix: str, label: str, user: float, system: float, iowait: float, irq: float,
            softirq: float, total: float, pid: int | None = None) -> str:
    """printProcessCPU: `<prefix><pct>% [pid/]label: U% user + K% kernel[ + ...]`."""
    s = (f"{prefix}{ratio(user + system + iowait + irq + softirq, total)}% "
         f"{'' if pid is None else f'{pid}/'}{label}: {ratio(user, total)}% user + "
         f"{ratio(system, total)}% kernel")
    for val, name in ((iowait, "iowait"), (irq, "irq"), (softirq, "softirq")):
        if val > 0:
            s += f" + {ratio(val, total)}% {name}"
    return s


def read_procs() -> dict[int, dict]:
    """Device processes: name, utime, stime (ticks), rss (kB), minor faults."""
    out: dict[int, dict] = {}
    page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
    for d in PROC.iterdir():
        if not d.name.isdigit():
            continue
        try:
            raw = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        name = raw[raw.find("(") + 1:raw.rfind(")")]
        rest = raw[raw.rfind(")") + 2:].split()
        label = os.path.basename(cmd) if cmd else name
        if label in ("python3", "python", "python3.11", "python3.10") or label.startswith("python"):
            label = name  # our stand-ins: show the program module name
            try:
                args = (d / "cmdline").read_bytes().split(b"\0")
                if b"-m" in args:
                    label = args[args.index(b"-m") + 1].decode().rsplit(".", 1)[-1]
            except (OSError, IndexError):
                pass
        out[int(d.name)] = {"name": label, "utime": int(rest[11]), "stime": int(rest[12]),
                            "minflt": int(rest[7]), "rss": int(rest[21]) * page_kb}
    return out


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def dump_cpuinfo() -> str:
    now = time.time()
    cur = parse_proc_stat((PROC / "stat").read_text()).get("cpu", [0] * 10)
    procs = read_procs()
    prev = None
    try:
        prev = json.loads(CACHE.read_text())
        if not (0.2 <= now - prev["t"] <= 600):
            prev = None
    except (OSError, ValueError, KeyError):
        prev = None
    if prev is None:  # no recent sample: take one now and wait like the tracker would
        first, t_first, procs_first = cur, now, procs
        time.sleep(0.5)
        now = time.time()
        cur = parse_proc_stat((PROC / "stat").read_text()).get("cpu", [0] * 10)
        procs = read_procs()
    else:
        first, t_first = prev["cpu"], prev["t"]
        procs_first = {int(k): v for k, v in prev["procs"].items()}
    try:
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        CACHE.write_text(json.dumps({"t": now, "cpu": cur, "procs": procs}))
    except OSError:
        pass
    d = [a - b for a, b in zip(cur, first)]
    total = sum(d[:7]) or 1
    load = (PROC / "loadavg").read_text().split()
    lines = [f"Load: {float(load[0])} / {float(load[1])} / {float(load[2])}",
             f"CPU usage from {int((now - t_first) * 1000)}ms to 0ms ago "
             f"({_stamp(t_first)} to {_stamp(now)}):"]
    hz = os.sysconf("SC_CLK_TCK")
    # Per-process ticks are real host CPU time; scale them onto the device's ticks like
    # the kernel would account them (they ran on the device's cores).
    rows = []
    for pid, p in procs.items():
        old = procs_first.get(pid)
        du = p["utime"] - (old["utime"] if old else 0)
        ds = p["stime"] - (old["stime"] if old else 0)
        dm = p["minflt"] - (old["minflt"] if old else 0)
        scale = 100.0 / hz
        rows.append((du + ds, pid, p["name"], du * scale, ds * scale, dm, old is None))
    rows.sort(key=lambda r: -r[0])
    for _, pid, name, du, ds, dm, added in rows:
        line = cpu_row(" +" if added else "  ", name, du, ds, 0, 0, 0, total, pid)
        if dm > 0:
            line += f" / faults: {dm} minor"
        lines.append(line)
    lines.append(cpu_row("", "TOTAL", d[0] + d[1], d[2], d[4], d[5], d[6], total))
    return "\n".join(lines) + "\n"


def read_sys(rel: str, default: str = "") -> str:
    try:
        return (SYS / rel).read_text().strip()
    except OSError:
        return default


def dump_battery() -> str:
    b = "class/power_supply/battery/"
    usb = read_sys("class/power_supply/usb/online", "0") == "1"
    status = {"Charging": 2, "Discharging": 3, "Not charging": 4, "Full": 5}.get(
        read_sys(b + "status", "Unknown"), 1)
    level = int(read_sys(b + "capacity", "50") or 50)
    volt = int(read_sys(b + "voltage_now", "3900000") or 3900000) // 1000
    temp = int(read_sys(b + "temp", "250") or 250)
    return ("Current Battery Service state:\n"
            "  AC powered: false\n"
            f"  USB powered: {'true' if usb else 'false'}\n"
            "  Wireless powered: false\n"
            "  Dock powered: false\n"
            f"  Max charging current: {500000 if usb else 0}\n"
            f"  Max charging voltage: {5000000 if usb else 0}\n"
            f"  Charge counter: {level * 40000}\n"
            f"  status: {status}\n"
            "  health: 2\n"
            "  present: true\n"
            f"  level: {level}\n"
            "  scale: 100\n"
            f"  voltage: {volt}\n"
            f"  temperature: {temp}\n"
            f"  technology: {read_sys(b + 'technology', 'Li-ion')}\n")


def _k(v: int) -> str:
    return f"{v:,}K"


def dump_meminfo() -> str:
    mi = {}
    for line in (PROC / "meminfo").read_text().splitlines():
        k, _, rest = line.partition(":")
        try:
            mi[k] = int(rest.split()[0])
        except (IndexError, ValueError):
            pass
    up = float((PROC / "uptime").read_text().split()[0])
    procs = read_procs()
    lines = ["Applications Memory Usage (in Kilobytes):",
             f"Uptime: {int(up * 1000)} Realtime: {int(up * 1000)}", "",
             "Total PSS by process:"]
    pss_total = 0
    for pid, p in sorted(procs.items(), key=lambda kv: -kv[1]["rss"]):
        lines.append(f"{_k(p['rss']):>14}: {p['name']} (pid {pid})")
        pss_total += p["rss"]
    total = mi.get("MemTotal", 0)
    free = mi.get("MemFree", 0)
    cached = mi.get("Cached", 0) + mi.get("Buffers", 0)
    kernel = mi.get("Slab", 0) + mi.get("KernelStack", 0) + mi.get("PageTables", 0)
    used_pss = max(0, total - mi.get("MemAvailable", 0) - kernel)
    lost = max(0, total - free - cached - used_pss - kernel)
    lines += ["", f"Total RAM: {_k(total)} (status normal)",
              f" Free RAM: {_k(free + cached)} ({_k(0):>10} cached pss + {_k(cached)} cached "
              f"kernel + {_k(free)} free)",
              f" Used RAM: {_k(used_pss + kernel)} ({_k(used_pss)} used pss + {_k(kernel)} kernel)",
              f" Lost RAM: {_k(lost)}",
              f"     ZRAM: {_k(0)} physical used for {_k(0)} in swap "
              f"({_k(mi.get('SwapTotal', 0))} total swap)",
              "   Tuning: 256 (large 512), oom 322,560K, restore limit 107,520K (high-end-gfx)"]
    return "\n".join(lines) + "\n"


def dump_thermalservice() -> str:
    try:
        hal = json.loads(HAL.read_text())
        status = int(hal["status"])
        temps = [(str(t["name"]), int(t["type"]), float(t["value"]))
                 for t in hal["temperatures"]]
    except (OSError, ValueError, KeyError, TypeError):
        status, temps = 0, []

    def rows() -> list[str]:
        return [f"\tTemperature{{mValue={v:.1f}, mType={t}, mName={n}, "
                f"mStatus={status if t == 3 else 0}}}" for n, t, v in temps]

    return "\n".join(["IsStatusOverride: false", "ThermalEventListeners:", "\tcallbacks: 1",
                      "\tkilled: false", "\tbroadcasts count: -1", "ThermalStatusListeners:",
                      "\tcallbacks: 1", "\tkilled: false", "\tbroadcasts count: -1",
                      f"Thermal Status: {status}", "Cached temperatures:", *rows(),
                      "HAL Ready: true", "HAL connection:", "\tThermalHAL 2.0 connected: yes",
                      "Current temperatures from HAL:", *rows(),
                      "Current cooling devices from HAL:",
                      "Temperature static thresholds from HAL:"]).replace("\t", " " * 8) + "\n"


DUMPERS = {"battery": dump_battery, "cpuinfo": dump_cpuinfo, "meminfo": dump_meminfo,
           "thermalservice": dump_thermalservice}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in dumpsys_framework.DUMPERS:  # power, window, activity, ...
        sys.stdout.write(dumpsys_framework.DUMPERS[args[0]](args[1:]))
        return 0
    if args == ["-l"]:
        sys.stdout.write(dumpsys_framework.listing(services()))
        return 0
    if args and args[0] == "-l":
        sys.stdout.write("Currently running services:\n" +
                         "".join(f"  {s}\n" for s in services()))
        return 0
    if not args:
        for name in services():
            t0 = time.monotonic()
            sys.stdout.write("-" * 79 + f"\nDUMP OF SERVICE {name}:\n")
            sys.stdout.write(DUMPERS[name]())
            sys.stdout.write(f"--------- {time.monotonic() - t0:.3f}s was the duration of "
                             f"dumpsys {name}, ending at: {_stamp(time.time())[:-4]}\n")
        return 0
    name = args[0]
    fn = DUMPERS.get(name) if name in services() else None
    if fn is None:
        sys.stderr.write(f"Can't find service: {name}\n")
        return 0
    sys.stdout.write(fn())
    return 0


if __name__ == "__main__":
    sys.exit(main())
