"""Fuzzing every parser of device output: only ParseError may escape, and whatever a parser
returns is well typed (every dataclass field matches its annotation, recursively).

Why here, on top of the per-parser fuzz tests (tests/test_parsers_*.py fuzz with plain
random text and check only the exception type): device output is untrusted, and the
dangerous inputs are *almost* valid ones — a real capture with a line duplicated, bytes
flipped, numbers replaced by huge/negative/NaN values, a line cut, garbage spliced in.
So the strategies here mutate the real captures in tests/fixtures, and the typed check
catches parsers that "succeed" with a str where an int belongs, NaN loads, or negative
sizes. Also covered here and nowhere else: adb's own messages (devices listing, transfer
summaries, version, error classification), the sectioned probe output (with forged
section markers), inotifyd event lines, thermalservice/thermal-zone and sysfs parsers.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Union

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adbflow.device.probe import ProbeReport, parse_probe_output
from adbflow.errors import ParseError
from adbflow.parsers.adb_messages import (
    AdbProblem,
    classify_adb_error,
    parse_adb_devices,
    parse_adb_version,
    parse_transfer_summaries,
)
from adbflow.parsers.battery import parse_dumpsys_battery
from adbflow.parsers.benchmark_model import parse_benchmark_model
from adbflow.parsers.cpuinfo import parse_dumpsys_cpuinfo
from adbflow.parsers.getprop import parse_getprop
from adbflow.parsers.label_image import parse_label_image
from adbflow.parsers.llama import parse_llama
from adbflow.parsers.meminfo import parse_meminfo
from adbflow.parsers.proc_stat import cpu_load, parse_proc_stat, parse_proc_stat_snapshots
from adbflow.parsers.sysfs import (
    freq_ratio,
    parse_cpu_list,
    parse_cpufreq,
    parse_key_values,
    parse_power_supply,
)
from adbflow.parsers.thermal import parse_thermal, parse_thermal_zones, parse_thermalservice
from adbflow.runtime.detect import InotifyEvent, parse_inotifyd_line

FIX = Path(__file__).parent / "fixtures"


def _texts(*dirs: str) -> list[str]:
    out = []
    for d in dirs:
        for p in sorted((FIX / d).rglob("*")):
            if p.is_file() and p.suffix not in (".md", ".json"):
                out.append(p.read_text(encoding="utf-8", errors="replace"))
    return out


# ------------------------------------------------------------------ the typed check

def _check(value: Any, tp: Any, where: str) -> None:
    """Assert `value` conforms to annotation `tp` (dataclasses recursively)."""
    if tp is Any or tp is object:
        return
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        errors = []
        for alt in typing.get_args(tp):
            try:
                _check(value, alt, where)
                return
            except AssertionError as exc:
                errors.append(str(exc))
        raise AssertionError(f"{where}: {value!r} matches none of {tp}: {errors}")
    if tp is type(None):
        assert value is None, f"{where}: expected None, got {value!r}"
        return
    if origin in (list, list):
        assert isinstance(value, list), f"{where}: expected list, got {type(value).__name__}"
        (arg,) = typing.get_args(tp) or (Any,)
        for i, v in enumerate(value):
            _check(v, arg, f"{where}[{i}]")
        return
    if origin in (tuple, tuple):
        assert isinstance(value, tuple), f"{where}: expected tuple"
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            for i, v in enumerate(value):
                _check(v, args[0], f"{where}[{i}]")
        elif args:
            assert len(value) == len(args), f"{where}: tuple length"
            for i, (v, a) in enumerate(zip(value, args)):
                _check(v, a, f"{where}[{i}]")
        return
    if origin in (dict, dict):
        assert isinstance(value, dict), f"{where}: expected dict"
        kt, vt = typing.get_args(tp) or (Any, Any)
        for k, v in value.items():
            _check(k, kt, f"{where} key")
            _check(v, vt, f"{where}[{k!r}]")
        return
    if tp is float:
        assert isinstance(value, (int, float)) and not isinstance(value, bool), \
            f"{where}: expected float, got {value!r}"
        assert not math.isinf(value), f"{where}: infinite {value!r}"
        return
    if tp is int:
        assert isinstance(value, int) and not isinstance(value, bool), \
            f"{where}: expected int, got {value!r}"
        return
    if tp is bool:
        assert isinstance(value, bool), f"{where}: expected bool, got {value!r}"
        return
    if tp is str:
        assert isinstance(value, str), f"{where}: expected str, got {value!r}"
        return
    if isinstance(tp, type):
        assert isinstance(value, tp), f"{where}: expected {tp.__name__}, got {type(value).__name__}"
        if dataclasses.is_dataclass(tp):
            well_typed(value, where)
        return


def well_typed(obj: Any, where: str = "result") -> None:
    """Every dataclass field of `obj` (recursively) matches its annotation."""
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            well_typed(v, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert isinstance(k, (str, int)), f"{where}: key {k!r}"
            well_typed(v, f"{where}[{k!r}]")
        return
    if not dataclasses.is_dataclass(obj):
        return
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        _check(getattr(obj, f.name), hints[f.name], f"{where}.{f.name}")


def only_parse_error(fn: Callable[[], Any]) -> Any:
    try:
        out = fn()
    except ParseError as exc:
        assert isinstance(exc.kind, str) and exc.kind, "ParseError without a kind"
        assert str(exc), "ParseError without a message"
        return None
    well_typed(out)
    return out


def test_typed_check_catches_wrong_types() -> None:
    """The checker itself must be able to fail (else every fuzz test below is vacuous)."""
    @dataclasses.dataclass
    class D:
        a: int
        b: list[float]
        c: str | None = None

    well_typed(D(1, [1.0, 2], None))
    for bad in (D("1", []), D(1, ["x"]), D(1, [], 3), D(True, [])):  # type: ignore[arg-type]
        with pytest.raises(AssertionError):
            well_typed(bad)


# ------------------------------------------------------------------ mutations of real captures

_NASTY = ["", " ", "\t", "\0", "-1", "-0", "NaN", "nan", "inf", "1e309", "99999999999999999999999",
          "0x1F", "１２", "٣", "%", ":", "=", "[", "]", "{", "}", "\r", "\x1b[31m", "é", "\ud800"[:0],
          "cpu", "cpu0", "MemTotal:", "kB", "INFO:", "llama_perf_context_print:", "=:adbflow:"]


@st.composite
def mutated(draw: Any, corpus: list[str]) -> str:
    """A real capture with a few line-level and character-level mutations."""
    text = draw(st.sampled_from(corpus)) if corpus else ""
    lines = text.splitlines(keepends=True)
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["dup", "drop", "cut", "splice", "number", "swap", "junk"]))
        if not lines:
            lines = [draw(st.text(max_size=40))]
        i = draw(st.integers(0, len(lines) - 1))
        line = lines[i]
        if op == "dup":
            lines.insert(i, line)
        elif op == "drop":
            del lines[i]
        elif op == "cut":
            lines[i] = line[: draw(st.integers(0, len(line)))]
        elif op == "splice":
            lines.insert(i, draw(st.text(max_size=60)) + "\n")
        elif op == "number":
            import re
            nums = list(re.finditer(r"\d+(?:\.\d+)?", line))
            if nums:
                m = nums[draw(st.integers(0, len(nums) - 1))]
                lines[i] = line[: m.start()] + draw(st.sampled_from(_NASTY)) + line[m.end():]
        elif op == "swap" and len(lines) > 1:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "junk":
            pos = draw(st.integers(0, len(line)))
            lines[i] = line[:pos] + draw(st.sampled_from(_NASTY)) + line[pos:]
    return "".join(lines)


def _inputs(corpus: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(mutated(corpus), st.text(max_size=400))


FUZZ = settings(max_examples=120, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

CASES: list[tuple[str, Callable[[str], Any], list[str]]] = [
    ("proc_stat", parse_proc_stat, _texts("proc_stat")),
    ("proc_stat_snapshots", parse_proc_stat_snapshots, _texts("proc_stat")),
    ("meminfo", parse_meminfo, _texts("meminfo")),
    ("dumpsys_cpuinfo", parse_dumpsys_cpuinfo, _texts("cpuinfo_dumpsys")),
    ("dumpsys_battery", parse_dumpsys_battery, _texts("battery")),
    ("thermal", parse_thermal, _texts("thermal")),
    ("thermalservice", parse_thermalservice, _texts("thermal")),
    ("thermal_zones", parse_thermal_zones, _texts("thermal")),
    ("getprop", parse_getprop, _texts("getprop")),
    ("cpu_list", parse_cpu_list, _texts("sys_cpu")),
    ("cpufreq", parse_cpufreq, _texts("sys_cpu")),
    ("key_values", parse_key_values, _texts("sys_cpu", "battery")),
    ("power_supply", parse_power_supply, _texts("battery")),
    ("label_image", parse_label_image, _texts("tflite_label_image")),
    ("llama_stdout", lambda t: parse_llama(t, ""), _texts("llama_cpp")),
    ("llama_stderr", lambda t: parse_llama("", t, require_text=False), _texts("llama_cpp")),
    ("llama_strict", lambda t: parse_llama(t, t, require_text=True, require_timings=True),
     _texts("llama_cpp")),
    ("benchmark_model", parse_benchmark_model, _texts("tflite_benchmark")),
    ("adb_devices", parse_adb_devices, _texts("adb_errors", "misc")),
    ("adb_version", parse_adb_version, _texts("adb_errors", "misc")),
    ("transfer_summaries", parse_transfer_summaries, _texts("adb_errors", "misc")),
    ("classify_adb_error", classify_adb_error, _texts("adb_errors")),
]


@pytest.mark.parametrize("name,parser,corpus", CASES, ids=[c[0] for c in CASES])
def test_every_parser_only_parse_error_and_well_typed(name, parser, corpus) -> None:
    @FUZZ
    @given(text=_inputs(corpus))
    def run(text: str) -> None:
        only_parse_error(lambda: parser(text))
    run()


@pytest.mark.parametrize("name,parser,corpus", CASES, ids=[c[0] for c in CASES])
def test_unmutated_fixtures_are_well_typed(name, parser, corpus) -> None:
    """The same typed check over every real capture, unmutated."""
    for text in corpus:
        only_parse_error(lambda: parser(text))


# ------------------------------------------------------------------ semantic invariants

@FUZZ
@given(a=mutated(_texts("proc_stat")), b=mutated(_texts("proc_stat")))
def test_cpu_load_between_any_two_samples_is_a_percentage_or_none(a: str, b: str) -> None:
    pa = only_parse_error(lambda: parse_proc_stat(a))
    pb = only_parse_error(lambda: parse_proc_stat(b))
    if pa is None or pb is None:
        return
    load = only_parse_error(lambda: cpu_load(pa, pb))
    if load is None:
        return
    for f in dataclasses.fields(load):
        v = getattr(load, f.name)
        vals = v if isinstance(v, list) else list(v.values()) if isinstance(v, dict) else [v]
        for x in vals:
            if isinstance(x, float):
                assert not math.isnan(x) and -1e-9 <= x <= 100 + 1e-9, (f.name, x)


@FUZZ
@given(text=mutated(_texts("sys_cpu")))
def test_freq_ratio_is_a_fraction(text: str) -> None:
    freqs = only_parse_error(lambda: parse_cpufreq(text))
    if freqs:
        r = freq_ratio(freqs)
        assert r is None or (isinstance(r, float) and 0.0 <= r <= 1.0 + 1e-9), r


@FUZZ
@given(text=mutated(_texts("meminfo")))
def test_meminfo_sizes_are_not_negative(text: str) -> None:
    mem = only_parse_error(lambda: parse_meminfo(text))
    if mem is not None:
        for f in dataclasses.fields(mem):
            v = getattr(mem, f.name)
            if isinstance(v, int):
                assert v >= 0, (f.name, v)


@FUZZ
@given(text=st.one_of(mutated(_texts("adb_errors")), st.text(max_size=300)))
def test_classify_adb_error_returns_a_known_kind(text: str) -> None:
    problem = classify_adb_error(text)
    if problem is not None:
        assert isinstance(problem, AdbProblem) and problem.kind and problem.hint
        assert isinstance(problem.unavailable, bool)


# ------------------------------------------------------------------ probe output (sectioned)

_NONCE = "0123abcd4567ef89"
_SECTIONS = {
    "stat": _texts("proc_stat"), "stat_a": _texts("proc_stat"), "meminfo": _texts("meminfo"),
    "cpus": ["present=0-7\nonline=0-3,5\n", "present=\nonline=x\n"],
    "cpufreq": _texts("sys_cpu")[:6] or [""], "thermal": _texts("thermal"),
    "battery_sysfs": ["capacity=57\nstatus=Charging\ntemp=315\n"],
    "battery": _texts("battery"), "props": _texts("getprop"),
    "cpuinfo": _texts("cpuinfo_dumpsys"), "end": [""],
}


@st.composite
def probe_outputs(draw: Any) -> str:
    """A sectioned probe reply: real sections (mutated), some missing, some forged with a
    wrong nonce (a device file trying to inject a section), noise before the first marker."""
    parts = [draw(st.text(max_size=30)) + "\n"]
    names = draw(st.lists(st.sampled_from(sorted(_SECTIONS)), max_size=12))
    if draw(st.booleans()):
        names = ["stat", "meminfo"] + names
    for name in names:
        nonce = _NONCE if draw(st.integers(0, 5)) else "deadbeef"
        parts.append(f"=:adbflow:{nonce}:{name}\n")
        parts.append(draw(mutated(_SECTIONS[name])) + "\n")
    return "".join(parts)


@FUZZ
@given(text=st.one_of(probe_outputs(), st.text(max_size=300)))
def test_probe_output_only_parse_error_and_well_typed(text: str) -> None:
    rep = only_parse_error(lambda: parse_probe_output(text, _NONCE))
    if rep is not None:
        assert isinstance(rep, ProbeReport)
        assert all(isinstance(p, str) for p in rep.problems)


def test_forged_section_marker_is_ignored() -> None:
    """A device file printing a marker with another nonce cannot replace a section."""
    stat, mem = _texts("proc_stat")[0], _texts("meminfo")[0]
    text = (f"=:adbflow:{_NONCE}:stat\n{stat}\n=:adbflow:{_NONCE}:meminfo\n{mem}\n"
            f"=:adbflow:deadbeef:props\n[ro.product.model]: [evil]\n=:adbflow:{_NONCE}:end\n")
    rep = parse_probe_output(text, _NONCE)
    assert rep.props.get("ro.product.model") != "evil" and rep.complete


# ------------------------------------------------------------------ inotifyd lines

@FUZZ
@given(line=st.one_of(
    st.text(max_size=200).map(lambda t: t.splitlines()[0] if t.splitlines() else t),
    st.builds(lambda ev, d, n: f"{ev}\t{d}\t{n}\n",
              st.text(alphabet="acew0rmyndDMuox \t?", max_size=5),
              st.sampled_from(["/storage/emulated/0/Pictures", "", "x\ty"]),
              # stream_lines splits on newlines: a line never holds one
              st.text(max_size=60).map(lambda t: "".join(t.splitlines())))))
def test_inotifyd_line_is_an_event_or_none(line: str) -> None:
    try:
        ev = parse_inotifyd_line(line)
    except ParseError:
        return
    assert ev is None or isinstance(ev, InotifyEvent)
    if ev is not None:
        well_typed(ev)
        assert ev.events and ev.name != ""
        assert ev.name is None or "\n" not in ev.name
