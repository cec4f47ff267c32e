"""`adbflow jobs --plot`: the terminal chart renders from journal rows, and without the
optional extra the message names `pip install 'adbflow[term]'`."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adbflow.cli import app
from adbflow.errors import AdbflowError
from adbflow.runtime.journal import Journal
from adbflow.runtime.pipeline import journal_path

plotext = pytest.importorskip("plotext", reason="the `term` extra (plotext) is not installed")


def _journal(data: Path, n: int = 6) -> None:
    with Journal(journal_path(data)) as j:
        for i in range(n):
            jid, _ = j.add_job(source="device", serial="dev1", path=f"/sdcard/p{i}.jpg",
                               size=100 + i, mtime=float(i))
            j.finish_job(jid, "done", result={
                "timings": {"total_s": 2.0 + i},
                "stage_seconds": {"pull": 0.1, "classify": 0.5 + 0.1 * i, "generate": 1.2}})
        jid, _ = j.add_job(source="device", serial="dev1", path="/sdcard/<script>.jpg",
                           size=1, mtime=99.0)
        j.finish_job(jid, "failed", error="no device")      # no timings: not drawn


def test_jobs_chart_renders_latency_and_stages():
    from types import SimpleNamespace as Job

    from adbflow.cli.jobplot import jobs_chart, plot_rows
    jobs = [Job(id=i, result={"timings": {"total_s": 3.0 + i},
                              "stage_seconds": {"ingest": 0.2, "classify": 1.0, "generate": 2.0}})
            for i in (3, 1, 2)] + [Job(id=9, result=None)]
    rows = plot_rows(jobs)
    assert [r["job"] for r in rows] == [1, 2, 3]              # oldest first, unfinished out
    assert rows[0]["stages"] == {"pull": 0.2, "classify": 1.0, "generate": 2.0}
    text = jobs_chart(jobs, width=80, height=30, color=False)
    assert text.strip()
    assert "end-to-end latency per job" in text and "time per stage" in text
    assert "generate" in text and "classify" in text and "\x1b[" not in text
    assert len(text.splitlines()) >= 20
    assert jobs_chart(jobs, width=80, height=30, color=False) == text   # plotext state reset


def test_jobs_plot_command(tmp_path):
    data = tmp_path / "data"
    _journal(data)
    res = CliRunner().invoke(app, ["jobs", "--plot", "--limit", "5", "--data-dir", str(data)])
    assert res.exit_code == 0, res.output
    assert "end-to-end latency per job" in res.output and "<script>" not in res.output
    empty = tmp_path / "empty"
    _journal(empty, n=0)
    res = CliRunner().invoke(app, ["jobs", "--plot", "--data-dir", str(empty)])
    assert isinstance(res.exception, AdbflowError)       # cli.main turns it into exit 2
    assert "no finished jobs" in str(res.exception)


def test_missing_extra_names_the_pip_command(tmp_path, monkeypatch):
    data = tmp_path / "data"
    _journal(data, n=2)
    monkeypatch.setitem(sys.modules, "plotext", None)          # import plotext -> ImportError
    res = CliRunner().invoke(app, ["jobs", "--plot", "--data-dir", str(data)])
    assert isinstance(res.exception, AdbflowError)
    assert "pip install 'adbflow[term]'" in res.exception.hint
    res = CliRunner().invoke(app, ["jobs", "--data-dir", str(data)])   # the table still works
    assert res.exit_code == 0 and "p1.jpg" in res.output
