"""Per-op times of a model on a phone, and the adb links: measured, stored, or a prior.

Why measured on the phone: a cut's head and tail times are sums over op prefixes and
suffixes, and op mixes differ in speed between phones (depthwise convolutions are memory
bound, 1x1 convolutions compute bound). TFLite's own `benchmark_model
--enable_op_profiling=true` prints them; on a real phone run it with `--use_xnnpack=false`
so that rows are per op (XNNPACK fuses ops into delegate rows). When the rows do not map
one to one onto the model's ops, the measured total is shared out by op cost estimate and
the source says so.

Where they are kept, first found wins: `<data dir>/split/op_times.json` (per serial and
model, written by `adbflow split profile`), a profile's `[[measurements]]` entry with
`stage = "op_profile"` (written by `python -m benchmark_label_image --op-profile`), else a
prior: the profile's classify_ms shared out by op cost (stated as source "prior").
"""
from __future__ import annotations

import enum
import json
import os
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from adbflow.device.port import DevicePort
from adbflow.errors import ParseError, SplitError
from adbflow.parsers.benchmark_model import BenchmarkModelResult, parse_benchmark_model
from adbflow.parsers.tflite_model import OpInfo
from adbflow.scheduling.profiles import DeviceProfile
from adbflow.split.plan import Link, OpTimes

OP_PROFILE_STAGE = "op_profile"
PRIOR_LAUNCH_S = 0.3       # one benchmark_model call beyond inference, before it is measured
_ROW_INDEX = re.compile(r":(\d+)$")


def benchmark_binary(profile: DeviceProfile) -> str:
    """benchmark_model sits next to label_image in the profile's layout."""
    return str(Path(profile.label_image.binary).parent / "benchmark_model")


def single_run_args(threads: int) -> list[str]:
    """One measured inference, no warm-up: a split stage is one picture."""
    return [f"--num_threads={threads}", "--num_runs=1", "--warmup_runs=0", "--min_secs=0",
            "--warmup_min_secs=0"]


def op_ms_from_profile(result: BenchmarkModelResult, ops: Sequence[OpInfo]) -> tuple[list[float], str]:
    """Per-op ms in model order from a parsed op profile: by the `:index` of each row when
    the rows cover every op once, else the measured total shared out by op cost."""
    by_index: dict[int, float] = {}
    for row in result.ops:
        m = _ROW_INDEX.search(row.name)
        if m:
            by_index[int(m.group(1))] = by_index.get(int(m.group(1)), 0.0) + row.avg_ms * row.times_called
    types_match = all(i < len(ops) and ops[i].node_type == row.node_type
                      for row in result.ops if (m := _ROW_INDEX.search(row.name))
                      for i in [int(m.group(1))])
    if len(result.ops) == len(ops) and set(by_index) == set(range(len(ops))) and types_match:
        return [by_index[i] for i in range(len(ops))], "measured op profile"
    total = result.avg_ms
    if total is None:
        raise ParseError("benchmark_model", "op profile without any timing", "")
    cost = sum(o.cost for o in ops) or 1.0
    return [total * o.cost / cost for o in ops], \
        f"measured total shared by op cost ({len(result.ops)} profile rows for {len(ops)} ops)"


