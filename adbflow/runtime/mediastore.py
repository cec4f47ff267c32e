"""Where camera pictures land, which names count as pictures, and the MediaStore query.

Why MediaStore: on Android 11+ a camera app publishes through MediaStore. It writes
`.pending-<ts>-NAME`, and MediaProvider renames it on the lower file system, so the FUSE
view of /storage/emulated/0 that `adb shell` watches gets no inotify event for the final
name (older sdcardfs/FUSE views, Android 6-10, miss cross-view events too). The provider
itself always knows: `content query --uri content://media/external/images/media` lists
every published image, and `--where "_id>N"` keeps it to rows newer than the last one we
saw, in one `adb shell` round trip. Pending rows (is_pending=1) are hidden from such a query
by default, so a row means a finished picture.

Output format (frameworks/base cmds/content, Content.java `QueryCommand`): one line per row,
`Row: <index> <col>=<value>, <col>=<value>, ...` with values printed raw (NULL for null,
BLOB for blobs), or `No result found.` when nothing matched. Values are not escaped: a path
may hold `, ` or `=` or a newline. Rows are device data, so they are parsed strictly against
the projection we asked for (known columns, in order), numbers must be plain decimal, and a
path must lie under one of the watched folders; everything else about the name is then
judged exactly like a file name from a listing (`is_picture_path`).

Everything here is pure; the device I/O is in adbflow.runtime.detect.
"""
from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from adbflow.errors import WatchDirError  # noqa: F401 - defined in adbflow.errors

STORAGE_ROOT = "/storage/emulated/0"
# Camera apps write to DCIM/Camera (MediaProvider puts a picture in Pictures/ only when the
# app gives no relative path); screenshots go to Pictures/Screenshots or DCIM/Screenshots.
DEFAULT_WATCH_DIRS: tuple[str, ...] = ("DCIM/Camera", "Pictures")
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".bmp",
                              ".gif"})
MAX_NAME_BYTES = 255
MAX_DEPTH = 4             # subfolder levels below a watched folder that are looked at
MAX_SUBDIRS = 64          # folders per device: a hostile tree cannot make listings unbounded
MEDIASTORE_SDK = 30       # Android 11: MediaStore publish, FUSE storage
IMAGES_URI = "content://media/external/images/media"
PROJECTION = ("_id", "_data", "date_added", "_size", "mime_type")
MAX_QUERY_OUTPUT = 4 << 20  # ~20k rows; the first query of a big gallery is the largest


def resolve_watch_dirs(values: Iterable[str] | None, *,
                       root: str = STORAGE_ROOT) -> tuple[str, ...]:
    """Absolute, normalised, de-duplicated watched folders. Relative entries are taken under
    /storage/emulated/0 (`DCIM/Camera`); `/sdcard/X` is the same storage; other absolute
    folders are allowed (listings and inotify only: MediaStore covers shared storage). A
    folder inside another watched folder is dropped (its parent's subfolder walk covers it)."""
    raw = list(values) if values else list(DEFAULT_WATCH_DIRS)
    out: list[str] = []
    for v in raw:
        v = str(v).strip()
        if not v or "\x00" in v or "\n" in v:
            raise WatchDirError(f"watched folder {v!r} is empty or holds control characters")
        if v.startswith("/sdcard/") or v == "/sdcard":
            v = root + v[len("/sdcard"):]
        path = v if v.startswith("/") else f"{root}/{v}"
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise WatchDirError(f"watched folder {v!r} may not contain '..'")
        norm = "/" + "/".join(parts)
        if norm == "/":
            raise WatchDirError("watching / is not allowed: name a folder")
        if norm not in out:
            out.append(norm)
    return tuple(d for d in out if not any(d != o and d.startswith(o + "/") for o in out))


def is_image_name(name: str) -> bool:
    """A picture by its name (what MediaStore and galleries go by too): videos, documents and
    other files are not ours to classify, so they are ignored, never failed jobs."""
    return posixpath.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_candidate_component(name: str) -> bool:
    """One path component that may be (part of) a picture's path: no dotfiles (camera temp
    files `.pending-*`, `.trashed-*`, `.nomedia`, `.thumbnails`), no separators, bounded."""
    if not name or name in (".", "..") or name.startswith("."):
        return False
    if "/" in name or "\x00" in name:
        return False
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        return False
    return True


