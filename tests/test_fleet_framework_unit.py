"""Pure parts of the virtual device's adb socket services and framework commands:
socket specs, reverse replies, the framework state, logcat/am/screencap formats, getprop.

Why separate from the conformance battery: these run without a fleet (no root, fast) and
pin the exact byte formats that the battery then checks end to end.
"""
from __future__ import annotations

import asyncio
import struct
import zlib

import pytest

from adbflow.fleet import build_props as bp
from adbflow.fleet import socket_services as ss
from adbflow.fleet.framework import FrameworkState, android_id
from adbflow.fleet.profile import load_virtual_profile
from adbflow.fleet.programs import am, logcat, screencap


@pytest.mark.parametrize("spec,want", [
    ("tcp:8080", ss.SocketSpec("tcp", port=8080)),
    ("tcp:localhost:7912", ss.SocketSpec("tcp", port=7912)),
    ("localabstract:scrcpy", ss.SocketSpec("localabstract", name="scrcpy")),
    ("localfilesystem:/data/local/tmp/s", ss.SocketSpec("localfilesystem",
                                                        name="/data/local/tmp/s")),
    ("localreserved:logd", ss.SocketSpec("localreserved", name="logd")),
])
def test_parse_socket_specs(spec: str, want: ss.SocketSpec) -> None:
    assert ss.parse_spec(spec) == want


@pytest.mark.parametrize("spec,message", [
    ("tcp:10.0.0.2:80", "adbd does not support arbitrary tcp connections"),
    ("tcp:99999", "bad port number '99999'"),
    ("tcp:http", "bad port number 'http'"),
    ("vsock:1:2", "unknown socket specification 'vsock:1:2'"),
])
def test_socket_specs_adbd_refuses(spec: str, message: str) -> None:
    with pytest.raises(ss.SpecError, match=message):
        ss.parse_spec(spec)


class _FakeConn:
    def __init__(self) -> None:
        self.service_state: dict = {}
        self.on_drop: list = []


def test_reverse_replies_have_adbd_framing() -> None:
    async def run() -> list[bytes]:
        conn = _FakeConn()
        out = [await ss.reverse_request(conn, None, "forward:tcp:0;tcp:4000"),  # type: ignore[arg-type]
               await ss.reverse_request(conn, None, "list-forward"),  # type: ignore[arg-type]
               await ss.reverse_request(conn, None, "killforward:tcp:1"),  # type: ignore[arg-type]
               await ss.reverse_request(conn, None, "forward:tcp:5;nope;x"),  # type: ignore[arg-type]
               await ss.reverse_request(conn, None, "killforward-all"),  # type: ignore[arg-type]
               await ss.reverse_request(conn, None, "list-forward")]  # type: ignore[arg-type]
        for hook in conn.on_drop:
            hook()
        return out

    fwd, listing, kill_missing, bad, kill_all, empty = asyncio.run(run())
    assert fwd[:4] == b"OKAY" and int(fwd[4:8], 16) == len(fwd) - 8
    port = int(fwd[8:])
    text = listing[4:].decode()
    assert int(listing[:4], 16) == len(text) and text.endswith(f" tcp:{port} tcp:4000\n")
    assert kill_missing == ss.fail("listener 'tcp:1' not found")
    assert kill_missing[:4] == b"FAIL" and int(kill_missing[4:8], 16) == len(kill_missing) - 8
    assert bad == ss.fail("bad forward: tcp:5;nope;x")
    assert kill_all == b"OKAY" and empty == b"0000"


