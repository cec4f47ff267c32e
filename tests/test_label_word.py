"""The result record's label word has two implementations, one per side of the claim: the
laptop's `adbflow.runtime.claims.label_word` and the mesh's `_label_word` in
device_scripts/mesh/orch.sh (the phone's shell writes the record of a picture the mesh
processed; a laptop reads it as `done elsewhere`). They must give the same word for the
same label, so this runs the shell function itself, cut out of orch.sh, under mksh (the
phone's /system/bin/sh) on every ImageNet label and on hostile ones."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from adbflow.paths import ASSETS_DIR, DEVICE_SCRIPTS_DIR
from adbflow.runtime.claims import label_word

MKSH = shutil.which("mksh") or "/usr/bin/mksh"

HOSTILE = [
    "", "   ", "___", "Egyptian cat", "  Egyptian   cat  ", "$(touch pwned)", "`id`",
    "<script>alert(1)</script>", "a,b=c", "crème brûlée", "İstanbul", "日本語のラベル",
    "tab\tseparated", "-leading-dash", "x" * 80, "_" * 39 + "ab", "a" * 39 + "_b",
    "*", "?", "[a-z]", "back\\slash", "quote'and\"double", "pct %s %n",
]


def _shell_function() -> str:
    """`_label_word() { ... }` as orch.sh defines it: from its first line to the first line
    that ends with `; }`."""
    text = (DEVICE_SCRIPTS_DIR / "mesh" / "orch.sh").read_text()
    m = re.search(r"^_label_word\(\) \{.*?; \}$", text, re.S | re.M)
    assert m, "orch.sh no longer defines _label_word"
    return m.group(0)


def _shell_words(labels: list[str], utf8: bool) -> list[str]:
    """Each label through the shell function; labels arrive as data on stdin, one a line."""
    script = (("set -U\n" if utf8 else "set +U\n") + _shell_function()
              + '\nwhile IFS= read -r l; do _label_word "$l"; done\n')
    out = subprocess.run([MKSH, "-c", script], input="\n".join(labels) + "\n",
                         capture_output=True, text=True, timeout=60, check=True,
                         encoding="utf-8")
    return out.stdout.split("\n")[:len(labels)]


@pytest.mark.skipif(not shutil.which(MKSH), reason="needs mksh (make test installs it)")
@pytest.mark.parametrize("utf8", [True, False], ids=["utf8-mode", "byte-mode"])
def test_the_mesh_and_the_laptop_reduce_every_label_to_the_same_word(utf8: bool) -> None:
    labels = (ASSETS_DIR / "imagenet_labels_1000.txt").read_text().splitlines() + HOSTILE
    got = _shell_words(labels, utf8)
    want = [label_word(lb) for lb in labels]
    differ = [(lb, g, w) for lb, g, w in zip(labels, got, want, strict=True) if g != w]
    assert not differ, differ[:10]
    assert all(re.fullmatch(r"[a-z0-9_]{1,40}|-", w) for w in want)


def test_label_word_examples() -> None:
    assert label_word("Egyptian cat") == "egyptian_cat"
    assert label_word("tabby, tabby cat") == "tabby_tabby_cat"
    assert label_word("$(touch pwned)") == "touch_pwned"
    assert label_word("crème brûlée") == "cr_me_br_l_e"
    assert label_word("") == "-" and label_word(None) == "-"
