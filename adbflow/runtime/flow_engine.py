"""Runs a job through a non-default flow: gates, model selection, placement.

Why beside the pipeline instead of inside it: the default flow (`classify-story`) keeps the
pipeline's own path (unchanged behaviour and journal rows); other flows reuse its pieces
(the attempt loop, the dispatcher's bid rounds and slots, the pull/ingest bodies, picture
conversion, label_image/llama runners) and add only what a flow needs. Journal: one
attempt row per flow stage, named after the stage; a stage a gate skipped is committed as
`{"skipped": true, "gate": ...}` with no device, so every gate decision is in the journal and
a resumed job does not decide again. Old journals stay readable: nothing new in the schema.

The laptop tier: a classify stage with `placement.tier = "any"` or `"host"` adds the
orchestrator host's bid (adbflow.runtime.host_tier) to its bid rounds; when it wins, the
stage runs in-process with ai-edge-litert on the BMP the phones would get, and its journal
row and result name the device "laptop" (HOST_SERIAL) like any phone's serial.

Not done here (yet): learned service times for flow classify stages (the selector uses the
profiles' per-model priors and the host's measured speeds), story placement rules.
"""
from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

from adbflow.errors import FlowError, JobError
from adbflow.flows import gates
from adbflow.flows.model import CLASSIFICATION, Flow, GateKind, OnMiss, Run, Stage, Tier
from adbflow.runtime.attempts import Attempt
from adbflow.runtime.dispatcher import bid_summary, decision_summary
from adbflow.runtime.events import (
    DriftChanged,
    GateDecided,
)
from adbflow.runtime.host_tier import HostTier, host_models
from adbflow.runtime.journal import JobRecord
from adbflow.runtime.stages import classify_on, generate_on, llama_for
from adbflow.runtime.story import build_prompt, story_opening
from adbflow.scheduling.host_bid import HOST_SERIAL
from adbflow.scheduling.policy import CostModel, Task
from adbflow.scheduling.selector import Ask, SelectorPolicy, feasible


def ask_of(stage: Stage, origin: str | None) -> Ask:
    p, m = stage.placement, stage.model
    return Ask(model_type=m.type, min_accuracy=m.min_accuracy, model_name=m.name,
               locality=p.locality.value, origin=origin, deadline_s=p.deadline_s,
               reject_on_miss=p.on_miss is OnMiss.REJECT, min_cores=p.min_cores,
               min_ram_mb=p.min_ram_mb, abi=p.abi, tier=p.tier.value)


def uses_host(flow: Flow) -> bool:
    """Does any stage let the laptop tier run it?"""
    return any(st.placement.tier is not Tier.DEVICES for st in flow.stages)


def check_flow(flow: Flow, profiles: Any) -> None:
    """Reject, before any picture, a flow whose model ask or policy no profile can meet."""
    flow.validate()
    on_host = host_models(list(profiles.profiles.values())) if uses_host(flow) else []
    for i, st in enumerate(flow.stages):
        if st.run is Run.CLASSIFY:
            why = feasible(ask_of(st, None), profiles, on_host)
            if why:
                raise FlowError(f"{flow.source or flow.name}: stages[{i}] ({st.name}): {why}",
                                hint="see `adbflow flows show` and the profiles' [[models]]")


