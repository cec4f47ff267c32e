"""From labels to a prompt, and from a finished job to what the user reads.

Why separate: the prompt wording and the on-screen summary change for product reasons,
independently of how stages run; both are pure functions of journal data, so they are
tested without devices. Label names come from a device's output and are untrusted: they are
cleaned (no control characters, bounded) before they enter a prompt or a terminal.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

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


def build_prompt(labels: Sequence[Mapping[str, Any]]) -> str:
    """The llama prompt. Short on purpose: small on-device models follow short prompts best."""
    phrases = [f"{_article(p)} {p}" for p in prompt_labels(labels)]
    if not phrases:
        subject = "an ordinary photo"
    elif len(phrases) == 1:
        subject = f"a photo of {phrases[0]}"
    else:
        subject = f"a photo of {phrases[0]} (it could also be {' or '.join(phrases[1:])})"
    return (f"Write a short, cheerful story of three sentences about {subject}. "
            f"Story:")


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
