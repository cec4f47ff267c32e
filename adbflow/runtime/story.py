"""From labels to a prompt, and from a finished job to what the user reads.

Why separate: the prompt wording and the on-screen summary change for product reasons,
independently of how stages run; both are pure functions of journal data, so they are
tested without devices. Label names come from a device's output and are untrusted: they are
cleaned (no control characters, bounded) before they enter a prompt or a terminal.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from adbflow.parsers.text import CONTROL as _CONTROL
from adbflow.parsers.text import escape_controls

MAX_PROMPT_LABELS = 3
MIN_SCORE = 0.05


def display_text(text: str, limit: int = 120) -> str:
    """Untrusted text made safe for one terminal line (escape controls, bound length)."""
    out = escape_controls(text)
    return out if len(out) <= limit else out[: limit - 1] + "…"


def label_phrase(name: str) -> str:
    """The most natural alias of an ImageNet label: `tabby, tabby cat` -> `tabby cat`,
    `tiger cat` -> `tiger cat`, `cougar, puma, ...` -> `cougar`."""
    aliases = [a.strip() for a in _CONTROL.sub(" ", name).split(",") if a.strip()]
    if not aliases:
        return ""
    first = aliases[0]
    longer = [a for a in aliases[1:] if a.lower().startswith(first.lower() + " ")]
    return (longer[0] if longer else first)[:60]


def prompt_labels(labels: Sequence[Mapping[str, Any]], *, max_labels: int = MAX_PROMPT_LABELS,
                  min_score: float = MIN_SCORE) -> list[str]:
    """Distinct phrases of the best labels: the top one always, others above `min_score`."""
    out: list[str] = []
    for i, lb in enumerate(labels):
        score = float(lb.get("score", 0.0))
        if i > 0 and score < min_score:
            continue
        phrase = label_phrase(str(lb.get("name", "")))
        if phrase and phrase.lower() not in (p.lower() for p in out):
            out.append(phrase)
        if len(out) >= max_labels:
            break
    return out


def _article(phrase: str) -> str:
    return "an" if phrase[:1].lower() in "aeiou" else "a"


SYSTEM_PROMPT = "You are a children's author. You write short, simple stories."
PROMPT_FORMATS = ("chatml", "raw")


def _subject(labels: Sequence[Mapping[str, Any]]) -> str:
    phrases = prompt_labels(labels)
    return f"{_article(phrases[0])} {phrases[0]}" if phrases else "an ordinary photo"


def build_prompt(labels: Sequence[Mapping[str, Any]]) -> str:
    """The user's request to the model. Short and about the top label only: SmolLM2-135M
    follows a short request best, and given the runner-up labels too ("it could also be a
    tiger cat") it wrote about those instead (bench/story_quality.py)."""
    return f"Write a story of three short sentences about {_subject(labels)}."


def story_opening(labels: Sequence[Mapping[str, Any]]) -> str:
    """The first words of the answer, written by adbflow (an assistant-turn prefill): the
    story is then sure to name what the picture shows, which the 135M model did on its own
    in only 13-15 of 22 pictures (bench/story_quality.py)."""
    return f"Once upon a time, there was {_subject(labels)}"


def device_prompt(request: str, opening: str = "", *, fmt: str = "chatml",
                  system: str = SYSTEM_PROMPT) -> str:
    """What llama-completion gets with -p: the request in the model's chat template, the
    assistant turn opened and pre-filled with `opening`. ChatML is SmolLM2-Instruct's own
    template (its GGUF's tokenizer.chat_template); llama-completion tokenizes the special
    tokens in -p, so -no-cnv with this text is the chat turn without conversation mode.
    "raw" (base models): the request and the opening as plain text."""
    if fmt == "raw":
        return f"{request}\n\n{opening}" if opening else request
    if fmt != "chatml":
        raise ValueError(f"unknown prompt_format {fmt!r} (known: {', '.join(PROMPT_FORMATS)})")
    return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{request}<|im_end|>\n"
            f"<|im_start|>assistant\n{opening}")


_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
_SENTENCE = re.compile(r".+?(?:[.!?…][\"')\]]*(?=\s|$)|$)", re.S)


def words(text: str) -> list[str]:
    """Lower-case words (letters/digits, inner apostrophes) for the repetition rule."""
    return [w.lower() for w in _WORD.findall(text)]


def first_repeat(text: str, n: int = 4) -> str | None:
    """The first n-word sequence that occurs twice, or None."""
    w = words(text)
    seen: set[tuple[str, ...]] = set()
    for i in range(len(w) - n + 1):
        g = tuple(w[i:i + n])
        if g in seen:
            return " ".join(g)
        seen.add(g)
    return None


def finish_story(opening: str, generated: str, *, n: int = 4) -> str:
    """The story the reader gets: the pre-filled opening + the model's continuation, cut
    back to whole sentences, and cut before the first sentence that repeats a 4-word
    sequence of the story so far (small models loop: "the heart of a ... the heart of a").
    The first sentence is always kept, so the story still names its subject."""
    gen = generated.strip()
    joiner = "" if not opening or not gen or gen[0] in ",.;:!?'’)" else " "
    text = whole_sentences(opening + joiner + gen)
    sentences = [m.group().strip() for m in _SENTENCE.finditer(text) if m.group().strip()]
    kept: list[str] = []
    seen: set[tuple[str, ...]] = set()
    for sent in sentences:
        w = words(sent)
        grams = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
        if kept and (any(g in seen for g in grams) or len(set(grams)) < len(grams)):
            break
        seen.update(grams)
        kept.append(sent)
    return " ".join(kept) if kept else text


_SENTENCE_END = re.compile(r"[.!?…][\"')\]]*(?=\s|$)")


def whole_sentences(text: str) -> str:
    """Cut a generation that stopped at its token budget back to its last full sentence.

    Why: llama-cli stops after n_predict tokens, usually mid-sentence; the reader should get
    a story that ends. Text with no sentence end at all is kept as it is.
    """
    text = text.strip()
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    if not ends or ends[-1] == len(text):
        return text
    return text[:ends[-1]]


def _fmt_s(v: Any) -> str:
    return "-" if v is None else f"{float(v):.2f}s"


def render_result(result: Mapping[str, Any]) -> str:
    """Plain-text summary of a finished job: labels, story, devices, timings."""
    lines = [f"job {result.get('job')}: {display_text(str(result.get('name', '')))} "
             f"from {result.get('origin')}"]
    labels = result.get("labels") or []
    if labels:
        lines.append("labels:")
        for lb in labels:
            lines.append(f"  {float(lb['score']):.3f}  {display_text(str(lb['name']), 80)}")
    devices = result.get("devices") or {}
    lines.append("devices: " + ", ".join(f"{k} on {v}" for k, v in devices.items() if v))
    timings = result.get("timings") or {}
    if timings:
        lines.append("timings: " + ", ".join(f"{k[:-2] if k.endswith('_s') else k} {_fmt_s(v)}"
                                             for k, v in timings.items()))
    story = str(result.get("story") or "")
    lines.append("story:")
    lines += ["  " + display_text(ln, 400) for ln in story.splitlines() or [""]]
    return "\n".join(lines)
