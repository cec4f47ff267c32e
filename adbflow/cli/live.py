"""The live view of `watch` / `run` / `demo`: a rich table of jobs (TTY) or one line per
event (pipes), fed the pipeline's typed events (adbflow.runtime.events).

Why handlers by type: each event class has its own fields; `match` on the class keeps a
misspelt field a type error instead of a silent `None` from `dict.get`. Events arrive from
worker threads; the table is re-rendered under a lock.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from adbflow.runtime.events import (
    DeviceError,
    DeviceQuarantined,
    DeviceReleased,
    DriftChanged,
    Event,
    GateDecided,
    JobAdded,
    JobClaimedElsewhere,
    JobDone,
    JobFailed,
    JobOwnedElsewhere,
    JobRequeued,
    JobResumed,
    JobSkipped,
    JobStarted,
    JobWaiting,
    LaptopFaultSeen,
    PartialsCleaned,
    Recovered,
    StageFailed,
    StageFinished,
    StageStarted,
    Watching,
)
from adbflow.runtime.story import display_text, render_result


class LiveView:
    """Progress for people; `--json` keeps stdout for the job documents."""

    def __init__(self, *, json_out: bool, live: bool) -> None:
        from rich.console import Console
        self.console = Console(stderr=True, soft_wrap=True)
        self.out = Console(soft_wrap=True)
        self.json_out = json_out
        self.jobs: dict[int, dict[str, Any]] = {}
        self.quarantined: dict[str, DeviceQuarantined] = {}   # serial -> its last strike
        self.lock = threading.Lock()
        self.live = None
        if live and self.console.is_terminal:
            from rich.live import Live
            self.live = Live(self._table(), console=self.console, refresh_per_second=4,
                             transient=False)

    def __enter__(self) -> LiveView:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def _table(self):
        from rich.table import Table
        caption = self.quarantine_caption(time.time())
        t = Table(title="adbflow watch", expand=False, caption=caption or None)
        for col in ("job", "from", "picture", "state", "stage", "classify", "generate",
                    "top label", "secs"):
            t.add_column(col)
        for jid in sorted(self.jobs)[-15:]:
            j = self.jobs[jid]
            t.add_row(str(jid), j.get("origin", ""), display_text(j.get("name", ""), 32),
                      j.get("state", ""), j.get("stage", ""), j.get("classify", ""),
                      j.get("generate", ""), display_text(j.get("label", ""), 24),
                      f"{time.time() - j['t0']:.1f}" if j.get("state") == "running"
                      else j.get("secs", ""))
        return t

    def quarantine_caption(self, now: float) -> str:
        """`quarantined: SERIAL 24 s (timeout), ...` for devices still sitting out bids."""
        held = [(s, ev) for s, ev in sorted(self.quarantined.items()) if ev.until > now]
        if not held:
            return ""
        return "quarantined: " + ", ".join(
            f"{display_text(s, 40)} {ev.until - now:.0f} s ({ev.kind})" for s, ev in held)

    def _say(self, text: str) -> None:
        if self.live is not None:
            self.live.console.print(text, markup=False, highlight=False)
        else:
            self.console.print(text, markup=False, highlight=False)

    MAX_JOBS = 200     # the table shows 15; older jobs are in `adbflow jobs`

    def __call__(self, ev: Event) -> None:
        with self.lock:
            self._handle(ev)
            if len(self.jobs) > self.MAX_JOBS:      # bounded over thousands of pictures
                for jid in sorted(self.jobs)[:len(self.jobs) - self.MAX_JOBS]:
                    del self.jobs[jid]
            if self.live is not None:
                self.live.update(self._table())

    def _finish(self, ev: JobDone | JobFailed | JobSkipped, state: str) -> dict[str, Any]:
        j = self.jobs.setdefault(ev.job, {"t0": ev.t})
        j["state"] = state
        j["secs"] = f"{ev.t - j.get('t0', ev.t):.1f}"
        return j

    def _handle(self, ev: Event) -> None:
        match ev:
            case JobAdded() | JobResumed():
                self.jobs[ev.job] = {"origin": ev.serial, "name": ev.name,
                                     "state": "pending", "t0": ev.t}
                verb = ("resuming" if isinstance(ev, JobResumed)
                        else f"new picture ({ev.how})")
                self._say(f"{verb}: job {ev.job} {display_text(ev.name)} on {ev.serial}")
            case JobStarted():
                self.jobs.setdefault(ev.job, {"origin": ev.serial, "name": ev.name}).update(
                    state="running", t0=ev.t)
            case StageStarted():
                self.jobs.setdefault(ev.job, {"t0": ev.t}).update(stage=ev.stage)
            case StageFinished():
                j = self.jobs.setdefault(ev.job, {"t0": ev.t})
                if ev.stage in ("classify", "generate"):
                    j[ev.stage] = ev.serial or ""
                if ev.stage == "classify":
                    labels = (ev.output or {}).get("labels") or []
                    j["label"] = labels[0]["name"] if labels else ""
                self._say(f"job {ev.job}: {ev.stage} done on {ev.serial or 'laptop'}")
            case StageFailed():
                self._say(f"job {ev.job}: {ev.stage} failed on {ev.serial or 'laptop'}: "
                          f"{display_text(str(ev.error), 300)}"
                          + ("" if ev.final else " (re-bidding)"))
            case JobDone():
                self._finish(ev, "done")
                if not self.json_out:
                    self.out.print(render_result(ev.result), markup=False, highlight=False)
            case JobFailed() | JobSkipped():
                j = self._finish(ev, "failed" if isinstance(ev, JobFailed) else "skipped")
                self._say(f"job {ev.job} {j['state']}: {display_text(str(ev.error), 400)}")
            case DeviceQuarantined():
                self.quarantined[str(ev.serial)] = ev
                self._say(f"device {ev.serial} quarantined for {ev.seconds} s "
                          f"(strike {ev.strikes}: {ev.kind} in {ev.stage}); "
                          "other devices take the next jobs")
            case DeviceReleased():
                self.quarantined.pop(str(ev.serial), None)
                self._say(f"device {ev.serial} back in the bids ({ev.reason})")
            case DeviceError():
                self._say(f"device {ev.serial}: {display_text(str(ev.error), 300)}")
            case LaptopFaultSeen():
                if ev.first:
                    self._say(f"{display_text(ev.error, 400)}; jobs wait (pending) and resume "
                              "by themselves")
            case JobWaiting():
                self.jobs.setdefault(ev.job, {"t0": ev.t}).update(state="waiting")
                self._say(f"job {ev.job} waits: {display_text(ev.error, 300)}")
            case JobRequeued():
                self.jobs.setdefault(ev.job, {"t0": ev.t}).update(state="pending")
                self._say(f"job {ev.job} goes on: {display_text(ev.reason, 200)}")
            case JobClaimedElsewhere():
                self.jobs.setdefault(ev.job, {"t0": ev.t}).update(state="waiting")
                self._say(f"job {ev.job}: picture claimed by another orchestrator "
                          f"({display_text(ev.owner, 100)}); looked at again in "
                          f"{ev.left_s:.0f} s")
            case JobOwnedElsewhere():
                self._say(f"job {ev.job} is being processed by {ev.owner}; waiting for it")
            case PartialsCleaned():
                self._say(f"removed {ev.count} temp file(s) a stopped run left behind")
            case Recovered():
                self._say(f"recovered {ev.attempts} attempt(s) left running by a stopped run")
            case Watching():
                self._say("watching " + (", ".join(ev.devices) or "no devices yet")
                          + " (Ctrl-C to stop)")
            case GateDecided():
                self._say(f"job {ev.job}: {ev.stage} {'runs' if ev.run else 'skipped'} "
                          f"({display_text(ev.reason, 200)})")
            case DriftChanged():
                self._say(f"drift {ev.state} on {ev.stage}: mean top-1 {ev.mean:.3f} "
                          f"vs level {ev.level:g}")
            case _:
                pass   # BidRound: in the job's result, not worth a line
