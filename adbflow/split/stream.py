"""Pipelined split inference for a stream of pictures: head of job n+1 on phone A while the
tail of job n runs on phone B.

Why: for one picture a split only pays when the cut tensor is cheap to move; for a
stream it also puts two phones to work at once, so the rate is set by the busier phone
(plan.period) rather than by the sum. One thread per phone (each phone does one thing at
a time, as it would with one benchmark_model at a time) and a hand-off queue of one job,
so A runs at most one picture ahead of B.

A failure stops the pipeline: the failed job and every job not yet finished run whole
(SplitRunner.run_with_fallback's rule: a phone that still answers), each result says so.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from adbflow.errors import SplitError
from adbflow.split.plan import Candidate
from adbflow.split.run import SplitRunner, StageResult

_DONE = object()


@dataclass
class StreamResult:
    results: list[StageResult]
    wall_s: float
    errors: list[SplitError] = field(default_factory=list)

    @property
    def per_picture_s(self) -> float:
        """Wall time per picture, filling and draining the pipeline included."""
        return self.wall_s / max(1, len(self.results))

    @property
    def steady_per_picture_s(self) -> float | None:
        """Time between consecutive pictures finishing, from the first to the last: the
        stream's rate once the pipeline is full (None with fewer than two results)."""
        ends = sorted(max(t1 for _, t1 in r.marks.values()) for r in self.results if r.marks)
        if len(ends) < 2:
            return None
        return (ends[-1] - ends[0]) / (len(ends) - 1)


def run_sequential(runner: SplitRunner, cand: Candidate, tensors: Sequence[bytes]) -> StreamResult:
    """One job after the other with the same plan (the no-pipeline baseline)."""
    t0 = time.monotonic()
    out = [runner.run_with_fallback(cand, t) for t in tensors]
    return StreamResult(out, time.monotonic() - t0)


def run_pipelined(runner: SplitRunner, cand: Candidate, tensors: Sequence[bytes]) -> StreamResult:
    """Heads on cand.a and tails on cand.b overlapped; results in input order."""
    if not cand.is_split:
        return run_sequential(runner, cand, tensors)
    runner.prepare(cand)
    a, cut_at, b = cand.split_of()
    handoff: queue.Queue = queue.Queue(maxsize=1)
    results: list[StageResult | None] = [None] * len(tensors)
    errors: list[SplitError] = []
    stop = threading.Event()

    def heads() -> None:
        try:
            for i, t in enumerate(tensors):
                if stop.is_set():
                    break
                job = runner.job_name()
                res = StageResult(b"", plan=cand.label)
                try:
                    cut = runner.head(a, cut_at, t, job, res)
                except SplitError as exc:
                    errors.append(exc)
                    stop.set()
                    break
                handoff.put((i, job, res, cut))
        finally:
            handoff.put(_DONE)

    def tails() -> None:
        while True:
            item = handoff.get()
            if item is _DONE:
                return
            i, job, res, cut = item
            if stop.is_set():
                continue
            try:
                res.output = runner.tail(b, cut_at, cut, job, res)
                results[i] = res
            except SplitError as exc:
                errors.append(exc)
                stop.set()

    t0 = time.monotonic()
    ta = threading.Thread(target=heads, name="split-head", daemon=True)
    tb = threading.Thread(target=tails, name="split-tail", daemon=True)
    ta.start()
    tb.start()
    ta.join()
    tb.join()
    for i, r in enumerate(results):
        if r is None:   # the pipeline stopped: this job runs whole where a phone answers
            failure = errors[0] if errors else SplitError("pipeline stopped")
            results[i] = runner.fallback_whole(cand, tensors[i], failure)
    return StreamResult([r for r in results if r is not None], time.monotonic() - t0, errors)
