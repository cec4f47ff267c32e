"""Device clock shim: give a virtual device a wall clock that is off by a known offset and
drifts at a known rate, so adbflow's clock synchronisation can be tested against a truth.

Why libfaketime (Debian `libfaketime`, an optional extra of the fleet) and not a home-made
shim: the clock adbflow reads on a phone is mksh's builtin `$EPOCHREALTIME`, toybox
`date +%s%N` and whatever the stand-in programs print, all of them from clock_gettime /
gettimeofday inside unmodified binaries. A wrapper script could shift `date` but never a
shell builtin; Linux time namespaces (time_namespaces(7)) offset only CLOCK_MONOTONIC and
CLOCK_BOOTTIME, not CLOCK_REALTIME. An LD_PRELOAD library is the only way to shift the wall
clock of every device process at once, exactly like a phone whose RTC is off, and
libfaketime is the maintained one. CLOCK_MONOTONIC is faked too (shifted, and running
at the same rate): on a phone both clocks come from one oscillator, so a fast crystal
speeds both; and with FAKETIME_DONT_FAKE_MONOTONIC=1 libfaketime 0.9.10 turns Python's
absolute-deadline time.sleep (clock_nanosleep TIMER_ABSTIME) into EINVAL, which killed
the stand-in programs.

Continuity: libfaketime applies its rate (`xR`) from the start of each process, so every
spawned command gets the offset the device clock has *at spawn time* plus the rate:
fake(t) = t + offset(t_spawn) + (R - 1)(t - t_spawn) = t + offset(t) — one continuous clock
for all processes (children of a long-lived shell restart the rate from their own start:
an error of drift x shell age, nanoseconds for the shells adbflow keeps open).

Shared memory: libfaketime 0.9.10 (Debian 12) keeps a small shm object per process,
named by pid; device pids repeat across pid namespaces, so each device gets a private
tmpfs /dev/shm (namespace.py). FAKETIME_DISABLE_SHM=1 turns it off in newer releases.

Simulation is said plainly: this is a simulated RTC error, the host's clock is the truth.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adbflow.errors import FleetError

LIBFAKETIME_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
    "/usr/local/lib/faketime/libfaketime.so.1",
)


def libfaketime_path() -> str | None:
    """The Debian libfaketime library, or None when the package is not installed.

    It lives under /usr, which every device root binds read-only at the same path."""
    override = os.environ.get("ADBFLOW_LIBFAKETIME")
    for cand in ((override,) if override else ()) + LIBFAKETIME_CANDIDATES:
        if cand and Path(cand).is_file():
            return cand
    return None


@dataclass(frozen=True)
class ClockSkew:
    """A device wall clock: `offset_s` ahead of the host at host time `ref`, gaining
    `drift_ppm` microseconds per second after that (negative: behind / losing)."""

    offset_s: float = 0.0
    drift_ppm: float = 0.0
    ref: float = 0.0

    @property
    def active(self) -> bool:
        return self.offset_s != 0.0 or self.drift_ppm != 0.0

    def offset_at(self, host_time: float) -> float:
        """True device-minus-host offset (seconds) at a host wall-clock time. Pure."""
        return self.offset_s + self.drift_ppm * 1e-6 * (host_time - self.ref)

    def faketime_value(self, now: float) -> str:
        """libfaketime's FAKETIME for a process started at host time `now` (pure).

        `%.9f`: libfaketime parses the offset with strtod (fractions work; the C locale's
        '.' is the delimiter because device processes never set LC_NUMERIC)."""
        rate = 1.0 + self.drift_ppm * 1e-6
        return f"{self.offset_at(now):+.9f} x{rate:.12f}"


def skew_from_faults(faults: object) -> ClockSkew:
    """The ClockSkew described by a FaultState's clock_* fields."""
    return ClockSkew(float(getattr(faults, "clock_offset_s", 0.0) or 0.0),
                     float(getattr(faults, "clock_drift_ppm", 0.0) or 0.0),
                     float(getattr(faults, "clock_ref", 0.0) or 0.0))


def rebase(faults: Any, now: float | None = None) -> None:
    """Give a freshly injected skew its reference time (when it was set), in place."""
    skew = skew_from_faults(faults)
    if skew.active and not skew.ref:
        faults.clock_ref = time.time() if now is None else now


def clock_env(skew: ClockSkew, now: float | None = None) -> dict[str, str]:
    """Environment that makes one device process see the skewed wall clock.

    Empty when the clock is not skewed (no LD_PRELOAD at all: the default device is
    untouched). Raises FleetError when a skew is asked for but libfaketime is missing."""
    if not skew.active:
        return {}
    lib = libfaketime_path()
    if lib is None:
        raise FleetError("a device clock offset was injected but libfaketime is not installed",
                         hint="apt-get install -y faketime libfaketime (or clear the clock fault)")
    return {"LD_PRELOAD": lib, "FAKETIME": skew.faketime_value(time.time() if now is None else now),
            "FAKETIME_DISABLE_SHM": "1"}
