"""`getprop` listing (`[key]: [value]` lines) -> dict. Indented or truncated pastes are fine."""
from __future__ import annotations

import re

from adbflow.errors import ParseError

_LINE = re.compile(r"^\s*\[([^\[\]]+)\]:\s*\[(.*)\]\s*$")


def parse_getprop(text: str) -> dict[str, str]:
    props: dict[str, str] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            props[m[1]] = m[2]
    if not props:
        raise ParseError("getprop", "no `[key]: [value]` line", text)
    return props
