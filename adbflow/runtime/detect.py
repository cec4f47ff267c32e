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
import shlex
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol, Sequence

from adbflow.errors import AdbError, AdbflowError, AdbTimeoutError, DeviceUnavailableError
from adbflow.runtime import mediastore
from adbflow.runtime.mediastore import (DEFAULT_WATCH_DIRS, MAX_DEPTH, MAX_SUBDIRS,
                                        MEDIASTORE_SDK, STORAGE_ROOT)

PICTURES_DIR = "/storage/emulated/0/Pictures"
WATCH_DIRS: tuple[str, ...] = tuple(f"{STORAGE_ROOT}/{d}" for d in DEFAULT_WATCH_DIRS)
LISTING_EVERY_WITH_MEDIASTORE = 5   # with MediaStore, list folders every 5th poll only
# A camera on Android 11+ writes `.pending-<ts>-NAME` through the view we watch (inotify
# sees its close_write), then MediaProvider publishes it by a rename we do not see: the
# pending write is the hint to ask MediaStore now rather than at the next poll.
HINT_DELAYS_S = (0.05, 0.25, 0.6, 1.2)
POLL_WORKERS = 16                   # devices polled in parallel (a `content` call is ~0.3 s)
# `w` close_write, `m`/`y` moved from/to. The first letter is doubled for the toybox bug
# that skipped it; a doubled letter is harmless on fixed builds.
INOTIFY_MASK = "wwmy"
_READY_EVENTS = frozenset("wy")
MAX_NAME_BYTES = 255
SETTLE_S = 0.3        # second look at a newly listed file (one stat) after this many seconds
MAX_RECHECKS = 3      # a file that keeps changing is then left to the periodic listings


@dataclass(frozen=True)
class InotifyEvent:
    events: str
    watched: str
    name: str | None


def inotifyd_command(directory: str | Sequence[str] = PICTURES_DIR,
                     mask: str = INOTIFY_MASK) -> str:
    """The device command streaming events for one or more directories (toybox inotifyd
    takes several PATH:MASK arguments); falls back to `toybox inotifyd` on devices without
    the applet link."""
    dirs = [directory] if isinstance(directory, str) else list(directory)
    arg = " ".join(shlex.quote(f"{d}:{mask}") for d in dirs)
    return f"inotifyd - {arg} 2>/dev/null || exec toybox inotifyd - {arg}"


def parse_inotifyd_line(line: str) -> InotifyEvent | None:
    """`EVENTS<TAB>DIR<TAB>NAME` (or `EVENTS<TAB>DIR`); None for anything else.

    The name is the rest of the line after the second tab (names may contain tabs or
    spaces, never newlines — a name with a newline arrives in pieces; listing catches it).
    """
    line = line.rstrip("\r\n")
    parts = line.split("\t", 2)
    if len(parts) < 2:
        return None
    events, watched = parts[0], parts[1]
    if not events or any(c not in "acew0rmyndDM uox" for c in events):
        return None
    name = parts[2] if len(parts) == 3 and parts[2] != "" else None
    return InotifyEvent(events=events, watched=watched, name=name)


def is_candidate_name(name: str) -> bool:
    """Could this entry (a path relative to a watched folder: `IMG_1.jpg`,
    `Screenshots/S.png`) be a picture to process? Not: dotfiles and dot-folders (camera temp
    files `.pending-*`, `.trashed-*`, `.thumbnails`), partial files, too deep, and anything
    that is not an image by its name (videos, documents: ignored, not failed jobs). A file
    named like an image that is not one still counts: it gets a clear error record."""
    return mediastore.is_picture_path(name)


@dataclass(frozen=True)
class Entry:
    """A listing entry as the detector needs it (adb.RemoteEntry has the same fields)."""

    name: str
    size: int
    mtime: float
    is_file: bool = True


@dataclass(frozen=True)
class NewPicture:
    serial: str
    directory: str
    name: str
    size: int
    mtime: float
    how: str  # "inotify" | "listing" | "backlog" | "mediastore"

    @property
    def path(self) -> str:
        return f"{self.directory.rstrip('/')}/{self.name}"

    @property
    def key(self) -> tuple[str, int, float]:
        return (self.name, self.size, self.mtime)


@dataclass
class _Obs:
    size: int
    mtime: float
    looks: int = 1
    event: bool = False
    how: str = "listing"
    recheck_at: float | None = None   # when to stat it for its second look (None: no stat)
    rechecks: int = 0


