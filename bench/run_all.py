"""Every adbflow benchmark in one command: a table of ratios measured side by side.

    python bench/run_all.py [--quick] [--only bid,overhead,transfer,detection,rss,throughput,...]

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
Issue 19 (throughput that grows with the fleet); each is its own script with its own fleet
and `--quick` (under ~3 minutes each), called here as `main(argv) -> dict`:
  throughput    bench/throughput.py    pictures/min, N = 8/16 (2/4/8/16 without --quick) vs the
                                       ideal and the old fixed pool of 4
  bidstream     bench/bid_stream.py    bid round N = 8/100 (1/8/32/100): streamed (cached and
                                       requested) vs one-shot vs one adb shell
  warm          bench/warm.py          story latency: resident llama-server vs one-shot, per
                                       default class (its own fleet; no resident classifier exists)
  transfer_big  bench/transfer_big.py  push/pull 200 MB and 1 GB vs the adb CLI
  provision     bench/provision.py     8 phones vs a sequential `adb push` loop (loopback, and
                                       each phone's link at its profile's rate, simulated)
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from common import adb_cli, devices_of, fleet_up, median, p90, print_table, run_one, table_rows, timed  # noqa: E402,F401

from adbflow.fleet.control import FleetClient  # noqa: E402

RESULTS = BENCH_DIR / "results" / "latest.json"
DEFAULT_PARTS = "bid,overhead,transfer,detection,rss"

#: Issue 19's benches: part name -> module in bench/ (each `main(argv) -> dict`, `--quick`).
#: "warm" is measured by bench/warm.measure on a fleet of its default classes (main() below).
ISSUE19 = {"throughput": "throughput", "bidstream": "bid_stream", "warm": "warm",
           "transfer_big": "transfer_big", "provision": "provision"}


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


# ---------------------------------------------------------------------------- issue 19

def issue19_part(module: str, quick: bool) -> dict[str, Any]:
    """One issue-19 bench, in this process, with its own fleet; its printed table stays."""
    import importlib
    if not (BENCH_DIR / f"{module}.py").exists():
        return {"error": f"bench/{module}.py not present (not built on this branch)"}
    mod = importlib.import_module(module)
    out = mod.main(["--quick"] if quick else [])
    return out if isinstance(out, dict) else {"result": out}


# ---------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (about 2-3 minutes)")
    ap.add_argument("--only", default=",".join([DEFAULT_PARTS, *ISSUE19]),
                    help="comma-separated parts to run (default: all; issue 19's: "
                         + ",".join(ISSUE19) + ")")
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
    if "warm" in parts:
        import warm
        with fleet_up(len(warm.DEFAULT_PROFILES), list(warm.DEFAULT_PROFILES)) as classes:
            part("warm", lambda: warm.measure(classes, quick=quick))
    for name, module in ISSUE19.items():
        if name == "warm":
            continue  # measured above, on its own fleet of default classes
        part(name, lambda module=module: issue19_part(module, quick))
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
