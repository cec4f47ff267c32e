"""Split runs and mesh jobs as spans on the phones that ran them (issue 18).

Split: a StageResult as SplitRunner measures it (laptop wall-clock steps, each phone's own
clock marks around benchmark_model, the two phones' clocks seconds apart in opposite
directions) goes through the journal into spans and the Chrome export. Mesh: job folders
in the exact on-phone format orch.sh writes (`times` lines `PHASE UPTIME_DS`, *.who
naming the peer), read back by control._RESULTS itself, run by bash (which has
$EPOCHREALTIME as mksh does) over a copy of the folder, against this machine's real
/proc/uptime; so the truth of every mark is known."""
from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_trace import CHROME_SCHEMA, _nest_ok

from adbflow.fleet.clock import libfaketime_path
from adbflow.mesh import control
from adbflow.mesh.trace import (
    UptimeClock,
    map_mark,
    mesh_job_rows,
    parse_times,
    parse_uptime_clock,
    record_mesh_jobs,
)
from adbflow.report.trace_export import export, to_chrome
from adbflow.runtime.clock import ClockOffset, ClockSource, ClockTrack
from adbflow.runtime.journal import Journal
from adbflow.runtime.trace import LAPTOP, build_job_spans
from adbflow.runtime.tracestore import TraceStore
from adbflow.split.record import split_job_rows
from adbflow.split.run import StageResult

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is in the test extra")

OFF_A, OFF_B = 7.0, -3.0        # phone A 7 s ahead, phone B 3 s behind the laptop


def _track(serial: str, offset: float, at: float = 1000.0) -> ClockTrack:
    return ClockTrack(serial, [ClockOffset(serial, ClockSource.EPOCHREALTIME, offset, 0.0003,
                                           at, 0.0006, 20)])


def _split_result(t: float = 1000.0) -> StageResult:
    """head on A (push_in, head, pull_cut), tail on B (push_cut, tail, pull_out)."""
    res = StageResult(b"", plan="A:40:B")
    steps = (("push_in", "A", 0.05), ("head", "A", 0.8), ("pull_cut", "A", 0.04),
             ("push_cut", "B", 0.04), ("tail", "B", 0.6), ("pull_out", "B", 0.01))
    for key, serial, d in steps:
        res.walls[key] = (t, t + d)
        res.serials[key] = serial
        t += d + 0.002
    res.nbytes.update(push_in=602112, pull_cut=75264, push_cut=75264, pull_out=4000)
    # the phones' own marks: inside the laptop's bracket of the call, on their clocks
    for key, off in (("head", OFF_A), ("tail", OFF_B)):
        s, e = res.walls[key]
        res.device_times[key] = {"start": s + 0.03 + off, "end": e - 0.02 + off,
                                 "source": "epochrealtime"}
    res.inference_s.update(head=0.5, tail=0.4)
    return res


def _spans_via_journal(tmp_path: Path, rows: dict, tracks: dict):
    with Journal(tmp_path / "journal.sqlite") as j:
        jid, created = j.record_finished_job(**rows)
        assert created
        assert j.record_finished_job(**rows) == (jid, False)     # a second write is a no-op
        return jid, build_job_spans(j.job(jid), j.attempts(jid), tracks)


