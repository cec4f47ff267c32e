"""Which adb servers to talk to, and how to start a local one.

Why apart from `Device`: the address rules ($ADB_SERVER_SOCKET, $ANDROID_ADB_SERVER_PORT,
`HOST:PORT` on the command line) and the adb binary lookup are configuration, used by the
inventory and the CLI before any device exists. adbutils provides the adb binary
(`adbutils.adb_path()`) when none is on PATH.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from adbflow.errors import AdbError

DEFAULT_PORT = 5037


@dataclass(frozen=True)
class AdbServer:
    """An adb server (the thing on :5037), local or on another host."""
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT

    @classmethod
    def parse(cls, text: str) -> AdbServer:
        """`HOST:PORT`, `PORT` or `HOST` (also `tcp:HOST:PORT` as in $ADB_SERVER_SOCKET)."""
        t = text.strip()
        if t.startswith("tcp:"):
            t = t[4:]
        if not t:
            raise AdbError(None, f"--adb-server {text!r}", message="empty adb server address",
                           hint="use HOST:PORT, PORT or HOST")
        if t.isdigit():
            return cls(port=_port(t, text))
        if t.startswith("[") and "]" in t:          # [::1]:5037
            host, _, rest = t[1:].partition("]")
            return cls(host=host, port=_port(rest.lstrip(":"), text) if rest else DEFAULT_PORT)
        if t.count(":") == 1:
            host, port = t.split(":")
            return cls(host=host or "127.0.0.1", port=_port(port, text))
        return cls(host=t)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_local(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1")


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise AdbError(None, f"--adb-server {whole!r}", message=f"bad port {text!r}",
                       hint="use HOST:PORT with a port between 1 and 65535")
    return int(text)


def resolve_servers(values: list[str] | None) -> list[AdbServer]:
    """The servers to read devices from, duplicates removed, order kept.

    Default: $ADB_SERVER_SOCKET (tcp:HOST:PORT), else 127.0.0.1:$ANDROID_ADB_SERVER_PORT, else :5037.
    """
    if values:
        servers = [AdbServer.parse(v) for v in values]
    elif os.environ.get("ADB_SERVER_SOCKET", "").startswith("tcp:"):
        servers = [AdbServer.parse(os.environ["ADB_SERVER_SOCKET"])]
    else:
        env_port = os.environ.get("ANDROID_ADB_SERVER_PORT", "").strip()
        servers = [AdbServer(port=_port(env_port, env_port) if env_port else DEFAULT_PORT)]
    return list(dict.fromkeys(servers))


def adb_binary() -> str:
    """$ADBFLOW_ADB, else `adb` on PATH, else the adb shipped in the adbutils wheel."""
    env = os.environ.get("ADBFLOW_ADB")
    if env:
        return env
    found = shutil.which("adb")
    if found:
        return found
    import adbutils
    return adbutils.adb_path()


def start_local_server(server: AdbServer, *, timeout: float = 15.0) -> bool:
    """Start an adb server on a local port (as `adb` itself does on first use)."""
    if not server.is_local:
        return False
    try:
        subprocess.run([adb_binary(), "-P", str(server.port), "start-server"], timeout=timeout,
                       capture_output=True, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return True
