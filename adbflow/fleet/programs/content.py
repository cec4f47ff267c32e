"""Stand-in for Android's `content` command, MediaStore queries only, on a virtual device.

Why: from Android 11 adb tools learn about new pictures with
`content query --uri content://media/external/images/media --projection _id:_data ...`,
so the virtual device must print MediaStore rows exactly like frameworks/base
cmds/content (Content.java QueryCommand): `Row: N col=value, col=value` per row, NULL for
nulls, values verbatim (a file name with ", " or a newline in it is printed as it is),
`No result found.` for none. The rows come from the table the fleet keeps
(mediastore.py), read through a read-only bind: the provider's default filter hides
pending and trashed items (Android 10+). Other providers are not served: the command
fails as it does for a provider it cannot find.
"""
from __future__ import annotations

import os
import re
import sqlite3
import sys
from pathlib import Path

from adbflow.fleet.mediastore import DB_NAME, DEVICE_DIR, MEDIA_TYPE_IMAGE, MEDIA_TYPE_VIDEO, columns
from adbflow.fleet.programs.common import device_sdk as sdk

USAGE = """usage: adb shell content [subcommand] [options]

usage: adb shell content query --uri <URI> [--user <USER_ID>] [--projection <PROJECTION>] [--where <WHERE>] [--sort <SORT_ORDER>]
  <PROJECTION> is a list of colon separated column names and is formatted:
  <COLUMN_NAME>[:<COLUMN_NAME>...]
  <SORT_ORDER> is the order in which rows in the result should be sorted.
  Example:
  # Select "name" and "value" columns from secure settings where "name" is equal to "new_setting" and sort the result by name in ascending order.
  adb shell content query --uri content://settings/secure --projection name:value --where "name='new_setting'" --sort "name ASC"
"""
_URI = re.compile(r"content://media/(external|external_primary)/(images/media|video/media|file)"
                  r"(?:/(\d+))?/?$")
_TABLES = {"images/media": MEDIA_TYPE_IMAGE, "video/media": MEDIA_TYPE_VIDEO, "file": None}


class ProviderError(Exception):
    """Printed the way Content.java reports an exception from the provider."""

    def __init__(self, provider: str, java_class: str, message: str) -> None:
        super().__init__(message)
        self.provider, self.java_class, self.message = provider, java_class, message


def parse_args(argv: list[str]) -> dict[str, str]:
    """`query --uri U [--user N] [--projection A:B] [--where W] [--sort S]` -> options."""
    if not argv or argv[0] != "query":
        raise ValueError(f"Unsupported operation: {argv[0]}" if argv else "no operation")
    opts: dict[str, str] = {}
    it = iter(argv[1:])
    for arg in it:
        if arg not in ("--uri", "--user", "--projection", "--where", "--sort"):
            raise ValueError(f"Unsupported argument: {arg}")
        value = next(it, None)
        if value is None:
            raise ValueError(f"Argument expected after \"{arg}\"")
        opts[arg[2:]] = value
    if "uri" not in opts:
        raise ValueError("Content provider URI not specified. Did you specify --uri argument?")
    return opts


def _deny_writes(action: int, *_args: object) -> int:
    """sqlite authorizer: a query may read and call functions, nothing else."""
    allowed = (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION)
    return sqlite3.SQLITE_OK if action in allowed else sqlite3.SQLITE_DENY


def query(opts: dict[str, str], api: int, db_path: Path) -> list[list[tuple[str, object]]]:
    """Rows of the query as [(column, value), ...] (pure apart from reading the table)."""
    uri = opts["uri"]
    m = _URI.match(uri)
    if not m:
        provider = uri.split("://", 1)[-1].split("/", 1)[0]
        raise ProviderError(provider, "java.lang.IllegalStateException",
                            f"Could not find provider: {provider}")
    visible = columns(api)
    projection = opts["projection"].split(":") if "projection" in opts else list(visible)
    for col in projection:
        if col not in visible:
            raise ProviderError("media", "java.lang.IllegalArgumentException",
                                f"Invalid column {col}")
    conds = []
    params: list[object] = []
    if _TABLES[m[2]] is not None:
        conds.append("media_type = ?")
        params.append(_TABLES[m[2]])
    if m[3]:
        conds.append("_id = ?")
        params.append(int(m[3]))
    if api >= 29:  # MATCH_DEFAULT: no pending, no trashed items
        conds.append("is_pending = 0 AND is_trashed = 0")
    inner = (f"SELECT {', '.join(visible)} FROM files"
             + (" WHERE " + " AND ".join(conds) if conds else ""))
    # the file path rides along (last column) for the existence check below
    sql = f"SELECT {', '.join(projection)}, _data FROM ({inner})"
    if opts.get("where"):
        sql += f" WHERE ({opts['where']})"
    sql += f" ORDER BY {opts['sort']}" if opts.get("sort") else " ORDER BY _id"
    if not db_path.exists():
        return []
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    try:
        db.set_authorizer(_deny_writes)
        try:
            cur = db.execute(sql, params)
        except sqlite3.DatabaseError as exc:
            raise ProviderError("media", "android.database.sqlite.SQLiteException",
                                f"{exc} (code 1 SQLITE_ERROR)") from None
        names = [d[0] for d in cur.description][:-1]
        fetched = cur.fetchall()
    finally:
        db.close()
    # Android 11+: the FUSE daemon drops the row of a file deleted through the view
    return [list(zip(names, row[:-1], strict=True)) for row in fetched
            if api < 30 or not isinstance(row[-1], str) or os.path.lexists(row[-1])]


def java_value(value: object) -> str:
    """Cursor value as Content.java prints it (getLong/getString/"NULL"/"BLOB")."""
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return "BLOB"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def render(rows: list[list[tuple[str, object]]]) -> str:
    if not rows:
        return "No result found.\n"
    return "".join(f"Row: {i} " + ", ".join(f"{c}={java_value(v)}" for c, v in row) + "\n"
                   for i, row in enumerate(rows))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0
    try:
        opts = parse_args(args)
        sys.stdout.write(render(query(opts, sdk(), Path(DEVICE_DIR) / DB_NAME)))
        return 0
    except ValueError as exc:
        sys.stderr.write(f"[ERROR] {exc}\n{USAGE}")
        return 1
    except ProviderError as exc:
        sys.stderr.write(f"Error while accessing provider:{exc.provider}\n"
                         f"{exc.java_class}: {exc.message}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