def test_split_run_spans_sit_on_both_phones_nested_in_the_job_and_ordered(tmp_path):
    res = _split_result()
    rows = split_job_rows(tmp_path / "<script>cat.jpg", 1234, res,
                          {"labels": [{"name": "<script>alert(1)</script>", "score": 0.9}]})
    tracks = {"A": _track("A", OFF_A), "B": _track("B", OFF_B)}
    jid, spans = _spans_via_journal(tmp_path, rows, tracks)
    doc = to_chrome(spans)
    jsonschema.validate(doc, CHROME_SCHEMA)
    xs = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    _nest_ok(xs)
    pid_name = {e["pid"]: e["args"]["name"] for e in doc["traceEvents"]
                if e["name"] == "process_name"}
    bm = {e["cat"].split(",")[1]: e for e in xs if e["name"] == "benchmark_model"}
    assert pid_name[bm["head"]["pid"]] == "device A" and pid_name[bm["tail"]["pid"]] == "device B"
    job = next(e for e in xs if e["name"] == "job")
    assert pid_name[job["pid"]] == "laptop"
    for e in xs:       # every span inside the job's
        assert job["ts"] <= e["ts"] and e["ts"] + e["dur"] <= job["ts"] + job["dur"] + 1e-3, e
    # corrected: head run, then the cut tensor's hop, then the tail run, each device run
    # inside the laptop's bracket of its call
    cut = next(e for e in xs if e["name"] == "cut_tensor")
    assert bm["head"]["ts"] + bm["head"]["dur"] <= cut["ts"] + 1e-3
    assert cut["ts"] + cut["dur"] <= bm["tail"]["ts"] + 1e-3
    assert cut["args"] == {"from": "A", "to": "B", "bytes": 75264, "pull_s": 0.04,
                           "push_s": 0.04, "job": jid, "state": "done"}
    for lane in ("head", "tail"):
        host = next(e for e in xs if e["name"] == "run" and e["cat"].endswith(lane))
        dev = bm[lane]
        assert host["ts"] <= dev["ts"] and dev["ts"] + dev["dur"] <= host["ts"] + host["dur"]
        assert dev["args"]["clock"]["offset"] == pytest.approx(OFF_A if lane == "head" else OFF_B)
        inv = next(e for e in xs if e["name"] == "benchmark_model.invoke" and e["pid"] == dev["pid"])
        assert inv["ts"] + inv["dur"] == pytest.approx(dev["ts"] + dev["dur"])
    # raw, B's clock would put the tail seconds before the head had even started
    raw = {ln: bm[ln]["args"]["clock"]["raw_start"] for ln in ("head", "tail")}
    assert raw["tail"] < raw["head"] - 5
    text = export(spans, "chrome")
    assert "<script>cat.jpg" in json.loads(text)["traceEvents"][-1]["args"].get("name", "") or \
        "<script>cat.jpg" in text


def test_a_failed_split_keeps_the_failed_tail_before_the_whole_run(tmp_path):
    tried = _split_result()
    del tried.walls["tail"], tried.walls["pull_out"]
    whole = StageResult(b"", plan="whole:A", fallback="split A:40:B failed; ran whole on A")
    t = tried.walls["push_cut"][1] + 0.3
    for key, d in (("push_in", 0.05), ("run", 1.2), ("pull_out", 0.01)):
        whole.walls[key], whole.serials[key] = (t, t + d), "A"
        t += d
    whole.attempted = tried
    whole.failure = {"step": "tail", "serial": "B", "error": "[B] tail: benchmark_model exited 1"}
    rows = split_job_rows(tmp_path / "x.jpg", 1, whole)
    assert [(a["stage"], a["serial"], a["state"]) for a in rows["attempts"]] == [
        ("head", "A", "done"), ("tail", "B", "failed"), ("whole", "A", "done")]
    failed = rows["attempts"][1]
    assert failed["error"].startswith("[B] tail") and failed["ended"] == whole.walls["push_in"][0]
    _jid, spans = _spans_via_journal(tmp_path, rows, {})
    names = [(sp.name, sp.state) for sp in spans if sp.device == LAPTOP and sp.lane != "job"]
    assert ("tail", "failed") in names and ("whole", "done") in names
    assert not [sp for sp in spans if sp.name == "cut_tensor"]     # the tail never ran


# ------------------------------------------------------------------ mesh

def test_times_and_the_uptime_bracket_parse_strictly():
    t, refused = parse_times("detected 123\nconverted 125\n$(reboot) 1\nclassified 9999999999999\n"
                             "generated 130\ngenerated 1\n<script> 5\n")
    assert t == {"detected": 123, "converted": 125, "generated": 130} and refused == 3
    assert parse_times("x" * 100000)[0] == {}
    uc = parse_uptime_clock("e 1796115342.100000 800.50 1796115342.102000")
    assert uc is not None and uc.source is ClockSource.EPOCHREALTIME
    assert uc.offset == pytest.approx(1796115342.101 - 800.505) and uc.bound == pytest.approx(0.006, abs=1e-6)
    assert parse_uptime_clock("d 1796115342100000000 800.50 1796115342300000000").bound == \
        pytest.approx(0.105)
    for bad in ("e $(id) 800.5 1", "e 2 800.5 1", "e 1 800.5", "x 1 2 3", "e 1 -5 1"):
        assert parse_uptime_clock(bad) is None


