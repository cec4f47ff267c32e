"""Clock offset estimation against injected truth: error distribution per device.

Starts a small virtual fleet whose device wall clocks are skewed (libfaketime: offsets of
several seconds, drift of tens to hundreds of ppm), syncs each device --rounds times and
prints |estimate - truth| p50/p95/max per device, the bound, the probing time, and side by
side in the same run the same estimator fed by one `adb shell` per sample (the fallback for
devices without shell_v2): the ratio shows what the persistent shell buys.
Times are this machine's loopback fleet (2 shared cores): the ratio is what carries over.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile

from tabulate import tabulate

from adbflow.device import AdbServer, Device
from adbflow.fleet import adb_server
from adbflow.fleet.clock import ClockSkew, libfaketime_path
from adbflow.fleet.control import start_fleet
from adbflow.runtime.clock import percentile
from adbflow.runtime.clocksync import _sync_one_shot, sync_clock

SKEWS = [(3.7, 40.0), (-5.2, -120.0), (8.05, 250.0), (-12.5, 15.0)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    if libfaketime_path() is None:
        raise SystemExit("libfaketime is missing: apt-get install -y faketime libfaketime")
    port = adb_server.free_port(15037, 16999)
    base = adb_server.free_port(20000, 29000)
    with tempfile.TemporaryDirectory(prefix="adbflow-bench-") as state:
        fleet = start_fleet(state, devices=args.devices, adb_port=port, base_port=base, timeout=120)
        try:
            rows, totals = [], {"session": [], "one-shot": []}
            for serial, (off, ppm) in zip(fleet.serials, SKEWS, strict=False):
                f = fleet.fault(serial, clock_offset_s=off, clock_drift_ppm=ppm)["faults"]
                truth = ClockSkew(f["clock_offset_s"], f["clock_drift_ppm"], f["clock_ref"])
                dev = Device(serial, AdbServer(port=port))
                for name, sync in (("session", lambda d=dev: sync_clock(d)),
                                   ("one-shot", lambda d=dev: _sync_one_shot(d, 20, 0.1, None,
                                                                             10.0))):
                    errs, bounds, probes, rtts = [], [], [], []
                    for _ in range(args.rounds):
                        est = sync()
                        errs.append(abs(est.offset - truth.offset_at(est.at)) * 1e3)
                        bounds.append(est.bound * 1e3)
                        probes.append(est.probe_s * 1e3)
                        rtts.append(est.rtt * 1e3)
                    totals[name] += errs
                    rows.append([serial, f"{off:+.2f} s {ppm:+.0f} ppm", name,
                                 f"{percentile(errs, 50):.3f}", f"{percentile(errs, 95):.3f}",
                                 f"{max(errs):.3f}", f"{statistics.median(bounds):.3f}",
                                 f"{statistics.median(rtts):.3f}", f"{statistics.median(probes):.1f}",
                                 sum(e <= b for e, b in zip(errs, bounds, strict=False))])
            print(tabulate(rows, headers=["device", "injected", "channel", "err p50 ms",
                                          "err p95 ms", "err max ms", "bound med ms",
                                          "min-rtt med ms", "probe ms", f"within bound /{args.rounds}"]))
            s95, o95 = percentile(totals["session"], 95), percentile(totals["one-shot"], 95)
            print(f"\nall devices: session p95 {s95:.3f} ms, one-shot p95 {o95:.3f} ms "
                  f"-> one-shot/session {o95 / max(s95, 1e-6):.1f}x (target: session p95 < 1 ms)")
        finally:
            fleet.down()
            adb_server.kill_server(port)


if __name__ == "__main__":
    main()
