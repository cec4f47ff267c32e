"""A job as spans on the laptop's clock: detect, pull, bid round (each device's probe),
convert, push, run on the device (with the program's own timing lines), return, story.

Why built from the journal: the journal is the crash-safe record of every attempt (with
its output); a span list derived from it is the same whether the job ran uninterrupted or
was resumed, and old journals still give a (coarser) trace. Stage outputs carry absolute
host times of their parts (`t`: {part: [start, end]}) and, for device runs, the device's
own wall-clock marks (`device_times`); those are mapped onto the laptop clock with the
device's ClockTrack, and every mapped span carries the offset and its error bound.
Where only durations are known (older journals) parts are laid out in execution order
inside their attempt and marked `"layout": "durations"`.

Split runs (source `split`, adbflow.split.record) are jobs with `head`/`tail`/`whole`
attempts, one per phone, laid out like the stages above plus the cut tensor's hop; mesh
jobs (source `mesh`, adbflow.mesh.trace) hold times already mapped from the orchestrator's
uptime and are drawn on the phones only (the laptop took no part).

Pure: build_job_spans() takes journal records and clock tracks, no I/O.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from adbflow.runtime.clock import ClockTrack

LAPTOP = "laptop"
# parts of a stage attempt, in execution order (for the duration layout)
PARTS = {"pull": ("pull",), "ingest": ("pull",),
         "classify": ("convert", "bid", "reconvert", "slot_wait", "push", "run"),
         "generate": ("bid", "slot_wait", "run"),
         # split runs (adbflow.split.record): each phone's push, benchmark_model run, pull
         "head": ("push", "run", "pull"), "tail": ("push", "run", "pull"),
         "whole": ("push", "run", "pull")}
PROGRAMS = {"classify": "label_image", "generate": "llama-cli", "head": "benchmark_model",
            "tail": "benchmark_model", "whole": "benchmark_model"}
_DURATION_KEYS = {"pull": "pull_s", "convert": "convert_s", "bid": "bid_s",
                  "slot_wait": "slot_wait_s", "push": "push_s", "run": "run_s"}


@dataclass(frozen=True)
class Span:
    """One timed piece of a job. Times are laptop wall-clock seconds (corrected).

    device: LAPTOP or the serial the work ran on (Chrome trace pid); lane: the stage it
    belongs to (tid). clock: for times that came from a device, how they were mapped
    ({"source", "offset", "bound", "raw_start", "raw_end"}), None for laptop times."""

    job: int
    name: str
    lane: str
    device: str
    start: float
    end: float
    attempt: int | None = None
    state: str = "done"
    clock: dict[str, Any] | None = None
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def to_json(self) -> dict[str, Any]:
        return {"kind": "span", **asdict(self)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Span:
        return cls(int(d["job"]), str(d["name"]), str(d["lane"]), str(d["device"]),
                   float(d["start"]), float(d["end"]), d.get("attempt"),
                   str(d.get("state", "done")), d.get("clock"), dict(d.get("args") or {}))


def _clock_info(track: ClockTrack | None, raw_start: float, raw_end: float
                ) -> tuple[float, float, dict[str, Any] | None]:
    """Map a device interval onto the laptop clock (identity + 'uncorrected' without a
    usable epoch track)."""
    if track is None or not track.syncs or not (track.source and track.source.is_epoch):
        return raw_start, raw_end, {"source": None, "offset": None, "bound": None,
                                    "raw_start": raw_start, "raw_end": raw_end,
                                    "uncorrected": True}
    s, bound_s = track.device_to_host(raw_start)
    e, bound_e = track.device_to_host(raw_end)
    return s, e, {"source": track.source.value, "offset": round(raw_start - s, 6),
                  "bound": round(max(bound_s, bound_e), 6), "raw_start": raw_start,
                  "raw_end": raw_end, "drift_ppm": track.drift_ppm}


def _attr(rec: Any, name: str, default: Any = None) -> Any:
    return rec.get(name, default) if isinstance(rec, Mapping) else getattr(rec, name, default)


def _interval(v: Any) -> tuple[float, float] | None:
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v):
        return float(v[0]), float(v[1])
    return None


def _program_spans(job: int, lane: str, device: str, stage: str, out: Mapping[str, Any],
                   start: float, end: float, clock: dict[str, Any] | None,
                   attempt: int | None) -> list[Span]:
    """The program's own timing lines placed inside its device run span.

    label_image prints the average invoke time (`average time: X ms`), the invoke ends
    just before the program exits; llama-cli prints load, prompt eval and eval times, run
    one after the other from its start. Durations are the program's, placement is ours."""
    spans: list[Span] = []

    def add(name: str, s: float, e: float, **args: Any) -> None:
        s, e = max(start, s), min(end, e)
        if e > s:
            spans.append(Span(job, name, lane, device, s, e, attempt, "done", clock,
                              {"from": "program timing line", **args}))

    if stage == "classify" and isinstance(out.get("avg_ms"), (int, float)):
        ms = float(out["avg_ms"])
        add("label_image.invoke", end - ms / 1000.0, end, avg_ms=ms)
    if PROGRAMS.get(stage) == "benchmark_model" and isinstance(out.get("inference_ms"),
                                                             (int, float)):
        ms = float(out["inference_ms"])    # its reported average invoke, at the run's end
        add("benchmark_model.invoke", end - ms / 1000.0, end, inference_ms=ms)
    if stage == "generate":
        t = start
        load = out.get("load_ms")
        if isinstance(load, (int, float)):
            add("llama.load", t, t + load / 1000.0, ms=load)
            t += load / 1000.0
        for name, tok_key, rate_key in (("llama.prompt_eval", "prompt_tokens", "prompt_tok_s"),
                                        ("llama.eval", "eval_tokens", "eval_tok_s")):
            n, rate = out.get(tok_key), out.get(rate_key)
            if isinstance(n, (int, float)) and isinstance(rate, (int, float)) and rate > 0:
                d = n / rate
                add(name, t, t + d, tokens=n, tok_s=rate)
                t += d
    return spans


