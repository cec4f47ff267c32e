"""Slot leases on a phone, from the laptop: acquire, renew, guarded run, release.

Why leases on the device: several orchestrators (two `adbflow run`s, a `watch` on another
laptop, later phone-side orchestrators of the mesh) share phones. Each stage input is
pushed to the one path the mission fixes, /data/local/tmp/received-image; without a lock
on the phone, two of them overwrite each other's picture between push and label_image and
a cat comes back as "espresso". The lease lives on the phone (its lock, its clock), so
every orchestrator sees the same truth, and a crashed holder's lease simply expires.

Each operation is one `adb shell` round trip running device_scripts/lease.sh inline
(nothing installed). The stage's input is pushed to a token-named file and moved to
received-image only by the guarded command, under the lock and only while the token is
current; the result counts only if the token is still current after the program ran (the
same shell command checks and releases). Rules: `lease_rules`; format: README "Leases".
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import secrets
import shlex
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from adbflow.device.lease_rules import FREE, NO_RESULT, Verdict, valid_key, valid_owner, valid_result
from adbflow.device.port import DevicePort
from adbflow.errors import AdbError, LeaseLost, ParseError, SlotBusy
from adbflow.paths import DEVICE_SCRIPTS_DIR

log = logging.getLogger("adbflow.device.lease")

LEASE_DIR = "/data/local/tmp/adbflow"
DEFAULT_TTL_S = 20.0
_SLOT_RE = re.compile(r"^[a-z0-9_-]{1,32}$")


@functools.lru_cache(maxsize=1)
def lease_script() -> str:
    """lease.sh without comments and blank lines (fewer bytes per round trip)."""
    lines = (DEVICE_SCRIPTS_DIR / "lease.sh").read_text().splitlines()
    return "\n".join(ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")) + "\n"


@functools.lru_cache(maxsize=1)
def pid_namespace() -> str:
    """8 hex digits naming this laptop's boot and pid namespace: two owners with the same
    value can check each other's pid (same kernel boot, same pid numbering), whatever the
    host names say (two laptops may both be called `localhost`)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return "00000000"            # unknown: never matches a real one (see dead_local_owner)
    return hashlib.sha256(f"{boot}:{ns}".encode()).hexdigest()[:8]


def owner_id(tag: str = "") -> str:
    """`host:pidns:pid:random` (plus a tag): unique per orchestrator process, readable in
    `busy` answers, free of spaces (the record is space-separated)."""
    host = re.sub(r"[^A-Za-z0-9.-]+", "-", socket.gethostname())[:32] or "host"
    out = f"{host}:{pid_namespace()}:{os.getpid()}:{secrets.token_hex(3)}{tag}"
    assert valid_owner(out), out
    return out


def dead_local_owner(owner: str | None) -> bool:
    """True when `owner` is an adbflow process of this laptop's pid namespace that no longer
    runs (a kill -9'd `run` or `watch`): its lease is stale and may be released at once
    instead of blocking the phone for the rest of its TTL. Anything not provably dead
    (other laptops, other namespaces, unknown formats, a live pid) is False."""
    if not owner:
        return False
    parts = owner.split(":")
    if len(parts) < 4 or parts[1] != pid_namespace() or parts[1] == "00000000":
        return False
    if not parts[2].isdigit() or int(parts[2]) == os.getpid():
        return False
    return not psutil.pid_exists(int(parts[2]))


def input_path(slot: str, token: int) -> str:
    """Where the holder of `token` pushes its input before the guarded run moves it."""
    return f"{LEASE_DIR}/in-{slot}-{int(token)}"


@dataclass(frozen=True)
class Reply:
    verdict: Verdict
    token: int
    owner: str | None
    left_s: float
    now_ds: int
    result: str | None = None     # claims: the recorded result of a done claim


def lease_call(nonce: str, op: str, slot: str, owner: str, token: int, ttl_s: float,
               clock: tuple[int, str] | None = None, *, claim_result: str | None = None
               ) -> str:
    """One `adbflow_lease ...` line (or `adbflow_claim ...` when `claim_result` is given:
    `-` for none); every argument quoted."""
    if not (_SLOT_RE.match(slot) if claim_result is None else valid_key(slot)):
        raise ValueError(f"bad slot or claim name {slot!r}")
    if not nonce.isalnum():
        raise ValueError("nonce must be alphanumeric")
    args = [nonce, op, slot, owner, str(int(token)), str(max(0, int(round(ttl_s * 10))))]
    func = "adbflow_lease"
    if claim_result is not None:
        if not valid_result(claim_result):
            raise ValueError(f"bad claim result {claim_result!r}")
        args.append(claim_result)
        func = "adbflow_claim"
    if clock is not None:
        args += [str(int(clock[0])), clock[1]]
    return func + " " + " ".join(shlex.quote(a) for a in args)


