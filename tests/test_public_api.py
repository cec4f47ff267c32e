"""The public API is `adbflow.__all__`: every name resolves, importing it stays cheap, and the
library example uses nothing else (so the README's Python section is the whole contract)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import adbflow

REPO = Path(__file__).resolve().parents[1]


def test_every_public_name_resolves():
    for name in adbflow.__all__:
        assert getattr(adbflow, name) is not None, name


def test_unknown_name_is_an_attribute_error():
    try:
        adbflow.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")


def test_import_adbflow_loads_no_layer_until_used():
    code = ("import sys, adbflow; "
            "print(sorted(m for m in sys.modules if m.startswith('adbflow.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    assert out.strip() == "[]"


def test_library_example_uses_only_the_public_api():
    tree = ast.parse((REPO / "examples" / "library_example.py").read_text())
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("adbflow"):
            assert node.module == "adbflow", f"imports internal module {node.module}"
            used.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            assert not any(a.name.startswith("adbflow.") for a in node.names)
    assert used and used <= set(adbflow.__all__)
