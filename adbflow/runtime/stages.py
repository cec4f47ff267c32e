"""What each pipeline stage does on one device: pull, classify (push + label_image),
generate (llama-cli). One attempt each; retries and re-bidding live in adbflow.runtime.pipeline.

Why this split: a stage body is I/O against one `Device` and is idempotent (re-pulling to
the same local file, re-pushing to /data/local/tmp/received-image and re-running a model
are all harmless), so the pipeline may re-run any attempt whose result was not committed.
Every device argument goes through `Device.run(argv)` (shlex-quoted); device paths from
listings are only ever used with the sync protocol, never in a shell command.
"""
from __future__ import annotations

import hashlib
import re
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from adbflow.errors import AdbError, JobError, ParseError
from adbflow.parsers.label_image import parse_label_image
from adbflow.parsers.llama import parse_llama
from adbflow.runtime.story import whole_sentences

REMOTE_IMAGE = "/data/local/tmp/received-image"
MAX_TOOL_OUTPUT = 1 << 20   # label_image / llama-cli print a few kB; more is a runaway device


@dataclass
class StageTimeouts:
    """Seconds allowed per device call (every adb call has one)."""

    pull_s: float = 60.0
    push_s: float = 60.0
    classify_s: float = 180.0
    generate_s: float = 300.0
    stat_s: float = 10.0


class StageDevice(Protocol):
    serial: str

    def run(self, argv, **kw): ...

    def push(self, local: Path, remote: str, *, timeout: float, mode: int = 0o644) -> int: ...

    def pull(self, remote: str, local: Path, *, timeout: float,
             max_bytes: int | None = None) -> int: ...

    def stat(self, remote: str, *, timeout: float): ...


