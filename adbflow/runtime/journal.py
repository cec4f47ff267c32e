"""The laptop-side journal: every picture and every stage attempt, durable in SQLite (WAL).

Why over ~500 lines: the schema, its migrations and every query are one SQLite contract
(exactly-once indexes, ownership, recovery); splitting the SQL would hide which query relies
on which index.

Why a journal: the orchestrator may be killed at any moment (kill -9, laptop sleep, Ctrl-C)
while pictures are half way through. Each stage commits its result in one transaction
together with its "done" state, so after a restart the pipeline resumes every job from its
first stage without a committed result. Re-running a stage whose result was not committed
is harmless (stages are idempotent); a partial unique index makes a second commit of the
same stage impossible, and the (serial, path, size, mtime) unique key makes a second job
for the same picture impossible: each picture is processed exactly once.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from adbflow.errors import (  # noqa: F401 - defined in adbflow.errors
    AdbflowError,
    AttemptAbandoned,
    IncompleteResult,
    JournalCorrupt,
    JournalReplaced,
    StageAlreadyDone,
)
from adbflow.runtime import owner as owners
from adbflow.runtime.laptop import fault_from_os, fault_from_sqlite
from adbflow.runtime.owner import ProcessId

SCHEMA_VERSION = 3
# columns added after version 1 (ALTER TABLE on open): who owns a job / a running attempt;
# version 3: the picture's inode (identity: a same-size, same-mtime replacement is new)
_ADDED_COLUMNS = {
    "jobs": ("claim_host TEXT", "claim_pid INTEGER", "claim_start REAL",
             "ino INTEGER NOT NULL DEFAULT 0"),
    "attempts": ("owner_host TEXT", "owner_pid INTEGER", "owner_start REAL"),
    "seen": ("ino INTEGER NOT NULL DEFAULT 0",),
}
_IDENTITY = ["serial", "path", "size", "mtime", "ino"]


class JobState(str, Enum):
    """A job's state; the values are the strings stored in `jobs.state` (journals written
    before this enum existed read the same). Compares equal to its string."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"

    __str__ = str.__str__     # print/format as the stored string, not "JobState.DONE"


class AttemptState(str, Enum):
    """An attempt's state; values as stored in `attempts.state`."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    ABANDONED = "abandoned"   # left running by a stopped run (recover)

    __str__ = str.__str__


JOB_STATES = tuple(JobState)
FINAL_STATES = (JobState.DONE, JobState.FAILED, JobState.SKIPPED)

# Failed attempts (their error_kind) that do not count against a stage's attempts: none
# says anything against the picture, and each has its own bound (runtime.attempts'
# MAX_FREE_RETRIES; a dropped phone is also left out for the rest of the stage's run).
#   busy        a phone leased by another orchestrator (or every usable phone was)
#   lease       our lease lost while running: the output was discarded
#   unreachable the origin phone gone (waited for, then the job is parked)
#   superseded  a copy taken while the file was still being written
#   dropped     a worker phone left adb during the attempt (cable, Wi-Fi, reboot)
UNCOUNTED_KINDS = frozenset({"busy", "lease", "unreachable", "superseded", "dropped"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,                 -- 'device' (detected on a phone) | 'laptop' (adbflow run)
    serial TEXT NOT NULL,                 -- phone serial, or 'laptop'
    path TEXT NOT NULL,                   -- untrusted device path, or absolute laptop path
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    ino INTEGER NOT NULL DEFAULT 0,       -- inode on the device (0: unknown)
    sha256 TEXT,
    local_path TEXT,                      -- our copy, always inside the data directory
    how TEXT,                             -- detected by: inotify | listing | backlog | run
    state TEXT NOT NULL DEFAULT 'pending',
    error TEXT,
    result TEXT,                          -- JSON summary written when the job is done
    created REAL NOT NULL,
    updated REAL NOT NULL,
    finished REAL,
    UNIQUE (serial, path, size, mtime, ino)
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_hash ON jobs(serial, path, sha256);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    stage TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    serial TEXT,
    state TEXT NOT NULL,                  -- running | done | failed | abandoned
    started REAL NOT NULL,
    ended REAL,
    output TEXT,                          -- JSON
    error TEXT,
    error_kind TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS attempts_one_done ON attempts(job_id, stage) WHERE state = 'done';
CREATE INDEX IF NOT EXISTS attempts_job ON attempts(job_id);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pid INTEGER NOT NULL,
    started REAL NOT NULL,
    ended REAL                            -- NULL: the session crashed or still runs
);
CREATE TABLE IF NOT EXISTS watched (     -- devices `watch` has listed at least once
    serial TEXT PRIMARY KEY,
    first_watched REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS seen (        -- what `watch` has already looked at, per device
    serial TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    baseline INTEGER NOT NULL,            -- 1: present before watching started (not processed)
    first_seen REAL NOT NULL,
    PRIMARY KEY (serial, path)
);
"""


