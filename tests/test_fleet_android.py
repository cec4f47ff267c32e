"""Virtual devices behave like the Android release and user build their profile names
(issue 13): uid 2000 everywhere, read-only / and /system, private /data, sync with the
shell's rights, version-dependent adbd features and toybox, thermal zones per SoC family,
and camera-style publishing that inotify does not see on Android 11+ while
`content query` lists it.

One 4-device fleet (Android 7.1, 9, 11, 15) through the real adb server; Android 6.0
gets its own 1-device fleet (no shell v2 changes how the adb CLI talks to it).
"""
from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from adbflow.device import AdbServer, Device
from adbflow.fleet import adb_server
from adbflow.fleet.profile import load_virtual_profile
from adbflow.paths import ASSETS_DIR

ADB = adb_server.adb_binary()
PROFILES = ["legacy_2016", "budget_2018", "old_2017", "flagship_2024"]   # 7.1, 9, 11, 15
CHELSEA = ASSETS_DIR / "chelsea.png"
SHELL_ID = ("uid=2000(shell) gid=2000(shell) groups=2000(shell),1004(input),1007(log),"
            "1011(adb),1015(sdcard_rw),1028(sdcard_r)")
IMAGES = "content://media/external/images/media"


@pytest.fixture(scope="module")
def fleet(fleet_factory):  # type: ignore[no-untyped-def]
    client = fleet_factory(devices=len(PROFILES), profiles=PROFILES)
    client.by_profile = {d["profile"]: d["serial"] for d in client.state()["devices"]}
    yield client
    fleet_factory.release(client)


