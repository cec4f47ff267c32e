"""One way to build a `Bid` in pure tests: an idle, cool, charged 8-core phone unless the
test says otherwise (keyword overrides), so each test states only what it varies."""
from __future__ import annotations

from typing import Any

from adbflow.scheduling.bids import Bid

BASE: dict[str, Any] = dict(cores=8, cpu_load=10.0, per_core_load=[], mem_available_kb=4 << 20,
                            mem_total_kb=8 << 20, battery_level=80, battery_charging=False,
                            temperature_c=30.0, freq_ratio=1.0, probe_rtt_s=0.02)


def make_bid(serial: str, **kw: Any) -> Bid:
    """BASE with `serial` and the test's fields (model and timestamp at least)."""
    return Bid(**{**BASE, "serial": serial, **kw})
