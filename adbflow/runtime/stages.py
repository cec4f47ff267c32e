"""What each pipeline stage does: pull (or ingest a laptop file), classify (push +
label_image), generate (llama-cli). One attempt each; the attempt loop and retries live in
adbflow.runtime.attempts, bid rounds in adbflow.runtime.dispatcher.

Why over ~500 lines: the three stage bodies share the lease-guarded run, the energy meter
and the timing marks; each body is short, and keeping them beside those helpers keeps one
stage readable top to bottom.

Why this split: a stage body is I/O against one `DevicePort` and is idempotent (re-pulling
to the same local file, re-pushing to /data/local/tmp/received-image and re-running a model
are all harmless), so the pipeline may re-run any attempt whose result was not committed.
Every device argument goes through `DevicePort.run(argv)` (shlex-quoted); device paths from
listings are only ever used with the sync protocol, never in a shell command.

Two levels: `pull_picture` / `classify_on` / `generate_on` are one device call sequence
each; `JobStages` wraps them into the job-level bodies the attempt loop runs (bid, slot,
learning, the output stored in the journal).
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import os
import re
import shutil
import time
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adbflow.device import Device
from adbflow.device.port import DevicePort
from adbflow.errors import (
    AdbError,
    JobError,
    LeaseLost,
    NotARegularFile,
    ParseError,
    PermissionDenied,
    PictureChanging,
    PictureSuperseded,
    RemoteNotFound,
    SlotBusy,
    TransferTooLarge,
)
from adbflow.parsers.label_image import parse_label_image
from adbflow.parsers.llama import parse_llama
from adbflow.runtime import llama_mode
from adbflow.runtime.devtime import run_timed
from adbflow.runtime.dispatcher import Dispatcher, Won, bid_summary, decision_summary
from adbflow.runtime.imaging import prepare_bmp
from adbflow.runtime.laptop import LAPTOP_ERRNOS, fault_from_os, laptop_cause, laptop_io
from adbflow.runtime.story import build_prompt, device_prompt, finish_story, story_opening
from adbflow.scheduling.cores import program_threads
from adbflow.scheduling.energy_rates import attempt_joules
from adbflow.scheduling.policy import Task, background_load, task_units

if TYPE_CHECKING:  # pragma: no cover - types only
    from adbflow.runtime.attempts import Attempt
    from adbflow.runtime.journal import JobRecord, Journal
    from adbflow.runtime.leasing import StageLeases

log = logging.getLogger("adbflow.runtime.stages")

REMOTE_IMAGE = "/data/local/tmp/received-image"
MAX_TOOL_OUTPUT = 1 << 20   # label_image / llama-cli print a few kB; more is a runaway device


@dataclass
class StageTimeouts:
    """Seconds allowed per device call (every adb call has one)."""

    pull_s: float = 60.0
    push_s: float = 60.0
    classify_s: float = 180.0
    generate_s: float = 300.0
    stat_s: float = 10.0


# ------------------------------------------------------------------ laptop-side names

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_component(text: str, limit: int = 60) -> str:
    """A file-name component from untrusted text: ASCII letters, digits, `._-` only, no
    leading dots, bounded. Never empty."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    out = _UNSAFE.sub("_", ascii_text).strip("._-")
    out = re.sub(r"\.{2,}", ".", out)
    return (out or "x")[:limit]


def local_picture_path(data_dir: Path, job_id: int, serial: str, device_path: str) -> Path:
    """Where job `job_id`'s copy of a device picture lives: inside data_dir/pictures, named
    `<job>-<sanitized name>-<hash of serial+path>`. Deterministic, so a re-run of the pull
    overwrites the same file (idempotent), and unique even when sanitizing collapses names."""
    name = device_path.rsplit("/", 1)[-1]
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    digest = hashlib.sha256(f"{serial}\0{device_path}".encode("utf-8", "surrogateescape")
                            ).hexdigest()[:10]
    ext_safe = safe_component(ext, 8).lower() if ext else "bin"
    fname = f"{job_id}-{safe_component(stem, 48)}-{digest}.{ext_safe}"
    directory = data_dir / "pictures" / safe_component(serial, 40)
    path = directory / fname
    ensure_inside(data_dir, path)
    return path


