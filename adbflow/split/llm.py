"""An LLM's layers over several phones with llama.cpp's RPC backend, tunnelled through adb.

Why RPC: llama.cpp already splits a model's layers between its local CPU and remote
`ggml-rpc-server` devices (`--rpc HOST:PORT`, `-ngl` layers offloaded, `--tensor-split`
between several remotes) and computes bit-identical results there (the same ggml CPU
kernels run on the worker). adbflow only has to start the workers, connect them, choose
the split and clean up.

The path of one story (nothing listens on a network; every socket is a phone's loopback
or the laptop's):

    main phone A: llama-completion --rpc 127.0.0.1:R   (R: an `adb reverse` on A)
        -> laptop 127.0.0.1:F                           (F: an `adb forward` to B)
        -> worker B: ggml-rpc-server -H 127.0.0.1 -p P

Layers go in proportion to each phone's speed (profile tokens/s over its live slowdown),
capped by what its free memory holds (`layer_split`, pure). llama.cpp aborts the whole
run when a worker goes away mid-story (its RPC client has no retry); `run_story` then
raises RpcWorkerLost naming the worker, and `run_story_with_fallback` runs the story again
whole on the main phone (or the next phone that answers), and says so. Greedy decoding
(temperature 0, fixed seed) makes the two runs comparable word for word.

Device text is untrusted: the worker's pid is read as digits only, llama.cpp's output goes
through adbflow.parsers.llama, every argument is quoted by DevicePort.run, every adb call
has a timeout, forwards and reverses are removed and workers killed when a story ends.
"""
from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from adbflow.device.device import Device
from adbflow.device.stream import LineStream
from adbflow.errors import AdbError, AdbflowError, ParseError, RpcWorkerLost, SplitError
from adbflow.parsers.llama import parse_llama
from adbflow.runtime.provision import LocalFile, parse_item, prepare, provision_phone
from adbflow.runtime.stages import llama_for
from adbflow.runtime.story import device_prompt

RPC_DIR = "/data/local/tmp/adbflow-rpc"
RPC_SERVER = "ggml-rpc-server"
COMPLETION = "llama-completion"
ADB_TIMEOUT_S = 20.0
log = logging.getLogger(__name__)
WORKER_START_S = 60.0
#: ggml-rpc-server's line when its port is taken (it then exits with status 0)
PORT_TAKEN = "Failed to create server socket"
PORT_TRIES = 4
PORT_STEP = 101
STORY_TIMEOUT_S = 600.0
MAX_OUTPUT = 1 << 20
# how llama.cpp ends when its RPC socket fails: SIGPIPE writing to it, abort() on a bad reply
_SIGNALS = {141: "SIGPIPE: its socket to the worker was closed",
            134: "abort: the worker's reply was missing or malformed"}
_PID = re.compile(r"^\s*(\d{1,9})\s*$")
# ggml-rpc.cpp: what the client prints when a worker's socket fails mid-run
_RPC_LOST = ("Remote RPC server crashed", "RPC_STATUS_ASSERT", "ggml-rpc", "failed to connect",
             "Failed to connect")


# ------------------------------------------------------------------ the split (pure)

@dataclass(frozen=True)
class LlmPhone:
    """What the layer split needs of one phone."""

    serial: str
    tok_s: float          # profile generation speed / live slowdown
    free_mb: float        # MemAvailable now


