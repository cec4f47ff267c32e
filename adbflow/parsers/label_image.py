"""Parse the output of TFLite's `label_image` example into scored labels.

Why a tolerant line parser: label_image has printed three formats over the years (no prefix
with trailing spaces in 2017-2019, `INFO: ` prefix since 2020, runtime/delegate chatter in
between, `adb push` summaries when captured from scripts). The result lines keep one shape,
`CONFIDENCE: INDEX LABEL`, which is what we anchor on. Device output is untrusted: label
text is cleaned of control characters and bounded in length.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from adbflow.errors import ParseError
from adbflow.parsers.numbers import finite_float
from adbflow.parsers.text import CONTROL as _CONTROL

KIND = "label_image"
MAX_LABEL_CHARS = 200

# Optional severity prefix (era 2) and optional journalctl-like noise are stripped first.
_PREFIX = re.compile(r"^\s*(?:(INFO|ERROR|WARN|WARNING|VERBOSE|FATAL)\s*:\s?)?")
_RESULT = re.compile(r"^([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?):\s+(\d{1,6})\s+(\S.*?)\s*$")
_AVG = re.compile(r"^average time:\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*ms\b")
_LOADED = re.compile(r"^Loaded model\s+(\S.*?)\s*$")
_DELEGATE = re.compile(r"^Applied (.+?) delegate\.")


@dataclass(frozen=True)
class Label:
    """One classification result: softmax confidence, class index, human label."""

    score: float
    index: int
    name: str

    def to_json(self) -> dict:
        return {"score": self.score, "index": self.index, "name": self.name}


@dataclass
class LabelImageResult:
    labels: list[Label]
    avg_ms: float | None = None
    model: str | None = None
    delegates: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"labels": [lb.to_json() for lb in self.labels], "avg_ms": self.avg_ms,
                "model": self.model, "delegates": list(self.delegates),
                "errors": list(self.errors)}


def clean_text(text: str, limit: int = MAX_LABEL_CHARS) -> str:
    """Device text made safe to show and to put in a prompt: no control characters, bounded."""
    return _CONTROL.sub(" ", text).strip()[:limit]


def _label_name(index: int, raw: str) -> str:
    # "0:background"-style label files repeat the index: `653 653:military uniform`.
    m = re.match(r"^(\d+):(.*)$", raw)
    if m and int(m.group(1)) == index:
        raw = m.group(2)
    return clean_text(raw)


def parse_label_image(text: str) -> LabelImageResult:
    """Scored labels (best first, as printed) plus average invoke time.

    Raises ParseError when no result line is present (help text, a crash, a truncated
    capture, profiling-only output): the message carries label_image's own ERROR line
    when there is one, because that is what the user must fix.
    """
    if not isinstance(text, str):
        raise ParseError(KIND, f"expected text, got {type(text).__name__}", repr(text)[:300])
    labels: list[Label] = []
    result = LabelImageResult(labels=labels)
    for raw_line in text.splitlines():
        line = raw_line.replace("\r", "")
        pm = _PREFIX.match(line)
        severity = pm.group(1) if pm else None
        body = line[pm.end():] if pm else line
        body = body.strip()
        if not body:
            continue
        if severity in ("ERROR", "FATAL") or body.startswith("Failed to"):
            result.errors.append(clean_text(body))
            continue
        m = _RESULT.match(body)
        if m:
            score = finite_float(m.group(1))
            if score is None or score < 0.0 or score > 1.0:
                continue
            name = _label_name(int(m.group(2)), m.group(3))
            if name:
                labels.append(Label(score=score, index=int(m.group(2)), name=name))
            continue
        m = _AVG.match(body)
        if m:
            avg = finite_float(m.group(1))
            result.avg_ms = avg if avg is not None and avg >= 0 else None
            continue
        m = _LOADED.match(body)
        if m:
            result.model = clean_text(m.group(1))
            continue
        m = _DELEGATE.match(body)
        if m:
            result.delegates.append(clean_text(m.group(1), 40))
    if not labels:
        if result.errors:
            detail = f"label_image reported an error: {result.errors[-1]}"
        elif "invalid option" in text or "--tflite_model" in text:
            detail = "got label_image's usage text instead of results (bad arguments?)"
        elif result.avg_ms is not None:
            detail = "no `SCORE: INDEX LABEL` result lines after `average time` (truncated output?)"
        else:
            detail = "no `SCORE: INDEX LABEL` result lines (not label_image output?)"
        raise ParseError(KIND, detail, text)
    return result
