"""Measure every connected device's classify latency at several CPU loads; write its profile.

Why: the scheduler's priors (profiles/*.toml [timing]) are class estimates; a phone on the
desk differs. This runs TFLite `benchmark_model` (or `label_image` on a real picture) on each
device through adbflow.device.Inventory, at load levels made with busy loops on a real phone or
with `adbflow fleet load` on a virtual device, and fits t(L) = t0 / (1 - s*L) (the cost
model of adbflow.scheduling.policy). It also measures the adb round trip and push bandwidth. The result
is written as profiles/<model>.toml: same binaries/models as the matched profile, measured
[timing], raw [[measurements]]. Exact model names beat class globs, so it takes over.
With --op-profile it also records the classifier's per-op times (benchmark_model
--enable_op_profiling, idle) and the launch cost of one benchmark_model call as a
`stage = "op_profile"` measurement: the split planner's input (adbflow.split.profiling).

    python -m benchmark_label_image [--serial S ...] [--adb-server H:P] [--loads 0 30 60]
                                    [--tool benchmark_model|label_image] [--out profiles/]
                                    [--op-profile [--op-model MODEL.tflite]]
                                    [--fleet-state-dir DIR] [--dry-run] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

if __package__ in (None, ""):  # `python benchmark_label_image/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adbflow.errors import AdbflowError, ParseError  # noqa: E402
from adbflow.paths import ASSETS_DIR, PROFILES_DIR  # noqa: E402
from adbflow.scheduling.profiles import DeviceProfile, ProfileBook, dump_profile, safe_profile_name  # noqa: E402

REMOTE_DIR = "/data/local/tmp"
BENCH_IMAGE = f"{REMOTE_DIR}/adbflow-bench.bmp"
BW_FILE = f"{REMOTE_DIR}/adbflow-bandwidth.bin"


@dataclass
class Point:
    load_pct: float            # the load we asked for (background, not counting the benchmark)
    ms: float                  # steady-state classify latency at that load
    measured_load_pct: float | None = None


@dataclass
class DeviceReport:
    serial: str
    model: str | None
    profile: str
    tool: str
    points: list[Point] = field(default_factory=list)
    adb_latency_ms: float | None = None
    bandwidth_mb_s: float | None = None
    classify_ms: float | None = None
    load_sensitivity: float | None = None
    written: str | None = None
    error: str | None = None
    op_profile: dict | None = None


# ------------------------------------------------------------------------- pure functions

def fit_load_sensitivity(points: Sequence[Point]) -> tuple[float, float]:
    """(t0_ms, s) for t(L) = t0/(1 - s*L), L in 0-1: 1/t is linear in L with intercept
    1/t0 and slope -s/t0, so fit that line by least squares; s is clipped to [0, 1] (noise
    must not make load look helpful) and t0 refitted for the clipped s. One point: s = 1."""
    if not points:
        raise ValueError("no measurements")
    xs = [p.load_pct / 100.0 for p in points]
    ys = [1.0 / p.ms for p in points]
    s = 1.0
    if len(set(xs)) > 1:
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        intercept = my - slope * mx
        if intercept > 0:
            s = min(1.0, max(0.0, -slope / intercept))
    t0 = statistics.fmean(p.ms * (1 - s * min(0.95, p.load_pct / 100.0)) for p in points)
    return t0, s


def measured_profile(base: DeviceProfile, model: str, report: DeviceReport) -> DeviceProfile:
    """The profile to write for this exact model: base's specs, measured timing."""
    timing = base.timing
    kw = {}
    if report.classify_ms is not None:
        kw["classify_ms"] = round(report.classify_ms, 3)
    if report.load_sensitivity is not None:
        kw["load_sensitivity"] = round(report.load_sensitivity, 3)
    if report.adb_latency_ms is not None:
        kw["adb_latency_ms"] = round(report.adb_latency_ms, 2)
    if report.bandwidth_mb_s is not None:
        kw["bandwidth_mb_s"] = round(report.bandwidth_mb_s, 2)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    return replace(
        base, name=safe_profile_name(model), match_models=[model], timing=replace(timing, **kw),
        description=f"measured by benchmark_label_image on {report.serial} ({stamp}); "
                    f"specs from profile {base.name}" + (f"/{base.device_class}" if base.device_class else ""),
        classes={}, device_class=None, source=None,
        measurements=[{"stage": "classify", "tool": report.tool, "load_pct": p.load_pct, "ms": round(p.ms, 3),
                       **({"measured_load_pct": round(p.measured_load_pct, 1)}
                          if p.measured_load_pct is not None else {})} for p in report.points]
        + ([report.op_profile] if report.op_profile else []))


