"""The model selector: pick (device, model) together for a flow's classify stage.

Why inside the scheduler, not before it: the fastest model on a loaded phone can finish
later than a bigger one on an idle phone, so the choice of variant depends on the same
expected completion time (ECT) that picks the device. For every eligible bid and every
model its profile carries that meets the ask (type, minimum accuracy or a name), the ECT
cost is the one function in adbflow.scheduling.policy (CostModel.cost) with the task's
`prior_s` set to that model's run time on that class; placement rules then filter and rank:

    capability   bid cores >= min_cores, RAM >= min_ram_mb, ABI equal (hard filters)
    locality     strict origin: only the picture's phone is a candidate;
                 prefer origin: the origin pays no transfer_in (Task.data_on)
    deadline_s   among pairs whose ECT meets the deadline, the most accurate, then the
                 earliest; when none meets it, the earliest (a journaled miss) or none
                 (on_miss = "reject")
    no deadline  the earliest pair (accuracy only as the ask's floor)

`SelectorPolicy` has the Policy interface, so adbflow.scheduling.dispatch.decide and the
in-flight accounting work unchanged; the chosen model and deadline outcome ride in
`Decision.detail`.
"""
from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from adbflow.errors import JobError
from adbflow.scheduling.bids import Bid
from adbflow.scheduling.policy import CostModel, Decision, DeviceCost, Task
from adbflow.scheduling.profiles import DeviceProfile, ModelSpec, ProfileBook
from adbflow.scheduling.service_times import ServiceTimes


@dataclass(frozen=True)
class Ask:
    """What a stage asks of the (device, model) pair (flat, so scheduling needs no flows)."""

    model_type: str = "image_classifier"
    min_accuracy: float = 0.0
    model_name: str | None = None
    locality: str = "any"                 # "any" | "prefer-origin" | "strict-origin"
    origin: str | None = None             # the picture's phone (None: laptop picture)
    deadline_s: float | None = None
    reject_on_miss: bool = False
    min_cores: int = 0
    min_ram_mb: int = 0
    abi: str | None = None


@dataclass(frozen=True)
class Pair:
    serial: str
    model: ModelSpec
    cost: DeviceCost

    @property
    def total_s(self) -> float:
        return self.cost.total_s


def models_for(profile: DeviceProfile, ask: Ask) -> list[ModelSpec]:
    """The profile's models that meet the ask's type, name and accuracy floor."""
    out = []
    for m in profile.models:
        if ask.model_name is not None:
            if m.name == ask.model_name:
                out.append(m)
            continue
        if m.type == ask.model_type and m.accuracy >= ask.min_accuracy:
            out.append(m)
    return out


def capability_miss(bid: Bid, ask: Ask) -> str | None:
    """Why the device lacks a capability the stage asks for (None: it has them)."""
    if ask.min_cores and (bid.cores or 0) < ask.min_cores:
        return f"{bid.cores} cores < {ask.min_cores}"
    if ask.min_ram_mb and bid.mem_total_kb and bid.mem_total_kb / 1024 < ask.min_ram_mb:
        return f"{bid.mem_total_kb // 1024} MB RAM < {ask.min_ram_mb} MB"
    if ask.abi and (bid.abi or "") != ask.abi:
        return f"ABI {bid.abi or 'unknown'} != {ask.abi}"
    return None


def pairs(task: Task, bids: Sequence[Bid], ask: Ask, *, cost_model: CostModel,
          inflight: Mapping[str, Sequence[Task]], profiles: ProfileBook,
          service_times: ServiceTimes | None, now: float) -> tuple[list[Pair], list[str]]:
    """Every eligible (device, model) pair with its ECT, and why the others were dropped."""
    dropped: list[str] = []
    out: list[Pair] = []
    cost_model.observe(inflight, now, service_times)
    for bid in bids:
        if ask.locality == "strict-origin" and bid.serial != ask.origin:
            dropped.append(f"{bid.serial}: not the origin (strict origin)")
            continue
        why = capability_miss(bid, ask)
        if why:
            dropped.append(f"{bid.serial}: {why}")
            continue
        profile = profiles.for_model(bid.model)
        models = models_for(profile, ask)
        if not models:
            dropped.append(f"{bid.serial}: carries no model meeting the ask")
            continue
        data_on = ask.origin if ask.locality != "any" else task.data_on
        for m in models:
            t = replace(task, prior_s=m.ms(profile.timing) / 1000.0, data_on=data_on)
            c = cost_model.cost(t, bid, profile, inflight=inflight.get(bid.serial, ()),
                                service_times=service_times, now=now)
            if not c.eligible:
                dropped.append(f"{bid.serial}: {c.excluded}")
                break
            out.append(Pair(bid.serial, m, c))
    return out, dropped


