"""Helpers every benchmark shares: a private fleet, the adb CLI baseline, medians, the table.

Why a module of its own: the parts (overhead, transfer, detection, rss) and the runner all
need them; with the helpers inside run_all.py, run_all imported the parts and the parts
imported run_all back (an import circle).
"""
from __future__ import annotations

import contextlib
import random
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adbflow.device import AdbServer, Device, Inventory
from adbflow.fleet import adb_server
from adbflow.fleet.control import FleetClient, start_fleet

BENCH_DIR = Path(__file__).resolve().parent


@contextlib.contextmanager
def fleet_up(devices: int, profiles: list[str] | None = None) -> Iterator[FleetClient]:
    """A private fleet on a private adb server (never 5037), torn down on exit."""
    port = adb_server.free_port(15037, 16999)
    base = adb_server.free_port(20000, 29000)
    with tempfile.TemporaryDirectory(prefix="adbflow-bench-") as state:
        fleet = start_fleet(state, devices=devices, profiles=profiles, adb_port=port,
                            base_port=base, timeout=240)
        try:
            yield fleet
        finally:
            try:
                fleet.down()
            finally:
                adb_server.kill_server(port)


def devices_of(fleet: FleetClient) -> list[Device]:
    """Device objects in fleet order (inventory order is the adb server's)."""
    by = {d.serial: d for d in Inventory([AdbServer(port=fleet.adb_port)]).devices()}
    return [by[s] for s in fleet.serials if s in by]


