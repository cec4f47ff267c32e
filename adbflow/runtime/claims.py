"""Picture claims at the origin phone: each picture processed by one orchestrator.

Why on the phone: orchestrators with different data dirs (two laptops' `watch`, later the
phones' own orchestrators) do not share a journal; each detects every picture. The one
place they all reach is the picture's own phone, so the claim lives there, with the same
record, rules and script as the slot leases (`adbflow_claim`, README "Picture claims"),
and the claimant's short result is recorded under it: a second orchestrator learns that
the picture is done, by whom, and what came out, without a laptop-to-laptop channel.

The decisions are pure functions (`decide`, `result_record`, `parse_result_record`); the
device I/O is `PictureClaims` (one round trip per operation, `adbflow.device.lease`), and
renewal while the job runs is the slot leases' own `Renewer`.
"""
from __future__ import annotations

import contextlib
import enum
import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from adbflow.device import lease
from adbflow.device.lease_rules import Verdict, claim_key
from adbflow.device.port import DevicePort
from adbflow.errors import AdbflowError, OriginUnreachable

DEFAULT_TTL_S = 30.0
MAX_RECORD = 240
RECORD_VERSION = "1"
_WORD = re.compile(r"[^a-z0-9]+")
_FIELD = re.compile(r"^[a-z]{1,8}$")


class Step(str, enum.Enum):
    """What one claim answer means for the job."""

    RUN = "run"                        # granted: ours, process it
    WAIT = "wait"                      # another live orchestrator works on it
    TAKE_OVER = "take_over"            # a stale claim of ours / of a dead local adbflow
    DONE_HERE = "done_here"            # completed by this data dir's own job (crash after)
    DONE_ELSEWHERE = "done_elsewhere"  # completed by another orchestrator


class ClaimBusy(AdbflowError):
    """Another orchestrator holds the picture's claim: the job does not start; it stays
    pending and is looked at again when the claim would expire (not a failure)."""

    def __init__(self, serial: str, owner: str | None, left_s: float) -> None:
        self.serial = serial
        self.owner = owner
        self.left_s = left_s
        super().__init__(f"picture claimed at {serial} by {owner or '?'} for {left_s:.1f} s "
                         "more", hint="another orchestrator processes it; looked at again "
                         "when its claim would expire")


class DoneElsewhere(AdbflowError):
    """Another orchestrator completed the picture: its result, as recorded on the phone."""

    def __init__(self, serial: str, owner: str | None, record: Mapping[str, str],
                 raw: str) -> None:
        self.serial = serial
        self.owner = owner
        self.record = dict(record)
        self.raw = raw
        super().__init__(f"done elsewhere: by {owner or '?'} (label "
                         f"{record.get('label', '?')}, {record.get('out', '?')})",
                         hint="nothing reprocessed; its result is recorded on the phone")


def key_of(job: Any) -> str:
    """The claim name of a device job's picture (path, inode, size, mtime)."""
    return claim_key(job.path, int(getattr(job, "ino", 0) or 0), int(job.size),
                     float(job.mtime))


def _word(text: Any, limit: int) -> str:
    """Lower-case ASCII letters and digits, each run of anything else one `_`, none at
    either end. Non-ASCII is a separator before lower-casing (`"İ".lower()` is two
    characters in Python, one in the phone's mksh): the mesh's shell twin, orch.sh's
    `_label_word`, must give the same word for the same label."""
    ascii_only = str(text or "").encode("ascii", "replace").decode("ascii")
    return _WORD.sub("_", ascii_only.lower()).strip("_")[:limit] or "-"


def label_word(label: Any) -> str:
    """A label as the result record stores it (`Egyptian cat` -> `egyptian_cat`)."""
    return _word(label, 40)


def result_record(result: Mapping[str, Any], *, dir_id: str, job_id: int,
                  outcome: str = "done") -> str:
    """The short, sanitized result written under a completed claim: who (data dir id and
    job id), the outcome, the top label and its score, the story's sha256 (16 hex) and its
    first words. Every value is reduced to `[a-z0-9_.]` and the whole bounded to 240
    characters (device text, the labels and the story, never reaches the phone raw)."""
    labels = result.get("labels") or []
    top = labels[0] if labels else {}
    story = str(result.get("story") or "")
    first = story.strip().splitlines()[0] if story.strip() else ""
    try:
        score = f"{float(top.get('score', 0.0)):.3f}"
    except (TypeError, ValueError):
        score = "0"
    parts = [f"v={RECORD_VERSION}", f"dir={_word(dir_id, 16)}", f"job={int(job_id)}",
             f"out={_word(outcome, 12)}", f"label={label_word(top.get('name'))}",
             f"score={score}",
             f"story={hashlib.sha256(story.encode('utf-8', 'replace')).hexdigest()[:16]}",
             f"line={_word(first, 60)}"]
    return ",".join(parts)[:MAX_RECORD]


