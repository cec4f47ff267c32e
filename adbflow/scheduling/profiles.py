"""Device profiles: what to run on a phone (binary and model paths, threads) and how fast it is.

Why TOML files per device class (profiles/*.toml) rather than constants: the paths differ per
set-up (a real phone prepared per the README vs the virtual fleet), and the timings are
measured per class by `python -m benchmark_label_image`, which rewrites them. The scheduler
(adbflow.scheduling.policy) reads the timings as its prior service times until it has learned better
ones from finished jobs (adbflow.scheduling.service_times).

File layout (all keys but `name` optional; missing ones come from default.toml):

    name = "flagship_2025"
    match_models = ["SM-S93*"]          # fnmatch globs on ro.product.model (case-insensitive)
    [label_image]  binary, model, labels, threads, count, input_size, extra_args
    [llama]        binary, model, threads, n_predict, ctx, extra_args
    [slots]        classify, generate (how many of each stage the phone runs at once; 1)
    [timing]       classify_ms, gen_tok_s, prompt_tok_s, adb_latency_ms, bandwidth_mb_s,
                   classify_mem_mb, generate_mem_mb, load_sensitivity, classify_cold_ms,
                   generate_cold_ms, classify_load_ms, generate_load_ms,
                   active_w (W while a stage runs: energy prior)
    [classes.<class>]   per-class timing overrides, picked when the model string names the
                        class (the virtual fleet reports "adbflow-virtual <class>")
    [[measurements]]    raw benchmark points (stage, load_pct, ms) kept for people to read
"""
from __future__ import annotations

import copy
import fnmatch
import math
import re
import sys
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from adbflow.errors import ProfileError
from adbflow.paths import PROFILES_DIR

DEFAULT_NAME = "default"


@dataclass
class LabelImageSpec:
    """How to invoke TFLite label_image on the device."""

    binary: str
    model: str
    labels: str
    threads: int = 4
    count: int = 5
    input_size: int = 224          # square side the picture is resized to before BMP
    extra_args: list[str] = field(default_factory=list)


@dataclass
class LlamaSpec:
    """How to invoke llama.cpp's one-shot program on the device: `llama-completion` (since
    December 2025 `llama-cli` is a chat only), or a `llama-cli` built before that split.

    `prompt_format`: "chatml" = adbflow wraps the story request in the model's chat
    template (ChatML: SmolLM2-Instruct, Qwen), "raw" = the request as plain text (base
    models). Sampling defaults were chosen with bench/story_quality.py."""

    binary: str
    model: str
    threads: int = 4
    n_predict: int = 64
    ctx: int = 512
    extra_args: list[str] = field(default_factory=list)
    prompt_format: str = "chatml"
    temp: float = 0.6
    top_k: int = 40
    top_p: float = 0.9
    repeat_penalty: float = 1.15
    #: llama.cpp's llama-server on the phone for the resident mode (runtime/resident.py)
    server_binary: str = "/data/local/tmp/llama-server"


@dataclass
class Slots:
    """How many stages of each kind one phone runs at the same time.

    Why 1 by default: two label_image (or two llama-cli) runs on one phone fight over the
    same cores and the same /data/local/tmp/received-image; a phone with the cores and
    memory for more says so in its profile. The pipeline's jobs in flight are bounded by
    the sum of these over the fleet (adbflow.runtime.workers), not by a constant."""

    classify: int = 1
    generate: int = 1

    #: what a phone can run at once today, whatever the profile asks: each stage kind holds
    #: the phone's one slot lease of that kind (device_scripts/lease.sh), which guards the
    #: fixed input path /data/local/tmp/received-image the mission requires. More slots per
    #: kind need one lease and one input path per slot (not built); the profile keeps the
    #: number asked so that it applies once they exist.
    LEASED_MAX = 1

    def of(self, stage: str) -> int:
        """Slots for a stage kind (stages without a device slot, e.g. pull: 1)."""
        asked = int(getattr(self, stage, 1)) if stage in ("classify", "generate") else 1
        return max(1, min(asked, self.LEASED_MAX))

    @property
    def total(self) -> int:
        return self.of("classify") + self.of("generate")


