"""Gate decisions: does a stage run, given earlier stages' outputs? Pure functions of data.

Why pure and data-only: a gate is a kind and numbers from the flow (never an expression to
evaluate), decided from committed journal outputs, so a resumed job decides the same and
tests need no devices. Every decision carries the numbers it was made on, for the journal.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from adbflow.flows.model import CLASSIFICATION, Drift, Gate, GateKind


@dataclass(frozen=True)
class GateDecision:
    run: bool
    kind: str
    on: str
    reason: str
    top1: float | None = None
    top2: float | None = None
    label: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def top2(labels: Sequence[Mapping[str, Any]]) -> tuple[float, float, int | None]:
    """(top-1 score, top-2 score, top-1 class index) of label_image labels (best first)."""
    scores = sorted(((float(lb.get("score", 0.0)), lb.get("index")) for lb in labels),
                    key=lambda x: -x[0])
    if not scores:
        return 0.0, 0.0, None
    idx = scores[0][1]
    return scores[0][0], scores[1][0] if len(scores) > 1 else 0.0, \
        int(idx) if isinstance(idx, int) else None


def source_of(gate_on: str, ran: Sequence[tuple[str, Mapping[str, Any]]]) -> \
        tuple[str, Mapping[str, Any]] | None:
    """The classify output a gate reads: the named stage, or the latest classification.
    `ran` is (stage name, output) of the classify stages that ran, in order."""
    if gate_on == CLASSIFICATION:
        return ran[-1] if ran else None
    return next(((n, o) for n, o in ran if n == gate_on), None)


def decide(gate: Gate, ran: Sequence[tuple[str, Mapping[str, Any]]], *,
           drifting: bool = False) -> GateDecision:
    """Whether the gated stage runs. `drifting`: the drift monitor of the gate's source is
    raised (escalation gates then always escalate)."""
    src = source_of(gate.on, ran)
    if src is None:
        return GateDecision(False, gate.kind.value, gate.on, f"{gate.on} did not run")
    name, out = src
    t1, t2, label = top2(out.get("labels") or [])

    def made(run: bool, reason: str) -> GateDecision:
        return GateDecision(run, gate.kind.value, name, reason, round(t1, 4), round(t2, 4),
                            label)

    if gate.kind is GateKind.ESCALATE:
        if drifting:
            return made(True, "drift: confidence window below level")
        if t1 < gate.tau:
            return made(True, f"top-1 {t1:.3f} < tau {gate.tau:g}")
        if gate.margin and t1 - t2 < gate.margin:
            return made(True, f"margin {t1 - t2:.3f} < {gate.margin:g}")
        return made(False, f"confident: top-1 {t1:.3f} >= tau {gate.tau:g}")
    if gate.kind is GateKind.FILTER:
        ok = label is not None and label in set(gate.labels)
        what = gate.label_set or f"{len(gate.labels)} labels"
        return made(ok, f"label {label} {'in' if ok else 'not in'} {what}")
    ok = t1 >= gate.min_confidence
    return made(ok, f"top-1 {t1:.3f} {'>=' if ok else '<'} {gate.min_confidence:g}")


@dataclass
class DriftMonitor:
    """Rolling mean of a stage's top-1 confidences (process-wide, not journaled: it is a
    view of recent pictures). `observe` returns "raised"/"cleared" on a change, else None."""

    drift: Drift
    values: deque[float] = field(default_factory=deque)
    raised: bool = False

    def observe(self, top1: float) -> str | None:
        self.values.append(float(top1))
        while len(self.values) > self.drift.window:
            self.values.popleft()
        if len(self.values) < self.drift.window:
            return None
        low = self.mean < self.drift.level
        if low != self.raised:
            self.raised = low
            return "raised" if low else "cleared"
        return None

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values) if self.values else 1.0

    @property
    def switching(self) -> bool:
        return self.raised and self.drift.switch
