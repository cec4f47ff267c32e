"""What the report shows, computed from journal records (pure; no HTML, no plotting).

Why separate: the numbers (per-stage latency per device, failures, energy per job) are
the part worth testing; html.py only lays them out and plots.py only draws them.
"""
from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from adbflow.runtime.clock import percentile

DEVICE_STAGES = ("pull", "classify", "generate")
PARTS = ("bid_s", "convert_s", "slot_wait_s", "push_s", "run_s")


@dataclass
class ReportData:
    jobs: int
    states: dict[str, int]
    first: float | None
    last: float | None
    devices: dict[str, dict[str, int]]                 # serial -> {stage: done attempts}
    latency: list[dict[str, Any]]                      # one row per (device, stage)
    parts: dict[str, dict[str, float]]                 # "serial stage" -> part -> median s
    failures: list[dict[str, Any]]                     # failed attempts, newest first
    energy: list[dict[str, Any]]                       # per job and stage
    timeline: list[dict[str, Any]]                     # last N jobs: stage intervals
    notes: list[str] = field(default_factory=list)
    sweeps: list[dict[str, Any]] = field(default_factory=list)   # {"name", "rows"}


def _get(rec: Any, name: str, default: Any = None) -> Any:
    return rec.get(name, default) if isinstance(rec, dict) else getattr(rec, name, default)


def build(jobs: Sequence[Any], attempts: Mapping[int, Sequence[Any]], *, since: float | None = None,
          last_n: int = 20) -> ReportData:
    """Aggregate jobs (JobRecord-like) and their attempts (by job id)."""
    jobs = sorted((j for j in jobs if since is None or float(_get(j, "created")) >= since),
                  key=lambda j: (float(_get(j, "created")), int(_get(j, "id"))))
    states: dict[str, int] = {}
    for j in jobs:
        st = str(_get(j, "state"))
        states[st] = states.get(st, 0) + 1
    devices: dict[str, dict[str, int]] = {}
    lat: dict[tuple[str, str], list[float]] = {}
    parts: dict[tuple[str, str], dict[str, list[float]]] = {}
    failures, energy = [], []
    for j in jobs:
        jid = int(_get(j, "id"))
        for a in attempts.get(jid, ()):
            stage, serial = str(_get(a, "stage")), str(_get(a, "serial") or "laptop")
            state = str(_get(a, "state"))
            started, ended = _get(a, "started"), _get(a, "ended")
            out = _get(a, "output") or {}
            if state == "done":
                devices.setdefault(serial, {}).setdefault(stage, 0)
                devices[serial][stage] += 1
                if ended is not None:
                    lat.setdefault((serial, stage), []).append(float(ended) - float(started))
                timings = out.get("timings") if isinstance(out, dict) else None
                for k, v in (timings or {}).items():
                    if k in PARTS and isinstance(v, (int, float)):
                        parts.setdefault((serial, stage), {}).setdefault(k, []).append(float(v))
                e = out.get("energy") if isinstance(out, dict) else None
                if isinstance(e, dict) and e:
                    energy.append({"job": jid, "stage": stage, "serial": serial,
                                   "gross_j": e.get("gross_j"), "net_j": e.get("net_j"),
                                   "baseline_w": e.get("baseline_w"),
                                   "usb": bool(e.get("usb_charging")),
                                   "flags": [str(f) for f in e.get("flags") or []],
                                   "error": e.get("error")})
            elif state in ("failed", "abandoned"):
                failures.append({"job": jid, "stage": stage, "serial": serial,
                                 "attempt": _get(a, "attempt"), "kind": _get(a, "error_kind"),
                                 "error": str(_get(a, "error") or ""), "at": float(started)})
    latency = []
    for (serial, stage), xs in sorted(lat.items()):
        latency.append({"serial": serial, "stage": stage, "n": len(xs),
                        "median_s": statistics.median(xs), "p90_s": percentile(xs, 90),
                        "max_s": max(xs)})
    part_medians = {f"{s} {st}": {k: statistics.median(v) for k, v in d.items()}
                    for (s, st), d in sorted(parts.items())}
    recent = sorted(jobs, key=lambda j: float(_get(j, "created")))[-last_n:]
    timeline = []
    for j in recent:
        jid = int(_get(j, "id"))
        segs = [{"stage": str(_get(a, "stage")), "serial": str(_get(a, "serial") or "laptop"),
                 "state": str(_get(a, "state")), "start": float(_get(a, "started")),
                 "end": float(_get(a, "ended") or _get(a, "started"))}
                for a in attempts.get(jid, ())]
        result = _get(j, "result") or {}
        labels = result.get("labels") if isinstance(result, dict) else None
        top = labels[0].get("name") if labels and isinstance(labels[0], dict) else None
        timeline.append({"job": jid, "name": str(_get(j, "path")).rsplit("/", 1)[-1],
                         "state": str(_get(j, "state")), "label": top, "segments": segs})
    created = [float(_get(j, "created")) for j in jobs]
    return ReportData(jobs=len(jobs), states=states, first=min(created, default=None),
                      last=max(created, default=None), devices=devices, latency=latency,
                      parts=part_medians, failures=sorted(failures, key=lambda f: -f["at"]),
                      energy=energy, timeline=timeline)


SWEEP_FIELDS = ("tau", "n", "escalated", "accuracy", "ci_low", "ci_high", "agree_big",
                "mean_latency_s", "p95_latency_s", "device_s")


def read_sweep(path: Any) -> list[dict[str, float]]:
    """Rows of an `adbflow sweep` CSV (untrusted file: finite numbers of the known columns
    only). Raises ValueError when it is not one."""
    import csv
    import math

    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"tau", "accuracy", "mean_latency_s"} <= set(reader.fieldnames):
            raise ValueError("not an `adbflow sweep` CSV (needs tau, accuracy, mean_latency_s)")
        rows = []
        for raw in reader:
            row: dict[str, float] = {}
            for k in SWEEP_FIELDS:
                try:
                    v = float(raw.get(k) or "nan")
                except ValueError:
                    v = float("nan")
                if math.isfinite(v):
                    row[k] = v
            if "tau" in row and "accuracy" in row and "mean_latency_s" in row:
                rows.append(row)
            if len(rows) >= 1000:
                break
    return rows
