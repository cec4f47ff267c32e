"""Flows from TOML: shipped ones in profiles/flows/*.toml, user flows by path.

Why a hand-written reader instead of a schema library: every key is checked against the
dataclass it fills, so a typo (`tua = 0.5`) is an error naming `stages[1].gate.tua`, and a
syntax error keeps tomllib's line and column. Label sets for filter gates are files of
ImageNet class indices (profiles/flows/labels/NAME.txt, `#` comments, `a-b` ranges).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from adbflow.errors import FlowError
from adbflow.flows.model import (
    Drift,
    Flow,
    Gate,
    GateKind,
    Locality,
    ModelAsk,
    OnMiss,
    Placement,
    Run,
    Stage,
)
from adbflow.paths import PROFILES_DIR

FLOWS_DIR = PROFILES_DIR / "flows"
LABELS_DIR = FLOWS_DIR / "labels"


def shipped() -> dict[str, Path]:
    """Shipped flow name -> file."""
    return {p.stem: p for p in sorted(FLOWS_DIR.glob("*.toml"))}


def resolve(name_or_path: str) -> Path:
    """A shipped flow's file by name, or a user flow's path."""
    files = shipped()
    if name_or_path in files:
        return files[name_or_path]
    p = Path(name_or_path).expanduser()
    if p.suffix == ".toml" or "/" in name_or_path:
        if not p.is_file():
            raise FlowError(f"{p}: no such flow file")
        return p
    raise FlowError(f"unknown flow {name_or_path!r}",
                    hint=f"shipped flows: {', '.join(files) or 'none'}; or pass a .toml path")


def load(name_or_path: str) -> Flow:
    path = resolve(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise FlowError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FlowError(f"{path}: cannot read: {exc}") from None
    return from_dict(data, source=str(path))


def read_label_set(name: str, *, where: str, src: str) -> tuple[int, ...]:
    """Class indices from profiles/flows/labels/NAME.txt (only names of shipped sets)."""
    if not name.replace("-", "").replace("_", "").isalnum():
        raise FlowError(f"{src}: {where}: label set {name!r} is not a name")
    path = LABELS_DIR / f"{name}.txt"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(LABELS_DIR.glob("*.txt")))
        raise FlowError(f"{src}: {where}: unknown label set {name!r}", hint=f"known: {known}")
    out: set[int] = set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            lo, _, hi = text.partition("-")
            out.update(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            raise FlowError(f"{path}:{n}: expected a class index or a range a-b") from None
    return tuple(sorted(out))


class _Table:
    """A TOML table being read: takes keys by type, then complains about leftovers."""

    def __init__(self, data: Any, where: str, src: str) -> None:
        if not isinstance(data, dict):
            raise FlowError(f"{src}: {where}: expected a table")
        self.data, self.where, self.src = data, where, src
        self.used: set[str] = set()

    def _path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        self.used.add(key)
        if key not in self.data:
            return default
        val = self.data[key]
        if isinstance(val, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise FlowError(f"{self.src}: {self._path(key)}: expected {_kind(kind)}, got {val!r}")
        if not isinstance(val, kind):
            raise FlowError(f"{self.src}: {self._path(key)}: expected {_kind(kind)}, got {val!r}")
        return float(val) if kind == (int, float) and isinstance(val, (int, float)) else val

    def enum(self, key: str, cls: Any, default: Any) -> Any:
        val = self.get(key, str)
        if val is None:
            return default
        try:
            return cls(val)
        except ValueError:
            raise FlowError(f"{self.src}: {self._path(key)}: {val!r} is not one of "
                            f"{', '.join(m.value for m in cls)}") from None

    def sub(self, key: str) -> _Table | None:
        self.used.add(key)
        if key not in self.data:
            return None
        return _Table(self.data[key], self._path(key), self.src)

    def done(self) -> None:
        extra = set(self.data) - self.used
        if extra:
            raise FlowError(f"{self.src}: {self._path(sorted(extra)[0])}: unknown key",
                            hint=f"allowed here: {', '.join(sorted(self.used))}")


def _kind(kind: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", list: "a list",
             dict: "a table", bool: "true/false"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


NUM = (int, float)


def from_dict(data: dict[str, Any], *, source: str | None = None) -> Flow:
    """A validated Flow from parsed TOML (or any dict of the same shape)."""
    src = source or "<flow>"
    top = _Table(data, "", src)
    name = top.get("name", str) or (Path(source).stem if source else "")
    description = top.get("description", str, "")
    raw = top.get("stages", list, [])
    stages = tuple(_stage(st, f"stages[{i}]", src) for i, st in enumerate(raw))
    drift = None
    dt = top.sub("drift")
    if dt is not None:
        drift = Drift(on=dt.get("on", str, ""), window=dt.get("window", int, 20),
                      level=dt.get("level", NUM, 0.5), switch=dt.get("switch", bool, True))
        dt.done()
    top.done()
    return Flow(name=name, stages=stages, description=description, drift=drift,
                source=source).validate()


def _stage(data: Any, where: str, src: str) -> Stage:
    t = _Table(data, where, src)
    name = t.get("name", str, "")
    run = t.enum("run", Run, None)
    if run is None:
        raise FlowError(f"{src}: {where}.run: missing (classify or story)")
    default_input = "picture" if run is Run.CLASSIFY else "classification"
    inp = t.get("input", str, default_input)
    model = ModelAsk()
    mt = t.sub("model")
    if mt is not None:
        model = ModelAsk(type=mt.get("type", str, "image_classifier"),
                         min_accuracy=mt.get("min_accuracy", NUM, 0.0),
                         name=mt.get("name", str))
        mt.done()
    placement = Placement()
    pt = t.sub("placement")
    if pt is not None:
        prefer, strict = pt.get("prefer", str), pt.get("strict", str)
        for key, val in (("prefer", prefer), ("strict", strict)):
            if val is not None and val != "origin":
                raise FlowError(f"{src}: {where}.placement.{key}: only \"origin\" is known")
        locality = Locality.STRICT_ORIGIN if strict else (
            Locality.PREFER_ORIGIN if prefer else Locality.ANY)
        placement = Placement(locality=locality, deadline_s=pt.get("deadline_s", NUM),
                              on_miss=pt.enum("on_miss", OnMiss, OnMiss.FASTEST),
                              min_cores=pt.get("min_cores", int, 0),
                              min_ram_mb=pt.get("min_ram_mb", int, 0),
                              abi=pt.get("abi", str))
        pt.done()
    gate = None
    gt = t.sub("gate")
    if gt is not None:
        kind = gt.enum("kind", GateKind, None)
        if kind is None:
            raise FlowError(f"{src}: {where}.gate.kind: missing (escalate, filter, confident)")
        labels_val = gt.get("labels", (str, list))
        labels: tuple[int, ...] = ()
        label_set = None
        if isinstance(labels_val, str):
            label_set = labels_val
            labels = read_label_set(labels_val, where=f"{where}.gate.labels", src=src)
        elif isinstance(labels_val, list):
            if not all(isinstance(x, int) and not isinstance(x, bool) for x in labels_val):
                raise FlowError(f"{src}: {where}.gate.labels: expected class indices")
            labels = tuple(sorted(set(labels_val)))
        gate = Gate(kind=kind, on=gt.get("on", str, "classification"),
                    tau=gt.get("tau", NUM, 0.0), margin=gt.get("margin", NUM, 0.0),
                    labels=labels, label_set=label_set,
                    min_confidence=gt.get("min_confidence", NUM, 0.0))
        gt.done()
    t.done()
    return Stage(name=name, run=run, input=inp, model=model, placement=placement, gate=gate)


def describe(flow: Flow) -> str:
    """`adbflow flows show`: one line per stage with its model ask, placement and gate."""
    lines = [f"flow {flow.name}" + (f" ({flow.source})" if flow.source else ""),
             f"  {flow.description}" if flow.description else ""]
    for i, st in enumerate(flow.stages):
        bits = [f"{i}. {st.name}: {st.run.value} <- {st.input}"]
        if st.run is Run.CLASSIFY:
            m = st.model
            bits.append(f"model {m.name or m.type}" + (f" acc>={m.min_accuracy:g}"
                                                        if m.min_accuracy else ""))
        p = st.placement
        if p.locality.value != "any":
            bits.append(p.locality.value)
        if p.deadline_s is not None:
            bits.append(f"deadline {p.deadline_s:g}s (miss: {p.on_miss.value})")
        g = st.gate
        if g is not None:
            if g.kind is GateKind.ESCALATE:
                bits.append(f"when {g.on} top-1 < {g.tau:g}" +
                            (f" or margin < {g.margin:g}" if g.margin else ""))
            elif g.kind is GateKind.FILTER:
                bits.append(f"when {g.on} label in {g.label_set or list(g.labels)}")
            else:
                bits.append(f"when {g.on} top-1 >= {g.min_confidence:g}")
        lines.append("  " + "; ".join(bits))
    if flow.drift:
        d = flow.drift
        lines.append(f"  drift: {d.on} mean top-1 over {d.window} < {d.level:g}"
                     + (" -> escalate" if d.switch else " -> event only"))
    return "\n".join(x for x in lines if x)
