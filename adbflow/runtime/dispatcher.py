"""The I/O around the dispatch decision: bid rounds, the quarantine table, per-device slots.

Why apart from adbflow.scheduling.dispatch: the decision (`decide`) is pure and shared with
the simulator; what lives here talks to devices (a bid round), waits (no eligible device
yet, a busy slot) and tells the views (`emit`). Nothing here calls back into the pipeline:
the pipeline hands in the inventory, bidder, policy, an `emit` callable and a stop event.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from adbflow.device.lease import dead_local_owner
from adbflow.device.port import DevicePort
from adbflow.errors import AdbflowError, Interrupted, NoDevice  # noqa: F401 - defined in adbflow.errors
from adbflow.runtime.events import BidRound, DeviceQuarantined, DeviceReleased, Emit
from adbflow.scheduling import quarantine
from adbflow.scheduling.bids import Bid
from adbflow.scheduling.dispatch import Award, Inflight
from adbflow.scheduling.policy import Decision, Task
from adbflow.scheduling.quarantine import Quarantined, QuarantineRules

NO_DEVICE_RETRY_S = 2.0   # pause between bid rounds while no device is eligible
LEASED_RETRY_S = 0.3      # ... while eligible phones are leased by another orchestrator


def sleep_or_stop(stop: threading.Event, seconds: float) -> None:
    """Sleep, but raise Interrupted as soon as the pipeline is stopping."""
    if stop.wait(seconds):
        raise Interrupted("stopping")


class QuarantineBoard:
    """The cross-job quarantine table (rules in adbflow.scheduling.quarantine), thread-safe,
    emitting DeviceQuarantined / DeviceReleased."""

    def __init__(self, rules: QuarantineRules | None, emit: Emit) -> None:
        self.rules = rules
        self._emit = emit
        self._lock = threading.Lock()
        self._table: dict[str, Quarantined] = {}

    def table(self) -> dict[str, Quarantined]:
        with self._lock:
            return dict(self._table)

    def __contains__(self, serial: object) -> bool:
        with self._lock:
            return serial in self._table

    def listing(self) -> list[dict[str, Any]]:
        """Devices currently kept out of bids (for views and `--json` consumers)."""
        now = time.time()
        with self._lock:
            held = quarantine.active(self._table, now)
        return [q.to_json(now) for _, q in sorted(held.items())]

    def strike(self, serial: str | None, kind: str, stage: str, job_id: int,
               error: str) -> None:
        if not serial or serial == "laptop" or self.rules is None:
            return
        now = time.time()
        with self._lock:
            table = quarantine.forget_expired(self._table, now, self.rules)
            prev = table.get(serial)
            new = quarantine.strike(prev, serial, kind, f"{stage}: {kind}", now, self.rules)
            if new is None or new == prev:
                return
            table[serial] = new
            self._table = table
        self._emit(DeviceQuarantined(serial=serial, job=job_id, stage=stage,
                                     seconds=round(new.left_s(now), 1),
                                     until=round(new.until, 3), strikes=new.strikes,
                                     kind=kind, error=error[:300]))

    def release(self, serials: Sequence[str], why: str) -> None:
        if not serials:
            return
        released = []
        with self._lock:
            for s in serials:
                if self._table.pop(s, None) is not None:
                    released.append(s)
        for s in released:
            self._emit(DeviceReleased(serial=s, reason=why))


@dataclass
class Won:
    """A won bid round: the award (in flight until released), the device and its bid."""

    award: Award
    device: DevicePort
    bid: Bid
    decision: Decision
    bid_s: float
    probes: tuple[dict[str, Any], ...] = ()   # every device's probe of that round (traces)
    ended: float = 0.0                         # laptop wall clock when the round was decided

    @property
    def serial(self) -> str:
        return self.device.serial


def only_leased(listed: set[str], excluded: set[str], leased: set[str]) -> bool:
    """No device won only because another orchestrator leases the slot on every listed
    device this stage may still use (none excluded after its own failure here)."""
    usable = listed - excluded
    return bool(usable) and usable <= leased


class Dispatcher:
    """Bid rounds until a device wins `task`, then its per-stage slot.

    A device runs `profile.slots.of(stage)` stages of a kind at a time (default one
    label_image, one llama-cli: more would fight over the same cores and
    /data/local/tmp/received-image); a job whose device is full waits here for its slot
    (back-pressure), and the policy counts it as queued work on that device."""

    def __init__(self, *, inventory: Any, bidder: Any, policy: Any, profiles: Any,
                 service_times: Any, board: QuarantineBoard, emit: Emit,
                 stop: threading.Event, device_wait_s: float,
                 lease_owner: str | None = None) -> None:
        self.inventory = inventory
        self.bidder = bidder
        self.policy = policy
        self.profiles = profiles
        self.service_times = service_times
        self.board = board
        self.inflight = Inflight()
        self._emit = emit
        self._stop = stop
        self.device_wait_s = device_wait_s
        self._slots: dict[tuple[str, str], threading.Semaphore] = {}
        self._slots_lock = threading.Lock()
        # slot leases on the phones: ours (this owner id) are in `inflight` already; a
        # slot another orchestrator holds (the bid shows it, or acquire answered busy)
        # sends the stage elsewhere
        self.lease_owner = lease_owner
        self._busy_until: dict[tuple[str, str], float] = {}
        self._busy_lock = threading.Lock()

    def mark_busy(self, serial: str, slot: str, seconds: float) -> None:
        """acquire answered busy: leave that phone's slot alone for a moment."""
        with self._busy_lock:
            self._busy_until[(serial, slot)] = time.monotonic() + min(max(seconds, 0.5), 10.0)

    def leased_elsewhere(self, bids: Sequence[Bid], slot: str) -> set[str]:
        """Serials whose `slot` another orchestrator holds (bid records or a busy answer)."""
        now = time.monotonic()
        with self._busy_lock:
            marked = {s for (s, sl), until in self._busy_until.items()
                      if sl == slot and until > now}
        held = {b.serial: b.slot_busy(slot, self.lease_owner) for b in bids}
        return marked | {s for s, st in held.items()
                         if st is not None and not dead_local_owner(st.owner)}

    def bid(self, task: Task, stage: str, excluded: set[str],
            claim: Callable[[str, list[str]], None], *, policy: Any = None,
            extra: Callable[[], Sequence[tuple[Any, Bid]]] | None = None) -> Won:
        """Bid rounds until a reachable device wins; `claim(winner, held)` records the
        winner (journal) before the BidRound event goes out. Raises NoDevice after
        `device_wait_s`, Interrupted when stopping. `policy` overrides the pipeline's for
        this stage (a flow's model selector); `extra` adds bidders that are not adb
        devices each round, as (runner, bid) (the laptop tier, adbflow.runtime.host_tier):
        they share the in-flight accounting and slots by their bid's serial."""
        deadline = time.monotonic() + self.device_wait_s
        while True:
            t0 = time.monotonic()
            devices = list(self.inventory.devices())
            by_serial = {d.serial: d for d in devices}
            bids = list(self.bidder.gather(devices)) if devices else []
            for runner, extra_bid in (extra() if extra is not None else ()):
                bids.append(extra_bid)
                by_serial[extra_bid.serial] = runner
            leased = self.leased_elsewhere(bids, stage)
            award = self.inflight.decide_and_add(
                task, [b for b in bids if b.serial not in leased], self.board.table(),
                time.time(), eligible=set(by_serial) - leased,
                excluded=excluded, policy=policy or self.policy, profiles=self.profiles,
                service_times=self.service_times)
            self.board.release(award.released, "healthy bid")
            winner = award.winner
            bid_s = time.monotonic() - t0
            if winner is not None and winner in by_serial:
                claim(winner, award.held)
                bid = next(b for b in bids if b.serial == winner)
                self._emit(BidRound(stage=stage, winner=winner, reason=award.decision.reason,
                                    bids=[bid_summary(b) for b in bids],
                                    quarantined=award.held))
                return Won(award, by_serial[winner], bid, award.decision, bid_s,
                           tuple(probe_summary(b) for b in bids), time.time() - (
                               time.monotonic() - t0 - bid_s))
            # phones leased by another orchestrator free up within seconds: look again soon
            pause = LEASED_RETRY_S if leased else NO_DEVICE_RETRY_S
            if time.monotonic() + pause > deadline:
                why = award.decision.reason + (
                    f"; slot leased by another orchestrator on {', '.join(sorted(leased))}"
                    if leased else "")
                raise NoDevice(f"no eligible device for {stage}: {why}",
                               hint="check `adbflow devices`; all devices may be busy, "
                                    "offline or excluded after failures",
                               leased_elsewhere=only_leased(set(by_serial), excluded, leased))
            sleep_or_stop(self._stop, pause)

    def slots_of(self, model: str | None, stage: str) -> int:
        """The device class's slots for a stage kind (1 when its profile cannot be read)."""
        try:
            return int(self.profiles.for_model(model).slots.of(stage))
        except Exception:  # noqa: BLE001 - a fake or broken profile book: the safe minimum
            return 1

    def release(self, won: Won) -> None:
        self.inflight.remove(won.award)

    @contextlib.contextmanager
    def slot(self, won: Won, stage: str) -> Iterator[float]:
        """At most the profile's slots of `stage` at a time per device; marks the award as
        started once it runs. Yields the seconds spent waiting for the slot."""
        with self._slots_lock:
            lock = self._slots.get((won.serial, stage))
            if lock is None:
                lock = threading.BoundedSemaphore(self.slots_of(won.bid.model, stage))
                self._slots[(won.serial, stage)] = lock
        t0 = time.monotonic()
        while not lock.acquire(timeout=0.5):
            if self._stop.is_set():
                raise Interrupted("stopping")
        try:
            self.inflight.start(won.award, time.time())
            yield time.monotonic() - t0
        finally:
            lock.release()


