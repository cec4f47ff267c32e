"""What the pipeline tells its views: one frozen dataclass per kind of event.

Why types instead of dicts: a view picks its handler by class (`match ev: case JobAdded():`)
and a type checker sees a misspelt field; the 15 string kinds of the old dicts were only
checked by the tests that happened to read them. `to_json()` gives exactly the dict the
pipeline used to emit (`{"type": KIND, "t": ..., **fields}`, same names, same order), so
scripts reading events keep working; it is built with `dataclasses.asdict`.

Every event carries `t` (time.time() when it was emitted). Pieces of the pipeline receive
an `Emit` callable and never call back into the pipeline.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

log = logging.getLogger("adbflow.runtime.events")


@dataclass(frozen=True)
class Event:
    """Base of every pipeline event. `type` is the kind string of the JSON form."""

    type: ClassVar[str] = ""
    #: fields left out of the JSON form when None (the old dicts did not always have them)
    omit_if_none: ClassVar[tuple[str, ...]] = ()

    def to_json(self) -> dict[str, Any]:
        body = dataclasses.asdict(self)
        t = body.pop("t")
        for name in self.omit_if_none:
            if body.get(name) is None:
                body.pop(name, None)
        return {"type": self.type, "t": t, **body}


def _now() -> float:
    return time.time()


# ------------------------------------------------------------------ jobs

@dataclass(frozen=True)
class JobAdded(Event):
    type: ClassVar[str] = "job_added"
    job: int
    serial: str
    name: str
    how: str
    t: float = field(default_factory=_now, kw_only=True)


@dataclass(frozen=True)
class JobResumed(Event):
    """A job a stopped run left unfinished is queued again."""

    type: ClassVar[str] = "job_resumed"
    job: int
    serial: str
    name: str
    t: float = field(default_factory=_now, kw_only=True)


@dataclass(frozen=True)
class JobStarted(Event):
    type: ClassVar[str] = "job_started"
    job: int
    serial: str
    name: str
    t: float = field(default_factory=_now, kw_only=True)


@dataclass(frozen=True)
class JobDone(Event):
    type: ClassVar[str] = "job_done"
    job: int
    result: dict[str, Any]
    t: float = field(default_factory=_now, kw_only=True)


@dataclass(frozen=True)
class JobSkipped(Event):
    """Same content as an earlier job (only the timestamp changed)."""

    type: ClassVar[str] = "job_skipped"
    job: int
    error: str
    t: float = field(default_factory=_now, kw_only=True)


@dataclass(frozen=True)
class JobFailed(Event):
    type: ClassVar[str] = "job_failed"
    job: int
    error: str
    t: float = field(default_factory=_now, kw_only=True)


# ------------------------------------------------------------------ stages

@dataclass(frozen=True)
class StageStarted(Event):
    type: ClassVar[str] = "stage_started"
    job: int
    stage: str
    attempt: int
    t: float = field(default_factory=_now, kw_only=True)


@dataclass(frozen=True)
class StageFinished(Event):
    """The stage's output is committed (JSON kind `stage_done`)."""

    type: ClassVar[str] = "stage_done"
    job: int
    stage: str
    serial: str | None
    output: dict[str, Any]
    t: float = field(default_factory=_now, kw_only=True)


@dataclass(frozen=True)
class StageFailed(Event):
    """One attempt failed. `final`: bad input, the job fails now (no `kind` then);
    otherwise the stage is re-bid without that device."""

    type: ClassVar[str] = "stage_failed"
    omit_if_none: ClassVar[tuple[str, ...]] = ("kind",)
    job: int
    stage: str
    serial: str | None
    error: str
    kind: str | None = None
    final: bool = False
    t: float = field(default_factory=_now, kw_only=True)


@dataclass(frozen=True)
class BidRound(Event):
    """A bid round awarded a stage (JSON kind `bid`); `bids` are summaries, `quarantined`
    the serials held out of this round."""

    type: ClassVar[str] = "bid"
    stage: str
    winner: str
    reason: str
    bids: list[dict[str, Any]]
    quarantined: list[str]
    t: float = field(default_factory=_now, kw_only=True)


# ------------------------------------------------------------------ devices & session

@dataclass(frozen=True)
class DeviceQuarantined(Event):
    type: ClassVar[str] = "device_quarantined"
    serial: str
    job: int
    stage: str
    seconds: float
    until: float
    strikes: int
    kind: str
    error: str
    t: float = field(default_factory=_now, kw_only=True)