def layer_split(n_layers: int, phones: Sequence[LlmPhone], *, layer_mb: float,
                reserve_mb: float = 200.0) -> dict[str, int]:
    """Layers per phone (the first phone is the main one): in proportion to speed, none
    beyond what a phone's free memory (less `reserve_mb`) holds; the rounding remainder
    goes to the fastest phones that still have room. Raises SplitError when the phones
    together cannot hold the model."""
    if not phones:
        raise SplitError("no phones for the model", step="layer split")
    room = {p.serial: max(0, int((p.free_mb - reserve_mb) // max(layer_mb, 1e-6)))
            for p in phones}
    if sum(room.values()) < n_layers:
        raise SplitError(f"{n_layers} layers of {layer_mb:.1f} MB do not fit in the phones' free "
                         f"memory ({', '.join(f'{s}: {r}' for s, r in room.items())} layers)",
                         step="layer split", hint="free memory on the phones or add one")
    total = sum(max(p.tok_s, 0.0) for p in phones) or float(len(phones))
    want = {p.serial: (max(p.tok_s, 0.0) / total if total else 1 / len(phones)) * n_layers
            for p in phones}
    out = {s: min(room[s], int(w)) for s, w in want.items()}
    by_speed = sorted(phones, key=lambda p: (-(want[p.serial] - int(want[p.serial])), -p.tok_s,
                                             p.serial))
    while sum(out.values()) < n_layers:
        for p in by_speed:
            if sum(out.values()) < n_layers and out[p.serial] < room[p.serial]:
                out[p.serial] += 1
    return out


@dataclass(frozen=True)
class StorySpec:
    """One story run: the model file on the main phone and greedy decoding settings."""

    model: str
    prompt: str
    n_predict: int = 64
    threads: int = 4
    ctx: int = 512
    seed: int = 42
    repeat_penalty: float = 1.0


def completion_argv(binary: str, spec: StorySpec, *, rpc: Sequence[str] = (), n_gpu_layers: int = 0,
                    tensor_split: Sequence[int] = ()) -> list[str]:
    """llama-completion, greedy (`--temp 0`: argmax each step, the seed fixed anyway), the
    prompt one quoted argument. With `rpc` endpoints, `-ngl` layers go to them (the last
    layers; the rest stay on the main phone's CPU) split by `tensor_split`."""
    argv = [binary, "-m", spec.model, "-p", spec.prompt, "-n", str(spec.n_predict),
            "-t", str(spec.threads), "-c", str(spec.ctx), "--seed", str(spec.seed),
            "--temp", "0", "--repeat-penalty", f"{spec.repeat_penalty:g}",
            "-no-cnv", "--no-display-prompt", "--no-warmup"]
    if rpc:
        argv += ["--rpc", ",".join(rpc), "-ngl", str(n_gpu_layers)]
        if len(tensor_split) > 1:
            argv += ["--tensor-split", ",".join(str(x) for x in tensor_split)]
    else:
        argv += ["-ngl", "0"]
    return argv


# ------------------------------------------------------------------ results

@dataclass
class StoryResult:
    """A finished story: the text, where its layers ran, timings and what went wrong first."""

    text: str
    main: str
    layers: dict[str, int]
    seconds: float
    eval_tok_s: float | None = None
    fallback: str | None = None
    argv: list[str] = field(default_factory=list)
    load_s: float | None = None      # llama.cpp's own model load time
    partial: str = ""                # what the failed split run had written (fallback only)

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "main": self.main, "layers": self.layers,
                "seconds": round(self.seconds, 3), "eval_tok_s": self.eval_tok_s,
                "fallback": self.fallback}


# ------------------------------------------------------------------ the phones' side

def remote_path(name: str) -> str:
    return f"{RPC_DIR}/{name}"


def provision_binaries(devices: Mapping[str, Device], needs: Mapping[str, Sequence[Path]],
                       cache_dir: Path) -> None:
    """Push the programs each phone needs (adbflow provision: hashed, skipped when equal,
    never half-written). Raises SplitError naming the phone that failed."""
    for serial, paths in needs.items():
        files: list[LocalFile] = prepare([parse_item(f"{p}={remote_path(p.name)}") for p in paths],
                                         cache_dir)
        outcome = provision_phone(devices[serial], files, lambda *a: None)
        if not outcome.ok:
            bad = "; ".join(f"{f.remote}: {f.reason}" for f in outcome.files if f.reason)
            raise SplitError(f"could not install the llama.cpp programs: {bad}", serial=serial,
                             step="provision")


@dataclass
class RpcWorker:
    """ggml-rpc-server running on one phone, bound to its loopback; stop() kills it.

    It runs in an adb shell stream: when that stream closes (stop, or the laptop going
    away) adbd kills the process group, so a worker never outlives its story."""

    device: Device
    port: int
    threads: int = 4
    stream: LineStream | None = None
    pid: int | None = None
    log: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None

    def start(self, timeout: float = WORKER_START_S) -> None:
        """Start it and read its pid (the shell's, which `exec` hands to the server).
        Whether it listens yet is told by `wait_listening` through the tunnel: the
        server's own start-up lines sit in its stdout buffer until the first client."""
        cmd = (f"echo $$; exec {remote_path(RPC_SERVER)} -H 127.0.0.1 -p {int(self.port)} "
               f"-t {int(self.threads)} 2>&1")
        self.stream = self.device.stream_lines(cmd, timeout=None)
        got_pid = threading.Event()

        def read() -> None:
            assert self.stream is not None
            try:
                for line in self.stream:
                    if self.pid is None and (m := _PID.match(line)):
                        self.pid = int(m.group(1))
                        got_pid.set()
                        continue
                    if len(self.log) < 200:
                        self.log.append(line[:300])
            except AdbError:
                pass
            got_pid.set()

        self._reader = threading.Thread(target=read, name=f"rpc-{self.device.serial}", daemon=True)
        self._reader.start()
        got_pid.wait(timeout)
        if self.pid is None or not self.alive():
            self.stop()
            raise SplitError(f"{RPC_SERVER} did not start ({self.tail()})",
                             serial=self.device.serial, step="rpc worker",
                             hint=f"is {remote_path(RPC_SERVER)} a build for this phone's ABI?")

    def tail(self) -> str:
        taken = [ln for ln in self.log if PORT_TAKEN in ln]
        return " | ".join(taken[:1] + self.log[-3:]) or "no output"

    def port_taken(self) -> bool:
        """The server could not bind its port (something else on the phone holds it)."""
        return any(PORT_TAKEN in ln for ln in self.log)

    def wait_listening(self, laptop_port: int, timeout: float = WORKER_START_S) -> None:
        """Until a connection through the forward stays open (adbd closes it at once while
        nothing listens on the phone's port); SplitError when the server exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                break
            if _stays_open(laptop_port):
                return
            time.sleep(0.2)
        raise SplitError(f"{RPC_SERVER} is not listening on 127.0.0.1:{self.port} "
                         f"({self.tail()})", serial=self.device.serial, step="rpc worker",
                         hint="is the port free on the phone?")

    def alive(self) -> bool:
        return self.stream is not None and self.stream.exit_code is None and \
            self._reader is not None and self._reader.is_alive()

    def stop(self) -> None:
        """Kill it while it runs (an exited server's pid may be another process's by now),
        then close its stream (adbd kills what is left of the process group)."""
        if self.pid is not None and self.alive():
            with contextlib.suppress(AdbflowError):
                self.device.run(["kill", str(self.pid)], timeout=ADB_TIMEOUT_S, check=False)
        if self.stream is not None:
            self.stream.close()
        if self._reader is not None:
            self._reader.join(5.0)


def _stays_open(port: int, wait_s: float = 0.5) -> bool:
    """A laptop connection to `port` that is neither refused nor closed within `wait_s`.
    Sends nothing: the RPC server waits for its client's hello and says nothing first."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
            sock.settimeout(wait_s)
            try:
                return sock.recv(1) != b""
            except TimeoutError:
                return True
    except OSError:
        return False


@contextlib.contextmanager
def tunnel(main: Device, worker: Device, worker_port: int,
           ready: Callable[[int], None] | None = None) -> Iterator[int]:
    """The worker's loopback port reachable from the main phone's loopback: `adb forward`
    laptop tcp:0 -> worker, then `adb reverse` main tcp:0 -> that laptop port. `ready`
    (laptop port) is called in between, to wait for the worker to listen. Yields the port
    on the main phone; both are removed afterwards (also on errors)."""
    laptop = worker.forward("tcp:0", f"tcp:{int(worker_port)}", timeout=ADB_TIMEOUT_S)
    try:
        if ready is not None:
            ready(laptop)
        on_main = main.reverse("tcp:0", f"tcp:{laptop}", timeout=ADB_TIMEOUT_S)
        try:
            yield on_main
        finally:
            with contextlib.suppress(AdbflowError):
                main.remove_reverse(f"tcp:{on_main}", timeout=ADB_TIMEOUT_S)
    finally:
        with contextlib.suppress(AdbflowError):
            worker.remove_forward(f"tcp:{laptop}", timeout=ADB_TIMEOUT_S)


def _listening_worker(stack: contextlib.ExitStack, main: Device, device: Device, port: int,
                      threads: int) -> tuple[RpcWorker, int]:
    """An rpc-server listening on `device` and its port on `main` (the tunnel), both undone
    by `stack`. A phone port something else holds is not ours to take; the next candidate
    is tried (PORT_TRIES, PORT_STEP apart). Two ways it is held: a program listens there
    (then the readiness check would reach *it*, and llama.cpp would talk to a stranger: so
    a port that answers before our server starts is skipped), or a connection uses it as
    its own port (ggml-rpc-server prints "Failed to create server socket" and exits 0).
    Seen on the fleet under a parallel test run (50052 was some connection's ephemeral
    port); on a phone any app can hold it."""
    for k in range(PORT_TRIES):
        candidate = port + k * PORT_STEP
        if _listening_on(device, candidate):
            log.info("%s: port %d answers before the rpc server starts; trying %d",
                     device.serial, candidate, candidate + PORT_STEP)
            continue
        attempt = contextlib.ExitStack()
        worker = RpcWorker(device, candidate, threads)
        attempt.callback(worker.stop)
        try:
            worker.start()
            on_main = attempt.enter_context(tunnel(main, device, worker.port,
                                                   ready=worker.wait_listening))
        except SplitError:
            attempt.close()
            if worker.port_taken() and k + 1 < PORT_TRIES:
                log.info("%s: rpc port %d taken on the phone; trying %d", device.serial,
                         candidate, candidate + PORT_STEP)
                continue
            raise
        except BaseException:
            attempt.close()
            raise
        stack.enter_context(attempt)
        return worker, on_main
    raise SplitError(f"no free port for {RPC_SERVER} on the phone ({PORT_TRIES} tried from "
                     f"{port})", serial=device.serial, step="rpc worker",
                     hint="stop what listens on those ports, or pass another base port")


def _listening_on(device: Device, port: int) -> bool:
    """Something on the phone already listens on its loopback `port` (a forward's
    connection stays open)."""
    laptop = device.forward("tcp:0", f"tcp:{int(port)}", timeout=ADB_TIMEOUT_S)
    try:
        return _stays_open(laptop, wait_s=0.2)
    finally:
        with contextlib.suppress(AdbflowError):
            device.remove_forward(f"tcp:{laptop}", timeout=ADB_TIMEOUT_S)


def _lost_worker(text: str) -> bool:
    return any(m in text for m in _RPC_LOST)


def run_story(devices: Mapping[str, Device], main: str, workers: Sequence[str], spec: StorySpec, *,
              layers: Mapping[str, int], base_port: int = 50052, timeout: float = STORY_TIMEOUT_S,
              on_started: Callable[[Mapping[str, RpcWorker]], None] | None = None,
              threads: Mapping[str, int] | None = None) -> StoryResult:
    """One story on `main`, the layers of each worker (`layers[serial]`) on its rpc-server.
    Without workers: the whole model on `main`. `threads` per phone (its performance cores,
    adbflow.scheduling.cores) overrides spec.threads. Raises RpcWorkerLost when a worker
    went away (llama.cpp aborts then), SplitError for other failures."""
    threads, default = threads or {}, spec.threads
    spec = replace(spec, threads=threads.get(main, default))
    binary = remote_path(COMPLETION)
    running: dict[str, RpcWorker] = {}
    with contextlib.ExitStack() as stack:
        endpoints = []
        for i, w in enumerate(workers):
            worker, port = _listening_worker(stack, devices[main], devices[w], base_port + i,
                                             threads.get(w, default))
            running[w] = worker
            endpoints.append(f"127.0.0.1:{port}")
        ngl = sum(layers.get(w, 0) for w in workers)
        argv = completion_argv(binary, spec, rpc=endpoints, n_gpu_layers=ngl,
                               tensor_split=[layers.get(w, 0) for w in workers])
        if on_started is not None:
            on_started(running)
        t0 = time.monotonic()
        try:
            res = devices[main].run(argv, timeout=timeout, check=False, max_output=MAX_OUTPUT)
        except AdbError as exc:
            raise SplitError(f"llama-completion did not finish: {exc}", serial=main,
                             step="story") from exc
        seconds = time.monotonic() - t0
        gone = [w for w, r in running.items() if not r.alive()]
        if res.exit_code != 0:
            if gone or (workers and _lost_worker(res.stderr)):
                who = gone[0] if gone else workers[0]
                why = _SIGNALS.get(res.exit_code) or _tail(res.stderr)
                raise RpcWorkerLost(f"llama-completion exited {res.exit_code}: worker {who} went "
                                    f"away mid-story ({why})", serial=who,
                                    step="story", main=main, stdout=res.stdout)
            raise SplitError(f"llama-completion exited {res.exit_code}: {_tail(res.stderr)}",
                             serial=main, step="story")
        try:
            parsed = parse_llama(res.stdout, res.stderr, prompt=spec.prompt, require_text=True,
                                 require_timings=True)
        except ParseError as exc:
            raise SplitError(f"no story in llama-completion's output: {exc}", serial=main,
                             step="story") from exc
    return StoryResult(parsed.text, main, {main: _main_layers(layers, main, workers), **{
        w: layers.get(w, 0) for w in workers}}, seconds, parsed.eval_tok_s, argv=argv,
        load_s=parsed.load_ms / 1000.0 if parsed.load_ms is not None else None)


def _main_layers(layers: Mapping[str, int], main: str, workers: Sequence[str]) -> int:
    return layers.get(main, 0) if workers else sum(layers.values())


def _tail(text: str, n: int = 300) -> str:
    lines = [x for x in text.strip().splitlines() if x.strip()]
    picked = [x for x in lines if _lost_worker(x) or "error" in x.lower()] or lines[-1:]
    return (picked[0] if picked else "no output")[:n]


def run_story_with_fallback(devices: Mapping[str, Device], main: str, workers: Sequence[str],
                            spec: StorySpec, *, layers: Mapping[str, int], **kw: Any) -> StoryResult:
    """The split story; if a worker is lost (or the split fails), the story again whole on
    the main phone, then on each worker that still answers. The result says why."""
    try:
        return run_story(devices, main, workers, spec, layers=layers, **kw)
    except SplitError as exc:
        if not workers:
            raise
        first = exc
    errors = [str(first)]
    order = [main] + [w for w in workers if w != first.serial and w != main]
    kw.pop("on_started", None)
    for serial in order:
        try:
            res = run_story(devices, serial, [], spec, layers={serial: sum(layers.values())}, **kw)
        except (SplitError, AdbError) as exc:
            errors.append(str(exc))
            continue
        res.fallback = f"split over {', '.join([main, *workers])} failed ({first}); ran whole on {serial}"
        if isinstance(first, RpcWorkerLost):
            res.partial = _clean_partial(first.stdout)
        return res
    raise SplitError("the split story failed and no phone could run it whole: " + "; ".join(errors),
                     hint="check `adbflow devices`")


def _clean_partial(stdout: str, limit: int = 4000) -> str:
    """The failed run's story so far (device text: controls dropped, bounded)."""
    from adbflow.parsers.text import CONTROL_KEEP_NEWLINES
    return CONTROL_KEEP_NEWLINES.sub("", stdout)[:limit].strip()


def story_prompt(request: str, opening: str = "") -> str:
    """The story request in SmolLM2's chat template (as the story stage sends it)."""
    return device_prompt(request, opening)


# ------------------------------------------------------------------ from bids to a split

def llm_phone(bid: Any, profile: Any) -> LlmPhone:
    """A phone's generation speed now (profile tokens/s over the ECT cost's load, thermal
    and frequency factors) and its free memory, from its live bid."""
    from adbflow.scheduling.policy import background_load, freq_factor, thermal_factor
    from adbflow.scheduling.service_times import load_factor
    if getattr(bid, "error", None):
        raise SplitError(f"no bid: {bid.error}", serial=bid.serial, step="layer split")
    load = background_load(bid, [], profile)
    slow = load_factor(load, profile.timing.load_sensitivity) * thermal_factor(bid) \
        * freq_factor(bid, load)
    return LlmPhone(bid.serial, float(profile.timing.gen_tok_s) / max(slow, 1e-6),
                    (bid.mem_available_kb or 0) / 1024.0)


def phone_threads(bids: Sequence[Any], profile_of: Callable[[str], Any]) -> dict[str, int]:
    """llama.cpp threads per phone of a split story: each phone's own profile threads on its
    performance cores (stages.llama_for, the rule the pipeline's stories use). One phone's
    count for all would oversubscribe a phone with fewer big cores, and llama.cpp's
    RPC-split decode waits on its slowest part."""
    return {b.serial: int(llama_for(profile_of(b.serial), b.perf_cores).threads) for b in bids}


def split_layers(main: str, workers: Sequence[str], bids: Sequence[Any], profile_of: Callable[[str], Any],
                 n_layers: int, model_bytes: int) -> dict[str, int]:
    """Layers per phone for a story on `main` with `workers` (layer_split over their bids)."""
    by_serial = {b.serial: b for b in bids}
    missing = [s for s in (main, *workers) if s not in by_serial]
    if missing:
        raise SplitError(f"no bid from {', '.join(missing)}", step="layer split",
                         hint="check `adbflow devices`")
    phones = [llm_phone(by_serial[s], profile_of(s)) for s in (main, *workers)]
    return layer_split(n_layers, phones, layer_mb=model_bytes / 1e6 / max(n_layers, 1))
