"""Picture claims at the origin phone (issue 14): orchestrators with different data dirs on
the same phones process each picture once; picture identity that survives a same-size,
same-mtime replacement; the data dir losing its write permission.

Pure parts first (result records, the claim decision, the journal migration, detection by
inode), then two pipelines over in-memory phones (the claim protocol answered by the
lease model), then the virtual fleet (the real script on the phones, real adb).
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from fleet_helpers import (
    CAT_WORDS,
    COFFEE,
    COFFEE_WORDS,
    PICTURES_APP,
    cheap_profiles,
    device,
    inventory,
)
from fleet_helpers import CHELSEA as CAT
from PIL import Image
from pipeline_fakes import FakeBidder, FakeDevice, FakeInventory

from adbflow.device import lease
from adbflow.device.lease_rules import Verdict, claim_key, valid_result
from adbflow.paths import ASSETS_DIR
from adbflow.runtime.claims import (
    Step,
    decide,
    key_of,
    label_word,
    parse_result_record,
    result_record,
)
from adbflow.runtime.detect import Entry, NewPicture
from adbflow.runtime.detect_state import DetectionState
from adbflow.runtime.events import JobClaimedElsewhere, JobSkipped, Watching
from adbflow.runtime.journal import Journal
from adbflow.runtime.pipeline import Pipeline, PipelineConfig

PICS = "/storage/emulated/0/Pictures"
CHELSEA = (ASSETS_DIR / "chelsea.png").read_bytes()


# ---------------------------------------------------------------------- pure

def test_the_result_record_is_one_safe_bounded_word_whatever_the_device_said():
    hostile = {"labels": [{"name": "tabby, cat=\u202eevil\u202c $(rm -rf /)", "score": 0.8712}],
               "story": "Once upon a time,\na cat; " + "x" * 5000}
    rec = result_record(hostile, dir_id="ab12cd34ef56", job_id=17)
    assert valid_result(rec) and len(rec) <= 240, rec
    got = parse_result_record(rec)
    assert got["label"] == "tabby_cat_evil_rm_rf" and got["score"] == "0.871"
    assert got["job"] == "17" and got["dir"] == "ab12cd34ef56" and got["out"] == "done"
    assert got["line"] == "once_upon_a_time" and len(got["story"]) == 16
    empty = result_record({}, dir_id="d", job_id=1)
    assert valid_result(empty) and parse_result_record(empty)["label"] == "-"
    assert parse_result_record("garbage,=x,K=v,toolongfieldname=1,ok=1") == {"ok": "1"}


def test_the_claim_decision_table():
    me, kw = "h:ns:1:aa", {"dir_id": "d1", "job_id": 5}
    assert decide(Verdict.GRANTED, me, None, me=me, dead=False, **kw) is Step.RUN
    assert decide(Verdict.BUSY, "other", None, me=me, dead=False, **kw) is Step.WAIT
    assert decide(Verdict.BUSY, me, None, me=me, dead=False, **kw) is Step.TAKE_OVER
    assert decide(Verdict.BUSY, "dead", None, me=me, dead=True, **kw) is Step.TAKE_OVER
    ours = result_record({}, dir_id="d1", job_id=5)
    assert decide(Verdict.DONE, "x", ours, me=me, dead=False, **kw) is Step.DONE_HERE
    for other in (result_record({}, dir_id="d2", job_id=5),
                  result_record({}, dir_id="d1", job_id=6), "-", None):
        assert decide(Verdict.DONE, "x", other, me=me, dead=False, **kw) is Step.DONE_ELSEWHERE


def test_the_claim_key_follows_the_inode_and_never_contains_the_name():
    job = NewPicture("s", PICS, "IMG 1 ;rm.jpg", 10, 100.0, "test", 77)
    k = key_of(job)
    assert k == claim_key(job.path, 77, 10, 100.0) and "img" not in k.lower()
    assert k != key_of(NewPicture("s", PICS, "IMG 1 ;rm.jpg", 10, 100.0, "test", 78))


def test_a_same_size_same_mtime_replacement_with_a_new_inode_is_a_new_picture():
    st = DetectionState("s", PICS, ignore={("a.jpg", 10, 5.0, 100)})
    assert st.observe_listing([Entry("a.jpg", 10, 5.0, True, ino=100)]) == []   # known
    assert st.observe_listing([Entry("a.jpg", 10, 5.0, True, ino=200)]) == []   # 1st look
    pics = st.observe_listing([Entry("a.jpg", 10, 5.0, True, ino=200)])
    assert [(p.name, p.ino) for p in pics] == [("a.jpg", 200)]
    assert st.observe_listing([Entry("a.jpg", 10, 5.0, True, ino=200)]) == []   # once
    # without inodes (old phones) the identity is what it was: name, size, mtime
    old = DetectionState("s", PICS, ignore={("b.jpg", 10, 5.0)})
    assert old.observe_listing([Entry("b.jpg", 10, 5.0, True)]) == []
    assert old.observe_listing([Entry("b.jpg", 10, 5.0, True)]) == []


OLD_JOBS = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL,
    serial TEXT NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL, mtime REAL NOT NULL,
    sha256 TEXT, local_path TEXT, how TEXT, state TEXT NOT NULL DEFAULT 'pending', error TEXT,
    result TEXT, created REAL NOT NULL, updated REAL NOT NULL, finished REAL,
    claim_host TEXT, claim_pid INTEGER, claim_start REAL,
    UNIQUE (serial, path, size, mtime));
CREATE TABLE seen (serial TEXT NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL,
    mtime REAL NOT NULL, baseline INTEGER NOT NULL, first_seen REAL NOT NULL,
    PRIMARY KEY (serial, path));
INSERT INTO meta VALUES ('schema', '2');
INSERT INTO jobs(source, serial, path, size, mtime, state, created, updated)
    VALUES ('device', 's', '/p/a.jpg', 10, 5.0, 'done', 1, 1);
UPDATE sqlite_sequence SET seq=40 WHERE name='jobs';
"""


