"""`adbflow report`: aggregation, escaping of device text (a `<script>` label stays text),
empty/corrupt journals refused, and the page opened in headless Chromium: no console
errors, every plot rendered at its size, a screenshot taken."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from chromium_cdp import Chromium, chromium_binary

from adbflow.report import plots
from adbflow.report.data import build
from adbflow.runtime.journal import Journal

CANARY = "<script>alert('pwned')</script>"
IMG_CANARY = '"><img src=x onerror=alert(1)>'


def _journal(data: Path, jobs: int = 4) -> None:
    data.mkdir(parents=True, exist_ok=True)
    with Journal(data / "journal.sqlite") as j:
        t = 1_796_000_000.0
        for n in range(jobs):
            jid, _ = j.add_job(source="device", serial=f"phone{n % 2}",
                               path=f"/sdcard/Pictures/{CANARY}{n}.jpg", size=1000 + n,
                               mtime=t + n, how="inotify")
            a = j.begin_attempt(jid, "pull", f"phone{n % 2}")
            j.commit_attempt(a, {"pull_s": 0.05, "timings": {}})
            if n == 1:
                bad = j.begin_attempt(jid, "classify", "phone1")
                j.fail_attempt(bad, f"label_image died {IMG_CANARY}", kind="exit")
            a = j.begin_attempt(jid, "classify", "phone0")
            j.commit_attempt(a, {"labels": [{"name": CANARY, "score": 0.9}],
                                 "timings": {"bid_s": 0.1, "convert_s": 0.05, "slot_wait_s": 0.2,
                                             "push_s": 0.01, "run_s": 0.6 + 0.1 * n},
                                 "energy": {"gross_j": 3.0 + n, "net_j": 1.5, "baseline_w": 1.4,
                                            "usb_charging": False,
                                            "flags": ["current_now looks like mA"] if n == 2 else []}})
            a = j.begin_attempt(jid, "generate", "phone1")
            j.commit_attempt(a, {"story": CANARY, "timings": {"bid_s": 0.05, "slot_wait_s": 0.0,
                                                              "run_s": 2.0}})
            j.finish_job(jid, "done", result={"labels": [{"name": CANARY}]})


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ANDROID_SERIAL"}
    return subprocess.run([sys.executable, "-m", "adbflow.cli", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def test_build_aggregates_latency_failures_and_energy(tmp_path):
    _journal(tmp_path)
    with Journal(tmp_path / "journal.sqlite") as j:
        jobs = j.jobs(limit=None)
        data = build(jobs, {x.id: j.attempts(x.id) for x in jobs})
    assert data.jobs == 4 and data.states == {"done": 4}
    cls = [r for r in data.latency if r["stage"] == "classify"][0]
    assert cls["serial"] == "phone0" and cls["n"] == 4
    assert data.parts["phone0 classify"]["run_s"] == pytest.approx(0.75)
    assert len(data.failures) == 1 and data.failures[0]["kind"] == "exit"
    assert [e["gross_j"] for e in data.energy] == [3.0, 4.0, 5.0, 6.0]
    assert data.energy[2]["flags"] == ["current_now looks like mA"]


def test_report_escapes_device_text_and_is_self_contained(tmp_path):
    data = tmp_path / "data"
    _journal(data)
    out = tmp_path / "report.html"
    res = _cli("report", "-o", str(out), "--data-dir", str(data))
    assert res.returncode == 0, res.stderr
    page = out.read_text()
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in page
    assert re.search(r"<script", page, re.I) is None           # not one script element
    assert "<img src=x" not in page and "onerror=alert" not in page.replace("onerror=alert(1)&gt;", "")
    assert re.search(r"""(src|href)=["']?(https?:)?//""", page) is None   # nothing fetched
    assert "Content-Security-Policy" in page
    if plots.available():
        assert page.count('<img class="plot"') == 3            # latency, timeline, energy


def test_empty_or_corrupt_journal_says_so_and_fails(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    Journal(empty / "journal.sqlite").close()
    res = _cli("report", "-o", str(tmp_path / "e.html"), "--data-dir", str(empty))
    assert res.returncode != 0 and "no jobs" in res.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "journal.sqlite").write_bytes(b"this is not sqlite at all\0" * 100)
    res = _cli("report", "-o", str(tmp_path / "b.html"), "--data-dir", str(bad))
    assert res.returncode != 0 and "corrupt" in res.stderr
    res = _cli("report", "-o", str(tmp_path / "m.html"), "--data-dir", str(tmp_path / "none"))
    assert res.returncode != 0 and "no journal" in res.stderr
    assert not (tmp_path / "e.html").exists() and not (tmp_path / "b.html").exists()


@pytest.mark.skipif(chromium_binary() is None,
                    reason="chromium not installed (apt-get install -y chromium): the report "
                           "cannot be opened in a real browser here")
@pytest.mark.skipif(not plots.available(), reason="matplotlib (the `report` extra) missing")
def test_report_renders_in_headless_chromium(tmp_path):
    from PIL import Image

    data = tmp_path / "data"
    _journal(data, jobs=6)
    out = tmp_path / "report.html"
    assert _cli("report", "-o", str(out), "--data-dir", str(data)).returncode == 0
    browser = Chromium(tmp_path / "profile", width=1200, height=900)
    try:
        browser.open(out.as_uri())
        imgs = browser.evaluate(
            "Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, "
            "i.naturalHeight, i.getBoundingClientRect().width])")
        text = browser.evaluate("document.body.innerText")
        scripts = browser.evaluate("document.scripts.length")
        shot = browser.screenshot(tmp_path / "report.png")
        errors = browser.console_errors()
    finally:
        browser.close()
    assert errors == []
    assert scripts == 0 and CANARY in text                   # the label is text on the page
    assert [i[0] for i in imgs] == ["latency breakdown per device", "timeline of the last jobs",
                                    "energy per job"]
    for alt, complete, w, h, shown in imgs:
        assert complete and w > 300 and h > 100 and shown > 300, (alt, w, h, shown)
    with Image.open(shot) as im:
        assert im.size == (1200, 900)
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 20        # text and bars, not a blank page


def test_sweep_csv_is_plotted_and_a_bad_one_is_named(tmp_path):
    data = tmp_path / "data"
    _journal(data)
    sweep = tmp_path / "sweep.csv"
    sweep.write_text("tau,n,escalated,accuracy,ci_low,ci_high,agree_big,mean_latency_s,"
                     "p95_latency_s,device_s\n"
                     "0.0,40,0.0,0.70,0.6,0.8,0.8,0.10,0.12,4.0\n"
                     "0.5,40,0.4,0.80,0.7,0.9,0.9,0.20,0.40,8.0\n"
                     "2.0,40,1.0,0.85,0.75,0.95,1.0,0.35,0.45,14.0\n"
                     f"{CANARY},1,1,1,1,1,1,1,1,1\n")
    bad = tmp_path / "bad.csv"
    bad.write_text(f"what,{CANARY}\n1,2\n")
    out = tmp_path / "r.html"
    res = _cli("report", "-o", str(out), "--data-dir", str(data), "--sweep", str(sweep),
               "--sweep", str(bad))
    assert res.returncode == 0, res.stderr
    page = out.read_text()
    assert "Cascade sweep: sweep.csv" in page and "bad.csv left out" in page
    assert page.count("<tr><td class=\"n\">") >= 3 and re.search(r"<script", page, re.I) is None
    if plots.available():
        assert 'alt="sweep sweep.csv"' in page