@dataclass(frozen=True)
class DeviceReleased(Event):
    type: ClassVar[str] = "device_released"
    serial: str
    reason: str
    t: float = field(default_factory=_now, kw_only=True)


@dataclass(frozen=True)
class DeviceError(Event):
    """The watcher could not list or stream a device (it keeps trying)."""

    type: ClassVar[str] = "device_error"
    serial: str
    error: str
    t: float = field(default_factory=_now, kw_only=True)


@dataclass(frozen=True)
class Recovered(Event):
    """Attempts a stopped run left `running` were marked abandoned."""

    type: ClassVar[str] = "recovered"
    attempts: int
    t: float = field(default_factory=_now, kw_only=True)


@dataclass(frozen=True)
class Watching(Event):
    type: ClassVar[str] = "watching"
    devices: list[str]
    t: float = field(default_factory=_now, kw_only=True)


@dataclass(frozen=True)
class GateDecided(Event):
    """A flow gate decided whether `stage` runs for a job (also in the stage's journal row)."""

    type: ClassVar[str] = "gate"
    job: int
    stage: str
    run: bool
    reason: str
    t: float = field(default_factory=_now, kw_only=True)


@dataclass(frozen=True)
class DriftChanged(Event):
    """A flow's drift window on `stage` fell below (raised) or recovered above its level."""

    type: ClassVar[str] = "drift"
    stage: str
    state: str          # "raised" | "cleared"
    mean: float
    level: float
    t: float = field(default_factory=_now, kw_only=True)


# ------------------------------------------------------------------ reliability (issue 14)

@dataclass(frozen=True)
class JobWaiting(Event):
    """The job's origin phone is unreachable: the job is parked (pending) and resubmitted
    when the phone is listed again."""

    type: ClassVar[str] = "job_waiting"
    job: int
    serial: str
    error: str
    t: float = field(default_factory=_now, kw_only=True)


@dataclass(frozen=True)
class JobOwnedElsewhere(Event):
    """Another live process (an `adbflow run` of the same picture) works on the job: this
    one waits for its outcome instead of running the stages twice."""

    type: ClassVar[str] = "job_owned_elsewhere"
    job: int
    owner: str
    t: float = field(default_factory=_now, kw_only=True)


@dataclass(frozen=True)
class JobClaimedElsewhere(Event):
    """Another orchestrator holds the picture's claim at its origin phone: the job did not
    start; it stays pending and is looked at again in `left_s` (when the claim would
    expire). Not a failure."""

    type: ClassVar[str] = "job_claimed_elsewhere"
    job: int
    serial: str
    owner: str
    left_s: float
    t: float = field(default_factory=_now, kw_only=True)


@dataclass(frozen=True)
class JobRequeued(Event):
    """A parked job is queued again: its origin phone is back, or the laptop's disk takes
    writes again."""

    type: ClassVar[str] = "job_requeued"
    job: int
    reason: str
    t: float = field(default_factory=_now, kw_only=True)


@dataclass(frozen=True)
class LaptopFaultSeen(Event):
    """The laptop's storage failed (disk full, read-only, permissions) at `path`; the job
    (None: a picture not yet journaled) waits. `first`: the first job waiting on it."""

    type: ClassVar[str] = "laptop_fault"
    job: int | None
    path: str
    error: str
    first: bool
    t: float = field(default_factory=_now, kw_only=True)


@dataclass(frozen=True)
class PartialsCleaned(Event):
    """Temp files a killed run left behind were removed at start."""

    type: ClassVar[str] = "cleaned"
    files: list[str]
    count: int
    t: float = field(default_factory=_now, kw_only=True)


EVENT_TYPES: tuple[type[Event], ...] = (
    JobAdded, JobResumed, JobStarted, JobDone, JobSkipped, JobFailed, StageStarted,
    StageFinished, StageFailed, BidRound, DeviceQuarantined, DeviceReleased, DeviceError,
    Recovered, Watching, GateDecided, DriftChanged, JobWaiting, JobOwnedElsewhere,
    JobRequeued, LaptopFaultSeen, PartialsCleaned, JobClaimedElsewhere)

Emit = Callable[[Event], None]


class Emitter:
    """The `emit` callable handed to every piece. `sink` may be swapped at any time (views
    attach after the pipeline is built); a broken view must not break the pipeline."""

    def __init__(self, sink: Callable[[Event], None] | None = None) -> None:
        self.sink: Callable[[Event], None] = sink or (lambda ev: None)

    def __call__(self, event: Event) -> None:
        try:
            self.sink(event)
        except Exception:  # noqa: BLE001 - a view's bug is logged, the job goes on
            log.exception("event callback failed")