def test_an_old_journal_gets_the_inode_in_its_job_key_keeping_rows_and_ids(tmp_path):
    path = tmp_path / "journal.sqlite"
    db = sqlite3.connect(path)
    db.executescript(OLD_JOBS)
    db.close()
    j = Journal(path)
    old = j.find_job("s", "/p/a.jpg", 10, 5.0)
    assert old is not None and old.state == "done" and old.ino == 0
    jid, created = j.add_job(source="device", serial="s", path="/p/a.jpg", size=10, mtime=5.0,
                             ino=123)
    assert created and jid == 41                     # the id sequence survived the rebuild
    assert j.add_job(source="device", serial="s", path="/p/a.jpg", size=10, mtime=5.0,
                     ino=123) == (jid, False)
    j.mark_seen("s", [("/p/a.jpg", 10, 5.0, 123)], baseline=False)
    assert j.seen("s")["/p/a.jpg"] == (10, 5.0, False, 123)
    j.close()
    j = Journal(path)                                  # opening again changes nothing
    assert [x.id for x in j.jobs(limit=None)] == [41, old.id]
    j.close()


# ---------------------------------------------------------------------- in-memory phones

def _pipeline(data: Path, inv, events: list, flow=None) -> Pipeline:
    cfg = PipelineConfig(data_dir=data, retry_wait_s=0.01, device_wait_s=0.2,
                         use_inotify=False, trace=False)
    return Pipeline(cfg, inv, bidder=FakeBidder({"dev1": 50.0, "dev2": 10.0}),
                    on_event=events.append, flow=flow)


def _add(p: Pipeline, dev: FakeDevice, path: str, ino: int = 0) -> int:
    data, mtime = dev.files[path]
    name = path.rsplit("/", 1)[1]
    jid, _ = p.add_device_picture(NewPicture(dev.serial, PICS, name, len(data), mtime, "test",
                                             ino))
    return jid


def test_two_data_dirs_process_a_picture_once_and_the_second_records_the_first_result(
        tmp_path):
    devs = [FakeDevice("dev1"), FakeDevice("dev2")]
    inv = FakeInventory(devs)
    ev_a: list = []
    ev_b: list = []
    a, b = _pipeline(tmp_path / "a", inv, ev_a), _pipeline(tmp_path / "b", inv, ev_b)
    path = devs[0].snap("IMG_1.png", CHELSEA, 1000.0)
    ja, jb = _add(a, devs[0], path), _add(b, devs[0], path)
    done = a.process(ja)
    assert done.state == "done", done.error
    other = b.process(jb)
    assert other.state == "skipped" and "done elsewhere" in (other.error or "")
    rec = other.result["elsewhere"]["record"]
    assert rec["label"] == "tiger_cat" and rec["job"] == str(ja)
    assert other.result["elsewhere"]["owner"] == a.leases.owner
    assert not b.journal.attempts(jb)                  # nothing ran for it in b
    assert any(isinstance(e, JobSkipped) for e in ev_b)
    a.close()
    b.close()