def ensure_inside(root: Path, path: Path) -> None:
    """Refuse any laptop path outside the data directory (defence in depth)."""
    root_r = root.resolve()
    parent = path.parent.resolve()
    if parent != root_r and root_r not in parent.parents:
        raise JobError(f"refusing to write {path}: outside the data directory {root}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------ stage bodies

def _ino(entry: Any, expected_ino: int) -> int:
    """The entry's inode where the job's identity has one (0: identity without inodes); a
    stat that does not say (old adbd) cannot contradict it."""
    return (int(getattr(entry, "ino", 0) or 0) or expected_ino) if expected_ino else 0


def pull_picture(device: DevicePort, remote: str, local: Path, *, expected_size: int,
                 expected_mtime: float, max_bytes: int, timeouts: StageTimeouts,
                 expected_ino: int = 0) -> dict[str, Any]:
    """Copy the detected picture to the laptop. JobError when the file is empty, too big or
    vanished; PictureChanging when it is not the detected version (before or after the
    copy: a slow writer was still at it, or another file was renamed over it: a new
    inode), so the caller waits for it to settle."""
    if expected_size == 0:
        raise JobError(f"{remote!r} on {device.serial} is empty (0 bytes)",
                       hint="the camera app may have failed to write it")
    if expected_size > max_bytes:
        raise JobError(f"{remote!r} on {device.serial} is {expected_size} bytes, above the "
                       f"{max_bytes}-byte limit", hint="raise --max-bytes to accept it")
    entry = device.stat(remote, timeout=timeouts.stat_s)
    if entry is None:
        raise JobError(f"{remote!r} vanished from {device.serial} before it was pulled")
    if int(entry.size) != expected_size or float(entry.mtime) != expected_mtime \
            or _ino(entry, expected_ino) != expected_ino:
        raise PictureChanging(device.serial, remote, int(entry.size), float(entry.mtime),
                              _ino(entry, expected_ino))
    with laptop_io(local.parent):
        local.parent.mkdir(parents=True, exist_ok=True)
    remove_partial_pulls(local)
    t0, w0 = time.monotonic(), time.time()
    try:
        n = device.pull(remote, local, timeout=timeouts.pull_s + expected_size / 5e6,
                        max_bytes=max_bytes)
    except TransferTooLarge as exc:
        raise JobError(f"{remote!r} grew beyond {max_bytes} bytes while pulling") from exc
    except (RemoteNotFound, PermissionDenied, NotARegularFile) as exc:
        # the file itself is the problem: another device cannot pull it either
        raise JobError(f"cannot pull {remote!r} from {device.serial}: {exc.message}") from exc
    except OSError as exc:        # the local temp file (permissions): the laptop's fault
        if exc.errno in LAPTOP_ERRNOS:
            raise fault_from_os(exc, exc.filename or local.parent) from exc
        raise
    except AdbError as exc:
        cause = laptop_cause(exc)
        if cause is not None:     # e.g. the pull's temp file hit a full or read-only disk
            raise fault_from_os(cause, cause.filename or local.parent) from exc
        raise
    pull_s = time.monotonic() - t0
    after = device.stat(remote, timeout=timeouts.stat_s)
    if after is not None and (int(after.size) != expected_size
                              or float(after.mtime) != expected_mtime
                              or _ino(after, expected_ino) != expected_ino):
        raise PictureChanging(device.serial, remote, int(after.size), float(after.mtime),
                              _ino(after, expected_ino))
    if n != expected_size:
        raise AdbError(device.serial, f"pull {remote}", message=f"got {n} of {expected_size} "
                       "bytes", hint="the transfer was cut; retrying")
    return {"bytes": n, "sha256": sha256_file(local), "local": str(local),
            "pull_s": round(pull_s, 4), "t": {"pull": [w0, w0 + pull_s]}}


def remove_partial_pulls(local: Path) -> None:
    """Drop the temporary copies an earlier pull of this picture left behind: Device.pull
    writes `.NAME.part-PID-TID` beside `local` and renames it when complete, so a process
    killed mid-pull (kill -9, power loss) leaves one. The job's pull is redone after such a
    crash (it was not committed), and this is where its leftover goes."""
    for stale in local.parent.glob(f".{glob.escape(local.name)}.part-*"):
        try:
            stale.unlink()
        except OSError:
            pass


def label_image_argv(spec: Any, image: str = REMOTE_IMAGE) -> list[str]:
    """label_image's argv from a profile's LabelImageSpec (each arg quoted by Device.run)."""
    argv = [spec.binary, "-m", spec.model, "-l", spec.labels, "-i", image,
            "-t", str(spec.threads)]
    if spec.count:
        argv += ["-c", str(spec.count)]
    return argv + list(spec.extra_args)


def llama_for(profile: Any, perf_cores: int | None) -> Any:
    """The profile's llama.cpp spec for a phone with `perf_cores` big + mid cores (a bid's
    perf_cores, or scheduling.cores.performance_cores of a probe): threads capped there
    (cores.program_threads, the rule policy.stage_threads counts in the load terms too)."""
    threads = program_threads(profile.llama.threads, perf_cores)
    return profile.llama if threads == profile.llama.threads else replace(profile.llama,
                                                                          threads=threads)


def llama_argv(spec: Any, prompt: str) -> list[str]:
    """llama-completion's argv from a profile's LlamaSpec; the prompt is one quoted argument.
    Sampling flags come from the profile (defaults measured by bench/story_quality.py)."""
    return [spec.binary, "-m", spec.model, "-p", prompt, "-n", str(spec.n_predict),
            "-t", str(spec.threads), "-c", str(spec.ctx),
            "--temp", f"{getattr(spec, 'temp', 0.6):g}", "--top-k", str(getattr(spec, "top_k", 40)),
            "--top-p", f"{getattr(spec, 'top_p', 0.9):g}",
            "--repeat-penalty", f"{getattr(spec, 'repeat_penalty', 1.15):g}", *spec.extra_args]


def classify_on(device: DevicePort, spec: Any, bmp: Path, *, timeouts: StageTimeouts,
                leases: Any = None, held: Any = None) -> dict[str, Any]:
    """Push the BMP and run label_image on REMOTE_IMAGE. With a slot lease (`held`, from
    `leases.hold`), the BMP goes to the lease's own input file and the guarded command moves
    it to REMOTE_IMAGE only while the lease is current (another orchestrator's push cannot
    land between ours and label_image). Raises AdbError family on device trouble, ParseError
    on output that holds no labels (both: try elsewhere), LeaseLost (discard, re-bid)."""
    t0, w0 = time.monotonic(), time.time()
    target = held.input_path if held is not None else REMOTE_IMAGE
    pushed = device.push(bmp, target, timeout=timeouts.push_s)
    push_s, w1 = time.monotonic() - t0, time.time()
    t1 = time.monotonic()
    if held is not None:     # guarded run (device clock marks inside the guard)
        res, times = leases.run_timed(held, label_image_argv(spec),
                                      timeout=timeouts.classify_s, max_output=MAX_TOOL_OUTPUT,
                                      move_input_to=REMOTE_IMAGE)
    else:
        res, times = run_timed(device, label_image_argv(spec), timeout=timeouts.classify_s,
                               max_output=MAX_TOOL_OUTPUT)
    run_s = time.monotonic() - t1
    parsed = parse_label_image(res.stdout + "\n" + res.stderr)
    return {"labels": [lb.to_json() for lb in parsed.labels], "avg_ms": parsed.avg_ms,
            "model": parsed.model, "pushed_bytes": pushed, "remote_image": REMOTE_IMAGE,
            "push_s": round(push_s, 4), "run_s": round(run_s, 4),
            "t": {"push": [w0, w1], "run": times["host"]},
            **({"device_times": times["device"]} if "device" in times else {})}


def generate_on(device: DevicePort, spec: Any, prompt: str, *,
                timeouts: StageTimeouts, opening: str = "",
                modes: llama_mode.LlamaModes | None = None,
                leases: Any = None, held: Any = None) -> dict[str, Any]:
    """Run the profile's llama.cpp one-shot program with the story request (in the model's
    chat template, the answer pre-filled with `opening`), guarded by the slot lease `held`
    when given; ParseError when there is no story or the output is not a finished run;
    LlamaChatOnlyError (at once, on first use) when the binary is today's chat-only
    llama-cli."""
    modes = modes if modes is not None else llama_mode.DEFAULT_MODES
    modes.ensure_one_shot(device, spec, timeout=timeouts.generate_s)
    text = device_prompt(prompt, opening, fmt=getattr(spec, "prompt_format", "chatml"))
    argv = llama_argv(spec, text)
    t0 = time.monotonic()
    try:
        times: dict[str, Any]
        if held is not None:     # guarded run (device clock marks inside the guard)
            res, times = leases.run_timed(held, argv, timeout=timeouts.generate_s,
                                          max_output=MAX_TOOL_OUTPUT)
        else:
            res, times = run_timed(device, argv, timeout=timeouts.generate_s,
                                   max_output=MAX_TOOL_OUTPUT)
    except AdbError as exc:
        ev = llama_mode.chat_only_evidence(exc.stdout, exc.stderr)
        if ev is not None:
            raise llama_mode.chat_only_error(device.serial, argv[0], ev, exc.stdout,
                                             exc.stderr) from None
        raise
    run_s = time.monotonic() - t0
    parsed = parse_llama(res.stdout, res.stderr, prompt=text, require_text=True,
                         require_timings=True)
    if len(parsed.text) < 2:
        raise ParseError("llama", "story too short", parsed.text)
    out = parsed.to_json()
    out["raw_text"] = out.pop("text")
    out["story"] = finish_story(opening, parsed.text)
    out["run_s"] = round(run_s, 4)
    out["t"] = {"run": times["host"]}
    if "device" in times:
        out["device_times"] = times["device"]
    return out


def generate_resident(server: Any, spec: Any, prompt: str, *, timeouts: StageTimeouts,
                      opening: str = "", held: Any = None) -> dict[str, Any]:
    """The story from the phone's resident llama-server (runtime/resident.py): the same
    prompt and sampling as generate_on's one-shot run, one `/completion` through the
    forward. ResidentServerError when it fails or hangs (the server is then stopped: the
    stage is re-bid); LeaseLost when the slot lease was lost meanwhile (discard)."""
    from adbflow.runtime.resident import completion_request
    text = device_prompt(prompt, opening, fmt=getattr(spec, "prompt_format", "chatml"))
    w0, t0 = time.time(), time.monotonic()
    done = server.complete(completion_request(spec, text), timeout=timeouts.generate_s)
    run_s = time.monotonic() - t0
    if held is not None and held.lost:
        raise LeaseLost(held.serial, held.slot, held.lost)
    if len(done.text.strip()) < 2:
        raise ParseError("llama", "story too short", done.text)
    out = done.to_json()
    out["raw_text"] = out.pop("text")
    out["story"] = finish_story(opening, done.text)
    out["run_s"] = round(run_s, 4)
    out["t"] = {"run": [w0, time.time()]}
    out["resident"] = {"pid": server.pid, "port": server.remote_port,
                       "ready_s": round(server.ready_s or 0.0, 4)}
    return out


@contextlib.contextmanager
def metered(device: Any, enabled: bool) -> Iterator[dict[str, Any]]:
    """Battery energy of the block on `device` (energymeter.py), filled into the yielded
    dict when the block ends; advisory: a meter that fails leaves it with an `error`."""
    out: dict[str, Any] = {}
    if not enabled or not isinstance(device, Device):
        yield out
        return
    from adbflow.runtime.energymeter import EnergyMeter
    meter = None
    try:
        meter = EnergyMeter(device).start()
        meter.mark_start()
    except AdbError as exc:
        out["error"] = f"energy meter did not start: {exc}"
    try:
        yield out
    finally:
        if meter is not None:
            try:
                out.update(meter.stop().to_json())
            except (AdbError, OSError) as exc:
                out["error"] = f"energy meter failed: {exc}"


STABLE_WAIT_S = 60.0        # a file still being written is waited for this long
STABLE_LOOK_S = 1.0         # ... looked at this often; stable = same size+mtime twice


def wait_stable(device: DevicePort, remote: str, size: int, mtime: float, *,
                timeouts: StageTimeouts, until: float, ino: int = 0) -> tuple[int, float, int]:
    """(size, mtime, inode) once two looks STABLE_LOOK_S apart agree (or at `until`);
    the inode only where `ino` (the identity has inodes). JobError when the file vanished
    meanwhile."""
    while time.monotonic() < until:
        time.sleep(STABLE_LOOK_S)
        entry = device.stat(remote, timeout=timeouts.stat_s)
        if entry is None:
            raise JobError(f"{remote!r} vanished from {device.serial} while being written")
        now = (int(entry.size), float(entry.mtime), _ino(entry, ino))
        if now == (size, mtime, ino):
            return now
        size, mtime, ino = now
    return size, mtime, ino


# ------------------------------------------------------------------ job-level bodies

class JobStages:
    """The bodies the attempt loop runs for one job: `pull`, `ingest`, `classify`,
    `generate`, each `(job, attempt) -> output` stored in the journal.

    Everything they need is handed in (journal, inventory, dispatcher, profiles, learned
    service times); they never call back into the pipeline."""

    def __init__(self, *, data_dir: Path, journal: Journal, inventory: Any,
                 dispatcher: Dispatcher, profiles: Any, service_times: Any,
                 max_bytes: int, timeouts: StageTimeouts, leases: StageLeases,
                 energy: bool = False, energy_rates: Any = None,
                 residents: Any = None) -> None:
        self.data_dir = Path(data_dir)
        self.residents = residents           # warm models (ResidentServers) or None: one-shot
        self.energy = energy
        self.energy_rates = energy_rates     # learns joules per unit from metered attempts
        self.leases = leases
        self.journal = journal
        self.inventory = inventory
        self.dispatcher = dispatcher
        self.profiles = profiles
        self.service_times = service_times
        self.max_bytes = max_bytes
        self.timeouts = timeouts
        self._size_hint: int | None = None   # model input side of the last classify winner
        self.llama_modes = llama_mode.LlamaModes()   # one-shot vs chat-only, per device+binary

    # -------------------------------------------------------------- first stage
    def pull(self, job: JobRecord, att: Attempt) -> dict[str, Any]:
        """Pull the detected version. A file still being written (a slow writer, a copy in
        progress) is waited for until stable, and the job follows it to its final size and
        mtime; when a later detection already made that version a job, this one is
        superseded (skipped, not failed)."""
        att.serial = job.serial
        self.journal.set_attempt_serial(att.id, job.serial)
        device = self.inventory.device(job.serial)
        local = local_picture_path(self.data_dir, job.id, job.serial, job.path)
        deadline = time.monotonic() + STABLE_WAIT_S
        while True:
            try:
                out = pull_picture(device, job.path, local, expected_size=job.size,
                                   expected_mtime=job.mtime, max_bytes=self.max_bytes,
                                   timeouts=self.timeouts, expected_ino=job.ino)
                break
            except PictureChanging as changing:
                if time.monotonic() > deadline:
                    raise JobError(f"{job.path!r} on {job.serial} kept changing for "
                                   f"{STABLE_WAIT_S:.0f} s", hint="it is detected again "
                                   "once its writer is done") from changing
                size, mtime, ino = wait_stable(device, job.path, changing.size,
                                               changing.mtime, timeouts=self.timeouts,
                                               until=deadline, ino=changing.ino)
                other = self.journal.retarget_job(job.id, size, mtime, ino)
                if other is not None:
                    raise PictureSuperseded(job.id, other) from changing
                job = self.journal.job(job.id)
        self.journal.update_job(job.id, sha256=out["sha256"], local_path=out["local"])
        out["serial"] = job.serial
        return out

    def ingest(self, job: JobRecord, att: Attempt) -> dict[str, Any]:
        """`adbflow run IMAGE`: the picture starts on the laptop; copy it into the data dir
        so the job no longer depends on the user's file (and its name)."""
        att.serial = None
        src = Path(job.path)
        t0 = time.monotonic()
        if job.size == 0:
            raise JobError(f"{src.name}: empty file (0 bytes)")
        if job.size > self.max_bytes:
            raise JobError(f"{src.name}: {job.size} bytes exceeds the {self.max_bytes}"
                           "-byte limit", hint="raise --max-bytes to accept it")
        local = local_picture_path(self.data_dir, job.id, "laptop", job.path)
        with laptop_io(local.parent):
            local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(local.name + ".part")
        try:
            fsrc = src.open("rb")
        except OSError as exc:     # the user's file: bad input, not our disk
            raise JobError(f"cannot read {src}: {exc.strerror}") from None
        try:
            with fsrc, laptop_io(tmp), tmp.open("wb") as fdst:
                shutil.copyfileobj(fsrc, fdst, 1 << 20)
            with laptop_io(local):
                os.replace(tmp, local)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise
        digest = sha256_file(local)
        self.journal.update_job(job.id, sha256=digest, local_path=str(local))
        return {"bytes": local.stat().st_size, "sha256": digest, "local": str(local),
                "serial": "laptop", "pull_s": round(time.monotonic() - t0, 4)}

    # -------------------------------------------------------------- classify
    def _bmp(self, job: JobRecord, size: int) -> tuple[Path, dict[str, Any], float]:
        """The model input for `size` (cached per job and size; atomic, so idempotent)."""
        src = Path(job.local_path or "")
        if not job.local_path or not src.is_file():
            raise JobError(f"job {job.id}: the pulled picture is missing from {self.data_dir}",
                           hint="it was deleted; re-run the picture with `adbflow run`")
        work = self.data_dir / "work" / str(job.id)
        ensure_inside(self.data_dir, work / "x")
        with laptop_io(work):
            work.mkdir(parents=True, exist_ok=True)
        dst = work / f"input-{int(size)}.bmp"
        t0 = time.monotonic()
        info = prepare_bmp(src, dst, int(size), max_bytes=self.max_bytes)
        return dst, info.to_json(), time.monotonic() - t0

    def _default_input_size(self) -> int:
        """The side to convert to before the bid: the last winner's (fleets are mostly
        one kind, so the picture is converted once), else the default profile's."""
        if self._size_hint is not None:
            return self._size_hint
        try:
            return int(self.profiles.for_model(None).label_image.input_size)
        except Exception:  # noqa: BLE001
            return 224

    @contextlib.contextmanager
    def leased(self, won: Won, slot: str) -> Iterator[Any]:
        """The phone's slot lease around the stage (README "Leases"); a busy answer tells
        the dispatcher to look elsewhere for a moment, and SlotBusy re-bids the stage."""
        with contextlib.ExitStack() as stack:
            try:
                held = stack.enter_context(self.leases.hold(won.device, slot))
            except SlotBusy as exc:
                self.dispatcher.mark_busy(exc.serial, exc.slot, exc.left_s)
                raise
            yield held

    def _changed_since_pull(self, job: JobRecord) -> None:
        """PictureChanging when the origin file is not the pulled version any more: the
        copy that failed to decode was taken mid-write (the pipeline pulls it again). A
        writer may pause between chunks, so the file is looked at twice, STABLE_LOOK_S
        apart (this costs time only when a picture does not decode)."""
        if job.source != "device":
            return
        for look in range(2):
            try:
                entry = self.inventory.device(job.serial).stat(job.path,
                                                               timeout=self.timeouts.stat_s)
            except AdbError:
                return                     # cannot tell: the decode error stands
            if entry is not None and (int(entry.size), float(entry.mtime),
                                      _ino(entry, job.ino)) != (job.size, job.mtime, job.ino):
                raise PictureChanging(job.serial, job.path, int(entry.size),
                                      float(entry.mtime), _ino(entry, job.ino))
            if look == 0:
                time.sleep(STABLE_LOOK_S)

    def _claim(self, att: Attempt) -> Any:
        def claim(winner: str, held: list[str]) -> None:
            att.serial = winner
            att.quarantined = held
            self.journal.set_attempt_serial(att.id, winner)
        return claim

    def classify(self, job: JobRecord, att: Attempt) -> dict[str, Any]:
        job = self.journal.job(job.id)
        # Bad input is found before any device time is spent on it.
        w_convert = time.time()
        try:
            bmp, image_info, convert_s = self._bmp(job, self._default_input_size())
        except JobError:
            self._changed_since_pull(job)    # a copy of a file still being written?
            raise
        task = Task("classify", input_bytes=bmp.stat().st_size, output_bytes=1024)
        won = self.dispatcher.bid(task, "classify", att.excluded, self._claim(att))
        first_convert_s, w_reconvert, extra = convert_s, time.time(), 0.0
        try:
            profile = self.profiles.for_model(won.bid.model)
            size = int(profile.label_image.input_size)
            self._size_hint = size
            if size != image_info["output_size"]:
                bmp, image_info, extra = self._bmp(job, size)
                convert_s += extra
            with self.dispatcher.slot(won, "classify") as slot_wait_s, \
                    self.leased(won, "classify") as held:
                w_slot = time.time()
                with metered(won.device, self.energy) as energy:
                    out = classify_on(won.device, profile.label_image, bmp,
                                      timeouts=self.timeouts, leases=self.leases, held=held)
        finally:
            self.dispatcher.release(won)
        self._learn(won.serial, "classify", out["run_s"], won.bid, profile, task,
                    won.award.others)
        out.update(serial=won.serial, profile=profile.name, image=image_info,
                   bid=bid_summary(won.bid),
                   decision=decision_summary(won.decision, att.quarantined),
                   timings={"bid_s": round(won.bid_s, 4), "convert_s": round(convert_s, 4),
                            "slot_wait_s": round(slot_wait_s, 4), "push_s": out["push_s"],
                            "run_s": out["run_s"]})
        out["t"].update(convert=[w_convert, w_convert + first_convert_s],
                        bid=[won.ended - won.bid_s, won.ended],
                        slot_wait=[w_slot - slot_wait_s, w_slot])
        if extra:      # the winner's model wanted another input size
            out["t"]["reconvert"] = [w_reconvert, w_reconvert + extra]
        out["bids"] = list(won.probes)
        if energy:
            out["energy"] = energy
            self._learn_energy(won.serial, "classify", energy, task, profile)
        return out

    # -------------------------------------------------------------- generate
    def generate(self, job: JobRecord, att: Attempt) -> dict[str, Any]:
        classified = self.journal.stage_output(job.id, "classify") or {}
        prompt = build_prompt(classified.get("labels") or [])
        residents = self.residents
        task = Task("generate", input_bytes=len(prompt.encode()), output_bytes=2048,
                    prompt_tokens=max(1, len(prompt) // 4),
                    resident_on=residents.ready() if residents is not None else frozenset())
        won = self.dispatcher.bid(task, "generate", att.excluded, self._claim(att))
        opening = story_opening(classified.get("labels") or [])
        try:
            profile = self.profiles.for_model(won.bid.model)
            with self.dispatcher.slot(won, "generate") as slot_wait_s, \
                    self.leased(won, "generate") as held:
                w_slot = time.time()
                llama = llama_for(profile, won.bid.perf_cores)
                server = (residents.server(won.device, llama)
                          if residents is not None and isinstance(won.device, Device) else None)
                with metered(won.device, self.energy) as energy:
                    if server is not None:
                        out = generate_resident(server, llama, prompt,
                                                timeouts=self.timeouts, opening=opening,
                                                held=held)
                    else:
                        out = generate_on(won.device, llama, prompt,
                                          timeouts=self.timeouts, opening=opening,
                                          modes=self.llama_modes, leases=self.leases, held=held)
        finally:
            self.dispatcher.release(won)
        # learn the run with the model loaded: a one-shot run's own load time is the
        # policy's model_load part, not service (it would be counted twice)
        load_s = float(out.get("load_ms") or 0.0) / 1000.0
        self._learn(won.serial, "generate", max(0.001, out["run_s"] - load_s), won.bid, profile,
                    replace(task, n_predict=int(profile.llama.n_predict)), won.award.others)
        out.update(serial=won.serial, profile=profile.name, prompt=prompt,
                   warm="resident" in out, bid=bid_summary(won.bid),
                   decision=decision_summary(won.decision, att.quarantined),
                   timings={"bid_s": round(won.bid_s, 4), "slot_wait_s": round(slot_wait_s, 4),
                            "run_s": out["run_s"]})
        out["t"].update(bid=[won.ended - won.bid_s, won.ended],
                        slot_wait=[w_slot - slot_wait_s, w_slot])
        out["bids"] = list(won.probes)
        if energy:
            out["energy"] = energy
            self._learn_energy(won.serial, "generate", energy, replace(
                task, n_predict=int(profile.llama.n_predict)), profile)
        return out

    def _learn_energy(self, serial: str, stage: str, energy: dict[str, Any], task: Task,
                      profile: Any) -> None:
        """Fold a metered attempt's joules into the per-device energy rate (ECT's energy
        part); advisory like _learn."""
        if self.energy_rates is None:
            return
        try:
            self.energy_rates.record(serial, stage, attempt_joules(energy),
                                     units=task_units(task, profile))
        except Exception:  # noqa: BLE001 - learning is advisory
            log.exception("energy rate not recorded")

    def _learn(self, serial: str, stage: str, seconds: float, bid: Any, profile: Any,
               task: Task, others: Sequence[Task] = ()) -> None:
        """Record the run time with the background load it ran under: the bid's reading minus
        our own tasks (`others`) that were running there (the same number ect uses)."""
        if self.service_times is None:
            return
        try:
            load = background_load(bid, [t for t in others if t is not None], profile)
            self.service_times.record(serial, stage, seconds, cpu_load=load,
                                      units=task_units(task, profile),
                                      sensitivity=profile.timing.load_sensitivity)
        except Exception:  # noqa: BLE001 - learning is advisory
            log.exception("service time not recorded")
