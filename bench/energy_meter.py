"""Energy meter against the fleet's battery model: measured / truth per window and quirk,
and what metering costs the device (its own CPU use with and without the meter running).

The truth is the battery model's integral of V x I_load (fleet/battery.py, simulated);
the meter only sees sysfs like on a phone. Same run, side by side: ratios carry over,
absolute joules are the model's.
"""
from __future__ import annotations

import argparse
import tempfile
import time

from tabulate import tabulate

from adbflow.device import AdbServer, Device
from adbflow.fleet import adb_server
from adbflow.fleet.control import start_fleet
from adbflow.runtime.energymeter import EnergyMeter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="busy part of each window")
    args = ap.parse_args()
    port = adb_server.free_port(15037, 16999)
    base = adb_server.free_port(20000, 29000)
    with tempfile.TemporaryDirectory(prefix="adbflow-bench-") as state:
        fleet = start_fleet(state, devices=1, adb_port=port, base_port=base, timeout=120)
        try:
            serial = fleet.serials[0]
            dev = Device(serial, AdbServer(port=port))
            rows = []
            for quirks, usb, load in (("", False, 0), ("", False, 50), ("", False, 90),
                                      ("ma", False, 90), ("reversed", False, 90),
                                      ("frozen", False, 90), ("", True, 90)):
                fleet.clear_faults(serial)
                fleet.fault(serial, battery_usb=usb, battery_quirks=quirks)
                fleet.load(serial, 0)
                time.sleep(1.5)          # a gauge update after (un)plugging: a steady baseline
                m = EnergyMeter(dev).start()
                m.mark_start()
                e0 = fleet.call("model", serial=serial)["battery_energy_j"]
                fleet.load(serial, load)
                time.sleep(args.seconds)
                fleet.load(serial, 0)
                e1 = fleet.call("model", serial=serial)["battery_energy_j"]
                rep = m.stop()
                got = rep.gross_j
                rows.append([quirks or "-", "usb" if usb else "battery", load,
                             f"{e1 - e0:.2f}", "-" if got is None else f"{got:.2f}",
                             "-" if got is None else f"{got / (e1 - e0):.3f}",
                             "-" if rep.net_j is None else f"{rep.net_j:.2f}",
                             f"{rep.gauge_period_s or 0:.3f}", f"{rep.sample_period_s or 0:.3f}",
                             "; ".join(f[:40] for f in rep.flags) or "-"])
            fleet.clear_faults(serial)
            print(tabulate(rows, headers=["quirk", "power", "load %", "truth J", "measured J",
                                          "ratio", "net J", "gauge s", "sample s", "flags"]))
            # cost: the device's own CPU (model's sample of its processes) idle vs metering
            time.sleep(2.5)
            idle = fleet.call("model", serial=serial)["own_cpu_cores"]
            m = EnergyMeter(dev, baseline_s=0.6).start()
            m.mark_start()
            time.sleep(3.0)
            during = fleet.call("model", serial=serial)["own_cpu_cores"]
            m.stop()
            print(f"\ndevice's own CPU: idle {idle:.3f} cores, while metering {during:.3f} cores "
                  f"(+{during - idle:.3f}; the sampler is mksh builtins, no fork per sample)")
        finally:
            fleet.down()
            adb_server.kill_server(port)


if __name__ == "__main__":
    main()
