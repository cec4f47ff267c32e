"""Who owns a journal row: a process, named by host, pid and the process's start time.

Why the start time: pids are reused; (pid, start time) names one process for the life of
the machine. Why the host: a data dir copied to (or mounted on) another machine must not
mistake that machine's processes for ours. The journal records the owner of every running
attempt and every claimed job, so recovery abandons only the work of processes that are
gone, and `adbflow run` and `adbflow watch` can share one data dir.
"""
from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass

import psutil

_START_TOLERANCE_S = 1.0   # create_time is derived from boot time + ticks: allow jitter


@dataclass(frozen=True)
class ProcessId:
    host: str
    pid: int
    start: float

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"


@functools.lru_cache(maxsize=1)
def _host() -> str:
    return socket.gethostname() or "localhost"


def current() -> ProcessId:
    """This process (cached per pid: a fork gets its own identity)."""
    return _current(os.getpid())


@functools.lru_cache(maxsize=4)
def _current(pid: int) -> ProcessId:
    try:
        start = psutil.Process(pid).create_time()
    except psutil.Error:
        start = 0.0
    return ProcessId(_host(), pid, start)


def alive(owner: ProcessId | None) -> bool:
    """True while the owning process runs. Unknown owners (rows written before owners were
    recorded) and owners on another host count as gone: the journal lives on a local disk
    (SQLite's locking does not work over network file systems), so another host's process
    cannot be running against it."""
    if owner is None or owner.host != _host():
        return False
    if owner.pid == os.getpid():
        return abs(_current(owner.pid).start - owner.start) < _START_TOLERANCE_S
    try:
        proc = psutil.Process(owner.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(proc.create_time() - owner.start) < _START_TOLERANCE_S
    except psutil.Error:
        return False
