"""How much better than ect can a schedule be with perfect hindsight? (the optimum's other side)

bench/policies.py compares ect with a LOWER bound no schedule can beat. This script brackets
the offline optimum from ABOVE: starting from ect's own schedule on the same simulated run
(six-profile fleet, heat and foreground apps on), a local search that knows every future
picture, foreground app and the heat each choice causes moves single stages between phones
and keeps every move that lowers the mean latency (adbflow.sim.search.local_search). So

    bound <= offline optimum <= best found <= ect

and "ect / best found" is how much any schedule at all beats ect, as far as this search
can tell; a small number means the gap to the bound is mostly the bound's.

    python bench/offline_search.py [--utilisation 0.9 0.6] [--seeds 3] [--tries 12000] [--jobs 2000]
    python bench/offline_search.py --quick     # 500 pictures, 2 seeds, 1500 tries (~1 min)

Each try replays the whole run (about 25 ms for 2000 pictures), so the default takes
about 5 minutes per run.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from tabulate import tabulate

from adbflow.scheduling.profiles import ProfileBook
from adbflow.sim import SIX_CLASSES, SimConfig, fleet_profiles, local_search, make_instance, simulate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--utilisation", type=float, nargs="+", default=[0.9, 0.6])
    ap.add_argument("--seeds", type=int, default=None, help="runs per utilisation (3; 2 with --quick)")
    ap.add_argument("--tries", type=int, default=None, help="moves tried per run (12000; 1500 with --quick)")
    ap.add_argument("--jobs", type=int, default=None, help="pictures per run (2000; 500 with --quick)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    seeds = args.seeds or (2 if args.quick else 3)
    tries = args.tries or (1500 if args.quick else 12000)
    jobs = args.jobs or (500 if args.quick else 2000)
    profs = fleet_profiles(ProfileBook.load(), SIX_CLASSES)
    rows, out = [], []
    t0 = time.time()
    for u in args.utilisation:
        for seed in range(1, seeds + 1):
            inst = make_instance(SimConfig(utilisation=u, n_jobs=jobs, seed=seed), profs)
            ect = simulate(inst, "ect")
            best, _ = local_search(inst, ect.assignment or [], tries=tries, seed=seed)
            out.append({"utilisation": u, "seed": seed, "ect_mean_s": ect.mean_s,
                        "best_found_mean_s": best, "ect_over_best_found": ect.mean_s / best})
            rows.append([f"{u:.0%}", seed, f"{ect.mean_s:.3f}", f"{best:.3f}", f"{ect.mean_s / best:.3f}"])
            print(f"  {u:.0%} seed {seed}: ect {ect.mean_s:.3f} s, best found {best:.3f} s "
                  f"({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0
    print(f"six-profile fleet, {jobs} pictures, heat and foreground apps on; local search from "
          f"ect's schedule, {tries} tries per run")
    print(tabulate(rows, headers=["util", "seed", "ect mean_s", "best found mean_s", "ect / best found"],
                   disable_numparse=True))
    for u in args.utilisation:
        r = [x["ect_over_best_found"] for x in out if x["utilisation"] == u]
        print(f"{u:.0%}: ect / best found, mean over seeds {float(np.mean(r)):.3f}")
    print(f"({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
