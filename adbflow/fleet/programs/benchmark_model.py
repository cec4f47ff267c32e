"""Stand-in for TFLite's benchmark_model on a virtual device: real invokes, simulated timings.

Why: `adbflow` can calibrate a device with benchmark_model, and runs split-model parts with
it; the virtual device runs the real graph (ai-edge-litert) for every run, pads each run to
the profile's latency (scaled by load, temperature, threads, slow_factor, with a few %
jitter) and prints the summary lines of TFLite 2.15's benchmark tool
(tests/fixtures/tflite_benchmark). The simulation is stated in one extra INFO line.

The profile's classify_ms is the time of its classifier (efficientnet_lite0, at
REFERENCE_MODEL); another graph (a head or tail part of a cut model, a larger model) is
padded to classify_ms x its op cost / the reference's op cost (adbflow.parsers.tflite_model).
Like the real tool: `--input_layer`, `--input_layer_shape`, `--input_layer_value_files`
(raw bytes, exact tensor size, else an error naming both sizes), `--output_filepath`
(every output tensor's raw bytes, in order), `--enable_op_profiling` (TFLite's tables,
times shared out by op cost: simulated, see op_profile.py).
"""
from __future__ import annotations

import math
import os
import random
import statistics
import sys
import time

import numpy as np

from adbflow.errors import ParseError
from adbflow.fleet.programs import common
from adbflow.fleet.programs.label_image import thread_factor

DEFAULTS = {"graph": "", "num_threads": "-1", "num_runs": "50", "warmup_runs": "1",
            "min_secs": "1", "warmup_min_secs": "0.5", "max_secs": "150", "run_delay": "-1",
            "use_nnapi": "false", "use_gpu": "false", "use_xnnpack": "true",
            "enable_op_profiling": "false", "verbose": "false", "use_hexagon": "false",
            "nnapi_accelerator_name": "", "allow_fp16": "false", "input_layer": "",
            "input_layer_shape": "", "report_peak_memory_footprint": "false",
            "input_layer_value_files": "", "input_layer_value_range": "", "output_filepath": "",
            "max_profiling_buffer_entries": "1024"}
REFERENCE_MODEL = "/data/local/tmp/efficientnet_lite0.tflite"


class ToolError(Exception):
    """The real tool would log this as ERROR (or FATAL) and stop: exit code 1."""


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
    if not us:
        return "count=0"
    if len(us) == 1:
        return f"count=1 curr={int(us[0])}"
    avg = sum(us) / len(us)
    std = int(statistics.pstdev(us))
    return (f"count={len(us)} first={int(us[0])} curr={int(us[-1])} min={int(min(us))} "
            f"max={int(max(us))} avg={avg:g} std={std}")


def run_phase(invoke, n_min: int, min_secs: float, max_secs: float, per_run_us: float,
              rnd: random.Random) -> list[float]:
    """Run real invokes, each padded to a jittered simulated duration (none when asked for
    0 runs and 0 seconds, as the real loop does)."""
    times: list[float] = []
    start = time.monotonic()
    while (len(times) < n_min or time.monotonic() - start < min_secs) \
            and time.monotonic() - start <= max_secs:
        t0 = time.monotonic()
        invoke()
        target = per_run_us * max(0.85, rnd.gauss(1.0, 0.04)) / 1e6
        common.sleep_until(t0 + target)
        times.append((time.monotonic() - t0) * 1e6)
    return times


def input_layers(f: dict[str, str]) -> list[tuple[str, list[int], str]]:
    """(name, shape, value file or "") per --input_layer, as PopulateInputLayerInfo reads them."""
    if not f["input_layer"] and not f["input_layer_shape"]:
        if f["input_layer_value_files"]:
            raise ToolError("--input_layer_value_files needs --input_layer and --input_layer_shape")
        return []
    names = f["input_layer"].split(",")
    shapes = f["input_layer_shape"].split(":")
    if len(names) != len(shapes):
        raise ToolError(f"The number of items in --input_layer_shape ({f['input_layer_shape']}, "
                        f"with {len(shapes)} items) must match the number of items in "
                        f"--input_layer ({f['input_layer']}, with {len(names)} items). For "
                        "example --input_layer=input1,input2 --input_layer_shape=1,224,224,4:1,20")
    layers: list[list] = []
    for name, shape in zip(names, shapes):
        try:
            dims = [int(x) for x in shape.split(",")]
        except ValueError:
            raise ToolError(f"Incorrect size string specified: {shape}") from None
        if any(d == -1 for d in dims):
            raise ToolError("Any unknown sizes in the shapes (-1's) must be replaced with the "
                            "size you want to benchmark with.")
        layers.append([name, dims, ""])
    for item in filter(None, f["input_layer_value_files"].split(",")):
        parts = item.split(":")
        if len(parts) != 2:
            raise ToolError(f"Wrong input value file item specified: {item}")
        idx = next((i for i, x in enumerate(layers) if x[0] == parts[0]), None)
        if idx is None:
            raise ToolError(f"Cannot find the corresponding input_layer name({parts[0]}) in "
                            f"--input_layer as {f['input_layer']}")
        layers[idx][2] = parts[1]
    return [(str(n), list(d), str(p)) for n, d, p in layers]


