"""Run a model whole or split over two phones with the stock `benchmark_model`.

Why benchmark_model: it is the one stock TFLite tool that reads an input tensor from a raw
file (`--input_layer_value_files`, exact size) and writes the outputs raw
(`--output_filepath`), so a head part's output file is the tail part's input file.

One split job, every step timed (the keys of plan.Candidate.parts):

    push_in   laptop -> A   the input tensor (raw)
    head      on A          benchmark_model --graph=<head> ... --output_filepath=<cut>
    pull_cut  A -> laptop   the cut tensor (bounded: exactly its expected size)
    push_cut  laptop -> B
    tail      on B          benchmark_model --graph=<tail> --input_layer=cut ...
    pull_out  B -> laptop   the model's output (exactly its size)

Parts are cut on the laptop (adbflow.split.tflite_cut), cached under the data dir by
model digest and cut, and pushed once per phone (a file of the same size is reused).
Every device path is ours (names built from digests and job numbers), every argument is
quoted by Device.run, nothing from the phone is executed. A failure (a part's non-zero
exit, a phone that vanishes mid-transfer, a tensor of the wrong size) raises SplitError
naming the phone and step; `run_with_fallback` then runs the job whole on a phone that is
still there and says why.
"""
from __future__ import annotations

import itertools
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adbflow.device.port import DevicePort
from adbflow.errors import AdbError, AdbflowError, ParseError, SplitError
from adbflow.parsers.benchmark_model import parse_benchmark_model
from adbflow.parsers.tflite_model import DTYPES, cached_model, ints, tensor_nbytes, tensor_shape
from adbflow.runtime.devtime import run_timed
from adbflow.split.plan import Candidate
from adbflow.split.profiling import Direction, LinkEstimate, single_run_args
from adbflow.split.tflite_cut import CUT_TENSOR_NAME, SplitModels, model_digest, split_model

REMOTE_DIR = "/data/local/tmp/adbflow-split"
INPUT_NAME = "input"


