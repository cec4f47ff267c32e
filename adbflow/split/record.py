"""Split runs in the journal, so traces (and `adbflow jobs/show/report`) see them.

Why the journal: it is the one record traces are built from (adbflow.runtime.trace); a
split run written there as a job with one attempt per phone (`head` on A, `tail` on B, or
`whole` on one phone) gets spans on the phones that ran them, its benchmark_model runs on
each phone's own clock mapped onto the laptop's (device marks from devtime), and the cut
tensor's hop, with no second trace format.

Each run of a picture is its own job (a split run is a measurement, run again to compare
plans): the job's `mtime` is the run's start on the laptop, not the picture's, so the
journal's identity key (serial, path, size, mtime) does not merge two runs. Rows are
written after the picture finished (split runs are not resumed; a crash mid-run loses
that one record, never a pipeline job).

split_job_rows() is pure (StageResult in, rows out); record_split_run() does the I/O.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adbflow.split.run import StageResult

# (stage, its push/run/pull step keys in SplitRunner's timing keys)
STAGE_STEPS = (("head", ("push_in", "head", "pull_cut")),
               ("tail", ("push_cut", "tail", "pull_out")),
               ("whole", ("push_in", "run", "pull_out")))


def _attempt(res: StageResult, stage: str, keys: tuple[str, str, str]) -> dict[str, Any] | None:
    """The attempt of one phone's steps (None when none of them ran)."""
    have = [k for k in keys if k in res.walls]
    if not have:
        return None
    serial = next(res.serials[k] for k in have if k in res.serials)
    t = {part: list(res.walls[k]) for part, k in zip(("push", "run", "pull"), keys, strict=True)
         if k in res.walls}
    out: dict[str, Any] = {"serial": serial, "t": t, "program": "benchmark_model",
                           "bytes": {part: res.nbytes[k] for part, k in
                                     zip(("push", "run", "pull"), keys, strict=True)
                                     if k in res.nbytes}}
    run_key = keys[1]
    if run_key in res.device_times:
        out["device_times"] = dict(res.device_times[run_key])
    if run_key in res.inference_s:
        out["inference_ms"] = round(res.inference_s[run_key] * 1000.0, 3)
    return {"stage": stage, "serial": serial, "state": "done", "output": out,
            "started": res.walls[have[0]][0], "ended": res.walls[have[-1]][1]}


def _attempts(res: StageResult, *, whole: bool) -> list[dict[str, Any]]:
    out = []
    for stage, keys in STAGE_STEPS:
        if (stage == "whole") != whole:
            continue
        a = _attempt(res, stage, keys)
        if a is not None:
            out.append(a)
    return out


def split_job_rows(image: Path, size: int, res: StageResult,
                   result: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Keyword arguments of Journal.record_finished_job for one split run. Pure.

    A fallback (the split failed, the job ran whole) keeps the failed split's steps as
    attempts, the one that failed marked failed with the error, before the whole run."""
    atts: list[dict[str, Any]] = []
    if res.attempted is not None:
        tried = _attempts(res.attempted, whole=False)
        fail = res.failure or {}
        step, serial = fail.get("step"), fail.get("serial")
        stage = "tail" if step in STAGE_STEPS[1][1] else "head"
        fallback_start = min((w[0] for w in res.walls.values()), default=None)
        failed = next((a for a in tried if a["stage"] == stage), None)
        if failed is None:          # the failing step was the stage's first
            failed = {"stage": stage, "serial": serial, "output": None,
                      "started": max([a["ended"] for a in tried], default=fallback_start)}
            tried.append(failed)
        failed.update(state="failed", error=str(fail.get("error") or "split step failed"),
                      ended=max(failed["started"], fallback_start or failed["started"]))
        atts += tried
    atts += _attempts(res, whole=res.plan.startswith("whole:"))
    if not atts:
        raise ValueError("a split result without timed steps")
    started = min(a["started"] for a in atts)
    ended = max(a["ended"] for a in atts)
    return {"source": "split", "serial": "laptop", "path": str(image), "size": int(size),
            "mtime": started, "how": "split", "state": "done", "created": started,
            "finished": ended, "attempts": atts,
            "result": {"plan": res.plan, "fallback": res.fallback, "name": image.name,
                       "origin": "laptop",
                       "devices": {a["stage"]: a["serial"] for a in atts if a["state"] == "done"},
                       **(result or {})}}


class _Devices:
    """The inventory face JobTracer asks for (`device(serial)`), over the session's phones."""

    def __init__(self, devices: Mapping[str, Any]) -> None:
        self._devices = devices

    def device(self, serial: str) -> Any:
        return self._devices[serial]


def record_split_run(data_dir: Path, image: Path, res: StageResult,
                     devices: Mapping[str, Any], result: Mapping[str, Any] | None = None
                     ) -> int:
    """Write the run to DATA/journal.sqlite and its spans to DATA/traces (the phones'
    clocks synced first, as for pipeline jobs). Returns the job id."""
    from adbflow.runtime.journal import Journal
    from adbflow.runtime.tracestore import JobTracer
    rows = split_job_rows(image, image.stat().st_size, res, result)
    with Journal(Path(data_dir) / "journal.sqlite") as journal:
        job_id, _ = journal.record_finished_job(**rows)
        JobTracer(data_dir, _Devices(devices)).record(journal, job_id)
    return job_id
