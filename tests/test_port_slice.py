"""Port slices: parallel test workers (or two benches) starting fleets at once take disjoint
parts of every port range, so none picks a port another is about to bind."""
from __future__ import annotations

import socket

import pytest

from adbflow.fleet import adb_server
from adbflow.fleet.adb_server import port_slice


def test_slices_cover_the_range_without_overlap() -> None:
    parts = [port_slice(20000, 29000, f"{k}/3") for k in range(3)]
    assert parts == [(20000, 23000), (23000, 26000), (26000, 29000)]


@pytest.mark.parametrize("spec", ["", "x/3", "3/3", "1/0", "-1/2", "1/2000"])
def test_a_bad_or_useless_slice_falls_back_to_the_whole_range(spec: str) -> None:
    assert port_slice(15037, 16999, spec) == (15037, 16999)


def test_free_port_stays_in_its_slice_and_is_bindable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(adb_server.PORT_SLICE_ENV, "1/4")
    lo, hi = port_slice(30000, 34000)
    assert (lo, hi) == (31000, 32000)
    for _ in range(20):
        port = adb_server.free_port(30000, 34000)
        assert lo <= port < hi
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))          # it really was free
