"""Mesh jobs as spans on the phones that ran them, on the laptop's clock.

What the phone records (device_scripts/mesh/orch.sh, read as is): per job a `times` file
of lines `PHASE UPTIME_DS` (detected, converted, classified, generated: /proc/uptime in
deciseconds when the orchestrator reached that point) and `classify.who`/`generate.who`
naming the peer (p1, p2, ...) that ran the stage. The stages become:

    convert   [detected, converted]    on the orchestrator (img2bmp)
    classify  [converted, classified]  on the classify.who peer
    generate  [classified, generated]  on the generate.who peer
    detect    zero length at detected  on the orchestrator (it polls; the picture is older)

classify/generate are the orchestrator's view of the stage (bid, reserve, send, run,
answer): the worker's own clock took no part, so the span's start and end carry the
orchestrator's timing, and its position is the orchestrator's clock mapped.

Mapping, in the same adb round trip as the results: the orchestrator prints
$EPOCHREALTIME, then /proc/uptime, then $EPOCHREALTIME again (`date +%s%N` where mksh has
no $EPOCHREALTIME), so realtime - uptime is known within half that bracket plus /proc's
10 ms tick; realtime goes to the laptop clock with the phone's ClockTrack (the NTP-style
sync). Error bound of a mapped mark, stated in every span's clock args:

    0.05 s            the decisecond mark's half-width (orch.sh truncates to 0.1 s; marks
                      are mapped at their interval's centre, so durations are ±0.1 s)
  + bracket/2 + 5 ms  the realtime - uptime reading
  + sync bound        the ClockTrack's bound at that time
  + 100 ppm x age     realtime slewed against uptime between the job and the read-back

It assumes the phone's wall clock was not stepped between the job and the read-back, and
that the phone did not reboot (uptime restarts; a mark later than the uptime now is
refused). Everything from the phone is untrusted: lines parsed against fixed patterns,
sizes bounded (the shell side already cuts each file with head -c), text kept as data.

Pure: parse_times, parse_uptime_clock, mesh_job_rows (no I/O).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adbflow.runtime.clock import ClockSource, ClockTrack, parse_device_time

PHASES = ("detected", "converted", "classified", "generated")
# (stage, start phase, end phase, runs on: "orch" or the *.who file)
STAGES = (("convert", "detected", "converted", "orch"),
          ("classify", "converted", "classified", "classify.who"),
          ("generate", "classified", "generated", "generate.who"))
MARK_HALF_S = 0.05           # a decisecond mark's interval centre ± this
UPTIME_TICK_S = 0.01         # /proc/uptime prints centiseconds
ASSUMED_SLEW_PPM = 100.0     # as ClockTrack's assumed drift
MAX_TIMES_LINES = 32
_TIMES_LINE = re.compile(r"^([a-z][a-z_]{0,23}) ([0-9]{1,12})$")
_PEER = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
_JOB = re.compile(r"^[0-9]{1,9}$")
FINAL = {"done": "done", "failed-image": "failed", "failed-classify": "failed",
         "failed-generate": "failed"}


def parse_times(text: str) -> tuple[dict[str, int], int]:
    """({phase: deciseconds}, lines refused). Known phases only, first value wins (orch.sh
    writes each once), at most MAX_TIMES_LINES lines looked at. Pure."""
    out: dict[str, int] = {}
    refused = 0
    for line in text.splitlines()[:MAX_TIMES_LINES]:
        m = _TIMES_LINE.match(line.strip())
        if not m or m.group(1) not in PHASES:
            refused += bool(line.strip())
            continue
        out.setdefault(m.group(1), int(m.group(2)))
    return out, refused


@dataclass(frozen=True)
class UptimeClock:
    """realtime - uptime of one phone at one read, within ± bound (seconds)."""

    source: ClockSource          # the realtime clock that bracketed the uptime read
    offset: float                # device realtime - device uptime
    bound: float
    uptime_now: float            # the uptime read (for the age of a mark)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source.value, "offset": self.offset, "bound": self.bound,
                "uptime_now": self.uptime_now}


def parse_uptime_clock(text: str) -> UptimeClock | None:
    """`e|d REALTIME UPTIME REALTIME` (the bracket printed by control._RESULTS), or None
    when any field is not a plain number or the bracket runs backwards. Pure."""
    parts = text.strip().split()
    if len(parts) != 4 or parts[0] not in ("e", "d"):
        return None
    src = ClockSource.EPOCHREALTIME if parts[0] == "e" else ClockSource.DATE_NS
    r0, r1 = parse_device_time(parts[1], src), parse_device_time(parts[3], src)
    u = parse_device_time(parts[2], ClockSource.UPTIME)
    if r0 is None or r1 is None or u is None or not 0 <= r1 - r0 < 10.0:
        return None
    # true uptime at the read is in [u, u + 10 ms), the read happened within [r0, r1]
    return UptimeClock(src, (r0 + r1) / 2.0 - u - UPTIME_TICK_S / 2.0,
                       (r1 - r0) / 2.0 + UPTIME_TICK_S / 2.0, u)


def map_mark(ds: int, uclock: UptimeClock, track: ClockTrack | None
             ) -> tuple[float, dict[str, Any]]:
    """(laptop time, clock args) of one decisecond uptime mark."""
    uptime = ds / 10.0 + MARK_HALF_S
    realtime = uptime + uclock.offset
    age = max(0.0, uclock.uptime_now - uptime)
    bound = MARK_HALF_S + uclock.bound + ASSUMED_SLEW_PPM * 1e-6 * age
    clock: dict[str, Any] = {"source": "uptime_ds", "resolution_s": 0.1, "raw_uptime_ds": ds,
                             "uptime_to_realtime": round(uclock.offset, 6),
                             "realtime_clock": uclock.source.value}
    if track is not None and track.syncs and track.source and track.source.is_epoch:
        host, sync_bound = track.device_to_host(realtime)
        clock.update(offset=round(realtime - host, 6), bound=round(bound + sync_bound, 6))
        return host, clock
    clock.update(offset=None, bound=None, uncorrected=True)   # the phone's wall clock as is
    return realtime, clock


def _peer_serial(name: str | None, orch_serial: str, me: str | None,
                 peers: Mapping[str, str]) -> str | None:
    if not name or not _PEER.match(name):
        return None
    if name in peers:
        return peers[name]
    if me and name == me:
        return orch_serial
    return f"mesh peer {name}"       # no session file naming it: the peer name, as data


def mesh_job_rows(job: Mapping[str, Any], *, me: str | None, peers: Mapping[str, str],
                  uclock: UptimeClock | None, track: ClockTrack | None
                  ) -> dict[str, Any] | None:
    """Keyword arguments of Journal.record_finished_job for one job of
    control.results_one(), or None when it cannot be traced (not finished, no marks, no
    uptime clock, marks out of order or later than the phone's uptime now). Pure.

    peers: peer name -> serial (the laptop's mesh session); me: the orchestrator's name."""
    state = FINAL.get(str(job.get("state") or ""))
    num = str(job.get("job") or "")
    times = job.get("times")
    if state is None or uclock is None or not _JOB.match(num) or not isinstance(times, Mapping):
        return None
    marks = {p: times[p] for p in PHASES if isinstance(times.get(p), int)}
    if "detected" not in marks:
        return None
    seq = [marks[p] for p in PHASES if p in marks]
    if seq != sorted(seq) or seq[-1] / 10.0 > uclock.uptime_now + 1.0:
        return None                  # out of order, or from before a reboot
    orch = str(job["serial"])
    mapped = {p: map_mark(ds, uclock, track) for p, ds in marks.items()}
    raw_state = str(job["state"])
    t_det, c_det = mapped["detected"]
    atts: list[dict[str, Any]] = [{"stage": "detect", "serial": orch, "state": "done",
                                   "started": t_det, "ended": t_det,
                                   "output": {"clock": c_det, "timed": "when the orchestrator "
                                              "found the picture (it polls)"}}]
    for stage, p0, p1, where in STAGES:
        if p0 not in mapped:
            break
        who = str(job.get(where) or "")[:16] if where != "orch" else None
        # no *.who: no peer ran it (orch.sh writes it on success), the orchestrator tried
        serial = orch if not who else _peer_serial(who, orch, me, peers)
        t0, c0 = mapped[p0]
        if p1 in mapped:
            t1, c1 = mapped[p1]
            st, err = "done", None
        elif raw_state == f"failed-{stage}" or (stage == "convert" and raw_state == "failed-image"):
            t1, c1, st, err = t0, c0, "failed", f"mesh job state {raw_state} (no end mark)"
        else:
            break
        clock = {**c0, "raw_uptime_ds": [c0["raw_uptime_ds"], c1["raw_uptime_ds"]],
                 "bound": None if c0.get("bound") is None else max(c0["bound"], c1["bound"])}
        out: dict[str, Any] = {"clock": clock, "peer": who,
                               "timed": "on the orchestrator" if where != "orch" else None}
        atts.append({"stage": stage, "serial": serial or "mesh peer (unreadable name)",
                     "state": st, "started": t0, "ended": max(t0, t1), "output": out,
                     "error": err})
        if st == "failed":
            break
    source = str(job.get("source") or "")[:300]
    return {"source": "mesh", "serial": orch, "path": source or f"mesh job {num}", "size": 0,
            # identity: the orchestrator, the picture and its detection mark (stable across
            # read-backs; the mapped times move with each new offset estimate)
            "mtime": marks["detected"] / 10.0, "how": "mesh",
            "state": state, "created": t_det, "finished": max(a["ended"] for a in atts),
            "attempts": atts, "error": None if state == "done" else raw_state,
            "result": {"mesh_job": int(num), "state": raw_state,
                       "name": source.rsplit("/", 1)[-1], "origin": orch,
                       "labels": _labels(job),
                       "devices": {a["stage"]: a["serial"] for a in atts
                                   if a["stage"] in ("classify", "generate")},
                       "story": str(job.get("story") or "")[:4000] or None}}


def _labels(job: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The job's labels as the pipeline's results hold them ({"name", "score"})."""
    names = [str(x)[:100] for x in (job.get("labels") or [])][:5]
    scores = [x if isinstance(x, float) and 0.0 <= x <= 1.0 else 0.0
              for x in (job.get("label_scores") or [])]
    return [{"name": n, "score": scores[i] if i < len(scores) else 0.0}
            for i, n in enumerate(names)]


def record_mesh_jobs(data_dir: Any, dev: Any, jobs: list[dict[str, Any]],
                     head: Mapping[str, str], peers: Mapping[str, str]) -> list[int]:
    """Write the finished jobs of one orchestrator to DATA/journal.sqlite (a job read back
    again is not written twice) and their spans to DATA/traces. The phone's clock is synced
    now (ClockBook.ensure), right after the uptime bracket was read. Returns new job ids."""
    from pathlib import Path

    from adbflow.runtime.clockbook import ClockBook
    from adbflow.runtime.journal import Journal
    from adbflow.runtime.tracestore import JobTracer

    uclock = parse_uptime_clock(head.get("clock", ""))
    me = head.get("me") if _PEER.match(head.get("me") or "") else None
    book = ClockBook(Path(data_dir))
    track = book.ensure(dev) if uclock is not None and jobs else None
    new: list[int] = []
    with Journal(Path(data_dir) / "journal.sqlite") as journal:
        tracer = JobTracer(Path(data_dir), clocks=book)
        for job in jobs:
            rows = mesh_job_rows(job, me=me, peers=peers, uclock=uclock, track=track)
            if rows is None:
                continue
            job_id, created = journal.record_finished_job(**rows)
            if created:
                tracer.record(journal, job_id)
                new.append(job_id)
    return new
