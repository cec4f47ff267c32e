"""Mesh wire protocol, Python side (adbflow/mesh/wire.py), without devices.

Why: the framing and the authentication rules are where a hostile peer would get in; these
check each refusal reason on its own (wrong key, unknown peer, replay, stale time, forged
size, malformed fields, endless or short input), over a real socket pair. The shell twin is
checked against this module in test_mesh_fleet.py.
"""
from __future__ import annotations

import socket
import threading
import time

import pytest

from adbflow.mesh import wire
from adbflow.mesh.wire import HEADER_BYTES, Kind, Message, Peer, ReplayGuard, WireError

KEY = "ab" * 32


def deliver(raw: bytes, *, key: str = KEY, me: str = "p1", peers=("p2",),
            guard: ReplayGuard | None = None, timeout: float = 3.0) -> Message:
    a, b = socket.socketpair()
    t = threading.Thread(target=lambda: (a.sendall(raw), a.close()), daemon=True)
    t.start()
    try:
        return wire.read_message(b, key, me=me, peers=set(peers), guard=guard or ReplayGuard(),
                                 timeout=timeout)
    finally:
        b.close()
        t.join(2)


def test_a_signed_message_round_trips_with_its_body_and_a_fixed_header_size():
    p = Peer("p2", KEY)
    raw = p.make(Kind.TASK, "p1", "classify,7,n1", b"\x00BM binary\n$(x)")
    assert raw[HEADER_BYTES - 1:HEADER_BYTES] == b"\n" and len(raw) == HEADER_BYTES + 15
    m = deliver(raw)
    assert (m.kind, m.sender, m.to, m.arg, m.body) == (Kind.TASK, "p2", "p1", "classify,7,n1",
                                                      b"\x00BM binary\n$(x)")


@pytest.mark.parametrize("mutate, why", [
    (lambda r: r.replace(b"classify", b"generate", 1), "bad-mac"),        # field changed
    (lambda r: r[:-1] + b"Y", "bad-mac"),                                  # body changed
    (lambda r: r.replace(b"AFM1", b"AFM2", 1), "header"),
    (lambda r: r.replace(b" TASK ", b" EXEC ", 1), "type"),
    (lambda r: r.replace(b" p2 ", b" p$(x) ", 1), "name"),
])
def test_tampered_messages_are_refused_with_the_reason(mutate, why):
    raw = Peer("p2", KEY).make(Kind.TASK, "p1", "classify,7,n1", b"body X")
    with pytest.raises(WireError) as exc:
        deliver(mutate(raw))
    assert exc.value.why == why


def test_wrong_key_unknown_peer_not_for_me_and_stale_time_are_refused():
    cases = [
        (Peer("p2", "cd" * 32).make(Kind.BID_REQUEST, "p1", "classify"), "bad-mac"),
        (Peer("p9", KEY).make(Kind.BID_REQUEST, "p1", "classify"), "unknown-peer"),
        (Peer("p2", KEY).make(Kind.BID_REQUEST, "p3", "classify"), "not-for-me"),
        (Peer("p2", KEY).make(Kind.BID_REQUEST, "p1", "classify",
                              ts=int(time.time()) - 10 * wire.MAX_SKEW_S), "stale"),
    ]
    for raw, why in cases:
        with pytest.raises(WireError) as exc:
            deliver(raw)
        assert exc.value.why == why, why


def test_a_replayed_counter_is_refused_and_an_out_of_order_one_accepted_once():
    """The replay window: concurrent connections of one peer may arrive out of order (an
    older counter within the window is accepted once); any repeat is refused, and so is a
    counter older than the window."""
    p, guard = Peer("p2", KEY), ReplayGuard()
    first, second = p.make(Kind.BID_REQUEST, "p1", "classify"), p.make(Kind.BID, "p1", "x,1")
    deliver(second, guard=guard)
    assert deliver(first, guard=guard).counter == 1          # late, inside the window
    for raw in (second, first):
        with pytest.raises(WireError) as exc:
            deliver(raw, guard=guard)
        assert exc.value.why == "replay"
    p.counter = wire.WINDOW + 5
    deliver(p.make(Kind.BID_REQUEST, "p1", "classify"), guard=guard)   # window moves to 70
    p.counter = 5                                            # 6: now below the window
    with pytest.raises(WireError) as exc:
        deliver(p.make(Kind.BID_REQUEST, "p1", "classify"), guard=guard)
    assert exc.value.why == "replay"


def test_the_replay_window_rule():
    g = ReplayGuard(window=4)
    got = [g.accept("p", c) for c in (3, 1, 3, 2, 9, 5, 6, 6, 8, 0, 10, 7, 7)]
    assert got == [True, True, False, True, True, False, True, False, True, False, True,
                   True, False]
    assert g.accept("q", 1)                                  # per peer


def test_forged_sizes_are_refused_before_the_body_is_read():
    p = Peer("p2", KEY)
    for kind, n in ((Kind.BID_REQUEST, 1), (Kind.RESULT, wire.MAX_BODY["RESULT"] + 1),
                    (Kind.TASK, wire.MAX_BODY["TASK"] + 1)):
        s = f"AFM1 {kind.value} p2 p1 {p.counter + 1} {int(time.time())} a {n}"
        raw = f"{s} {'0' * 64}".ljust(HEADER_BYTES - 1).encode() + b"\n"   # no body follows
        with pytest.raises(WireError) as exc:
            deliver(raw, timeout=2)
        assert exc.value.why == "size"


def test_endless_input_without_a_newline_reads_one_header_and_stops():
    a, b = socket.socketpair()
    stop = threading.Event()

    def flood():
        try:
            while not stop.is_set():
                a.sendall(b"A" * 65536)
        except OSError:
            pass
    t = threading.Thread(target=flood, daemon=True)
    t.start()
    try:
        with pytest.raises(WireError) as exc:
            wire.read_message(b, KEY, me="p1", peers={"p2"}, guard=ReplayGuard(), timeout=3)
        assert exc.value.why == "header"
    finally:
        stop.set()
        b.close()
        a.close()
        t.join(2)


def test_a_short_body_is_refused_not_waited_for_forever():
    raw = Peer("p2", KEY).make(Kind.TASK, "p1", "classify,1,n", b"x" * 1000)
    with pytest.raises(WireError) as exc:
        deliver(raw[:-10], timeout=3)
    assert exc.value.why == "short"


def test_encode_refuses_fields_the_receiver_would_refuse():
    p = Peer("p2", KEY)
    for arg in ("a b", "$(touch x)", "a;b", "x" * 101, ""):
        with pytest.raises(ValueError):
            p.make(Kind.BID_REQUEST, "p1", arg)
    with pytest.raises(ValueError):
        Peer("P-2", KEY).make(Kind.BID_REQUEST, "p1", "classify")


def test_mac_is_nested_keyed_sha256_as_documented():
    import hashlib
    k = KEY.encode()
    inner = hashlib.sha256(k + b"AFM1 BID p1 p2 1 2 a 0 x").hexdigest().encode()
    assert wire.mac(KEY, "AFM1 BID p1 p2 1 2 a 0 x") == hashlib.sha256(k + inner).hexdigest()
