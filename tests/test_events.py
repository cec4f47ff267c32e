"""Typed events serialise to exactly the dicts the pipeline emitted before they were types
(same kind strings, field names and order), and job/attempt states stay the stored strings."""
from __future__ import annotations

import json
import sqlite3

import pytest

from adbflow.runtime import events as ev
from adbflow.runtime.journal import AttemptState, JobState, Journal

T = 1_700_000_000.25


def old(type_: str, **info):
    """What `Pipeline._emit(type_, **info)` built before events were dataclasses."""
    return {"type": type_, "t": T, **info}


RESULT = {"job": 3, "labels": [{"name": "tabby", "score": 0.6}], "story": "A cat."}
BIDS = [{"serial": "a", "model": "m", "cpu_load": None, "mem_available_kb": 1, "error": "x"}]
CASES = [
    (ev.JobAdded(job=1, serial="s", name="a.jpg", how="inotify", t=T),
     old("job_added", job=1, serial="s", name="a.jpg", how="inotify")),
    (ev.JobResumed(job=1, serial="s", name="a.jpg", t=T),
     old("job_resumed", job=1, serial="s", name="a.jpg")),
    (ev.JobStarted(job=1, serial="s", name="a.jpg", t=T),
     old("job_started", job=1, serial="s", name="a.jpg")),
    (ev.JobDone(job=3, result=RESULT, t=T), old("job_done", job=3, result=RESULT)),
    (ev.JobSkipped(job=3, error="same content as job 2", t=T),
     old("job_skipped", job=3, error="same content as job 2")),
    (ev.JobFailed(job=3, error="boom", t=T), old("job_failed", job=3, error="boom")),
    (ev.StageStarted(job=1, stage="pull", attempt=2, t=T),
     old("stage_started", job=1, stage="pull", attempt=2)),
    (ev.StageFinished(job=1, stage="classify", serial="s", output={"labels": []}, t=T),
     old("stage_done", job=1, stage="classify", serial="s", output={"labels": []})),
    (ev.StageFailed(job=1, stage="pull", serial="s", error="empty", final=True, t=T),
     old("stage_failed", job=1, stage="pull", serial="s", error="empty", final=True)),
    (ev.StageFailed(job=1, stage="generate", serial=None, error="no device",
                    kind="no-device", final=False, t=T),
     old("stage_failed", job=1, stage="generate", serial=None, error="no device",
         kind="no-device", final=False)),
    (ev.BidRound(stage="classify", winner="a", reason="r", bids=BIDS, quarantined=["q"], t=T),
     old("bid", stage="classify", winner="a", reason="r", bids=BIDS, quarantined=["q"])),
    (ev.DeviceQuarantined(serial="q", job=1, stage="classify", seconds=30.0, until=T + 30,
                          strikes=1, kind="timeout", error="timed out", t=T),
     old("device_quarantined", serial="q", job=1, stage="classify", seconds=30.0,
         until=T + 30, strikes=1, kind="timeout", error="timed out")),
    (ev.DeviceReleased(serial="q", reason="healthy bid", t=T),
     old("device_released", serial="q", reason="healthy bid")),
    (ev.DeviceError(serial="s", error="listing failed", t=T),
     old("device_error", serial="s", error="listing failed")),
    (ev.Recovered(attempts=2, t=T), old("recovered", attempts=2)),
    (ev.Watching(devices=["a", "b"], t=T), old("watching", devices=["a", "b"])),
    # flows (new kinds; no old dict to match: the JSON form is their fields)
    (ev.GateDecided(job=1, stage="big", run=True, reason="top-1 0.4 < tau 0.5", t=T),
     old("gate", job=1, stage="big", run=True, reason="top-1 0.4 < tau 0.5")),
    (ev.DriftChanged(stage="small", state="raised", mean=0.4, level=0.45, t=T),
     old("drift", stage="small", state="raised", mean=0.4, level=0.45)),
    # added with issue 14 (no older dict form: the shape they were introduced with)
    (ev.JobWaiting(job=4, serial="o", error="origin phone o unreachable", t=T),
     old("job_waiting", job=4, serial="o", error="origin phone o unreachable")),
    (ev.JobOwnedElsewhere(job=4, owner="pid 7 on h", t=T),
     old("job_owned_elsewhere", job=4, owner="pid 7 on h")),
    (ev.JobRequeued(job=4, reason="origin phone o is back", t=T),
     old("job_requeued", job=4, reason="origin phone o is back")),
    (ev.LaptopFaultSeen(job=None, path="/d", error="no space", first=True, t=T),
     old("laptop_fault", job=None, path="/d", error="no space", first=True)),
    (ev.PartialsCleaned(files=["/d/x.part"], count=1, t=T),
     old("cleaned", files=["/d/x.part"], count=1)),
    (ev.JobClaimedElsewhere(job=5, serial="o", owner="h:1:2:ab", left_s=12.5, t=T),
     old("job_claimed_elsewhere", job=5, serial="o", owner="h:1:2:ab", left_s=12.5)),
]


