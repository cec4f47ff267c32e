"""Numbers read from device output: one rule for every parser.

Why: device output is untrusted, and float() accepts what no device means: "1e309" and a
400-digit run both parse as inf, which would then reach a profile, a cost or a JSON dump.
Each parser decides what a bad number means in its format (skip it, None, ParseError); what
counts as bad is decided here.
"""
from __future__ import annotations

import math


def finite_float(text: str) -> float | None:
    """float(text) when that is a finite number; None when unparsable, infinite or nan."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
