"""The few GGUF header fields the LLM layer split needs (architecture, block count).

Why our own reader: the split needs the number of transformer layers before it can give
each phone its share, and the `gguf` package is not a dependency; the header format is
small and stable (ggml docs/gguf.md: magic, version, tensor count, key/value count, then
typed key/value pairs). Only the first `max_kv` pairs are read and every length is
bounded, so a hostile or truncated file is a ParseError, never a huge allocation.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from adbflow.errors import ParseError

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
MAX_STRING = 1 << 20
MAX_ARRAY = 1 << 24


@dataclass(frozen=True)
class GgufInfo:
    architecture: str
    block_count: int
    file_bytes: int


def _read(fh: BinaryIO, n: int) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise ParseError("gguf", "truncated header", "")
    return data


def _string(fh: BinaryIO) -> str:
    (n,) = struct.unpack("<Q", _read(fh, 8))
    if n > MAX_STRING:
        raise ParseError("gguf", f"string of {n} bytes", "")
    return _read(fh, n).decode("utf-8", "replace")


def _value(fh: BinaryIO, kind: int, keep: bool) -> Any:
    if kind in _SCALARS:
        fmt = _SCALARS[kind]
        return struct.unpack(fmt, _read(fh, struct.calcsize(fmt)))[0]
    if kind == _STRING:
        return _string(fh)
    if kind == _ARRAY:
        item, n = struct.unpack("<IQ", _read(fh, 12))
        if n > MAX_ARRAY:
            raise ParseError("gguf", f"array of {n} items", "")
        if item in _SCALARS and not keep:       # skip fixed-size items at once
            fh.seek(n * struct.calcsize(_SCALARS[item]), 1)
            return None
        values = [_value(fh, item, keep) for _ in range(n)]
        return values if keep else None
    raise ParseError("gguf", f"unknown value type {kind}", "")


def read_gguf_info(path: Path, max_kv: int = 4096) -> GgufInfo:
    """Architecture and `<arch>.block_count` from a GGUF file's header."""
    with open(path, "rb") as fh:
        if _read(fh, 4) != b"GGUF":
            raise ParseError("gguf", f"{path.name} is not a GGUF file", "")
        (version,) = struct.unpack("<I", _read(fh, 4))
        if version < 2:
            raise ParseError("gguf", f"GGUF version {version} is not supported", "")
        _tensors, n_kv = struct.unpack("<QQ", _read(fh, 16))
        arch: str | None = None
        counts: dict[str, int] = {}
        for _ in range(min(n_kv, max_kv)):
            key = _string(fh)
            (kind,) = struct.unpack("<I", _read(fh, 4))
            val = _value(fh, kind, keep=kind != _ARRAY)
            if key == "general.architecture" and isinstance(val, str):
                arch = val
            elif key.endswith(".block_count") and isinstance(val, int):
                counts[key.rsplit(".", 1)[0]] = int(val)
            if arch is not None and arch in counts:
                return GgufInfo(arch, counts[arch], path.stat().st_size)
    raise ParseError("gguf", f"{path.name}: no general.architecture / block_count in the header", "")
