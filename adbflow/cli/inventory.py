"""`adbflow devices` and `adbflow bid`: what is connected, and what each device bids now.

Why here: these commands are thin views over adb.Inventory and bids.Bidder; exit codes are
0 ok, 1 no device could bid, 2 usage/adbflow error (raised AdbflowError -> cli.main).
"""
from __future__ import annotations

import json
import math
import time
from typing import Annotated, Any, Optional

import typer
from tabulate import tabulate

from adbflow.cli.options import AdbServers, EnergyWeight, JsonOut, Serials, Timeout
from adbflow.device import Inventory, resolve_servers
from adbflow.scheduling.bids import Bid, Bidder, pick_lowest_cpu
from adbflow.scheduling.policy import (
    DEFAULT_POLICY,
    POLICY_NAMES,
    CostModel,
    Task,
    format_decision,
    get_policy,
)


def _inventory(adb_server: list[str] | None, serial: list[str] | None) -> Inventory:
    return Inventory(resolve_servers(adb_server), serial)


def devices_cmd(adb_server: AdbServers = None, serial: Serials = None, json_out: JsonOut = False) -> None:
    """List devices of every adb server with their state (device, offline, unauthorized, ...)."""
    inv = _inventory(adb_server, serial)
    refs = [r for r in inv.refs() if not inv.serials or r.serial in inv.serials or r.serial == "-"]
    # one row per physical phone: its other links (USB + Wi-Fi, a second adb server) are
    # listed with it, not as devices of their own (they would be booked twice)
    used = {(str(d.server), d.adb_serial): d.serial for d in inv.devices()}
    choice = inv.last_choice
    hidden = choice.hidden if choice else {}
    also: dict[tuple[str, str], list[str]] = {}
    for key, line in hidden.items():
        also.setdefault(line.key, []).append(f"{key[1]} on {key[0]}")
    rows = [r for r in refs if (str(r.server), r.serial) not in hidden]

    def name(r) -> str:
        return used.get((str(r.server), r.serial), r.serial)

    if json_out:
        typer.echo(json.dumps([{"serial": name(r), "adb_serial": r.serial, "state": r.state,
                                "model": r.model, "server": str(r.server),
                                "also_via": also.get((str(r.server), r.serial), [])}
                               for r in rows], indent=2))
        return
    if not rows:
        typer.echo("no devices (" + ", ".join(map(str, inv.servers)) + ")")
        return
    typer.echo(tabulate([[name(r), r.state, r.model or "", str(r.server),
                          ", ".join(also.get((str(r.server), r.serial), []))] for r in rows],
                        headers=["serial", "state", "model", "adb server", "same phone also via"]))


def _fmt(v, spec: str = "", none: str = "-") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return none
    return format(v, spec)


