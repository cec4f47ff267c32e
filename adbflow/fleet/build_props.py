"""The build properties a real phone's `getprop` shows, derived from a virtual profile.

Why: adb automation tools identify a device from getprop (ro.build.fingerprint,
ro.build.id, ro.build.version.sdk/release, ro.product.*, ro.serialno...) and adbflow's
identity work keys on ro.serialno / ro.boot.serialno. The values must agree with each
other as on a real build: the fingerprint is
`BRAND/NAME/DEVICE:RELEASE/ID/INCREMENTAL:TYPE/TAGS` (build/make/core/sysprop.mk), the
build id belongs to the release (AOSP build numbers: letter = release, then the branch
date), the security patch matches the id's date. Pure functions: profile values in,
a dict out.
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone

#: sdk -> (release, a real AOSP build id of that release, its security patch level)
RELEASES: dict[int, tuple[str, str, str]] = {
    23: ("6.0.1", "MMB29M", "2016-01-01"),
    24: ("7.0", "NRD90M", "2016-09-05"),
    25: ("7.1.2", "N2G47O", "2017-05-05"),
    26: ("8.0.0", "OPR6.170623.013", "2017-09-05"),
    27: ("8.1.0", "OPM1.171019.011", "2017-12-05"),
    28: ("9", "PQ3A.190801.002", "2019-08-01"),
    29: ("10", "QQ3A.200805.001", "2020-08-05"),
    30: ("11", "RQ3A.211001.001", "2021-10-01"),
    31: ("12", "SQ3A.220705.003", "2022-07-05"),
    32: ("12", "SP2A.220505.002", "2022-05-05"),
    33: ("13", "TQ3A.230901.001", "2023-09-01"),
    34: ("14", "UP1A.231005.007", "2023-10-05"),
    35: ("15", "AP4A.250205.002", "2025-02-05"),
    36: ("16", "BP2A.250605.031", "2025-06-05"),
}
DEFAULT_SDK = 35

#: (width, height, density) of the panel by profile name; others get a 2020s phone.
DISPLAYS: dict[str, tuple[int, int, int]] = {
    "old_2017": (1080, 1920, 420),
    "lowend_2020": (720, 1600, 320),
    "flagship_2019": (1440, 3040, 560),
    "flagship_2025": (1440, 3120, 560),
}
DEFAULT_DISPLAY = (1080, 2400, 440)


def sdk_of(props: dict[str, str], android_version: object = None) -> int:
    """The profile's API level: an explicit android_version/sdk wins over [props]."""
    for cand in (android_version, props.get("ro.build.version.sdk")):
        try:
            if cand is not None and str(cand).strip():
                value = str(cand).strip()
                if "." in value or int(value) < 20:  # a release like "7.1" or "11"
                    return release_to_sdk(value)
                return int(value)
        except ValueError:
            continue
    return DEFAULT_SDK


def release_to_sdk(release: str) -> int:
    """"7.1" -> 25, "7" -> 24, "11" -> 30, "15" -> 35 (the first sdk of that release)."""
    sdks = [sdk for sdk, (rel, _bid, _patch) in RELEASES.items()
            if rel == release or rel.startswith(release + ".")]
    if not sdks:
        raise ValueError(f"unknown Android release {release!r}")
    return min(sdks)


def display_of(profile_name: str, props: dict[str, str]) -> tuple[int, int, int]:
    """Physical (width, height, density); [props] ro.adbflow.display.size / ro.sf.lcd_density
    override the profile's default."""
    w, h, d = DISPLAYS.get(profile_name, DEFAULT_DISPLAY)
    size = props.get("ro.adbflow.display.size", "")
    if "x" in size:
        try:
            w, h = (int(v) for v in size.split("x", 1))
        except ValueError:
            pass
    try:
        d = int(props.get("ro.sf.lcd_density", d))
    except ValueError:
        pass
    return w, h, d


