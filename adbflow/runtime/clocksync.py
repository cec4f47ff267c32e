"""Clock exchanges with one device over ONE persistent `adb shell` (I/O side of clock.py).

Why one shell: a fresh `adb shell` per sample costs a spawn on the device and a new adb
stream, 5-25 ms of round trip that all lands in the error bound. A long-lived shell that
answers each stdin line with its clock keeps the round trip to the adb relay itself.
The device side reads mksh's $EPOCHREALTIME (no fork), else `date +%s%N`, else
/proc/uptime (10 ms ticks and boot-relative: a wider bound, reported as such).
Devices without shell_v2 (no separate stdin channel) and test fakes get one Device.shell
per sample instead: same estimator, larger round trips, honest (wider) bounds.
"""
from __future__ import annotations

import shlex
import time
from typing import Any

from adbflow.device import Device
from adbflow.errors import AdbError
from adbflow.runtime.clock import ClockOffset, ClockSample, ClockSource, estimate, parse_device_time

READY = "ADBFLOW_CLOCK"
_LETTER = {"e": ClockSource.EPOCHREALTIME, "d": ClockSource.DATE_NS, "u": ClockSource.UPTIME}
_FORCE = {v: k for k, v in _LETTER.items()}


def device_script(force: ClockSource | None = None) -> str:
    """The device-side loop: pick the best clock, announce it, answer each stdin line.

    `force` pins a source (used to exercise the fallbacks on a device that has better)."""
    pick = (f"m={_FORCE[force]}" if force else
            'm=u; if [ -n "${EPOCHREALTIME:-}" ]; then m=e; else '
            'd=$(date +%s%N 2>/dev/null); case $d in *[!0-9]*|"") ;; '
            '*) [ ${#d} -ge 16 ] && m=d;; esac; fi')
    return (f"{pick}; echo {READY} $m; while read -r _; do case $m in "
            'e) echo "$EPOCHREALTIME";; d) date +%s%N;; '
            '*) read -r u _ </proc/uptime; echo "$u";; esac; done')


def one_shot_command(source: ClockSource) -> str:
    return {ClockSource.EPOCHREALTIME: 'echo "$EPOCHREALTIME"',
            ClockSource.DATE_NS: "date +%s%N",
            ClockSource.UPTIME: "cat /proc/uptime"}[source]


def _now() -> float:
    return time.time_ns() / 1e9


def sync_clock(device: Any, *, samples: int = 20, budget_s: float = 0.1,
               force: ClockSource | None = None, timeout: float = 5.0) -> ClockOffset:
    """Estimate the device's clock offset with up to `samples` exchanges in `budget_s` of
    probing (opening the shell is not counted: it happens once per device).

    Raises AdbError (with serial and command) when the device does not answer."""
    if isinstance(device, Device) and "shell_v2" in device.features(timeout=timeout):
        return _sync_session(device, samples, budget_s, force, timeout)
    return _sync_one_shot(device, samples, budget_s, force, timeout)


def _sync_session(device: Device, samples: int, budget_s: float,
                  force: ClockSource | None, timeout: float) -> ClockOffset:
    from adbflow.device.session import ShellSession

    script = device_script(force)
    with ShellSession(device, script, timeout=timeout) as sh:
        head = sh.read_line(timeout=timeout).split()
        if len(head) != 2 or head[0] != READY or head[1] not in _LETTER:
            raise AdbError(device.serial, script, stdout=" ".join(head)[:200],
                           message="the clock loop did not start", hint="is /system/bin/sh mksh?")
        source = _LETTER[head[1]]
        got: list[ClockSample] = []
        start = time.monotonic()
        while len(got) < samples and time.monotonic() - start < budget_s:
            t0 = _now()
            sh.send_line("")
            line = sh.read_line(timeout=timeout)
            t1 = _now()
            td = parse_device_time(line, source)
            if td is not None:
                got.append(ClockSample(t0, td, t1))
        probe = time.monotonic() - start
    if not got:
        raise AdbError(device.serial, script, message="the device sent no readable clock value")
    return estimate(device.serial, source, got, probe_s=probe)


def _sync_one_shot(device: Any, samples: int, budget_s: float,
                   force: ClockSource | None, timeout: float) -> ClockOffset:
    order = [force] if force else list(ClockSource)
    for source in order:
        cmd = one_shot_command(source)
        got: list[ClockSample] = []
        start = time.monotonic()
        while len(got) < samples and time.monotonic() - start < budget_s:
            t0 = _now()
            res = device.shell(cmd, timeout=timeout, check=False)
            t1 = _now()
            td = parse_device_time(res.stdout, source) if res.exit_code == 0 else None
            if td is None:
                break                      # this clock is missing on the device: next one
            got.append(ClockSample(t0, td, t1))
        if got:
            return estimate(device.serial, source, got, probe_s=time.monotonic() - start)
    raise AdbError(getattr(device, "serial", None), shlex.join(["sh", "-c", "clock"]),
                   message="no clock source answered ($EPOCHREALTIME, date +%s%N, /proc/uptime)")
