"""`adbflow demo`: the README's main job, self-contained (own fleet, private adb server)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from adbflow.fleet import adb_server

pytestmark = pytest.mark.fleet


def _demo(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "adbflow.cli", "demo", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _no_fleet_left(stderr: str) -> None:
    import psutil
    m = re.search(r"devices in (\S+) \(adb server", stderr)
    assert m, stderr
    left = [p.pid for p in psutil.process_iter(["cmdline"])
            if m.group(1) in " ".join(p.info["cmdline"] or [])]
    assert left == [], f"fleet processes left behind: {left}"


def _port(stderr: str) -> int:
    m = re.search(r"adb server on port (\d+)", stderr)
    assert m, stderr
    return int(m.group(1))


def test_demo_json_and_teardown() -> None:
    proc = _demo("--json")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    doc = json.loads(out.strip().splitlines()[-1])
    assert doc["state"] == "done"
    assert "cat" in " ".join(lb["name"] for lb in doc["labels"])
    assert doc["story"].strip()
    # device 1 is the idle one: it wins both stages; the picture came from device 2
    assert doc["devices"]["classify"] == doc["devices"]["generate"] != doc["origin"]
    assert not adb_server.server_alive(_port(err))       # private adb server is gone
    _no_fleet_left(err)


def test_demo_ctrl_c_tears_down() -> None:
    proc = _demo()
    lines: list[str] = []
    ready = threading.Event()

    def pump():
        for line in proc.stderr:
            lines.append(line)
            if "snapping" in line:
                ready.set()
    threading.Thread(target=pump, daemon=True).start()
    assert ready.wait(120), "".join(lines)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    time.sleep(0.2)
    text = "".join(lines)
    assert proc.returncode == 130, text
    assert "tearing the fleet down" in text
    assert not adb_server.server_alive(_port(text))
    _no_fleet_left(text)
