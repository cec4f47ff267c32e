"""How the fleet starts Python: the *imported* adbflow, whatever the current directory holds.

Why: `python -m adbflow.fleet.host` puts the current directory first on sys.path, so
starting the fleet from inside another adbflow checkout ran that checkout's code; and the
device programs found adbflow only through site-packages (an editable install's finder
points at a tree the device does not see), so they failed with `No module named
'adbflow'`. Here every fleet-spawned interpreter gets the directory that holds the adbflow
package this process imported, first on sys.path, and the current directory removed; the
module is then run as `-m` would run it (runpy, `__name__ == "__main__"`).
"""
from __future__ import annotations

import os
import sys

from adbflow.paths import PACKAGE_DIR

# argv after `-c`: ROOT -m MODULE ARGS... (`-m MODULE` stays readable in ps and in the
# fleet's dumpsys cpuinfo, which names a stand-in program by it); drops '' (the current
# directory) from sys.path and puts ROOT first.
BOOTSTRAP = ("import runpy, sys; root = sys.argv.pop(1); del sys.argv[1]; "
             "mod = sys.argv.pop(1); "
             "sys.path[:] = [root] + [p for p in sys.path if p not in (\"\", root)]; "
             "runpy.run_module(mod, run_name=\"__main__\", alter_sys=True)")


def package_root() -> str:
    """The directory containing the imported `adbflow` package (a checkout or site-packages)."""
    return str(PACKAGE_DIR.parent)      # PACKAGE_DIR: where this very adbflow was imported from


def module_argv(module: str, *, python: str | None = None,
                flags: tuple[str, ...] = ()) -> list[str]:
    """argv running `python [flags] -m module` from the imported adbflow's directory."""
    return [python or os.path.abspath(sys.executable), *flags, "-c", BOOTSTRAP,
            package_root(), "-m", module]
