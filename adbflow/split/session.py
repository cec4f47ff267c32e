"""One model, a set of phones: measure, plan, re-plan and run split inference.

Why a session: planning needs the phones' live bids, their op times and links, which
sharpen with every transfer; re-partitioning needs the previous plan's inputs. The pure
parts (plan.choose_plan, plan.replan_reason) decide; this object does the I/O around them
and logs every new plan with its reason to `<data dir>/split/plans.jsonl` (one JSON object
per line: time, reason, plan, previous plan, objective, predicted seconds).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from adbflow.device.port import DevicePort
from adbflow.errors import SplitError
from adbflow.parsers.tflite_model import op_infos, op_weight_bytes
from adbflow.scheduling.profiles import DeviceProfile, ProfileBook
from adbflow.split.plan import (
    Candidate,
    Cut,
    OpTimes,
    PhoneState,
    Plan,
    Snapshot,
    choose_plan,
    phone_state,
    replan_reason,
)
from adbflow.split.profiling import (
    LaunchModel,
    LinkEstimate,
    OpTimesStore,
    measure_op_times,
    prior_op_times,
    profile_op_times,
)
from adbflow.split.run import SplitRunner
from adbflow.split.tflite_cut import cut_points, model_digest

BidsFn = Callable[[], Sequence[Any]]


@dataclass
class PlanLog:
    """Append-only JSONL of plan changes."""

    path: Path

    def write(self, entry: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")

    def entries(self) -> list[dict[str, Any]]:
        try:
            return [json.loads(x) for x in self.path.read_text().splitlines() if x.strip()]
        except (OSError, ValueError):
            return []


@dataclass
class SplitSession:
    devices: Mapping[str, DevicePort]
    models_of: dict[str, str | None]      # serial -> ro.product.model (from its bid)
    book: ProfileBook
    model: bytes
    model_name: str
    data_dir: Path
    bids: BidsFn
    objective: str = "latency"
    origin: str | None = None
    privacy: bool = False
    threshold: float = 0.2
    allow_split: bool = True
    times: dict[str, OpTimes] = field(default_factory=dict)
    learned: dict[str, float] = field(default_factory=dict)   # measured / predicted inference
    alpha: float = 0.3
    links: dict[str, LinkEstimate] = field(default_factory=dict)
    plan: Plan | None = None
    snapshot: Snapshot | None = None

    def __post_init__(self) -> None:
        self.digest = model_digest(self.model)
        self.ops = op_infos(self.model)
        weights = op_weight_bytes(self.model)
        total_w = sum(weights)
        self.model_mb = len(self.model) / 1e6
        self.cuts = [Cut(p.op_index, p.nbytes, sum(weights[:p.op_index]) / 1e6,
                         (total_w - sum(weights[:p.op_index])) / 1e6)
                     for p in cut_points(self.model)]
        self.store = OpTimesStore(self.data_dir / "split" / "op_times.json")
        self.log = PlanLog(self.data_dir / "split" / "plans.jsonl")
        for s in self.devices:
            prof = self.profile(s)
            self.links.setdefault(s, LinkEstimate.from_profile(prof))
            self.times.setdefault(s, self._known_times(s, prof))
        from adbflow.split.profiling import benchmark_binary
        self.runner = SplitRunner(self.devices, self.model, self.data_dir / "split" / "parts",
                                  binary={s: benchmark_binary(self.profile(s)) for s in self.devices},
                                  threads=self._threads(), links=self.links,
                                  on_run=self._observe_run)
        self.launches = {s: self._launch_model(t) for s, t in self.times.items()}
        self._base_slowdown: dict[str, float] = {}
        if self.privacy:
            self.runner.private_to = self.origin

    def _launch_model(self, times: OpTimes) -> LaunchModel:
        """The launch line of a phone, seeded with two points of the line it starts from, at
        the sizes a calibration times (the first cut's head, the whole model): the measured
        calibration where there is one (fresh or stored), else the profile's prior."""
        small_mb = self.cuts[0].head_mb if self.cuts else 0.0
        return LaunchModel.calibrated(times, small_mb, self.model_mb)

    def _observe_run(self, serial: str, graph: str, mb: float, wall_s: float,
                     inference_s: float) -> None:
        """Every run teaches its phone's launch model (profiling.LaunchModel) and how its
        inference compares with the prediction (the `learned_x` factor: heat building up,
        a phone slower than its op profile), as ECT learns service times."""
        lm = self.launches.get(serial)
        if lm is not None:
            lm.observe(mb, max(0.0, wall_s - inference_s))
            self.times[serial] = lm.apply(self.times[serial])
        span = self._op_span(graph)
        if span is None or serial not in self.times:
            return
        predicted = self.times[serial].compute_s(*span) * self._base_slowdown.get(serial, 1.0)
        if predicted > 0.05:
            ratio = min(3.0, max(0.33, inference_s / predicted))
            old = self.learned.get(serial)
            self.learned[serial] = ratio if old is None else (1 - self.alpha) * old + self.alpha * ratio

    def _op_span(self, graph: str) -> tuple[int, int] | None:
        """The op range a part we pushed covers, from its name (<digest>-<cut>-head.tflite)."""
        n = len(self.ops)
        if graph == f"{self.digest}-whole.tflite":
            return 0, n
        stem = graph.removeprefix(f"{self.digest}-").removesuffix(".tflite")
        cut, _, which = stem.partition("-")
        if not cut.isdigit() or which not in ("head", "tail"):
            return None
        return (0, int(cut)) if which == "head" else (int(cut), n)

    def _threads(self) -> int:
        """benchmark_model --num_threads: the profile's classify threads (first phone's)."""
        return self.profile(next(iter(self.devices))).label_image.threads if self.devices else 4

    def profile(self, serial: str) -> DeviceProfile:
        return self.book.for_model(self.models_of.get(serial))

    def _known_times(self, serial: str, prof: DeviceProfile) -> OpTimes:
        return (self.store.get(serial, self.digest, len(self.ops))
                or profile_op_times(prof, self.model_name, len(self.ops))
                or prior_op_times(prof, self.ops))

    def measure(self, serials: Sequence[str] | None = None, runs: int = 5) -> dict[str, OpTimes]:
        """Op profile of the whole model on each phone (pushed once), stored per serial;
        the phones are measured side by side."""
        small = self.runner.parts(self.cuts[0].op_index) if self.cuts else None

        def one(s: str) -> OpTimes:
            remote = self.runner.ensure_whole(s)
            little = None
            if small is not None:
                little = (self.runner.ensure_part(s, small.cut.op_index, "head"), len(small.head) / 1e6)
            return measure_op_times(self.devices[s], self.profile(s), remote, self.ops,
                                    graph_mb=self.model_mb, small=little, runs=runs)
        todo = list(serials or self.devices)
        with ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
            out = dict(zip(todo, pool.map(one, todo), strict=True))
        for s, t in out.items():
            self.store.put(s, self.digest, t)
            self.times[s] = t
            self.launches[s] = self._launch_model(t)
            self.learned.pop(s, None)      # a fresh profile already has the phone as it is now
        return out

    def phones(self, bids: Sequence[Any], busy: Mapping[str, bool] | None = None) -> list[PhoneState]:
        out = []
        for b in bids:
            if b.serial not in self.devices:
                continue
            st = phone_state(b, self.profile(b.serial), self.times[b.serial],
                             self.links[b.serial].link(),
                             ours_in_reading=bool((busy or {}).get(b.serial)))
            if not st.excluded:
                self._base_slowdown[b.serial] = st.slowdown
                learned = self.learned.get(b.serial, 1.0)
                st = replace(st, slowdown=st.slowdown * learned,
                             factors={**st.factors, "learned_x": learned})
            out.append(st)
        return out

    def decide(self, bids: Sequence[Any] | None = None, *, force: bool = False) -> Plan:
        """The plan for the next job: the current one unless the inputs moved past the
        threshold (or `force`); a new plan is logged with the reason."""
        phones = self.phones(self.bids() if bids is None else bids)
        snap = Snapshot.of(phones)
        reason = "asked" if force else replan_reason(self.snapshot, snap, self.threshold)
        if reason is None and self.plan is not None:
            return self.plan
        new = choose_plan(phones, self.cuts, n_ops=len(self.ops),
                          input_bytes=self.runner.input_spec.nbytes,
                          output_bytes=self.runner.output_spec.nbytes, model_mb=self.model_mb,
                          objective=self.objective, origin=self.origin, privacy=self.privacy, allow_split=self.allow_split)
        prev = self.plan.chosen.label if self.plan and self.plan.chosen else None
        self.log.write({"t": round(time.time(), 3), "reason": reason,
                        "plan": new.chosen.label if new.chosen else None, "previous": prev,
                        "objective": self.objective, "why": new.reason,
                        "predicted_s": round(new.chosen.total_s, 4) if new.chosen else None})
        self.plan, self.snapshot = new, snap
        return new

    def candidate(self, label: str, bids: Sequence[Any] | None = None) -> Candidate:
        """A fixed plan `A:CUT:B` (or `whole:D`) with its prediction, for `--plan A:CUT:B`."""
        phones = self.phones(self.bids() if bids is None else bids)
        plan = choose_plan(phones, self.cuts, n_ops=len(self.ops),
                           input_bytes=self.runner.input_spec.nbytes,
                           output_bytes=self.runner.output_spec.nbytes, model_mb=self.model_mb,
                           objective=self.objective, min_gain=-1e9)
        for c in plan.candidates:
            if c.label == label:
                if self.privacy and c.a != self.origin:
                    raise SplitError(f"plan {label!r} would send the picture to {c.a}",
                                     hint=f"with --privacy the head runs on the origin {self.origin}")
                return c
        valid = ", ".join(str(c.op_index) for c in self.cuts[:12])
        excl = "".join(f"; {s} excluded: {w}" for s, w in plan.excluded.items())
        raise SplitError(f"plan {label!r} is not a candidate{excl}", hint=f"use A:CUT:B with "
                         f"serials of eligible phones and a cut point ({valid}, ...; "
                         "`adbflow split cuts`)")
