"""The picture pipeline: detect -> pull -> bid -> classify -> bid -> generate -> story,
durable across crashes and tolerant of devices failing mid-stage.

Why this shape: each job is a sequence of stages; each stage is a bounded loop of
attempts, every attempt is journaled before it starts and committed (with its output)
in one transaction when it succeeds. A device fault (disconnect, timeout, non-zero exit,
unparsable output) fails the attempt and the stage is re-bid without that device; bad input
(JobError) fails the job at once, since no device can fix it. After a kill -9 the journal
says which stages have a committed result; the others are simply run again (idempotent).

Concurrency: jobs run on a small pool of worker threads. A device runs one job per stage
slot (one label_image, one llama-cli at a time: both would otherwise fight over the same
cores and /data/local/tmp/received-image). The scheduler sees work already awarded
(`inflight`), so a burst of pictures spreads over the fleet instead of piling onto the
device that looked idlest a second ago.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import queue
import shutil
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from adbflow.runtime import stages
from adbflow.scheduling import quarantine
from adbflow.runtime.detect import (PICTURES_DIR, SETTLE_S, Entry, NewPicture, Watcher,
                            is_candidate_name)
from adbflow.errors import (AdbError, AdbflowError, AdbTimeoutError, DeviceUnavailableError,
                            JobError, ParseError)
from adbflow.runtime.imaging import DEFAULT_MAX_BYTES, prepare_bmp
from adbflow.runtime.journal import FINAL_STATES, JobRecord, Journal, StageAlreadyDone
from adbflow.paths import PROFILES_DIR, data_home
from adbflow.scheduling.quarantine import Quarantined, QuarantineRules
from adbflow.runtime.story import build_prompt

from adbflow.scheduling.policy import Task, background_load, get_policy, task_units
from adbflow.scheduling.service_times import ServiceTimes

log = logging.getLogger("adbflow.runtime.pipeline")

DEFAULT_POLICY = "ect"
STAGE_ORDER_DEVICE = ("pull", "classify", "generate")
STAGE_ORDER_LAPTOP = ("ingest", "classify", "generate")


class StageFailed(AdbflowError):
    """A stage ran out of attempts; the message lists every attempt's reason."""


class Interrupted(AdbflowError):
    """The pipeline is stopping (Ctrl-C); the job stays incomplete and resumes next start."""


class NoDevice(AdbflowError):
    """No eligible device answered the bid round within the wait."""


class _Duplicate(Exception):
    def __init__(self, other: int) -> None:
        super().__init__(other)
        self.other = other


def error_kind(exc: BaseException) -> str:
    """Short machine-readable reason of a failed attempt (journal column error_kind)."""
    if isinstance(exc, JobError):
        return "input"
    if isinstance(exc, AdbTimeoutError):
        return "timeout"
    if isinstance(exc, DeviceUnavailableError):
        return "unavailable"
    if isinstance(exc, AdbError):
        return "exit" if exc.exit_code not in (None, 0) else "adb"
    if isinstance(exc, ParseError):
        return "parse"
    if isinstance(exc, NoDevice):
        return "no-device"
    return "internal"


@dataclass
class PipelineConfig:
    data_dir: Path = field(default_factory=data_home)
    policy: str = DEFAULT_POLICY
    attempts: int = 3
    concurrency: int = 4
    max_bytes: int = DEFAULT_MAX_BYTES
    timeouts: stages.StageTimeouts = field(default_factory=stages.StageTimeouts)
    bid_timeout_s: float = 5.0
    device_wait_s: float = 30.0       # how long a stage waits for any eligible device
    retry_wait_s: float = 1.0         # pause between attempts (origin pulls back off more)
    profiles_dir: Path = PROFILES_DIR
    pictures_dir: str = PICTURES_DIR
    use_inotify: bool = True
    settle_s: float | None = SETTLE_S  # second look at a newly listed picture (None: next listing)
    # devices that time out / disconnect sit out the next jobs' bids (None: never)
    quarantine: QuarantineRules | None = field(default_factory=QuarantineRules)

    @property
    def journal_path(self) -> Path:
        return Path(self.data_dir) / "journal.sqlite"


