"""Stand-in for today's llama.cpp `llama-cli` (tools/cli, December 2025 on): a chat only.

What the real program does (tools/cli/cli.cpp), and so this stand-in:
- `-no-cnv` / `--no-conversation` is accepted but not honoured: it prints
  `--no-conversation is not supported by llama-cli` / `please use llama-completion instead`
  on stderr and carries on in conversation mode;
- prints `Loading model...`, the llama.cpp logo, `build`/`model`/`modalities` and the
  `available commands:` list on stdout;
- takes `-p` as the first user turn (`> PROMPT`), answers it through the model's chat
  template, prints `[ Prompt: x t/s | Generation: y t/s ]`;
- then, unless `-st`/`--single-turn`, waits for the next user turn at `> `. When stdin is at
  EOF (adb shell v2 closes it) the real readline returns an empty line at once and the loop
  prints `> ` again forever (the unbounded logs users report). The stand-in prints the same
  bytes, paced (simulated: a few kB per 10 ms instead of a busy loop) to spare the host.

The answer is real SmolLM2 text (xllamacpp), paced at the profile's token rate like
llama-completion's stand-in; the chat template applied is ChatML (SmolLM2-Instruct's).
"""
from __future__ import annotations

import os
import sys
import time

from adbflow.fleet.programs import common
from adbflow.fleet.programs.llama_completion import FLAGS as COMPLETION_FLAGS
from adbflow.fleet.programs.llama_completion import parse_args as parse_completion_args
from adbflow.fleet.programs.llama_completion import token_rate, unescape

PROGRAM = "llama-cli"
FLAGS = {**COMPLETION_FLAGS,
         "-sys": ("system", True), "--system-prompt": ("system", True),
         "--jinja": ("jinja", False), "--chat-template": ("chat_template", True),
         "--show-timings": ("show_timings", False), "--no-show-timings": ("no_timings", False)}
LOGO = """
\u2584\u2584 \u2584\u2584
\u2588\u2588 \u2588\u2588
\u2588\u2588 \u2588\u2588  \u2580\u2580\u2588\u2584 \u2588\u2588\u2588\u2584\u2588\u2588\u2588\u2584  \u2580\u2580\u2588\u2584    \u2584\u2588\u2588\u2588\u2588 \u2588\u2588\u2588\u2588\u2584 \u2588\u2588\u2588\u2588\u2584
"""
EOF_PACE_S = 0.01
EOF_CHUNK = "\n> " * 512


def parse_args(argv: list[str]) -> tuple[dict[str, str], set[str]]:
    """llama.cpp's common parser with llama-cli's extra flags."""
    parsed = parse_completion_args(argv, FLAGS)
    return parsed.values, parsed.switches


def chatml(system: str | None, user: str) -> str:
    head = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
    return head + f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    common.install_signal_defaults()
    values, sw = parse_args(sys.argv[1:] if argv is None else argv)
    state = common.load_state()
    common.apply_program_fault(PROGRAM, state)
    if "no_cnv" in sw:
        sys.stderr.write("--no-conversation is not supported by llama-cli\n"
                         "please use llama-completion instead\n")
        sys.stderr.flush()
    model = values.get("model", "models/7B/ggml-model-f16.gguf")
    try:
        n_predict = int(values.get("n_predict", -1))
        threads = int(values.get("threads", 4))
        temp = float(values.get("temp", 0.8))
    except ValueError as exc:
        sys.stderr.write(f"error: invalid parameter for argument: {exc}\n")
        return 1
    out("\nLoading model... ")
    if not os.path.isfile(model):
        sys.stderr.write("\nFailed to load the model\n")
        return 1
    import xllamacpp  # heavy: only after argument checks

    params = xllamacpp.CommonParams()
    params.model.path = model
    params.n_ctx = 2048
    params.n_predict = n_predict if n_predict > 0 else 256
    params.cpuparams.n_threads = 1            # host cores are shared by the whole fleet
    params.cpuparams_batch.n_threads = 1
    params.n_parallel = 1
    params.warmup = False
    params.verbosity = -1
    server = xllamacpp.Server(params)
    out("\n\n" + LOGO + "\n")
    out(f"build      : 0 (xllamacpp, adbflow virtual device {state.profile})\n")
    out(f"model      : {os.path.basename(model)}\n")
    out("modalities : text\n")
    if values.get("system"):
        out("using custom system prompt\n")
    out("\navailable commands:\n  /exit or Ctrl+C     stop or exit\n"
        "  /regen              regenerate the last response\n"
        "  /clear              clear the chat history\n"
        "  /read               add a text file\n\n")
    rate = token_rate(state, threads, common.slowdown(state))
    prompt = values.get("prompt", "")
    if prompt and "no_escape" not in sw:
        prompt = unescape(prompt)
    while True:
        if prompt:
            buffer, prompt = prompt, ""
            out(f"\n> {buffer[:500]}{' ... (truncated)' if len(buffer) > 500 else ''}\n")
        else:
            out("\n> ")
            line = sys.stdin.readline()
            if not line:                          # EOF: the real loop spins on "> "
                while True:
                    out(EOF_CHUNK)
                    time.sleep(EOF_PACE_S)
            buffer = line.rstrip("\n")
        out("\n")
        if not buffer:
            continue
        if buffer.startswith("/exit"):
            break
        t0 = time.monotonic()
        n = [0]

        def on_chunk(chunk: dict, n: list[int] = n, t0: float = t0) -> None:
            text = ((chunk.get("choices") or [{}])[0]).get("text") or ""
            if text:
                n[0] += 1
                common.sleep_until(t0 + n[0] / rate)
                out(text)

        server.handle_completions({"prompt": chatml(values.get("system"), buffer),
                                   "n_predict": params.n_predict, "stream": True,
                                   "temperature": temp, "cache_prompt": False}, on_chunk)
        out("\n\n")
        if "no_timings" not in sw:
            gen = n[0] / max(1e-6, time.monotonic() - t0)
            out(f"\n[ Prompt: {rate * 8:.1f} t/s | Generation: {gen:.1f} t/s ]\n")
        if "single_turn" in sw:
            break
    out("\nExiting...\n")
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
