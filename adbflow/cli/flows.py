"""`adbflow flows list|show|validate` and `adbflow sweep`: declared flows from the command line.

Why validate apart from run: a flow file is checked (syntax with its line, every key by its
path, models and policies against the profiles) before any picture is touched.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer
from tabulate import tabulate

from adbflow.cli.options import AdbServers, JsonOut, Serials
from adbflow.errors import AdbflowError
from adbflow.paths import PROFILES_DIR

flows_app = typer.Typer(help="Declared flows: list, show, validate.", no_args_is_help=True)


def _book(profiles_dir: Path | None):
    from adbflow.scheduling.profiles import ProfileBook
    return ProfileBook.load(profiles_dir or PROFILES_DIR)


@flows_app.command("list")
def list_cmd(json_out: JsonOut = False) -> None:
    """The shipped flows (profiles/flows/*.toml)."""
    from adbflow.flows import load
    rows = []
    for name, path in load.shipped().items():
        flow = load.load(name)
        rows.append({"name": name, "stages": [s.name for s in flow.stages],
                     "description": flow.description, "path": str(path)})
    if json_out:
        typer.echo(json.dumps(rows))
        return
    typer.echo(tabulate([[r["name"], " -> ".join(r["stages"]), r["description"]] for r in rows],
                        headers=["flow", "stages", "description"]))


@flows_app.command("show")
def show_cmd(flow: Annotated[str, typer.Argument(help="A shipped name or a .toml path.")],
             json_out: JsonOut = False) -> None:
    """Print a flow's stages, model asks, placement rules and gates."""
    from adbflow.flows import load
    f = load.load(flow)
    if json_out:
        typer.echo(json.dumps(asdict(f), default=lambda o: getattr(o, "value", str(o))))
        return
    typer.echo(load.describe(f))


@flows_app.command("validate")
def validate_cmd(flows: Annotated[list[str], typer.Argument(help="Names or .toml paths.")],
                 profiles_dir: Annotated[Optional[Path], typer.Option(
                     "--profiles", help="Profiles directory to check models against.")] = None
                 ) -> None:
    """Check flows (syntax, keys, models and policies against the profiles); exit 2 on the
    first invalid one, naming the line or key."""
    from adbflow.flows import load
    from adbflow.runtime.flow_engine import check_flow
    book = _book(profiles_dir)
    for name in flows:
        f = load.load(name)
        check_flow(f, book)
        typer.echo(f"{name}: ok ({len(f.stages)} stages)")


def sweep_cmd(
    folder: Annotated[Path, typer.Argument(help="Folder with images and labels.csv "
                                           "(file,class_index).")],
    tau: Annotated[str, typer.Option("--tau", help="Comma-separated thresholds.")
                   ] = "0.3,0.4,0.5,0.6,0.7,0.8",
    small: Annotated[str, typer.Option("--small", help="Profile model name of the small "
                                       "model.")] = "lite0-int8",
    big: Annotated[str, typer.Option("--big", help="Profile model name of the big model.")
                   ] = "lite2",
    augment: Annotated[int, typer.Option("--augment", min=0, max=50, help="Random crop/flip "
                       "variants per image (fixed seed).")] = 4,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Only the first N "
                     "labelled images.")] = None,
    out: Annotated[Path, typer.Option("--out", help="CSV, or JSON when it ends in .json.")
                   ] = Path("sweep.csv"),
    plot: Annotated[bool, typer.Option("--plot", help="Also write the two graphs as PNG "
                                       "(needs matplotlib).")] = False,
    adb_server: AdbServers = None,
    serial: Serials = None,
    json_out: JsonOut = False,
) -> None:
    """Sweep a small->big cascade over labelled images on phones: the small model on the
    first device (the picture's phone), the big one on the second; every tau is replayed
    from one measured run of each model per image (see adbflow/runtime/sweep.py)."""
    from adbflow.cli.pipeline import _inventory
    from adbflow.runtime import sweep
    from adbflow.runtime.stages import StageTimeouts
    try:
        taus = [float(x) for x in tau.split(",") if x.strip()]
    except ValueError:
        raise AdbflowError(f"--tau {tau!r}: expected numbers like 0.3,0.5") from None
    devices = list(_inventory(adb_server, serial).devices())
    if not devices:
        raise AdbflowError("no devices", hint="check `adbflow devices`")
    placement = {small: devices[0], big: devices[1 if len(devices) > 1 else 0]}
    with sweep.new_workdir() as work:
        samples = sweep.build_samples(folder, Path(work), augment=augment, limit=limit)
        classify = sweep.device_classifier(placement, _book(None), Path(work), StageTimeouts())
        s_out, b_out = sweep.measure(samples, classify, small, big,
                                     progress=lambda m: typer.echo(m, err=True))
    rows = [sweep.replay(samples, s_out, b_out, 0.0)]
    rows += [sweep.replay(samples, s_out, b_out, t) for t in taus]
    rows.append(sweep.replay(samples, s_out, b_out, 2.0))
    sweep.write(rows, out)
    if plot:
        for p in sweep.plot(rows, out.with_suffix("")):
            typer.echo(f"wrote {p}", err=True)
    if json_out:
        typer.echo(json.dumps([asdict(r) for r in rows]))
    else:
        typer.echo(format_rows(rows))
        typer.echo(f"wrote {out}", err=True)


def format_rows(rows) -> str:
    def name(t: float) -> str:
        return "always-small" if t == 0 else ("always-big" if t > 1 else f"cascade {t:g}")
    return tabulate([[name(r.tau), r.n, f"{100 * r.escalated:.0f}%",
                      f"{r.accuracy:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]",
                      f"{r.agree_big:.3f}", f"{r.mean_latency_s * 1000:.0f}",
                      f"{r.p95_latency_s * 1000:.0f}", f"{r.mean_model_s * 1000:.0f}",
                      f"{r.device_s:.2f}"] for r in rows],
                    headers=["run", "n", "escalated", "top-1 [95% CI]", "agree big",
                             "mean ms", "p95 ms", "model ms", "device s"])


def register(app: typer.Typer) -> None:
    app.add_typer(flows_app, name="flows")
    app.command("sweep")(sweep_cmd)
