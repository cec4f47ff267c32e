"""Virtual device classes (profiles/virtual/*.toml) -> VirtualProfile.

Why a separate loader: the fleet host, the load model and the stand-in programs all need
the same numbers (cores, frequencies, latency, token rate) and must fail early, with the
file name, when a profile is malformed. The numbers come from device-profiles.md; the
profile only says how the virtual device *pretends* to behave, never what the host is.
"""
from __future__ import annotations

import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from adbflow.errors import ProfileError
from adbflow.fleet.build_props import build_props, sdk_of
from adbflow.paths import PROFILES_DIR

VIRTUAL_PROFILES_DIR = PROFILES_DIR / "virtual"
DEFAULT_PROFILE = "midrange_2023"

_REQUIRED_NUMBERS = ("ram_gb", "background_load", "classify_ms", "llm_tok_s")
_PROP_KEYS = ("ro.product.name", "ro.product.device", "ro.build.version.release",
              "ro.build.version.sdk")
#: How the device's thermal zones look (loadmodel.thermal_zones builds them):
#: basic      a few Qualcomm-named zones, readable by the shell user (the old fleet);
#: qualcomm   basic + BCL zones (`soc` = battery percent as "temp", `*-lvl*`, `vbat`, `ibat`);
#: qualcomm_many  qualcomm + enough extra sensors for more than 64 zones (SM8550-class);
#: locked     zones exist but `temp` is unreadable for uid 2000 (SELinux on many
#:            Exynos/MediaTek/Tensor phones: `cat: ...: Permission denied`).
THERMAL_KINDS = ("basic", "qualcomm", "qualcomm_many", "locked")


#: Latency of each fleet model relative to float EfficientNet-Lite0 on the same phone CPU.
#: Published (tensorflow/tpu models/official/efficientnet/lite/README.md, Pixel 4 CPU, 4
#: threads, int8): Lite0 12 ms, Lite2 26 ms -> Lite2 ~2.2x Lite0; int8 vs float on ARM CPUs
#: (XNNPACK/ruy) is typically 2-3x faster -> int8 Lite0 ~0.4x float Lite0. Simulated numbers:
#: the stand-in pads the real host inference to these.
MODEL_SPEED_X = {
    "efficientnet_lite0.tflite": 1.0,
    "efficientnet_lite0_int8.tflite": 0.4,
    "efficientnet_lite2.tflite": 2.2,
}

#: capacity-dmips-mhz per cluster kind (core_capacity; sm8250.dtsi's A55 and A77 values)
CAPACITY_DMIPS_MHZ = {"big": 1024, "mid": 1024, "little": 448}


