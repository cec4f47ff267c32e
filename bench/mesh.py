"""Per-job latency: the mesh's phone-side orchestrator (`single`) vs the laptop orchestrator,
on the same virtual fleet, measured side by side in one run.

Fleet: X = old_2017 (the phone that takes the pictures, slowest), flagship_2025 and
midrange_2023; real models, times padded to each class (the fleet says so); n_predict 16
for both sides (same profiles copy). Pictures are handled one at a time (latency, not
throughput).
- laptop: `Pipeline.add_laptop_image` + submit, latency = submit -> job_done. It starts from
  a picture already on the laptop: no detection and no pull from X, which favours it.
- single: `fleet snap` on X, latency = snap -> the job record on X says `done` (polled
  over adb every 0.2 s: up to 0.2 s of the number is polling).

    python bench/mesh.py [--pictures 4] [--json]
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from adbflow.device import AdbServer, Device, Inventory
from adbflow.fleet import adb_server as fleet_adb
from adbflow.fleet.control import start_fleet
from adbflow.mesh import control
from adbflow.paths import ASSETS_DIR, PROFILES_DIR
from adbflow.runtime.events import Event, JobDone, JobFailed
from adbflow.runtime.pipeline import Pipeline, PipelineConfig

CLASSES = ["old_2017", "flagship_2025", "midrange_2023"]


def cheap_profiles(dst: Path, n_predict: int = 16) -> Path:
    shutil.copytree(PROFILES_DIR, dst)
    vf = dst / "virtual_fleet.toml"
    vf.write_text(re.sub(r"(?m)^n_predict\s*=\s*\d+", f"n_predict = {n_predict}", vf.read_text()))
    return dst


def laptop(port: int, images: list[Path], data_dir: Path, profiles: Path) -> list[float]:
    done: dict[int, float] = {}
    ev_done = threading.Event()

    def on_event(ev: Event) -> None:
        if isinstance(ev, (JobDone, JobFailed)):
            done[ev.job] = time.monotonic() if isinstance(ev, JobDone) else float("nan")
            ev_done.set()

    cfg = PipelineConfig(data_dir=data_dir, concurrency=1, profiles_dir=profiles)
    pipe = Pipeline(cfg, Inventory([AdbServer(port=port)]), on_event=on_event)
    out = []
    try:
        for img in images:
            ev_done.clear()
            t0 = time.monotonic()
            job, _ = pipe.add_laptop_image(img)
            pipe.submit(job)
            if not pipe.wait_idle(600):
                raise RuntimeError("laptop job not finished in 600 s")
            out.append(done.get(job, float("nan")) - t0)
    finally:
        pipe.stop_event.set()
        pipe.close()
    return out


def single(fleet, devs: list[Device], images: list[Path], tmp: Path,
           profiles: Path) -> tuple[list[float], list[str]]:
    x = devs[0]
    control.up(devs, port=fleet_adb.free_port(34000, 35000), tmp=tmp / "push",
               orchestrator=x.serial, profiles_dir=profiles)
    out, where, phases = [], [], []
    try:
        time.sleep(1.5)                              # the orchestrator's baseline listing
        for n, img in enumerate(images, 1):
            t0 = time.monotonic()
            fleet.snap(x.serial, img, name=f"IMG_bench_{n}.png")
            state = ""
            while time.monotonic() - t0 < 600:
                state = x.shell(f"cat {control.MESH_DIR}/jobs/{n}/state 2>/dev/null",
                                timeout=10, check=False).stdout.strip()
                if state.startswith(("done", "failed")):
                    break
                time.sleep(0.2)
            out.append(time.monotonic() - t0 if state == "done" else float("nan"))
            marks = dict(ln.split()[:2] for ln in x.shell(
                f"cat {control.MESH_DIR}/jobs/{n}/times", timeout=10, check=False)
                .stdout.splitlines() if len(ln.split()) == 2 and ln.split()[1].isdigit())
            if len(marks) == 4:
                m = {k: int(v) / 10 for k, v in marks.items()}
                phases.append({"to_bmp": m["converted"] - m["detected"],
                               "classify": m["classified"] - m["converted"],
                               "generate": m["generated"] - m["classified"]})
        for j in control.results_one(x):
            where.append(f"classify@{j.get('classify.who')} story@{j.get('generate.who')}")
    finally:
        control.down(devs)
    if phases:
        where.append("phases mean s (after detection): " + ", ".join(
            f"{k} {statistics.mean(p[k] for p in phases):.2f}" for k in phases[0]))
    return out, where


def summary(xs: list[float]) -> dict:
    ok = [x for x in xs if x == x]
    return {"jobs": len(xs), "failed": len(xs) - len(ok),
            "mean_s": round(statistics.mean(ok), 2) if ok else None,
            "median_s": round(statistics.median(ok), 2) if ok else None,
            "all_s": [round(x, 2) for x in xs]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pictures", type=int, default=4)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="adbflow-bench-mesh-") as t:
        tmp = Path(t)
        images = []
        for i in range(args.pictures):
            src = ASSETS_DIR / ("chelsea.png" if i % 2 == 0 else "coffee.png")
            images.append(Path(shutil.copy(src, tmp / f"pic{i:02d}.png")))
        profiles = cheap_profiles(tmp / "profiles")
        port, base = fleet_adb.free_port(15037, 16999), fleet_adb.free_port(20000, 29000)
        fleet = start_fleet(tmp / "fleet", devices=len(CLASSES), profiles=CLASSES,
                            adb_port=port, base_port=base, timeout=120.0)
        try:
            devs = [Device(s, AdbServer(port=port)) for s in fleet.serials]
            lap = laptop(port, images, tmp / "data", profiles)
            one, where = single(fleet, devs, images, tmp, profiles)
        finally:
            fleet.down()
            fleet_adb.kill_server(port)
    res = {"fleet": dict(zip(["X", "p2", "p3"], CLASSES)), "laptop": summary(lap),
           "single": summary(one), "single_placement": where}
    if res["laptop"]["mean_s"] and res["single"]["mean_s"]:
        res["single_over_laptop_mean"] = round(res["single"]["mean_s"] / res["laptop"]["mean_s"], 2)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        for k in ("laptop", "single"):
            r = res[k]
            print(f"{k:7s} jobs {r['jobs']} failed {r['failed']} mean {r['mean_s']} s "
                  f"median {r['median_s']} s  {r['all_s']}")
        print("single placement:", "; ".join(where))
        print("single / laptop (mean latency):", res.get("single_over_laptop_mean"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