def test_a_flow_job_claims_its_picture_too(tmp_path):
    """A non-default flow (the cascade) runs inside the same job rules: claimed at the
    origin, completed there, so a second orchestrator skips it; its attempts carry the
    flow's stage names."""
    from adbflow.flows import load
    devs = [FakeDevice("dev1"), FakeDevice("dev2")]
    inv = FakeInventory(devs)
    ev_a: list = []
    ev_b: list = []
    a = _pipeline(tmp_path / "a", inv, ev_a, flow=load.load("cascade"))
    b = _pipeline(tmp_path / "b", inv, ev_b, flow=load.load("cascade"))
    assert a.flow_runner is not None
    path = devs[0].snap("IMG_1.png", CHELSEA, 1000.0)
    ja, jb = _add(a, devs[0], path), _add(b, devs[0], path)
    done = a.process(ja)
    assert done.state == "done", done.error
    assert {"pull", "small"} <= {x.stage for x in a.journal.attempts(ja)}
    other = b.process(jb)
    assert other.state == "skipped" and "done elsewhere" in (other.error or "")
    assert not b.journal.attempts(jb)
    a.close()
    b.close()


def test_a_picture_claimed_by_a_live_orchestrator_waits_and_is_taken_over_after_expiry(
        tmp_path):
    devs = [FakeDevice("dev1"), FakeDevice("dev2")]
    inv = FakeInventory(devs)
    events: list = []
    p = _pipeline(tmp_path / "a", inv, events)
    path = devs[0].snap("IMG_2.png", CHELSEA, 1000.0)
    jid = _add(p, devs[0], path)
    key = key_of(p.journal.job(jid))
    # another laptop's orchestrator (not provably dead: another pid namespace) holds it
    other = lease.claim_call(devs[0], "acquire", key, "laptop2:ffffffff:1:ab", 0, 0.6)
    assert other.verdict is Verdict.GRANTED
    job = p.process(jid)
    assert job.state == "pending" and "claimed" in (job.error or "")
    waits = [e for e in events if isinstance(e, JobClaimedElsewhere)]
    assert waits and waits[0].owner == "laptop2:ffffffff:1:ab" and 0 < waits[0].left_s <= 0.6
    assert not [a for a in p.journal.attempts(jid)]     # not started: nothing failed
    time.sleep(1.2)                                     # its claim expires (it crashed)
    p.start_workers()
    assert p.waiting.requeue({"dev1", "dev2"}) == [jid]   # queued again: a worker runs it
    assert _wait(lambda: p.journal.job(jid).state == "done", 30), p.journal.job(jid).error
    job = p.journal.job(jid)
    r = lease.claim_call(devs[0], "read", key, "x", 0, 0)
    assert r.verdict is Verdict.DONE and r.owner == p.leases.owner
    assert parse_result_record(r.result)["job"] == str(jid)
    p.close()


def test_a_job_completed_at_the_phone_just_before_a_crash_is_done_from_its_own_stages(
        tmp_path):
    """kill -9 between `complete` at the phone and `done` in the journal: after the restart
    the phone says done by this very data dir and job, so the job is done, not skipped."""
    devs = [FakeDevice("dev1"), FakeDevice("dev2")]
    inv = FakeInventory(devs)
    p = _pipeline(tmp_path / "a", inv, [])
    path = devs[0].snap("IMG_3.png", CHELSEA, 1000.0)
    jid = _add(p, devs[0], path)
    job = p.process(jid)
    assert job.state == "done"
    with p.journal._tx() as db:                         # as if the journal write was lost
        db.execute("UPDATE jobs SET state='running', result=NULL WHERE id=?", (jid,))
    p.close()
    p = _pipeline(tmp_path / "a", inv, [])
    job = p.process(jid)
    assert job.state == "done" and job.result["labels"][0]["name"] == "tiger cat"
    p.close()


# ---------------------------------------------------------------------- virtual fleet

@pytest.fixture(scope="module")
def fleet(fleet_factory):
    client = fleet_factory(devices=3, profiles=["flagship_2025"])
    yield client
    fleet_factory.release(client)


