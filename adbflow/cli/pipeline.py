"""`adbflow watch | run | jobs | show | demo`: the pipeline from the command line.

Why these exit codes: scripts and CI branch on them. 0 every job done, 1 a job failed (its
reason is in the output and the journal), 2 usage or adbflow error (cli.main), 130 Ctrl-C.
`--json` prints one JSON document per finished job on stdout (one line each), so
`adbflow watch --once --json | jq` works; progress goes to stderr.
"""
from __future__ import annotations

import contextlib
import json
import signal
import tempfile
import threading
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from adbflow.cli.live import LiveView
from adbflow.cli.options import AdbServers, EnergyWeight, JsonOut, Serials
from adbflow.errors import AdbflowError
from adbflow.paths import ASSETS_DIR, data_home
from adbflow.runtime.events import Event, Watching
from adbflow.runtime.journal import FINAL_STATES, Journal
from adbflow.runtime.pipeline import Pipeline, PipelineConfig, journal_path
from adbflow.runtime.stages import StageTimeouts
from adbflow.runtime.story import display_text, render_result

EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_TERMINATED = 143      # SIGTERM: 128 + 15, the same clean stop as Ctrl-C (130)


class Stopped(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt, so both stops
    take the same path: workers stopped, journal closed, unfinished jobs resume next start."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _stop_signals():
    """SIGTERM handled like SIGINT while a command runs (the previous handler restored)."""
    def on_term(signum, _frame):
        raise Stopped(signum)
    try:
        previous = signal.signal(signal.SIGTERM, on_term)
    except ValueError:          # not the main thread (tests): nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_code(exc: KeyboardInterrupt) -> int:
    return EXIT_TERMINATED if isinstance(exc, Stopped) else EXIT_INTERRUPTED

# Option defaults come from the config dataclasses (one place for each default).
_DEFAULT = PipelineConfig(data_dir=Path("."))
_TIMEOUTS = _DEFAULT.timeouts
DEMO_CONCURRENCY = 2      # the demo's fleet is small; two pictures at a time is plenty

DataDir = Annotated[Optional[Path], typer.Option(
    "--data-dir", help="Journal and pulled pictures live here. Default: $ADBFLOW_HOME, "
                       "else $XDG_DATA_HOME/adbflow, else ~/.local/share/adbflow.")]
PolicyOpt = Annotated[str, typer.Option("--policy", help="Scheduling policy: ect (expected "
                                        "completion time), lowest-cpu, random, round-robin.")]
Attempts = Annotated[int, typer.Option("--attempts", min=1, max=20,
                                       help="Attempts per stage (each on another device if any). A phone "
                                            "that drops off adb mid-stage, or phones all "
                                            "leased by another orchestrator, do not count.")]
Concurrency = Annotated[Optional[int], typer.Option(
    "--concurrency", min=1, max=256,
    help="Pictures processed at the same time. Default: from the fleet (every device's "
         "stage slots, profiles' [slots]); a number fixes the pool (4 = the old default).")]
MaxBytes = Annotated[int, typer.Option("--max-bytes", min=1,
                                       help="Larger pictures are refused (bytes).")]
ClassifyTimeout = Annotated[float, typer.Option("--classify-timeout", min=1.0,
                                                help="Seconds allowed for label_image.")]
GenerateTimeout = Annotated[float, typer.Option("--generate-timeout", min=1.0,
                                                help="Seconds allowed for llama-cli.")]
Energy = Annotated[bool, typer.Option("--energy", help="Meter battery energy of each device "
                                      "stage (idle baseline first: about 1 s more per stage).")]

WarmModels = Annotated[bool, typer.Option("--warm-models", help="Keep the story model loaded: "
                       "one llama-server per phone for this session (127.0.0.1 on the phone, "
                       "through adb forward), stopped when adbflow exits. Phones without "
                       "[llama] server_binary stay one-shot.")]


def _config(data_dir: Path | None, policy: str, attempts: int, concurrency: int | None,
            max_bytes: int,
            classify_timeout: float, generate_timeout: float, **kw: Any) -> PipelineConfig:
    return PipelineConfig(data_dir=Path(data_dir) if data_dir else data_home(), policy=policy,
                          attempts=attempts, concurrency=concurrency, max_bytes=max_bytes,
                          timeouts=StageTimeouts(classify_s=classify_timeout,
                                                 generate_s=generate_timeout), **kw)


def _watch_dirs(values: list[str] | None, pictures_dir: str | None) -> tuple[str, ...]:
    """--watch-dir (repeatable; relative = under /storage/emulated/0) and the older
    --pictures-dir (one absolute folder) -> the watched folders."""
    from adbflow.runtime.mediastore import WatchDirError, resolve_watch_dirs
    raw = list(values or [])
    if pictures_dir:
        if not pictures_dir.startswith("/"):
            raise AdbflowError(f"--pictures-dir {pictures_dir!r} must be an absolute device path",
                               hint="e.g. /storage/emulated/0/DCIM/Camera")
        raw.append(pictures_dir)
    try:
        return resolve_watch_dirs(raw or None)
    except WatchDirError as exc:
        raise AdbflowError(str(exc), hint="e.g. --watch-dir DCIM/Camera --watch-dir Pictures"
                           ) from None


def _inventory(adb_server: list[str] | None, serial: list[str] | None):
    from adbflow.device import Inventory, resolve_servers
    return Inventory(resolve_servers(adb_server), serial)


def job_document(journal: Journal, job_id: int) -> dict[str, Any]:
    """What --json prints for a finished job: state + error + the result fields."""
    job = journal.job(job_id)
    doc: dict[str, Any] = {"job": job.id, "state": job.state, "error": job.error,
                           "origin": job.serial, "path": job.path}
    doc.update(job.result or {})
    return doc


def _exit_code(journal: Journal, job_ids: list[int]) -> int:
    states = [journal.job(j).state for j in job_ids]
    return EXIT_FAILED if any(s == "failed" for s in states) else EXIT_OK


def _print_json(journal: Journal, job_ids: list[int]) -> None:
    for jid in job_ids:
        if journal.job(jid).state in FINAL_STATES:
            typer.echo(json.dumps(job_document(journal, jid), ensure_ascii=False))


FlowOpt = Annotated[Optional[str], typer.Option(
    "--flow", metavar="NAME|PATH", help="Run a flow (see `adbflow flows list`): a shipped "
    "name or a .toml path. Default: classify-story (today's pipeline).")]


def _flow(name: str | None):
    """The flow to run (None: the pipeline's own default path)."""
    if name is None:
        return None
    from adbflow.flows import load
    return load.load(name)


# ------------------------------------------------------------------ commands

def watch_cmd(
    adb_server: AdbServers = None,
    serial: Serials = None,
    json_out: JsonOut = False,
    data_dir: DataDir = None,
    policy: PolicyOpt = _DEFAULT.policy,
    once: Annotated[bool, typer.Option("--once", help="Process the next picture (or the jobs "
                                       "a stopped run left unfinished), then exit.")] = False,
    backlog: Annotated[bool, typer.Option("--backlog", help="Also process pictures that were "
                                          "already on the devices before watching.")] = False,
    poll: Annotated[float, typer.Option("--poll", min=0.2, help="Seconds between directory "
                                        "listings (the safety net under inotify).")] = 2.0,
    max_wait: Annotated[Optional[float], typer.Option("--max-wait", min=0.1, help="With --once: "
                        "give up (exit 2) when no picture arrives within this many seconds."
                        )] = None,
    no_inotify: Annotated[bool, typer.Option("--no-inotify", help="Only list directories.")
                          ] = False,
    watch_dir: Annotated[Optional[list[str]], typer.Option("--watch-dir", help="Device folder "
                         "to watch with its subfolders (repeatable; relative = under "
                         "/storage/emulated/0). Default: DCIM/Camera and Pictures.")] = None,
    pictures_dir: Annotated[Optional[str], typer.Option("--pictures-dir", help="One more "
                            "absolute device folder to watch (older spelling of --watch-dir)."
                            )] = None,
    no_mediastore: Annotated[bool, typer.Option("--no-mediastore", help="Do not query "
                             "MediaStore (Android 11+); inotify and listings only.")] = False,
    attempts: Attempts = _DEFAULT.attempts,
    concurrency: Concurrency = _DEFAULT.concurrency,
    max_bytes: MaxBytes = _DEFAULT.max_bytes,
    classify_timeout: ClassifyTimeout = _TIMEOUTS.classify_s,
    generate_timeout: GenerateTimeout = _TIMEOUTS.generate_s,
    flow: FlowOpt = None,
    energy: Energy = False,
    energy_weight: EnergyWeight = _DEFAULT.energy_weight_s_per_j,
    warm_models: WarmModels = _DEFAULT.warm_models,
) -> None:
    """Watch every device's camera folders; classify each new picture and write a story."""
    cfg = _config(data_dir, policy, attempts, concurrency, max_bytes, classify_timeout,
                  generate_timeout, use_inotify=not no_inotify,
                  use_mediastore=not no_mediastore,
                  watch_dirs=_watch_dirs(watch_dir, pictures_dir), energy=energy,
                  energy_weight_s_per_j=energy_weight, warm_models=warm_models)
    chosen = _flow(flow)
    view = LiveView(json_out=json_out, live=not once)
    pipe = Pipeline(cfg, _inventory(adb_server, serial), on_event=view, flow=chosen)
    try:
        with _stop_signals(), view:
            ids = pipe.watch(once=once, backlog=backlog, poll_s=poll, max_wait_s=max_wait)
    except KeyboardInterrupt as exc:
        pipe.stop_event.set()
        view.console.print("stopped: unfinished jobs and pictures taken meanwhile are "
                           "processed by the next `adbflow watch`")
        pipe.close()
        raise typer.Exit(_stop_code(exc)) from None
    except BaseException:
        pipe.close()
        raise
    finally:
        pipe.stop_event.set()
    try:
        if json_out:
            _print_json(pipe.journal, ids)
        code = _exit_code(pipe.journal, ids)
    finally:
        pipe.close()
    raise typer.Exit(code)


def run_cmd(
    image: Annotated[Path, typer.Argument(help="A picture on the laptop.")],
    adb_server: AdbServers = None,
    serial: Serials = None,
    json_out: JsonOut = False,
    data_dir: DataDir = None,
    policy: PolicyOpt = _DEFAULT.policy,
    attempts: Attempts = _DEFAULT.attempts,
    max_bytes: MaxBytes = _DEFAULT.max_bytes,
    classify_timeout: ClassifyTimeout = _TIMEOUTS.classify_s,
    generate_timeout: GenerateTimeout = _TIMEOUTS.generate_s,
    flow: FlowOpt = None,
    energy: Energy = False,
    energy_weight: EnergyWeight = _DEFAULT.energy_weight_s_per_j,
) -> None:
    """Push one laptop picture through classify + generate (no pull). A picture already
    processed (same path, size, mtime) is not processed again: its result is shown."""
    cfg = _config(data_dir, policy, attempts, 1, max_bytes, classify_timeout, generate_timeout,
                  energy=energy, energy_weight_s_per_j=energy_weight)
    chosen = _flow(flow)
    view = LiveView(json_out=json_out, live=False)
    pipe = Pipeline(cfg, _inventory(adb_server, serial), on_event=view, flow=chosen)
    try:
        with _stop_signals():
            job_id, created = pipe.add_laptop_image(image)
            if not created:
                view.console.print(f"{image} is job {job_id} (already known); not run again")
            job = pipe.run_job(job_id)
            if not created and job.state == "done" and not json_out:
                view.out.print(render_result(job.result or {}), markup=False, highlight=False)
            if json_out:
                _print_json(pipe.journal, [job_id])
            code = _exit_code(pipe.journal, [job_id])
    except KeyboardInterrupt as exc:
        pipe.stop_event.set()
        view.console.print("stopped: the job resumes when this picture is run again")
        raise typer.Exit(_stop_code(exc)) from None
    finally:
        pipe.close()
    raise typer.Exit(code)


def jobs_cmd(
    json_out: JsonOut = False,
    data_dir: DataDir = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Newest N jobs.")] = 30,
    state: Annotated[Optional[str], typer.Option("--state", help="Only jobs in this state: "
                     "pending, running, done, failed, skipped.")] = None,
    plot: Annotated[bool, typer.Option("--plot", help="Terminal chart of the newest jobs' "
                    "end-to-end latency and time per stage (needs adbflow[term]).")] = False,
) -> None:
    """List jobs from the journal (newest first)."""
    path = journal_path(data_dir or data_home())
    if plot:
        from adbflow.cli.jobplot import _plotext
        _plotext()      # a missing extra is named before anything else is read
    if not path.exists():
        if plot:
            raise AdbflowError(f"no journal at {path} yet", hint="pass the --data-dir used by watch")
        if json_out:
            typer.echo("[]")
        else:
            typer.echo(f"no journal at {path} yet")
        return
    with Journal(path) as journal:
        jobs = journal.jobs(limit=limit, state=state)
        if plot:
            import sys

            from adbflow.cli.jobplot import jobs_chart
            typer.echo(jobs_chart(jobs, color=sys.stdout.isatty()))
            return
        if json_out:
            typer.echo(json.dumps([j.to_json() for j in jobs], ensure_ascii=False, indent=2))
            return
        from tabulate import tabulate
        rows = []
        for j in jobs:
            r = j.result or {}
            devs = r.get("devices") or {}
            top = (r.get("labels") or [{}])[0].get("name", "") if r.get("labels") else ""
            total = (r.get("timings") or {}).get("total_s")
            rows.append([j.id, j.state, j.serial, display_text(j.name, 40),
                         devs.get("classify") or "", devs.get("generate") or "",
                         display_text(top, 24), "" if total is None else f"{total:.1f}",
                         display_text(j.error or "", 60)])
        typer.echo(tabulate(rows, headers=["job", "state", "from", "picture", "classify",
                                           "generate", "top label", "secs", "error"],
                            disable_numparse=True) if rows else "no jobs")


def show_cmd(
    job: Annotated[int, typer.Argument(help="Job id (see `adbflow jobs`).")],
    json_out: JsonOut = False,
    data_dir: DataDir = None,
) -> None:
    """Everything the journal knows about one job: result and every stage attempt."""
    path = journal_path(data_dir or data_home())
    if not path.exists():
        raise AdbflowError(f"no journal at {path}", hint="pass the --data-dir used by watch")
    with Journal(path) as journal:
        rec = journal.job(job)
        attempts = journal.attempts(job)
        if json_out:
            doc = rec.to_json()
            doc["attempts"] = [a.to_json() for a in attempts]
            typer.echo(json.dumps(doc, ensure_ascii=False, indent=2))
            return
        typer.echo(f"job {rec.id}: {rec.state}  {rec.source} {rec.serial}:{display_text(rec.path)}"
                   f"  {rec.size} bytes  sha256 {rec.sha256 or '-'}")
        if rec.error:
            typer.echo(f"error: {display_text(rec.error, 1000)}")
        from tabulate import tabulate

        from adbflow.runtime.energy import format_energy
        rows = [[a.stage, a.attempt, a.serial or "", a.state,
                 "" if a.seconds is None else f"{a.seconds:.2f}",
                 format_energy((a.output or {}).get("energy")), a.error_kind or "",
                 display_text(a.error or "", 80)] for a in attempts]
        typer.echo(tabulate(rows, headers=["stage", "try", "device", "state", "secs", "energy",
                                           "kind", "error"], disable_numparse=True))
        for a in attempts:     # quirks found in the battery counters: never silently used
            for flag in ((a.output or {}).get("energy") or {}).get("flags") or []:
                typer.echo(f"energy {a.stage}#{a.attempt}: {display_text(str(flag), 200)}")
        if rec.result:
            typer.echo(render_result(rec.result))


def demo_cmd(
    json_out: JsonOut = False,
    data_dir: DataDir = None,
    policy: PolicyOpt = _DEFAULT.policy,
    devices: Annotated[int, typer.Option("--devices", min=2, max=20)] = 3,
    image: Annotated[Path, typer.Option("--image", help="Picture snapped on device 2.")
                     ] = ASSETS_DIR / "chelsea.png",
    loads: Annotated[Optional[list[float]], typer.Option(
        "--load", help="Extra CPU load (percent) per device, in order (repeatable). Default: device 1 "
                       "idle-ish, the others busy.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=10.0, help="Give up after this "
                                           "many seconds.")] = 600.0,
) -> None:
    """The README's main job, self-contained: start a virtual fleet (private adb server,
    temp dir), set loads, snap a cat picture on device 2, run `watch --once`, print labels
    and story, tear everything down (also on Ctrl-C and errors)."""
    from adbflow.device import AdbServer, Inventory
    from adbflow.fleet import adb_server as fleet_adb
    from adbflow.fleet.control import start_fleet

    view = LiveView(json_out=json_out, live=False)
    say = view.console.print
    code = EXIT_ERROR
    with tempfile.TemporaryDirectory(prefix="adbflow-demo-") as tmp:
        port = fleet_adb.free_port(15037, 16999)
        base = fleet_adb.free_port(20000, 29000)
        client = None
        pipe = None
        try:
            say(f"starting {devices} virtual devices in {tmp} (adb server on port {port}) ...")
            client = start_fleet(Path(tmp) / "fleet", devices=devices, adb_port=port,
                                 base_port=base)
            serials = client.serials
            wanted = list(loads) if loads else [5.0] + [60.0 + 10 * i for i in range(devices - 1)]
            for s, pct in zip(serials, wanted):
                client.load(s, pct)
            say("loads: " + ", ".join(f"{s}={pct:g}%" for s, pct in zip(serials, wanted)))
            cfg = _config(data_dir or Path(tmp) / "data", policy, _DEFAULT.attempts,
                          DEMO_CONCURRENCY, _DEFAULT.max_bytes, _TIMEOUTS.classify_s,
                          _TIMEOUTS.generate_s)
            target = serials[1]

            def on_event(ev: Event) -> None:
                view(ev)
                if isinstance(ev, Watching):
                    say(f"snapping {image.name} on {target}")
                    # Pictures/ through the File API: what `watch` detects today (issue 13
                    # moves detection to DCIM/Camera + MediaStore, then: the camera default)
                    client.snap(target, image, directory="Pictures", publish="file")

            pipe = Pipeline(cfg, Inventory([AdbServer(port=port)]), on_event=on_event)
            timer = threading.Timer(timeout, pipe.stop_event.set)
            timer.daemon = True
            timer.start()
            ids = pipe.watch(once=True, max_wait_s=min(60.0, timeout))
            timer.cancel()
            if pipe.stop_event.is_set():
                raise AdbflowError(f"demo did not finish within {timeout:g} s")
            if json_out:
                _print_json(pipe.journal, ids)
            code = _exit_code(pipe.journal, ids)
        except KeyboardInterrupt:
            say("interrupted: tearing the fleet down")
            code = EXIT_INTERRUPTED
        except AdbflowError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            code = EXIT_ERROR
        finally:
            if pipe is not None:
                pipe.stop_event.set()
                pipe.close()
            if client is not None:
                try:
                    client.down()
                except Exception as exc:  # noqa: BLE001 - teardown must go on
                    say(f"fleet teardown: {exc}")
            fleet_adb.kill_server(port)
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("watch")(watch_cmd)
    app.command("run")(run_cmd)
    app.command("jobs")(jobs_cmd)
    app.command("show")(show_cmd)
    app.command("demo")(demo_cmd)
