"""What each pipeline stage does: pull (or ingest a laptop file), classify (push +
label_image), generate (llama-cli). One attempt each; the attempt loop and retries live in
adbflow.runtime.attempts, bid rounds in adbflow.runtime.dispatcher.

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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from adbflow.device import Device
from adbflow.device.port import DevicePort
from adbflow.errors import (
    AdbError,
    JobError,
    NotARegularFile,
    ParseError,
    PermissionDenied,
    RemoteNotFound,
    TransferTooLarge,
)
from adbflow.parsers.label_image import parse_label_image
from adbflow.parsers.llama import parse_llama
from adbflow.runtime.devtime import run_timed
from adbflow.runtime.dispatcher import Dispatcher, bid_summary, decision_summary
from adbflow.runtime.imaging import prepare_bmp
from adbflow.runtime.story import build_prompt, whole_sentences
from adbflow.scheduling.policy import Task, background_load, task_units

if TYPE_CHECKING:  # pragma: no cover - types only
    from adbflow.runtime.attempts import Attempt
    from adbflow.runtime.journal import JobRecord, Journal

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

def pull_picture(device: DevicePort, remote: str, local: Path, *, expected_size: int,
                 expected_mtime: float, max_bytes: int, timeouts: StageTimeouts) -> dict[str, Any]:
    """Copy the detected picture to the laptop. JobError when the file is empty, too big,
    vanished or changed since detection (its new version is a new picture)."""
    if expected_size == 0:
        raise JobError(f"{remote!r} on {device.serial} is empty (0 bytes)",
                       hint="the camera app may have failed to write it")
    if expected_size > max_bytes:
        raise JobError(f"{remote!r} on {device.serial} is {expected_size} bytes, above the "
                       f"{max_bytes}-byte limit", hint="raise --max-bytes to accept it")
    entry = device.stat(remote, timeout=timeouts.stat_s)
    if entry is None:
        raise JobError(f"{remote!r} vanished from {device.serial} before it was pulled")
    if int(entry.size) != expected_size or float(entry.mtime) != expected_mtime:
        raise JobError(f"{remote!r} on {device.serial} changed after detection "
                       f"({expected_size} -> {entry.size} bytes)",
                       hint="its new version is detected as a new picture")
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
    pull_s = time.monotonic() - t0
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


def llama_argv(spec: Any, prompt: str) -> list[str]:
    """llama-cli's argv from a profile's LlamaSpec; the prompt is one quoted argument."""
    return [spec.binary, "-m", spec.model, "-p", prompt, "-n", str(spec.n_predict),
            "-t", str(spec.threads), "-c", str(spec.ctx), *spec.extra_args]


def classify_on(device: DevicePort, spec: Any, bmp: Path, *,
                timeouts: StageTimeouts) -> dict[str, Any]:
    """Push the BMP to REMOTE_IMAGE and run label_image there. Raises AdbError family on
    device trouble and ParseError on output that holds no labels (both: try elsewhere)."""
    t0, w0 = time.monotonic(), time.time()
    pushed = device.push(bmp, REMOTE_IMAGE, timeout=timeouts.push_s)
    push_s, w1 = time.monotonic() - t0, time.time()
    t1 = time.monotonic()
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
                timeouts: StageTimeouts) -> dict[str, Any]:
    """Run llama-cli with the prompt; ParseError when there is no story or the output is
    not a finished llama-cli run."""
    t0 = time.monotonic()
    res, times = run_timed(device, llama_argv(spec, prompt), timeout=timeouts.generate_s,
                           max_output=MAX_TOOL_OUTPUT)
    run_s = time.monotonic() - t0
    parsed = parse_llama(res.stdout, res.stderr, prompt=prompt, require_text=True,
                         require_timings=True)
    if len(parsed.text) < 2:
        raise ParseError("llama", "story too short", parsed.text)
    out = parsed.to_json()
    out["raw_text"] = out.pop("text")
    out["story"] = whole_sentences(parsed.text)
    out["run_s"] = round(run_s, 4)
    out["t"] = {"run": times["host"]}
    if "device" in times:
        out["device_times"] = times["device"]
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


# ------------------------------------------------------------------ job-level bodies

class JobStages:
    """The bodies the attempt loop runs for one job: `pull`, `ingest`, `classify`,
    `generate`, each `(job, attempt) -> output` stored in the journal.

    Everything they need is handed in (journal, inventory, dispatcher, profiles, learned
    service times); they never call back into the pipeline."""

    def __init__(self, *, data_dir: Path, journal: Journal, inventory: Any,
                 dispatcher: Dispatcher, profiles: Any, service_times: Any,
                 max_bytes: int, timeouts: StageTimeouts, energy: bool = False) -> None:
        self.data_dir = Path(data_dir)
        self.energy = energy
        self.journal = journal
        self.inventory = inventory
        self.dispatcher = dispatcher
        self.profiles = profiles
        self.service_times = service_times
        self.max_bytes = max_bytes
        self.timeouts = timeouts
        self._size_hint: int | None = None   # model input side of the last classify winner

    # -------------------------------------------------------------- first stage
    def pull(self, job: JobRecord, att: Attempt) -> dict[str, Any]:
        att.serial = job.serial
        self.journal.set_attempt_serial(att.id, job.serial)
        device = self.inventory.device(job.serial)
        local = local_picture_path(self.data_dir, job.id, job.serial, job.path)
        out = pull_picture(device, job.path, local, expected_size=job.size,
                           expected_mtime=job.mtime, max_bytes=self.max_bytes,
                           timeouts=self.timeouts)
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
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(local.name + ".part")
        try:
            shutil.copyfile(src, tmp)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise JobError(f"cannot read {src}: {exc.strerror}") from None
        os.replace(tmp, local)
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
        bmp, image_info, convert_s = self._bmp(job, self._default_input_size())
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
            with self.dispatcher.slot(won, "classify") as slot_wait_s:
                w_slot = time.time()
                with metered(won.device, self.energy) as energy:
                    out = classify_on(won.device, profile.label_image, bmp,
                                      timeouts=self.timeouts)
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
        return out

    # -------------------------------------------------------------- generate
    def generate(self, job: JobRecord, att: Attempt) -> dict[str, Any]:
        classified = self.journal.stage_output(job.id, "classify") or {}
        prompt = build_prompt(classified.get("labels") or [])
        task = Task("generate", input_bytes=len(prompt.encode()), output_bytes=2048,
                    prompt_tokens=max(1, len(prompt) // 4))
        won = self.dispatcher.bid(task, "generate", att.excluded, self._claim(att))
        try:
            profile = self.profiles.for_model(won.bid.model)
            with self.dispatcher.slot(won, "generate") as slot_wait_s:
                w_slot = time.time()
                with metered(won.device, self.energy) as energy:
                    out = generate_on(won.device, profile.llama, prompt, timeouts=self.timeouts)
        finally:
            self.dispatcher.release(won)
        self._learn(won.serial, "generate", out["run_s"], won.bid, profile,
                    replace(task, n_predict=int(profile.llama.n_predict)), won.award.others)
        out.update(serial=won.serial, profile=profile.name, prompt=prompt,
                   bid=bid_summary(won.bid),
                   decision=decision_summary(won.decision, att.quarantined),
                   timings={"bid_s": round(won.bid_s, 4), "slot_wait_s": round(slot_wait_s, 4),
                            "run_s": out["run_s"]})
        out["t"].update(bid=[won.ended - won.bid_s, won.ended],
                        slot_wait=[w_slot - slot_wait_s, w_slot])
        out["bids"] = list(won.probes)
        if energy:
            out["energy"] = energy
        return out

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
