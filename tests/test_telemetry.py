"""Telemetry streams against a scripted phone end (a socketpair speaking shell v2): samples
are parsed by nonce, a request line gets a fresh sample, and a stream that dies, stalls or
floods is restarted with backoff while bids fall back to one-shot probes."""
from __future__ import annotations

import re
import socket
import struct
import threading
import time

import pytest
from pipeline_fakes import ShellOnlyPort

from adbflow.scheduling import telemetry as tel
from adbflow.scheduling.bids import Bidder
from adbflow.scheduling.telemetry import DeviceStream, Telemetry, stream_command


def sample_text(nonce: str, busy: int, *, forged: bool = False, light: bool = False,
                temp_mc: int = 41000) -> bytes:
    """A probe.sh sample: full (with a thermal zone) or LIGHT (stat, meminfo, `light`)."""
    other = "0" * 16 if forged else nonce
    lines = [f"=:adbflow:{nonce}:stat", f"cpu  {busy} 0 0 {10000 + busy} 0 0 0 0 0 0",
             f"cpu0 {busy} 0 0 {10000 + busy} 0 0 0 0 0 0",
             f"=:adbflow:{nonce}:meminfo", "MemTotal: 4000000 kB", "MemAvailable: 2000000 kB"]
    lines += ([f"=:adbflow:{nonce}:light"] if light else
              [f"=:adbflow:{nonce}:thermal", f"thermal_zone0\tcpu-0-0\t{temp_mc}"])
    lines += [f"=:adbflow:{other}:end", ""]
    return "\n".join(lines).encode()


def packet(kind: int, payload: bytes) -> bytes:
    return struct.pack("<BI", kind, len(payload)) + payload


class _Wire:
    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.deadline = sock, None

    def close(self) -> None:
        self.sock.close()


class ScriptedPhone(ShellOnlyPort):
    """Each `_open` hands the phone end of a fresh socketpair to `behaviour(end, nonce)`."""

    def __init__(self, serial: str, behaviour) -> None:
        self.serial = serial
        self.behaviour = behaviour
        self.opens = 0
        self.requests = 0
        self.threads: list[threading.Thread] = []

    def _open(self, service: str, cmd: str, deadline):
        assert service.startswith("shell,v2,raw:")
        nonce = re.match(r"set -- ([0-9a-f]+) ", service.split(":", 1)[1]).group(1)
        ours, phone = socket.socketpair()
        self.opens += 1
        t = threading.Thread(target=self.behaviour, args=(self, phone, nonce, self.opens),
                             daemon=True)
        t.start()
        self.threads.append(t)
        return _Wire(ours)

    def shell(self, cmd, *, timeout, stdin=None, check=True, max_output=1 << 24):
        raise AssertionError("the stream tests never take one-shot probes here")


def healthy_loop(phone: ScriptedPhone, end: socket.socket, nonce: str, _n: int,
                 interval: float = 0.2) -> None:
    """Samples every `interval`, and one at once per request line (as the mksh loop)."""
    busy = 0
    end.settimeout(interval)
    try:
        while True:
            busy += 50
            end.sendall(packet(1, sample_text(nonce, busy)))
            try:
                head = end.recv(5)
                if not head:
                    return
                kind, n = struct.unpack("<BI", head)
                end.recv(n)
                phone.requests += 1
            except TimeoutError:
                pass
    except OSError:
        return


def test_the_loop_is_the_probe_with_a_stdin_read() -> None:
    cmd = stream_command("abc123", 1.5)
    # first sample: FIRST (two stat readings: a load at once) and props; then LIGHT on a
    # request line `l`, full on a timed-out wait
    assert cmd.startswith("set -- abc123 1 0 1 0 0\n") and "read -t 1.5 r" in cmd
    assert 'if [ "$r" = l ]; then set -- abc123 0 0 0 0 1; else set -- abc123 0 0 0 0 0; fi' in cmd
    assert "[ $? -eq 1 ] && exit 0" in cmd                 # stdin closed: end, never spin
    with pytest.raises(ValueError):
        stream_command("a;b", 1.0)


def test_samples_stream_and_a_request_gets_a_fresh_one() -> None:
    phone = ScriptedPhone("p1", healthy_loop)
    st = DeviceStream(phone, interval_s=0.2)
    try:
        deadline = time.monotonic() + 5
        while (st.latest() is None or st.latest().seq < 2) and time.monotonic() < deadline:
            time.sleep(0.02)
        first = st.latest()
        assert first is not None and first.load is not None and first.window_s > 0
        fresh = st.request(timeout=2.0)
        assert fresh is not None and fresh.seq > first.seq and fresh.rtt_s is not None
        assert phone.requests >= 1
    finally:
        st.close()


def test_a_forged_end_marker_is_not_a_sample() -> None:
    def forger(phone, end, nonce, n):
        end.sendall(packet(1, sample_text(nonce, 10, forged=True)))
        time.sleep(5)
    phone = ScriptedPhone("p1", forger)
    st = DeviceStream(phone, interval_s=0.2)
    try:
        time.sleep(0.5)
        assert st.latest() is None
    finally:
        st.close()


