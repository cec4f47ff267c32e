"""adbflow: share AI compute across Android devices, driven only over adb.

The public Python API is the names in `__all__` (documented in the README's "Using adbflow
from Python"); everything else is internal and may move. Names are loaded lazily (PEP 562),
so `import adbflow` stays cheap for the command line and the virtual devices' programs, and
the modules below may import `adbflow.__version__` without an import cycle.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "AdbServer": "adbflow.device",
    "Device": "adbflow.device",
    "DevicePort": "adbflow.device",
    "Inventory": "adbflow.device",
    "resolve_servers": "adbflow.device",
    "Bid": "adbflow.scheduling.bids",
    "Bidder": "adbflow.scheduling.bids",
    "Decision": "adbflow.scheduling.policy",
    "DeviceCost": "adbflow.scheduling.policy",
    "Policy": "adbflow.scheduling.policy",
    "Task": "adbflow.scheduling.policy",
    "exclusion": "adbflow.scheduling.policy",
    "get_policy": "adbflow.scheduling.policy",
    "prior_service_s": "adbflow.scheduling.policy",
    "ProfileBook": "adbflow.scheduling.profiles",
    "Journal": "adbflow.runtime.journal",
    "Pipeline": "adbflow.runtime.pipeline",
    "PipelineConfig": "adbflow.runtime.pipeline",
    "AdbflowError": "adbflow.errors",
    "AdbError": "adbflow.errors",
    "AdbTimeoutError": "adbflow.errors",
    "DeviceUnavailableError": "adbflow.errors",
    "ASSETS_DIR": "adbflow.paths",
    "PROFILES_DIR": "adbflow.paths",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from adbflow.device import AdbServer, Device, DevicePort, Inventory, resolve_servers
    from adbflow.errors import AdbError, AdbflowError, AdbTimeoutError, DeviceUnavailableError
    from adbflow.paths import ASSETS_DIR, PROFILES_DIR
    from adbflow.runtime.journal import Journal
    from adbflow.runtime.pipeline import Pipeline, PipelineConfig
    from adbflow.scheduling.bids import Bid, Bidder
    from adbflow.scheduling.policy import (
        Decision,
        DeviceCost,
        Policy,
        Task,
        exclusion,
        get_policy,
        prior_service_s,
    )
    from adbflow.scheduling.profiles import ProfileBook


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'adbflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