# ------------------------------------------------------------------ laptop-side names

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_component(text: str, limit: int = 60) -> str:
    """A file-name component from untrusted text: ASCII letters, digits, `._-` only, no
    leading dots, bounded. Never empty."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    out = _UNSAFE.sub("_", ascii_text).strip("._-")
    out = re.sub(r"\.{2,}", ".", out)
    return (out or "x")[:limit]


def local_picture_path(data_dir: Path, job_id: int, serial: str, device_path: str) -> Path:
    """Where job `job_id`'s copy of a device picture lives: inside data_dir/pictures, named
    `<job>-<sanitized name>-<hash of serial+path>`. Deterministic, so a re-run of the pull
    overwrites the same file (idempotent), and unique even when sanitizing collapses names."""
    name = device_path.rsplit("/", 1)[-1]
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    digest = hashlib.sha256(f"{serial}\0{device_path}".encode("utf-8", "surrogateescape")
                            ).hexdigest()[:10]
    ext_safe = safe_component(ext, 8).lower() if ext else "bin"
    fname = f"{job_id}-{safe_component(stem, 48)}-{digest}.{ext_safe}"
    directory = data_dir / "pictures" / safe_component(serial, 40)
    path = directory / fname
    ensure_inside(data_dir, path)
    return path


def ensure_inside(root: Path, path: Path) -> None:
    """Refuse any laptop path outside the data directory (defence in depth)."""
    root_r = root.resolve()
    parent = path.parent.resolve()
    if parent != root_r and root_r not in parent.parents:
        raise JobError(f"refusing to write {path}: outside the data directory {root}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------ stage bodies

def pull_picture(device: StageDevice, remote: str, local: Path, *, expected_size: int,
                 expected_mtime: float, max_bytes: int, timeouts: StageTimeouts) -> dict[str, Any]:
    """Copy the detected picture to the laptop. JobError when the file is empty, too big,
    vanished or changed since detection (its new version is a new picture)."""
    if expected_size == 0:
        raise JobError(f"{remote!r} on {device.serial} is empty (0 bytes)",
                       hint="the camera app may have failed to write it")
    if expected_size > max_bytes:
        raise JobError(f"{remote!r} on {device.serial} is {expected_size} bytes, above the "
                       f"{max_bytes}-byte limit", hint="raise --max-bytes to accept it")
    entry = device.stat(remote, timeout=timeouts.stat_s)
    if entry is None:
        raise JobError(f"{remote!r} vanished from {device.serial} before it was pulled")
    if int(entry.size) != expected_size or float(entry.mtime) != expected_mtime:
        raise JobError(f"{remote!r} on {device.serial} changed after detection "
                       f"({expected_size} -> {entry.size} bytes)",
                       hint="its new version is detected as a new picture")
    local.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    try:
        n = device.pull(remote, local, timeout=timeouts.pull_s + expected_size / 5e6,
                        max_bytes=max_bytes)
    except AdbError as exc:
        if "larger than" in str(exc):
            raise JobError(f"{remote!r} grew beyond {max_bytes} bytes while pulling") from exc
        if re.search(r"No such file|does not exist|Permission denied|not a regular",
                     f"{exc} {exc.stderr}", re.I) and type(exc) is AdbError:
            raise JobError(f"cannot pull {remote!r} from {device.serial}: {exc.message}") from exc
        raise
    pull_s = time.monotonic() - t0
    if n != expected_size:
        raise AdbError(device.serial, f"pull {remote}", message=f"got {n} of {expected_size} "
                       "bytes", hint="the transfer was cut; retrying")
    return {"bytes": n, "sha256": sha256_file(local), "local": str(local),
            "pull_s": round(pull_s, 4)}


def label_image_argv(spec: Any, image: str = REMOTE_IMAGE) -> list[str]:
    """label_image's argv from a profile's LabelImageSpec (each arg quoted by Device.run)."""
    argv = [spec.binary, "-m", spec.model, "-l", spec.labels, "-i", image,
            "-t", str(spec.threads)]
    if spec.count:
        argv += ["-c", str(spec.count)]
    return argv + list(spec.extra_args)


def llama_argv(spec: Any, prompt: str) -> list[str]:
    """llama-cli's argv from a profile's LlamaSpec; the prompt is one quoted argument."""
    return [spec.binary, "-m", spec.model, "-p", prompt, "-n", str(spec.n_predict),
            "-t", str(spec.threads), "-c", str(spec.ctx), *spec.extra_args]


def classify_on(device: StageDevice, spec: Any, bmp: Path, *,
                timeouts: StageTimeouts) -> dict[str, Any]:
    """Push the BMP to REMOTE_IMAGE and run label_image there. Raises AdbError family on
    device trouble and ParseError on output that holds no labels (both: try elsewhere)."""
    t0 = time.monotonic()
    pushed = device.push(bmp, REMOTE_IMAGE, timeout=timeouts.push_s)
    push_s = time.monotonic() - t0
    t1 = time.monotonic()
    res = device.run(label_image_argv(spec), timeout=timeouts.classify_s,
                     max_output=MAX_TOOL_OUTPUT)
    run_s = time.monotonic() - t1
    parsed = parse_label_image(res.stdout + "\n" + res.stderr)
    return {"labels": [lb.to_json() for lb in parsed.labels], "avg_ms": parsed.avg_ms,
            "model": parsed.model, "pushed_bytes": pushed, "remote_image": REMOTE_IMAGE,
            "push_s": round(push_s, 4), "run_s": round(run_s, 4)}


def generate_on(device: StageDevice, spec: Any, prompt: str, *,
                timeouts: StageTimeouts) -> dict[str, Any]:
    """Run llama-cli with the prompt; ParseError when there is no story or the output is
    not a finished llama-cli run."""
    t0 = time.monotonic()
    res = device.run(llama_argv(spec, prompt), timeout=timeouts.generate_s,
                     max_output=MAX_TOOL_OUTPUT)
    run_s = time.monotonic() - t0
    parsed = parse_llama(res.stdout, res.stderr, prompt=prompt, require_text=True,
                         require_timings=True)
    if len(parsed.text) < 2:
        raise ParseError("llama", "story too short", parsed.text)
    out = parsed.to_json()
    out["raw_text"] = out.pop("text")
    out["story"] = whole_sentences(parsed.text)
    out["run_s"] = round(run_s, 4)
    return out
