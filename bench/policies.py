"""Scheduling policies side by side on the simulated six-profile fleet (adbflow.sim).

Prints, for utilisations 30/60/90 % of the fleet's sustainable capacity: each policy's mean
and p95 job latency, its ratio to the provable per-run lower bound and to the steady-state
LP bound, and ect's speed-up over lowest-cpu; the greedy clairvoyant schedule without heat
(an upper value for the offline optimum of the bound's relaxed instance); and ect on a
labelled VARIANT of the same runs with thermal throttling switched off, against the same bound;
and ect without its congestion part (pure earliest expected completion). Then, on tiny
deterministic cases, the exhaustive offline optimum over the same bound, which shows how
loose the bound itself is.
Numbers are averages over --seeds runs (same pictures and phones for every policy).

    python bench/policies.py [--jobs 2000] [--seeds 3] [--bound-iters 200] [--json]
    python bench/policies.py --quick      # 500 pictures x 2 seeds, 60 bound steps (~1 min)

The time-indexed bound is most of the run time (~25 s per 1000 pictures at 200 steps); fewer
steps give a lower (still valid) bound, so quick ratios to it err on the high side.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

import numpy as np
from tabulate import tabulate

from adbflow.scheduling.policy import POLICY_NAMES
from adbflow.scheduling.profiles import ProfileBook
from adbflow.sim import SIX_CLASSES, SimConfig, compare, fleet_profiles, make_instance, simulate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=None, help="pictures per run (2000; 500 with --quick)")
    ap.add_argument("--seeds", type=int, default=None, help="runs per utilisation (3; 2 with --quick)")
    ap.add_argument("--bound-iters", type=int, default=None,
                    help="subgradient steps of the time-indexed bound (200; 60 with --quick)")
    ap.add_argument("--quick", action="store_true", help="smaller runs for a fast look")
    ap.add_argument("--no-tiny", action="store_true", help="skip the exhaustive-optimum cases")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.jobs is None:
        args.jobs = 500 if args.quick else 2000
    if args.seeds is None:
        args.seeds = 2 if args.quick else 3
    if args.bound_iters is None:
        args.bound_iters = 60 if args.quick else 200
    profs = fleet_profiles(ProfileBook.load(), SIX_CLASSES)
    t0 = time.time()
    out: dict = {"fleet": list(SIX_CLASSES), "jobs": args.jobs, "seeds": args.seeds,
                 "bound_iters": args.bound_iters, "rows": []}
    rows = []
    for u in (0.3, 0.6, 0.9):
        reps = [compare(SimConfig(utilisation=u, n_jobs=args.jobs, seed=s), profs,
                        bound_iters=args.bound_iters)
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
        # ect variants on the same runs (same pictures, phones, foreground apps), each against
        # that run's bound: heat switched off (the bounds ignore heat, so they apply
        # unchanged: what throttling costs ect), and the congestion part off (pure earliest
        # expected completion)
        insts = [make_instance(SimConfig(utilisation=u, n_jobs=args.jobs, seed=s), profs)
                 for s in range(1, args.seeds + 1)]
        bounds = [r["bound"]["mean_latency_s"] for r in reps]
        variants = [
            ("ect, VARIANT without heat", "thermal=False",
             [simulate(replace(i, config=replace(i.config, thermal=False)), "ect") for i in insts]),
            ("ect without congestion part", "congestion=0",
             [simulate(i, "ect", congestion=0.0) for i in insts]),
        ]
        for label, variant, results in variants:
            v_mean = float(np.mean([r.mean_s for r in results]))
            v_ratio = float(np.mean([r.mean_s / b for r, b in zip(results, bounds)]))
            rows.append([f"{u:.0%}", label, f"{v_mean:.2f}", "", f"{v_ratio:.2f}", ""])
            out["rows"].append({"utilisation": u, "variant": variant, "policy": "ect",
                                "mean_s": v_mean, "ratio_to_bound": v_ratio})
        rows.append([f"{u:.0%}", "lowest-cpu / ect", f"{means['lowest-cpu'] / means['ect']:.2f}x", "", "", ""])
        out["rows"].append({"utilisation": u, "bound_s": bound, "steady_state_bound_s": ss,
                            "greedy_clairvoyant_no_heat_s": greedy,
                            "lowest_cpu_over_ect": means["lowest-cpu"] / means["ect"]})
    tiny = []
    for u in (() if args.no_tiny else (0.5, 0.9)):
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
          f"bound {args.bound_iters} steps, "
          f"loads seen 3 s late, foreground apps, heat; utilisation of sustainable capacity")
    print(tabulate(rows, headers=["util", "policy", "mean_s", "p95_s", "x bound", "x LP bound"],
                   disable_numparse=True))
    if tiny:
        print("\nbound looseness: exhaustive offline optimum, 4 pictures on flagship_2025/"
              "midrange_2023/old_2017, deterministic")
        print(tabulate(tiny, headers=["util", "seed", "bound_s", "optimum_s", "optimum/bound", "ect/optimum"]))
    print(f"\n({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