@dataclass
class JobRecord:
    id: int
    source: str
    serial: str
    path: str
    size: int
    mtime: float
    sha256: str | None
    local_path: str | None
    state: JobState
    error: str | None
    result: dict[str, Any] | None
    created: float
    updated: float
    finished: float | None
    how: str | None = None
    ino: int = 0

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "serial": self.serial, "path": self.path,
                "size": self.size, "mtime": self.mtime, "sha256": self.sha256,
                "local_path": self.local_path, "state": self.state, "error": self.error,
                "result": self.result, "created": self.created, "updated": self.updated,
                "finished": self.finished, "how": self.how, "ino": self.ino}


@dataclass
class AttemptRecord:
    id: int
    job_id: int
    stage: str
    attempt: int
    serial: str | None
    state: AttemptState
    started: float
    ended: float | None
    output: dict[str, Any] | None
    error: str | None
    error_kind: str | None

    @property
    def seconds(self) -> float | None:
        return None if self.ended is None else self.ended - self.started

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "stage": self.stage, "attempt": self.attempt,
                "serial": self.serial, "state": self.state, "started": self.started,
                "ended": self.ended, "seconds": self.seconds, "output": self.output,
                "error": self.error, "error_kind": self.error_kind}


@dataclass(frozen=True)
class Session:
    id: int
    previous_crashed: bool   # the last watch session never ended cleanly


def _owner(row: sqlite3.Row, prefix: str) -> ProcessId | None:
    if row[f"{prefix}_pid"] is None:
        return None
    return ProcessId(row[f"{prefix}_host"] or "", int(row[f"{prefix}_pid"]),
                     float(row[f"{prefix}_start"] or 0.0))


def _loads(text: str | None) -> dict[str, Any] | None:
    return None if text is None else json.loads(text)