def parse_replies(text: str, nonce: str, word: str = "lease") -> list[Reply]:
    """Every `=:adbflow:NONCE:lease ...` line (`word` claim: the claim answers), in order
    (program output cannot forge them: the nonce is fresh per call)."""
    prefix = f"=:adbflow:{nonce}:{word} "
    out = []
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        parts = line[len(prefix):].split()
        try:
            verdict = Verdict(parts[0])
            token, left, now = int(parts[1]), int(parts[3]), int(parts[4])
        except (IndexError, ValueError):
            raise ParseError(word, f"malformed {word} answer", line) from None
        owner = parts[2] if parts[2] != FREE else None
        result = parts[5] if len(parts) > 5 and parts[5] != NO_RESULT else None
        out.append(Reply(verdict, token, owner, left / 10.0, now, result))
    return out


def strip_replies(text: str, nonce: str) -> str:
    """The program's own output without our marker lines (and the blank line before each)."""
    prefix = f"=:adbflow:{nonce}:lease "
    lines = text.split("\n")
    keep: list[str] = []
    for line in lines:
        if line.startswith(prefix):
            if keep and keep[-1] == "":
                keep.pop()
            continue
        keep.append(line)
    return "\n".join(keep)


def _one(device: DevicePort, op: str, slot: str, owner: str, token: int, ttl_s: float, *,
         timeout: float, clock: tuple[int, str] | None = None,
         claim_result: str | None = None) -> Reply:
    nonce = secrets.token_hex(8)
    cmd = lease_script() + lease_call(nonce, op, slot, owner, token, ttl_s, clock,
                                      claim_result=claim_result)
    res = device.shell(cmd, timeout=timeout, check=False, max_output=1 << 16)
    word = "lease" if claim_result is None else "claim"
    replies = parse_replies(res.stdout, nonce, word)
    if not replies:
        raise AdbError(device.serial, f"{word} {op} {slot}", stdout=res.stdout,
                       stderr=res.stderr, exit_code=res.exit_code,
                       message="no answer from the lease script",
                       hint="the phone needs mksh and toybox flock (Android 7+)")
    return replies[-1]


class DeviceLease:
    """A granted lease on one device's slot. Renew it while the program runs
    (`Renewer`), run the program with `guarded_command`, then check with `finish_ok`."""

    def __init__(self, device: DevicePort, slot: str, owner: str, token: int, ttl_s: float,
                 *, timeout: float = 10.0) -> None:
        self.device = device
        self.slot = slot
        self.owner = owner
        self.token = token
        self.ttl_s = ttl_s
        self.timeout = timeout
        self.lost: str | None = None      # why, once a renewal answered "lost"
        self.released = False

    @property
    def serial(self) -> str:
        return self.device.serial

    @property
    def input_path(self) -> str:
        return input_path(self.slot, self.token)

    #: `adbflow_claim` result argument for claims; None: a slot lease
    _claim: str | None = None

    def renew(self) -> bool:
        """True when still ours; False (and `lost` set) when expired or taken over.
        Raises AdbError family when the device cannot be reached (the caller retries)."""
        r = _one(self.device, "renew", self.slot, self.owner, self.token, self.ttl_s,
                 timeout=self.timeout, claim_result=self._claim)
        if r.verdict is Verdict.RENEWED:
            return True
        self.lost = f"renewal answered {r.verdict.value} (token {r.token}, owner {r.owner})"
        return False

    def release(self) -> None:
        """Best effort: an unreleased lease expires on its own within ttl."""
        if self.released:
            return
        try:
            _one(self.device, "release", self.slot, self.owner, self.token, 0,
                 timeout=self.timeout, claim_result=self._claim)
        except Exception as exc:  # noqa: BLE001 - expiry frees it anyway
            log.info("lease release on %s failed (expires by itself): %s", self.serial, exc)
        self.released = True

    def guarded_command(self, argv: Sequence[str], nonce: str, *,
                        move_input_to: str | None = None, before: str = "",
                        after: str = "") -> str:
        """Shell text: check the token (moving our pushed input to `move_input_to` under the
        lock), run argv only if it holds, then check again and release, in ONE command."""
        dst = f"DST={shlex.quote(move_input_to)}\n" if move_input_to else "DST=\n"
        prog = " ".join(shlex.quote(a) for a in argv)
        guard = lease_call(nonce, "guard", self.slot, self.owner, self.token, 0)
        finish = lease_call(nonce, "finish", self.slot, self.owner, self.token, 0)
        # before/after: constant shell text run right around the program (the device clock
        # marks of adbflow.runtime.devtime), inside the guard
        pre = f"{before}\n" if before else ""
        post = f"{after}\n" if after else ""
        return (lease_script() + f"{dst}if {guard}; then\n{pre}{prog}\n_rc=$?\n{post}"
                f"{finish}\nexit $_rc\nfi\nexit 75\n")

    def check_run(self, stdout: str, nonce: str) -> str:
        """After the guarded run: the program's stdout, or LeaseLost when the token was not
        current before or after it (the output may then be another job's)."""
        replies = parse_replies(stdout, nonce)
        verdicts = [r.verdict for r in replies]
        self.released = Verdict.RELEASED in verdicts
        if verdicts[:1] != [Verdict.HELD]:
            got = replies[0] if replies else None
            raise LeaseLost(self.serial, self.slot,
                            "before the run: " + (f"{got.verdict.value}, token {got.token} "
                                                  f"held by {got.owner}" if got else
                                                  "no answer"))
        if verdicts[1:] != [Verdict.RELEASED]:
            got = replies[1] if len(replies) > 1 else None
            raise LeaseLost(self.serial, self.slot,
                            "after the run: " + (f"{got.verdict.value}, token {got.token} "
                                                 f"held by {got.owner}" if got else
                                                 "no answer (the program did not end)"))
        if self.lost:
            raise LeaseLost(self.serial, self.slot, self.lost)
        return strip_replies(stdout, nonce)


