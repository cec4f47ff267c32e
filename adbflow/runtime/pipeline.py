"""The picture pipeline: detect -> pull -> bid -> classify -> bid -> generate -> story,
durable across crashes and tolerant of devices failing mid-stage.

Why over ~500 lines: `compose_result` (the user-facing job record) and the output-id scan
live here beside the stage order they describe; they are pure and small each.

Why this module is small: `Pipeline` only wires the pieces together and runs one job's
stages in order. Each piece owns one job and gets an `emit` callable, never the pipeline:

    runtime/attempts.py    the bounded attempt loop of a stage (journal, failure kinds)
    runtime/retry.py       RetryPolicy: attempts and pauses
    runtime/stages.py      stage bodies (pull, ingest, classify, generate)
    runtime/dispatcher.py  bid rounds, quarantine table, per-device slots
    scheduling/dispatch.py the pure `decide` and the in-flight accounting
    runtime/workers.py     worker threads and the job queue
    runtime/watch.py       a watch session: data-dir lock, recovery, baseline, loop
    runtime/events.py      the typed events views receive

Concurrency: as many jobs run at once as the fleet has stage slots (profiles' [slots], plus
one per device for the slot-free parts); the rest wait in a capped queue and in the journal
(back-pressure); a device runs its profile's slots per stage kind; the scheduler sees work
already awarded (in flight), so a burst of pictures spreads over the fleet.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adbflow.errors import (
    AdbflowError,
    FlowError,
    JobError,
    JournalReplaced,
    LaptopFault,
    PictureChanging,
    PictureSuperseded,
)
from adbflow.paths import PROFILES_DIR, data_home
from adbflow.runtime import stages
from adbflow.runtime.attempts import (
    OriginUnreachable,
    StageBody,
    StageExhausted,
    error_kind,
    run_stage,
)
from adbflow.runtime.claims import ClaimBusy, DoneElsewhere, NoClaim, PictureClaims
from adbflow.runtime.detect import SETTLE_S, WATCH_DIRS, NewPicture
from adbflow.runtime.dispatcher import (
    Dispatcher,
    Interrupted,
    NoDevice,
    QuarantineBoard,
    sleep_or_stop,
)
from adbflow.runtime.events import (
    Emitter,
    Event,
    JobAdded,
    JobClaimedElsewhere,
    JobDone,
    JobFailed,
    JobOwnedElsewhere,
    JobSkipped,
    JobStarted,
    JobWaiting,
    LaptopFaultSeen,
    PartialsCleaned,
    Recovered,
)
from adbflow.runtime.imaging import DEFAULT_MAX_BYTES
from adbflow.runtime.journal import FINAL_STATES, IncompleteResult, JobRecord, JobState, Journal
from adbflow.runtime.laptop import clean_stale_partials, laptop_io
from adbflow.runtime.leasing import StageLeases
from adbflow.runtime.resident import RESIDENT_LEDGER, ForwardLedger, ResidentServers
from adbflow.runtime.retry import RetryPolicy
from adbflow.runtime.waiting import WaitingJobs
from adbflow.runtime.watch import DataDirLock, WatchSession, record_picture
from adbflow.runtime.workers import DEFAULT_QUEUE_MAX, JobRunner
from adbflow.scheduling.energy_rates import EnergyRates
from adbflow.scheduling.policy import DEFAULT_POLICY, get_policy
from adbflow.scheduling.quarantine import QuarantineRules
from adbflow.scheduling.service_times import ServiceTimes

__all__ = ["DEFAULT_POLICY", "Interrupted", "NoDevice", "Pipeline", "PipelineConfig",
           "StageExhausted", "compose_result", "error_kind"]

log = logging.getLogger("adbflow.runtime.pipeline")

STAGE_ORDER_DEVICE = ("pull", "classify", "generate")
STAGE_ORDER_LAPTOP = ("ingest", "classify", "generate")
JOURNAL_NAME = "journal.sqlite"
MAX_REPULLS = 3     # a picture pulled mid-write is pulled again (after it settles) this often
CAPACITY_TTL_S = 2.0   # the fleet's slot count is re-read at most this often (inventory I/O)


def journal_path(data_dir: Path) -> Path:
    """Where a data directory keeps its journal (the one rule every command uses)."""
    return Path(data_dir) / JOURNAL_NAME


class _Duplicate(Exception):
    def __init__(self, other: int) -> None:
        super().__init__(other)
        self.other = other


@dataclass
class PipelineConfig:
    data_dir: Path = field(default_factory=data_home)
    policy: str = DEFAULT_POLICY
    attempts: int = 3
    # jobs in flight: None = from the fleet (device slots of the profiles + headroom);
    # an int = a fixed pool of that many (the pre-issue-19 behaviour was 4)
    concurrency: int | None = None
    queue_max: int = DEFAULT_QUEUE_MAX  # job ids held in memory beyond those running
    max_bytes: int = DEFAULT_MAX_BYTES
    timeouts: stages.StageTimeouts = field(default_factory=stages.StageTimeouts)
    bid_timeout_s: float = 5.0
    # bids from live telemetry streams (one long-lived shell per device; one-shot probes
    # where a stream is down); seconds between samples; older samples are re-requested
    telemetry: bool = True
    telemetry_interval_s: float = 1.0
    telemetry_max_age_s: float = 1.5   # > interval: most bids are served from the cache
    device_wait_s: float = 30.0       # how long a stage waits for any eligible device
    retry_wait_s: float = 1.0         # pause between attempts (origin pulls back off more)
    profiles_dir: Path = PROFILES_DIR
    # device folders watched, each with its subfolders (default DCIM/Camera and Pictures)
    watch_dirs: tuple[str, ...] = WATCH_DIRS
    use_inotify: bool = True
    use_mediastore: bool = True       # Android 11+: `content query` for published images
    settle_s: float | None = SETTLE_S  # second look at a newly listed picture (None: next listing)
    # devices that time out / disconnect sit out the next jobs' bids (None: never)
    quarantine: QuarantineRules | None = field(default_factory=QuarantineRules)
    trace: bool = True                # spans of each finished job -> DATA/traces (tracestore.py)
    energy: bool = False              # battery energy per device stage (energymeter.py; +~1 s)
    # ECT's energy part: seconds of latency one expected joule is worth (0: ignore energy)
    energy_weight_s_per_j: float = 0.0
    lease_ttl_s: float = 20.0         # slot leases on the phones (renewed every ttl/3)
    # origin phone gone during its pull: wait this long in the worker (a cable wiggle), then
    # park the job until the phone is back; after origin_wait_s parked it fails, and is
    # still retried if the phone comes back later (the picture is never given up)
    origin_retry_s: float = 10.0
    origin_wait_s: float = 300.0
    # warm models: one resident llama-server per phone for the session (runtime/resident.py);
    # phones without the server binary, and the classifier, stay one-shot
    warm_models: bool = False
    # picture claims at the origin phone (README "Picture claims"): orchestrators with
    # other data dirs on the same phones process each picture once; renewed every ttl/3
    claims: bool = True
    claim_ttl_s: float = 30.0

    @property
    def journal_path(self) -> Path:
        return journal_path(self.data_dir)

    def retry(self, *, origin_only: bool = False) -> RetryPolicy:
        """Origin-bound stages (pull, ingest) back off; others re-bid after a flat pause."""
        return RetryPolicy(attempts=self.attempts, pause_s=self.retry_wait_s,
                           backoff=origin_only)


class Pipeline:
    """Runs jobs from the journal; `watch()` feeds it new pictures from the devices."""

    def __init__(self, config: PipelineConfig, inventory: Any, *, bidder: Any = None,
                 profiles: Any = None, policy: Any = None, journal: Journal | None = None,
                 service_times: Any = None, leases: StageLeases | None = None,
                 on_event: Callable[[Event], None] | None = None, flow: Any = None,
                 tracer: Any = None) -> None:
        self.config = config
        self.data_dir = Path(config.data_dir)
        with laptop_io(self.data_dir):
            self.data_dir.mkdir(parents=True, exist_ok=True)
        self.inventory = inventory
        self.journal = journal or Journal(config.journal_path)
        # ids (and so story / picture file names) continue after any already used here
        self.journal.reserve_ids(highest_output_id(self.data_dir))
        self.leases = leases or StageLeases(ttl_s=config.lease_ttl_s)
        self.claims = PictureClaims(owner=self.leases.owner, dir_id=self.journal.instance_id(),
                                    ttl_s=config.claim_ttl_s) if config.claims else None
        self._own_bidder = bidder is None
        if bidder is None:
            from adbflow.scheduling.bids import Bidder
            from adbflow.scheduling.telemetry import Telemetry
            bidder = Bidder(timeout=config.bid_timeout_s, telemetry=Telemetry(
                interval_s=config.telemetry_interval_s,
                max_age_s=config.telemetry_max_age_s) if config.telemetry else None)
        self.bidder = bidder
        if profiles is None:
            from adbflow.scheduling.profiles import ProfileBook
            profiles = ProfileBook.load(config.profiles_dir)
        self.profiles = profiles
        if service_times is None:
            service_times = ServiceTimes(config.journal_path)
        self.service_times = service_times
        # joules per unit learned from metered attempts (own table in the journal DB)
        self.energy_rates = EnergyRates(config.journal_path)
        if policy is None:
            policy = get_policy(config.policy,
                                energy_weight_s_per_j=config.energy_weight_s_per_j,
                                energy_rates=self.energy_rates)
        self.policy = policy
        if tracer is None and config.trace:
            from adbflow.runtime.tracestore import JobTracer
            tracer = JobTracer(self.data_dir, inventory)
        self.tracer = tracer
        self.emit = Emitter(on_event)
        self.stop_event = threading.Event()
        self.board = QuarantineBoard(config.quarantine, self.emit)
        self.dispatcher = Dispatcher(inventory=inventory, bidder=bidder, policy=policy,
                                     profiles=profiles, service_times=service_times,
                                     board=self.board, emit=self.emit, stop=self.stop_event,
                                     device_wait_s=config.device_wait_s,
                                     lease_owner=self.leases.owner)
        self.stages = stages.JobStages(data_dir=self.data_dir, journal=self.journal,
                                       inventory=inventory, dispatcher=self.dispatcher,
                                       profiles=profiles, service_times=service_times,
                                       max_bytes=config.max_bytes, timeouts=config.timeouts,
                                       energy=config.energy,
                                       energy_rates=self.energy_rates, leases=self.leases,
                                       residents=ResidentServers(ledger=ForwardLedger(
                                           self.data_dir / RESIDENT_LEDGER, self.leases.owner))
                                       if config.warm_models else None)
        self._capacity: tuple[float, int] | None = None
        self.jobs = JobRunner(
            self.process, stop=self.stop_event, queue_max=config.queue_max,
            concurrency=config.concurrency if config.concurrency else self.capacity,
            backlog=lambda exclude, limit: self.journal.incomplete_job_ids(
                source="device", exclude=exclude, limit=limit))
        self.lock = DataDirLock(self.data_dir)
        # a non-default flow (adbflow.flows) runs through the flow engine; the default
        # `classify-story` keeps this module's own path (journal rows unchanged)
        self.flow = flow
        self.flow_runner: Any = None
        if flow is not None and not flow.is_default:
            from adbflow.runtime.flow_engine import FlowRunner
            self.flow_runner = FlowRunner(self, flow)
        self.waiting = WaitingJobs(journal=self.journal, data_dir=self.data_dir,
                                   emit=self.emit, submit=self.submit,
                                   origin_wait_s=config.origin_wait_s)

    # ------------------------------------------------------------------ plumbing
    @property
    def on_event(self) -> Callable[[Event], None]:
        """Where events go (a view); may be replaced at any time."""
        return self.emit.sink

    @on_event.setter
    def on_event(self, sink: Callable[[Event], None] | None) -> None:
        self.emit.sink = sink or (lambda ev: None)

    def _sleep(self, seconds: float) -> None:
        sleep_or_stop(self.stop_event, seconds)

    def close(self) -> None:
        """Stop the workers (each ends at its next step; a device call in flight gets a
        second) and close the journal cleanly."""
        self.stop_event.set()
        self.jobs.join(timeout=1.0)
        if self.stages.residents is not None:
            self.stages.residents.close()   # nothing of ours stays running on the phones
        if self._own_bidder and hasattr(self.bidder, "close"):
            self.bidder.close()         # ends the telemetry loops on the phones
        if self.service_times is not None and hasattr(self.service_times, "close"):
            self.service_times.close()
        self.energy_rates.close()
        self.journal.close()
        self.release_lock()

    def acquire_lock(self) -> None:
        """One `watch` per data directory: two would resume the same jobs twice."""
        self.lock.acquire()

    def release_lock(self) -> None:
        self.lock.release()

    def quarantined(self) -> list[dict[str, Any]]:
        """Devices currently kept out of bids (for views and `--json` consumers)."""
        return self.board.listing()

    # ------------------------------------------------------------------ workers
    def start_workers(self) -> None:
        self.jobs.start()

    def capacity(self) -> int:
        """Jobs in flight the fleet can take now: every device's stage slots (its profile's
        [slots]) plus one job per device for the parts that hold no slot (pull, convert,
        bid), so a phone's next job is ready when a slot frees. Cached briefly: listing
        the inventory is adb I/O."""
        now = time.monotonic()
        if self._capacity is not None and now - self._capacity[0] < CAPACITY_TTL_S:
            return self._capacity[1]
        try:
            devices = list(self.inventory.devices())
        except AdbflowError:
            devices = []
        slots = 0
        for d in devices:
            try:
                slots += self.profiles.for_model(getattr(d, "model", None)).slots.total
            except Exception:  # noqa: BLE001 - a profile book without slots: one per stage
                slots += 2
        cap = max(1, slots + len(devices))
        self._capacity = (now, cap)
        return cap

    def submit(self, job_id: int) -> None:
        # device jobs spill to the journal when the queue is full; the backlog lists only those
        self.jobs.submit(job_id, spill=self.journal.job(job_id).source == "device")

    def wait_idle(self, timeout: float | None = None) -> bool:
        return self.jobs.wait_idle(timeout)

    # ------------------------------------------------------------------ adding jobs
    def add_device_picture(self, pic: NewPicture) -> tuple[int, bool]:
        return record_picture(self.journal, pic, self.emit)

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
            self.emit(JobAdded(job=job_id, serial="laptop", name=image.name, how="run"))
        return job_id, created

    # ------------------------------------------------------------------ one job
    def _stage(self, job: JobRecord, stage: str, body: StageBody, *,
               origin_only: bool = False) -> dict[str, Any]:
        return run_stage(job, stage, body, journal=self.journal,
                         retry=self.config.retry(origin_only=origin_only), board=self.board,
                         emit=self.emit, stop=self.stop_event,
                         origin=self if origin_only else None,
                         origin_retry_s=self.config.origin_retry_s)

    def process(self, job_id: int) -> JobRecord:
        """Run every stage of the job that has no committed result; record the outcome.
        One process works on a job at a time (the journal's claim); another live owner's
        job is waited for, not run twice."""
        self.journal.check_identity()
        job = self.journal.job(job_id)
        if job.state in FINAL_STATES:
            return job
        other = self.journal.claim_job(job_id)
        if other is not None:
            return self._wait_for_owner(job_id, other)
        try:
            return self._process_claimed(job)
        finally:
            with contextlib.suppress(AdbflowError):
                self.journal.release_job(job_id)

    def _wait_for_owner(self, job_id: int, other: Any) -> JobRecord:
        """Another live process (an `adbflow run` of the same picture, or `watch`) works on
        this job: wait for its outcome; take the job over if that process ends first."""
        self.emit(JobOwnedElsewhere(job=job_id, owner=other.describe()))
        while True:
            self._sleep(0.5)
            job = self.journal.job(job_id)
            if job.state in FINAL_STATES:
                return job
            if self.journal.claim_job(job_id) is None:
                try:
                    return self._process_claimed(job)
                finally:
                    self.journal.release_job(job_id)

    def _process_claimed(self, job: JobRecord) -> JobRecord:
        """The job's stages (its picture claimed at the origin phone first, for device
        jobs), then the outcome in the journal."""
        job_id = job.id
        held: Any = NoClaim()
        try:
            if job.source == "device" and self.claims is not None:
                held = self.claims.take(self._origin_device(job), job)
        except ClaimBusy as busy:       # another orchestrator works on it: not started
            return self._claimed_elsewhere(job, busy)
        except DoneElsewhere as other:
            return self._done_elsewhere(job, other)
        except OriginUnreachable as exc:
            return self._origin_gone(job, exc)
        completed = False
        try:
            with self.claims.renewing(held) if self.claims else contextlib.nullcontext():
                completed = self._run_stages(job, held)
        finally:
            if not completed:            # failed, stopped, parked: free for another
                held.release()
        return self.journal.job(job_id)

    def _origin_device(self, job: JobRecord) -> Any:
        """The job's origin phone; OriginUnreachable when it is not listed (the job waits
        for it, like its pull would)."""
        try:
            return self.inventory.device(job.serial)
        except AdbflowError as exc:
            raise OriginUnreachable(job.serial, str(exc)) from exc

    def _claimed_elsewhere(self, job: JobRecord, busy: ClaimBusy) -> JobRecord:
        self.waiting.park_claimed(job.id, busy.left_s)
        self.journal.update_job(job.id, state=JobState.PENDING, error=str(busy))
        self.emit(JobClaimedElsewhere(job=job.id, serial=busy.serial,
                                      owner=busy.owner or "?", left_s=round(busy.left_s, 1)))
        return self.journal.job(job.id)

    def _done_elsewhere(self, job: JobRecord, other: DoneElsewhere) -> JobRecord:
        """Recorded as skipped, with the other orchestrator's result (nothing reprocessed)."""
        result = {"job": job.id, "origin": job.serial, "path": job.path, "name": job.name,
                  "elsewhere": {"owner": other.owner, "serial": other.serial,
                                "record": other.record, "raw": other.raw}}
        self.journal.finish_job(job.id, JobState.SKIPPED, error=str(other), result=result)
        self.emit(JobSkipped(job=job.id, error=str(other)))
        return self.journal.job(job.id)

    def _origin_gone(self, job: JobRecord, exc: OriginUnreachable) -> JobRecord:
        self.waiting.park_origin(job.id, exc.serial)
        self.journal.update_job(job.id, state=JobState.PENDING, error=str(exc))
        self.emit(JobWaiting(job=job.id, serial=exc.serial, error=str(exc)))
        return self.journal.job(job.id)

    def first_stage(self, job: JobRecord) -> tuple[JobRecord, str]:
        """The pull (device pictures) or ingest (laptop images), then the duplicate check:
        (the job as journaled now, the first stage's name). _Duplicate when the pulled
        content is another job's (only the timestamp changed). Every flow starts here."""
        first = "pull" if job.source == "device" else "ingest"
        self._stage(job, first, self.stages.pull if first == "pull" else self.stages.ingest,
                    origin_only=True)
        job = self.journal.job(job.id)
        if job.source == "device" and job.sha256:
            dup = self.journal.duplicate_of(job.id, job.serial, job.path, job.sha256)
            if dup is not None:
                raise _Duplicate(dup)
        return job, first

    def _default_stages(self, job: JobRecord) -> tuple[dict[str, Any], tuple[str, ...]]:
        """The default flow: first stage, classify (pulled again when the copy was taken
        mid-write), generate. (result, the stages a `done` job must have outputs of)."""
        job_id = job.id
        for pulls_left in range(MAX_REPULLS, -1, -1):
            job, first = self.first_stage(job)
            try:
                self._stage(job, "classify", self.stages.classify)
                break
            except PictureChanging as changing:
                # the pulled copy was taken while the file was still being written
                if not pulls_left:
                    raise JobError(str(changing)) from changing
                self.journal.invalidate_stage(job_id, "pull", str(changing))
                job = self.journal.job(job_id)
        self._stage(job, "classify", self.stages.classify)
        self._stage(job, "generate", self.stages.generate)
        result = compose_result(self.journal, self.journal.job(job_id), self.policy.name)
        return result, (first, "classify", "generate")

    def _run_stages(self, job: JobRecord, held: Any) -> bool:
        """True when the job ended `done` (its claim completed: nothing to release). The
        stages are the default flow's or the flow runner's; the outcome (claim completed,
        `done` only with every stage's output, waits, skips, failures) is one rule here."""
        job_id = job.id
        completed = False
        self.emit(JobStarted(job=job_id, serial=job.serial, name=job.name))
        body = self.flow_runner.run_stages if self.flow_runner is not None \
            else self._default_stages
        try:
            for again in (False, True):
                result, require = body(job)     # committed stages are not run again
                if self.claims is not None and job.source == "device":
                    # the phone learns the result first: then no other orchestrator can
                    # take the picture over, whatever happens to us before the journal
                    self.claims.complete(self._origin_device(job), held, job, result)
                    completed = True
                try:
                    # `done` only with every stage's committed output (never an empty result)
                    self.journal.finish_job(job_id, JobState.DONE, result=result,
                                            require=require)
                    break
                except IncompleteResult:
                    if again:
                        raise
            self._write_story(job_id, result)
            self.emit(JobDone(job=job_id, result=result))
            completed = True
        except (Interrupted, JournalReplaced):
            raise
        except ClaimBusy as busy:   # lost our claim meanwhile; another holds it now
            self._claimed_elsewhere(job, busy)
        except DoneElsewhere as other:    # ... and the other one completed it: theirs counts
            self._done_elsewhere(job, other)
            completed = True
        except LaptopFault as exc:
            # The laptop's disk, not the phone or the picture: the job waits (pending) and
            # resumes once the data dir is writable again; nothing failed or quarantined.
            first_fault = self.waiting.park_laptop(job_id, exc)
            with contextlib.suppress(AdbflowError):
                self.journal.update_job(job_id, state=JobState.PENDING, error=str(exc))
            self.emit(LaptopFaultSeen(job=job_id, path=exc.path, error=str(exc),
                                      first=first_fault))
        except OriginUnreachable as exc:
            self._origin_gone(job, exc)
        except PictureSuperseded as sup:    # saw a file mid-write: not a failed job
            self.journal.finish_job(job_id, JobState.SKIPPED, error=str(sup))
            self.emit(JobSkipped(job=job_id, error=str(sup)))
        except _Duplicate as dup:
            msg = f"same content as job {dup.other} (only the timestamp changed)"
            self.journal.finish_job(job_id, JobState.SKIPPED, error=msg)
            self.emit(JobSkipped(job=job_id, error=msg))
        except (JobError, StageExhausted, FlowError) as exc:
            self.journal.finish_job(job_id, JobState.FAILED, error=str(exc))
            self.emit(JobFailed(job=job_id, error=str(exc)))
        except Exception as exc:  # noqa: BLE001 - a bug must fail one job, not the watch
            msg = f"internal error: {exc!r}"
            log.error("job %s: %s\n%s", job_id, msg, traceback.format_exc())
            self.journal.finish_job(job_id, JobState.FAILED, error=msg)
            self.emit(JobFailed(job=job_id, error=msg))
        if self.tracer is not None:   # spans of the finished job (advisory, never raises)
            self.tracer.record(self.journal, job_id)
        return completed

    def _write_story(self, job_id: int, result: Mapping[str, Any]) -> None:
        """Stories are also plain files (data_dir/stories/JOB.txt) for people and scripts."""
        from adbflow.runtime.story import render_result
        d = self.data_dir / "stories"
        path = d / f"{int(job_id)}.txt"
        stages.ensure_inside(self.data_dir, path)
        tmp = path.with_suffix(".tmp")
        with laptop_io(d):
            d.mkdir(parents=True, exist_ok=True)
            tmp.write_text(render_result(result) + "\n", encoding="utf-8")
            os.replace(tmp, path)

    # ------------------------------------------------------------------ waiting jobs
    def present(self, serial: str) -> bool:
        """OriginWatch: the phone is listed by its adb server as a usable device."""
        try:
            return any(d.serial == serial for d in self.inventory.devices())
        except AdbflowError:
            return False

    def wait_present(self, serial: str, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._sleep(min(1.0, max(0.05, deadline - time.monotonic())))
            if self.present(serial):
                return True
        return False

    def _clean_partials(self) -> None:
        removed = clean_stale_partials(self.data_dir)
        if removed:
            self.emit(PartialsCleaned(files=[str(p) for p in removed][:20], count=len(removed)))

    # ------------------------------------------------------------------ entry points
    def run_image(self, image: Path) -> JobRecord:
        """`adbflow run IMAGE`: one laptop picture through classify + generate."""
        job_id, _created = self.add_laptop_image(image)
        return self.run_job(job_id)

    def run_job(self, job_id: int) -> JobRecord:
        """One job now (`adbflow run`). Raises LaptopFault when our disk stopped it (it stays
        pending: running the picture again resumes it)."""
        recovered = self.journal.recover()    # only attempts of processes that are gone
        if recovered:
            self.emit(Recovered(attempts=recovered))
        self._clean_partials()
        job = self.process(job_id)
        fault = self.waiting.take_laptop_fault(job_id)
        if fault is not None:
            raise fault
        return job

    def watch(self, *, once: bool = False, backlog: bool = False, poll_s: float = 2.0,
              max_wait_s: float | None = None, refresh_s: float = 5.0) -> list[int]:
        """Watch every device until stop_event (Ctrl-C) — or, with once, until the next
        picture (or the jobs a crashed run left unfinished) is processed. Returns job ids."""
        self._clean_partials()
        session = WatchSession(config=self.config, journal=self.journal,
                               inventory=self.inventory, bidder=self.bidder, jobs=self.jobs,
                               lock=self.lock, emit=self.emit, stop=self.stop_event,
                               on_refresh=self.waiting.requeue)
        return session.run(once=once, backlog=backlog, poll_s=poll_s, max_wait_s=max_wait_s,
                           refresh_s=refresh_s)


def highest_output_id(data_dir: Path) -> int:
    """The largest job id that names a file in the data dir (stories/ID.txt, work/ID,
    pictures/SERIAL/ID-...): a new journal must start above it."""
    top = 0
    d = Path(data_dir)
    with contextlib.suppress(OSError):
        for p in (d / "stories").iterdir():
            if p.stem.isdigit():
                top = max(top, int(p.stem))
    with contextlib.suppress(OSError):
        for p in (d / "work").iterdir():
            if p.name.isdigit():
                top = max(top, int(p.name))
    with contextlib.suppress(OSError):
        for sub in (d / "pictures").iterdir():
            with contextlib.suppress(OSError):
                for p in sub.iterdir():
                    head = p.name.split("-", 1)[0]
                    if head.isdigit():
                        top = max(top, int(head))
    return top


def compose_result(journal: Journal, job: JobRecord, policy: str | None = None) -> dict[str, Any]:
    """The user-facing record of a job, built only from committed journal rows (so a
    resumed job reports the same as an uninterrupted one)."""
    first = "pull" if job.source == "device" else "ingest"
    atts = {s: journal.done_attempt(job.id, s) for s in (first, "classify", "generate")}
    def output(stage: str) -> dict[str, Any]:
        att = atts[stage]
        return (att.output or {}) if att is not None else {}

    pulled, cls, gen = output(first), output("classify"), output("generate")
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
