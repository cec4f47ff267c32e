"""Audits of a mesh run from what the phones recorded: no slot double-booked (from each
worker's lease log), every picture done exactly once (from each orchestrator's job records).

Why from the logs and not from the orchestrators' view: double-booking is a property of
the worker's slot, and only the worker's lease (under its lock, on its own clock) knows who
held it when. worker.sh appends one line per lease step to log/lease.log:

    VERB SLOT TOKEN OWNER NOW_DS END_DS

VERB grant|renew (END = expiry), finish|release (END = NOW: the slot is free again), lost
(the holder learned it had lost the lease; END 0). NOW is the lease's clock read under the
lock (the worker's uptime, deciseconds). A holder killed without a word leaves its last
expiry as the end of its hold. Pure functions over parsed lines: device text is data.
"""
from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

_LINE = re.compile(r"^(grant|renew|finish|release|lost) ([a-z0-9_-]{1,24}) (\d{1,9}) "
                   r"(\S{1,80}) (\d{1,10}) (\d{1,10})$")


class LeaseVerb(str, enum.Enum):
    GRANT = "grant"
    RENEW = "renew"
    FINISH = "finish"
    RELEASE = "release"
    LOST = "lost"


@dataclass(frozen=True)
class LeaseEvent:
    verb: LeaseVerb
    slot: str
    token: int
    owner: str
    now_ds: int
    end_ds: int


@dataclass(frozen=True)
class Hold:
    """One granted lease: from its grant to its release, or to its last expiry."""
    slot: str
    token: int
    owner: str
    start_ds: int
    end_ds: int
    released: bool


@dataclass(frozen=True)
class DoubleBooking:
    slot: str
    first: Hold
    second: Hold
    why: str


def parse_lease_log(text: str) -> list[LeaseEvent]:
    out = []
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if m:
            out.append(LeaseEvent(LeaseVerb(m[1]), m[2], int(m[3]), m[4], int(m[5]), int(m[6])))
    return out


def holds(events: Iterable[LeaseEvent]) -> dict[str, list[Hold]]:
    """Per slot, every granted token's hold, in token order."""
    grants: dict[tuple[str, int], LeaseEvent] = {}
    expiry: dict[tuple[str, int], tuple[int, int]] = {}    # (written at, expires)
    release: dict[tuple[str, int], int] = {}
    dup: list[LeaseEvent] = []
    for ev in events:
        k = (ev.slot, ev.token)
        if ev.verb is LeaseVerb.GRANT:
            if k in grants:
                dup.append(ev)
            grants.setdefault(k, ev)
        if ev.verb in (LeaseVerb.GRANT, LeaseVerb.RENEW):
            # the last write wins (a renewal may shorten a reservation's first expiry)
            if ev.now_ds >= expiry.get(k, (-1, 0))[0]:
                expiry[k] = (ev.now_ds, ev.end_ds)
        elif ev.verb in (LeaseVerb.FINISH, LeaseVerb.RELEASE):
            release[k] = min(release.get(k, ev.now_ds), ev.now_ds)
    out: dict[str, list[Hold]] = {}
    for (slot, tok), g in grants.items():
        rel = release.get((slot, tok))
        out.setdefault(slot, []).append(Hold(slot, tok, g.owner, g.now_ds,
                                             rel if rel is not None else expiry[(slot, tok)][1],
                                             rel is not None))
    for ev in dup:                        # the same token granted twice: two holders
        out[ev.slot].append(Hold(ev.slot, ev.token, ev.owner, ev.now_ds, ev.end_ds, False))
    for hs in out.values():
        hs.sort(key=lambda h: (h.token, h.start_ds))
    return out


def double_bookings(events: Iterable[LeaseEvent]) -> list[DoubleBooking]:
    """Holds of one slot that overlap in time, or tokens that do not increase with time
    (a fencing token reused or granted out of order)."""
    bad = []
    for slot, hs in holds(events).items():
        for a, b in zip(hs, hs[1:]):
            if a.token == b.token:
                bad.append(DoubleBooking(slot, a, b, "token granted twice"))
            elif b.start_ds < a.start_ds:
                bad.append(DoubleBooking(slot, a, b, "token older than its predecessor"))
            elif b.start_ds < a.end_ds:
                bad.append(DoubleBooking(slot, a, b, "granted while held"))
    return bad


@dataclass(frozen=True)
class PictureAudit:
    done_once: list[str]
    missing: list[str]           # taken, no done record
    repeated: dict[str, int]     # more than one record (any state) for one picture


def pictures_done_once(taken: Sequence[str], jobs: Iterable[Mapping[str, object]]
                       ) -> PictureAudit:
    """From the job records (control.results_one rows): every taken picture (its path on
    its phone) has exactly one record, and that record is done."""
    recs = Counter(str(j.get("source", "")) for j in jobs)
    done = Counter(str(j.get("source", "")) for j in jobs if j.get("state") == "done")
    return PictureAudit(done_once=[p for p in taken if recs[p] == 1 and done[p] == 1],
                        missing=[p for p in taken if done[p] == 0],
                        repeated={p: n for p, n in recs.items() if n > 1})