def build_props(*, profile_name: str, props: dict[str, str], serial: str,
                android_version: object = None) -> dict[str, str]:
    """Every ro.build.* / ro.product.* property, consistent with the profile's release.

    `props` are the profile's own [props] plus the base ones (brand, model, type, tags);
    values already there are kept, except that release and sdk always agree."""
    sdk = sdk_of(props, android_version)
    release, build_id, patch = RELEASES.get(sdk, RELEASES[DEFAULT_SDK])
    if sdk not in RELEASES:
        release = props.get("ro.build.version.release", release)
    if android_version is None and props.get("ro.build.version.release"):
        release = props["ro.build.version.release"]
    brand = props.get("ro.product.brand", "adbflow")
    name = props.get("ro.product.name", f"adbflow_{profile_name}")
    device = props.get("ro.product.device", profile_name)
    model = props.get("ro.product.model", f"adbflow-virtual {profile_name}")
    manufacturer = props.get("ro.product.manufacturer", "adbflow")
    btype = props.get("ro.build.type", "user")
    tags = props.get("ro.build.tags", "release-keys")
    incremental = str(int(hashlib.sha256(f"{profile_name}:{sdk}".encode()).hexdigest()[:6], 16))
    fingerprint = f"{brand}/{name}/{device}:{release}/{build_id}/{incremental}:{btype}/{tags}"
    date = datetime.strptime(patch, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    utc = int(date.timestamp()) - 86400 * 20
    width, height, density = display_of(profile_name, props)
    out = {
        "ro.build.version.sdk": str(sdk),
        "ro.build.version.release": release,
        "ro.build.version.release_or_codename": release,
        "ro.build.version.codename": "REL",
        "ro.build.version.all_codenames": "REL",
        "ro.build.version.incremental": incremental,
        "ro.build.version.security_patch": patch,
        "ro.build.version.preview_sdk": "0",
        "ro.build.id": build_id,
        "ro.build.display.id": f"{build_id} {btype}-keys" if tags == "release-keys"
        else f"{name}-{btype} {release} {build_id} {incremental} {tags}",
        "ro.build.fingerprint": fingerprint,
        "ro.build.description": f"{name}-{btype} {release} {build_id} {incremental} {tags}",
        "ro.build.product": device,
        "ro.build.flavor": f"{name}-{btype}",
        "ro.build.host": "adbflow-virtual",
        "ro.build.user": "android-build",
        "ro.build.date.utc": str(utc),
        "ro.build.date": datetime.fromtimestamp(utc, timezone.utc).strftime(
            "%a %b %d %H:%M:%S UTC %Y"),
        "ro.build.characteristics": "default",
        "ro.product.board": props.get("ro.board.platform", device),
        "ro.product.locale": "en-US",
        "ro.product.first_api_level": str(sdk),
        "ro.bootimage.build.fingerprint": fingerprint,
        "ro.vendor.build.fingerprint": fingerprint,
        "ro.system.build.fingerprint": fingerprint,
        "ro.bootloader": "unknown",
        "ro.boot.hardware": props.get("ro.hardware", "adbflow_virtual"),
        "ro.revision": "0",
        "ro.sf.lcd_density": str(density),
        "ro.adbflow.display.size": f"{width}x{height}",
        "persist.sys.locale": "en-US",
        "gsm.version.baseband": "",
        "ro.crypto.state": "encrypted",
        "ro.treble.enabled": "true" if sdk >= 26 else "false",
        "ro.zygote": "zygote64_32" if sdk >= 23 else "zygote32",
    }
    if sdk >= 29:  # partition-specific product properties (Android 10+)
        for part in ("system", "vendor", "odm", "product"):
            out[f"ro.product.{part}.brand"] = brand
            out[f"ro.product.{part}.device"] = device
            out[f"ro.product.{part}.manufacturer"] = manufacturer
            out[f"ro.product.{part}.model"] = model
            out[f"ro.product.{part}.name"] = name
    return out
