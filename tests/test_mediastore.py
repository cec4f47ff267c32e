"""MediaStore detection (Android 11+): `content query` rows parsed strictly, paths judged like
file names, camera-style publishes (no inotify event for the final name) found by the query.

The fake device implements the DevicePort calls the watcher uses and prints the real
`content query` format (frameworks/base cmds/content Content.java: `Row: N col=val, ...`,
`No result found.`)."""
from __future__ import annotations

import shlex

import pytest
from pipeline_fakes import FakeDevice

from adbflow.device import RemoteEntry, ShellResult
from adbflow.runtime import mediastore as ms
from adbflow.runtime.detect import WATCH_DIRS, DeviceWatch

CAM = "/storage/emulated/0/DCIM/Camera"
PIC = "/storage/emulated/0/Pictures"


def row(i: int, rid: int, path: str, added="1700000000", size="1234",
        mime="image/jpeg") -> str:
    return f"Row: {i} _id={rid}, _data={path}, date_added={added}, _size={size}, mime_type={mime}"


def test_parse_real_format_and_empty_answer() -> None:
    text = "\n".join([row(0, 12, f"{CAM}/IMG_1.jpg"), row(1, 13, f"{PIC}/a, b=c.png",
                                                          mime="image/png"),
                      row(2, 14, f"{CAM}/x.jpg", added="NULL", size="NULL", mime="NULL")])
    res = ms.parse_content_query(text + "\n")
    assert res.recognised and res.rejected == 0
    assert [(r.id, r.path, r.size) for r in res.rows] == [
        (12, f"{CAM}/IMG_1.jpg", 1234), (13, f"{PIC}/a, b=c.png", 1234), (14, f"{CAM}/x.jpg", None)]
    assert res.rows[2].date_added is None and res.rows[2].mime_type is None
    empty = ms.parse_content_query("No result found.\n")
    assert empty.recognised and empty.rows == []
    for junk in ("", "Error while accessing provider:media\njava.lang.SecurityException",
                 "/system/bin/sh: content: not found", "Row: x _id=1"):
        assert not ms.parse_content_query(junk).recognised or not ms.parse_content_query(junk).rows


def test_hostile_rows_are_refused_or_judged_like_file_names() -> None:
    rows = [
        row(0, 20, f"{CAM}/../../../../data/local/tmp/evil.jpg"),   # not normal: refused
        row(1, 21, "/data/local/tmp/x.jpg"),                         # outside watched folders
        row(2, 22, f"{CAM}/.pending-1700000000-IMG_2.jpg"),          # pending: skipped
        row(3, 23, f"{CAM}/.trashed-1700000000-IMG_0.jpg"),          # trashed: skipped
        row(4, 24, f"{CAM}/VID_1.mp4", mime="video/mp4"),            # not an image
        row(5, 25, f"{CAM}/$(touch pwned).jpg"),                     # hostile but a picture
        row(6, 26, f"{CAM}/new\nline.jpg"),                          # newline in the value
        row(7, 27, f"{CAM}/x.jpg, date_added=1, _size=2, mime_type=image/jpeg.txt"),
        "Row: 8 _id=99999999999999999999, _data=/x.jpg",            # malformed: rejected
        row(9, 28, f"{CAM}//double.jpg"),
        row(10, 29, f"{CAM}/Sub/IMG_3.jpg"),
        row(11, 30, f"{CAM}/IMG_4.jpg", size="-5"),                  # not a plain number
    ]
    res = ms.parse_content_query("\n".join(rows))
    assert res.rejected == 2
    picks, high = ms.new_pictures(res.rows, WATCH_DIRS, 19)
    assert [(i, rel) for i, _root, rel in picks] == [(25, "$(touch pwned).jpg"),
                                                     (26, "new\nline.jpg"), (29, "Sub/IMG_3.jpg")]
    assert high == 29          # refused rows still move the high-water mark
    assert ms.new_pictures(res.rows, WATCH_DIRS, 29) == ([], 29)


def test_query_command_is_quoted_and_bounded() -> None:
    argv = ms.content_query_argv(41)
    assert argv == ["content", "query", "--uri", "content://media/external/images/media",
                    "--projection", "_id:_data:date_added:_size:mime_type", "--where", "_id>41"]
    assert "'_id>41'" in ms.content_query_command(41)     # `>` would be a redirection
    with pytest.raises(ValueError):
        ms.content_query_argv(-1)
    assert ms.parse_sdk("30\n") == 30 and ms.parse_sdk("R") is None and ms.parse_sdk("") is None


def test_watch_dirs_resolution() -> None:
    assert ms.resolve_watch_dirs(None) == (CAM, PIC)
    assert ms.resolve_watch_dirs(["DCIM/Camera/", "/sdcard/Pictures", PIC, "Pictures/Screenshots"]
                                 ) == (CAM, PIC)
    for bad in ("../etc", "DCIM/../../x", "/", "a\nb", ""):
        with pytest.raises(ms.WatchDirError):
            ms.resolve_watch_dirs([bad])