def measure_op_times(device: DevicePort, profile: DeviceProfile, graph_remote: str,
                     ops: Sequence[OpInfo], *, graph_mb: float = 0.0,
                     small: tuple[str, float] | None = None, runs: int = 5,
                     timeout: float = 300.0, tries: int = 3) -> OpTimes:
    """Run benchmark_model on the phone: an op profile over `runs` inferences (the per-op
    times), then the launch cost measured the way a split stage pays it: single-inference
    calls of the whole graph and, when given, of a small graph (remote path, MB),
    alternated so that a change in the phone's (or host's) load hits both alike. The two
    fit launch = base + per_mb * MB, since loading a part's weights is part of the cost.

    Why not the op-profile call's wall time minus its inferences: that call also pays for
    the profiler (timers around every op, the tables printed at exit), which a split stage
    does not. Taken as the whole graph's launch, it made the slope up (25-53 ms/MB on the
    fleet, whose real launch does not grow with MB at all), and a small part's predicted
    launch came out half of what it measured (bench/split.py: -48 % on a 0.25 s tail)."""
    binary = benchmark_binary(profile)
    threads = profile.label_image.threads
    argv = [binary, f"--graph={graph_remote}", f"--num_threads={threads}", f"--num_runs={runs}",
            "--warmup_runs=0", "--min_secs=0", "--warmup_min_secs=0", "--enable_op_profiling=true"]
    res = device.run(argv, timeout=timeout, check=False)
    if res.exit_code != 0:
        raise SplitError(f"benchmark_model --enable_op_profiling exited {res.exit_code}: "
                         f"{_last_error(res.stderr)}", serial=device.serial, step="op profile",
                         hint="is benchmark_model installed next to label_image?")
    parsed = parse_benchmark_model(res.stdout + "\n" + res.stderr)
    op_ms, source = op_ms_from_profile(parsed, ops)
    if small is None or graph_mb <= small[1]:
        big = launch_costs(device, binary, [graph_remote], threads, timeout, tries)[0]
        return OpTimes(tuple(op_ms), big, source)
    big, little = launch_costs(device, binary, [graph_remote, small[0]], threads, timeout, tries)
    base, per_mb = fit_launch(graph_mb, big, small[1], little)
    return OpTimes(tuple(op_ms), base, source, per_mb)


def fit_launch(big_mb: float, big_s: float, small_mb: float, small_s: float) -> tuple[float, float]:
    """(base, per_mb) of the line through two launches; slope >= 0 (loading more weights
    never makes a launch cheaper: a smaller big launch is noise, and then the base is the
    mean of the two)."""
    per_mb = max(0.0, (big_s - small_s) / (big_mb - small_mb)) if big_mb > small_mb else 0.0
    if per_mb == 0.0:
        return (big_s + small_s) / 2.0, 0.0
    return max(0.0, small_s - per_mb * small_mb), per_mb


def launch_costs(device: DevicePort, binary: str, graphs: Sequence[str], threads: int,
                 timeout: float, tries: int = 3) -> list[float]:
    """Per graph: wall time of a one-inference benchmark_model call (the flags a split
    stage uses) minus the inference it reports; median of `tries`, the graphs taken in
    turn (on a shared host a single call can be slowed by anything)."""
    out: list[list[float]] = [[] for _ in graphs]
    for _ in range(tries):
        for i, graph in enumerate(graphs):
            t0 = time.monotonic()
            one = device.run([binary, f"--graph={graph}", *single_run_args(threads)],
                             timeout=timeout, check=False)
            wall = time.monotonic() - t0
            if one.exit_code != 0:
                raise SplitError(f"benchmark_model exited {one.exit_code}: {_last_error(one.stderr)}",
                                 serial=device.serial, step="launch cost")
            inf = parse_benchmark_model(one.stdout + "\n" + one.stderr).avg_ms or 0.0
            out[i].append(max(0.0, wall - inf / 1000.0))
    return [statistics.median(x) for x in out]


def _last_error(stderr: str) -> str:
    lines = [x for x in stderr.strip().splitlines() if x.strip()]
    errs = [x for x in lines if x.startswith("ERROR")]
    return (errs[0] if errs else lines[-1] if lines else "no output")[:300]


def prior_op_times(profile: DeviceProfile, ops: Sequence[OpInfo], *, scale: float = 1.0) -> OpTimes:
    """Before anything is measured: the profile's classify time shared out by op cost
    (`scale` = this model's op cost / the profile classifier's)."""
    cost = sum(o.cost for o in ops) or 1.0
    total_ms = profile.timing.classify_ms * scale
    return OpTimes(tuple(total_ms * o.cost / cost for o in ops), PRIOR_LAUNCH_S, "prior")


