"""The framework services of one virtual device (its "system_server" + logd), in the fleet.

Why in the fleet process and not in files inside the device: on Android the log buffer
(logd), the settings provider and the activity manager are system services the shell user
(uid 2000) talks to over sockets; the shell cannot write their state directly. The
stand-in commands (`log`, `logcat`, `settings`, `am`, `input`, `wm`, programs/*.py) run
inside the device and talk to this server over an abstract unix socket named after the
device serial (the device world shares the host's network namespace, see
socket_services.py). One JSON request line, one JSON answer line.

State: the log ring (in memory: cleared by a reboot, like logd's), settings per namespace
and the window-manager overrides (persisted next to the device root, so they survive a
reboot like /data/system/users/0/settings_*.xml), the focused activity (what `am start`
or KEYCODE_HOME last made resumed; reset at boot).
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("adbflow.fleet.framework")

#: Abstract socket name of a device's framework server.
SOCKET_PREFIX = "adbflow-framework:"
LOG_CAPACITY = 5000          # entries kept (logd keeps 256 KiB per buffer by default)
MAX_MESSAGE = 4068           # logd's max payload (LOGGER_ENTRY_MAX_PAYLOAD)
MAX_TAG = 128
MAX_REQUEST = 1 << 20
HEARTBEAT_S = 1.0          # simulated system log chatter (see _system_chatter)
NAMESPACES = ("system", "secure", "global")
LAUNCHER = "com.android.launcher3/.uioverrides.QuickstepLauncher"
PRIORITIES = "VDIWEF"


def socket_name(serial: str) -> str:
    return "\0" + SOCKET_PREFIX + serial


def android_id(serial: str) -> str:
    """Settings.Secure.ANDROID_ID: 16 hex digits, stable per device."""
    return hashlib.sha256(serial.encode()).hexdigest()[:16]


def default_settings(serial: str, model: str) -> dict[str, dict[str, str]]:
    return {
        "global": {"adb_enabled": "1", "airplane_mode_on": "0", "auto_time": "1",
                   "development_settings_enabled": "1", "device_name": model,
                   "stay_on_while_plugged_in": "0", "wifi_on": "1", "mobile_data": "1",
                   "window_animation_scale": "1.0", "transition_animation_scale": "1.0",
                   "animator_duration_scale": "1.0", "package_verifier_enable": "1"},
        "secure": {"android_id": android_id(serial), "location_mode": "3",
                   "default_input_method": "com.android.inputmethod.latin/.LatinIME",
                   "enabled_input_methods": "com.android.inputmethod.latin/.LatinIME",
                   "screensaver_enabled": "0", "user_setup_complete": "1"},
        "system": {"screen_brightness": "102", "screen_brightness_mode": "1",
                   "screen_off_timeout": "60000", "font_scale": "1.0",
                   "accelerometer_rotation": "1", "haptic_feedback_enabled": "1",
                   "sound_effects_enabled": "1"},
    }


class FrameworkState:
    """Pure state + request handling (unit-testable without sockets)."""

    def __init__(self, serial: str, model: str, store: Path | None, *, boot_pid: int = 1) -> None:
        self.serial = serial
        self.store = store
        self.seq = 0
        self.logs: collections.deque[dict[str, Any]] = collections.deque(maxlen=LOG_CAPACITY)
        self.settings = default_settings(serial, model)
        self.wm: dict[str, str] = {}
        self.focus = LAUNCHER
        self.stopped: set[str] = set()
        self.awake = True
        self._load()
        self.add_log(4, "ActivityManager", "System now ready", pid=boot_pid)
        self.add_log(4, "ActivityTaskManager", f"START u0 {{cmp={LAUNCHER}}} from uid 1000",
                     pid=boot_pid)

    # ---------------------------------------------------------------- persistence
    def _load(self) -> None:
        if self.store is None:
            return
        try:
            data = json.loads(self.store.read_text())
        except (OSError, ValueError):
            return
        for ns in NAMESPACES:
            values = data.get("settings", {}).get(ns)
            if isinstance(values, dict):
                self.settings[ns] = {str(k): str(v) for k, v in values.items()}
        if isinstance(data.get("wm"), dict):
            self.wm = {str(k): str(v) for k, v in data["wm"].items()}

    def _save(self) -> None:
        if self.store is None:
            return
        tmp = self.store.with_name(self.store.name + ".tmp")
        tmp.write_text(json.dumps({"settings": self.settings, "wm": self.wm}, indent=1,
                                  sort_keys=True))
        os.replace(tmp, self.store)

    # ---------------------------------------------------------------- log
    def add_log(self, prio: int, tag: str, msg: str, *, pid: int = 0, tid: int = 0,
                uid: int = 2000, when: float | None = None) -> None:
        prio = prio if 2 <= prio <= 7 else 4
        self.seq += 1
        self.logs.append({"seq": self.seq, "t": when if when is not None else time.time(),
                          "pid": int(pid), "tid": int(tid or pid), "uid": int(uid),
                          "prio": prio, "tag": str(tag)[:MAX_TAG], "msg": str(msg)[:MAX_MESSAGE]})

    # ---------------------------------------------------------------- requests
    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "log":
            for e in req.get("entries", [])[:1000]:
                self.add_log(int(e.get("prio", 4)), str(e.get("tag", "")), str(e.get("msg", "")),
                             pid=int(e.get("pid", 0)), tid=int(e.get("tid", 0)),
                             uid=int(e.get("uid", 2000)))
            return {"ok": True}
        if op == "logcat":
            if req.get("clear"):
                self.logs.clear()
                return {"ok": True}
            since = int(req.get("since", 0))
            return {"ok": True, "entries": [e for e in self.logs if e["seq"] > since],
                    "seq": self.seq, "size": len(self.logs)}
        if op == "settings":
            return self._settings(req)
        if op == "wm":
            key, value = str(req.get("key", "")), req.get("value")
            if value is not None:
                if value == "":
                    self.wm.pop(key, None)
                else:
                    self.wm[key] = str(value)
                self._save()
            return {"ok": True, "value": self.wm.get(key)}
        if op == "activity":
            if req.get("start"):
                self.focus = str(req["start"])
                self.stopped.discard(self.focus.split("/")[0])
            if req.get("force_stop"):
                pkg = str(req["force_stop"])
                self.stopped.add(pkg)
                if self.focus.split("/")[0] == pkg:
                    self.focus = LAUNCHER
            if req.get("home"):
                self.focus = LAUNCHER
            power = req.get("power")  # KEYCODE_POWER toggles, SLEEP/WAKEUP set
            if power == "toggle":
                self.awake = not self.awake
            elif power in ("sleep", "wakeup"):
                self.awake = power == "wakeup"
            return {"ok": True, "focus": self.focus, "awake": self.awake}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def _settings(self, req: dict[str, Any]) -> dict[str, Any]:
        ns = str(req.get("namespace", ""))
        if ns not in NAMESPACES:
            return {"ok": False, "error": f"Invalid namespace '{ns}'"}
        table = self.settings[ns]
        action = req.get("action")
        key = str(req.get("key", ""))
        if action == "get":
            return {"ok": True, "value": table.get(key)}
        if action == "put":
            table[key] = str(req.get("value", ""))
            self._save()
            return {"ok": True}
        if action == "delete":
            existed = table.pop(key, None) is not None
            self._save()
            return {"ok": True, "deleted": int(existed)}
        if action == "list":
            return {"ok": True, "items": sorted(table.items())}
        return {"ok": False, "error": f"unknown settings action {action!r}"}


class FrameworkServer:
    """Serves FrameworkState on the device's abstract socket from the fleet's event loop."""

    def __init__(self, serial: str, model: str, store: Path | None, *,
                 battery_file: Path | None = None) -> None:
        self.state = FrameworkState(serial, model, store)
        self.serial = serial
        self.battery_file = battery_file
        self.healthd_pid = 300 + int(hashlib.sha256(serial.encode()).hexdigest()[:4], 16) % 400
        self._server: asyncio.base_events.Server | None = None
        self._ticker: asyncio.Future[None] | None = None

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_unix_server(self._client, socket_name(self.serial),
                                                           limit=MAX_REQUEST)
            self._ticker = asyncio.ensure_future(self._system_chatter())

    async def _system_chatter(self) -> None:
        """A phone's log is never quiet: tools that read `logcat` line by line (adbutils'
        logcat().stop() waits for the next line) rely on that. Simulated: one healthd-style
        battery line per HEARTBEAT_S, from the simulated battery in /sys."""
        capacity = self.battery_file
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            level = "80"
            if capacity is not None:
                with contextlib.suppress(OSError):
                    level = capacity.read_text().strip() or level
            self.state.add_log(3, "healthd", f"battery l={level} v=4123 t=27.0 h=2 st=2 "
                               "c=-120000 fc=4500000 chg=u", pid=self.healthd_pid)

    async def stop(self) -> None:
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    req = json.loads(line)
                    answer = self.state.handle(req) if isinstance(req, dict) else {
                        "ok": False, "error": "request must be an object"}
                except (ValueError, TypeError) as exc:
                    answer = {"ok": False, "error": f"bad request: {exc}"}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()