# ------------------------------------------------------------------------------ device I/O

class BusyLoad:
    """CPU load on a real phone: `k` busy shell loops (k = load * cores), each under
    `timeout` so they die even if we crash; stopped by their pids."""

    def __init__(self, device, cores: int, *, max_s: int = 600) -> None:
        self.device, self.cores, self.max_s = device, max(1, cores), max_s
        self.pids: list[int] = []

    def set(self, pct: float) -> None:
        self.stop()
        k = round(pct / 100.0 * self.cores)
        if k <= 0:
            return
        loop = shlex.quote("while :; do :; done")
        cmd = "; ".join([f"(timeout {self.max_s} sh -c {loop} >/dev/null 2>&1 & echo $!)"] * k)
        res = self.device.shell(cmd, timeout=10.0)
        self.pids = [int(x) for x in res.stdout.split() if x.isdigit()]
        time.sleep(1.0)

    def stop(self) -> None:
        if self.pids:
            self.device.shell("kill " + " ".join(str(p) for p in self.pids) + " 2>/dev/null; true",
                              timeout=10.0, check=False)
            self.pids = []


class FleetLoad:
    """CPU load on a virtual device through the fleet's control socket."""

    def __init__(self, client, serial: str) -> None:
        self.client, self.serial = client, serial

    def set(self, pct: float) -> None:
        self.client.load(self.serial, pct)
        time.sleep(0.5)

    def stop(self) -> None:
        self.client.load(self.serial, 0.0)


def adb_latency_ms(device, n: int = 5) -> float:
    times = []
    for _ in range(n):
        t0 = time.monotonic()
        device.shell("true", timeout=10.0)
        times.append((time.monotonic() - t0) * 1000.0)
    return statistics.median(times)


def push_bandwidth_mb_s(device, nbytes: int = 4 << 20) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bw.bin"
        path.write_bytes(os.urandom(nbytes))
        t0 = time.monotonic()
        device.push(path, BW_FILE, timeout=60.0)
        dt = time.monotonic() - t0
    device.shell(f"rm -f {shlex.quote(BW_FILE)}", timeout=10.0, check=False)
    return nbytes / dt / 1e6


def classify_ms_once(device, profile: DeviceProfile, tool: str, runs: int) -> float:
    """One steady-state classify latency with the profile's model and threads."""
    li = profile.label_image
    if tool == "benchmark_model":
        from adbflow.parsers.benchmark_model import parse_benchmark_model
        binary = str(Path(li.binary).parent / "benchmark_model")
        argv = [binary, f"--graph={li.model}", f"--num_threads={li.threads}",
                f"--num_runs={runs}", "--warmup_runs=1", "--min_secs=0", "--warmup_min_secs=0"]
        res = device.run(argv, timeout=120.0)
        out = parse_benchmark_model(res.stdout + "\n" + res.stderr)
        if out.avg_ms is None:
            raise ParseError("benchmark_model", "no latency in output", res.stdout + res.stderr)
        return out.avg_ms
    from adbflow.parsers.label_image import parse_label_image
    argv = [li.binary, "-m", li.model, "-l", li.labels, "-i", BENCH_IMAGE, "-t", str(li.threads),
            "-c", str(runs), *li.extra_args]
    res = device.run(argv, timeout=120.0)
    out = parse_label_image(res.stdout + "\n" + res.stderr)
    if out.avg_ms is None:
        raise ParseError("label_image", "no 'average time' line", res.stdout + res.stderr)
    return out.avg_ms


