"""Error classes that carry their context (device, command, output, exit code, advice).

Why: the user must be told which device, which command and what to do; scripts must be
able to branch on the kind of failure. Modelled on mobly's AdbError(cmd, stdout, stderr,
ret_code) plus a serial and a hint; the tree is drawn here as httpx's `_exceptions.py`
does, and `adbflow.device.failures` is the one place that turns a wire fault, an adb
server refusal, a sync FAIL or a failed command into the most specific class below.
Callers branch on these classes (or on `AdbError.kind`), never on message text.

    AdbflowError                    anything adbflow raises on purpose (.message, .hint)
    ├── AdbError                    an adb call failed (.serial .cmd .stdout .stderr
    │   │                           .exit_code .detail .kind)
    │   ├── AdbTimeoutError         the deadline passed; the command was killed
    │   ├── DeviceUnavailableError  the device or its server cannot be used: re-bid elsewhere
    │   │   ├── ServerUnreachable   no adb server answers at that address
    │   │   ├── DeviceNotFound      the server does not know the serial (device-not-found,
    │   │   │                       no-devices)
    │   │   ├── DeviceUnauthorized  RSA prompt not accepted, or no USB permission
    │   │   │                       (unauthorized, no-permissions)
    │   │   ├── DeviceOffline       offline
    │   │   └── ConnectionLost      the link broke mid-call (protocol-fault, closed,
    │   │                           connection-reset, socket errors)
    │   ├── CommandFailed           the command ran and exited non-zero (kind "exit"
    │   │                           unless stderr says more, e.g. "command-not-found")
    │   ├── AmbiguousDevice         more than one device matches (more-than-one)
    │   ├── RemoteNotFound          the device path does not exist (remote-not-found)
    │   ├── PermissionDenied        the shell user may not read/write it (permission-denied)
    │   ├── NotPermitted            the operation is refused there (not-permitted:
    │   │                           scoped storage, fchown)
    │   ├── ReadOnlyFileSystem      read-only
    │   ├── NotARegularFile         a pull of a directory or special file (not-a-file)
    │   ├── OutputTooLarge          the command printed more than max_output
    │   └── TransferTooLarge        the pulled file is bigger than max_bytes
    ├── ParseError                  device output in a format we do not understand
    ├── ProfileError                a profile TOML is missing or malformed
    ├── FleetError                  the virtual fleet could not start / a control call failed
    └── JobError                    a stage failed for a reason re-bidding cannot fix

`kind` is the rule name from `adbflow.parsers.adb_messages` where adb's text was
recognised, else the class's default kind (e.g. "timeout", "exit", "too-large").
"""
from __future__ import annotations

from typing import ClassVar


class AdbflowError(Exception):
    """Base of every error adbflow raises on purpose. `hint` says what to do."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class AdbError(AdbflowError):
    """An adb command failed on a device: non-zero exit, adb refusal or protocol fault.

    Attributes: `serial` (None: no device involved), `cmd` (what was run), `stdout` and
    `stderr` (tails of what the device printed), `exit_code` (None: no exit status was
    received), `detail` (the reason alone, without the `[serial] cmd failed:` prefix) and
    `kind` (a stable name scripts may branch on; see the module docstring).
    """

    default_kind: ClassVar[str | None] = None

    def __init__(self, serial: str | None, cmd: str, *, stdout: str = "", stderr: str = "",
                 exit_code: int | None = None, message: str | None = None,
                 hint: str | None = None, kind: str | None = None) -> None:
        self.serial = serial
        self.cmd = cmd
        self.stdout = stdout
        self.stderr = stderr
        self.exit_code = exit_code
        self.kind = kind or self.default_kind
        self.detail = message or (stderr.strip().splitlines()[-1] if stderr.strip() else
                                  f"exit code {exit_code}")
        super().__init__(f"[{serial or 'adb'}] `{_short(cmd)}` failed: {self.detail}",
                         hint=hint)


class AdbTimeoutError(AdbError):
    """The command did not finish within its timeout (it was killed on the device)."""
    default_kind = "timeout"


class DeviceUnavailableError(AdbError):
    """The device is offline, unauthorized, gone, or the adb server is unreachable."""
    default_kind = "unavailable"


class ServerUnreachable(DeviceUnavailableError):
    """No adb server answers at the configured address."""
    default_kind = "server-unreachable"


class DeviceNotFound(DeviceUnavailableError):
    """The adb server does not know this serial (unplugged, or never connected)."""
    default_kind = "device-not-found"


class DeviceUnauthorized(DeviceUnavailableError):
    """The phone has not accepted this laptop's key, or the USB device may not be opened."""
    default_kind = "unauthorized"


