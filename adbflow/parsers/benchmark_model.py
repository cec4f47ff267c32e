"""Parse TFLite `benchmark_model` output (CLI over adb, or the benchmark APK's logcat).

Why: benchmark_label_image measures each phone's classify latency with benchmark_model and
writes it into the device's profile; the scheduler's priors are only as good as this parse.
Seen formats (tests/fixtures/tflite_benchmark): plain lines, `INFO: ` prefixes (TF >= 2.x),
logcat threadtime prefixes (`05-30 15:16:44.857  3380  3380 I tflite  : `), markdown/rst
indentation, scientific notation (`1.59906e+06`), `count=1 curr=...` without first/min/max,
and op-profiling tables with or without the `[start]` column. `ops` holds the Run Order
table of the regular-runs profile only (one row per node, in execution order): the
initialization profile, "Top by Computation Time" and "Summary by node type" repeat or
aggregate the same nodes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from adbflow.errors import ParseError
from adbflow.parsers.numbers import finite_float

_PREFIX = re.compile(
    r"^\s*(?:\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+\s+\d+\s+\d+\s+[VDIWEF]\s+\S+\s*:\s?)?"  # logcat
    r"(?:\.\.\.\s+\S+\s*:\s?)?"                                                       # "... tflite  :"
    r"(?:(?:INFO|WARNING|ERROR|VERBOSE|DEBUG):\s*)?")
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_SUMMARY = re.compile(r"Inference timings in us:\s*(.*)$")
_SUMMARY_FIELD = re.compile(rf"([A-Za-z][A-Za-z ()]*?):\s*({_NUM})")
_RUN = re.compile(rf"^count=(\d+)((?:\s+\w+={_NUM})*)\s*$")
_KV = re.compile(rf"(\w+)=({_NUM})")
_PARAM = re.compile(r"^([A-Za-z#][^:\[\]]*?):\s*\[(.*)\]\s*$")
_MODEL_SIZE = re.compile(rf"input model file size \(MB\):\s*({_NUM})")
_INIT_SESSION = re.compile(rf"Initialized session in\s*({_NUM})\s*ms")
_MEMORY = re.compile(rf"Memory footprint delta.*?init=({_NUM})\s+overall=({_NUM})")
_PEAK = re.compile(rf"peak memory footprint \(MB\)[^:]*:\s*({_NUM})")
_TF_VERSION = re.compile(r"Tensorflow Version\s*:\s*(\S+)")
_OP_ROW = re.compile(
    rf"^\s*(\S+)\s+(?:({_NUM})\s+)?({_NUM})\s+({_NUM})\s+({_NUM})%\s+({_NUM})%\s+({_NUM})\s+(\d+)\s+(.*)$")


@dataclass(frozen=True)
class RunStats:
    """One `count=... first=... avg=...` line (values in microseconds)."""

    count: int
    values: dict[str, float]

    @property
    def avg_us(self) -> float | None:
        return self.values.get("avg", self.values.get("curr"))


@dataclass(frozen=True)
class OpProfile:
    node_type: str
    first_ms: float
    avg_ms: float
    percent: float
    cdf_percent: float
    mem_kb: float
    times_called: int
    name: str


@dataclass
class BenchmarkModelResult:
    """Everything we use from one benchmark_model run. Times in microseconds unless named."""

    init_us: float | None = None
    first_inference_us: float | None = None
    warmup_avg_us: float | None = None
    inference_avg_us: float | None = None
    runs: list[RunStats] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    model_size_mb: float | None = None
    init_session_ms: float | None = None
    memory_init_mb: float | None = None
    memory_overall_mb: float | None = None
    tf_version: str | None = None
    ops: list[OpProfile] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def avg_ms(self) -> float | None:
        """Steady-state inference latency: the summary line, else the last run's average,
        else the sum of the op profile (one inference), else None."""
        if self.inference_avg_us is not None:
            return self.inference_avg_us / 1000.0
        if self.runs and self.runs[-1].avg_us is not None:
            return self.runs[-1].avg_us / 1000.0
        if self.ops:
            return sum(op.avg_ms * op.times_called for op in self.ops)
        return None

    @property
    def num_threads(self) -> int | None:
        for key in ("Num threads", "#threads used for CPU inference"):
            if key in self.params:
                try:
                    return int(self.params[key])
                except ValueError:
                    return None
        return None


def _strip(line: str) -> str:
    return _PREFIX.sub("", line.rstrip("\r\n"), count=1).strip()


def _float(text: str, line: str) -> float:
    """A number from the output; a garbled one ("1e309" overflows to inf) is a ParseError,
    never an inf or nan that would poison the profiles written from it."""
    value = finite_float(text)
    if value is None:
        raise ParseError("benchmark_model", f"bad or out of range number {text!r}", line)
    return value


def parse_benchmark_model(text: str) -> BenchmarkModelResult:
    """Parse benchmark_model output; ParseError when it holds no timing at all."""
    if not isinstance(text, str):
        raise ParseError("benchmark_model", "expected text", repr(text))
    res = BenchmarkModelResult()
    in_ops = False          # inside the regular-runs profile (not the initialization one)
    table = "run_order"     # which table of that profile: only Run Order rows are ops
    for raw in text.splitlines():
        raw_stripped = raw.strip()
        if raw_stripped.startswith("ERROR:") or " E tflite" in raw:
            res.errors.append(_strip(raw))
        line = _strip(raw)
        if not line:
            continue
        m = _SUMMARY.search(line)
        if m:
            fields_ = {k.strip().lower(): _float(v, line) for k, v in _SUMMARY_FIELD.findall(m.group(1))}
            if "inference (avg)" not in fields_:
                raise ParseError("benchmark_model", "summary line without Inference (avg)", line)
            res.init_us = fields_.get("init")
            res.first_inference_us = fields_.get("first inference")
            res.warmup_avg_us = fields_.get("warmup (avg)")
            res.inference_avg_us = fields_["inference (avg)"]
            in_ops = False
            continue
        m = _RUN.match(line)
        if m:
            res.runs.append(RunStats(int(m.group(1)),
                                     {k: _float(v, line) for k, v in _KV.findall(m.group(2))}))
            continue
        if "Profiling Info for Benchmark Initialization" in line:
            in_ops = False
            continue
        if "Operator-wise Profiling Info" in line or "Profiling Info for" in line:
            in_ops, table = True, "run_order"
            continue
        if line.startswith("="):
            table = ("top" if "Top by" in line else "summary" if "Summary by" in line
                     else "run_order" if "Run Order" in line else table)
            continue
        if in_ops:
            if line.startswith("[node type]") or line.startswith("[Node type]"):
                continue
            m = _OP_ROW.match(line) if table == "run_order" else None
            if m:
                res.ops.append(OpProfile(
                    node_type=m.group(1), first_ms=_float(m.group(3), line),
                    avg_ms=_float(m.group(4), line), percent=_float(m.group(5), line),
                    cdf_percent=_float(m.group(6), line), mem_kb=_float(m.group(7), line),
                    times_called=int(m.group(8)), name=m.group(9).strip()))
                continue
        if (m := _MODEL_SIZE.search(line)):
            res.model_size_mb = _float(m.group(1), line)
        elif (m := _INIT_SESSION.search(line)):
            res.init_session_ms = _float(m.group(1), line)
        elif (m := _MEMORY.search(line)):
            res.memory_init_mb, res.memory_overall_mb = (_float(m.group(1), line),
                                                         _float(m.group(2), line))
        elif (m := _PEAK.search(line)):
            res.memory_overall_mb = _float(m.group(1), line)
        elif (m := _TF_VERSION.search(line)):
            res.tf_version = m.group(1)
        elif (m := _PARAM.match(line)):
            res.params[m.group(1).strip()] = m.group(2).strip()
    if res.inference_avg_us is None and not res.runs and not res.ops:
        raise ParseError("benchmark_model",
                         "no 'Inference timings in us', 'count=' or op-profiling lines",
                         text.strip()[:300])
    return res
