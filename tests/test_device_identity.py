"""One physical phone = one device, however many ways it is reached; one serial on two adb
servers that is two phones = two devices. Pure choice rules, then the real thing: the same
virtual devices connected to a second adb server are shown once and booked once."""
from __future__ import annotations

import subprocess

import pytest

from adbflow.device import AdbServer, Inventory
from adbflow.device.identity import Line, choose, clean_hwid, link_kind, resolve_name
from adbflow.device.server import adb_binary
from adbflow.fleet import adb_server

LOCAL = AdbServer(port=5037)
LOCAL2 = AdbServer(port=5038)
REMOTE = AdbServer("10.0.0.9", 5037)


def test_link_kinds() -> None:
    assert link_kind("R5CT1234ABC") == "usb"
    assert link_kind("emulator-5554") == "emulator"
    for tcp in ("192.168.1.7:5555", "[fe80::1]:5555", "phone.lan:5555",
                "adb-R5CT1234-Ab12Cd._adb-tls-connect._tcp"):
        assert link_kind(tcp) == "tcp", tcp


def test_usb_preferred_over_wifi_and_local_over_remote() -> None:
    usb = Line(LOCAL, "R5CT1234", "R5CT1234")
    wifi = Line(LOCAL, "192.168.1.7:5555", "R5CT1234")           # after `adb tcpip 5555`
    remote_usb = Line(REMOTE, "R5CT1234", "R5CT1234")             # same phone, other laptop
    other = Line(LOCAL, "emulator-5554", None)                      # unknown hwid: its own phone
    c = choose([wifi, remote_usb, usb, other])
    assert [ln.key for ln in c.lines] == [usb.key, other.key]
    assert c.hidden == {wifi.key: usb, remote_usb.key: usb}
    assert c.names[usb.key] == "R5CT1234"
    # only Wi-Fi left (cable pulled): the Wi-Fi link is the phone, old USB name still resolves
    c2 = choose([wifi, Line(LOCAL2, "192.168.1.7:5555", "R5CT1234")])
    assert [ln.key for ln in c2.lines] == [wifi.key]
    lines = [wifi, remote_usb]
    c3 = choose(lines)
    assert resolve_name("R5CT1234", c3, lines) == remote_usb
    assert resolve_name("192.168.1.7:5555", c3, lines) == remote_usb


def test_one_serial_two_phones_get_unique_names() -> None:
    a = Line(LOCAL, "emulator-5554", "EMU_A")
    b = Line(REMOTE, "emulator-5554", "EMU_B")
    c = choose([a, b])
    assert sorted(c.names.values()) == ["emulator-5554@10.0.0.9:5037",
                                        "emulator-5554@127.0.0.1:5037"]
    assert resolve_name("emulator-5554@10.0.0.9:5037", c, [a, b]) == b
    assert resolve_name("emulator-5554", c, [a, b]) is None      # ambiguous: refused


def test_hwid_is_untrusted_text() -> None:
    assert clean_hwid("R5CT1234\r\n") == "R5CT1234"
    for junk in ("", "unknown", "0123456789ABCDEF", "a b", "$(reboot)", "x" * 65, None):
        assert clean_hwid(junk) is None


@pytest.fixture(scope="module")
def two_servers(fleet_factory):
    """A fleet of 2 on its own adb server, and a second adb server connected to the same
    devices (as a second laptop, or adb over two links, would be)."""
    fleet = fleet_factory(devices=2)
    port2 = adb_server.free_port(15037, 16999)
    adb = adb_binary()
    subprocess.run([adb, "-P", str(port2), "start-server"], check=True, capture_output=True,
                   timeout=30)
    try:
        for serial in fleet.serials:
            out = subprocess.run([adb, "-P", str(port2), "connect", serial], capture_output=True,
                                 text=True, timeout=30).stdout
            assert "connected" in out, out
        yield fleet, port2
    finally:
        adb_server.kill_server(port2)
        fleet_factory.release(fleet)


@pytest.mark.fleet
def test_same_phones_on_two_servers_are_shown_once_and_booked_once(two_servers) -> None:
    fleet, port2 = two_servers
    inv = Inventory([AdbServer(port=fleet.adb_port), AdbServer(port=port2)], start_server=False)
    refs = [r for r in inv.refs() if r.state == "device"]
    assert len(refs) == 4                                   # each phone seen twice
    devs = inv.devices()
    assert sorted(d.serial for d in devs) == sorted(fleet.serials)   # ... used once
    assert len(inv.last_choice.hidden) == 2
    # the link used is the first server's (both local: same rank, lower port first)
    assert {str(d.server) for d in devs} == {str(AdbServer(port=min(fleet.adb_port, port2)))}
    assert inv.device(fleet.serials[0]).run(["echo", "ok"], timeout=10).stdout.strip() == "ok"
    no_dedupe = Inventory([AdbServer(port=fleet.adb_port), AdbServer(port=port2)],
                          start_server=False, dedupe=False)
    names = sorted(d.serial for d in no_dedupe.devices())
    assert len(names) == 4 and all("@" in n for n in names)   # without hwids: two phones each


@pytest.mark.fleet
def test_devices_command_lists_each_phone_once_with_its_other_link(two_servers) -> None:
    import json

    from typer.testing import CliRunner

    from adbflow.cli.main import app
    fleet, port2 = two_servers
    r = CliRunner().invoke(app, ["devices", "--json", "--adb-server", f"127.0.0.1:{fleet.adb_port}",
                                 "--adb-server", f"127.0.0.1:{port2}"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert sorted(row["serial"] for row in rows) == sorted(fleet.serials)
    assert all(len(row["also_via"]) == 1 for row in rows)
