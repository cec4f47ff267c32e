"""Every adbflow benchmark in one command: a table of ratios measured side by side.

    python bench/run_all.py [--quick] [--only bid,overhead,transfer,detection,rss]

Why ratios, side by side: absolute times depend on this laptop and on the virtual fleet
(all "phones" share the laptop's cores); the ratio of adbflow to what a user would
otherwise do (adb CLI, a shell script, one raw round trip) measured in the same minute on
the same fleet is what carries over. Every goal is printed with "met"/"MISSED" and the
measured reason; nothing is asserted. Results: bench/results/latest.json.

Parts (each is also runnable alone, e.g. `python bench/transfer.py`):
  bid        bid round over N = 1, 8, 32, 100 devices vs one raw `adb shell` round trip
             (this module; bench/bid_round.py is run as a cross-check without --quick)
  overhead   bench/overhead.py   per-job orchestration overhead vs a plain adb shell script
  transfer   bench/transfer.py   Device.pull/push vs `adb pull/push` of the same files
  detection  bench/detection.py  picture landing -> job started, inotify and listing-only
  rss        bench/orchestrator_rss.py  RSS of an orchestrator process with 100 devices
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from adbflow.device import AdbServer, Device, Inventory  # noqa: E402
from adbflow.fleet import adb_server  # noqa: E402
from adbflow.fleet.control import FleetClient, start_fleet  # noqa: E402

RESULTS = BENCH_DIR / "results" / "latest.json"


# ---------------------------------------------------------------------------- shared helpers

@contextlib.contextmanager
def fleet_up(devices: int, profiles: list[str] | None = None) -> Iterator[FleetClient]:
    """A private fleet on a private adb server (never 5037), torn down on exit."""
    port = adb_server.free_port(15037, 16999)
    base = adb_server.free_port(20000, 29000)
    with tempfile.TemporaryDirectory(prefix="adbflow-bench-") as state:
        fleet = start_fleet(state, devices=devices, profiles=profiles, adb_port=port,
                            base_port=base, timeout=240)
        try:
            yield fleet
        finally:
            try:
                fleet.down()
            finally:
                adb_server.kill_server(port)


def devices_of(fleet: FleetClient) -> list[Device]:
    """Device objects in fleet order (inventory order is the adb server's)."""
    by = {d.serial: d for d in Inventory([AdbServer(port=fleet.adb_port)]).devices()}
    return [by[s] for s in fleet.serials if s in by]


def adb_cli(fleet: FleetClient, serial: str, *args: str, timeout: float = 60) -> str:
    """The adb CLI against the fleet's server, as a user's script calls it; stdout+stderr."""
    proc = subprocess.run([adb_server.adb_binary(), "-P", str(fleet.adb_port), "-s", serial,
                           *args], check=True, timeout=timeout, capture_output=True, text=True)
    return proc.stdout + proc.stderr


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def p90(xs: list[float]) -> float:
    return sorted(xs)[min(len(xs) - 1, int(0.9 * len(xs)))] if xs else float("nan")


# ---------------------------------------------------------------------------- bid round

def bid_scaling(fleet: FleetClient, *, sizes: list[int], rounds: int) -> dict[str, Any]:
    """Median wall time of Bidder.gather over the first N devices, and of one raw adb shell
    round trip (the adb CLI, and adbflow's in-process Device.shell) on the same fleet."""
    from adbflow.scheduling.bids import Bidder
    devs = devices_of(fleet)
    first = devs[0]
    for _ in range(3):
        adb_cli(fleet, first.serial, "shell", "true")
        first.shell("true", timeout=10)
    cli = [timed(lambda: adb_cli(fleet, first.serial, "shell", "true")) for _ in range(rounds)]
    inproc = [timed(lambda: first.shell("true", timeout=10)) for _ in range(rounds)]
    base_cli, base_in = median(cli), median(inproc)
    rows = []
    from concurrent.futures import ThreadPoolExecutor
    for n in sizes:
        subset = devs[:n]
        # the floor this fleet imposes: N parallel `true` round trips (all virtual devices
        # spawn their commands on the same laptop cores, unlike real phones)
        with ThreadPoolExecutor(max_workers=n) as pool:
            floor = [timed(lambda: list(pool.map(lambda d: d.shell("true", timeout=30),
                                                 subset))) for _ in range(rounds)]
        bidder = Bidder(timeout=30)
        bidder.gather(subset)                         # first contact: the two-sample probe
        times, bad = [], 0
        for _ in range(rounds):
            time.sleep(0.25)                          # a real load window between rounds
            t0 = time.perf_counter()
            bids = bidder.gather(subset)
            times.append(time.perf_counter() - t0)
            bad += sum(1 for b in bids if not b.ok)
        med = median(times)
        rows.append({"n": n, "median_s": med, "p90_s": p90(times), "failed_bids": bad,
                     "parallel_true_floor_s": median(floor),
                     "ratio_vs_parallel_floor": med / median(floor),
                     "ratio_vs_adb_cli": med / base_cli, "ratio_vs_one_shell": med / base_in,
                     "per_device_ms": med / n * 1000})
    # sub-linear: time per extra device falls as N grows (fixed costs amortised, parallel I/O)
    growth = {f"{a['n']}->{b['n']}": (b["median_s"] / a["median_s"]) / (b["n"] / a["n"])
              for a, b in zip(rows, rows[1:])}
    return {"adb_cli_shell_s": base_cli, "inprocess_shell_s": base_in, "rows": rows,
            "growth_vs_linear": growth, "cpus": psutil.cpu_count()}


def bid_round_crosscheck(devices: int = 8, rounds: int = 10) -> dict[str, Any]:
    """bench/bid_round.py (engineer A's) on its own fleet: its ratio round/one-device-bid."""
    proc = subprocess.run([sys.executable, str(BENCH_DIR / "bid_round.py"), "--devices",
                           str(devices), "--rounds", str(rounds)], capture_output=True,
                          text=True, timeout=600)
    m = re.search(r"ratio round/one: ([0-9.]+)x", proc.stdout)
    return {"returncode": proc.returncode, "ratio_round_vs_one_bid": float(m.group(1)) if m
            else None, "output": proc.stdout[-1500:] + proc.stderr[-500:]}


# ---------------------------------------------------------------------------- table

def _fmt(x: Any, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "n/a"
    if isinstance(x, float):
        if unit == "ms":
            return f"{x * 1000:.1f} ms"
        if unit == "MB/s":
            return f"{x:.1f} MB/s"
        if unit == "MB":
            return f"{x:.1f} MB"
        return f"{x:.3g}"
    return str(x)


def table_rows(res: dict[str, Any]) -> list[list[str]]:
    """One line per measured comparison: what, adbflow, baseline, ratio, goal, verdict."""
    rows: list[list[str]] = []

    def add(what: str, ours: str, base: str, ratio: float | None, goal: str, ok: bool | None,
            note: str = "") -> None:
        verdict = "n/a" if ok is None else ("met" if ok else "MISSED")
        rows.append([what, ours, base, "n/a" if ratio is None else f"{ratio:.2f}x", goal,
                     verdict + (f" ({note})" if note else "")])

    bid = res.get("bid")
    if bid and "rows" in bid:
        for r in bid["rows"]:
            goal = "<= 2x at N=8" if r["n"] == 8 else ""
            ok = (r["ratio_vs_adb_cli"] <= 2.0) if r["n"] == 8 else None
            add(f"bid round N={r['n']}", _fmt(r["median_s"], "ms"),
                f"adb shell {_fmt(bid['adb_cli_shell_s'], 'ms')}", r["ratio_vs_adb_cli"], goal,
                ok, f"{r['ratio_vs_one_shell']:.1f}x one in-process shell "
                f"{_fmt(bid['inprocess_shell_s'], 'ms')}; {r['n']} parallel `true` on this fleet"
                f" {_fmt(r['parallel_true_floor_s'], 'ms')} -> bid/floor "
                f"{r['ratio_vs_parallel_floor']:.1f}x")
        g = bid["growth_vs_linear"]
        last = list(g.values())[-1] if g else None
        add("bid round growth (time ratio / N ratio)", ", ".join(f"{k}: {v:.2f}" for k, v in
                                                                 g.items()), "linear = 1.00",
            last, "< 1 (sub-linear)", None if last is None else all(v < 1 for v in g.values()))
        if bid.get("crosscheck", {}).get("ratio_round_vs_one_bid") is not None:
            c = bid["crosscheck"]
            add("bid_round.py N=8 vs one-device bid", "", "", c["ratio_round_vs_one_bid"],
                "< 2x", c["ratio_round_vs_one_bid"] < 2.0)
    ov = res.get("overhead")
    if ov and "adbflow" in ov:
        a, s = ov["adbflow"], ov["script"]
        add("job overhead (end-to-end minus device programs)", _fmt(a["overhead_s"], "ms"),
            f"adb script {_fmt(s['overhead_s'], 'ms')}", a["overhead_s"] / s["overhead_s"]
            if s["overhead_s"] > 0 else None, "< 1x (faster than script)",
            a["overhead_s"] < s["overhead_s"])
        add("overhead share of the job", f"{a['overhead_frac'] * 100:.1f}%",
            f"script {s['overhead_frac'] * 100:.1f}%", None, "<= 10% of job",
            a["overhead_frac"] <= 0.10, ov.get("note", ""))
        add("job end-to-end (pull..story)", _fmt(a["total_s"], "ms"),
            f"adb script {_fmt(s['total_s'], 'ms')}", a["total_s"] / s["total_s"], "", None,
            "device runs: adbflow " + _fmt(a["device_run_s"], "ms") + ", script "
            + _fmt(s["device_run_s"], "ms") + " (story length varies)")
    tr = res.get("transfer")
    if tr and "rows" in tr:
        for r in tr["rows"]:
            add(f"{r['op']} {r['label']}", _fmt(r["adbflow_mb_s"], "MB/s"),
                f"adb {_fmt(r['adb_mb_s'], 'MB/s')}", r["ratio"], ">= 0.9x", r["ratio"] >= 0.9,
                "adb's self-reported rate (no process start) "
                f"{_fmt(r.get('adb_self_mb_s'), 'MB/s')}")
    det = res.get("detection")
    if det and "modes" in det:
        for m in det["modes"]:
            if m["inotify"]:
                goal, ok = "median < 0.5 s", m["median_s"] < 0.5
            else:
                goal = f"<= poll {m['poll_s']:g} s + 0.5"
                ok = m["max_s"] <= m["poll_s"] + 0.5
            add(f"detection ({'inotify' if m['inotify'] else 'listing only'})",
                f"median {_fmt(m['median_s'], 'ms')}", f"max {_fmt(m['max_s'], 'ms')}",
                None, goal, ok, f"{m['n']} pictures")
    rss = res.get("rss")
    if rss and "phases" in rss:
        for ph in rss["phases"]:
            add(f"orchestrator RSS: {ph['phase']}", _fmt(ph["peak_rss_mb"], "MB"),
                f"idle import {_fmt(rss['baseline_rss_mb'], 'MB')}",
                ph["peak_rss_mb"] / rss["baseline_rss_mb"], "", None,
                f"{rss['devices']} devices")
    return rows


def run_one(name: str, measure: Callable[..., dict[str, Any]], quick: bool) -> dict[str, Any]:
    """What a single benchmark's own `main` does: one flagship phone, measure, print its rows."""
    with fleet_up(1, ["flagship_2025"]) as fleet:
        res = measure(fleet, quick=quick)
    print_table({name: res})
    return res


def print_table(res: dict[str, Any]) -> None:
    from tabulate import tabulate
    print(tabulate(table_rows(res), headers=["benchmark", "adbflow", "baseline", "ratio", "goal",
                                             "verdict"], disable_numparse=True))
    for name, part in res.items():
        if isinstance(part, dict) and part.get("error"):
            print(f"{name}: FAILED TO RUN: {part['error']}")


# ---------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (about 2-3 minutes)")
    ap.add_argument("--only", default="bid,overhead,transfer,detection,rss",
                    help="comma-separated parts to run")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    quick = args.quick
    import detection
    import orchestrator_rss
    import overhead
    import transfer

    res: dict[str, Any] = {"meta": {"quick": quick, "python": platform.python_version(),
                                    "cpus": psutil.cpu_count(), "started": time.time(),
                                    "machine": platform.machine()}}
    t_all = time.monotonic()

    def part(name: str, fn: Callable[[], dict[str, Any]]) -> None:
        if name not in parts:
            return
        t0 = time.monotonic()
        print(f"[{name}] running ...", file=sys.stderr, flush=True)
        try:
            res[name] = fn()
        except Exception as exc:  # noqa: BLE001 - one broken part must not hide the others
            res[name] = {"error": f"{type(exc).__name__}: {exc}"}
        res[name]["wall_s"] = round(time.monotonic() - t0, 1)
        print(f"[{name}] {res[name]['wall_s']} s", file=sys.stderr, flush=True)

    if parts & {"bid", "rss"}:
        n_max = 100
        with fleet_up(n_max) as big:
            part("bid", lambda: bid_scaling(big, sizes=[1, 8, 32, 100],
                                            rounds=5 if quick else 15))
            part("rss", lambda: orchestrator_rss.measure(big, quick=quick))
    if parts & {"overhead", "transfer", "detection"}:
        with fleet_up(2, ["flagship_2025"]) as small:
            part("overhead", lambda: overhead.measure(small, quick=quick))
            part("transfer", lambda: transfer.measure(small, quick=quick))
            part("detection", lambda: detection.measure(small, quick=quick))
    if "bid" in parts and not quick and "error" not in res.get("bid", {"error": 1}):
        res["bid"]["crosscheck"] = bid_round_crosscheck()
    res["meta"]["wall_s"] = round(time.monotonic() - t_all, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, default=str))
    print_table(res)
    print(f"\n(all 'phones' are virtual devices sharing this machine's {psutil.cpu_count()} "
          f"cores; wall {res['meta']['wall_s']} s; JSON: {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