def test_framework_state_settings_logs_activity(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = tmp_path / "framework.json"
    st = FrameworkState("emulator-5554", "Pixel", store)
    assert st.handle({"op": "settings", "action": "get", "namespace": "secure",
                      "key": "android_id"})["value"] == android_id("emulator-5554")
    st.handle({"op": "settings", "action": "put", "namespace": "global", "key": "k",
               "value": "v"})
    assert st.handle({"op": "settings", "action": "get", "namespace": "bogus"})["ok"] is False
    again = FrameworkState("emulator-5554", "Pixel", store)  # persisted, like settings_*.xml
    assert again.handle({"op": "settings", "action": "get", "namespace": "global",
                         "key": "k"})["value"] == "v"
    st.handle({"op": "log", "entries": [{"prio": 6, "tag": "T", "msg": "x" * 10000}]})
    last = st.handle({"op": "logcat"})["entries"][-1]
    assert (last["tag"], len(last["msg"])) == ("T", 4068)  # logd's payload limit
    st.handle({"op": "activity", "start": "com.android.settings/.Settings"})
    assert st.handle({"op": "activity", "force_stop": "com.android.settings"})[
        "focus"].startswith("com.android.launcher3/")
    st.handle({"op": "logcat", "clear": True})
    assert st.handle({"op": "logcat"})["entries"] == []


def test_logcat_formats_match_logprint() -> None:
    e = {"t": 1764580211.123, "pid": 1234, "tid": 1240, "prio": 4, "tag": "MyTag",
         "msg": "hello\nworld"}
    assert logcat.render(e, "threadtime", set()) == (
        "12-01 09:10:11.123  1234  1240 I MyTag   : hello\n"
        "12-01 09:10:11.123  1234  1240 I MyTag   : world\n")
    assert logcat.render(e, "brief", set()).splitlines()[0] == "I/MyTag   ( 1234): hello"
    assert logcat.render(e, "time", set()).startswith("12-01 09:10:11.123 I/MyTag   ( 1234): ")
    assert logcat.render(e, "raw", set()) == "hello\nworld\n"
    keep = logcat.make_filter(logcat.parse_args(["-s", "MyTag:W"]))
    assert not keep(e) and keep({**e, "prio": 5}) and not keep({**e, "tag": "x", "prio": 7})


def test_am_intent_short_strings() -> None:
    it = am.parse_intent(["-a", "android.intent.action.VIEW", "-d", "https://x.org",
                          "-n", "com.android.chrome/com.google.android.apps.chrome.Main",
                          "--es", "k", "v", "-f", "0x10000000"])
    assert it.short() == ("Intent { act=android.intent.action.VIEW dat=https://x.org "
                          "flg=0x10000000 cmp=com.android.chrome/com.google.android.apps."
                          "chrome.Main (has extras) }")
    assert am.parse_intent(["-n", "com.android.settings/com.android.settings.Settings"]
                           ).inner() == "{cmp=com.android.settings/.Settings}"


def test_screencap_png_and_raw_are_real() -> None:
    data = screencap.png(30, 20)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">IIBB", data[16:26]) == (30, 20, 8, 6)
    raw = zlib.decompress(data[data.index(b"IDAT") + 4:data.index(b"IEND") - 8])
    assert len(raw) == 20 * (1 + 30 * 4)
    assert len(screencap.raw_dump(30, 20, 28)) == 16 + 30 * 20 * 4
    assert len(screencap.raw_dump(30, 20, 27)) == 12 + 30 * 20 * 4


@pytest.mark.parametrize("version,sdk,release", [("7.1", 25, "7.1.2"), ("11", 30, "11"),
                                                 ("15", 35, "15"), (None, 34, "14")])
def test_build_props_follow_the_android_version(version, sdk: int, release: str) -> None:  # type: ignore[no-untyped-def]
    prof = load_virtual_profile("midrange_2023")
    props = {**prof.props, "ro.product.brand": "adbflow", "ro.build.type": "user",
             "ro.build.tags": "release-keys"}
    out = bp.build_props(profile_name=prof.name, props=props, serial="s1",
                         android_version=version)
    assert (out["ro.build.version.sdk"], out["ro.build.version.release"]) == (str(sdk), release)
    assert out["ro.build.id"] == bp.RELEASES[sdk][1]
    assert out["ro.build.fingerprint"] == (
        f"adbflow/{props['ro.product.name']}/{props['ro.product.device']}:{release}/"
        f"{out['ro.build.id']}/{out['ro.build.version.incremental']}:user/release-keys")
    assert ("ro.product.system.model" in out) == (sdk >= 29)


def test_every_profile_getprop_is_consistent() -> None:
    for name in ("old_2017", "lowend_2020", "flagship_2025"):
        d = load_virtual_profile(name).device_props("127.0.0.1:20001")
        assert d["ro.serialno"] == d["ro.boot.serialno"] == "127.0.0.1:20001"
        assert f":{d['ro.build.version.release']}/{d['ro.build.id']}/" in d["ro.build.fingerprint"]
