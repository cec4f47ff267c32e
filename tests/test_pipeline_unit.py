"""Pipeline logic against in-memory devices: stages, re-bidding, bad input, resume after a
crash, concurrency slots, watch/baseline rules. The fleet tests repeat the key cases with real
adb, real devices processes and real models."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from adbflow.runtime.detect import NewPicture
from adbflow.runtime.journal import Journal
from adbflow.paths import ASSETS_DIR
from adbflow.runtime.pipeline import Pipeline, PipelineConfig
from adbflow.runtime.stages import REMOTE_IMAGE

from pipeline_fakes import FakeBidder, FakeDevice, FakeInventory

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
    argv = next(c for c in devs[2].calls if c[0].endswith("llama-cli"))
    assert "tiger cat" in argv[argv.index("-p") + 1]
    local = Path(p.journal.job(jid).local_path)
    assert (tmp_path / "data").resolve() in local.resolve().parents
    assert (tmp_path / "data" / "stories" / f"{jid}.txt").read_text().count("tiger cat") >= 1
    assert p.process(jid).state == "done"                       # finished jobs never re-run
    assert label_calls(devs)["dev3"] == 1


@pytest.mark.parametrize("mode,kind", [("fail", "exit"), ("hang", "timeout"),
                                       ("garbage", "parse"), ("gone", "unavailable")])
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
    devs[2].faults["llama-cli"] = "garbage"
    devs[1].faults["llama-cli"] = "fail"
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
        if argv[0].endswith("llama-cli"):
            raise _Crash()
        return real_run(argv, **kw)
    monkeypatch.setattr(devs[2], "run", crash_on_llama)
    with pytest.raises(_Crash):
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