@dataclass
class Timing:
    """Prior cost-model numbers for one device class (idle, cool device).

    load_sensitivity s: service time at whole-device CPU load L (0-1) is
    t0 / (1 - s*L) (s=1: fair processor sharing with the background; fitted by the
    benchmark from runs at several load levels). *_cold_ms: extra time the first run pays
    when the model is not in the page cache (model residency). *_load_ms: what every start
    of the program pays to load the model (none for a resident server, runtime/resident.py).
    """

    classify_ms: float
    gen_tok_s: float
    prompt_tok_s: float
    adb_latency_ms: float
    bandwidth_mb_s: float
    classify_mem_mb: float
    generate_mem_mb: float
    load_sensitivity: float = 1.0
    classify_cold_ms: float = 0.0
    generate_cold_ms: float = 0.0
    #: paid by every start of the one-shot program before its first token (model mmapped
    #: from the page cache, context allocated, warm-up): not by a resident llama-server
    classify_load_ms: float = 0.0
    generate_load_ms: float = 0.0
    #: watts the device draws while a stage runs (energy prior; 0 = unknown)
    active_w: float = 0.0


@dataclass
class ModelSpec:
    """One model a device class carries (profile `[[models]]`), for flow model selectors.

    `speed_x` is its latency relative to the class's timing.classify_ms (the model the
    [label_image] table names), so one number per model serves every [classes.X] table;
    `accuracy` is top-1 on our labelled set (see profiles/virtual_fleet.toml for where the
    numbers come from)."""

    name: str
    path: str
    type: str = "image_classifier"
    input_size: int = 224
    dtype: str = "float32"
    accuracy: float = 0.0
    speed_x: float = 1.0

    def ms(self, timing: Timing) -> float:
        return timing.classify_ms * self.speed_x


@dataclass
class DeviceProfile:
    """One device class: what to run and how fast it runs there."""

    name: str
    match_models: list[str]
    label_image: LabelImageSpec
    llama: LlamaSpec
    timing: Timing
    slots: Slots = field(default_factory=Slots)
    source: Path | None = None
    description: str = ""
    device_class: str | None = None            # set when a [classes.X] table was applied
    classes: dict[str, Timing] = field(default_factory=dict)
    measurements: list[dict[str, Any]] = field(default_factory=list)
    models: list[ModelSpec] = field(default_factory=list)

    def model(self, name: str) -> ModelSpec | None:
        """The `[[models]]` entry called `name` (None: this class does not carry it)."""
        return next((m for m in self.models if m.name == name), None)

    def matches(self, model: str | None) -> bool:
        if not model:
            return False
        low = model.strip().lower()
        return any(fnmatch.fnmatchcase(low, pat.lower()) for pat in self.match_models)

    def specificity(self, model: str) -> tuple[int, int]:
        """How specifically this profile matches `model`: an exact name beats a glob, a
        longer literal prefix beats a shorter one (only the patterns that match count)."""
        best = (-1, -1)
        low = model.strip().lower()
        for pat in self.match_models:
            if not fnmatch.fnmatchcase(low, pat.lower()):
                continue
            literal = re.split(r"[*?\[]", pat, maxsplit=1)[0]
            best = max(best, (0 if any(c in pat for c in "*?[") else 1, len(literal)))
        return best

    def for_class(self, device_class: str) -> DeviceProfile:
        """This profile with the timing of one of its [classes.X] tables."""
        if device_class not in self.classes:
            raise ProfileError(f"profile {self.name!r} has no class {device_class!r}",
                               hint=f"known classes: {', '.join(sorted(self.classes)) or 'none'}")
        return replace(self, timing=self.classes[device_class], device_class=device_class)


