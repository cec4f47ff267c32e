"""`adbflow provision` on a virtual fleet behind a real adb server: parallel pushes verified
by the phones' own toybox sha256sum, skips on a second run, a full phone and a read-only
target failing only where they are, a URL from a local http server, nothing left running."""
from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading

import pytest
from fleet_helpers import (
    device,
    healthy,  # noqa: F401 - a fixture, found by name
    module_fleet,
)

pytestmark = pytest.mark.fleet

fleet = module_fleet(3, ["midrange_2023"])


def _provision(fleet, *args: str, home) -> tuple[int, dict]:
    env = {**os.environ, "ADBFLOW_HOME": str(home)}
    proc = subprocess.run([sys.executable, "-m", "adbflow.cli", "provision", "--adb-server",
                           f"127.0.0.1:{fleet.adb_port}", "--json", *args],
                          capture_output=True, text=True, timeout=180, env=env)
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def processes(fleet) -> dict[str, set[str]]:
    """Every device's process command names (`ps -A`), minus the ps and its shell."""
    out = {}
    for s in fleet.serials:
        res = device(fleet, s).run(["ps", "-A", "-o", "ARGS"], timeout=20)
        out[s] = {ln.strip() for ln in res.stdout.splitlines()[1:]
                  if ln.strip() and not ln.strip().startswith(("ps ", "sh -c", "/system/bin/sh -c"))}
    return out


def test_provision_pushes_verifies_skips_and_leaves_nothing(healthy, tmp_path) -> None:
    fleet = healthy
    blob = tmp_path / "model.bin"
    blob.write_bytes(os.urandom(3 << 20))
    want = hashlib.sha256(blob.read_bytes()).hexdigest()
    before = processes(fleet)
    code, doc = _provision(fleet, f"{blob}=/data/local/tmp/prov/model.bin", home=tmp_path / "h")
    assert code == 0, doc
    assert {p["serial"] for p in doc["phones"]} == set(fleet.serials)
    for p in doc["phones"]:
        [f] = p["files"]
        assert f["state"] == "pushed" and f["method"] == "sha256" and f["bytes"] == 3 << 20
    for s in fleet.serials:
        d = device(fleet, s)
        res = d.run(["sha256sum", "/data/local/tmp/prov/model.bin"], timeout=20)
        assert res.stdout.split()[0] == want                  # the phone's own digest
        names = [e.name for e in d.list_dir("/data/local/tmp/prov", timeout=10)]
        assert names == ["model.bin"]                          # no temp file left
    code, again = _provision(fleet, f"{blob}=/data/local/tmp/prov/model.bin", home=tmp_path / "h")
    assert code == 0 and {f["state"] for p in again["phones"] for f in p["files"]} == {"skipped"}
    assert processes(fleet) == before                          # nothing left running


def test_a_full_phone_and_a_read_only_target_fail_only_there(healthy, tmp_path) -> None:
    fleet = healthy
    full, *others = fleet.serials
    blob = tmp_path / "x.bin"
    blob.write_bytes(b"x" * 200_000)
    fleet.fault(full, storage_full=True)
    code, doc = _provision(fleet, f"{blob}=/data/local/tmp/x-full.bin", home=tmp_path / "h")
    assert code == 1
    by = {p["serial"]: p for p in doc["phones"]}
    assert not by[full]["ok"] and "No space left" in by[full]["files"][0]["reason"]
    assert all(by[s]["ok"] for s in others)
    fleet.clear_faults(full)
    code, doc = _provision(fleet, f"{blob}=/system/x.bin", home=tmp_path / "h")
    assert code == 1
    for p in doc["phones"]:
        assert not p["ok"] and "Read-only" in p["files"][0]["reason"], p


def test_a_url_is_downloaded_then_provisioned(healthy, tmp_path) -> None:
    fleet = healthy
    root = tmp_path / "www"
    root.mkdir()
    (root / "tool").write_bytes(b"#!/system/bin/sh\necho provisioned\n")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/tool"
        code, doc = _provision(fleet, f"{url}=/data/local/tmp/tool.sh", home=tmp_path / "h")
    finally:
        srv.shutdown()
    assert code == 0, doc
    res = device(fleet, fleet.serials[0]).run(["sh", "/data/local/tmp/tool.sh"], timeout=20)
    assert res.stdout.strip() == "provisioned"
