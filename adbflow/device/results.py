"""What a device call returns: plain frozen records, shared by `Device` and test fakes."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ShellResult:
    serial: str
    cmd: str
    exit_code: int
    stdout: str
    stderr: str
    elapsed_s: float


@dataclass(frozen=True)
class RemoteEntry:
    """A file on the device. `name` is untrusted: sanitize before using it on the laptop."""
    name: str
    size: int
    mtime: float
    is_file: bool
    is_dir: bool = False      # a real directory (lstat: a symlink to one is not)
    # inode number (adb sync v2: STA2/LIS2, Android 9/11+); 0 = unknown (older adbd). It
    # tells a same-size, same-mtime replacement (a new file renamed over) from the original.
    ino: int = 0
