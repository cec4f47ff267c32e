"""CLI wiring of run/jobs/show/watch with in-memory devices: exit codes and JSON shapes."""
from __future__ import annotations

import json

import pytest
from pipeline_fakes import FakeBidder, FakeDevice, FakeInventory
from typer.testing import CliRunner

from adbflow.cli import app
from adbflow.cli import pipeline as cli_pipeline
from adbflow.errors import AdbflowError
from adbflow.paths import ASSETS_DIR


@pytest.fixture
def fake_fleet(monkeypatch):
    devs = [FakeDevice(f"dev{i}") for i in (1, 2)]
    inv = FakeInventory(devs)
    monkeypatch.setattr(cli_pipeline, "_inventory", lambda servers, serials: inv)
    import adbflow.scheduling.bids
    monkeypatch.setattr(adbflow.scheduling.bids, "Bidder",
                        lambda **kw: FakeBidder({"dev1": 50.0, "dev2": 10.0}))
    return devs


def test_run_jobs_show(tmp_path, fake_fleet) -> None:
    runner = CliRunner()
    data = str(tmp_path / "data")
    res = runner.invoke(app, ["run", str(ASSETS_DIR / "chelsea.png"), "--json", "--data-dir", data])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    assert doc["state"] == "done" and doc["devices"]["classify"] == "dev2"
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture")
    res = runner.invoke(app, ["run", str(bad), "--json", "--data-dir", data])
    assert res.exit_code == 1
    failed = json.loads(res.stdout.strip().splitlines()[-1])
    assert failed["state"] == "failed" and "not an image" in failed["error"]
    res = runner.invoke(app, ["jobs", "--json", "--data-dir", data])
    assert [(j["id"], j["state"]) for j in json.loads(res.stdout)] == [(2, "failed"), (1, "done")]
    res = runner.invoke(app, ["jobs", "--data-dir", data])
    assert res.exit_code == 0 and "notes.jpg" in res.stdout and "dev2" in res.stdout
    res = runner.invoke(app, ["show", "1", "--json", "--data-dir", data])
    shown = json.loads(res.stdout)
    assert [a["stage"] for a in shown["attempts"]] == ["ingest", "classify", "generate"]
    res = runner.invoke(app, ["show", "99", "--data-dir", data])
    assert isinstance(res.exception, AdbflowError)     # cli.main turns it into exit 2


def test_watch_once_json(tmp_path, fake_fleet) -> None:
    devs = fake_fleet
    devs[0].snap("before.png", (ASSETS_DIR / "chelsea.png").read_bytes(), 100)
    res = CliRunner().invoke(app, ["watch", "--once", "--backlog", "--json", "--no-inotify",
                                   "--poll", "0.2", "--data-dir", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    assert doc["name"] == "before.png" and doc["detected_by"] == "backlog"
    assert doc["story"] and doc["timings"]["total_s"] > 0


def test_sigterm_stops_run_like_ctrl_c_with_exit_143(tmp_path) -> None:
    """SIGTERM is handled like SIGINT: a clean stop, documented exit code (143; 130 for
    Ctrl-C), no traceback, the journal closed (the job resumes later)."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap
    import time
    child = textwrap.dedent("""
        import sys, time
        sys.path.insert(0, sys.argv[1])
        from adbflow.cli import pipeline as cli_pipeline
        from adbflow.cli import app
        import adbflow.scheduling.bids
        from pipeline_fakes import FakeBidder, FakeDevice, FakeInventory
        dev = FakeDevice("dev1", delay=30.0)         # label_image "runs" for 30 s
        cli_pipeline._inventory = lambda servers, serials: FakeInventory([dev])
        adbflow.scheduling.bids.Bidder = lambda **kw: FakeBidder({"dev1": 5.0})
        print("ready", flush=True)
        app(["run", sys.argv[2], "--data-dir", sys.argv[3]])
    """)
    tests_dir = os.path.dirname(__file__)
    proc = subprocess.Popen([sys.executable, "-c", child, tests_dir,
                             str(ASSETS_DIR / "chelsea.png"), str(tmp_path / "d")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    # signal only once the job runs (its stage started, so the handlers are installed): a
    # fixed sleep raced a slow start on a busy machine (the default action killed it: -15)
    from adbflow.runtime.journal import Journal
    db = tmp_path / "d" / "journal.sqlite"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            jr = Journal(db)
            try:
                states = [job.state for job in jr.jobs()]
            finally:
                jr.close()
            if states == ["running"]:
                break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1]
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "stopped" in err, err
    j = Journal(tmp_path / "d" / "journal.sqlite")
    assert [job.state for job in j.jobs()] == ["running"]     # resumes at the next run
    j.close()
