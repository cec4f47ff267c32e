"""Threshold sweep of a two-model cascade over a folder of labelled images.

Why measure each model once per image and replay the thresholds: the cascade's outcome for
every tau follows from the small model's output, the big model's output and their measured
end-to-end latencies (convert + push + run, through adb, on the devices), so one pass gives
every tau on the same inputs; running the flow once per tau would multiply device time and
add run-to-run noise to a comparison meant to isolate tau. Stated wherever results are shown:
a replayed cascade's latency is small + (escalated ? big : 0), ignoring queueing between
pictures (one picture at a time).

Evaluation set: every labelled source image plus `augment` label-preserving variants (random
crop of 70-100 % of the side, random horizontal flip, fixed seed). Accuracy CIs bootstrap over
source images (a source and its variants are resampled together: they are not independent).
`agree_big` is agreement with the big model's top-1 (needs no labels).
"""
from __future__ import annotations

import csv
import json
import math
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from adbflow.errors import AdbflowError
from adbflow.flows.gates import top2


@dataclass(frozen=True)
class Sample:
    source: str           # the labelled source image's file name
    variant: int          # 0 = the source image itself
    label: int
    path: Path


@dataclass(frozen=True)
class Outcome:
    """One model on one sample: its top-1 and what it cost end to end."""

    top1: int | None
    conf: float
    margin: float
    latency_s: float      # convert + push + run, as measured
    device_s: float       # run time on the device (the run call: process start included)
    model_s: float = 0.0  # label_image's own "average time" (the inference alone)


@dataclass(frozen=True)
class Row:
    tau: float
    n: int
    escalated: float
    accuracy: float
    ci_low: float
    ci_high: float
    agree_big: float
    mean_latency_s: float
    p95_latency_s: float
    device_s: float
    mean_model_s: float = 0.0   # inference alone per input (label_image's average time)


def read_labels(folder: Path) -> list[tuple[str, int]]:
    """labels.csv: file,class_index[,label]; file names must stay inside the folder."""
    path = folder / "labels.csv"
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise AdbflowError(f"{path}: cannot read: {exc.strerror}",
                           hint="a sweep folder needs labels.csv (file,class_index)") from None
    out = []
    for n, r in enumerate(rows, 2):
        name, idx = (r.get("file") or "").strip(), (r.get("class_index") or "").strip()
        if not name or "/" in name or name.startswith(".") or not idx.isdigit():
            raise AdbflowError(f"{path}:{n}: expected file,class_index")
        if not (folder / name).is_file():
            raise AdbflowError(f"{path}:{n}: {name} is not in {folder}")
        out.append((name, int(idx)))
    if not out:
        raise AdbflowError(f"{path}: no labelled images")
    return out


def build_samples(folder: Path, work: Path, *, augment: int, seed: int = 0,
                  limit: int | None = None) -> list[Sample]:
    """The source images and `augment` random crop/flip variants of each (PNG in `work`)."""
    from PIL import Image, ImageOps

    rng = random.Random(seed)
    samples = []
    for name, label in read_labels(folder)[:limit]:
        samples.append(Sample(name, 0, label, folder / name))
        if augment <= 0:
            continue
        with Image.open(folder / name) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            w, h = im.size
            for v in range(1, augment + 1):
                f = rng.uniform(0.7, 1.0)
                cw, ch = int(w * f), int(h * f)
                x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
                out = im.crop((x, y, x + cw, y + ch))
                if rng.random() < 0.5:
                    out = ImageOps.mirror(out)
                dst = work / f"{Path(name).stem}-aug{v}.png"
                out.save(dst)
                samples.append(Sample(name, v, label, dst))
    return samples


def outcome_of(output: dict[str, Any], latency_s: float) -> Outcome:
    """An Outcome from a classify output (classify_on's dict)."""
    labels = output.get("labels") or []
    t1, t2, idx = top2(labels)
    return Outcome(idx, t1, t1 - t2, latency_s, float(output.get("run_s") or 0.0),
                   float(output.get("avg_ms") or 0.0) / 1000.0)


