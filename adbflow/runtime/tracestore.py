"""Canonical trace files: DATA/traces/YYYYMMDD.jsonl, one span per line (UTC day of the
job's start), written when a job reaches a final state.

Why JSONL by day: appends are atomic enough line by line (a torn last line after a crash
is skipped on read), a day's file is what people ship around, and `--since` only opens the
days it needs. Every string in a span went through json.dumps (ensure_ascii): device text
is escaped JSON, never raw bytes. The journal stays the source of truth: a job missing
from the files (crash before it was written) is rebuilt from the journal on export.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from adbflow.runtime.clockbook import ClockBook
from adbflow.runtime.trace import Span, build_job_spans

log = logging.getLogger("adbflow.runtime.tracestore")


def _dump(d: dict[str, Any]) -> str:
    return json.dumps(d, sort_keys=True, ensure_ascii=True, allow_nan=False, default=str) + "\n"


def day_name(t: float) -> str:
    return time.strftime("%Y%m%d", time.gmtime(t)) + ".jsonl"


class TraceStore:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.dir = self.data_dir / "traces"
        self._lock = threading.Lock()

    def append(self, spans: Iterable[Span]) -> Path | None:
        """Append each job's spans after a `job_trace` header line (a later copy of the
        same job replaces the earlier one on read)."""
        spans = list(spans)
        if not spans:
            return None
        path = self.dir / day_name(min(sp.start for sp in spans))
        chunks = []
        for jid, group in iter_jobs_spans(spans):
            chunks.append(_dump({"kind": "job_trace", "job": jid, "spans": len(group),
                                 "written": time.time()}))
            chunks += [_dump(sp.to_json()) for sp in group]
        with self._lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="ascii") as fh:
                fh.write("".join(chunks))
        return path

    def files(self, since: float | None = None) -> list[Path]:
        if not self.dir.is_dir():
            return []
        first = day_name(since) if since is not None else ""
        return sorted(p for p in self.dir.glob("*.jsonl") if p.name >= first)

    def read(self, *, since: float | None = None, job: int | None = None) -> list[Span]:
        """Spans of the files (the last copy of a job wins when it was written twice)."""
        by_job: dict[int, list[Span]] = {}
        for path in self.files(since):
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    d = json.loads(line)
                    if d.get("kind") == "job_trace":
                        if job is None or int(d["job"]) == job:
                            by_job[int(d["job"])] = []
                        continue
                    sp = Span.from_json(d) if d.get("kind") == "span" else None
                except (ValueError, KeyError, TypeError, AttributeError):
                    continue
                if sp is None or (job is not None and sp.job != job):
                    continue
                by_job.setdefault(sp.job, []).append(sp)
        out = [sp for spans in by_job.values() for sp in spans]
        if since is not None:
            jobs_in = {sp.job for sp in out if sp.name == "job" and sp.end >= since}
            out = [sp for sp in out if sp.job in jobs_in]
        return sorted(out, key=lambda sp: (sp.start, -sp.end))


class JobTracer:
    """Writes a finished job's spans, after syncing the clocks of the devices it used.

    Advisory by design: tracing never fails a job (errors are logged)."""

    def __init__(self, data_dir: Path, inventory: Any = None, *, clocks: ClockBook | None = None
                 ) -> None:
        self.store = TraceStore(data_dir)
        self.clocks = clocks or ClockBook(data_dir)
        self.inventory = inventory

    def spans_for(self, journal: Any, job_id: int, *, sync: bool = True) -> list[Span]:
        job = journal.job(job_id)
        attempts = journal.attempts(job_id)
        # only devices whose own clock stamped something (ran a stage, took the picture)
        # are synced; probes are timed on the laptop
        serials = {a.serial for a in attempts if a.serial and a.serial != "laptop"}
        if job.source == "device":
            serials.add(job.serial)
        tracks = {}
        for s in sorted(serials):
            track = None
            if sync and self.inventory is not None:
                try:
                    track = self.clocks.ensure(self.inventory.device(s))
                except Exception as exc:  # noqa: BLE001 - the device may be gone
                    log.info("no clock for %s: %s", s, exc)
            track = track or self.clocks.track(s)
            if track is not None:
                tracks[s] = track
        return build_job_spans(job, attempts, tracks)

    def record(self, journal: Any, job_id: int) -> None:
        try:
            self.store.append(self.spans_for(journal, job_id))
        except Exception:  # noqa: BLE001
            log.exception("trace of job %s not written", job_id)


def iter_jobs_spans(spans: Iterable[Span]) -> Iterator[tuple[int, list[Span]]]:
    by: dict[int, list[Span]] = {}
    for sp in spans:
        by.setdefault(sp.job, []).append(sp)
    for jid in sorted(by):
        yield jid, by[jid]
