"""adbflow.device.failures: every adb failure becomes the most specific error class, with a kind.

Pure mapping tests (no adb server); test_bids_fleet checks the same classes through a real
adb server and the virtual fleet.
"""
from __future__ import annotations

import errno
import inspect
import re

import pytest

import adbflow.errors as errors_mod
from adbflow.device import Device, DevicePort
from adbflow.device.failures import adb_failures, exit_error, refused_error, state_error, sync_error
from adbflow.device.wire import Refused, SyncFail
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
)


@pytest.mark.parametrize("message, cls, kind", [
    ("device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set", DeviceUnauthorized,
     "unauthorized"),
    ("insufficient permissions for device", DeviceUnauthorized, "no-permissions"),
    ("device offline", DeviceOffline, "offline"),
    ("device 'abc' not found", DeviceNotFound, "device-not-found"),
    ("no devices/emulators found", DeviceNotFound, "no-devices"),
    ("more than one device/emulator", AmbiguousDevice, "more-than-one"),
    ("protocol fault (couldn't read status): Connection reset by peer", ConnectionLost,
     "protocol-fault"),
    ("something adb never said", DeviceUnavailableError, "unavailable"),
])
def test_server_refusals(message: str, cls: type, kind: str) -> None:
    err = refused_error("s1", "shell:true", message)
    assert type(err) is cls and err.kind == kind
    assert err.serial == "s1" and err.stderr == message
    if kind != "unavailable":
        assert err.hint and err.hint in str(err)


@pytest.mark.parametrize("message, cls, kind", [
    ("No such file or directory", RemoteNotFound, "remote-not-found"),
    ("remote object '/sdcard/x.jpg' does not exist", RemoteNotFound, "remote-not-found"),
    ("couldn't create file: Read-only file system", ReadOnlyFileSystem, "read-only"),
    ("secure_mkdirs failed: Operation not permitted", NotPermitted, "not-permitted"),
    ("open failed: Permission denied", PermissionDenied, "permission-denied"),
    ("remote object '/sdcard/DCIM' not a regular file", NotARegularFile, "not-a-file"),
    ("write failed: No space left on device", AdbError, None),
    ("error: closed", AdbError, "closed"),     # adbd answered: the device is not gone
])
def test_sync_refusals_are_never_unavailable(message: str, cls: type, kind: str | None) -> None:
    err = sync_error("s1", "pull /x /y", message)
    assert type(err) is cls and err.kind == kind
    assert not isinstance(err, DeviceUnavailableError)
    assert err.detail == message and "[s1] `pull /x /y` failed: " + message in str(err)


def test_exit_codes_keep_their_output_and_name_the_reason() -> None:
    err = exit_error("s1", "ls /nope", stdout="", stderr="ls: /nope: No such file or directory\n",
                     exit_code=1)
    assert type(err) is RemoteNotFound and err.exit_code == 1 and err.kind == "remote-not-found"
    err = exit_error("s1", "frob", stdout="", stderr="/system/bin/sh: frob: inaccessible or not found\n",
                     exit_code=127)
    assert type(err) is CommandFailed and err.kind == "command-not-found" and err.hint
    err = exit_error("s1", "x", stdout="out", stderr="", exit_code=3)
    assert type(err) is CommandFailed and err.kind == "exit" and err.detail == "exit code 3"
    err = exit_error("s1", "x", stdout="", stderr="device offline\n", exit_code=1)
    assert type(err) is CommandFailed and err.kind == "exit"   # it ran: not unavailable


def test_listed_states() -> None:
    assert type(state_error("s1", "devices", "unauthorized")) is DeviceUnauthorized
    assert type(state_error("s1", "devices", "offline")) is DeviceOffline
    err = state_error("s1", "devices", "bootloader")
    assert type(err) is DeviceUnavailableError and "bootloader" in str(err)


def _raise_in(cm: adb_failures, exc: BaseException) -> BaseException:
    with pytest.raises(BaseException) as ei:
        with cm:
            raise exc
    return ei.value


def test_context_manager_maps_wire_faults() -> None:
    out = lambda: ("so far", "err so far")  # noqa: E731
    cm = adb_failures("s1", "cmd", timeout_message="timed out; killed", timeout_hint="raise it",
                      lost_message="lost ({exc})", lost_hint="replug", output=out)
    t = _raise_in(cm, TimeoutError("deadline passed"))
    assert type(t) is AdbTimeoutError and t.kind == "timeout" and t.stdout == "so far"
    assert str(t) == "[s1] `cmd` failed: timed out; killed (raise it)"
    lost = _raise_in(cm, ConnectionResetError(errno.ECONNRESET, "adb connection closed"))
    assert type(lost) is ConnectionLost and "adb connection closed" in lost.detail
    assert lost.stderr == "err so far" and lost.hint == "replug"
    assert type(_raise_in(cm, Refused("device offline"))) is DeviceOffline
    assert type(_raise_in(cm, SyncFail("No such file or directory"))) is RemoteNotFound
    # laptop-side file errors and adbflow's own errors pass through untouched
    local = FileNotFoundError(errno.ENOENT, "no such local file")
    assert _raise_in(cm, local) is local
    own = AdbError("s1", "cmd", message="mine")
    assert _raise_in(cm, own) is own


def test_every_adb_error_class_is_drawn_in_the_hierarchy() -> None:
    doc = errors_mod.__doc__ or ""
    classes = [c for c in vars(errors_mod).values()
               if isinstance(c, type) and issubclass(c, errors_mod.AdbflowError)]
    assert len(classes) >= 20
    for cls in classes:
        assert re.search(rf"\b{cls.__name__}\b", doc), f"{cls.__name__} missing from the tree"
        assert cls.__module__ == "adbflow.errors"


def test_device_implements_the_port_signatures() -> None:
    """Device matches DevicePort method by method (parameters, defaults, annotations)."""
    for name in ("shell", "run", "push", "pull", "stat", "list_dir", "stream_lines"):
        ours = inspect.signature(getattr(Device, name))
        port = inspect.signature(getattr(DevicePort, name))
        assert ours == port, (name, str(ours), str(port))
    assert isinstance(Device("x"), DevicePort)