def profile_op_times(profile: DeviceProfile, model_name: str, n_ops: int) -> OpTimes | None:
    """The newest op_profile measurement of `model_name` (file name) in a profile."""
    for m in reversed(profile.measurements):
        if (m.get("stage") == OP_PROFILE_STAGE and Path(str(m.get("model", ""))).name == model_name
                and len(m.get("op_ms") or []) == n_ops):
            return OpTimes(tuple(float(x) for x in m["op_ms"]), float(m.get("launch_ms", 0)) / 1000.0,
                           f"profile {profile.name}", float(m.get("launch_ms_per_mb", 0)) / 1000.0)
    return None


def op_profile_measurement(model_remote: str, times: OpTimes) -> dict[str, Any]:
    """The [[measurements]] entry benchmark_label_image writes for an op profile."""
    return {"stage": OP_PROFILE_STAGE, "tool": "benchmark_model", "model": model_remote,
            "source": times.source, "launch_ms": round(times.launch_s * 1000.0, 2),
            "launch_ms_per_mb": round(times.launch_s_per_mb * 1000.0, 3),
            "op_ms": [round(x, 4) for x in times.op_ms]}


class OpTimesStore:
    """`<data dir>/split/op_times.json`: {serial: {model digest: {op_ms, launch_s, ...}}}."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def get(self, serial: str, digest: str, n_ops: int) -> OpTimes | None:
        e = (self._read().get(serial) or {}).get(digest)
        if not isinstance(e, dict) or len(e.get("op_ms") or []) != n_ops:
            return None
        return OpTimes(tuple(float(x) for x in e["op_ms"]), float(e["launch_s"]),
                       f"measured on {serial} ({e.get('source', '')})",
                       float(e.get("launch_s_per_mb", 0.0)))

    def put(self, serial: str, digest: str, times: OpTimes) -> None:
        data = self._read()
        data.setdefault(serial, {})[digest] = {"op_ms": list(times.op_ms), "launch_s": times.launch_s,
                                               "launch_s_per_mb": times.launch_s_per_mb,
                                               "source": times.source, "measured_at": time.time()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.path)


@dataclass
class LaunchModel:
    """launch = base + per_mb * MB, refitted from the launches we observe (each split stage:
    wall time of the benchmark_model call minus the inference it reports).

    Why learn it: on a phone the launch is process start + loading the part; on the
    virtual fleet it is a host Python process, whose cost follows how busy the shared host
    is right now. Recent observations (the last `keep`) beat a calibration from minutes ago.
    One size seen: only the base moves; two or more: Theil-Sen (median slope, median
    intercept), slope >= 0."""

    base_s: float
    per_mb_s: float
    keep: int = 12
    seen: list[tuple[float, float]] = field(default_factory=list)

    @classmethod
    def calibrated(cls, times: OpTimes, small_mb: float, big_mb: float) -> LaunchModel:
        """Starts from the calibration's line as two observations, at the small part's size
        and the whole model's: the first launches we see then refine it rather than replace
        it. Why: the calibration timed a small part and the whole model alternately, three
        times each. Without those two points, the first runs (all large parts) fixed the
        line, and a later small tail's launch came out 20-56 % short (bench/split.py, cut 63)."""
        lm = cls(times.launch_s, times.launch_s_per_mb)
        for mb in sorted({max(0.0, small_mb), max(0.0, big_mb)}):
            lm.seen.append((mb, times.launch_s + times.launch_s_per_mb * mb))
        return lm

    def observe(self, mb: float, launch_s: float) -> None:
        self.seen.append((mb, launch_s))
        del self.seen[:-self.keep]
        pairs = [(y2 - y1) / (x2 - x1) for i, (x1, y1) in enumerate(self.seen)
                 for (x2, y2) in self.seen[i + 1:] if abs(x2 - x1) >= 0.5]
        if pairs:   # Theil-Sen: one launch slowed by a host hiccup does not tilt the line
            self.per_mb_s = max(0.0, statistics.median(pairs))
        self.base_s = max(0.0, statistics.median(y - self.per_mb_s * x for x, y in self.seen))

    def apply(self, times: OpTimes) -> OpTimes:
        return replace(times, launch_s=self.base_s, launch_s_per_mb=self.per_mb_s)


