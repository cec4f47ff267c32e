"""Jobs that wait instead of failing: the origin phone is gone, the laptop's disk is, or
another orchestrator holds the picture's claim.

Why a place of their own: neither is the picture's or a phone's fault, so such a job must
not fail (the picture would be lost) and must not hold a worker thread while it waits
(other phones' pictures would queue behind it). It is parked here, pending in the journal,
and queued again by `requeue` (called by the watch at start and at each refresh) once
its phone is listed again or a probe write to the data dir succeeds.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from adbflow.errors import AdbflowError, LaptopFault
from adbflow.runtime.events import Emit, JobFailed, JobRequeued
from adbflow.runtime.journal import JobState, Journal
from adbflow.runtime.laptop import writable


class WaitingJobs:
    """Parked jobs (thread-safe). `submit` queues a job again (the job runner's)."""

    def __init__(self, *, journal: Journal, data_dir: Path, emit: Emit,
                 submit: Callable[[int], None], origin_wait_s: float) -> None:
        self.journal = journal
        self.data_dir = Path(data_dir)
        self._emit = emit
        self._submit = submit
        self.origin_wait_s = origin_wait_s
        self._lock = threading.Lock()
        self._origin: dict[int, tuple[str, float]] = {}   # job -> (origin serial, since)
        self._laptop: dict[int, LaptopFault] = {}         # job -> the fault it waits on
        self._claimed: dict[int, float] = {}              # job -> look again at (monotonic)

    def park_origin(self, job_id: int, serial: str) -> None:
        with self._lock:
            self._origin.setdefault(job_id, (serial, time.monotonic()))

    def park_claimed(self, job_id: int, left_s: float) -> None:
        """Another orchestrator holds the picture's claim: look again once it would have
        expired (its holder renews it while working; a crashed holder's claim expires)."""
        with self._lock:
            self._claimed[job_id] = time.monotonic() + max(0.5, left_s) + 0.5

    def park_laptop(self, job_id: int, fault: LaptopFault) -> bool:
        """Returns True for the first job waiting on the laptop (say it once)."""
        with self._lock:
            first = not self._laptop
            self._laptop[job_id] = fault
        return first

    def take_laptop_fault(self, job_id: int) -> LaptopFault | None:
        """For `adbflow run`: the fault that stopped this job (it stays pending)."""
        with self._lock:
            return self._laptop.pop(job_id, None)

    def requeue(self, present: set[str]) -> list[int]:
        """Queue again what can go on: jobs whose origin phone is listed again (also jobs
        that failed only because it was unreachable), all laptop-parked jobs once the data
        dir takes writes. A job parked longer than origin_wait_s is marked failed (and
        still comes back here when its phone returns). Returns the requeued job ids."""
        now = time.monotonic()
        again: list[tuple[int, str]] = []
        with self._lock:
            origin = dict(self._origin)
            laptop = bool(self._laptop)
            due = sorted(j for j, at in self._claimed.items() if at <= now)
            for j in due:
                del self._claimed[j]
        again += [(j, "the picture's claim is due to be looked at again") for j in due]
        for job_id, (serial, since) in origin.items():
            if serial in present:
                with self._lock:
                    self._origin.pop(job_id, None)
                again.append((job_id, f"origin phone {serial} is back"))
            elif now - since > self.origin_wait_s:
                with self._lock:
                    self._origin.pop(job_id, None)
                msg = (f"origin phone {serial} unreachable for {now - since:.0f} s; retried "
                       "automatically when it reconnects")
                self.journal.finish_job(job_id, JobState.FAILED, error=msg)
                self._emit(JobFailed(job=job_id, error=msg))
        try:
            for serial in sorted(present):
                for job in self.journal.unreachable_failed_jobs(serial):
                    self.journal.reopen_job(job.id)
                    again.append((job.id, f"origin phone {serial} is back"))
        except AdbflowError:      # the journal's disk may be the problem: next refresh
            pass
        if laptop and writable(self.data_dir) is None:
            with self._lock:
                back = sorted(self._laptop)
                self._laptop.clear()
            again += [(j, "laptop storage writable again") for j in back]
        for job_id, why in again:
            self._emit(JobRequeued(job=job_id, reason=why))
            self._submit(job_id)
        return [j for j, _ in again]
