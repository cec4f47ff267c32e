"""The slot-lease rules as pure functions: the model of device_scripts/lease.sh.

Why a model: the lease decides which orchestrator may use a phone's slot (and its
/data/local/tmp/received-image); getting a rule wrong gives silent wrong results (a cat
labelled "espresso"). The rules are small enough to state once, test exhaustively here, and
compare against the device script on the virtual fleet (same inputs, same verdicts).

The record (one line in /data/local/tmp/adbflow/slot-SLOT.lease, README "Leases"):
`adbflow-lease 1 TOKEN OWNER BOOT WRITTEN_DS EXPIRES_DS`; OWNER `-` = free. Times are the
device's /proc/uptime in deciseconds; BOOT is its boot id.

Rules:
- a record is *live* when it has an owner, was written in this boot, the clock has not gone
  back since (a reboot without boot id), and its expiry is in the future;
- acquire: granted when not live; the new token is the last token + 1 (tokens only grow,
  also across release and expiry); a live record answers busy (even to its own owner);
- renew / guard / finish / release succeed only for the live record's owner *and* token;
  anything else is lost (expired, released, or taken over by a later token);
- finish / release keep the token and clear the owner (the next grant continues from it).

Claims (picture claims at the origin phone, `adbflow_claim`) are the same record and rules
with one more state: a record carrying a RESULT is *done*. `complete` (owner and token
match, live) keeps the owner (who completed), sets expiry 0 and records the result; a done
record never expires (not even at a reboot): acquire answers done (with who and the
result), every holder operation answers lost. Only claims get results (slot records never
carry one: the script ignores the field for slots).
"""
from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass, replace

FREE = "-"
MAGIC = "adbflow-lease"
VERSION = 1
_OWNER_RE = re.compile(r"^[A-Za-z0-9._:-]{1,80}$")
_DIGITS = re.compile(r"^[0-9]+$")
_RESULT_RE = re.compile(r"^[A-Za-z0-9._:=,+/-]{1,240}$")
_KEY_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
NO_RESULT = "-"


class Verdict(str, enum.Enum):
    """What one lease operation answered (the device script prints these words)."""

    GRANTED = "granted"
    BUSY = "busy"
    RENEWED = "renewed"
    LOST = "lost"
    HELD = "held"
    RELEASED = "released"
    STATE = "state"
    COMPLETED = "completed"
    DONE = "done"
    ERROR = "error"

    @property
    def ok(self) -> bool:
        return self in (Verdict.GRANTED, Verdict.RENEWED, Verdict.HELD, Verdict.RELEASED,
                        Verdict.STATE, Verdict.COMPLETED)


class Op(str, enum.Enum):
    ACQUIRE = "acquire"
    RENEW = "renew"
    GUARD = "guard"
    FINISH = "finish"
    RELEASE = "release"
    READ = "read"
    COMPLETE = "complete"       # claims only


#: which operations each kind of record accepts (the script answers error to the others)
SLOT_OPS = frozenset({Op.ACQUIRE, Op.RENEW, Op.GUARD, Op.FINISH, Op.RELEASE, Op.READ})
CLAIM_OPS = frozenset({Op.ACQUIRE, Op.RENEW, Op.COMPLETE, Op.RELEASE, Op.READ})


@dataclass(frozen=True)
class Record:
    """One slot's lease record, or one picture's claim. `owner == FREE`: nobody holds it
    (token kept). `result` (claims only): completed by `owner`, done for good."""

    token: int = 0
    owner: str = FREE
    boot: str = FREE
    written_ds: int = 0
    expires_ds: int = 0
    result: str = ""

    @property
    def done(self) -> bool:
        return bool(self.result)

    def format(self) -> str:
        tail = f" {self.result}" if self.result else ""
        return (f"{MAGIC} {VERSION} {self.token} {self.owner} {self.boot} {self.written_ds} "
                f"{self.expires_ds}{tail}")


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    record: Record           # the record after the operation (written back when changed)
    left_ds: int             # deciseconds until the (new) record expires; 0 when not live


def valid_owner(owner: str) -> bool:
    """Owner ids are plain words (no spaces: the record is space-separated)."""
    return bool(_OWNER_RE.match(owner)) and owner != FREE


def valid_result(result: str) -> bool:
    """A claim's result record: one word of a safe charset, at most 240 characters (it is
    stored in the space-separated record and printed in every answer)."""
    return bool(_RESULT_RE.match(result))


def valid_key(key: str) -> bool:
    """Slot and claim names: `[a-z0-9_-]{1,64}` (they become file names on the phone)."""
    return bool(_KEY_RE.match(key))


