"""Which inventory lines are the same physical phone, which link to use, and what to call it.

Why: the inventory is keyed by (adb server, serial), and neither half alone names a phone.
The same serial can be two phones on two adb servers (two laptops each with an
`emulator-5554`); one phone can be two lines: over USB (`R5CT1234`) and over Wi-Fi after
`adb tcpip` (`192.168.1.7:5555`), or on two adb servers at once. Booking both lines of one
phone would double-book its CPU. The phone's own hardware serial (`ro.serialno`, else
`ro.boot.serialno`, read once per line) says which lines are one phone; of those the
fastest link is used: USB over an emulator's console link over TCP/Wi-Fi, a local adb
server over a remote one. A serial that names different phones on different servers gets a
unique name `SERIAL@HOST:PORT`, so the journal, bids and quarantine never mix them up.

Everything here is pure (tested without adb); adbflow.device.inventory.Inventory does the I/O.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# `adb connect` / `adb tcpip` serials: HOST:PORT (IPv4, [IPv6], names); wireless debugging
# (Android 11+) shows `adb-<id>-<rand>._adb-tls-connect._tcp` (mDNS) serials
_TCP = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[A-Za-z0-9.-]+):\d{1,5}$")
_MDNS = re.compile(r"\._adb-tls-(?:connect|pairing)\._tcp\.?$")
_EMULATOR = re.compile(r"^emulator-\d+$")
_HWID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

LINK_RANK = {"usb": 0, "emulator": 1, "tcp": 2}
UNKNOWN_HWIDS = frozenset({"", "unknown", "0123456789abcdef", "0123456789ABCDEF", "null"})


def link_kind(serial: str) -> str:
    """"usb", "emulator" or "tcp" (Wi-Fi / network), from the adb serial's shape."""
    if _EMULATOR.match(serial):
        return "emulator"
    if _TCP.match(serial) or _MDNS.search(serial):
        return "tcp"
    return "usb"


def clean_hwid(text: str | None) -> str | None:
    """A hardware serial from getprop output, or None when absent or not trustworthy:
    device text, so it is bounded and restricted; placeholder serials that many cheap
    phones share (`0123456789ABCDEF`) say nothing about identity."""
    if text is None:
        return None
    s = text.strip()
    if s in UNKNOWN_HWIDS or not _HWID.match(s):
        return None
    return s


@dataclass(frozen=True)
class Line:
    """One ready inventory line: (server, adb serial) with what is known about the phone."""

    server: Any               # AdbServer (hashable, str() = HOST:PORT, .is_local)
    serial: str
    hwid: str | None = None   # ro.serialno / ro.boot.serialno; None = unknown

    @property
    def key(self) -> tuple[str, str]:
        return (str(self.server), self.serial)


def link_rank(line: Line) -> tuple[int, int, str, str]:
    """Sort key: the preferred link of a phone first (pure, deterministic)."""
    local = 0 if getattr(line.server, "is_local", False) else 1
    return (LINK_RANK[link_kind(line.serial)], local, str(line.server), line.serial)


@dataclass(frozen=True)
class Choice:
    lines: list[Line]                             # one per physical phone, preferred link
    hidden: dict[tuple[str, str], Line]           # other link -> the line used instead
    names: dict[tuple[str, str], str]             # chosen line -> unique device name


def choose(lines: Iterable[Line]) -> Choice:
    """One line per physical phone (lines without a known hwid are each their own phone),
    the preferred link of each, and unique names for the chosen lines."""
    groups: dict[str, list[Line]] = {}
    chosen: list[Line] = []
    for ln in lines:
        if ln.hwid is None:
            chosen.append(ln)
        else:
            groups.setdefault(ln.hwid, []).append(ln)
    hidden: dict[tuple[str, str], Line] = {}
    for group in groups.values():
        group.sort(key=link_rank)
        chosen.append(group[0])
        for other in group[1:]:
            hidden[other.key] = group[0]
    chosen.sort(key=lambda ln: (ln.serial, str(ln.server)))
    count: dict[str, int] = {}
    for ln in chosen:
        count[ln.serial] = count.get(ln.serial, 0) + 1
    names = {ln.key: (ln.serial if count[ln.serial] == 1 else f"{ln.serial}@{ln.server}")
             for ln in chosen}
    return Choice(chosen, hidden, names)


def resolve_name(name: str, choice: Choice, all_lines: Sequence[Line]) -> Line | None:
    """The chosen line for a device name: a unique name, a plain adb serial when only one
    phone has it, or a hidden link's serial (a job recorded over USB, now on Wi-Fi)."""
    for ln in choice.lines:
        if choice.names[ln.key] == name:
            return ln
    matches = [ln for ln in all_lines if ln.serial == name]
    phones = {choice.hidden.get(ln.key, ln).key for ln in matches}
    if len(phones) == 1:
        key = phones.pop()
        return next(ln for ln in choice.lines if ln.key == key)
    return None
