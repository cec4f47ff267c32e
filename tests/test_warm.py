"""Warm models (issue 19): a resident llama-server per phone for the session.

On the virtual fleet, through the real adb server: the first story starts the server (adb
shell tether, pid recorded, `adb forward`, GET /health), later stories reuse it and do not pay
the model load the one-shot program pays at every start; greedy text equals the one-shot
program's; adbflow's exit (close, SIGTERM, SIGINT, kill -9) leaves nothing running (`ps -A`)
and no forward; a hung server is killed and the stage re-bid; the policy prices the load
only where the model is not resident.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from bid_helpers import make_bid
from fleet_helpers import (
    CHELSEA,
    COFFEE,
    PICTURES_APP,
    cheap_profiles,
    device,
    inventory,
    module_fleet,
)

from adbflow.device.forward import Forward, list_forwards
from adbflow.errors import ResidentServerError
from adbflow.fleet.profile import load_virtual_profile
from adbflow.runtime.dispatcher import decision_summary
from adbflow.runtime.journal import Journal
from adbflow.runtime.pipeline import Pipeline, PipelineConfig, journal_path
from adbflow.runtime.resident import (
    RESIDENT_LEDGER,
    ForwardLedger,
    ResidentServers,
    parse_completion,
    parse_listening_port,
    parse_pid,
    server_argv,
    tether_command,
)
from adbflow.runtime.stages import StageTimeouts, generate_on, generate_resident
from adbflow.scheduling.policy import ECTPolicy, Task, format_decision
from adbflow.scheduling.profiles import ProfileBook
from adbflow.scheduling.service_times import ServiceTimes

VIRTUAL = "adbflow-virtual midrange_2023"
PROMPT = "Write a story of three short sentences about a tabby cat."
OPENING = "Once upon a time, there was a tabby cat"

# A real llama-server answer (llama.cpp via xllamacpp, 2026-10 build), shortened settings.
REAL_ANSWER = (b'{"index":0,"content":", in a small town, there lived a cat named Whiskers.",'
               b'"tokens":[],"id_slot":0,"stop":true,"model":"/data/local/tmp/m.gguf",'
               b'"tokens_predicted":12,"tokens_evaluated":20,"stop_type":"limit",'
               b'"stopped_eos":false,"timings":{"cache_n":8,"prompt_n":12,"prompt_ms":51.7,'
               b'"prompt_per_token_ms":4.3,"prompt_per_second":231.7,"predicted_n":12,'
               b'"predicted_ms":414.2,"predicted_per_token_ms":34.5,'
               b'"predicted_per_second":28.9}}')


# ------------------------------------------------------------------ pure parts

def test_the_listening_line_gives_the_port_the_server_picked() -> None:
    line = "main: HTTP server is listening, hostname: 127.0.0.1, port: 41607, http threads: 3"
    assert parse_listening_port(line) == 41607
    assert parse_listening_port("main: server is listening on http://127.0.0.1:8080 - x") is None
    assert parse_listening_port("HTTP server is listening, hostname: h, port: 99999") is None
    assert parse_pid("ADBFLOW_RESIDENT_PID=4242") == 4242
    assert parse_pid("ADBFLOW_RESIDENT_PID=42; rm -rf /") is None


def test_the_tether_execs_the_quoted_server_after_printing_its_pid() -> None:
    spec = ProfileBook.load().for_model(VIRTUAL).llama
    argv = server_argv(replace(spec, model="/data/local/tmp/my model.gguf"))
    cmd = tether_command(argv)
    assert cmd.startswith("echo ADBFLOW_RESIDENT_PID=$$; exec /data/local/tmp/llama-server ")
    assert "'/data/local/tmp/my model.gguf'" in cmd and "--host 127.0.0.1 --port 0" in cmd


def test_a_real_server_answer_is_parsed_and_device_text_is_cleaned() -> None:
    done = parse_completion(REAL_ANSWER)
    assert done.text.startswith(", in a small town") and done.tokens_predicted == 12
    assert (done.prompt_tokens, done.cached_tokens) == (12, 8)
    assert done.to_json()["eval_tok_s"] == pytest.approx(12 / 0.4142)
    hostile = json.loads(REAL_ANSWER)
    hostile["content"] = "a\x1b[2Jb\u202e"
    hostile["timings"] = {"predicted_ms": "NaN", "prompt_n": -3}
    odd = parse_completion(json.dumps(hostile).encode())
    assert odd.text == "a[2Jb" and odd.predicted_ms == 0.0 and odd.prompt_tokens == 0
    with pytest.raises(ValueError):
        parse_completion(b'{"error":{"code":503,"message":"Loading model"}}')


def test_the_policy_prices_the_model_load_only_where_it_is_not_resident() -> None:
    book = ProfileBook.load()
    bids = [make_bid(s, model=VIRTUAL, timestamp=time.time()) for s in ("A", "B")]
    load_s = book.for_model(VIRTUAL).timing.generate_load_ms / 1000.0
    assert load_s > 0
    task = Task("generate", prompt_tokens=40, resident_on=frozenset({"B"}))
    decision = ECTPolicy().choose(task, bids, inflight={}, profiles=book)
    a, b = decision.cost_of("A"), decision.cost_of("B")
    assert a is not None and b is not None
    assert b.parts["model_load"] == 0.0 and a.parts["model_load"] == pytest.approx(load_s)
    assert a.total_s - b.total_s == pytest.approx(load_s)
    assert decision.winner == "B"          # the warm phone wins a tie of equal phones
    assert "resident" in format_decision(decision)
    summary = decision_summary(decision)
    assert summary["warm"] == ["B"] and summary["model_load_s"]["A"] == pytest.approx(load_s)
    cold = ECTPolicy().choose(replace(task, resident_on=frozenset()), bids, inflight={},
                              profiles=book)
    assert all(c.parts["model_load"] == pytest.approx(load_s) for c in cold.costs)


def test_the_fleet_and_the_scheduler_agree_on_each_class_load_time() -> None:
    """One number, two files: the stand-ins pad to llm_load_ms, the policy prices
    generate_load_ms; they must be the same simulated phone."""
    vf = ProfileBook.load().get("virtual_fleet")
    for cls, timing in vf.classes.items():
        assert timing.generate_load_ms == load_virtual_profile(cls).llm_load_ms > 0, cls


# ------------------------------------------------------------------ on the fleet

fleet = module_fleet(2, ["midrange_2023"])


def _greedy(tmp_path: Path):
    spec = ProfileBook.load(cheap_profiles(tmp_path / "profiles", n_predict=16)
                            ).for_model(VIRTUAL).llama
    return replace(spec, temp=0.0)


def _ps(fleet, serial: str) -> str:
    return device(fleet, serial).shell("ps -A", timeout=10).stdout


def _gone(fleet, serial: str, pid: int | None, timeout: float = 10.0) -> bool:
    """No llama-server (and not that pid) on the phone within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [line.split() for line in _ps(fleet, serial).splitlines()[1:]]
        alive = [r for r in rows if r and (r[-1] == "llama-server" or r[0] == str(pid))]
        if not alive:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.3)


