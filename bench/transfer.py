"""Transfer throughput: adbflow's Device.pull/push vs `adb pull/push` of the same files.

    python bench/transfer.py [--quick]

Why: every job pulls a phone photo (3-5 MB JPEG) and pushes the model input (a 224x224 BMP,
~150 kB) — if adbflow's own sync-protocol client were slower than the adb CLI, users would
be better off scripting adb. Both sides move the same bytes to/from the same virtual device
in alternating order; throughput = bytes / wall time of the whole call (the CLI's includes
its process start, which is what a script pays too). Goal: adbflow >= 0.9x adb.
"""
from __future__ import annotations

import argparse
import hashlib
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image

from adbflow.paths import ASSETS_DIR

PHOTO_REMOTE_DIR = "/storage/emulated/0/DCIM"


def make_photo(path: Path, target_bytes: int = 4 << 20, seed: int = 7) -> Path:
    """A camera-sized JPEG of about `target_bytes`: chelsea.png upscaled to 12 MP with
    sensor-like noise (noise keeps JPEG from compressing it to a few hundred kB)."""
    import numpy as np
    img = Image.open(ASSETS_DIR / "chelsea.png").convert("RGB").resize((4032, 3024))
    arr = np.asarray(img).astype(np.int16)
    rng = np.random.default_rng(seed)
    for sigma in (6, 9, 13, 18, 24):
        noisy = np.clip(arr + rng.normal(0, sigma, arr.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(path, "JPEG", quality=90)
        if path.stat().st_size >= target_bytes * 0.9:
            break
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def measure(fleet: Any, *, quick: bool = False) -> dict[str, Any]:
    from common import adb_cli, devices_of, median, timed

    from adbflow.parsers.adb_messages import parse_transfer_summaries
    from adbflow.runtime.imaging import prepare_bmp
    reps = 5 if quick else 15
    dev = devices_of(fleet)[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="adbflow-transfer-") as tmp:
        tmpd = Path(tmp)
        photo = make_photo(tmpd / "photo.jpg")
        bmp = tmpd / "input.bmp"
        prepare_bmp(photo, bmp, 224)
        remote_photo = f"{PHOTO_REMOTE_DIR}/bench-photo.jpg"
        dev.push(photo, remote_photo, timeout=60)
        cases = [("pull", f"photo {photo.stat().st_size / 1e6:.1f} MB", photo, remote_photo),
                 ("push", f"photo {photo.stat().st_size / 1e6:.1f} MB", photo,
                  "/data/local/tmp/bench-push.jpg"),
                 ("push", f"model input BMP {bmp.stat().st_size / 1e3:.0f} kB", bmp,
                  "/data/local/tmp/received-image")]
        for op, label, local, remote in cases:
            size = local.stat().st_size
            ours, theirs, reported = [], [], []
            dst_a, dst_b = tmpd / "a.bin", tmpd / "b.bin"
            for i in range(reps + 1):
                if op == "pull":
                    a = lambda: dev.pull(remote, dst_a, timeout=60)  # noqa: E731
                    b = lambda: reported.append(  # noqa: E731
                        adb_cli(fleet, dev.serial, "pull", remote, str(dst_b)))
                else:
                    a = lambda: dev.push(local, remote, timeout=60)  # noqa: E731
                    b = lambda: reported.append(  # noqa: E731
                        adb_cli(fleet, dev.serial, "push", str(local), remote))
                pair = [(ours, a), (theirs, b)]
                if i % 2:
                    pair.reverse()
                for sink, fn in pair:
                    t = timed(fn)
                    if i:                                   # round 0 warms caches
                        sink.append(t)
            if op == "pull":
                assert _sha(dst_a) == _sha(dst_b) == _sha(photo), "pull corrupted the photo"
            else:
                entry = dev.stat(remote, timeout=10)
                assert entry is not None and entry.size == size, "push lost bytes"
            mo, mt = median(ours), median(theirs)
            # adb prints its own transfer time (excludes its process start): also recorded
            self_s = [t.seconds for out in reported for t in parse_transfer_summaries(out)
                      if t.seconds]
            ms = median(self_s) if self_s else None
            rows.append({"op": op, "label": label, "bytes": size, "reps": reps,
                         "adbflow_s": mo, "adb_s": mt, "adbflow_mb_s": size / mo / 1e6,
                         "adb_mb_s": size / mt / 1e6, "ratio": mt / mo,
                         "adb_self_reported_s": ms,
                         "adb_self_mb_s": size / ms / 1e6 if ms else None})
    return {"rows": rows, "device": dev.serial}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import run_one
    run_one("transfer", measure, args.quick)


if __name__ == "__main__":
    random.seed(0)
    main()
