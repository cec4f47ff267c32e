"""Bid round over N virtual phones: live telemetry streams vs one-shot probes vs ONE adb shell
round trip, side by side in one run.

Why: a one-shot round starts a shell on every phone (8 phones were 2.55x one round trip,
100 phones 442 ms). With telemetry each phone keeps one shell open that samples in a loop;
a round is then served from the freshest samples ("streamed, cached": no device I/O; the
sample is at most --interval old and its age is in the Bid), or, when asked for samples
younger than any cached one, by one line written to every open stream ("streamed,
requested": one line written to every open stream before any answer is awaited, each
phone answering with a LIGHT sample: stat, meminfo and leases, the parts that change
between bids; no shell start, no thread per phone).

Caveat printed with the result: every virtual phone shares this machine's cores and one
fleet process, so the phones' own work (the probe runs in mksh either way) is serialised,
unlike real phones. The reference is one `adb shell true` on one phone; the fleet's own
floor for a round that wakes every phone is N `adb shell true` in parallel ("N x true"),
printed beside it, with the laptop's CPU per requested round.

    python bench/bid_stream.py [--sizes 1,8,32,100] [--rounds 15] [--interval 1.0] [--quick]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import shell_floor  # noqa: E402  (bench/ is on sys.path: run as a script or by run_all)

from adbflow.device import AdbServer, Inventory
from adbflow.fleet import adb_server
from adbflow.fleet.control import start_fleet
from adbflow.scheduling.bids import Bidder
from adbflow.scheduling.telemetry import Telemetry


def median_ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1000.0


def rounds(bidder: Bidder, devices, n: int, *, pause: float, want: str,
           failed: list[int]) -> list[float]:
    """Wall times of n rounds; bids that failed (e.g. probes timed out on an overloaded host)
    are counted in `failed`, bids from another source than `want` too (a stream down)."""
    out = []
    for _ in range(n):
        time.sleep(pause)
        t = time.monotonic()
        bids = bidder.gather(devices)
        out.append(time.monotonic() - t)
        failed.append(sum(1 for b in bids if not b.ok or b.source != want))
    return out


def measure(n: int, args) -> dict[str, float]:
    port = adb_server.free_port(15037, 16999)
    base = adb_server.free_port(20000, 29000)
    with tempfile.TemporaryDirectory(prefix="adbflow-bench-bs-") as tmp:
        fleet = start_fleet(Path(tmp) / "fleet", devices=n, adb_port=port, base_port=base,
                            timeout=300)
        try:
            devices = Inventory([AdbServer(port=port)]).devices()
            assert len(devices) == n, len(devices)
            shell, floor = shell_floor(devices, args.rounds)
            bad_one: list[int] = []
            bad_stream: list[int] = []
            with Bidder(timeout=10, max_workers=max(32, n)) as oneshot:
                oneshot.gather(devices)                       # first contact
                one = rounds(oneshot, devices, args.rounds, pause=0.2, want="probe",
                             failed=bad_one)
            cached_tel = Telemetry(interval_s=args.interval, max_age_s=args.interval * 1.5)
            with Bidder(timeout=10, max_workers=max(32, n), telemetry=cached_tel) as streamed:
                streamed.gather(devices)                      # starts the streams (one-shot)
                time.sleep(args.interval * 2.5)               # two samples: load known
                cached = rounds(streamed, devices, args.rounds, pause=0.05, want="stream",
                                failed=bad_stream)
                streamed.telemetry.max_age_s = 0.0            # every round asks for samples
                cpu0 = time.process_time()
                requested = rounds(streamed, devices, args.rounds, pause=0.2, want="stream",
                                   failed=bad_stream)
                cpu = (time.process_time() - cpu0) / args.rounds
            return {"shell": median_ms(shell), "floor": median_ms(floor),
                    "oneshot": median_ms(one), "cached": median_ms(cached),
                    "requested": median_ms(requested), "laptop_cpu": cpu * 1000.0,
                    "failed_oneshot": sum(bad_one), "failed_streamed": sum(bad_stream)}
        finally:
            fleet.down()
            adb_server.kill_server(port)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,8,32,100")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--interval", type=float, default=1.0, help="telemetry sample interval (s)")
    ap.add_argument("--quick", action="store_true", help="N = 8 and 100, 8 rounds (~2 min)")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.rounds = "8,100", min(args.rounds, 8)
    print(f"medians of {args.rounds} rounds; telemetry interval {args.interval:g} s; "
          f"all phones share this host's {os.cpu_count()} cores and one fleet process (CPU "
          "shared with whatever else runs: noisy)")
    print("goals (issue 19): a round at N=8 <= 1.5x one shell, at N=100 <= 3x; 'N x true' is "
          "the fleet's floor for waking N phones at once (real phones each have their own CPU)")
    print(f"{'N':>4} {'shell ms':>9} {'N x true':>9} {'one-shot':>9} {'x shell':>8} "
          f"{'cached':>8} {'x shell':>8} {'requested':>10} {'x shell':>8} {'x floor':>8} "
          f"{'cpu ms':>7} {'failed':>7}")
    print("failed = bids that failed over all rounds, one-shot/streamed (a probe timed out, "
          "or a streamed round fell back to a probe)")
    out = []
    for n in [int(x) for x in args.sizes.split(",") if x.strip()]:
        r = measure(n, args)
        sh = r["shell"]
        print(f"{n:>4} {sh:>9.1f} {r['floor']:>9.1f} {r['oneshot']:>9.1f} "
              f"{r['oneshot'] / sh:>8.2f} {r['cached']:>8.2f} {r['cached'] / sh:>8.2f} "
              f"{r['requested']:>10.1f} {r['requested'] / sh:>8.2f} "
              f"{r['requested'] / r['floor']:>8.2f} {r['laptop_cpu']:>7.1f}"
              f"{r['failed_oneshot']:>5}/{r['failed_streamed']}", flush=True)
        out.append({"n": n, **r})
    return {"rows": out}


if __name__ == "__main__":
    main()
