"""The one rule for device text that reaches a terminal, a prompt, the journal or a file.

Why one rule: labels, stories and file names all come from phones (untrusted). Control
characters (C0, DEL, C1) can move the cursor or rewrite a terminal line; the Unicode bidi
controls (U+202A-202E embeddings/overrides, U+2066-2069 isolates, and the marks U+200E,
U+200F, U+061C) make `gpj.exe` look like `exe.jpg` and reorder a story on screen. They
carry no meaning in a label or a story, so they are removed (or shown escaped).
"""
from __future__ import annotations

import re

BIDI = "\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c"
# every control; `keep_newlines` keeps \t and \n for multi-line text (stories)
CONTROL = re.compile(f"[\x00-\x1f\x7f-\x9f{BIDI}]")
CONTROL_KEEP_NEWLINES = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{BIDI}]")


def escape_controls(text: str) -> str:
    """Controls shown as \\xNN / \\uNNNN escapes (for one terminal line)."""
    def esc(m: re.Match[str]) -> str:
        c = ord(m.group())
        return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"
    return CONTROL.sub(esc, text)
