"""Device backend costs: N namespace devices in one asyncio process (no adb involved).

Prints: start time for N devices, holder RSS per device, load-ticker cost per tick,
nsenter command latency (median of 30 `true`), label_image wall time per profile and
raw llama.cpp tokens/s of the host (no padding). Ratios/numbers only; nothing asserted.

    python bench/fleet_backend_bench.py [--devices 100] [--programs]
"""
from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import time
from pathlib import Path

import psutil
from PIL import Image

from adbflow.fleet import rootfs
from adbflow.fleet.backend import NamespaceBackend
from adbflow.fleet.loadmodel import LoadTicker
from adbflow.fleet.profile import list_virtual_profiles, load_virtual_profile
from adbflow.paths import ASSETS_DIR

LABEL = ("/data/local/tmp/label_image -m /data/local/tmp/efficientnet_lite0.tflite "
         "-l /data/local/tmp/labels.txt -i /data/local/tmp/chelsea.bmp -t 4 -c 1")


async def sh(b: NamespaceBackend, cmd: str) -> tuple[str, str]:
    proc, _ = await b.spawn(cmd, pty=False)
    out, err = await proc.communicate()
    return out.decode(), err.decode()


async def main(n: int, programs: bool) -> None:
    state = Path(tempfile.mkdtemp(prefix="adbflow-bench-"))
    profiles = list_virtual_profiles()
    devs = [NamespaceBackend(f"127.0.0.1:{21000 + i}", load_virtual_profile(profiles[i % 6]),
                             rootfs.device_root(state, f"127.0.0.1:{21000 + i}"))
            for i in range(n)]
    t0 = time.monotonic()
    for d in devs:
        await d.start()
    print(f"start {n} devices: {time.monotonic() - t0:.2f} s")
    await asyncio.sleep(3)
    rss = []
    for d in devs:
        holder = psutil.Process(d.holder_pid)
        procs = [holder, holder.parent()] + holder.children(recursive=True)
        rss.append(sum(p.memory_info().rss for p in procs))
    print(f"holder RSS per device (unshare+mksh+sleep, shared pages counted): "
          f"{statistics.mean(rss) / 2**20:.1f} MiB")
    ticker = LoadTicker.for_running_loop()
    costs = []
    for _ in range(10):
        await asyncio.sleep(0.5)
        costs.append(ticker.cost_s)
    print(f"load ticker: {statistics.median(costs) * 1000:.1f} ms per tick for {n} devices "
          f"(period {0.004 * n if n > 25 else 0.1:.2f} s)")
    lat = []
    for _ in range(30):
        t = time.monotonic()
        await sh(devs[0], "true")
        lat.append(time.monotonic() - t)
    print(f"nsenter `true` round trip: median {statistics.median(lat) * 1000:.1f} ms")
    if programs:
        for name in profiles:
            d = next(x for x in devs if x.profile.name == name)
            Image.open(ASSETS_DIR / "chelsea.png").convert("RGB").save(
                d.resolve("/data/local/tmp/chelsea.bmp"), format="BMP")
            t = time.monotonic()
            _, err = await sh(d, LABEL)
            avg = re.search(r"average time: ([\d.]+)", err)
            print(f"label_image -c 1 on {name}: wall {time.monotonic() - t:.2f} s, "
                  f"reported {avg.group(1) if avg else '?'} ms")
    for d in devs:
        await d.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--programs", action="store_true")
    a = ap.parse_args()
    asyncio.run(main(a.devices, a.programs))
