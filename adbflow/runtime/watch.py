"""A `watch` session: the data-dir lock, crash recovery, the per-device baseline, the loop.

Why a session object: the watch loop owns state that lives exactly as long as one
`adbflow watch` (the lock file, the journal session row, which devices were contacted,
the Watcher) and none of it belongs to the job machinery. It gets the journal, inventory,
bidder, a job runner (`submit`, `wait_idle`) and an `emit` callable; it never calls back
into the pipeline.

"Clean" end: every visible picture was accounted for. Otherwise the journal session stays
open, like a crash: the next start then processes the pictures this one saw half-way (or
never listed) instead of taking them as "present before start".
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from adbflow.errors import AdbflowError, LaptopFault
from adbflow.runtime.detect import Entry, NewPicture, Watcher, is_candidate_name
from adbflow.runtime.events import (
    DeviceError,
    Emit,
    JobAdded,
    JobResumed,
    LaptopFaultSeen,
    Recovered,
    Watching,
)
from adbflow.runtime.journal import Journal
from adbflow.runtime.laptop import writable
from adbflow.runtime.stages import safe_component
from adbflow.runtime.workers import JobRunner


class DataDirLock:
    """One `watch` per data directory: two would resume the same jobs twice."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self._fd: int | None = None

    def acquire(self) -> None:
        path = self.data_dir / "watch.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise AdbflowError(f"another `adbflow watch` (pid {other or '?'}) uses {self.data_dir}",
                               hint="stop it, or pass another --data-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
            self._fd = None


def record_picture(journal: Journal, pic: NewPicture, emit: Emit) -> tuple[int, bool]:
    """A detected picture becomes a job (once: the journal's unique key) and is marked seen."""
    job_id, created = journal.add_job(source="device", serial=pic.serial, path=pic.path,
                                      size=pic.size, mtime=pic.mtime, how=pic.how, ino=pic.ino)
    journal.mark_seen(pic.serial, [(pic.path, pic.size, pic.mtime, pic.ino)], baseline=False)
    if created:
        emit(JobAdded(job=job_id, serial=pic.serial, name=pic.name, how=pic.how))
    return job_id, created


def picture_digest(serial: str, device_path: str) -> str:
    """The hash part of a pulled copy's name (stages.local_picture_path)."""
    return hashlib.sha256(f"{serial}\0{device_path}".encode("utf-8", "surrogateescape")
                          ).hexdigest()[:10]


def pulled_before(data_dir: Path, serial: str) -> set[str]:
    """Digests of the device pictures that have a pulled copy in the data dir (names
    `<job>-<name>-<digest>.<ext>`)."""
    out: set[str] = set()
    with contextlib.suppress(OSError):
        for p in (Path(data_dir) / "pictures" / safe_component(serial, 40)).iterdir():
            out.add(p.name.rsplit(".", 1)[0].rsplit("-", 1)[-1])
    return out


def initial_ignore(journal: Journal, directory: str, serial: str, entries: Sequence[Entry],
                   *, backlog: bool, crashed: bool,
                   contacted: set[tuple[str, str]]) -> set[tuple[str, int, float, int]]:
    """What to ignore in a device's first listing of one watched folder this session
    (entry names are paths relative to `directory`).

    Ignored: pictures that already have a job, and pictures present before the device's
    FIRST watch (the baseline, remembered in the journal) unless --backlog. Not ignored:
    pictures that appeared while we were not watching a device we already watched,
    whether adbflow was stopped (Ctrl-C, SIGTERM), crashed or the device was away: they
    were taken after the user started adbflow, so dropping them would lose them.
    (`crashed` is kept for callers; a clean stop is treated the same.)"""
    seen = journal.seen(serial)
    recreated = journal.recreated()
    # after a lost journal every device counts as watched before; what its lost journal
    # had processed is recognised by the pulled copies still in the data dir
    known = journal.was_watched(serial, directory) or recreated
    pulled = pulled_before(journal.path.parent, serial) if recreated else set()
    contacted.add((serial, directory))
    ignore: set[tuple[str, int, float, int]] = set()
    baseline: list[tuple[str, int, float, int]] = []
    base = directory.rstrip("/")
    for e in entries:
        if not e.is_file or not is_candidate_name(e.name):
            continue
        path = f"{base}/{e.name}"
        ino = int(getattr(e, "ino", 0) or 0)
        key = (e.name, e.size, e.mtime, ino)
        if journal.find_job(serial, path, e.size, e.mtime, ino) is not None or (
                pulled and picture_digest(serial, path) in pulled):
            ignore.add(key)
            continue
        s = seen.get(path)
        if s is not None and (s[0], s[1], s[3]) == (e.size, e.mtime, ino) \
                and not (backlog and s[2]):
            ignore.add(key)
            continue
        if backlog or known:
            continue
        ignore.add(key)
        baseline.append((path, e.size, e.mtime, ino))
    if baseline:
        journal.mark_seen(serial, baseline, baseline=True)
    journal.mark_watched(serial, directory)
    return ignore


