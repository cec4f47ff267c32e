"""Service times learned from finished jobs, per (device serial, stage), kept across runs.

Why learn: profile timings are priors for a device *class*; the phone on the desk may be
slower (thermal paste, a fat background app) or faster (a newer build). Every finished stage
tells us how long it really took, so the scheduler corrects itself after a few jobs.

Why normalise by load: a classify that took 900 ms while the phone was 60 % busy says little
about an idle run; dividing by the same load factor the cost model multiplies with
(adbflow.scheduling.policy.load_factor) stores "seconds per unit at zero load", which the policy scales
back up with the load it sees at bid time. Units: 1 per classify, tokens for generate
(adbflow.scheduling.policy.task_units), so a long story does not look like a slow phone.

Why SQLite in the journal DB file: one state file per orchestrator; own table, own
connection, so it never touches the journal's schema.
"""
from __future__ import annotations

import math
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

#: weight of the newest sample; 0.3 forgets a stale prior within ~5 jobs but does not chase noise
DEFAULT_ALPHA = 0.3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS service_times (
    serial     TEXT NOT NULL,
    stage      TEXT NOT NULL,
    per_unit_s REAL NOT NULL,
    samples    INTEGER NOT NULL,
    last_run   REAL NOT NULL,
    PRIMARY KEY (serial, stage)
)
"""


def load_factor(cpu_load: float, sensitivity: float = 1.0) -> float:
    """How much slower a job runs on a device whose whole-CPU load is `cpu_load` percent.

    Fair processor sharing with the background gives 1/(1-L); `sensitivity` < 1 models
    devices with idle cores the job can use anyway. Load is capped at 95 % so one reading of
    100 % does not make a device look infinitely slow (loads are seconds old anyway).
    """
    if cpu_load is None or not math.isfinite(cpu_load):
        cpu_load = 0.0
    frac = min(max(cpu_load / 100.0, 0.0), 0.95)
    return 1.0 / (1.0 - sensitivity * frac)


@dataclass(frozen=True)
class ServiceEstimate:
    per_unit_s: float
    samples: int
    last_run: float          # wall-clock time.time() of the last recorded run


class ServiceTimes:
    """EWMA of zero-load seconds per unit, per (serial, stage); thread-safe."""

    def __init__(self, db_path: Path | None, *, alpha: float = DEFAULT_ALPHA) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError("alpha must be within (0, 1]")
        self.alpha = alpha
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._cache: dict[tuple[str, str], ServiceEstimate] = {}
        if db_path is not None:
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(db_path), check_same_thread=False, timeout=10.0)
            with self._db:
                self._db.execute(_SCHEMA)
            for serial, stage, per_unit, samples, last_run in self._db.execute(
                    "SELECT serial, stage, per_unit_s, samples, last_run FROM service_times"):
                self._cache[(serial, stage)] = ServiceEstimate(per_unit, samples, last_run)

    def record(self, serial: str, stage: str, seconds: float, *, cpu_load: float,
               units: float = 1.0, sensitivity: float = 1.0, at: float | None = None) -> None:
        """Fold one finished run into the estimate. Nonsense samples are ignored, not stored."""
        if not (math.isfinite(seconds) and seconds > 0 and math.isfinite(units) and units > 0):
            return
        sample = seconds / units / load_factor(cpu_load, sensitivity)
        now = time.time() if at is None else at
        with self._lock:
            old = self._cache.get((serial, stage))
            if old is None:
                new = ServiceEstimate(sample, 1, now)
            else:
                new = ServiceEstimate((1 - self.alpha) * old.per_unit_s + self.alpha * sample,
                                      old.samples + 1, now)
            self._cache[(serial, stage)] = new
            if self._db is not None:
                with self._db:
                    self._db.execute(
                        "INSERT INTO service_times (serial, stage, per_unit_s, samples, last_run) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT(serial, stage) DO UPDATE SET "
                        "per_unit_s=excluded.per_unit_s, samples=excluded.samples, "
                        "last_run=excluded.last_run",
                        (serial, stage, new.per_unit_s, new.samples, new.last_run))

    def estimate(self, serial: str, stage: str) -> float | None:
        """Seconds per unit at zero load, or None before the first finished run."""
        est = self._cache.get((serial, stage))
        return est.per_unit_s if est else None

    def details(self, serial: str, stage: str) -> ServiceEstimate | None:
        return self._cache.get((serial, stage))

    def last_run(self, serial: str, stage: str) -> float | None:
        """When this stage last finished on this device (model residency hint)."""
        est = self._cache.get((serial, stage))
        return est.last_run if est else None

    def all(self) -> dict[tuple[str, str], ServiceEstimate]:
        return dict(self._cache)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
