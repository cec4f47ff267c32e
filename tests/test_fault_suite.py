"""Fault and load suite: many pictures on an 8-device virtual fleet, the orchestrator killed
with SIGKILL again and again, devices killed / hung / slowed / disconnected mid-stage and the
adb server restarted mid-run. Every picture must be processed exactly once, and nothing may
hang longer than the configured timeouts.

What P's tests (tests/test_pipeline_*.py) already prove on 3 devices with one picture each
(one kill -9 mid-generate, one device loss, garbage output) is not repeated here; this suite
adds scale (bursts over 8 devices), repeated crashes at different stages, faults on several
devices at once and the adb server restart.

Cost control: the real models run on the devices, but with a cheaper configuration — a copy
of profiles/ whose virtual-fleet llama n_predict is 16 instead of 64 (the pipeline's own
`profiles_dir` option). Default run: 20 pictures (burst), 10 pictures + 6 kills, 10 pictures
under faults. `--runslow`: 200 pictures, 40 pictures + 12 kills.
"""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fleet_helpers import (
    CAT_WORDS,
    CHELSEA,
    COFFEE,
    COFFEE_WORDS,
    PICTURES_APP,
    cheap_profiles,
    healthy,  # noqa: F401 - a fixture, found by name
    inventory,
    labels_of,
    module_fleet,
    wait_final,
)

from adbflow.fleet import adb_server
from adbflow.runtime.events import Event, StageStarted, Watching
from adbflow.runtime.journal import Journal
from adbflow.runtime.pipeline import Pipeline, PipelineConfig
from adbflow.runtime.stages import StageTimeouts

pytestmark = pytest.mark.fleet

STAGES = ("pull", "classify", "generate")

fleet = module_fleet(8, ["flagship_2025", "flagship_2023"])


@pytest.fixture(scope="module")
def profiles_dir(tmp_path_factory) -> Path:
    return cheap_profiles(tmp_path_factory.mktemp("cheap") / "profiles")


def assert_exactly_once(journal: Journal, data: Path, expected: dict[tuple[str, str], Path]
                        ) -> None:
    """Every snapped picture (serial, device path) has exactly one job, done, with exactly
    one committed attempt per stage, the right labels for its content, one pulled copy and
    one story file; no job exists for anything else."""
    jobs = journal.jobs(limit=None)
    keys = Counter((j.serial, j.path) for j in jobs)
    dupes = [k for k, c in keys.items() if c > 1]
    assert not dupes, f"pictures with more than one job: {dupes}"
    assert set(keys) == set(expected), (sorted(set(expected) - set(keys)),
                                        sorted(set(keys) - set(expected)))
    for j in jobs:
        assert j.state == "done", (j.id, j.name, j.state, j.error)
        done = Counter(a.stage for a in journal.attempts(j.id) if a.state == "done")
        assert done == Counter(STAGES), (j.id, done)
        words = CAT_WORDS if expected[(j.serial, j.path)] == CHELSEA else COFFEE_WORDS
        assert any(w in labels_of(j) for w in words), (j.name, labels_of(j))
        assert len((j.result or {}).get("story", "").strip()) >= 2
        assert (data / "stories" / f"{j.id}.txt").is_file()
    pulled = [p for p in (data / "pictures").rglob("*") if p.is_file()]
    assert len(pulled) == len(expected), sorted(p.name for p in pulled)
    assert not [p for p in pulled if p.name.endswith(".part")]
    stories = list((data / "stories").glob("*.txt"))
    assert len(stories) == len(expected)


# ---------------------------------------------------------------------- bursts, exactly once