class WatchSession:
    """One run of `watch`: see the module docstring. `run()` returns the submitted job ids."""

    def __init__(self, *, config: Any, journal: Journal, inventory: Any, bidder: Any,
                 jobs: JobRunner, lock: DataDirLock, emit: Emit,
                 stop: threading.Event,
                 on_refresh: Callable[[set[str]], list[int]] | None = None) -> None:
        self.config = config
        self.journal = journal
        self.inventory = inventory
        self.bidder = bidder
        self.jobs = jobs
        self.lock = lock
        self._emit = emit
        self._stop = stop
        # called with the listed serials at start and at each refresh; returns the job ids
        # it queued again (parked jobs whose phone is back, or whose disk is writable)
        self._on_refresh = on_refresh or (lambda present: [])

    def run(self, *, once: bool = False, backlog: bool = False, poll_s: float = 2.0,
            max_wait_s: float | None = None, refresh_s: float = 5.0) -> list[int]:
        """Watch every device until stop (Ctrl-C) — or, with once, until the next
        picture (or the jobs a crashed run left unfinished) is processed."""
        cfg = self.config
        self.lock.acquire()
        session = self.journal.begin_session()
        recovered = self.journal.recover()
        if recovered:
            self._emit(Recovered(attempts=recovered))
        contacted: set[tuple[str, str]] = set()
        watcher = Watcher(lambda serial, directory, entries: initial_ignore(
            self.journal, directory, serial, entries, backlog=backlog,
            crashed=session.previous_crashed, contacted=contacted),
            directories=cfg.watch_dirs, timeout=cfg.timeouts.stat_s,
            use_inotify=cfg.use_inotify, use_mediastore=cfg.use_mediastore,
            settle_s=cfg.settle_s,
            on_error=lambda serial, msg: self._emit(DeviceError(serial=serial, error=msg)))
        submitted: list[int] = []
        synced = False
        deferred: list[NewPicture] = []   # seen while the laptop's disk failed
        try:
            for job in self.journal.incomplete_jobs(source="device"):
                self._emit(JobResumed(job=job.id, serial=job.serial, name=job.name))
                submitted.append(job.id)
                self.jobs.submit(job.id)
            devices = list(self.inventory.devices())
            submitted += self._on_refresh({d.serial for d in devices})
            new: list[NewPicture] = []
            if not (once and submitted):
                # prime the bidder: later rounds measure load since this sample, no sleep
                if devices:
                    threading.Thread(target=self.bidder.gather, args=(devices,),
                                     daemon=True).start()
                new = watcher.sync(devices)
                synced = True
                self._emit(Watching(devices=[d.serial for d in devices]))
            last_refresh = time.monotonic()
            start = time.monotonic()
            next_poll = start + poll_s
            while not self._stop.is_set() and not (once and submitted):
                for pic in new:
                    try:
                        job_id, created = record_picture(self.journal, pic, self._emit)
                    except LaptopFault as exc:    # kept, and journaled once writable
                        deferred.append(pic)
                        self._emit(LaptopFaultSeen(job=None, path=exc.path, error=str(exc),
                                                   first=len(deferred) == 1))
                        continue
                    if created and not (once and submitted):
                        submitted.append(job_id)
                        self.jobs.submit(job_id)
                if once and submitted:
                    break
                if max_wait_s is not None and time.monotonic() - start > max_wait_s:
                    raise AdbflowError(f"no new picture within {max_wait_s:g} s",
                                       hint=f"take a picture into {', '.join(cfg.watch_dirs)} "
                                            "on a device, or pass --backlog")
                # sleep until the next listing, an inotify event or a due settle re-check
                new = watcher.wait_events(max(0.0, next_poll - time.monotonic()))
                if self._stop.is_set():
                    break
                if self.jobs.fatal is not None:
                    raise self.jobs.fatal
                if time.monotonic() - last_refresh > refresh_s:
                    self.journal.check_identity()     # deleted / replaced: stop
                    listed = list(self.inventory.devices())
                    new += watcher.sync(listed)
                    self._on_refresh({d.serial for d in listed})
                    if deferred and writable(self.journal.path.parent) is None:
                        new, deferred = new + deferred, []
                    last_refresh = time.monotonic()
                new += watcher.recheck()
                if time.monotonic() >= next_poll:
                    new += watcher.poll()
                    next_poll = time.monotonic() + poll_s
            watcher.stop()
            if once:
                while not self.jobs.wait_idle(timeout=0.5):
                    if self._stop.is_set():
                        break
        finally:
            unaccounted = watcher.unreported()
            watcher.stop()
            if unaccounted == 0 and not deferred and (synced or not session.previous_crashed):
                with contextlib.suppress(LaptopFault):
                    self.journal.end_session(session.id)
            self.lock.release()
        return submitted
