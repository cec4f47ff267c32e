"""Fault switches shared by the transport (protocol side) and the device backend.

Why one small dataclass: tests flip a fault through the fleet's control socket, and
both halves of a virtual device (adb transport in `transport.py`, Android-like root in
`backend.py`) must see the same switch without knowing about each other.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ProgramFault:
    """What a stand-in device program (label_image, llama-cli, benchmark_model) does.

    mode: "ok" | "fail" (exit `exit_code` after printing `message` on stderr) |
          "hang" (sleep forever until killed) | "garbage" (print nonsense instead of the
          real output format) | "flood" (endless output).
    """

    mode: str = "ok"
    exit_code: int = 1
    message: str = "simulated failure (adbflow virtual device fault)"


@dataclass
class FaultState:
    """All switches of one virtual device. Default: healthy."""

    offline: bool = False          # transport stops answering (adb shows 'offline')
    slow_factor: float = 1.0       # device programs run this many times slower
    transport_delay_s: float = 0.0  # extra delay before each reply packet
    # simulated link bandwidth in MB/s for data both ways (a real phone's USB 2 link moves
    # ~36 MB/s); 0 = loopback speed. Opt-in: nothing is throttled unless a test asks.
    link_mb_s: float = 0.0
    storage_full: bool = False     # sync SEND fails with "No space left on device"
    programs: dict[str, ProgramFault] = field(default_factory=dict)  # key: program name
    # simulated RTC error (fleet/clock.py): wall clock ahead by clock_offset_s at host time
    # clock_ref (set when injected), gaining clock_drift_ppm µs per second after that
    clock_offset_s: float = 0.0
    clock_drift_ppm: float = 0.0
    clock_ref: float = 0.0
    # battery (fleet/battery.py): USB power plugged in; driver quirks "ma,reversed,frozen,mv"
    battery_usb: bool = True
    battery_quirks: str = ""

    def program(self, name: str) -> ProgramFault:
        return self.programs.get(name, ProgramFault())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaultState:
        progs = {k: ProgramFault(**v) for k, v in (data.get("programs") or {}).items()}
        rest = {k: v for k, v in data.items() if k != "programs"}
        return cls(programs=progs, **rest)