class DeviceOffline(DeviceUnavailableError):
    """The adb server sees the device but cannot talk to it."""
    default_kind = "offline"


class ConnectionLost(DeviceUnavailableError):
    """The connection to the server or device broke in the middle of a call."""
    default_kind = "connection-lost"


class CommandFailed(AdbError):
    """The command ran on the device and exited with a non-zero code."""
    default_kind = "exit"


class AmbiguousDevice(AdbError):
    """More than one device matched where one was meant (pick one with -s SERIAL)."""
    default_kind = "more-than-one"


class RemoteNotFound(AdbError):
    """The device path does not exist."""
    default_kind = "remote-not-found"


class PermissionDenied(AdbError):
    """The adb shell user may not read or write that device path."""
    default_kind = "permission-denied"


class NotPermitted(AdbError):
    """The operation is refused at that path (scoped storage, fchown, secure_mkdirs)."""
    default_kind = "not-permitted"


class ReadOnlyFileSystem(AdbError):
    """The device path is on a read-only file system."""
    default_kind = "read-only"


class NotARegularFile(AdbError):
    """A pull asked for something that is not a regular file."""
    default_kind = "not-a-file"


class OutputTooLarge(AdbError):
    """The command printed more than the caller allows (device output is untrusted)."""
    default_kind = "output-too-large"


class TransferTooLarge(AdbError):
    """The device file is bigger than the caller allows; it was not pulled."""
    default_kind = "too-large"


class ParseError(AdbflowError):
    """Device output in a format we do not understand. Carries a sample for the bug report."""

    def __init__(self, kind: str, detail: str, sample: str = "") -> None:
        self.kind = kind
        self.detail = detail
        self.sample = sample[:300]
        super().__init__(f"cannot parse {kind}: {detail}",
                         hint="report this output with `adbflow` version and device model")


class ProfileError(AdbflowError):
    """A profile TOML is missing, malformed or lacks a needed field."""


class FleetError(AdbflowError):
    """The virtual fleet could not start, or a control request failed."""


class JobError(AdbflowError):
    """A pipeline stage failed for a reason that re-bidding cannot fix (bad input)."""


class SplitError(AdbflowError):
    """Split inference cannot run as planned (no valid cut, a part failed or its output was
    the wrong size); the job falls back to running the model whole."""

    def __init__(self, message: str, *, hint: str | None = None, serial: str | None = None,
                 step: str | None = None) -> None:
        self.serial = serial
        self.step = step
        where = " ".join(x for x in (f"[{serial}]" if serial else "", step or "") if x)
        super().__init__(f"{where}: {message}" if where else message, hint=hint)


class CutError(SplitError):
    """A model cannot be cut as asked (no valid cut point, unsupported model, bad index)."""


def _short(cmd: str, limit: int = 160) -> str:
    cmd = cmd.replace("\n", "\\n")
    return cmd if len(cmd) <= limit else cmd[:limit] + "..."


class FlowError(AdbflowError):
    """A flow file or flow object is invalid, names an unknown model, or asks for a placement
    no known device can ever satisfy. The message names the file and the key path
    (`stages[1].gate.tau`) or the TOML line."""
