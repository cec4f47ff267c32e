"""`DevicePort`: the one interface between adbflow and a phone.

Why one Protocol: stages, the watcher, the bidder (and later leases, telemetry, the mesh
and split runs) need a narrow device surface, and tests need fakes of it. As httpx's
`MockTransport` implements `BaseTransport`, every fake in `tests/` implements this
Protocol, and `adbflow.device.device.Device` implements it against a real adb server; a type
checker then catches drift between them.

Every method takes a timeout (a deadline for the whole adb call). What each raises is
part of the contract (all from `adbflow.errors`):

- `AdbTimeoutError`: the deadline passed; the command on the device was killed.
- `DeviceUnavailableError`: the device or its adb server is gone (subclasses say which:
  ServerUnreachable, DeviceNotFound, DeviceUnauthorized, DeviceOffline, ConnectionLost).
- `AdbError`: the command ran and failed (`CommandFailed`: `check=True` and a non-zero
  exit code), or a transfer was refused (`RemoteNotFound`, `PermissionDenied`,
  `NotPermitted`, `ReadOnlyFileSystem`, `NotARegularFile`, `TransferTooLarge`), or the
  output was too long (`OutputTooLarge`); `.kind` names the reason (adbflow/errors.py).

Fakes raise the same classes, so code above this boundary branches on classes only.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover - types only
    from adbflow.device.results import RemoteEntry, ShellResult
    from adbflow.device.stream import LineStream


@runtime_checkable
class DevicePort(Protocol):
    """What adbflow may do with one phone. `serial` names it in every error."""

    serial: str

    def shell(self, cmd: str, *, timeout: float, stdin: bytes | None = None,
              check: bool = True, max_output: int = 16 << 20) -> ShellResult:
        """Run `cmd` with the device's sh; real exit code and separate stderr.

        `cmd` is shell syntax: build it only from constants and `shlex.quote`d data.
        Raises AdbTimeoutError, DeviceUnavailableError, CommandFailed or a more specific
        AdbError (non-zero exit with check), OutputTooLarge.
        """
        ...

    def run(self, argv: Sequence[str], *, timeout: float, stdin: bytes | None = None,
            check: bool = True, max_output: int = 16 << 20) -> ShellResult:
        """Run a program with every argument quoted. Raises as `shell`."""
        ...

    def push(self, local: Path, remote: str, *, timeout: float, mode: int = 0o644) -> int:
        """Copy a laptop file to the device path `remote`; returns bytes sent.

        Raises AdbTimeoutError, DeviceUnavailableError, AdbError (refused:
        ReadOnlyFileSystem, NotPermitted, PermissionDenied; a full disk is a plain AdbError).
        """
        ...

    def pull(self, remote: str, local: Path, *, timeout: float,
             max_bytes: int | None = None) -> int:
        """Copy a device file to `local` atomically (temp + rename); returns bytes.

        Raises AdbTimeoutError, DeviceUnavailableError, RemoteNotFound, PermissionDenied,
        NotARegularFile, TransferTooLarge (more than `max_bytes`).
        """
        ...

    def stat(self, remote: str, *, timeout: float) -> RemoteEntry | None:
        """lstat of a device path; None when it does not exist.

        Raises AdbTimeoutError, DeviceUnavailableError.
        """
        ...

    def list_dir(self, remote: str, *, timeout: float) -> list[RemoteEntry]:
        """Entries of a device directory (names are untrusted text).

        Raises AdbTimeoutError, DeviceUnavailableError, AdbError (not a directory).
        """
        ...

    def stream_lines(self, cmd: str, *, timeout: float | None = None) -> LineStream:
        """Stream stdout lines of a long-running command; closing it kills the command.

        Raises AdbTimeoutError, DeviceUnavailableError when opening.
        """
        ...
