"""Live telemetry: one long-lived `adb shell` per device streams probe samples, so a bid is
served from memory instead of a fresh shell per device per round.

Why: a one-shot probe costs a shell start per phone per bid (an 8-phone round was 2.55x one
adb round trip, 100 phones 442 ms). Here each phone runs the same probe (device_scripts/
probe.sh: reads only, nothing written on the phone) in a mksh loop:

    p "$@"                      # one sample, sections framed by =:adbflow:NONCE:NAME
    read -t INTERVAL r          # wait; a line on stdin (a bid request) cuts the wait short

so a bid takes the freshest sample (its age goes into the Bid) and, when that one is older
than `max_age_s`, writes one line to the open stream and gets a fresh sample back after a
single write/read on a connection that already exists (no shell start, no adb
transport set-up). The nonce is fresh per stream: file contents cannot forge a section.

Faults: a stream that dies (EOF, exit, disconnect), stalls (no sample for a few intervals)
or floods (samples far faster than asked, or an endless sample) is closed and restarted with
exponential backoff; while it is down `sample()` returns None and the Bidder falls back to
its one-shot probe. `close()` (adbflow exiting) closes every stream; closing the adb stream
makes adbd kill the loop's process group, so nothing stays running on the phones.
"""
from __future__ import annotations

import logging
import math
import secrets
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from adbflow.device.port import DevicePort
from adbflow.device.probe import (
    FIRST_SAMPLE_WINDOW_S,
    PROBE_MAX_OUTPUT,
    ProbeReport,
    parse_probe_output,
    probe_script,
    with_slow_parts,
)
from adbflow.errors import AdbflowError, ParseError
from adbflow.parsers.proc_stat import CpuLoad, ProcStat, cpu_load

log = logging.getLogger("adbflow.scheduling.telemetry")

DEFAULT_INTERVAL_S = 1.0
DEFAULT_MAX_AGE_S = 1.5        # older cached samples trigger a request on the stream
REQUEST_TIMEOUT_S = 1.0        # a requested sample later than this: fall back to one-shot
STALL_INTERVALS = 3.0          # no sample for this many intervals (+ slack): stalled
FLOOD_FACTOR = 4.0             # more than this many x the expected samples: flooding
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0
HEALTHY_RESET_S = 30.0         # a stream that lived this long resets the backoff
MIN_WINDOW_S = 0.15            # as the one-shot bidder: shorter load windows are noise


def stream_command(nonce: str, interval_s: float) -> str:
    """The loop sent as the shell command: the probe as a function, then sample / wait.
    The first sample takes two /proc/stat readings 0.2 s apart (FIRST), so the stream's
    first sample already has a load; model and ABI (props) only in that one. A request line
    `l` asks for a LIGHT sample (stat, meminfo, leases: what changes between bids); a timed
    out wait takes a full one. `read` exit status 1 = stdin closed (the laptop is gone): exit
    rather than spin. Timeout is status > 128."""
    if not nonce.isalnum():
        raise ValueError("nonce must be alphanumeric")
    interval = max(0.05, float(interval_s))
    return (f"set -- {nonce} 1 0 1 0 0\np() {{\n{probe_script()}}}\n"
            f"while :; do p \"$@\"; read -t {interval:g} r\n"
            f"[ $? -eq 1 ] && exit 0\n"
            f"if [ \"$r\" = l ]; then set -- {nonce} 0 0 0 0 1; "
            f"else set -- {nonce} 0 0 0 0 0; fi; done\n")


@dataclass(frozen=True)
class Sample:
    """One streamed probe, with the load since the stream's previous sample."""

    report: ProbeReport
    seq: int
    received: float                 # time.monotonic()
    wall: float                     # time.time()
    load: CpuLoad | None
    window_s: float | None
    rtt_s: float | None             # request -> sample when this sample was requested

    def age_s(self, now: float | None = None) -> float:
        return max(0.0, (time.monotonic() if now is None else now) - self.received)


class _Channel:
    """A shell-v2 stream on which we can also write stdin (LineStream closes stdin)."""

    def __init__(self, device: DevicePort, cmd: str, *, open_timeout: float) -> None:
        opener = getattr(device, "_open", None)
        if opener is None:
            raise AdbflowError(f"{device.serial}: this device port cannot stream telemetry",
                               hint="one-shot probes are used instead")
        wire = opener(f"shell,v2,raw:{cmd}", "telemetry loop", time.monotonic() + open_timeout)
        wire.deadline = None
        self.sock: socket.socket = wire.sock
        self._wire = wire
        self._send_lock = threading.Lock()

    def write_line(self, data: bytes = b"\n") -> None:
        with self._send_lock:
            self.sock.settimeout(2.0)
            self.sock.sendall(struct.pack("<BI", 0, len(data)) + data)

    def read_packet(self, timeout: float) -> tuple[int, bytes]:
        self.sock.settimeout(timeout)
        head = self._exact(5)
        kind, length = struct.unpack("<BI", head)
        if length > PROBE_MAX_OUTPUT:
            raise ValueError(f"shell packet of {length} bytes")
        return kind, self._exact(length)

    def _exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionResetError("telemetry stream closed")
            buf += chunk
        return bytes(buf)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._wire.close()


