"""Battery sampling on the device during a piece of work (I/O side of energy.py).

Why one long-lived shell and builtins only: every sample is three `read` builtins of mksh
on sysfs and one `echo`, paced by `read -t PERIOD` on the stream's stdin (mksh accepts
fractions) — no fork per sample, so the meter costs the phone next to nothing and does
not raise the current it measures. The laptop can wake the loop early (a line on stdin
takes an extra sample at once: window marks), change the period (a number) or stop it
("q"; closing the stream kills it too).

Rate chosen by measurement: the baseline phase samples every 50 ms for `baseline_s`,
which shows how often the gauge updates; the window is then sampled at a quarter of that
period (never faster than 50 ms, never slower than 1 s): an update's time is known to half
a sample period, and at a load step that uncertainty times the power step is the error.
The window's end waits two more gauge updates (energy.integrate places a load step inside
an averaged interval from the levels on both sides); bench/energy_meter.py: 0.99-1.02 of
the fleet model's truth with a 1 s gauge.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from adbflow.device import Device
from adbflow.errors import AdbError
from adbflow.runtime.energy import EnergyReport, PowerSample, energy_report, gauge_period

log = logging.getLogger("adbflow.runtime.energymeter")

PS = "/sys/class/power_supply"
FAST_S = 0.05
SCRIPT = (f"B={PS}/battery; p={FAST_S}; while :; do c=; v=; q=; u=; s=; "
          "read -r c <$B/current_now 2>/dev/null; read -r v <$B/voltage_now 2>/dev/null; "
          f"read -r q <$B/charge_counter 2>/dev/null; read -r u <{PS}/usb/online 2>/dev/null; "
          "read -r s <$B/status 2>/dev/null; "
          'echo "P ${c:--} ${v:--} ${q:--} ${u:--} $s"; '
          "if read -t $p x; then case $x in q) break;; [0-9]*) p=$x;; esac; fi; done")


def parse_sample(line: str, t: float) -> PowerSample | None:
    """`P CURRENT VOLTAGE COUNTER USB STATUS...` -> PowerSample (untrusted: ints only)."""
    parts = line.split(" ", 5)
    if len(parts) < 5 or parts[0] != "P":
        return None

    def num(x: str) -> int | None:
        x = x.strip()
        neg = x.startswith("-") and len(x) > 1
        body = x[1:] if neg else x
        if not body.isdigit() or len(body) > 12:
            return None
        return -int(body) if neg else int(body)

    usb = {"1": True, "0": False}.get(parts[4].strip())
    status = parts[5].strip()[:20] if len(parts) > 5 else ""
    return PowerSample(t, num(parts[1]), num(parts[2]), num(parts[3]), usb,
                       "".join(ch for ch in status if ch.isalnum() or ch == " "))


class EnergyMeter:
    """start() takes the idle baseline; mark_start()/stop() delimit the window."""

    def __init__(self, device: Device, *, baseline_s: float = 0.8, timeout: float = 10.0) -> None:
        self.device, self.baseline_s, self.timeout = device, baseline_s, timeout
        self.samples: list[PowerSample] = []
        self._lock = threading.Lock()
        self._session: Any = None
        self._thread: threading.Thread | None = None
        self.t_base0 = self.t0 = self.t1 = 0.0
        self.period_s = FAST_S

    def _reader(self) -> None:
        while True:
            try:
                line = self._session.read_line(timeout=self.timeout)
            except AdbError:
                return
            smp = parse_sample(line, time.time())
            if smp is not None:
                with self._lock:
                    self.samples.append(smp)

    def start(self) -> EnergyMeter:
        from adbflow.device.session import ShellSession
        self._session = ShellSession(self.device, SCRIPT, timeout=self.timeout)
        self.t_base0 = time.time()
        self._thread = threading.Thread(target=self._reader, daemon=True,
                                        name=f"energy-{self.device.serial}")
        self._thread.start()
        time.sleep(self.baseline_s)
        with self._lock:
            base = list(self.samples)
        g = gauge_period(base)
        # unknown (fewer than two updates seen): stay fast, sampling costs next to nothing
        self.period_s = min(1.0, max(FAST_S, g / 4)) if g else 2 * FAST_S
        self._session.send_line(f"{self.period_s:.3f}")
        return self

    def mark_start(self) -> float:
        """The window starts now (an extra sample is taken at once)."""
        self.t0 = time.time()
        self._session.send_line("m")
        return self.t0

    def stop(self) -> EnergyReport:
        """End the window now; keep sampling two gauge updates more (the first describes
        the time before it, the second shows the level after the work: together they place
        the step), then stop the device loop and compute the report."""
        self.t1 = time.time()
        with self._lock:
            g = gauge_period(self.samples) or self.period_s
        time.sleep(min(2.5, 2 * g + self.period_s))
        try:
            self._session.send_line("q")
        except AdbError:
            pass
        if self._thread is not None:
            self._thread.join(2.0)
        self._session.close()
        with self._lock:
            smp = list(self.samples)
        base = [s for s in smp if s.t < self.t0]
        window = [s for s in smp if s.t >= self.t0]
        rep = energy_report(base, window, self.t0, self.t1)
        return rep
