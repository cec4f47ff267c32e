"""benchmark_model parser over every captured fixture, plus fuzzing: only ParseError escapes."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adbflow.errors import ParseError
from adbflow.parsers.benchmark_model import parse_benchmark_model

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "tflite_benchmark").glob("*.txt"))

# expected steady-state latency (ms) read off each capture by hand
EXPECTED_AVG_MS = {
    "UNATTRIBUTED_linux_board_count1_curr_only_scientific_warmup.txt": 971.535,
    "UNATTRIBUTED_synaptics_astra_android_adb_nnapi_tf2.15_memory_footprint_indented.txt": 1.88574,
    "UNATTRIBUTED_synaptics_astra_android_nnapi_cache_miss_ERROR_line_and_e+06.txt": 1.38086,
    "UNATTRIBUTED_synaptics_astra_android_op_profiling_newer_layout_no_start_column.txt": 4.011 + 0.058 + 2.396,
    "tf_benchmark_android_README_logcat_grep_line.txt": 1.68792,
    "tf_issue43541_tf1.15_gpu_op_profiling_TRUNCATED.txt": 119.375,
    "tf_issue56301_tf2.9_android_app_logcat_nnapi_TRUNCATED.txt": 12.1676,
}


def test_every_fixture_is_covered():
    assert {f.name for f in FIXTURES} == set(EXPECTED_AVG_MS)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name[:60])
def test_parses_every_fixture(path):
    res = parse_benchmark_model(path.read_text())
    assert res.avg_ms == pytest.approx(EXPECTED_AVG_MS[path.name], rel=1e-6)


def test_details_of_rich_captures():
    by = {f.name: parse_benchmark_model(f.read_text()) for f in FIXTURES}
    r = by["UNATTRIBUTED_synaptics_astra_android_adb_nnapi_tf2.15_memory_footprint_indented.txt"]
    assert r.tf_version == "2.15.0" and r.model_size_mb == pytest.approx(0.497264)
    assert r.memory_overall_mb == pytest.approx(7.83203) and r.init_session_ms == pytest.approx(66.002)
    assert [x.count for x in r.runs] == [1, 520] and r.runs[0].values == {"curr": 637079.0}
    assert r.params["Graph"] == "/data/local/tmp/mobilenet_v1_0.25_224_quant.tflite"
    r = by["UNATTRIBUTED_synaptics_astra_android_nnapi_cache_miss_ERROR_line_and_e+06.txt"]
    assert r.warmup_avg_us == pytest.approx(1.59906e6) and len(r.errors) == 1
    r = by["tf_issue43541_tf1.15_gpu_op_profiling_TRUNCATED.txt"]
    assert r.num_threads == 4 and r.runs[-1].values["std"] == 1948
    r = by["UNATTRIBUTED_synaptics_astra_android_op_profiling_newer_layout_no_start_column.txt"]
    assert [o.node_type for o in r.ops] == ["TfLiteNnapiDelegate", "RESIZE_NEAREST_NEIGHBOR",
                                             "TfLiteNnapiDelegate"]
    assert r.ops[0].name == "[]:64" and r.ops[2].cdf_percent == 100.0
    r = by["tf_issue56301_tf2.9_android_app_logcat_nnapi_TRUNCATED.txt"]
    assert r.init_us == 126059 and r.first_inference_us == 32942   # logcat prefix stripped


@pytest.mark.parametrize("text", ["", "hello\nworld", "STARTING!\nNum threads: [4]\n",
                                  "Inference timings in us: Init: 5"])
def test_output_without_timing_is_a_parse_error(text):
    with pytest.raises(ParseError) as exc:
        parse_benchmark_model(text)
    assert exc.value.kind == "benchmark_model"


@pytest.mark.parametrize("number", ["1e309", "-1e309"])
def test_number_that_overflows_is_a_parse_error_not_inf(number):
    # found by the fuzz suite: float("1e309") is inf, which must not reach a profile
    text = (FIXTURES[0].parent / "tf_issue43541_tf1.15_gpu_op_profiling_TRUNCATED.txt").read_text()
    assert "Init: 870557" in text
    with pytest.raises(ParseError, match="out of range number"):
        parse_benchmark_model(text.replace("Init: 870557", f"Init: {number}"))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("count=first avg12.5e+06 INFO:Inference timings in us\n:[]%")),
               max_size=200))
def test_fuzz_only_parse_error(text):
    try:
        res = parse_benchmark_model(text)
    except ParseError:
        return
    assert res.avg_ms is None or isinstance(res.avg_ms, float)
