"""Pictures per minute under a burst on N virtual phones: fleet-sized concurrency vs the old
fixed pool of 4 vs the ideal, measured side by side in one run.

Why: sharing compute means N phones finish N times the work. The ideal is the sum of each
device's rate from its profile (profiles/virtual_fleet.toml [classes.X]: classify_ms, the
prompt at prompt_tok_s, n_predict tokens at gen_tok_s, adb latency), one picture at a time
per phone; a scheduler that keeps every phone busy gets close to it, a fixed pool of 4
threads tops out at 4 phones.

The host's CPU: all virtual phones share this machine's cores, and each stand-in program
really runs its model (EfficientNet-Lite0, SmolLM2-135M) before padding its reported time
to the class's speed. So the bench uses the SLOWEST class (lowend_2020) and, by default, a
simulated slow_factor (a fleet fault switch: every simulated time x S) so the padded device
time, not the host CPU, is what limits throughput; both are printed and included in the
ideal, as is each phone's own background load (read from a bid before the burst). What the
ideal leaves out, and the fleet pays for real on the host: each stand-in's Python start and
model load (~1-2 s per run under load), pulls, conversions, bids. Pictures are put on the phones first and entered into the journal as one burst.

    python bench/throughput.py [--devices 2,4,8] [--per-device 4] [--slow 2] [--class lowend_2020]
"""
from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

from PIL import Image

from adbflow.device import AdbServer, Inventory
from adbflow.fleet import adb_server
from adbflow.fleet.control import start_fleet
from adbflow.paths import ASSETS_DIR, PROFILES_DIR
from adbflow.runtime.detect import PICTURES_DIR, NewPicture
from adbflow.runtime.pipeline import Pipeline, PipelineConfig
from adbflow.scheduling.bids import Bid, Bidder
from adbflow.scheduling.profiles import ProfileBook