def prepare_image(device, profile: DeviceProfile) -> None:
    from adbflow.runtime.imaging import prepare_bmp
    with tempfile.TemporaryDirectory() as tmp:
        bmp = Path(tmp) / "bench.bmp"
        prepare_bmp(ASSETS_DIR / "chelsea.png", bmp, profile.label_image.input_size)
        device.push(bmp, BENCH_IMAGE, timeout=60.0)


def measure_op_profile(device, profile: DeviceProfile, model_bytes: bytes, runs: int) -> dict:
    """Per-op times of the profile's classifier on the phone (idle), and the launch cost
    fitted from it and a small head part of it (pushed, then removed)."""
    from adbflow.parsers.tflite_model import op_infos
    from adbflow.split.profiling import measure_op_times, op_profile_measurement
    from adbflow.split.tflite_cut import cut_points, split_model
    ops = op_infos(model_bytes)
    small = None
    remote = f"{REMOTE_DIR}/adbflow-bench-head.tflite"
    pts = cut_points(model_bytes)
    if pts:
        head = split_model(model_bytes, pts[0].op_index).head
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "head.tflite").write_bytes(head)
            device.push(Path(tmp) / "head.tflite", remote, timeout=60.0)
        small = (remote, len(head) / 1e6)
    try:
        times = measure_op_times(device, profile, profile.label_image.model, ops,
                                 graph_mb=len(model_bytes) / 1e6, small=small, runs=runs)
    finally:
        if small:
            device.shell(f"rm -f {shlex.quote(remote)}", timeout=10.0, check=False)
    return op_profile_measurement(profile.label_image.model, times)


def measure_device(device, book: ProfileBook, *, loads: Sequence[float], tool: str, runs: int,
                   make_load: Callable[[object, str | None], object],
                   measure_load: Callable[[object], float | None] | None = None,
                   op_model: bytes | None = None) -> DeviceReport:
    model = device.getprop("ro.product.model", timeout=10.0) or None
    profile = book.for_model(model)
    rep = DeviceReport(device.serial, model, profile.name + (f"/{profile.device_class}"
                                                             if profile.device_class else ""), tool)
    load = make_load(device, model)
    try:
        rep.adb_latency_ms = adb_latency_ms(device)
        rep.bandwidth_mb_s = push_bandwidth_mb_s(device)
        if tool == "label_image":
            prepare_image(device, profile)
        for pct in loads:
            load.set(pct)                                   # type: ignore[attr-defined]
            ms = classify_ms_once(device, profile, tool, runs)
            rep.points.append(Point(float(pct), ms, measure_load(device) if measure_load else None))
        if op_model is not None:
            load.set(0.0)                                   # type: ignore[attr-defined]
            rep.op_profile = measure_op_profile(device, profile, op_model, runs)
    except (AdbflowError, OSError) as exc:
        rep.error = str(exc)
    finally:
        try:
            load.stop()                                     # type: ignore[attr-defined]
        except AdbflowError:
            pass
    if rep.points:
        rep.classify_ms, rep.load_sensitivity = fit_load_sensitivity(rep.points)
    return rep


# ------------------------------------------------------------------------------------ main

