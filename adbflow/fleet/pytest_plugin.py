"""pytest fixtures for tests that need virtual devices behind a real adb server.

Why a private adb server per fleet: the developer's own adb server (port 5037) and its
phones must never see test devices, and parallel suites must not share a server. Each
fleet gets a free port, a tmp state dir, and on teardown both the fleet and that adb
server are stopped (`adb -P PORT kill-server`), so no process outlives the session.

Load with `pytest_plugins = ["adbflow.fleet.pytest_plugin"]` in tests/conftest.py.
Typical use (one fleet per test module keeps the suite fast):

    @pytest.fixture(scope="module")
    def fleet(fleet_factory):
        client = fleet_factory(devices=3)
        yield client
        fleet_factory.release(client)
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adbflow.fleet import adb_server
from adbflow.fleet.control import FleetClient, start_fleet


class FleetFactory:
    """Callable: FleetFactory(devices=3, profiles=None, backend=None, env=None) -> FleetClient."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self._live: list[tuple[FleetClient, int]] = []

    def __call__(self, devices: int = 3, profiles: list[str] | None = None, *,
                 backend: str | None = None, env: dict[str, str] | None = None,
                 timeout: float = 90.0, **kw: Any) -> FleetClient:
        adb_port = adb_server.free_port(15037, 16999)
        base_port = adb_server.free_port(20000, 29000)
        state: Path = self._tmp.mktemp("fleet")
        try:
            client = start_fleet(state, devices=devices, profiles=profiles, adb_port=adb_port,
                                 base_port=base_port, backend=backend, timeout=timeout, env=env,
                                 **kw)
        except Exception:
            adb_server.kill_server(adb_port)
            raise
        self._live.append((client, adb_port))
        return client

    def release(self, client: FleetClient) -> None:
        """Stop one fleet and its private adb server now (idempotent)."""
        for item in list(self._live):
            if item[0] is client:
                self._live.remove(item)
                try:
                    client.down()
                finally:
                    adb_server.kill_server(item[1])

    def release_all(self) -> None:
        for client, _port in list(self._live):
            self.release(client)


@pytest.fixture(scope="session")
def fleet_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetFactory]:
    factory = FleetFactory(tmp_path_factory)
    try:
        yield factory
    finally:
        factory.release_all()