def acquire(device: DevicePort, slot: str, owner: str, *, ttl_s: float = DEFAULT_TTL_S,
            timeout: float = 10.0, clock: tuple[int, str] | None = None) -> DeviceLease:
    """Take the slot in one round trip. SlotBusy when another owner holds it."""
    r = _one(device, "acquire", slot, owner, 0, ttl_s, timeout=timeout, clock=clock)
    if r.verdict is Verdict.GRANTED:
        return DeviceLease(device, slot, owner, r.token, ttl_s, timeout=timeout)
    if r.verdict is Verdict.BUSY:
        raise SlotBusy(device.serial, slot, r.owner, r.left_s, r.token)
    raise AdbError(device.serial, f"lease acquire {slot}", message=f"lease answered "
                   f"{r.verdict.value}", hint="check that /data/local/tmp is writable")


def call(device: DevicePort, op: str, slot: str, owner: str, token: int, ttl_s: float, *,
         timeout: float = 10.0, clock: tuple[int, str] | None = None) -> Reply:
    """Any single operation (tests, `adbflow` diagnostics)."""
    return _one(device, op, slot, owner, token, ttl_s, timeout=timeout, clock=clock)


# ---------------------------------------------------------------------- picture claims

class DeviceClaim(DeviceLease):
    """A granted claim on one picture at its origin phone (`adbflow_claim`, README
    "Leases"): the same lease, renewed by the same `Renewer` while the job runs; it ends
    with `complete(result)` (the picture is done for every orchestrator) or `release()`
    (given up: free for another)."""

    _claim = NO_RESULT

    def complete(self, result: str) -> Reply:
        """Record `result` under the claim. The reply: `completed`, or `lost` (the claim
        expired or was taken over: the caller decides with `claim_acquire` what now)."""
        r = _one(self.device, "complete", self.slot, self.owner, self.token, 0,
                 timeout=self.timeout, claim_result=result or NO_RESULT)
        if r.verdict is Verdict.COMPLETED:
            self.released = True           # nothing left to release
        return r


def claim_call(device: DevicePort, op: str, key: str, owner: str, token: int, ttl_s: float,
               *, result: str = NO_RESULT, timeout: float = 10.0,
               clock: tuple[int, str] | None = None) -> Reply:
    """Any single claim operation (tests, diagnostics)."""
    return _one(device, op, key, owner, token, ttl_s, timeout=timeout, clock=clock,
                claim_result=result or NO_RESULT)


def claim_acquire(device: DevicePort, key: str, owner: str, *, ttl_s: float,
                  timeout: float = 10.0) -> DeviceClaim | Reply:
    """Claim picture `key` in one round trip: a DeviceClaim when granted, else the reply
    (`busy`: another orchestrator works on it for `left_s` more; `done`: completed by
    `owner`, with its `result`). AdbError family when the phone cannot be reached or
    answers an error."""
    r = _one(device, "acquire", key, owner, 0, ttl_s, timeout=timeout,
             claim_result=NO_RESULT)
    if r.verdict is Verdict.GRANTED:
        return DeviceClaim(device, key, owner, r.token, ttl_s, timeout=timeout)
    if r.verdict in (Verdict.BUSY, Verdict.DONE):
        return r
    raise AdbError(device.serial, f"claim acquire {key}", message=f"claim answered "
                   f"{r.verdict.value}", hint="check that /data/local/tmp is writable")


class Renewer:
    """Renews a lease every ttl/3 on a daemon thread until stopped. A "lost" answer marks
    the lease lost (checked after the run); device errors are retried until the lease
    would have expired."""

    def __init__(self, lease: DeviceLease, *, interval_s: float | None = None) -> None:
        self.lease = lease
        self.interval_s = interval_s or max(0.5, lease.ttl_s / 3.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"lease-{lease.serial}-{lease.slot}")

    def __enter__(self) -> Renewer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=self.lease.timeout + 1.0)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if not self.lease.renew():
                    return
            except Exception as exc:  # noqa: BLE001 - retried; expiry decides in the end
                log.info("lease renewal on %s failed: %s", self.lease.serial, exc)