class FlowRunner:
    """`process(job_id)` for a pipeline running `flow` (the pipeline hands itself in for its
    journal, stage bodies, dispatcher, attempt loop and story files)."""

    def __init__(self, pipeline: Any, flow: Flow) -> None:
        check_flow(flow, pipeline.profiles)
        self.p = pipeline
        self.flow = flow
        self._drift = gates.DriftMonitor(flow.drift) if flow.drift else None
        self._drift_lock = threading.Lock()
        pol_model = getattr(pipeline.policy, "model", None)
        self.cost_model = pol_model if isinstance(pol_model, CostModel) else CostModel()
        # the laptop tier starts only for flows that ask for it (HostTierError when
        # ai-edge-litert is missing: before any picture, naming the extra to install)
        self.host: HostTier | None = None
        if uses_host(flow):
            self.host = getattr(pipeline, "host_tier", None) or HostTier(
                list(pipeline.profiles.profiles.values()),
                cache_dir=getattr(pipeline, "data_dir", None))

    # -------------------------------------------------------------- one job
    def run_stages(self, job: JobRecord) -> tuple[dict[str, Any], tuple[str, ...]]:
        """The flow's stages for one job, inside the pipeline's job rules (Pipeline.
        _run_stages: attempt ownership, the picture's claim at its origin, waits for a
        missing origin or a laptop fault, `done` only with outputs): (result, the stages a
        `done` job must have outputs of). Committed stages are not run again."""
        p = self.p
        job, first = p.first_stage(job)
        outputs: dict[str, dict[str, Any]] = {}
        for st in self.flow.stages:
            outputs[st.name] = self._run(job, st, outputs)
        result = self.compose(p.journal.job(job.id), first, outputs)
        return result, (first, *(st.name for st in self.flow.stages))

    def _ran(self, outputs: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
        return [(st.name, outputs[st.name]) for st in self.flow.stages
                if st.run is Run.CLASSIFY and st.name in outputs
                and not outputs[st.name].get("skipped")]

    def _run(self, job: JobRecord, st: Stage, outputs: dict[str, dict[str, Any]]
             ) -> dict[str, Any]:
        p = self.p
        done = p.journal.stage_output(job.id, st.name)
        if done is not None:
            return done
        decision = None
        if st.gate is not None:
            drifting = False
            if (self._drift is not None and st.gate.kind is GateKind.ESCALATE
                    and st.gate.on == self._drift.drift.on):
                with self._drift_lock:
                    drifting = self._drift.switching
            decision = gates.decide(st.gate, self._ran(outputs), drifting=drifting)
            p.emit(GateDecided(job=job.id, stage=st.name, run=decision.run,
                               reason=decision.reason))
            if not decision.run:
                att = p.journal.begin_attempt(job.id, st.name, None)
                out = {"skipped": True, "gate": decision.to_json()}
                p.journal.commit_attempt(att, out)
                return out
        gate_json = decision.to_json() if decision else None
        if st.run is Run.CLASSIFY:
            body = self._classify_body(st, gate_json)
        else:
            body = self._story_body(st, outputs, gate_json)
        out = p._stage(job, st.name, body)
        if st.run is Run.CLASSIFY and self._drift is not None and self._drift.drift.on == st.name:
            top1 = gates.top2(out.get("labels") or [])[0]
            with self._drift_lock:
                change = self._drift.observe(top1)
                mean = self._drift.mean
            if change:
                p.emit(DriftChanged(stage=st.name, state=change, mean=round(mean, 4),
                                    level=self._drift.drift.level))
        return out

    # -------------------------------------------------------------- stage bodies
    def _classify_body(self, st: Stage, gate_json: dict[str, Any] | None) -> Any:
        p = self.p

        def body(job: JobRecord, att: Attempt) -> dict[str, Any]:
            job = p.journal.job(job.id)
            origin = job.serial if job.source == "device" else None
            ask = ask_of(st, origin)
            if ask.locality == "strict-origin" and origin is None:
                raise JobError(f"stage {st.name}: strict = \"origin\" needs a picture from a "
                               "phone; this one came from the laptop")
            bmp, image_info, convert_s = p.stages._bmp(job, 224)
            task = Task("classify", input_bytes=bmp.stat().st_size, output_bytes=1024)
            host = self.host if ask.tier != "devices" else None
            policy = SelectorPolicy(ask, self.cost_model,
                                    host_profile=host.profile() if host else None)
            won = p.dispatcher.bid(task, st.name, att.excluded, p.stages._claim(att),
                                   policy=policy, extra=host.offer if host else None)
            if won.serial == HOST_SERIAL and host is not None:
                return self._on_host(job, att, host, won, bmp, image_info, convert_s, gate_json)
            try:
                detail = dict(won.decision.detail)
                profile = p.profiles.for_model(won.bid.model)
                model = profile.model(detail["model"])
                if model is not None:
                    # later decisions cost this queued task as the chosen variant (one
                    # reference swap: Inflight reads award.task under its lock)
                    won.award.task = replace(won.award.task,
                                             prior_s=model.ms(profile.timing) / 1000.0)
                if model is None:   # the profile changed under us: a device-side problem
                    raise JobError(f"{won.serial}: profile {profile.name} lost model "
                                   f"{detail['model']!r}")
                if model.input_size != image_info["output_size"]:
                    bmp, image_info, extra = p.stages._bmp(job, model.input_size)
                    convert_s += extra
                spec = replace(profile.label_image, model=model.path)
                with p.dispatcher.slot(won, "classify") as slot_wait_s, \
                        p.stages.leased(won, "classify") as held:   # README "Leases"
                    out = classify_on(won.device, spec, bmp, timeouts=p.stages.timeouts,
                                      leases=p.stages.leases, held=held)
            finally:
                p.dispatcher.release(won)
            detail["pairs"] = list(detail.get("pairs", []))[:12]   # bounded journal row
            out.update(serial=won.serial, profile=profile.name, model_name=model.name,
                       selection=detail, image=image_info, gate=gate_json,
                       bid=bid_summary(won.bid),
                       decision=decision_summary(won.decision, att.quarantined),
                       timings={"bid_s": round(won.bid_s, 4), "convert_s": round(convert_s, 4),
                                "slot_wait_s": round(slot_wait_s, 4), "push_s": out["push_s"],
                                "run_s": out["run_s"]})
            return out
        return body

    def _on_host(self, job: JobRecord, att: Attempt, host: HostTier, won: Any, bmp: Any,
                 image_info: dict[str, Any], convert_s: float,
                 gate_json: dict[str, Any] | None) -> dict[str, Any]:
        """The rest of a classify stage the laptop won: the BMP the phones would get, at
        the chosen model's size, classified in-process; the output has a phone stage's
        keys (serial "laptop", no push)."""
        p = self.p
        try:
            detail = dict(won.decision.detail)
            profile = host.profile()
            model = profile.model(detail["model"])
            if model is None:
                raise JobError(f"{HOST_SERIAL}: the laptop tier lost model {detail['model']!r}")
            won.award.task = replace(won.award.task, prior_s=model.ms(profile.timing) / 1000.0)
            if model.input_size != image_info["output_size"]:
                bmp, image_info, extra = p.stages._bmp(job, model.input_size)
                convert_s += extra
            with p.dispatcher.slot(won, "classify") as slot_wait_s:
                out = host.classify(bmp, model.name)
        finally:
            p.dispatcher.release(won)
        detail["pairs"] = list(detail.get("pairs", []))[:12]
        out.update(serial=HOST_SERIAL, profile=profile.name, model_name=model.name,
                   selection=detail, image=image_info, gate=gate_json,
                   bid=bid_summary(won.bid), decision=decision_summary(won.decision, att.quarantined),
                   timings={"bid_s": round(won.bid_s, 4), "convert_s": round(convert_s, 4),
                            "slot_wait_s": round(slot_wait_s, 4), "push_s": 0.0,
                            "run_s": out["run_s"]})
        return out

    def _story_body(self, st: Stage, outputs: dict[str, dict[str, Any]],
                    gate_json: dict[str, Any] | None) -> Any:
        p = self.p

        def body(job: JobRecord, att: Attempt) -> dict[str, Any]:
            # the named classify stage, else (it was gated off) the latest classification
            src = (gates.source_of(st.input, self._ran(outputs))
                   or gates.source_of(CLASSIFICATION, self._ran(outputs)))
            labels = (src[1].get("labels") if src else None) or []
            prompt = build_prompt(labels)
            task = Task("generate", input_bytes=len(prompt.encode()), output_bytes=2048,
                        prompt_tokens=max(1, len(prompt) // 4))
            won = p.dispatcher.bid(task, st.name, att.excluded, p.stages._claim(att))
            try:
                profile = p.profiles.for_model(won.bid.model)
                with p.dispatcher.slot(won, "generate") as slot_wait_s, \
                        p.stages.leased(won, "generate") as held:
                    out = generate_on(won.device, llama_for(profile, won.bid.perf_cores), prompt,
                                      timeouts=p.stages.timeouts,
                                      opening=story_opening(labels),
                                      modes=p.stages.llama_modes, leases=p.stages.leases,
                                      held=held)
            finally:
                p.dispatcher.release(won)
            out.update(serial=won.serial, profile=profile.name, prompt=prompt, gate=gate_json,
                       from_stage=src[0] if src else None, bid=bid_summary(won.bid),
                       decision=decision_summary(won.decision, att.quarantined),
                       timings={"bid_s": round(won.bid_s, 4),
                                "slot_wait_s": round(slot_wait_s, 4), "run_s": out["run_s"]})
            return out
        return body

    # -------------------------------------------------------------- result
    def compose(self, job: JobRecord, first: str, outputs: dict[str, dict[str, Any]]
                ) -> dict[str, Any]:
        """The job's record from committed stage outputs (same keys as the default flow's
        where they mean the same: labels, story, devices, timings)."""
        pulled = self.p.journal.stage_output(job.id, first) or {}
        ran = self._ran(outputs)
        final = ran[-1] if ran else None
        story_out = next((outputs[s.name] for s in reversed(self.flow.stages)
                          if s.run is Run.STORY and not outputs[s.name].get("skipped")), None)
        stages_view: dict[str, Any] = {}
        timings: dict[str, Any] = {f"{first}_s": pulled.get("pull_s")}
        devices: dict[str, Any] = {first: job.serial if job.source == "device" else "laptop"}
        for st in self.flow.stages:
            out = outputs[st.name]
            view: dict[str, Any] = {"ran": not out.get("skipped"), "gate": out.get("gate")}
            if not out.get("skipped"):
                view.update(serial=out.get("serial"), model=out.get("model_name"),
                            top1=gates.top2(out.get("labels") or [])[0]
                            if st.run is Run.CLASSIFY else None,
                            deadline_met=(out.get("selection") or {}).get("deadline_met"))
                devices[st.name] = out.get("serial")
                timings[f"{st.name}_s"] = (out.get("timings") or {}).get("run_s")
            stages_view[st.name] = view
        return {
            "job": job.id, "source": job.source, "origin": job.serial, "path": job.path,
            "detected_by": job.how, "name": job.name, "size": job.size, "sha256": job.sha256,
            "flow": self.flow.name, "labels": final[1].get("labels", []) if final else [],
            "classified_by": final[0] if final else None,
            "story": story_out.get("story", "") if story_out else "",
            "prompt": story_out.get("prompt") if story_out else None,
            "devices": devices, "stages": stages_view, "timings": timings,
            "policy": getattr(self.p.policy, "name", None),
        }
