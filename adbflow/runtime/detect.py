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
Dotfiles (camera temp files such as `.pending-NAME`) never count.

The decisions (`DetectionState`, `parse_inotifyd_line`, `is_candidate_name`) are pure and
unit-tested; `DeviceWatch` does the device I/O through a `DevicePort`. A listing entry
is the device layer's `RemoteEntry` (one type for "a file on the phone"; `Entry` is its
name here).
"""
from __future__ import annotations

import queue
import shlex
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from adbflow.device import DevicePort
from adbflow.device import RemoteEntry as Entry
from adbflow.errors import AdbError, AdbflowError

PICTURES_DIR = "/storage/emulated/0/Pictures"
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
        # a complete listing: identities of files no longer there can go (bounded memory
        # over thousands of pictures; a file coming back maps to its existing job anyway)
        if len(self.ignore) > len(present):
            self.ignore = {k for k in self.ignore if k[0] in present}
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

    def observe_stat(self, name: str, entry: Entry | None) -> NewPicture | None:
        """The stat that followed a completion event: report now (the writer closed it)."""
        self._pending_events.discard(name)
        if entry is None or not entry.is_file:
            self._obs.pop(name, None)
            return None
        o = _Obs(entry.size, entry.mtime, event=True)
        self._obs.pop(name, None)
        return self._report(name, o, "inotify")


# (serial, entries at first contact) -> identities to ignore (baseline + already journaled)
InitialDecision = Callable[[str, Sequence[Entry]], set[tuple[str, int, float]]]


def _entries(raw: Iterable[Entry]) -> list[Entry]:
    """Listing entries with their numbers normalised (a port may hand back str sizes)."""
    return [Entry(e.name, int(e.size), float(e.mtime), bool(e.is_file)) for e in raw]


class DeviceWatch:
    """inotifyd stream (a thread) + listing for one device's pictures directory."""

    def __init__(self, device: DevicePort, *, directory: str = PICTURES_DIR,
                 timeout: float = 10.0, use_inotify: bool = True,
                 events: "queue.Queue[tuple[str, InotifyEvent]] | None" = None,
                 settle_s: float | None = SETTLE_S) -> None:
        self.device = device
        self.serial = device.serial
        self.directory = directory
        self.timeout = timeout
        self.settle_s = settle_s
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
                                                                                  entries)),
                                    settle_s=self.settle_s)
        found = self.state.observe_listing(entries, how="backlog", now=time.monotonic())
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
            _entries(self.device.list_dir(self.directory, timeout=self.timeout)),
            now=time.monotonic())

    def _stat(self, name: str) -> Entry | None:
        raw = self.device.stat(f"{self.directory.rstrip('/')}/{name}", timeout=self.timeout)
        return None if raw is None else Entry(name, int(raw.size), float(raw.mtime),
                                              bool(raw.is_file))

    def recheck(self, now: float) -> list[NewPicture]:
        """The due settle re-checks: one stat per file. Raises AdbError subclasses."""
        assert self.state is not None, "start() first"
        found: list[NewPicture] = []
        for name in self.state.due(now):
            pic = self.state.observe_recheck(name, self._stat(name), now=time.monotonic())
            if pic is not None:
                found.append(pic)
        return found

    def on_event(self, ev: InotifyEvent) -> NewPicture | None:
        assert self.state is not None, "start() first"
        name = self.state.observe_event(ev)
        if name is None:
            return None
        return self.state.observe_stat(name, self._stat(name))

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
                 on_error: Callable[[str, str], None] | None = None,
                 settle_s: float | None = SETTLE_S) -> None:
        self.decide = decide
        self.directory = directory
        self.timeout = timeout
        self.use_inotify = use_inotify
        self.settle_s = settle_s
        self.on_error = on_error or (lambda serial, msg: None)
        self.events: "queue.Queue[tuple[str, InotifyEvent]]" = queue.Queue()
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
            w = DeviceWatch(dev, directory=self.directory, timeout=self.timeout,
                            use_inotify=self.use_inotify, events=self.events,
                            settle_s=self.settle_s)
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

    def next_due(self) -> float | None:
        """When the earliest settle re-check on any device falls due, or None."""
        due = [d for w in self.watches.values() if w.state is not None
               for d in [w.state.next_due()] if d is not None]
        return min(due, default=None)

    def recheck(self) -> list[NewPicture]:
        """Run every due settle re-check. A failed stat leaves the file to the listings."""
        found: list[NewPicture] = []
        now = time.monotonic()
        for serial, w in list(self.watches.items()):
            try:
                found += w.recheck(now)
            except AdbError as exc:
                self.on_error(serial, f"stat for the settle re-check failed: {exc}")
                if w.state is not None:
                    for o in w.state._obs.values():
                        o.recheck_at = None
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
