"""The models and pictures copied from ../shared are the ones whose sha256 was recorded.

Why: the fleet's stand-in programs must run the real classifier; a truncated or swapped model
(git LFS pointer, bad copy) would make every classification test meaningless.
"""
from __future__ import annotations

import hashlib

import pytest

from adbflow.paths import ASSETS_DIR

SUMS = [line.split() for line in (ASSETS_DIR / "SHA256SUMS").read_text().splitlines() if line]


@pytest.mark.parametrize("digest,name", SUMS, ids=[name for _, name in SUMS])
def test_asset_sha256(digest: str, name: str) -> None:
    assert hashlib.sha256((ASSETS_DIR / name).read_bytes()).hexdigest() == digest


def test_labels_are_the_1000_imagenet_classes() -> None:
    labels = (ASSETS_DIR / "imagenet_labels_1000.txt").read_text().splitlines()
    assert len(labels) == 1000
    assert any("tabby" in line for line in labels)
