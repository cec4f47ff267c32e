#!/usr/bin/env python3
"""adbflow as a library: list devices, gather bids, run one picture through the pipeline
with a home-made scheduling policy, then read what the journal recorded.

Why an example of a custom policy: adbflow's built-in policies (ect, lowest-cpu, random,
round-robin) optimise time. Your fleet may care about something else, e.g. phones that
must keep memory free for a foreground app. A policy is any object with a `name` and a
`choose(task, bids, ...) -> Decision` method (the `adbflow.Policy` protocol); the
pipeline calls it for every stage of every job, with the work it already awarded
(`inflight`) so a policy can spread a burst.

Run it against the virtual fleet:

    adbflow fleet up --devices 3 --adb-port 15123 --state-dir /tmp/fleet
    python examples/library_example.py --adb-server 127.0.0.1:15123 --data-dir /tmp/adbflow-lib
    adbflow fleet down --state-dir /tmp/fleet

or against your phones (default adb server) with no arguments. Exit code 0 when the picture
was classified and a story written, 1 when the job failed, 2 when no device is usable.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adbflow import (
    ASSETS_DIR,
    PROFILES_DIR,
    AdbflowError,
    Bid,
    Bidder,
    Decision,
    DeviceCost,
    Inventory,
    Journal,
    Pipeline,
    PipelineConfig,
    ProfileBook,
    Task,
    exclusion,
    prior_service_s,
    resolve_servers,
)


class MostFreeMemory:
    """Give each stage to the device with the most memory left after the model is loaded.

    headroom = MemAvailable - memory this stage's model needs (from the device's profile)
                            - memory of the work already awarded to that device (inflight)

    Devices the built-in hard filters reject (failed probe, too little memory, low battery
    and not charging, critical thermal state) are never chosen. Ties go to the lower CPU
    load, then the serial, so the choice is deterministic. `total_s` holds the profile's
    idle-time estimate, for display only: this policy does not rank by time.
    """

    name = "most-free-memory"

    def choose(self, task: Task, bids: Sequence[Bid], *, inflight: Mapping[str, Sequence[Task]],
               profiles: ProfileBook, service_times: Any = None,
               rng: random.Random | None = None, now: float | None = None) -> Decision:
        costs: list[DeviceCost] = []
        for bid in bids:
            profile = profiles.for_model(bid.model)
            why = exclusion(task, bid, profile, battery_floor=15)
            if why:
                costs.append(DeviceCost(bid.serial, False, why, float("inf"), {}))
                continue
            reserved = sum(_stage_mem_mb(t, profile) for t in inflight.get(bid.serial, ()))
            headroom = bid.mem_available_kb / 1024.0 - _stage_mem_mb(task, profile) - reserved
            costs.append(DeviceCost(bid.serial, True, None, prior_service_s(task, profile),
                                    {"service": prior_service_s(task, profile)},
                                    {"headroom_mb": headroom, "reserved_mb": reserved,
                                     "cpu_load": bid.cpu_load}))
        eligible = [c for c in costs if c.eligible]
        if not eligible:
            why = "; ".join(f"{c.serial}: {c.excluded}" for c in costs) or "no devices"
            return Decision(self.name, None, costs, f"no eligible device ({why})")
        win = min(eligible, key=lambda c: (-c.factors["headroom_mb"], c.factors["cpu_load"],
                                           c.serial))
        return Decision(self.name, win.serial, costs,
                        f"most memory left: {win.factors['headroom_mb']:.0f} MB after "
                        f"{task.stage}")


def _stage_mem_mb(task: Task, profile: Any) -> float:
    t = profile.timing
    return t.classify_mem_mb if task.stage == "classify" else t.generate_mem_mb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--adb-server", action="append", metavar="HOST:PORT",
                    help="adb server(s) to use (repeatable); default $ANDROID_ADB_SERVER_PORT "
                         "or 5037")
    ap.add_argument("--serial", "-s", action="append", help="only these devices (repeatable)")
    ap.add_argument("--data-dir", type=Path, help="journal + pulled pictures (default: "
                                                  "adbflow's data home)")
    ap.add_argument("--image", type=Path, default=ASSETS_DIR / "chelsea.png",
                    help="picture to classify (default: a cat)")
    ap.add_argument("--profiles", type=Path, default=PROFILES_DIR, help="profiles directory")
    ap.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    args = ap.parse_args(argv)
    out: dict[str, Any] = {}

    # 1. Devices: every device of every adb server, any state (unreachable servers show up
    #    as a row too); only `device` ones can work.
    inventory = Inventory(resolve_servers(args.adb_server), args.serial)
    out["devices"] = [{"serial": r.serial, "state": r.state, "server": str(r.server),
                       "model": r.model} for r in inventory.refs()]
    devices = inventory.devices()
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    for d in out["devices"]:
        say(f"device {d['serial']:<22} {d['state']:<20} {d['model'] or '-'} via {d['server']}")
    if not devices:
        say("no usable device: check `adbflow devices`")
        if args.json:
            print(json.dumps(out))
        return 2

    # 2. Bids: one adb round trip per device, in parallel. The Bidder keeps each device's
    #    previous /proc/stat sample, so reuse it (the pipeline below does).
    bidder = Bidder(timeout=5.0)
    bids = bidder.gather(devices)
    out["bids"] = [b.to_json() for b in bids]
    for b in bids:
        state = f"error: {b.error}" if b.error else (
            f"cpu {b.cpu_load:5.1f} %  mem free {b.mem_available_kb // 1024:>6} MB  "
            f"battery {b.battery_level if b.battery_level is not None else '-'}")
        say(f"bid    {b.serial:<22} {state}")

    # 3. What would the custom policy do right now? (A dry run: nothing is awarded.)
    profiles = ProfileBook.load(args.profiles)
    policy = MostFreeMemory()
    preview = policy.choose(Task("classify"), bids, inflight={}, profiles=profiles)
    out["preview"] = preview.to_json()
    say(f"policy {policy.name}: would give classify to {preview.winner} ({preview.reason})")

    # 4. One picture through the pipeline (pull is skipped: the picture is on the laptop, as
    #    with `adbflow run IMAGE`), scheduled by our policy for both stages.
    config = PipelineConfig(policy=policy.name)
    if args.data_dir:
        config.data_dir = args.data_dir
    pipeline = Pipeline(config, inventory, bidder=bidder, profiles=profiles, policy=policy)
    t0 = time.monotonic()
    try:
        job = pipeline.run_image(args.image)
    except AdbflowError as exc:
        say(f"error: {exc}")
        return 1
    finally:
        pipeline.close()
    say(f"job {job.id}: {job.state} in {time.monotonic() - t0:.1f} s")

    # 5. The journal (SQLite) is the record: every job, every attempt, committed outputs.
    with Journal(config.journal_path) as journal:
        job = journal.job(job.id)
        attempts = journal.attempts(job.id)
    out["job"] = job.to_json()
    out["attempts"] = [a.to_json() for a in attempts]
    for a in attempts:
        took = f"{a.seconds:.2f} s" if a.seconds is not None else "-"
        say(f"  {a.stage:<9} attempt {a.attempt} on {a.serial or '-':<22} {a.state:<9} {took}"
            + (f"  ({a.error})" if a.error else ""))
    if job.result:
        labels = ", ".join(f"{lb['name']} {lb['score']:.2f}" for lb in job.result["labels"][:3])
        say(f"labels: {labels}")
        say(f"story:  {job.result['story']}")
    elif job.error:
        say(f"failed: {job.error}")
    if args.json:
        print(json.dumps(out, default=str))
    return 0 if job.state == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