def load_value_file(path: str, nbytes: int, dtype, shape) -> np.ndarray:
    """LoadInputTensorData: the file must hold exactly the tensor's bytes."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(nbytes + 1)
    except OSError:
        raise ToolError(f"Failed to read the input_layer_value_file:{path}") from None
    if len(data) != nbytes:
        size = len(data) if len(data) <= nbytes else os.path.getsize(path)
        raise ToolError(f"The size of {path} is {size} bytes. It should be {nbytes} bytes.")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def cost_ratio(graph: str) -> tuple[float, str]:
    """Op cost of `graph` relative to the profile's classifier (1.0 for the classifier)."""
    try:
        if os.path.realpath(graph) == os.path.realpath(REFERENCE_MODEL):
            return 1.0, "the profile's classifier"
        from adbflow.parsers.tflite_model import model_cost
        with open(graph, "rb") as fh:
            mine = model_cost(fh.read())
        with open(REFERENCE_MODEL, "rb") as fh:
            ref = model_cost(fh.read())
        return mine / ref, f"op cost x{mine / ref:.3f} of {os.path.basename(REFERENCE_MODEL)}"
    except (OSError, ValueError, ZeroDivisionError, ParseError):
        return 1.0, "op cost unknown: timed as the profile's classifier"


def set_inputs(interp, layers) -> None:
    """Inputs from --input_layer_value_files where given, else random like the real tool."""
    details = interp.get_input_details()
    if layers and len(layers) != len(details):
        raise ToolError(f"Inputs mismatch: Model inputs #:{len(layers)} expected: {len(details)}")
    for j, (name, dims, _) in enumerate(layers):
        d = details[j]
        if name != d["name"]:
            log(f"Tensor # {d['index']} is named {d['name']} but flags call it {name}")
        if len(dims) != len(d["shape"]):
            raise ToolError(f"Input tensor #{d['index']} should have {len(d['shape'])} dimensions!")
        if tuple(dims) != tuple(int(x) for x in d["shape"]):
            interp.resize_tensor_input(d["index"], dims)
    if layers:
        interp.allocate_tensors()
        details = interp.get_input_details()
    for j, d in enumerate(details):
        shape = tuple(int(x) for x in d["shape"])
        path = layers[j][2] if layers else ""
        if path:
            nbytes = int(np.prod(shape)) * np.dtype(d["dtype"]).itemsize
            data = load_value_file(path, nbytes, d["dtype"], shape)
        elif np.issubdtype(d["dtype"], np.floating):
            data = np.random.default_rng(0).random(shape, dtype=np.float32) * 255
        else:
            data = np.random.default_rng(0).integers(0, 255, shape).astype(d["dtype"])
        interp.set_tensor(d["index"], data.astype(d["dtype"]))


def write_outputs(interp, path: str) -> None:
    """--output_filepath: every output tensor's raw bytes, in output order."""
    with open(path, "wb") as fh:
        for d in interp.get_output_details():
            fh.write(np.ascontiguousarray(interp.get_tensor(d["index"])).tobytes())


