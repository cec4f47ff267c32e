"""Detection latency: a picture lands on a phone -> its job starts in the orchestrator.

    python bench/detection.py [--quick] [--poll 1.0]

Why: "the story appears right after I take the picture" depends first on noticing the
picture. The fleet's `snap` writes like a camera app (`.pending-NAME`, then rename); the
clock starts just before that control call and stops at the pipeline's `job_started` event
(same process clock, time.time()). Measured twice on the same fleet: with the inotifyd
stream (goal: median < 0.5 s) and with directory listings only (--no-inotify; goal: bounded
by the poll interval). Pictures are snapped at random phases of the poll cycle. To keep the
benchmark about detection, the pictures are non-image bytes named .jpg: the job starts,
pulls, and fails at once as "not an image" (no model time, so no worker is ever busy).
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path
from typing import Any


def _one_mode(fleet: Any, *, inotify: bool, poll_s: float, n: int, rng: random.Random,
              tmpd: Path) -> dict[str, Any]:
    from common import detection_run, median, p90
    run = detection_run(fleet, tag="inotify" if inotify else "poll", use_inotify=inotify,
                        use_mediastore=True, poll_s=poll_s, n=n, rng=rng, tmpd=tmpd,
                        snap=lambda serial, src, name: fleet.snap(serial, src, name=name),
                        limit_s=4 * poll_s + 10)
    lat = run.latencies_s
    return {"inotify": inotify, "poll_s": poll_s, "n": n, "median_s": median(lat),
            "p90_s": p90(lat), "max_s": max(lat), "min_s": min(lat),
            "snap_call_median_s": median(run.snap_calls_s),
            "detected_by": sorted(set(run.how.values())), "latencies_s": lat}


def measure(fleet: Any, *, quick: bool = False, poll_s: float = 1.0) -> dict[str, Any]:
    rng = random.Random(11)
    n = 6 if quick else 20
    with tempfile.TemporaryDirectory(prefix="adbflow-detect-") as tmp:
        modes = [_one_mode(fleet, inotify=True, poll_s=poll_s, n=n, rng=rng, tmpd=Path(tmp)),
                 _one_mode(fleet, inotify=False, poll_s=poll_s, n=n, rng=rng, tmpd=Path(tmp))]
    note = ""
    lst = modes[1]
    if lst["max_s"] > poll_s + 0.5:
        note = ("listing-only detection needs the same size+mtime on two consecutive "
                "listings (DetectionState.stable_looks = 2), so its bound is ~2 poll "
                "intervals, not one")
    return {"modes": modes, "note": note}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--poll", type=float, default=1.0)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import fleet_up, print_table
    with fleet_up(2, ["flagship_2025"]) as fleet:
        res = measure(fleet, quick=args.quick, poll_s=args.poll)
    print_table({"detection": res})
    for m in res["modes"]:
        print("inotify" if m["inotify"] else "listing", "detected by", m["detected_by"],
              [round(x, 3) for x in m["latencies_s"]])
    if res["note"]:
        print(res["note"])


if __name__ == "__main__":
    main()