class ProfileBook:
    """Every profile of a directory; answers "which profile for this ro.product.model"."""

    def __init__(self, profiles: list[DeviceProfile]) -> None:
        names = [p.name for p in profiles]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ProfileError(f"duplicate profile names: {', '.join(sorted(dup))}",
                               hint="each profiles/*.toml needs a unique `name`")
        if DEFAULT_NAME not in names:
            raise ProfileError("no `default` profile", hint="restore profiles/default.toml")
        self.profiles = {p.name: p for p in profiles}

    @classmethod
    def load(cls, directory: Path = PROFILES_DIR) -> ProfileBook:
        """Read directory/*.toml (not sub-directories: profiles/virtual/ belongs to the fleet)."""
        directory = Path(directory)
        files = sorted(directory.glob("*.toml"))
        if not files:
            raise ProfileError(f"no profiles in {directory}",
                               hint="pass the repository's profiles/ directory")
        raw = {f: _read_toml(f) for f in files}
        default_file = next((f for f, d in raw.items() if d.get("name") == DEFAULT_NAME), None)
        if default_file is None:
            raise ProfileError(f"no profile named `default` in {directory}",
                               hint="restore profiles/default.toml")
        base = raw[default_file]
        profiles = [profile_from_dict(raw[f], source=f,
                                      base=None if f == default_file else base) for f in files]
        return cls(profiles)

    def get(self, name: str) -> DeviceProfile:
        try:
            return self.profiles[name]
        except KeyError:
            raise ProfileError(f"unknown profile {name!r}",
                               hint=f"known: {', '.join(sorted(self.profiles))}") from None

    def for_model(self, model: str | None) -> DeviceProfile:
        """The most specific profile whose globs match `model`, else `default`.

        When the chosen profile has per-class timings and a class name appears as a word of
        the model string ("adbflow-virtual lowend_2020"), that class's timing is used.
        """
        candidates = [p for n, p in self.profiles.items() if n != DEFAULT_NAME and p.matches(model)]
        if not candidates:
            return self.profiles[DEFAULT_NAME]
        # ties: the profile written for fewer models (e.g. one measured phone), then name
        best = max(candidates, key=lambda p: (p.specificity(model or ""), -len(p.match_models),
                                              p.name))
        if best.classes and model:
            for word in re.split(r"[\s/:,]+", model.strip()):
                if word in best.classes:
                    return best.for_class(word)
        return best

    def names(self) -> list[str]:
        return sorted(self.profiles)


# ---------------------------------------------------------------------------- parsing

def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}",
                           hint="fix the file or restore it from the repository") from None
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror}") from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, val in over.items():
        if isinstance(val, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], val)
        else:
            out[key] = copy.deepcopy(val)
    return out


def _build(kind: type, table: Any, where: str) -> Any:
    """Dataclass `kind` from a TOML table, checking names, presence and types."""
    if not isinstance(table, dict):
        raise ProfileError(f"{where}: expected a table")
    known = {f.name: f for f in fields(kind)}
    unknown = set(table) - set(known)
    if unknown:
        raise ProfileError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}",
                           hint=f"allowed: {', '.join(known)}")
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        if name not in table:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ProfileError(f"{where}: missing key `{name}`")
            continue
        val = table[name]
        ftype = str(f.type)
        if ftype.startswith("list"):
            if not (isinstance(val, list) and all(isinstance(v, str) for v in val)):
                raise ProfileError(f"{where}.{name}: expected a list of strings")
        elif ftype == "str":
            if not isinstance(val, str) or not val:
                raise ProfileError(f"{where}.{name}: expected a non-empty string")
        elif ftype == "int":
            if isinstance(val, bool) or not isinstance(val, int) or val <= 0:
                raise ProfileError(f"{where}.{name}: expected a positive integer, got {val!r}")
        elif ftype == "float":
            if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val) \
                    or val < 0:
                raise ProfileError(f"{where}.{name}: expected a number >= 0, got {val!r}")
            val = float(val)
        kwargs[name] = val
    return kind(**kwargs)


_TOP_KEYS = {"name", "description", "match_models", "label_image", "llama", "timing", "slots",
             "classes", "measurements", "models"}