def is_picture_path(rel: str) -> bool:
    """`rel` (relative to a watched folder, `/`-separated) names a finished picture: every
    component a candidate, at most MAX_DEPTH folders deep, an image extension, and not a
    partial download/copy (`.tmp`, `.part`, `~`, `pending-`)."""
    parts = rel.split("/")
    if len(parts) > MAX_DEPTH + 1 or not all(is_candidate_component(p) for p in parts):
        return False
    name = parts[-1]
    if name.endswith((".tmp", ".part", "~")) or name.startswith("pending-"):
        return False
    return is_image_name(name)


def split_under(path: str, roots: Sequence[str]) -> tuple[str, str] | None:
    """(root, relative path) when `path` lies under one of `roots`, else None. The path is
    device text: it must be absolute and already normal (no `.`/`..`/empty components) —
    a row naming `/storage/emulated/0/DCIM/Camera/../../x` is not normalised into a match,
    it is refused."""
    if not path.startswith("/") or "\x00" in path:
        return None
    parts = path.split("/")[1:]
    if any(p in ("", ".", "..") for p in parts):
        return None
    for root in sorted(roots, key=len, reverse=True):
        if path.startswith(root.rstrip("/") + "/"):
            rel = path[len(root.rstrip("/")) + 1:]
            if rel:
                return root, rel
    return None


# ------------------------------------------------------------------ content query


@dataclass(frozen=True)
class MediaRow:
    """One MediaStore image row as the query printed it (all fields device data)."""

    id: int
    path: str
    date_added: int | None
    size: int | None
    mime_type: str | None


def content_query_argv(after_id: int) -> list[str]:
    """The device command (argv; Device.run quotes each argument): images newer than
    `after_id`, the columns we parse, in that order."""
    if after_id < 0:
        raise ValueError("after_id must be >= 0")
    return ["content", "query", "--uri", IMAGES_URI, "--projection", ":".join(PROJECTION),
            "--where", f"_id>{int(after_id)}"]


def content_query_command(after_id: int) -> str:
    """content_query_argv as one quoted shell command line."""
    return " ".join(shlex.quote(a) for a in content_query_argv(after_id))


_ROW_START = re.compile(r"^Row: (\d{1,9}) ")
_ROW = re.compile(r"^Row: (\d{1,9}) _id=(\d{1,18}), _data=(.*), date_added=(\d{1,18}|NULL), "
                  r"_size=(\d{1,18}|NULL), mime_type=([A-Za-z0-9.+/-]{0,100}|NULL)$", re.S)


@dataclass(frozen=True)
class QueryResult:
    rows: list[MediaRow]
    rejected: int          # row-like records that did not parse strictly (device noise/hostile)
    recognised: bool       # the output was a content-query answer at all


def parse_content_query(text: str) -> QueryResult:
    """`content query` output -> rows. Strict: a record must match the projection exactly;
    a record whose value spans lines (a newline in `_data`) is joined back and judged whole.
    `No result found.` is an empty, recognised answer; anything else (an error such as
    `Error while accessing provider`, a missing command) is unrecognised, so the caller
    falls back to listings."""
    text = text.replace("\r\n", "\n")
    records: list[str] = []
    for line in text.split("\n"):
        if _ROW_START.match(line):
            records.append(line)
        elif records and line and not line.startswith("No result found."):
            records[-1] += "\n" + line       # continuation of a value holding a newline
    rows: list[MediaRow] = []
    rejected = 0
    for rec in records:
        m = _ROW.match(rec)
        if m is None:
            rejected += 1
            continue
        _idx, rid, data, added, size, mime = m.groups()
        rows.append(MediaRow(int(rid), data, None if added == "NULL" else int(added),
                             None if size == "NULL" else int(size),
                             None if mime == "NULL" else mime))
    recognised = bool(records) or text.strip() == "No result found."
    return QueryResult(rows=rows, rejected=rejected, recognised=recognised)


def new_pictures(rows: Iterable[MediaRow], roots: Sequence[str], after_id: int
                 ) -> tuple[list[tuple[int, str, str]], int]:
    """Rows newer than `after_id` whose path is a picture under a watched folder, as
    (id, root, relative path) sorted by id, and the new high-water id (every row counts for
    it, also refused ones, so a hostile row is not fetched again and again)."""
    out: list[tuple[int, str, str]] = []
    high = after_id
    for r in sorted(rows, key=lambda r: r.id):
        if r.id <= after_id:
            continue
        high = max(high, r.id)
        where = split_under(r.path, roots)
        if where is None or not is_picture_path(where[1]):
            continue
        out.append((r.id, where[0], where[1]))
    return out, high


def parse_sdk(text: str) -> int | None:
    """`getprop ro.build.version.sdk` -> int (None for anything but 1-3 digits)."""
    s = text.strip()
    return int(s) if re.fullmatch(r"\d{1,3}", s) else None
