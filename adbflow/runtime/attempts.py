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

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from adbflow.errors import (  # noqa: F401 - defined in adbflow.errors
    AdbError,
    AdbflowError,
    AdbTimeoutError,
    DeviceUnavailableError,
    JobError,
    LaptopFault,
    LeaseLost,
    OriginUnreachable,
    ParseError,
    PictureChanging,
    PictureSuperseded,
    ResidentServerError,
    SlotBusy,
    StageExhausted,
)
from adbflow.runtime.dispatcher import (
    Interrupted,
    NoDevice,
    QuarantineBoard,
    sleep_or_stop,
)
from adbflow.runtime.events import Emit, StageFailed, StageFinished, StageStarted
from adbflow.runtime.journal import AttemptAbandoned, JobRecord, Journal, StageAlreadyDone
from adbflow.runtime.laptop import fault_from_os, laptop_cause
from adbflow.runtime.retry import RetryPolicy

MAX_FREE_RETRIES = 100   # busy / lost leases, dropped phones, abandoned commits, origin blips per stage run


class OriginWatch(Protocol):
    """Whether the origin phone is listed (the pipeline's inventory), and a bounded wait."""

    def present(self, serial: str) -> bool: ...

    def wait_present(self, serial: str, seconds: float) -> bool: ...


def error_kind(exc: BaseException) -> str:
    """Short machine-readable reason of a failed attempt (journal column error_kind)."""
    if isinstance(exc, JobError):
        return "input"
    if isinstance(exc, SlotBusy):
        return "busy"
    if isinstance(exc, LeaseLost):
        return "lease"
    if isinstance(exc, ResidentServerError):     # resident-hang, resident-start, ...
        return exc.kind or "resident"
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


def uncounted_kind(exc: BaseException, serial: str | None, *, origin_bound: bool) -> str | None:
    """The journal kind of a device-side failure that must not use up the job's attempts
    (journal.UNCOUNTED_KINDS), or None when it counts. Why these two: a phone that leaves
    adb mid-attempt (`dropped`: cable, Wi-Fi, reboot) or a fleet whose every usable phone
    is another orchestrator's (`busy`) says nothing against the picture; counting them
    failed pictures under ordinary churn (the two-orchestrator test lost one to three
    disconnects). A dropped phone is left out for the rest of the stage's run, so this
    stays bounded by the fleet. Stages bound to the origin phone wait for it instead
    (`unreachable`), so they are not handled here."""
    if isinstance(exc, NoDevice) and exc.leased_elsewhere:
        return "busy"
    if isinstance(exc, DeviceUnavailableError) and serial and not origin_bound:
        return "dropped"
    return None


@dataclass
class Attempt:
    """Mutable facts of one running attempt (the serial is known only after the bid)."""

    id: int
    excluded: set[str]
    serial: str | None = None
    quarantined: list[str] = field(default_factory=list)   # held out of the winning bid round


StageBody = Callable[[JobRecord, Attempt], dict[str, Any]]


def _laptop_failed(journal: Journal, attempt_id: int, fault: LaptopFault) -> None:
    """Best effort: the journal may be on the very disk that failed."""
    with contextlib.suppress(AdbflowError):
        journal.fail_attempt(attempt_id, str(fault), kind="laptop")