def _attempt_spans(job: int, att: Any, tracks: Mapping[str, ClockTrack]) -> list[Span]:
    stage, n = str(_attr(att, "stage")), _attr(att, "attempt")
    state = str(_attr(att, "state"))
    start = float(_attr(att, "started"))
    ended = _attr(att, "ended")
    end = float(ended) if ended is not None else start
    serial = _attr(att, "serial")
    out = _attr(att, "output") or {}
    spans = [Span(job, stage, stage, LAPTOP, start, end, n, state, None,
                  {k: v for k, v in (("serial", serial), ("error", _attr(att, "error")),
                                     ("error_kind", _attr(att, "error_kind"))) if v})]
    if not isinstance(out, Mapping) or state != "done":
        return spans
    times: Mapping[str, Any] = out["t"] if isinstance(out.get("t"), Mapping) else {}
    timings: Mapping[str, Any] = (out["timings"] if isinstance(out.get("timings"), Mapping)
                                  else {})
    cursor = start
    laid_out = False
    for part in PARTS.get(stage, ()):
        iv = _interval(times.get(part))
        if iv is None:
            key = _DURATION_KEYS.get(part, "")
            d = timings.get(key, out.get(key))
            if not isinstance(d, (int, float)) or d < 0:
                continue
            iv, laid_out = (cursor, min(end, cursor + float(d))), True
        cursor = iv[1]
        spans.append(Span(job, part, stage, LAPTOP, iv[0], iv[1], n, "done", None,
                          {"layout": "durations"} if laid_out else {}))
        if part == "bid":
            spans += _probe_spans(job, stage, n, out)
        if part == "run" and serial:
            spans += _device_run_spans(job, stage, n, str(serial), out, iv, tracks)
    return spans


