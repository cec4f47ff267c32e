"""Device wall-clock marks around a device program: when did it start and end *on the
phone* (mapped onto the laptop clock later, in trace.py, with the measured offset).

Why marks in the same shell: a separate clock read would be another round trip and
would not bracket the program; `echo` of mksh's $EPOCHREALTIME right before and after the
program costs no fork (`date +%s%N` where the shell lacks it). The marks go to stderr,
are removed before the program's output is parsed, and are parsed as plain numbers only
(device text; a program printing a fake mark can only move its own span).
The argv is shlex-quoted exactly as Device.run would quote it.
"""
from __future__ import annotations

import dataclasses
import re
import shlex
import time
from collections.abc import Sequence
from typing import Any

from adbflow.device import Device
from adbflow.runtime.clock import ClockSource, parse_device_time

MARK = "ADBFLOW_DT"
_MARK_LINE = re.compile(rf"^{MARK}([01]) ([ed]) (\S{{1,40}})$")
_MARK_FN = (f'_adbflow_t() {{ if [ -n "${{EPOCHREALTIME:-}}" ]; then '
            f'echo "{MARK}$1 e $EPOCHREALTIME" >&2; else echo "{MARK}$1 d $(date +%s%N)" >&2; fi; }}')


def mark_lines() -> tuple[str, str]:
    """(before, after): shell text for the two marks, for commands that wrap the program
    themselves (the lease-guarded run)."""
    return f"{_MARK_FN}; _adbflow_t 0", "_adbflow_t 1"


def timed_command(argv: Sequence[str]) -> str:
    """`argv` (quoted) between two device clock marks; the program's exit status is kept."""
    return f"{_MARK_FN}; _adbflow_t 0; {shlex.join(argv)}; _r=$?; _adbflow_t 1; exit $_r"


def split_marks(stderr: str) -> tuple[str, dict[str, Any] | None]:
    """(stderr without mark lines, {"start", "end", "source"} or None). Pure."""
    kept, marks = [], {}
    for line in stderr.splitlines(keepends=True):
        m = _MARK_LINE.match(line.rstrip("\r\n"))
        if not m:
            kept.append(line)
            continue
        src = ClockSource.EPOCHREALTIME if m.group(2) == "e" else ClockSource.DATE_NS
        t = parse_device_time(m.group(3), src)
        if t is not None:
            marks[m.group(1)] = (t, src)
    clean = "".join(kept)
    if "0" in marks and "1" in marks and marks["1"][0] >= marks["0"][0]:
        return clean, {"start": marks["0"][0], "end": marks["1"][0],
                       "source": marks["1"][1].value}
    return clean, None


def run_timed(device: Any, argv: Sequence[str], **kw: Any) -> tuple[Any, dict[str, Any]]:
    """Run argv on the device; returns (ShellResult, times).

    times: host wall-clock bracket {"host": [t0, t1]} plus, on a real Device, the device's
    own marks {"device": {...}}. Test doubles that implement only run(argv) get the
    host bracket alone (their `run` is the boundary they simulate)."""
    t0 = time.time()
    if isinstance(device, Device):
        res = device.shell(timed_command(argv), **kw)
        clean, marks = split_marks(res.stderr)
        res = dataclasses.replace(res, stderr=clean)
    else:
        res, marks = device.run(list(argv), **kw), None
    t1 = time.time()
    out: dict[str, Any] = {"host": [t0, t1]}
    if marks:
        out["device"] = marks
    return res, out