def adb_cli(fleet: FleetClient, serial: str, *args: str, timeout: float = 60) -> str:
    """The adb CLI against the fleet's server, as a user's script calls it; stdout+stderr."""
    proc = subprocess.run([adb_server.adb_binary(), "-P", str(fleet.adb_port), "-s", serial,
                           *args], check=True, timeout=timeout, capture_output=True, text=True)
    return proc.stdout + proc.stderr


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user+system) used so far by process `pid` and its descendants, including
    their reaped children. Why: every virtual phone's programs run on this host, started by
    the fleet's per-device spawners (which reap them), so the fleet's process tree is where
    the phones' host CPU shows; sampled before and after a run, the difference is that run's."""
    import psutil
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def shell_floor(devices: list[Device], rounds: int, *, many_timeout: float = 30.0
                ) -> tuple[list[float], list[float]]:
    """(one, many): per round, the wall time of ONE `adb shell true` on the first phone (the
    bid round's reference) and of `true` on every phone at once (the fleet's own floor for a
    round that wakes every phone: on a laptop-hosted fleet they share the host's CPU)."""
    from concurrent.futures import ThreadPoolExecutor
    one, many = [], []
    with ThreadPoolExecutor(max_workers=len(devices)) as pool:
        for _ in range(rounds):
            t = time.monotonic()
            devices[0].shell("true", timeout=10)
            one.append(time.monotonic() - t)
            t = time.monotonic()
            list(pool.map(lambda d: d.shell("true", timeout=many_timeout), devices))
            many.append(time.monotonic() - t)
    return one, many


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@dataclass
class DetectionRun:
    """One detection-latency run: per picture, snap -> `job_started` seconds, the control
    call's own time, and which detection path reported it (JobAdded.how)."""
    latencies_s: list[float]
    snap_calls_s: list[float]
    how: dict[str, str]


def detection_run(fleet: FleetClient, *, tag: str, use_inotify: bool, use_mediastore: bool,
                  poll_s: float, n: int, rng: random.Random, tmpd: Path,
                  snap: Callable[[str, Path, str], Any], limit_s: float) -> DetectionRun:
    """Watch the fleet with one set of detection paths on, snap `n` non-image pictures at
    random phases of the poll cycle (the job fails at once as "not an image": no model
    time), and time each from just before its snap to the pipeline's `job_started` event
    (same process clock). Shared by bench/detection.py and bench/detect_latency.py."""
    from adbflow.runtime.events import Event, JobAdded, JobStarted, Watching
    from adbflow.runtime.pipeline import Pipeline, PipelineConfig
    started: dict[str, float] = {}
    how: dict[str, str] = {}
    ready = threading.Event()
    cv = threading.Condition()

    def on_event(ev: Event) -> None:
        if isinstance(ev, Watching):
            ready.set()
        elif isinstance(ev, JobAdded):
            how[ev.name] = ev.how or "?"
        elif isinstance(ev, JobStarted):
            with cv:
                started.setdefault(ev.name, ev.t)
                cv.notify_all()

    pipe = Pipeline(PipelineConfig(data_dir=tmpd / f"data-{tag}", use_inotify=use_inotify,
                                   use_mediastore=use_mediastore, concurrency=2, attempts=1),
                    Inventory([AdbServer(port=fleet.adb_port)]), on_event=on_event)
    t = threading.Thread(target=pipe.watch, kwargs={"poll_s": poll_s, "refresh_s": 3600},
                         daemon=True)
    t.start()
    junk = tmpd / "junk.jpg"
    junk.write_bytes(b"not a picture, just bytes\n" * 20)
    lat: list[float] = []
    calls: list[float] = []
    names: list[str] = []
    try:
        if not ready.wait(60):
            raise RuntimeError("pipeline never reported `watching`")
        time.sleep(1.0)                                   # streams and first queries are up
        for i in range(n):
            name = f"IMG_{tag}_{i}.jpg"
            names.append(name)
            time.sleep(rng.uniform(0.05, poll_s))         # random phase of the poll cycle
            t0 = time.time()
            snap(fleet.serials[i % len(fleet.serials)], junk, name)
            calls.append(time.time() - t0)
            with cv:
                if not cv.wait_for(lambda name=name: name in started, timeout=limit_s):
                    raise RuntimeError(f"{tag}: {name} was not detected within {limit_s:g} s")
            lat.append(started[name] - t0)
    finally:
        pipe.stop_event.set()
        t.join(30)
        pipe.close()
    return DetectionRun(lat, calls, {nm: how.get(nm, "?") for nm in names})


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def p90(xs: list[float]) -> float:
    return sorted(xs)[min(len(xs) - 1, int(0.9 * len(xs)))] if xs else float("nan")


def _fmt(x: Any, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "n/a"
    if isinstance(x, float):
        if unit == "ms":
            return f"{x * 1000:.1f} ms"
        if unit == "MB/s":
            return f"{x:.1f} MB/s"
        if unit == "MB":
            return f"{x:.1f} MB"
        return f"{x:.3g}"
    return str(x)


def table_rows(res: dict[str, Any]) -> list[list[str]]:
    """One line per measured comparison: what, adbflow, baseline, ratio, goal, verdict."""
    rows: list[list[str]] = []

    def add(what: str, ours: str, base: str, ratio: float | None, goal: str, ok: bool | None,
            note: str = "") -> None:
        verdict = "n/a" if ok is None else ("met" if ok else "MISSED")
        rows.append([what, ours, base, "n/a" if ratio is None else f"{ratio:.2f}x", goal,
                     verdict + (f" ({note})" if note else "")])

    bid = res.get("bid")
    if bid and "rows" in bid:
        for r in bid["rows"]:
            goal = "<= 2x at N=8" if r["n"] == 8 else ""
            ok = (r["ratio_vs_adb_cli"] <= 2.0) if r["n"] == 8 else None
            add(f"bid round N={r['n']}", _fmt(r["median_s"], "ms"),
                f"adb shell {_fmt(bid['adb_cli_shell_s'], 'ms')}", r["ratio_vs_adb_cli"], goal,
                ok, f"{r['ratio_vs_one_shell']:.1f}x one in-process shell "
                f"{_fmt(bid['inprocess_shell_s'], 'ms')}; {r['n']} parallel `true` on this fleet"
                f" {_fmt(r['parallel_true_floor_s'], 'ms')} -> bid/floor "
                f"{r['ratio_vs_parallel_floor']:.1f}x")
        g = bid["growth_vs_linear"]
        last = list(g.values())[-1] if g else None
        add("bid round growth (time ratio / N ratio)", ", ".join(f"{k}: {v:.2f}" for k, v in
                                                                 g.items()), "linear = 1.00",
            last, "< 1 (sub-linear)", None if last is None else all(v < 1 for v in g.values()))
        if bid.get("crosscheck", {}).get("ratio_round_vs_one_bid") is not None:
            c = bid["crosscheck"]
            add("bid_round.py N=8 vs one-device bid", "", "", c["ratio_round_vs_one_bid"],
                "< 2x", c["ratio_round_vs_one_bid"] < 2.0)
    ov = res.get("overhead")
    if ov and "adbflow" in ov:
        a, s = ov["adbflow"], ov["script"]
        add("job overhead (end-to-end minus device programs)", _fmt(a["overhead_s"], "ms"),
            f"adb script {_fmt(s['overhead_s'], 'ms')}", a["overhead_s"] / s["overhead_s"]
            if s["overhead_s"] > 0 else None, "< 1x (faster than script)",
            a["overhead_s"] < s["overhead_s"])
        add("overhead share of the job", f"{a['overhead_frac'] * 100:.1f}%",
            f"script {s['overhead_frac'] * 100:.1f}%", None, "<= 10% of job",
            a["overhead_frac"] <= 0.10, ov.get("note", ""))
        add("job end-to-end (pull..story)", _fmt(a["total_s"], "ms"),
            f"adb script {_fmt(s['total_s'], 'ms')}", a["total_s"] / s["total_s"], "", None,
            "device runs: adbflow " + _fmt(a["device_run_s"], "ms") + ", script "
            + _fmt(s["device_run_s"], "ms") + " (story length varies)")
    tr = res.get("transfer")
    if tr and "rows" in tr:
        for r in tr["rows"]:
            add(f"{r['op']} {r['label']}", _fmt(r["adbflow_mb_s"], "MB/s"),
                f"adb {_fmt(r['adb_mb_s'], 'MB/s')}", r["ratio"], ">= 0.9x", r["ratio"] >= 0.9,
                "adb's self-reported rate (no process start) "
                f"{_fmt(r.get('adb_self_mb_s'), 'MB/s')}")
    det = res.get("detection")
    if det and "modes" in det:
        for m in det["modes"]:
            if m["inotify"]:
                goal, ok = "median < 0.5 s", m["median_s"] < 0.5
            else:
                goal = f"<= poll {m['poll_s']:g} s + 0.5"
                ok = m["max_s"] <= m["poll_s"] + 0.5
            add(f"detection ({'inotify' if m['inotify'] else 'listing only'})",
                f"median {_fmt(m['median_s'], 'ms')}", f"max {_fmt(m['max_s'], 'ms')}",
                None, goal, ok, f"{m['n']} pictures")
    warm = res.get("warm")
    if warm and "rows" in warm:
        for r in warm["rows"]:
            add(f"story {r['class']}: warm vs cold", _fmt(r["warm_s"], "ms"),
                f"cold {_fmt(r['cold_s'], 'ms')}", r["warm_s"] / r["cold_s"],
                f">= {warm['goal_reduction']:.0%} less", r["met"],
                f"{r['reduction']:.0%} less; profile: {_fmt(r['expected_cold_s'], 'ms')} -> "
                f"{_fmt(r['expected_warm_s'], 'ms')} ({r['expected_reduction']:.0%}); server "
                f"start once {_fmt(r['server_start_s'], 'ms')}")
    rss = res.get("rss")
    if rss and "phases" in rss:
        for ph in rss["phases"]:
            add(f"orchestrator RSS: {ph['phase']}", _fmt(ph["peak_rss_mb"], "MB"),
                f"idle import {_fmt(rss['baseline_rss_mb'], 'MB')}",
                ph["peak_rss_mb"] / rss["baseline_rss_mb"], "", None,
                f"{rss['devices']} devices")
    _issue19_rows(res, add)
    return rows


def _issue19_rows(res: dict[str, Any], add: Callable[..., None]) -> None:
    """Rows of issue 19's benches (bench/throughput.py, bid_stream.py, transfer_big.py,
    provision.py) and any part's own ready rows under "table" (e.g. bench/warm.py)."""
    tp = res.get("throughput")
    if tp and "rows" in tp:
        for r in tp["rows"]:
            goal = ">= 0.9x ideal" if r["n"] in (8, 16) else ""
            add(f"throughput N={r['n']} ({','.join(tp['class'])} x{tp['slow_factor']:g})",
                f"{r['fleet_per_min']:.1f}/min", f"ideal {r['ideal_per_min']:.1f}/min",
                r["fleet_x_ideal"], goal, (r["fleet_x_ideal"] >= 0.9) if goal else None,
                f"host used {r['host_share']:.0%}, ideal demands {r['ideal_host_demand']:.0%}"
                + (f"; pool4 {r['pool4_per_min']:.1f}/min ({r['pool4_x_ideal']:.2f}x ideal)"
                   if "pool4_per_min" in r else "; pool4 not run"))
    bs = res.get("bidstream")
    if bs and "rows" in bs:
        for r in bs["rows"]:
            limit = {8: 1.5, 100: 3.0}.get(r["n"])
            for kind in ("cached", "requested"):
                ratio = r[kind] / r["shell"]
                add(f"bid round N={r['n']} streamed, {kind}", _fmt(r[kind] / 1000, "ms"),
                    f"adb shell {_fmt(r['shell'] / 1000, 'ms')}", ratio,
                    f"<= {limit:g}x" if limit else "", None if limit is None else ratio <= limit,
                    f"one-shot {r['oneshot'] / r['shell']:.2f}x; fleet floor {r['n']} x true "
                    f"{_fmt(r['floor'] / 1000, 'ms')}")
    tb = res.get("transfer_big")
    if tb and "rows" in tb:
        for r in tb["rows"]:
            for op in ("push", "push_sha", "pull"):
                ratio = r[f"{op}_x_adb"]
                add(f"{op.replace('_sha', '+sha256')} {r['mb']} MB vs adb CLI", "", "", ratio,
                    ">= 0.9x", ratio >= 0.9, f"{r['runs']} run(s), loopback")
    pv = res.get("provision")
    if pv and "rows" in pv:
        for r in pv["rows"]:
            add(f"provision {pv['devices']} phones x {pv['mb']} MB ({r['setting']})",
                f"{r['provision_s']:.2f} s", f"adb push loop {r['loop_s']:.2f} s", r["x_loop"],
                ">= 2x", r["x_loop"] >= 2.0,
                "loopback: both CPU-bound on the shared host" if r["setting"] == "loopback"
                else "link simulated per phone at " + ", ".join(f"{x:g}" for x in
                                                                r["link_mb_s"]) + " MB/s")
    for name, part in res.items():
        for r in (part.get("table") or []) if isinstance(part, dict) else []:
            add(r.get("what", name), r.get("adbflow", ""), r.get("baseline", ""),
                r.get("ratio"), r.get("goal", ""), r.get("ok"), r.get("note", ""))


def run_one(name: str, measure: Callable[..., dict[str, Any]], quick: bool) -> dict[str, Any]:
    """What a single benchmark's own `main` does: one flagship phone, measure, print its rows."""
    with fleet_up(1, ["flagship_2025"]) as fleet:
        res = measure(fleet, quick=quick)
    print_table({name: res})
    return res


def print_table(res: dict[str, Any]) -> None:
    from tabulate import tabulate
    print(tabulate(table_rows(res), headers=["benchmark", "adbflow", "baseline", "ratio", "goal",
                                             "verdict"], disable_numparse=True))
    for name, part in res.items():
        if isinstance(part, dict) and part.get("error"):
            print(f"{name}: FAILED TO RUN: {part['error']}")