def test_a_mark_maps_through_uptime_realtime_and_the_clock_sync_with_its_bound():
    uc = UptimeClock(ClockSource.EPOCHREALTIME, 1796115000.0, 0.002, 1000.0)
    track = _track("orch", 5.0, at=1796115000.0 + 990.0)
    host, clock = map_mark(9900, uc, track)          # uptime 990.0-990.1 s
    assert host == pytest.approx(1796115000.0 + 990.05 - 5.0)
    # 50 ms mark + 2 ms bracket + 100 ppm x 9.95 s old + the sync's bound (0.3 ms + drift)
    assert clock["bound"] == pytest.approx(0.05 + 0.002 + 100e-6 * 9.95 + 0.0003 + 100e-6 * 5,
                                           abs=1e-4)
    assert clock["resolution_s"] == 0.1 and clock["offset"] == pytest.approx(5.0)
    assert map_mark(9900, uc, None)[1]["uncorrected"] is True


def _write_job(root: Path, n: int, files: dict[str, str]) -> None:
    d = root / "jobs" / str(n)
    d.mkdir(parents=True)
    for name, text in files.items():
        (d / name).write_text(text)


class ShellPhone:
    """A phone whose adb shell is this machine's bash over a copy of the mesh folder: the
    results script runs as written (its MESH_DIR pointed at the copy)."""

    def __init__(self, serial: str, root: Path) -> None:
        self.serial, self.root = serial, root

    def shell(self, cmd: str, *, timeout: float, check: bool = True, max_output: int = 0):
        script = cmd.replace(control.MESH_DIR, str(self.root))
        out = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                             timeout=timeout)
        return SimpleNamespace(stdout=out.stdout, stderr=out.stderr, exit_code=out.returncode)


def _uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


@pytest.fixture
def mesh_phone(tmp_path):
    """Orchestrator p1 ('orch'); job 1 done (classify on p2, story on p3: a peer the session
    does not know), job 2 failed in classify, job 3 still running, job 4 hostile."""
    root = tmp_path / "phone"
    root.mkdir()
    (root / "me").write_text("p1\n")
    t_host, up = time.time(), _uptime()

    def ds(ago: float) -> int:       # orch.sh's mark of the moment `ago` seconds back
        return math.floor((up - ago) * 10)
    truth = {"detected": t_host - 20.0, "converted": t_host - 19.5, "classified": t_host - 15.0,
             "generated": t_host - 5.0}
    _write_job(root, 1, {"state": "done\n", "source": "/sdcard/DCIM/Camera/cat.jpg\n",
                         "classify.who": "p2\n", "generate.who": "p3\n",
                         "times": "".join(f"{p} {ds(t_host - t)}\n" for p, t in truth.items()),
                         "classify.out": "INFO: 0.39: 285 Egyptian cat\n",
                         "generate.out": "Once upon a time\n"})
    _write_job(root, 2, {"state": "failed-classify\n", "source": "/sdcard/Pictures/b.jpg\n",
                         "times": f"detected {ds(12)}\nconverted {ds(11.8)}\n"})
    _write_job(root, 3, {"state": "pending\n", "source": "/sdcard/Pictures/c.jpg\n",
                         "times": f"detected {ds(1)}\n"})
    _write_job(root, 4, {"state": "done\n", "source": "/sdcard/Pictures/<script>alert(1)</script>.jpg\n",
                         "classify.who": "<script>\n", "generate.who": "p2\n",
                         "classify.out": "INFO: 0.90: 1 <script>alert(3)</script>\n",
                         "times": f"detected {ds(9)}\nconverted {ds(8.9)}\n"
                                  f"$(touch {tmp_path}/pwned)\nclassified {ds(8)}\n"
                                  f"classified; reboot 1\ngenerated {ds(7)}\n"})
    return ShellPhone("orch", root), truth