def _snap_bursts(fleet, n: int, rng: random.Random) -> dict[tuple[str, str], Path]:
    """n pictures over every device: a simultaneous burst (one per device, from threads), a
    rapid burst on one device, then a trickle with random gaps."""
    serials = fleet.serials
    plan: list[list[tuple[str, str, Path]]] = []
    k = 0

    def item(serial: str) -> tuple[str, str, Path]:
        nonlocal k
        k += 1
        img = CHELSEA if k % 2 else COFFEE
        return serial, f"burst-{k:03d}{img.suffix}", img
    first = [item(s) for s in serials[: min(len(serials), n)]]
    plan.append(first)
    rest = n - len(first)
    rapid = [item(serials[0]) for _ in range(min(rest, max(1, n // 4)))]
    plan.append(rapid)
    plan.append([item(rng.choice(serials)) for _ in range(n - len(first) - len(rapid))])
    snapped: dict[tuple[str, str], Path] = {}
    with ThreadPoolExecutor(max_workers=8) as pool:
        for path, (s, _, img) in zip(pool.map(lambda x: fleet.snap(x[0], x[2], name=x[1],
                                                                   **PICTURES_APP),
                                              first), first):
            snapped[(s, path)] = img
    for s, name, img in rapid:
        snapped[(s, fleet.snap(s, img, name=name, **PICTURES_APP))] = img
    for s, name, img in plan[2]:
        time.sleep(rng.uniform(0.0, 0.4))
        snapped[(s, fleet.snap(s, img, name=name, **PICTURES_APP))] = img
    return snapped


def _run_bursts(fleet, tmp_path: Path, profiles_dir: Path, n: int, timeout: float) -> None:
    data = tmp_path / "data"
    ready = threading.Event()
    p = Pipeline(PipelineConfig(data_dir=data, profiles_dir=profiles_dir, concurrency=4,
                                retry_wait_s=0.2), inventory(fleet),
                 on_event=lambda ev: isinstance(ev, Watching) and ready.set())
    t = threading.Thread(target=p.watch, kwargs={"poll_s": 0.5}, daemon=True)
    t.start()
    try:
        assert ready.wait(60)
        snapped = _snap_bursts(fleet, n, random.Random(n))
        wait_final(p.journal, n, timeout)
        p.stop_event.set()
        t.join(60)
        assert_exactly_once(p.journal, data, snapped)
        used = Counter(j.result["devices"]["classify"] for j in p.journal.jobs(limit=None))
        assert len(used) >= 3, f"a burst should spread over the fleet: {used}"
        failed = [(a.stage, a.serial, a.error) for j in p.journal.jobs(limit=None)
                  for a in p.journal.attempts(j.id) if a.state != "done"]
        # The one failure a healthy device may legitimately produce: the real model sampled
        # no usable text within the short test budget (e.g. only an emoji); the pipeline
        # re-bids it like any unparsable output. Everything else is a pipeline/fleet bug.
        unexpected = [f for f in failed if "story too short" not in (f[2] or "")]
        assert unexpected == [], f"a healthy fleet must not fail attempts: {unexpected[:5]}"
        assert len(failed) <= max(1, n // 20), f"too many empty stories: {failed[:5]}"
    finally:
        p.stop_event.set()
        t.join(30)
        p.close()


@pytest.mark.timing   # stall/hang detection and stage timeouts: run alone
def test_bursts_over_8_devices_each_picture_exactly_once(healthy, tmp_path, profiles_dir):
    _run_bursts(healthy, tmp_path, profiles_dir, n=20, timeout=240)


@pytest.mark.slow
def test_bursts_200_pictures_exactly_once(healthy, tmp_path, profiles_dir):
    _run_bursts(healthy, tmp_path, profiles_dir, n=200, timeout=1800)


# ---------------------------------------------------------------------- kill -9 the orchestrator

CHILD = r"""
import json, sys
from pathlib import Path
from adbflow.device import AdbServer, Inventory
from adbflow.runtime.pipeline import Pipeline, PipelineConfig
from adbflow.runtime.stages import StageTimeouts
port, data, profiles = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
def ev(e):
    d = e.to_json()
    keep = {k: d.get(k) for k in ("type", "job", "stage", "name", "serial")}
    print(json.dumps(keep), flush=True)
p = Pipeline(PipelineConfig(data_dir=data, profiles_dir=profiles, concurrency=3,
                            retry_wait_s=0.2, timeouts=StageTimeouts(classify_s=60, generate_s=90)),
             Inventory([AdbServer(port=port)]), on_event=ev)
p.watch(poll_s=0.5)
"""

# where each kill lands: right after the parent sees this event (then a random 0-300 ms)
KILL_POINTS = [("stage_started", "pull"), ("stage_started", "classify"), ("bid", "generate"),
               ("stage_started", "generate"), ("stage_done", "classify"), ("job_done", None),
               ("time", None)]


class Orchestrator:
    """One `watch` child process; its events are read from stdout in a thread."""

    def __init__(self, fleet, data: Path, profiles: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, str(fleet.adb_port), str(data),
                                      str(profiles)], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.events: list[dict] = []
        self.cv = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self.cv:
                self.events.append(ev)
                self.cv.notify_all()

    def wait_for(self, pred, timeout: float, since: int = 0) -> bool:
        """An event from position `since` on satisfies pred (positions, not list.index:
        two bid rounds can print equal events)."""
        with self.cv:
            return self.cv.wait_for(lambda: any(pred(e) for e in self.events[since:]),
                                    timeout=timeout)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        assert self.proc.returncode == -signal.SIGKILL


def _run_kills(fleet, tmp_path: Path, profiles: Path, n_pictures: int, kills: int) -> None:
    rng = random.Random(1000 + kills)
    data = tmp_path / "data"
    serials = fleet.serials
    snapped: dict[tuple[str, str], Path] = {}
    k = 0

    def snap(count: int) -> None:
        nonlocal k
        for _ in range(count):
            k += 1
            img = CHELSEA if k % 3 else COFFEE
            s = rng.choice(serials)
            snapped[(s, fleet.snap(s, img, name=f"crash-{k:03d}{img.suffix}",
                                   **PICTURES_APP))] = img

    per_round = max(1, n_pictures // (kills + 1))
    points = [KILL_POINTS[i % len(KILL_POINTS)] for i in range(kills)]
    rng.shuffle(points)
    landed: list[str] = []
    for i, (etype, stage) in enumerate(points):
        orch = Orchestrator(fleet, data, profiles)
        try:
            assert orch.wait_for(lambda e: e["type"] == "watching", 60), "child never watched"
            snap(per_round)
            if etype == "time":
                time.sleep(rng.uniform(0.2, 3.0))
                landed.append("time")
            else:
                base = len(orch.events)
                hit = orch.wait_for(lambda e: e["type"] == etype and (stage is None or
                                                                      e.get("stage") == stage),
                                    60, since=base)
                landed.append(f"{etype}:{stage}" if hit else f"{etype}:{stage} (not reached)")
                time.sleep(rng.uniform(0.0, 0.3))
        finally:
            orch.kill9()
        if i % 2:
            snap(1)                     # a picture taken while the orchestrator is dead
    # the last run: no kill; wait until every picture is final
    snap(max(0, n_pictures - len(snapped)))
    orch = Orchestrator(fleet, data, profiles)
    try:
        journal = Journal(data / "journal.sqlite")
        wait_final(journal, len(snapped), 60 + 15 * n_pictures)
    finally:
        orch.kill9()
    assert len(landed) == kills and sum("not reached" not in x for x in landed) >= kills - 1, \
        landed
    try:
        assert_exactly_once(journal, data, snapped)
        abandoned = [a for j in journal.jobs(limit=None) for a in journal.attempts(j.id)
                     if a.state == "abandoned"]
        assert abandoned, "no kill landed mid-stage: the test proved nothing"
        print(f"kills landed at: {landed}; abandoned attempts: "
              f"{Counter(a.stage for a in abandoned)}")
    finally:
        journal.close()


@pytest.mark.slow
def test_kill_9_orchestrator_repeatedly_exactly_once(healthy, tmp_path, profiles_dir):
    # behind --runslow (75-90 s on 2 cores): the default suite kills mid-stage in
    # test_pipeline_fleet (classify and generate, then restart: exactly once)
    _run_kills(healthy, tmp_path, profiles_dir, n_pictures=10, kills=6)


@pytest.mark.slow
def test_kill_9_orchestrator_many_times_40_pictures(healthy, tmp_path, profiles_dir):
    _run_kills(healthy, tmp_path, profiles_dir, n_pictures=40, kills=12)


# ---------------------------------------------------------------------- device faults + adb restart

KINDS = {"timeout", "unavailable", "exit", "adb", "parse", "no-device", "input", "interrupted",
         # issue 14: the origin phone gone (waited for), another orchestrator's lease,
         # a copy taken mid-write, a worker phone that left adb; none counts against the
         # attempts (journal.UNCOUNTED_KINDS)
         "unreachable", "busy", "lease", "superseded", "dropped"}


@pytest.mark.timing   # stall/hang detection and stage timeouts: run alone
def test_devices_killed_hung_slow_offline_and_adb_restart(healthy, tmp_path, profiles_dir):
    fleet = healthy
    s = fleet.serials
    timeouts = StageTimeouts(pull_s=10, push_s=10, classify_s=5, generate_s=8, stat_s=5)
    fleet.fault(s[0], program="label_image", mode="hang")
    fleet.fault(s[1], program="llama-completion", mode="hang")
    fleet.fault(s[2], slow_factor=200.0)        # both programs far slower than the timeouts
    fleet.fault(s[5], program="label_image", mode="fail", exit_code=3)
    origins = [s[6], s[7], s[3], s[4], s[0], s[1], s[6], s[7]]
    data = tmp_path / "data"
    ready = threading.Event()
    events: list[Event] = []

    def on_event(ev: Event) -> None:
        events.append(ev)
        if isinstance(ev, Watching):
            ready.set()

    p = Pipeline(PipelineConfig(data_dir=data, profiles_dir=profiles_dir, concurrency=4,
                                attempts=5, timeouts=timeouts, retry_wait_s=0.2,
                                device_wait_s=30,
                                # origin phones that never come back (s[4]) fail within the
                                # bound below instead of waiting the default 300 s
                                origin_retry_s=2.0, origin_wait_s=20.0),
                 inventory(fleet), on_event=on_event)
    t = threading.Thread(target=p.watch, kwargs={"poll_s": 0.5}, daemon=True)
    t.start()
    t0 = time.monotonic()
    try:
        assert ready.wait(60)
        snapped = {}
        for i, origin in enumerate(origins):
            img = CHELSEA if i % 2 else COFFEE
            snapped[(origin, fleet.snap(origin, img, name=f"fault-{i:02d}{img.suffix}",
                                        **PICTURES_APP))] = img
        # mid-run: wait until stages are running, then break things
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
                isinstance(e, StageStarted) and e.stage == "classify" for e in events):
            time.sleep(0.1)
        time.sleep(1.0)
        fleet.kill(s[3])                                    # device dies (adb: gone)
        fleet.fault(s[4], offline=True)                     # transport stops answering
        time.sleep(1.0)
        adb_server.kill_server(fleet.adb_port)              # adb server restart mid-run
        time.sleep(4.0)
        fleet.restart(s[3])                                 # comes back later
        # bound: every attempt is bounded by its stage timeout; 5 attempts per stage
        bound = 5 * (timeouts.classify_s + timeouts.generate_s + timeouts.push_s
                     + p.config.device_wait_s) + 60
        wait_final(p.journal, len(snapped), bound - (time.monotonic() - t0),
                   final=("done", "failed"))
        jobs = p.journal.jobs(limit=None)
        stuck = [(j.name, j.state) for j in jobs if j.state not in ("done", "failed")]
        assert not stuck, f"jobs still running after {bound:.0f} s: {stuck}"
        assert len(jobs) == len(snapped), [j.name for j in jobs]
        slack = 8.0
        limit = {"pull": timeouts.pull_s + timeouts.stat_s, "classify": timeouts.push_s
                 + timeouts.classify_s, "generate": timeouts.generate_s}
        for j in jobs:
            atts = p.journal.attempts(j.id)
            for a in atts:
                assert a.state in ("done", "failed"), (j.name, a.stage, a.state)
                if a.state == "failed":
                    assert a.error and a.error_kind in KINDS, (a.error_kind, a.error)
                # device time per attempt never exceeds the stage timeout (+ bid/slack)
                if a.seconds is not None and a.error_kind != "no-device":
                    assert a.seconds <= limit[a.stage] + p.config.device_wait_s + slack, \
                        (j.name, a.stage, a.serial, a.seconds, a.error)
            if j.state == "failed":
                assert j.error and re.search(r"failed after|unavailable|unreachable|vanished|device",
                                             j.error), \
                    j.error
            else:
                words = CAT_WORDS if snapped[(j.serial, j.path)] == CHELSEA else COFFEE_WORDS
                assert any(w in labels_of(j) for w in words), labels_of(j)
                devices = j.result["devices"]
                assert devices["classify"] not in (s[0], s[2], s[5]), devices
                assert devices["generate"] not in (s[1], s[2]), devices
        by_origin = {j.serial: j for j in jobs}
        done = [j for j in jobs if j.state == "done"]
        # every picture whose origin device stayed healthy completes elsewhere
        healthy_origin = [j for j in jobs if j.serial in (s[6], s[7])]
        assert all(j.state == "done" for j in healthy_origin), \
            [(j.name, j.error) for j in healthy_origin if j.state != "done"]
        assert len(done) >= 5, [(j.name, j.state, j.error) for j in jobs]
        kinds = Counter(a.error_kind for j in jobs for a in p.journal.attempts(j.id)
                        if a.state == "failed")
        assert kinds["timeout"] >= 1 and (kinds["exit"] >= 1 or kinds["adb"] >= 1), kinds
        del by_origin
        print(f"{len(done)}/{len(jobs)} done; failed attempts by kind: {dict(kinds)}; "
              f"wall {time.monotonic() - t0:.0f} s")
    finally:
        p.stop_event.set()
        t.join(60)
        p.close()
        fleet.clear_faults(s[4])
        fleet.wait_adb_state(s[4], "device", timeout=30)