@dataclass
class TensorSpec:
    """A graph input or output: what its raw file must hold."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    nbytes: int


def io_specs(model: bytes) -> tuple[TensorSpec, TensorSpec]:
    """The single input and output of a model (split inference needs one of each)."""
    m = cached_model(model)
    sg = m.subgraphs[0]
    if len(ints(sg.inputs)) != 1 or len(ints(sg.outputs)) != 1:
        raise SplitError(f"model has {len(ints(sg.inputs))} inputs and {len(ints(sg.outputs))} "
                         "outputs", hint="split runs need one input and one output")

    def spec(i: int) -> TensorSpec:
        t = sg.tensors[i]
        nbytes = tensor_nbytes(t)
        if nbytes is None:
            raise SplitError(f"tensor {i} has an unsupported type {t.type}")
        name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
        return TensorSpec(name, tensor_shape(t), DTYPES[t.type], nbytes)
    return spec(ints(sg.inputs)[0]), spec(ints(sg.outputs)[0])


@dataclass
class StageResult:
    """Measured seconds per step, the device-reported inference times, and the output."""

    output: bytes
    parts: dict[str, float] = field(default_factory=dict)
    inference_s: dict[str, float] = field(default_factory=dict)
    marks: dict[str, tuple[float, float]] = field(default_factory=dict)   # monotonic start, end
    plan: str = ""
    fallback: str | None = None
    # for the journal and traces (adbflow.split.record): laptop wall-clock start/end of each
    # step, the phone each step used, the phone's own clock marks around each program run
    walls: dict[str, tuple[float, float]] = field(default_factory=dict)
    serials: dict[str, str] = field(default_factory=dict)
    device_times: dict[str, dict[str, Any]] = field(default_factory=dict)
    nbytes: dict[str, int] = field(default_factory=dict)
    # a fallback's failed split: its steps so far, and what failed (step, serial, error)
    attempted: StageResult | None = None
    failure: dict[str, str | None] | None = None

    @property
    def total_s(self) -> float:
        return sum(self.parts.values())

    def mark(self, key: str, t0: float, serial: str | None = None) -> None:
        t1, w1 = time.monotonic(), time.time()
        self.parts[key] = t1 - t0
        self.marks[key] = (t0, t1)
        self.walls[key] = (w1 - (t1 - t0), w1)   # the same interval on the wall clock
        if serial is not None:
            self.serials[key] = serial


class SplitRunner:
    """Runs one model on a set of phones (DevicePort), whole or cut."""

    def __init__(self, devices: Mapping[str, DevicePort], model: bytes, cache_dir: Path, *,
                 binary: Mapping[str, str] | str, threads: int = 4, timeout: float = 300.0,
                 links: Mapping[str, LinkEstimate] | None = None,
                 on_run: Callable[[str, str, float, float, float], None] | None = None) -> None:
        self.devices = dict(devices)
        self.model = model
        self.digest = model_digest(model)
        self.cache_dir = cache_dir
        self.binary = binary
        self.threads = threads
        self.timeout = timeout
        self.links = dict(links or {})
        self.whole_remote: dict[str, str] = {}
        # after each run: (serial, graph name, part MB, wall seconds, reported inference seconds)
        self.on_run = on_run
        self.private_to: str | None = None   # privacy: pixels (whole runs) only on this phone
        self._sizes: dict[str, int] = {}
        self.input_spec, self.output_spec = io_specs(model)
        self._parts: dict[int, SplitModels] = {}
        self._pushed: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._jobs = itertools.count(1)

    # ------------------------------------------------------------------ helpers
    def _bin(self, serial: str) -> str:
        return self.binary if isinstance(self.binary, str) else self.binary[serial]

    def _dev(self, serial: str) -> DevicePort:
        try:
            return self.devices[serial]
        except KeyError:
            raise SplitError("no such device in the inventory", serial=serial,
                             hint="check `adbflow devices`") from None

    def parts(self, cut: int) -> SplitModels:
        """Head and tail of this cut, cut once and cached on disk by model digest."""
        with self._lock:
            if cut in self._parts:
                return self._parts[cut]
        head_p = self.cache_dir / f"{self.digest}-{cut}-head.tflite"
        tail_p = self.cache_dir / f"{self.digest}-{cut}-tail.tflite"
        sm = split_model(self.model, cut, input_name=INPUT_NAME)
        if not (head_p.is_file() and tail_p.is_file()):
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            for p, data in ((head_p, sm.head), (tail_p, sm.tail)):
                tmp = p.with_suffix(".tmp")
                tmp.write_bytes(data)
                tmp.replace(p)
        with self._lock:
            self._parts[cut] = sm
        return sm

    def _ensure_file(self, serial: str, data: bytes, name: str) -> str:
        """The bytes at REMOTE_DIR/name on the phone, pushed unless already there."""
        remote = f"{REMOTE_DIR}/{name}"
        with self._lock:
            self._sizes[remote] = len(data)
            if (serial, remote) in self._pushed:
                return remote
        dev = self._dev(serial)
        st = dev.stat(remote, timeout=30.0)
        if st is None or st.size != len(data):
            dev.run(["mkdir", "-p", REMOTE_DIR], timeout=30.0)
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(tmp) / "part.tflite"
                local.write_bytes(data)
                dev.push(local, remote + ".tmp", timeout=self.timeout)
            dev.run(["mv", "-f", remote + ".tmp", remote], timeout=30.0)
        with self._lock:
            self._pushed.add((serial, remote))
        return remote

    def ensure_part(self, serial: str, cut: int, which: str) -> str:
        """The head or tail part of `cut` on the phone (pushed once); its device path."""
        sm = self.parts(cut)
        return self._ensure_file(serial, sm.head if which == "head" else sm.tail,
                                 f"{self.digest}-{cut}-{which}.tflite")

    def ensure_whole(self, serial: str) -> str:
        """Our copy of the whole model on the phone (the bytes the parts were cut from)."""
        if serial not in self.whole_remote:
            self.whole_remote[serial] = self._ensure_file(serial, self.model,
                                                          f"{self.digest}-whole.tflite")
        return self.whole_remote[serial]

    def prepare(self, cand: Candidate) -> None:
        """Push the parts a candidate needs before timing starts (done once per phone)."""
        if cand.is_split:
            a, cut, b = cand.split_of()
            self.ensure_part(a, cut, "head")
            self.ensure_part(b, cut, "tail")
        else:
            self.ensure_whole(cand.a)

    def _push(self, serial: str, data: bytes, remote: str, key: str, res: StageResult) -> None:
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "tensor.raw"
            local.write_bytes(data)
            try:
                self._dev(serial).push(local, remote, timeout=self.timeout)
            except AdbflowError as exc:
                raise SplitError(f"push of {len(data)} bytes failed: {exc}", serial=serial,
                                 step=key) from exc
        res.mark(key, t0, serial)
        res.nbytes[key] = len(data)
        if serial in self.links:
            self.links[serial].observe(Direction.PUSH, len(data), res.parts[key])

    def _pull(self, serial: str, remote: str, nbytes: int, key: str, res: StageResult) -> bytes:
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "tensor.raw"
            try:
                self._dev(serial).pull(remote, local, timeout=self.timeout, max_bytes=nbytes)
            except AdbflowError as exc:
                raise SplitError(f"pull of {remote} failed: {exc}", serial=serial, step=key,
                                 hint=f"expected exactly {nbytes} bytes") from exc
            data = local.read_bytes()
        if len(data) != nbytes:
            raise SplitError(f"{remote} has {len(data)} bytes, expected {nbytes}", serial=serial,
                             step=key, hint="the part and the plan disagree on the cut tensor")
        res.mark(key, t0, serial)
        res.nbytes[key] = nbytes
        if serial in self.links:
            self.links[serial].observe(Direction.PULL, nbytes, res.parts[key])
        return data

    def _bench(self, serial: str, graph: str, in_name: str, in_shape: Sequence[int],
               in_remote: str, out_remote: str, key: str, res: StageResult) -> None:
        argv = [self._bin(serial), f"--graph={graph}", *single_run_args(self.threads),
                f"--input_layer={in_name}", f"--input_layer_shape={','.join(map(str, in_shape))}",
                f"--input_layer_value_files={in_name}:{in_remote}", f"--output_filepath={out_remote}"]
        t0 = time.monotonic()
        try:
            # between the phone's own clock marks (devtime), for traces on its clock
            out, times = run_timed(self._dev(serial), argv, timeout=self.timeout, check=False)
        except AdbflowError as exc:
            raise SplitError(f"benchmark_model did not finish: {exc}", serial=serial, step=key) from exc
        res.mark(key, t0, serial)
        if "device" in times:
            res.device_times[key] = times["device"]
        if out.exit_code != 0:
            errs = [x for x in out.stderr.splitlines() if x.startswith("ERROR")] or \
                out.stderr.strip().splitlines()[-1:] or [f"exit code {out.exit_code}"]
            raise SplitError(f"benchmark_model exited {out.exit_code}: {errs[0][:300]}",
                             serial=serial, step=key)
        try:
            ms = parse_benchmark_model(out.stdout + "\n" + out.stderr).avg_ms
        except ParseError:
            ms = None
        if ms is not None:
            res.inference_s[key] = ms / 1000.0
            if self.on_run is not None and graph in self._sizes:
                self.on_run(serial, graph.rsplit("/", 1)[-1], self._sizes[graph] / 1e6,
                            res.parts[key], ms / 1000.0)

    # ------------------------------------------------------------------ stages
    def job_name(self) -> str:
        return f"j{next(self._jobs)}"

    def _stage(self, serial: str, graph: str, in_name: str, in_shape: Sequence[int],
               data: bytes, out_nbytes: int, job: str, keys: tuple[str, str, str],
               res: StageResult) -> bytes:
        """One stage on one phone: push the input tensor, run the graph, pull the output
        (exactly `out_nbytes`); the step names in `keys` are the timing keys."""
        push_key, run_key, pull_key = keys
        in_r, out_r = f"{REMOTE_DIR}/{job}-{push_key}.raw", f"{REMOTE_DIR}/{job}-{pull_key}.raw"
        self._push(serial, data, in_r, push_key, res)
        self._bench(serial, graph, in_name, in_shape, in_r, out_r, run_key, res)
        out = self._pull(serial, out_r, out_nbytes, pull_key, res)
        self._cleanup(serial, [in_r, out_r])
        return out

    def head(self, a: str, cut: int, tensor: bytes, job: str, res: StageResult) -> bytes:
        """push_in, head, pull_cut on phone A; returns the cut tensor."""
        self._check_input(tensor)
        return self._stage(a, self.ensure_part(a, cut, "head"), INPUT_NAME, self.input_spec.shape,
                           tensor, self.parts(cut).cut.nbytes, job,
                           ("push_in", "head", "pull_cut"), res)

    def tail(self, b: str, cut: int, cut_tensor: bytes, job: str, res: StageResult) -> bytes:
        """push_cut, tail, pull_out on phone B; returns the model's output."""
        sm = self.parts(cut)
        if len(cut_tensor) != sm.cut.nbytes:
            raise SplitError(f"cut tensor has {len(cut_tensor)} bytes, expected {sm.cut.nbytes}",
                             serial=b, step="push_cut")
        return self._stage(b, self.ensure_part(b, cut, "tail"), CUT_TENSOR_NAME, sm.cut.shape,
                           cut_tensor, self.output_spec.nbytes, job,
                           ("push_cut", "tail", "pull_out"), res)

    def whole(self, d: str, tensor: bytes, job: str | None = None) -> StageResult:
        """push_in, run, pull_out: the model whole on one phone."""
        res = StageResult(b"", plan=f"whole:{d}")
        self._check_input(tensor)
        res.output = self._stage(d, self.ensure_whole(d), self.input_spec.name, self.input_spec.shape,
                                 tensor, self.output_spec.nbytes, job or self.job_name(),
                                 ("push_in", "run", "pull_out"), res)
        return res

    def split(self, a: str, cut: int, b: str, tensor: bytes,
              res: StageResult | None = None) -> StageResult:
        job = self.job_name()
        res = res if res is not None else StageResult(b"", plan=f"{a}:{cut}:{b}")
        cut_tensor = self.head(a, cut, tensor, job, res)
        res.output = self.tail(b, cut, cut_tensor, job, res)
        return res

    def run(self, cand: Candidate, tensor: bytes) -> StageResult:
        return self.split(*cand.split_of(), tensor) if cand.is_split else self.whole(cand.a, tensor)

    def run_with_fallback(self, cand: Candidate, tensor: bytes) -> StageResult:
        """The plan; if a split step fails, the job whole on a phone that still answers."""
        if not cand.is_split:
            return self.run(cand, tensor)
        a, cut, b = cand.split_of()
        tried = StageResult(b"", plan=f"{a}:{cut}:{b}")
        try:
            return self.split(a, cut, b, tensor, tried)
        except SplitError as exc:
            res = self.fallback_whole(cand, tensor, exc)
            res.attempted = tried
            return res

    def fallback_whole(self, cand: Candidate, tensor: bytes, failure: SplitError) -> StageResult:
        """Run whole after `failure`: the plan's phones that did not fail (the head's phone
        first: with privacy it is the origin), then every other phone."""
        order = [s for s in (cand.a, cand.b) if s and s != failure.serial] + \
            [s for s in self.devices if s not in (cand.a, cand.b)]
        if self.private_to is not None:
            order = [s for s in order if s == self.private_to]
        errors = [str(failure)]
        for s in order:
            try:
                res = self.whole(s, tensor)
            except (SplitError, AdbError) as exc:
                errors.append(str(exc))
                continue
            res.fallback = f"split {cand.label} failed ({failure}); ran whole on {s}"
            res.failure = {"step": failure.step, "serial": failure.serial, "error": str(failure)}
            return res
        raise SplitError("split failed and no phone could run the model whole: "
                         + "; ".join(errors), hint="check `adbflow devices`")

    def _check_input(self, tensor: bytes) -> None:
        if len(tensor) != self.input_spec.nbytes:
            raise SplitError(f"input tensor has {len(tensor)} bytes, the model takes "
                             f"{self.input_spec.nbytes} ({'x'.join(map(str, self.input_spec.shape))} "
                             f"{self.input_spec.dtype})", step="input")

    def _cleanup(self, serial: str, paths: Sequence[str]) -> None:
        try:
            self._dev(serial).run(["rm", "-f", *paths], timeout=30.0, check=False)
        except AdbflowError:
            pass   # leftovers in our own directory; the next job uses new names


def image_tensor(path: Path, spec: TensorSpec) -> bytes:
    """A picture as the model's raw input: RGB, resized to the input's H x W, float32
    0-255 (the bundled EfficientNet-Lite0 convention) or the integer type as is."""
    from PIL import Image, UnidentifiedImageError
    if len(spec.shape) != 4 or spec.shape[3] != 3:
        raise SplitError(f"model input {spec.shape} is not an NHWC RGB image", step="input")
    try:
        with Image.open(path) as im:
            im = im.convert("RGB").resize((spec.shape[2], spec.shape[1]), Image.Resampling.BILINEAR)
            arr = np.asarray(im)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise SplitError(f"{path.name}: not a readable image ({exc})", step="input",
                         hint="pass a JPEG/PNG/BMP picture") from None
    return np.ascontiguousarray(arr[None].astype(spec.dtype)).tobytes()
