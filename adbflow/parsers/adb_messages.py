"""Parse what adb itself prints: error messages, `adb devices [-l]` listings, push/pull summaries.

Why: adb's wording changed across versions (`error:` / `adb: error:` / `adb.exe:` prefixes,
`more than one device and emulator` vs `device/emulator`); the adb layer turns any of them
into one error kind with advice, so the user reads "accept the RSA prompt on the phone"
instead of a raw adb line. Pure functions; the fixtures in tests/fixtures/adb_errors pin them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from adbflow.errors import ParseError
from adbflow.parsers.numbers import finite_float


@dataclass(frozen=True)
class AdbProblem:
    """One recognised adb failure: a stable kind (scripts branch on it) and what to do."""
    kind: str
    hint: str
    line: str                 # the adb line that matched (for the message)
    unavailable: bool         # True: the device cannot be used at all (re-bid elsewhere)


# (kind, regex over one line, hint, device unavailable?) — first match wins, order matters.
_RULES: tuple[tuple[str, re.Pattern[str], str, bool], ...] = (
    ("unauthorized", re.compile(r"device unauthorized|\bunauthorized\b"),
     "accept the RSA prompt (\"Allow USB debugging?\") on the phone, then retry", True),
    ("no-permissions", re.compile(r"no permissions|insufficient permissions"),
     "the laptop user may not open the USB device: install udev rules (e.g. the "
     "android-sdk-platform-tools-common package) and replug", True),
    ("offline", re.compile(r"device offline|\boffline\b"),
     "the device is offline: replug the cable or `adb reconnect`; for Wi-Fi devices `adb connect` again", True),
    ("more-than-one", re.compile(r"more than one (device|emulator)"),
     "several devices are connected: pick one with -s SERIAL (or ANDROID_SERIAL)", False),
    ("no-devices", re.compile(r"no devices(/emulators)? found|no devices found"),
     "no device is connected: check the cable, enable USB debugging, or `adb connect HOST:PORT`", True),
    ("device-not-found", re.compile(r"device '.*' not found|device not found"),
     "that serial is not known to this adb server: see `adbflow devices`", True),
    ("read-only", re.compile(r"Read-only file system"),
     "that path is read-only on the device: use /data/local/tmp or /sdcard", False),
    ("not-permitted", re.compile(r"secure_mkdirs failed|fchown failed|Operation not permitted"),
     "the adb shell user may not write there (scoped storage): use /data/local/tmp", False),
    ("permission-denied", re.compile(r"Permission denied"),
     "the adb shell user may not access that path: use /data/local/tmp or /sdcard", False),
    ("not-a-file", re.compile(r"not a regular file"),
     "that device path is a directory or a special file, not a picture: it is not pulled", False),
    ("remote-not-found", re.compile(r"remote object .* does not exist|No such file or directory|does not exist"),
     "the file is not on the device (it may have been moved or deleted)", False),
    ("command-not-found", re.compile(r"inaccessible or not found|not found$"),
     "the program is not installed on the device (see README: push it to /data/local/tmp)", False),
    ("protocol-fault", re.compile(r"protocol fault"),
     "the adb connection broke: `adb kill-server` and retry; check the cable/USB hub", True),
    ("closed", re.compile(r"^error ?: closed\b|\berror: closed\b"),
     "the device closed the connection (adbd restarted or device rebooting): retry in a few seconds", True),
    ("connection-reset", re.compile(r"Connection reset by peer|connect error"),
     "the adb connection broke: retry; replug the device if it persists", True),
)

_SERVER_RESTART = re.compile(r"adb server version \((\d+)\) doesn't match this client \((\d+)\)")


def classify_adb_error(text: str) -> AdbProblem | None:
    """The first recognised problem in adb's output (stderr, FAIL payload or exception text).

    None when nothing matches: the caller keeps the raw text. A version-mismatch restart line
    alone is not an error (adb recovers), so it is skipped.
    """
    for raw in text.splitlines():
        line = raw.strip()
        if not line or _SERVER_RESTART.search(line):
            continue
        for kind, rx, hint, unavailable in _RULES:
            if rx.search(line):
                return AdbProblem(kind=kind, hint=hint, line=line[:300], unavailable=unavailable)
    return None


@dataclass(frozen=True)
class DeviceListing:
    """One line of `adb devices [-l]`: serial, state and the -l tags (model, product, ...)."""
    serial: str
    state: str
    tags: dict[str, str] = field(default_factory=dict)


_STATE_WORDS = ("device", "offline", "unauthorized", "bootloader", "recovery", "sideload",
                "host", "authorizing", "connecting", "rescue", "no")


def parse_adb_devices(text: str) -> list[DeviceListing]:
    """`adb devices` / `adb devices -l` output (also the raw host:devices(-l) payload).

    Separators are TAB (real) or runs of spaces (pasted); `no permissions; see [...]` is a
    two-word state. Lines that are not device lines (header, prompts, `* daemon started`)
    are skipped. Raises ParseError when no line looks like the format at all.
    """
    out: list[DeviceListing] = []
    saw_header = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("List of devices attached"):
            saw_header = True
            continue
        if line.startswith("*") or line.startswith("adb") or line.startswith("$"):
            continue
        parts = line.split()
        if len(parts) < 2 or parts[1] not in _STATE_WORDS or parts[0].endswith(":"):
            continue
        serial, state = parts[0], parts[1]
        rest = parts[2:]
        if state == "no":
            if not rest or not rest[0].startswith("permissions"):
                continue
            state, rest = "no permissions", []
        if any(":" not in part for part in rest):
            continue                 # prose such as `error: device unauthorized.`
        tags = {}
        for part in rest:
            if ":" in part:
                k, v = part.split(":", 1)
                tags[k] = v
        out.append(DeviceListing(serial=serial, state=state, tags=tags))
    if not out and not saw_header:
        raise ParseError("adb-devices", "no `List of devices attached` header nor device lines", text)
    return out


@dataclass(frozen=True)
class TransferSummary:
    """adb push/pull/install speed line: `N file(s) pushed, M skipped. X MB/s (B bytes in S s)`."""
    direction: str | None          # "pushed" | "pulled" | None (old install speed line)
    files: int | None
    skipped: int | None
    nbytes: int | None
    seconds: float | None


_SUMMARY = re.compile(
    r"(?P<files>\d+) files? (?P<dir>pushed|pulled)(?:, (?P<skipped>\d+) skipped)?\."
    r"(?:\s+[\d.]+ [KM]B/s \((?P<bytes>\d+) bytes in (?P<secs>[\d.]+)s\))?")
_OLD_SPEED = re.compile(r"^[\d.]+ KB/s \((?P<bytes>\d+) bytes in (?P<secs>[\d.]+)s\)")


def parse_transfer_summaries(text: str) -> list[TransferSummary]:
    """Every push/pull summary line (per-directory lines and the grand total alike)."""
    found: list[TransferSummary] = []
    for line in text.splitlines():
        m = _SUMMARY.search(line)
        if m:
            found.append(TransferSummary(
                direction=m["dir"], files=int(m["files"]),
                skipped=int(m["skipped"]) if m["skipped"] else None,
                nbytes=int(m["bytes"]) if m["bytes"] else None,
                seconds=finite_float(m["secs"]) if m["secs"] else None))
            continue
        m = _OLD_SPEED.search(line.strip())
        if m:
            found.append(TransferSummary(direction=None, files=None, skipped=None,
                                         nbytes=int(m["bytes"]), seconds=finite_float(m["secs"])))
    return found


_VERSION = re.compile(r"Android Debug Bridge version (\S+)\s*\nVersion (\S+)")


def parse_adb_version(text: str) -> tuple[str, str]:
    """(`1.0.41`, `36.0.0-13206524`) from `adb version`."""
    m = _VERSION.search(text)
    if not m:
        raise ParseError("adb-version", "no `Android Debug Bridge version` line", text)
    return m[1], m[2]