def _forwards(fleet) -> list:
    return list_forwards(device(fleet, fleet.serials[0]))


@pytest.mark.fleet
def test_the_server_loads_once_answers_like_the_one_shot_program_and_is_killed_when_hung(
        fleet, tmp_path) -> None:
    """First use starts it (pid, port, forward, health); the one-shot program pays the
    class's load at every start, the resident one once; greedy text is the same, with and
    without the prompt cache; a request it does not answer kills it."""
    serial = fleet.serials[0]
    dev = device(fleet, serial)
    spec = _greedy(tmp_path)
    load_ms = load_virtual_profile("midrange_2023").llm_load_ms
    timeouts = StageTimeouts(generate_s=120.0)
    cold = generate_on(dev, spec, PROMPT, timeouts=timeouts, opening=OPENING)
    assert cold["load_ms"] >= load_ms               # paid by every one-shot start
    residents = ResidentServers()
    try:
        t0 = time.monotonic()
        srv = residents.server(dev, spec)
        assert srv is not None and residents.ready() == {serial}
        assert srv.ready_s is not None and srv.ready_s >= load_ms / 1000.0   # paid once, here
        assert time.monotonic() - t0 >= load_ms / 1000.0
        assert f"{srv.pid}" in _ps(fleet, serial) and "llama-server" in _ps(fleet, serial)
        assert srv.forward is not None
        assert (serial, f"tcp:{srv.forward.local_port}", f"tcp:{srv.remote_port}") in \
            _forwards(fleet)
        first = generate_resident(srv, spec, PROMPT, timeouts=timeouts, opening=OPENING)
        again = generate_resident(srv, spec, PROMPT, timeouts=timeouts, opening=OPENING)
        assert residents.server(dev, spec) is srv and again["resident"]["pid"] == srv.pid
        assert first["raw_text"] == cold["raw_text"] == again["raw_text"]
        assert first["story"] == cold["story"]
        assert first["load_ms"] == 0.0 and again["cached_tokens"] > 0   # the prompt cache
        pid = srv.pid
        fleet.fault(serial, program="llama-server", mode="hang")
        with pytest.raises(ResidentServerError) as err:
            generate_resident(srv, spec, PROMPT, timeouts=StageTimeouts(generate_s=3.0),
                              opening=OPENING)
        assert err.value.kind == "resident-hang" and err.value.serial == serial
        assert residents.ready() == frozenset()      # no longer warm for the policy
        assert _gone(fleet, serial, pid), _ps(fleet, serial)
        assert _forwards(fleet) == []
    finally:
        fleet.clear_faults(serial)
        residents.close()
    assert _gone(fleet, serial, None), _ps(fleet, serial)