def _probe_spans(job: int, stage: str, attempt: int | None, out: Mapping[str, Any]) -> list[Span]:
    """Each device's probe of the bid round, on that device's lane `bid`.

    Bid.timestamp is taken on the laptop when the reply was parsed, probe_rtt_s is the
    round trip: the probe ran in [timestamp - rtt, timestamp] of the laptop clock."""
    spans = []
    for b in out.get("bids") or []:
        if not isinstance(b, Mapping):
            continue
        ts, rtt = b.get("timestamp"), b.get("probe_rtt_s")
        if not isinstance(ts, (int, float)) or not isinstance(rtt, (int, float)):
            continue
        spans.append(Span(job, "probe", "bid", str(b.get("serial")), float(ts) - float(rtt),
                          float(ts), attempt, "failed" if b.get("error") else "done", None,
                          {"for": stage, "cpu_load": b.get("cpu_load"), "error": b.get("error"),
                           "won": b.get("serial") == out.get("serial")}))
    return spans


def _device_run_spans(job: int, stage: str, attempt: int | None, serial: str,
                      out: Mapping[str, Any], host_run: tuple[float, float],
                      tracks: Mapping[str, ClockTrack]) -> list[Span]:
    dt = out.get("device_times") if isinstance(out.get("device_times"), Mapping) else None
    if dt and isinstance(dt.get("start"), (int, float)) and isinstance(dt.get("end"), (int, float)):
        s, e, clock = _clock_info(tracks.get(serial), float(dt["start"]), float(dt["end"]))
        if clock is not None:
            clock["device_clock"] = dt.get("source")
    else:                       # no device marks: the laptop's bracket of the call
        (s, e), clock = host_run, None
    name = PROGRAMS.get(stage, stage)
    args: dict[str, Any] = {} if clock else {"from": "laptop bracket (no device clock marks)"}
    energy = out.get("energy")
    if isinstance(energy, Mapping):       # battery energy of this run (energymeter.py)
        args["energy"] = {k: energy.get(k) for k in ("gross_j", "net_j", "baseline_w",
                                                     "usb_charging", "flags", "error")
                          if energy.get(k) is not None}
    spans = [Span(job, name, stage, serial, s, e, attempt, "done", clock, args)]
    spans += _program_spans(job, stage, serial, stage, out, s, e, clock, attempt)
    if clock and host_run[1] > e:
        spans.append(Span(job, "return", stage, LAPTOP, max(e, host_run[0]), host_run[1],
                          attempt, "done", clock, {"what": "output back to the laptop"}))
    return spans


def build_job_spans(job: Any, attempts: Sequence[Any],
                    tracks: Mapping[str, ClockTrack] | None = None) -> list[Span]:
    """Every span of one job from its journal rows (JobRecord/AttemptRecord or their JSON)."""
    tracks = tracks or {}
    jid = int(_attr(job, "id"))
    if _attr(job, "source") == "mesh":
        return _mesh_spans(jid, job, attempts)
    spans: list[Span] = []
    for att in sorted(attempts, key=lambda a: float(_attr(a, "started"))):
        spans += _attempt_spans(jid, att, tracks)
    if _attr(job, "source") == "split":
        spans += _cut_tensor_spans(jid, attempts)
    created = float(_attr(job, "created"))
    if _attr(job, "source") == "device":
        origin = str(_attr(job, "serial"))
        mtime = float(_attr(job, "mtime"))
        s, _e, clock = _clock_info(tracks.get(origin), mtime, mtime)
        spans.append(Span(jid, "detect", "detect", origin, min(s, created), created, None,
                          "done", clock, {"how": _attr(job, "how"),
                                          "picture_mtime_ahead": s > created}))
    done_gen = [sp for sp in spans if sp.name == "generate" and sp.state == "done"
                and sp.device == LAPTOP]
    finished = _attr(job, "finished")
    if done_gen and finished is not None and float(finished) >= done_gen[-1].end:
        spans.append(Span(jid, "story", "story", LAPTOP, done_gen[-1].end, float(finished)))
    first = min([created] + [sp.start for sp in spans])
    last = max([float(finished or 0.0)] + [sp.end for sp in spans if sp.device == LAPTOP])
    spans.append(Span(jid, "job", "job", LAPTOP, first, last, None, str(_attr(job, "state")),
                      None, {"name": _attr(job, "name") or str(_attr(job, "path")).rsplit("/", 1)[-1],
                             "origin": _attr(job, "serial"), "error": _attr(job, "error")}))
    return sorted(spans, key=lambda sp: (sp.start, -sp.end))


