"""Where adbflow finds its repo-level data (device_scripts/, profiles/) and keeps its state.

Why: the layout keeps device scripts and profiles at the top of the repository (they are
read by people and by tools, not only by Python); adbflow is installed editable
(`pip install -e .`), so they are found next to the package.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
DEVICE_SCRIPTS_DIR = REPO_DIR / "device_scripts"
PROFILES_DIR = REPO_DIR / "profiles"
ASSETS_DIR = PACKAGE_DIR / "fleet" / "assets"


def data_home() -> Path:
    """The laptop-side data directory (journal, pulled pictures, fleet state).

    ADBFLOW_HOME wins; else $XDG_DATA_HOME/adbflow; else ~/.local/share/adbflow.
    """
    env = os.environ.get("ADBFLOW_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "adbflow"