@dataclass(frozen=True)
class VirtualProfile:
    """One device class. Core order follows Android: cpu0.. are little, then mid, then big."""

    name: str
    description: str
    soc: str
    cores_big: int
    cores_mid: int
    cores_little: int
    big_max_khz: int
    mid_max_khz: int
    little_max_khz: int
    ram_gb: float
    background_load: float      # percent of all cores busy with no user work
    classify_ms: float          # Inception-class CPU latency, 4 threads, idle device
    llm_tok_s: float            # small LM generation rate, idle device
    #: what every start of a llama.cpp program pays before its first token (GGUF mmapped from
    #: the page cache, context allocated, warm-up decode); a resident llama-server pays it
    #: once. Simulated: the stand-ins pad their real (host) model load to it.
    llm_load_ms: float = 0.0
    push_mb_s: float = 0.0      # informational only
    pull_mb_s: float = 0.0
    battery_level: int = 80
    thermal: str = "basic"
    props: dict[str, str] = field(default_factory=dict)
    source: str = ""
    #: device model file -> latency relative to classify_ms (the float Lite0 number); which
    #: models the class carries. Simulated: scaled from published phone numbers (below).
    model_speed: dict[str, float] = field(default_factory=lambda: dict(MODEL_SPEED_X))

    def model_ms(self) -> dict[str, float]:
        """Simulated idle 4-thread latency of every model this class carries (ms)."""
        return {name: round(self.classify_ms * x, 3) for name, x in self.model_speed.items()}

    @property
    def sdk(self) -> int:
        """API level (ro.build.version.sdk): the Android-version axis (see android.py);
        the same value getprop shows (build_props.sdk_of)."""
        return sdk_of(self.props, getattr(self, "android_version", None))

    @property
    def release(self) -> str:
        return self.device_props("")["ro.build.version.release"]

    @property
    def ncores(self) -> int:
        return self.cores_big + self.cores_mid + self.cores_little

    def core_max_khz(self) -> list[int]:
        """cpuinfo_max_freq per cpu index (little cluster first, as on Android)."""
        return ([self.little_max_khz] * self.cores_little + [self.mid_max_khz] * self.cores_mid
                + [self.big_max_khz] * self.cores_big)

    @property
    def perf_cores(self) -> int:
        """Big + mid cores: where llama.cpp's threads belong (a thread on a little core
        slows every token: the llama stand-ins simulate it)."""
        return (self.cores_big + self.cores_mid) or self.ncores

    def core_capacity(self) -> list[int]:
        """/sys/devices/system/cpu/cpuN/cpu_capacity per cpu, as the kernel computes it:
        capacity-dmips-mhz x the cluster's max frequency, scaled so the fastest is 1024.
        DMIPS/MHz from sm8250.dtsi (Snapdragon 865): 448 for its Cortex-A55 cores, 1024
        for its A77s; the fleet uses 448 for little and 1024 for big and mid (the same
        core generation) on every class. Simulated (est.)."""
        raw = [CAPACITY_DMIPS_MHZ["little"] * self.little_max_khz] * self.cores_little \
            + [CAPACITY_DMIPS_MHZ["mid"] * self.mid_max_khz] * self.cores_mid \
            + [CAPACITY_DMIPS_MHZ["big"] * self.big_max_khz] * self.cores_big
        top = max(raw) if raw and max(raw) > 0 else 1
        return [max(1, round(1024 * r / top)) for r in raw]

    def core_min_khz(self) -> list[int]:
        """cpuinfo_min_freq per cpu: roughly what Qualcomm parts idle at."""
        return [300000 if i < self.cores_little else 700000 for i in range(self.ncores)]

    def device_props(self, serial: str) -> dict[str, str]:
        """All getprop properties of a device of this class with the given adb serial.

        ro.product.cpu.abi is the host architecture on purpose: the stand-in programs run
        host binaries, and a device claiming arm64 would be lying about what it executes.
        ro.kernel.qemu is absent: these devices are not emulators.
        """
        arch = platform.machine() or "x86_64"
        abi = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64-v8a"}.get(arch, arch)
        props = {
            "ro.product.model": f"adbflow-virtual {self.name}",
            "ro.product.manufacturer": "adbflow",
            "ro.product.brand": "adbflow",
            "ro.product.cpu.abi": abi,
            "ro.product.cpu.abilist": abi,
            "ro.hardware": "adbflow_virtual",
            "ro.soc.model": self.soc,
            # a user build, like a phone from a shop: adbd runs as shell (uid 2000) and
            # `adb root` is refused ("adbd cannot run as root in production builds")
            "ro.build.type": "user",
            "ro.build.tags": "release-keys",
            "ro.debuggable": "0",
            "ro.secure": "1",
            "ro.adb.secure": "1",
            "ro.adbflow.virtual": "1",
            "ro.adbflow.profile": self.name,
            "sys.boot_completed": "1",
            "dev.bootcomplete": "1",
            "init.svc.adbd": "running",
            "persist.sys.timezone": "UTC",
        }
        props.update(self.props)
        derived = build_props(profile_name=self.name, props=props, serial=serial,
                              android_version=getattr(self, "android_version", None))
        for key, value in derived.items():
            props.setdefault(key, value)
        for key in ("ro.build.version.sdk", "ro.build.version.release"):
            props[key] = derived[key]  # an explicit android_version decides both
        props["ro.serialno"] = serial
        props["ro.boot.serialno"] = serial
        return dict(sorted(props.items()))

    def banner_props(self) -> dict[str, str]:
        """The three properties adbd puts in its CNXN banner."""
        return {"ro.product.name": self.props["ro.product.name"],
                "ro.product.model": f"adbflow-virtual {self.name}",
                "ro.product.device": self.props["ro.product.device"]}

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["ncores"] = self.ncores
        return d


def list_virtual_profiles(directory: Path | None = None) -> list[str]:
    """Names of the profiles in profiles/virtual (sorted)."""
    d = directory or VIRTUAL_PROFILES_DIR
    return sorted(p.stem for p in d.glob("*.toml"))


