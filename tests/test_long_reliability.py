"""The long reliability variant of issue 14 (behind --runslow): two orchestrators, each an
`adbflow watch` process with its own data dir, share 6 virtual phones; 200 pictures are
taken across the phones while orchestrators are killed with SIGKILL (and restarted) and
phones drop off adb for seconds at random. Then, over both data dirs together:

    wrong = 0   every done job's top label is its image's (known from a solo run), and
                every "done elsewhere" record names that same label
    lost  = 0   every picture is done in one of the data dirs
    dup   = 0   no picture is done in both (the claims at the origin phones)

and the orchestrators' max RSS is reported. Prints `long-reliability: done=... wrong=...
lost=... dup=... max_rss_mb=... seconds=...`.

The short default-suite version of the claim part is tests/test_claims.py
(two orchestrators, 3 phones, 6 pictures).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
from fleet_helpers import CHELSEA, COFFEE, PICTURES_APP, cheap_profiles, inventory

from adbflow.runtime.claims import label_word
from adbflow.runtime.journal import FINAL_STATES, Journal
from adbflow.runtime.pipeline import Pipeline, PipelineConfig

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

N_PICTURES = int(os.environ.get("ADBFLOW_LONG_PICTURES", "200"))   # >= 200 for the report
PHONES = 6

CHILD = r"""
import json, logging, sys
from pathlib import Path
logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
logging.getLogger("adbflow.runtime.detect").setLevel(logging.INFO)
from adbflow.device import AdbServer, Inventory
from adbflow.runtime.pipeline import Pipeline, PipelineConfig
from adbflow.runtime.stages import StageTimeouts
port, data, profiles = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
def ev(e):
    d = e.to_json()
    print(json.dumps({k: d.get(k) for k in ("type", "job", "stage")}), flush=True)
p = Pipeline(PipelineConfig(data_dir=data, profiles_dir=profiles, retry_wait_s=0.2,
                            claim_ttl_s=15.0, trace=False,
                            timeouts=StageTimeouts(classify_s=60, generate_s=90)),
             Inventory([AdbServer(port=port)]), on_event=ev)
