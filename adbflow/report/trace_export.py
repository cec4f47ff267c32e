"""Trace exports: Chrome trace-event JSON (Perfetto UI, chrome://tracing), JSONL, CSV.

Chrome format (the "Trace Event Format" document): a JSON object with `traceEvents`;
each span is a complete event `{"ph": "X", "name", "cat", "ts", "dur", "pid", "tid",
"args"}` with ts/dur in microseconds; `"ph": "M"` metadata events name the processes
(one per device, the laptop first) and threads (one per stage lane). Events on one
pid/tid must nest by time to be drawn as a stack, which is why every lane holds one
stage's spans. Device text reaches the file only through json.dumps (escaped).
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from typing import Any

from adbflow.runtime.trace import LAPTOP, Span

LANES = ("job", "detect", "pull", "ingest", "classify", "generate", "story", "bid",
         "convert", "head", "cut", "tail", "whole")     # the last five: mesh and split runs


def _lane_tid(lane: str) -> int:
    return LANES.index(lane) + 1 if lane in LANES else len(LANES) + 1 + (sum(map(ord, lane)) % 97)


def _us(seconds: float) -> float:
    """Rounded once per instant, so spans ending together end on the same number."""
    return round(seconds * 1e6, 3)


def device_pids(spans: Sequence[Span]) -> dict[str, int]:
    """laptop = pid 1, devices 2.. in serial order (stable across exports of one set)."""
    devs = sorted({sp.device for sp in spans if sp.device != LAPTOP})
    return {LAPTOP: 1, **{d: i + 2 for i, d in enumerate(devs)}}


def to_chrome(spans: Sequence[Span]) -> dict[str, Any]:
    """ts are microseconds since the first span (`otherData.origin_epoch_s`): absolute
    epoch microseconds (~1.8e15) keep only ~0.25 µs in a double, enough for a child that
    ends with its parent to overhang it and break the nesting viewers draw."""
    pids = device_pids(spans)
    origin = min((sp.start for sp in spans), default=0.0)
    events: list[dict[str, Any]] = []
    used = {sp.device for sp in spans}
    for dev, pid in pids.items():
        if dev not in used:          # the laptop, for mesh jobs it took no part in
            continue
        events.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0,
                       "args": {"name": "laptop" if dev == LAPTOP else f"device {dev}"}})
        events.append({"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0,
                       "args": {"sort_index": pid}})
        for lane in sorted({sp.lane for sp in spans if sp.device == dev}, key=_lane_tid):
            events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": _lane_tid(lane),
                           "args": {"name": lane}})
    for sp in sorted(spans, key=lambda s: (s.start, -s.end)):
        args: dict[str, Any] = {"job": sp.job, "state": sp.state, **sp.args}
        if sp.attempt is not None:
            args["attempt"] = sp.attempt
        if sp.clock:
            args["clock"] = sp.clock
        events.append({"name": sp.name, "cat": f"job{sp.job}," + sp.lane, "ph": "X",
                       "ts": _us(sp.start - origin),
                       "dur": max(0.0, _us(sp.end - origin) - _us(sp.start - origin)),
                       "pid": pids[sp.device], "tid": _lane_tid(sp.lane), "args": args})
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"producer": "adbflow", "origin_epoch_s": origin,
                          "clock": "laptop wall clock (device times corrected by NTP-style "
                                   "offsets; see args.clock)"}}


def chrome_json(spans: Sequence[Span]) -> str:
    return json.dumps(to_chrome(spans), ensure_ascii=True, allow_nan=False, default=str)


def to_jsonl(spans: Iterable[Span]) -> str:
    return "".join(json.dumps(sp.to_json(), sort_keys=True, ensure_ascii=True, allow_nan=False,
                              default=str) + "\n" for sp in spans)


CSV_FIELDS = ("job", "name", "lane", "device", "attempt", "state", "start", "end", "seconds",
              "clock_offset", "clock_bound", "args")


def _cell(v: Any) -> Any:
    """Spreadsheets run cells starting with = + - @ as formulas: neutralise device text."""
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v
    return v


def to_csv(spans: Iterable[Span]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for sp in spans:
        clock = sp.clock or {}
        w.writerow([_cell(x) for x in (
            sp.job, sp.name, sp.lane, sp.device, "" if sp.attempt is None else sp.attempt,
            sp.state, f"{sp.start:.6f}", f"{sp.end:.6f}", f"{sp.seconds:.6f}",
            "" if clock.get("offset") is None else clock["offset"],
            "" if clock.get("bound") is None else clock["bound"],
            json.dumps(sp.args, ensure_ascii=True, sort_keys=True, default=str))])
    return buf.getvalue()


def export(spans: Sequence[Span], fmt: str) -> str:
    if fmt == "chrome":
        return chrome_json(spans)
    if fmt == "jsonl":
        return to_jsonl(spans)
    if fmt == "csv":
        return to_csv(spans)
    raise ValueError(f"unknown trace format {fmt!r} (chrome, jsonl, csv)")
