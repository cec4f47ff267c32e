"""Mesh wire protocol in Python: the same framing and authentication as
device_scripts/mesh/wire.sh (README "Mesh protocol").

Why a Python twin: the shell implementation is what runs on phones, but it must be checked
against an independent implementation both ways (Python signs, mksh verifies and answers;
mksh signs, Python verifies), and hostile peers (wrong key, forged sizes, endless input,
replays, shell metacharacters) are easiest to build here. The laptop also uses it to talk
to workers directly (tests, bench).

A message is a 256-byte header line (space separated fields padded with spaces, `\\n`)
followed by LEN body bytes:

    AFM1 TYPE FROM TO COUNTER TS ARG LEN MAC

MAC = sha256hex(KEY + sha256hex(KEY + "AFM1 TYPE FROM TO COUNTER TS ARG LEN BODYSHA")),
KEY the 64 ASCII hex chars of the session key.
"""
from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
import socket
import time
from dataclasses import dataclass, field

from adbflow.errors import (
    WireError,  # noqa: F401 - defined in adbflow.errors
)

MAGIC = "AFM1"
HEADER_BYTES = 256
MAX_SKEW_S = 120
WINDOW = 64            # replay window (counters), wire.sh MESH_WINDOW
MAX_BODY = {"TASK": 8 << 20, "RESULT": 64 << 10, "PICTURE": 8 << 20, "DONE": 64 << 10}
_NAME_RE = re.compile(r"^[a-z0-9]{1,16}$")
_ARG_RE = re.compile(r"^[A-Za-z0-9.,_-]{0,100}$")
_KEY_RE = re.compile(r"^[0-9a-f]{64}$")


class Kind(str, enum.Enum):
    """Message types (README "Mesh protocol")."""
    BID_REQUEST = "BID_REQUEST"
    BID = "BID"
    RESERVE = "RESERVE"
    GRANT = "GRANT"
    REFUSE = "REFUSE"
    TASK = "TASK"
    RESULT = "RESULT"
    RELEASE = "RELEASE"
    # the election and the job records served to the elected orchestrator (elect.sh,
    # adbflow/mesh/election.py)
    VOTE_REQUEST = "VOTE_REQUEST"
    VOTE = "VOTE"
    HEARTBEAT = "HEARTBEAT"
    ACK = "ACK"
    JOBS = "JOBS"
    CLAIM = "CLAIM"
    PICTURE = "PICTURE"
    DONE = "DONE"


def new_key() -> str:
    """A fresh random session key (64 hex chars, 256 bits)."""
    return secrets.token_hex(32)


def max_body(kind: str) -> int:
    return MAX_BODY.get(kind, 0)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mac(key: str, signed: str) -> str:
    """Nested keyed sha256 over the signed string (see module docstring)."""
    k = key.encode("ascii")
    return _sha(k + _sha(k + signed.encode("ascii")).encode("ascii"))


@dataclass(frozen=True)
class Message:
    kind: Kind
    sender: str
    to: str
    counter: int
    ts: int
    arg: str = ""
    body: bytes = b""

    def fields(self) -> str:
        return (f"{MAGIC} {self.kind.value} {self.sender} {self.to} {self.counter} {self.ts} "
                f"{self.arg} {len(self.body)}")


def encode(key: str, msg: Message) -> bytes:
    """The framed bytes of `msg` signed with `key`. Refuses fields the receiver would."""
    if not (_NAME_RE.match(msg.sender) and _NAME_RE.match(msg.to)):
        raise ValueError(f"peer names must match {_NAME_RE.pattern}")
    if not _ARG_RE.match(msg.arg) or not msg.arg:
        raise ValueError(f"arg must match {_ARG_RE.pattern} and not be empty")
    s = msg.fields()
    line = f"{s} {mac(key, s + ' ' + _sha(msg.body))}"
    assert len(line) <= HEADER_BYTES - 1, line
    return line.ljust(HEADER_BYTES - 1).encode("ascii") + b"\n" + msg.body


@dataclass
class ReplayGuard:
    """The replay window per peer (wire.sh's `seen-ROLE-PEER` record, same rule): a counter
    above the highest accepted one moves the window; one within WINDOW below it is accepted
    once (concurrent connections of one peer arrive out of order); one older than the
    window, or seen before, is a replay. Counter 0 is never sent, so never accepted."""
    window: int = WINDOW
    seen: dict[str, tuple[int, frozenset[int]]] = field(default_factory=dict)

    def accept(self, sender: str, counter: int) -> bool:
        top, got = self.seen.get(sender, (0, frozenset()))
        if counter <= 0 or counter in got or counter <= top - self.window:
            return False
        top = max(top, counter)
        self.seen[sender] = (top, frozenset({c for c in got if c > top - self.window}
                                            | {counter}))
        return True