@pytest.mark.parametrize("fault", ["dies", "stalls", "floods"])
def test_a_bad_stream_restarts_with_backoff_and_bids_fall_back(fault, monkeypatch) -> None:
    monkeypatch.setattr(tel, "BACKOFF_START_S", 0.1)
    monkeypatch.setattr(tel, "STALL_INTERVALS", 1.0)

    def bad(phone, end, nonce, n):
        if n >= 3:                           # the third stream is healthy
            return healthy_loop(phone, end, nonce, n)
        if fault == "dies":
            end.sendall(packet(1, sample_text(nonce, 10)))
            end.sendall(packet(3, b"\x89"))     # killed (SIGKILL)
            end.close()
        elif fault == "stalls":
            time.sleep(6)                    # never a sample
        else:
            busy = 0
            try:
                while True:
                    busy += 1
                    end.sendall(packet(1, sample_text(nonce, busy)))
            except OSError:
                return
    phone = ScriptedPhone("p1", bad)
    st = DeviceStream(phone, interval_s=0.1)
    try:
        deadline = time.monotonic() + 15
        while phone.opens < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert phone.opens >= 3 and st.restarts >= 2
        assert {"dies": "exited", "stalls": "stalled", "floods": "flood"}[fault] in st.last_error
        while st.latest() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert st.latest() is not None                          # back up
    finally:
        st.close()


def test_bidder_uses_one_shot_while_the_stream_is_down() -> None:
    class Probed(ScriptedPhone):
        probes = 0

        def shell(self, cmd, *, timeout, stdin=None, check=True, max_output=1 << 24):
            raise ConnectionError("no")

    def never(phone, end, nonce, n):
        time.sleep(10)

    phone = Probed("p1", never)
    calls = []
    bidder = Bidder(timeout=1.0, telemetry=Telemetry(interval_s=0.2))
    bidder._probe = lambda d: calls.append(d.serial) or "one-shot"   # type: ignore[method-assign]
    try:
        assert bidder.bid(phone) == "one-shot" and calls == ["p1"]
    finally:
        bidder.close()


def answering_loop(phone: ScriptedPhone, end: socket.socket, nonce: str, _n: int, *,
                   delay: float = 0.0) -> None:
    """One full sample, then a LIGHT one per request line `l` (after `delay`), like the mksh
    loop; request arrival times and answer times go to phone.log."""
    busy = 100
    end.sendall(packet(1, sample_text(nonce, busy)))
    try:
        while True:
            head = end.recv(5)
            if not head:
                return
            kind, n = struct.unpack("<BI", head)
            line = end.recv(n)
            phone.log.append(("asked", time.monotonic(), line))
            time.sleep(delay)
            busy += 50
            phone.log.append(("answered", time.monotonic(), b""))
            end.sendall(packet(1, sample_text(nonce, busy, light=line == b"l\n",
                                              temp_mc=99000)))
    except OSError:
        return


def _wait_first(streams: list[DeviceStream]) -> None:
    deadline = time.monotonic() + 5
    while any(s.latest() is None for s in streams) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert all(s.latest() is not None for s in streams)


def test_a_requested_sample_is_light_and_keeps_the_full_samples_slow_parts() -> None:
    phone = ScriptedPhone("p1", answering_loop)
    phone.log = []
    st = DeviceStream(phone, interval_s=30.0)
    try:
        _wait_first([st])
        full = st.latest()
        assert not full.report.light and full.report.thermal is not None
        fresh = st.request(timeout=2.0)
        assert [e[2] for e in phone.log if e[0] == "asked"] == [b"l\n"]
        assert fresh is not None and fresh.seq > full.seq and fresh.report.light
        # load and memory are the new sample's; the zone is the full sample's (41 C: the
        # LIGHT text carried no thermal section, whatever the phone would have said)
        assert fresh.report.stat != full.report.stat and fresh.load is not None
        assert fresh.report.thermal == full.report.thermal
    finally:
        st.close()


def test_sample_many_asks_every_stream_before_it_waits_for_any() -> None:
    phones = []
    for i in range(4):
        p = ScriptedPhone(f"p{i}", lambda ph, e, n, k: answering_loop(ph, e, n, k, delay=0.3))
        p.log = []
        phones.append(p)
    telemetry = Telemetry(interval_s=30.0, max_age_s=0.0, request_timeout_s=5.0)
    try:
        _wait_first([telemetry.stream(p) for p in phones])
        samples = telemetry.sample_many(phones)
        assert all(s is not None and s.report.light for s in samples)
        asked = [t for p in phones for kind, t, _ in p.log if kind == "asked"]
        answered = [t for p in phones for kind, t, _ in p.log if kind == "answered"]
        assert len(asked) == 4 and max(asked) < min(answered)    # one wave, not four
    finally:
        telemetry.close()


def test_gather_takes_streamed_bids_without_a_probe() -> None:
    phones = []
    for i in range(3):
        p = ScriptedPhone(f"p{i}", answering_loop)      # its shell() raises: no probes
        p.log = []
        phones.append(p)
    bidder = Bidder(timeout=1.0, telemetry=Telemetry(interval_s=30.0, max_age_s=0.0))
    try:
        _wait_first([bidder.telemetry.stream(p) for p in phones])
        bids = bidder.gather(phones)
        assert [b.serial for b in bids] == ["p0", "p1", "p2"]
        assert all(b.ok and b.source == "stream" for b in bids)
    finally:
        bidder.close()
