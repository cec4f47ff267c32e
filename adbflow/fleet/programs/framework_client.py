"""Device side of the framework services (see adbflow/fleet/framework.py).

Why a client and not files: the stand-in commands run as the shell user inside the device;
the log buffer, settings and activity state belong to system services, reached here over
the device's abstract socket `adbflow-framework:<serial>` (one JSON line each way).
"""
from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

#: Same file as programs.common.STATE_FILE; not imported from there because common pulls
#: in the load model (and asyncio): +130 ms on every `settings`/`am`/`input` call.
STATE_FILE = Path(os.environ.get("ADBFLOW_VIRTUAL_STATE", "/vendor/etc/adbflow-virtual.json"))

PRIO_LETTERS = "??VDIWEF"   # android_LogPriority: 2 VERBOSE .. 7 FATAL
TIMEOUT_S = 5.0


class FrameworkUnavailable(Exception):
    """The device's framework server does not answer (device stopping, or not virtual)."""


def device_serial() -> str:
    try:
        return str(json.loads(STATE_FILE.read_text())["serial"])
    except (OSError, ValueError, KeyError):
        return os.environ.get("ANDROID_SERIAL", "")


def call(request: dict[str, Any]) -> dict[str, Any]:
    serial = device_serial()
    if not serial:
        raise FrameworkUnavailable("not on a virtual device (no serial)")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT_S)
    try:
        sock.connect("\0adbflow-framework:" + serial)
        sock.sendall(json.dumps(request).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
    except OSError as exc:
        raise FrameworkUnavailable(f"framework services not reachable: {exc}") from exc
    finally:
        sock.close()
    try:
        return json.loads(buf)
    except ValueError as exc:
        raise FrameworkUnavailable("framework services sent a bad answer") from exc


def log(tag: str, msg: str, prio: int = 4) -> None:
    """Best effort (programs must not fail because logging failed), like liblog."""
    try:
        call({"op": "log", "entries": [{"prio": prio, "tag": tag, "msg": msg,
                                        "pid": os.getpid(), "tid": os.getpid(),
                                        "uid": os.getuid()}]})
    except FrameworkUnavailable:
        pass


def call_or_exit(request: dict[str, Any], program: str) -> dict[str, Any]:
    """call(), or the error a system service failure gives on a phone, exit 1."""
    try:
        answer = call(request)
    except FrameworkUnavailable as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    if not answer.get("ok"):
        print(answer.get("error", f"{program}: failed"), file=sys.stderr)
        raise SystemExit(1)
    return answer


def build_props() -> dict[str, str]:
    """/system/build.prop as a dict (what getprop shows)."""
    out: dict[str, str] = {}
    try:
        text = open("/system/build.prop", encoding="utf-8").read()
    except OSError:
        return out
    for line in text.splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key] = value
    return out