class Direction(enum.Enum):
    """Which way a transfer went: a push creates the file on the phone (and sets its mode
    and mtime), a pull only reads, so their fixed costs differ."""

    PUSH = "push"
    PULL = "pull"


@dataclass
class _DirectionEstimate:
    """One direction of a link: fixed cost (median of the last `keep` transfers whose bytes
    take less than it) and bandwidth (EWMA over larger ones, after that fixed cost).
    Why a median for the fixed cost: a few-ms transfer now and then takes 2-3x as long (the
    laptop or a phone busy for a moment); an EWMA carried each such outlier into the next
    predictions, a median ignores it."""

    latency_s: float
    bytes_per_s: float
    alpha: float
    samples: int = 0
    keep: int = 9
    fixed: list[float] = field(default_factory=list)

    def observe(self, nbytes: int, seconds: float) -> None:
        """A transfer under 32 KiB, or whose bytes take less than the fixed cost at the
        bandwidth known so far, teaches the fixed cost; a larger one the bandwidth. Why not
        the size alone: on a fast link (loopback, USB 3) a 250 KB tensor still takes less
        than one round trip, and read as a bandwidth sample it made the next prediction 3x
        too long."""
        byte_s = nbytes / max(1.0, self.bytes_per_s)
        if nbytes < 32 << 10 or byte_s < self.latency_s:
            self.fixed.append(max(0.0, seconds - byte_s))
            del self.fixed[:-self.keep]
            self.latency_s = statistics.median(self.fixed)
            return
        if seconds <= self.latency_s:
            return
        bw = nbytes / (seconds - self.latency_s)
        self.bytes_per_s = bw if self.samples == 0 else (1 - self.alpha) * self.bytes_per_s + self.alpha * bw
        self.samples += 1


@dataclass
class LinkEstimate:
    """A phone's adb link, learned from the transfers we make, each direction apart: the
    fixed cost of one transfer and the bandwidth. Both start from the profile's numbers.

    Why the fixed cost is learned, not the profile's round trip: one push or pull is
    several round trips (open the transport, the sync service, SEND/RECV, DONE, QUIT) plus
    a temporary file and a rename on the laptop; on the virtual fleet it also waits for a
    busy host. Taken as one 4 ms round trip, every small transfer came out 70-98 % short
    (bench/split.py). Why per direction: with one estimate for both, pushes (which create
    and stamp a file on the phone) came out 27-42 % long and pulls short."""

    push: _DirectionEstimate
    pull: _DirectionEstimate

    @classmethod
    def start(cls, latency_s: float, bytes_per_s: float, alpha: float = 0.3) -> LinkEstimate:
        """Both directions from the same first guess."""
        return cls(_DirectionEstimate(latency_s, bytes_per_s, alpha),
                   _DirectionEstimate(latency_s, bytes_per_s, alpha))

    @classmethod
    def from_profile(cls, profile: DeviceProfile, alpha: float = 0.3) -> LinkEstimate:
        return cls.start(profile.timing.adb_latency_ms / 1000.0,
                         profile.timing.bandwidth_mb_s * 1e6, alpha)

    def observe(self, direction: Direction, nbytes: int, seconds: float) -> None:
        (self.push if direction is Direction.PUSH else self.pull).observe(nbytes, seconds)

    def link(self) -> Link:
        return Link(self.push.latency_s, self.push.bytes_per_s,
                    self.pull.latency_s, self.pull.bytes_per_s)