def run_stage(job: JobRecord, stage: str, body: StageBody, *, journal: Journal,
              retry: RetryPolicy, board: QuarantineBoard, emit: Emit,
              stop: threading.Event, origin: OriginWatch | None = None,
              origin_retry_s: float = 10.0) -> dict[str, Any]:
    """Bounded attempts of one stage. Committed output -> returned without running.

    Not counted against the budget, no quarantine strike (none is the phone's fault):
    a slot leased by another orchestrator, on the winner or on every usable phone (`busy`),
    a lease lost while running (`lease`: the output is discarded), a commit refused because
    another process ended the attempt, and, for stages bound to the origin phone (`origin`
    given), that phone being gone (`unreachable`: waited for `origin_retry_s`, then
    OriginUnreachable parks the job). Not counted either, but struck and left out for this
    run: a worker phone that left adb mid-attempt (`dropped`).
    A laptop storage fault raises LaptopFault (the job waits, nothing failed)."""
    done = journal.stage_output(job.id, stage)
    if done is not None:
        return done
    previous = journal.failed_attempts(job.id, stage)
    excluded = {a.serial for a in previous if a.serial}
    reasons = [f"{a.serial or '-'}: {a.error}" for a in previous]
    budget = retry.budget(len(previous))
    n = free = 0

    def free_retry(att: Attempt, exc: AdbflowError, kind: str, exhausted: str,
                   hint: str) -> None:
        """A failure that does not count (journal.UNCOUNTED_KINDS): journaled, announced,
        retried after a moment; the run's free retries stop at MAX_FREE_RETRIES."""
        nonlocal free
        journal.fail_attempt(att.id, str(exc), kind=kind)
        emit(StageFailed(job=job.id, stage=stage, serial=att.serial, error=str(exc),
                         kind=kind, final=False))
        free += 1
        if free > MAX_FREE_RETRIES:
            raise StageExhausted(f"{stage}: {exhausted}: {exc}", hint=hint) from exc
        sleep_or_stop(stop, 0.1)

    while n < budget:
        if stop.is_set():
            raise Interrupted("stopping")
        att = Attempt(journal.begin_attempt(job.id, stage, None), excluded)
        emit(StageStarted(job=job.id, stage=stage, attempt=len(previous) + n + free + 1))
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
        except LaptopFault as exc:
            _laptop_failed(journal, att.id, exc)
            raise
        except (PictureSuperseded, PictureChanging) as exc:   # the pipeline re-pulls / skips
            journal.fail_attempt(att.id, str(exc), kind="superseded")
            raise
        except (SlotBusy, LeaseLost) as exc:
            # Another orchestrator uses that phone (busy), or took the slot over while we
            # ran (lost: our output may be its picture's, discarded): bid again.
            free_retry(att, exc, error_kind(exc), "the slot leases kept failing",
                       "another orchestrator holds the phones; retry later")
            continue
        except (AdbError, ParseError, NoDevice) as exc:
            cause = laptop_cause(exc)
            if cause is not None:     # our disk behind an adb error: not the phone's
                fault = fault_from_os(cause, cause.filename)
                _laptop_failed(journal, att.id, fault)
                raise fault from exc
            if (origin is not None and job.source == "device"
                    and isinstance(exc, (DeviceUnavailableError, AdbTimeoutError))
                    and not origin.present(job.serial)):
                # The only phone that has the picture is gone: wait a little, else park.
                journal.fail_attempt(att.id, str(exc), kind="unreachable")
                emit(StageFailed(job=job.id, stage=stage, serial=job.serial, error=str(exc),
                                 kind="unreachable", final=False))
                free += 1
                if free <= MAX_FREE_RETRIES and origin.wait_present(job.serial,
                                                                    origin_retry_s):
                    continue
                raise OriginUnreachable(job.serial, str(exc)) from exc
            free_kind = uncounted_kind(exc, att.serial, origin_bound=origin is not None)
            if free_kind is not None:
                if free_kind == "dropped" and att.serial:
                    excluded.add(att.serial)       # not back in this run, and struck
                    board.strike(att.serial, error_kind(exc), stage, job.id, str(exc))
                free_retry(att, exc, free_kind, "no phone stayed free and connected",
                           "check `adbflow devices`; retry later")
                continue
            kind = error_kind(exc)
            journal.fail_attempt(att.id, str(exc), kind=kind)
            reasons.append(f"{att.serial or '-'}: {kind}: {exc}")
            if att.serial:
                excluded.add(att.serial)
                board.strike(att.serial, kind, stage, job.id, str(exc))
            emit(StageFailed(job=job.id, stage=stage, serial=att.serial, error=str(exc),
                             kind=kind, final=False))
            n += 1
            if n < budget:
                sleep_or_stop(stop, retry.pause_after(n - 1))
            continue
        try:
            journal.commit_attempt(att.id, out)
        except StageAlreadyDone:      # another run committed it first: keep that result
            out = journal.stage_output(job.id, stage) or out
        except AttemptAbandoned as exc:   # ended by another process: run it again
            emit(StageFailed(job=job.id, stage=stage, serial=att.serial, error=str(exc),
                             kind="abandoned", final=False))
            free += 1
            if free > MAX_FREE_RETRIES:
                raise StageExhausted(f"{stage}: {exc}") from exc
            continue
        if att.serial is not None and att.serial in board:
            board.release([att.serial], f"{stage} succeeded")
        emit(StageFinished(job=job.id, stage=stage, serial=att.serial, output=out))
        return out
    raise StageExhausted(f"{stage} failed after {retry.attempts} attempts: "
                         + " | ".join(reasons[-retry.attempts:]),
                         hint="see `adbflow show JOB` for every attempt")
