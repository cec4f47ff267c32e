"""Error classes that carry their context (device, command, output, exit code, advice).

Why: the user must be told which device, which command and what to do; scripts must be
able to branch on the kind of failure. Modelled on mobly's AdbError(cmd, stdout, stderr,
ret_code) plus a serial and a hint.
"""
from __future__ import annotations


class AdbflowError(Exception):
    """Base of every error adbflow raises on purpose. `hint` says what to do."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class AdbError(AdbflowError):
    """An adb command failed on a device: non-zero exit, adb refusal or protocol fault."""

    def __init__(self, serial: str | None, cmd: str, *, stdout: str = "", stderr: str = "",
                 exit_code: int | None = None, message: str | None = None,
                 hint: str | None = None) -> None:
        self.serial = serial
        self.cmd = cmd
        self.stdout = stdout
        self.stderr = stderr
        self.exit_code = exit_code
        detail = message or (stderr.strip().splitlines()[-1] if stderr.strip() else
                             f"exit code {exit_code}")
        super().__init__(f"[{serial or 'adb'}] `{_short(cmd)}` failed: {detail}", hint=hint)


class AdbTimeoutError(AdbError):
    """The command did not finish within its timeout (it was killed on the device)."""


class DeviceUnavailableError(AdbError):
    """The device is offline, unauthorized, gone, or the adb server is unreachable."""


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