class Journal:
    """One SQLite file shared by watch/run/jobs/show (and S's service_times table).

    Thread-safe: one connection guarded by a lock (the pipeline's worker threads write
    small rows; SQLite serialises writers anyway). Other processes may read concurrently (WAL).
    """

    def __init__(self, path: Path | str, *, clock=time.time) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise fault_from_os(exc, self.path.parent) from exc
        self._clock = clock
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(str(path), timeout=30.0, isolation_level=None,
                                       check_same_thread=False)
        except sqlite3.OperationalError as exc:
            self._raise_laptop(exc)
            raise
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed stage survives even a power cut, not only kill -9.
            self._db.execute("PRAGMA synchronous=FULL")
            with self._lock:
                self._db.executescript(_SCHEMA)
                self._migrate()
                self._db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?)",
                                 (str(SCHEMA_VERSION),))
            self._identity = self._stat_identity()
        except sqlite3.DatabaseError as exc:
            self._raise_laptop(exc)
            raise AdbflowError(f"journal {self.path} is not usable: {exc}",
                               hint="move the file away (it is a SQLite database) or pass "
                                    "another --data-dir") from exc

    # -- plumbing ---------------------------------------------------------------------------
    def _migrate(self) -> None:
        """Add the columns of newer versions, in one write transaction (two processes may
        open an old journal at the same moment: `run` next to `watch`)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for table, cols in _ADDED_COLUMNS.items():
                have = {r["name"] for r in self._db.execute(f"PRAGMA table_info({table})")}
                for col in cols:
                    if col.split()[0] not in have:
                        self._db.execute(f"ALTER TABLE {table} ADD COLUMN {col}")
            self._widen_job_identity()
            self._db.execute("UPDATE meta SET value=? WHERE key='schema' AND value<?",
                             (str(SCHEMA_VERSION), str(SCHEMA_VERSION)))
            self._db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise

    def _widen_job_identity(self) -> None:
        """Journals before version 3 have UNIQUE (serial, path, size, mtime) on jobs, which
        refuses a job for a replacement with another inode: rebuild the table (rows, ids
        and the id sequence kept) with the inode in the key. Inside _migrate's transaction."""
        db = self._db
        for idx in db.execute("PRAGMA index_list(jobs)").fetchall():
            if not idx["unique"] or idx["origin"] != "u":
                continue
            cols = [r["name"] for r in db.execute(f"PRAGMA index_info({idx['name']})")]
            if cols != _IDENTITY[:4]:
                continue
            seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name='jobs'").fetchone()
            create = _SCHEMA.split("CREATE TABLE IF NOT EXISTS jobs (", 1)[1].split(");", 1)[0]
            db.execute(f"CREATE TABLE jobs_v3 ({create})")
            for col in _ADDED_COLUMNS["jobs"]:
                if col.split()[0] != "ino":
                    db.execute(f"ALTER TABLE jobs_v3 ADD COLUMN {col}")
            names = ", ".join(r["name"] for r in db.execute("PRAGMA table_info(jobs)"))
            db.execute(f"INSERT INTO jobs_v3 ({names}) SELECT {names} FROM jobs")
            db.execute("DROP TABLE jobs")
            db.execute("ALTER TABLE jobs_v3 RENAME TO jobs")
            db.execute("CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state)")
            db.execute("CREATE INDEX IF NOT EXISTS jobs_hash ON jobs(serial, path, sha256)")
            if seq is not None:
                db.execute("UPDATE sqlite_sequence SET seq=max(seq, ?) WHERE name='jobs'",
                           (int(seq["seq"]),))
                if db.execute("SELECT changes()").fetchone()[0] == 0:
                    db.execute("INSERT INTO sqlite_sequence(name, seq) VALUES ('jobs', ?)",
                               (int(seq["seq"]),))
            return

    class _Tx:
        def __init__(self, journal: Journal) -> None:
            self.j = journal

        def __enter__(self) -> sqlite3.Connection:
            self.j._lock.acquire()
            try:
                self.j._db.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as exc:
                self.j._lock.release()
                self.j._raise_laptop(exc)
                raise
            return self.j._db

        def __exit__(self, et, ev, tb) -> None:
            try:
                try:
                    self.j._db.execute("COMMIT" if et is None else "ROLLBACK")
                except sqlite3.DatabaseError as exc:
                    with contextlib.suppress(sqlite3.Error):
                        self.j._db.execute("ROLLBACK")
                    self.j._raise_laptop(exc)
                    raise
                if isinstance(ev, sqlite3.DatabaseError):
                    self.j._raise_laptop(ev)
            finally:
                self.j._lock.release()

    def _raise_laptop(self, exc: sqlite3.Error) -> None:
        """A disk-full / read-only / unopenable journal is the laptop's fault: say so; a
        damaged one is JournalCorrupt with what to do. Anything else: the caller re-raises."""
        fault = fault_from_sqlite(exc, self.path)
        if fault is not None:
            raise fault from exc
        text = str(exc).lower()
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.IntegrityError) \
                and any(w in text for w in ("malformed", "not a database", "corrupt")):
            raise JournalCorrupt(f"journal {self.path} is damaged: {exc}",
                                 hint=f"run `adbflow journal check --data-dir "
                                      f"{self.path.parent}`; `adbflow journal recover` keeps "
                                      "what can be read") from exc

    def _tx(self) -> Journal._Tx:
        return Journal._Tx(self)

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, tuple(args)).fetchall()
            except sqlite3.DatabaseError as exc:
                self._raise_laptop(exc)
                raise

    def _stat_identity(self) -> tuple[int, int] | None:
        if str(self.path) == ":memory:":
            return None
        st = os.stat(self.path)
        return st.st_dev, st.st_ino

    def check_identity(self) -> None:
        """JournalReplaced when the file we write is no longer the one at `path` (deleted,
        or another file moved there): everything written from now on would be lost, and a
        new journal would hand out job ids (and story names) again."""
        if self._identity is None:
            return
        try:
            now = self._stat_identity()
        except FileNotFoundError:
            now = None
        if now != self._identity:
            what = "deleted" if now is None else "replaced by another file"
            raise JournalReplaced(
                f"the journal {self.path} was {what} while adbflow was running",
                hint="adbflow stopped so that nothing is written where nobody reads it; "
                     "restore the file, or start again: a new journal continues after the "
                     "job ids already used in the data directory")

    def reserve_ids(self, above: int) -> None:
        """Job ids start above `above` (the highest id already used by files in the data
        directory): a journal recreated next to old stories never reuses their names."""
        with self._tx() as db:
            row = db.execute("SELECT seq FROM sqlite_sequence WHERE name='jobs'").fetchone()
            top = db.execute("SELECT coalesce(max(id), 0) FROM jobs").fetchone()[0]
            if row is None:
                db.execute("INSERT INTO sqlite_sequence(name, seq) VALUES ('jobs', ?)",
                           (max(int(above), int(top)),))
            elif int(row["seq"]) < int(above):
                db.execute("UPDATE sqlite_sequence SET seq=? WHERE name='jobs'", (int(above),))
            if int(above) > 0 and int(top) == 0 and row is None:
                # a fresh journal next to outputs of an earlier one: the old was lost
                db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('recreated', ?)",
                           (str(int(above)),))

    def instance_id(self) -> str:
        """A random id naming this data dir's journal (12 hex digits, made once): claims
        at the phones record it with the result, so a job completed just before a crash
        is recognised as our own after the restart."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('instance', ?)",
                       (secrets.token_hex(6),))
            return str(db.execute("SELECT value FROM meta WHERE key='instance'").fetchone()[0])

    def recreated(self) -> bool:
        """This journal replaced a lost one (outputs of earlier jobs were in the data dir):
        what it does not know about a device is not "before the first watch"."""
        return bool(self._query("SELECT 1 FROM meta WHERE key='recreated'"))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- jobs -------------------------------------------------------------------------------
    def add_job(self, *, source: str, serial: str, path: str, size: int, mtime: float,
                local_path: str | None = None, sha256: str | None = None,
                how: str | None = None, ino: int = 0) -> tuple[int, bool]:
        """(job id, created). The same picture identity (serial, path, size, mtime, inode)
        always maps to the same job."""
        now = self._clock()
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO jobs(source, serial, path, size, mtime, ino, sha256, "
                "local_path, how, state, created, updated) "
                "VALUES (?,?,?,?,?,?,?,?,?, 'pending', ?, ?)",
                (source, serial, path, int(size), float(mtime), int(ino), sha256, local_path,
                 how, now, now))
            created = cur.rowcount == 1
            row = db.execute("SELECT id FROM jobs WHERE serial=? AND path=? AND size=? AND "
                             "mtime=? AND ino=?",
                             (serial, path, int(size), float(mtime), int(ino))).fetchone()
        return int(row["id"]), created

    def record_finished_job(self, *, source: str, serial: str, path: str, size: int,
                            mtime: float, how: str, state: str, created: float,
                            finished: float, attempts: Iterable[dict[str, Any]],
                            error: str | None = None, result: dict[str, Any] | None = None
                            ) -> tuple[int, bool]:
        """(job id, created): a job that ran outside the pipeline (a split run timed on
        the laptop, a mesh job read back from the phone that orchestrated it), written whole
        in one transaction with its measured times. Why not begin/commit_attempt: those
        stamp the journal's clock now, and these times were measured elsewhere (the phones',
        mapped) or before the rows could be written. The identity key makes a second
        recording of the same job a no-op (created False). attempts: dicts with stage,
        serial, state, started, ended, output, error."""
        if state not in FINAL_STATES:
            raise ValueError(f"not a final state: {state}")
        state = JobState(state).value
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO jobs(source, serial, path, size, mtime, how, state, error,"
                " result, created, updated, finished) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (source, serial, path, int(size), float(mtime), how, state, error,
                 None if result is None else json.dumps(result), float(created),
                 self._clock(), float(finished)))
            row = db.execute("SELECT id FROM jobs WHERE serial=? AND path=? AND size=? AND "
                             "mtime=? AND ino=0", (serial, path, int(size), float(mtime))
                             ).fetchone()
            job_id = int(row["id"])
            if cur.rowcount != 1:
                return job_id, False
            if result is not None and "job" not in result:    # as pipeline results say it
                db.execute("UPDATE jobs SET result=? WHERE id=?",
                           (json.dumps({"job": job_id, **result}), job_id))
            counts: dict[str, int] = {}
            for a in attempts:
                stage = str(a["stage"])
                counts[stage] = counts.get(stage, 0) + 1
                st = AttemptState(a.get("state", "done")).value
                db.execute("INSERT INTO attempts(job_id, stage, attempt, serial, state, started,"
                           " ended, output, error, error_kind) VALUES (?,?,?,?,?,?,?,?,?,?)",
                           (job_id, stage, counts[stage], a.get("serial"), st,
                            float(a["started"]), float(a["ended"]),
                            None if a.get("output") is None else json.dumps(a["output"]),
                            a.get("error"), "error" if a.get("error") else None))
        return job_id, True

    def find_job(self, serial: str, path: str, size: int, mtime: float,
                 ino: int = 0) -> JobRecord | None:
        rows = self._query("SELECT * FROM jobs WHERE serial=? AND path=? AND size=? AND mtime=? "
                           "AND ino=?", (serial, path, int(size), float(mtime), int(ino)))
        return self._job(rows[0]) if rows else None

    def job(self, job_id: int) -> JobRecord:
        rows = self._query("SELECT * FROM jobs WHERE id=?", (int(job_id),))
        if not rows:
            raise AdbflowError(f"no job {job_id} in {self.path}",
                               hint="`adbflow jobs` lists the known jobs")
        return self._job(rows[0])

    def jobs(self, *, limit: int | None = 50, state: str | None = None) -> list[JobRecord]:
        sql = "SELECT * FROM jobs"
        args: list[Any] = []
        if state:
            sql += " WHERE state=?"
            args.append(state)
        sql += " ORDER BY id DESC"
        if limit:
            sql += " LIMIT ?"
            args.append(int(limit))
        return [self._job(r) for r in self._query(sql, args)]

    def incomplete_jobs(self, *, source: str | None = None) -> list[JobRecord]:
        sql = "SELECT * FROM jobs WHERE state IN ('pending', 'running')"
        args: list[Any] = []
        if source:
            sql += " AND source=?"
            args.append(source)
        return [self._job(r) for r in self._query(sql + " ORDER BY id", args)]

    def incomplete_job_ids(self, *, source: str | None = None, exclude: Iterable[int] = (),
                           limit: int = 100) -> list[int]:
        """Up to `limit` unfinished job ids, oldest first, skipping `exclude`: the backlog
        the job queue refills from (ids only, so a burst of thousands stays small)."""
        skip = {int(i) for i in exclude}
        sql = "SELECT id FROM jobs WHERE state IN ('pending', 'running')"
        args: list[Any] = []
        if source:
            sql += " AND source=?"
            args.append(source)
        sql += " ORDER BY id LIMIT ?"
        args.append(int(limit) + len(skip))
        ids = [int(r[0]) for r in self._query(sql, args)]
        return [i for i in ids if i not in skip][:max(0, int(limit))]

    def update_job(self, job_id: int, **fields: Any) -> None:
        allowed = {"sha256", "local_path", "state", "error"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"cannot update {sorted(bad)}")
        if not fields:
            return
        cols = ", ".join(f"{k}=?" for k in fields)
        with self._tx() as db:
            db.execute(f"UPDATE jobs SET {cols}, updated=? WHERE id=?",
                       (*fields.values(), self._clock(), int(job_id)))

    def finish_job(self, job_id: int, state: str, *, error: str | None = None,
                   result: dict[str, Any] | None = None,
                   require: tuple[str, ...] = ()) -> None:
        """Final state, with the result. `require`: stages that must have a committed
        output for the state to be written (IncompleteResult otherwise, nothing written):
        a job is never `done` without its results."""
        if state not in FINAL_STATES:
            raise ValueError(f"not a final state: {state}")
        state = JobState(state).value
        now = self._clock()
        with self._tx() as db:
            for stage in require:
                row = db.execute("SELECT output FROM attempts WHERE job_id=? AND stage=? AND "
                                 "state='done'", (int(job_id), stage)).fetchone()
                if row is None or not row["output"]:
                    raise IncompleteResult(f"job {job_id}: no committed {stage} result",
                                           hint="the stage runs again")
            db.execute("UPDATE jobs SET state=?, error=?, result=?, updated=?, finished=? "
                       "WHERE id=?", (state, error, None if result is None else
                                      json.dumps(result), now, now, int(job_id)))

    def invalidate_stage(self, job_id: int, stage: str, reason: str) -> None:
        """A committed stage result turned out stale (a picture pulled mid-write): it no
        longer counts, so the stage runs again (kept in the journal as failed)."""
        with self._tx() as db:
            db.execute("UPDATE attempts SET state='failed', error=?, error_kind='superseded' "
                       "WHERE job_id=? AND stage=? AND state='done'",
                       (reason, int(job_id), stage))

    def retarget_job(self, job_id: int, size: int, mtime: float, ino: int = 0) -> int | None:
        """The job's file settled at another (size, mtime, inode): the job follows it.
        Returns the id of another job that already has that identity (then nothing changes
        here)."""
        with self._tx() as db:
            row = db.execute("SELECT serial, path FROM jobs WHERE id=?", (int(job_id),)).fetchone()
            other = db.execute("SELECT id FROM jobs WHERE serial=? AND path=? AND size=? AND "
                               "mtime=? AND ino=? AND id<>?",
                               (row["serial"], row["path"], int(size), float(mtime), int(ino),
                                int(job_id))).fetchone()
            if other is not None:
                return int(other["id"])
            db.execute("UPDATE jobs SET size=?, mtime=?, ino=?, updated=? WHERE id=?",
                       (int(size), float(mtime), int(ino), self._clock(), int(job_id)))
            db.execute("UPDATE seen SET size=?, mtime=?, ino=? WHERE serial=? AND path=?",
                       (int(size), float(mtime), int(ino), row["serial"], row["path"]))
            return None

    def unreachable_failed_jobs(self, serial: str) -> list[JobRecord]:
        """Failed device jobs whose last attempt failed because `serial` was unreachable:
        the picture is still on the phone, so they are retried when it is back."""
        return [self._job(r) for r in self._query(
            "SELECT * FROM jobs j WHERE j.state='failed' AND j.source='device' AND j.serial=? "
            "AND (SELECT error_kind FROM attempts a WHERE a.job_id=j.id ORDER BY a.id DESC "
            "LIMIT 1)='unreachable' ORDER BY j.id", (serial,))]

    def reopen_job(self, job_id: int) -> None:
        """A failed job back to pending (its picture can be processed after all)."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET state='pending', finished=NULL, updated=? WHERE id=? "
                       "AND state='failed'", (self._clock(), int(job_id)))

    def duplicate_of(self, job_id: int, serial: str, path: str, sha256: str) -> int | None:
        """An earlier job for the same device file with the same content (e.g. only the
        mtime was touched): processing it again would be a duplicate."""
        rows = self._query("SELECT id FROM jobs WHERE serial=? AND path=? AND sha256=? AND id<? "
                           "AND state NOT IN ('skipped', 'failed') ORDER BY id LIMIT 1",
                           (serial, path, sha256, int(job_id)))
        return int(rows[0]["id"]) if rows else None

    @staticmethod
    def _job(r: sqlite3.Row) -> JobRecord:
        return JobRecord(id=r["id"], source=r["source"], serial=r["serial"], path=r["path"],
                         size=r["size"], mtime=r["mtime"], sha256=r["sha256"],
                         local_path=r["local_path"],
                         state=JobState(r["state"]), error=r["error"],
                         result=_loads(r["result"]), created=r["created"],
                         updated=r["updated"], finished=r["finished"], how=r["how"],
                         ino=int(r["ino"] or 0))

    # -- attempts ---------------------------------------------------------------------------
    def begin_attempt(self, job_id: int, stage: str, serial: str | None) -> int:
        """A running attempt owned by this process (recovery leaves it alone while we live)."""
        now = self._clock()
        me = owners.current()
        with self._tx() as db:
            n = db.execute("SELECT COUNT(*) FROM attempts WHERE job_id=? AND stage=?",
                           (int(job_id), stage)).fetchone()[0]
            cur = db.execute("INSERT INTO attempts(job_id, stage, attempt, serial, state, started,"
                             " owner_host, owner_pid, owner_start)"
                             " VALUES (?,?,?,?, 'running', ?, ?, ?, ?)",
                             (int(job_id), stage, n + 1, serial, now, me.host, me.pid,
                              me.start))
            db.execute("UPDATE jobs SET state='running', updated=? WHERE id=? AND state IN "
                       "('pending', 'running')", (now, int(job_id)))
            assert cur.lastrowid is not None  # an INSERT always sets it
            return int(cur.lastrowid)

    def set_attempt_serial(self, attempt_id: int, serial: str | None) -> None:
        with self._tx() as db:
            db.execute("UPDATE attempts SET serial=? WHERE id=?", (serial, int(attempt_id)))

    def commit_attempt(self, attempt_id: int, output: dict[str, Any]) -> None:
        """Mark the attempt done with its output, atomically. StageAlreadyDone if the stage
        of this job already has a committed result."""
        try:
            with self._tx() as db:
                cur = db.execute("UPDATE attempts SET state='done', ended=?, output=? WHERE id=? "
                                 "AND state='running'",
                                 (self._clock(), json.dumps(output), int(attempt_id)))
                changed = cur.rowcount
        except sqlite3.IntegrityError as exc:
            raise StageAlreadyDone(f"attempt {attempt_id}: stage already committed") from exc
        if changed != 1:
            raise AttemptAbandoned(f"attempt {attempt_id} was ended by another process before "
                                   "its result was committed", hint="the stage runs again")

    def fail_attempt(self, attempt_id: int, error: str, *, kind: str = "error",
                     output: dict[str, Any] | None = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE attempts SET state='failed', ended=?, error=?, error_kind=?, "
                       "output=? WHERE id=?", (self._clock(), error, kind,
                                               None if output is None else json.dumps(output),
                                               int(attempt_id)))

    def stage_output(self, job_id: int, stage: str) -> dict[str, Any] | None:
        rows = self._query("SELECT output FROM attempts WHERE job_id=? AND stage=? AND "
                           "state='done'", (int(job_id), stage))
        return _loads(rows[0]["output"]) if rows else None

    def done_attempt(self, job_id: int, stage: str) -> AttemptRecord | None:
        rows = self._query("SELECT * FROM attempts WHERE job_id=? AND stage=? AND state='done'",
                           (int(job_id), stage))
        return self._attempt(rows[0]) if rows else None

    def attempts(self, job_id: int) -> list[AttemptRecord]:
        return [self._attempt(r) for r in
                self._query("SELECT * FROM attempts WHERE job_id=? ORDER BY id", (int(job_id),))]

    @staticmethod
    def _attempt(r: sqlite3.Row) -> AttemptRecord:
        return AttemptRecord(id=r["id"], job_id=r["job_id"], stage=r["stage"],
                             attempt=r["attempt"], serial=r["serial"],
                             state=AttemptState(r["state"]),
                             started=r["started"], ended=r["ended"], output=_loads(r["output"]),
                             error=r["error"], error_kind=r["error_kind"])

    def recover(self) -> int:
        """After a crash: attempts left 'running' by an orchestrator that is gone are
        'abandoned' (their uncommitted work is redone); attempts of live processes (an
        `adbflow run` next to this `watch`) are left alone. Returns how many."""
        with self._tx() as db:
            rows = db.execute("SELECT id, owner_host, owner_pid, owner_start FROM attempts "
                              "WHERE state='running'").fetchall()
            dead = [r["id"] for r in rows if not owners.alive(_owner(r, "owner"))]
            db.executemany("UPDATE attempts SET state='abandoned', ended=?, error=? WHERE id=? "
                           "AND state='running'",
                           [(self._clock(), "orchestrator stopped before this attempt ended",
                             i) for i in dead])
            db.execute("UPDATE jobs SET claim_host=NULL, claim_pid=NULL, claim_start=NULL "
                       "WHERE claim_pid IS NOT NULL AND state IN ('done', 'failed', 'skipped')")
            return len(dead)

    # -- job claims: one process works on a job at a time ----------------------------------
    def claim_job(self, job_id: int) -> ProcessId | None:
        """Claim the job for this process. None: ours now. Else the live process that owns
        it (e.g. an `adbflow run` of the same picture next to us)."""
        me = owners.current()
        with self._tx() as db:
            row = db.execute("SELECT claim_host, claim_pid, claim_start FROM jobs WHERE id=?",
                             (int(job_id),)).fetchone()
            if row is None:
                return None
            other = _owner(row, "claim")
            if other is not None and other != me and owners.alive(other):
                return other
            db.execute("UPDATE jobs SET claim_host=?, claim_pid=?, claim_start=? WHERE id=?",
                       (me.host, me.pid, me.start, int(job_id)))
            return None

    def release_job(self, job_id: int) -> None:
        me = owners.current()
        with self._tx() as db:
            db.execute("UPDATE jobs SET claim_host=NULL, claim_pid=NULL, claim_start=NULL "
                       "WHERE id=? AND claim_pid=? AND claim_host=?",
                       (int(job_id), me.pid, me.host))

    # -- watch sessions and the seen-files table ----------------------------------------------
    def begin_session(self) -> Session:
        with self._tx() as db:
            last = db.execute("SELECT ended FROM sessions ORDER BY id DESC LIMIT 1").fetchone()
            cur = db.execute("INSERT INTO sessions(pid, started) VALUES (?, ?)",
                             (os.getpid(), self._clock()))
            assert cur.lastrowid is not None  # an INSERT always sets it
            return Session(id=int(cur.lastrowid),
                           previous_crashed=last is not None and last["ended"] is None)

    def end_session(self, session_id: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE sessions SET ended=? WHERE id=?", (self._clock(), int(session_id)))

    def seen(self, serial: str) -> dict[str, tuple[int, float, bool, int]]:
        """path -> (size, mtime, baseline, inode) of what `watch` looked at on `serial`."""
        return {r["path"]: (r["size"], r["mtime"], bool(r["baseline"]), int(r["ino"] or 0))
                for r in self._query("SELECT * FROM seen WHERE serial=?", (serial,))}

    # A device folder counts as watched once its first listing set the baseline. Rows are
    # keyed "serial<US>folder"; journals written before several folders were watched hold
    # one row per serial, which stands for the folder watched then (LEGACY_WATCHED_DIR).
    LEGACY_WATCHED_DIR = "/storage/emulated/0/Pictures"

    @staticmethod
    def _watched_key(serial: str, directory: str | None) -> str:
        return serial if directory is None else f"{serial}\x1f{directory.rstrip('/')}"

    def was_watched(self, serial: str, directory: str | None = None) -> bool:
        keys = [self._watched_key(serial, directory)]
        if directory is not None and directory.rstrip("/") == self.LEGACY_WATCHED_DIR:
            keys.append(serial)
        return any(self._query("SELECT 1 FROM watched WHERE serial=?", (k,)) for k in keys)

    def mark_watched(self, serial: str, directory: str | None = None) -> None:
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO watched(serial, first_watched) VALUES (?, ?)",
                       (self._watched_key(serial, directory), self._clock()))

    def failed_attempts(self, job_id: int, stage: str) -> list[AttemptRecord]:
        """Attempts that failed (not abandoned by a crash): they count against the budget.
        Not counted: the kinds of UNCOUNTED_KINDS."""
        marks = ", ".join("?" * len(UNCOUNTED_KINDS))
        return [self._attempt(r) for r in self._query(
            "SELECT * FROM attempts WHERE job_id=? AND stage=? AND state='failed' AND "
            f"coalesce(error_kind, '') NOT IN ({marks}) ORDER BY id",
            (int(job_id), stage, *sorted(UNCOUNTED_KINDS)))]

    def mark_seen(self, serial: str, entries: Iterable[tuple[Any, ...]], *,
                  baseline: bool) -> None:
        """entries: (path, size, mtime) or (path, size, mtime, inode)."""
        now = self._clock()
        rows = [(serial, e[0], int(e[1]), float(e[2]), int(e[3]) if len(e) > 3 else 0,
                 int(baseline), now) for e in entries]
        with self._tx() as db:
            db.executemany("INSERT INTO seen(serial, path, size, mtime, ino, baseline, first_seen)"
                           " VALUES (?,?,?,?,?,?,?) ON CONFLICT(serial, path) DO UPDATE SET "
                           "size=excluded.size, mtime=excluded.mtime, ino=excluded.ino, "
                           "baseline=excluded.baseline", rows)

    def iter_rows(self, sql: str, args: Iterable[Any] = ()) -> Iterator[sqlite3.Row]:
        """Read-only escape hatch for reports (`adbflow jobs`)."""
        yield from self._query(sql, args)
