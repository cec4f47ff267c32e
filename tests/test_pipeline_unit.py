"""Pipeline logic against in-memory devices: stages, re-bidding, bad input, resume after a
crash, concurrency slots, watch/baseline rules. The fleet tests repeat the key cases with real
adb, real devices processes and real models."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from pipeline_fakes import FakeBidder, FakeDevice, FakeInventory, as_gone_process

from adbflow.paths import ASSETS_DIR
from adbflow.runtime.detect import NewPicture
from adbflow.runtime.journal import Journal
from adbflow.runtime.pipeline import Pipeline, PipelineConfig
from adbflow.runtime.stages import REMOTE_IMAGE

PICS = "/storage/emulated/0/Pictures"
CHELSEA = (ASSETS_DIR / "chelsea.png").read_bytes()


@pytest.fixture
def fleet():
    devs = [FakeDevice(f"dev{i}") for i in (1, 2, 3)]
    return devs, FakeInventory(devs), FakeBidder({"dev1": 70.0, "dev2": 40.0, "dev3": 5.0})


def make(tmp_path: Path, inv, bidder, **kw) -> Pipeline:
    cfg = PipelineConfig(data_dir=tmp_path / "data", retry_wait_s=0.01, device_wait_s=0.2,
                         use_inotify=kw.pop("use_inotify", False), **kw)
    return Pipeline(cfg, inv, bidder=bidder)


def add(p: Pipeline, dev: FakeDevice, name: str, data: bytes, mtime: float = 1000.0) -> int:
    path = dev.snap(name, data, mtime)
    jid, created = p.add_device_picture(NewPicture(dev.serial, PICS, name, len(data),
                                                   dev.files[path][1], "test"))
    assert created
    return jid


def label_calls(devs) -> dict[str, int]:
    return {d.serial: sum(1 for c in d.calls if c[0].endswith("label_image")) for d in devs}


def test_happy_path(tmp_path, fleet) -> None:
    devs, inv, bidder = fleet
    p = make(tmp_path, inv, bidder)
    jid = add(p, devs[1], "IMG_1.png", CHELSEA)
    job = p.process(jid)
    assert job.state == "done", job.error
    r = job.result
    assert [lb["name"] for lb in r["labels"]][:1] == ["tiger cat"]
    assert r["story"].startswith("Once upon a time") and "[end of text]" not in r["story"]
    assert r["devices"] == {"pull": "dev2", "classify": "dev3", "generate": "dev3"}
    assert devs[2].files[REMOTE_IMAGE][0][:2] == b"BM"          # the BMP is on the winner
    assert set(r["timings"]) >= {"pull_s", "convert_s", "push_s", "classify_s", "generate_s",
                                 "total_s"}
    assert r["attempts"] == {"pull": 1, "classify": 1, "generate": 1}
    argv = [c for c in devs[2].calls if c[0].endswith("llama-completion")][-1]  # after the check run
    assert "tiger cat" in argv[argv.index("-p") + 1]
    local = Path(p.journal.job(jid).local_path)
    assert (tmp_path / "data").resolve() in local.resolve().parents
    assert (tmp_path / "data" / "stories" / f"{jid}.txt").read_text().count("tiger cat") >= 1
    assert p.process(jid).state == "done"                       # finished jobs never re-run
    assert label_calls(devs)["dev3"] == 1


@pytest.mark.parametrize("mode,kind", [("fail", "exit"), ("hang", "timeout"),
                                       ("garbage", "parse"), ("gone", "dropped")])
def test_classify_failure_rebids_elsewhere(tmp_path, fleet, mode, kind) -> None:
    devs, inv, bidder = fleet
    devs[2].faults["label_image"] = mode              # dev3 wins the bid, then fails
    p = make(tmp_path, inv, bidder)
    job = p.process(add(p, devs[1], "a.png", CHELSEA))
    assert job.state == "done", job.error
    atts = [(a.stage, a.serial, a.state, a.error_kind) for a in p.journal.attempts(job.id)
            if a.stage == "classify"]
    assert atts == [("classify", "dev3", "failed", kind), ("classify", "dev2", "done", None)]
    assert job.result["devices"]["classify"] == "dev2"


def test_generate_failure_rebids(tmp_path, fleet) -> None:
    devs, inv, bidder = fleet
    devs[2].faults["llama-completion"] = "garbage"
    devs[1].faults["llama-completion"] = "fail"
    p = make(tmp_path, inv, bidder)
    job = p.process(add(p, devs[1], "a.png", CHELSEA))
    assert job.state == "done" and job.result["devices"]["generate"] == "dev1"
    assert job.result["attempts"]["generate"] == 3


def test_all_devices_fail_marks_job_failed(tmp_path, fleet) -> None:
    devs, inv, bidder = fleet
    for d in devs:
        d.faults["label_image"] = "fail"
    p = make(tmp_path, inv, bidder, attempts=3)
    job = p.process(add(p, devs[0], "a.png", CHELSEA))
    assert job.state == "failed"
    assert "classify failed after 3 attempts" in job.error
    assert all(s in job.error for s in ("dev1", "dev2", "dev3"))
    assert sum(label_calls(devs).values()) == 3


@pytest.mark.parametrize("name,data,match", [
    ("empty.jpg", b"", "empty"),
    ("note $(touch pwned).jpg", b"just some text\n" * 40, "not an image"),
    ("trunc'; id;'.png", CHELSEA[:2000], "damaged or truncated"),
    ("big\nname.png", b"\xff\xd8\xff" + b"\0" * 5000, "limit"),
])
def test_bad_input_fails_without_device_time(tmp_path, fleet, name, data, match) -> None:
    devs, inv, bidder = fleet
    p = make(tmp_path, inv, bidder, max_bytes=4096)
    job = p.process(add(p, devs[0], name, data))
    assert job.state == "failed" and job.error
    import re
    assert re.search(match, job.error), job.error
    assert sum(label_calls(devs).values()) == 0
    assert not any(op == "push" for d in devs for op, _ in d.ops)
    kinds = [a.error_kind for a in p.journal.attempts(job.id) if a.state == "failed"]
    assert kinds == ["input"]                         # no retry: no device can fix bad input
    for f in (tmp_path / "data").rglob("*"):
        assert (tmp_path / "data").resolve() in f.resolve().parents


class _Crash(BaseException):
    """Stands in for kill -9: escapes every `except Exception` without journal updates."""


def test_resume_after_crash_is_exactly_once(tmp_path, fleet, monkeypatch) -> None:
    devs, inv, bidder = fleet
    p = make(tmp_path, inv, bidder)
    jid = add(p, devs[1], "a.png", CHELSEA)
    real_run = devs[2].run

    def crash_on_llama(argv, **kw):
        if argv[0].endswith("llama-completion"):
            raise _Crash()
        return real_run(argv, **kw)
    monkeypatch.setattr(devs[2], "run", crash_on_llama)
    with pytest.raises(_Crash), as_gone_process():
        p.process(jid)
    monkeypatch.setattr(devs[2], "run", real_run)
    p.journal.close()
    # a new orchestrator on the same data dir
    p2 = make(tmp_path, inv, bidder)
    assert p2.journal.recover() == 1                 # the generate attempt was running
    assert [j.id for j in p2.journal.incomplete_jobs()] == [jid]
    job = p2.process(jid)
    assert job.state == "done"
    assert label_calls(devs) == {"dev1": 0, "dev2": 0, "dev3": 1}    # classify not redone
    states = [(a.stage, a.state) for a in p2.journal.attempts(jid)]
    assert states == [("pull", "done"), ("classify", "done"), ("generate", "abandoned"),
                      ("generate", "done")]
    assert len(p2.journal.jobs()) == 1


def test_concurrent_jobs_spread_and_respect_slots(tmp_path) -> None:
    devs = [FakeDevice(f"dev{i}", delay=0.15) for i in (1, 2, 3)]
    p = make(tmp_path, FakeInventory(devs), FakeBidder({d.serial: 5.0 for d in devs}),
             concurrency=6)
    ids = [add(p, devs[0], f"p{i}.png", CHELSEA, mtime=1000 + i) for i in range(6)]
    for i in ids:
        p.submit(i)
    assert p.wait_idle(timeout=60)
    assert all(p.journal.job(i).state == "done" for i in ids)
    assert all(d.max_running.get("label_image", 0) <= 1 for d in devs)   # one slot per device
    assert sum(1 for n in label_calls(devs).values() if n) >= 2        # inflight-aware bids


def test_duplicate_content_is_skipped(tmp_path, fleet) -> None:
    devs, inv, bidder = fleet
    p = make(tmp_path, inv, bidder)
    first = p.process(add(p, devs[0], "a.png", CHELSEA, mtime=1000))
    assert first.state == "done"
    second = p.process(add(p, devs[0], "a.png", CHELSEA, mtime=2000))  # only touched
    assert second.state == "skipped" and f"job {first.id}" in second.error


def test_run_local_image_has_no_pull(tmp_path, fleet) -> None:
    devs, inv, bidder = fleet
    p = make(tmp_path, inv, bidder)
    img = tmp_path / "my cat $(x).png"
    img.write_bytes(CHELSEA)
    job = p.run_image(img)
    assert job.state == "done" and job.result["devices"]["ingest"] == "laptop"
    assert not any(op == "pull" for d in devs for op, _ in d.ops)
    jid2, created = p.add_laptop_image(img)
    assert jid2 == job.id and not created                           # exactly once


def _watch_in_thread(p: Pipeline, **kw):
    box: dict = {}

    def go():
        try:
            box["ids"] = p.watch(**kw)
        except Exception as exc:  # noqa: BLE001
            box["error"] = exc
    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, box


def test_watch_once_baseline_and_new(tmp_path, fleet) -> None:
    devs, inv, bidder = fleet
    devs[1].snap("old.png", CHELSEA, 500)
    p = make(tmp_path, inv, bidder)
    t, box = _watch_in_thread(p, once=True, poll_s=0.05, max_wait_s=20)
    time.sleep(0.3)
    devs[1].snap("new.png", CHELSEA[:-1] + b"\0", 600)
    t.join(30)
    assert not t.is_alive() and "error" not in box, box
    jobs = p.journal.jobs()
    assert [(j.name, j.state) for j in jobs] == [("new.png", "done")]
    assert p.journal.seen("dev2")[f"{PICS}/old.png"][2] is True      # remembered as baseline
    # a clean restart keeps ignoring old.png; --backlog processes it
    t, box = _watch_in_thread(p, once=True, poll_s=0.05, backlog=True, max_wait_s=20)
    t.join(30)
    assert sorted(j.name for j in p.journal.jobs()) == ["new.png", "old.png"]


def test_watch_inotify_event_path(tmp_path, fleet) -> None:
    devs, inv, bidder = fleet
    p = make(tmp_path, inv, bidder, use_inotify=True)
    t, box = _watch_in_thread(p, once=True, poll_s=30.0, max_wait_s=20)
    time.sleep(0.3)
    devs[0].snap("cam.png", CHELSEA, 700)
    devs[0].event_lines.put(f"y\t{PICS}\tcam.png")
    t.join(20)
    assert "error" not in box, box
    assert [(j.name, j.state) for j in p.journal.jobs()] == [("cam.png", "done")]


def test_pictures_taken_while_crashed_are_not_lost(tmp_path, fleet) -> None:
    devs, inv, bidder = fleet
    p = make(tmp_path, inv, bidder)
    j: Journal = p.journal
    # a previous watch listed dev1 and then died without ending its session
    j.begin_session()
    j.mark_watched("dev1")
    devs[0].snap("during-downtime.png", CHELSEA, 800)
    t, box = _watch_in_thread(p, once=True, poll_s=0.05, max_wait_s=20)
    t.join(30)
    assert "error" not in box, box
    assert [j2.name for j2 in p.journal.jobs()] == ["during-downtime.png"]


def test_second_watch_on_same_data_dir_is_refused(tmp_path, fleet) -> None:
    devs, inv, bidder = fleet
    p1 = make(tmp_path, inv, bidder)
    p2 = make(tmp_path, inv, bidder)
    p1.acquire_lock()
    from adbflow.errors import AdbflowError
    with pytest.raises(AdbflowError, match="another `adbflow watch`"):
        p2.acquire_lock()
    p1.release_lock()
    p2.acquire_lock()
    p2.release_lock()


def test_resume_only_run_keeps_crash_state_for_unseen_pictures(tmp_path, fleet) -> None:
    """kill -9 with job 1 running and picture 2 not yet detected; `watch --once` resumes job 1
    only. Picture 2 must still be processed by the following watch, not taken as baseline."""
    devs, inv, bidder = fleet
    p = make(tmp_path, inv, bidder)
    j = p.journal
    j.begin_session()                       # the crashed run
    j.mark_watched("dev1")
    jid = add(p, devs[0], "one.png", CHELSEA, mtime=100)
    devs[0].snap("two.png", CHELSEA[:-1] + b"\1", 200)      # taken while nobody watched
    t, box = _watch_in_thread(p, once=True, poll_s=0.05, max_wait_s=20)
    t.join(30)
    assert box.get("ids") == [jid] and p.journal.job(jid).state == "done"
    t, box = _watch_in_thread(p, once=True, poll_s=0.05, max_wait_s=20)
    t.join(30)
    assert "error" not in box, box
    assert sorted((x.name, x.state) for x in p.journal.jobs()) == [("one.png", "done"),
                                                                   ("two.png", "done")]


def test_picture_converted_once_when_the_fleet_input_size_is_known(tmp_path, fleet) -> None:
    """The pre-bid conversion uses the last winner's input side: only the first job of a
    fleet whose profile differs from the default pays a second conversion."""
    devs, inv, bidder = fleet
    p = make(tmp_path, inv, bidder)
    first = p.process(add(p, devs[0], "a.png", CHELSEA))
    second = p.process(add(p, devs[0], "b.png", CHELSEA, mtime=2000.0))
    assert first.state == second.state == "done"
    default = int(p.profiles.for_model(None).label_image.input_size)
    used = int(p.profiles.for_model(devs[2].model).label_image.input_size)
    work = tmp_path / "data" / "work"
    assert sorted(f.name for f in (work / str(second.id)).iterdir()) == [f"input-{used}.bmp"]
    if default != used:
        assert len(list((work / str(first.id)).iterdir())) == 2
    p.close()


def test_pictures_taken_while_cleanly_stopped_are_processed_at_the_next_start(tmp_path,
                                                                               fleet) -> None:
    """Before: after Ctrl-C (a clean stop) pictures taken while stopped were skipped unless
    --backlog (after SIGTERM they were processed). Only pictures present before the first
    start are backlog."""
    devs, inv, bidder = fleet
    devs[0].snap("before-first-start.png", CHELSEA, 100)
    p = make(tmp_path, inv, bidder)
    t, box = _watch_in_thread(p, once=True, poll_s=0.05, max_wait_s=20)
    time.sleep(0.3)
    devs[0].snap("first.png", CHELSEA[:-1] + b"\1", 200)
    t.join(30)
    assert "error" not in box, box
    devs[0].snap("while-stopped.png", CHELSEA[:-1] + b"\2", 300)
    t, box = _watch_in_thread(p, once=True, poll_s=0.05, max_wait_s=20)
    t.join(30)
    assert "error" not in box, box
    assert sorted((j.name, j.state) for j in p.journal.jobs()) == [
        ("first.png", "done"), ("while-stopped.png", "done")]


def test_stale_part_files_are_cleaned_at_start(tmp_path, fleet) -> None:
    import os

    from adbflow.runtime.laptop import clean_stale_partials
    data = tmp_path / "data"
    pics = data / "pictures" / "dev1"
    pics.mkdir(parents=True)
    dead = pics / ".1-a-x.png.part-4194999-7"            # a pull of a pid that is gone
    live = pics / f".2-b-x.png.part-{os.getpid()}-7"     # a pull running now
    old = pics / "3-c.png.part"
    fresh = pics / "4-d.png.part"
    keep = pics / "5-e-x.png"
    for f in (dead, live, old, fresh, keep):
        f.write_bytes(b"x")
    os.utime(old, (1, 1))
    removed = clean_stale_partials(data)
    assert sorted(removed) == sorted([dead, old])
    assert live.exists() and fresh.exists() and keep.exists()


def test_a_stage_whose_lease_was_taken_over_discards_its_output_and_runs_again(tmp_path):
    """Another orchestrator takes the classify slot over while our label_image runs (our
    lease expired): the output may be its picture's, so it is discarded and the stage is
    bid again; the lost attempt is not counted against --attempts."""
    from adbflow.device.lease_rules import FREE, Record

    class Stolen(FakeDevice):
        stolen = 0

        def run(self, argv, **kw):
            if argv[0].endswith("label_image") and self.stolen < 2:
                self.stolen += 1
                rec = self.leases["classify"]
                # taken over by another (and already released by it): a newer token
                self.leases["classify"] = Record(rec.token + 1, FREE, rec.boot,
                                                 rec.written_ds, 0)
            return super().run(argv, **kw)

    dev = Stolen("dev1")
    p = Pipeline(PipelineConfig(data_dir=tmp_path / "d", retry_wait_s=0.01, attempts=1),
                 FakeInventory([dev]), bidder=FakeBidder({"dev1": 5.0}))
    job = p.run_image(ASSETS_DIR / "chelsea.png")
    assert job.state == "done", job.error
    cls = [a for a in p.journal.attempts(job.id) if a.stage == "classify"]
    assert [(a.state, a.error_kind) for a in cls] == [("failed", "lease"), ("failed", "lease"),
                                                      ("done", None)]
    assert "lease lost: after the run" in cls[0].error
    assert job.result["labels"] and "cat" in job.result["labels"][0]["name"]
    p.close()


class _SlowWriter(FakeDevice):
    """A picture written in 4 steps 0.6 s apart (a slow writer, a copy in progress)."""

    def start_writing(self, name: str, data: bytes) -> str:
        path = f"{PICS}/{name}"
        steps = [data[: len(data) * k // 4] for k in (1, 2, 3, 4)]

        def write():
            for i, part in enumerate(steps):
                self.files[path] = (part, float(5000 + i))
                time.sleep(0.6)
        threading.Thread(target=write, daemon=True).start()
        time.sleep(0.05)
        return path


def test_a_slow_writer_yields_one_done_job_and_no_failed_ones(tmp_path) -> None:
    """Before: a picture written over several seconds produced 3-7 extra failed jobs
    (changed after detection / truncated). Now the pull waits until the file is stable and
    the job follows it; jobs created for its earlier sizes are skipped, never failed."""
    devs = [_SlowWriter("dev1"), FakeDevice("dev2")]
    p = make(tmp_path, FakeInventory(devs), FakeBidder({"dev1": 50.0, "dev2": 5.0}))
    t, box = _watch_in_thread(p, poll_s=0.1)
    time.sleep(0.5)
    devs[0].start_writing("slow.png", CHELSEA)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        jobs = p.journal.jobs(limit=None)
        if jobs and any(j.state == "done" for j in jobs) and all(
                j.state in ("done", "skipped", "failed") for j in jobs):
            break
        time.sleep(0.2)
    p.stop_event.set()
    t.join(10)
    jobs = p.journal.jobs(limit=None)
    states = sorted(j.state for j in jobs)
    assert states.count("done") == 1 and "failed" not in states, \
        [(j.id, j.size, j.state, j.error) for j in jobs]
    done = next(j for j in jobs if j.state == "done")
    assert done.size == len(CHELSEA) and "cat" in done.result["labels"][0]["name"]


def test_a_lease_left_by_an_earlier_attempt_of_this_process_does_not_block(tmp_path) -> None:
    """The release of a failed attempt did not get through (the phone dropped off): the
    next attempt of the same process takes the slot over instead of waiting out the TTL."""
    from adbflow.device.lease_rules import Record
    dev = FakeDevice("dev1")
    p = make(tmp_path, FakeInventory([dev]), FakeBidder({"dev1": 5.0}))
    now = int(time.monotonic() * 10)
    dev.leases["classify"] = Record(5, p.leases.owner, "fake", now, now + 3000)
    t0 = time.monotonic()
    job = p.run_image(ASSETS_DIR / "chelsea.png")
    assert job.state == "done" and time.monotonic() - t0 < 30
    assert dev.leases["classify"].token == 6
    assert not [a for a in p.journal.attempts(job.id) if a.error_kind == "busy"]
    p.close()


def test_after_a_lost_journal_new_pictures_are_processed_and_old_ones_not_again(
        tmp_path, fleet) -> None:
    """Before: with journal.sqlite deleted, the restart took every picture on the phones as
    'present before the first start' (a picture taken meanwhile was never processed) and
    job 1 overwrote stories/1.txt. Now ids continue above the data dir's files, pictures
    with a pulled copy count as done, and the rest is processed."""
    devs, inv, bidder = fleet
    p = make(tmp_path, inv, bidder)
    t, box = _watch_in_thread(p, once=True, poll_s=0.05, max_wait_s=20)
    time.sleep(0.3)
    devs[0].snap("first.png", CHELSEA, 100)
    t.join(30)
    first = p.journal.jobs()[0]
    assert first.state == "done"
    story = (tmp_path / "data" / "stories" / f"{first.id}.txt").read_text()
    p.close()
    for f in (tmp_path / "data").glob("journal.sqlite*"):
        f.unlink()                                        # the journal is lost
    devs[0].snap("while-lost.png", CHELSEA[:-1] + b"\3", 200)
    p2 = make(tmp_path, inv, bidder)
    t, box = _watch_in_thread(p2, once=True, poll_s=0.05, max_wait_s=20)
    t.join(30)
    assert "error" not in box, box
    jobs = p2.journal.jobs(limit=None)
    assert [(j.name, j.state) for j in jobs] == [("while-lost.png", "done")]
    assert jobs[0].id > first.id
    assert (tmp_path / "data" / "stories" / f"{first.id}.txt").read_text() == story
    p2.close()


def test_a_pull_redone_after_a_crash_removes_the_killed_pulls_temp_file(tmp_path, fleet) -> None:
    """kill -9 mid-pull leaves Device.pull's `.NAME.part-PID-TID`; the redone pull drops it,
    so the data dir keeps one copy per picture."""
    from adbflow.runtime.stages import local_picture_path
    devs, inv, bidder = fleet
    p = make(tmp_path, inv, bidder)
    jid = add(p, devs[0], "IMG_9.png", CHELSEA)
    job = p.journal.job(jid)
    local = local_picture_path(p.data_dir, jid, job.serial, job.path)
    local.parent.mkdir(parents=True, exist_ok=True)
    stale = local.with_name(f".{local.name}.part-999999-1")
    stale.write_bytes(b"half a picture")
    other = local.with_name(f".other-{local.name}.part-1-1")      # not this picture's
    other.write_bytes(b"x")
    assert p.process(jid).state == "done"
    assert not stale.exists() and other.exists() and local.is_file()