def test_mesh_jobs_become_spans_on_the_phones_that_ran_them(mesh_phone, tmp_path):
    phone, truth = mesh_phone
    jobs, head = control.results_and_clock(phone)
    assert [j["job"] for j in jobs] == ["1", "2", "3", "4"] and head["me"] == "p1"
    assert jobs[0]["labels"] == ["Egyptian cat"] and jobs[3]["times_refused"] == 2
    uc = parse_uptime_clock(head["clock"])
    assert uc is not None and uc.source is ClockSource.EPOCHREALTIME and uc.bound < 0.02
    peers = {"p1": "orch", "p2": "worker2"}
    track = _track("orch", 0.0, at=time.time())      # this machine's clock is the phone's
    rows = [mesh_job_rows(j, me="p1", peers=peers, uclock=uc, track=track) for j in jobs]
    assert rows[2] is None                             # still running: nothing to trace yet
    data = tmp_path / "data"
    with Journal(data / "journal.sqlite") as jr:
        ids = [jr.record_finished_job(**r)[0] for r in rows if r]
        spans = [sp for jid in ids for sp in build_job_spans(jr.job(jid), jr.attempts(jid))]
    by = {(sp.job, sp.name): sp for sp in spans}
    j1, j2, j4 = ids
    where = {n: by[(j1, n)].device for n in ("job", "detect", "convert", "classify", "generate")}
    assert where == {"job": "orch", "detect": "orch", "convert": "orch", "classify": "worker2",
                     "generate": "mesh peer p3"}
    for stage, p0, p1 in (("convert", "detected", "converted"), ("classify", "converted", "classified"),
                          ("generate", "classified", "generated")):
        sp = by[(j1, stage)]
        bound = sp.clock["bound"]
        assert 0.05 < bound < 0.1 and sp.clock["resolution_s"] == 0.1
        # within the stated bound of the truth (+10 ms: /proc/uptime's own tick)
        assert abs(sp.start - truth[p0]) <= bound + 0.01, (stage, sp.start - truth[p0])
        assert abs(sp.end - truth[p1]) <= bound + 0.01, (stage, sp.end - truth[p1])
    assert by[(j2, "classify")].state == "failed" and "failed-classify" in by[(j2, "classify")].args["error"]
    assert by[(j2, "classify")].device == "orch"       # no peer took it: the orchestrator tried
    assert (j2, "generate") not in by
    assert by[(j4, "classify")].device == "mesh peer (unreadable name)"
    assert by[(j4, "classify")].args["peer"] == "<script>"
    doc = to_chrome(spans)
    jsonschema.validate(doc, CHROME_SCHEMA)
    xs = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    _nest_ok([e for e in xs if e["args"]["job"] == j1])
    names = {e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "process_name"}
    assert "laptop" not in names and {"device orch", "device worker2"} <= names
    text = export(spans, "chrome")
    assert "<script>" in text and not (tmp_path / "pwned").exists()
    assert json.loads(text)       # hostile text stays quoted JSON data


def test_mesh_results_are_recorded_once_and_traced(mesh_phone, tmp_path, monkeypatch):
    phone, _truth = mesh_phone
    data = tmp_path / "data"
    from adbflow.runtime import clockbook
    monkeypatch.setattr(clockbook.ClockBook, "ensure", lambda self, dev, **kw: _track(
        dev.serial, 0.0, at=time.time()))
    jobs, head = control.results_and_clock(phone)
    first = record_mesh_jobs(data, phone, jobs, head, {"p2": "worker2"})
    assert len(first) == 3
    assert record_mesh_jobs(data, phone, *control.results_and_clock(phone), {}) == []
    spans = TraceStore(data).read()
    assert {sp.job for sp in spans} == set(first)
    assert {sp.device for sp in spans if sp.name == "classify"} >= {"worker2"}


# ------------------------------------------------------------------ fleet

@pytest.fixture(scope="module")
def skewed_pair(fleet_factory):
    client = fleet_factory(devices=2, profiles=["midrange_2023"])
    yield client
    fleet_factory.release(client)


@pytest.mark.fleet
@pytest.mark.skipif(libfaketime_path() is None,
                    reason="libfaketime not installed: cannot skew device clocks")
