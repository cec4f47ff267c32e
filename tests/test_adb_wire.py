"""adb.py against a minimal in-process adb server double (no fleet needed): server address
parsing, the shell v1 fallback for adbd without shell_v2 (exit codes survive `exit`),
FAIL replies -> error kinds with hints, unreachable servers in the inventory."""
from __future__ import annotations

import socket
import subprocess
import threading

import pytest

from adbflow.device import AdbServer, Device, Inventory, resolve_servers
from adbflow.device.server import adb_binary
from adbflow.errors import AdbError, DeviceUnavailableError


class FakeAdbServer:
    """Speaks the host smart-socket protocol for one device 'old1' whose adbd lacks shell_v2;
    shell commands run in the host's /bin/sh (v1 semantics: merged output, no exit status)."""

    def __init__(self, devices: str = "old1\tdevice product:x model:Old_Phone device:y\n"
                                      "bad1\tunauthorized\n") -> None:
        self.devices = devices
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    @staticmethod
    def _req(conn) -> str:
        n = int(conn.recv(4), 16)
        data = b""
        while len(data) < n:
            data += conn.recv(n - len(data))
        return data.decode()

    @staticmethod
    def _fail(conn, msg: str) -> None:
        conn.sendall(b"FAIL" + b"%04x" % len(msg) + msg.encode())

    def _handle(self, conn) -> None:
        with conn:
            req = self._req(conn)
            if req == "host:devices-l":
                conn.sendall(b"OKAY" + b"%04x" % len(self.devices) + self.devices.encode())
                return
            if req.startswith("host-serial:old1:features"):
                feats = b"cmd,stat_v2,ls_v2"
                conn.sendall(b"OKAY" + b"%04x" % len(feats) + feats)
                return
            if req == "host-serial:bad1:features" or req == "host:transport:bad1":
                self._fail(conn, "device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set")
                return
            if req != "host:transport:old1":
                self._fail(conn, f"device '{req.rsplit(':', 1)[-1]}' not found")
                return
            conn.sendall(b"OKAY")
            svc = self._req(conn)
            if not svc.startswith("shell:"):
                self._fail(conn, "unsupported")
                return
            conn.sendall(b"OKAY")
            out = subprocess.run(["/bin/sh", "-c", svc[len("shell:"):]], capture_output=True).stdout
            conn.sendall(out)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def fake():
    srv = FakeAdbServer()
    yield srv
    srv.close()


def test_v1_fallback_keeps_exit_codes_even_with_exit(fake):
    dev = Device("old1", AdbServer(port=fake.port))
    r = dev.shell("echo hello; echo warn >&2; exit 5", timeout=5, check=False)
    assert r.exit_code == 5 and "hello" in r.stdout and "warn" in r.stdout
    assert dev.shell("true", timeout=5).exit_code == 0
    assert dev.run(["printf", "%s", "$(id) `x`"], timeout=5).stdout == "$(id) `x`"
    with pytest.raises(AdbError) as ei:
        dev.shell("exit 3", timeout=5)
    assert ei.value.exit_code == 3 and ei.value.serial == "old1"


def test_fail_replies_become_error_kinds_with_hints(fake):
    with pytest.raises(DeviceUnavailableError) as ei:
        Device("bad1", AdbServer(port=fake.port)).shell("true", timeout=5)
    assert "RSA" in ei.value.hint
    with pytest.raises(DeviceUnavailableError) as ei:
        Device("nope", AdbServer(port=fake.port)).shell("true", timeout=5)
    assert "adbflow devices" in ei.value.hint


def test_inventory_merges_servers_and_reports_unreachable(fake):
    inv = Inventory([AdbServer(port=fake.port), AdbServer("127.0.0.2", 9)], start_server=False)
    refs = inv.refs()
    assert [(r.serial, r.state) for r in refs] == [("old1", "device"), ("bad1", "unauthorized"),
                                                   ("-", "server-unreachable")]
    assert refs[0].model == "Old_Phone"
    assert [d.serial for d in inv.devices()] == ["old1"]
    with pytest.raises(DeviceUnavailableError, match="unauthorized"):
        inv.device("bad1")


def test_server_addresses(monkeypatch):
    assert AdbServer.parse("10.0.0.2:5038") == AdbServer("10.0.0.2", 5038)
    assert AdbServer.parse("5039") == AdbServer("127.0.0.1", 5039)
    assert AdbServer.parse("lab-host") == AdbServer("lab-host", 5037)
    assert AdbServer.parse("tcp:[::1]:5040") == AdbServer("::1", 5040)
    for bad in ("host:0", "host:x", ""):
        with pytest.raises(AdbError):
            AdbServer.parse(bad)
    monkeypatch.delenv("ADB_SERVER_SOCKET", raising=False)
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", "6001")
    assert resolve_servers(None) == [AdbServer(port=6001)]
    assert resolve_servers(["a:1", "a:1", "b:2"]) == [AdbServer("a", 1), AdbServer("b", 2)]
    monkeypatch.setenv("ADBFLOW_ADB", "/opt/adb")
    assert adb_binary() == "/opt/adb"
