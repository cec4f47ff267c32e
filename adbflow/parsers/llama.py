"""Parse llama.cpp (`llama-cli`, older `main`) output: the generated text and its speed.

Why two streams: llama-cli writes the generated text on stdout and its logs and
`llama_perf_*` / `llama_print_timings` lines on stderr; some builds (and captures through
journald or `2>&1`) mix them, so timing lines are searched in both and log lines are removed
from the text. The text is device output: control characters are dropped and it is bounded.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from adbflow.errors import ParseError
from adbflow.parsers.text import CONTROL_KEEP_NEWLINES as _CONTROL

KIND = "llama"
MAX_TEXT_CHARS = 8000

_NUM = r"([0-9]*\.?[0-9]+)"
# `llama_perf_context_print: prompt eval time = 80.76 ms / 11 tokens ( 7.34 ms per token, 136.21 tokens per second)`
# (llama.cpp 2026: `0.01.405.853 I common_perf_print: prompt eval time = ...`)
_TIMING = re.compile(
    r"(?:llama_perf_context_print|llama_print_timings|llama_perf_sampler_print"
    r"|common_perf_print)\s*:\s*"
    r"(load|sample|sampling|prompt eval|eval|total) time\s*=\s*" + _NUM + r"\s*ms"
    r"(?:\s*/\s*(\d+)\s*(?:tokens|runs)?)?"
    r"(?:\s*\(\s*" + _NUM + r"\s*ms per token,\s*" + _NUM + r"\s*tokens per second\s*\))?")
# 2023-03 `main:  predict time = 193441.61 ms / 367.76 ms per token`
_OLD_PREDICT = re.compile(r"main:\s*predict time\s*=\s*" + _NUM + r"\s*ms\s*/\s*" + _NUM +
                          r"\s*ms per token")
_OLD_LOAD = re.compile(r"main:\s*load time\s*=\s*" + _NUM + r"\s*ms")
_OLD_TOTAL = re.compile(r"main:\s*total time\s*=\s*" + _NUM + r"\s*ms")
# Lines that are logs, not generated text (llama.cpp prefixes every log line with its
# function or subsystem name).
_LOG_LINE = re.compile(
    r"^\s*(?:[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d \S+ \S+: )?"   # journalctl prefix
    r"(?:llama_\w+|llm_\w+|main|load_tensors|load|ggml[\w-]*|system_info|sampling|sampler"
    r"|sampler seed|sampler params|sampler chain|generate|build|print_info|common_init\w*"
    r"|gguf_\w+|clip_\w+|srv\s+\w+|log_\w+|\w+_print|common_\w+)\s*:")
_END_MARKERS = ("[end of text]", "> EOF by user", "Interrupted by user")


@dataclass
class LlamaResult:
    text: str
    eval_tok_s: float | None = None
    prompt_tok_s: float | None = None
    eval_tokens: int | None = None
    prompt_tokens: int | None = None
    load_ms: float | None = None
    total_ms: float | None = None
    interrupted: bool = False

    @property
    def has_timings(self) -> bool:
        return any(v is not None for v in (self.eval_tok_s, self.prompt_tok_s, self.load_ms,
                                           self.total_ms))

    def to_json(self) -> dict:
        return {"text": self.text, "eval_tok_s": self.eval_tok_s,
                "prompt_tok_s": self.prompt_tok_s, "eval_tokens": self.eval_tokens,
                "prompt_tokens": self.prompt_tokens, "load_ms": self.load_ms,
                "total_ms": self.total_ms, "interrupted": self.interrupted}


def _finite(value: float | None) -> float | None:
    """Device output is untrusted: '1e309' parses as inf. Keep only usable numbers."""
    return value if value is not None and math.isfinite(value) and value >= 0 else None


def _rate(ms: float, count: int | None, per_s: str | None) -> float | None:
    if per_s is not None:
        return _finite(float(per_s))
    if count and ms > 0:  # truncated capture: the rate is computable from ms / count
        return _finite(count / (ms / 1000.0))
    return None


def _read_timings(text: str, res: LlamaResult) -> None:
    for m in _TIMING.finditer(text):
        what, ms_s, count_s, _per_tok, per_s = m.groups()
        ms = _finite(float(ms_s))
        if ms is None:
            continue
        count = int(count_s) if count_s else None
        if what == "load":
            res.load_ms = ms
        elif what == "total":
            res.total_ms = ms
        elif what == "prompt eval":
            res.prompt_tokens = count
            res.prompt_tok_s = _rate(ms, count, per_s)
        elif what == "eval":
            res.eval_tokens = count
            res.eval_tok_s = _rate(ms, count, per_s)
    predict = _OLD_PREDICT.search(text)
    if predict and res.eval_tok_s is None and float(predict.group(2)) > 0:
        res.eval_tok_s = _finite(1000.0 / float(predict.group(2)))
    load = _OLD_LOAD.search(text)
    if load and res.load_ms is None:
        res.load_ms = _finite(float(load.group(1)))
    total = _OLD_TOTAL.search(text)
    if total and res.total_ms is None:
        res.total_ms = _finite(float(total.group(1)))


def _story_text(stdout: str, prompt: str | None) -> tuple[str, bool]:
    text = stdout.replace("\r\n", "\n").replace("\r", "\n")
    if prompt:
        stripped = text.lstrip()
        # llama-cli echoes the prompt before the generation unless --no-display-prompt.
        if stripped.startswith(prompt.strip()):
            text = stripped[len(prompt.strip()):]
    interrupted = False
    kept: list[str] = []
    for line in text.split("\n"):
        if _LOG_LINE.match(line):
            continue
        for marker in _END_MARKERS:
            if marker in line:
                interrupted = interrupted or marker != "[end of text]"
                line = line.replace(marker, "")
        kept.append(line)
    out = _CONTROL.sub("", "\n".join(kept)).strip()
    # Collapse runs of blank lines the model likes to emit.
    out = re.sub(r"\n{3,}", "\n\n", out)
    return out[:MAX_TEXT_CHARS], interrupted


def parse_llama(stdout: str, stderr: str = "", *, prompt: str | None = None,
                require_text: bool = True, require_timings: bool = False) -> LlamaResult:
    """Generated text (prompt echo, log lines and end markers removed) and llama_perf speeds.

    require_text: raise ParseError when no text is left (a story stage needs one).
    require_timings: raise ParseError when no llama.cpp timing line is present; the
    pipeline sets it because garbage that merely *looks* like text must not pass as a story.
    Always raises ParseError when the output holds neither text nor timings.
    """
    if not isinstance(stdout, str) or not isinstance(stderr, str):
        raise ParseError(KIND, "expected text output", repr(stdout)[:300])
    res = LlamaResult(text="")
    _read_timings(stderr + "\n" + stdout, res)
    res.text, res.interrupted = _story_text(stdout, prompt)
    if "Interrupted by user" in stderr:
        res.interrupted = True
    sample = (stdout + "\n" + stderr).strip()
    if not res.text and not res.has_timings:
        raise ParseError(KIND, "neither generated text nor llama.cpp timing lines "
                               "(not llama-cli output?)", sample)
    if require_text and not res.text:
        raise ParseError(KIND, "llama-cli produced no text", sample)
    if require_timings and not res.has_timings:
        raise ParseError(KIND, "no llama_perf/llama_print_timings lines: output does not look "
                               "like a finished llama-cli run", sample)
    return res