def adb(fleet, serial: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run([ADB, "-P", str(fleet.adb_port), "-s", serial, *args],
                          capture_output=True, text=True, timeout=timeout)


def sh(fleet, profile: str, cmd: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return adb(fleet, fleet.by_profile[profile], "shell", cmd)


class Inotify:
    """`inotifyd` on the device (what adbflow's watcher runs), collected in a thread."""

    def __init__(self, fleet, serial: str, directory: str, seconds: int = 6) -> None:  # type: ignore[no-untyped-def]
        # toybox before 2024-03 skips the first mask letter: every letter is doubled
        self.proc = subprocess.Popen(
            [ADB, "-P", str(fleet.adb_port), "-s", serial, "shell",
             f"timeout {seconds} inotifyd - {directory}:nnwwyymmdd"],
            stdout=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def names(self, wait_for: str | None = None, timeout: float = 15) -> list[str]:
        """Names seen so far; with wait_for, until that name shows up or inotifyd ends."""
        deadline = time.monotonic() + timeout
        while wait_for and time.monotonic() < deadline and self.proc.poll() is None:
            if any(ln.split("\t")[-1].startswith(wait_for) for ln in self.lines):
                break
            time.sleep(0.05)
        return [ln.split("\t")[-1] for ln in self.lines if "\t" in ln]

    def finish(self) -> list[str]:
        self.proc.wait(timeout=30)
        self.thread.join(timeout=5)
        return self.names()


def armed(fleet, serial: str, directory: str, seconds: int = 6) -> Inotify:  # type: ignore[no-untyped-def]
    """An Inotify that has proven it sees writes made through the shell's view."""
    w = Inotify(fleet, serial, directory, seconds)
    deadline = time.monotonic() + 10
    n = 0
    while not w.names() and time.monotonic() < deadline:
        adb(fleet, serial, "shell", f"echo x > {directory}/.arm{n}; rm {directory}/.arm{n}")
        n += 1
        time.sleep(0.2)
    assert w.names(), "inotifyd never reported a write made through the shell's own view"
    return w


def content_rows(out: str) -> list[dict[str, str]]:
    """Parse `content query` output whose values contain no ', ' (test data only)."""
    rows = []
    for line in out.splitlines():
        m = re.match(r"Row: \d+ (.*)$", line)
        if m:
            rows.append(dict(kv.split("=", 1) for kv in m[1].split(", ")))
    return rows


# ---------------------------------------------------------------- identity & permissions

def test_every_command_runs_as_the_shell_user_of_a_user_build(fleet) -> None:  # type: ignore[no-untyped-def]
    for profile in PROFILES:
        r = sh(fleet, profile, "id; getprop ro.build.type; getprop ro.debuggable")
        lines = r.stdout.splitlines()
        assert lines[0].startswith(SHELL_ID), (profile, lines[0])
        assert lines[1:] == ["user", "0"], profile
        root = adb(fleet, fleet.by_profile[profile], "root")
        assert "adbd cannot run as root in production builds" in root.stdout + root.stderr
    # stand-in programs run as the shell too, and see the same identity
    r = sh(fleet, "old_2017", "cd /data/local/tmp && sh -c id && ls -ln /data/local/tmp | "
                              "grep -c ' 2000 2000 ' ; true")
    assert r.stdout.startswith("uid=2000(shell)")


def test_root_and_system_are_read_only_and_data_is_private(fleet) -> None:  # type: ignore[no-untyped-def]
    for profile in ("legacy_2016", "old_2017", "flagship_2024"):
        r = sh(fleet, profile, "touch /x; touch /system/x; mkdir /system/d; echo > /vendor/x; "
                               "touch /data/x; ls /data; ls /data/media; cat /data/local/x")
        err = r.stderr + r.stdout
        assert err.count("Read-only file system") >= 3, (profile, err)
        assert "touch: '/data/x': Permission denied" in err, err
        assert "ls: /data: Permission denied" in err and "ls: /data/media: Permission denied" in err
        r = sh(fleet, profile, "echo ok > /data/local/tmp/w && cat /data/local/tmp/w && "
                               "echo ok > /sdcard/Download/w.txt && cat /sdcard/Download/w.txt "
                               "&& ls -ld /data/local/tmp && ls -ln /data/local/tmp/w")
        assert r.returncode == 0 and r.stdout.splitlines()[:2] == ["ok", "ok"], (profile, r)
        assert re.search(r"^drwxrwx--x \d+ shell\s+shell ", r.stdout, re.M), r.stdout
        assert re.search(r" 2000\s+2000 .* /data/local/tmp/w$", r.stdout, re.M), r.stdout


def test_push_has_the_shell_users_rights_and_adbs_error_text(fleet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "f.bin"
    src.write_bytes(b"payload" * 100)
    for profile in ("legacy_2016", "old_2017", "flagship_2024"):   # SEND v1 and SND2
        s = fleet.by_profile[profile]
        r = adb(fleet, s, "push", str(src), "/system/f.bin")
        assert r.returncode != 0
        assert "remote couldn't create file: Read-only file system" in r.stderr, (profile, r)
        r = adb(fleet, s, "push", str(src), "/data/f.bin")
        assert r.returncode != 0 and "Permission denied" in r.stderr, (profile, r)
        r = adb(fleet, s, "push", str(src), "/data/local/tmp/sub/f.bin")
        assert r.returncode == 0, r.stderr
        r = sh(fleet, profile, "ls -ln /data/local/tmp/sub/f.bin; ls -ldn /data/local/tmp/sub; "
                               "echo more >> /data/local/tmp/sub/f.bin && echo appended")
        assert re.search(r"^-\S+ 1 2000\s+2000 700 ", r.stdout, re.M), r.stdout
        assert re.search(r"^d\S+ \d+ 2000\s+2000 ", r.stdout, re.M), r.stdout
        assert "appended" in r.stdout
        r = adb(fleet, s, "pull", "/data/system/nothing", str(tmp_path / "x"))
        assert r.returncode != 0


def test_utf8_names_through_shell_and_sync(fleet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    name = "Ünïcødé 写真 🐈.jpg"
    src = tmp_path / name
    src.write_bytes(b"\xff\xd8 not really a jpeg")
    s = fleet.by_profile["flagship_2024"]
    r = adb(fleet, s, "push", str(src), f"/sdcard/Download/{name}")
    assert r.returncode == 0, r.stderr
    assert name in sh(fleet, "flagship_2024", "ls /sdcard/Download").stdout.splitlines()
    sh(fleet, "flagship_2024", "cp '/sdcard/Download/Ünïcødé 写真 🐈.jpg' /sdcard/Download/é2.jpg")
    back = tmp_path / "back"
    back.mkdir()
    assert adb(fleet, s, "pull", "/sdcard/Download/é2.jpg", str(back)).returncode == 0
    assert (back / "é2.jpg").read_bytes() == src.read_bytes()
    d = Device(s, AdbServer(port=fleet.adb_port))
    assert name in [e.name for e in d.list_dir("/sdcard/Download", timeout=10)]


# ---------------------------------------------------------------- Android versions

def test_adbd_features_and_toybox_follow_the_android_version(fleet) -> None:  # type: ignore[no-untyped-def]
    feats = {p: set(adb(fleet, fleet.by_profile[p], "features").stdout.split())
             for p in PROFILES}
    assert "shell_v2" in feats["legacy_2016"]           # Nougat brought shell v2 (API 24)
    assert not feats["legacy_2016"] & {"stat_v2", "ls_v2", "sendrecv_v2"}
    assert {"stat_v2", "fixed_push_symlink_timestamp"} <= feats["budget_2018"]
    assert not feats["budget_2018"] & {"ls_v2", "sendrecv_v2"}
    assert {"ls_v2", "sendrecv_v2"} <= feats["old_2017"]
    assert "sendrecv_v2_dry_run_send" in feats["flagship_2024"]   # (delayed_ack: host-gated)
    r = sh(fleet, "legacy_2016", "head -c 4 /system/build.prop; echo rc=$?; head -n 1 "
                                 "/system/build.prop")
    assert "head: Unknown option c" in r.stderr and "rc=1" in r.stdout
    assert re.search(r"^[\w.]+=", r.stdout.splitlines()[-1])
    r = sh(fleet, "budget_2018", "head -c 4 /system/build.prop")
    assert r.returncode == 0 and len(r.stdout) == 4
    for profile in ("legacy_2016", "old_2017"):
        assert sh(fleet, profile, "sha256sum /system/build.prop").returncode == 0
    # dumpsys thermalservice exists from Android 10
    for profile, present in (("legacy_2016", False), ("budget_2018", False),
                             ("old_2017", True), ("flagship_2024", True)):
        out = sh(fleet, profile, "dumpsys thermalservice").stdout + \
            sh(fleet, profile, "dumpsys thermalservice").stderr
        assert ("Thermal Status:" in out) is present, (profile, out[:200])
        assert ("Can't find service: thermalservice" in out) is not present


def test_thermal_zones_follow_the_soc_family(fleet) -> None:  # type: ignore[no-untyped-def]
    listing = ('for z in /sys/class/thermal/thermal_zone*; do '
               'printf "%s\\t%s\\n" "$(cat $z/type)" "$(cat $z/temp 2>&1)"; done')
    zones = {}
    for profile in PROFILES:
        out = sh(fleet, profile, listing).stdout
        zones[profile] = [tuple(ln.split("\t", 1)) for ln in out.splitlines()]
    for profile in ("legacy_2016", "flagship_2024"):   # Qualcomm: BCL zones
        z = dict(zones[profile])
        level = load_virtual_profile(profile).battery_level
        assert z["soc"] == str(level), (profile, z.get("soc"))   # battery % as "temp"
        assert any(t.endswith("-lvl0") for t in z) and "vbat" in z
    assert len(zones["flagship_2024"]) > 64
    assert len(zones["legacy_2016"]) < 64
    locked = zones["budget_2018"]
    assert locked and all("Permission denied" in temp for _t, temp in locked), locked[:3]
    assert all(re.fullmatch(r"-?\d+", temp) for _t, temp in zones["old_2017"])


def test_cores_agree_across_nproc_cpuinfo_proc_stat_and_sysfs(fleet) -> None:  # type: ignore[no-untyped-def]
    for profile in ("legacy_2016", "flagship_2024"):
        n = load_virtual_profile(profile).ncores
        r = sh(fleet, profile, "nproc; grep -c ^processor /proc/cpuinfo; "
                               "grep -c '^cpu[0-9]' /proc/stat; cat /sys/devices/system/cpu/present")
        assert r.stdout.split() == [str(n), str(n), str(n), f"0-{n - 1}"], (profile, r.stdout)
    time.sleep(1.5)
    stat = sh(fleet, "flagship_2024", "grep '^cpu[0-9]' /proc/stat").stdout.splitlines()
    rows = [ln.split(None, 1)[1] for ln in stat]
    assert len(set(rows)) == len(rows), stat   # every core has its own counters


def test_stand_in_programs_work_as_the_shell_user(fleet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image
    bmp = tmp_path / "chelsea.bmp"
    Image.open(CHELSEA).convert("RGB").resize((224, 224)).save(bmp, format="BMP")
    s = fleet.by_profile["legacy_2016"]
    assert adb(fleet, s, "push", str(bmp), "/data/local/tmp/chelsea.bmp").returncode == 0
    r = sh(fleet, "legacy_2016",
           "cd /data/local/tmp && ./label_image -m efficientnet_lite0.tflite -l labels.txt "
           "-i chelsea.bmp -t 4 -c 1 --input_mean 0 --input_std 1; echo rc=$?")
    assert "rc=0" in r.stdout, r.stdout + r.stderr
    assert re.search(r"(tabby|tiger cat|Egyptian cat)", r.stdout + r.stderr)
    r = sh(fleet, "budget_2018", "dumpsys cpuinfo | head -1; dumpsys battery | grep level")
    assert r.stdout.startswith("Load: ") and "level: 71" in r.stdout


# ---------------------------------------------------------------- camera & MediaStore

@pytest.mark.parametrize("profile", ["old_2017", "flagship_2024"])
def test_camera_snap_on_11_plus_raises_no_event_for_the_final_name(fleet, profile) -> None:  # type: ignore[no-untyped-def]
    s = fleet.by_profile[profile]
    w = armed(fleet, s, "/sdcard/DCIM/Camera")
    name = f"IMG_{profile}.png"
    shot = fleet.snap_info(s, CHELSEA, name=name)
    assert shot["path"] == f"/storage/emulated/0/DCIM/Camera/{name}"
    assert re.fullmatch(rf"\.pending-\d+-{re.escape(name)}", shot["pending"])
    seen = w.names(wait_for=".pending-")
    time.sleep(1.0)   # time for a (wrong) event of the final name to arrive
    seen = w.names()
    assert shot["pending"] in seen, seen             # the camera's write goes through FUSE
    assert name not in seen, seen                    # MediaProvider's rename does not
    assert name in sh(fleet, profile, "ls /sdcard/DCIM/Camera").stdout.splitlines()
    out = sh(fleet, profile, f"content query --uri {IMAGES} --projection "
                             "_id:_data:_display_name:mime_type:is_pending:width").stdout
    rows = content_rows(out)
    row = next(r for r in rows if r["_display_name"] == name)
    assert row["_data"] == shot["path"] and row["mime_type"] == "image/png"
    assert row["is_pending"] == "0" and row["width"] == "451"
    assert not [r for r in rows if r["_display_name"].startswith(".pending-")]
    w.finish()


def test_file_api_app_renaming_itself_is_seen_by_inotify(fleet) -> None:  # type: ignore[no-untyped-def]
    """The control for the test above: the watcher does see a rename through the view."""
    s = fleet.by_profile["flagship_2024"]
    w = armed(fleet, s, "/sdcard/Pictures")
    fleet.snap(s, CHELSEA, name="file-api.png", directory="Pictures", publish="file")
    assert "file-api.png" in w.names(wait_for="file-api.png")
    w.finish()


def test_sdcardfs_device_misses_every_event_of_another_app(fleet) -> None:  # type: ignore[no-untyped-def]
    s = fleet.by_profile["budget_2018"]                        # Android 9
    w = armed(fleet, s, "/sdcard/DCIM/Camera")
    before = set(w.names())
    shot = fleet.snap_info(s, CHELSEA, name="IMG_nine.png", with_video=True)
    assert shot["pending"] is None and shot["storage"] == "sdcardfs"
    time.sleep(1.5)
    assert set(w.names()) == before                          # nothing at all
    assert "IMG_nine.png" in sh(fleet, "budget_2018", "ls /sdcard/DCIM/Camera").stdout
    out = sh(fleet, "budget_2018", f"content query --uri {IMAGES} --projection _id:_data")
    assert "_data=/storage/emulated/0/DCIM/Camera/IMG_nine.png" in out.stdout
    r = sh(fleet, "budget_2018", f"content query --uri {IMAGES} --projection _id:is_pending")
    assert "Invalid column is_pending" in r.stderr          # no scoped-storage columns on 9
    w.finish()


def test_content_query_where_sort_and_hostile_names(fleet) -> None:  # type: ignore[no-untyped-def]
    s = fleet.by_profile["old_2017"]
    hostile = "a, b=c $(touch pwned) `id` ;'\".png"
    fleet.snap(s, CHELSEA, name=hostile)
    shot = fleet.snap_info(s, CHELSEA, name="IMG_20250101_000000_000.png", with_video=True)
    assert shot["video"] == "/storage/emulated/0/DCIM/Camera/VID_20250101_000000_000.mp4"
    out = sh(fleet, "old_2017", f"content query --uri {IMAGES} --projection _id:_display_name "
                                "--sort '_id DESC'").stdout
    lines = out.splitlines()
    assert lines[0].startswith("Row: 0 _id=") and lines[0].endswith(
        "_display_name=IMG_20250101_000000_000.png")
    assert f"_display_name={hostile}" in out                 # verbatim: data, not syntax
    assert sh(fleet, "old_2017", "ls /pwned /sdcard/DCIM/Camera/pwned").returncode != 0
    ids = [int(m) for m in re.findall(r"_id=(\d+)", out)]
    newest = max(ids)
    out = sh(fleet, "old_2017", f"content query --uri {IMAGES} --projection _id "
                                f"--where '_id>{newest}'").stdout
    assert out == "No result found.\n"
    videos = sh(fleet, "old_2017", "content query --uri content://media/external/video/media "
                                   "--projection _display_name:mime_type").stdout
    assert "_display_name=VID_20250101_000000_000.mp4, mime_type=video/mp4" in videos
    assert "VID_" not in sh(fleet, "old_2017", f"content query --uri {IMAGES}").stdout
    r = sh(fleet, "old_2017", f"content query --uri {IMAGES} --where \"1); DROP TABLE files; --\"")
    assert r.returncode != 0 and "Error while accessing provider:media" in r.stderr
    assert "Row: 0" in sh(fleet, "old_2017", f"content query --uri {IMAGES}").stdout
    r = sh(fleet, "old_2017", "content query --uri content://nope/x")
    assert "Could not find provider: nope" in r.stderr


def test_push_into_storage_is_indexed_on_11_plus_and_deletes_drop_rows(fleet, tmp_path: Path
                                                                        ) -> None:  # type: ignore[no-untyped-def]
    for profile, indexed in (("flagship_2024", True), ("budget_2018", False)):
        s = fleet.by_profile[profile]
        assert adb(fleet, s, "push", str(CHELSEA), "/sdcard/Pictures/pushed.png").returncode == 0
        query = f"content query --uri {IMAGES} --projection _display_name:_size"
        out = sh(fleet, profile, query).stdout
        want = f"_display_name=pushed.png, _size={CHELSEA.stat().st_size}"
        assert (want in out) is indexed, (profile, out)   # 6-10: only a media scan indexes
        if indexed:
            sh(fleet, profile, "rm /sdcard/Pictures/pushed.png")
            assert "pushed.png" not in sh(fleet, profile, query).stdout


# ---------------------------------------------------------------- Android 6.0

@pytest.fixture(scope="module")
def marshmallow(fleet_factory):  # type: ignore[no-untyped-def]
    client = fleet_factory(devices=1, profiles=["ancient_2015"])
    yield client
    fleet_factory.release(client)


def test_android_6_has_no_shell_v2_and_no_sha256sum(marshmallow) -> None:  # type: ignore[no-untyped-def]
    s = marshmallow.serials[0]
    feats = adb(marshmallow, s, "features").stdout.split()
    assert "shell_v2" not in feats and "stat_v2" not in feats
    r = adb(marshmallow, s, "shell", "sha256sum /system/build.prop; md5sum /system/build.prop")
    assert "sha256sum" in r.stdout + r.stderr and "not found" in r.stdout + r.stderr
    assert re.search(r"^[0-9a-f]{32}  /system/build.prop$", r.stdout, re.M)
    r = adb(marshmallow, s, "shell", "echo out; echo err >&2; exit 3")
    assert r.returncode == 0 and "out" in r.stdout and "err" in r.stdout   # v1: merged, no code
    assert adb(marshmallow, s, "shell", "id").stdout.startswith(SHELL_ID)
    d = Device(s, AdbServer(port=marshmallow.adb_port))
    res = d.shell("echo hi; exit 5", timeout=20, check=False)
    assert res.stdout.strip() == "hi" and res.exit_code == 5     # adbflow's marker fallback
