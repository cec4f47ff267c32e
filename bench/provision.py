"""Provisioning N phones (`adbflow provision`) vs a sequential `adb push` loop, side by side.

Why: pushing a model to ten phones one after the other takes ten times one push; provision
pushes to every phone at once and also verifies each copy with the phone's own sha256sum
(which the plain loop does not), and skips phones that already have the file.

Caveat printed with the result: on loopback every virtual phone shares this machine's cores
and ONE fleet process, and there is no per-phone link limit, so parallel pushes (and every
phone's sha256sum of what it received) compete for the same CPU that a sequential loop has
to itself. Real phones each sit behind their own USB link (~36 MB/s on USB 2, profiles) and
hash on their own CPU. `--link-mb-s R` (a fleet fault switch: each phone's data moves at
R MB/s, simulated) shows that case; both settings are printed.

    python bench/provision.py [--devices 8] [--mb 32] [--link-mb-s 36]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from adbflow.device import AdbServer, Inventory
from adbflow.device.server import adb_binary
from adbflow.fleet import adb_server
from adbflow.fleet.control import start_fleet
from adbflow.runtime import provision as prov


def sequential_adb_push(port: int, serials: list[str], local: Path, remote: str, *,
                        verify: bool = False) -> float:
    """The shell loop a user would write; with verify, a careful one that also checks each
    copy with the phone's sha256sum (what provision does)."""
    adb = adb_binary()
    t0 = time.monotonic()
    for s in serials:
        subprocess.run([adb, "-P", str(port), "-s", s, "push", str(local), remote],
                       check=True, capture_output=True, timeout=600)
        if verify:
            subprocess.run([adb, "-P", str(port), "-s", s, "shell", "sha256sum", remote],
                           check=True, capture_output=True, timeout=600)
    return time.monotonic() - t0


def timed_provision(devices, local: Path, remote: str, cache: Path) -> tuple[float, float, list]:
    """(wall seconds including the local hash, seconds of the phone part, outcomes)."""
    t0 = time.monotonic()
    files = prov.prepare([prov.Item(str(local), remote)], cache)
    t1 = time.monotonic()
    outs = prov.provision(devices, files)
    t2 = time.monotonic()
    bad = [(o.serial, f.reason) for o in outs for f in o.files if f.state is prov.State.FAILED]
    assert not bad, bad
    return t2 - t0, t2 - t1, outs


def cleanup(devices, *paths: str) -> None:
    for d in devices:
        d.run(["rm", "-f", *paths], timeout=30, check=False)


def one_setting(fleet, devices, port: int, local: Path, tmp: Path, link: float) -> None:
    for d in devices:
        fleet.fault(d.serial, link_mb_s=link)
    serials = [d.serial for d in devices]
    seq_remote, par_remote = "/data/local/tmp/bench-seq.bin", "/data/local/tmp/bench-prov.bin"
    try:
        seq = sequential_adb_push(port, serials, local, seq_remote)
        seq_v = sequential_adb_push(port, serials, local, seq_remote, verify=True)
        wall, phones, _ = timed_provision(devices, local, par_remote, tmp / "cache")
        again, _, outs = timed_provision(devices, local, par_remote, tmp / "cache")
        assert all(f.state is prov.State.SKIPPED for o in outs for f in o.files)
    finally:
        cleanup(devices, seq_remote, par_remote)
    mb = local.stat().st_size / 1e6
    label = f"simulated link {link:g} MB/s per phone" if link else "loopback, no link limit"
    print(f"[{label}] {len(devices)} phones x {mb:.0f} MB")
    print(f"  sequential `adb push` loop:          {seq:7.2f} s ({len(devices) * mb / seq:6.0f} MB/s)")
    print(f"  ... with `adb shell sha256sum` after each push: {seq_v:7.2f} s")
    print(f"  adbflow provision (push+verify+mv):  {wall:7.2f} s (local hash "
          f"{wall - phones:.2f} s) -> {seq / wall:.2f}x the loop, {seq_v / wall:.2f}x the "
          "verifying loop")
    print(f"  adbflow provision again (all skip):  {again:7.2f} s -> {seq / again:.2f}x the loop")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--mb", type=int, default=32, help="file size in MB (random bytes)")
    ap.add_argument("--link-mb-s", type=float, default=36.0,
                    help="also run with each phone's link simulated at this rate (0: skip)")
    args = ap.parse_args()
    port = adb_server.free_port(15037, 16999)
    base = adb_server.free_port(20000, 29000)
    with tempfile.TemporaryDirectory(prefix="adbflow-bench-prov-") as tmpd:
        tmp = Path(tmpd)
        local = tmp / "model.bin"
        with local.open("wb") as fh:
            for _ in range(args.mb):
                fh.write(os.urandom(1 << 20))
        fleet = start_fleet(tmp / "fleet", devices=args.devices, adb_port=port, base_port=base,
                            timeout=180)
        try:
            devices = Inventory([AdbServer(port=port)]).devices()
            assert len(devices) == args.devices, devices
            one_setting(fleet, devices, port, local, tmp, 0.0)
            if args.link_mb_s:
                one_setting(fleet, devices, port, local, tmp, args.link_mb_s)
        finally:
            fleet.down()
            adb_server.kill_server(port)


if __name__ == "__main__":
    main()