def _fleet_client(state_dir: Path | None):
    try:
        from adbflow.fleet.control import FleetClient, default_state_dir
    except ImportError:
        return None
    d = state_dir or default_state_dir()
    if not (d / "fleet.json").exists():
        return None
    return FleetClient(d)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmark_label_image", description=__doc__.splitlines()[0])
    ap.add_argument("--serial", "-s", action="append", help="only these devices (repeatable)")
    ap.add_argument("--adb-server", action="append", metavar="HOST:PORT")
    ap.add_argument("--loads", type=float, nargs="+", default=[0.0, 30.0, 60.0],
                    help="background CPU load levels in percent")
    ap.add_argument("--tool", choices=("benchmark_model", "label_image"), default="benchmark_model")
    ap.add_argument("--runs", type=int, default=10, help="inferences per load level")
    ap.add_argument("--out", type=Path, default=PROFILES_DIR, help="where to write <model>.toml")
    ap.add_argument("--profiles-dir", type=Path, default=PROFILES_DIR)
    ap.add_argument("--fleet-state-dir", type=Path, default=None,
                    help="virtual fleet state dir (default: the user's `adbflow fleet up` one)")
    ap.add_argument("--op-profile", action="store_true",
                    help="also record per-op times of the classifier (for split planning)")
    ap.add_argument("--op-model", type=Path, default=ASSETS_DIR / "efficientnet_lite0_imagenet.tflite",
                    help="laptop copy of the profile's classifier (to name and cut its ops)")
    ap.add_argument("--dry-run", action="store_true", help="measure and print, write nothing")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from adbflow.device import Inventory, resolve_servers
    from adbflow.scheduling.bids import Bidder

    book = ProfileBook.load(args.profiles_dir)
    devices = Inventory(resolve_servers(args.adb_server), args.serial).devices()
    if not devices:
        print("no devices in state `device`", file=sys.stderr)
        return 2
    fleet = _fleet_client(args.fleet_state_dir)
    fleet_serials = set(fleet.serials) if fleet else set()
    bidder = Bidder(timeout=10.0)

    def make_load(device, model):
        if device.serial in fleet_serials and (model or "").startswith("adbflow-virtual"):
            return FleetLoad(fleet, device.serial)
        cores = os.cpu_count() or 8
        try:
            cores = int(device.shell("cat /sys/devices/system/cpu/present", timeout=10.0)
                        .stdout.strip().split("-")[-1]) + 1
        except (AdbflowError, ValueError):
            pass
        return BusyLoad(device, cores)

    def measure_load(device):
        b = bidder.bid(device)
        return None if b.error or b.cpu_load != b.cpu_load else b.cpu_load

    reports = []
    for dev in devices:
        rep = measure_device(dev, book, loads=args.loads, tool=args.tool, runs=args.runs,
                             make_load=make_load, measure_load=measure_load,
                             op_model=args.op_model.read_bytes() if args.op_profile else None)
        if rep.points and not args.dry_run and rep.model:
            prof = measured_profile(book.for_model(rep.model), rep.model, rep)
            args.out.mkdir(parents=True, exist_ok=True)
            path = args.out / f"{prof.name}.toml"
            tmp = path.with_suffix(".toml.tmp")
            tmp.write_text(dump_profile(prof))
            tmp.replace(path)
            rep.written = str(path)
        reports.append(rep)
    bidder.close()
    if args.json:
        print(json.dumps([asdict(r) for r in reports], indent=2))
    else:
        for r in reports:
            pts = ", ".join(f"{p.load_pct:.0f}%: {p.ms:.1f} ms" for p in r.points)
            print(f"{r.serial} ({r.model}, profile {r.profile}): {pts or 'no data'}"
                  + (f"; t0 {r.classify_ms:.1f} ms, load sensitivity {r.load_sensitivity:.2f}"
                     if r.classify_ms else "")
                  + (f"; adb {r.adb_latency_ms:.1f} ms, push {r.bandwidth_mb_s:.1f} MB/s"
                     if r.adb_latency_ms else "")
                  + (f"; op profile {len(r.op_profile['op_ms'])} ops, "
                     f"{sum(r.op_profile['op_ms']):.1f} ms, launch {r.op_profile['launch_ms']:.0f} ms"
                     if r.op_profile else "")
                  + (f" -> {r.written}" if r.written else "") + (f"  ERROR: {r.error}" if r.error else ""))
    return 0 if all(r.error is None for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