@dataclass
class DetectionState:
    """Per-device detection decisions (pure: feed it listings, events and stats).

    `ignore` holds (name, size, mtime) identities never to report: the baseline (pictures
    present before watching started) and everything already reported. With `settle_s` set
    and a `now` given to observe_listing, a newly seen file is due for a one-file re-check
    (`due`, then `observe_recheck`) settle_s later instead of waiting for the next listing.
    """

    serial: str
    directory: str = PICTURES_DIR
    ignore: set[tuple[str, int, float]] = field(default_factory=set)
    stable_looks: int = 2
    settle_s: float | None = None
    max_rechecks: int = MAX_RECHECKS
    _obs: dict[str, _Obs] = field(default_factory=dict)
    _pending_events: set[str] = field(default_factory=set)

    def _report(self, name: str, o: _Obs, how: str) -> NewPicture | None:
        key = (name, o.size, o.mtime)
        if key in self.ignore:
            return None
        self.ignore.add(key)
        return NewPicture(self.serial, self.directory, name, o.size, o.mtime, how)

    def _schedule(self, o: _Obs, now: float | None) -> None:
        if self.settle_s is None or now is None or o.event or o.rechecks >= self.max_rechecks:
            o.recheck_at = None
        else:
            o.recheck_at = now + self.settle_s

    def observe_listing(self, entries: Iterable[Entry], *, how: str = "listing",
                        now: float | None = None) -> list[NewPicture]:
        """One look at the directory. Reports files whose size+mtime held for
        `stable_looks` consecutive looks, or that an event already declared complete.
        `now` (monotonic seconds) schedules the settle re-check of files seen first now."""
        found: list[NewPicture] = []
        present: set[str] = set()
        for e in entries:
            if not e.is_file or not is_candidate_name(e.name):
                continue
            present.add(e.name)
            if (e.name, e.size, e.mtime) in self.ignore:
                self._obs.pop(e.name, None)
                continue
            o = self._obs.get(e.name)
            if o is not None and o.size == e.size and o.mtime == e.mtime:
                o.looks += 1
            else:   # new, or changed since the last look (the re-check budget carries over)
                o = self._obs[e.name] = _Obs(e.size, e.mtime, how=how,
                                             rechecks=o.rechecks if o is not None else 0)
                self._schedule(o, now)
            if e.name in self._pending_events:   # its writer closed it: complete now
                o.event = True
                self._pending_events.discard(e.name)
            if o.event or o.looks >= self.stable_looks:
                pic = self._report(e.name, o, "inotify" if o.event else o.how)
                self._obs.pop(e.name, None)
                if pic:
                    found.append(pic)
        for gone in set(self._obs) - present:
            del self._obs[gone]
        return found

    def due(self, now: float) -> list[str]:
        """Files whose settle re-check is due at `now` (stat each, then observe_recheck)."""
        return sorted(n for n, o in self._obs.items()
                      if o.recheck_at is not None and o.recheck_at <= now)

    def next_due(self) -> float | None:
        """When the earliest re-check falls due (monotonic seconds), or None."""
        return min((o.recheck_at for o in self._obs.values() if o.recheck_at is not None),
                   default=None)

    def observe_recheck(self, name: str, entry: Entry | None, *,
                        now: float | None = None) -> NewPicture | None:
        """The settle stat of one file: the same size+mtime as the listing saw is its
        second look (reported now); a change restarts the count and, a few times, the
        settle wait; a vanished file is forgotten."""
        o = self._obs.get(name)
        if o is None:
            return None
        o.recheck_at = None
        if entry is None or not entry.is_file:
            del self._obs[name]
            return None
        o.rechecks += 1
        if (entry.size, entry.mtime) == (o.size, o.mtime):
            o.looks += 1
        else:
            o.size, o.mtime, o.looks = entry.size, entry.mtime, 1
        if o.event or o.looks >= self.stable_looks:
            del self._obs[name]
            return self._report(name, o, "inotify" if o.event else o.how)
        self._schedule(o, now)
        return None

    def observe_event(self, ev: InotifyEvent) -> str | None:
        """An inotifyd line. Returns the file name to stat now when the event says a
        candidate file was completed (close_write / moved in), else None."""
        if ev.name is None or not is_candidate_name(ev.name):
            return None
        if not (set(ev.events) & _READY_EVENTS):
            return None
        self._pending_events.add(ev.name)
        return ev.name

    def observe_stat(self, name: str, entry: Entry | None, *,
                     how: str = "inotify") -> NewPicture | None:
        """The stat that followed a completion event (inotify close/move, or a MediaStore
        row: published means finished): report now."""
        self._pending_events.discard(name)
        if entry is None or not entry.is_file or not is_candidate_name(name):
            self._obs.pop(name, None)
            return None
        o = _Obs(entry.size, entry.mtime, event=True)
        self._obs.pop(name, None)
        return self._report(name, o, how)


class DeviceLike(Protocol):
    serial: str

    def list_dir(self, remote: str, *, timeout: float) -> list: ...

    def stat(self, remote: str, *, timeout: float): ...

    def stream_lines(self, cmd: str, *, timeout: float | None = None): ...

    def run(self, argv: Sequence[str], *, timeout: float, **kw): ...


# (serial, watched folder, entries at first contact) -> identities to ignore (baseline +
# already journaled). Entry names are paths relative to the watched folder.
InitialDecision = Callable[[str, str, Sequence[Entry]], set[tuple[str, int, float]]]


def _entries(raw: Iterable, prefix: str = "") -> list[Entry]:
    return [Entry(prefix + e.name, int(e.size), float(e.mtime), bool(e.is_file)) for e in raw]


def _device_gone(exc: BaseException) -> bool:
    return isinstance(exc, (AdbTimeoutError, DeviceUnavailableError))


class DeviceWatch:
    """One device: inotifyd stream (a thread), MediaStore queries (Android 11+) and
    listings, over every watched folder and its subfolders."""

    def __init__(self, device: DeviceLike, *, directory: str | None = None,
                 directories: Sequence[str] | None = None,
                 timeout: float = 10.0, use_inotify: bool = True,
                 use_mediastore: bool = True,
                 events: "queue.Queue[tuple[str, InotifyEvent]] | None" = None,
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
        self._stream = None
        self._restart = threading.Event()
        self._thread: threading.Thread | None = None
        self.inotify_lines = 0

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
            out += _entries(raw, prefix)
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
        return None if raw is None else Entry(rel, int(raw.size), float(raw.mtime),
                                              bool(raw.is_file))

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
        self.events: "queue.Queue[tuple[str, InotifyEvent]]" = queue.Queue()
        self.watches: dict[str, DeviceWatch] = {}

    def sync(self, devices: Sequence[DeviceLike]) -> list[NewPicture]:
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
        for (serial, _w), (pics, exc) in zip(watches, results):
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
