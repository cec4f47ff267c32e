"""Detection latency per path: MediaStore query, inotify, listings — side by side, one fleet.

    python bench/detect_latency.py [--quick] [--poll 1.0] [--profile flagship_2025]

A picture lands on a phone (the fleet's `snap`, written like a camera app of the device's
Android version: into DCIM/Camera where the fleet supports it) -> the pipeline's
`job_started` event (same process clock). Three runs on the same fleet, each with only one
detection path switched on besides the listings it always has as a last resort:

  default     all paths on, as adbflow runs: inotify also sees a camera's `.pending-*`
              write on Android 11+ and then asks MediaStore at once (the publish itself
              raises no event in the watched view)
  mediastore  `content query ... --where _id>N` every poll (Android 11+ devices); listings
              every 5th poll
  inotify     toybox inotifyd streamed per device; listings every poll
  listing     listings every poll only (+ the one-stat settle re-check)

Pictures are snapped at random phases of the poll cycle. As in bench/detection.py the
pictures are non-image bytes named .jpg (the job fails at once as "not an image"), so no
model time is involved. A path the fleet does not support (no `content` command, an
Android version without MediaStore publish) is reported as such, not as a latency: the
`detected_by` column says which path really reported each picture.
"""
from __future__ import annotations

import argparse
import inspect
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

MODES = {  # name -> (use_inotify, use_mediastore)
    "default": (True, True),       # what adbflow does: inotify hints MediaStore queries
    "mediastore": (False, True),
    "inotify": (True, False),
    "listing": (False, False),
}


def _snap(fleet: Any, serial: str, src: Path, name: str) -> None:
    """A camera-style picture: into DCIM/Camera when the fleet's snap knows folders."""
    if "directory" in inspect.signature(fleet.snap).parameters:
        fleet.snap(serial, src, name=name, directory="DCIM/Camera")
    else:
        fleet.snap(serial, src, name=name)


def one_mode(fleet: Any, mode: str, *, poll_s: float, n: int, rng: random.Random,
             tmpd: Path) -> dict[str, Any]:
    from common import detection_run, median, p90
    inotify, mediastore = MODES[mode]
    run = detection_run(fleet, tag=mode, use_inotify=inotify, use_mediastore=mediastore,
                        poll_s=poll_s, n=n, rng=rng, tmpd=tmpd,
                        snap=lambda serial, src, name: _snap(fleet, serial, src, name),
                        limit_s=6 * poll_s + 10)
    lat = run.latencies_s
    by = sorted(set(run.how.values()))
    return {"mode": mode, "n": n, "poll_s": poll_s, "median_s": median(lat), "p90_s": p90(lat),
            "max_s": max(lat), "detected_by": by, "latencies_s": lat,
            "path_active": mode in by or mode in ("listing", "default")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--poll", type=float, default=1.0)
    ap.add_argument("--profile", default="flagship_2025",
                    help="virtual profile (an Android 11+ one for the MediaStore path)")
    args = ap.parse_args()
    from common import fleet_up
    n = 6 if args.quick else 20
    rng = random.Random(13)
    rows = []
    with fleet_up(2, [args.profile]) as fleet, \
            tempfile.TemporaryDirectory(prefix="adbflow-detlat-") as tmp:
        for mode in MODES:
            try:
                rows.append(one_mode(fleet, mode, poll_s=args.poll, n=n, rng=rng,
                                     tmpd=Path(tmp)))
            except RuntimeError as exc:
                rows.append({"mode": mode, "error": str(exc)})
    listing = next((r for r in rows if r["mode"] == "listing" and "median_s" in r), None)
    print(f"detection latency, {n} pictures per path, poll {args.poll:g} s, "
          f"profile {args.profile}")
    print(f"{'path':12s} {'median':>8s} {'p90':>8s} {'max':>8s} {'vs listing':>10s}  detected by")
    for r in rows:
        if "error" in r:
            print(f"{r['mode']:12s} {'-':>8s} {'-':>8s} {'-':>8s} {'-':>10s}  {r['error']}")
            continue
        ratio = (f"{r['median_s'] / listing['median_s']:.2f}x" if listing else "-")
        note = "" if r["path_active"] else "  (path not supported by this fleet: fell back)"
        print(f"{r['mode']:12s} {r['median_s']:8.3f} {r['p90_s']:8.3f} {r['max_s']:8.3f} "
              f"{ratio:>10s}  {','.join(r['detected_by'])}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
