"""Conformance of the virtual devices' adb transport, through the REAL adb server.

Every service is exercised with the adb CLI (adb 36 from the adbutils wheel) and with
adbutils (pure-python-adb is not installed here). Each backend gets one fleet per module:
`dir` = tests/fleet_testing_backend.py (a plain directory, no isolation: protocol only),
`ns` = the real NamespaceBackend (marked `fleet`). Shell commands use paths relative to
the shell's working directory `/` so they mean the same thing on both backends.
"""
from __future__ import annotations

import hashlib
import os
import random
import subprocess
import threading
import time
from pathlib import Path

import adbutils
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adbflow.errors import FleetError
from adbflow.fleet import adb_server
from adbflow.fleet import protocol as P
from adbflow.fleet.host import check_picture_name, snap_name
from adbflow.fleet.shell_service import V2Parser, exit_status, parse_service, parse_window_size, v2_packet
from adbflow.paths import ASSETS_DIR

TESTS_DIR = Path(__file__).resolve().parent
ADB = adb_server.adb_binary()
DIR_BACKEND = "fleet_testing_backend:make_backend"
DIR_ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS_DIR),
                                                       os.environ.get("PYTHONPATH")]))}
TMP = "/data/local/tmp"


# ---------------------------------------------------------------- pure unit tests

def test_packet_roundtrip_and_magic() -> None:
    raw = P.pack(P.A_WRTE, 7, 9, b"hello")
    hdr = P.unpack_header(raw[:24])
    assert (hdr.command, hdr.arg0, hdr.arg1, hdr.length, hdr.name) == (P.A_WRTE, 7, 9, 5, "WRTE")
    assert raw[24:] == b"hello"
    bad = bytearray(raw[:24])
    bad[20] ^= 0xFF
    with pytest.raises(P.ProtocolError):
        P.unpack_header(bytes(bad))
    too_big = P.header(P.A_WRTE, 1, 1, P.MAX_PAYLOAD + 1)
    with pytest.raises(P.ProtocolError):
        P.unpack_header(too_big)


def test_banner_has_props_features_and_no_separators_leak() -> None:
    banner = P.device_banner({"ro.product.name": "a;b", "ro.product.model": "adbflow-virtual x",
                              "ro.product.device": "d=e"})
    text = banner.decode()
    assert text.startswith("device::ro.product.name=a_b;ro.product.model=adbflow-virtual x;")
    assert "ro.product.device=d_e;" in text
    assert P.banner_features(banner) >= {"shell_v2", "stat_v2", "ls_v2", "sendrecv_v2",
                                         "delayed_ack", "fixed_push_mkdir"}
    assert not any("brotli" in f or "lz4" in f or "zstd" in f for f in P.banner_features(banner))
    assert P.banner_features(b"host::features=shell_v2,delayed_ack\0") == {"shell_v2",
                                                                           "delayed_ack"}


@pytest.mark.parametrize("name,expected", [
    ("shell:ls -l", ("ls -l", False, False, None)),
    ("shell:", (None, False, True, None)),
    ("shell,v2,raw:echo a:b", ("echo a:b", True, False, None)),
    ("shell,v2,pty,TERM=xterm-256color:top", ("top", True, True, "xterm-256color")),
    ("shell,v2,TERM=dumb,pty:", (None, True, True, "dumb")),
    ("shell,raw:", (None, False, False, None)),
    ("exec:cat x", ("cat x", False, False, None)),
])
def test_parse_shell_service(name: str, expected: tuple) -> None:
    req = parse_service(name)
    assert req is not None
    assert (req.command, req.v2, req.pty, req.term) == expected


def test_parse_shell_service_rejects_others() -> None:
    assert parse_service("sync:") is None
    assert parse_service("shellfoo:ls") is None
    assert parse_service("shell") is None


def test_exit_status_maps_signals_like_adbd() -> None:
    assert exit_status(0) == 0
    assert exit_status(3) == 3
    assert exit_status(-9) == 137
    assert exit_status(-15) == 143
    assert exit_status(None) == 255


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 4, 5]), st.binary(max_size=300)), max_size=8),
       st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=10))
