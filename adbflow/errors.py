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
    │   ├── TransferTooLarge        the pulled file is bigger than max_bytes
    │   └── ResidentServerError     a phone's resident llama-server did not start, hung or
    │                               died (stopped; the stage is re-bid)
    ├── ParseError                  device output in a format we do not understand
    ├── ProfileError                a profile TOML is missing or malformed
    ├── FleetError                  the virtual fleet could not start / a control call failed
    ├── JobError                    a stage failed for a reason re-bidding cannot fix
    ├── SplitError                  split inference cannot run as planned (falls back whole)
    │   ├── CutError                the model cannot be cut as asked
    │   └── RpcWorkerLost           a llama.cpp RPC worker went away mid-story (re-run whole)
    ├── FlowError                   a flow is invalid (names the key path or TOML line)
    ├── SlotBusy                    another orchestrator holds the phone's slot lease
    ├── LeaseLost                   our slot lease expired or was taken over: output discarded
    ├── LaptopFault                 the laptop's own storage failed (path and fix named)
    ├── JournalCorrupt              the journal database is damaged (`adbflow journal check`)
    ├── JournalReplaced             the journal was deleted or replaced while running
    ├── PictureChanging             the device file is still being written or was replaced
    ├── PictureSuperseded           a later, complete detection of the file is its own job
    ├── StageExhausted              a stage ran out of attempts (every attempt's reason listed)
    ├── OriginUnreachable           the picture's phone is gone: the job waits for it
    ├── Interrupted                 adbflow is stopping: the job resumes next start
    ├── NoDevice                    no eligible device answered the bid round
    ├── StageAlreadyDone            a second commit of one stage result (refused: exactly-once)
    ├── AttemptAbandoned            a commit to an attempt recovery abandoned
    ├── IncompleteResult            done without every stage's committed output (refused)
    ├── WireError                   a mesh message refused (`why`)
    └── MeshError                   a mesh operation failed on a device
    (also: AdbError > LlamaChatOnlyError, the chat-only llama-cli; FlowError > HostTierError,
    the laptop tier cannot run; WatchDirError(ValueError), a watched folder that is not a
    plain path under shared storage. adbflow.device.wire's Refused/SyncFail are wire-level
    signals that device.failures turns into the classes above; they never leave the package.)

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


class RpcWorkerLost(SplitError):
    """A llama.cpp RPC worker went away mid-story (llama.cpp aborts the whole run then):
    `serial` is the worker, `main` the phone that ran the story, `stdout` what it had
    written; the story is run again on the phones that are left."""

    def __init__(self, message: str, *, serial: str, main: str, step: str = "story",
                 stdout: str = "", hint: str | None = None) -> None:
        self.main = main
        self.stdout = stdout
        super().__init__(message, serial=serial, step=step,
                         hint=hint or "the story is re-run on the remaining phones")


class CutError(SplitError):
    """A model cannot be cut as asked (no valid cut point, unsupported model, bad index)."""


def _short(cmd: str, limit: int = 160) -> str:
    cmd = cmd.replace("\n", "\\n")
    return cmd if len(cmd) <= limit else cmd[:limit] + "..."


class FlowError(AdbflowError):
    """A flow file or flow object is invalid, names an unknown model, or asks for a placement
    no known device can ever satisfy. The message names the file and the key path
    (`stages[1].gate.tau`) or the TOML line."""


class SlotBusy(AdbflowError):
    """Another orchestrator holds the device's slot lease: bid elsewhere (not a failure)."""

    def __init__(self, serial: str, slot: str, owner: str | None, left_s: float,
                 token: int = 0) -> None:
        self.serial = serial
        self.slot = slot
        self.owner = owner
        self.left_s = left_s
        self.token = token
        super().__init__(f"[{serial}] {slot} slot is leased by {owner or '?'} for "
                         f"{left_s:.1f} s more", hint="another adbflow uses this phone; "
                         "the stage goes to another device")


class LeaseLost(AdbflowError):
    """Our slot lease expired or was taken over before the stage ended: its output may be
    another job's and is discarded; the stage is bid again."""

    def __init__(self, serial: str, slot: str, detail: str) -> None:
        self.serial = serial
        self.slot = slot
        super().__init__(f"[{serial}] {slot} slot lease lost: {detail}",
                         hint="the result was discarded and the stage re-bid")


class LaptopFault(AdbflowError):
    """The laptop's own storage failed (disk full, read-only, no permission) at `path`.
    Not a phone's fault and not the picture's: no phone is quarantined, no job fails; the
    jobs wait and resume once the fault is fixed."""

    def __init__(self, path: str, problem: str, *, hint: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"laptop storage problem at {path}: {problem}", hint=hint)


class JournalCorrupt(AdbflowError):
    """The journal database is damaged (SQLite says malformed / not a database)."""


class JournalReplaced(AdbflowError):
    """The journal file was deleted or replaced while adbflow ran: continuing would write to
    a file nobody reads and later reuse job ids and story names. adbflow stops."""


class PictureChanging(AdbflowError):
    """The device file is not the detected version any more (still being written, or
    replaced): the pull waits until it is stable instead of failing the job."""

    def __init__(self, serial: str, path: str, size: int, mtime: float, ino: int = 0) -> None:
        self.serial = serial
        self.path = path
        self.size = size
        self.mtime = mtime
        self.ino = ino
        super().__init__(f"{path!r} on {serial} changed since it was detected (now {size} "
                         "bytes)", hint="waiting until it is completely written")


class PictureSuperseded(AdbflowError):
    """A later detection of the same, now complete, file is its own job (`other`): this job
    is skipped, not failed (it saw the file while it was still being written)."""

    def __init__(self, job_id: int, other: int) -> None:
        self.job_id = job_id
        self.other = other
        super().__init__(f"superseded by job {other}: the file was still being written "
                         "when this job saw it")


# ---- pipeline control and stage outcomes (raised and caught inside adbflow.runtime)

class OriginUnreachable(AdbflowError):
    """The phone that holds the picture is gone (unplugged, rebooting, Wi-Fi adb dropped).
    Only it can serve the pull, so the job waits for it (parked, retried when it returns)
    instead of failing."""

    def __init__(self, serial: str, detail: str) -> None:
        self.serial = serial
        super().__init__(f"origin phone {serial} unreachable: {detail}",
                         hint="the job resumes when the phone is back (reconnect it)")


class StageExhausted(AdbflowError):
    """A stage ran out of attempts; the message lists every attempt's reason."""


class HostTierError(FlowError):
    """The laptop tier cannot run (ai-edge-litert missing, a model file missing)."""


class NoDevice(AdbflowError):
    """No eligible device answered the bid round within the wait.

    `leased_elsewhere`: in the last bid round, every listed device that this stage may use
    had its slot leased by another orchestrator. The phones are healthy and only busy, so the
    attempt does not count against the job's budget (as SlotBusy); otherwise three busy
    spells of another orchestrator's backlog would fail a picture nothing was wrong with."""

    def __init__(self, message: str, *, hint: str | None = None,
                 leased_elsewhere: bool = False) -> None:
        super().__init__(message, hint=hint)
        self.leased_elsewhere = leased_elsewhere


class Interrupted(AdbflowError):
    """The pipeline is stopping (Ctrl-C); the job stays incomplete and resumes next start."""


class LlamaChatOnlyError(AdbError):
    """The profile's llama binary is the chat-only llama-cli: no device run can fix that
    attempt, but another device (another binary) can, so it is an AdbError like any device
    fault; the message names the fix."""


class ResidentServerError(AdbError):
    """A phone's resident llama-server (runtime/resident.py) did not start, hung or died;
    it was stopped. An AdbError like any device fault: the stage is re-bid. `kind`:
    resident-start, resident-hang, resident-died, resident-http, resident-stopping."""
    default_kind = "resident"


class WatchDirError(ValueError):
    """A watched folder that is not a plain path under the shared storage."""


class IncompleteResult(AdbflowError):
    """A job was about to be marked done without every stage's committed output."""


class AttemptAbandoned(AdbflowError):
    """The attempt is no longer 'running' (recovery abandoned it): its result was not
    committed; the stage must run again rather than silently lose the result."""


class StageAlreadyDone(AdbflowError):
    """A stage result was committed twice; the second commit is refused (exactly-once)."""


class WireError(AdbflowError):
    """A message that is refused: `why` is one of the reasons wire.sh logs too."""

    def __init__(self, why: str, detail: str = "") -> None:
        super().__init__(f"mesh message refused: {why}" + (f" ({detail})" if detail else ""))
        self.why = why


class MeshError(AdbflowError):
    """A mesh operation failed on a device (which, what, what to do)."""
