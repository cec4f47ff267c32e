"""label_image and llama-cli parsers over every captured fixture, plus fuzzing: they return a
result or raise ParseError, never anything else."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adbflow.errors import ParseError
from adbflow.parsers.label_image import parse_label_image
from adbflow.parsers.llama import parse_llama

FIX = Path(__file__).parent / "fixtures"
LABEL_FILES = sorted((FIX / "tflite_label_image").iterdir())
LLAMA_FILES = sorted((FIX / "llama_cpp").iterdir())

# fixture -> (top label, its score, avg ms); None: the capture holds no result lines
LABEL_EXPECT = {
    "UNATTRIBUTED_android_nnapi_qualcomm_som_push_then_run_INFO_prefix.txt": ("bow tie", 0.666667, 7.0921),
    "UNATTRIBUTED_forlinx_imx8mp_tflite2.11.1_cpu_INFO_prefix.txt": ("military uniform", 0.764706, 44.656),
    "tf_README_android_hexagon.txt": ("bow tie", 0.639216, 4.231),
    "tf_README_android_nnapi.txt": ("military uniform", 0.905401, 10.348),
    "tf_README_desktop_pre_INFO_prefix.txt": ("military uniform", 0.860174, 68.12),
    "tf_contrib_label_image_md_2018_float.txt": ("military uniform", 0.88615, 263.493),
}


@pytest.mark.parametrize("path", LABEL_FILES, ids=lambda p: p.name)
def test_label_image_every_fixture(path: Path) -> None:
    text = path.read_text()
    expect = LABEL_EXPECT.get(path.name)
    if expect is None:
        with pytest.raises(ParseError) as err:
            parse_label_image(text)
        assert err.value.kind == "label_image" and err.value.detail
        return
    res = parse_label_image(text)
    assert len(res.labels) == 5
    assert (res.labels[0].name, res.labels[0].score, res.avg_ms) == expect
    assert all(0.0 <= lb.score <= 1.0 for lb in res.labels)


def test_label_image_details() -> None:
    res = parse_label_image((FIX / "tflite_label_image" /
                             "tf_README_desktop_pre_INFO_prefix.txt").read_text())
    # `653 653:military uniform` label files repeat the index: it is stripped
    assert res.labels[3].name == "cornet, horn, trumpet, trump"
    assert res.labels[0].index == 653
    with pytest.raises(ParseError, match="usage text"):
        parse_label_image((FIX / "tflite_label_image" / "tf_README_android_help_sargo.txt").read_text())
    with pytest.raises(ParseError, match="Failed to invoke"):
        parse_label_image("INFO: Loaded model m.tflite\nERROR: Failed to invoke tflite!\n")
    # control characters from a hostile device do not reach the terminal or the prompt
    res = parse_label_image("INFO: 0.5: 3 evil\x1b[2Jname\x07\n")
    assert res.labels[0].name == "evil [2Jname"
    # scores outside 0..1 are not labels
    with pytest.raises(ParseError):
        parse_label_image("7.5: 3 nonsense\n")


LLAMA_EXPECT = {  # fixture -> (eval tok/s, prompt tok/s) from the timing lines
    "android_snapdragon_htp_llama_perf_completion.txt": (51.57, 136.21),
    "llama-node_issue119_2023-09_llama_print_timings.txt": (16.28, 31.68),
    "llamacpp_issue2237_2023-07_main_llama_print_timings_xeon_TRUNCATED.txt": (4.43, 43.05),
    "llamacpp_issue34_2024-12_llama-cli_orangepi3B_rk3566_llama_perf.txt": (1.02, 1.88),
    "llamacpp_issue9013_2025-05_llama-cli_perf_interrupted_by_user.txt": (12.64, 52.85),
    "llamacpp_issue13_2023-03_earliest_main_timing_format_i5.txt": (pytest.approx(1000 / 367.76), None),
    # truncated `eval time = 248449.20 ms / 32`: the rate is derived from ms and count
    "ANDROID_TERMUX_llamacpp_pr7016_2024-05_shared_storage_llama_print_timings_TRUNCATED.txt":
        (pytest.approx(32 / 248.4492), 0.27),
    "ollama_issue1365_2023-12_journalctl_prefixed_llama_print_timings_TRUNCATED.txt":
        (None, pytest.approx(800 / 0.44418)),
}
NO_TIMINGS = {"android_snapdragon_htp_llama_bench.txt",
              "llamacpp_issue2237_2023-07_system_info_and_sampling_header.txt",
              "llamacpp_issue58_2023-03_rpi_zero2w_main_prompt_echo_token_list_TRUNCATED.txt"}


@pytest.mark.parametrize("path", LLAMA_FILES, ids=lambda p: p.name)
def test_llama_every_fixture_as_stderr(path: Path) -> None:
    text = path.read_text()
    if path.name in NO_TIMINGS:
        with pytest.raises(ParseError) as err:
            parse_llama("", text, require_text=False)
        assert err.value.kind == "llama"
        return
    res = parse_llama("", text, require_text=False)
    assert (res.eval_tok_s, res.prompt_tok_s) == LLAMA_EXPECT[path.name]
    with pytest.raises(ParseError, match="no text"):
        parse_llama("", text)            # a story stage needs text


@pytest.mark.parametrize("path", LLAMA_FILES, ids=lambda p: p.name)
def test_llama_every_fixture_as_mixed_stdout(path: Path) -> None:
    """Captures made with 2>&1: log lines never leak into the story."""
    text = path.read_text()
    try:
        res = parse_llama(text, "", require_text=False)
    except ParseError:
        return
    for line in res.text.splitlines():
        assert not line.lstrip().startswith(("llama_perf", "llama_print_timings", "load_tensors",
                                             "ggml", "llama_model_load", "system_info"))


def test_llama_story_extraction() -> None:
    text = (FIX / "llama_cpp" / "android_snapdragon_htp_llama_perf_completion.txt").read_text()
    res = parse_llama(text, "")
    assert "I hope this helps you understand the world's most popular cookies!" in res.text
    assert "[end of text]" not in res.text and res.eval_tokens == 475
    prompt = "Tell a story about a cat."
    res = parse_llama(prompt + " Once upon a time a cat sat.\n\n\n\nThe end. [end of text]\n",
                      "llama_perf_context_print:        eval time =  100.00 ms /    10 runs   "
                      "(   10.00 ms per token,   100.00 tokens per second)\n", prompt=prompt,
                      require_timings=True)
    assert res.text == "Once upon a time a cat sat.\n\nThe end."
    assert res.eval_tok_s == 100.0
    with pytest.raises(ParseError, match="finished llama-cli run"):
        parse_llama("random garbage that looks like text", "", require_timings=True)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parsers_fuzz_only_parse_error(text: str) -> None:
    for fn in (parse_label_image, lambda t: parse_llama(t, t), lambda t: parse_llama(t, "",
               require_text=False, require_timings=True)):
        try:
            fn(text)
        except ParseError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.integers(0, 999),
                          st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")),
                                  min_size=1, max_size=30).filter(lambda s: s.strip())),
                min_size=1, max_size=8))
def test_label_image_roundtrip(rows) -> None:
    text = "INFO: invoked\nINFO: average time: 12.5 ms\n" + "".join(
        f"INFO: {s}: {i} {n}\n" for s, i, n in rows)
    res = parse_label_image(text)
    assert [(lb.score, lb.index) for lb in res.labels] == [(s, i) for s, i, _ in rows]
    assert res.avg_ms == 12.5
