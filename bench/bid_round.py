"""Bid round over N virtual devices vs one device's probe round trip, measured side by side.

Why: a bid round must be parallel — its wall time should stay close to ONE probe round trip,
not grow with the number of phones. Prints medians and the ratio (target: < 2x for 8 devices).
Times are from this machine's loopback fleet; the ratio is what carries over.

Caveat printed with the result: all virtual devices share the laptop's cores and one fleet
process, so each device's per-command cost (spawn inside its namespace) is serialised — unlike
real phones, which each have their own CPU. The `adb shell true` ratio is printed as the floor
the fleet itself imposes; --transport-delay S adds a simulated link latency per reply packet
(a fleet fault switch) to show the ratio when latency, not the shared CPU, dominates.

    python bench/bid_round.py [--devices 8] [--rounds 20] [--transport-delay 0.005]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from common import shell_floor  # noqa: E402  (bench/ is on sys.path: run as a script or by run_all)

from adbflow.device import AdbServer, Inventory
from adbflow.fleet import adb_server
from adbflow.fleet.control import start_fleet
from adbflow.scheduling.bids import Bidder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--transport-delay", type=float, default=0.0,
                    help="simulated seconds of link latency per reply packet (fleet fault)")
    args = ap.parse_args()
    port = adb_server.free_port(15037, 16999)
    base = adb_server.free_port(20000, 29000)
    with tempfile.TemporaryDirectory(prefix="adbflow-bench-") as state:
        fleet = start_fleet(state, devices=args.devices, adb_port=port, base_port=base, timeout=120)
        try:
            devices = Inventory([AdbServer(port=port)]).devices()
            assert len(devices) == args.devices, devices
            if args.transport_delay:
                for d in devices:
                    fleet.fault(d.serial, transport_delay_s=args.transport_delay)
            floor_one, floor_many = shell_floor(devices, args.rounds, many_timeout=10)
            bidder = Bidder(timeout=10)
            bidder.gather(devices)                     # first contact (two-sample probes)
            single, rounds, probe_rtts = [], [], []
            for _ in range(args.rounds):
                time.sleep(0.2)                        # keep the load window >= MIN_WINDOW_S
                t = time.monotonic()
                b = bidder.bid(devices[0])
                single.append(time.monotonic() - t)
                probe_rtts.append(b.probe_rtt_s)
                time.sleep(0.2)
                t = time.monotonic()
                bids = bidder.gather(devices)
                rounds.append(time.monotonic() - t)
                assert all(x.ok for x in bids), [x.error for x in bids if not x.ok]
            one, many = statistics.median(single), statistics.median(rounds)
            print(f"devices: {args.devices}, rounds: {args.rounds}, "
                  f"simulated transport delay: {args.transport_delay * 1000:g} ms/packet")
            f1, f8 = statistics.median(floor_one), statistics.median(floor_many)
            print(f"floor `adb shell true`: one {f1 * 1000:.1f} ms, {args.devices} in parallel "
                  f"{f8 * 1000:.1f} ms -> {f8 / f1:.2f}x (fleet's own serialisation)")
            print(f"one device bid (probe round trip + parse): median {one * 1000:.1f} ms "
                  f"(shell part {statistics.median(probe_rtts) * 1000:.1f} ms)")
            print(f"{args.devices}-device bid round:            median {many * 1000:.1f} ms "
                  f"(p90 {sorted(rounds)[int(0.9 * len(rounds))] * 1000:.1f} ms)")
            print(f"ratio round/one: {many / one:.2f}x  (target < 2x; sequential would be "
                  f"~{args.devices}x)")
        finally:
            fleet.down()
            adb_server.kill_server(port)


if __name__ == "__main__":
    main()
