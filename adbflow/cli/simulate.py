"""`adbflow simulate`: compare scheduling policies on a simulated fleet, against a lower bound.

Why a command and not only a benchmark script: choosing `--policy` for a real fleet is a
user decision; this lets a user replay their own profiles (profiles/*.toml) at their own
picture rate and see the expected latency of each policy and how far it is from optimal.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer
from tabulate import tabulate

from adbflow.cli.options import JsonOut
from adbflow.errors import AdbflowError
from adbflow.paths import PROFILES_DIR
from adbflow.scheduling.policy import POLICY_NAMES
from adbflow.scheduling.profiles import ProfileBook

#: --quick: small enough for a few seconds per utilisation on 2 cores
QUICK_JOBS = 300
QUICK_BOUND_ITERS = 40


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate_command)


def simulate_command(
    policy: Annotated[Optional[list[str]], typer.Option(
        "--policy", help=f"Policies to compare (repeatable): {', '.join(POLICY_NAMES)}. Default: all.")] = None,
    utilisation: Annotated[Optional[list[float]], typer.Option(
        "--utilisation", "-u", min=0.01, max=0.99,
        help="Offered load as a fraction of the fleet's sustainable capacity (repeatable). "
             "Default: 0.3 0.6 0.9.")] = None,
    jobs: Annotated[Optional[int], typer.Option(
        "--jobs", "-n", min=1, help="Pictures per run. Default: 1000 (300 with --quick).")] = None,
    bound_iters: Annotated[Optional[int], typer.Option(
        "--bound-iters", min=0, help="Subgradient steps of the time-indexed bound (it dominates the "
                                     "run time; fewer steps = a lower, still valid bound). "
                                     "Default: 200 (40 with --quick).")] = None,
    quick: Annotated[bool, typer.Option(
        "--quick", help="A fast look: 300 pictures, 40 bound steps (ratios to the bound come out "
                        "a little high, never too low; but such short runs end before phones "
                        "heat up, which flatters every policy at high load).")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed = same run).")] = 1,
    device_class: Annotated[Optional[list[str]], typer.Option(
        "--class", help="Profile names forming the fleet, one device each (repeatable). "
                        "Default: the six real-phone classes.")] = None,
    profiles_dir: Annotated[Path, typer.Option("--profiles-dir", help="Where profiles/*.toml are.")] = PROFILES_DIR,
    telemetry_age: Annotated[float, typer.Option(
        "--telemetry-age", min=0.0, help="How old (s) the CPU loads policies see are.")] = 3.0,
    no_thermal: Annotated[bool, typer.Option("--no-thermal", help="No thermal throttling.")] = False,
    no_foreground: Annotated[bool, typer.Option("--no-foreground", help="No foreground-app contention.")] = False,
    no_learn: Annotated[bool, typer.Option("--no-learn", help="Policies do not learn service times.")] = False,
    optimum: Annotated[bool, typer.Option(
        "--optimum", help="Also search the offline optimum exhaustively (tiny cases only; "
                          "switches to the deterministic variant: no noise, heat or apps).")] = False,
    as_json: JsonOut = False,
) -> None:
    """Simulate a fleet under a Poisson stream of pictures; print each policy's mean/p95
    latency and makespan next to a lower bound no policy can beat."""
    from adbflow.sim import SIX_CLASSES, SimConfig, compare, fleet_profiles

    policies = policy or list(POLICY_NAMES)
    bad = [p for p in policies if p not in POLICY_NAMES]
    if bad:
        raise AdbflowError(f"unknown policy {', '.join(bad)}", hint=f"choose from {', '.join(POLICY_NAMES)}")
    jobs = jobs if jobs is not None else (QUICK_JOBS if quick else 1000)
    bound_iters = bound_iters if bound_iters is not None else (QUICK_BOUND_ITERS if quick else 200)
    book = ProfileBook.load(profiles_dir)
    profs = fleet_profiles(book, device_class or SIX_CLASSES)
    base = SimConfig(n_jobs=jobs, seed=seed, telemetry_age_s=telemetry_age, learn=not no_learn)
    if no_thermal:
        base = replace(base, thermal=False)
    if no_foreground:
        base = replace(base, fg_load=0.0)
    if optimum:
        base = base.without_noise()
    reports = []
    for u in utilisation or [0.3, 0.6, 0.9]:
        try:
            reports.append(compare(replace(base, utilisation=u), profs, policies, optimum=optimum,
                                   bound_iters=bound_iters))
        except ValueError as exc:
            raise AdbflowError(str(exc), hint="use --jobs 4 with three --class values") from None
    if as_json:
        typer.echo(json.dumps(reports, indent=2))
        return
    typer.echo(f"fleet: {', '.join(d['serial'] for d in reports[0]['devices'])}; "
               f"{jobs} pictures; loads seen {telemetry_age:g} s late")
    rows = []
    for rep in reports:
        u = rep["config"]["utilisation"]
        b = rep["bound"]["mean_latency_s"]
        ss = rep["steady_state_bound_s"]
        for p in rep["policies"]:
            rows.append([f"{u:.0%}", p["policy"], f"{p['mean_latency_s']:.2f}", f"{p['p95_latency_s']:.2f}",
                         f"{p['makespan_s']:.0f}", f"{p['ratio_to_bound']:.2f}",
                         f"{p['ratio_to_steady_state_bound']:.2f}"])
        rows.append([f"{u:.0%}", "bound (sample path)", f"{b:.2f}", "", "", "1.00", ""])
        rows.append([f"{u:.0%}", "bound (steady-state LP)", f"{ss:.2f}", "", "", "", "1.00"])
        if "optimum" in rep:
            rows.append([f"{u:.0%}", "offline optimum", f"{rep['optimum']['mean_latency_s']:.2f}", "",
                         "", f"{rep['optimum']['ratio_to_bound']:.2f}", ""])
    typer.echo(tabulate(rows, headers=["util", "policy", "mean_s", "p95_s", "makespan_s",
                                       "x bound", "x LP bound"], disable_numparse=True))
    typer.echo("bound (sample path): provable for this very run, for every schedule that runs a stage "
               "on one phone without interruption, clairvoyant included (time-indexed Lagrangian "
               f"relaxation, {bound_iters} steps; heat left out, so part of any gap is throttling). "
               "LP bound: steady-state mean processing time. See adbflow/sim/bounds.py.")
