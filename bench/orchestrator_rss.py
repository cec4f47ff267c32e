"""Orchestrator memory with 100 devices: RSS of one adbflow process doing bid rounds and
watching every device (psutil, sampled every 20 ms from outside the process).

    python bench/orchestrator_rss.py [--quick] [--devices 100]

Why a separate process: the number must be the orchestrator's own footprint, not the
benchmark driver's (which also holds the fleet client). The child runs three phases and
prints a marker when each begins; the parent records the peak RSS per phase:
  idle      python + adbflow imported, no device touched (the baseline of the ratio)
  bids      repeated Bidder.gather over all devices (thread pool + one adb socket each)
  watch     Pipeline.watch over all devices: one inotifyd stream thread per device, the
            listing safety net, the journal (SQLite) — what `adbflow watch` holds at rest
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

CHILD = r"""
import sys, time, threading, json
from pathlib import Path
from adbflow.device import AdbServer, Inventory
from adbflow.scheduling.bids import Bidder
from adbflow.runtime.events import Watching
from adbflow.runtime.pipeline import Pipeline, PipelineConfig
port, rounds, watch_s, data = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
def mark(name, **kw):
    print(json.dumps({"phase": name, **kw}), flush=True)
mark("idle"); time.sleep(1.0)
mark("bids")
inv = Inventory([AdbServer(port=port)])
devs = inv.devices()
b = Bidder(timeout=30)
ok = 0
for _ in range(rounds):
    bids = b.gather(devs); ok = sum(x.ok for x in bids); time.sleep(0.2)
mark("bids_done", devices=len(devs), ok=ok)
ready = threading.Event()
p = Pipeline(PipelineConfig(data_dir=Path(data)), inv,
             on_event=lambda ev: isinstance(ev, Watching) and ready.set())
t = threading.Thread(target=p.watch, kwargs={"poll_s": 2.0}, daemon=True); t.start()
ready.wait(120)
mark("watch", threads=threading.active_count())
time.sleep(watch_s)
mark("end", threads=threading.active_count(),
     streams=sum(1 for th in threading.enumerate() if th.name.startswith("inotifyd-")))
p.stop_event.set(); t.join(30); p.close()
"""


def measure(fleet: Any, *, quick: bool = False) -> dict[str, Any]:
    rounds, watch_s = (3, 4.0) if quick else (10, 15.0)
    with tempfile.TemporaryDirectory(prefix="adbflow-rss-") as tmp:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(fleet.adb_port), str(rounds),
                                 str(watch_s), str(Path(tmp) / "data")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ps = psutil.Process(proc.pid)
        phase = ["start"]
        peaks: dict[str, int] = {}
        info: dict[str, Any] = {}
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                try:
                    rss = ps.memory_info().rss
                except psutil.Error:
                    return
                peaks[phase[0]] = max(peaks.get(phase[0], 0), rss)
                time.sleep(0.02)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            info[msg["phase"]] = msg
            if msg["phase"] in ("idle", "bids", "watch"):
                phase[0] = msg["phase"]
        proc.wait(timeout=120)
        done.set()
        sampler.join(5)
        err = proc.stderr.read() if proc.stderr else ""
        if proc.returncode != 0:
            raise RuntimeError(f"orchestrator child failed: {err[-1500:]}")
    mb = 1024 * 1024
    phases = [{"phase": "bid rounds", "peak_rss_mb": peaks.get("bids", 0) / mb},
              {"phase": "watch", "peak_rss_mb": peaks.get("watch", 0) / mb}]
    return {"devices": info.get("bids_done", {}).get("devices"),
            "bids_ok": info.get("bids_done", {}).get("ok"),
            "baseline_rss_mb": peaks.get("idle", 0) / mb, "phases": phases,
            "watch_threads": info.get("end", {}).get("threads"),
            "inotify_streams": info.get("end", {}).get("streams"),
            "rounds": rounds, "watch_s": watch_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--devices", type=int, default=100)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import fleet_up, print_table
    with fleet_up(args.devices) as fleet:
        res = measure(fleet, quick=args.quick)
    print_table({"rss": res})
    print({k: v for k, v in res.items() if k != "phases"})


if __name__ == "__main__":
    main()
