"""The laptop as a tier: the orchestrator host bids like a phone and classifies locally.

Why in-process ai-edge-litert and the same .tflite files the virtual fleet carries
(adbflow/fleet/assets, or $ADBFLOW_HOST_MODELS, or a folder given by the caller): a stage the host runs gives the
labels a phone would give for the same BMP (same models, same input conventions as the
stand-in label_image: float models take RGB 0-255, quantized ones raw uint8 pixels, output
dequantized with the tensor's own scale). Its speed is measured once per model (one timed
inference after loading it) and cached in DATA/host_tier.json keyed by file size, mtime,
core count and thread count, so a second run does not pay it; its load and memory come
from psutil at every bid round. The pure bid/profile assembly is adbflow.scheduling.host_bid.

Off unless a flow stage says `placement.tier = "any"` or `"host"`; when ai-edge-litert is
missing the tier refuses to start with a HostTierError saying how to install it.
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adbflow.errors import (
    HostTierError,  # noqa: F401 - defined in adbflow.errors
)
from adbflow.paths import ASSETS_DIR, data_home
from adbflow.scheduling.bids import Bid
from adbflow.scheduling.host_bid import HOST_SERIAL, HostModel, catalogue, host_bid, host_profile
from adbflow.scheduling.profiles import DeviceProfile, ModelSpec

#: profile model name -> file in the models folder (the fleet's assets by default)
DEFAULT_FILES = {
    "lite0-int8": "efficientnet_lite0_int8.tflite",
    "lite0": "efficientnet_lite0_imagenet.tflite",
    "lite2": "efficientnet_lite2_imagenet.tflite",
}
LABELS_FILE = "imagenet_labels_1000.txt"
#: a folder of the host's own copies of the models (same file names), instead of the fleet's
MODELS_ENV = "ADBFLOW_HOST_MODELS"
CACHE_NAME = "host_tier.json"
TOP_N = 5


def litert_interpreter() -> Any:
    """ai-edge-litert's Interpreter class, or a HostTierError naming the extra to install."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise HostTierError(
            f"the laptop tier needs ai-edge-litert, which is not installed ({exc})",
            hint="pip install 'adbflow[fleet]' (or ai-edge-litert), or use a flow whose "
                 "stages keep placement.tier = \"devices\"") from None
    return Interpreter


def models_dir_default() -> Path:
    """$ADBFLOW_HOST_MODELS when set, else the fleet's assets (adbflow/fleet/assets)."""
    env = os.environ.get(MODELS_ENV)
    return Path(env).expanduser() if env else ASSETS_DIR


def host_models(profiles: Sequence[DeviceProfile], models_dir: Path | None = None,
                files: Mapping[str, str] = DEFAULT_FILES) -> list[ModelSpec]:
    """The host's catalogue: models whose file exists in `models_dir` (no I/O beyond stat)."""
    models_dir = models_dir_default() if models_dir is None else models_dir
    present = {name: str(models_dir / f) for name, f in files.items()
               if (models_dir / f).is_file()}
    return catalogue(present, profiles)


def _tensor(img: np.ndarray, inp: Mapping[str, Any]) -> np.ndarray:
    """The model input from an RGB uint8 picture already at the model's size."""
    if inp["dtype"] == np.float32:
        return img.astype(np.float32)[None]           # RGB 0-255, like the fleet's profile
    return img.astype(inp["dtype"])[None]


def _scores(interp: Any) -> np.ndarray:
    out = interp.get_output_details()[0]
    scores = interp.get_tensor(out["index"]).reshape(-1)
    if out["dtype"] in (np.uint8, np.int8):
        scale, zero = out.get("quantization", (0.0, 0))
        return ((scores.astype(np.float32) - float(zero)) * float(scale) if scale
                else scores.astype(np.float32) / 255.0)
    return scores.astype(np.float32)


