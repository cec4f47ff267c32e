"""Per-device clock tracks kept across runs: DATA/clock.jsonl, one sync per line.

Why a file: traces are built after the fact (`adbflow trace` reads the journal), and a
device timestamp can only be mapped with the syncs taken around it; appending every sync
keeps that history (and the drift fit) without touching the journal's schema.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from adbflow.errors import AdbError
from adbflow.runtime.clock import ClockOffset, ClockTrack
from adbflow.runtime.clocksync import sync_clock

log = logging.getLogger("adbflow.runtime.clockbook")

RESYNC_S = 60.0     # drift of 100 ppm moves a clock 6 ms a minute: re-sync at least as often


class ClockBook:
    """ClockTracks of every device, persisted; ensure() re-syncs stale devices."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "clock.jsonl"
        self._lock = threading.Lock()
        self.tracks: dict[str, ClockTrack] = {}
        self._load()

    def _load(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError:
            return
        for line in text.splitlines():
            try:
                est = ClockOffset.from_json(json.loads(line))
            except (ValueError, KeyError, TypeError):
                continue               # a torn last line after a crash: skip it
            self.tracks.setdefault(est.serial, ClockTrack(est.serial)).add(est)

    def add(self, est: ClockOffset) -> None:
        with self._lock:
            self.tracks.setdefault(est.serial, ClockTrack(est.serial)).add(est)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(est.to_json(), sort_keys=True) + "\n")

    def track(self, serial: str) -> ClockTrack | None:
        with self._lock:
            t = self.tracks.get(serial)
            return t if t and t.syncs else None

    def ensure(self, device: Any, *, max_age_s: float = RESYNC_S) -> ClockTrack | None:
        """The device's track, synced now when its last sync is older than max_age_s.

        Advisory: a device that does not answer keeps its old track (or None)."""
        t = self.track(device.serial)
        if t is not None and time.time() - t.syncs[-1].at < max_age_s:
            return t
        try:
            self.add(sync_clock(device))
        except AdbError as exc:
            log.info("clock sync with %s failed: %s", device.serial, exc)
        return self.track(device.serial)
