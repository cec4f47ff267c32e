"""Notice new pictures on the phones: toybox inotifyd streamed per device, plus listing.

Why both: inotify is instant where it fires, but on Android 11+ /storage/emulated/0 is a
FUSE mount where writes by other apps may raise no event, and toybox builds before 2024-03
skip the first mask letter (so we repeat it: `:wwmy`) and block-buffer a piped stdout.
A periodic `sync LIST` of the directory is the safety net. A file counts only once it is
fully written: an IN_CLOSE_WRITE (`w`) or IN_MOVED_TO (`y`, the letter the code prints for
moved-in although the help text calls it `m`) event, or the same size and mtime on two
consecutive listings. Dotfiles (camera temp files such as `.pending-NAME`) never count.

The decisions (`DetectionState`, `parse_inotifyd_line`, `is_candidate_name`) are pure and
unit-tested; `DeviceWatch` does the device I/O through `adbflow.adb.Device`.
"""
from __future__ import annotations

import queue
import shlex
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol, Sequence

from adbflow.errors import AdbError, AdbflowError

PICTURES_DIR = "/storage/emulated/0/Pictures"
# `w` close_write, `m`/`y` moved from/to. The first letter is doubled for the toybox bug
# that skipped it; a doubled letter is harmless on fixed builds.
INOTIFY_MASK = "wwmy"
_READY_EVENTS = frozenset("wy")
MAX_NAME_BYTES = 255


@dataclass(frozen=True)
class InotifyEvent:
    events: str
    watched: str
    name: str | None


def inotifyd_command(directory: str = PICTURES_DIR, mask: str = INOTIFY_MASK) -> str:
    """The device command streaming events for `directory`; falls back to `toybox inotifyd`
    on devices without the applet link."""
    arg = shlex.quote(f"{directory}:{mask}")
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
    """Could this directory entry be a picture to process? (Not: dotfiles, camera temp
    files, names that are not a single path component.) Non-image names still count: they
    get a clear error record instead of being silently ignored."""
    if not name or name in (".", "..") or name.startswith("."):
        return False
    if "/" in name or "\x00" in name:
        return False
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        return False
    if name.endswith((".tmp", ".part", "~")) or name.startswith("pending-"):
        return False
    return True


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
    how: str  # "inotify" | "listing" | "backlog"

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


@dataclass
class DetectionState:
    """Per-device detection decisions (pure: feed it listings, events and stats).

    `ignore` holds (name, size, mtime) identities never to report: the baseline (pictures
    present before watching started) and everything already reported.
    """

    serial: str
    directory: str = PICTURES_DIR
    ignore: set[tuple[str, int, float]] = field(default_factory=set)
    stable_looks: int = 2
    _obs: dict[str, _Obs] = field(default_factory=dict)
    _pending_events: set[str] = field(default_factory=set)

    def _report(self, name: str, o: _Obs, how: str) -> NewPicture | None:
        key = (name, o.size, o.mtime)
        if key in self.ignore:
            return None
        self.ignore.add(key)
        return NewPicture(self.serial, self.directory, name, o.size, o.mtime, how)

    def observe_listing(self, entries: Iterable[Entry], *, how: str = "listing") -> list[NewPicture]:
        """One look at the directory. Reports files whose size+mtime held for
        `stable_looks` consecutive looks, or that an event already declared complete."""
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
            else:
                o = self._obs[e.name] = _Obs(e.size, e.mtime, how=how)
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

    def observe_event(self, ev: InotifyEvent) -> str | None:
        """An inotifyd line. Returns the file name to stat now when the event says a
        candidate file was completed (close_write / moved in), else None."""
        if ev.name is None or not is_candidate_name(ev.name):
            return None
        if not (set(ev.events) & _READY_EVENTS):
            return None
        self._pending_events.add(ev.name)
        return ev.name

    def observe_stat(self, name: str, entry: Entry | None) -> NewPicture | None:
        """The stat that followed a completion event: report now (the writer closed it)."""
        self._pending_events.discard(name)
        if entry is None or not entry.is_file:
            self._obs.pop(name, None)
            return None
        o = _Obs(entry.size, entry.mtime, event=True)
        self._obs.pop(name, None)
        return self._report(name, o, "inotify")


class DeviceLike(Protocol):
    serial: str

    def list_dir(self, remote: str, *, timeout: float) -> list: ...

    def stat(self, remote: str, *, timeout: float): ...

    def stream_lines(self, cmd: str, *, timeout: float | None = None): ...