@dataclass
class _Attempt:
    """Mutable facts of one running attempt (the serial is known only after the bid)."""

    id: int
    excluded: set[str]
    serial: str | None = None
    quarantined: list[str] = field(default_factory=list)   # held out of the winning bid round


@dataclass
class _Award:
    serial: str
    task: Any
    # our other tasks on that device when it won: their CPU is in the bid's load reading
    others: tuple = ()


class Pipeline:
    """Runs jobs from the journal; `watch()` feeds it new pictures from the devices."""

    def __init__(self, config: PipelineConfig, inventory: Any, *, bidder: Any = None,
                 profiles: Any = None, policy: Any = None, journal: Journal | None = None,
                 service_times: Any = None,
                 on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.config = config
        self.data_dir = Path(config.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.inventory = inventory
        self.journal = journal or Journal(config.journal_path)
        if bidder is None:
            from adbflow.scheduling.bids import Bidder
            bidder = Bidder(timeout=config.bid_timeout_s)
        self.bidder = bidder
        if profiles is None:
            from adbflow.scheduling.profiles import ProfileBook
            profiles = ProfileBook.load(config.profiles_dir)
        self.profiles = profiles
        if policy is None:
            policy = get_policy(config.policy)
        self.policy = policy
        if service_times is None:
            service_times = ServiceTimes(config.journal_path)
        self.service_times = service_times
        self.on_event = on_event or (lambda ev: None)
        self.stop_event = threading.Event()
        self._policy_lock = threading.Lock()
        self._inflight: dict[str, list[Any]] = {}
        self._slots: dict[tuple[str, str], threading.Lock] = {}
        self._slots_lock = threading.Lock()
        self._queue: "queue.Queue[int]" = queue.Queue()
        self._workers: list[threading.Thread] = []
        self._pending: set[int] = set()
        self._pending_cv = threading.Condition()
        self._lock_fd: int | None = None
        self._quarantine: dict[str, Quarantined] = {}
        self._quarantine_lock = threading.Lock()
        self._size_hint: int | None = None   # model input side of the last classify winner

    # ------------------------------------------------------------------ events & plumbing
    def _emit(self, type_: str, **info: Any) -> None:
        try:
            self.on_event({"type": type_, "t": time.time(), **info})
        except Exception:  # noqa: BLE001 - a broken view must not break the pipeline
            log.exception("event callback failed")

    def _sleep(self, seconds: float) -> None:
        if self.stop_event.wait(seconds):
            raise Interrupted("stopping")

    def close(self) -> None:
        self.stop_event.set()
        if self.service_times is not None and hasattr(self.service_times, "close"):
            self.service_times.close()
        self.journal.close()
        self.release_lock()

    def acquire_lock(self) -> None:
        """One `watch` per data directory: two would resume the same jobs twice."""
        path = self.data_dir / "watch.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise AdbflowError(f"another `adbflow watch` (pid {other or '?'}) uses {self.data_dir}",
                               hint="stop it, or pass another --data-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def release_lock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------------ quarantine
    def quarantined(self) -> list[dict[str, Any]]:
        """Devices currently kept out of bids (for views and `--json` consumers)."""
        now = time.time()
        with self._quarantine_lock:
            held = quarantine.active(self._quarantine, now)
        return [q.to_json(now) for _, q in sorted(held.items())]

    def _strike(self, serial: str | None, kind: str, stage: str, job_id: int,
                error: str) -> None:
        if not serial or serial == "laptop" or self.config.quarantine is None:
            return
        now = time.time()
        with self._quarantine_lock:
            table = quarantine.forget_expired(self._quarantine, now, self.config.quarantine)
            prev = table.get(serial)
            new = quarantine.strike(prev, serial, kind, f"{stage}: {kind}", now,
                                    self.config.quarantine)
            if new is None or new == prev:
                return
            table[serial] = new
            self._quarantine = table
        self._emit("device_quarantined", serial=serial, job=job_id, stage=stage,
                   seconds=round(new.left_s(now), 1), until=round(new.until, 3),
                   strikes=new.strikes, kind=kind, error=error[:300])

    def _release_quarantine(self, serials: Sequence[str], why: str) -> None:
        if not serials:
            return
        released = []
        with self._quarantine_lock:
            for s in serials:
                if self._quarantine.pop(s, None) is not None:
                    released.append(s)
        for s in released:
            self._emit("device_released", serial=s, reason=why)

    # ------------------------------------------------------------------ workers
    def start_workers(self) -> None:
        """Daemon threads: on Ctrl-C/kill the process exits without waiting for device
        calls; unfinished attempts are redone on the next start."""
        while len(self._workers) < max(1, self.config.concurrency):
            t = threading.Thread(target=self._worker, daemon=True,
                                 name=f"job-worker-{len(self._workers)}")
            t.start()
            self._workers.append(t)

    def _worker(self) -> None:
        while not self.stop_event.is_set():
            try:
                job_id = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self.process(job_id)
            except Interrupted:
                pass
            except Exception:  # noqa: BLE001 - process() records failures itself
                log.exception("job %s crashed its worker", job_id)
            finally:
                with self._pending_cv:
                    self._pending.discard(job_id)
                    self._pending_cv.notify_all()

    def submit(self, job_id: int) -> None:
        with self._pending_cv:
            if job_id in self._pending:
                return
            self._pending.add(job_id)
        self.start_workers()
        self._queue.put(job_id)

    def wait_idle(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._pending_cv:
            while self._pending:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._pending_cv.wait(timeout=0.5 if left is None else min(0.5, left))
        return True

    # ------------------------------------------------------------------ adding jobs
    def add_device_picture(self, pic: NewPicture) -> tuple[int, bool]:
        job_id, created = self.journal.add_job(source="device", serial=pic.serial,
                                               path=pic.path, size=pic.size, mtime=pic.mtime,
                                               how=pic.how)
        self.journal.mark_seen(pic.serial, [(pic.path, pic.size, pic.mtime)], baseline=False)
        if created:
            self._emit("job_added", job=job_id, serial=pic.serial, name=pic.name, how=pic.how)
        return job_id, created

    def add_laptop_image(self, image: Path) -> tuple[int, bool]:
        image = Path(image).expanduser().resolve()
        try:
            st = image.stat()
        except OSError as exc:
            raise AdbflowError(f"cannot read {image}: {exc.strerror}",
                               hint="pass the path of an image file") from None
        if not image.is_file():
            raise AdbflowError(f"{image} is not a file", hint="pass the path of an image file")
        job_id, created = self.journal.add_job(source="laptop", serial="laptop",
                                               path=str(image), size=st.st_size,
                                               mtime=st.st_mtime, how="run")
        if created:
            self._emit("job_added", job=job_id, serial="laptop", name=image.name, how="run")
        return job_id, created

    # ------------------------------------------------------------------ one job
    def process(self, job_id: int) -> JobRecord:
        """Run every stage of the job that has no committed result; record the outcome."""
        job = self.journal.job(job_id)
        if job.state in FINAL_STATES:
            return job
        self._emit("job_started", job=job_id, serial=job.serial, name=job.name)
        try:
            if job.source == "device":
                self._stage(job, "pull", self._pull_attempt, origin_only=True)
            else:
                self._stage(job, "ingest", self._ingest_attempt, origin_only=True)
            job = self.journal.job(job_id)
            if job.source == "device" and job.sha256:
                dup = self.journal.duplicate_of(job.id, job.serial, job.path, job.sha256)
                if dup is not None:
                    raise _Duplicate(dup)
            self._stage(job, "classify", self._classify_attempt)
            self._stage(job, "generate", self._generate_attempt)
            result = compose_result(self.journal, self.journal.job(job_id), self.policy.name)
            self._write_story(job_id, result)
            self.journal.finish_job(job_id, "done", result=result)
            self._emit("job_done", job=job_id, result=result)
        except Interrupted:
            raise
        except _Duplicate as dup:
            msg = f"same content as job {dup.other} (only the timestamp changed)"
            self.journal.finish_job(job_id, "skipped", error=msg)
            self._emit("job_skipped", job=job_id, error=msg)
        except (JobError, StageFailed) as exc:
            self.journal.finish_job(job_id, "failed", error=str(exc))
            self._emit("job_failed", job=job_id, error=str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug must fail one job, not the watch
            msg = f"internal error: {exc!r}"
            log.error("job %s: %s\n%s", job_id, msg, traceback.format_exc())
            self.journal.finish_job(job_id, "failed", error=msg)
            self._emit("job_failed", job=job_id, error=msg)
        return self.journal.job(job_id)

    def _stage(self, job: JobRecord, stage: str,
               body: Callable[[JobRecord, _Attempt], dict[str, Any]], *,
               origin_only: bool = False) -> dict[str, Any]:
        """Bounded attempts of one stage. Committed output -> returned without running."""
        done = self.journal.stage_output(job.id, stage)
        if done is not None:
            return done
        previous = self.journal.failed_attempts(job.id, stage)
        excluded = {a.serial for a in previous if a.serial}
        reasons = [f"{a.serial or '-'}: {a.error}" for a in previous]
        budget = self.config.attempts - len(previous)
        for n in range(max(0, budget)):
            if self.stop_event.is_set():
                raise Interrupted("stopping")
            att = _Attempt(self.journal.begin_attempt(job.id, stage, None), excluded)
            self._emit("stage_started", job=job.id, stage=stage, attempt=len(previous) + n + 1)
            try:
                out = body(job, att)
            except Interrupted:
                self.journal.fail_attempt(att.id, "interrupted (orchestrator stopping)",
                                          kind="interrupted")
                raise
            except JobError as exc:
                self.journal.fail_attempt(att.id, str(exc), kind="input")
                self._emit("stage_failed", job=job.id, stage=stage, serial=att.serial,
                           error=str(exc), final=True)
                raise
            except (AdbError, ParseError, NoDevice) as exc:
                kind = error_kind(exc)
                self.journal.fail_attempt(att.id, str(exc), kind=kind)
                reasons.append(f"{att.serial or '-'}: {kind}: {exc}")
                if att.serial:
                    excluded.add(att.serial)
                    self._strike(att.serial, kind, stage, job.id, str(exc))
                self._emit("stage_failed", job=job.id, stage=stage, serial=att.serial,
                           error=str(exc), kind=kind, final=False)
                if n + 1 < budget:
                    wait = self.config.retry_wait_s * (2 ** n if origin_only else 1)
                    self._sleep(min(wait, 10.0))
                continue
            try:
                self.journal.commit_attempt(att.id, out)
            except StageAlreadyDone:      # another run committed it first: keep that result
                out = self.journal.stage_output(job.id, stage) or out
            if att.serial in self._quarantine:
                self._release_quarantine([att.serial], f"{stage} succeeded")
            self._emit("stage_done", job=job.id, stage=stage, serial=att.serial, output=out)
            return out
        raise StageFailed(f"{stage} failed after {self.config.attempts} attempts: "
                          + " | ".join(reasons[-self.config.attempts:]),
                          hint="see `adbflow show JOB` for every attempt")

    # ------------------------------------------------------------------ stage bodies
    def _pull_attempt(self, job: JobRecord, att: _Attempt) -> dict[str, Any]:
        att.serial = job.serial
        self.journal.set_attempt_serial(att.id, job.serial)
        device = self.inventory.device(job.serial)
        local = stages.local_picture_path(self.data_dir, job.id, job.serial, job.path)
        out = stages.pull_picture(device, job.path, local, expected_size=job.size,
                                  expected_mtime=job.mtime, max_bytes=self.config.max_bytes,
                                  timeouts=self.config.timeouts)
        self.journal.update_job(job.id, sha256=out["sha256"], local_path=out["local"])
        out["serial"] = job.serial
        return out

    def _ingest_attempt(self, job: JobRecord, att: _Attempt) -> dict[str, Any]:
        """`adbflow run IMAGE`: the picture starts on the laptop; copy it into the data dir
        so the job no longer depends on the user's file (and its name)."""
        att.serial = None
        src = Path(job.path)
        t0 = time.monotonic()
        if job.size == 0:
            raise JobError(f"{src.name}: empty file (0 bytes)")
        if job.size > self.config.max_bytes:
            raise JobError(f"{src.name}: {job.size} bytes exceeds the {self.config.max_bytes}"
                           "-byte limit", hint="raise --max-bytes to accept it")
        local = stages.local_picture_path(self.data_dir, job.id, "laptop", job.path)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(local.name + ".part")
        try:
            shutil.copyfile(src, tmp)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise JobError(f"cannot read {src}: {exc.strerror}") from None
        os.replace(tmp, local)
        digest = stages.sha256_file(local)
        self.journal.update_job(job.id, sha256=digest, local_path=str(local))
        return {"bytes": local.stat().st_size, "sha256": digest, "local": str(local),
                "serial": "laptop", "pull_s": round(time.monotonic() - t0, 4)}

    def _bmp(self, job: JobRecord, size: int) -> tuple[Path, dict[str, Any], float]:
        """The model input for `size` (cached per job and size; atomic, so idempotent)."""
        src = Path(job.local_path or "")
        if not job.local_path or not src.is_file():
            raise JobError(f"job {job.id}: the pulled picture is missing from {self.data_dir}",
                           hint="it was deleted; re-run the picture with `adbflow run`")
        work = self.data_dir / "work" / str(job.id)
        stages.ensure_inside(self.data_dir, work / "x")
        work.mkdir(parents=True, exist_ok=True)
        dst = work / f"input-{int(size)}.bmp"
        t0 = time.monotonic()
        info = prepare_bmp(src, dst, int(size), max_bytes=self.config.max_bytes)
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

    def _classify_attempt(self, job: JobRecord, att: _Attempt) -> dict[str, Any]:
        job = self.journal.job(job.id)
        # Bad input is found before any device time is spent on it.
        bmp, image_info, convert_s = self._bmp(job, self._default_input_size())
        task = Task("classify", input_bytes=bmp.stat().st_size, output_bytes=1024)
        award, device, bid, decision, bid_s = self._bid(task, "classify", att)
        try:
            profile = self.profiles.for_model(bid.model)
            size = int(profile.label_image.input_size)
            self._size_hint = size
            if size != image_info["output_size"]:
                bmp, image_info, extra = self._bmp(job, size)
                convert_s += extra
            with self._slot(award, "classify") as slot_wait_s:
                out = stages.classify_on(device, profile.label_image, bmp,
                                         timeouts=self.config.timeouts)
        finally:
            self._release(award)
        self._learn(device.serial, "classify", out["run_s"], bid, profile, task, award.others)
        out.update(serial=device.serial, profile=profile.name, image=image_info,
                   bid=_bid_summary(bid), decision=_decision_summary(decision, att.quarantined),
                   timings={"bid_s": round(bid_s, 4), "convert_s": round(convert_s, 4),
                            "slot_wait_s": round(slot_wait_s, 4), "push_s": out["push_s"],
                            "run_s": out["run_s"]})
        return out

    def _generate_attempt(self, job: JobRecord, att: _Attempt) -> dict[str, Any]:
        classified = self.journal.stage_output(job.id, "classify") or {}
        prompt = build_prompt(classified.get("labels") or [])
        task = Task("generate", input_bytes=len(prompt.encode()), output_bytes=2048,
                    prompt_tokens=max(1, len(prompt) // 4))
        award, device, bid, decision, bid_s = self._bid(task, "generate", att)
        try:
            profile = self.profiles.for_model(bid.model)
            with self._slot(award, "generate") as slot_wait_s:
                out = stages.generate_on(device, profile.llama, prompt,
                                         timeouts=self.config.timeouts)
        finally:
            self._release(award)
        self._learn(device.serial, "generate", out["run_s"], bid, profile,
                    replace(task, n_predict=int(profile.llama.n_predict)),
                    award.others)
        out.update(serial=device.serial, profile=profile.name, prompt=prompt,
                   bid=_bid_summary(bid), decision=_decision_summary(decision, att.quarantined),
                   timings={"bid_s": round(bid_s, 4), "slot_wait_s": round(slot_wait_s, 4),
                            "run_s": out["run_s"]})
        return out

    def _learn(self, serial: str, stage: str, seconds: float, bid: Any, profile: Any,
               task: Any, others: Sequence[Any] = ()) -> None:
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

    # ------------------------------------------------------------------ bidding & slots
    def _bid(self, task: Any, stage: str, att: _Attempt):
        """Bid round + policy decision; the winner is awarded the task (inflight) atomically
        with the decision so concurrent jobs see each other's awards."""
        deadline = time.monotonic() + self.config.device_wait_s
        while True:
            t0 = time.monotonic()
            devices = list(self.inventory.devices())
            by_serial = {d.serial: d for d in devices}
            bids = self.bidder.gather(devices) if devices else []
            candidates = [b for b in bids if b.serial not in att.excluded]
            if not any(getattr(b, "ok", False) for b in candidates):
                candidates = bids   # only devices that failed this stage remain: retry them
            with self._quarantine_lock:
                table = dict(self._quarantine)
            self._release_quarantine(quarantine.cleared_by_bids(table, bids), "healthy bid")
            with self._quarantine_lock:
                candidates, held = quarantine.apply(candidates, self._quarantine, time.time())
            with self._policy_lock:
                snapshot = {s: tuple(a.task for a in awards)
                            for s, awards in self._inflight.items() if awards}
                decision = self.policy.choose(task, candidates, inflight=snapshot,
                                              profiles=self.profiles,
                                              service_times=self.service_times)
                winner = decision.winner
                if winner in by_serial:
                    award = _Award(winner, task, snapshot.get(winner, ()))
                    self._inflight.setdefault(winner, []).append(award)
            bid_s = time.monotonic() - t0
            if winner in by_serial:
                att.serial = winner
                att.quarantined = held
                self.journal.set_attempt_serial(att.id, winner)
                bid = next(b for b in bids if b.serial == winner)
                self._emit("bid", stage=stage, winner=winner, reason=decision.reason,
                           bids=[_bid_summary(b) for b in bids], quarantined=held)
                return award, by_serial[winner], bid, decision, bid_s
            if time.monotonic() + 2.0 > deadline:
                raise NoDevice(f"no eligible device for {stage}: {decision.reason}",
                               hint="check `adbflow devices`; all devices may be busy, "
                                    "offline or excluded after failures")
            self._sleep(2.0)

    def _release(self, award: _Award) -> None:
        with self._policy_lock:
            lst = self._inflight.get(award.serial, [])
            for i, a in enumerate(lst):
                if a is award:
                    del lst[i]
                    break

    @contextlib.contextmanager
    def _slot(self, award: _Award, stage: str) -> Iterator[float]:
        """One `stage` at a time per device; marks the award as started once it runs."""
        with self._slots_lock:
            lock = self._slots.setdefault((award.serial, stage), threading.Lock())
        t0 = time.monotonic()
        while not lock.acquire(timeout=0.5):
            if self.stop_event.is_set():
                raise Interrupted("stopping")
        try:
            with self._policy_lock:
                if award.task is not None:
                    award.task = replace(award.task, started_at=time.time())
            yield time.monotonic() - t0
        finally:
            lock.release()

    # ------------------------------------------------------------------ output
    def _write_story(self, job_id: int, result: Mapping[str, Any]) -> None:
        """Stories are also plain files (data_dir/stories/JOB.txt) for people and scripts."""
        from adbflow.runtime.story import render_result
        d = self.data_dir / "stories"
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{int(job_id)}.txt"
        stages.ensure_inside(self.data_dir, path)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(render_result(result) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    # ------------------------------------------------------------------ watch
    def run_image(self, image: Path) -> JobRecord:
        """`adbflow run IMAGE`: one laptop picture through classify + generate."""
        job_id, _created = self.add_laptop_image(image)
        return self.process(job_id)

    def _initial_ignore(self, serial: str, entries: Sequence[Entry], *, backlog: bool,
                        crashed: bool, contacted: set[str]) -> set[tuple[str, int, float]]:
        """What to ignore in a device's first listing of this session.

        Ignored: pictures that already have a job, and pictures present before watching
        started (the baseline, remembered in the journal) unless --backlog. Not ignored:
        pictures that appeared while we were not watching a device we already watched,
        when the previous watch crashed or the device reconnected: they were taken while
        the pipeline was supposed to be running, so dropping them would lose them."""
        seen = self.journal.seen(serial)
        known = self.journal.was_watched(serial)
        reconnect = serial in contacted
        contacted.add(serial)
        ignore: set[tuple[str, int, float]] = set()
        baseline: list[tuple[str, int, float]] = []
        base = self.config.pictures_dir.rstrip("/")
        for e in entries:
            if not e.is_file or not is_candidate_name(e.name):
                continue
            path = f"{base}/{e.name}"
            key = (e.name, e.size, e.mtime)
            if self.journal.find_job(serial, path, e.size, e.mtime) is not None:
                ignore.add(key)
                continue
            s = seen.get(path)
            if s is not None and (s[0], s[1]) == (e.size, e.mtime) and not (backlog and s[2]):
                ignore.add(key)
                continue
            if backlog or (known and (crashed or reconnect)):
                continue
            ignore.add(key)
            baseline.append((path, e.size, e.mtime))
        if baseline:
            self.journal.mark_seen(serial, baseline, baseline=True)
        self.journal.mark_watched(serial)
        return ignore

    def watch(self, *, once: bool = False, backlog: bool = False, poll_s: float = 2.0,
              max_wait_s: float | None = None, refresh_s: float = 5.0) -> list[int]:
        """Watch every device until stop_event (Ctrl-C) — or, with once, until the next
        picture (or the jobs a crashed run left unfinished) is processed. Returns job ids."""
        self.acquire_lock()
        session = self.journal.begin_session()
        recovered = self.journal.recover()
        if recovered:
            self._emit("recovered", attempts=recovered)
        contacted: set[str] = set()
        watcher = Watcher(lambda serial, entries: self._initial_ignore(
            serial, entries, backlog=backlog, crashed=session.previous_crashed,
            contacted=contacted), directory=self.config.pictures_dir,
            timeout=self.config.timeouts.stat_s, use_inotify=self.config.use_inotify,
            settle_s=self.config.settle_s,
            on_error=lambda serial, msg: self._emit("device_error", serial=serial, error=msg))
        submitted: list[int] = []
        synced = False
        try:
            for job in self.journal.incomplete_jobs(source="device"):
                self._emit("job_resumed", job=job.id, serial=job.serial, name=job.name)
                submitted.append(job.id)
                self.submit(job.id)
            devices = list(self.inventory.devices())
            new: list[NewPicture] = []
            if not (once and submitted):
                # prime the bidder: later rounds measure load since this sample, no sleep
                if devices:
                    threading.Thread(target=self.bidder.gather, args=(devices,),
                                     daemon=True).start()
                new = watcher.sync(devices)
                synced = True
                self._emit("watching", devices=[d.serial for d in devices])
            last_refresh = time.monotonic()
            start = time.monotonic()
            next_poll = start + poll_s
            while not self.stop_event.is_set() and not (once and submitted):
                for pic in new:
                    job_id, created = self.add_device_picture(pic)
                    if created and not (once and submitted):
                        submitted.append(job_id)
                        self.submit(job_id)
                if once and submitted:
                    break
                if max_wait_s is not None and time.monotonic() - start > max_wait_s:
                    raise AdbflowError(f"no new picture within {max_wait_s:g} s",
                                       hint=f"take a picture into {self.config.pictures_dir} "
                                            "on a device, or pass --backlog")
                # sleep until the next listing, an inotify event or a due settle re-check
                new = watcher.wait_events(max(0.0, next_poll - time.monotonic()))
                if self.stop_event.is_set():
                    break
                if time.monotonic() - last_refresh > refresh_s:
                    new += watcher.sync(list(self.inventory.devices()))
                    last_refresh = time.monotonic()
                new += watcher.recheck()
                if time.monotonic() >= next_poll:
                    new += watcher.poll()
                    next_poll = time.monotonic() + poll_s
            watcher.stop()
            if once:
                while not self.wait_idle(timeout=0.5):
                    if self.stop_event.is_set():
                        break
        finally:
            # "Clean" means every visible picture was accounted for. Otherwise the session
            # stays open, like a crash: the next start then processes the pictures this one
            # saw half-way (or never listed) instead of taking them as "present before start".
            unaccounted = watcher.unreported()
            watcher.stop()
            if unaccounted == 0 and (synced or not session.previous_crashed):
                self.journal.end_session(session.id)
            self.release_lock()
        return submitted


# ---------------------------------------------------------------------- summaries

def _bid_summary(bid: Any) -> dict[str, Any]:
    def f(v: Any) -> Any:
        return None if isinstance(v, float) and v != v else v
    return {"serial": bid.serial, "model": getattr(bid, "model", None),
            "cpu_load": f(getattr(bid, "cpu_load", None)),
            "mem_available_kb": getattr(bid, "mem_available_kb", None),
            "error": getattr(bid, "error", None)}


def _decision_summary(decision: Any, quarantined: Sequence[str] = ()) -> dict[str, Any]:
    out = {"policy": getattr(decision, "policy", None), "winner": decision.winner,
           "reason": decision.reason, "quarantined": list(quarantined)}
    costs = getattr(decision, "costs", None) or []
    out["costs"] = {c.serial: (None if c.total_s == float("inf") else round(c.total_s, 4))
                    for c in costs}
    return out


def compose_result(journal: Journal, job: JobRecord, policy: str | None = None) -> dict[str, Any]:
    """The user-facing record of a job, built only from committed journal rows (so a
    resumed job reports the same as an uninterrupted one)."""
    first = "pull" if job.source == "device" else "ingest"
    atts = {s: journal.done_attempt(job.id, s) for s in (first, "classify", "generate")}
    pulled = atts[first].output if atts[first] else {}
    cls = atts["classify"].output if atts["classify"] else {}
    gen = atts["generate"].output if atts["generate"] else {}
    ct, gt = cls.get("timings", {}), gen.get("timings", {})
    stage_s = {s: (round(a.seconds, 4) if a and a.seconds is not None else None)
               for s, a in atts.items()}
    started = min((a.started for a in atts.values() if a), default=job.created)
    ended = max((a.ended for a in atts.values() if a and a.ended), default=started)
    every = journal.attempts(job.id)
    return {
        "job": job.id, "source": job.source, "origin": job.serial, "path": job.path,
        "detected_by": job.how,
        "name": job.name, "size": job.size, "sha256": job.sha256,
        "labels": cls.get("labels", []), "story": gen.get("story", ""),
        "prompt": gen.get("prompt"),
        "devices": {first: job.serial if job.source == "device" else "laptop",
                    "classify": cls.get("serial"), "generate": gen.get("serial")},
        "remote_image": cls.get("remote_image"),
        "policy": policy or (cls.get("decision") or {}).get("policy"),
        "decisions": {"classify": cls.get("decision"), "generate": gen.get("decision")},
        "timings": {first + "_s": pulled.get("pull_s"), "bid_classify_s": ct.get("bid_s"),
                    "convert_s": ct.get("convert_s"), "push_s": ct.get("push_s"),
                    "classify_s": ct.get("run_s"), "bid_generate_s": gt.get("bid_s"),
                    "generate_s": gt.get("run_s"), "total_s": round(ended - started, 4)},
        "stage_seconds": stage_s,
        "classify_avg_ms": cls.get("avg_ms"), "eval_tok_s": gen.get("eval_tok_s"),
        "attempts": {s: sum(1 for a in every if a.stage == s) for s in atts},
    }
