"""Notice new pictures on the phones: toybox inotifyd streamed per device, plus listing.

Why both: inotify is instant where it fires, but on Android 11+ /storage/emulated/0 is a
FUSE mount where writes by other apps may raise no event, and toybox builds before 2024-03
skip the first mask letter (so we repeat it: `:wwmy`) and block-buffer a piped stdout.
A periodic `sync LIST` of the directory is the safety net. A file counts only once it is
fully written: an IN_CLOSE_WRITE (`w`) or IN_MOVED_TO (`y`, the letter the code prints for
moved-in although the help text calls it `m`) event, or the same size and mtime on two
looks. The second look is not the next full listing (that bounded listing-only detection by
two poll intervals) but one `stat` of just that file SETTLE_S after the listing first saw it:
a new picture is reported ~one poll interval + SETTLE_S after it lands, and a file still
being written (size/mtime moved) is looked at again, a few times, then left to the listings.
Dotfiles (camera temp files such as `.pending-NAME`, `.trashed-NAME`) never count, and only
images count (by name: jpg/jpeg/png/webp/heic/heif/bmp/gif): videos and other files are
ignored, not failed jobs.

Several folders are watched (default `DCIM/Camera` and `Pictures` under
/storage/emulated/0), each with its subfolders (bounded depth and count); a picture's name
is its path relative to the watched folder (`Screenshots/S_1.png`). On Android 11+ a
MediaStore query (adbflow.runtime.mediastore) is the reliable path: camera apps publish
there, and the FUSE view `adb shell` watches gets no inotify event for the rename. Then
inotify is the fast path where it fires, and the listings, less often, the last resort.

The decisions (`DetectionState`, `parse_inotifyd_line`, `is_candidate_name`) are pure and
unit-tested; `DeviceWatch` does the device I/O through the DevicePort interface.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from adbflow.device import DevicePort
from adbflow.errors import AdbError, AdbflowError, AdbTimeoutError, DeviceUnavailableError
from adbflow.runtime import mediastore
from adbflow.runtime.detect_state import (  # noqa: F401 - re-exported: the detection API
    HINT_DELAYS_S,
    INOTIFY_MASK,
    LISTING_EVERY_WITH_MEDIASTORE,
    MAX_NAME_BYTES,
    MAX_RECHECKS,
    PICTURES_DIR,
    POLL_WORKERS,
    SETTLE_S,
    WATCH_DIRS,
    DetectionState,
    Entry,
    InotifyEvent,
    NewPicture,
    inotifyd_command,
    is_candidate_name,
    parse_inotifyd_line,
)
from adbflow.runtime.mediastore import MAX_DEPTH, MAX_SUBDIRS, MEDIASTORE_SDK, STORAGE_ROOT

# (serial, watched folder, entries at first contact) -> identities to ignore (baseline +
# already journaled). Entry names are paths relative to the watched folder.
InitialDecision = Callable[[str, str, Sequence[Entry]], set[tuple[str, int, float, int]]]


def _entries(raw: Iterable[Entry], prefix: str = "", *, inodes: bool = False) -> list[Entry]:
    """Entries named relative to a watched folder, numbers normalised; the inode kept only
    when the device gives it in listings and stats alike (`inodes`), else 0 for all."""
    return [Entry(prefix + e.name, int(e.size), float(e.mtime), bool(e.is_file),
                  ino=int(getattr(e, "ino", 0) or 0) if inodes else 0) for e in raw]


def _device_gone(exc: BaseException) -> bool:
    return isinstance(exc, (AdbTimeoutError, DeviceUnavailableError))


class DeviceWatch:
    """One device: inotifyd stream (a thread), MediaStore queries (Android 11+) and
    listings, over every watched folder and its subfolders."""

    def __init__(self, device: DevicePort, *, directory: str | None = None,
                 directories: Sequence[str] | None = None,
                 timeout: float = 10.0, use_inotify: bool = True,
                 use_mediastore: bool = True,
                 events: queue.Queue[tuple[str, InotifyEvent]] | None = None,
                 settle_s: float | None = SETTLE_S,
                 listing_every: int = LISTING_EVERY_WITH_MEDIASTORE) -> None:
        self.device = device
        self.serial = device.serial
        roots = list(directories) if directories else [directory or PICTURES_DIR]
        self.roots: tuple[str, ...] = tuple(r.rstrip("/") or "/" for r in roots)
        self.directory = self.roots[0]
        self.timeout = timeout
        self.settle_s = settle_s
        self.use_inotify = use_inotify
        self.use_mediastore = use_mediastore
        self.listing_every = max(1, listing_every)
        self.events = events if events is not None else queue.Queue()
        self.states: dict[str, DetectionState] = {}
        self.state: DetectionState | None = None      # the first root's (kept for callers)
        self.subdirs: dict[str, tuple[str, str]] = {}  # device dir -> (root, relative prefix)
        self.sdk: int | None = None
        self.mediastore_after: int | None = None     # high-water _id; None: not in use
        self.mediastore_rejected = 0
        self.alive = True
        self.error: str | None = None
        self._polls = 0
        self._hints: list[float] = []        # when to query MediaStore after a pending write
        self._sdk_tries = 0
        self._stop = threading.Event()
        self._stream: Any = None
        self._restart = threading.Event()
        self._thread: threading.Thread | None = None
        self.inotify_lines = 0
        self._inodes: bool | None = None

    @property
    def inodes(self) -> bool:
        """Whether this device's listings (LIS2, adbd's ls_v2, Android 11+) and stats carry
        inodes: then the inode is part of a picture's identity. Decided once per device:
        identities of one device must never mix known and unknown inodes (a listing without
        and a stat with would make one picture look like two)."""
        if self._inodes is None:
            features = getattr(self.device, "features", None)
            try:
                self._inodes = callable(features) and "ls_v2" in features(timeout=self.timeout)
            except AdbflowError:
                return False                     # asked again next time
        return bool(self._inodes)

    # ------------------------------------------------------------------ listing
    def _walk(self, root: str) -> list[Entry]:
        """Entries of `root` and its subfolders (names relative to root), bounded: at most
        MAX_DEPTH levels and MAX_SUBDIRS folders per device; dot-folders and symlinks are
        not entered. A watched folder that does not exist (no DCIM/Camera yet) is empty."""
        out: list[Entry] = []
        todo: list[tuple[str, str, int]] = [(root, "", 0)]
        while todo:
            path, prefix, depth = todo.pop(0)
            try:
                raw = self.device.list_dir(path, timeout=self.timeout)
            except AdbError as exc:
                if _device_gone(exc):
                    raise
                continue            # not a directory (any more): nothing to see there
            if path not in self.subdirs and len(self.subdirs) < MAX_SUBDIRS:
                self.subdirs[path] = (root, prefix)
                self._restart.set()     # the inotifyd command must name the new folder
            for e in raw:
                if getattr(e, "is_dir", False) and depth < MAX_DEPTH \
                        and mediastore.is_candidate_component(e.name) \
                        and (f"{path}/{e.name}" in self.subdirs
                             or len(self.subdirs) < MAX_SUBDIRS):
                    todo.append((f"{path}/{e.name}", f"{prefix}{e.name}/", depth + 1))
            out += _entries(raw, prefix, inodes=self.inodes)
        return out

    def _list_all(self) -> dict[str, list[Entry]]:
        return {root: self._walk(root) for root in self.roots}

    # ------------------------------------------------------------------ start
    def start(self, decide: InitialDecision) -> list[NewPicture]:
        """First contact: list, let `decide` pick what to ignore, start the event stream,
        learn the Android version and MediaStore's newest row. Returns pictures to process
        at once (none, usually: new files need a second look or an event)."""
        found: list[NewPicture] = []
        now = time.monotonic()
        for root, entries in self._list_all().items():
            st = DetectionState(self.serial, root, ignore=set(decide(self.serial, root, entries)),
                                settle_s=self.settle_s)
            self.states[root] = st
            found += st.observe_listing(entries, how="backlog", now=now)
        self.state = self.states[self.roots[0]]
        if self.use_mediastore:
            self._start_mediastore()
        if self.use_inotify:
            self._thread = threading.Thread(target=self._stream_loop, daemon=True,
                                            name=f"inotifyd-{self.serial}")
            self._thread.start()
        return found

    def _start_mediastore(self) -> None:
        """Learn the Android version (once; retried on later polls while unknown) and, on
        11+, MediaStore's newest image id (rows up to it are the baseline's business)."""
        if self.sdk is None:
            try:
                res = self.device.run(["getprop", "ro.build.version.sdk"], timeout=self.timeout,
                                      check=False, max_output=4096)
                self.sdk = mediastore.parse_sdk(res.stdout) if res.exit_code == 0 else None
            except AdbError as exc:
                if _device_gone(exc):
                    raise
                self.sdk = None
            self._sdk_tries += 1
        if self.sdk is None or self.sdk < MEDIASTORE_SDK:
            return
        if not any(r == STORAGE_ROOT or r.startswith(STORAGE_ROOT + "/") for r in self.roots):
            return
        rows = self._query(0)
        if rows is not None:
            self.mediastore_after = max((r.id for r in rows), default=0)

    def _query(self, after: int) -> list[mediastore.MediaRow] | None:
        """One `content query` round trip; None when the device gave no usable answer (then
        MediaStore is not used on it: listings and inotify remain)."""
        try:
            res = self.device.run(mediastore.content_query_argv(after), timeout=self.timeout,
                                  check=False, max_output=mediastore.MAX_QUERY_OUTPUT)
        except AdbError as exc:
            if _device_gone(exc):
                raise
            self.error = f"content query: {exc}"
            return None
        parsed = mediastore.parse_content_query(res.stdout)
        self.mediastore_rejected += parsed.rejected
        if res.exit_code != 0 or not parsed.recognised:
            self.error = "content query gave no MediaStore answer: " + \
                (res.stderr or res.stdout).strip()[:200]
            return None
        return parsed.rows

    # ------------------------------------------------------------------ inotify
    def _watched_dirs(self) -> list[str]:
        return sorted(self.subdirs) or list(self.roots)

    def _stream_loop(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            self._restart.clear()
            cmd = inotifyd_command(self._watched_dirs())
            try:
                with self.device.stream_lines(cmd) as stream:
                    self._stream = stream
                    for line in stream:
                        if self._stop.is_set():
                            break
                        ev = parse_inotifyd_line(line)
                        if ev is not None:
                            self.inotify_lines += 1
                            self.events.put((self.serial, ev))
                            backoff = 0.5
                        if self._restart.is_set():
                            break       # a folder appeared: watch it too
            except AdbflowError as exc:
                self.error = str(exc)
            except Exception as exc:  # noqa: BLE001 - a watcher thread must never die silently
                self.error = f"inotifyd stream: {exc!r}"
            finally:
                self._stream = None
            if self._restart.is_set() and not self._stop.is_set():
                continue
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, 10.0)

    def _route(self, ev: InotifyEvent) -> tuple[DetectionState, InotifyEvent] | None:
        """An event of a watched device folder -> (state of its root, event named by the
        path relative to that root)."""
        where = self.subdirs.get(ev.watched.rstrip("/")) if ev.watched else None
        if where is None:
            where = (ev.watched.rstrip("/"), "") if ev.watched.rstrip("/") in self.states \
                else None
        if where is None or ev.name is None:
            return None
        root, prefix = where
        st = self.states.get(root)
        if st is None:
            return None
        return st, InotifyEvent(ev.events, root, prefix + ev.name)

    # ------------------------------------------------------------------ polling
    def poll(self) -> list[NewPicture]:
        """One look: the MediaStore query where it works, and the listings (every poll
        without MediaStore, every `listing_every` polls with it). Raises AdbError
        subclasses when the device is gone."""
        assert self.states, "start() first"
        found: list[NewPicture] = []
        self._polls += 1
        if self.use_mediastore and self.sdk is None and self._sdk_tries < 5 \
                and self._polls % 10 == 0:
            self._start_mediastore()      # getprop did not answer at first contact
        if self.mediastore_after is not None:
            found += self.poll_mediastore()
        if self.mediastore_after is None or self._polls % self.listing_every == 0:
            now = time.monotonic()
            for root, entries in self._list_all().items():
                st = self.states.get(root)
                if st is not None:
                    found += st.observe_listing(entries, now=now)
        return found

    def poll_mediastore(self) -> list[NewPicture]:
        """Rows newer than the last seen id, each confirmed by one sync stat (the row's
        size/date are device text; the picture's identity is what the file system says)."""
        if self.mediastore_after is None:
            return []
        rows = self._query(self.mediastore_after)
        if rows is None:
            self.mediastore_after = None       # fall back to listings + inotify
            return []
        picks, self.mediastore_after = mediastore.new_pictures(rows, self.roots,
                                                               self.mediastore_after)
        found: list[NewPicture] = []
        for _id, root, rel in picks:
            st = self.states.get(root)
            if st is None:
                continue
            pic = st.observe_stat(rel, self._stat(root, rel), how="mediastore")
            if pic is not None:
                found.append(pic)
        return found

    def _stat(self, root: str, rel: str) -> Entry | None:
        raw = self.device.stat(f"{root.rstrip('/')}/{rel}", timeout=self.timeout)
        if raw is None:
            return None
        return Entry(rel, int(raw.size), float(raw.mtime), bool(raw.is_file),
                     ino=int(getattr(raw, "ino", 0) or 0) if self.inodes else 0)

    def hint(self, now: float) -> None:
        """A pending file was written: query MediaStore soon, a few times, until it shows."""
        if self.mediastore_after is not None:
            self._hints = [now + d for d in HINT_DELAYS_S]

    def recheck(self, now: float) -> list[NewPicture]:
        """The due settle re-checks (one stat per file) and MediaStore hint queries.
        Raises AdbError subclasses."""
        assert self.states, "start() first"
        found: list[NewPicture] = []
        if self._hints and self._hints[0] <= now:
            self._hints = [t for t in self._hints if t > now]
            got = self.poll_mediastore()
            if got:
                self._hints = []
            found += got
        for root, st in self.states.items():
            for name in st.due(now):
                pic = st.observe_recheck(name, self._stat(root, name), now=time.monotonic())
                if pic is not None:
                    found.append(pic)
        return found

    def next_due(self) -> float | None:
        due = [d for st in self.states.values() for d in [st.next_due()] if d is not None]
        if self._hints:
            due.append(self._hints[0])
        return min(due, default=None)

    def unreported(self) -> int:
        return sum(len(st._obs) + len(st._pending_events) for st in self.states.values())

    def clear_rechecks(self) -> None:
        for st in self.states.values():
            for o in st._obs.values():
                o.recheck_at = None

    def on_event(self, ev: InotifyEvent) -> NewPicture | None:
        assert self.states, "start() first"
        routed = self._route(ev)
        if routed is None:
            return None
        st, rev = routed
        leaf = rev.name.rsplit("/", 1)[-1] if rev.name else ""
        if leaf.startswith(".pending-") and set(rev.events) & set("wy"):
            self.hint(time.monotonic())
        name = st.observe_event(rev)
        if name is None:
            return None
        return st.observe_stat(name, self._stat(st.directory, name))

    def stop(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except Exception:  # noqa: BLE001
                pass


def _poll_one(w: DeviceWatch) -> tuple[list[NewPicture], AdbError | None]:
    try:
        return w.poll(), None
    except AdbError as exc:
        return [], exc


class Watcher:
    """All devices' DeviceWatch objects; the pipeline asks it for new pictures."""

    def __init__(self, decide: InitialDecision, *, directory: str | None = None,
                 directories: Sequence[str] | None = None,
                 timeout: float = 10.0, use_inotify: bool = True, use_mediastore: bool = True,
                 on_error: Callable[[str, str], None] | None = None,
                 settle_s: float | None = SETTLE_S) -> None:
        self.decide = decide
        self.directories: tuple[str, ...] = tuple(directories) if directories else \
            ((directory,) if directory else WATCH_DIRS)
        self.directory = self.directories[0]
        self.timeout = timeout
        self.use_inotify = use_inotify
        self.use_mediastore = use_mediastore
        self.settle_s = settle_s
        self.on_error = on_error or (lambda serial, msg: None)
        self.events: queue.Queue[tuple[str, InotifyEvent]] = queue.Queue()
        self.watches: dict[str, DeviceWatch] = {}

    def sync(self, devices: Sequence[DevicePort]) -> list[NewPicture]:
        """Start watching devices that appeared; forget those that vanished."""
        found: list[NewPicture] = []
        current = {d.serial: d for d in devices}
        for serial in list(self.watches):
            if serial not in current:
                self.watches.pop(serial).stop()
        for serial, dev in current.items():
            if serial in self.watches:
                continue
            w = DeviceWatch(dev, directories=self.directories, timeout=self.timeout,
                            use_inotify=self.use_inotify, use_mediastore=self.use_mediastore,
                            events=self.events, settle_s=self.settle_s)
            try:
                found += w.start(self.decide)
            except AdbError as exc:
                self.on_error(serial, f"cannot list {', '.join(self.directories)}: {exc}")
                w.stop()
                continue
            self.watches[serial] = w
        return found

    def poll(self) -> list[NewPicture]:
        """One look on every device, in parallel (a MediaStore query is a process start on
        the phone, ~0.3 s: one after the other they would stretch the poll interval)."""
        found: list[NewPicture] = []
        watches = list(self.watches.items())
        if len(watches) > 1:
            with ThreadPoolExecutor(max_workers=min(POLL_WORKERS, len(watches)),
                                    thread_name_prefix="adbflow-poll") as pool:
                results = list(pool.map(lambda item: _poll_one(item[1]), watches))
        else:
            results = [_poll_one(w) for _s, w in watches]
        for (serial, _w), (pics, exc) in zip(watches, results, strict=True):
            if exc is not None:
                self.on_error(serial, f"listing failed, will retry: {exc}")
                self.watches.pop(serial).stop()
            found += pics
        return found

    def next_due(self) -> float | None:
        """When the earliest settle re-check on any device falls due, or None."""
        return min((d for w in self.watches.values() for d in [w.next_due()] if d is not None),
                   default=None)

    def recheck(self) -> list[NewPicture]:
        """Run every due settle re-check. A failed stat leaves the file to the listings."""
        found: list[NewPicture] = []
        now = time.monotonic()
        for serial, w in list(self.watches.items()):
            try:
                found += w.recheck(now)
            except AdbError as exc:
                self.on_error(serial, f"stat for the settle re-check failed: {exc}")
                w.clear_rechecks()
        return found

    def wait_events(self, timeout: float) -> list[NewPicture]:
        """Handle inotify events arriving within `timeout` seconds; returns early when
        a settle re-check falls due (the caller then runs `recheck`)."""
        found: list[NewPicture] = []
        deadline = time.monotonic() + timeout
        due = self.next_due()
        if due is not None:
            deadline = min(deadline, due)
        while True:
            left = deadline - time.monotonic()
            try:
                serial, ev = self.events.get(timeout=max(0.0, left)) if left > 0 else \
                    self.events.get_nowait()
            except queue.Empty:
                return found
            w = self.watches.get(serial)
            if w is None:
                continue
            try:
                pic = w.on_event(ev)
            except AdbError as exc:
                self.on_error(serial, f"stat after inotify event failed: {exc}")
                continue
            if pic is not None:
                found.append(pic)
                deadline = time.monotonic()  # hand it over now; drain the rest next round
            due = w.next_due()               # the event may have asked for a MediaStore query
            if due is not None:
                deadline = min(deadline, due)

    def unreported(self) -> int:
        """Candidate files seen but not yet reported (still being written, or waiting for
        their second look): a watch that stops now has not accounted for them."""
        return sum(w.unreported() for w in self.watches.values())

    def stop(self) -> None:
        for w in self.watches.values():
            w.stop()
        self.watches.clear()
