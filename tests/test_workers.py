"""Jobs in flight follow the fleet's slots, not a constant; a burst stays bounded in memory
(the journal holds the backlog) and every job still runs exactly once."""
from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from pathlib import Path

from pipeline_fakes import FakeBidder, FakeDevice, FakeInventory

from adbflow.paths import ASSETS_DIR, PROFILES_DIR
from adbflow.runtime.detect import NewPicture
from adbflow.runtime.pipeline import Pipeline, PipelineConfig
from adbflow.runtime.workers import JobRunner
from adbflow.scheduling.profiles import ProfileBook, Slots, dump_profile

PICS = "/storage/emulated/0/Pictures"
CHELSEA = (ASSETS_DIR / "chelsea.png").read_bytes()


class FakeBacklog:
    """The journal's role: ids stay pending until processed."""

    def __init__(self) -> None:
        self.pending: set[int] = set()
        self.lock = threading.Lock()

    def __call__(self, exclude: set[int], limit: int) -> list[int]:
        with self.lock:
            return sorted(self.pending - exclude)[:limit]


def test_a_burst_of_thousands_keeps_the_queue_capped_and_runs_each_job_once() -> None:
    stop = threading.Event()
    backlog = FakeBacklog()
    done: Counter[int] = Counter()

    def process(job_id: int) -> None:
        time.sleep(0.001)
        with backlog.lock:
            done[job_id] += 1
            backlog.pending.discard(job_id)

    runner = JobRunner(process, concurrency=6, stop=stop, queue_max=16, backlog=backlog)
    worst_queue = 0
    for i in range(1, 3001):
        with backlog.lock:
            backlog.pending.add(i)          # the journal row exists before submit
        runner.submit(i)
        worst_queue = max(worst_queue, runner.stats()["queued"])
    assert runner.wait_idle(timeout=120)
    stop.set()
    assert worst_queue <= 16
    assert set(done) == set(range(1, 3001)) and set(done.values()) == {1}
    assert runner.peak_running <= 6


def test_capacity_is_read_again_as_the_fleet_grows() -> None:
    stop = threading.Event()
    cap = [2]
    running = [0]
    seen: list[int] = []
    lock = threading.Lock()

    def process(job_id: int) -> None:
        with lock:
            running[0] += 1
            seen.append(running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    runner = JobRunner(process, concurrency=lambda: cap[0], stop=stop)
    for i in range(1, 11):
        runner.submit(i)
    time.sleep(0.2)
    assert max(seen) <= 2
    cap[0] = 8                                   # more phones joined
    for i in range(11, 41):
        runner.submit(i)
    assert runner.wait_idle(timeout=30)
    stop.set()
    assert 2 < max(seen) <= 8


def _make(tmp_path: Path, devs, **kw) -> Pipeline:
    cfg = PipelineConfig(data_dir=tmp_path / "data", retry_wait_s=0.01, device_wait_s=5.0,
                         use_inotify=False, **kw)
    return Pipeline(cfg, FakeInventory(devs), bidder=FakeBidder({d.serial: 5.0 for d in devs}))


def _add(p: Pipeline, dev: FakeDevice, i: int) -> int:
    name = f"p{i}.png"
    data = CHELSEA + i.to_bytes(4, "big")            # distinct content: no duplicate skips
    path = dev.snap(name, data, 1000.0 + i)
    jid, created = p.add_device_picture(NewPicture(dev.serial, PICS, name, len(data),
                                                   dev.files[path][1], "test"))
    assert created
    return jid


def test_pipeline_jobs_in_flight_come_from_device_slots_and_the_backlog_drains(tmp_path) -> None:
    devs = [FakeDevice(f"dev{i}", delay=0.03) for i in (1, 2, 3)]
    p = _make(tmp_path, devs, queue_max=4)
    assert p.capacity() == 3 * 2 + 3           # 1 classify + 1 generate slot each + headroom
    ids = [_add(p, devs[0], i) for i in range(30)]
    for j in ids:
        p.submit(j)
        assert p.jobs.stats()["queued"] <= 4    # the rest waits in the journal
    assert p.wait_idle(timeout=120)
    p.stop_event.set()
    assert all(p.journal.job(j).state == "done" for j in ids)
    for j in ids:                                # exactly once per stage
        stages = Counter(a.stage for a in p.journal.attempts(j) if a.state == "done")
        assert stages == {"pull": 1, "classify": 1, "generate": 1}
    assert 4 < p.jobs.peak_running <= p.capacity()
    assert all(d.max_running.get("label_image", 0) <= 1 for d in devs)


def test_fixed_pool_switch_reproduces_the_old_cap(tmp_path) -> None:
    devs = [FakeDevice(f"dev{i}", delay=0.03) for i in (1, 2, 3)]
    p = _make(tmp_path, devs, concurrency=4)
    ids = [_add(p, devs[0], i) for i in range(12)]
    for j in ids:
        p.submit(j)
    assert p.wait_idle(timeout=120)
    p.stop_event.set()
    assert all(p.journal.job(j).state == "done" for j in ids)
    assert p.jobs.peak_running <= 4


def test_a_profile_asking_two_classify_slots_still_runs_one_label_image_at_a_time(tmp_path) -> None:
    """Each stage kind holds the phone's one slot lease (the fixed received-image path), so
    a profile asking for two classify slots gets one: all jobs finish, never two label_image
    at once on the phone (two would take each other's lease over and livelock)."""
    profiles = tmp_path / "profiles"
    shutil.copytree(PROFILES_DIR, profiles)
    vf = profiles / "virtual_fleet.toml"
    vf.write_text(vf.read_text() + "\n[slots]\nclassify = 2\n")
    book = ProfileBook.load(profiles)
    slots = book.for_model(FakeDevice("x").model).slots
    assert slots == Slots(classify=2, generate=1) and slots.of("classify") == 1
    dev = FakeDevice("dev1", delay=0.3)
    p = _make(tmp_path, [dev], profiles_dir=profiles)
    assert p.capacity() == 2 + 1
    ids = [_add(p, dev, i) for i in range(4)]
    for j in ids:
        p.submit(j)
    assert p.wait_idle(timeout=60)
    p.stop_event.set()
    assert all(p.journal.job(j).state == "done" for j in ids)
    assert dev.max_running["label_image"] == 1
    assert max(n for prog, n in dev.max_running.items() if prog.startswith("llama")) == 1


def test_slots_survive_a_profile_round_trip(tmp_path) -> None:
    book = ProfileBook.load(PROFILES_DIR)
    prof = book.get("virtual_fleet")
    assert prof.slots == Slots()                  # default: one of each
    from dataclasses import replace
    two = replace(prof, slots=Slots(classify=3, generate=2), classes={})
    (tmp_path / "default.toml").write_text((PROFILES_DIR / "default.toml").read_text())
    (tmp_path / "x.toml").write_text(dump_profile(replace(two, name="x")))
    again = ProfileBook.load(tmp_path).get("x")
    assert again.slots == Slots(classify=3, generate=2)
    assert again.slots.total == 2        # what the slot leases allow today (Slots.LEASED_MAX)


def test_wait_idle_returns_when_stopping_with_work_left() -> None:
    stop = threading.Event()
    gate = threading.Event()
    runner = JobRunner(lambda j: gate.wait(5), concurrency=1, stop=stop)
    for i in (1, 2, 3):
        runner.submit(i)
    stop.set()
    gate.set()
    t0 = time.monotonic()
    assert runner.wait_idle() is False            # no timeout given, still returns
    assert time.monotonic() - t0 < 5
