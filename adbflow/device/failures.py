"""The one place where adb failures become adbflow errors (the classes in adbflow.errors).

Why one place: shell, sync and streams meet the same faults (a server FAIL, a sync FAIL,
a passed deadline, a broken socket, a non-zero exit) and each must become the most
specific class with a `kind` from the rule table in `adbflow.parsers.adb_messages`, so
callers branch on classes instead of re-reading message text. As httpx maps transport
exceptions in one context manager, `adb_failures` wraps every wire operation of `Device`.

Two origins are told apart on purpose:
- the adb *server* refused (`Refused`): the device may be gone; an unrecognised refusal
  counts as unavailable (re-bid elsewhere), as it always has;
- the *device* answered (sync FAIL, non-zero exit): it is evidently reachable, so a message
  that merely mentions "offline" never makes it `DeviceUnavailableError`.
"""
from __future__ import annotations

import socket
from collections.abc import Callable
from types import TracebackType
from typing import Literal

from adbflow.device.server import AdbServer
from adbflow.device.wire import Refused, SyncFail, Wire
from adbflow.errors import (
    AdbError,
    AdbTimeoutError,
    AmbiguousDevice,
    CommandFailed,
    ConnectionLost,
    DeviceNotFound,
    DeviceOffline,
    DeviceUnauthorized,
    DeviceUnavailableError,
    NotARegularFile,
    NotPermitted,
    PermissionDenied,
    ReadOnlyFileSystem,
    RemoteNotFound,
    ServerUnreachable,
)
from adbflow.parsers.adb_messages import AdbProblem, classify_adb_error

# rule kind (parsers/adb_messages._RULES) -> class, for failures reported by the server
_SERVER_SIDE: dict[str, type[AdbError]] = {
    "unauthorized": DeviceUnauthorized,
    "no-permissions": DeviceUnauthorized,
    "offline": DeviceOffline,
    "no-devices": DeviceNotFound,
    "device-not-found": DeviceNotFound,
    "protocol-fault": ConnectionLost,
    "closed": ConnectionLost,
    "connection-reset": ConnectionLost,
    "more-than-one": AmbiguousDevice,
}

# rule kind -> class, for failures the device itself reported (sync FAIL, stderr)
_DEVICE_SIDE: dict[str, type[AdbError]] = {
    "read-only": ReadOnlyFileSystem,
    "not-permitted": NotPermitted,
    "permission-denied": PermissionDenied,
    "not-a-file": NotARegularFile,
    "remote-not-found": RemoteNotFound,
}

Output = Callable[[], tuple[str, str]]


def _no_output() -> tuple[str, str]:
    return "", ""


def tail(buf: bytes | bytearray, limit: int = 4000) -> str:
    """The last `limit` bytes of device output as text (what an error message carries)."""
    return bytes(buf[-limit:]).decode("utf-8", "replace")


def _hint(problem: AdbProblem | None) -> str | None:
    return problem.hint if problem else None


def refused_error(serial: str | None, cmd: str, message: str) -> AdbError:
    """The adb server answered FAIL (or listed the device in a state that is not usable)."""
    problem = classify_adb_error(message)
    if problem is None:
        return DeviceUnavailableError(serial, cmd, stderr=message, message=message)
    cls = _SERVER_SIDE.get(problem.kind) or _DEVICE_SIDE.get(problem.kind) or (
        DeviceUnavailableError if problem.unavailable else AdbError)
    return cls(serial, cmd, stderr=message, message=message, hint=problem.hint,
               kind=problem.kind)


def state_error(serial: str, cmd: str, state: str) -> DeviceUnavailableError:
    """The inventory lists `serial` in `state` (offline, unauthorized, ...), not `device`."""
    problem = classify_adb_error(state)
    cls = _SERVER_SIDE.get(problem.kind) if problem else None
    if cls is None or not issubclass(cls, DeviceUnavailableError):
        cls = DeviceUnavailableError
    return cls(serial, cmd, message=f"device is {state}", hint=_hint(problem),
               kind=problem.kind if problem else None)


def sync_error(serial: str, cmd: str, message: str) -> AdbError:
    """A sync FAIL: adbd refused the file operation (missing, read-only, denied, ...)."""
    problem = classify_adb_error(message)
    cls = _DEVICE_SIDE.get(problem.kind, AdbError) if problem else AdbError
    return cls(serial, cmd, stderr=message, message=message, hint=_hint(problem),
               kind=problem.kind if problem else None)


def exit_error(serial: str, cmd: str, *, stdout: str, stderr: str, exit_code: int) -> AdbError:
    """The command ran and exited non-zero; stderr may name a more specific reason."""
    problem = classify_adb_error(stderr) if stderr else None
    cls = _DEVICE_SIDE.get(problem.kind, CommandFailed) if problem else CommandFailed
    kind = problem.kind if problem and not problem.unavailable else None
    return cls(serial, cmd, stdout=stdout, stderr=stderr, exit_code=exit_code,
               hint=_hint(problem), kind=kind)


def timeout_error(serial: str, cmd: str, *, message: str, hint: str | None = None,
                  output: Output = _no_output) -> AdbTimeoutError:
    stdout, stderr = output()
    return AdbTimeoutError(serial, cmd, stdout=stdout, stderr=stderr, message=message, hint=hint)


def connect(server: AdbServer, serial: str, cmd: str, deadline: float | None) -> Wire:
    """A connection to `server`, or the error saying it cannot be reached."""
    try:
        return Wire(server, deadline)
    except TimeoutError as exc:
        raise AdbTimeoutError(serial, cmd, message=f"adb server {server} did not answer in time",
                              hint="is the adb server host reachable?") from exc
    except OSError as exc:
        raise ServerUnreachable(serial, cmd, message=f"adb server {server} unreachable: {exc}",
                                hint="start it (`adb start-server`) or fix --adb-server") from exc


class adb_failures:  # noqa: N801 - used like a function: `with adb_failures(...):`
    """Context manager translating the wire faults of one adb call into adbflow errors.

    `timeout_message`/`lost_message` (`{exc}` is replaced by the OS error) and the hints
    say what happened at this step; `output` returns the (stdout, stderr) tails seen so far.
    adbflow errors raised inside pass through; so do local file errors (FileNotFoundError,
    PermissionError, IsADirectoryError: the laptop side of a push or pull).
    """

    def __init__(self, serial: str, cmd: str, *, timeout_message: str = "timed out",
                 timeout_hint: str | None = None, lost_message: str = "connection lost ({exc})",
                 lost_hint: str | None = None, output: Output = _no_output) -> None:
        self.serial, self.cmd = serial, cmd
        self.timeout_message, self.timeout_hint = timeout_message, timeout_hint
        self.lost_message, self.lost_hint = lost_message, lost_hint
        self.output = output

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        if exc is None or isinstance(exc, AdbError):
            return False
        if isinstance(exc, Refused):
            raise refused_error(self.serial, self.cmd, str(exc)) from exc
        if isinstance(exc, SyncFail):
            raise sync_error(self.serial, self.cmd, str(exc)) from exc
        if isinstance(exc, socket.timeout):
            raise timeout_error(self.serial, self.cmd, message=self.timeout_message,
                                hint=self.timeout_hint, output=self.output) from exc
        if isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, PermissionError,
                                                             IsADirectoryError)):
            stdout, stderr = self.output()
            raise ConnectionLost(self.serial, self.cmd, stdout=stdout, stderr=stderr,
                                 message=self.lost_message.format(exc=exc),
                                 hint=self.lost_hint) from exc
        return False