def bid_table(bids: list[Bid], winner: str | None) -> str:
    rows = []
    for b in bids:
        charging = "" if b.battery_charging is None else ("+" if b.battery_charging else "")
        rows.append([
            "*" if b.serial == winner else "", b.serial, b.model or "", b.cores or "-",
            b.perf_cores or "-", _fmt(b.cpu_load, ".1f"),
            _fmt(b.mem_available_kb // 1024 if b.ok or b.mem_total_kb else None, "d"),
            _fmt(b.battery_level, "d") + charging, _fmt(b.temperature_c, ".1f"),
            _fmt(b.freq_ratio, ".2f"), _fmt(b.probe_rtt_s * 1000, ".0f"), b.error or "",
        ])
    return tabulate(rows, headers=["win", "serial", "model", "cores", "perf", "cpu%", "mem MB free",
                                   "batt%", "temp C", "freq", "rtt ms", "error"])


def _explain(policy_name: str, bids: list[Bid], energy_weight: float = 0.0,
             energy_rates=None) -> tuple[str | None, dict | None]:
    """The policy's decision on a classify task, with every device's cost."""
    from adbflow.scheduling.profiles import ProfileBook  # noqa: PLC0415
    pol = get_policy(policy_name, energy_weight_s_per_j=energy_weight,
                     energy_rates=energy_rates)
    decision = pol.choose(Task(stage="classify"), bids, inflight={},
                          profiles=ProfileBook.load())
    costs = [{"serial": c.serial, "eligible": c.eligible, "excluded": c.excluded,
              "total_s": c.total_s, "parts": c.parts} for c in decision.costs]
    text = format_decision(decision)
    return decision.winner, {"policy": decision.policy, "reason": decision.reason, "costs": costs,
                             "text": text}


Once = Annotated[bool, typer.Option("--once", help="One bid round, then exit.")]
Interval = Annotated[float, typer.Option("--interval", min=0.2,
                                         help="Seconds between rounds (without --once).")]
CpuInfo = Annotated[bool, typer.Option("--cpuinfo", help="Also read `dumpsys cpuinfo`.")]
BidPolicy = Annotated[Optional[str], typer.Option(
    "--policy", help=f"Choose with this policy ({', '.join(POLICY_NAMES)}).")]
Explain = Annotated[bool, typer.Option(
    "--explain", help="Print the policy's per-device cost for a classify task "
                      f"(policy {DEFAULT_POLICY} unless --policy is given).")]


def bid_cmd(
    adb_server: AdbServers = None, serial: Serials = None, json_out: JsonOut = False,
    timeout: Timeout = 5.0, once: Once = False, interval: Interval = 2.0,
    cpuinfo: CpuInfo = False, policy: BidPolicy = None, explain: Explain = False,
    energy_weight: EnergyWeight = CostModel().energy_weight_s_per_j,
) -> None:
    """Ask every device for a bid (CPU load, memory, battery, temperature) in parallel and
    mark the winner (default: lowest CPU load). Devices that fail are shown with their error."""
    inv = _inventory(adb_server, serial)
    bidder = Bidder(timeout=timeout, with_cpuinfo=cpuinfo)
    rates = _energy_rates(energy_weight)
    while True:
        refs = inv.refs()
        unreachable = [r for r in refs if r.state == "server-unreachable"]
        devices = inv.devices()
        bids = bidder.gather(devices)
        bids += [_not_ready_bid(r) for r in refs if r.state not in ("device", "server-unreachable")
                 and (not inv.serials or r.serial in inv.serials)]
        missing = [s for s in inv.serials if s not in {r.serial for r in refs}]
        bids += [_not_ready_bid(None, serial=s) for s in missing]
        explanation = None
        # --explain alone shows the default scheduler's (ect) costs; plain `bid` keeps the
        # seed rule, lowest CPU load, which needs no profiles
        policy = policy or (DEFAULT_POLICY if explain else None)
        if policy:
            winner, explanation = _explain(policy, bids, energy_weight, rates)
        else:
            winner = pick_lowest_cpu(bids)
        if json_out:
            doc: dict[str, Any] = {"winner": winner, "policy": policy or "lowest-cpu",
                   "bids": [b.to_json() for b in bids],
                   "unreachable_servers": [str(r.server) for r in unreachable]}
            if explanation is not None:
                doc["explain"] = {k: v for k, v in explanation.items() if k != "text"}
            typer.echo(json.dumps(doc, indent=2))
        else:
            for r in unreachable:
                typer.secho(f"adb server {r.server} unreachable", fg=typer.colors.YELLOW, err=True)
            typer.echo(bid_table(bids, winner) if bids else "no devices")
            if explanation is not None:
                typer.echo(explanation["text"])
            typer.echo(f"winner: {winner or 'none'}")
        if once:
            raise typer.Exit(0 if winner else 1)
        time.sleep(interval)


def _energy_rates(energy_weight: float):
    """Joules per unit learned by earlier --energy runs in the default data dir, for the
    explanation; None when energy is not weighed or there is no journal yet."""
    from adbflow.paths import data_home  # noqa: PLC0415
    from adbflow.runtime.pipeline import journal_path  # noqa: PLC0415
    from adbflow.scheduling.energy_rates import EnergyRates  # noqa: PLC0415
    path = journal_path(data_home())
    return EnergyRates(path) if energy_weight > 0 and path.exists() else None


def _not_ready_bid(ref, *, serial: str | None = None) -> Bid:
    """A row for a device that is listed but cannot bid (offline, unauthorized, unknown)."""
    from adbflow.device import Device  # noqa: PLC0415
    from adbflow.parsers.adb_messages import classify_adb_error  # noqa: PLC0415
    if ref is None:
        return Bid.failed(Device(serial or "?"), "not connected to any adb server")
    problem = classify_adb_error(ref.state)
    msg = f"{ref.state}" + (f" ({problem.hint})" if problem else "")
    return Bid.failed(Device(ref.serial, ref.server, model=ref.model), msg)


def register(app: typer.Typer) -> None:
    app.command("devices")(devices_cmd)
    app.command("bid")(bid_cmd)
