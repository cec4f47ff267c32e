"""Provisioning: put models and programs on every phone, in parallel, verified, resumable.

Why this shape:
- One thread per phone: phones are independent, each has its own link; a slow or full phone
  delays and fails only itself (its outcome says why), never the others.
- Skip before sending: the phone hashes its copy (toybox `sha256sum`); an equal digest means
  nothing to send. Phones whose toybox lacks sha256sum are compared by size + `md5sum`, and
  the outcome says so (`method`).
- Never a half-written target: the file goes to a temporary name beside the target (same
  directory, so the final `mv` is a rename on one file system), is hashed there by the
  phone, and only then renamed over the target. An interrupted run leaves at most that
  temporary file, which the next run overwrites (its name is fixed per target).
- URLs (http/https) are downloaded once to a local cache.
- Bytes are hashed again as they are sent (`Device.push_file`'s streaming hook), so a local
  file that changes under us fails the push instead of being "verified" against itself.

Device text is untrusted: only the first 64 hex digits of a `sha256sum` line are read, and
every shell argument goes through `DevicePort.run` (quoted).
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import re
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from adbflow.device.port import DevicePort
from adbflow.errors import AdbError, AdbflowError

CHUNK = 1 << 20
PROGRESS_POLL_S = 0.25            # how often a phone's temp file is stat'ed for the bar
MIN_RATE_B_S = 2e6                # timeouts assume at least 2 MB/s (USB 2 does ~36 MB/s)
HASH_RATE_B_S = 20e6              # and that the phone hashes at least 20 MB/s
_HEX64 = re.compile(r"^([0-9a-fA-F]{64})\b")
_HEX32 = re.compile(r"^([0-9a-fA-F]{32})\b")


class Method(str, Enum):
    """How a phone's copy is compared with ours."""

    SHA256 = "sha256"
    SIZE_MD5 = "size+md5"          # toybox without sha256sum: size first, then md5sum


class State(str, Enum):
    PUSHED = "pushed"
    SKIPPED = "skipped"            # the phone already had the same content
    FAILED = "failed"


@dataclass(frozen=True)
class Item:
    """One `FILE=REMOTE` argument: a local path or an http(s) URL, and an absolute device path."""

    source: str
    remote: str

    @property
    def is_url(self) -> bool:
        return urllib.parse.urlsplit(self.source).scheme in ("http", "https")


@dataclass(frozen=True)
class LocalFile:
    """What we send: the local bytes (downloaded when the source is a URL) and their digests."""

    item: Item
    path: Path
    size: int
    sha256: str
    md5: str
    mode: int                      # 0o755 for executables, else 0o644


@dataclass
class FileOutcome:
    serial: str
    remote: str
    state: State
    method: Method | None = None
    bytes: int = 0
    seconds: float = 0.0
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = self.state.value
        d["method"] = self.method.value if self.method else None
        return d