class DeviceStream:
    """The telemetry stream of one device, supervised by its own thread."""

    def __init__(self, device: DevicePort, *, interval_s: float, open_timeout: float = 10.0) -> None:
        self.device = device
        self.interval_s = interval_s
        self.open_timeout = open_timeout
        self.props: dict[str, str] = {}
        self.restarts = 0
        self.last_error: str | None = None
        self._latest: Sample | None = None
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._channel: _Channel | None = None
        self._requested_at: float | None = None
        self._backoff = BACKOFF_START_S
        self._thread = threading.Thread(target=self._supervise, daemon=True,
                                        name=f"telemetry-{device.serial}")
        self._thread.start()

    # ------------------------------------------------------------ reading side
    @property
    def up(self) -> bool:
        return self._channel is not None and not self._stop.is_set()

    def latest(self) -> Sample | None:
        with self._cv:
            return self._latest if self.up else None

    def request(self, timeout: float) -> Sample | None:
        """Ask for a sample now and wait for it (None: the stream is down or too slow)."""
        ticket = self.ask()
        return None if ticket is None else self.wait(ticket, time.monotonic() + timeout)

    def ask(self) -> tuple[_Channel, int] | None:
        """Write one request line (a LIGHT sample) on the open stream without waiting, so a
        round can ask every phone before it waits for any; the ticket is for `wait`."""
        with self._cv:
            chan = self._channel
            before = self._latest.seq if self._latest else -1
            if chan is None:
                return None
            if self._requested_at is None:
                self._requested_at = time.monotonic()
        try:
            chan.write_line(b"l\n")
        except OSError:
            return None
        return chan, before

    def wait(self, ticket: tuple[_Channel, int], deadline: float) -> Sample | None:
        """The first sample newer than the ticket's request, by `deadline` (monotonic)."""
        chan, before = ticket
        with self._cv:
            while True:
                s = self._latest
                if s is not None and s.seq > before:
                    return s
                left = deadline - time.monotonic()
                if left <= 0 or self._channel is not chan:
                    return None
                self._cv.wait(left)

    def close(self) -> None:
        self._stop.set()
        with self._cv:
            chan, self._channel = self._channel, None
            self._cv.notify_all()
        if chan is not None:
            chan.close()
        self._thread.join(timeout=3.0)

    # ------------------------------------------------------------ the loop
    def _supervise(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._run_once()
            except (AdbflowError, OSError, ValueError, ParseError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                with self._cv:
                    chan, self._channel = self._channel, None
                    self._cv.notify_all()
                if chan is not None:
                    chan.close()
            if self._stop.is_set():
                return
            if time.monotonic() - started > HEALTHY_RESET_S:
                self._backoff = BACKOFF_START_S
            self.restarts += 1
            log.info("[%s] telemetry stream restarts in %.1f s (%s)", self.device.serial,
                     self._backoff, self.last_error)
            if self._stop.wait(self._backoff):
                return
            self._backoff = min(BACKOFF_MAX_S, self._backoff * 2)

    def _run_once(self) -> None:
        nonce = secrets.token_hex(8)
        end = f"=:adbflow:{nonce}:end"
        chan = _Channel(self.device, stream_command(nonce, self.interval_s),
                        open_timeout=self.open_timeout)
        with self._cv:
            if self._stop.is_set():
                chan.close()
                return
            self._channel = chan
        stall_s = self.interval_s * STALL_INTERVALS + 2.0
        buf = bytearray()
        history: list[tuple[ProcStat, float]] = []     # recent samples, oldest first
        full: ProbeReport | None = None                 # the last full (not LIGHT) sample
        seq = 0
        opened = time.monotonic()
        unrequested = 0
        while not self._stop.is_set():
            try:
                kind, payload = chan.read_packet(stall_s)
            except TimeoutError:
                raise AdbflowError(f"{self.device.serial}: telemetry stalled "
                                   f"(no sample in {stall_s:g} s)") from None
            if kind == 3:
                raise AdbflowError(f"{self.device.serial}: telemetry loop exited "
                                   f"({payload[:1].hex() or '?'})")
            if kind != 1:
                continue
            buf += payload
            if len(buf) > PROBE_MAX_OUTPUT:
                raise AdbflowError(f"{self.device.serial}: telemetry flood (a sample over "
                                   f"{PROBE_MAX_OUTPUT} bytes)")
            while True:
                text = buf.decode("utf-8", "replace")
                at = text.find(end)
                if at < 0:
                    break
                cut = text.find("\n", at)
                if cut < 0:
                    break
                sample_text, rest = text[:cut + 1], text[cut + 1:]
                buf = bytearray(rest.encode("utf-8"))
                now = time.monotonic()
                rep = parse_probe_output(sample_text, nonce)
                if rep.props:
                    self.props = rep.props
                if not rep.light:
                    full = rep
                elif full is not None:
                    rep = with_slow_parts(rep, full)
                load, window = _load_since(history, rep.stat, now)
                if load is None and rep.stat_a is not None:    # the stream's first sample
                    load, window = cpu_load(rep.stat_a, rep.stat), FIRST_SAMPLE_WINDOW_S
                history.append((rep.stat, now))
                del history[:-8]
                with self._cv:
                    req, self._requested_at = self._requested_at, None
                    rtt = None if req is None else now - req
                    if req is None:
                        unrequested += 1
                    self._latest = Sample(rep, seq, now, time.time(), load, window, rtt)
                    self._cv.notify_all()
                seq += 1
                lived = now - opened
                if unrequested > FLOOD_FACTOR * (lived / self.interval_s + 2) + 8:
                    raise AdbflowError(f"{self.device.serial}: telemetry flood ({unrequested} "
                                       f"samples in {lived:.1f} s at a {self.interval_s:g} s "
                                       "interval)")


def _load_since(history: list[tuple[ProcStat, float]], cur: ProcStat,
                now: float) -> tuple[CpuLoad | None, float | None]:
    """Load since the newest earlier sample at least MIN_WINDOW_S old (a requested sample
    can follow the periodic one by milliseconds: the counters, in 1/100 s, may not have
    moved); the oldest one when none is that old."""
    for stat, t in reversed(history):
        if now - t >= MIN_WINDOW_S:
            load = cpu_load(stat, cur)
            if load is not None:
                return load, now - t
    if history:
        stat, t = history[0]
        load = cpu_load(stat, cur)
        if load is not None:
            return load, now - t
    return None, None


def _key(device: DevicePort) -> tuple[str, str]:
    server = getattr(device, "server", None)
    return ("" if server is None else str(server), device.serial)


class Telemetry:
    """Every device's stream, started on first use; thread-safe; `close()` ends them all."""

    def __init__(self, *, interval_s: float = DEFAULT_INTERVAL_S,
                 max_age_s: float = DEFAULT_MAX_AGE_S,
                 request_timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.interval_s = interval_s
        self.max_age_s = max_age_s
        self.request_timeout_s = request_timeout_s
        self._streams: dict[tuple[str, str], DeviceStream] = {}
        self._lock = threading.Lock()
        self._closed = False

    def stream(self, device: DevicePort) -> DeviceStream | None:
        with self._lock:
            if self._closed:
                return None
            key = _key(device)
            st = self._streams.get(key)
            if st is None:
                st = DeviceStream(device, interval_s=self.interval_s)
                self._streams[key] = st
            return st

    def sample(self, device: DevicePort) -> Sample | None:
        """The freshest sample (requesting one when the cached one is older than
        max_age_s); None when the device's stream is not up: use a one-shot probe."""
        return self.sample_many([device])[0]

    def sample_many(self, devices: Sequence[DevicePort]) -> list[Sample | None]:
        """`sample` for every device, in order, with every request written before any is
        waited for: a round that asks N phones costs about one request round trip, not N,
        and needs no thread per phone. None for a device: its stream is not up yet (just
        started, restarting) or did not answer within request_timeout_s: probe it."""
        out: list[Sample | None] = [None] * len(devices)
        asked: list[tuple[int, DeviceStream, tuple[_Channel, int]]] = []
        for i, device in enumerate(devices):
            st = self.stream(device)
            if st is None:
                continue
            s = st.latest()
            if s is not None and s.age_s() <= self.max_age_s and s.load is not None:
                out[i] = s
            elif s is not None:               # up, with a sample: ask for a fresh one
                ticket = st.ask()
                if ticket is not None:
                    asked.append((i, st, ticket))
        deadline = time.monotonic() + self.request_timeout_s
        for i, st, ticket in asked:
            fresh = st.wait(ticket, deadline)
            out[i] = fresh if fresh is not None and fresh.load is not None else None
        return out

    def status(self) -> dict[str, dict[str, Any]]:
        """Per device: up, sample age, restarts, last error (for views and tests)."""
        with self._lock:
            streams = dict(self._streams)
        out = {}
        for (_srv, serial), st in streams.items():
            s = st.latest()
            out[serial] = {"up": st.up, "age_s": None if s is None else round(s.age_s(), 3),
                           "restarts": st.restarts, "error": st.last_error}
        return out

    def forget(self, device: DevicePort) -> None:
        with self._lock:
            st = self._streams.pop(_key(device), None)
        if st is not None:
            st.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            streams, self._streams = list(self._streams.values()), {}
        for st in streams:
            st.close()


def age_or_nan(sample: Sample | None) -> float:
    return math.nan if sample is None else sample.age_s()