def test_v2_parser_reassembles_any_split(packets: list[tuple[int, bytes]], cuts: list[int]) -> None:
    wire = b"".join(v2_packet(pid, data) for pid, data in packets)
    parser = V2Parser()
    got = []
    pos, i = 0, 0
    while pos < len(wire):
        step = cuts[i % len(cuts)]
        got += parser.feed(wire[pos:pos + step])
        pos += step
        i += 1
    assert got == packets


def test_window_size_and_picture_names() -> None:
    assert parse_window_size(b"24x80,640x480\0") == (24, 80, 640, 480)
    assert parse_window_size(b"50x132") == (50, 132, 0, 0)
    assert parse_window_size(b"junk") is None
    name = snap_name(Path("/x/chelsea.PNG"), time.mktime((2025, 3, 4, 5, 6, 7, 0, 0, -1)) + 0.25)
    assert name == "IMG_20250304_050607_250.png"
    assert check_picture_name("$(touch pwned).jpg") == "$(touch pwned).jpg"
    for bad in ("", "a/b", "..", "x\0y"):
        with pytest.raises(FleetError):
            check_picture_name(bad)


def test_parse_devices() -> None:
    text = "127.0.0.1:20000\tdevice\n127.0.0.1:20001\toffline\n"
    assert adb_server.parse_devices(text) == {"127.0.0.1:20000": "device",
                                              "127.0.0.1:20001": "offline"}


# ---------------------------------------------------------------- fleet fixtures & helpers

BACKENDS = [pytest.param("dir", id="dir"),
            pytest.param("ns", id="ns", marks=pytest.mark.fleet)]


def _start(factory, kind: str, devices: int, **kw):  # type: ignore[no-untyped-def]
    if kind == "dir":
        return factory(devices, backend=DIR_BACKEND,
                       env={**DIR_ENV, **kw.pop("env", {})}, **kw)
    return factory(devices, **kw)


@pytest.fixture(scope="module", params=BACKENDS)
def fleet(request, fleet_factory):  # type: ignore[no-untyped-def]
    client = _start(fleet_factory, request.param, 3)
    client.kind = request.param
    yield client
    fleet_factory.release(client)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("data") / "big.bin"
    with open(path, "wb") as fh:
        for _ in range(100):
            fh.write(os.urandom(1024 * 1024))
        fh.write(b"tail-not-aligned")
    return path