def parse_result_record(raw: str | None) -> dict[str, str]:
    """`k=v,...` back into a dict; anything malformed is left out (it is phone text)."""
    out: dict[str, str] = {}
    for part in (raw or "").split(",")[:16]:
        k, sep, v = part.partition("=")
        if sep and _FIELD.match(k):
            out[k] = v[:80]
    return out


def decide(verdict: Verdict, owner: str | None, raw_result: str | None, *, me: str,
           dead: bool, dir_id: str, job_id: int) -> Step:
    """One claim answer -> what the job does. `dead`: the holder is a provably dead adbflow
    of this laptop (lease.dead_local_owner)."""
    if verdict is Verdict.GRANTED:
        return Step.RUN
    if verdict is Verdict.BUSY:
        return Step.TAKE_OVER if owner == me or dead else Step.WAIT
    if verdict is Verdict.DONE:
        rec = parse_result_record(raw_result)
        ours = rec.get("dir") == _word(dir_id, 16) and rec.get("job") == str(int(job_id))
        return Step.DONE_HERE if ours else Step.DONE_ELSEWHERE
    raise AdbflowError(f"unexpected claim answer {verdict.value}",
                       hint="check that /data/local/tmp is writable on the phone")


class NoClaim:
    """Stands for a claim this data dir already completed (nothing to renew or release)."""

    lost: str | None = None

    def release(self) -> None:
        pass


@dataclass
class PictureClaims:
    """Claims for one orchestrator process: its owner id (the slot leases' own, so a
    killed adbflow's claims are recognised as stale like its leases), its data dir id."""

    owner: str
    dir_id: str
    ttl_s: float = DEFAULT_TTL_S
    timeout_s: float = 10.0

    def _unreachable(self, device: DevicePort, op: str, exc: Exception) -> OriginUnreachable:
        return OriginUnreachable(device.serial, f"claim {op} failed: {exc}")

    def take(self, device: DevicePort, job: Any) -> lease.DeviceClaim | NoClaim:
        """Claim the job's picture. A DeviceClaim (ours: run the job), NoClaim (this data
        dir completed it already); ClaimBusy, DoneElsewhere; OriginUnreachable when the
        phone does not answer (the job waits for it like its pull would)."""
        key = key_of(job)
        for _ in range(3):
            try:
                got = lease.claim_acquire(device, key, self.owner, ttl_s=self.ttl_s,
                                          timeout=self.timeout_s)
            except AdbflowError as exc:
                raise self._unreachable(device, "acquire", exc) from exc
            if isinstance(got, lease.DeviceClaim):
                return got
            step = decide(got.verdict, got.owner, got.result, me=self.owner,
                          dead=lease.dead_local_owner(got.owner), dir_id=self.dir_id,
                          job_id=job.id)
            if step is Step.DONE_HERE:
                return NoClaim()
            if step is Step.DONE_ELSEWHERE:
                raise DoneElsewhere(device.serial, got.owner,
                                    parse_result_record(got.result), got.result or "")
            if step is Step.WAIT:
                raise ClaimBusy(device.serial, got.owner, got.left_s)
            # TAKE_OVER: our own stale claim (an earlier attempt whose release did not get
            # through) or a killed local adbflow's: release exactly that one, claim again
            with contextlib.suppress(AdbflowError):
                lease.claim_call(device, "release", key, got.owner or "", got.token, 0,
                                 timeout=self.timeout_s)
        raise ClaimBusy(device.serial, None, self.ttl_s)

    @contextlib.contextmanager
    def renewing(self, held: lease.DeviceClaim | NoClaim) -> Iterator[None]:
        """Renew the claim every ttl/3 while the job runs (the slot leases' Renewer)."""
        if isinstance(held, NoClaim):
            yield
            return
        with lease.Renewer(held):
            yield

    def complete(self, device: DevicePort, held: lease.DeviceClaim | NoClaim, job: Any,
                 result: Mapping[str, Any]) -> None:
        """Record the result under the claim; only then may the job be `done` here. Our
        claim lost meanwhile (expired while the phone was away): claim again; granted ->
        complete; done by another -> DoneElsewhere (its result counts); busy -> ClaimBusy.
        OriginUnreachable when the phone does not answer (the job waits, stages kept)."""
        if isinstance(held, NoClaim):
            return
        record = result_record(result, dir_id=self.dir_id, job_id=job.id)
        current: lease.DeviceClaim | NoClaim = held
        for _ in range(3):
            if isinstance(current, NoClaim):
                return
            try:
                r = current.complete(record)
            except AdbflowError as exc:
                current.released = True           # nothing more to say to it
                raise self._unreachable(device, "complete", exc) from exc
            if r.verdict is Verdict.COMPLETED:
                return
            current.released = True
            current = self.take(device, job)      # raises DoneElsewhere / ClaimBusy
        raise ClaimBusy(device.serial, None, self.ttl_s)