@pytest.mark.parametrize("event, expected", CASES, ids=lambda x: getattr(x, "type", ""))
def test_every_event_serialises_to_the_old_dict(event, expected) -> None:
    assert list(event.to_json().items()) == list(expected.items())    # names and order
    assert json.loads(json.dumps(event.to_json())) == json.loads(json.dumps(expected))


def test_every_event_type_is_covered_and_kinds_are_unique() -> None:
    assert {type(e) for e, _ in CASES} == set(ev.EVENT_TYPES)
    kinds = [cls.type for cls in ev.EVENT_TYPES]
    assert len(kinds) == len(set(kinds)) == 23   # 15 old + 2 flow kinds + 6 of issue 14


def test_events_are_frozen_and_stamped_when_made() -> None:
    e = ev.Recovered(attempts=1)
    with pytest.raises(AttributeError):
        e.attempts = 2  # type: ignore[misc]
    assert e.t > T


def test_a_broken_view_does_not_break_the_emitter() -> None:
    seen = []

    def view(e):
        seen.append(e)
        raise RuntimeError("view bug")

    emit = ev.Emitter(view)
    emit(ev.Recovered(attempts=1))                 # logged, not raised
    assert len(seen) == 1


def test_states_are_the_stored_strings(tmp_path) -> None:
    assert [s.value for s in JobState] == ["pending", "running", "done", "failed", "skipped"]
    assert [s.value for s in AttemptState] == ["running", "done", "failed", "abandoned"]
    assert JobState.DONE == "done" and f"{JobState.DONE}" == "done" and str(JobState.DONE) == "done"
    assert json.dumps({"state": JobState.FAILED}) == '{"state": "failed"}'
    j = Journal(tmp_path / "journal.sqlite")
    jid, _ = j.add_job(source="laptop", serial="laptop", path="/x.png", size=1, mtime=1.0,
                       how="run")
    att = j.begin_attempt(jid, "ingest", None)
    j.fail_attempt(att, "bad", kind="input")
    j.finish_job(jid, JobState.FAILED, error="bad")
    j.close()
    # what is on disk is the plain string (journals written before the enums read the same)
    db = sqlite3.connect(tmp_path / "journal.sqlite")
    assert db.execute("SELECT state FROM jobs").fetchone()[0] == "failed"
    assert db.execute("SELECT state FROM attempts").fetchone()[0] == "failed"
    db.close()
    j = Journal(tmp_path / "journal.sqlite")
    job = j.job(jid)
    assert job.state is JobState.FAILED and j.attempts(jid)[0].state is AttemptState.FAILED
    j.close()


def test_the_live_view_handles_every_event_type(capsys) -> None:
    from adbflow.cli.live import LiveView
    view = LiveView(json_out=True, live=False)
    for event, _ in CASES:
        view(event)
    err = capsys.readouterr().err
    assert "new picture (inotify): job 1 a.jpg on s" in err
    assert "job 1: pull failed on s: empty" in err and "(re-bidding)" in err
    assert "device q back in the bids (healthy bid)" in err
    assert "recovered 2 attempt(s)" in err and "watching a, b" in err
    assert view.jobs[3]["state"] == "failed"        # done, then skipped, then failed
    assert view.jobs[1]["classify"] == "s" and view.quarantined == {}
