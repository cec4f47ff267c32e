"""Cross-job quarantine of devices that just timed out, hung or disconnected.

Why: a stage's own re-bid excludes a failed device only within that job, so with a hung
label_image every new job first spends a full stage timeout on that device again. A short
quarantine (QuarantineRules.base_s, doubling on repeated strikes up to cap_s) keeps the next
jobs off it. It is bounded and self-healing: it expires, a successful stage on the device
clears it, and a healthy bid clears it when the strike was a lost connection (the bid proves
the transport is back; it proves nothing about a hung program, so timeouts just expire).
It never starves the pipeline: when every device that bid well is quarantined, they are all
offered to the policy as if nothing were quarantined.

Everything here is pure (time is passed in); adbflow.runtime.pipeline keeps the table and a lock.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# error kinds (adbflow.runtime.attempts.error_kind) that quarantine a device: the costly ones.
# exit / parse failures return quickly and are handled by the per-job re-bid alone.
# A resident server that hung (or would not start) cost its full timeout, like a timeout.
QUARANTINE_KINDS = frozenset({"timeout", "unavailable", "adb", "resident-hang",
                              "resident-start"})
# strikes a healthy bid clears: the device answered, so its connection is back
BID_CLEARS_KINDS = frozenset({"unavailable", "adb"})


@dataclass(frozen=True)
class QuarantineRules:
    base_s: float = 30.0       # first strike
    cap_s: float = 240.0       # longest quarantine (doubling stops here)
    memory_s: float = 300.0    # a strike this long after the last one expired starts afresh


@dataclass(frozen=True)
class Quarantined:
    """One device's quarantine: until when (wall clock), how many strikes in a row, why."""

    serial: str
    until: float
    strikes: int
    kind: str
    reason: str

    def left_s(self, now: float) -> float:
        return max(0.0, self.until - now)

    def to_json(self, now: float) -> dict[str, Any]:
        return {"serial": self.serial, "until": round(self.until, 3),
                "left_s": round(self.left_s(now), 1), "strikes": self.strikes,
                "kind": self.kind, "reason": self.reason}


def strike(prev: Quarantined | None, serial: str, kind: str, reason: str, now: float,
           rules: QuarantineRules = QuarantineRules()) -> Quarantined | None:
    """The device's quarantine after a failed attempt of `kind`. A kind that does not
    quarantine returns `prev` unchanged (possibly None). A strike while the quarantine still
    runs (concurrent jobs that were already on the device) does not double it: only failing
    again after being let back counts as a repeat."""
    if kind not in QUARANTINE_KINDS:
        return prev
    strikes = 1
    if prev is not None and prev.until > now:
        strikes = prev.strikes
    elif prev is not None and now - prev.until <= rules.memory_s:
        strikes = prev.strikes + 1
    seconds = min(rules.cap_s, rules.base_s * 2 ** (strikes - 1))
    # concurrent jobs may report the same hang twice: never shorten a running quarantine
    until = max(now + seconds, prev.until if prev is not None else 0.0)
    return Quarantined(serial, until, strikes, kind, reason)


def active(table: Mapping[str, Quarantined], now: float) -> dict[str, Quarantined]:
    """The entries still in force at `now`."""
    return {s: q for s, q in table.items() if q.until > now}


def cleared_by_bids(table: Mapping[str, Quarantined], bids: Sequence[Any]) -> list[str]:
    """Devices whose connection-loss strike a healthy (ok) bid just disproved."""
    ok = {b.serial for b in bids if b.ok}
    return sorted(s for s, q in table.items() if s in ok and q.kind in BID_CLEARS_KINDS)


def forget_expired(table: Mapping[str, Quarantined], now: float,
                   rules: QuarantineRules = QuarantineRules()) -> dict[str, Quarantined]:
    """Drop entries too old to count as a repeat any more (keeps the table bounded)."""
    return {s: q for s, q in table.items() if now - q.until <= rules.memory_s}


def apply(bids: Sequence[Any], table: Mapping[str, Quarantined], now: float
          ) -> tuple[list[Any], list[str]]:
    """(bids to offer the policy, serials held back). Quarantined devices are dropped, unless
    that would leave no ok bid: then every bid is offered (slow beats none)."""
    held = active(table, now)
    if not held:
        return list(bids), []
    kept = [b for b in bids if b.serial not in held]
    if not any(b.ok for b in kept):
        return list(bids), []
    return kept, sorted(b.serial for b in bids if b.serial in held)