def replay_stream(kind: Kind, sender: str) -> str:
    """The replay record a message counts against (wire.sh `_rs`): a sender's elector and
    orchestrator send concurrently, so election requests are their own in-order stream."""
    return f"{sender}/e" if kind in (Kind.VOTE_REQUEST, Kind.HEARTBEAT) else sender


def parse_header(raw: bytes) -> list[str]:
    """The 9 header fields, checked for shape only (no key needed)."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise WireError("header", "not ascii") from exc
    f = text.split()
    if len(f) != 9 or f[0] != MAGIC:
        raise WireError("header")
    if f[1] not in Kind.__members__:
        raise WireError("type")
    if not (_NAME_RE.match(f[2]) and _NAME_RE.match(f[3])):
        raise WireError("name")
    if not (f[4].isdigit() and f[5].isdigit() and f[7].isdigit()) or len(f[4]) > 9 \
            or len(f[5]) > 10 or len(f[7]) > 8:
        raise WireError("number")
    if not _ARG_RE.match(f[6]):
        raise WireError("arg")
    if not re.fullmatch(r"[0-9a-f]{64}", f[8]):
        raise WireError("mac")
    return f


def read_message(sock: socket.socket, key: str, *, me: str, peers: set[str],
                 guard: ReplayGuard, now: float | None = None,
                 timeout: float = 30.0) -> Message:
    """Read and verify one message from `sock` (same checks, same order, as mesh_recv)."""
    if not _KEY_RE.match(key):
        raise ValueError("key must be 64 lower-case hex chars")
    deadline = time.monotonic() + timeout
    f = parse_header(_read_exact(sock, HEADER_BYTES, deadline, allow_short=True))
    kind, sender, to = Kind(f[1]), f[2], f[3]
    counter, ts, length = int(f[4]), int(f[5]), int(f[7])
    if to != me:
        raise WireError("not-for-me")
    if sender not in peers:
        raise WireError("unknown-peer", sender)
    if length > max_body(kind.value):
        raise WireError("size", f"{length} bytes for {kind.value}")
    t = time.time() if now is None else now
    if abs(ts - t) > MAX_SKEW_S:
        raise WireError("stale", f"ts {ts}")
    body = _read_exact(sock, length, deadline)
    if not hmac.compare_digest(mac(key, " ".join(f[:8]) + " " + _sha(body)), f[8]):
        raise WireError("bad-mac")
    if not guard.accept(replay_stream(kind, sender), counter):
        raise WireError("replay", f"counter {counter}")
    return Message(kind, sender, to, counter, ts, f[6], body)


def _read_exact(sock: socket.socket, n: int, deadline: float, allow_short: bool = False) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise WireError("timeout")
        sock.settimeout(left)
        try:
            chunk = sock.recv(min(65536, n - len(buf)))
        except TimeoutError as exc:
            raise WireError("timeout") from exc
        if not chunk:
            if allow_short and buf:
                return bytes(buf)
            # nothing at all where a header was due: the peer hung up without an answer
            raise WireError("empty" if allow_short and not buf else "short")
        buf += chunk
    return bytes(buf)


@dataclass
class Peer:
    """A laptop-side (or test) mesh endpoint with its own name and counter."""
    name: str
    key: str
    counter: int = 0
    guard: ReplayGuard = field(default_factory=ReplayGuard)

    def make(self, kind: Kind, to: str, arg: str, body: bytes = b"",
             ts: int | None = None) -> bytes:
        self.counter += 1
        return encode(self.key, Message(kind, self.name, to, self.counter,
                                        int(time.time()) if ts is None else ts, arg, body))

    def exchange(self, addr: str, port: int, raw: bytes, *, peers: set[str],
                 timeout: float = 30.0) -> Message | None:
        """Send framed bytes, read the signed answer (None: the worker closed without one,
        which is what it does to a message it refuses)."""
        with socket.create_connection((addr, port), timeout=timeout) as s:
            s.sendall(raw)
            try:
                return read_message(s, self.key, me=self.name, peers=peers, guard=self.guard,
                                    timeout=timeout)
            except WireError as exc:
                if exc.why == "empty":
                    return None
                raise
