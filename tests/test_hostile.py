"""Hostile inputs: pictures with dangerous names or contents, and devices whose output is
garbage or endless. Clear errors, bounded memory, and canary files prove no command ran.

Beyond P's tests (one `$(touch ...)` name, text/truncated/empty/huge content): option-like
names (`-rf`, `--help`), traversal-looking names, backslashes, glob characters, format
strings, RTL override / zero-width / NFC-vs-NFD twins, 230-byte names, tabs and carriage
returns; decompression bombs; symlink-to-/dev/zero, FIFO and directory entries in Pictures
(a pull of those would never end); hostile probe output at the Device seam (garbage
/proc/stat, counters running backwards, absurd numbers, forged sections, a model string with
escape sequences); label_image printing nonsense or flooding on every device.
"""
from __future__ import annotations

import io
import math
import os
import re
import threading
import time
import unicodedata
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
from fleet_helpers import (
    CHELSEA,
    PICTURES_APP,
    cheap_profiles,
    device,
    healthy,  # noqa: F401 - a fixture, found by name
    inventory,
    module_fleet,
    wait_final,
)
from PIL import Image
from pipeline_fakes import ShellOnlyPort

from adbflow.device import AdbServer, ShellResult
from adbflow.runtime.detect import PICTURES_DIR
from adbflow.runtime.events import Event, Watching
from adbflow.runtime.pipeline import Pipeline, PipelineConfig
from adbflow.runtime.stages import StageTimeouts
from adbflow.scheduling.bids import Bidder, pick_lowest_cpu

RAW = CHELSEA.read_bytes()
# picture names may not contain "/": the canaries are relative, so they would land in the
# working directory of whatever ran them (the test's cwd on the laptop; / or the shell's cwd
# on the device: both are checked)
CANARY = f"pwned-{uuid.uuid4().hex[:8]}"


def _bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (40000, 40000)).save(buf, "PNG")       # 1.6 G pixels, ~200 kB file
    return buf.getvalue()


def _jpeg_header_only() -> bytes:
    buf = io.BytesIO()
    Image.open(CHELSEA).convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()[:600]


# name -> (content, expected: "done" | "ignored" (no job) | regex the job error must match)
CORPUS: dict[str, tuple[str, str]] = {
    "-rf --help.png": ("cat", "done"),
    "--output=$(touch " + CANARY + "-opt).png": ("cat", "done"),
    "..png": ("cat", "ignored"),       # dotfile: like camera temp files, never a picture
    "a\\..\\..\\etc\\passwd.png": ("cat", "done"),
    "x..%2f..%2f..%2fetc%2fpasswd.png": ("cat", "done"),
    "%s%n%x%%{7*7}.png": ("cat", "done"),
    "*?[a-z]{1,2}.png": ("cat", "done"),
    "a|b&c;d>e<f $(touch " + CANARY + "-sub).png": ("cat", "done"),
    "tab\there\rcr `touch " + CANARY + "-tick`.png": ("cat", "done"),
    "x';touch " + CANARY + "-q;'.png": ("cat", "done"),
    "\u202egnp.exe\u200b\U0001F431.png": ("cat", "done"),
    unicodedata.normalize("NFC", "caf\u00e9.png"): ("cat", "done"),
    unicodedata.normalize("NFD", "caf\u00e9.png"): ("cat", "done"),
    ("x" * 225) + ".png": ("cat", "done"),
    "bomb.png": ("bomb", r"too large|decode|bomb|pixels"),
    "header-only.jpg": ("jpeg-head", r"damaged|truncated|decode"),
    "zip-not-jpeg.jpg": ("zip", r"not an image"),
    "huge.jpg": ("huge", r"limit"),
    "empty.png": ("empty", r"empty"),
}
EXPECT_JOBS = {k: v for k, v in CORPUS.items() if v[1] != "ignored"}
MAX_BYTES = 3 << 20


def _content(kind: str) -> bytes:
    return {"cat": RAW, "bomb": _bomb(), "jpeg-head": _jpeg_header_only(),
            "zip": b"PK\x03\x04" + os.urandom(4000), "huge": b"\xff\xd8\xff\xe0" +
            os.urandom(MAX_BYTES + 1000), "empty": b""}[kind]


fleet = module_fleet(2, ["flagship_2025"])


@pytest.fixture(scope="module")
def profiles_dir(tmp_path_factory) -> Path:
    return cheap_profiles(tmp_path_factory.mktemp("cheap-hostile") / "profiles")


