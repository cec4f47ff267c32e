"""Who runs a stage: the pure dispatch decision and the in-flight work it reads and updates.

Why a pure `decide`: like Dask's `decide_worker`, the decision is one module-level function
over plain values (the task, this round's bids, the work already awarded, the quarantine
table, the time), so the live pipeline and the simulator (adbflow.sim.engine) make the
same choice from the same inputs, and a unit test can pin it. Bid rounds (device I/O),
waiting, and event emission stay outside, in adbflow.runtime.dispatcher.

`Inflight` is the only holder of "work we awarded and that has not finished": decisions
read a snapshot of it and the award is added under the same lock, so concurrent jobs see
each other's awards (a burst of pictures spreads over the fleet instead of piling onto the
device that looked idlest a second ago).
"""
from __future__ import annotations

import random
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from adbflow.scheduling import quarantine as quarantine_rules
from adbflow.scheduling.bids import Bid
from adbflow.scheduling.policy import Decision, Policy, Task
from adbflow.scheduling.profiles import ProfileBook
from adbflow.scheduling.quarantine import Quarantined
from adbflow.scheduling.service_times import ServiceTimes

#: what the policy sees of the in-flight work: serial -> our tasks awarded there
InflightView = Mapping[str, Sequence[Task]]


@dataclass
class Award:
    """The outcome of one decision.

    `winner` None: no eligible device (`decision.reason` says why). `others` are our tasks
    on the winner when it won: their CPU is in the winning bid's load reading. `held` are
    the serials the quarantine kept out of this round, `released` those whose connection
    strike a healthy bid just disproved (the caller drops them from its table). `task` is
    replaced (started_at set) once the stage runs, by `Inflight.start`.
    """

    winner: str | None
    task: Task
    decision: Decision
    others: tuple[Task, ...] = ()
    held: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)


def decide(task: Task, bids: Sequence[Bid], inflight: InflightView,
           quarantine: Mapping[str, Quarantined], now: float, *, policy: Policy,
           profiles: ProfileBook, service_times: ServiceTimes | None = None,
           excluded: frozenset[str] | set[str] = frozenset(),
           rng: random.Random | None = None) -> Award:
    """Pick the device for `task` from this round's `bids`. Pure apart from `rng` (and a
    stateful policy such as round-robin): same inputs, same award.

    Order of the rules: devices that already failed this stage (`excluded`) are skipped
    unless only they remain; a healthy bid clears a connection-loss quarantine strike; the
    quarantine holds back its devices unless that leaves no ok bid; the policy ranks the
    rest with the in-flight work it knows of.
    """
    candidates = [b for b in bids if b.serial not in excluded]
    if not any(b.ok for b in candidates):
        candidates = list(bids)   # only devices that failed this stage remain: retry them
    released = quarantine_rules.cleared_by_bids(quarantine, bids)
    table = {s: q for s, q in quarantine.items() if s not in released}
    candidates, held = quarantine_rules.apply(candidates, table, now)
    decision = policy.choose(task, candidates, inflight=inflight, profiles=profiles,
                             service_times=service_times, rng=rng, now=now)
    winner = decision.winner
    others = tuple(inflight.get(winner, ())) if winner is not None else ()
    return Award(winner, task, decision, others, held, released)


class Inflight:
    """Our awarded, unfinished tasks per device; thread-safe. Decisions made through
    `decide_and_add` see every award made before them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._awards: dict[str, list[Award]] = {}

    def snapshot(self) -> dict[str, tuple[Task, ...]]:
        with self._lock:
            return self._snapshot()

    def _snapshot(self) -> dict[str, tuple[Task, ...]]:
        return {s: tuple(a.task for a in awards) for s, awards in self._awards.items() if awards}

    def decide_and_add(self, task: Task, bids: Sequence[Bid],
                       quarantine: Mapping[str, Quarantined], now: float, *,
                       eligible: set[str] | None = None, **kw: Any) -> Award:
        """`decide` on the current in-flight work; the winner (when it is in `eligible`,
        the devices the caller can reach) is awarded the task atomically."""
        with self._lock:
            award = decide(task, bids, self._snapshot(), quarantine, now, **kw)
            if award.winner is not None and (eligible is None or award.winner in eligible):
                self._awards.setdefault(award.winner, []).append(award)
            return award

    def start(self, award: Award, now: float) -> None:
        """The awarded stage runs now: only its remaining time counts as wait from here."""
        with self._lock:
            award.task = replace(award.task, started_at=now)

    def remove(self, award: Award) -> None:
        """The awarded stage finished (or failed): it no longer occupies the device."""
        with self._lock:
            lst = self._awards.get(award.winner or "", [])
            for i, a in enumerate(lst):
                if a is award:
                    del lst[i]
                    break
