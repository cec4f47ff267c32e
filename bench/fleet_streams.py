"""Stream services of a virtual device, measured side by side: forward / reverse / exec-in.

Why ratios: every byte through `adb forward` or `adb reverse` crosses the adb server and
the virtual adbd (two extra loopback hops and the adb packet framing); the same transfer
straight over loopback, measured in the same minute, is the baseline. `adb exec-in 'cat >
f'` is compared with `adb push` of the same file (both must be byte-exact). Numbers are
printed, never asserted.

    python bench/fleet_streams.py [--mb 20] [--rounds 3]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from adbflow.fleet import adb_server
from adbflow.fleet.control import start_fleet


def _sink_server(port: int, expect: int, done: list[float]) -> socket.socket:
    """A host listener that reads `expect` bytes per connection and records the time."""
    srv = socket.create_server(("127.0.0.1", port))

    def run() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                got = 0
                while got < expect:
                    chunk = conn.recv(1 << 20)
                    if not chunk:
                        break
                    got += len(chunk)
                done.append(time.perf_counter())
                conn.sendall(b"k")

    threading.Thread(target=run, daemon=True).start()
    return srv


def send_through(port: int, payload: bytes) -> float:
    """Seconds to push `payload` to 127.0.0.1:port and get the one-byte answer."""
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(payload)
        s.settimeout(60)
        assert s.recv(1) == b"k"
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mb", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    payload = os.urandom(args.mb * 1024 * 1024)
    adb_port = adb_server.free_port(15037, 16999)
    base = adb_server.free_port(20000, 29000)
    with tempfile.TemporaryDirectory() as tmp:
        client = start_fleet(Path(tmp) / "state", devices=1, adb_port=adb_port, base_port=base)
        try:
            adb = [adb_server.adb_binary(), "-P", str(adb_port), "-s", client.serials[0]]
            direct_port = adb_server.free_port(31000, 39000)
            done: list[float] = []
            srv = _sink_server(direct_port, len(payload), done)
            fwd_port = adb_server.free_port(direct_port + 1, 39500)
            # forward: host -> adb server -> virtual adbd -> device world's port (our sink)
            subprocess.run(adb + ["forward", f"tcp:{fwd_port}", f"tcp:{direct_port}"],
                           check=True, capture_output=True, timeout=20)
            direct = [send_through(direct_port, payload) for _ in range(args.rounds)]
            forward = [send_through(fwd_port, payload) for _ in range(args.rounds)]
            # reverse: the device connects to its port, which reaches the host's sink
            rev_port = adb_server.free_port(fwd_port + 1, 39900)
            subprocess.run(adb + ["reverse", f"tcp:{rev_port}", f"tcp:{direct_port}"],
                           check=True, capture_output=True, timeout=20)
            reverse = [send_through(rev_port, payload) for _ in range(args.rounds)]
            srv.close()
            src = Path(tmp) / "blob.bin"
            src.write_bytes(payload)
            want = hashlib.sha256(payload).hexdigest()
            exec_in, push = [], []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                with open(src, "rb") as fh:
                    subprocess.run(adb + ["exec-in", "cat > /data/local/tmp/ei.bin"], stdin=fh,
                                   check=True, capture_output=True, timeout=120)
                exec_in.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                subprocess.run(adb + ["push", str(src), "/data/local/tmp/pu.bin"], check=True,
                               capture_output=True, timeout=120)
                push.append(time.perf_counter() - t0)
            time.sleep(0.5)
            sums = subprocess.run(adb + ["shell", "sha256sum /data/local/tmp/ei.bin "
                                         "/data/local/tmp/pu.bin"], capture_output=True,
                                  text=True, timeout=60).stdout
            exact = sums.count(want) == 2
        finally:
            client.down()
            adb_server.kill_server(adb_port)
    mb = args.mb

    def rate(xs: list[float]) -> float:
        return mb / statistics.median(xs)

    print(f"{mb} MB, median of {args.rounds} rounds")
    print(f"  loopback direct   {rate(direct):8.1f} MB/s")
    print(f"  adb forward       {rate(forward):8.1f} MB/s   ratio to direct "
          f"{statistics.median(forward) / statistics.median(direct):.1f}x time")
    print(f"  adb reverse       {rate(reverse):8.1f} MB/s   ratio to direct "
          f"{statistics.median(reverse) / statistics.median(direct):.1f}x time")
    print(f"  adb exec-in cat   {rate(exec_in):8.1f} MB/s   ratio to adb push "
          f"{statistics.median(exec_in) / statistics.median(push):.2f}x time")
    print(f"  adb push          {rate(push):8.1f} MB/s")
    print(f"  byte-exact (exec-in and push): {exact}")


if __name__ == "__main__":
    main()