def profile_from_dict(data: dict[str, Any], *, source: Path | None = None,
                      base: dict[str, Any] | None = None) -> DeviceProfile:
    """A DeviceProfile from parsed TOML; `base` (default.toml) fills missing tables/keys."""
    where = str(source) if source else "<profile>"
    if not isinstance(data.get("name"), str) or not data["name"].strip():
        raise ProfileError(f"{where}: missing `name`", hint='add e.g. name = "flagship_2025"')
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ProfileError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}",
                           hint=f"allowed: {', '.join(sorted(_TOP_KEYS))}")
    merged = _merge({k: v for k, v in (base or {}).items()
                     if k in ("label_image", "llama", "timing", "slots")}, data)
    match = merged.get("match_models", [])
    if not (isinstance(match, list) and all(isinstance(m, str) for m in match)):
        raise ProfileError(f"{where}.match_models: expected a list of strings")
    for key in ("label_image", "llama", "timing"):
        if key not in merged:
            raise ProfileError(f"{where}: missing table [{key}]")
    timing = _build(Timing, merged["timing"], f"{where} [timing]")
    for key in ("gen_tok_s", "prompt_tok_s", "bandwidth_mb_s", "classify_ms"):
        if getattr(timing, key) <= 0:
            raise ProfileError(f"{where} [timing].{key}: must be > 0")
    if timing.load_sensitivity > 1.0:
        raise ProfileError(f"{where} [timing].load_sensitivity: must be within 0..1")
    classes: dict[str, Timing] = {}
    raw_classes = merged.get("classes", {})
    if not isinstance(raw_classes, dict):
        raise ProfileError(f"{where}: [classes] must be a table of tables")
    for cname, ctable in raw_classes.items():
        if not isinstance(ctable, dict):
            raise ProfileError(f"{where} [classes.{cname}]: expected a table")
        classes[cname] = _build(Timing, _merge(merged["timing"], ctable),
                                f"{where} [classes.{cname}]")
    measurements = merged.get("measurements", [])
    if not (isinstance(measurements, list) and all(isinstance(m, dict) for m in measurements)):
        raise ProfileError(f"{where}: [[measurements]] must be an array of tables")
    raw_models = merged.get("models", [])
    if not (isinstance(raw_models, list) and all(isinstance(m, dict) for m in raw_models)):
        raise ProfileError(f"{where}: [[models]] must be an array of tables")
    models = [_build(ModelSpec, m, f"{where} [[models]][{i}]") for i, m in enumerate(raw_models)]
    for i, m in enumerate(models):
        if not 0.0 <= m.accuracy <= 1.0:
            raise ProfileError(f"{where} [[models]][{i}].accuracy: must be within 0..1")
    return DeviceProfile(
        models=models,
        name=merged["name"].strip(),
        match_models=list(match),
        label_image=_build(LabelImageSpec, merged["label_image"], f"{where} [label_image]"),
        llama=_build(LlamaSpec, merged["llama"], f"{where} [llama]"),
        timing=timing,
        slots=_build(Slots, merged.get("slots", {}), f"{where} [slots]"),
        source=source,
        description=str(merged.get("description", "")),
        classes=classes,
        measurements=list(measurements),
    )


# ---------------------------------------------------------------------------- writing

def _toml_value(val: Any) -> str:
    if isinstance(val, bool):
        return "true" if val else "false"
    if isinstance(val, int):
        return str(val)
    if isinstance(val, float):
        return repr(round(val, 4))
    if isinstance(val, str):
        return '"' + val.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(val, list):
        return "[" + ", ".join(_toml_value(v) for v in val) + "]"
    raise ProfileError(f"cannot write {type(val).__name__} to TOML")


def _table(title: str, obj: Any) -> list[str]:
    lines = [f"[{title}]"]
    for f in fields(obj):
        lines.append(f"{f.name} = {_toml_value(getattr(obj, f.name))}")
    return lines


def dump_profile(profile: DeviceProfile) -> str:
    """TOML text for a profile (what the benchmark writes); loads back to an equal profile."""
    lines = ["# Written by benchmark_label_image; edit freely, keep the keys.",
             f"name = {_toml_value(profile.name)}"]
    if profile.description:
        lines.append(f"description = {_toml_value(profile.description)}")
    lines.append(f"match_models = {_toml_value(profile.match_models)}")
    lines += [""] + _table("label_image", profile.label_image)
    lines += [""] + _table("llama", profile.llama)
    lines += [""] + _table("timing", profile.timing)
    if profile.slots != Slots():
        lines += [""] + _table("slots", profile.slots)
    for cname in sorted(profile.classes):
        lines += [""] + _table(f"classes.{cname}", profile.classes[cname])
    for spec in profile.models:
        lines += [""] + ["[[models]]"] + _table("models", spec)[1:]
    for m in profile.measurements:
        lines += ["", "[[measurements]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in m.items()]
    return "\n".join(lines) + "\n"


def safe_profile_name(model: str) -> str:
    """A file/profile name from an untrusted ro.product.model string."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", model.strip())
    name = re.sub(r"\.{2,}", "_", name).strip("._-")
    return (name or "device")[:64]
