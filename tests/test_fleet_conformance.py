"""Conformance battery: what other projects' device tests and everyday adb usage expect of a
phone, run against the virtual fleet (one small module-scoped fleet, real NamespaceBackend).

Sources of the cases:
- adbutils' own end-to-end tests (openatx/adbutils e2etests/: test_device_base.py,
  test_device_shell_extend.py, test_device_sync.py, test_forward_reverse.py), rewritten to
  use the fleet's adb server and with the same assertions;
- the adb CLI commands people and automation tools run: getprop, push/pull, forward/reverse
  with --list/--remove, exec-out screencap, logcat -d/-c/-v/-s, pm, wm, input, settings,
  am, dumpsys, get-state/get-serialno, install (refused clearly), root.
Each case is one parametrized test; a case is xfail(strict=True) only for a genuine limit
of a virtual device, with the reason.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import shlex
import socket
import struct
import subprocess
import threading
import time
import uuid
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree

import adbutils
import pytest
from adbutils import AdbDevice, BrightnessMode
from adbutils.errors import AdbSyncError

from adbflow.fleet import adb_server

pytestmark = pytest.mark.fleet

ADB = adb_server.adb_binary()
TMP = "/data/local/tmp"
CASES: list[tuple[str, Callable[..., None], object]] = []


def case(name: str, xfail: str | None = None):  # type: ignore[no-untyped-def]
    """Register a conformance case (xfail: the genuine limit that makes it fail)."""
    def deco(fn: Callable[..., None]) -> Callable[..., None]:
        marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
        CASES.append((name, fn, marks))
        return fn
    return deco


class Ctx:
    """What a case gets: the fleet, one device serial, the adb CLI and adbutils' device."""

    def __init__(self, fleet, serial: str, tmp_path: Path, port_base: int) -> None:  # type: ignore[no-untyped-def]
        self.fleet = fleet
        self.serial = serial
        self.tmp = tmp_path
        self.port_base = port_base
        self._ports: dict[int, int] = {}
        self.client = adbutils.AdbClient(host="127.0.0.1", port=fleet.adb_port)
        self.d: AdbDevice = self.client.device(serial)

    def adb(self, *args: str, input: bytes | None = None, timeout: float = 60,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([ADB, "-P", str(self.fleet.adb_port), "-s", self.serial, *args],
                           input=input.decode() if input is not None else None,
                           capture_output=True, text=True, timeout=timeout)
        if check:
            assert r.returncode == 0, (args, r.returncode, r.stdout[-500:], r.stderr[-500:])
        return r

    def adb_bytes(self, *args: str, stdin: bytes | None = None, timeout: float = 60
                  ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([ADB, "-P", str(self.fleet.adb_port), "-s", self.serial, *args],
                              input=stdin, capture_output=True, timeout=timeout)

    def sh(self, cmd: str) -> str:
        r = self.adb("shell", cmd, check=True)
        return r.stdout

    def port(self, k: int) -> int:
        """A free port for this test (the same one for the same k): the device world shares
        the host's loopback, so every device-side and host-side listener needs its own
        (socket_services.py), and other processes on this host may hold any port."""
        if k not in self._ports:
            taken = set(self._ports.values())
            while True:
                port = adb_server.free_port(30000, 40000)
                if port not in taken:
                    break
            self._ports[k] = port
        return self._ports[k]


@pytest.fixture(scope="module")
def fleet(fleet_factory):  # type: ignore[no-untyped-def]
    client = fleet_factory(devices=2, profiles=["midrange_2023", "old_2017"])
    yield client
    fleet_factory.release(client)


_PORTS = iter(range(0, 10_000, 20))


@pytest.fixture
def ctx(fleet, tmp_path: Path) -> Ctx:  # type: ignore[no-untyped-def]
    base = adb_server.free_port(30000 + next(_PORTS), 40000)
    c = Ctx(fleet, fleet.serials[0], tmp_path, base)
    yield c
    subprocess.run([ADB, "-P", str(fleet.adb_port), "-s", c.serial, "forward", "--remove-all"],
                   capture_output=True, timeout=20)
    subprocess.run([ADB, "-P", str(fleet.adb_port), "-s", c.serial, "reverse", "--remove-all"],
                   capture_output=True, timeout=20)


def wait_for(pred: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    w, h, depth, ctype = struct.unpack(">IIBB", data[16:26])
    assert (depth, ctype) == (8, 6)  # 8-bit RGBA, as Android screenshots
    return w, h


def wm_size(c: Ctx) -> tuple[int, int]:
    m = re.search(r"Physical size: (\d+)x(\d+)", c.sh("wm size"))
    assert m
    return int(m.group(1)), int(m.group(2))


def device_listen(c: Ctx, port: int, cmd: str) -> None:
    """Start `cmd` in the device in the background (a listener on `port`), wait for it."""
    # a simple command, not a `( ... ) &` subshell: mksh's subshell keeps a copy of the
    # shell's stdout while it waits, and `adb shell` then waits for it (on phones too)
    c.sh(f"sh -c {shlex.quote(cmd)} >/dev/null 2>&1 </dev/null &")
    wait_for(lambda: f":{port:04X}" in c.sh("cat /proc/net/tcp"), 10, f"device port {port}")


# ====================================================================== adb CLI: identity

@case("cli-get-state")
def _(c: Ctx) -> None:
    assert c.adb("get-state", check=True).stdout.strip() == "device"


@case("cli-get-serialno")
def _(c: Ctx) -> None:
    assert c.adb("get-serialno", check=True).stdout.strip() == c.serial


@case("cli-devices-l")
def _(c: Ctx) -> None:
    out = subprocess.run([ADB, "-P", str(c.fleet.adb_port), "devices", "-l"],
                         capture_output=True, text=True, timeout=20).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith(c.serial + " "))
    assert re.search(r"\bdevice product:\S+ model:\S+ device:\S+ transport_id:\d+", line), line


@case("cli-wait-for-device")
def _(c: Ctx) -> None:
    c.adb("wait-for-device", timeout=20, check=True)


@case("cli-getprop-all-format")
def _(c: Ctx) -> None:
    out = c.sh("getprop")
    props = dict(re.findall(r"^\[([^\]]+)\]: \[([^\]]*)\]$", out, re.M))
    assert len(props) >= 50
    for key in ("ro.build.fingerprint", "ro.build.id", "ro.build.version.sdk",
                "ro.build.version.release", "ro.product.model", "ro.product.brand",
                "ro.product.name", "ro.product.device", "ro.product.manufacturer",
                "ro.serialno", "ro.boot.serialno", "ro.build.version.security_patch",
                "ro.build.type", "ro.build.tags", "ro.product.cpu.abi", "sys.boot_completed"):
        assert key in props, key


@case("cli-getprop-fingerprint-consistent")
def _(c: Ctx) -> None:
    g = {k: c.sh(f"getprop {k}").strip() for k in (
        "ro.build.fingerprint", "ro.product.brand", "ro.product.name", "ro.product.device",
        "ro.build.version.release", "ro.build.id", "ro.build.version.incremental",
        "ro.build.type", "ro.build.tags", "ro.build.version.sdk")}
    assert g["ro.build.fingerprint"] == (
        f"{g['ro.product.brand']}/{g['ro.product.name']}/{g['ro.product.device']}:"
        f"{g['ro.build.version.release']}/{g['ro.build.id']}/"
        f"{g['ro.build.version.incremental']}:{g['ro.build.type']}/{g['ro.build.tags']}")
    assert int(g["ro.build.version.sdk"]) >= 23


@case("cli-getprop-serialno")
def _(c: Ctx) -> None:
    assert c.sh("getprop ro.serialno").strip() == c.serial
    assert c.sh("getprop ro.boot.serialno").strip() == c.serial
    assert c.sh("getprop sys.boot_completed").strip() == "1"
    assert c.sh("getprop no.such.prop").strip() == ""


@case("cli-root-refused-like-user-build")
def _(c: Ctx) -> None:
    r = c.adb("root")
    assert "adbd cannot run as root in production builds" in r.stdout + r.stderr


# ====================================================================== adb CLI: shell

@case("cli-shell-exit-code")
def _(c: Ctx) -> None:
    r = c.adb("shell", "echo out; echo err >&2; exit 3")
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")


@case("cli-shell-x-no-protocol")
def _(c: Ctx) -> None:
    r = c.adb("shell", "-x", "echo v1; exit 4")
    assert r.stdout == "v1\n" and r.returncode == 0  # v1 has no exit status


@case("cli-shell-tty")
def _(c: Ctx) -> None:
    r = c.adb("shell", "-t", "-t", "tty")
    assert "/dev/pts/" in r.stdout


@case("cli-shell-storage-layout")
def _(c: Ctx) -> None:
    out = c.sh("ls /sdcard/")
    for d in ("DCIM", "Download", "Pictures"):
        assert d in out.split()


@case("cli-shell-cmd-services")
def _(c: Ctx) -> None:
    assert "package:com.android.settings" in c.sh("cmd package list packages")
    r = c.adb("shell", "cmd no_such_service")
    assert r.returncode != 0 and "Can't find service" in r.stderr


# ====================================================================== adb CLI: files

@case("cli-push-pull-roundtrip")
def _(c: Ctx) -> None:
    src = c.tmp / "blob.bin"
    src.write_bytes(os.urandom(1_500_000) + b"end")
    c.adb("push", str(src), f"{TMP}/blob.bin", check=True)
    back = c.tmp / "back.bin"
    c.adb("pull", f"{TMP}/blob.bin", str(back), check=True)
    assert back.read_bytes() == src.read_bytes()


@case("cli-push-pull-directory")
def _(c: Ctx) -> None:
    tree = c.tmp / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "1.txt").write_text("1\n")
    (tree / "a" / "b" / "deep.txt").write_text("deep\n")
    c.adb("push", str(tree), f"{TMP}/tree", check=True)
    out = c.tmp / "out"
    c.adb("pull", f"{TMP}/tree", str(out), check=True)
    assert (out / "a" / "b" / "deep.txt").read_text() == "deep\n"
    assert (out / "1.txt").read_text() == "1\n"


@case("cli-pull-missing-fails")
def _(c: Ctx) -> None:
    r = c.adb("pull", f"{TMP}/does-not-exist", str(c.tmp / "x"))
    assert r.returncode != 0 and "No such file or directory" in r.stderr


@case("cli-utf8-file-names")
def _(c: Ctx) -> None:
    src = c.tmp / "Hi-世界.txt"
    src.write_text("utf8\n")
    c.adb("push", str(src), f"{TMP}/Hi-世界.txt", check=True)
    assert "Hi-世界.txt" in c.sh(f"ls {TMP}")


@case("cli-exec-in-5mb-byte-exact")
def _(c: Ctx) -> None:
    blob = os.urandom(5 * 1024 * 1024 + 11)
    r = c.adb_bytes("exec-in", f"cat > {TMP}/in5.bin", stdin=blob)
    assert r.returncode == 0
    want = hashlib.sha256(blob).hexdigest()
    wait_for(lambda: want in c.sh(f"sha256sum {TMP}/in5.bin"), 10, "the whole upload")


@case("cli-exec-out-binary")
def _(c: Ctx) -> None:
    blob = bytes(range(256)) * 300 + b"\r\n\x00"
    c.d.sync.push(blob, f"{TMP}/bin.dat")
    assert c.adb_bytes("exec-out", f"cat {TMP}/bin.dat").stdout == blob


# ====================================================================== adb CLI: screen

@case("cli-exec-out-screencap-png")
def _(c: Ctx) -> None:
    data = c.adb_bytes("exec-out", "screencap -p").stdout
    assert png_size(data) == wm_size(c)
    zlib.decompress(data[data.index(b"IDAT") + 4:data.index(b"IEND") - 8])  # real deflate


@case("cli-screencap-to-file-and-pull")
def _(c: Ctx) -> None:
    c.sh("screencap -p /sdcard/shot.png")
    dst = c.tmp / "shot.png"
    c.adb("pull", "/sdcard/shot.png", str(dst), check=True)
    assert png_size(dst.read_bytes()) == wm_size(c)


@case("cli-screencap-raw-header")
def _(c: Ctx) -> None:
    data = c.adb_bytes("exec-out", "screencap").stdout
    w, h, fmt = struct.unpack_from("<III", data)
    assert (w, h) == wm_size(c) and fmt == 1
    assert len(data) in (12 + w * h * 4, 16 + w * h * 4)


@case("cli-wm-size-density-override")
def _(c: Ctx) -> None:
    assert re.fullmatch(r"Physical size: \d+x\d+\n", c.sh("wm size"))
    assert re.fullmatch(r"Physical density: \d+\n", c.sh("wm density"))
    c.sh("wm size 720x1280")
    try:
        assert "Override size: 720x1280" in c.sh("wm size")
        assert png_size(c.adb_bytes("exec-out", "screencap -p").stdout) == (720, 1280)
    finally:
        c.sh("wm size reset")
    assert "Override" not in c.sh("wm size")


@case("cli-input-commands-recorded")
def _(c: Ctx) -> None:
    c.sh("logcat -c")
    for cmd in ("input tap 540 1200", "input swipe 100 900 100 300 250", "input text hello",
                "input keyevent KEYCODE_BACK", "input keyevent 66"):
        r = c.adb("shell", cmd)
        assert r.returncode == 0, (cmd, r.stderr)
    log = c.adb("logcat", "-d", "-s", "Input", check=True).stdout
    for what in ("tap (540, 1200)", "swipe (100, 900) -> (100, 300)", "text 'hello'",
                 "keyevent 4", "keyevent 66"):
        assert what in log, what


@case("cli-input-bad-arguments-fail")
def _(c: Ctx) -> None:
    r = c.adb("shell", "input tap x y")
    assert r.returncode != 0 and "Error" in r.stderr
    assert c.adb("shell", "input frobnicate").returncode != 0


# ====================================================================== adb CLI: logcat

@case("cli-logcat-d-threadtime")
def _(c: Ctx) -> None:
    tag = f"Conf{uuid.uuid4().hex[:6]}"
    c.sh(f"log -t {tag} hello threadtime")
    out = c.adb("logcat", "-d", "-v", "threadtime", check=True).stdout
    assert re.search(r"^\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} +\d+ +\d+ I " + tag +
                     r" *: hello threadtime$", out, re.M), out[-800:]


@case("cli-logcat-clear")
def _(c: Ctx) -> None:
    c.sh("log -t ClearMe before-clear")
    assert "before-clear" in c.adb("logcat", "-d", check=True).stdout
    c.adb("logcat", "-c", check=True)
    assert "before-clear" not in c.adb("logcat", "-d", check=True).stdout


@case("cli-logcat-s-filter-and-priority")
def _(c: Ctx) -> None:
    c.sh("log -t KeepMe -p w kept; log -t DropMe dropped; log -t KeepMe -p d too-low")
    out = c.adb("logcat", "-d", "-s", "KeepMe:I", check=True).stdout
    assert "kept" in out and "dropped" not in out and "too-low" not in out
    brief = c.adb("logcat", "-d", "-v", "brief", "KeepMe:W", "*:S", check=True).stdout
    assert re.search(r"^W/KeepMe *\( *\d+\): kept$", brief, re.M), brief


@case("cli-logcat-streaming")
def _(c: Ctx) -> None:
    proc = subprocess.Popen([ADB, "-P", str(c.fleet.adb_port), "-s", c.serial, "logcat",
                             "-v", "time", "-s", "Stream"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        c.sh("log -t Stream live-line")
        assert proc.stdout is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if "live-line" in line:
                assert re.match(r"\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} I/Stream *\( *\d+\): "
                                r"live-line", line), line
                break
        else:
            raise AssertionError("streamed line not seen")
    finally:
        proc.terminate()
        proc.wait(10)


@case("cli-logcat-fed-by-programs")
def _(c: Ctx) -> None:
    c.sh("logcat -c")
    c.adb("shell", f"{TMP}/benchmark_model --graph=/nonexistent.tflite")
    c.sh("am start -n com.android.settings/.Settings")
    out = c.adb("logcat", "-d", check=True).stdout
    assert "benchmark_model" in out
    assert "START u0 {cmp=com.android.settings/.Settings} from uid 2000" in out


@case("cli-logcat-t-g-b")
def _(c: Ctx) -> None:
    c.sh("log -t Tail one; log -t Tail two; log -t Tail three")
    out = c.adb("logcat", "-t", "2", "-s", "Tail", check=True).stdout  # -t implies -d
    assert [ln.split(": ", 1)[1] for ln in out.splitlines() if "Tail" in ln] == ["two", "three"]
    assert re.match(r"main: ring buffer is \d+ KiB \(\d+ KiB consumed",
                    c.adb("logcat", "-g", check=True).stdout)
    assert "three" in c.adb("logcat", "-b", "all", "-d", check=True).stdout
    assert c.adb("logcat", "-b", "nosuch", "-d").returncode != 0


@case("cli-ps-top-meminfo")
def _(c: Ctx) -> None:
    assert "PID" in c.sh("ps -A").splitlines()[0]
    assert re.search(r"^Tasks: \d+ total", c.sh("top -b -n 1"), re.M)
    assert "Total RAM:" in c.sh("dumpsys meminfo")


@case("cli-bugreport-zip")
def _(c: Ctx) -> None:
    out_dir = c.tmp / "br"
    out_dir.mkdir()
    r = c.adb("bugreport", str(out_dir), timeout=180)
    assert r.returncode == 0, r.stderr
    zips = list(out_dir.glob("bugreport-*.zip"))
    assert len(zips) == 1
    with zipfile.ZipFile(zips[0]) as zf:
        main = zf.read("main_entry.txt").decode()
        text = zf.read(main).decode()
    assert "DUMP OF SERVICE battery:" in text and "[ro.build.fingerprint]:" in text
    assert "------ LOGCAT (logcat -d -v threadtime) ------" in text


@case("cli-screenrecord", xfail="a virtual device has no display pipeline or video encoder "
      "(SurfaceFlinger, MediaCodec): its screen is drawn only on demand by screencap, so "
      "there is no screenrecord")
def _(c: Ctx) -> None:
    c.sh("screenrecord --time-limit 1 /sdcard/rec.mp4")


# ====================================================================== adb CLI: pm / am

@case("cli-pm-list-packages")
def _(c: Ctx) -> None:
    out = c.sh("pm list packages")
    names = re.findall(r"^package:(\S+)$", out, re.M)
    assert {"android", "com.android.settings", "com.android.shell"} <= set(names)
    assert all(ln.startswith("package:") for ln in out.splitlines())
    assert c.sh("pm list packages settings").split() == [
        "package:com.android.providers.settings", "package:com.android.settings"]


@case("cli-pm-list-packages-f")
def _(c: Ctx) -> None:
    out = c.sh("pm list packages -f")
    assert re.search(r"^package:/system/priv-app/Settings/Settings\.apk=com\.android\.settings$",
                     out, re.M)


@case("cli-pm-path")
def _(c: Ctx) -> None:
    assert c.sh("pm path com.android.settings") == "package:/system/priv-app/Settings/Settings.apk\n"
    r = c.adb("shell", "pm path com.example.missing")
    assert r.returncode == 1 and r.stdout == ""


@case("cli-install-refused-clearly")
def _(c: Ctx) -> None:
    apk = c.tmp / "app.apk"
    apk.write_bytes(b"PK\x03\x04 not really an apk")
    r = c.adb("install", str(apk), timeout=60)
    assert r.returncode != 0
    assert "not supported" in r.stdout + r.stderr, r.stdout + r.stderr


@case("cli-am-start")
def _(c: Ctx) -> None:
    out = c.sh("am start -a android.intent.action.MAIN -c android.intent.category.LAUNCHER "
               "-n com.android.settings/.Settings")
    assert out == ("Starting: Intent { act=android.intent.action.MAIN cat=[android.intent."
                   "category.LAUNCHER] cmp=com.android.settings/.Settings }\n")
    assert "mCurrentFocus=Window{" in c.sh("dumpsys window windows")
    assert "com.android.settings/com.android.settings.Settings}" in c.sh("dumpsys window")


@case("cli-am-start-W")
def _(c: Ctx) -> None:
    out = c.sh("am start -W -n com.android.deskclock/.DeskClock")
    assert re.search(r"^Status: ok\nLaunchState: \w+\nActivity: com\.android\.deskclock/"
                     r"\.DeskClock\nTotalTime: \d+\nWaitTime: \d+\nComplete$", out, re.M), out


@case("cli-am-start-missing-activity")
def _(c: Ctx) -> None:
    r = c.adb("shell", "am start -n com.example/.Nope")
    assert "Error type 3" in r.stdout
    assert "Activity class {com.example/com.example.Nope} does not exist." in r.stderr


@case("cli-am-broadcast")
def _(c: Ctx) -> None:
    out = c.sh("am broadcast -a com.example.PING --es k v")
    assert out == ("Broadcasting: Intent { act=com.example.PING flg=0x400000 (has extras) }\n"
                   "Broadcast completed: result=0\n")


@case("cli-am-force-stop-returns-home")
def _(c: Ctx) -> None:
    c.sh("am start -n com.android.settings/.Settings")
    c.sh("am force-stop com.android.settings")
    assert "com.android.launcher3/" in c.sh("dumpsys activity activities")


# ====================================================================== adb CLI: settings, dumpsys

@case("cli-settings-put-get-list-delete")
def _(c: Ctx) -> None:
    key = f"conf_{uuid.uuid4().hex[:6]}"
    assert c.sh(f"settings get global {key}") == "null\n"
    c.sh(f"settings put global {key} 42")
    assert c.sh(f"settings get global {key}") == "42\n"
    assert f"{key}=42" in c.sh("settings list global").splitlines()
    assert c.sh(f"settings get secure {key}") == "null\n"  # per namespace
    assert c.sh(f"settings delete global {key}") == "Deleted 1 rows\n"
    assert c.sh(f"settings get global {key}") == "null\n"


@case("cli-settings-per-device")
def _(c: Ctx) -> None:
    other = c.fleet.serials[1]
    c.sh("settings put system screen_off_timeout 123456")
    r = subprocess.run([ADB, "-P", str(c.fleet.adb_port), "-s", other, "shell",
                        "settings get system screen_off_timeout"], capture_output=True,
                       text=True, timeout=20)
    assert r.stdout.strip() != "123456"
    assert "mScreenOffTimeoutSetting=123456" in c.sh("dumpsys power")


@case("cli-settings-bad-namespace")
def _(c: Ctx) -> None:
    r = c.adb("shell", "settings get nope x")
    assert r.returncode != 0 and "Invalid namespace" in r.stderr


@case("cli-dumpsys-power")
def _(c: Ctx) -> None:
    out = c.sh("dumpsys power")
    assert "mWakefulness=Awake" in out and "Display Power: state=ON" in out
    c.sh("input keyevent KEYCODE_SLEEP")
    try:
        out = c.sh("dumpsys power")
        assert "mWakefulness=Asleep" in out and "mHoldingDisplaySuspendBlocker=false" in out
    finally:
        c.sh("input keyevent KEYCODE_WAKEUP")


@case("cli-dumpsys-activity-resumed")
def _(c: Ctx) -> None:
    c.sh("input keyevent KEYCODE_HOME")
    out = c.sh("dumpsys activity activities")
    assert re.search(r"ResumedActivity: ActivityRecord\{\w+ u0 com\.android\.launcher3/"
                     r"\.uioverrides\.QuickstepLauncher t\d+\}", out), out


@case("cli-dumpsys-battery-and-list")
def _(c: Ctx) -> None:
    assert re.search(r"^  level: \d+$", c.sh("dumpsys battery"), re.M)
    services = c.sh("dumpsys -l")
    for name in ("activity", "battery", "power", "window"):
        assert f"  {name}\n" in services


# ====================================================================== adb CLI: forward / reverse

@case("cli-forward-tcp-bytes-both-ways")
def _(c: Ctx) -> None:
    dport, hport = c.port(1), c.port(2)
    # nc's stdin stays open a moment: when a device program half-closes (EOF on stdin ->
    # shutdown), adbd closes the whole stream (adb has no half-close), on phones too
    device_listen(c, dport, f"(echo from-device; sleep 1) | nc -l -p {dport} -s 127.0.0.1 "
                            f"-q 1 > {TMP}/fwd-in.txt")
    c.adb("forward", f"tcp:{hport}", f"tcp:{dport}", check=True)
    with socket.create_connection(("127.0.0.1", hport), timeout=10) as s:
        s.sendall(b"from-host\n")
        data = b""
        s.settimeout(10)
        while b"\n" not in data:
            chunk = s.recv(100)
            if not chunk:
                break
            data += chunk
    assert data == b"from-device\n"
    wait_for(lambda: c.sh(f"cat {TMP}/fwd-in.txt") == "from-host\n", 10, "device got bytes")


@case("cli-forward-list-remove")
def _(c: Ctx) -> None:
    a, b = c.port(3), c.port(4)
    c.adb("forward", f"tcp:{a}", "tcp:7912", check=True)
    c.adb("forward", f"tcp:{b}", "localabstract:conf_sock", check=True)
    out = c.adb("forward", "--list", check=True).stdout
    assert f"{c.serial} tcp:{a} tcp:7912" in out and f"{c.serial} tcp:{b} localabstract:conf_sock" in out
    c.adb("forward", "--remove", f"tcp:{a}", check=True)
    out = c.adb("forward", "--list", check=True).stdout
    assert f"tcp:{a} " not in out and f"tcp:{b} " in out
    c.adb("forward", "--remove-all", check=True)
    assert c.serial not in c.adb("forward", "--list", check=True).stdout


@case("cli-forward-to-closed-port-closes")
def _(c: Ctx) -> None:
    hport = c.port(5)
    c.adb("forward", f"tcp:{hport}", f"tcp:{c.port(6)}", check=True)  # nobody listens there
    with socket.create_connection(("127.0.0.1", hport), timeout=10) as s:
        s.settimeout(10)
        assert s.recv(10) == b""  # adbd refused the OPEN: the host closes the connection


@case("cli-forward-localabstract")
def _(c: Ctx) -> None:
    name = f"conf_{uuid.uuid4().hex[:8]}"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind("\0" + name)  # the device world shares the host's abstract namespace
    srv.listen(1)
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            got.append(conn.recv(100))
            conn.sendall(b"pong")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    hport = c.port(7)
    c.adb("forward", f"tcp:{hport}", f"localabstract:{name}", check=True)
    with socket.create_connection(("127.0.0.1", hport), timeout=10) as s:
        s.sendall(b"ping")
        s.settimeout(10)
        assert s.recv(100) == b"pong"
    t.join(5)
    srv.close()
    assert got == [b"ping"]


@case("cli-forward-tcp0-allocates")
def _(c: Ctx) -> None:
    out = c.adb("forward", "tcp:0", "tcp:7912", check=True).stdout.strip()
    assert out.isdigit() and f"tcp:{out} tcp:7912" in c.adb("forward", "--list").stdout


@case("cli-reverse-tcp-bytes-both-ways")
def _(c: Ctx) -> None:
    hport, dport = c.port(8), c.port(9)
    srv = socket.create_server(("127.0.0.1", hport))
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(10)
            got.append(conn.recv(100))
            conn.sendall(b"from-host\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    c.adb("reverse", f"tcp:{dport}", f"tcp:{hport}", check=True)
    out = c.sh(f"(echo from-device; sleep 1) | nc -q 1 127.0.0.1 {dport}")
    t.join(10)
    srv.close()
    assert got == [b"from-device\n"] and out == "from-host\n"


@case("cli-reverse-list-remove")
def _(c: Ctx) -> None:
    a = c.port(10)
    c.adb("reverse", f"tcp:{a}", "tcp:4000", check=True)
    c.adb("reverse", "localabstract:conf_rev", "tcp:4001", check=True)
    out = c.adb("reverse", "--list", check=True).stdout
    assert re.search(rf"^\S+ tcp:{a} tcp:4000$", out, re.M), out
    assert re.search(r"^\S+ localabstract:conf_rev tcp:4001$", out, re.M), out
    c.adb("reverse", "--remove", f"tcp:{a}", check=True)
    assert f"tcp:{a} " not in c.adb("reverse", "--list", check=True).stdout
    r = c.adb("reverse", "--remove", f"tcp:{a}")
    assert r.returncode != 0 and f"listener 'tcp:{a}' not found" in r.stderr
    c.adb("reverse", "--remove-all", check=True)
    assert c.adb("reverse", "--list", check=True).stdout.strip() == ""


@case("cli-reverse-norebind-and-privileged-port")
def _(c: Ctx) -> None:
    a = c.port(12)
    c.adb("reverse", f"tcp:{a}", "tcp:4000", check=True)
    r = c.adb("reverse", "--no-rebind", f"tcp:{a}", "tcp:4001")
    assert r.returncode != 0 and "cannot rebind" in r.stderr
    r = c.adb("reverse", "tcp:80", "tcp:4000")  # adbd runs as shell: no ports < 1024
    assert r.returncode != 0 and "cannot bind listener" in r.stderr


@case("cli-forward-localfilesystem")
def _(c: Ctx) -> None:
    sock, hport = f"{TMP}/conf.sock", c.port(16)
    c.sh(f"rm -f {sock}")
    c.sh(f"sh -c {shlex.quote(f'(echo from-unix; sleep 1) | nc -U -l -s {sock} > {TMP}/u-in.txt')}"
         " >/dev/null 2>&1 </dev/null &")
    wait_for(lambda: c.adb("shell", f"test -S {sock}").returncode == 0, 10, "the unix socket")
    c.adb("forward", f"tcp:{hport}", f"localfilesystem:{sock}", check=True)
    with socket.create_connection(("127.0.0.1", hport), timeout=10) as s:
        s.sendall(b"to-unix\n")
        s.settimeout(10)
        assert s.recv(100) == b"from-unix\n"
    wait_for(lambda: c.sh(f"cat {TMP}/u-in.txt") == "to-unix\n", 10, "device got bytes")


# ====================================================================== adbutils e2e (ported)

@case("adbutils-shell-quoting")
def _(c: Ctx) -> None:
    for text in ("foo", "?", "&", "but    123"):
        assert c.d.shell(["echo", "-n", text]) == text
    assert c.d.shell("pwd", rstrip=False) in ("/\n", "/\r\n")


@case("adbutils-shell-bytes-and-stream")
def _(c: Ctx) -> None:
    assert c.d.shell("echo -n hello", encoding=None) == b"hello"
    assert c.d.shell2("echo -n hello", encoding=None).output == b"hello"
    assert c.d.open_shell("echo -n 'hello world'").read_until_close() == "hello world"


@case("adbutils-shell-timeout")
def _(c: Ctx) -> None:
    with pytest.raises(adbutils.AdbTimeout):
        c.d.shell("sleep 10", timeout=1.0)


@case("adbutils-shell2-returncode")
def _(c: Ctx) -> None:
    res = c.d.shell2("echo -n 'hello'; false")
    assert (res.output, res.returncode) == ("hello", 1)


@case("adbutils-get-serial-state-prop")
def _(c: Ctx) -> None:
    assert c.d.get_serialno() == c.serial
    assert c.d.get_state() == "device"
    assert c.d.getprop("ro.serialno") == c.serial
    assert c.d.prop.model and c.d.prop.name


@case("adbutils-transport-id-and-forward-list")
def _(c: Ctx) -> None:
    info = next(i for i in c.client.list(extended=True) if i.serial == c.serial)
    dev = c.client.device(transport_id=info.transport_id)
    assert isinstance(dev.sync.list(TMP), list)
    assert isinstance(dev.forward_list(), list)


@case("adbutils-sync-push-pull-read")
def _(c: Ctx) -> None:
    path = f"{TMP}/Hi-世界.txt"
    c.d.sync.push(io.BytesIO(b"Hello 1"), path)
    assert c.d.sync.read_bytes(path) == b"Hello 1"
    c.d.sync.push(b"Hello 12", path)
    assert c.d.sync.read_text(path) == "Hello 12"
    src = c.tmp / "hi.txt"
    src.write_text("Hello Android")
    c.d.sync.push(src, path)
    dst = c.tmp / "dst.txt"
    c.d.sync.pull(path, dst)
    assert dst.read_text(encoding="utf-8") == "Hello Android"
    assert b"".join(c.d.sync.iter_content(path)) == b"Hello Android"
    c.d.remove(path)
    assert not c.d.sync.exists(path)


@case("adbutils-sync-push-to-dir")
def _(c: Ctx) -> None:
    d = f"{TMP}/adbutils-test"
    c.d.shell(f"mkdir -p {d}")
    data = str(uuid.uuid4()).encode()
    with pytest.raises(AdbSyncError):
        c.d.sync.push(io.BytesIO(data), d)
    src = c.tmp / "random.txt"
    src.write_bytes(data)
    assert c.d.sync.push(src, d) == len(data)
    assert c.d.sync.read_bytes(d + "/random.txt") == data
    c.d.rmtree(d)


@case("adbutils-pull-dir")
def _(c: Ctx) -> None:
    tree = c.tmp / "src"
    (tree / "a" / "aa").mkdir(parents=True)
    (tree / "1.txt").write_text("1\n")
    (tree / "a" / "aa" / "aa1.txt").write_text("aa1\n")
    old = os.environ.get("ANDROID_ADB_SERVER_PORT")
    os.environ["ANDROID_ADB_SERVER_PORT"] = str(c.fleet.adb_port)  # adb_output runs `adb`
    try:
        c.d.adb_output("push", str(tree), "/sdcard/test_d")
    finally:
        if old is None:
            os.environ.pop("ANDROID_ADB_SERVER_PORT", None)
        else:
            os.environ["ANDROID_ADB_SERVER_PORT"] = old
    out = c.tmp / "out"
    c.d.sync.pull_dir("/sdcard/test_d", out)
    assert (out / "a" / "aa" / "aa1.txt").read_text() == "aa1\n"
    c.d.rmtree("/sdcard/test_d")


@case("adbutils-forward-and-port")
def _(c: Ctx) -> None:
    local = f"tcp:{c.port(13)}"
    c.d.forward(local, "tcp:7912")
    assert any(i.local == local and i.remote == "tcp:7912" and i.serial == c.serial
               for i in c.d.forward_list())
    assert isinstance(c.d.forward_port("tcp:7912"), int)


@case("adbutils-reverse")
def _(c: Ctx) -> None:
    remote = f"tcp:{c.port(14)}"
    c.d.reverse(remote, "tcp:4000")
    assert any(i.remote == remote and i.local == "tcp:4000" for i in c.d.reverse_list())


@case("adbutils-create-connection-tcp")
def _(c: Ctx) -> None:
    dport = c.port(15)
    device_listen(c, dport, f"(echo hi-conn; sleep 1) | nc -l -p {dport} -s 127.0.0.1 -q 1")
    sock = c.d.create_connection(adbutils.Network.TCP, dport)
    try:
        sock.settimeout(10)
        assert sock.recv(100) == b"hi-conn\n"
    finally:
        sock.close()


@case("adbutils-battery-keyevent-volume")
def _(c: Ctx) -> None:
    assert 0 <= c.d.battery().level <= 100
    c.d.keyevent(4)
    c.d.volume_up(2)
    c.d.volume_down(3)
    c.d.volume_mute()


@case("adbutils-brightness")
def _(c: Ctx) -> None:
    cur = c.d.brightness_value
    c.d.brightness_value = 100
    assert c.d.brightness_value == 100
    c.d.brightness_value = cur
    mode = c.d.brightness_mode
    other = BrightnessMode.MANUAL if mode == BrightnessMode.AUTO else BrightnessMode.AUTO
    c.d.brightness_mode = other
    assert c.d.brightness_mode == other
    c.d.brightness_mode = mode


@case("adbutils-switch-screen-airplane-wifi")
def _(c: Ctx) -> None:
    c.d.switch_screen(False)
    assert not c.d.is_screen_on()
    c.d.switch_screen(True)
    assert c.d.is_screen_on()
    c.d.switch_airplane(True)
    assert c.d.shell("settings get global airplane_mode_on") == "1"
    c.d.switch_airplane(False)
    c.d.switch_wifi(False)
    assert c.d.shell("settings get global wifi_on") == "0"
    c.d.switch_wifi(True)


@case("adbutils-click-swipe-drag-keys")
def _(c: Ctx) -> None:
    c.d.swipe(100, 100, 400, 1)
    c.d.drag(940, 1584, 400, 900, 4)
    c.d.click(100, 100)
    c.d.send_keys("1234")


@case("adbutils-list-packages-app-info")
def _(c: Ctx) -> None:
    pkgs = c.d.list_packages()
    assert "com.android.settings" in pkgs and pkgs == sorted(pkgs)
    info = c.d.app_info("com.android.settings")
    assert info is not None and info.path.endswith(".apk") and info.version_code
    assert c.d.app_info("com.example.missing") is None


@case("adbutils-app-start-current-stop")
def _(c: Ctx) -> None:
    c.d.app_start("com.android.deskclock")  # monkey -p PKG -c LAUNCHER 1
    assert c.d.app_current().package == "com.android.deskclock"
    c.d.app_stop("com.android.deskclock")
    assert c.d.app_current().package != "com.android.deskclock"
    c.d.app_start("com.android.settings", ".Settings")
    assert c.d.app_current().activity == "com.android.settings.Settings"


@case("adbutils-open-browser")
def _(c: Ctx) -> None:
    c.d.open_browser("https://example.org")
    assert "dat=https://example.org" in c.d.shell("logcat -d -s ActivityTaskManager")


@case("adbutils-window-size-rotation")
def _(c: Ctx) -> None:
    w, h = c.d.window_size()
    assert (w, h) == wm_size(c)
    assert c.d.rotation() == 0
    nw, nh = c.d.window_size(landscape=True)
    assert (nw, nh) == (h, w)


@case("adbutils-screenshot-framebuffer")
def _(c: Ctx) -> None:
    im = c.d.screenshot()
    assert im.mode == "RGB" and im.size == wm_size(c)
    fb = c.d.framebuffer()
    assert fb.size == wm_size(c)


@case("adbutils-logcat")
def _(c: Ctx) -> None:
    path = c.tmp / "logcat.txt"
    logcat = c.d.logcat(path, clear=True, command="logcat -v time", re_filter="I/TAG")
    time.sleep(1.0)
    c.d.shell(["log", "-p", "i", "-t", "TAG", "hello"])
    time.sleep(1.0)
    logcat.stop()
    assert re.search(r"I/TAG.*hello", path.read_text(encoding="utf-8"))


@case("adbutils-wlan-ip")
def _(c: Ctx) -> None:
    # the device world shares the host's network namespace: its interfaces are the host's
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", c.d.wlan_ip())


@case("adbutils-dump-hierarchy")
def _(c: Ctx) -> None:
    c.sh("am start -n com.android.settings/.Settings")
    out = c.d.dump_hierarchy()
    assert out.startswith("<?xml") and out.rstrip().endswith("</hierarchy>")
    w, h = wm_size(c)
    assert f'bounds="[0,0][{w},{h}]"' in out and 'package="com.android.settings"' in out
    root = ElementTree.fromstring(out.encode())
    assert root.tag == "hierarchy" and len(root.findall(".//node")) == 4


# ====================================================================== last: reboot

@case("cli-reboot-keeps-settings-clears-log")
def _(c: Ctx) -> None:
    c.sh("settings put secure conf_reboot kept; log -t BeforeReboot gone-after-boot")
    c.adb("reboot", timeout=30)
    time.sleep(1.0)
    c.adb("wait-for-device", timeout=60, check=True)
    wait_for(lambda: c.adb("shell", "getprop sys.boot_completed").stdout.strip() == "1", 30,
             "boot completed")
    assert c.sh("settings get secure conf_reboot") == "kept\n"  # settings_secure.xml persists
    assert "gone-after-boot" not in c.adb("logcat", "-d", check=True).stdout  # logd is RAM


# ====================================================================== runner

@pytest.mark.parametrize("name,fn", [pytest.param(n, f, id=n, marks=m) for n, f, m in CASES])
def test_conformance(name: str, fn: Callable[[Ctx], None], ctx: Ctx) -> None:
    fn(ctx)