def pictures(n: int) -> list[bytes]:
    """n distinct small JPEGs (a pixel differs: no duplicate-content skips)."""
    base = Image.open(ASSETS_DIR / "chelsea.png").convert("RGB").resize((320, 240))
    out = []
    for i in range(n):
        img = base.copy()
        img.putpixel((i % 320, (i // 320) % 240), (i % 256, 7, 99))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def ideal_per_min(book: ProfileBook, bids: list[Bid], work: list[tuple[int, int]],
                  slow: float) -> float:
    """Sum over devices of 60 / (mean seconds per picture there), from the profiles: classify
    at classify_ms, each job's real prompt and generated token counts (llama-cli stops at
    end-of-text, often before n_predict) at prompt_tok_s / gen_tok_s, two adb round trips;
    times the simulated slow_factor, at the phone's own background load before the burst
    (the profile's load_sensitivity: the phone's own apps are not ours to take)."""
    total = 0.0
    for bid in bids:
        prof = book.for_model(bid.model)
        t = prof.timing
        load = max(0.0, min(95.0, bid.cpu_load if bid.ok else 0.0)) / 100.0
        per_job = [(t.classify_ms / 1000.0 + p / t.prompt_tok_s + e / t.gen_tok_s) * slow
                   / (1.0 - t.load_sensitivity * load) + 2 * t.adb_latency_ms / 1000.0
                   for p, e in work]
        total += 60.0 / (sum(per_job) / len(per_job))
    return total


def busy_fraction(journal, ids: list[int], serials: list[str], t0: float, t1: float) -> float:
    """Mean over phones of the share of the burst's wall time in which the phone ran at
    least one of our stages (label_image or llama-cli: the union of their run intervals,
    from the journal). Apart from the ideal, it says whether the scheduler kept every
    phone busy, whatever the simulated physics (heat, load) did to each run."""
    spans: dict[str, list[tuple[float, float]]] = {s: [] for s in serials}
    for j in ids:
        for a in journal.attempts(j):
            if a.stage not in ("classify", "generate") or a.ended is None or not a.output:
                continue
            t = a.output.get("timings") or {}
            run = float(t.get("run_s") or 0.0) + float(t.get("push_s") or 0.0)
            if a.serial in spans:
                spans[a.serial].append((a.ended - run, a.ended))
    total = 0.0
    for sp in spans.values():
        busy, end = 0.0, t0
        for a, b in sorted(sp):
            a, b = max(a, end), min(b, t1)
            if b > a:
                busy += b - a
                end = b
        total += busy / (t1 - t0)
    return total / max(1, len(spans))


def run_burst(devices, files: dict[str, list[str]], data: Path, concurrency: int | None,
              timeout: float) -> tuple[float, int, int, list[tuple[int, int]], float]:
    """(pictures/min, jobs done, peak jobs running, [(prompt, generated tokens)], phone
    busy fraction) for one burst."""
    pipe = Pipeline(PipelineConfig(data_dir=data, concurrency=concurrency,
                                   profiles_dir=PROFILES_DIR, device_wait_s=timeout),
                    Inventory([devices[0].server]))
    try:
        by_serial = {d.serial: d for d in devices}
        ids = []
        for serial, names in files.items():
            for name in names:
                st = by_serial[serial].stat(f"{PICTURES_DIR}/{name}", timeout=10)
                assert st is not None
                jid, _ = pipe.add_device_picture(NewPicture(serial, PICTURES_DIR, name,
                                                            int(st.size), float(st.mtime),
                                                            "backlog"))
                ids.append(jid)
        t0, w0 = time.monotonic(), time.time()
        for jid in ids:
            pipe.submit(jid)
        if not pipe.wait_idle(timeout=timeout):
            raise SystemExit(f"burst did not finish within {timeout:g} s")
        wall = time.monotonic() - t0
        busy = busy_fraction(pipe.journal, ids, [d.serial for d in devices], w0, w0 + wall)
        done = sum(1 for j in ids if pipe.journal.job(j).state == "done")
        work = []
        for j in ids:
            gen = pipe.journal.stage_output(j, "generate") or {}
            work.append((int(gen.get("prompt_tokens") or 0), int(gen.get("eval_tokens") or 0)))
        return len(ids) / wall * 60.0, done, pipe.jobs.peak_running, work, busy
    finally:
        pipe.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", default="2,4,8", help="comma-separated fleet sizes (16 too "
                    "if the machine allows)")
    ap.add_argument("--per-device", type=int, default=4, help="pictures per phone in the burst")
    ap.add_argument("--slow", type=float, default=2.0,
                    help="simulated slow_factor on every phone (1 = the class as published)")
    ap.add_argument("--class", dest="klass", default="lowend_2020")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--fleet-only", action="store_true",
                    help="skip the fixed-pool run (large N: it takes N/4 times as long)")
    args = ap.parse_args()
    sizes = [int(x) for x in args.devices.split(",") if x.strip()]
    book = ProfileBook.load(PROFILES_DIR)
    print(f"class {args.klass}, simulated slow_factor x{args.slow:g}, {args.per_device} "
          f"pictures per phone, host cores {os.cpu_count()} (shared by every virtual phone)")
    print("ideal: per-run token counts at profile rates (the pool4 run's ideal differs only "
          "by its stories' lengths)")
    print("peak = most jobs in flight; busy = mean share of the burst each phone ran our work")
    print(f"{'N':>3} {'ideal/min':>10} {'fleet/min':>10} {'x ideal':>8} {'peak':>5} {'busy':>5} "
          f"{'pool4/min':>10} {'x ideal':>8} {'peak':>5} {'busy':>5} {'fleet/pool4':>11}")
    for n in sizes:
        port = adb_server.free_port(15037, 16999)
        base = adb_server.free_port(20000, 29000)
        with tempfile.TemporaryDirectory(prefix="adbflow-bench-tp-") as tmp:
            fleet = start_fleet(Path(tmp) / "fleet", devices=n, profiles=[args.klass],
                                adb_port=port, base_port=base, timeout=180)
            try:
                devices = Inventory([AdbServer(port=port)]).devices()
                assert len(devices) == n, devices
                if args.slow != 1.0:
                    for d in devices:
                        fleet.fault(d.serial, slow_factor=args.slow)
                with Bidder(timeout=10) as bidder:      # idle background load, model
                    idle_bids = bidder.gather(devices)
                blobs = pictures(args.per_device * n * 2)
                results = {}
                modes = (("fleet", None),) if args.fleet_only else (("fleet", None), ("pool4", 4))
                for k, (mode, conc) in enumerate(modes):
                    files: dict[str, list[str]] = {}
                    for i, d in enumerate(devices):
                        for j in range(args.per_device):
                            name = f"IMG_{mode}_{i}_{j}.jpg"
                            blob = blobs[(k * n + i) * args.per_device + j]
                            local = Path(tmp) / name
                            local.write_bytes(blob)
                            d.push(local, f"{PICTURES_DIR}/{name}", timeout=30)
                            files.setdefault(d.serial, []).append(name)
                    results[mode] = run_burst(devices, files, Path(tmp) / f"data-{mode}",
                                              conc, args.timeout)
                (f_rate, f_done, f_peak, f_work, f_busy) = results["fleet"]
                (p_rate, p_done, p_peak, p_work, p_busy) = results.get("pool4", results["fleet"])
                assert f_done == p_done == n * args.per_device, (f_done, p_done)
                f_ideal = ideal_per_min(book, idle_bids, f_work, args.slow)
                p_ideal = ideal_per_min(book, idle_bids, p_work, args.slow)
                if "pool4" not in results:
                    print(f"{n:>3} {f_ideal:>10.1f} {f_rate:>10.1f} {f_rate / f_ideal:>8.2f} "
                          f"{f_peak:>5} {f_busy:>5.2f}   (fixed pool not run)", flush=True)
                    continue
                print(f"{n:>3} {f_ideal:>10.1f} {f_rate:>10.1f} {f_rate / f_ideal:>8.2f} "
                      f"{f_peak:>5} {f_busy:>5.2f} {p_rate:>10.1f} {p_rate / p_ideal:>8.2f} "
                      f"{p_peak:>5} {p_busy:>5.2f} {f_rate / p_rate:>11.2f}", flush=True)
            finally:
                fleet.down()
                adb_server.kill_server(port)


if __name__ == "__main__":
    main()
