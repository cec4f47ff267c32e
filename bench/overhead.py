"""Orchestration overhead per job: adbflow vs the shell script a user would otherwise write.

    python bench/overhead.py [--quick]

Why: adbflow adds bids, a journal, checks and retries around two device programs; users will
only accept that if it costs (nearly) nothing. Both sides process the same camera-sized photo
(bench/transfer.py's ~4.7 MB 12 MP JPEG) already on the same virtual device:

  adbflow  Pipeline.process(job): pull -> bid -> convert to 224x224 BMP -> push ->
           label_image -> bid -> llama-cli -> journal + story file  (in-process, one job)
  script   bash: `adb pull`, `python3 -c` PIL convert, `adb push`, `adb shell label_image`,
           `adb shell llama-cli` one after another on the device holding the picture, with the
           same argv adbflow's profile gives (same n_predict, threads, model files).

Device time = wall time of the two device-program commands as each side measures it (adbflow:
the stage's `run_s`; script: `date +%s.%N` around each `adb shell`). Overhead = end-to-end
minus device time. The device programs' own reports (label_image `average time`, llama
`eval time`) are recorded too: the rest of a program's wall time is its start-up and model
load, which no orchestrator can remove. Generation length varies run to run (sampling), hence
overhead — not end-to-end time — is the fair comparison; both are printed.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from adbflow.device import AdbServer, Inventory
from adbflow.fleet import adb_server
from adbflow.runtime.detect import PICTURES_DIR, NewPicture
from adbflow.runtime.pipeline import Pipeline, PipelineConfig
from adbflow.runtime.stages import REMOTE_IMAGE, label_image_argv, llama_argv
from adbflow.scheduling.profiles import ProfileBook

SCRIPT = r"""#!/bin/bash
# What a user would write without adbflow: every step with the adb CLI, one after another.
set -euo pipefail
ADB=(%(adb)s -P %(port)s -s %(serial)s)
W=%(work)s
t0=$(date +%%s.%%N)
"${ADB[@]}" pull %(remote)s "$W/pic.jpg" >/dev/null 2>&1
tc=$(date +%%s.%%N)
python3 -c 'import sys; from PIL import Image; Image.open(sys.argv[1]).convert("RGB").resize((224, 224)).save(sys.argv[2], "BMP")' "$W/pic.jpg" "$W/in.bmp"
tc2=$(date +%%s.%%N)
"${ADB[@]}" push "$W/in.bmp" %(remote_image)s >/dev/null 2>&1
t1=$(date +%%s.%%N)
"${ADB[@]}" shell %(label_cmd)s >"$W/labels.txt" 2>&1
t2=$(date +%%s.%%N)
label=$(grep -E '^INFO: [0-9.]+: [0-9]+ ' "$W/labels.txt" | head -n1 | sed -E 's/^INFO: [0-9.]+: [0-9]+ //; s/,.*//; s/[^A-Za-z ]//g')
prompt="Write a short, cheerful story of three sentences about a photo of a $label. Story:"
t3=$(date +%%s.%%N)
"${ADB[@]}" shell "%(llama_head)s -p $(printf '%%q' "$prompt") %(llama_tail)s" >"$W/story.txt" 2>"$W/story.err"
t4=$(date +%%s.%%N)
echo "times $t0 $t1 $t2 $t3 $t4 $tc $tc2"
echo "label $label"
"""


def _script(fleet: Any, serial: str, remote: str, work: Path, profile: Any) -> str:
    li = shlex.join(label_image_argv(profile.label_image))
    argv = llama_argv(profile.llama, "PROMPT")
    i = argv.index("-p")
    return SCRIPT % {"adb": shlex.quote(adb_server.adb_binary()), "port": fleet.adb_port,
                     "serial": shlex.quote(serial), "work": shlex.quote(str(work)),
                     "remote": shlex.quote(remote), "remote_image": REMOTE_IMAGE,
                     "label_cmd": shlex.quote(li), "llama_head": shlex.join(argv[:i]),
                     "llama_tail": shlex.join(argv[i + 2:])}


def run_script(fleet: Any, serial: str, remote: str, profile: Any) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="adbflow-script-") as tmp:
        work = Path(tmp)
        path = work / "job.sh"
        path.write_text(_script(fleet, serial, remote, work, profile))
        t0 = time.perf_counter()
        proc = subprocess.run(["bash", str(path)], capture_output=True, text=True, timeout=600)
        total = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"script failed ({proc.returncode}): {proc.stderr[-800:]}")
        times = [float(x) for x in proc.stdout.split("times ", 1)[1].split()[:7]]
        label = proc.stdout.split("label ", 1)[1].strip()
        story = (work / "story.txt").read_text(errors="replace")
        if not label or len(story.strip()) < 5:
            raise RuntimeError(f"script produced no label/story: {proc.stdout!r}")
        run = (times[2] - times[1]) + (times[4] - times[3])
        return {"total_s": total, "device_run_s": run, "overhead_s": total - run,
                "overhead_frac": (total - run) / total, "label": label,
                "convert_s": times[6] - times[5]}


def run_adbflow(pipe: Pipeline, dev: Any, remote: str) -> dict[str, float]:
    entry = dev.stat(remote, timeout=10)
    pic = NewPicture(dev.serial, PICTURES_DIR, remote.rsplit("/", 1)[1], entry.size,
                     entry.mtime, "listing")
    job_id, _ = pipe.add_device_picture(pic)
    t0 = time.perf_counter()
    job = pipe.process(job_id)
    total = time.perf_counter() - t0
    if job.state != "done":
        raise RuntimeError(f"adbflow job failed: {job.error}")
    r = job.result or {}
    t = r["timings"]
    run = t["classify_s"] + t["generate_s"]
    return {"total_s": total, "device_run_s": run, "overhead_s": total - run,
            "overhead_frac": (total - run) / total, "label": r["labels"][0]["name"],
            "reported_compute_s": (r.get("classify_avg_ms") or 0) / 1000
            + _llama_reported_s(pipe, job_id),
            "parts": {k: t.get(k) for k in ("pull_s", "bid_classify_s", "convert_s", "push_s",
                                            "bid_generate_s")}}


def _llama_reported_s(pipe: Pipeline, job_id: int) -> float:
    """llama-cli's own `total time` (its perf lines), else tokens / reported rates."""
    out = pipe.journal.stage_output(job_id, "generate") or {}
    if isinstance(out.get("total_ms"), (int, float)):
        return float(out["total_ms"]) / 1000
    s = 0.0
    for n, rate in (("eval_tokens", "eval_tok_s"), ("prompt_tokens", "prompt_tok_s")):
        if out.get(n) and out.get(rate):
            s += out[n] / out[rate]
    return s


