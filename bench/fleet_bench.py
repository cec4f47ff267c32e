"""Fleet costs, measured side by side: memory per fleet size, shell round trip per client.

Why: the virtual fleet must stay cheap enough to run 100 devices on a laptop next to the
orchestrator, and the orchestrator's choice of adb client (CLI subprocess vs adbutils)
shows up in every bid round. Numbers are printed, never asserted.

    python bench/fleet_bench.py [--sizes 20 100] [--rounds 30] [--backend MODULE:FACTORY]

RSS: the fleet process alone (transport + control, all devices) and the whole tree
(+ namespace holders of the real backend); the adb server is reported separately.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from adbflow.fleet import adb_server
from adbflow.fleet.control import FleetClient, start_fleet


def _mb(n: int) -> float:
    return n / (1024 * 1024)


def tree_rss(pid: int) -> tuple[int, int, int]:
    """(rss of pid, rss of pid + descendants, number of descendants)."""
    proc = psutil.Process(pid)
    own = proc.memory_info().rss
    total, count = own, 0
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
            count += 1
        except psutil.NoSuchProcess:
            pass
    return own, total, count


def adb_server_rss(port: int) -> int | None:
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if proc.info.get("name") == "adb" and f"tcp:{port}" in " ".join(cmd):
            try:
                return proc.memory_info().rss
            except psutil.NoSuchProcess:
                return None
    return None


def shell_medians(client: FleetClient, serial: str, rounds: int) -> dict[str, float]:
    """Median wall time (ms) of `true` through each client path."""
    adb = adb_server.adb_binary()
    port = str(client.adb_port)
    dev = client.adb().device(serial)
    out: dict[str, list[float]] = {"adb CLI (shell v2)": [], "adbutils shell (v1)": [],
                                   "adbutils shell2(v2=True)": []}
    for _ in range(3):  # warm-up
        subprocess.run([adb, "-P", port, "-s", serial, "shell", "true"], timeout=30, check=True)
        dev.shell("true")
    for _ in range(rounds):
        t0 = time.perf_counter()
        subprocess.run([adb, "-P", port, "-s", serial, "shell", "true"], timeout=30, check=True)
        out["adb CLI (shell v2)"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        dev.shell("true", timeout=30)
        out["adbutils shell (v1)"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        dev.shell2("true", timeout=30, v2=True)
        out["adbutils shell2(v2=True)"].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1000 for k, v in out.items()}


def run(sizes: list[int], rounds: int, backend: str | None, env: dict[str, str] | None) -> None:
    print(f"{'devices':>7} {'start s':>8} {'fleet RSS MB':>13} {'tree RSS MB':>12} "
          f"{'procs':>6} {'adb srv MB':>10}")
    medians = None
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="adbflow-fleetbench-") as tmp:
            port = adb_server.free_port(15037, 16999)
            base = adb_server.free_port(20000, 29000)
            t0 = time.monotonic()
            client = start_fleet(Path(tmp), devices=n, adb_port=port, base_port=base,
                                 backend=backend, timeout=180, env=env)
            started = time.monotonic() - t0
            try:
                time.sleep(1.0)  # let the load tickers settle
                own, total, count = tree_rss(client.pid)
                srv = adb_server_rss(port)
                print(f"{n:>7} {started:>8.2f} {_mb(own):>13.1f} {_mb(total):>12.1f} "
                      f"{count:>6} {(_mb(srv) if srv else float('nan')):>10.1f}")
                if medians is None:
                    medians = shell_medians(client, client.serials[0], rounds)
            finally:
                client.down()
                adb_server.kill_server(port)
    if medians:
        base = medians["adb CLI (shell v2)"]
        print(f"\nshell `true` round trip, median of {rounds} (ms), ratio to adb CLI:")
        for name, ms in medians.items():
            print(f"  {name:<26} {ms:7.2f} ms   x{ms / base:4.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--backend", default=None,
                        help="MODULE:FACTORY (default: the real NamespaceBackend)")
    args = parser.parse_args()
    env = None
    if args.backend and args.backend.startswith("fleet_testing_backend"):
        env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1] / "tests")}
    run(args.sizes, args.rounds, args.backend, env)


if __name__ == "__main__":
    main()
