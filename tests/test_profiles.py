"""Device profiles: the repository's TOML files, model matching, and errors on bad files."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from adbflow.errors import ProfileError
from adbflow.paths import PROFILES_DIR
from adbflow.scheduling.profiles import ProfileBook, dump_profile, profile_from_dict, safe_profile_name

CLASSES = ("flagship_2025", "flagship_2023", "midrange_2023", "flagship_2019", "lowend_2020", "old_2017")


def test_repository_profiles_load_and_match_models():
    book = ProfileBook.load()
    assert set(CLASSES) <= set(book.names()) and {"default", "virtual_fleet"} <= set(book.names())
    d = book.for_model(None)
    assert d.name == "default" and d.label_image.model.endswith("inception_v3.tflite")
    assert d.label_image.input_size == 299
    assert book.for_model("Some Unknown Phone").name == "default"
    assert book.for_model("Pixel 4").name == "flagship_2019"
    assert book.for_model("SM-S918B").name == "flagship_2023"
    # class profiles inherit paths from default.toml, keep their own timing
    assert book.get("old_2017").llama.binary == d.llama.binary
    assert book.get("old_2017").timing.classify_ms == 385.0


@pytest.mark.parametrize("cls", CLASSES)
def test_virtual_fleet_classes_get_their_timing(cls):
    book = ProfileBook.load()
    p = book.for_model(f"adbflow-virtual {cls}")
    assert p.name == "virtual_fleet" and p.device_class == cls
    assert p.label_image.binary == "/data/local/tmp/label_image"
    assert p.label_image.model == "/data/local/tmp/efficientnet_lite0.tflite"
    assert p.llama.model == "/data/local/tmp/smollm2-135m-instruct-q4_1.gguf"
    assert p.timing.classify_ms == book.get(cls).timing.classify_ms
    assert p.timing.gen_tok_s == book.get(cls).timing.gen_tok_s


def test_virtual_fleet_numbers_agree_with_the_fleet_profiles():
    """profiles/virtual/*.toml (what the fleet pretends) and our priors must not drift."""
    tomllib = pytest.importorskip("tomllib")
    book = ProfileBook.load()
    for cls in CLASSES:
        with open(PROFILES_DIR / "virtual" / f"{cls}.toml", "rb") as fh:
            v = tomllib.load(fh)
        t = book.for_model(f"adbflow-virtual {cls}").timing
        assert t.classify_ms == v["classify_ms"] and t.gen_tok_s == v["llm_tok_s"]


def _copy(tmp_path: Path) -> Path:
    d = tmp_path / "profiles"
    d.mkdir()
    for f in PROFILES_DIR.glob("*.toml"):
        shutil.copy(f, d)
    return d


@pytest.mark.parametrize("text, match", [
    ("name = 'x'\nmatch_models = [", "not valid TOML"),
    ("match_models = ['x']", "missing `name`"),
    ("name = 'x'\ncolour = 'red'", "unknown key"),
    ("name = 'x'\n[timing]\nclassify_ms = 'fast'", "expected a number"),
    ("name = 'x'\n[timing]\nclassify_ms = 0", "must be > 0"),
    ("name = 'x'\n[label_image]\nthreads = -1", "positive integer"),
    ("name = 'x'\n[llama]\nturbo = true", "unknown key"),
    ("name = 'x'\nmatch_models = 'Pixel*'", "list of strings"),
    ("name = 'default'", "duplicate profile names"),
])
def test_bad_profile_files_raise_profile_error_naming_the_file(tmp_path, text, match):
    d = _copy(tmp_path)
    (d / "zz_bad.toml").write_text(text)
    with pytest.raises(ProfileError, match=match) as exc:
        ProfileBook.load(d)
    if "duplicate" not in match:
        assert "zz_bad.toml" in str(exc.value)


def test_missing_default_and_empty_directory(tmp_path):
    with pytest.raises(ProfileError, match="no profiles"):
        ProfileBook.load(tmp_path)
    d = _copy(tmp_path)
    (d / "default.toml").unlink()
    with pytest.raises(ProfileError, match="default"):
        ProfileBook.load(d)


def test_most_specific_match_wins_and_dump_round_trips(tmp_path):
    d = _copy(tmp_path)
    book = ProfileBook.load(d)
    mine = profile_from_dict({"name": "my_pixel", "match_models": ["Pixel 4"],
                              "timing": {"classify_ms": 123.0},
                              "measurements": [{"stage": "classify", "load_pct": 50.0, "ms": 250.0}]},
                             base={"label_image": vars(book.get("default").label_image),
                                   "llama": vars(book.get("default").llama),
                                   "timing": vars(book.get("default").timing)})
    (d / "my_pixel.toml").write_text(dump_profile(mine))
    book = ProfileBook.load(d)
    got = book.for_model("pixel 4")              # case-insensitive; exact beats other globs
    assert got.name == "my_pixel" and got.timing.classify_ms == 123.0
    assert got.measurements == [{"stage": "classify", "load_pct": 50.0, "ms": 250.0}]
    vf = book.get("virtual_fleet")
    (d / "virtual_fleet.toml").write_text(dump_profile(vf))
    again = ProfileBook.load(d).get("virtual_fleet")
    assert again.classes == vf.classes and again.label_image == vf.label_image


def test_safe_profile_name_strips_hostile_model_strings():
    assert safe_profile_name("$(touch pwned)/../x") == "touch_pwned___x"
    assert safe_profile_name("   ") == "device"
    assert "/" not in safe_profile_name("a/b\\c")
