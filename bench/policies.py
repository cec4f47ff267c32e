"""Scheduling policies side by side on the simulated six-profile fleet (adbflow.simulator).

Prints, for utilisations 30/60/90 % of the fleet's sustainable capacity: each policy's mean
and p95 job latency, its ratio to the provable per-run lower bound and to the steady-state
LP bound, and ect's speed-up over lowest-cpu; the greedy clairvoyant schedule without heat
(an upper value for the offline optimum of the bound's relaxed instance); and ect on a
labelled VARIANT without thermal throttling, against that variant's own bound. Then, on tiny
deterministic cases, the exhaustive offline optimum over the same bound, which shows how
loose the bound itself is.
Numbers are averages over --seeds runs (same pictures and phones for every policy).

    python bench/policies.py [--jobs 2000] [--seeds 3] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

import numpy as np
from tabulate import tabulate

from adbflow.policy import POLICY_NAMES
from adbflow.profiles import ProfileBook
from adbflow.simulator import SIX_CLASSES, SimConfig, compare, fleet_profiles


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    profs = fleet_profiles(ProfileBook.load(), SIX_CLASSES)
    t0 = time.time()
    out: dict = {"fleet": list(SIX_CLASSES), "jobs": args.jobs, "seeds": args.seeds, "rows": []}
    rows = []
    for u in (0.3, 0.6, 0.9):
        reps = [compare(SimConfig(utilisation=u, n_jobs=args.jobs, seed=s), profs)
                for s in range(1, args.seeds + 1)]
        bound = float(np.mean([r["bound"]["mean_latency_s"] for r in reps]))
        ss = float(np.mean([r["steady_state_bound_s"] for r in reps]))
        means = {}
        for name in POLICY_NAMES:
            ps = [next(p for p in r["policies"] if p["policy"] == name) for r in reps]
            mean = float(np.mean([p["mean_latency_s"] for p in ps]))
            p95 = float(np.mean([p["p95_latency_s"] for p in ps]))
            ratio = float(np.mean([p["ratio_to_bound"] for p in ps]))
            ratio_ss = float(np.mean([p["ratio_to_steady_state_bound"] for p in ps]))
            means[name] = mean
            rows.append([f"{u:.0%}", name, f"{mean:.2f}", f"{p95:.2f}", f"{ratio:.2f}", f"{ratio_ss:.2f}"])
            out["rows"].append({"utilisation": u, "policy": name, "mean_s": mean, "p95_s": p95,
                                "ratio_to_bound": ratio, "ratio_to_steady_state_bound": ratio_ss})
        greedy = float(np.mean([r["bound"]["greedy_clairvoyant_no_heat_s"] for r in reps]))
        rows.append([f"{u:.0%}", "bound: sample path | LP", f"{bound:.2f} | {ss:.2f}", "", "1.00", "1.00"])
        rows.append([f"{u:.0%}", "greedy clairvoyant, no heat", f"{greedy:.2f}", "", f"{greedy / bound:.2f}", ""])
        cool = [compare(replace(SimConfig(utilisation=u, n_jobs=args.jobs, seed=s), thermal=False), profs,
                        ("ect",)) for s in range(1, args.seeds + 1)]
        cool_ratio = float(np.mean([r["policies"][0]["ratio_to_bound"] for r in cool]))
        cool_mean = float(np.mean([r["policies"][0]["mean_latency_s"] for r in cool]))
        rows.append([f"{u:.0%}", "ect, VARIANT without heat", f"{cool_mean:.2f}", "", f"{cool_ratio:.2f}", ""])
        out["rows"].append({"utilisation": u, "variant": "thermal=False", "policy": "ect",
                            "mean_s": cool_mean, "ratio_to_bound": cool_ratio})
        rows.append([f"{u:.0%}", "lowest-cpu / ect", f"{means['lowest-cpu'] / means['ect']:.2f}x", "", "", ""])
        out["rows"].append({"utilisation": u, "bound_s": bound, "steady_state_bound_s": ss,
                            "greedy_clairvoyant_no_heat_s": greedy,
                            "lowest_cpu_over_ect": means["lowest-cpu"] / means["ect"]})
    tiny = []
    for u in (0.5, 0.9):
        for seed in (1, 2, 3):
            cfg = SimConfig(utilisation=u, n_jobs=4, seed=seed).without_noise()
            rep = compare(cfg, [profs[0], profs[2], profs[5]], ("ect", "lowest-cpu"), optimum=True)
            tiny.append([f"{u:.0%}", seed, rep["bound"]["mean_latency_s"], rep["optimum"]["mean_latency_s"],
                         rep["optimum"]["ratio_to_bound"],
                         round(rep["policies"][0]["mean_latency_s"] / rep["optimum"]["mean_latency_s"], 3)])
    out["tiny_optimum"] = [dict(zip(["utilisation", "seed", "bound_s", "optimum_s", "optimum_over_bound",
                                     "ect_over_optimum"], r)) for r in tiny]
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0
    print(f"six-profile fleet ({', '.join(SIX_CLASSES)}), {args.jobs} pictures x {args.seeds} seeds, "
          f"loads seen 3 s late, foreground apps, heat; utilisation of sustainable capacity")
    print(tabulate(rows, headers=["util", "policy", "mean_s", "p95_s", "x bound", "x LP bound"],
                   disable_numparse=True))
    print("\nbound looseness: exhaustive offline optimum, 4 pictures on flagship_2025/midrange_2023/"
          "old_2017, deterministic")
    print(tabulate(tiny, headers=["util", "seed", "bound_s", "optimum_s", "optimum/bound", "ect/optimum"]))
    print(f"\n({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
