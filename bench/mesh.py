"""Per-job latency and throughput: the mesh's phone-side orchestrators (`single`, `p2p`)
vs the laptop orchestrator, on the same virtual fleet, measured side by side in one run.

Fleet: X = old_2017 (the phone that takes the pictures in `single`, slowest), flagship_2025
and midrange_2023; real models, times padded to each class (the fleet says so); n_predict 16
for every side (same profiles copy). The CPU is shared (2 cores, other sessions): absolute
numbers are noisy, compare within one run.
- latency: pictures one at a time. laptop: `Pipeline.add_laptop_image` + submit, latency =
  submit -> job_done; it starts from a picture already on the laptop (no detection, no
  pull from X), which favours it. single / p2p: `fleet snap` on X, latency = snap -> the
  job record on X says `done` (polled over adb every 0.2 s).
- throughput: a burst of pictures at once, time until all are done. laptop: all submitted
  at once (concurrency 3); single: the burst on X; p2p: the burst spread over the 3
  phones, each orchestrating its own (jobs 2 at once per orchestrator).

    python bench/mesh.py [--pictures 3] [--burst 6] [--json]
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
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


def laptop(port: int, images: list[Path], data_dir: Path, profiles: Path,
           burst: list[Path]) -> tuple[list[float], float | None]:
    """Per-job latency (one at a time), then the burst's wall time (all submitted at once)."""
    done: dict[int, float] = {}

    def on_event(ev: Event) -> None:
        if isinstance(ev, (JobDone, JobFailed)):
            done[ev.job] = time.monotonic() if isinstance(ev, JobDone) else float("nan")

    cfg = PipelineConfig(data_dir=data_dir, concurrency=3, profiles_dir=profiles)
    pipe = Pipeline(cfg, Inventory([AdbServer(port=port)]), on_event=on_event)
    out = []
    try:
        for img in images:
            t0 = time.monotonic()
            job, _ = pipe.add_laptop_image(img)
            pipe.submit(job)
            if not pipe.wait_idle(600):
                raise RuntimeError("laptop job not finished in 600 s")
            out.append(done.get(job, float("nan")) - t0)
        t0 = time.monotonic()
        ids = []
        for img in burst:
            job, _ = pipe.add_laptop_image(img)
            ids.append(job)
            pipe.submit(job)
        if not pipe.wait_idle(1200):
            raise RuntimeError("laptop burst not finished in 1200 s")
        ends = [done.get(j, float("nan")) for j in ids]
        wall = max(ends) - t0 if all(e == e for e in ends) else None
    finally:
        pipe.stop_event.set()
        pipe.close()
    return out, wall


def _states(dev: Device) -> dict[str, str]:
    """job number -> state, one adb call."""
    res = dev.shell(f"for j in {control.MESH_DIR}/jobs/*; do [ -f \"$j/state\" ] && "
                    "echo \"${j##*/} $(cat \"$j/state\")\"; done", timeout=10, check=False)
    return dict(ln.split(None, 1) for ln in res.stdout.splitlines() if len(ln.split()) == 2)


def _wait_done(devs: list[Device], want: dict[str, int], t0: float, limit: float = 1200.0
               ) -> float | None:
    """Wait until each phone (serial -> how many jobs) has that many final jobs; the wall
    time from t0, None when one failed or time ran out."""
    while time.monotonic() - t0 < limit:
        states = {d.serial: _states(d) for d in devs if want.get(d.serial)}
        if all(len(st) >= want[s] and all(v.startswith(("done", "failed"))
                                           for v in st.values()) for s, st in states.items()):
            ok = all(v == "done" for st in states.values() for v in st.values())
            return time.monotonic() - t0 if ok else None
        time.sleep(0.2)
    return None


