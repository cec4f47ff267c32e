"""The pure half of picture detection: names, inotifyd lines and the per-folder state.

Why apart from the device I/O (adbflow.runtime.detect): every decision (is this a picture,
is this event a finished file, has this file held still for two looks, was it reported
already) is a pure function of what the device said, unit-tested without a device.

A file counts only once it is fully written: an IN_CLOSE_WRITE (`w`) or IN_MOVED_TO (`y`,
the letter the code prints for moved-in although toybox's help text calls it `m`) event, a
MediaStore row (published = finished), or the same size and mtime on two looks. The second
look is one `stat` of just that file SETTLE_S after the listing first saw it; a file still
being written (size/mtime moved) is looked at again, a few times, then left to the listings.
A listing entry is the device layer's `RemoteEntry` (`Entry` here).
"""
from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from adbflow.device import RemoteEntry as Entry
from adbflow.runtime import mediastore
from adbflow.runtime.mediastore import DEFAULT_WATCH_DIRS, STORAGE_ROOT

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
class NewPicture:
    serial: str
    directory: str
    name: str
    size: int
    mtime: float
    how: str  # "inotify" | "listing" | "backlog" | "mediastore"
    ino: int = 0   # inode (0: the device does not say); part of the identity

    @property
    def path(self) -> str:
        return f"{self.directory.rstrip('/')}/{self.name}"

    @property
    def key(self) -> tuple[str, int, float, int]:
        return (self.name, self.size, self.mtime, self.ino)


@dataclass
class _Obs:
    size: int
    mtime: float
    ino: int = 0
    looks: int = 1
    event: bool = False
    how: str = "listing"
    recheck_at: float | None = None   # when to stat it for its second look (None: no stat)
    rechecks: int = 0


@dataclass
class DetectionState:
    """Per-device detection decisions (pure: feed it listings, events and stats).

    `ignore` holds (name, size, mtime, inode) identities never to report: the baseline
    (pictures present before watching started) and everything already reported. The inode
    (0 where the device does not give it) makes a file replaced by another of the same size
    with the mtime kept (renamed over it: a new inode) a new picture. With `settle_s` set
    and a `now` given to observe_listing, a newly seen file is due for a one-file re-check
    (`due`, then `observe_recheck`) settle_s later instead of waiting for the next listing.
    """

    serial: str
    directory: str = PICTURES_DIR
    ignore: set[tuple[str, int, float, int]] = field(default_factory=set)
    stable_looks: int = 2
    settle_s: float | None = None
    max_rechecks: int = MAX_RECHECKS
    _obs: dict[str, _Obs] = field(default_factory=dict)
    _pending_events: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        # (name, size, mtime) identities (callers without inodes) mean inode 0: unknown
        self.ignore = {k if len(k) == 4 else (*k, 0) for k in self.ignore}

    def _report(self, name: str, o: _Obs, how: str) -> NewPicture | None:
        key = (name, o.size, o.mtime, o.ino)
        if key in self.ignore:
            return None
        self.ignore.add(key)
        return NewPicture(self.serial, self.directory, name, o.size, o.mtime, how, o.ino)

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
            ino = int(getattr(e, "ino", 0) or 0)
            if (e.name, e.size, e.mtime, ino) in self.ignore:
                self._obs.pop(e.name, None)
                continue
            o = self._obs.get(e.name)
            if o is not None and (o.size, o.mtime, o.ino) == (e.size, e.mtime, ino):
                o.looks += 1
            else:   # new, or changed since the last look (the re-check budget carries over)
                o = self._obs[e.name] = _Obs(e.size, e.mtime, ino, how=how,
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
        ino = int(getattr(entry, "ino", 0) or 0)
        if (entry.size, entry.mtime, ino) == (o.size, o.mtime, o.ino):
            o.looks += 1
        else:
            o.size, o.mtime, o.ino, o.looks = entry.size, entry.mtime, ino, 1
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
        o = _Obs(entry.size, entry.mtime, int(getattr(entry, "ino", 0) or 0), event=True)
        self._obs.pop(name, None)
        return self._report(name, o, how)
