"""NamespaceBackend: one virtual Android device = a root directory + a namespace holder.

Why: the adb transport (transport.py & co.) only needs "run this command in the device"
and "where is this device path on the host"; this class hides how that is done (a chroot
inside a private mount+pid namespace entered with nsenter, simulated /proc and /sys fed by
the load model, stand-in programs reading /vendor/etc/adbflow-virtual.json).
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import struct
import termios
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from adbflow.errors import FleetError
from adbflow.fleet import android, clock, rootfs
from adbflow.fleet.access import ShellAccess
from adbflow.fleet.faults import FaultState
from adbflow.fleet.framework import FrameworkServer
from adbflow.fleet.loadmodel import DeviceLoad, LoadTicker, contention_factor
from adbflow.fleet.mediastore import MediaStore
from adbflow.fleet.namespace import NamespaceHolder, die_with_parent
from adbflow.fleet.profile import VirtualProfile
from adbflow.fleet.spawn_client import DeviceProcess, SpawnerClient

log = logging.getLogger("adbflow.fleet.backend")

DEVICE_STATE_PATH = "/vendor/etc/adbflow-virtual.json"
SETPRIV = "/usr/bin/setpriv"  # util-linux, reachable through the device's /usr bind
_MAX_SYMLINKS = 40


class NamespaceBackend:
    """DeviceBackend (see backend_api.py) backed by a persistent Linux namespace.

    root_dir is the device root, normally rootfs.device_root(STATE_DIR, serial)
    (= STATE_DIR/devices/<safe-serial>/root); its parent also holds sim/ (the simulated
    procfs files). `faults` may be mutated or replaced by the host at any time: the
    device state file is rewritten within a second (or at once via update_faults()).
    """

    def __init__(self, serial: str, profile: VirtualProfile, root_dir: Path,
                 faults: FaultState | None = None) -> None:
        self.serial = serial
        self.profile = profile
        self.root_dir = Path(root_dir)
        self.faults = faults if faults is not None else FaultState()
        self._load_pct = 0.0
        self._holder = NamespaceHolder(self.root_dir, [], label=serial)
        self._model: DeviceLoad | None = None
        self._ticker: LoadTicker | None = None
        self._written_state: dict[str, Any] | None = None
        self._spawner: SpawnerClient | None = None
        self._framework: FrameworkServer | None = None
        self.access = ShellAccess(self, *rootfs.shell_creds(profile))
        self.mediastore = MediaStore(rootfs.sim_dir(self.root_dir))

    # ------------------------------------------------------------ identity
    def banner_props(self) -> dict[str, str]:
        """ro.product.name / ro.product.model / ro.product.device for the CNXN banner."""
        return self.profile.banner_props()

    def device_props(self) -> dict[str, str]:
        """Everything `getprop` shows on this device."""
        return self.profile.device_props(self.serial)

    @property
    def sdk(self) -> int:
        """API level: decides banner features, toybox, dumpsys, storage (android.py)."""
        return self.profile.sdk

    def adbd_features(self) -> tuple[str, ...]:
        """The `features=` of this device's CNXN banner (what its adbd version offers)."""
        return android.adbd_features(self.sdk)

    @property
    def runs_as_shell(self) -> bool:
        """Device commands run as uid 2000. Not in the unprivileged fallback: a user
        namespace that maps only root has no uid 2000 (commands then run as its root)."""
        return not self._holder.userns

    @property
    def storage_kind(self) -> str:
        """"overlay" when /storage/emulated/0 is a separate view of /data/media/0 (a
        rename on the lower directory raises no inotify event in the view), "bind" when
        overlayfs was unavailable (every change raises events)."""
        kind = self._holder.mount_type(rootfs.STORAGE)
        return "overlay" if kind == "overlay" else "bind"

    @property
    def holder_pid(self) -> int | None:
        """Host pid of the device's PID 1 (mksh), None when stopped."""
        return self._holder.pid if self._holder.alive() else None

    @property
    def running(self) -> bool:
        return self._holder.alive()

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Build/refresh the root, start the holder and the spawner, register with the
        load ticker.

        The root is built in a worker thread (file system work, ~0.1 s) so a fleet starts
        its devices in parallel; processes are started from the event loop thread because
        their parent-death signal is tied to the thread that created them."""
        if self.running:
            return
        binds = await asyncio.to_thread(self._build_root)
        self._holder = NamespaceHolder(self.root_dir, binds, label=self.serial,
                                       overlays=(rootfs.storage_overlay(self.root_dir),),
                                       rw_dirs=rootfs.RW_TOP_DIRS)
        if self._model is not None:
            self._model.close()
        self._model = DeviceLoad(self.profile, rootfs.sim_dir(self.root_dir),
                                 self.root_dir / "sys", self._device_proc_dir)
        self._model.set_load_pct = self._load_pct
        self._model.on_slow = self._check_state
        self._apply_battery()
        self._model.tick()
        self.write_state()
        await self._holder.start()
        await self._start_framework()
        await self._start_spawner()
        self._ticker = LoadTicker.for_running_loop()
        self._ticker.add(self._model)

    def _build_root(self) -> list:
        rootfs.build_root(self.root_dir, self.profile, self.serial, owners=self.runs_as_shell)
        return rootfs.device_binds(self.root_dir)

    async def _start_framework(self) -> None:
        """The device's system services (log ring, settings, activity state): framework.py.
        A fresh one per boot (the log is lost, settings persist next to the root)."""
        if self._framework is not None:
            await self._framework.stop()
        self._framework = FrameworkServer(
            self.serial, self.profile.banner_props()["ro.product.model"],
            self.root_dir.parent / "framework.json",
            battery_file=self.root_dir / "sys/class/power_supply/battery/capacity")
        try:
            await self._framework.start()
        except OSError as exc:  # another fleet owns the name: framework commands fail
            log.warning("[%s] framework services unavailable: %s", self.serial, exc)
            self._framework = None

    async def _start_spawner(self) -> None:
        """The device's resident command spawner (spawner.py); nsenter per command when it
        is disabled (ADBFLOW_FLEET_SPAWNER=0) or cannot start."""
        self._spawner = None
        if os.environ.get("ADBFLOW_FLEET_SPAWNER", "1") == "0":
            return
        try:
            creds = ""
            if self.runs_as_shell:
                from adbflow.fleet.spawner import encode_creds
                creds = encode_creds(*rootfs.shell_creds(self.profile))
            self._spawner = await SpawnerClient.start(self._holder.enter_argv([], fork=False),
                                                      self.serial, preexec_fn=die_with_parent,
                                                      creds=creds)
        except (FleetError, OSError) as exc:
            log.warning("%s; falling back to nsenter per command", exc)

    async def stop(self) -> None:
        """Kill every device process and the holder; keep the root on disk."""
        if self._ticker is not None and self._model is not None:
            self._ticker.remove(self._model)
        self._ticker = None
        spawner, self._spawner = self._spawner, None
        if spawner is not None:
            await spawner.close()
        framework, self._framework = self._framework, None
        if framework is not None:
            await framework.stop()
        await self._holder.stop()
        if self._model is not None:
            self._model.close()
            self._model = None

    def _device_proc_dir(self) -> Path | None:
        pid = self._holder.pid
        return Path(f"/proc/{pid}/root/proc") if pid else None

    # ------------------------------------------------------------ processes
    def device_env(self, env: dict[str, str] | None = None) -> dict[str, str]:
        """The environment adbd gives a shell, plus what the caller asks for (e.g. TERM)."""
        out = dict(rootfs.DEVICE_ENV)
        out["ANDROID_SERIAL"] = self.serial
        out.update(clock.clock_env(clock.skew_from_faults(self.faults)))  # injected RTC error
        if env:
            out.update({str(k): str(v) for k, v in env.items()})
        return out

    async def spawn(self, command: str | None, *, pty: bool, env: dict[str, str] | None = None,
                    merge_stderr: bool = False
                    ) -> tuple[asyncio.subprocess.Process | DeviceProcess, int | None]:
        """Run `command` with the device's /system/bin/sh -c (interactive sh when None).

        The child leads a new session/process group (killpg-able); with pty=True it also
        gets the pty slave as controlling terminal, like adbd's `shell,pty:` service.
        Normally the device's spawner starts it (a DeviceProcess: signal its group with
        killpg()); without a spawner nsenter does (an asyncio Process)."""
        if not self.running:
            raise FleetError(f"[{self.serial}] device is not running",
                             hint="restart it (`adbflow fleet ...`) or check the fleet log")
        argv = ["/system/bin/sh"] if command is None else ["/system/bin/sh", "-c", command]
        full_env = self.device_env(env)
        if command is None:
            full_env.setdefault("ENV", "/system/etc/mkshrc")
        if self._spawner is not None and self._spawner.alive:
            return self._spawn_resident(argv, full_env, pty, merge_stderr)
        if self.runs_as_shell:  # nsenter keeps root: drop to the shell user like adbd does
            uid, gid, groups = rootfs.shell_creds(self.profile)
            argv = [SETPRIV, f"--reuid={uid}", f"--regid={gid}",
                    "--groups=" + ",".join(map(str, groups)), "--", *argv]
        full = self._holder.enter_argv(argv)
        if not pty:
            proc = await asyncio.create_subprocess_exec(
                *full, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT if merge_stderr else asyncio.subprocess.PIPE,
                env=full_env, start_new_session=True, close_fds=True)
            return proc, None
        full_env.setdefault("TERM", "xterm-256color")
        with _child_pty() as (master, slave):
            proc = await asyncio.create_subprocess_exec(
                *full, stdin=slave, stdout=slave, stderr=slave, env=full_env,
                preexec_fn=_become_tty_session_leader, close_fds=True)
        return proc, master

    def _spawn_resident(self, argv: list[str], env: dict[str, str], pty: bool,
                        merge_stderr: bool = False) -> tuple[DeviceProcess, int | None]:
        assert self._spawner is not None
        if not pty:
            return self._spawner.spawn(argv, env, merge_stderr=merge_stderr), None
        env.setdefault("TERM", "xterm-256color")
        with _child_pty() as (master, slave):
            proc = self._spawner.spawn(argv, env, pty_slave=slave)
        return proc, master

    # ------------------------------------------------------------ files
    def _host_root(self) -> Path:
        """The root through the device's own mount namespace when running (binds visible)."""
        pid = self._holder.pid if self._holder.alive() else None
        return Path(f"/proc/{pid}/root") if pid else self.root_dir

    def device_realpath(self, device_path: str, *, follow_last: bool = True) -> str:
        """Canonical device path: symlinks resolved inside the device root, `..` clamped."""
        base = self._host_root()
        todo = [p for p in device_path.split("/") if p]
        stack: list[str] = []
        hops = 0
        while todo:
            comp = todo.pop(0)
            if comp == ".":
                continue
            if comp == "..":
                if stack:
                    stack.pop()
                continue
            cand = base.joinpath(*stack, comp)
            if (todo or follow_last) and cand.is_symlink():
                hops += 1
                if hops > _MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, "Too many levels of symbolic links", device_path)
                target = os.readlink(cand)
                if target.startswith("/"):
                    stack = []
                todo = [p for p in target.split("/") if p] + todo
                continue
            stack.append(comp)
        return "/" + "/".join(stack)

    def resolve(self, device_path: str, *, follow_last: bool = True) -> Path:
        """Host path for a device path, never escaping the device root (see DeviceBackend)."""
        real = self.device_realpath(device_path, follow_last=follow_last)
        return self._host_root().joinpath(real.lstrip("/")) if real != "/" else self._host_root()

    def on_file_written(self, device_path: str, host: Path) -> None:
        """The sync service finished writing `device_path` (see camera.index_pushed)."""
        from adbflow.fleet.camera import index_pushed
        try:
            index_pushed(self.mediastore, self.sdk, self.device_realpath(device_path), host)
        except (OSError, ValueError) as exc:  # indexing must never fail a push
            log.warning("[%s] MediaStore index of %r failed: %s", self.serial, device_path, exc)

    def writable(self, device_path: str) -> bool:
        """Whether the shell user could create `device_path` (sync push uses access)."""
        try:
            self.access.check_create(device_path)
        except OSError:
            return False
        return True

    # ------------------------------------------------------------ load & faults
    def set_load(self, percent: float) -> None:
        """Configured extra CPU load (0-100) on top of the profile's background load."""
        self._load_pct = max(0.0, min(100.0, float(percent)))
        if self._model is not None:
            self._model.set_load_pct = self._load_pct
        self.write_state()

    @property
    def load(self) -> float:
        return self._load_pct

    def update_faults(self, faults: FaultState | None = None) -> None:
        """Replace (or just re-publish) the fault switches; programs see them at next start."""
        if faults is not None:
            self.faults = faults
        clock.rebase(self.faults)
        self._apply_battery()
        self.write_state()

    def _apply_battery(self) -> None:
        if self._model is not None:
            quirks = frozenset(q.strip() for q in self.faults.battery_quirks.split(",") if q.strip())
            self._model.set_battery(usb_online=bool(self.faults.battery_usb), quirks=quirks)

    def state(self) -> dict[str, Any]:
        """What the stand-in programs read from /vendor/etc/adbflow-virtual.json."""
        p = self.profile
        other = min(100.0, p.background_load + self._load_pct)
        return {
            "serial": self.serial,
            "virtual": True,
            "profile": {"name": p.name, "ncores": p.ncores, "perf_cores": p.perf_cores,
                        "classify_ms": p.classify_ms,
                        "llm_tok_s": p.llm_tok_s, "llm_load_ms": p.llm_load_ms, "soc": p.soc,
                        "model_ms": p.model_ms()},
            "load": {"background_pct": p.background_load, "set_load_pct": self._load_pct,
                     "other_load_pct": other, "contention_factor": contention_factor(other)},
            "faults": self.faults.to_json(),
        }

    def write_state(self) -> None:
        """Rewrite the device state file (atomic rename inside the /vendor/etc directory)."""
        st = self.state()
        if st == self._written_state:
            return
        path = self.root_dir / DEVICE_STATE_PATH.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(st, indent=1, sort_keys=True))
        os.chmod(tmp, 0o444)
        os.replace(tmp, path)
        self._written_state = st

    def _check_state(self) -> None:
        """Called by the load ticker each second: pick up faults mutated in place."""
        if self.faults.to_json() != (self._written_state or {}).get("faults"):
            self._apply_battery()
            self.write_state()

    def status(self) -> dict[str, Any]:
        """Numbers for `fleet status` (cheap; no I/O)."""
        out: dict[str, Any] = {"serial": self.serial, "profile": self.profile.name,
                               "root": str(self.root_dir), "holder_pid": self.holder_pid,
                               "running": self.running, "set_load_pct": self._load_pct}
        if self._model is not None:
            out.update(self._model.snapshot())
        return out


@contextlib.contextmanager
def _child_pty() -> Iterator[tuple[int, int]]:
    """A pty pair for one child, sized 80x24 like adbd's before a window-size packet.

    The caller starts the child on the slave inside the block; the slave is closed after it
    (the child holds its own copy), the master is closed only if starting the child failed."""
    master, slave = os.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        yield master, slave
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)


def _become_tty_session_leader() -> None:  # runs in the child between fork and exec
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
