"""adb forward / reverse through adbflow.device.Device on the virtual fleet, and the
phone-to-phone tunnel the split LLM uses (reverse on A -> laptop -> forward to B).

The virtual phones share the host's network namespace (adbflow/fleet/socket_services.py),
so "a program listening on B's loopback port P" is a host listener on 127.0.0.1:P, and
the port a reverse opens on A is a host port too; the bytes still cross both adb hops."""
from __future__ import annotations

import socket
import threading

import pytest
from fleet_helpers import device, module_fleet

from adbflow.errors import AdbError
from adbflow.split.llm import tunnel

pytestmark = pytest.mark.fleet

fleet = module_fleet(2, ["lowend_2020"])


def _echo_server() -> tuple[socket.socket, int]:
    srv = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                data = conn.recv(1024)
                conn.sendall(b"echo:" + data)
    threading.Thread(target=run, daemon=True).start()
    return srv, srv.getsockname()[1]


def _ask(port: int, text: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(text)
        s.settimeout(10)
        return s.recv(1024)


def test_forward_reaches_the_phone_port_and_is_gone_after_remove(fleet) -> None:
    srv, port = _echo_server()
    dev = device(fleet, fleet.serials[0])
    try:
        laptop = dev.forward("tcp:0", f"tcp:{port}", timeout=10)
        assert laptop not in (0, port)
        assert _ask(laptop, b"hi") == b"echo:hi"
        dev.remove_forward(f"tcp:{laptop}", timeout=10)
        with pytest.raises(OSError):
            _ask(laptop, b"hi")
        with pytest.raises(AdbError):
            dev.remove_forward(f"tcp:{laptop}", timeout=10)   # already gone: the server says so
    finally:
        srv.close()


def test_tunnel_joins_two_phones_through_the_laptop_and_cleans_up(fleet) -> None:
    a, b = (device(fleet, s) for s in fleet.serials)
    srv, port = _echo_server()       # "a program on B's loopback"
    try:
        with tunnel(a, b, port) as on_a:
            assert on_a != port
            assert _ask(on_a, b"story") == b"echo:story"
            rev = a.shell("echo ok", timeout=10)    # the phone still answers meanwhile
            assert rev.stdout.strip() == "ok"
        with pytest.raises(OSError):
            _ask(on_a, b"x")
        listing = fleet.adb().forward_list()
        assert not [f for f in listing if f.serial == b.serial], listing
    finally:
        srv.close()


def test_two_any_port_reverses_on_one_phone_both_carry_and_the_server_survives(fleet) -> None:
    """The adb server keys its table of allowed reverses by the REMOTE as requested: two
    `reverse tcp:0` on one phone left only the second allowed, and the phone's connection
    through the first made the server abort (LOG(FATAL) "disallowed connect", every device
    gone). Device.reverse rebinds each to its port, so both work and the server stays up."""
    a = device(fleet, fleet.serials[0])
    srv1, p1 = _echo_server()
    srv2, p2 = _echo_server()
    try:
        on1 = a.reverse("tcp:0", f"tcp:{p1}", timeout=10)
        on2 = a.reverse("tcp:0", f"tcp:{p2}", timeout=10)
        assert on1 != on2
        assert _ask(on1, b"one") == b"echo:one"          # the first: the one the bug broke
        assert _ask(on2, b"two") == b"echo:two"
        assert fleet.adb_states().get(a.serial) == "device"  # the adb server is still up
        a.remove_reverse(f"tcp:{on1}", timeout=10)
        a.remove_reverse(f"tcp:{on2}", timeout=10)
        with pytest.raises(OSError):
            _ask(on1, b"x")
    finally:
        srv1.close()
        srv2.close()