class MediaStoreDevice(FakeDevice):
    """FakeDevice + Android 11+ facts: getprop sdk, a MediaStore, folders in listings, and a
    camera that publishes by renaming a pending file *without* an inotify event."""

    def __init__(self, serial: str, sdk: int = 33) -> None:
        super().__init__(serial)
        self.sdk = sdk
        self.media: list[tuple[int, str]] = []
        self.queries: list[str] = []

    def publish(self, path: str, data: bytes, mtime: float = 1700000000.0) -> int:
        name = path.rsplit("/", 1)
        self.snap(name[1], data, mtime=mtime, directory=name[0])
        rid = (self.media[-1][0] + 1) if self.media else 100
        self.media.append((rid, path))
        return rid

    def list_dir(self, remote: str, *, timeout: float) -> list[RemoteEntry]:
        base = remote.rstrip("/") + "/"
        out, dirs = [], set()
        for p, (d, m) in list(self.files.items()):
            if not p.startswith(base):
                continue
            rest = p[len(base):]
            if "/" in rest:
                dirs.add(rest.split("/", 1)[0])
            else:
                out.append(RemoteEntry(rest, len(d), m, True))
        return out + [RemoteEntry(d, 4096, 1.0, False, True) for d in sorted(dirs)]

    def run(self, argv, *, timeout: float, max_output: int = 1 << 24, check: bool = True,
            stdin: bytes | None = None) -> ShellResult:
        argv = list(argv)
        if argv[:2] == ["getprop", "ro.build.version.sdk"]:
            return ShellResult(self.serial, shlex.join(argv), 0, f"{self.sdk}\n", "", 0.0)
        if argv[:2] == ["content", "query"]:
            after = int(argv[argv.index("--where") + 1].split(">", 1)[1])
            self.queries.append(argv[argv.index("--where") + 1])
            rows = [row(i, rid, p) for i, (rid, p) in
                    enumerate(r for r in self.media if r[0] > after)]
            return ShellResult(self.serial, shlex.join(argv), 0,
                               "\n".join(rows) + "\n" if rows else "No result found.\n", "", 0.0)
        return super().run(argv, timeout=timeout, max_output=max_output, check=check, stdin=stdin)


def test_camera_publish_on_android_11_is_found_through_mediastore() -> None:
    dev = MediaStoreDevice("ms1", sdk=33)
    dev.publish(f"{CAM}/OLD.jpg", b"o" * 10)                       # before watching: baseline
    w = DeviceWatch(dev, directories=WATCH_DIRS, use_inotify=False, settle_s=None)
    assert w.start(lambda serial, d, entries: {(e.name, e.size, e.mtime) for e in entries}) == []
    assert w.mediastore_after == 100 and w.sdk == 33
    dev.publish(f"{CAM}/IMG_2.jpg", b"x" * 50)
    dev.publish(f"{CAM}/VID_2.mp4", b"v" * 500)                    # a video beside it
    dev.publish(f"{PIC}/Screenshots/S_1.png", b"s" * 20)
    found = w.poll()                                               # one query, no listing yet
    assert sorted((p.directory, p.name, p.size, p.how) for p in found) == [
        (CAM, "IMG_2.jpg", 50, "mediastore"), (PIC, "Screenshots/S_1.png", 20, "mediastore")]
    assert dev.queries == ["_id>0", "_id>100"]
    assert w.poll() == [] and dev.queries[-1] == "_id>103"         # only newer rows asked for
    for _ in range(5):                                              # the listings find no double
        assert w.poll() == []


def test_old_android_and_missing_content_fall_back_to_listings() -> None:
    old = MediaStoreDevice("ms7", sdk=25)
    w = DeviceWatch(old, directories=WATCH_DIRS, use_inotify=False, settle_s=None)
    w.start(lambda serial, d, entries: set())
    assert w.mediastore_after is None and old.queries == []
    old.snap("IMG_3.jpg", b"y" * 9, mtime=5.0, directory=f"{CAM}/2024")  # subfolder
    old.snap("clip.mp4", b"v" * 9, mtime=5.0, directory=CAM)              # ignored
    assert w.poll() == []
    assert [(p.name, p.how) for p in w.poll()] == [("2024/IMG_3.jpg", "listing")]

    class Broken(MediaStoreDevice):
        def run(self, argv, **kw):
            if list(argv)[:2] == ["content", "query"]:
                return ShellResult(self.serial, "content", 255, "",
                                   "Error while accessing provider:media", 0.0)
            return super().run(argv, **kw)

    b = Broken("ms11", sdk=30)
    wb = DeviceWatch(b, directories=WATCH_DIRS, use_inotify=False, settle_s=None)
    wb.start(lambda serial, d, entries: set())
    assert wb.mediastore_after is None and "content query" in (wb.error or "")
    b.snap("IMG_4.jpg", b"z" * 9, mtime=5.0, directory=CAM)
    wb.poll()
    assert [p.name for p in wb.poll()] == ["IMG_4.jpg"]


def test_cli_watch_dir_options() -> None:
    from adbflow.cli.pipeline import _watch_dirs
    from adbflow.errors import AdbflowError
    assert _watch_dirs(None, None) == (CAM, PIC)
    assert _watch_dirs(["DCIM/Screenshots", "Pictures"], None) == (
        "/storage/emulated/0/DCIM/Screenshots", PIC)
    assert _watch_dirs(None, "/sdcard/Download") == ("/storage/emulated/0/Download",)
    for bad in (["../x"], ["/"]):
        with pytest.raises(AdbflowError):
            _watch_dirs(bad, None)
    with pytest.raises(AdbflowError, match="absolute"):
        _watch_dirs(None, "Pictures")
