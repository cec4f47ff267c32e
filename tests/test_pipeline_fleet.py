"""The whole pipeline on a 3-device virtual fleet behind a real (private) adb server, with the
real efficientnet_lite0 classifier and the real SmolLM2 GGUF on the devices.

Full pipeline runs here: end-to-end (1), crash-restart (1 + a hung one), device loss (1 with
two re-bids), hostile names / bad input (1 real run, 4 rejected before any model runs).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from fleet_helpers import (
    CHELSEA,
    PICTURES_APP,
    device,
    healthy,  # noqa: F401 - a fixture, found by name
    inventory,
    module_fleet,
    wait_final,
)

from adbflow.runtime.events import BidRound, Event, Watching
from adbflow.runtime.journal import Journal
from adbflow.runtime.pipeline import Pipeline, PipelineConfig
from adbflow.runtime.stages import REMOTE_IMAGE

pytestmark = pytest.mark.fleet

BMP_224_BYTES = 54 + 224 * 224 * 3

# one device class for all three: "lowest CPU" and "earliest completion" then agree
fleet = module_fleet(3, ["midrange_2023"])


def _cli(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "adbflow.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def _wait_stderr(proc: subprocess.Popen, needle: str, timeout: float = 60.0) -> list[str]:
    """Collect stderr lines in a thread; return once `needle` shows up."""
    lines: list[str] = []
    seen = threading.Event()

    def pump():
        for line in proc.stderr:
            lines.append(line)
            if needle in line:
                seen.set()
    threading.Thread(target=pump, daemon=True).start()
    assert seen.wait(timeout), "".join(lines)
    return lines


def test_watch_once_json_end_to_end(healthy, tmp_path) -> None:
    fleet = healthy
    lowest, snapper, busy = fleet.serials
    for s, pct in ((lowest, 5), (snapper, 60), (busy, 70)):
        fleet.load(s, pct)
    data = tmp_path / "data"
    proc = _cli(["watch", "--once", "--json", "--adb-server", f"127.0.0.1:{fleet.adb_port}",
                 "--data-dir", str(data), "--max-wait", "90"])
    try:
        _wait_stderr(proc, "watching")
        remote = fleet.snap(snapper, CHELSEA, **PICTURES_APP)
        out, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    doc = json.loads(out.strip().splitlines()[-1])
    assert doc["state"] == "done" and doc["origin"] == snapper and doc["path"] == remote
    names = " ".join(lb["name"] for lb in doc["labels"])
    assert "cat" in names, names
    assert len(doc["story"].strip()) > 10
    assert doc["devices"] == {"pull": snapper, "classify": lowest, "generate": lowest}
    t = doc["timings"]
    for key in ("pull_s", "convert_s", "push_s", "classify_s", "generate_s", "total_s"):
        assert t[key] is not None and t[key] >= 0, key
    assert t["total_s"] >= t["classify_s"] + t["generate_s"] > 0
    # the model input is on the winner: a 224x224 24-bit BMP
    entry = device(fleet, lowest).stat(REMOTE_IMAGE, timeout=10)
    assert entry is not None and entry.size == BMP_224_BYTES
    assert device(fleet, busy).stat(REMOTE_IMAGE, timeout=10) is None
    # the journal answers `jobs` and `show`
    jobs = _cli(["jobs", "--json", "--data-dir", str(data)])
    listed = json.loads(jobs.communicate(timeout=60)[0])
    assert [(j["id"], j["state"]) for j in listed] == [(doc["job"], "done")]
    show = _cli(["show", str(doc["job"]), "--data-dir", str(data)])
    text = show.communicate(timeout=60)[0]
    assert show.returncode == 0 and "classify" in text and lowest in text
    print("stage timings:", json.dumps(t))


@pytest.mark.parametrize("stage,program", [("classify", "label_image"),
                                           ("generate", "llama-completion")])
def test_kill_9_mid_stage_then_restart_is_exactly_once(healthy, tmp_path, stage,
                                                       program) -> None:
    fleet = healthy
    for s in fleet.serials:            # the stage hangs everywhere: the kill lands mid-stage
        fleet.fault(s, program=program, mode="hang")
    data = tmp_path / "data"
    args = ["watch", "--once", "--json", "--adb-server", f"127.0.0.1:{fleet.adb_port}",
            "--data-dir", str(data), "--max-wait", "90", "--generate-timeout", "120",
            "--classify-timeout", "120"]
    first = _cli(args)
    try:
        _wait_stderr(first, "watching")
        fleet.snap(fleet.serials[1], CHELSEA, name="crash test.png", **PICTURES_APP)
        journal = Journal(data / "journal.sqlite")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            jobs = journal.jobs()
            if jobs and any(a.stage == stage and a.state == "running"
                            for a in journal.attempts(jobs[0].id)):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"{stage} never started")
        time.sleep(1.0)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        first.kill()
    assert first.returncode == -signal.SIGKILL
    for s in fleet.serials:
        fleet.clear_faults(s)
    second = _cli(args)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    doc = json.loads(out.strip().splitlines()[-1])
    assert doc["state"] == "done" and "cat" in " ".join(lb["name"] for lb in doc["labels"])
    jobs = journal.jobs()
    assert len(jobs) == 1 and jobs[0].id == doc["job"] and jobs[0].state == "done"
    states = [(a.stage, a.state) for a in journal.attempts(jobs[0].id)]
    expected = [("pull", "done"), ("classify", "done"), ("generate", "done")]
    expected.insert(expected.index((stage, "done")), (stage, "abandoned"))
    assert states == expected, states      # every stage committed once; nothing lost
    pulled = [p for p in (data / "pictures").rglob("*") if p.is_file()]
    assert len(pulled) == 1 and "crash_test" in pulled[0].name
    journal.close()


def test_device_loss_and_garbage_rebid(healthy, tmp_path) -> None:
    fleet = healthy
    first, second, third = fleet.serials
    for s, pct in ((first, 5), (second, 50), (third, 90)):
        fleet.load(s, pct)
    fleet.fault(first, slow_factor=40.0)                    # label_image runs for seconds ...
    fleet.fault(second, program="llama-completion", mode="garbage")
    events: list[Event] = []

    def on_event(ev: Event) -> None:
        events.append(ev)
        if isinstance(ev, Watching):
            fleet.snap(third, CHELSEA, name="loss.png", **PICTURES_APP)
        if isinstance(ev, BidRound) and ev.stage == "classify" and ev.winner == first:
            threading.Timer(1.5, fleet.kill, args=(first,)).start()   # ... and dies mid-run

    p = Pipeline(PipelineConfig(data_dir=tmp_path / "data", retry_wait_s=0.2),
                 inventory(fleet), on_event=on_event)
    try:
        t = threading.Thread(target=p.watch, kwargs={"once": True, "poll_s": 0.5,
                                                     "max_wait_s": 60})
        t.start()
        t.join(300)
        assert not t.is_alive()
        job = p.journal.jobs()[0]
        assert job.state == "done", job.error
        atts = [(a.stage, a.serial, a.state, a.error_kind) for a in p.journal.attempts(job.id)]
        cls = [a for a in atts if a[0] == "classify"]
        gen = [a for a in atts if a[0] == "generate"]
        assert cls[0][1:3] == (first, "failed") and cls[0][3] in ("dropped", "timeout", "exit")
        assert cls[-1][1:3] == (second, "done"), atts
        assert gen == [("generate", second, "failed", "parse"), ("generate", third, "done", None)]
        assert job.result["devices"] == {"pull": third, "classify": second, "generate": third}
        assert "cat" in " ".join(lb["name"] for lb in job.result["labels"])
    finally:
        p.stop_event.set()
        p.close()


HOSTILE = {  # name -> (content, expected outcome)
    "$(touch pwned-a) `touch pwned-b`.png": ("chelsea", "done"),
    "q ' \" ; touch pwned-c ;.jpg": ("text", "not an image"),
    "new\nline $(id).png": ("truncated", "damaged or truncated"),
    "\u732b \u00fcn\u00efc\u00f6d\u00e9.jpg": ("empty", "empty"),
    "huge.jpg": ("huge", "limit"),
    ".pending-never.jpg": ("chelsea", None),      # camera temp file: never a job
}


def test_hostile_names_and_bad_input(healthy, tmp_path, monkeypatch) -> None:
    fleet = healthy
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    raw = CHELSEA.read_bytes()
    contents = {"chelsea": raw, "text": b"this is not a picture\n" * 50,
                "truncated": raw[: len(raw) // 4], "empty": b"",
                "huge": b"\xff\xd8\xff\xe0" + os.urandom(3 << 20)}
    target = fleet.serials[0]
    files = []
    for i, (name, (kind, _)) in enumerate(HOSTILE.items()):
        f = src / f"{i}.bin"
        f.write_bytes(contents[kind])
        files.append((f, name))

    def on_event(ev: Event) -> None:
        if isinstance(ev, Watching):          # snapped after watching starts: not backlog
            for f, name in files:
                fleet.snap(target, f, name=name, **PICTURES_APP)

    expected = sum(1 for _, outcome in HOSTILE.values() if outcome)
    data = tmp_path / "data"
    p = Pipeline(PipelineConfig(data_dir=data, max_bytes=2 << 20),
                 inventory(fleet), on_event=on_event)
    t = threading.Thread(target=p.watch, kwargs={"poll_s": 0.5})
    t.start()
    try:
        wait_final(p.journal, expected, 240, abort=lambda: not t.is_alive(),
                   final=("done", "failed"))
        p.stop_event.set()
        t.join(60)
        by_name = {j.name: j for j in p.journal.jobs()}
        assert set(by_name) == {n for n, (_, o) in HOSTILE.items() if o}
        for name, (_, outcome) in HOSTILE.items():
            if outcome is None:
                continue
            job = by_name[name]
            if outcome == "done":
                assert job.state == "done", job.error
                assert "cat" in " ".join(lb["name"] for lb in job.result["labels"])
            else:
                assert job.state == "failed" and outcome in job.error, (name, job.error)
                assert all(a.error_kind == "input" for a in p.journal.attempts(job.id)
                           if a.state == "failed")
    finally:
        p.stop_event.set()
        t.join(30)
        p.close()
    # canaries: nothing ran on any device (whatever its cwd), nothing was written outside
    # the data dir on the laptop
    for dev in fleet.state()["devices"]:
        for dirpath, dirnames, filenames in os.walk(dev["root"]):
            hits = [n for n in dirnames + filenames if n.startswith("pwned")]
            assert not hits, (dev["serial"], dirpath, hits)
    assert not list(tmp_path.rglob("pwned*"))      # `touch pwned-a` would create exactly that
    outside = [f for f in tmp_path.rglob("*") if f.is_file()
               and data not in f.parents and src not in f.parents]
    assert outside == []
    for f in data.rglob("*"):
        assert data.resolve() in f.resolve().parents


def test_inotify_sees_the_camera_rename(healthy) -> None:
    """toybox inotifyd on a device: the doubled first mask letter works (`w` arrives), the
    rename arrives as `y` (moved in, despite the help text), and the picture is reported
    from the event (no listing involved)."""
    from adbflow.runtime.detect import DeviceWatch

    fleet = healthy
    serial = fleet.serials[2]
    w = DeviceWatch(device(fleet, serial), directory="/storage/emulated/0/Pictures")
    w.start(lambda s, d, entries: {(e.name, e.size, e.mtime) for e in entries})
    lines = []
    try:
        n = 0
        deadline = time.monotonic() + 20
        while w.inotify_lines == 0 and time.monotonic() < deadline:   # wait for inotifyd
            fleet.snap(serial, CHELSEA, name=f".probe-{n}", **PICTURES_APP)  # dotfiles: no
            n += 1
            time.sleep(0.3)
        assert w.inotify_lines > 0, w.error
        while not w.events.empty():
            w.events.get_nowait()
        fleet.snap(serial, CHELSEA, name="inotify me.png", **PICTURES_APP)
        found = []
        deadline = time.monotonic() + 10
        while not found and time.monotonic() < deadline:
            try:
                _, ev = w.events.get(timeout=0.5)
            except Exception:  # noqa: BLE001 - queue.Empty
                continue
            lines.append(ev)
            pic = w.on_event(ev)
            if pic:
                found.append(pic)
    finally:
        w.stop()
    assert found and found[0].name == "inotify me.png" and found[0].how == "inotify"
    assert found[0].size == CHELSEA.stat().st_size
    assert ("w", ".pending-inotify me.png") in [(e.events, e.name) for e in lines]
    assert ("y", "inotify me.png") in [(e.events, e.name) for e in lines]


def test_run_laptop_image_cli(healthy, tmp_path) -> None:
    fleet = healthy
    img = tmp_path / "my cat's photo $(touch pwned).png"
    img.write_bytes(CHELSEA.read_bytes())
    args = ["run", str(img), "--json", "--adb-server", f"127.0.0.1:{fleet.adb_port}",
            "--data-dir", str(tmp_path / "data")]
    proc = _cli(args, cwd=tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    doc = json.loads(out.strip().splitlines()[-1])
    assert doc["state"] == "done" and doc["devices"]["ingest"] == "laptop"
    assert "cat" in " ".join(lb["name"] for lb in doc["labels"]) and doc["story"]
    again = _cli(args, cwd=tmp_path)
    out2, err2 = again.communicate(timeout=120)
    assert again.returncode == 0 and "already known" in err2
    assert json.loads(out2.strip().splitlines()[-1])["job"] == doc["job"]
    with Journal(tmp_path / "data" / "journal.sqlite") as j:
        assert len(j.attempts(doc["job"])) == 3           # ingest, classify, generate: once
    assert not list(tmp_path.rglob("pwned*"))
