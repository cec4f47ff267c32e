"""`adbflow journal check` / `recover`: find a damaged journal and keep what can be read.

Why: the journal is the only record of which pictures were processed. A damaged file
(a disk error, a copy cut short) used to give raw tracebacks from `jobs`, `show`, `watch`.
`check` runs SQLite's own integrity check; `recover` moves the damaged file aside (never
deleted) and builds a new journal from every row that can still be read: with the sqlite3
program's `.recover` (SQLite's recovery, reads past damaged pages) when it is installed,
else row by row from Python. Job ids stay above every id used before (no story reused).
"""
from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from adbflow.errors import AdbflowError
from adbflow.runtime.journal import Journal

TABLES = ("meta", "jobs", "attempts", "sessions", "watched", "seen", "service_times")
_CHUNK = 200


@dataclass
class CheckReport:
    path: Path
    ok: bool
    problems: list[str] = field(default_factory=list)
    jobs_by_state: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"path": str(self.path), "ok": self.ok, "problems": self.problems,
                "jobs_by_state": self.jobs_by_state}


def check(path: Path) -> CheckReport:
    """SQLite's integrity_check plus a count of jobs; never raises for a damaged file."""
    rep = CheckReport(Path(path), ok=False)
    if not Path(path).exists():
        rep.problems.append("no journal file")
        return rep
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as exc:
        rep.problems.append(f"cannot open: {exc}")
        return rep
    try:
        rows = db.execute("PRAGMA integrity_check(50)").fetchall()
        rep.problems = [r[0] for r in rows if r[0] != "ok"]
        with contextlib.suppress(sqlite3.Error):
            rep.jobs_by_state = dict(db.execute(
                "SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
    except sqlite3.DatabaseError as exc:
        rep.problems.append(str(exc))
    finally:
        db.close()
    rep.ok = not rep.problems
    return rep


@dataclass
class RecoverReport:
    damaged_copy: Path
    method: str
    rows: dict[str, int]

    def to_json(self) -> dict:
        return {"damaged_copy": str(self.damaged_copy), "method": self.method,
                "rows": self.rows}


def recover(path: Path, *, reserve_above: int = 0, use_cli: bool = True) -> RecoverReport:
    """Move the damaged journal aside and write a new one from what can be read."""
    path = Path(path)
    if not path.exists():
        raise AdbflowError(f"no journal at {path}", hint="nothing to recover")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(path) + suffix)
        if src.exists():
            src.rename(Path(str(aside) + suffix))
    new = Journal(path)      # the current schema, empty
    new.close()
    method = "python"
    sqlite_cli = shutil.which("sqlite3") if use_cli else None
    if sqlite_cli:
        try:
            dump = subprocess.run([sqlite_cli, str(aside), ".recover"], capture_output=True,
                                  timeout=600, check=True).stdout
            _load_recovered_sql(path, dump)
            method = "sqlite3 .recover"
        except (subprocess.SubprocessError, OSError, sqlite3.Error):
            method = "python"
    if method == "python":
        _salvage(aside, path)
    rows = {}
    db = sqlite3.connect(path)
    try:
        for t in TABLES:
            with contextlib.suppress(sqlite3.Error):
                rows[t] = db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        db.execute("UPDATE attempts SET state='abandoned', error='journal recovered' "
                   "WHERE state='running'")
        db.commit()
    finally:
        db.close()
    j = Journal(path)
    try:
        j.reserve_ids(reserve_above)
    finally:
        j.close()
    return RecoverReport(aside, method, rows)


def _load_recovered_sql(path: Path, dump: bytes) -> None:
    """Run `.recover`'s SQL into a scratch database, then copy its rows into `path`
    (which has the current schema) table by table, matching columns by name."""
    scratch = path.with_name(path.name + ".recovering")
    scratch.unlink(missing_ok=True)
    try:
        db = sqlite3.connect(scratch)
        try:
            db.executescript(dump.decode("utf-8", "replace"))
            db.commit()
        finally:
            db.close()
        _salvage(scratch, path)
    finally:
        scratch.unlink(missing_ok=True)


def _salvage(src: Path, dst: Path) -> None:
    """Copy every readable row of the known tables from src into dst (INSERT OR IGNORE),
    in rowid chunks; a chunk that fails is retried row by row so one bad page loses only
    its own rows."""
    s = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    d = sqlite3.connect(dst)
    try:
        for table in TABLES:
            try:
                cols_src = [r[1] for r in s.execute(f"PRAGMA table_info({table})")]
            except sqlite3.DatabaseError:
                continue
            if not cols_src:
                continue
            if not [r[1] for r in d.execute(f"PRAGMA table_info({table})")]:
                with contextlib.suppress(sqlite3.Error):
                    sql = s.execute("SELECT sql FROM sqlite_master WHERE name=?",
                                    (table,)).fetchone()
                    if sql and sql[0]:
                        d.execute(sql[0])
            cols_dst = {r[1] for r in d.execute(f"PRAGMA table_info({table})")}
            cols = [c for c in cols_src if c in cols_dst]
            if not cols:
                continue
            names = ", ".join(cols)
            ins = f"INSERT OR IGNORE INTO {table}({names}) VALUES ({', '.join('?' * len(cols))})"
            try:
                top = s.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0] or 0
            except sqlite3.DatabaseError:
                top = 1_000_000
            lo = 1
            while lo <= top:
                hi = lo + _CHUNK - 1
                try:
                    rows = s.execute(f"SELECT {names} FROM {table} WHERE rowid BETWEEN ? AND ?",
                                     (lo, hi)).fetchall()
                except sqlite3.DatabaseError:
                    rows = []
                    for rid in range(lo, hi + 1):
                        with contextlib.suppress(sqlite3.DatabaseError):
                            rows += s.execute(f"SELECT {names} FROM {table} WHERE rowid=?",
                                              (rid,)).fetchall()
                d.executemany(ins, rows)
                lo = hi + 1
        d.commit()
    finally:
        s.close()
        d.close()