def mesh(fleet, devs: list[Device], mode: control.MeshMode, images: list[Path],
         burst: list[Path], tmp: Path, profiles: Path
         ) -> tuple[list[float], float | None, list[str]]:
    """Latency on X (pictures one at a time), then the burst (single: all on X; p2p: spread
    over every phone, each orchestrating its own)."""
    x = devs[0]
    control.up(devs, port=fleet_adb.free_port(34000, 35000), tmp=tmp / f"push-{mode.value}",
               mode=mode, orchestrator=x.serial if mode is control.MeshMode.SINGLE else None,
               profiles_dir=profiles)
    out, where, phases = [], [], []
    try:
        time.sleep(1.5)                              # the orchestrators' baseline listing
        for n, img in enumerate(images, 1):
            t0 = time.monotonic()
            fleet.snap(x.serial, img, name=f"IMG_{mode.value}_{n}.png")   # new names per mode
            lat = _wait_done([x], {x.serial: n}, t0, 600)
            out.append(lat if lat is not None else float("nan"))
            marks = dict(ln.split()[:2] for ln in x.shell(
                f"cat {control.MESH_DIR}/jobs/{n}/times", timeout=10, check=False)
                .stdout.splitlines() if len(ln.split()) == 2 and ln.split()[1].isdigit())
            keys = ("detected", "claimed", "converted", "classified", "generated")
            if all(k in marks for k in keys):
                m = {k: int(marks[k]) / 10 for k in keys}
                phases.append({"claim": m["claimed"] - m["detected"],
                               "to_bmp": m["converted"] - m["claimed"],
                               "classify": m["classified"] - m["converted"],
                               "generate": m["generated"] - m["classified"]})
        targets = [x] * len(burst) if mode is control.MeshMode.SINGLE else \
            [devs[i % len(devs)] for i in range(len(burst))]
        want = {d.serial: len(_states(d)) for d in devs}
        t0 = time.monotonic()
        for i, (img, d) in enumerate(zip(burst, targets)):
            fleet.snap(d.serial, img, name=f"IMG_{mode.value}_burst_{i}.png")
            want[d.serial] += 1
        wall = _wait_done(devs, want, t0)
        for d in devs:
            for j in control.results_one(d):
                where.append(f"classify@{j.get('classify.who')}")
    finally:
        control.down(devs)
    notes = ["placement: " + ", ".join(f"{w} x{where.count(w)}" for w in sorted(set(where)))]
    if phases:
        notes.insert(0, "phases mean s (after detection): " + ", ".join(
            f"{k} {statistics.mean(p[k] for p in phases):.2f}" for k in phases[0]))
    return out, wall, notes


def summary(xs: list[float], wall: float | None, n_burst: int) -> dict:
    ok = [x for x in xs if x == x]
    return {"jobs": len(xs), "failed": len(xs) - len(ok),
            "mean_s": round(statistics.mean(ok), 2) if ok else None,
            "median_s": round(statistics.median(ok), 2) if ok else None,
            "all_s": [round(x, 2) for x in xs],
            "burst": n_burst, "burst_wall_s": round(wall, 2) if wall else None,
            "jobs_per_min": round(60 * n_burst / wall, 2) if wall else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pictures", type=int, default=3)
    ap.add_argument("--burst", type=int, default=6)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="adbflow-bench-mesh-") as t:
        tmp = Path(t)

        def pics(n: int, tag: str) -> list[Path]:
            return [Path(shutil.copy(ASSETS_DIR / ("chelsea.png" if i % 2 == 0 else "coffee.png"),
                                     tmp / f"{tag}{i:02d}.png")) for i in range(n)]
        images, burst = pics(args.pictures, "pic"), pics(args.burst, "burst")
        profiles = cheap_profiles(tmp / "profiles")
        port, base = fleet_adb.free_port(15037, 16999), fleet_adb.free_port(20000, 29000)
        fleet = start_fleet(tmp / "fleet", devices=len(CLASSES), profiles=CLASSES,
                            adb_port=port, base_port=base, timeout=120.0)
        res: dict = {"fleet": dict(zip(["X", "p2", "p3"], CLASSES)),
                     "note": "CPU shared with other sessions: noisy, compare within one run"}
        try:
            devs = [Device(s, AdbServer(port=port)) for s in fleet.serials]
            lap, lap_wall = laptop(port, images, tmp / "data", profiles, burst)
            res["laptop"] = summary(lap, lap_wall, len(burst))
            for mode in (control.MeshMode.SINGLE, control.MeshMode.P2P):
                lat, wall, where = mesh(fleet, devs, mode, images, burst, tmp, profiles)
                res[mode.value] = summary(lat, wall, len(burst))
                res[f"{mode.value}_placement"] = where
        finally:
            fleet.down()
            fleet_adb.kill_server(port)
    for k in ("single", "p2p"):
        a, b = res[k], res["laptop"]
        if a["mean_s"] and b["mean_s"]:
            res[f"{k}_over_laptop_latency"] = round(a["mean_s"] / b["mean_s"], 2)
        if a["jobs_per_min"] and b["jobs_per_min"]:
            res[f"{k}_over_laptop_throughput"] = round(a["jobs_per_min"] / b["jobs_per_min"], 2)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(res["note"])
        for k in ("laptop", "single", "p2p"):
            r = res[k]
            print(f"{k:7s} latency: jobs {r['jobs']} failed {r['failed']} mean {r['mean_s']} s "
                  f"median {r['median_s']} s {r['all_s']} | burst of {r['burst']}: "
                  f"{r['burst_wall_s']} s, {r['jobs_per_min']} jobs/min")
        for k in ("single", "p2p"):
            print(f"{k} placement:", "; ".join(res[f"{k}_placement"]))
            print(f"{k} / laptop: latency {res.get(f'{k}_over_laptop_latency')}, "
                  f"throughput {res.get(f'{k}_over_laptop_throughput')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
