"""Traces: spans built from journal rows, device times mapped onto the laptop clock, the
Chrome trace-event export (schema-checked, nesting per pid/tid), JSONL/CSV, and one real
job on a virtual fleet whose device clocks are seconds off."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
from fleet_helpers import PICTURES_APP

from adbflow.cli.trace import parse_since
from adbflow.fleet.clock import ClockSkew, libfaketime_path
from adbflow.report.trace_export import export, to_chrome, to_csv
from adbflow.runtime.clock import ClockOffset, ClockSource, ClockTrack
from adbflow.runtime.devtime import split_marks, timed_command
from adbflow.runtime.trace import LAPTOP, Span, build_job_spans
from adbflow.runtime.tracestore import TraceStore

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is in the test extra")

# The subset of the Trace Event Format this exporter promises (complete + metadata events).
CHROME_SCHEMA = {
    "type": "object", "required": ["traceEvents"],
    "properties": {
        "displayTimeUnit": {"enum": ["ms", "ns"]},
        "traceEvents": {"type": "array", "items": {"oneOf": [
            {"type": "object", "required": ["name", "ph", "ts", "dur", "pid", "tid", "cat"],
             "properties": {"ph": {"const": "X"}, "name": {"type": "string"},
                            "cat": {"type": "string"}, "ts": {"type": "number"},
                            "dur": {"type": "number", "minimum": 0},
                            "pid": {"type": "integer"}, "tid": {"type": "integer"},
                            "args": {"type": "object"}}},
            {"type": "object", "required": ["name", "ph", "pid", "args"],
             "properties": {"ph": {"const": "M"},
                            "name": {"enum": ["process_name", "thread_name",
                                              "process_sort_index"]},
                            "pid": {"type": "integer"}, "tid": {"type": "integer"},
                            "args": {"type": "object"}}},
        ]}},
    },
}

OFF = 5.0      # the device clock is 5 s ahead


def _track(serial: str, offset: float = OFF) -> ClockTrack:
    return ClockTrack(serial, [ClockOffset(serial, ClockSource.EPOCHREALTIME, offset, 0.0002,
                                           1000.0, 0.0004, 20)])


def _job_rows():
    job = {"id": 7, "source": "device", "serial": "phoneA", "path": "/sdcard/DCIM/<script>.jpg",
           "name": "<script>.jpg", "mtime": 995.0 + OFF, "created": 996.0, "finished": 1010.0,
           "state": "done", "how": "inotify", "error": None}
    bids = [{"serial": "phoneA", "timestamp": 997.4, "probe_rtt_s": 0.05, "cpu_load": 30.0},
            {"serial": "phoneB", "timestamp": 997.45, "probe_rtt_s": 0.1, "cpu_load": 5.0}]
    atts = [
        {"stage": "pull", "attempt": 1, "serial": "phoneA", "state": "done", "started": 996.1,
         "ended": 996.3, "output": {"t": {"pull": [996.12, 996.28]}}},
        {"stage": "classify", "attempt": 1, "serial": "phoneB", "state": "failed",
         "started": 996.4, "ended": 997.0, "error": "boom </script>", "output": None},
        {"stage": "classify", "attempt": 2, "serial": "phoneB", "state": "done",
         "started": 997.1, "ended": 999.0,
         "output": {"serial": "phoneB", "avg_ms": 300.0, "bids": bids,
                    "labels": [{"name": "<script>alert(1)</script>", "score": 0.9}],
                    "t": {"convert": [997.1, 997.3], "bid": [997.3, 997.5],
                          "slot_wait": [997.5, 997.5], "push": [997.5, 997.6],
                          "run": [997.6, 998.9]},
                    "device_times": {"start": 997.65 + OFF, "end": 998.85 + OFF,
                                     "source": "epochrealtime"}}},
        {"stage": "generate", "attempt": 1, "serial": "phoneB", "state": "done",
         "started": 999.0, "ended": 1009.9,
         "output": {"serial": "phoneB", "load_ms": 500.0, "prompt_tokens": 20,
                    "prompt_tok_s": 100.0, "eval_tokens": 64, "eval_tok_s": 10.0,
                    "timings": {"bid_s": 0.2, "slot_wait_s": 0.0, "run_s": 9.0}}},
    ]
    return job, atts


def _nest_ok(spans) -> None:
    """Chrome draws one stack per pid/tid: intervals there must nest or be disjoint."""
    by: dict = {}
    for ev in spans:
        by.setdefault((ev["pid"], ev["tid"]), []).append((ev["ts"], ev["ts"] + ev["dur"], ev["name"]))
    for key, evs in by.items():
        evs.sort(key=lambda e: (e[0], -e[1]))
        stack: list = []
        for s, e, name in evs:
            while stack and stack[-1][1] <= s + 1e-3:
                stack.pop()
            assert not stack or e <= stack[-1][1] + 1e-3, (key, name, stack[-1])
            stack.append((s, e, name))


def test_device_run_is_mapped_into_its_laptop_bracket_and_parts_nest():
    job, atts = _job_rows()
    spans = build_job_spans(job, atts, {"phoneA": _track("phoneA"), "phoneB": _track("phoneB")})
    by = {(sp.name, sp.device): sp for sp in spans if sp.lane != "generate"}
    run, host_run = by[("label_image", "phoneB")], by[("run", LAPTOP)]
    assert host_run.start <= run.start and run.end <= host_run.end
    assert run.clock["offset"] == pytest.approx(OFF)
    # the sync's 0.2 ms plus an assumed 100 ppm drift over the 2.4 s since that one sync
    assert run.clock["bound"] == pytest.approx(0.0002 + 100e-6 * (1000.0 - 997.6), abs=1e-5)
    inv = by[("label_image.invoke", "phoneB")]
    assert inv.end == run.end and inv.seconds == pytest.approx(0.3)
    assert by[("return", LAPTOP)].start == pytest.approx(998.85)
    detect = by[("detect", "phoneA")]          # picture taken at 995.0 on the laptop clock
    assert detect.start == pytest.approx(995.0) and detect.end == 996.0
    probes = [sp for sp in spans if sp.name == "probe"]
    assert {p.device for p in probes} == {"phoneA", "phoneB"}
    bid = by[("bid", LAPTOP)]
    assert all(bid.start <= p.start and p.end <= bid.end for p in probes)
    failed = [sp for sp in spans if sp.name == "classify" and sp.state == "failed"]
    assert failed and failed[0].args["error"] == "boom </script>"
    # laid out from durations where the journal had no absolute times (older rows)
    gen_run = [sp for sp in spans if sp.name == "run" and sp.lane == "generate"][0]
    assert gen_run.args == {"layout": "durations"} and gen_run.seconds == pytest.approx(9.0)
    llama = [sp for sp in spans if sp.name.startswith("llama.")]
    assert [sp.name for sp in llama] == ["llama.load", "llama.prompt_eval", "llama.eval"]
    assert llama[0].end <= llama[1].start + 1e-9 <= llama[2].start + 2e-9
    order = [next(sp for sp in spans if sp.name == n and sp.state == "done").start
             for n in ("detect", "pull", "classify", "generate", "story")]
    assert order == sorted(order)
    job_span = by[("job", LAPTOP)]
    assert all(job_span.start <= sp.start and sp.end <= job_span.end + 1e-9 for sp in spans)
    doc = to_chrome(spans)
    jsonschema.validate(doc, CHROME_SCHEMA)
    _nest_ok([e for e in doc["traceEvents"] if e["ph"] == "X"])


def test_without_a_clock_the_device_span_is_raw_and_says_uncorrected():
    job, atts = _job_rows()
    spans = build_job_spans(job, atts, {})
    run = [sp for sp in spans if sp.name == "label_image"][0]
    assert run.clock["uncorrected"] is True and run.start == pytest.approx(997.65 + OFF)


def test_device_text_is_escaped_in_every_format():
    job, atts = _job_rows()
    job["error"] = "line\nbreak \u2028 \x1b[31m \"quoted\" <script>alert(1)</script>"
    spans = build_job_spans(job, atts, {"phoneB": _track("phoneB")})
    for fmt in ("chrome", "jsonl"):
        text = export(spans, fmt)
        assert "\x1b" not in text and "\u2028" not in text
        lines = text.splitlines() if fmt == "jsonl" else [text]
        for line in lines:
            json.loads(line)                     # every line is whole JSON
        assert "<script>alert(1)</script>" in text   # kept as data, quoted by JSON
    doc = json.loads(export(spans, "chrome"))
    job_ev = [e for e in doc["traceEvents"] if e.get("name") == "job"][0]
    assert job_ev["args"]["error"] == job["error"]       # exact round trip
    csv_text = to_csv([Span(1, "x", "job", LAPTOP, 0.0, 1.0, args={"e": "=HYPERLINK(1)"}),
                       Span(1, "=cmd|' /C calc'!A0", "job", LAPTOP, 0.0, 1.0)])
    assert "\n=cmd" not in csv_text and ",=cmd" not in csv_text and "'=cmd" in csv_text


def test_timed_command_keeps_the_argv_quoted_and_marks_parse_strictly():
    cmd = timed_command(["/data/local/tmp/label_image", "-i", "$(touch pwned)", "a b"])
    assert "'$(touch pwned)'" in cmd and "'a b'" in cmd and cmd.endswith("exit $_r")
    err = ("INFO: loaded\nADBFLOW_DT0 e 1796115342.652564\nINFO: invoked\n"
           "ADBFLOW_DT1 e 1796115343.000001\n")
    clean, marks = split_marks(err)
    assert clean == "INFO: loaded\nINFO: invoked\n"
    assert marks == {"start": pytest.approx(1796115342.652564),
                     "end": pytest.approx(1796115343.000001), "source": "epochrealtime"}
    assert split_marks("ADBFLOW_DT0 e $(reboot)\nADBFLOW_DT1 e 5\n")[1] is None
    assert split_marks("ADBFLOW_DT0 d 1796115342652564000\nADBFLOW_DT1 d 1796115342752564000\n"
                       )[1]["source"] == "date_ns"


def test_store_keeps_the_last_copy_of_a_job_and_skips_torn_lines(tmp_path):
    job, atts = _job_rows()
    store = TraceStore(tmp_path)
    spans = build_job_spans(job, atts, {})
    path = store.append(spans)
    store.append(spans)
    with path.open("a") as fh:
        fh.write('{"kind": "span", "job": 7, "na')         # crash mid-line
    assert path.parent.name == "traces" and path.name.endswith(".jsonl")
    got = store.read(job=7)
    assert len(got) == len(spans)
    assert store.read(since=1e12) == []


def test_parse_since():
    assert parse_since("2h", now=10000.0) == 10000.0 - 7200
    assert parse_since("1700000000") == 1700000000.0
    assert parse_since("2026-12-01T00:00:00") == 1796083200.0
    with pytest.raises(Exception):
        parse_since("yesterday-ish")


# ------------------------------------------------------------------ fleet

needs_faketime = pytest.mark.skipif(libfaketime_path() is None,
                                    reason="libfaketime not installed: cannot skew device clocks")


@pytest.fixture(scope="module")
def skewed_fleet(fleet_factory):
    client = fleet_factory(devices=2, profiles=["midrange_2023"])
    yield client
    fleet_factory.release(client)


@pytest.mark.timing   # offset error bounds in milliseconds: run alone
@pytest.mark.fleet
@needs_faketime
def test_a_real_job_traced_on_skewed_clocks_nests_after_correction(skewed_fleet, tmp_path):
    from fleet_helpers import CHELSEA, cheap_profiles

    from adbflow.device import AdbServer, Inventory
    from adbflow.runtime.pipeline import Pipeline, PipelineConfig

    fleet = skewed_fleet
    origin, worker = fleet.serials
    truths = {}
    for s, off, ppm in ((origin, 6.5, 60.0), (worker, -4.25, -90.0)):
        f = fleet.fault(s, clock_offset_s=off, clock_drift_ppm=ppm)["faults"]
        truths[s] = ClockSkew(f["clock_offset_s"], f["clock_drift_ppm"], f["clock_ref"])
    fleet.load(origin, 80)

    def on_event(ev: dict) -> None:
        if getattr(ev, "type", None) == "watching":
            fleet.snap(origin, CHELSEA, name="<script>trace.png", **PICTURES_APP)

    data = tmp_path / "data"
    p = Pipeline(PipelineConfig(data_dir=data, profiles_dir=cheap_profiles(tmp_path / "profiles")),
                 Inventory([AdbServer(port=fleet.adb_port)]), on_event=on_event)
    try:
        t = threading.Thread(target=p.watch, kwargs={"once": True, "poll_s": 0.5, "max_wait_s": 60})
        t.start()
        t.join(240)
        assert not t.is_alive()
        job = p.journal.jobs()[0]
        assert job.state == "done", job.error
    finally:
        p.stop_event.set()
        p.close()
        for s in fleet.serials:
            fleet.clear_faults(s)
            fleet.load(s, 0)
    env = {k: v for k, v in os.environ.items() if k != "ANDROID_SERIAL"}
    out = tmp_path / "trace.json"
    res = subprocess.run([sys.executable, "-m", "adbflow.cli", "trace", str(job.id), "--format",
                          "chrome", "-o", str(out), "--data-dir", str(data)],
                         capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0, res.stderr
    assert list((data / "traces").glob("*.jsonl"))          # canonical copy written at job end
    doc = json.loads(out.read_text())
    jsonschema.validate(doc, CHROME_SCHEMA)
    xs = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    _nest_ok(xs)
    names = {e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "process_name"}
    assert names == {"laptop", f"device {origin}", f"device {worker}"}
    by = {}
    for e in xs:
        by.setdefault(e["name"], []).append(e)
    for prog, stage in (("label_image", "classify"), ("llama-cli", "generate")):
        dev = by[prog][0]
        host = [e for e in by["run"] if e["cat"].endswith(stage)][0]
        clk = dev["args"]["clock"]
        assert clk["source"] == "epochrealtime" and not clk.get("uncorrected")
        serial = [d for d in (origin, worker) if f"device {d}" in
                  {m["args"]["name"] for m in doc["traceEvents"]
                   if m["name"] == "process_name" and m["pid"] == dev["pid"]}][0]
        # the mapped offset is the injected one (within a millisecond)
        at = doc["otherData"]["origin_epoch_s"] + dev["ts"] / 1e6
        assert abs(clk["offset"] - truths[serial].offset_at(at)) < 0.001
        slack = clk["bound"] * 1e6 + 1000      # bound + 1 ms of spawn jitter
        assert host["ts"] - slack <= dev["ts"] and dev["ts"] + dev["dur"] <= host["ts"] + host["dur"] + slack
        # uncorrected, the device span would sit seconds away from the laptop's bracket
        assert abs((clk["raw_start"] - doc["otherData"]["origin_epoch_s"]) * 1e6 - host["ts"]) > 3e6
    detect = by["detect"][0]
    assert detect["args"]["clock"]["source"] == "epochrealtime"
    starts = [min(e["ts"] for e in by[n]) for n in ("detect", "pull", "classify", "generate", "story")]
    assert starts == sorted(starts)
    assert {e["pid"] for e in by["probe"]} >= {dev["pid"] for dev in by["label_image"]}
    assert "<script>trace.png" in json.dumps(by["job"][0]["args"]) or \
        by["job"][0]["args"]["name"] == "<script>trace.png"
