"""Jobs run on a small pool of worker threads fed by a queue.

Why daemon threads: on Ctrl-C / kill the process exits without waiting for device calls;
unfinished attempts are redone on the next start (the journal says which). A job id is
queued at most once at a time (`submit` is idempotent while it is pending).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from adbflow.errors import AdbflowError, JournalReplaced
from adbflow.runtime.dispatcher import Interrupted

log = logging.getLogger("adbflow.runtime.workers")


class JobRunner:
    """`submit(job_id)` -> `process(job_id)` on one of `concurrency` threads."""

    def __init__(self, process: Callable[[int], Any], *, concurrency: int,
                 stop: threading.Event) -> None:
        self._process = process
        self.concurrency = concurrency
        self._stop = stop
        self._queue: queue.Queue[int] = queue.Queue()
        self._workers: list[threading.Thread] = []
        self._pending: set[int] = set()
        self._pending_cv = threading.Condition()
        self.fatal: AdbflowError | None = None    # stops everything (journal replaced)

    def start(self) -> None:
        while len(self._workers) < max(1, self.concurrency):
            t = threading.Thread(target=self._worker, daemon=True,
                                 name=f"job-worker-{len(self._workers)}")
            t.start()
            self._workers.append(t)

    def _worker(self) -> None:
        while not self._stop.is_set():
            try:
                job_id = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
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
                with self._pending_cv:
                    self._pending.discard(job_id)
                    self._pending_cv.notify_all()

    def submit(self, job_id: int) -> None:
        with self._pending_cv:
            if job_id in self._pending:
                return
            self._pending.add(job_id)
        self.start()
        self._queue.put(job_id)

    def join(self, timeout: float = 1.0) -> None:
        """After stop: give the workers `timeout` seconds in all to finish their step."""
        deadline = time.monotonic() + timeout
        for t in self._workers:
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    def wait_idle(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._pending_cv:
            while self._pending:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._pending_cv.wait(timeout=0.5 if left is None else min(0.5, left))
        return True