def choose_pair(candidates: Sequence[Pair], ask: Ask) -> tuple[Pair | None, bool | None, str]:
    """(pair, deadline met (None: no deadline), reason). Pure."""
    if not candidates:
        return None, None, "no (device, model) pair"
    earliest = min(candidates, key=lambda p: (p.total_s, -p.model.accuracy, p.serial))
    if ask.deadline_s is None:
        return earliest, None, (f"earliest: {earliest.model.name} on {earliest.serial} "
                                f"{earliest.total_s:.3f}s")
    meet = [p for p in candidates if p.total_s <= ask.deadline_s]
    if meet:
        best = min(meet, key=lambda p: (-p.model.accuracy, p.total_s, p.serial))
        return best, True, (f"most accurate within {ask.deadline_s:g}s: {best.model.name} "
                            f"({best.model.accuracy:g}) on {best.serial} {best.total_s:.3f}s")
    if ask.reject_on_miss:
        return None, False, (f"deadline {ask.deadline_s:g}s: no pair can meet it (earliest "
                             f"{earliest.total_s:.3f}s); rejected")
    return earliest, False, (f"deadline {ask.deadline_s:g}s missed: fastest "
                             f"{earliest.model.name} on {earliest.serial} "
                             f"{earliest.total_s:.3f}s")


class SelectorPolicy:
    """A Policy for one stage's bid rounds: ECT over (device, model) pairs with placement.
    Shares the pipeline policy's CostModel (its busy-spell bookkeeping)."""

    name = "ect+select"

    def __init__(self, ask: Ask, cost_model: CostModel | None = None) -> None:
        self.ask = ask
        self.cost_model = cost_model or CostModel()

    def choose(self, task: Task, bids: Sequence[Bid], *, inflight: Mapping[str, Sequence[Task]],
               profiles: ProfileBook, service_times: ServiceTimes | None = None,
               rng: random.Random | None = None, now: float | None = None) -> Decision:
        now = time.time() if now is None else now
        ok_bids = [b for b in bids if b.ok]
        cands, dropped = pairs(task, ok_bids, self.ask, cost_model=self.cost_model,
                               inflight=inflight, profiles=profiles,
                               service_times=service_times, now=now)
        dropped += [f"{b.serial}: probe failed: {b.error}" for b in bids if not b.ok]
        pair, met, reason = choose_pair(cands, self.ask)
        best: dict[str, DeviceCost] = {}
        for p in cands:
            if p.serial not in best or p.total_s < best[p.serial].total_s:
                best[p.serial] = p.cost
        costs = list(best.values())
        if pair is None and met is False:
            # on_miss = "reject": the user's choice is to fail this picture's stage now
            raise JobError(reason, hint="raise placement.deadline_s or set on_miss = "
                                        "\"fastest\" to run late instead")
        if pair is None:
            why = "; ".join(dropped)
            return Decision(self.name, None, costs, f"{reason}" + (f" ({why})" if why else ""),
                            {"deadline_met": met})
        chosen = next((p.cost for p in cands if p is pair), pair.cost)
        costs = [chosen if c.serial == pair.serial else c for c in costs]
        detail: dict[str, Any] = {
            "model": pair.model.name, "model_path": pair.model.path,
            "input_size": pair.model.input_size, "accuracy": pair.model.accuracy,
            "deadline_s": self.ask.deadline_s, "deadline_met": met,
            "expected_s": None if math.isinf(pair.total_s) else round(pair.total_s, 4),
            "pairs": [{"serial": p.serial, "model": p.model.name,
                       "total_s": round(p.total_s, 4)} for p in cands],
        }
        return Decision(self.name, pair.serial, costs, reason, detail)


def feasible(ask: Ask, profiles: ProfileBook) -> str | None:
    """Why no device class in `profiles` could ever satisfy the ask (None: some could).
    Checked before any picture is processed; load-dependent deadlines are not (a loaded
    fleet may miss them at run time, which is journaled)."""
    carried = [(p, m) for p in profiles.profiles.values() for m in models_for(p, ask)]
    if not carried:
        if ask.model_name:
            return f"no profile carries a model named {ask.model_name!r}"
        return (f"no profile carries a {ask.model_type!r} model with accuracy >= "
                f"{ask.min_accuracy:g}")
    if ask.deadline_s is not None and ask.reject_on_miss:
        fastest = min(m.ms(t) / 1000.0 for p, m in carried
                      for t in [p.timing, *p.classes.values()])
        if fastest > ask.deadline_s:
            return (f"deadline {ask.deadline_s:g}s is below the fastest idle run time "
                    f"{fastest:.3f}s of any carried model")
    return None
