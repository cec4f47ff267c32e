"""Stand-in for llama.cpp's llama-completion (and pre-2025-12 llama-cli) on a virtual device:
real GGUF, simulated token rate.

Since December 2025 llama.cpp's one-shot program is `llama-completion` (tools/completion, the
old tools/main); `llama-cli` became a chat (adbflow.fleet.programs.llama_chat).

Why: the story stage needs real text and the scheduler needs the device's speed. This
runs the real model file given with -m (SmolLM2-135M Q4_1 on virtual devices) through
xllamacpp (prebuilt llama.cpp) for ONE completion (`-no-cnv` behaviour), streams the
generated tokens to stdout at the profile's token rate (scaled by load, temperature,
threads and slow_factor) and prints llama.cpp's `llama_perf_*` lines on stderr.

Like the real llama-cli in single-turn mode, stdout starts with the prompt (unless
--no-display-prompt) and ends with ` [end of text]` when the model stopped by itself.
Deviations (said on stderr): without -n the default is 64 tokens, not unlimited; a GGUF with
a chat template does not switch this stand-in to conversation mode when -no-cnv is missing
(the real program then waits for input: adbflow's profiles always pass -no-cnv).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from adbflow.fleet.programs import common

DEFAULT_N_PREDICT = 64
PROGRAM = "llama-completion"
# flag -> (destination, takes a value)
FLAGS: dict[str, tuple[str, bool]] = {
    "-m": ("model", True), "--model": ("model", True),
    "-p": ("prompt", True), "--prompt": ("prompt", True),
    "-f": ("file", True), "--file": ("file", True),
    "-n": ("n_predict", True), "--n-predict": ("n_predict", True), "--predict": ("n_predict", True),
    "-t": ("threads", True), "--threads": ("threads", True),
    "-tb": ("threads_batch", True), "--threads-batch": ("threads_batch", True),
    "-c": ("ctx", True), "--ctx-size": ("ctx", True),
    "-b": ("batch", True), "--batch-size": ("batch", True),
    "-s": ("seed", True), "--seed": ("seed", True),
    "--temp": ("temp", True), "--top-k": ("top_k", True), "--top-p": ("top_p", True),
    "--min-p": ("min_p", True), "--repeat-penalty": ("repeat_penalty", True),
    "--repeat-last-n": ("repeat_last_n", True),
    "-ngl": ("ngl", True), "--n-gpu-layers": ("ngl", True), "--gpu-layers": ("ngl", True),
    "-no-cnv": ("no_cnv", False), "--no-conversation": ("no_cnv", False),
    "-cnv": ("cnv", False), "--conversation": ("cnv", False), "-st": ("single_turn", False),
    "--single-turn": ("single_turn", False),
    "--simple-io": ("simple_io", False), "--no-display-prompt": ("no_display_prompt", False),
    "--no-warmup": ("no_warmup", False), "-e": ("escape", False), "--escape": ("escape", False),
    "--no-escape": ("no_escape", False), "--log-disable": ("log_disable", False),
    "--no-perf": ("no_perf", False), "--ignore-eos": ("ignore_eos", False),
    "-fa": ("flash_attn", True), "--flash-attn": ("flash_attn", True), "--mlock": ("mlock", False),
    "--no-mmap": ("no_mmap", False), "-lv": ("verbosity", True), "--verbosity": ("verbosity", True),
}


@dataclass
class Args:
    values: dict[str, str] = field(default_factory=dict)
    switches: set[str] = field(default_factory=set)


def parse_args(argv: list[str], flags: dict[str, tuple[str, bool]] | None = None) -> Args:
    """llama.cpp's common arg parser: `error: invalid argument: X` for unknown flags.
    `flags` is the program's table (llama-cli's chat stand-in passes its own)."""
    table = FLAGS if flags is None else flags
    out = Args()
    i = 0
    while i < len(argv):
        a = argv[i]
        key: str = a
        val: str | None = None
        if a.startswith("--") and "=" in a:
            key, val = a.split("=", 1)
        spec = table.get(key)
        if spec is None:
            sys.stderr.write(f"error: invalid argument: {a}\n")
            sys.exit(1)
        dest, takes = spec
        if takes:
            if val is None:
                i += 1
                if i >= len(argv):
                    sys.stderr.write(f"error: expected value for argument: {key}\n")
                    sys.exit(1)
                val = argv[i]
            out.values[dest] = val
        else:
            out.switches.add(dest)
        i += 1
    return out


def unescape(s: str) -> str:
    """llama.cpp processes \\n, \\t, \\\\ ... in the prompt by default (--escape)."""
    return (s.replace("\\\\", "\x00").replace("\\n", "\n").replace("\\t", "\t")
            .replace("\\'", "'").replace('\\"', '"').replace("\x00", "\\"))


#: decode left when a thread runs on a little core: every token waits for the slowest
#: thread (device-profiles.md: threads beyond big+mid cores cost 30-40 % of decode)
LITTLE_CORE_FACTOR = 0.65
#: and when there are more threads than cores (llama.cpp collapses: device-profiles.md)
OVERSUBSCRIBED_FACTOR = 0.6


def token_rate(state: common.DeviceState, threads: int, slow: common.Slowdown) -> float:
    """Simulated generation tokens/s for this run. The profile's rate is the class's best
    (published app numbers run on the performance cores): reached at min(4, big + mid)
    threads, scaled down below that; a thread beyond the big + mid cores costs
    LITTLE_CORE_FACTOR, more threads than cores OVERSUBSCRIBED_FACTOR on top."""
    perf = state.perf_cores if 0 < state.perf_cores <= state.ncores else state.ncores
    anchor = max(1, min(4, perf))
    eff = max(1, min(threads, perf, anchor))
    rate = state.llm_tok_s * (eff / anchor) ** 0.7
    if threads > perf:
        rate *= LITTLE_CORE_FACTOR
    if threads > state.ncores:
        rate *= OVERSUBSCRIBED_FACTOR
    return max(0.05, rate / slow.total)


def load_pad_s(state: common.DeviceState, slow: common.Slowdown) -> float:
    """Simulated seconds a program start spends loading the model on this device (the
    profile's llm_load_ms, slowed like everything else by load, heat and slow_factor)."""
    return state.llm_load_ms / 1000.0 * slow.total


def perf_lines(*, load_ms: float, prompt_ms: float, n_prompt: int, eval_ms: float,
               n_eval: int, sample_ms: float, n_sample: int, total_ms: float) -> list[str]:
    """llama_perf_* lines exactly as llama.cpp prints them (2024-12+ format)."""
    def rate(ms: float, n: int) -> tuple[float, float]:
        return (ms / n if n else 0.0), (1000.0 * n / ms if ms > 0 else float("inf"))

    s_pt, s_ps = rate(sample_ms, n_sample)
    p_pt, p_ps = rate(prompt_ms, n_prompt)
    e_pt, e_ps = rate(eval_ms, n_eval)
    return [
        f"llama_perf_sampler_print:    sampling time = {sample_ms:10.2f} ms / {n_sample:5d} runs"
        f"   ({s_pt:8.2f} ms per token, {s_ps:8.2f} tokens per second)",
        f"llama_perf_context_print:        load time = {load_ms:10.2f} ms",
        f"llama_perf_context_print: prompt eval time = {prompt_ms:10.2f} ms / {n_prompt:5d} tokens"
        f" ({p_pt:8.2f} ms per token, {p_ps:8.2f} tokens per second)",
        f"llama_perf_context_print:        eval time = {eval_ms:10.2f} ms / {n_eval:5d} runs  "
        f" ({e_pt:8.2f} ms per token, {e_ps:8.2f} tokens per second)",
        f"llama_perf_context_print:       total time = {total_ms:10.2f} ms / "
        f"{n_prompt + n_eval:5d} tokens",
        f"llama_perf_context_print:    graphs reused = {max(0, n_eval - 2):10d}",
    ]


def err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    common.install_signal_defaults()
    t_start = time.monotonic()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    state = common.load_state()
    common.apply_program_fault(PROGRAM, state)
    v, sw = args.values, args.switches
    model = v.get("model", "models/7B/ggml-model-f16.gguf")
    prompt = v.get("prompt", "")
    if "file" in v:
        try:
            with open(v["file"], encoding="utf-8", errors="replace") as f:
                prompt = f.read()
        except OSError:
            err(f"error: failed to open file '{v['file']}'")
            return 1
    if "no_escape" not in sw:
        prompt = unescape(prompt)
    try:
        n_predict = int(v.get("n_predict", DEFAULT_N_PREDICT))
        threads = int(v.get("threads", 4))
        n_ctx = int(v.get("ctx", 4096))
        seed = int(v.get("seed", -1))
        temp = float(v.get("temp", 0.8))
        top_k = int(v.get("top_k", 40))
        top_p = float(v.get("top_p", 0.95))
        min_p = float(v.get("min_p", 0.05))
        repeat_penalty = float(v.get("repeat_penalty", 1.0))
        repeat_last_n = int(v.get("repeat_last_n", 64))
    except ValueError as exc:
        err(f"error: invalid parameter for argument: {exc}")
        return 1
    if n_predict < 0:
        n_predict = 4096
    slow = common.slowdown(state)
    rate = token_rate(state, threads, slow)

    err(f"build: 0 (xllamacpp) with prebuilt llama.cpp for {os.uname().machine}-linux")
    err("main: llama backend init")
    err("main: load the model and apply lora adapter, if any")
    if not os.path.isfile(model):
        err(f"gguf_init_from_file: failed to open GGUF file '{model}'")
        err(f"llama_model_load: error loading model: llama_model_loader: failed to load model "
            f"from {model}")
        err("llama_model_load_from_file_impl: failed to load model")
        err("common_init_from_params: failed to load model '" + model + "'")
        err("main: error: unable to load model")
        return 1
    import xllamacpp  # heavy: only after argument checks

    params = xllamacpp.CommonParams()
    params.model.path = model
    params.n_ctx = max(256, min(n_ctx, 2048))  # enough for a short story; saves host RAM
    params.n_predict = n_predict
    # One host thread: the host's cores are shared by the whole fleet, and llama.cpp's
    # spinning thread pool collapses (50 -> 3 tok/s measured) when a core is contended.
    host_threads = 1
    params.cpuparams.n_threads = host_threads
    params.cpuparams_batch.n_threads = host_threads
    params.n_parallel = 1
    params.warmup = False
    params.verbosity = -1
    try:
        server = xllamacpp.Server(params)
    except Exception as exc:  # xllamacpp raises plain RuntimeError/Exception subclasses
        err(f"llama_model_load: error loading model: {exc}")
        err("main: error: unable to load model")
        return 1
    # The class's model load (simulated: the host loads this 135M GGUF in its own time, a
    # phone of the class loads its 1B one in the profile's llm_load_ms), paid by every start.
    common.sleep_until(t_start + load_pad_s(state, slow))
    load_ms = (time.monotonic() - t_start) * 1000.0
    err(f"system_info: n_threads = {threads} (n_threads_batch = {threads}) / {state.ncores} | "
        f"CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 |")
    err(f"sampler seed: {seed if seed >= 0 else 4294967295}")
    err(f"sampler params: \n\trepeat_last_n = {repeat_last_n}, repeat_penalty = "
        f"{repeat_penalty:.3f}, frequency_penalty = 0.000, presence_penalty = 0.000\n\t"
        f"top_k = {top_k}, top_p = {top_p:.3f}, min_p = {min_p:.3f}, temp = {temp:.3f}")
    err(f"generate: n_ctx = {params.n_ctx}, n_batch = 2048, n_predict = {n_predict}, n_keep = 0")
    err(f"adbflow virtual device ({state.profile}): real {os.path.basename(model)} generation on "
        f"the host CPU; token rate simulated = {rate:.2f} tok/s "
        f"(profile {state.llm_tok_s:g} tok/s, "
        f"threads {threads}, {slow.describe()})")
    err("")
    if "no_display_prompt" not in sw:
        sys.stdout.write(prompt)
        sys.stdout.flush()

    # mutable state shared with the streaming callback
    first_at = [0.0]
    count = [0]
    last_chunk: list[dict[str, Any]] = []
    prompt_rate = rate * 8.0  # prefill is much faster than decode on phone CPUs
    gen_start = time.monotonic()

    def on_chunk(chunk: dict) -> None:
        choice = (chunk.get("choices") or [{}])[0]
        text = choice.get("text") or ""
        if choice.get("finish_reason"):
            last_chunk[:] = [chunk]
        if not text:
            return
        if count[0] == 0:
            first_at[0] = time.monotonic()
        count[0] += 1
        # Pace: tokens appear at the simulated rate (prompt eval included up front). Never
        # faster than `rate` after the first token, even when that one came late (a busy
        # host): catching up would report an eval rate above the profile's.
        n_prompt_est = max(1, len(prompt) // 4)
        common.sleep_until(max(gen_start + n_prompt_est / prompt_rate + count[0] / rate,
                               first_at[0] + (count[0] - 1) / rate))
        sys.stdout.write(text)
        sys.stdout.flush()

    request = {"prompt": prompt, "n_predict": n_predict, "stream": True, "temperature": temp,
               "top_k": top_k, "top_p": top_p, "min_p": min_p, "repeat_penalty": repeat_penalty,
               "repeat_last_n": repeat_last_n, "cache_prompt": False,
               "ignore_eos": "ignore_eos" in sw}
    if seed >= 0:
        request["seed"] = seed
    server.handle_completions(request, on_chunk)
    end = time.monotonic()
    final: dict[str, Any] = last_chunk[0] if last_chunk else {}
    finish = ((final.get("choices") or [{}])[0]).get("finish_reason")
    usage = final.get("usage") or {}
    n_prompt = int(usage.get("prompt_tokens", max(1, len(prompt) // 4)))
    n_gen = int(usage.get("completion_tokens", count[0]))
    if finish == "stop":
        sys.stdout.write(" [end of text]\n")
    else:
        sys.stdout.write("\n")
    sys.stdout.flush()
    first = first_at[0] or end
    prompt_ms = (first - gen_start) * 1000.0
    eval_ms = (end - first) * 1000.0
    n_eval = max(0, n_gen - 1)
    err("")
    for line in perf_lines(load_ms=load_ms, prompt_ms=prompt_ms, n_prompt=n_prompt,
                           eval_ms=eval_ms, n_eval=n_eval, sample_ms=n_gen * 0.06,
                           n_sample=n_gen, total_ms=(end - t_start) * 1000.0):
        err(line)
    sys.stdout.flush()
    os._exit(0)  # skip xllamacpp's slow server teardown (~0.1 s of logging threads)


if __name__ == "__main__":
    sys.exit(main())
