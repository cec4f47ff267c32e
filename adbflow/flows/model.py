"""A flow as data: stages, what each runs, its input, model ask, placement and gate.

Why frozen dataclasses with a `validate()` separate from TOML: a flow built in Python and
one read from a file are the same objects checked by the same rules, and every semantic
error names its key path (`stages[1].gate.tau`) so the user knows what to fix. Gates are
data (a kind and numbers), never expressions to evaluate.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from adbflow.errors import FlowError

PICTURE = "picture"              # a stage input: the job's picture
CLASSIFICATION = "classification"  # a stage input: the latest classify stage that ran


class Run(str, enum.Enum):
    """What a stage runs."""

    CLASSIFY = "classify"        # label_image with the selected model, on a device
    STORY = "story"              # llama-cli with a prompt from the labels, on a device


class GateKind(str, enum.Enum):
    """When a stage runs, judged on an earlier stage's output (adbflow.flows.gates)."""

    ESCALATE = "escalate"    # run when `on`'s top-1 < tau or top-1 minus top-2 < margin
    FILTER = "filter"        # run when the label of `on` is in a label set
    CONFIDENT = "confident"  # run when `on`'s top-1 >= min_confidence


class Locality(str, enum.Enum):
    ANY = "any"
    PREFER_ORIGIN = "prefer-origin"   # no transfer cost when the picture's phone runs it
    STRICT_ORIGIN = "strict-origin"   # pixels never go to another phone


class OnMiss(str, enum.Enum):
    FASTEST = "fastest"   # no (device, model) meets the deadline: run the fastest, journal a miss
    REJECT = "reject"     # fail the stage instead


@dataclass(frozen=True)
class ModelAsk:
    """Which model a classify stage wants: a type and a floor on accuracy, or one by name."""

    type: str = "image_classifier"
    min_accuracy: float = 0.0
    name: str | None = None


@dataclass(frozen=True)
class Placement:
    """Where a stage may run and what it optimises. Capability floors come from the bid
    (cores, RAM, ABI); Android version from the profile is not in today's bids (not checked)."""

    locality: Locality = Locality.ANY
    deadline_s: float | None = None
    on_miss: OnMiss = OnMiss.FASTEST
    min_cores: int = 0
    min_ram_mb: int = 0
    abi: str | None = None


@dataclass(frozen=True)
class Gate:
    kind: GateKind
    on: str = CLASSIFICATION           # a stage name, or the latest classification
    tau: float = 0.0                   # escalate: top-1 below this
    margin: float = 0.0                # escalate: top-1 minus top-2 below this
    labels: tuple[int, ...] = ()       # filter: ImageNet class indices that pass
    label_set: str | None = None       # filter: where `labels` came from (for `flows show`)
    min_confidence: float = 0.0        # confident


@dataclass(frozen=True)
class Drift:
    """A rolling window of `on`'s top-1 confidences: when its mean falls below `level` an
    event is raised and, with `switch`, `on`'s escalation gates always escalate until the
    mean recovers."""

    on: str
    window: int = 20
    level: float = 0.5
    switch: bool = True


@dataclass(frozen=True)
class Stage:
    name: str
    run: Run
    input: str = PICTURE
    model: ModelAsk = field(default_factory=ModelAsk)
    placement: Placement = field(default_factory=Placement)
    gate: Gate | None = None


@dataclass(frozen=True)
class Flow:
    name: str
    stages: tuple[Stage, ...]
    description: str = ""
    drift: Drift | None = None
    source: str | None = None       # the file it came from (None: built in Python)

    @property
    def is_default(self) -> bool:
        """`classify-story`: today's pipeline, run by the pipeline's own path."""
        return self.name == DEFAULT_FLOW

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def validate(self) -> Flow:
        validate(self)
        return self


DEFAULT_FLOW = "classify-story"


def _fail(flow: Flow, where: str, msg: str, hint: str | None = None) -> None:
    raise FlowError(f"{flow.source or 'flow ' + repr(flow.name)}: {where}: {msg}", hint=hint)


