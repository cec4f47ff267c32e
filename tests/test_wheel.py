"""`pip install` of the wheel (not editable) gives an adbflow that bids.

Why: device_scripts/probe.sh and profiles/*.toml live at the top of the repository; a
wheel that lacked them installed an adbflow that could not bid at all. This builds the
wheel from a copy of the sources, installs it into a fresh venv outside the checkout
(`--system-site-packages` only to reuse the installed dependencies; the wheel itself with
`--no-deps --force-reinstall`), and runs `adbflow bid --once --json` from a directory
outside the checkout against a virtual fleet, with no PYTHONPATH pointing at the sources.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from adbflow.paths import REPO_DIR

pytestmark = pytest.mark.fleet

SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "adbflow",
           "device_scripts", "profiles")


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=kw.pop("timeout", 300),
                          **kw)


def _clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "ANDROID_SERIAL", "VIRTUAL_ENV", "PYTHONHOME")}
    env["ADBFLOW_HOME"] = str(home)
    return env


def _build_wheel(tmp: Path) -> Path:
    """The wheel built from a copy of the sources; skip when this machine cannot build one."""
    if not (REPO_DIR / "setup.py").is_file():
        pytest.skip("not a source checkout (no setup.py next to the package)")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        p = REPO_DIR / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns(
                "__pycache__", "*.pyc", "_data", "*.egg-info"))
        else:
            shutil.copy2(p, src / name)
    dist = tmp / "dist"
    argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)]
    offline = importlib.util.find_spec("wheel") is not None
    if offline:                      # setuptools + wheel installed: no network needed
        argv.insert(4, "--no-build-isolation")
    proc = _run(argv, timeout=600)
    wheels = sorted(dist.glob("adbflow-*.whl"))
    if proc.returncode != 0 or not wheels:
        pytest.skip("cannot build a wheel here (pip wheel "
                    + ("offline" if offline else "needs setuptools/wheel from PyPI") + "): "
                    + (proc.stderr or proc.stdout).strip()[-400:])
    return wheels[0]


def _see_current_dependencies(py: Path) -> None:
    """When the tests run inside a venv (`make test` uses .venv), `--system-site-packages`
    shows the *base* interpreter's packages, which on a fresh machine lack adbflow's
    dependencies. A path-only .pth line makes this environment's site-packages visible
    after the new venv's own (so the wheel's adbflow still wins, and this environment's
    editable-install finder, a .pth of its own, is not loaded)."""
    if sys.prefix == sys.base_prefix:
        return
    import sysconfig
    dirs = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    site = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    Path(site.stdout.strip(), "_adbflow_test_deps.pth").write_text("\n".join(sorted(dirs)) + "\n")


def test_wheel_install_bids_from_outside_the_checkout(tmp_path: Path, fleet_factory) -> None:
    wheel = _build_wheel(tmp_path)
    venv = tmp_path / "venv"
    proc = _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)])
    py = venv / "bin" / "python"
    if proc.returncode != 0 or not py.exists():
        pytest.skip(f"cannot create a venv here: {proc.stderr.strip()[-300:]}")
    _see_current_dependencies(py)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = _clean_env(tmp_path / "home")
    proc = _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall",
                 "--no-index", str(wheel)], cwd=outside, env=env)
    assert proc.returncode == 0, proc.stderr

    # the venv's adbflow is the wheel's, and its data comes from inside the package
    proc = _run([str(py), "-c", "import adbflow.paths as p, json; print(json.dumps("
                 "[str(p.PACKAGE_DIR), str(p.DEVICE_SCRIPTS_DIR), str(p.PROFILES_DIR)]))"],
                cwd=outside, env=env)
    assert proc.returncode == 0, proc.stderr
    pkg, scripts, profiles = (Path(x) for x in json.loads(proc.stdout))
    assert venv in pkg.parents and REPO_DIR not in pkg.parents, pkg
    assert scripts == pkg / "_data" / "device_scripts" and (scripts / "probe.sh").is_file()
    assert (profiles / "default.toml").is_file() and (profiles / "virtual").is_dir()
    proc = _run([str(py), "-c", "from adbflow.scheduling.profiles import ProfileBook; "
                 "print(len(ProfileBook.load().profiles))"], cwd=outside, env=env)
    assert proc.returncode == 0 and int(proc.stdout) >= 2, proc.stderr

    fleet = fleet_factory(devices=2, profiles=["midrange_2023", "lowend_2020"], timeout=120)
    try:
        proc = _run([str(venv / "bin" / "adbflow"), "bid", "--once", "--json", "--adb-server",
                     f"127.0.0.1:{fleet.adb_port}"], cwd=outside, env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        bids = {b["serial"]: b for b in doc["bids"]}
        assert set(bids) == set(fleet.serials)
        assert all(b["ok"] and b["error"] is None for b in bids.values()), bids
        assert doc["winner"] in fleet.serials
    finally:
        fleet_factory.release(fleet)
