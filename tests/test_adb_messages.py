"""adb's own messages (every file in tests/fixtures/adb_errors) -> error kinds, listings, summaries."""
from __future__ import annotations

from pathlib import Path

import pytest

from adbflow.errors import ParseError
from adbflow.parsers.adb_messages import (
    classify_adb_error,
    parse_adb_devices,
    parse_adb_version,
    parse_transfer_summaries,
)

FIX = Path(__file__).parent / "fixtures" / "adb_errors"

# file prefix -> (error kind or None, number of transfer summary lines)
EXPECTED = {
    "UNATTRIBUTED_pull_push_summary_line_variants": (None, 6),
    "adb_install_old_speedline": (None, 1),
    "adb_protocol_fault": ("protocol-fault", 0),
    "adb_push_summary_llamacpp_snapdragon_dir": (None, 4),
    "adb_push_summary_llamacpp_snapdragon_file": (None, 1),
    "adb_version_scrcpy": (None, 0),
    "closed_as_reported_with_space": ("closed", 0),
    "closed_termux": ("closed", 0),
    "ddmlib_device_unauthorized": ("unauthorized", 0),
    "device_null_not_found": ("device-not-found", 0),
    "devices_no_permissions": ("no-permissions", 0),
    "devices_offline_tab": ("offline", 0),
    "devices_tcp_scrcpy": (None, 0),
    "fchown_ecmdroid": ("not-permitted", 0),
    "inaccessible_or_not_found": ("command-not-found", 0),
    "more_than_one_feature_set": ("more-than-one", 0),
    "more_than_one_old_error_prefix": ("more-than-one", 0),
    "more_than_one_very_old": ("more-than-one", 0),
    "more_than_one_windows": ("more-than-one", 0),
    "no_devices_windows": ("no-devices", 0),
    "protocol_fault_connection_reset": ("protocol-fault", 0),
    "pull_remote_object_does_not_exist": ("remote-not-found", 0),
    "push_ok_scrcpy_issue2011": (None, 1),
    "push_ok_scrcpy_issue723": (None, 1),
    "readonly_magiskonwsa": ("read-only", 0),
    "readonly_mnn": ("read-only", 0),
    "readonly_openpilot": ("read-only", 0),
    "secure_mkdirs_bazel": ("not-permitted", 1),
    "secure_mkdirs_open-android-backup": ("not-permitted", 2),
    "stat_failed_android-wifi-upgrade": ("permission-denied", 0),
    "sync_protocol_fault_fatal_log": ("protocol-fault", 0),
    "unauthorized_gnirehtet": ("unauthorized", 0),
    "unauthorized_newer_adb_prefix": ("unauthorized", 0),
    "unauthorized_scrcpy": ("unauthorized", 0),
    "unauthorized_termux": ("unauthorized", 0),
    "vim-android_issue18": (None, 0),
}


def _expected(name: str):
    keys = [k for k in EXPECTED if name.startswith(k)]
    assert len(keys) == 1, name
    return EXPECTED[keys[0]]


@pytest.mark.parametrize("path", sorted(FIX.iterdir()), ids=lambda p: p.name[:40])
def test_every_adb_message_fixture(path):
    text = path.read_text(encoding="utf-8", errors="replace")
    kind, n_summaries = _expected(path.name)
    problem = classify_adb_error(text)
    assert (problem.kind if problem else None) == kind
    if problem:
        assert problem.hint and problem.line
    assert len(parse_transfer_summaries(text)) == n_summaries


def test_all_fixtures_covered():
    assert len(list(FIX.iterdir())) == len(EXPECTED)


def test_hints_say_what_to_do():
    assert "RSA" in classify_adb_error("adb: device unauthorized.").hint
    assert "udev" in classify_adb_error("X\tno permissions; see [http://x]").hint
    assert "-s" in classify_adb_error("adb.exe: more than one device/emulator").hint
    assert classify_adb_error("adb server version (40) doesn't match this client (41); killing...") is None


def test_adb_devices_listings():
    def load(prefix):
        return next(FIX.glob(prefix + "*")).read_text()
    assert [(d.serial, d.state) for d in parse_adb_devices(load("devices_no_permissions"))] == [
        ("7HX5T19929012679", "no permissions"), ("CUY0219604010390", "no permissions"),
        ("NDF7N18818005475", "no permissions")]
    assert [(d.serial, d.state) for d in parse_adb_devices(load("devices_offline_tab"))] == [
        ("emulator-5554", "offline")]
    assert [(d.serial, d.state) for d in parse_adb_devices(load("devices_tcp_scrcpy"))] == [
        ("192.168.1.68:5656", "device")]
    (nexus,) = parse_adb_devices(load("vim-android_issue18"))
    assert nexus.tags == {"usb": "1-1", "product": "razor", "model": "Nexus_7", "device": "flo"}
    # prose that merely contains state words is not a device line
    with pytest.raises(ParseError):
        parse_adb_devices(load("unauthorized_termux"))
    assert parse_adb_devices("List of devices attached\n\n") == []


def test_transfer_summary_values_and_version():
    (s,) = parse_transfer_summaries(next(FIX.glob("adb_push_summary_llamacpp_snapdragon_file*")).read_text())
    assert (s.direction, s.files, s.skipped, s.nbytes, s.seconds) == ("pushed", 1, 0, 773025920, 19.25)
    (old,) = parse_transfer_summaries(next(FIX.glob("push_ok_scrcpy_issue723*")).read_text())
    assert old.skipped is None and old.nbytes == 22546
    assert parse_adb_version(next(FIX.glob("devices_offline_tab*")).read_text()) == ("1.0.41", "36.0.0-13206524")
    with pytest.raises(ParseError):
        parse_adb_version("adb: command not found")
