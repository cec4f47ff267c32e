"""Build hook: the top-level device_scripts/ and profiles/ ship inside the wheel as adbflow/_data/.

Why a hook and not a move: the folders stay at the top of the repository (the source of
truth, read by people, by the shell and by the fleet), but an installed wheel has no
repository. The copy is made at build time only; editable installs (`pip install -e .`)
read the folders in place. `adbflow.paths` is the one place that resolves either.
Metadata lives in pyproject.toml; this file only adds the command.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
DATA_DIRS = ("device_scripts", "profiles")


class BuildPyWithData(build_py):
    """build_py, plus DATA_DIRS copied into <build_lib>/adbflow/_data/."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for name in DATA_DIRS:
            dst = Path(self.build_lib) / "adbflow" / "_data" / name
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(HERE / name, dst,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.tmp"))


setup(cmdclass={"build_py": BuildPyWithData})
