"""adb layer, probes and bids against the virtual fleet through a REAL adb server.

Done-when checks of the inventory/bid issue: 3 devices loaded 10/50/90 % -> `adbflow bid --once
--json` gives 3 bids within 10 points of the set load and picks the 10 % device."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from adbflow.device import AdbServer, Device, Inventory
from adbflow.errors import AdbError, AdbTimeoutError, DeviceUnavailableError
from adbflow.fleet.profile import load_virtual_profile
from adbflow.scheduling.bids import Bidder, pick_lowest_cpu

pytestmark = pytest.mark.fleet

LOADS = (10, 50, 90)


@pytest.fixture(scope="module")
def fleet(fleet_factory):
    client = fleet_factory(devices=3)
    for serial, pct in zip(client.serials, LOADS):
        client.load(serial, pct)
    yield client
    fleet_factory.release(client)


@pytest.fixture(scope="module")
def server(fleet) -> AdbServer:
    return AdbServer(port=fleet.adb_port)


@pytest.fixture(scope="module")
def dev(fleet, server) -> Device:
    return Device(fleet.serials[0], server)


def adbflow_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ANDROID_SERIAL"}
    return subprocess.run([sys.executable, "-m", "adbflow.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


# ------------------------------------------------------------------ Done-when
def test_bid_once_json_picks_least_loaded(fleet):
    time.sleep(0.5)                        # let the load model apply the set loads
    proc = adbflow_cli("bid", "--once", "--json", "--adb-server", f"127.0.0.1:{fleet.adb_port}")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    bids = {b["serial"]: b for b in doc["bids"]}
    assert set(bids) == set(fleet.serials)
    for serial, pct in zip(fleet.serials, LOADS):
        b = bids[serial]
        assert b["ok"] and b["error"] is None
        assert abs(b["cpu_load"] - pct) <= 10, (serial, pct, b["cpu_load"])
        assert b["cores"] >= 1 and 0 < b["mem_available_kb"] <= b["mem_total_kb"]
        assert b["model"].startswith("adbflow-virtual")
        vp = load_virtual_profile(b["model"].split()[-1])
        assert b["perf_cores"] == vp.cores_big + vp.cores_mid    # read from cpu_capacity
    assert doc["winner"] == fleet.serials[0]


def test_bid_table_marks_winner_and_devices_lists_all(fleet):
    proc = adbflow_cli("bid", "--once", "--adb-server", f"127.0.0.1:{fleet.adb_port}")
    assert proc.returncode == 0, proc.stderr
    winner_line = [ln for ln in proc.stdout.splitlines() if ln.lstrip().startswith("*")]
    assert len(winner_line) == 1 and fleet.serials[0] in winner_line[0]
    proc = adbflow_cli("devices", "--json", "--adb-server", f"127.0.0.1:{fleet.adb_port}")
    assert proc.returncode == 0, proc.stderr
    assert {(d["serial"], d["state"]) for d in json.loads(proc.stdout)} == {
        (s, "device") for s in fleet.serials}


def test_second_round_needs_no_sleep_and_tracks_load(fleet, server):
    inv = Inventory([server])
    bidder = Bidder(timeout=5)
    first = bidder.gather(inv.devices())
    assert all(b.load_window_s == pytest.approx(0.2) for b in first)
    time.sleep(0.4)
    second = bidder.gather(inv.devices())
    for b, pct in zip(sorted(second, key=lambda b: fleet.serials.index(b.serial)), LOADS):
        assert b.ok and b.load_window_s >= 0.3          # delta against the previous round's sample
        assert abs(b.cpu_load - pct) <= 10
    assert pick_lowest_cpu(second) == fleet.serials[0]
    # the static props were asked once: later probes still report the model
    assert all(b.model and b.abi for b in second)


def test_several_adb_servers_form_one_inventory(fleet, fleet_factory):
    other = fleet_factory(devices=1)
    try:
        proc = adbflow_cli("bid", "--once", "--json", "--adb-server", f"127.0.0.1:{fleet.adb_port}",
                           "--adb-server", f"127.0.0.1:{other.adb_port}",
                           "--adb-server", "127.0.0.2:9")    # unreachable: reported, not fatal
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        assert {b["serial"] for b in doc["bids"]} == set(fleet.serials) | set(other.serials)
        assert {b["server"] for b in doc["bids"]} == {f"127.0.0.1:{fleet.adb_port}",
                                                      f"127.0.0.1:{other.adb_port}"}
        assert doc["unreachable_servers"] == ["127.0.0.2:9"]
        proc = adbflow_cli("bid", "--once", "--json", "--adb-server", f"127.0.0.1:{fleet.adb_port}",
                           "-s", fleet.serials[1])
        assert [b["serial"] for b in json.loads(proc.stdout)["bids"]] == [fleet.serials[1]]
    finally:
        fleet_factory.release(other)


def test_slow_device_is_shown_with_timeout_not_dropped(fleet, server):
    slow = fleet.serials[2]
    fleet.fault(slow, transport_delay_s=1.0)
    try:
        bidder = Bidder(timeout=0.8)
        t0 = time.monotonic()
        bids = bidder.gather([Device(s, server) for s in fleet.serials])
        elapsed = time.monotonic() - t0
        by = {b.serial: b for b in bids}
        assert len(bids) == 3
        assert not by[slow].ok and "timeout" in by[slow].error
        assert by[fleet.serials[0]].ok and by[fleet.serials[1]].ok
        assert elapsed < 3.0                  # the slow device did not hold the round hostage
        assert pick_lowest_cpu(bids) == fleet.serials[0]
        assert by[slow].to_json()["cpu_load"] is None
    finally:
        fleet.clear_faults(slow)


def test_no_device_can_bid_exits_1(fleet):
    proc = adbflow_cli("bid", "--once", "--adb-server", f"127.0.0.1:{fleet.adb_port}", "-s", "nosuch:1")
    assert proc.returncode == 1
    assert "nosuch:1" in proc.stdout and "not connected" in proc.stdout


# ------------------------------------------------------------------ adb layer
def test_shell_v2_exit_codes_stderr_and_exit_builtin(dev):
    r = dev.shell("echo out; echo err >&2; exit 7", timeout=5, check=False)
    assert (r.exit_code, r.stdout, r.stderr) == (7, "out\n", "err\n")
    with pytest.raises(AdbError) as ei:
        dev.shell("echo nope >&2; false", timeout=5)
    assert ei.value.exit_code == 1 and ei.value.serial == dev.serial and "nope" in ei.value.stderr
    assert dev.shell("cat", timeout=5, stdin=b"piped\n").stdout == "piped\n"
    assert dev.shell("cat", timeout=5).stdout == ""            # stdin closed: no hang


def test_run_quotes_every_argument(dev):
    evil = "$(touch /data/local/tmp/pwned); `touch /data/local/tmp/pwned2` 'x\" ;rm -rf /"
    r = dev.run(["echo", evil], timeout=5)
    assert r.stdout == evil + "\n"
    assert dev.stat("/data/local/tmp/pwned", timeout=5) is None
    assert dev.stat("/data/local/tmp/pwned2", timeout=5) is None


def test_timeout_kills_the_device_command(dev):
    pidfile = "/data/local/tmp/adbflow-timeout.pid"
    with pytest.raises(AdbTimeoutError) as ei:
        dev.shell(f"echo $$ > {pidfile}; exec sleep 30", timeout=0.5)
    assert ei.value.serial == dev.serial
    pid = dev.shell(f"cat {pidfile}", timeout=5).stdout.strip()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if dev.shell(f"kill -0 {pid}", timeout=5, check=False).exit_code != 0:
            break
        time.sleep(0.1)
    assert dev.shell(f"kill -0 {pid}", timeout=5, check=False).exit_code != 0


def test_output_is_bounded(dev):
    with pytest.raises(AdbError, match="exceeded"):
        dev.shell("while :; do echo xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; done", timeout=10,
                  max_output=64 * 1024)


def test_push_pull_stat_list(dev, tmp_path):
    data = os.urandom(300_000) + b"end"
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    name = "odd name $(x) ;.bin"
    remote = f"/data/local/tmp/{name}"
    assert dev.push(src, remote, timeout=10) == len(data)
    st = dev.stat(remote, timeout=5)
    assert st and st.is_file and st.size == len(data)
    assert name in {e.name for e in dev.list_dir("/data/local/tmp", timeout=5)}
    dst = tmp_path / "back.bin"
    assert dev.pull(remote, dst, timeout=10) == len(data)
    assert dst.read_bytes() == data
    with pytest.raises(AdbError, match="larger"):
        dev.pull(remote, tmp_path / "small.bin", timeout=10, max_bytes=1000)
    assert not (tmp_path / "small.bin").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []   # no temp left
    with pytest.raises(AdbError):
        dev.pull("/data/local/tmp/does-not-exist", tmp_path / "x", timeout=5)
    dev.run(["rm", "-f", remote], timeout=5)
    assert dev.stat(remote, timeout=5) is None


def test_stream_lines_and_close_kills(dev):
    with dev.stream_lines("for i in 1 2 3; do echo line$i; done", timeout=10) as s:
        assert list(s) == ["line1", "line2", "line3"]
        assert s.exit_code == 0
    pidfile = "/data/local/tmp/adbflow-stream.pid"
    s = dev.stream_lines(f"echo $$ > {pidfile}; echo ready; exec sleep 30")
    assert next(s) == "ready"
    pid = dev.shell(f"cat {pidfile}", timeout=5).stdout.strip()
    s.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and dev.shell(f"kill -0 {pid}", timeout=5, check=False).exit_code == 0:
        time.sleep(0.1)
    assert dev.shell(f"kill -0 {pid}", timeout=5, check=False).exit_code != 0
    assert list(s) == []


def test_unknown_device_and_getprop(fleet, server, dev):
    with pytest.raises(DeviceUnavailableError) as ei:
        Device("127.0.0.1:1", server).shell("true", timeout=3)
    assert ei.value.hint
    with pytest.raises(DeviceUnavailableError):
        Inventory([server]).device("127.0.0.1:1")
    assert dev.getprop("ro.product.model", timeout=5).startswith("adbflow-virtual")


def test_failures_through_a_real_adb_server_are_specific_classes(dev, server, tmp_path):
    """What the real adb server and the virtual adbd answer becomes the specific class."""
    from adbflow.errors import (
        CommandFailed,
        DeviceNotFound,
        ReadOnlyFileSystem,
        RemoteNotFound,
        TransferTooLarge,
    )
    with pytest.raises(RemoteNotFound) as ei:
        dev.pull("/data/local/tmp/no-such-file", tmp_path / "x", timeout=5)
    assert ei.value.kind == "remote-not-found" and ei.value.serial == dev.serial
    assert "no-such-file" in str(ei.value) and ei.value.hint
    src = tmp_path / "f.bin"
    src.write_bytes(b"x" * 5000)
    with pytest.raises(ReadOnlyFileSystem) as ei:
        dev.push(src, "/system/bin/adbflow-test", timeout=5)
    assert ei.value.kind == "read-only" and "/data/local/tmp" in ei.value.hint
    dev.push(src, "/data/local/tmp/f.bin", timeout=5)
    with pytest.raises(TransferTooLarge):
        dev.pull("/data/local/tmp/f.bin", tmp_path / "small", timeout=5, max_bytes=100)
    with pytest.raises(CommandFailed) as ei:
        dev.shell("exit 3", timeout=5)
    assert ei.value.exit_code == 3 and ei.value.kind == "exit"
    with pytest.raises(RemoteNotFound) as ei:
        dev.run(["ls", "/data/local/tmp/no-such-dir"], timeout=5)
    assert ei.value.exit_code not in (None, 0)
    with pytest.raises(DeviceNotFound) as ei:
        Device("127.0.0.1:1", server).shell("true", timeout=3)
    assert ei.value.kind in ("device-not-found", "no-devices")
    dev.run(["rm", "-f", "/data/local/tmp/f.bin"], timeout=5)
