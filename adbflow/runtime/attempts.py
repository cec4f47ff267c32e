"""The bounded attempt loop of one stage: journal each attempt, classify its failure,
re-bid elsewhere or give up.

Why this shape: every attempt is journaled before it starts and committed (with its
output) in one transaction when it succeeds. A device fault (disconnect, timeout, non-zero
exit, unparsable output) fails the attempt and the stage is re-bid without that device;
bad input (JobError) fails the job at once, since no device can fix it. After a kill -9
the journal says which stages have a committed result; the others are simply run again
(stage bodies are idempotent).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from adbflow.errors import (
    AdbError,
    AdbflowError,
    AdbTimeoutError,
    DeviceUnavailableError,
    JobError,
    ParseError,
)
from adbflow.runtime.dispatcher import (
    Interrupted,
    NoDevice,
    QuarantineBoard,
    sleep_or_stop,
)
from adbflow.runtime.events import Emit, StageFailed, StageFinished, StageStarted
from adbflow.runtime.journal import JobRecord, Journal, StageAlreadyDone
from adbflow.runtime.retry import RetryPolicy


class StageExhausted(AdbflowError):
    """A stage ran out of attempts; the message lists every attempt's reason."""


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
class Attempt:
    """Mutable facts of one running attempt (the serial is known only after the bid)."""

    id: int
    excluded: set[str]
    serial: str | None = None
    quarantined: list[str] = field(default_factory=list)   # held out of the winning bid round


StageBody = Callable[[JobRecord, Attempt], dict[str, Any]]


def run_stage(job: JobRecord, stage: str, body: StageBody, *, journal: Journal,
              retry: RetryPolicy, board: QuarantineBoard, emit: Emit,
              stop: threading.Event) -> dict[str, Any]:
    """Bounded attempts of one stage. Committed output -> returned without running."""
    done = journal.stage_output(job.id, stage)
    if done is not None:
        return done
    previous = journal.failed_attempts(job.id, stage)
    excluded = {a.serial for a in previous if a.serial}
    reasons = [f"{a.serial or '-'}: {a.error}" for a in previous]
    budget = retry.budget(len(previous))
    for n in range(budget):
        if stop.is_set():
            raise Interrupted("stopping")
        att = Attempt(journal.begin_attempt(job.id, stage, None), excluded)
        emit(StageStarted(job=job.id, stage=stage, attempt=len(previous) + n + 1))
        try:
            out = body(job, att)
        except Interrupted:
            journal.fail_attempt(att.id, "interrupted (orchestrator stopping)",
                                 kind="interrupted")
            raise
        except JobError as exc:
            journal.fail_attempt(att.id, str(exc), kind="input")
            emit(StageFailed(job=job.id, stage=stage, serial=att.serial, error=str(exc),
                             final=True))
            raise
        except (AdbError, ParseError, NoDevice) as exc:
            kind = error_kind(exc)
            journal.fail_attempt(att.id, str(exc), kind=kind)
            reasons.append(f"{att.serial or '-'}: {kind}: {exc}")
            if att.serial:
                excluded.add(att.serial)
                board.strike(att.serial, kind, stage, job.id, str(exc))
            emit(StageFailed(job=job.id, stage=stage, serial=att.serial, error=str(exc),
                             kind=kind, final=False))
            if n + 1 < budget:
                sleep_or_stop(stop, retry.pause_after(n))
            continue
        try:
            journal.commit_attempt(att.id, out)
        except StageAlreadyDone:      # another run committed it first: keep that result
            out = journal.stage_output(job.id, stage) or out
        if att.serial is not None and att.serial in board:
            board.release([att.serial], f"{stage} succeeded")
        emit(StageFinished(job=job.id, stage=stage, serial=att.serial, output=out))
        return out
    raise StageExhausted(f"{stage} failed after {retry.attempts} attempts: "
                         + " | ".join(reasons[-retry.attempts:]),
                         hint="see `adbflow show JOB` for every attempt")
