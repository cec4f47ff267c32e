"""Big transfers: adbflow's Device.push/pull vs the adb CLI for 200 MB and 1 GB, side by side.

Why: models are 1-2 GB GGUFs; if adbflow's sync client were slower than `adb push`, a shell
loop around adb would beat it. Same file, same virtual device, same adb server, runs
alternating (adb, adbflow, adb, adbflow, ...); wall time of the whole call (the CLI's
includes its process start, as a script pays it). Also shown: adbflow's push with a
streaming sha256 of the bytes as they are sent (what provisioning uses). Files are random
bytes generated under /tmp and deleted afterwards (local and on the device). Goal: >= 0.9x.

Caveat printed with the result: loopback, one virtual device; the fleet process (Python)
writing the device-side file is part of both sides' time.

    python bench/transfer_big.py [--sizes 200,1024] [--runs 5] [--quick]

--quick: one run of each (about a minute); the machine's CPU is shared with other sessions,
so single runs are noisy.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from adbflow.device import AdbServer, Inventory
from adbflow.device.server import adb_binary
from adbflow.fleet import adb_server
from adbflow.fleet.control import start_fleet

REMOTE = "/data/local/tmp/bench-big.bin"


def make_file(path: Path, mb: int) -> None:
    block = os.urandom(1 << 20)
    with path.open("wb") as fh:
        for i in range(mb):
            fh.write(block[:-8] + i.to_bytes(8, "little"))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--sizes", default="200,1024", help="MB, comma-separated")
    ap.add_argument("--runs", type=int, default=5,
                    help="runs of each (medians; a 200 MB call is ~0.7 s: single runs swing 20 %%)")
    ap.add_argument("--quick", action="store_true", help="one run of each size")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs = 1
    rows = []
    adb = adb_binary()
    port = adb_server.free_port(15037, 16999)
    base = adb_server.free_port(20000, 29000)
    with tempfile.TemporaryDirectory(prefix="adbflow-bench-big-", dir="/tmp") as tmpd:
        tmp = Path(tmpd)
        fleet = start_fleet(tmp / "fleet", devices=1, adb_port=port, base_port=base, timeout=120)
        try:
            [dev] = Inventory([AdbServer(port=port)]).devices()
            print("loopback, one virtual device; median wall seconds of each whole call; goal "
                  "(issue 19) >= 0.9x the adb CLI; CPU shared with other sessions (noisy)")
            print(f"{'MB':>5} {'op':>5} {'adb s':>7} {'adbflow s':>10} {'x adb':>6} "
                  f"{'+sha256 s':>10} {'x adb':>6}")
            for mb in [int(x) for x in args.sizes.split(",") if x.strip()]:
                src, back = tmp / f"src-{mb}.bin", tmp / f"back-{mb}.bin"
                make_file(src, mb)
                want = hashlib.sha256(src.read_bytes()).hexdigest() if mb <= 256 else None
                t: dict[str, list[float]] = {k: [] for k in
                                             ("adb push", "ours push", "ours push+sha",
                                              "adb pull", "ours pull")}
                for _ in range(args.runs):
                    s = time.monotonic()
                    subprocess.run([adb, "-P", str(port), "-s", dev.serial, "push", str(src),
                                    REMOTE], check=True, capture_output=True, timeout=600)
                    t["adb push"].append(time.monotonic() - s)
                    s = time.monotonic()
                    dev.push(src, REMOTE, timeout=600)
                    t["ours push"].append(time.monotonic() - s)
                    h = hashlib.sha256()
                    s = time.monotonic()
                    dev.push_file(src, REMOTE, timeout=600, on_data=h.update)
                    t["ours push+sha"].append(time.monotonic() - s)
                    if want:
                        assert h.hexdigest() == want
                    s = time.monotonic()
                    subprocess.run([adb, "-P", str(port), "-s", dev.serial, "pull", REMOTE,
                                    str(back)], check=True, capture_output=True, timeout=600)
                    t["adb pull"].append(time.monotonic() - s)
                    back.unlink()
                    s = time.monotonic()
                    dev.pull(REMOTE, back, timeout=600)
                    t["ours pull"].append(time.monotonic() - s)
                    assert back.stat().st_size == mb << 20
                    back.unlink()
                m = {k: statistics.median(v) for k, v in t.items()}
                print(f"{mb:>5} {'push':>5} {m['adb push']:>7.2f} {m['ours push']:>10.2f} "
                      f"{m['adb push'] / m['ours push']:>6.2f} {m['ours push+sha']:>10.2f} "
                      f"{m['adb push'] / m['ours push+sha']:>6.2f}")
                print(f"{mb:>5} {'pull':>5} {m['adb pull']:>7.2f} {m['ours pull']:>10.2f} "
                      f"{m['adb pull'] / m['ours pull']:>6.2f}", flush=True)
                rows.append({"mb": mb, "runs": args.runs, **{k.replace(" ", "_"): v
                                                             for k, v in m.items()},
                             "push_x_adb": m["adb push"] / m["ours push"],
                             "push_sha_x_adb": m["adb push"] / m["ours push+sha"],
                             "pull_x_adb": m["adb pull"] / m["ours pull"]})
                src.unlink()
                dev.run(["rm", "-f", REMOTE], timeout=30)
        finally:
            fleet.down()
            adb_server.kill_server(port)
    return {"rows": rows}


if __name__ == "__main__":
    main()
