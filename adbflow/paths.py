"""Where adbflow finds its data (device_scripts/, profiles/, fleet assets) and keeps its state.

Why this is the one place: device scripts and profiles live at the top of the repository
(read by people and by tools, not only by Python). A checkout or an editable install
(`pip install -e .`) reads them there; a wheel carries a copy made at build time (setup.py)
in the package as `adbflow/_data/`, read through importlib.resources. The packaged copy
wins when present, so an installed wheel never picks up some unrelated `profiles/` that
happens to sit next to it in site-packages.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent


def _data_dir(name: str) -> Path:
    """`adbflow/_data/<name>` of a wheel install, else the repository's top-level `<name>/`."""
    packaged = resources.files("adbflow").joinpath("_data").joinpath(name)
    if packaged.is_dir():
        return Path(str(packaged))
    return REPO_DIR / name


DEVICE_SCRIPTS_DIR = _data_dir("device_scripts")
PROFILES_DIR = _data_dir("profiles")
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