def test_a_real_split_run_on_skewed_phones_traces_head_and_tail_on_each(skewed_pair, tmp_path):
    """`adbflow split run` on two phones whose clocks are seconds off in opposite ways,
    then `adbflow trace JOB --format chrome`: each benchmark_model run on its phone, on the
    laptop clock within a millisecond of the injected truth, head before the cut tensor's
    hop before the tail."""
    from fleet_helpers import CHELSEA
    from typer.testing import CliRunner

    from adbflow.cli.main import app
    from adbflow.fleet.clock import ClockSkew

    fleet = skewed_pair
    a, b = fleet.serials
    truths = {}
    for s, off, ppm in ((a, 6.5, 60.0), (b, -4.25, -90.0)):
        f = fleet.fault(s, clock_offset_s=off, clock_drift_ppm=ppm)["faults"]
        truths[s] = ClockSkew(f["clock_offset_s"], f["clock_drift_ppm"], f["clock_ref"])
    data = tmp_path / "data"
    common = ["--adb-server", f"127.0.0.1:{fleet.adb_port}", "--data-dir", str(data)]
    cli = CliRunner()
    try:
        res = cli.invoke(app, ["split", "run", str(CHELSEA), "--plan", f"{a}:40:{b}", "--json",
                               *common])
    finally:
        for s in fleet.serials:
            fleet.clear_faults(s)
    assert res.exit_code == 0, res.output
    run = json.loads(res.stdout)[0]
    assert run["plan"] == f"{a}:40:{b}" and run["fallback"] is None and run["job"]
    out = tmp_path / "trace.json"
    res = cli.invoke(app, ["trace", str(run["job"]), "--format", "chrome", "-o", str(out),
                           "--data-dir", str(data)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    jsonschema.validate(doc, CHROME_SCHEMA)
    xs = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    _nest_ok(xs)
    pid_of = {e["args"]["name"]: e["pid"] for e in doc["traceEvents"] if e["name"] == "process_name"}
    bm = {e["cat"].split(",")[1]: e for e in xs if e["name"] == "benchmark_model"}
    assert bm["head"]["pid"] == pid_of[f"device {a}"] and bm["tail"]["pid"] == pid_of[f"device {b}"]
    job = next(e for e in xs if e["name"] == "job")
    origin = doc["otherData"]["origin_epoch_s"]
    for lane, serial in (("head", a), ("tail", b)):
        dev = bm[lane]
        clk = dev["args"]["clock"]
        assert clk["source"] == "epochrealtime" and not clk.get("uncorrected")
        # the injected offset, within a millisecond (or the stated bound when a loaded
        # machine stretched the sync's round trips)
        err = abs(clk["offset"] - truths[serial].offset_at(origin + dev["ts"] / 1e6))
        assert err < max(0.001, clk["bound"]), (lane, err, clk)
        host = next(e for e in xs if e["name"] == "run" and e["cat"].endswith(lane))
        slack = clk["bound"] * 1e6 + 1000      # bound + 1 ms of spawn jitter
        assert host["ts"] - slack <= dev["ts"], (lane, host, dev)
        assert dev["ts"] + dev["dur"] <= host["ts"] + host["dur"] + slack, (lane, host, dev)
        assert job["ts"] <= dev["ts"] and dev["ts"] + dev["dur"] <= job["ts"] + job["dur"], \
            (lane, job, dev)
    cut = next(e for e in xs if e["name"] == "cut_tensor")
    assert cut["args"]["from"] == a and cut["args"]["to"] == b and cut["args"]["bytes"] > 0
    slack = {ln: bm[ln]["args"]["clock"]["bound"] * 1e6 + 1000 for ln in ("head", "tail")}
    assert bm["head"]["ts"] + bm["head"]["dur"] <= cut["ts"] + slack["head"], (bm["head"], cut)
    assert cut["ts"] + cut["dur"] <= bm["tail"]["ts"] + slack["tail"], (cut, bm["tail"])
    # uncorrected, B's clock (4 s behind) would put the tail before the head
    assert bm["tail"]["args"]["clock"]["raw_start"] < bm["head"]["args"]["clock"]["raw_start"]


@pytest.mark.fleet
def test_mesh_results_on_a_virtual_phone_records_the_job_for_adbflow_trace(skewed_pair, tmp_path,
                                                                           monkeypatch):
    """`adbflow mesh results` through adb on the fleet's mksh/toybox: the uptime bracket
    comes from $EPOCHREALTIME, the job is recorded once, its stages land on the phones the
    saved session names. (The fleet's /proc/uptime is simulated and refreshed once a
    second: positions are checked to that.)"""
    from fleet_helpers import device
    from typer.testing import CliRunner

    from adbflow.cli.main import app

    fleet = skewed_pair
    a, b = fleet.serials
    dev = device(fleet, a)
    home = tmp_path / "home"
    (home / "mesh").mkdir(parents=True)
    (home / "mesh" / "session.json").write_text(json.dumps({"key": "k", "peers": [
        {"name": "p1", "serial": a, "addr": "127.0.0.1", "port": 1},
        {"name": "p2", "serial": b, "addr": "127.0.0.1", "port": 2}]}))
    monkeypatch.setenv("ADBFLOW_HOME", str(home))
    deadline = time.monotonic() + 15
    while True:        # a phone (re)started a moment ago has not been up for the marks yet
        up = float(dev.shell("cat /proc/uptime", timeout=10).stdout.split()[0])
        t_host = time.time()
        if up >= 4.0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    m = control.MESH_DIR
    marks = "".join(f"{p} {math.floor((up - ago) * 10)}\\n" for p, ago in
                    (("detected", 3.0), ("converted", 2.5), ("classified", 1.5), ("generated", 0.5)))
    dev.shell(f"mkdir -p {m}/jobs/1 && echo p1 > {m}/me && cd {m}/jobs/1 && echo done > state && "
              f"echo /sdcard/DCIM/x.jpg > source && echo p2 > classify.who && "
              f"echo p1 > generate.who && printf '{marks}' > times", timeout=10)
    srv = ["--adb-server", f"127.0.0.1:{fleet.adb_port}"]
    try:
        res = CliRunner().invoke(app, ["mesh", "results", "--json", *srv])
        again = CliRunner().invoke(app, ["mesh", "results", *srv])
    finally:
        dev.shell(f"rm -rf {m}", timeout=10)
    assert res.exit_code == 0, res.output
    assert "1 mesh job(s) recorded" in res.stderr and "recorded" not in again.stderr
    jobs = json.loads(res.stdout)
    assert jobs[0]["times"]["generated"] - jobs[0]["times"]["detected"] in (24, 25, 26), jobs
    spans = {sp.name: sp for sp in TraceStore(home).read()}
    assert spans["classify"].device == b and spans["generate"].device == a
    assert spans["convert"].device == a and spans["job"].device == a
    clock = spans["classify"].clock
    assert clock["realtime_clock"] == "epochrealtime" and not clock.get("uncorrected")
    assert abs(spans["detect"].start - (t_host - 3.0)) < 1.0 + clock["bound"]


def test_hostile_mesh_and_split_fields_stay_text_in_the_html_report(mesh_phone, tmp_path):
    import os
    import re
    import sys

    phone, _truth = mesh_phone
    jobs, head = control.results_and_clock(phone)
    uc = parse_uptime_clock(head["clock"])
    data = tmp_path / "data"
    with Journal(data / "journal.sqlite") as jr:
        for j in jobs:
            rows = mesh_job_rows(j, me="p1", peers={}, uclock=uc, track=None)
            if rows:
                jr.record_finished_job(**rows)
        jr.record_finished_job(**split_job_rows(
            tmp_path / "x.jpg", 9, _split_result(time.time()),
            {"labels": [{"name": "<script>alert(2)</script>", "score": 0.5}]}))
    env = {k: v for k, v in os.environ.items() if k != "ANDROID_SERIAL"}
    out = tmp_path / "report.html"
    res = subprocess.run([sys.executable, "-m", "adbflow.cli", "report", "-o", str(out),
                          "--data-dir", str(data)], capture_output=True, text=True, timeout=120,
                         env=env)
    assert res.returncode == 0, res.stderr
    page = out.read_text()
    assert re.search(r"<script", page, re.I) is None
    for n in (2, 3):      # the split run's label, the mesh job's label: as text
        assert f"&lt;script&gt;alert({n})&lt;/script&gt;" in page