class HostTier:
    """The orchestrator host as a bidder and classifier. Thread-safe: one interpreter per
    model behind a lock (the dispatcher's slot already runs one host classify at a time)."""

    def __init__(self, profiles: Sequence[DeviceProfile], *, models_dir: Path | None = None,
                 files: Mapping[str, str] = DEFAULT_FILES, cache_dir: Path | None = None,
                 threads: int = 1) -> None:
        self._Interpreter = litert_interpreter()
        self.models_dir = models_dir_default() if models_dir is None else Path(models_dir)
        self.specs = host_models(profiles, self.models_dir, files)
        if not self.specs:
            raise HostTierError(f"the laptop tier found no model file in {self.models_dir}",
                                hint=f"expected one of {', '.join(files.values())}")
        labels = self.models_dir / LABELS_FILE
        if not labels.is_file():
            raise HostTierError(f"the laptop tier needs {labels} (ImageNet labels)")
        self.labels_path = labels
        self.labels = labels.read_text(encoding="utf-8", errors="replace").splitlines()
        self.cache_path = (cache_dir or data_home()) / CACHE_NAME
        self.threads = max(1, threads)
        self._lock = threading.Lock()
        self._interps: dict[str, Any] = {}
        self._profile: DeviceProfile | None = None
        self._bid_lock = threading.Lock()
        self._last_load: float | None = None
        self._last_window = 0.0
        self._last_bid_t = 0.0

    # -------------------------------------------------------------- speed
    def _key(self, spec: ModelSpec) -> str:
        st = Path(spec.path).stat()
        return f"{spec.name}|{st.st_size}|{int(st.st_mtime)}|{os.cpu_count()}|{self.threads}"

    def _interp(self, spec: ModelSpec) -> Any:
        it = self._interps.get(spec.name)
        if it is None:
            it = self._Interpreter(model_path=spec.path, num_threads=self.threads)
            it.allocate_tensors()
            self._interps[spec.name] = it
        return it

    def measure(self, spec: ModelSpec) -> float:
        """Idle milliseconds of one inference of `spec` on this host (model loaded, one
        warm-up run first so the number is the steady one the cost model wants)."""
        it = self._interp(spec)
        inp = it.get_input_details()[0]
        _, h, w, c = (int(x) for x in inp["shape"])
        it.set_tensor(inp["index"], _tensor(np.full((h, w, c), 128, np.uint8), inp))
        it.invoke()
        t0 = time.perf_counter()
        it.invoke()
        return (time.perf_counter() - t0) * 1000.0

    def profile(self) -> DeviceProfile:
        """The host's DeviceProfile; speeds measured at first use, cached on disk."""
        with self._lock:
            if self._profile is not None:
                return self._profile
            try:
                cache = json.loads(self.cache_path.read_text(encoding="utf-8"))
                if not isinstance(cache, dict):
                    cache = {}
            except (OSError, ValueError):
                cache = {}
            models = []
            for spec in self.specs:
                key = self._key(spec)
                ms = cache.get(key)
                if not isinstance(ms, (int, float)) or not ms > 0:
                    ms = cache[key] = round(self.measure(spec), 3)
                models.append(HostModel(spec, float(ms)))
            try:
                self.cache_path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.cache_path.with_suffix(".tmp")
                tmp.write_text(json.dumps(cache, indent=1, sort_keys=True), encoding="utf-8")
                tmp.replace(self.cache_path)
            except OSError:
                pass    # an unwritable data dir costs a re-measure next run, nothing else
            self._profile = host_profile(models, labels_path=str(self.labels_path),
                                         threads=self.threads)
            return self._profile

    # -------------------------------------------------------------- bid
    def bid(self) -> Bid:
        """The host's load (psutil, averaged since the previous bid; the first samples
        0.2 s, and a bid within 0.15 s of the last reuses its load, as phone bids do for
        a too-young /proc/stat sample), memory and battery as a Bid."""
        import psutil
        with self._bid_lock:
            since, fresh = time.monotonic() - self._last_bid_t, True
            if self._last_load is None:
                load, window = psutil.cpu_percent(interval=0.2), 0.2
            elif since < 0.15:
                load, window, fresh = self._last_load, self._last_window, False
            else:
                load, window = psutil.cpu_percent(interval=None), since
            if fresh:
                self._last_load, self._last_window = load, window
                self._last_bid_t = time.monotonic()
        vm = psutil.virtual_memory()
        batt = psutil.sensors_battery() if hasattr(psutil, "sensors_battery") else None
        return host_bid(cpu_percent=load, cores=psutil.cpu_count() or 1,
                        mem_available_kb=vm.available // 1024, mem_total_kb=vm.total // 1024,
                        battery_level=int(batt.percent) if batt else None,
                        battery_charging=bool(batt.power_plugged) if batt else None,
                        load_window_s=round(window, 3))

    def offer(self) -> list[tuple[HostTier, Bid]]:
        """This round's extra bidder for Dispatcher.bid: (the host, its bid)."""
        return [(self, self.bid())]

    @property
    def serial(self) -> str:
        return HOST_SERIAL

    # -------------------------------------------------------------- classify
    def classify(self, image: Path, model_name: str) -> dict[str, Any]:
        """Labels for a picture (any format Pillow reads; the flow engine hands the BMP it
        made for the model's input size), in classify_on's output shape."""
        from PIL import Image
        spec = next((m for m in self.specs if m.name == model_name), None)
        if spec is None:
            raise HostTierError(f"{HOST_SERIAL}: the laptop tier carries no model "
                                f"{model_name!r}")
        t0, w0 = time.monotonic(), time.time()
        try:
            with self._lock:
                it = self._interp(spec)
                inp = it.get_input_details()[0]
                _, h, w, _c = (int(x) for x in inp["shape"])
                with Image.open(image) as im:
                    rgb = im.convert("RGB")
                    if rgb.size != (w, h):
                        rgb = rgb.resize((w, h), Image.Resampling.BILINEAR)
                    arr = np.asarray(rgb, dtype=np.uint8)
                it.set_tensor(inp["index"], _tensor(arr, inp))
                t1 = time.monotonic()
                it.invoke()
                avg_ms = (time.monotonic() - t1) * 1000.0
                scores = _scores(it)
        except (OSError, ValueError, RuntimeError) as exc:
            raise HostTierError(f"{HOST_SERIAL}: {model_name} on {image.name}: {exc}",
                                hint="the picture or the model file is unreadable on the "
                                     "laptop") from exc
        order = np.argsort(-scores, kind="stable")[:TOP_N]
        labels = [{"score": float(scores[i]), "index": int(i),
                   "name": self.labels[i] if i < len(self.labels) else ""}
                  for i in order if scores[i] > 0.001]
        run_s = time.monotonic() - t0
        return {"labels": labels, "avg_ms": round(avg_ms, 3), "model": spec.path,
                "pushed_bytes": 0, "remote_image": None, "push_s": 0.0,
                "run_s": round(run_s, 4), "t": {"push": [w0, w0], "run": [w0, time.time()]}}
