"""The MediaStore table of a virtual device (the rows `content query` prints).

Why a table the fleet keeps: on a phone MediaProvider indexes what cameras publish, and
from Android 11 a MediaStore query is the only reliable way for adb to learn about a new
picture (the FUSE view gets no inotify event for a published file). The fleet's camera
(camera.py) inserts and publishes rows here; the device's `content` stand-in
(programs/content.py) reads them through a read-only bind, like an app reading through
the provider. Values, file names included, are stored verbatim: they are data.

One SQLite file per device in its sim dir (rollback journal, never WAL: the device side
opens it read-only on a read-only mount, where WAL's shared memory cannot be created).
"""
from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

DB_NAME = "external.db"
#: Where the device sees the sim dir's media/ directory (read-only bind, see rootfs).
DEVICE_DIR = "/vendor/adbflow/mediastore"
MEDIA_TYPE_IMAGE, MEDIA_TYPE_VIDEO = 1, 3

#: Columns in MediaProvider's order. From Android 10 (API 29) rows also carry the scoped
#: storage columns; older providers have no such columns (a projection naming them fails).
BASE_COLUMNS = ("_id", "_data", "_size", "_display_name", "mime_type", "title",
                "date_added", "date_modified", "datetaken", "width", "height", "orientation",
                "bucket_id", "bucket_display_name")
Q_COLUMNS = ("relative_path", "volume_name", "is_pending", "is_trashed", "owner_package_name")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
  _id INTEGER PRIMARY KEY AUTOINCREMENT,
  _data TEXT NOT NULL, _size INTEGER, _display_name TEXT, mime_type TEXT, title TEXT,
  date_added INTEGER, date_modified INTEGER, datetaken INTEGER, width INTEGER, height INTEGER,
  orientation INTEGER, bucket_id INTEGER, bucket_display_name TEXT,
  relative_path TEXT, volume_name TEXT, is_pending INTEGER NOT NULL DEFAULT 0,
  is_trashed INTEGER NOT NULL DEFAULT 0, owner_package_name TEXT,
  media_type INTEGER NOT NULL
);
"""


def columns(sdk: int) -> tuple[str, ...]:
    return BASE_COLUMNS + (Q_COLUMNS if sdk >= 29 else ())


def bucket_id(directory: str) -> int:
    """MediaProvider's bucket_id: String.hashCode() of the lower-cased directory path."""
    h = 0
    for ch in directory.lower():
        h = (31 * h + ord(ch)) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


@dataclass(frozen=True)
class MediaFile:
    """What a camera app tells MediaStore about one file."""

    path: str            # /storage/emulated/0/DCIM/Camera/IMG_....jpg (final name)
    size: int
    mime_type: str
    media_type: int
    taken_ms: int
    width: int | None = None
    height: int | None = None
    owner: str | None = "com.android.camera"


class MediaStore:
    """The device's external volume table (fleet side: read-write)."""

    def __init__(self, sim_dir: Path) -> None:
        self.dir = Path(sim_dir) / "media"
        self.path = self.dir / DB_NAME

    def _connect(self) -> sqlite3.Connection:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        db = sqlite3.connect(self.path, timeout=5)
        db.execute("PRAGMA journal_mode=DELETE")
        db.executescript(_SCHEMA)
        self.path.chmod(0o644)
        return db

    def insert(self, f: MediaFile, *, data_path: str, pending: bool, now: float | None = None
               ) -> int:
        """A new row (`pending`: MediaStore.IS_PENDING, the file still `.pending-...`)."""
        now = time.time() if now is None else now
        directory, _, display = f.path.rpartition("/")
        rel = directory.split("/storage/emulated/0/", 1)[-1] + "/"
        title = display.rsplit(".", 1)[0]
        db = self._connect()
        try:
            with db:
                cur = db.execute(
                    "INSERT INTO files (_data, _size, _display_name, mime_type, title, "
                    "date_added, date_modified, datetaken, width, height, orientation, "
                    "bucket_id, bucket_display_name, relative_path, volume_name, is_pending, "
                    "owner_package_name, media_type) VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, 'external_primary', ?, ?, ?)",
                    (data_path, f.size, display, f.mime_type, title, int(now), int(now),
                     f.taken_ms, f.width, f.height, bucket_id(directory),
                     directory.rsplit("/", 1)[-1], rel, 1 if pending else 0, f.owner,
                     f.media_type))
                return int(cur.lastrowid or 0)
        finally:
            db.close()

    def publish(self, row_id: int, f: MediaFile, now: float | None = None) -> None:
        """IS_PENDING 0: the row now names the final file (MediaProvider renamed it)."""
        now = time.time() if now is None else now
        display = f.path.rpartition("/")[2]
        db = self._connect()
        try:
            with db:
                db.execute("UPDATE files SET _data = ?, _display_name = ?, title = ?, "
                           "_size = ?, date_modified = ?, is_pending = 0 WHERE _id = ?",
                           (f.path, display, display.rsplit(".", 1)[0], f.size, int(now),
                            row_id))
        finally:
            db.close()

    def index(self, f: MediaFile, now: float | None = None) -> int:
        """A file created through the FUSE view by someone else than a camera (an
        `adb push`): MediaProvider's FUSE daemon indexes it on close (Android 11+).
        Indexing the same path again replaces its row."""
        db = self._connect()
        try:
            with db:
                db.execute("DELETE FROM files WHERE _data = ?", (f.path,))
        finally:
            db.close()
        return self.insert(f, data_path=f.path, pending=False, now=now)

    def rows(self) -> list[dict[str, object]]:
        """Every row (tests, `fleet status`)."""
        if not self.path.exists():
            return []
        db = self._connect()
        db.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in db.execute("SELECT * FROM files ORDER BY _id")]
        finally:
            db.close()
