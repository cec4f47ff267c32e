"""What every stand-in device program shares: the device state, faults, simulated timing.

Why: label_image, benchmark_model and llama-cli run REAL models on the host CPU, but must
behave like the device class they stand in for (latency, token rate, current load,
thermal state) and obey fault switches. The backend publishes all of that in
/vendor/etc/adbflow-virtual.json (read-only inside the device); programs read it once.
"""
from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adbflow.fleet.loadmodel import THERMAL_HAL_PATH, contention_factor, thermal_factor

STATE_FILE = Path(os.environ.get("ADBFLOW_VIRTUAL_STATE", "/vendor/etc/adbflow-virtual.json"))
SYS_THERMAL = Path("/sys/class/thermal")


@dataclass
class DeviceState:
    """The part of the backend's state file a program needs."""

    profile: str = "unknown"
    ncores: int = 4
    perf_cores: int = 0           # big + mid (0: unknown, every core counts)
    classify_ms: float = 100.0
    llm_tok_s: float = 20.0
    llm_load_ms: float = 0.0      # simulated model load per program start (profile)
    other_load_pct: float = 0.0
    slow_factor: float = 1.0
    faults: dict[str, Any] | None = None
    found: bool = False
    model_ms: dict[str, float] | None = None   # device model file name -> simulated ms

    def classify_ms_for(self, model_path: str) -> float:
        """Simulated latency of the model at `model_path` (by file name; else classify_ms)."""
        name = model_path.rsplit("/", 1)[-1]
        return float((self.model_ms or {}).get(name, self.classify_ms))

    def program_fault(self, name: str) -> dict[str, Any]:
        progs = (self.faults or {}).get("programs") or {}
        return progs.get(name) or {"mode": "ok"}


def load_state(path: Path | None = None) -> DeviceState:
    """Read the state file; outside a virtual device return neutral defaults."""
    p = path or STATE_FILE
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return DeviceState()
    prof = data.get("profile") or {}
    load = data.get("load") or {}
    faults = data.get("faults") or {}
    return DeviceState(profile=str(prof.get("name", "unknown")),
                       ncores=int(prof.get("ncores", 4)),
                       perf_cores=int(prof.get("perf_cores", 0)),
                       classify_ms=float(prof.get("classify_ms", 100.0)),
                       llm_tok_s=float(prof.get("llm_tok_s", 20.0)),
                       llm_load_ms=float(prof.get("llm_load_ms", 0.0)),
                       other_load_pct=float(load.get("other_load_pct", 0.0)),
                       slow_factor=float(faults.get("slow_factor", 1.0) or 1.0),
                       faults=faults, found=True,
                       model_ms={str(k): float(v) for k, v in
                                 (prof.get("model_ms") or {}).items()})


def skin_temperature_c() -> float:
    """Skin temperature (25 C when unknown): from the thermal HAL stand-in, which the
    device publishes even where the shell may not read the zones, else from the zones."""
    try:
        for t in json.loads((Path("/") / THERMAL_HAL_PATH).read_text())["temperatures"]:
            if t["name"] == "skin-therm":
                return float(t["value"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        for zone in SYS_THERMAL.glob("thermal_zone*"):
            if (zone / "type").read_text().strip() == "skin-therm":
                return int((zone / "temp").read_text().strip()) / 1000.0
    except (OSError, ValueError):
        pass
    return 25.0


def device_sdk() -> int:
    """This device's API level, from /system/build.prop (35 when unreadable)."""
    try:
        for line in Path("/system/build.prop").read_text().splitlines():
            if line.startswith("ro.build.version.sdk="):
                return int(line.split("=", 1)[1])
    except (OSError, ValueError):
        pass
    return 35


@dataclass(frozen=True)
class Slowdown:
    """Why a simulated time is what it is (printed in the 'virtual device' note)."""

    load: float
    thermal: float
    slow: float

    @property
    def total(self) -> float:
        return self.load * self.thermal * self.slow

    def describe(self) -> str:
        return f"load x{self.load:.2f}, thermal x{self.thermal:.2f}, slow_factor x{self.slow:g}"


def slowdown(state: DeviceState) -> Slowdown:
    return Slowdown(load=contention_factor(state.other_load_pct),
                    thermal=thermal_factor(skin_temperature_c()),
                    slow=max(0.01, state.slow_factor))


def sleep_until(deadline: float) -> None:
    """Pad the elapsed time up to `deadline` (time.monotonic())."""
    left = deadline - time.monotonic()
    if left > 0:
        time.sleep(left)


def log_event(tag: str, msg: str, prio: int = 4) -> None:
    """One line into the device's log ring (logcat), best effort like liblog."""
    try:
        from adbflow.fleet.programs.framework_client import log
    except ImportError:  # pragma: no cover - partial install
        return
    log(tag, msg, prio)


def apply_program_fault(name: str, state: DeviceState, garbage_lines: int = 12) -> None:
    """Act out a configured fault for program `name`; returns only when mode is ok."""
    fault = state.program_fault(name)
    mode = fault.get("mode", "ok")
    log_event(name, f"start (adbflow virtual stand-in, profile {state.profile})")
    if mode == "ok":
        return
    if mode == "fail":
        log_event(name, str(fault.get("message") or "simulated failure"), prio=6)
        print(fault.get("message") or "simulated failure", file=sys.stderr, flush=True)
        sys.exit(int(fault.get("exit_code", 1)))
    if mode == "hang":
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        while True:
            time.sleep(3600)
    if mode == "garbage":
        rnd = random.Random()
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789:;%#@!?*&^~ "
        for _ in range(garbage_lines):
            print("".join(rnd.choice(alphabet) for _ in range(rnd.randint(5, 70))))
        sys.stdout.flush()
        sys.exit(0)
    if mode == "flood":
        line = f"{name}: adbflow simulated output flood " + "x" * 60 + "\n"
        block = line * 256
        try:
            while True:
                sys.stdout.write(block)
                sys.stdout.flush()
        except (BrokenPipeError, OSError):
            os._exit(141)
    print(f"{name}: unknown adbflow fault mode {mode!r}", file=sys.stderr)
    sys.exit(1)


def install_signal_defaults() -> None:
    """Die on SIGPIPE/SIGINT like a C program instead of printing a Python traceback."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