# ---------------------------------------------------------------------- summaries

def probe_summary(bid: Bid) -> dict[str, Any]:
    """A bid as a trace needs it: when its probe ended (laptop clock) and how long it took."""
    return {**bid_summary(bid), "probe_rtt_s": bid.probe_rtt_s, "timestamp": bid.timestamp}


def bid_summary(bid: Bid) -> dict[str, Any]:
    """The part of a bid kept in events and job results (NaN load -> None)."""
    load = bid.cpu_load
    return {"serial": bid.serial, "model": bid.model,
            "cpu_load": None if isinstance(load, float) and load != load else load,
            "mem_available_kb": bid.mem_available_kb, "error": bid.error,
            "source": getattr(bid, "source", "probe"), "age_s": getattr(bid, "age_s", None)}


def decision_summary(decision: Decision, quarantined: Sequence[str] = ()) -> dict[str, Any]:
    """The decision as stored in a stage's output: winner, reason and each device's total."""
    out: dict[str, Any] = {"policy": decision.policy, "winner": decision.winner,
                           "reason": decision.reason, "quarantined": list(quarantined)}
    out["costs"] = {c.serial: (None if c.total_s == float("inf") else round(c.total_s, 4))
                    for c in decision.costs or []}
    # which phones were warm (a resident model: no model_load), for `adbflow show`
    warm = sorted(c.serial for c in decision.costs or [] if c.factors.get("resident") == 1.0)
    if warm:
        out["warm"] = warm
        out["model_load_s"] = {c.serial: round(c.parts["model_load"], 4)
                               for c in decision.costs or [] if "model_load" in c.parts}
    return out