@pytest.mark.fleet
def test_a_forward_reaches_the_phone_and_is_released(fleet) -> None:
    serial = fleet.serials[1]
    dev = device(fleet, serial)
    with Forward(dev, 9) as fwd:       # nothing listens on the phone's port 9: still a forward
        assert (serial, f"tcp:{fwd.local_port}", "tcp:9") in _forwards(fleet)
    assert _forwards(fleet) == []
    fwd.close()                        # idempotent


def _pipeline(fleet, tmp_path: Path, generate_s: float) -> Pipeline:
    """A warm-models pipeline whose ECT decisions turn on the model-load term: both phones
    measured alike and learning nearly off (alpha 0.01), because on this shared CPU a learned
    run time says more about the host than about the phone."""
    profiles = cheap_profiles(tmp_path / "profiles", n_predict=16)
    cfg = PipelineConfig(data_dir=tmp_path / "data", profiles_dir=profiles, warm_models=True,
                         retry_wait_s=0.1, device_wait_s=10.0,
                         timeouts=StageTimeouts(generate_s=generate_s))
    learned = ServiceTimes(None, alpha=0.01)
    for s in fleet.serials:
        learned.record(s, "generate", 0.05, cpu_load=0.0)
    return Pipeline(cfg, inventory(fleet), service_times=learned)


def _pictures(tmp_path: Path, n: int) -> list[Path]:
    out = []
    for i in range(n):
        dst = tmp_path / f"p{i}.png"
        dst.write_bytes((CHELSEA, COFFEE)[i % 2].read_bytes() + bytes([i]))   # distinct files
        out.append(dst)
    return out


def _story(pipe: Pipeline, picture: Path) -> tuple[object, dict]:
    job = pipe.run_image(picture)
    assert job.state == "done", job.error
    return job, pipe.journal.stage_output(job.id, "generate") or {}