def load_virtual_profile(name: str, directory: Path | None = None) -> VirtualProfile:
    """Load profiles/virtual/<name>.toml; ProfileError names the file and the problem."""
    d = directory or VIRTUAL_PROFILES_DIR
    if not name or "/" in name or name.startswith("."):
        raise ProfileError(f"invalid virtual profile name {name!r}",
                           hint=f"choose one of: {', '.join(list_virtual_profiles(d))}")
    path = d / f"{name}.toml"
    if not path.is_file():
        raise ProfileError(f"no virtual profile {name!r} ({path} missing)",
                           hint=f"choose one of: {', '.join(list_virtual_profiles(d))}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ProfileError(f"cannot read virtual profile {path}: {exc}",
                           hint="fix the TOML syntax") from exc
    return parse_virtual_profile(data, source=str(path), default_name=name)


def parse_virtual_profile(data: dict[str, Any], *, source: str = "<dict>",
                          default_name: str = "") -> VirtualProfile:
    """Validate a parsed TOML document (pure; used by the loader and by tests)."""
    def need(cond: bool, what: str) -> None:
        if not cond:
            raise ProfileError(f"virtual profile {source}: {what}",
                               hint="compare with profiles/virtual/midrange_2023.toml")

    for key in _REQUIRED_NUMBERS:
        need(isinstance(data.get(key), (int, float)) and data[key] > 0 or
             (key == "background_load" and isinstance(data.get(key), (int, float))
              and data[key] >= 0), f"'{key}' must be a positive number")
    need(0 <= float(data["background_load"]) < 100, "'background_load' must be 0..100 (%)")
    cores = data.get("cores")
    need(isinstance(cores, dict), "missing [cores] table")
    assert isinstance(cores, dict)  # need() raised otherwise
    counts = {k: cores.get(k, 0) for k in ("big", "mid", "little")}
    need(all(isinstance(v, int) and v >= 0 for v in counts.values()),
         "[cores] big/mid/little must be integers >= 0")
    need(0 < sum(counts.values()) <= 64, "[cores] must have 1..64 cores in total")
    freqs = {k: cores.get(f"{k}_max_khz", 0) for k in ("big", "mid", "little")}
    for k in counts:
        need(counts[k] == 0 or (isinstance(freqs[k], int) and freqs[k] > 0),
             f"[cores] {k}_max_khz must be a positive integer when {k} > 0")
    props = data.get("props") or {}
    need(isinstance(props, dict) and all(isinstance(v, str) for v in props.values()),
         "[props] values must be strings")
    for key in _PROP_KEYS:
        need(key in props, f"[props] lacks {key!r}")
    level = data.get("battery_level", 80)
    need(isinstance(level, int) and 0 <= level <= 100, "'battery_level' must be 0..100")
    need(str(props.get("ro.build.version.sdk", "")).isdigit()
         and 14 <= int(props["ro.build.version.sdk"]) <= 40,
         "[props] ro.build.version.sdk must be an API level (14..40)")
    load_ms = data.get("llm_load_ms", 0.0)
    need(isinstance(load_ms, (int, float)) and not isinstance(load_ms, bool) and load_ms >= 0,
         "'llm_load_ms' must be a number >= 0")
    thermal = data.get("thermal", "basic")
    need(thermal in THERMAL_KINDS, f"'thermal' must be one of {', '.join(THERMAL_KINDS)}")
    return VirtualProfile(
        name=str(data.get("name") or default_name),
        description=str(data.get("description", "")),
        soc=str(data.get("soc", "unknown")),
        cores_big=counts["big"], cores_mid=counts["mid"], cores_little=counts["little"],
        big_max_khz=freqs["big"], mid_max_khz=freqs["mid"], little_max_khz=freqs["little"],
        ram_gb=float(data["ram_gb"]), background_load=float(data["background_load"]),
        classify_ms=float(data["classify_ms"]), llm_tok_s=float(data["llm_tok_s"]),
        llm_load_ms=float(load_ms),
        push_mb_s=float(data.get("push_mb_s", 0.0)), pull_mb_s=float(data.get("pull_mb_s", 0.0)),
        battery_level=level, thermal=str(thermal), props=dict(props), source=source,
        model_speed=_model_speed(data.get("model_speed"), need))


def _model_speed(table: Any, need: Any) -> dict[str, float]:
    """`[model_speed]` (device model file -> x classify_ms) over the defaults; a value of
    0 removes the model from the class."""
    out = dict(MODEL_SPEED_X)
    if table is None:
        return out
    need(isinstance(table, dict), "[model_speed] must be a table of numbers")
    for name, x in table.items():
        need(isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0,
             f"[model_speed] {name!r} must be a number >= 0")
        if x == 0:
            out.pop(name, None)
        else:
            out[name] = float(x)
    return out
