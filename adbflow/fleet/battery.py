"""Battery of a virtual device: current from the load model, a fuel gauge that averages it,
sysfs values as a real power_supply driver shows them, and each known quirk on demand.

Why a model (simulated, said plainly): the virtual devices share the laptop's cores, so
their "battery" has to be computed; adbflow's energy meter must then be tested against a
known truth (`energy_j`, the integral of V x I_load the model accumulates exactly).

Real behaviour followed (AOSP BatteryManager / power_supply class docs):
- current_now in µA, positive while current flows INTO the battery (charging), negative
  when discharging; voltage_now in µV; charge_counter in µAh (remaining charge);
- fuel gauges report an average over their last update period (here GAUGE_PERIOD_S);
- on USB the charger (500 mA, USB 2.0) feeds the load first: the battery sees the
  difference, so counters show charging when the load is below the charger's current.
Quirks seen on shipping phones, injectable per device (FaultState.battery_quirks):
`ma` (current_now in mA), `reversed` (sign flipped), `frozen` (charge_counter never
moves), `mv` (voltage_now in mV).
"""
from __future__ import annotations

from dataclasses import dataclass, field

GAUGE_PERIOD_S = 1.0     # many gauges publish about once a second; also the fleet's slow tick
IDLE_A = 0.35            # the load model's figures: 350 mA idle ...
ACTIVE_A = 1.6           # ... plus up to 1.6 A with every core busy
USB_CHARGE_A = 0.5
R_INTERNAL = 0.12        # ohm: voltage sags under load
CAPACITY_UAH = 4_500_000
QUIRKS = ("ma", "reversed", "frozen", "mv")


def load_current_a(busy: float) -> float:
    """Current drawn by the device at a busy fraction (0..1). Pure."""
    return IDLE_A + ACTIVE_A * max(0.0, min(1.0, busy))


def open_circuit_v(soc: float) -> float:
    return 3.5 + 0.7 * max(0.0, min(1.0, soc))


@dataclass
class BatteryModel:
    """Integrates current and energy on every tick; gauge values change every period."""

    level_pct: float = 80.0
    usb_online: bool = True
    quirks: frozenset[str] = frozenset()
    energy_j: float = 0.0              # truth: ∫ V·I_load dt (device consumption)
    charge_uah: float = 0.0
    _last: float | None = None
    _gauge_t: float | None = None
    _acc_q: float = 0.0                # A·s of battery current since the last gauge update
    _acc_t: float = 0.0
    _i_load: float = IDLE_A
    _v: float = 3.9
    gauge: dict[str, int] = field(default_factory=dict)
    _frozen_counter: int | None = None

    def __post_init__(self) -> None:
        self.charge_uah = CAPACITY_UAH * self.level_pct / 100.0
        self._v = open_circuit_v(self.level_pct / 100.0)

    def battery_current_a(self, i_load: float) -> float:
        """Into the battery (+) / out of it (-)."""
        return (USB_CHARGE_A if self.usb_online else 0.0) - i_load

    def step(self, now: float, busy: float) -> bool:
        """Advance to `now` (monotonic s) at `busy`; True when the gauge values changed."""
        if self._last is None:
            self._last = self._gauge_t = now
            self._i_load = load_current_a(busy)
            self._publish(self.battery_current_a(self._i_load))
            return True
        dt = max(0.0, now - self._last)
        self._last = now
        i_load = self._i_load                      # current held since the last tick
        i_bat = self.battery_current_a(i_load)
        soc = self.charge_uah / CAPACITY_UAH
        self._v = open_circuit_v(soc) + R_INTERNAL * i_bat
        self.energy_j += self._v * i_load * dt
        self.charge_uah = max(0.0, min(CAPACITY_UAH, self.charge_uah + i_bat * dt / 3600 * 1e6))
        self._acc_q += i_bat * dt
        self._acc_t += dt
        self._i_load = load_current_a(busy)        # the new load holds from now on
        assert self._gauge_t is not None
        if now - self._gauge_t >= GAUGE_PERIOD_S and self._acc_t > 0:
            self._gauge_t = now
            self._publish(self._acc_q / self._acc_t)
            self._acc_q = self._acc_t = 0.0
            return True
        return False

    def energy_at(self, now: float) -> float:
        """Truth up to `now` (including the part since the last tick)."""
        if self._last is None:
            return self.energy_j
        return self.energy_j + self._v * self._i_load * max(0.0, now - self._last)

    def _publish(self, mean_i_bat: float) -> None:
        ua = int(round(mean_i_bat * 1e6))
        if "reversed" in self.quirks:
            ua = -ua
        current = ua // 1000 if "ma" in self.quirks else ua
        uv = int(round(self._v * 1e6))
        counter = int(self.charge_uah)
        if "frozen" in self.quirks:
            if self._frozen_counter is None:
                self._frozen_counter = counter
            counter = self._frozen_counter
        else:
            self._frozen_counter = None
        charging = self.usb_online and mean_i_bat > 0
        self.gauge = {"current_now": current,
                      "voltage_now": uv // 1000 if "mv" in self.quirks else uv,
                      "charge_counter": counter,
                      "capacity": int(round(100.0 * self.charge_uah / CAPACITY_UAH))}
        self.status = ("Full" if self.charge_uah >= CAPACITY_UAH and self.usb_online else
                       "Charging" if charging else
                       "Not charging" if self.usb_online else "Discharging")

    status: str = "Charging"

    def snapshot(self, now: float) -> dict[str, float | str | bool]:
        return {"battery_energy_j": round(self.energy_at(now), 6),
                "battery_load_ma": round(self._i_load * 1000, 1),
                "battery_power_w": round(self._v * self._i_load, 6),
                "battery_usb": self.usb_online, "battery_quirks": ",".join(sorted(self.quirks))}