@pytest.fixture(scope="module")
def profiles_dir(tmp_path_factory) -> Path:
    return cheap_profiles(tmp_path_factory.mktemp("cheap") / "profiles", n_predict=8)


def _same_size_pair(tmp: Path) -> tuple[Path, Path]:
    """A cat and a coffee cup as BMPs of one size (uncompressed, same pixel count)."""
    cat, cup = tmp / "cat.bmp", tmp / "cup.bmp"
    Image.open(ASSETS_DIR / "chelsea.png").convert("RGB").resize((300, 200)).save(cat)
    Image.open(ASSETS_DIR / "coffee.png").convert("RGB").resize((300, 200)).save(cup)
    assert cat.stat().st_size == cup.stat().st_size
    return cat, cup


def _watch(p: Pipeline) -> threading.Thread:
    t = threading.Thread(target=p.watch, kwargs={"poll_s": 0.5, "refresh_s": 1.0},
                         daemon=True)
    t.start()
    return t


def _wait(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.3)
    return False


@pytest.mark.slow   # default suite: the pure replacement test above (same rule)
@pytest.mark.fleet
def test_a_picture_replaced_by_another_of_the_same_size_and_mtime_is_processed(
        fleet, tmp_path, profiles_dir):
    """Before: identity (name, size, mtime) made the replacement invisible. Now the inode
    (adb's LIS2/LST2) tells them apart: the cat and then the cup each get their job."""
    serial = fleet.serials[0]
    cat, cup = _same_size_pair(tmp_path)
    seen: list = []
    p = Pipeline(PipelineConfig(data_dir=tmp_path / "data", profiles_dir=profiles_dir,
                                retry_wait_s=0.2, trace=False), inventory(fleet),
                 on_event=seen.append)
    t = _watch(p)
    try:
        assert _wait(lambda: any(isinstance(e, Watching) for e in seen), 60)
        remote = fleet.snap(serial, cat, name="same.bmp", **PICTURES_APP)
        assert _wait(lambda: [j.state for j in p.journal.jobs(limit=None)] == ["done"], 120)
        dev = device(fleet, serial)
        before = dev.stat(remote, timeout=10)
        # another picture renamed over it, size equal, mtime set back (`touch -r`)
        dev.push(cup, "/data/local/tmp/cup.bmp", timeout=30)
        tmp = remote.rsplit("/", 1)[0] + "/.swap.bmp"
        dev.shell(f"cp /data/local/tmp/cup.bmp '{tmp}' && touch -r '{remote}' '{tmp}' && "
                  f"mv '{tmp}' '{remote}'", timeout=20)
        after = dev.stat(remote, timeout=10)
        assert (after.size, after.mtime) == (before.size, before.mtime)
        assert after.ino != before.ino != 0
        assert _wait(lambda: [j.state for j in p.journal.jobs(limit=None)] == ["done"] * 2,
                     120), [(j.name, j.state, j.error) for j in p.journal.jobs(limit=None)]
    finally:
        p.stop_event.set()
        t.join(30)
    jobs = sorted(p.journal.jobs(limit=None), key=lambda j: j.id)
    top = [j.result["labels"][0]["name"].lower() for j in jobs]
    assert any(w in top[0] for w in CAT_WORDS) and any(w in top[1] for w in COFFEE_WORDS), top
    assert jobs[0].ino == before.ino and jobs[1].ino == after.ino
    p.close()


@pytest.mark.fleet
def test_two_orchestrators_with_their_own_data_dirs_process_each_picture_once(
        fleet, tmp_path, profiles_dir):
    """Two `watch`es (two data dirs, one process here for speed: distinct owner ids) on the
    same 3 phones, 6 pictures: each is done by exactly one; the other records the result
    it found under the claim, with the same top label."""
    pipes = [Pipeline(PipelineConfig(data_dir=tmp_path / name, profiles_dir=profiles_dir,
                                     retry_wait_s=0.2, trace=False, claim_ttl_s=6.0),
                      inventory(fleet)) for name in ("a", "b")]
    threads = [_watch(p) for p in pipes]
    snapped = []
    try:
        time.sleep(3)
        for i in range(6):
            serial = fleet.serials[i % 3]
            img = CAT if i % 2 == 0 else COFFEE
            snapped.append((serial, fleet.snap(serial, img, name=f"two-{i}.png", **PICTURES_APP)))

        def settled() -> bool:
            states = [j.state for p in pipes for j in p.journal.jobs(limit=None)]
            return len(states) == 12 and all(s in ("done", "skipped") for s in states)
        assert _wait(settled, 180), [(j.name, j.state, j.error) for p in pipes
                                     for j in p.journal.jobs(limit=None)]
    finally:
        for p in pipes:
            p.stop_event.set()
        for t in threads:
            t.join(30)
    done = Counter((j.serial, j.path) for p in pipes for j in p.journal.jobs(limit=None)
                   if j.state == "done")
    assert sorted(done) == sorted(snapped) and set(done.values()) == {1}, done
    by_pic = {(j.serial, j.path): j for p in pipes for j in p.journal.jobs(limit=None)
              if j.state == "done"}
    for p in pipes:
        for j in p.journal.jobs(limit=None):
            if j.state == "skipped":
                rec = j.result["elsewhere"]["record"]
                top = by_pic[(j.serial, j.path)].result["labels"][0]["name"]
                assert rec["label"] == label_word(top), (rec, top)
    for p in pipes:
        p.close()