class PeakRss:
    """Samples this process's RSS every 20 ms (the orchestrator runs in-process here)."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join(2)

    @property
    def grown_mb(self) -> float:
        return (self.peak - self.start) / (1 << 20)


def _watch(fleet, data: Path, profiles_dir: Path, on_watching, **cfg) -> Pipeline:
    def on_event(ev: Event) -> None:
        if isinstance(ev, Watching):
            on_watching()
    return Pipeline(PipelineConfig(data_dir=data, profiles_dir=profiles_dir, retry_wait_s=0.2,
                                   **cfg), inventory(fleet), on_event=on_event)


def test_hostile_names_and_contents(healthy, tmp_path, profiles_dir, monkeypatch) -> None:
    fleet = healthy
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    origin = fleet.serials[1]
    dev = device(fleet, origin)
    files = []
    for i, (name, (kind, _)) in enumerate(CORPUS.items()):
        f = src / f"{i}.bin"
        f.write_bytes(_content(kind))
        files.append((f, name))

    snap_errors: list[BaseException] = []

    def snap_all() -> None:
        try:
            _snap_all()
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            snap_errors.append(exc)

    def _snap_all() -> None:
        for f, name in files:
            fleet.snap(origin, f, name=name, **PICTURES_APP)
        # entries a pull would never finish on: /dev/zero behind a symlink, a FIFO, a dir
        dev.run(["ln", "-s", "/dev/zero", f"{PICTURES_DIR}/zero-link.jpg"], timeout=10)
        dev.run(["mkfifo", f"{PICTURES_DIR}/fifo.jpg"], timeout=10)
        dev.run(["mkdir", f"{PICTURES_DIR}/dir.jpg"], timeout=10)

    data = tmp_path / "data"
    p = _watch(fleet, data, profiles_dir, lambda: threading.Thread(target=snap_all).start(),
               max_bytes=MAX_BYTES, concurrency=3)
    t = threading.Thread(target=p.watch, kwargs={"poll_s": 0.5}, daemon=True)
    try:
        with PeakRss() as rss:
            t.start()
            wait_final(p.journal, len(EXPECT_JOBS), 150, poll_s=0.3,
                       abort=lambda: bool(snap_errors))
            time.sleep(2.0)              # a few more listings: the odd entries stay ignored
        p.stop_event.set()
        t.join(60)
        assert not t.is_alive(), "watch did not stop"
        assert not snap_errors, snap_errors
        jobs = p.journal.jobs(limit=None)
        by_name = {j.name: j for j in jobs}
        assert len(jobs) == len(EXPECT_JOBS) == len(by_name), \
            [ascii(n) for n in set(EXPECT_JOBS) ^ set(by_name)]
        assert set(by_name) == set(EXPECT_JOBS)
        for name, (_, expected) in EXPECT_JOBS.items():
            job = by_name[name]
            if expected == "done":
                assert job.state == "done", (name, job.error)
                assert "cat" in " ".join(lb["name"] for lb in job.result["labels"]), name
            else:
                assert job.state == "failed" and re.search(expected, job.error or "", re.I), \
                    (name, job.error)
                kinds = {a.error_kind for a in p.journal.attempts(job.id) if a.state == "failed"}
                assert kinds == {"input"}, (name, kinds)      # rejected once, no device retry
        assert rss.grown_mb < 300, f"orchestrator grew {rss.grown_mb:.0f} MB"
    finally:
        p.stop_event.set()
        t.join(30)
        p.close()
        dev.run(["rm", "-rf", f"{PICTURES_DIR}/zero-link.jpg", f"{PICTURES_DIR}/fifo.jpg",
                 f"{PICTURES_DIR}/dir.jpg"], timeout=10)
    # canaries: nothing ran on the devices or the laptop, nothing landed outside data/
    for s in fleet.serials:
        d = device(fleet, s)
        cwd = d.shell("pwd", timeout=10).stdout.strip() or "/"
        for where in {"/", "/data/local/tmp", PICTURES_DIR, cwd}:
            names = [e.name for e in d.list_dir(where, timeout=10)]
            assert not [n for n in names if n.startswith(CANARY)], (s, where, names)
    assert not list(Path.cwd().glob(CANARY + "*")) and not list(Path("/").glob(CANARY + "*"))
    assert not list(tmp_path.rglob(CANARY + "*"))
    stray = [f for f in tmp_path.rglob("*") if f.is_file() and data not in f.parents
             and src not in f.parents]
    assert stray == []
    pulled = [f for f in (data / "pictures").rglob("*") if f.is_file()]
    for f in pulled:
        assert data.resolve() in f.resolve().parents
        assert re.fullmatch(r"[A-Za-z0-9._-]+", f.name), f.name     # sanitized on the laptop
    # NFC/NFD twins and names that sanitize alike never share a laptop file
    assert len({f.name for f in pulled}) == len(pulled)


@pytest.mark.parametrize("mode,needle", [("garbage", r"parse|label"),
                                         ("flood", r"exceeded|output")])
def test_label_image_garbage_or_flood_on_every_device(healthy, tmp_path, profiles_dir, mode,
                                                      needle) -> None:
    fleet = healthy
    for s in fleet.serials:
        fleet.fault(s, program="label_image", mode=mode)
    data = tmp_path / "data"
    p = _watch(fleet, data, profiles_dir,
               lambda: fleet.snap(fleet.serials[0], CHELSEA, name=f"{mode}.png", **PICTURES_APP),
               attempts=3, timeouts=StageTimeouts(classify_s=20))
    t = threading.Thread(target=p.watch, kwargs={"once": True, "poll_s": 0.5,
                                                 "max_wait_s": 60}, daemon=True)
    t0 = time.monotonic()
    try:
        with PeakRss() as rss:
            t.start()
            t.join(3 * 20 + 60)
        assert not t.is_alive(), "watch --once hung"
        elapsed = time.monotonic() - t0
        (job,) = p.journal.jobs(limit=None)
        assert job.state == "failed", job.state
        assert "classify failed after 3 attempts" in job.error, job.error
        assert re.search(needle, job.error, re.I), job.error
        atts = [a for a in p.journal.attempts(job.id) if a.stage == "classify"]
        assert len(atts) == 3 and all(a.state == "failed" for a in atts)
        assert {a.serial for a in atts} == set(fleet.serials)   # tried every device
        assert p.journal.stage_output(job.id, "generate") is None
        # endless output is cut at the 1 MB cap: memory stays bounded and it ends quickly
        assert rss.grown_mb < 200, f"grew {rss.grown_mb:.0f} MB"
        assert elapsed < 3 * 20 + 30
    finally:
        p.stop_event.set()
        t.join(30)
        p.close()


# ---------------------------------------------------------------------- hostile probe output

STAT_OK = ("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 50 0 50 400 0 0 0 0 0 0\n"
           "cpu1 50 0 50 400 0 0 0 0 0 0\nintr 1\nctxt 1\n")
STAT_OK2 = ("cpu  150 0 150 900 0 0 0 0 0 0\ncpu0 75 0 75 450 0 0 0 0 0 0\n"
            "cpu1 75 0 75 450 0 0 0 0 0 0\nintr 1\nctxt 1\n")
MEM_OK = "MemTotal: 4000000 kB\nMemFree: 1000000 kB\nMemAvailable: 2000000 kB\n"
PROPS = "[ro.product.model]: [adbflow-virtual flagship_2025]\n[ro.product.cpu.abi]: [x86_64]\n"

HOSTILE_STAT = {
    "garbage": ("\x00\xff nonsense \x1b[2J" * 50, "\x00\xff nonsense" * 50),
    "backwards": (STAT_OK2, STAT_OK),            # counters run backwards between samples
    "absurd": ("cpu  " + " ".join(["9" * 40] * 10) + "\ncpu0 " + " ".join(["9" * 40] * 10) + "\n",
               "cpu  -5 -5 -5 -5 0 0 0 0 0 0\ncpu0 -5 -5 -5 -5 0 0 0 0 0 0\n"),
    "no_cpu_lines": ("intr 1\nctxt 2\nbtime 3\n", "intr 1\nctxt 2\n"),
    "nan": ("cpu  nan inf 1 1 0 0 0 0 0 0\n", "cpu  nan inf 1 1 0 0 0 0 0 0\n"),
    "forged": (STAT_OK + "=:adbflow:0000:stat\ncpu  0 0 0 0\n", STAT_OK2),
}


def _growing_stat(n: int) -> str:
    a, b = 100 + 60 * n, 800 + 140 * n
    return (f"cpu  {2 * a} 0 {2 * a} {2 * b} 0 0 0 0 0 0\ncpu0 {a} 0 {a} {b} 0 0 0 0 0 0\n"
            f"cpu1 {a} 0 {a} {b} 0 0 0 0 0 0\nintr 1\nctxt 1\n")


class HostileProbeDevice(ShellOnlyPort):
    """A Device double at the seam the Bidder uses (`shell`): answers the probe with the
    real sectioned format but hostile section bodies."""

    def __init__(self, serial: str, stat_a: str, stat_b: str, *, model: str | None = None,
                 mem: str = MEM_OK) -> None:
        self.serial = serial
        self.server = AdbServer(port=1)
        self.model = model
        self.stat_a, self.stat_b, self.mem = stat_a, stat_b, mem
        self.calls = 0

    def shell(self, cmd: str, *, timeout: float, stdin=None, check: bool = True,
              max_output: int = 16 << 20) -> ShellResult:
        m = re.search(r"set -- (\w+) (\d) (\d) (\d)", cmd)
        assert m, "probe command without its nonce header"
        nonce, first, _cpuinfo, props = m.groups()
        self.calls += 1
        mark = f"=:adbflow:{nonce}:"
        stat = self.stat_b if (first == "1" or self.calls % 2 == 0) else self.stat_a
        if self.stat_a is STAT_OK and self.stat_b is STAT_OK2:     # sane: counters advance
            stat = _growing_stat(self.calls)
        out = ""
        if first == "1":
            out += f"{mark}stat_a\n{self.stat_a}\n"
        out += f"{mark}stat\n{stat}\n{mark}meminfo\n{self.mem}\n"
        if props == "1":
            out += f"{mark}props\n" + (self.model_props() or PROPS)
        out += f"{mark}end\n"
        return ShellResult(self.serial, cmd, 0, out[:max_output], "", 0.001)

    def model_props(self) -> str | None:
        return None if self.model is None else f"[ro.product.model]: [{self.model}]\n"


def test_bidder_survives_hostile_probe_output() -> None:
    sane = HostileProbeDevice("sane", STAT_OK, STAT_OK2)
    bad = [HostileProbeDevice(k, a, b) for k, (a, b) in HOSTILE_STAT.items()]
    evil_model = HostileProbeDevice("evil-model", STAT_OK, STAT_OK2,
                                    model="$(reboot)\x1b[31m;rm -rf /\u202e")
    devices = [*bad, evil_model, sane]
    bidder = Bidder(timeout=2)
    for _round in range(3):
        bids = bidder.gather(devices)                      # never raises
        assert [b.serial for b in bids] == [d.serial for d in devices]
        for b in bids:
            if b.ok:
                assert 0.0 <= b.cpu_load <= 100.0 and not math.isnan(b.cpu_load), (b.serial,
                                                                                   b.cpu_load)
                assert all(0.0 <= x <= 100.0 for x in b.per_core_load), b.per_core_load
                assert b.mem_available_kb >= 0 and b.mem_total_kb >= 0
            else:
                assert isinstance(b.error, str) and b.error, b.serial
        by = {b.serial: b for b in bids}
        assert not by["garbage"].ok and "unparsable" in by["garbage"].error
        assert not by["no_cpu_lines"].ok
        assert by["sane"].ok
        # the hostile model string is data: kept verbatim as a value, never interpreted
        assert by["evil-model"].model in (None, "$(reboot)\x1b[31m;rm -rf /\u202e")
        import json
        json.dumps([b.to_json() for b in bids])            # reports stay serialisable
    winner = pick_lowest_cpu(bids)
    assert winner in {b.serial for b in bids if b.ok}


class SlowProbeDevice(HostileProbeDevice):
    """A sane probe answer that takes 0.2 s: long enough for rounds to overlap."""

    def shell(self, cmd: str, **kw) -> ShellResult:
        time.sleep(0.2)
        return super().shell(cmd, **kw)


def test_concurrent_rounds_share_one_probe_per_device() -> None:
    """A burst: 12 bid rounds over the same 3 phones at once probe each phone about once
    (single-flight), not 12 times; every round still gets a bid for every phone, and a
    round that starts after the probe answered probes again (no stale reuse)."""
    devs = [SlowProbeDevice(f"d{i}", STAT_OK, STAT_OK2) for i in range(3)]
    bidder = Bidder(timeout=5)
    with ThreadPoolExecutor(12) as pool:
        rounds = list(pool.map(lambda _: bidder.gather(devs), range(12)))
    assert all([b.serial for b in r] == ["d0", "d1", "d2"] and all(b.ok for b in r)
               for r in rounds)
    assert all(d.calls <= 2 for d in devs), [d.calls for d in devs]
    before = [d.calls for d in devs]
    bidder.gather(devs)
    assert [d.calls for d in devs] == [c + 1 for c in before]
    bidder.close()


def test_probe_flood_is_cut_by_max_output() -> None:
    """A device answering the probe with endless output: the probe's output cap applies
    (the double honours `max_output` like Device.shell does) and the bid is an error."""
    class Flood(HostileProbeDevice):
        def shell(self, cmd, *, timeout, stdin=None, check=True, max_output=16 << 20):
            from adbflow.errors import OutputTooLarge
            assert max_output <= 4 << 20, f"probe asks for up to {max_output} bytes"
            raise OutputTooLarge(self.serial, "probe", message=f"output exceeded {max_output} "
                           "bytes; command killed")
    bids = Bidder(timeout=2).gather([Flood("flood", STAT_OK, STAT_OK2),
                                     HostileProbeDevice("sane", STAT_OK, STAT_OK2)])
    assert not bids[0].ok and "exceeded" in bids[0].error
    assert bids[1].ok
