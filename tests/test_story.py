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
