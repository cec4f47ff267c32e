"""What an Android version decides on a virtual device (pure functions of the API level).

Why one module: the adb banner, the toybox applet set, `dumpsys`, the storage stack and how
a camera publishes a picture all change with the Android release, and adbflow must meet
each combination a real phone shows. Every table here cites the release that changed it
(AOSP packages/modules/adb transport.cpp feature history, toybox's Android roll-outs,
MediaProvider's FUSE daemon in Android 11); the device build (rootfs, transport, host)
asks these functions and never compares API levels itself.
"""
from __future__ import annotations

from dataclasses import dataclass

#: adbd features by the API level that first shipped them (AOSP transport.cpp
#: supported_features(); shell_v2/cmd arrived with Nougat, stat_v2 and
#: fixed_push_symlink_timestamp with Pie, ls_v2/sendrecv_v2 with Android 11, dry-run send
#: and delayed_ack with Android 12). Compression features are never offered (see
#: protocol.DEVICE_FEATURES); `cmd`/`abb` are left out on purpose (adb install then uses pm).
ADBD_FEATURES_SINCE = (
    ("shell_v2", 24),
    ("stat_v2", 28),
    ("ls_v2", 30),
    ("fixed_push_mkdir", 26),
    ("fixed_push_symlink_timestamp", 28),
    ("sendrecv_v2", 30),
    ("sendrecv_v2_dry_run_send", 31),
    ("delayed_ack", 31),
)

#: toybox applets a release lacks although Debian's toybox 0.8.9 has them: the device's
#: /system/bin gets no link for them (mksh then says `sh: NAME: inaccessible or not found`).
#: Android 6.0 shipped an early toybox with md5sum/sha1sum only; the SHA-2 sums came with 7.0.
APPLETS_MISSING_BEFORE = (
    ("sha256sum", 24), ("sha224sum", 24), ("sha384sum", 24), ("sha512sum", 24),
)


def adbd_features(sdk: int) -> tuple[str, ...]:
    """The `features=` list a real adbd of that API level puts in its CNXN banner."""
    return tuple(name for name, since in ADBD_FEATURES_SINCE if sdk >= since)


def missing_applets(sdk: int) -> frozenset[str]:
    return frozenset(name for name, since in APPLETS_MISSING_BEFORE if sdk < since)


def head_has_c(sdk: int) -> bool:
    """toybox `head -c` arrived in 0.7.4 (Android 8.0); 7.x `head` knows only -n."""
    return sdk >= 26


def has_thermalservice(sdk: int) -> bool:
    """`dumpsys thermalservice` (ThermalManagerService) exists from Android 10 (API 29)."""
    return sdk >= 29


@dataclass(frozen=True)
class StorageModel:
    """How /storage/emulated/0 relates to the lower file system /data/media/0.

    fuse (Android 11+): one FUSE view for every app and the shell; a camera writes
    `.pending-<expiry>-NAME` through it (inotify on the view fires), MediaProvider then
    renames the file on the lower file system: the view sees no event for NAME.
    sdcardfs (Android 6-10): each app writes through its own view; a watcher on the
    shell's view misses other apps' writes entirely."""

    kind: str                 # "fuse" | "sdcardfs"
    pending_prefix: bool      # camera writes .pending-<ts>-NAME first (MediaStore IS_PENDING)


def storage_model(sdk: int) -> StorageModel:
    if sdk >= 30:
        return StorageModel("fuse", pending_prefix=True)
    return StorageModel("sdcardfs", pending_prefix=False)


def pending_name(name: str, now: float) -> str:
    """MediaProvider's pending file name: `.pending-<expiry epoch s>-NAME`, expiry 7 days
    ahead (FileUtils.buildUniqueFile with DEFAULT_DURATION_PENDING)."""
    return f".pending-{int(now) + 7 * 24 * 3600}-{name}"


# ---------------------------------------------------------------- identities (AOSP android_filesystem_config.h)

SHELL_UID = 2000
#: name -> AID of every id the device's passwd/group files name.
AIDS = {
    "root": 0, "system": 1000, "input": 1004, "log": 1007, "adb": 1011, "sdcard_rw": 1015,
    "media_rw": 1023, "sdcard_r": 1028, "ext_data_rw": 1078, "ext_obb_rw": 1079,
    "shell": 2000, "cache": 2001, "net_bt_admin": 3001, "net_bt": 3002, "inet": 3003,
    "net_bw_stats": 3006, "readproc": 3009, "uhid": 3011, "everybody": 9997,
}


def shell_groups(sdk: int) -> list[int]:
    """Supplementary groups adbd gives the shell on a user build (adbd's drop_privileges):
    `id` on a phone shows them; ext_data_rw/ext_obb_rw joined with Android 11's FUSE."""
    names = ["shell", "input", "log", "adb", "sdcard_rw", "sdcard_r"]
    if sdk >= 30:
        names += ["ext_data_rw", "ext_obb_rw"]
    names += ["net_bt_admin", "net_bt", "inet", "net_bw_stats", "readproc", "uhid"]
    return [AIDS[n] for n in names]
