"""The laptop as a tier: its bid and its profile, as pure data for the one ECT cost.

Why a Bid and a DeviceProfile like a phone's: the selector (adbflow.scheduling.selector)
then ranks the orchestrator host against phones with the same CostModel.cost, no second
formula. What differs is only in the numbers:

    transfer_in   0: the flow engine pulls the picture to the laptop before any classify
                  stage (Task.data_on = HOST_SERIAL), so the host already has the pixels
    adb latency   0 and an in-memory "bandwidth": no adb call runs
    service       the host's own idle run time per model, measured once on this machine
                  (adbflow.runtime.host_tier), scaled by its load like a phone's
    load, memory  from psutil; no battery floor (None), no thermal status

The host never runs a story (generate_mem_mb is infinite, so the memory filter excludes it).
I/O (psutil, timing a model) lives in adbflow.runtime.host_tier; this module is pure.
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from adbflow.scheduling.bids import Bid
from adbflow.scheduling.profiles import DeviceProfile, LabelImageSpec, LlamaSpec, ModelSpec, Timing

HOST_SERIAL = "laptop"          # the device column of a stage the host ran
HOST_MODEL = "adbflow-host"     # Bid.model of the host (no phone profile matches it)
#: memory one classifier run needs on the host (EfficientNet-Lite2 float: ~25 MB weights
#: plus activations and the interpreter; generous, it only guards a swapping laptop)
HOST_CLASSIFY_MEM_MB = 256.0


@dataclass(frozen=True)
class HostModel:
    """A model the host can run: a profile model name and the local .tflite file."""

    spec: ModelSpec          # path = the local file
    idle_ms: float           # measured once on this host (one inference, model loaded)


def host_bid(*, cpu_percent: float, cores: int, mem_available_kb: int, mem_total_kb: int,
             battery_level: int | None = None, battery_charging: bool | None = None,
             load_window_s: float | None = None, now: float | None = None) -> Bid:
    """The host's Bid from psutil-shaped numbers (pure)."""
    load = float(cpu_percent)
    return Bid(serial=HOST_SERIAL, model=HOST_MODEL, cores=max(1, int(cores)),
               cpu_load=round(load, 2) if math.isfinite(load) else math.nan,
               per_core_load=[], mem_available_kb=int(mem_available_kb),
               mem_total_kb=int(mem_total_kb), battery_level=battery_level,
               battery_charging=battery_charging, temperature_c=None, freq_ratio=1.0,
               probe_rtt_s=0.0, timestamp=time.time() if now is None else now,
               abi=None, error=None if math.isfinite(load) else "host load unknown",
               server=None, load_window_s=load_window_s)


def host_profile(models: Sequence[HostModel], *, labels_path: str, threads: int = 1
                 ) -> DeviceProfile:
    """A DeviceProfile for the host: the fastest measured model is the class's
    classify_ms and every model's speed_x is its own measurement relative to it, so
    `ModelSpec.ms(timing)` is that model's measured time."""
    if not models:
        raise ValueError("the host tier carries no model")
    base = min(models, key=lambda m: m.idle_ms)
    base_ms = max(base.idle_ms, 1e-3)
    specs = [ModelSpec(name=m.spec.name, path=m.spec.path, type=m.spec.type,
                       input_size=m.spec.input_size, dtype=m.spec.dtype,
                       accuracy=m.spec.accuracy, speed_x=max(m.idle_ms, 1e-3) / base_ms)
             for m in models]
    timing = Timing(classify_ms=base_ms, gen_tok_s=1.0, prompt_tok_s=1.0, adb_latency_ms=0.0,
                    bandwidth_mb_s=1e6, classify_mem_mb=HOST_CLASSIFY_MEM_MB,
                    generate_mem_mb=math.inf, load_sensitivity=1.0)
    return DeviceProfile(
        name="host", match_models=[HOST_MODEL],
        label_image=LabelImageSpec(binary="(in-process ai-edge-litert)", model=base.spec.path,
                                   labels=labels_path, threads=threads,
                                   input_size=base.spec.input_size),
        llama=LlamaSpec(binary="", model=""), timing=timing,
        description="the orchestrator host (laptop tier), speeds measured on it",
        models=specs)


def catalogue(files: Mapping[str, str], profiles: Sequence[DeviceProfile]) -> list[ModelSpec]:
    """The host's models: each profile model `name -> local file` in `files` takes type,
    input size, dtype and accuracy from the first phone profile that carries that name (one
    source of truth for accuracy on our labelled set); names no profile knows are left out."""
    out = []
    for name, path in files.items():
        spec = next((m for p in profiles for m in p.models if m.name == name), None)
        if spec is not None:
            out.append(ModelSpec(name=name, path=path, type=spec.type,
                                 input_size=spec.input_size, dtype=spec.dtype,
                                 accuracy=spec.accuracy, speed_x=1.0))
    return out