@dataclass
class PhoneOutcome:
    serial: str
    files: list[FileOutcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(f.state is not State.FAILED for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return {"serial": self.serial, "ok": self.ok, "seconds": round(self.seconds, 3),
                "files": [f.to_json() for f in self.files]}


#: progress(serial, remote, done_bytes, total_bytes, phase) - phase: hash|push|verify|done|skip|fail
Progress = Callable[[str, str, int, int, str], None]


# ---------------------------------------------------------------------- arguments

def parse_item(text: str) -> Item:
    """`FILE=REMOTE`; REMOTE is an absolute device path (split at the last `=/`, so local
    paths and URLs may contain `=`)."""
    src, sep, rest = text.rpartition("=/")
    remote = "/" + rest
    if not sep or not src:
        raise AdbflowError(f"{text!r} is not FILE=REMOTE",
                           hint="e.g. models/m.gguf=/data/local/tmp/m.gguf")
    if remote.endswith("/") or "\n" in remote or "\0" in remote or "/../" in remote + "/":
        raise AdbflowError(f"{remote!r}: the device path must name a file (absolute, no `..`)",
                           hint="e.g. /data/local/tmp/model.gguf")
    return Item(src, posixpath.normpath(remote))


def temp_name(remote: str) -> str:
    """The temporary name beside `remote` (fixed: a rerun overwrites an interrupted one)."""
    d, base = posixpath.split(remote)
    return posixpath.join(d, f".{base}.adbflow-part")


def _digests(path: Path) -> tuple[int, str, str]:
    sha, md5, n = hashlib.sha256(), hashlib.md5(), 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as fh:
        while True:
            k = fh.readinto(buf)
            if not k:
                break
            sha.update(view[:k])
            md5.update(view[:k])
            n += k
    return n, sha.hexdigest(), md5.hexdigest()


def download(url: str, cache_dir: Path, *, timeout: float = 60.0) -> Path:
    """An http(s) URL into `cache_dir` (once: a cached copy is reused), atomically."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    base = re.sub(r"[^A-Za-z0-9._-]+", "_",
                  posixpath.basename(urllib.parse.urlsplit(url).path) or "download")[:60]
    dst = cache_dir / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{base.lstrip('.')}"
    if dst.is_file():
        return dst
    tmp = dst.with_name(dst.name + f".part-{os.getpid()}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, tmp.open("wb") as out:
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                out.write(chunk)
        os.replace(tmp, dst)
    except OSError as exc:
        raise AdbflowError(f"cannot download {url}: {exc}",
                           hint="check the URL, or download it and pass the local file") from None
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def prepare(items: Sequence[Item], cache_dir: Path) -> list[LocalFile]:
    """Local files for the items (URLs downloaded), with their size and digests."""
    out = []
    for item in items:
        path = download(item.source, cache_dir) if item.is_url else Path(item.source).expanduser()
        if not path.is_file():
            raise AdbflowError(f"{item.source}: not a file", hint="pass FILE=REMOTE with an "
                               "existing local file or an http(s) URL")
        size, sha, md5 = _digests(path)
        mode = 0o755 if os.access(path, os.X_OK) and not item.is_url else 0o644
        out.append(LocalFile(item, path, size, sha, md5, mode))
    return out


# ---------------------------------------------------------------------- one phone

class PhoneDigest:
    """The phone's digest of a file, by the best tool it has (probed once per phone)."""

    def __init__(self, device: DevicePort) -> None:
        self.device = device
        self.method: Method | None = None

    def _run(self, argv: list[str], timeout: float) -> tuple[int, str, str]:
        res = self.device.run(argv, timeout=timeout, check=False)
        return res.exit_code, res.stdout, res.stderr

    def matches(self, remote: str, want: LocalFile) -> bool:
        """Does the phone's `remote` hold exactly `want`? False when missing. A sync stat
        comes first: a missing file or another size differs without hashing anything
        (hashing a model on the phone takes seconds)."""
        timeout = 30.0 + want.size / HASH_RATE_B_S
        entry = self.device.stat(remote, timeout=30.0)
        if entry is None or int(entry.size) != want.size:
            return False
        if self.method in (None, Method.SHA256):
            code, out, err = self._run(["sha256sum", remote], timeout)
            m = _HEX64.match(out.strip())
            if m:
                self.method = Method.SHA256
                return m.group(1).lower() == want.sha256
            if not _tool_missing(code, out + err):
                self.method = Method.SHA256
                return False       # no such file (or unreadable): send it
            self.method = Method.SIZE_MD5
        code, out, err = self._run(["md5sum", remote], timeout)
        m = _HEX32.match(out.strip())
        return m is not None and m.group(1).lower() == want.md5


def _tool_missing(code: int, text: str) -> bool:
    """A shell's "command not found" (127) or toybox's "Unknown command"."""
    low = text.lower()
    return code == 127 or "not found" in low and "no such file" not in low \
        or "unknown command" in low or "inaccessible or not found" in low


def _progress_poller(device: DevicePort, path: str, total: int, stop: threading.Event,
                     report: Callable[[int], None]) -> None:
    """While a push runs, stat its temporary file so the bar moves (the sync push reports
    nothing until DONE; adbd writes the file as data arrives)."""
    while not stop.wait(PROGRESS_POLL_S):
        try:
            entry = device.stat(path, timeout=5.0)
        except AdbflowError:
            continue
        if entry is not None:
            report(min(total, int(entry.size)))


def _push(device: DevicePort, lf: LocalFile, tmp: str, report: Callable[[int], None]) -> int:
    """Push to the temporary name. With `Device.push_file` the bytes are hashed as they
    are sent (a local file that changed since it was hashed fails here, not on the
    phone) and progress comes from the sent bytes; other ports: stat-polled progress."""
    timeout = 30.0 + lf.size / MIN_RATE_B_S
    push_file = getattr(device, "push_file", None)
    if push_file is not None:
        sent = hashlib.sha256()
        state = {"n": 0, "reported": 0}

        def on_data(chunk: memoryview) -> None:
            sent.update(chunk)
            state["n"] += len(chunk)
            if state["n"] - state["reported"] >= 4 << 20:
                state["reported"] = state["n"]
                report(state["n"])
        n = int(push_file(lf.path, tmp, timeout=timeout, mode=lf.mode, on_data=on_data))
        if sent.hexdigest() != lf.sha256:
            raise AdbflowError(f"{lf.path} changed while it was being sent",
                               hint="run provision again once the file is complete")
        return n
    stop = threading.Event()
    poller = threading.Thread(target=_progress_poller, daemon=True,
                              args=(device, tmp, lf.size, stop, report))
    poller.start()
    try:
        return device.push(lf.path, tmp, timeout=timeout, mode=lf.mode)
    finally:
        stop.set()
        poller.join(timeout=2.0)


def provision_file(device: DevicePort, digest: PhoneDigest, lf: LocalFile,
                   progress: Progress) -> FileOutcome:
    """One file on one phone: skip if equal, else push to temp, verify there, rename."""
    serial, remote = device.serial, lf.item.remote
    t0 = time.monotonic()
    out = FileOutcome(serial, remote, State.FAILED)
    tmp = temp_name(remote)
    try:
        progress(serial, remote, 0, lf.size, "hash")
        if digest.matches(remote, lf):
            out.state, out.method = State.SKIPPED, digest.method
            progress(serial, remote, lf.size, lf.size, "skip")
            return out
        out.bytes = _push(device, lf, tmp, lambda n: progress(serial, remote, n, lf.size, "push"))
        progress(serial, remote, lf.size, lf.size, "verify")
        if not digest.matches(tmp, lf):
            raise AdbError(serial, f"verify {tmp}", message="the phone's copy differs from "
                           "the laptop's after the push", hint="the transfer was damaged; "
                           "run provision again")
        device.run(["mv", "-f", tmp, remote], timeout=30.0)
        out.state, out.method = State.PUSHED, digest.method
        progress(serial, remote, lf.size, lf.size, "done")
        return out
    except AdbflowError as exc:
        out.reason = _reason(exc)
        _remove_quietly(device, tmp)
        progress(serial, remote, 0, lf.size, "fail")
        return out
    finally:
        out.seconds = round(time.monotonic() - t0, 3)


def _reason(exc: AdbflowError) -> str:
    """The phone's own words when it refused (read-only, no space), else the error."""
    stderr = (getattr(exc, "stderr", "") or "").strip()
    text = str(exc)
    return f"{text} ({stderr.splitlines()[-1]})" if stderr and stderr not in text else text


def _remove_quietly(device: DevicePort, path: str) -> None:
    try:
        device.run(["rm", "-f", path], timeout=10.0, check=False)
    except AdbflowError:
        pass


def provision_phone(device: DevicePort, files: Sequence[LocalFile],
                    progress: Progress) -> PhoneOutcome:
    t0 = time.monotonic()
    digest = PhoneDigest(device)
    outcome = PhoneOutcome(device.serial)
    for lf in files:
        outcome.files.append(provision_file(device, digest, lf, progress))
    outcome.seconds = time.monotonic() - t0
    return outcome


def provision(devices: Sequence[DevicePort], files: Sequence[LocalFile], *,
              progress: Progress | None = None) -> list[PhoneOutcome]:
    """Every phone in parallel (one thread each); outcomes in the order of `devices`."""
    report: Progress = progress or (lambda *a: None)
    if not devices:
        return []
    with ThreadPoolExecutor(max_workers=min(64, len(devices)),
                            thread_name_prefix="adbflow-provision") as pool:
        return list(pool.map(lambda d: provision_phone(d, files, report), devices))


def summary(files: Sequence[LocalFile], phones: Sequence[PhoneOutcome],
            seconds: float) -> dict[str, Any]:
    """The `--json` document."""
    return {"files": [{"source": f.item.source, "remote": f.item.remote, "bytes": f.size,
                       "sha256": f.sha256} for f in files],
            "phones": [p.to_json() for p in phones],
            "ok": all(p.ok for p in phones), "seconds": round(seconds, 3)}
