"""The fleet runs the adbflow it was started from, whatever the current directory holds.

Why: `python -m adbflow.fleet.host` puts the current directory first on sys.path, and the
device programs found adbflow only through site-packages; starting the fleet from inside
another adbflow checkout (or with adbflow installed editable from another tree) made every
device program fail with `No module named 'adbflow'`. Here the current directory holds a
decoy `adbflow/` package that raises on import, and the device's working directory holds
one too: the fleet must come up and `label_image` must classify a real picture.
"""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from adbflow.device import AdbServer, Device
from adbflow.fleet.interpreter import BOOTSTRAP, module_argv, package_root
from adbflow.parsers.label_image import parse_label_image
from adbflow.paths import ASSETS_DIR, PACKAGE_DIR

DECOY = 'raise ImportError("decoy adbflow imported from the current directory")\n'
LABEL_IMAGE = ["/data/local/tmp/label_image", "-m", "/data/local/tmp/efficientnet_lite0.tflite",
               "-l", "/data/local/tmp/labels.txt", "-i", "/data/local/tmp/decoy-test.bmp"]


def _decoy(root: Path) -> Path:
    (root / "adbflow" / "fleet").mkdir(parents=True)
    for init in (root / "adbflow" / "__init__.py", root / "adbflow" / "fleet" / "__init__.py"):
        init.write_text(DECOY)
    return root


def test_module_argv_names_the_imported_package() -> None:
    argv = module_argv("adbflow.fleet.host", python="/py", flags=("-I",))
    assert argv == ["/py", "-I", "-c", BOOTSTRAP, str(PACKAGE_DIR.parent), "-m",
                    "adbflow.fleet.host"]
    assert Path(package_root(), "adbflow", "paths.py").is_file()


def test_bootstrap_ignores_a_decoy_in_the_cwd(tmp_path: Path) -> None:
    """The host-side spawn, without a fleet: plain `-m` imports the decoy, ours does not."""
    _decoy(tmp_path)
    env = {"PATH": "/usr/bin:/bin"}
    plain = subprocess.run([sys.executable, "-m", "adbflow.fleet.host", "--help"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=60)
    assert "decoy adbflow" in plain.stderr          # the hazard is real
    ours = subprocess.run([*module_argv("adbflow.fleet.host"), "--help"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)
    assert ours.returncode == 0 and "usage: python -m adbflow.fleet.host" in ours.stdout, \
        ours.stderr


@pytest.mark.fleet
def test_fleet_started_beside_a_decoy_package_runs_label_image(tmp_path: Path, monkeypatch,
                                                                fleet_factory) -> None:
    monkeypatch.chdir(_decoy(tmp_path / "cwd"))
    fleet = fleet_factory(devices=1, profiles=["midrange_2023"], timeout=120)
    try:
        dev = Device(fleet.serials[0], AdbServer(port=fleet.adb_port))
        bmp = tmp_path / "chelsea.bmp"
        Image.open(ASSETS_DIR / "chelsea.png").convert("RGB").resize((224, 224)).save(bmp, "BMP")
        dev.push(bmp, LABEL_IMAGE[-1], timeout=30)
        for rel in ("adbflow/__init__.py", "adbflow/fleet/__init__.py"):
            dev.run(["mkdir", "-p", f"/data/local/tmp/{rel.rsplit('/', 1)[0]}"], timeout=10)
            dev.push(tmp_path / "cwd" / rel, f"/data/local/tmp/{rel}", timeout=10)
        res = dev.shell("cd /data/local/tmp && " + shlex.join(LABEL_IMAGE), timeout=120,
                        check=False)
        assert res.exit_code == 0, (res.stdout, res.stderr)
        labels = parse_label_image(res.stdout + "\n" + res.stderr).labels
        assert any(w in labels[0].name.lower() for w in ("cat", "lynx", "tabby")), labels[:3]
    finally:
        fleet_factory.release(fleet)