def bootstrap_ci(correct_by_source: dict[str, list[bool]], *, reps: int = 2000,
                 seed: int = 1, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of accuracy, resampling source images (with their variants)."""
    groups = list(correct_by_source.values())
    if not groups:
        return math.nan, math.nan
    rng = random.Random(seed)
    stats = []
    for _ in range(reps):
        pick = [groups[rng.randrange(len(groups))] for _ in groups]
        flat = [c for g in pick for c in g]
        stats.append(sum(flat) / len(flat))
    stats.sort()
    lo = stats[int((1 - level) / 2 * reps)]
    hi = stats[min(reps - 1, int((1 + level) / 2 * reps))]
    return lo, hi


def _p95(xs: Sequence[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, math.ceil(0.95 * len(s)) - 1)]


def replay(samples: Sequence[Sample], small: Sequence[Outcome], big: Sequence[Outcome],
           tau: float, *, margin: float = 0.0) -> Row:
    """The cascade at `tau` (tau 0 = always small, tau > 1 = always big) from measurements."""
    correct: dict[str, list[bool]] = {}
    lat, dev, mod, esc, agree = [], [], [], 0, 0
    for smp, s, b in zip(samples, small, big, strict=True):
        up = tau > 1.0 or s.conf < tau or (margin > 0 and s.margin < margin)
        if tau > 1.0:          # always big: the small model is not run at all
            final, t, d, m = b.top1, b.latency_s, b.device_s, b.model_s
        elif up:
            final, t, d = b.top1, s.latency_s + b.latency_s, s.device_s + b.device_s
            m = s.model_s + b.model_s
        else:
            final, t, d, m = s.top1, s.latency_s, s.device_s, s.model_s
        esc += int(up)
        agree += int(final == b.top1)
        correct.setdefault(smp.source, []).append(final == smp.label)
        lat.append(t)
        dev.append(d)
        mod.append(m)
    n = len(samples)
    acc = sum(c for g in correct.values() for c in g) / n
    lo, hi = bootstrap_ci(correct)
    return Row(tau, n, esc / n, acc, lo, hi, agree / n, statistics.fmean(lat), _p95(lat),
               sum(dev), statistics.fmean(mod))


Classify = Callable[[Sample, str], tuple[dict[str, Any], float]]


def measure(samples: Sequence[Sample], classify: Classify, small: str, big: str,
            progress: Callable[[str], None] = lambda s: None
            ) -> tuple[list[Outcome], list[Outcome]]:
    """Run both models on every sample through `classify(sample, model) -> (output, s)`."""
    outs_s: list[Outcome] = []
    outs_b: list[Outcome] = []
    for i, smp in enumerate(samples):
        for model, acc in ((small, outs_s), (big, outs_b)):
            out, seconds = classify(smp, model)
            acc.append(outcome_of(out, seconds))
        progress(f"{i + 1}/{len(samples)} {smp.source}#{smp.variant}")
    return outs_s, outs_b


def write(rows: Sequence[Row], path: Path) -> None:
    """CSV (or JSON when the name ends in .json) of the rows."""
    dicts = [asdict(r) for r in rows]
    if path.suffix == ".json":
        path.write_text(json.dumps(dicts, indent=1) + "\n", encoding="utf-8")
        return
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(dicts[0]))
        w.writeheader()
        w.writerows(dicts)


def plot(rows: Sequence[Row], prefix: Path) -> list[Path]:
    """accuracy-vs-latency and tau-vs-latency PNGs (matplotlib: optional `plot` extra)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise AdbflowError("--plot needs matplotlib", hint="pip install 'adbflow[plot]'") from None
    cascade = [r for r in rows if 0 < r.tau <= 1]
    paths = []
    fig, ax = plt.subplots()
    ax.plot([r.mean_latency_s for r in cascade], [r.accuracy for r in cascade], "o-",
            label="cascade")
    for r in rows:
        if r.tau == 0 or r.tau > 1:
            ax.plot(r.mean_latency_s, r.accuracy, "s", label="always small" if r.tau == 0
                    else "always big")
    ax.set_xlabel("mean end-to-end latency (s)")
    ax.set_ylabel("top-1 accuracy")
    ax.legend()
    paths.append(prefix.with_name(prefix.name + "-accuracy.png"))
    fig.savefig(paths[-1])
    fig, ax = plt.subplots()
    ax.plot([r.tau for r in cascade], [r.mean_latency_s for r in cascade], "o-", label="mean")
    ax.plot([r.tau for r in cascade], [r.p95_latency_s for r in cascade], "x--", label="p95")
    ax.set_xlabel("tau (escalate when small top-1 < tau)")
    ax.set_ylabel("end-to-end latency (s)")
    ax.legend()
    paths.append(prefix.with_name(prefix.name + "-latency.png"))
    fig.savefig(paths[-1])
    return paths


# ------------------------------------------------------------------ on devices

def device_classifier(placement: dict[str, Any], profiles: Any, work: Path,
                      timeouts: Any) -> Classify:
    """`classify(sample, model)` on phones: `placement` maps a profile model name to the
    device that runs it (the cascade flow: the small model on the picture's phone, the big
    one on another); latency = convert + push + run, measured."""
    from dataclasses import replace

    from adbflow.runtime.imaging import prepare_bmp
    from adbflow.runtime.stages import classify_on

    specs = {}
    for name, dev in placement.items():
        profile = profiles.for_model(dev.getprop("ro.product.model", timeout=10))
        m = profile.model(name)
        if m is None:
            raise AdbflowError(f"{dev.serial}: profile {profile.name} carries no model {name!r}",
                               hint="see the profile's [[models]]")
        specs[name] = (dev, replace(profile.label_image, model=m.path), m.input_size)

    def classify(sample: Sample, model: str) -> tuple[dict[str, Any], float]:
        dev, spec, size = specs[model]
        t0 = time.monotonic()
        bmp = work / f"{sample.path.stem}-{sample.variant}-{size}.bmp"
        prepare_bmp(sample.path, bmp, size)
        out = classify_on(dev, spec, bmp, timeouts=timeouts)
        return out, time.monotonic() - t0
    return classify


def new_workdir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="adbflow-sweep-")
