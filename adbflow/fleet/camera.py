"""`fleet snap`: a picture taken the way a camera app of the device's Android version does.

Why faithful: adbflow's detection must work with real cameras, and they differ by release
(android.storage_model):
- Android 11+ (FUSE, MediaStore IS_PENDING): the app writes
  `DCIM/Camera/.pending-<expiry>-NAME` through the shared storage view (a watcher sees
  create/close-write of the pending name), then MediaProvider renames it on the lower file
  system (/data/media/0): the view gets NO inotify event for NAME; the MediaStore row
  turns from pending to published. Only listings and `content query` see the picture.
- Android 6-10 (sdcardfs): the app writes through its own view of storage; the shell's
  view sees no event at all; MediaStore gets the row (MediaScanner/insert).
publish="file" is an app using the File API instead (a legacy-storage app, a file
manager): on 11+ it writes `.pending-NAME` and renames it itself through the shared view,
so inotify sees the final name (the fleet's behaviour before MediaStore publishing).
"""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from adbflow.errors import FleetError
from adbflow.fleet import android
from adbflow.fleet.mediastore import MEDIA_TYPE_IMAGE, MEDIA_TYPE_VIDEO, MediaFile, MediaStore
from adbflow.fleet.rootfs import MEDIA_LOWER, STORAGE

DEFAULT_DIR = "DCIM/Camera"
PUBLISH_MODES = ("mediastore", "file")
_MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
         ".webp": "image/webp", ".heic": "image/heic", ".bmp": "image/bmp", ".gif": "image/gif"}


def check_dir(directory: str) -> str:
    """A storage-relative folder: `DCIM/Camera`, `Pictures/Screenshots`... never `..`."""
    parts = directory.strip("/").split("/")
    if (not directory or directory.startswith("/") or "\0" in directory
            or any(p in ("", ".", "..") for p in parts) or len(parts) > 6
            or len(directory.encode()) > 200):
        raise FleetError(f"invalid snap folder {directory!r}",
                         hint="a folder under /storage/emulated/0, e.g. DCIM/Camera or Pictures")
    return "/".join(parts)


@dataclass(frozen=True)
class Snapped:
    """What `fleet snap` made: the picture (and video) paths, how they were published."""

    path: str
    video: str | None
    pending: str | None       # the .pending- name the camera wrote first (None: none)
    publish: str              # mediastore | file
    storage: str              # fuse | sdcardfs (android.storage_model)
    row_ids: tuple[int, ...]  # MediaStore _id of the picture (and video)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def video_bytes(seconds: int = 1) -> bytes:
    """A small MP4 shell (ftyp + empty moov/mdat boxes) standing in for a clip: only its
    name, type and size matter to adbflow, which must ignore videos."""
    def box(kind: bytes, payload: bytes) -> bytes:
        return (8 + len(payload)).to_bytes(4, "big") + kind + payload
    ftyp = box(b"ftyp", b"isom" + (512).to_bytes(4, "big") + b"isomiso2avc1mp41")
    return ftyp + box(b"moov", b"") + box(b"mdat", os.urandom(4096 * seconds))


class Camera:
    """The camera app of one device: `resolve` maps device paths to host paths (backend),
    `sdk` is its API level, `store` its MediaStore table."""

    def __init__(self, resolve: Callable[[str], Path], sdk: int, store: MediaStore) -> None:
        self.resolve = resolve
        self.sdk = sdk
        self.store = store

    def _dirs(self, directory: str) -> tuple[Path, Path]:
        """(view dir, lower dir) of a storage folder; created through the view like an app
        creating a folder (setgid group kept from the storage root)."""
        view = self.resolve(f"{STORAGE}/{directory}")
        view.mkdir(parents=True, exist_ok=True)
        lower = self.resolve(f"{MEDIA_LOWER}/0/{directory}")
        return view, lower

    def snap(self, src: Path, name: str, directory: str = DEFAULT_DIR,
             publish: str | None = None, with_video: bool = False,
             now: float | None = None) -> Snapped:
        """Write `src` as `directory/name` (blocking: run it in a thread)."""
        if publish not in (None, *PUBLISH_MODES):
            raise FleetError(f"unknown snap publish mode {publish!r}",
                             hint="mediastore (a camera app) or file (File API app)")
        publish = publish or "mediastore"
        directory = check_dir(directory)
        now = time.time() if now is None else now
        model = android.storage_model(self.sdk)
        view, lower = self._dirs(directory)
        ids: list[int] = []
        pending, row = self._write(src.read_bytes(), name, view, lower, directory, publish,
                                   model, now, _mime(name), MEDIA_TYPE_IMAGE, _size_of(src))
        ids.append(row)
        video = None
        if with_video:
            vname = video_name(name)
            self._write(video_bytes(), vname, view, lower, directory, publish, model, now,
                        "video/mp4", MEDIA_TYPE_VIDEO, (None, None))
            video = f"{STORAGE}/{directory}/{vname}"
        return Snapped(f"{STORAGE}/{directory}/{name}", video, pending, publish, model.kind,
                       tuple(ids))

    def _write(self, data: bytes, name: str, view: Path, lower: Path, directory: str,
               publish: str, model: android.StorageModel, now: float, mime: str,
               media_type: int, size: tuple[int | None, int | None]) -> tuple[str | None, int]:
        final = f"{STORAGE}/{directory}/{name}"
        info = MediaFile(path=final, size=len(data), mime_type=mime, media_type=media_type,
                         taken_ms=int(now * 1000), width=size[0], height=size[1])
        if model.kind == "sdcardfs":
            # the app's own sdcardfs view: the file appears below the shell's view
            _write_file(lower / name, data)
            return None, self.store.insert(info, data_path=final, pending=False, now=now)
        if publish == "file":  # File API through the shared FUSE view: events for both names
            tmp = view / f".pending-{name}"
            _write_file(tmp, data)
            os.replace(tmp, view / name)
            return tmp.name, self.store.insert(info, data_path=final, pending=False, now=now)
        pname = android.pending_name(name, now)
        row = self.store.insert(info, data_path=f"{STORAGE}/{directory}/{pname}", pending=True,
                                now=now)
        _write_file(view / pname, data)           # through FUSE: the watcher sees this name
        os.replace(lower / pname, lower / name)   # MediaProvider, on the lower file system
        self.store.publish(row, info, now=now)
        return pname, row


