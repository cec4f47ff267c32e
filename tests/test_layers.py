"""The import structure of adbflow/ and bench/: no import circles, and no layer imports one above it.

Why a test: the layers exist to be read in order (a newcomer finds the device boundary in
one package and the bid cost in one function); a single upward import makes a lower layer
depend on everything above it and the next change tangles them. The graph is read from the
source (ast), so imports inside functions and under TYPE_CHECKING count too: a lazy import
hides a circle, it does not remove it.

The rule, lowest first (a module may import its own layer and any layer below):

    0  adbflow.errors, adbflow.paths, adbflow.parsers   pure data and text rules
    1  adbflow.device       the adb boundary (server, wire, failures, Device, inventory, probe)
    2  adbflow.scheduling   bids, policies, profiles, service times, quarantine
       adbflow.flows        flow declarations (stages, gates, placement) and their TOML loader
    3  adbflow.runtime      pipeline, detection, journal, stages, imaging, story
       adbflow.split        split inference: cutting, the split cost model, its runner
    4  adbflow.sim          the simulator (reuses scheduling's cost model)
       adbflow (__init__)   the public API: may import layers 0-4, never cli or fleet
    5  adbflow.cli          commands; the only layer that may import adbflow.fleet and the
                            public API (`__version__`)

adbflow.fleet (the virtual devices) stands apart: it may import layer 0 (errors, paths,
parsers: the stand-in programs print and parse the real tools' formats) and nothing else
of adbflow, so the fake phones never share code with what they test. Only adbflow.cli,
bench/ and tests/ import it. bench/ may import anything (it measures the whole tool).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LAYERS = {"adbflow.errors": 0, "adbflow.paths": 0, "adbflow.parsers": 0,
          "adbflow.device": 1, "adbflow.scheduling": 2, "adbflow.flows": 2, "adbflow.runtime": 3,
          "adbflow.split": 3, "adbflow.sim": 4, "adbflow.mesh": 4, "adbflow.cli": 5}
FLEET = "adbflow.fleet"
FLEET_MAY_IMPORT = ("adbflow.errors", "adbflow.paths", "adbflow.parsers", FLEET)


def _modules() -> dict[str, Path]:
    """Module name -> file, for adbflow/ (dotted) and bench/ (`bench.NAME`)."""
    mods: dict[str, Path] = {}
    for path in sorted((ROOT / "adbflow").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    for path in sorted((ROOT / "bench").glob("*.py")):
        mods[f"bench.{path.stem}"] = path
    return mods


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    """The longest known module that `name` names (a from-import may name an attribute)."""
    while name:
        if name in mods:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    """Edges module -> modules it imports, limited to adbflow/ and bench/ modules."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:               # relative import
                    base = mod.split(".")
                    base = base[:len(base) - node.level + (1 if is_pkg else 0)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                targets = [f"{prefix}.{a.name}" for a in node.names] or [prefix]
            if mod.startswith("bench."):    # bench scripts import each other by bare name
                targets += [f"bench.{t}" for t in targets]
            for t in targets:
                dep = _resolve(t, mods)
                if dep and dep != mod:
                    graph[mod].add(dep)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def _layer_of(mod: str) -> str | None:
    for top in (*LAYERS, FLEET):
        if mod == top or mod.startswith(top + "."):
            return top
    return None


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in sorted(graph.items()):
        if mod.startswith("bench."):
            continue
        mine = _layer_of(mod)
        for dep in sorted(deps):
            theirs = _layer_of(dep)
            if mine == FLEET:
                if not dep.startswith(FLEET_MAY_IMPORT):
                    bad.append(f"{mod} -> {dep}: the fleet may import only errors/paths/parsers")
            elif theirs == FLEET:
                if mine != "adbflow.cli":
                    bad.append(f"{mod} -> {dep}: only adbflow.cli may import the fleet")
            elif mine is None:                # adbflow/__init__.py, the public API
                if theirs == "adbflow.cli":
                    bad.append(f"{mod} -> {dep}: the public API must not import the CLI")
            elif theirs is None:              # the package root (public API, __version__)
                if mine != "adbflow.cli":
                    bad.append(f"{mod} -> {dep}: only adbflow.cli may import the public API")
            elif LAYERS[theirs] > LAYERS[mine]:
                bad.append(f"{mod} -> {dep}: {mine} (layer {LAYERS[mine]}) imports "
                           f"{theirs} (layer {LAYERS[theirs]})")
    return bad


def test_the_graph_sees_known_imports() -> None:
    """The reader works: it finds imports written in the three styles the code uses."""
    graph = import_graph()
    assert "adbflow.device.device" in graph["adbflow.device.inventory"]       # from X import Y
    assert "adbflow.fleet.protocol" in graph["adbflow.fleet.transport"]       # from pkg import mod
    assert "bench.common" in graph["bench.transfer"]                          # bare bench name
    assert "adbflow.errors" in graph["adbflow.parsers.adb_messages"]


def test_no_import_cycles_in_adbflow_or_bench() -> None:
    assert import_cycles(import_graph()) == []


def test_cycle_finder_reports_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]


def test_no_module_imports_a_layer_above_it() -> None:
    assert layer_violations(import_graph()) == []


def test_layer_rule_catches_an_upward_import() -> None:
    graph = {"adbflow.device.device": {"adbflow.runtime.pipeline"},
             "adbflow.runtime.pipeline": set(),
             "adbflow.scheduling.bids": {"adbflow.fleet.control"},
             "adbflow.fleet.control": {"adbflow.device.device"}, }
    bad = layer_violations(graph)
    assert len(bad) == 3, bad