@pytest.mark.fleet
def test_pipeline_stories_go_to_the_warm_phone_and_reuse_its_server(fleet, tmp_path) -> None:
    """Story 1 starts a server; for story 2 the policy prices no model load on that phone
    (and the load on the other) and its server answers again; close() stops everything."""
    pipe = _pipeline(fleet, tmp_path, generate_s=120.0)
    pics = _pictures(tmp_path, 2)
    try:
        _, g1 = _story(pipe, pics[0])
        assert g1["warm"] is True and g1["resident"]["pid"]
        warm = g1["serial"]
        other = next(s for s in fleet.serials if s != warm)
        _, g2 = _story(pipe, pics[1])
        load_s = load_virtual_profile("midrange_2023").llm_load_ms / 1000.0
        assert g2["decision"]["warm"] == [warm], g2["decision"]
        assert g2["decision"]["model_load_s"] == {warm: 0.0, other: pytest.approx(load_s)}
        assert g2["serial"] == warm and g2["resident"]["pid"] == g1["resident"]["pid"]
    finally:
        pipe.close()
    for s in fleet.serials:
        assert _gone(fleet, s, None), _ps(fleet, s)
    assert _forwards(fleet) == []


@pytest.mark.fleet
@pytest.mark.slow
def test_a_hung_server_in_the_pipeline_is_killed_and_the_story_re_bid(fleet, tmp_path) -> None:
    pipe = _pipeline(fleet, tmp_path, generate_s=20.0)
    pics = _pictures(tmp_path, 2)
    try:
        _, g1 = _story(pipe, pics[0])
        warm = g1["serial"]
        other = next(s for s in fleet.serials if s != warm)
        fleet.fault(warm, program="llama-server", mode="hang")
        job, g2 = _story(pipe, pics[1])
        tries = [a for a in pipe.journal.attempts(job.id) if a.stage == "generate"]
        assert tries[0].serial == warm and tries[0].error_kind == "resident-hang", tries
        assert tries[-1].serial == other and g2["serial"] == other
        assert _gone(fleet, warm, g1["resident"]["pid"]), _ps(fleet, warm)
        assert "llama-server" in _ps(fleet, other)
    finally:
        for s in fleet.serials:
            fleet.clear_faults(s)
        pipe.close()
    for s in fleet.serials:
        assert _gone(fleet, s, None), _ps(fleet, s)
    assert _forwards(fleet) == []


def _watch(fleet, tmp_path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen(
        [sys.executable, "-m", "adbflow.cli", "watch", "--warm-models", "--adb-server",
         f"127.0.0.1:{fleet.adb_port}", "--data-dir", str(tmp_path / "data"),
         "--watch-dir", "Pictures", "--backlog", "--json"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _server_up(fleet, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for s in fleet.serials:
            if re.search(r"\bllama-server\b", _ps(fleet, s)):
                return s
        time.sleep(0.5)
    return None


@pytest.mark.fleet
@pytest.mark.parametrize("how", [
    signal.SIGTERM,
    pytest.param(signal.SIGINT, marks=pytest.mark.slow),
    pytest.param(signal.SIGKILL, marks=pytest.mark.slow),   # a crash: the tether kills it
])
def test_nothing_is_left_running_after_adbflow_stops(fleet, tmp_path, how) -> None:
    proc = _watch(fleet, tmp_path)
    try:
        fleet.snap(fleet.serials[0], CHELSEA, **PICTURES_APP)
        serial = _server_up(fleet, 90.0)
        assert serial is not None, proc.stderr.read() if proc.poll() is not None else "no server"
        journal_done = _wait_done(tmp_path / "data", 60.0)
        assert journal_done, "the story did not finish"
        proc.send_signal(how)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert code == {signal.SIGTERM: 143, signal.SIGINT: 130, signal.SIGKILL: -9}[how]
    for s in fleet.serials:
        assert _gone(fleet, s, None), _ps(fleet, s)
    if how == signal.SIGKILL:
        # the adb server still holds the dead run's forward; the next adbflow on this data
        # directory removes it (its ledger names the owner, who is gone) before anything else
        assert _forwards(fleet) != []
        ResidentServers(ledger=ForwardLedger(tmp_path / "data" / RESIDENT_LEDGER, "me"))
    assert _forwards(fleet) == []


def _wait_done(data_dir: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with Journal(journal_path(data_dir)) as j:
                if any(job.state == "done" for job in j.jobs()):
                    return True
        except Exception:  # noqa: BLE001 - not created yet
            pass
        time.sleep(0.5)
    return False