# (serial, entries at first contact) -> identities to ignore (baseline + already journaled)
InitialDecision = Callable[[str, Sequence[Entry]], set[tuple[str, int, float]]]


def _entries(raw: Iterable) -> list[Entry]:
    return [Entry(e.name, int(e.size), float(e.mtime), bool(e.is_file)) for e in raw]


class DeviceWatch:
    """inotifyd stream (a thread) + listing for one device's pictures directory."""

    def __init__(self, device: DeviceLike, *, directory: str = PICTURES_DIR,
                 timeout: float = 10.0, use_inotify: bool = True,
                 events: "queue.Queue[tuple[str, InotifyEvent]] | None" = None) -> None:
        self.device = device
        self.serial = device.serial
        self.directory = directory
        self.timeout = timeout
        self.use_inotify = use_inotify
        self.events = events if events is not None else queue.Queue()
        self.state: DetectionState | None = None
        self.alive = True
        self.error: str | None = None
        self._stop = threading.Event()
        self._stream = None
        self._thread: threading.Thread | None = None
        self.inotify_lines = 0

    def start(self, decide: InitialDecision) -> list[NewPicture]:
        """First contact: list, let `decide` pick what to ignore, start the event stream.
        Returns nothing to process yet (new files need a second look or an event)."""
        entries = _entries(self.device.list_dir(self.directory, timeout=self.timeout))
        self.state = DetectionState(self.serial, self.directory, ignore=set(decide(self.serial,
                                                                                  entries)))
        found = self.state.observe_listing(entries, how="backlog")
        if self.use_inotify:
            self._thread = threading.Thread(target=self._stream_loop, daemon=True,
                                            name=f"inotifyd-{self.serial}")
            self._thread.start()
        return found

    def _stream_loop(self) -> None:
        backoff = 0.5
        cmd = inotifyd_command(self.directory)
        while not self._stop.is_set():
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
            except AdbflowError as exc:
                self.error = str(exc)
            except Exception as exc:  # noqa: BLE001 - a watcher thread must never die silently
                self.error = f"inotifyd stream: {exc!r}"
            finally:
                self._stream = None
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, 10.0)

    def poll(self) -> list[NewPicture]:
        """One listing. Raises AdbError subclasses when the device is gone."""
        assert self.state is not None, "start() first"
        return self.state.observe_listing(
            _entries(self.device.list_dir(self.directory, timeout=self.timeout)))

    def on_event(self, ev: InotifyEvent) -> NewPicture | None:
        assert self.state is not None, "start() first"
        name = self.state.observe_event(ev)
        if name is None:
            return None
        raw = self.device.stat(f"{self.directory.rstrip('/')}/{name}", timeout=self.timeout)
        entry = None if raw is None else Entry(name, int(raw.size), float(raw.mtime),
                                               bool(raw.is_file))
        return self.state.observe_stat(name, entry)

    def stop(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except Exception:  # noqa: BLE001
                pass


class Watcher:
    """All devices' DeviceWatch objects; the pipeline asks it for new pictures."""

    def __init__(self, decide: InitialDecision, *, directory: str = PICTURES_DIR,
                 timeout: float = 10.0, use_inotify: bool = True,
                 on_error: Callable[[str, str], None] | None = None) -> None:
        self.decide = decide
        self.directory = directory
        self.timeout = timeout
        self.use_inotify = use_inotify
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
            w = DeviceWatch(dev, directory=self.directory, timeout=self.timeout,
                            use_inotify=self.use_inotify, events=self.events)
            try:
                found += w.start(self.decide)
            except AdbError as exc:
                self.on_error(serial, f"cannot list {self.directory}: {exc}")
                w.stop()
                continue
            self.watches[serial] = w
        return found

    def poll(self) -> list[NewPicture]:
        found: list[NewPicture] = []
        for serial, w in list(self.watches.items()):
            try:
                found += w.poll()
            except AdbError as exc:
                self.on_error(serial, f"listing failed, will retry: {exc}")
                self.watches.pop(serial).stop()
        return found

    def wait_events(self, timeout: float) -> list[NewPicture]:
        """Handle inotify events arriving within `timeout` seconds."""
        found: list[NewPicture] = []
        deadline = time.monotonic() + timeout
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

    def unreported(self) -> int:
        """Candidate files seen but not yet reported (still being written, or waiting for
        their second look): a watch that stops now has not accounted for them."""
        n = 0
        for w in self.watches.values():
            if w.state is not None:
                n += len(w.state._obs) + len(w.state._pending_events)
        return n

    def stop(self) -> None:
        for w in self.watches.values():
            w.stop()
        self.watches.clear()