def measure(fleet: Any, *, quick: bool = False) -> dict[str, Any]:
    from common import median
    from transfer import make_photo
    reps = 2 if quick else 5
    inv = Inventory([AdbServer(port=fleet.adb_port)])
    serial = fleet.serials[0]
    dev = inv.device(serial)
    profiles = ProfileBook.load()
    ours, theirs = [], []
    with tempfile.TemporaryDirectory(prefix="adbflow-overhead-") as tmp:
        tmpd = Path(tmp)
        photo = make_photo(tmpd / "photo.jpg")
        photo_size = photo.stat().st_size
        pipe = Pipeline(PipelineConfig(data_dir=tmpd / "data", concurrency=1), inv)
        profile = profiles.for_model(dev.getprop("ro.product.model", timeout=10))
        try:
            for i in range(reps + 1):                  # round 0 warms both paths
                remote = fleet.snap(serial, photo, name=f"overhead-{i}.jpg")
                pair = [(ours, lambda: run_adbflow(pipe, dev, remote)),
                        (theirs, lambda: run_script(fleet, serial, remote, profile))]
                if i % 2:
                    pair.reverse()
                for sink, fn in pair:
                    res = fn()
                    if i:
                        sink.append(res)
        finally:
            pipe.close()

    def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
        out = {k: median([r[k] for r in rows]) for k in ("total_s", "device_run_s",
                                                          "overhead_s", "overhead_frac")}
        out["runs"] = rows
        return out
    a, s = summary(ours), summary(theirs)
    note = ""
    if a["overhead_frac"] > 0.10:
        parts = {k: median([r["parts"][k] or 0.0 for r in ours]) for k in ours[0]["parts"]}
        worst = max(parts, key=parts.get)
        note = (f"largest part: {worst} {parts[worst] * 1000:.0f} ms; the script's python3 -c "
                f"convert incl. interpreter start: "
                f"{median([r['convert_s'] for r in theirs]) * 1000:.0f} ms")
    a["reported_compute_s"] = median([r["reported_compute_s"] for r in ours])
    return {"adbflow": a, "script": s, "reps": reps, "photo_bytes": photo_size,
            "note": note, "device": serial, "profile": profile.name}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import run_one
    res = run_one("overhead", measure, args.quick)
    for side in ("adbflow", "script"):
        for r in res[side]["runs"]:
            print(side, {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()})


if __name__ == "__main__":
    main()
