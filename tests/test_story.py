"""The story the user reads ends with a full sentence when the model was cut off."""
from __future__ import annotations

from adbflow.runtime.story import whole_sentences


def test_cut_back_to_last_sentence() -> None:
    text = "He spent months. One day he saw a cat. He looked it up and the cat"
    assert whole_sentences(text) == "He spent months. One day he saw a cat."


def test_finished_text_and_text_without_sentence_end_are_kept() -> None:
    assert whole_sentences("  A cat sat. ") == "A cat sat."
    assert whole_sentences("no end here at all") == "no end here at all"


def test_quotes_after_the_full_stop_stay() -> None:
    assert whole_sentences('It purred. "Hello." and then') == 'It purred. "Hello."'


def test_decimal_points_are_not_sentence_ends() -> None:
    assert whole_sentences("It weighed 4.5 kilos and") == "It weighed 4.5 kilos and"


def test_bidi_controls_never_reach_the_terminal_the_prompt_or_the_stories():
    """U+202E (right-to-left override) makes `gpj.exe` look like `exe.jpg` and reorders a
    story on screen: removed from labels and stories, escaped where names are shown."""
    from adbflow.parsers.label_image import parse_label_image
    from adbflow.parsers.llama import parse_llama
    from adbflow.runtime.story import display_text
    bidi = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
    out = parse_label_image(f"INFO: 0.9: 281 tabby{bidi}, tabby cat\n")
    assert out.labels[0].name.replace(" ", "") == "tabby,tabbycat"
    assert not any(c in out.labels[0].name for c in bidi)
    story = parse_llama("p Once upon a time\u202e a cat.\n", "", prompt="p").text
    assert "\u202e" not in story and "cat" in story
    shown = display_text("x\u202egpj.exe\u2066")
    assert shown == "x\\u202egpj.exe\\u2066"
