"""Stand-in for TFLite's benchmark_model on a virtual device: real invokes, simulated timings.

Why: `adbflow` can calibrate a device with benchmark_model; the virtual device runs the
real graph (ai-edge-litert) for every run, pads each run to the profile's latency (scaled
by load, temperature, threads, slow_factor, with a few % jitter) and prints the summary
lines of TFLite 2.15's benchmark tool (tests/fixtures/tflite_benchmark). The simulation
is stated in one extra INFO line.
"""
from __future__ import annotations

import math
import os
import random
import statistics
import sys
import time

import numpy as np

from adbflow.fleet.programs import common
from adbflow.fleet.programs.label_image import thread_factor

DEFAULTS = {"graph": "", "num_threads": "-1", "num_runs": "50", "warmup_runs": "1",
            "min_secs": "1", "warmup_min_secs": "0.5", "max_secs": "150", "run_delay": "-1",
            "use_nnapi": "false", "use_gpu": "false", "use_xnnpack": "true",
            "enable_op_profiling": "false", "verbose": "false", "use_hexagon": "false",
            "nnapi_accelerator_name": "", "allow_fp16": "false", "input_layer": "",
            "input_layer_shape": "", "report_peak_memory_footprint": "false"}


def log(msg: str) -> None:
    sys.stderr.write(f"INFO: {msg}\n")
    sys.stderr.flush()


def parse_flags(argv: list[str]) -> dict[str, str]:
    """TFLite Flags: `--name=value` (bools also `--name`); anything else is unconsumed."""
    out = dict(DEFAULTS)
    bad = []
    for a in argv:
        if not a.startswith("--"):
            bad.append(a)
            continue
        name, eq, val = a[2:].partition("=")
        if name not in DEFAULTS:
            bad.append(a)
            continue
        out[name] = val if eq else "true"
    if bad:
        sys.stderr.write(f"ERROR: Unconsumed cmdline flags: {' '.join(bad)}\n")
        sys.exit(1)
    return out


def summary(us: list[float]) -> str:
    """`count=N first=.. curr=.. min=.. max=.. avg=.. std=..` as the tool prints it."""
    if len(us) == 1:
        return f"count=1 curr={int(us[0])}"
    avg = sum(us) / len(us)
    std = int(statistics.pstdev(us))
    return (f"count={len(us)} first={int(us[0])} curr={int(us[-1])} min={int(min(us))} "
            f"max={int(max(us))} avg={avg:g} std={std}")


def run_phase(invoke, n_min: int, min_secs: float, max_secs: float, per_run_us: float,
              rnd: random.Random) -> list[float]:
    """Run real invokes, each padded to a jittered simulated duration."""
    times: list[float] = []
    start = time.monotonic()
    while True:
        t0 = time.monotonic()
        invoke()
        target = per_run_us * max(0.85, rnd.gauss(1.0, 0.04)) / 1e6
        common.sleep_until(t0 + target)
        times.append((time.monotonic() - t0) * 1e6)
        elapsed = time.monotonic() - start
        if (len(times) >= n_min and elapsed >= min_secs) or elapsed >= max_secs:
            return times


def main(argv: list[str] | None = None) -> int:
    common.install_signal_defaults()
    f = parse_flags(sys.argv[1:] if argv is None else argv)
    state = common.load_state()
    common.apply_program_fault("benchmark_model", state)
    log("STARTING!")
    log("Log parameter values verbosely: [0]")
    threads = int(f["num_threads"])
    if f["num_runs"] != DEFAULTS["num_runs"]:
        log(f"Min num runs: [{f['num_runs']}]")
    if threads != -1:
        log(f"Num threads: [{threads}]")
    if f["warmup_runs"] != DEFAULTS["warmup_runs"]:
        log(f"Min warmup runs: [{f['warmup_runs']}]")
    log(f"Graph: [{f['graph']}]")
    if f["use_nnapi"] == "true":
        log("Use NNAPI: [1]")
    if f["use_gpu"] == "true":
        log("Use gpu: [1]")
    if not f["graph"] or not os.path.isfile(f["graph"]):
        sys.stderr.write(f"ERROR: Failed to mmap model {f['graph']}\n")
        sys.stderr.write("ERROR: Benchmarking failed.\n")
        return 1
    t_init = time.monotonic()
    log(f"Loaded model {f['graph']}")
    from ai_edge_litert.interpreter import Interpreter
    interp = Interpreter(model_path=f["graph"], num_threads=1)
    interp.allocate_tensors()
    if f["use_nnapi"] == "true" or f["use_gpu"] == "true":
        sys.stderr.write("WARNING: adbflow virtual device has no NNAPI/GPU delegate; running "
                         "on CPU.\n")
    for d in interp.get_input_details():
        shape = tuple(int(x) for x in d["shape"])
        if np.issubdtype(d["dtype"], np.floating):
            data = np.random.default_rng(0).random(shape, dtype=np.float32) * 255
        else:
            data = np.random.default_rng(0).integers(0, 255, shape).astype(d["dtype"])
        interp.set_tensor(d["index"], data.astype(d["dtype"]))
    log(f"The input model file size (MB): {os.path.getsize(f['graph']) / 1e6:g}")
    slow = common.slowdown(state)
    eff_threads = threads if threads > 0 else 4
    per_run_us = state.classify_ms * 1000 * thread_factor(eff_threads, state.ncores) * slow.total
    init_us = (time.monotonic() - t_init) * 1e6
    log(f"Initialized session in {init_us / 1000:g}ms.")
    log(f"adbflow virtual device ({state.profile}): real invokes on the host CPU; each run "
        f"padded to profile {state.classify_ms:g} ms x threads "
        f"x{thread_factor(eff_threads, state.ncores):.2f}, {slow.describe()}")
    rnd = random.Random()
    max_secs = float(f["max_secs"])
    wmin = float(f["warmup_min_secs"])
    log(f"Running benchmark for at least {f['warmup_runs']} iterations and at least "
        f"{wmin:g} seconds but terminate if exceeding {max_secs:g} seconds.")
    # the first inference on a cold device is slower (caches, frequency ramp-up)
    warm = run_phase(interp.invoke, int(f["warmup_runs"]), wmin, max_secs, per_run_us * 1.3, rnd)
    log(summary(warm))
    sys.stderr.write("\n")
    min_secs = float(f["min_secs"])
    log(f"Running benchmark for at least {f['num_runs']} iterations and at least "
        f"{min_secs:g} seconds but terminate if exceeding {max_secs:g} seconds.")
    runs = run_phase(interp.invoke, int(f["num_runs"]), min_secs, max_secs, per_run_us, rnd)
    log(summary(runs))
    sys.stderr.write("\n")
    log(f"Inference timings in us: Init: {int(init_us)}, First inference: {int(warm[0])}, "
        f"Warmup (avg): {sum(warm) / len(warm):g}, Inference (avg): {sum(runs) / len(runs):g}")
    log("Note: as the benchmark tool itself affects memory footprint, the following is only "
        "APPROXIMATE to the actual memory footprint of the model at runtime. Take the "
        "information at your discretion.")
    rss = _rss_mb()
    log(f"Memory footprint delta from the start of the tool (MB): init={rss * 0.9:g} "
        f"overall={rss:g}")
    return 0


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return round(int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 4)
    except (OSError, ValueError, IndexError):
        return math.nan


if __name__ == "__main__":
    sys.exit(main())