def _cut_tensor_spans(job: int, attempts: Sequence[Any]) -> list[Span]:
    """The cut tensor's hop of a split run: pulled from the head's phone, pushed to the
    tail's (both over adb, timed on the laptop), on the laptop's `cut` lane."""
    done = {str(_attr(a, "stage")): a for a in attempts if str(_attr(a, "state")) == "done"}
    head, tail = done.get("head"), done.get("tail")
    if head is None or tail is None:
        return []
    ho, to = _attr(head, "output") or {}, _attr(tail, "output") or {}
    pull = _interval((ho.get("t") or {}).get("pull")) if isinstance(ho, Mapping) else None
    push = _interval((to.get("t") or {}).get("push")) if isinstance(to, Mapping) else None
    if pull is None or push is None:
        return []
    nbytes = (ho.get("bytes") or {}).get("pull") if isinstance(ho.get("bytes"), Mapping) else None
    return [Span(job, "cut_tensor", "cut", LAPTOP, pull[0], push[1], None, "done", None,
                 {"from": _attr(head, "serial"), "to": _attr(tail, "serial"), "bytes": nbytes,
                  "pull_s": round(pull[1] - pull[0], 6), "push_s": round(push[1] - push[0], 6)})]


def _mesh_spans(jid: int, job: Any, attempts: Sequence[Any]) -> list[Span]:
    """A mesh job (adbflow.mesh.trace): the laptop took no part, so every span is on a
    phone: the job and its detect/convert on the orchestrator, classify and generate on
    the worker that ran them. The attempts already hold laptop-clock times (mapped when the
    job was read back) and the mapping in output["clock"]."""
    spans = []
    for att in sorted(attempts, key=lambda a: float(_attr(a, "started"))):
        out = _attr(att, "output") or {}
        out = out if isinstance(out, Mapping) else {}
        clock = out.get("clock") if isinstance(out.get("clock"), Mapping) else None
        ended = _attr(att, "ended")
        start = float(_attr(att, "started"))
        stage = str(_attr(att, "stage"))
        args = {k: v for k, v in (("peer", out.get("peer")), ("error", _attr(att, "error")),
                                  ("timed", out.get("timed"))) if v}
        spans.append(Span(jid, stage, stage, str(_attr(att, "serial") or LAPTOP), start,
                          float(ended) if ended is not None else start, _attr(att, "attempt"),
                          str(_attr(att, "state")), dict(clock) if clock else None, args))
    result = _attr(job, "result") or {}
    result = result if isinstance(result, Mapping) else {}
    created, finished = float(_attr(job, "created")), _attr(job, "finished")
    first = min([created] + [sp.start for sp in spans])
    last = max([float(finished or created)] + [sp.end for sp in spans])
    job_clock = spans[0].clock if spans else None
    spans.append(Span(jid, "job", "job", str(_attr(job, "serial")), first, last, None,
                      str(_attr(job, "state")), job_clock,
                      {"name": str(_attr(job, "path")).rsplit("/", 1)[-1], "mesh": True,
                       "mesh_job": result.get("mesh_job"), "mesh_state": result.get("state"),
                       "error": _attr(job, "error")}))
    return sorted(spans, key=lambda sp: (sp.start, -sp.end))