def claim_key(path: str, ino: int, size: int, mtime: float) -> str:
    r"""The claim name of one picture: `pic-` + 32 hex digits of sha256 over
    `PATH\nINODE\nSIZE\nMTIME_S\n` (MTIME_S whole seconds, what adb's stat gives). A hash,
    never the file name: names are untrusted device text, claim names become file names.
    Phone-side orchestrators compute the same in mksh with
    `printf '%s\n%s\n%s\n%s\n' "$p" "$i" "$s" "$m" | sha256sum`. INODE 0: unknown (an
    old phone without stat v2); then a same-size, same-mtime replacement shares the key."""
    text = f"{path}\n{int(ino)}\n{int(size)}\n{int(mtime)}\n"
    return "pic-" + hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def parse_record(line: str, *, claim: bool = False) -> Record:
    """A record line as the script reads it: anything malformed reads as a free record with
    token 0 (the script does the same; see README "Leases" on why that stays safe). The
    RESULT field counts only for claims with an owner (a slot record never has one)."""
    parts = line.split()
    if len(parts) < 7 or parts[0] != MAGIC or parts[1] != str(VERSION):
        return Record()
    tok, at, exp = parts[2], parts[5], parts[6]
    if not all(_DIGITS.match(x) for x in (tok, at, exp)):
        return Record()
    owner = parts[3][:80]
    result = parts[7] if len(parts) > 7 else ""
    if not claim or owner == FREE or not valid_result(result):
        result = ""
    return Record(token=int(tok), owner=owner, boot=parts[4], written_ds=int(at),
                  expires_ds=int(exp), result=result)


def is_live(rec: Record, now_ds: int, boot: str) -> bool:
    return (rec.owner != FREE and rec.boot == boot and now_ds >= rec.written_ds
            and now_ds < rec.expires_ds)


def left_ds(rec: Record, now_ds: int, boot: str) -> int:
    return rec.expires_ds - now_ds if is_live(rec, now_ds, boot) else 0


def holds(rec: Record, owner: str, token: int, now_ds: int, boot: str) -> bool:
    return is_live(rec, now_ds, boot) and rec.owner == owner and rec.token == token


def apply(rec: Record, op: Op, *, owner: str, token: int, ttl_ds: int, now_ds: int,
          boot: str, result: str = NO_RESULT) -> Outcome:
    """One operation under the lock: the verdict and the record to write back. `result`:
    what `complete` records (claims)."""
    if op is Op.READ:
        if rec.done:
            return Outcome(Verdict.DONE, rec, 0)
        return Outcome(Verdict.STATE, rec, left_ds(rec, now_ds, boot))
    if op is Op.ACQUIRE:
        if rec.done:
            return Outcome(Verdict.DONE, rec, 0)
        if is_live(rec, now_ds, boot):
            return Outcome(Verdict.BUSY, rec, left_ds(rec, now_ds, boot))
        new = Record(rec.token + 1, owner, boot, now_ds, now_ds + ttl_ds)
        return Outcome(Verdict.GRANTED, new, ttl_ds)
    if rec.done or not holds(rec, owner, token, now_ds, boot):
        return Outcome(Verdict.LOST, rec, left_ds(rec, now_ds, boot))
    if op is Op.COMPLETE:
        return Outcome(Verdict.COMPLETED, replace(rec, written_ds=now_ds, expires_ds=0,
                                                  result=result or NO_RESULT), 0)
    if op is Op.RENEW:
        return Outcome(Verdict.RENEWED, replace(rec, written_ds=now_ds,
                                                expires_ds=now_ds + ttl_ds), ttl_ds)
    if op is Op.GUARD:
        return Outcome(Verdict.HELD, rec, left_ds(rec, now_ds, boot))
    # finish / release
    return Outcome(Verdict.RELEASED, replace(rec, owner=FREE, boot=boot, written_ds=now_ds,
                                             expires_ds=0), 0)


@dataclass(frozen=True)
class SlotState:
    """What a bid says about one slot: free, or held by `owner` for `left_s` more."""

    slot: str
    token: int
    owner: str | None
    left_s: float

    @property
    def busy(self) -> bool:
        return self.owner is not None and self.left_s > 0

    def to_json(self) -> dict:
        return {"slot": self.slot, "token": self.token, "owner": self.owner,
                "left_s": round(self.left_s, 1)}


def slot_state(slot: str, rec: Record, now_ds: int, boot: str) -> SlotState:
    live = is_live(rec, now_ds, boot)
    return SlotState(slot, rec.token, rec.owner if live else None,
                     left_ds(rec, now_ds, boot) / 10.0)