def fail(msg: str) -> int:
    sys.stderr.write(f"ERROR: {msg}\n")
    sys.stderr.write("ERROR: Benchmarking failed.\n")
    return 1


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
    for key, label in (("input_layer", "Input layers"), ("input_layer_shape", "Input shapes"),
                       ("input_layer_value_files", "Input value files"),
                       ("output_filepath", "File path to export outputs layer to")):
        if f[key]:
            log(f"{label}: [{f[key]}]")
    profiling = f["enable_op_profiling"] in ("true", "1")
    if profiling:
        log("Enable op profiling: [1]")
    if f["use_nnapi"] == "true":
        log("Use NNAPI: [1]")
    if f["use_gpu"] == "true":
        log("Use gpu: [1]")
    try:
        layers = input_layers(f)
    except ToolError as exc:
        return fail(str(exc))
    if not f["graph"] or not os.path.isfile(f["graph"]):
        return fail(f"Failed to mmap model {f['graph']}")
    t_init = time.monotonic()
    log(f"Loaded model {f['graph']}")
    from ai_edge_litert.interpreter import Interpreter
    try:
        interp = Interpreter(model_path=f["graph"], num_threads=1)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        return fail(f"Failed to initialize the interpreter: {exc}")
    alloc_ms = (time.monotonic() - t_init) * 1000.0
    if f["use_nnapi"] == "true" or f["use_gpu"] == "true":
        sys.stderr.write("WARNING: adbflow virtual device has no NNAPI/GPU delegate; running "
                         "on CPU.\n")
    try:
        set_inputs(interp, layers)
    except ToolError as exc:
        return fail(str(exc))
    log(f"The input model file size (MB): {os.path.getsize(f['graph']) / 1e6:g}")
    slow = common.slowdown(state)
    eff_threads = threads if threads > 0 else 4
    ratio, ratio_why = cost_ratio(f["graph"])
    per_run_us = (state.classify_ms * 1000 * ratio * thread_factor(eff_threads, state.ncores)
                  * slow.total)
    init_us = (time.monotonic() - t_init) * 1e6
    log(f"Initialized session in {init_us / 1000:g}ms.")
    log(f"adbflow virtual device ({state.profile}): real invokes on the host CPU; each run "
        f"padded to profile {state.classify_ms:g} ms x {ratio_why} x threads "
        f"x{thread_factor(eff_threads, state.ncores):.2f}, {slow.describe()}"
        + ("; op profile SIMULATED: each run's time shared out by op cost (ai-edge-litert "
           "has no per-op profiler)" if profiling else ""))
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
    if not runs:  # the real tool always has at least one measured run to report
        runs = run_phase(interp.invoke, 1, 0.0, max_secs, per_run_us, rnd)
    log(summary(runs))
    sys.stderr.write("\n")
    first = warm[0] if warm else runs[0]
    warm_avg = f"{sum(warm) / len(warm):g}" if warm else "-nan"
    log(f"Inference timings in us: Init: {int(init_us)}, First inference: {int(first)}, "
        f"Warmup (avg): {warm_avg}, Inference (avg): {sum(runs) / len(runs):g}")
    log("Note: as the benchmark tool itself affects memory footprint, the following is only "
        "APPROXIMATE to the actual memory footprint of the model at runtime. Take the "
        "information at your discretion.")
    rss = _rss_mb()
    log(f"Memory footprint delta from the start of the tool (MB): init={rss * 0.9:g} "
        f"overall={rss:g}")
    if f["output_filepath"]:
        try:
            write_outputs(interp, f["output_filepath"])
        except OSError as exc:
            return fail(f"Failed to write outputs to {f['output_filepath']}: {exc.strerror}")
    if profiling:
        print_profiles(f["graph"], alloc_ms, init_us, runs)
    return 0


def print_profiles(graph: str, alloc_ms: float, init_us: float, runs: list[float]) -> None:
    """The initialization and regular-run profiles, as ProfilingListener prints them."""
    from adbflow.fleet.programs.op_profile import OpRow, format_profile, op_rows
    from adbflow.parsers.tflite_model import op_infos
    with open(graph, "rb") as fh:
        ops = op_infos(fh.read())
    init_rows = [OpRow("AllocateTensors", alloc_ms, alloc_ms, 1, "AllocateTensors/0")]
    sys.stderr.write("INFO: " + format_profile("Profiling Info for Benchmark Initialization:",
                                               init_rows, [init_us]))
    sys.stderr.write("INFO: " + format_profile(
        "Operator-wise Profiling Info for Regular Benchmark Runs:", op_rows(ops, runs), runs))
    sys.stderr.flush()


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return round(int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 4)
    except (OSError, ValueError, IndexError):
        return math.nan


if __name__ == "__main__":
    sys.exit(main())
