"""Energy per unit of work learned from metered attempts, per (device serial, stage), and the
expected joules of a task the ECT cost weighs against latency (`CostModel.energy_weight_s_per_j`).

Why learn per device and stage: two phones of the same class differ in battery, SoC bin and
background services, and a generate token costs a different energy than a classify; the
fuel gauge (runtime/energy.py, `--energy`) measures every attempt, so the estimate corrects
itself like service_times does (same EWMA, same units: 1 per classify, weighted tokens per
generate, adbflow.scheduling.policy.task_units).

Which joules: the energy the battery delivered for the work (`gross_j`); on USB power the
gauge only sees what the charger does not cover, so the energy above the idle baseline
(`net_j`) is the best measure of what the work added. An attempt without either (not
metered, or the meter failed) teaches nothing.

Prior when nothing is learned: power x expected run seconds, the power being the bid's
measured current x voltage when present (Bid.power_w), else the profile's `active_w`
(watts while a stage runs, per device class). Neither known: no estimate (0 J), i.e. the
device is neither favoured nor penalised by energy; `--explain` shows the source.

Why the same SQLite file as service_times, own table: one state file per orchestrator.
"""
from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adbflow.scheduling.service_times import DEFAULT_ALPHA

_SCHEMA = """
CREATE TABLE IF NOT EXISTS energy_rates (
    serial     TEXT NOT NULL,
    stage      TEXT NOT NULL,
    per_unit_j REAL NOT NULL,
    samples    INTEGER NOT NULL,
    PRIMARY KEY (serial, stage)
)
"""


def attempt_joules(energy: Any) -> float | None:
    """Joules of one metered attempt (its output's `energy` dict): gross on battery, net
    above idle on USB power; None when not metered, failed or nonsense."""
    if not isinstance(energy, Mapping) or energy.get("error"):
        return None
    for key in ("gross_j", "net_j"):
        val = energy.get(key)
        if isinstance(val, (int, float)) and math.isfinite(val) and val > 0:
            return float(val)
    return None


class EnergyRates:
    """EWMA of joules per unit, per (serial, stage); thread-safe; optional SQLite store."""

    def __init__(self, db_path: Path | None = None, *, alpha: float = DEFAULT_ALPHA) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError("alpha must be within (0, 1]")
        self.alpha = alpha
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], tuple[float, int]] = {}
        self._db: sqlite3.Connection | None = None
        if db_path is not None:
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(db_path), check_same_thread=False, timeout=10.0)
            with self._db:
                self._db.execute(_SCHEMA)
            for serial, stage, per_unit, samples in self._db.execute(
                    "SELECT serial, stage, per_unit_j, samples FROM energy_rates"):
                self._cache[(serial, stage)] = (per_unit, samples)

    def record(self, serial: str, stage: str, joules: float | None, *,
               units: float = 1.0) -> None:
        """Fold one metered attempt in; nonsense (None, <= 0, non-finite) is ignored."""
        if joules is None or not (math.isfinite(joules) and joules > 0
                                  and math.isfinite(units) and units > 0):
            return
        sample = joules / units
        with self._lock:
            old = self._cache.get((serial, stage))
            new = (sample, 1) if old is None else \
                ((1 - self.alpha) * old[0] + self.alpha * sample, old[1] + 1)
            self._cache[(serial, stage)] = new
            if self._db is not None:
                with self._db:
                    self._db.execute(
                        "INSERT INTO energy_rates (serial, stage, per_unit_j, samples) "
                        "VALUES (?, ?, ?, ?) ON CONFLICT(serial, stage) DO UPDATE SET "
                        "per_unit_j=excluded.per_unit_j, samples=excluded.samples",
                        (serial, stage, new[0], new[1]))

    def record_attempt(self, serial: str, stage: str, output: Mapping[str, Any] | None, *,
                       units: float = 1.0) -> None:
        """Learn from a finished attempt's output (its `energy`, when metered)."""
        self.record(serial, stage, attempt_joules((output or {}).get("energy")), units=units)

    def estimate(self, serial: str, stage: str) -> float | None:
        """Joules per unit, or None before the first metered attempt."""
        got = self._cache.get((serial, stage))
        return got[0] if got else None

    def samples(self, serial: str, stage: str) -> int:
        got = self._cache.get((serial, stage))
        return got[1] if got else 0

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def expected_joules(serial: str, stage: str, units: float, run_s: float, *,
                    rates: EnergyRates | None, power_w: float | None,
                    active_w: float) -> tuple[float, str]:
    """Expected joules of a task on a device and where the number comes from:
    "learned" (rates x units), "measured" (bid power x run seconds), "profile" (profile
    active watts x run seconds) or "none" (0 J: no preference either way)."""
    if rates is not None:
        per_unit = rates.estimate(serial, stage)
        if per_unit is not None:
            return per_unit * units, "learned"
    if power_w is not None and math.isfinite(power_w) and power_w > 0:
        return power_w * run_s, "measured"
    if active_w > 0:
        return active_w * run_s, "profile"
    return 0.0, "none"
