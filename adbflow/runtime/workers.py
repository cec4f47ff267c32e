"""Jobs run on worker threads, as many at once as the fleet has free stage slots.

Why the bound comes from the fleet, not a constant: sharing compute means N phones finish N
times the work; a fixed pool of 4 threads keeps at most 4 of 16 phones busy. `capacity()`
says how many jobs may be in flight now (the pipeline sums the device slots of its
profiles over the inventory, plus a little headroom for the pull/convert/bid parts of a
job that hold no slot); a job beyond that waits here, not on a phone (back-pressure).

Why the in-memory queue is capped: a burst of thousands of pictures must not become
thousands of queued objects. The journal already holds every job (state `pending`), so
when the queue is full a submitted id is dropped here and `backlog(exclude, limit)` — the
journal's pending jobs — refills the queue as jobs finish. A job id is queued or running
at most once at a time (`submit` is idempotent), and `process` itself skips finished jobs,
so refilling from the journal never runs a job twice.

Why daemon threads: on Ctrl-C / kill the process exits without waiting for device calls;
unfinished attempts are redone on the next start (the journal says which).
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from adbflow.errors import AdbflowError, JournalReplaced
from adbflow.runtime.dispatcher import Interrupted

log = logging.getLogger("adbflow.runtime.workers")

DEFAULT_QUEUE_MAX = 32     # ids kept in memory beyond the running jobs (the rest: journal)
MAX_THREADS = 256          # a hard ceiling whatever the fleet says (threads cost memory)

_EXIT = -1                 # _take: the calling thread ends (job ids are >= 1)

#: backlog(exclude, limit) -> up to `limit` pending job ids not in `exclude`, oldest first
Backlog = Callable[[set[int], int], Iterable[int]]


class JobRunner:
    """`submit(job_id)` -> `process(job_id)` on a worker thread, at most `capacity()` at
    once; `capacity` may be an int (the old fixed pool) or a callable read on every
    dispatch (so devices that join or leave change it)."""

    def __init__(self, process: Callable[[int], Any], *,
                 concurrency: int | Callable[[], int], stop: threading.Event,
                 queue_max: int = DEFAULT_QUEUE_MAX, backlog: Backlog | None = None) -> None:
        self._process = process
        self._capacity = concurrency
        self._stop = stop
        self.queue_max = max(1, queue_max)
        self._backlog = backlog
        self._queue: collections.deque[int] = collections.deque()
        self._queued: set[int] = set()
        self._running: set[int] = set()
        self._overflow = False          # ids were dropped: the journal holds them
        self._threads = 0
        self._cv = threading.Condition()
        self.peak_running = 0           # for benchmarks and tests: the most jobs at once
        self.fatal: AdbflowError | None = None    # stops everything (journal replaced)
        self._all: list[threading.Thread] = []    # every worker started (for join)

    # ------------------------------------------------------------------ capacity
    @property
    def concurrency(self) -> int:
        """Jobs allowed in flight right now (>= 1)."""
        cap = self._capacity() if callable(self._capacity) else self._capacity
        return max(1, min(MAX_THREADS, int(cap)))

    def stats(self) -> dict[str, int]:
        """Queue depth, running jobs and threads (for views, benchmarks and tests)."""
        with self._cv:
            return {"queued": len(self._queue), "running": len(self._running),
                    "threads": self._threads, "peak_running": self.peak_running,
                    "overflow": int(self._overflow)}

    # ------------------------------------------------------------------ threads
    def start(self) -> None:
        """Make sure there are threads for the work at hand (lazily: none while idle)."""
        cap = self.concurrency
        with self._cv:
            want = min(cap, len(self._running) + len(self._queue) + (1 if self._overflow else 0))
            while self._threads < want:
                self._threads += 1
                t = threading.Thread(target=self._worker, daemon=True,
                                     name=f"job-worker-{self._threads}")
                self._all = [w for w in self._all if w.is_alive()] + [t]
                t.start()
            self._cv.notify_all()

    def _take(self, cap: int) -> int | None:
        """The next job id once a slot is free; None: look again (refill, capacity);
        _EXIT: this thread should end (more threads than slots, or nothing to do)."""
        with self._cv:
            if self._stop.is_set():
                self._threads -= 1
                return _EXIT
            if self._queue and len(self._running) < cap:
                job_id = self._queue.popleft()
                self._queued.discard(job_id)
                self._running.add(job_id)
                self.peak_running = max(self.peak_running, len(self._running))
                return job_id
            if self._threads > cap or (not self._queue and not self._overflow):
                self._threads -= 1
                self._cv.notify_all()
                return _EXIT
            self._cv.wait(timeout=0.5)
            return None

    def _worker(self) -> None:
        while True:
            self._refill()
            job_id = self._take(self.concurrency)
            if job_id is None:
                continue
            if job_id == _EXIT:
                return
            try:
                self._process(job_id)
            except Interrupted:
                pass
            except JournalReplaced as exc:   # nothing may be written any more: stop all
                self.fatal = exc
                self._stop.set()
            except Exception:  # noqa: BLE001 - process() records failures itself
                log.exception("job %s crashed its worker", job_id)
            finally:
                with self._cv:
                    self._running.discard(job_id)
                    self._cv.notify_all()

    def _refill(self) -> None:
        """Top the queue up from the journal when ids were dropped for lack of room."""
        if self._backlog is None:
            return
        with self._cv:
            if not self._overflow:
                return
            room = self.queue_max - len(self._queue)
            exclude = self._queued | self._running
        if room <= 0:
            return
        try:
            ids = list(self._backlog(exclude, room))
        except Exception:  # noqa: BLE001 - the journal is busy: try again on the next job
            log.exception("refilling the job queue from the journal failed")
            return
        with self._cv:
            for job_id in ids:
                if job_id not in self._queued and job_id not in self._running \
                        and len(self._queue) < self.queue_max:
                    self._queue.append(job_id)
                    self._queued.add(job_id)
            if len(ids) < room:
                self._overflow = False
            self._cv.notify_all()

    # ------------------------------------------------------------------ API
    def submit(self, job_id: int, *, spill: bool = True) -> None:
        """Queue a job (no-op when it is already queued or running). With a backlog and a
        full queue the id stays only in the journal and is taken from there later;
        `spill=False` for a job the backlog does not list (kept in memory instead)."""
        with self._cv:
            if job_id in self._queued or job_id in self._running:
                return
            if spill and self._backlog is not None and len(self._queue) >= self.queue_max:
                self._overflow = True
            else:
                self._queue.append(job_id)
                self._queued.add(job_id)
        self.start()

    def join(self, timeout: float = 1.0) -> None:
        """After stop: give the workers `timeout` seconds in all to finish their step."""
        deadline = time.monotonic() + timeout
        for t in list(self._all):
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    def wait_idle(self, timeout: float | None = None) -> bool:
        """True once nothing is queued, running or left in the journal backlog."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._cv:
                if not (self._queue or self._running or self._overflow):
                    return True
                if self._stop.is_set() and not self._running:
                    return False            # stopping: what is queued resumes next start
                orphaned = self._threads == 0      # e.g. only the backlog is left to drain
                if not orphaned:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._cv.wait(timeout=0.5 if left is None else min(0.5, left))
            if orphaned:
                self.start()
                if deadline is not None and time.monotonic() > deadline:
                    return False
                time.sleep(0.01)