def _write_file(path: Path, data: bytes) -> None:
    """Write like an app: created, written, closed (root here; storage dirs are setgid
    sdcard_rw, so the shell's group may read it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o660)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, 0o660)
    finally:
        os.close(fd)


def _mime(name: str) -> str:
    return _MIME.get(Path(name).suffix.lower(), "image/jpeg")


_VIDEO_MIME = {".mp4": "video/mp4", ".3gp": "video/3gpp", ".mkv": "video/x-matroska",
               ".webm": "video/webm"}


def media_kind(name: str) -> tuple[str, int] | None:
    """(mime type, MediaStore media_type) of a file name MediaProvider would index as an
    image or a video; None for other files and hidden (`.`) names."""
    if name.startswith("."):
        return None
    ext = Path(name).suffix.lower()
    if ext in _MIME:
        return _MIME[ext], MEDIA_TYPE_IMAGE
    if ext in _VIDEO_MIME:
        return _VIDEO_MIME[ext], MEDIA_TYPE_VIDEO
    return None


def index_pushed(store: MediaStore, sdk: int, canonical: str, host: Path,
                 now: float | None = None) -> bool:
    """Android 11+: a media file written through the FUSE view (adb push) gets a row, as
    MediaProvider's FUSE daemon does on close. Earlier releases index only on a media
    scan, which nothing triggers here. True when a row was written."""
    if sdk < 30 or not canonical.startswith(STORAGE + "/"):
        return False
    kind = media_kind(canonical.rsplit("/", 1)[-1])
    if kind is None:
        return False
    now = time.time() if now is None else now
    size = _size_of(host) if kind[1] == MEDIA_TYPE_IMAGE else (None, None)
    store.index(MediaFile(path=canonical, size=host.stat().st_size, mime_type=kind[0],
                          media_type=kind[1], taken_ms=int(now * 1000), width=size[0],
                          height=size[1], owner=None), now=now)
    return True


def _size_of(src: Path) -> tuple[int | None, int | None]:
    """Width/height for the MediaStore row (None when the file is not a readable image)."""
    try:
        from PIL import Image
        with Image.open(src) as im:
            return int(im.width), int(im.height)
    except Exception:  # noqa: BLE001 - a test may snap any bytes; the row then has NULLs
        return None, None


def copy_plain(src: Path, dst_dir: Path, name: str, with_video: bool = False) -> str | None:
    """For backends without a storage model (test backends): `.pending-NAME` then rename
    in the same directory, the fleet's behaviour before camera.py. Returns the video's
    name when one was recorded."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    pending = dst_dir / f".pending-{name}"
    shutil.copyfile(src, pending)
    os.replace(pending, dst_dir / name)
    if not with_video:
        return None
    vname = video_name(name)
    _write_file(dst_dir / vname, video_bytes())
    return vname


def video_name(image_name: str) -> str:
    """VID_<same stamp>.mp4 beside IMG_<stamp>.jpg (VID_<stem>.mp4 for other names)."""
    stem = image_name.rsplit(".", 1)[0]
    return ("VID" + stem[3:] if stem.startswith("IMG") else f"VID_{stem}") + ".mp4"