WATCHER = r"""
import json, sys
from pathlib import Path
from adbflow.device import AdbServer, Inventory
from adbflow.runtime.pipeline import Pipeline, PipelineConfig
port, serial, data, profiles = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
def ev(e):
    d = e.to_json()
    print(json.dumps({k: d.get(k) for k in ("type", "job", "error", "result")}), flush=True)
p = Pipeline(PipelineConfig(data_dir=data, profiles_dir=profiles, retry_wait_s=0.2,
                            trace=False), Inventory([AdbServer(port=port)], serials=[serial]),
             on_event=ev)
p.watch(poll_s=0.5, refresh_s=1.0)
"""


@pytest.mark.fleet
def test_a_data_dir_without_write_permission_is_named_and_jobs_resume_once_fixed(
        fleet, profiles_dir):
    """Root ignores permission bits and the tests run as root: then the orchestrator runs as
    the unprivileged `nobody` (setpriv), owning its data dir, whose folders are made 0500
    while it watches (chmod, as a user would). One clear message naming the path and the
    fix, no job failed, no phone quarantined; chmod back: the job completes."""
    # not under pytest's tmp root: that one is 0700 (and other pytest runs reset it)
    base = Path(tempfile.mkdtemp(prefix="adbflow-perm-", dir="/tmp"))
    prof = base / "profiles"
    shutil.copytree(profiles_dir, prof)
    data = base / "data"
    data.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "nobody", str(base)], check=True)
        prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    serial = fleet.serials[1]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]),
               HOME=str(base), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([*prefix, sys.executable, "-c", WATCHER, str(fleet.adb_port), serial,
                             str(data), str(prof)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    lines: list[dict] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                lines.append(json.loads(line))
            except ValueError:
                pass
    threading.Thread(target=read, daemon=True).start()

    def dirs() -> list[Path]:
        return [data, *[p for p in data.rglob("*") if p.is_dir()]]
    try:
        assert _wait(lambda: any(e.get("type") == "watching" for e in lines), 60), \
            (lines, proc.poll(), proc.poll() is not None and proc.stderr.read())
        for d in dirs():
            os.chmod(d, 0o500)
        fleet.snap(serial, ASSETS_DIR / "chelsea.png", name="perm.png", **PICTURES_APP)
        assert _wait(lambda: any(e.get("type") == "laptop_fault" for e in lines), 60), lines
        time.sleep(3)                                       # it waits, failing nothing
        faults = [e for e in lines if e.get("type") == "laptop_fault"]
        assert all(str(data) in e["error"] and "permission denied" in e["error"].lower()
                   and "chmod" in e["error"] for e in faults), faults     # cause and fix
        assert not [e for e in lines if e.get("type") in ("job_failed",
                                                           "device_quarantined")], lines
        for d in dirs():
            os.chmod(d, 0o755)
        assert _wait(lambda: any(e.get("type") == "job_done" for e in lines), 120), \
            [(e.get("type"), e.get("error")) for e in lines]
    finally:
        for d in dirs():
            os.chmod(d, 0o755)
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(base, ignore_errors=True)
    done = [e for e in lines if e.get("type") == "job_done"]
    labels = [lb["name"].lower() for lb in done[0]["result"]["labels"]]
    assert any(w in labels[0] for w in CAT_WORDS), labels
    assert len(done) == 1 and not [e for e in lines if e.get("type") == "job_failed"]