def _unit(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and 0.0 <= x <= 1.0


def validate(flow: Flow) -> None:
    """Raise FlowError naming the key path of the first problem (pure, no I/O)."""
    if not flow.name or not isinstance(flow.name, str):
        _fail(flow, "name", "missing or empty")
    if not flow.stages:
        _fail(flow, "stages", "a flow needs at least one stage")
    seen: dict[str, Stage] = {}
    for i, st in enumerate(flow.stages):
        where = f"stages[{i}]"
        if not st.name or not st.name.replace("-", "").replace("_", "").isalnum():
            _fail(flow, f"{where}.name", f"{st.name!r} is not a name (letters, digits, - _)")
        if st.name in seen or st.name in (PICTURE, CLASSIFICATION):
            _fail(flow, f"{where}.name", f"{st.name!r} is used twice or reserved")
        if st.input not in (PICTURE, CLASSIFICATION) and st.input not in seen:
            _fail(flow, f"{where}.input", f"{st.input!r} is neither `picture`, "
                  "`classification` nor an earlier stage")
        if st.run is Run.CLASSIFY and st.input != PICTURE:
            _fail(flow, f"{where}.input", "a classify stage reads the picture")
        if st.run is Run.STORY:
            src = st.input
            if src == PICTURE:
                _fail(flow, f"{where}.input", "a story stage reads a classification, "
                      "not the picture", hint='input = "classification"')
            if src != CLASSIFICATION and seen[src].run is not Run.CLASSIFY:
                _fail(flow, f"{where}.input", f"{src!r} is not a classify stage")
            if not any(s.run is Run.CLASSIFY for s in seen.values()):
                _fail(flow, f"{where}.input", "no classify stage runs before this story")
        if st.run is Run.STORY and st.placement != Placement():
            _fail(flow, f"{where}.placement", "placement rules apply to classify stages only "
                  "(the story runs on the pipeline policy's best bidder)")
        if not _unit(st.model.min_accuracy):
            _fail(flow, f"{where}.model.min_accuracy", "must be within 0..1")
        p = st.placement
        if p.deadline_s is not None and not (math.isfinite(p.deadline_s) and p.deadline_s > 0):
            _fail(flow, f"{where}.placement.deadline_s", "must be a number of seconds > 0")
        if p.min_cores < 0 or p.min_ram_mb < 0:
            _fail(flow, f"{where}.placement", "capability floors must be >= 0")
        g = st.gate
        if g is not None:
            gw = f"{where}.gate"
            if g.on != CLASSIFICATION and g.on not in seen:
                _fail(flow, f"{gw}.on", f"{g.on!r} is not an earlier stage")
            if g.on != CLASSIFICATION and seen[g.on].run is not Run.CLASSIFY:
                _fail(flow, f"{gw}.on", f"{g.on!r} is not a classify stage")
            if g.on == CLASSIFICATION and not any(s.run is Run.CLASSIFY for s in seen.values()):
                _fail(flow, f"{gw}.on", "no classify stage runs before this gate")
            for key in ("tau", "margin", "min_confidence"):
                if not _unit(getattr(g, key)):
                    _fail(flow, f"{gw}.{key}", f"must be within 0..1, got {getattr(g, key)!r}")
            if g.kind is GateKind.ESCALATE and g.tau == 0 and g.margin == 0:
                _fail(flow, gw, "an escalate gate needs tau or margin > 0 (else it never fires)")
            if g.kind is GateKind.FILTER and not g.labels:
                _fail(flow, f"{gw}.labels", "a filter gate needs a non-empty label set")
            if any(not 0 <= x < 1000 for x in g.labels):
                _fail(flow, f"{gw}.labels", "ImageNet class indices are 0..999")
        seen[st.name] = st
    d = flow.drift
    if d is not None:
        if d.on not in seen or seen[d.on].run is not Run.CLASSIFY:
            _fail(flow, "drift.on", f"{d.on!r} is not a classify stage of this flow")
        if d.window < 1:
            _fail(flow, "drift.window", "must be >= 1")
        if not _unit(d.level):
            _fail(flow, "drift.level", "must be within 0..1")