p.watch(poll_s=0.5, refresh_s=2.0)
"""


@pytest.fixture(scope="module")
def fleet(fleet_factory):
    client = fleet_factory(devices=PHONES, profiles=["flagship_2025"])
    yield client
    fleet_factory.release(client)


class Orchestrator:
    """One `watch` child (restartable); its RSS sampled by the test's monitor."""

    def __init__(self, fleet, data: Path, profiles: Path) -> None:
        self.args = [sys.executable, "-c", CHILD, str(fleet.adb_port), str(data), str(profiles)]
        self.log = data.parent / f"{data.name}.log"        # the children's stderr, appended
        self.proc: subprocess.Popen | None = None
        self.watching = threading.Event()
        self.starts = 0
        self.start()

    def start(self) -> None:
        self.watching.clear()
        with self.log.open("a") as err:
            self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=err, text=True,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.starts += 1
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()

    def _pump(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if '"watching"' in line:
                self.watching.set()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def rss(self) -> int:
        try:
            return psutil.Process(self.proc.pid).memory_info().rss if self.alive() else 0
        except psutil.Error:
            return 0


def _known_labels(fleet, tmp: Path, profiles: Path) -> dict[Path, str]:
    """Each test image's top label from one solo run (one orchestrator, no faults)."""
    p = Pipeline(PipelineConfig(data_dir=tmp / "solo", profiles_dir=profiles, trace=False,
                                retry_wait_s=0.2), inventory(fleet))
    try:
        out = {}
        for img in (CHELSEA, COFFEE):
            job = p.run_image(img)
            assert job.state == "done", job.error
            out[img] = job.result["labels"][0]["name"]
        return out
    finally:
        p.close()


def test_two_orchestrators_6_phones_200_pictures_kills_and_disconnects(fleet, tmp_path):
    t_start = time.monotonic()
    profiles = cheap_profiles(tmp_path / "profiles", n_predict=8)
    known = _known_labels(fleet, tmp_path, profiles)
    rng = random.Random(14)
    dirs = [tmp_path / "orch-a", tmp_path / "orch-b"]
    orchs = [Orchestrator(fleet, d, profiles) for d in dirs]
    max_rss = 0
    stop = threading.Event()
    chaos = Counter()

    def monitor() -> None:
        nonlocal max_rss
        while not stop.wait(0.5):
            max_rss = max([max_rss] + [o.rss() for o in orchs])
    threading.Thread(target=monitor, daemon=True).start()

    def chaos_loop() -> None:
        """kill -9 an orchestrator every 15-35 s (restarted 1-4 s later); take a phone off
        adb for 2-8 s every 6-15 s."""
        next_kill = time.monotonic() + rng.uniform(15, 35)
        next_drop = time.monotonic() + rng.uniform(6, 15)
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_kill:
                o = rng.choice(orchs)
                o.kill9()
                chaos["kills"] += 1
                stop.wait(rng.uniform(1, 4))
                o.start()
                next_kill = time.monotonic() + rng.uniform(15, 35)
            if now >= next_drop:
                s = rng.choice(fleet.serials)
                fleet.fault(s, offline=True)
                chaos["disconnects"] += 1
                stop.wait(rng.uniform(2, 8))
                fleet.fault(s, offline=False)
                next_drop = time.monotonic() + rng.uniform(6, 15)
            stop.wait(0.2)

    snapped: dict[tuple[str, str], Path] = {}
    try:
        for o in orchs:
            assert o.watching.wait(90), "an orchestrator never started watching"
        chaos_thread = threading.Thread(target=chaos_loop, daemon=True)
        chaos_thread.start()
        for k in range(N_PICTURES):
            img = CHELSEA if k % 2 else COFFEE
            for _try in range(30):              # the phone may be off adb right now
                s = rng.choice(fleet.serials)
                try:
                    snapped[(s, fleet.snap(s, img, name=f"long-{k:03d}{img.suffix}",
                                           **PICTURES_APP))] = img
                    break
                except Exception:  # noqa: BLE001 - the fleet refuses an offline phone
                    time.sleep(0.2)
            time.sleep(rng.uniform(0.3, 1.5))
        stop.set()
        chaos_thread.join(60)
        for s in fleet.serials:
            fleet.clear_faults(s)
        for o in orchs:
            if not o.alive():
                o.start()
        assert len(snapped) == N_PICTURES

        def settled() -> tuple[bool, bool]:
            """(every job final, every picture done somewhere)."""
            seen, final = set(), True
            for d in dirs:
                with Journal(d / "journal.sqlite") as j:
                    for job in j.jobs(limit=None):
                        final = final and job.state in FINAL_STATES
                        if job.state == "done":
                            seen.add((job.serial, job.path))
            return final, set(snapped) <= seen
        deadline, quiet = time.monotonic() + 1500, 0
        while time.monotonic() < deadline:
            final, covered = settled()
            if final and covered:
                break
            quiet = quiet + 1 if final else 0
            if quiet > 20:              # everything final for a minute, yet not covered
                break
            time.sleep(3)
    finally:
        stop.set()
        for o in orchs:
            o.kill9()
        for s in fleet.serials:
            fleet.clear_faults(s)
    done: Counter[tuple[str, str]] = Counter()
    wrong: list = []
    states: Counter[str] = Counter()
    for d in dirs:
        with Journal(d / "journal.sqlite") as j:
            for job in j.jobs(limit=None):
                states[job.state] += 1
                states["ino0"] += job.ino == 0
                key = (job.serial, job.path)
                want = known.get(snapped.get(key, Path("?")))
                if job.state == "done":
                    done[key] += 1
                    got = job.result["labels"][0]["name"] if job.result["labels"] else None
                    if got != want:
                        wrong.append((d.name, job.name, got, want))
                elif job.state == "skipped" and (job.result or {}).get("elsewhere"):
                    got = job.result["elsewhere"]["record"].get("label")
                    if want is None or got != label_word(want):
                        wrong.append((d.name, job.name, "elsewhere:" + str(got), want))
    lost = [k for k in snapped if done[k] == 0]
    dup = [k for k, c in done.items() if c > 1]
    seconds = time.monotonic() - t_start
    print(f"\nlong-reliability: pictures={len(snapped)} done={sum(1 for k in snapped if done[k])}"
          f" wrong={len(wrong)} lost={len(lost)} dup={len(dup)} "
          f"max_rss_mb={max_rss / 2**20:.1f} seconds={seconds:.0f} "
          f"kills={chaos['kills']} disconnects={chaos['disconnects']} "
          f"restarts={[o.starts - 1 for o in orchs]} job_states={dict(states)} "
          f"known={ {p.name: lb for p, lb in known.items()} }")
    assert chaos["kills"] >= 3 and chaos["disconnects"] >= 5, chaos
    assert not wrong, wrong[:10]
    assert not lost, lost[:10]
    assert not dup, dup[:10]
    assert not [k for k in done if k not in snapped]
    print(json.dumps({"done": len(snapped) - len(lost), "wrong": len(wrong), "lost": len(lost),
                      "dup": len(dup), "max_rss_mb": round(max_rss / 2**20, 1),
                      "seconds": round(seconds)}))
