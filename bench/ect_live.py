"""ect vs lowest-cpu on a LIVE virtual fleet: 12 pictures through the real pipeline.

Four virtual devices of different classes (flagship_2025, midrange_2023, lowend_2020,
old_2017) behind a private adb server; real models (efficientnet_lite0, SmolLM2-135M) with
times padded to each class's published speed (the fleet says so in its output). The fast
phones carry some user load (30 % / 20 %), the slow ones are idle - the common case where
"lowest CPU load" picks the slowest phone. Each policy gets a fresh journal (nothing
learned carries over) and the same 12 pictures submitted at once; we print the makespan,
mean and p95 job latency (submit -> job_done) and where each stage ran.

    python bench/ect_live.py [--pictures 12] [--json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from adbflow.device import AdbServer, Inventory
from adbflow.fleet import adb_server as fleet_adb
from adbflow.fleet.control import start_fleet
from adbflow.paths import ASSETS_DIR
from adbflow.runtime.events import BidRound, Event, JobDone, JobFailed
from adbflow.runtime.pipeline import Pipeline, PipelineConfig

CLASSES = ["flagship_2025", "midrange_2023", "lowend_2020", "old_2017"]
LOADS = [30.0, 20.0, 0.0, 0.0]


def run_batch(policy: str, port: int, images: list[Path], data_dir: Path, timeout: float) -> dict:
    done_at: dict[int, float] = {}
    where: Counter = Counter()
    lock = threading.Lock()

    def on_event(ev: Event) -> None:
        with lock:
            if isinstance(ev, JobDone):
                done_at[ev.job] = time.monotonic()
            elif isinstance(ev, JobFailed):
                done_at[ev.job] = float("nan")
            elif isinstance(ev, BidRound):
                where[(ev.stage, ev.winner)] += 1

    cfg = PipelineConfig(data_dir=data_dir, policy=policy, concurrency=len(images))
    pipe = Pipeline(cfg, Inventory([AdbServer(port=port)]), on_event=on_event)
    try:
        t0 = time.monotonic()
        ids = []
        for img in images:
            job_id, _ = pipe.add_laptop_image(img)
            ids.append(job_id)
            pipe.submit(job_id)
        if not pipe.wait_idle(timeout):
            raise RuntimeError(f"{policy}: batch not finished within {timeout:.0f} s")
        lat = [done_at[j] - t0 for j in ids if j in done_at]
        failed = sum(1 for x in lat if x != x) + (len(ids) - len(lat))
        ok = sorted(x for x in lat if x == x)
        return {"policy": policy, "jobs": len(ids), "failed": failed,
                "makespan_s": round(max(ok), 2) if ok else None,
                "mean_latency_s": round(statistics.mean(ok), 2) if ok else None,
                "p95_latency_s": round(ok[min(len(ok) - 1, int(0.95 * len(ok)))], 2) if ok else None,
                "placement": {f"{stage}@{serial}": n for (stage, serial), n in sorted(where.items())}}
    finally:
        pipe.stop_event.set()
        pipe.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pictures", type=int, default=12)
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="adbflow-ect-live-") as tmp:
        tmpd = Path(tmp)
        images = []
        for i in range(args.pictures):   # distinct files: the journal dedupes by path
            src = ASSETS_DIR / ("chelsea.png" if i % 2 == 0 else "coffee.png")
            dst = tmpd / f"pic{i:02d}{src.suffix}"
            shutil.copy(src, dst)
            images.append(dst)
        port = fleet_adb.free_port(15037, 16999)
        base = fleet_adb.free_port(20000, 29000)
        client = None
        try:
            client = start_fleet(tmpd / "fleet", devices=len(CLASSES), profiles=CLASSES,
                                 adb_port=port, base_port=base, timeout=120.0)
            serial_class = dict(zip(client.serials, CLASSES))
            for serial, pct in zip(client.serials, LOADS):
                client.load(serial, pct)
            time.sleep(2.0)
            for policy in ("lowest-cpu", "ect"):
                res = run_batch(policy, port, images, tmpd / f"data-{policy}", args.timeout)
                res["placement"] = {k.split("@")[0] + "@" + serial_class.get(k.split("@")[1], k): v
                                    for k, v in res["placement"].items()}
                results.append(res)
                time.sleep(3.0)          # let loads settle between batches
        finally:
            if client is not None:
                client.down()
            fleet_adb.kill_server(port)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"live virtual fleet: {', '.join(f'{c} ({load:g}% load)' for c, load in zip(CLASSES, LOADS))}; "
          f"{args.pictures} pictures submitted at once")
    for r in results:
        print(f"  {r['policy']:<11} makespan {r['makespan_s']} s  mean {r['mean_latency_s']} s  "
              f"p95 {r['p95_latency_s']} s  failed {r['failed']}  {r['placement']}")
    a, b = results[0], results[1]
    if a["mean_latency_s"] and b["mean_latency_s"]:
        print(f"  lowest-cpu / ect: mean {a['mean_latency_s'] / b['mean_latency_s']:.2f}x, "
              f"makespan {a['makespan_s'] / b['makespan_s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