def adb(fleet, serial: str, *args: str, input: bytes | None = None,  # type: ignore[no-untyped-def]
        timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([ADB, "-P", str(fleet.adb_port), "-s", serial, *args],
                          input=input, capture_output=True, timeout=timeout)


def host_path(fleet, serial: str, device_path: str) -> Path:  # type: ignore[no-untyped-def]
    """The host path of a device path, through the device's own mounts when it has them
    (its storage is a separate view of /data/media/0, like on a phone)."""
    dev = next(d for d in fleet.state()["devices"] if d["serial"] == serial)
    root = Path(f"/proc/{dev['holder_pid']}/root") if dev.get("holder_pid") else Path(dev["root"])
    return root / device_path.lstrip("/")


def sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pids_alive(fleet, serial: str, pids: list[str]) -> list[str]:  # type: ignore[no-untyped-def]
    script = "; ".join(f"kill -0 {int(p)} 2>/dev/null && echo {int(p)}" for p in pids) + "; true"
    return adb(fleet, serial, "shell", script).stdout.decode().split()


def wait_until(pred, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# ---------------------------------------------------------------- devices & shell

def test_adb_devices_lists_every_device(fleet) -> None:  # type: ignore[no-untyped-def]
    out = subprocess.run([ADB, "-P", str(fleet.adb_port), "devices", "-l"],
                         capture_output=True, text=True, timeout=20).stdout
    lines = {ln.split()[0]: ln for ln in out.splitlines()[1:] if ln.strip()}
    assert set(lines) == set(fleet.serials)
    for _serial, line in lines.items():
        assert line.split()[1] == "device", line
        assert "model:adbflow_virtual_" in line
    assert {d.serial for d in fleet.adb().device_list()} == set(fleet.serials)


def test_shell_v2_exit_code_and_separate_streams(fleet) -> None:  # type: ignore[no-untyped-def]
    s = fleet.serials[0]
    r = adb(fleet, s, "shell", "echo out; echo err >&2; exit 7")
    assert (r.returncode, r.stdout, r.stderr) == (7, b"out\n", b"err\n")
    r = adb(fleet, s, "shell", "kill -9 $$")
    assert r.returncode == 137
    r = adb(fleet, s, "shell", "true")
    assert r.returncode == 0


def test_shell_stdin_small_and_large(fleet) -> None:  # type: ignore[no-untyped-def]
    s = fleet.serials[1]
    assert adb(fleet, s, "shell", "cat", input=b"line1\nline2\n").stdout == b"line1\nline2\n"
    blob = os.urandom(3 * 1024 * 1024 + 7)
    r = adb(fleet, s, "shell", "cat > data/local/tmp/stdin.bin && wc -c < data/local/tmp/stdin.bin",
            input=blob)
    assert r.returncode == 0 and int(r.stdout.split()[0]) == len(blob)
    assert host_path(fleet, s, f"{TMP}/stdin.bin").read_bytes() == blob


def test_shell_pty_exit_code_and_tty(fleet) -> None:  # type: ignore[no-untyped-def]
    r = adb(fleet, fleet.serials[0], "shell", "-t", "-t", "tty; exit 5")
    assert r.returncode == 5
    assert b"/dev/pts/" in r.stdout


def test_interactive_shell_reads_commands_from_stdin(fleet) -> None:  # type: ignore[no-untyped-def]
    r = adb(fleet, fleet.serials[1], "shell", input=b"echo one; echo two >&2; exit 6\n")
    assert r.returncode == 6
    assert b"one" in r.stdout and b"two" in r.stdout + r.stderr


def test_exec_out_is_binary_exact(fleet) -> None:  # type: ignore[no-untyped-def]
    s = fleet.serials[2]
    blob = bytes(range(256)) * 1000 + b"\r\n\x00end"
    d = fleet.adb().device(s)
    d.sync.push(blob, f"{TMP}/bin.dat")
    r = adb(fleet, s, "exec-out", "cat data/local/tmp/bin.dat")
    assert r.stdout == blob


def test_adbutils_shell_v1_v2(fleet) -> None:  # type: ignore[no-untyped-def]
    d = fleet.adb().device(fleet.serials[0])
    merged = d.shell("echo a; echo b >&2")
    assert sorted(merged.split()) == ["a", "b"]
    ret = d.shell2("echo o; echo e >&2; exit 4", v2=True)
    assert (ret.returncode, ret.stdout, ret.stderr) == (4, "o\n", "e\n")
    assert d.shell2("echo hi").returncode == 0


def test_concurrent_shells_on_all_devices(fleet) -> None:  # type: ignore[no-untyped-def]
    client = fleet.adb()
    results: dict[tuple[str, int], str] = {}

    def run(serial: str, i: int) -> None:
        results[(serial, i)] = client.device(serial).shell(f"echo {i}-$((i*3))".replace("i", str(i)))

    threads = [threading.Thread(target=run, args=(s, i)) for s in fleet.serials for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {(s, i): f"{i}-{i * 3}" for s in fleet.serials for i in range(6)}


def test_v1_raw_close_delivers_eof_and_does_not_kill(fleet) -> None:  # type: ignore[no-untyped-def]
    """adbd's `shell:CMD` (v1, no pty) hooks the command's socketpair into the stream: the
    host's close delivers what was sent, then EOF; the command is not killed (it finishes).
    A command that keeps writing dies of SIGPIPE, because nobody reads its output."""
    s = fleet.serials[1]
    out = f"{TMP}/v1eof.txt"
    conn = fleet.adb().device(s).shell(
        f"echo $$; cat > {out[1:]}; sleep 0.3; echo status-$? > {out[1:]}.done", stream=True)
    reader = conn.conn.makefile("rb")
    pid = reader.readline().strip().decode()
    assert pid.isdigit()
    payload = os.urandom(200_000)
    conn.conn.sendall(payload)
    reader.close()
    conn.close()
    done = host_path(fleet, s, out + ".done")
    wait_until(done.exists, 10, "the command to finish after EOF")
    assert host_path(fleet, s, out).read_bytes() == payload
    wait_until(lambda: b"status-0" in done.read_bytes(), 5, "its status line")
    conn = fleet.adb().device(s).shell("echo $$; while :; do echo tick; sleep 0.1; done",
                                       stream=True)
    reader = conn.conn.makefile("rb")
    pid = reader.readline().strip().decode()
    assert pids_alive(fleet, s, [pid]) == [pid]
    reader.close()
    conn.close()
    wait_until(lambda: pids_alive(fleet, s, [pid]) == [], 5, f"{pid} to die of SIGPIPE")


def test_exec_in_20mb_is_byte_exact(fleet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`adb exec-in 'cat > f'`: the host closes right after the last byte; every queued byte
    still reaches the command (the close is EOF, not a kill)."""
    s = fleet.serials[2]
    src = tmp_path / "in20.bin"
    src.write_bytes(os.urandom(20 * 1024 * 1024 + 3))
    with open(src, "rb") as fh:
        r = subprocess.run([ADB, "-P", str(fleet.adb_port), "-s", s, "exec-in",
                            f"cat > {TMP[1:]}/in20.bin"], stdin=fh, capture_output=True,
                           timeout=120)
    assert r.returncode == 0, r.stderr
    dst = host_path(fleet, s, f"{TMP}/in20.bin")
    wait_until(lambda: dst.exists() and dst.stat().st_size == src.stat().st_size, 10,
               "cat to write the whole file")
    assert sha(dst) == sha(src)


def test_host_close_kills_process_group_adb_cli(fleet) -> None:  # type: ignore[no-untyped-def]
    s = fleet.serials[2]
    proc = subprocess.Popen([ADB, "-P", str(fleet.adb_port), "-s", s, "shell",
                             "echo $$; sleep 317 & echo $!; wait"], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        pids = [proc.stdout.readline().strip().decode(), proc.stdout.readline().strip().decode()]
        assert pids_alive(fleet, s, pids) == pids
    finally:
        proc.terminate()  # the adb client dies -> the server closes the stream
        proc.wait(10)
    wait_until(lambda: pids_alive(fleet, s, pids) == [], 5, f"{pids} to die")


def test_unknown_service_is_refused(fleet) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(adbutils.AdbError):
        fleet.adb().device(fleet.serials[0]).open_transport("no-such-service:")
    r = adb(fleet, fleet.serials[0], "root")
    assert b"production builds" in r.stdout + r.stderr


# ---------------------------------------------------------------- sync

def test_adb_push_pull_100mb_byte_exact(fleet, big_file: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    s = fleet.serials[0]
    r = adb(fleet, s, "push", str(big_file), f"{TMP}/big.bin", timeout=120)
    assert r.returncode == 0, r.stderr
    assert b"1 file pushed" in r.stdout + r.stderr
    want = sha(big_file)
    assert sha(host_path(fleet, s, f"{TMP}/big.bin")) == want
    back = tmp_path / "back.bin"
    r = adb(fleet, s, "pull", f"{TMP}/big.bin", str(back), timeout=120)
    assert r.returncode == 0, r.stderr
    assert sha(back) == want


def test_adbutils_sync_100mb_byte_exact(fleet, big_file: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    s = fleet.serials[1]
    d = fleet.adb().device(s)
    d.sync.push(str(big_file), f"{TMP}/big2.bin")
    want = sha(big_file)
    assert sha(host_path(fleet, s, f"{TMP}/big2.bin")) == want
    back = tmp_path / "back2.bin"
    d.sync.pull(f"{TMP}/big2.bin", str(back))
    assert sha(back) == want
    info = d.sync.stat(f"{TMP}/big2.bin")
    assert info.size == big_file.stat().st_size


def test_small_push_keeps_mode_mtime_and_makes_dirs(fleet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    s = fleet.serials[2]
    src = tmp_path / "tool.sh"
    src.write_bytes(b"#!/system/bin/sh\necho tool-ran\n")
    src.chmod(0o750)
    os.utime(src, (1_600_000_000, 1_600_000_000))
    r = adb(fleet, s, "push", str(src), f"{TMP}/new/deeper/tool.sh")
    assert r.returncode == 0, r.stderr
    dest = host_path(fleet, s, f"{TMP}/new/deeper/tool.sh")
    assert dest.read_bytes() == src.read_bytes()
    assert dest.stat().st_mode & 0o777 == 0o750
    assert int(dest.stat().st_mtime) == 1_600_000_000
    assert adb(fleet, s, "shell", "sh data/local/tmp/new/deeper/tool.sh").stdout == b"tool-ran\n"


def test_pull_directory_and_list(fleet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    s = fleet.serials[0]
    d = fleet.adb().device(s)
    files = {"tree/a.txt": b"A" * 10, "tree/sub/b.txt": b"B" * 70000, "tree/sub/c d.txt": b""}
    for rel, data in files.items():
        d.sync.push(data, f"{TMP}/{rel}")
    r = adb(fleet, s, "pull", f"{TMP}/tree", str(tmp_path))
    assert r.returncode == 0, r.stderr
    for rel, data in files.items():
        assert (tmp_path / rel).read_bytes() == data
    names = {e.path for e in d.sync.list(f"{TMP}/tree/sub")}
    assert {"b.txt", "c d.txt"} <= names
    assert d.sync.stat(f"{TMP}/tree/sub/b.txt").size == 70000
    assert d.sync.stat(f"{TMP}/nope").size == 0  # v1 STAT: zeros for a missing file


def test_push_directory_and_into_directory(fleet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    s = fleet.serials[1]
    src = tmp_path / "album"
    (src / "inner").mkdir(parents=True)
    (src / "one.jpg").write_bytes(os.urandom(70_000))
    (src / "inner" / "two.jpg").write_bytes(os.urandom(100))
    r = adb(fleet, s, "push", str(src), "/sdcard/Download/")
    assert r.returncode == 0, r.stderr
    base = host_path(fleet, s, "/storage/emulated/0/Download/album")
    assert (base / "one.jpg").read_bytes() == (src / "one.jpg").read_bytes()
    assert (base / "inner" / "two.jpg").read_bytes() == (src / "inner" / "two.jpg").read_bytes()
    r = adb(fleet, s, "push", str(src / "one.jpg"), "/sdcard/Download/")
    assert r.returncode == 0, r.stderr
    assert host_path(fleet, s, "/storage/emulated/0/Download/one.jpg").stat().st_size == 70_000
    r = adb(fleet, s, "push", "--sync", str(src / "one.jpg"), "/sdcard/Download/one.jpg")
    assert r.returncode == 0 and b"1 skipped" in r.stdout + r.stderr, r.stdout + r.stderr


def test_sdcard_symlink_resolves_inside_device(fleet) -> None:  # type: ignore[no-untyped-def]
    s = fleet.serials[1]
    d = fleet.adb().device(s)
    d.sync.push(b"via-sdcard", "/sdcard/Download/x.txt")
    assert host_path(fleet, s, "/storage/emulated/0/Download/x.txt").read_bytes() == b"via-sdcard"
    assert d.sync.read_bytes("/storage/emulated/0/Download/x.txt") == b"via-sdcard"


def test_pull_missing_and_readonly_push_errors(fleet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    s = fleet.serials[2]
    r = adb(fleet, s, "pull", f"{TMP}/does-not-exist", str(tmp_path / "x"))
    assert r.returncode != 0 and b"No such file or directory" in r.stderr
    src = tmp_path / "f"
    src.write_bytes(b"x")
    r = adb(fleet, s, "push", str(src), "/system/f")
    assert r.returncode != 0 and b"Read-only file system" in r.stderr, r.stderr
    with pytest.raises(adbutils.AdbError, match="No such file or directory"):
        fleet.adb().device(s).sync.read_bytes(f"{TMP}/does-not-exist")


# ---------------------------------------------------------------- faults

def test_storage_full_fault(fleet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    s = fleet.serials[0]
    src = tmp_path / "img.bin"
    src.write_bytes(os.urandom(200_000))
    fleet.fault(s, storage_full=True)
    try:
        r = adb(fleet, s, "push", str(src), f"{TMP}/full.bin")
        assert r.returncode != 0 and b"No space left on device" in r.stderr, r.stderr
        assert not host_path(fleet, s, f"{TMP}/full.bin").exists()
        with pytest.raises(adbutils.AdbError, match="FAIL"):  # adbutils drops the message
            fleet.adb().device(s).sync.push(src.read_bytes(), f"{TMP}/full2.bin")
    finally:
        fleet.clear_faults(s)
    assert adb(fleet, s, "push", str(src), f"{TMP}/full.bin").returncode == 0
    assert host_path(fleet, s, f"{TMP}/full.bin").read_bytes() == src.read_bytes()


def test_transport_delay_fault(fleet) -> None:  # type: ignore[no-untyped-def]
    s = fleet.serials[1]
    fleet.fault(s, transport_delay_s=0.3)
    try:
        t0 = time.monotonic()
        r = adb(fleet, s, "shell", "echo slow")
        elapsed = time.monotonic() - t0
    finally:
        fleet.clear_faults(s)
    assert r.stdout == b"slow\n"
    assert elapsed >= 0.3  # at least one delayed reply packet (OKAY, WRTE, CLSE: ~3x)


def test_offline_fault_and_back(fleet) -> None:  # type: ignore[no-untyped-def]
    s = fleet.serials[2]
    fleet.fault(s, offline=True)
    try:
        fleet.wait_adb_state(s, "offline", timeout=10)
        r = adb(fleet, s, "shell", "true", timeout=20)
        assert r.returncode != 0
    finally:
        fleet.fault(s, offline=False)
    fleet.wait_adb_state(s, "device", timeout=10)
    assert adb(fleet, s, "shell", "echo back").stdout == b"back\n"


def test_kill_and_restart(fleet) -> None:  # type: ignore[no-untyped-def]
    s = fleet.serials[0]
    info = fleet.kill(s)
    assert info["state"] == "killed"
    fleet.wait_adb_state(s, "offline", timeout=10)
    assert adb(fleet, s, "shell", "true", timeout=20).returncode != 0
    info = fleet.restart(s)
    assert info["state"] == "running"
    assert fleet.adb_states()[s] == "device"
    assert adb(fleet, s, "shell", "echo alive").stdout == b"alive\n"


def test_reboot_drops_transport_and_device_returns(fleet) -> None:  # type: ignore[no-untyped-def]
    s = fleet.serials[1]
    marker = f"sleep {random.randint(10_000, 99_999)}"  # unique: other suites may run too
    r = adb(fleet, s, "shell", f"{marker} > /dev/null 2>&1 & echo started")
    assert r.stdout == b"started\n"
    assert marker.encode() in adb(fleet, s, "shell", "ps -A -o args").stdout
    r = adb(fleet, s, "reboot", timeout=30)
    assert r.returncode == 0, r.stderr
    wait_until(lambda: fleet.adb_states().get(s) != "device", 5, "the transport to drop")
    fleet.wait_adb_state(s, "device", timeout=30)
    assert marker.encode() not in adb(fleet, s, "shell", "ps -A -o args").stdout


def test_devices_come_back_after_adb_kill_server(fleet) -> None:  # type: ignore[no-untyped-def]
    """`adb kill-server` forgets `adb connect` devices; the fleet re-registers them."""
    adb_server.kill_server(fleet.adb_port)
    adb_server.start_server(fleet.adb_port)
    for serial in fleet.serials:
        fleet.wait_adb_state(serial, "device", timeout=10)
    assert adb(fleet, fleet.serials[0], "shell", "echo again").stdout == b"again\n"


def test_cli_status_fault_snap(fleet) -> None:  # type: ignore[no-untyped-def]
    import typer
    from typer.testing import CliRunner

    from adbflow.cli.fleet import register
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a second command keeps `fleet` a sub-command
    runner = CliRunner()
    sd = ["--state-dir", str(fleet.state_dir)]
    s = fleet.serials[2]
    r = runner.invoke(app, ["fleet", "status", "--json", *sd])
    assert r.exit_code == 0, r.output
    assert {d["serial"] for d in __import__("json").loads(r.output)["devices"]} == set(fleet.serials)
    r = runner.invoke(app, ["fleet", "fault", s, "--program", "label_image", "--mode", "hang",
                            "--storage-full", *sd])
    assert r.exit_code == 0, r.output
    faults = {d["serial"]: d for d in fleet.status()["devices"]}[s]["faults"]
    assert faults["storage_full"] is True and faults["programs"]["label_image"]["mode"] == "hang"
    r = runner.invoke(app, ["fleet", "status", *sd])
    assert "label_image:hang" in r.output and "storage_full" in r.output
    r = runner.invoke(app, ["fleet", "fault", s, "--clear", *sd])
    assert r.exit_code == 0
    assert {d["serial"]: d for d in fleet.status()["devices"]}[s]["faults"]["programs"] == {}
    r = runner.invoke(app, ["fleet", "snap", s, str(ASSETS_DIR / "coffee.png"), "--name",
                            "cli.png", "--dir", "Pictures", *sd])
    assert r.exit_code == 0 and r.output.strip() == "/storage/emulated/0/Pictures/cli.png"
    r = runner.invoke(app, ["fleet", "snap", s, str(ASSETS_DIR / "coffee.png"), "--name",
                            "IMG_1.png", "--with-video", *sd])
    assert r.exit_code == 0 and r.output.split() == ["/storage/emulated/0/DCIM/Camera/IMG_1.png",
                                                     "/storage/emulated/0/DCIM/Camera/VID_1.mp4"]


def test_snap_writes_picture_like_a_camera(fleet) -> None:  # type: ignore[no-untyped-def]
    s = fleet.serials[2]
    src = ASSETS_DIR / "chelsea.png"
    path = fleet.snap(s, src)  # a camera app: DCIM/Camera
    assert path.startswith("/storage/emulated/0/DCIM/Camera/IMG_") and path.endswith(".png")
    camera = host_path(fleet, s, "/storage/emulated/0/DCIM/Camera")
    assert (camera / Path(path).name).read_bytes() == src.read_bytes()
    assert not [p for p in camera.iterdir() if p.name.startswith(".pending-")]
    hostile = "$(touch pwned).jpg"
    path2 = fleet.snap(s, src, name=hostile, directory="Pictures")
    assert path2 == f"/storage/emulated/0/Pictures/{hostile}"
    pictures = host_path(fleet, s, "/storage/emulated/0/Pictures")
    d = fleet.adb().device(s)
    assert d.sync.read_bytes(path2) == src.read_bytes()
    listing = adb(fleet, s, "shell", "ls storage/emulated/0/Pictures "
                  "storage/emulated/0/DCIM/Camera"
                  ).stdout.decode()
    assert hostile in listing and Path(path).name in listing
    assert not (pictures / "pwned").exists()
    with pytest.raises(FleetError):
        fleet.snap(s, src, name="../escape.jpg")


def test_load_is_forwarded(fleet) -> None:  # type: ignore[no-untyped-def]
    s = fleet.serials[0]
    assert fleet.load(s, 40)["load"] == 40
    st = {d["serial"]: d for d in fleet.status()["devices"]}
    assert st[s]["load"] == 40 and st[s]["adb_state"] == "device"
    with pytest.raises(FleetError):
        fleet.load(s, 140)
    fleet.load(s, 0)


# ---------------------------------------------------------------- separate fleets

def test_delayed_ack_burst_mode(fleet_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """With ADB_BURST_MODE=1 the adb server offers delayed_ack: windows + i32 acks."""
    client = _start(fleet_factory, "dir", 1, env={"ADB_BURST_MODE": "1"})
    try:
        s = client.serials[0]
        src = tmp_path / "burst.bin"
        src.write_bytes(os.urandom(20 * 1024 * 1024 + 3))
        r = adb(client, s, "push", str(src), f"{TMP}/burst.bin")
        assert r.returncode == 0, r.stderr
        status = {d["serial"]: d for d in client.status()["devices"]}[s]
        assert status["delayed_ack"] is True
        back = tmp_path / "burst.back"
        assert adb(client, s, "pull", f"{TMP}/burst.bin", str(back)).returncode == 0
        assert sha(back) == sha(src)
        blob = os.urandom(2 * 1024 * 1024)
        r = adb(client, s, "shell", "cat", input=blob)
        assert r.stdout == blob
    finally:
        fleet_factory.release(client)


@pytest.mark.timing   # a start-up time bound
@pytest.mark.parametrize("kind", BACKENDS)
def test_twenty_devices_start_fast_and_down_leaves_nothing(fleet_factory, kind: str) -> None:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    client = _start(fleet_factory, kind, 20)
    elapsed = time.monotonic() - t0
    port, pid = client.adb_port, client.pid
    try:
        states = client.adb_states()
        assert len(client.serials) == 20
        assert all(states[s] == "device" for s in client.serials)
        assert elapsed < 5.0, f"20-device fleet took {elapsed:.2f} s"
    finally:
        client.down()  # the daemon itself must stop the adb server it started
    assert not client.state_dir.joinpath("fleet.json").exists()
    assert not adb_server.server_alive(port)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    fleet_factory.release(client)


def test_failed_start_reports_log_and_leaves_nothing(tmp_path: Path) -> None:
    from adbflow.fleet.control import start_fleet
    port = adb_server.free_port(15037, 16999)
    try:
        with pytest.raises(FleetError) as err:
            start_fleet(tmp_path / "state", devices=2, adb_port=port,
                        base_port=adb_server.free_port(20000, 29000),
                        backend="fleet_testing_backend:broken_backend", env=DIR_ENV, timeout=30)
        assert "exploded on purpose" in str(err.value)  # the daemon's log tail is in the error
        assert not adb_server.server_alive(port)  # the daemon stopped the adb server it started
        assert not (tmp_path / "state" / "fleet.json").exists()
    finally:
        adb_server.kill_server(port)


def test_shell_v1_and_exec_keep_the_order_stdout_and_stderr_were_written(fleet) -> None:  # type: ignore[no-untyped-def]
    """adbd gives a v1 / exec: command one socketpair for stdout and stderr, so the merged
    stream is in the order the command wrote. Two pipes pumped apart reordered them now and
    then (a CI run: 'to-stderr' before the line echoed first)."""
    from ppadb.client import Client  # test-only client: a v1 `shell:` stream
    s = fleet.serials[1]
    script = "i=0; while [ $i -lt 40 ]; do echo o$i; echo e$i >&2; i=$((i+1)); done"
    want = "".join(f"o{i}\ne{i}\n" for i in range(40))
    dev = Client(host="127.0.0.1", port=fleet.adb_port).device(s)
    assert dev is not None
    for _ in range(3):
        assert dev.shell(script) == want
        r = adb(fleet, s, "exec-out", script)
        assert r.returncode == 0 and r.stdout.decode() == want, r.stderr


# ---------------------------------------------------------------- a second, independent client

def test_pure_python_adb_shell_push_pull(fleet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """pure-python-adb (its own implementation of the host protocol, unrelated to adbutils and
    to the adb CLI's sync code) sees the same device: shell output, exact bytes both ways."""
    from ppadb.client import Client  # test-only client

    s = fleet.serials[0]
    dev = Client(host="127.0.0.1", port=fleet.adb_port).device(s)
    assert dev is not None
    # shell v1: one merged stream, as pure-python-adb expects
    assert dev.shell("echo ppadb-$((6*7)); echo to-stderr >&2") == "ppadb-42\nto-stderr\n"
    src = tmp_path / "pp.bin"
    src.write_bytes(os.urandom(300_000) + b"end")
    dev.push(str(src), f"{TMP}/pp.bin")
    assert sha(host_path(fleet, s, f"{TMP}/pp.bin")) == sha(src)
    back = tmp_path / "pp-back.bin"
    dev.pull(f"{TMP}/pp.bin", str(back))
    assert back.read_bytes() == src.read_bytes()
