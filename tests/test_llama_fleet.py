"""Today's llama.cpp on virtual devices: a profile that names the chat-only llama-cli fails
the story stage fast with the fix (instead of three 300 s timeouts); llama-completion with
the chat template writes a story that names the picture and ends on a sentence."""
from __future__ import annotations

import re
import time

import pytest
from fleet_helpers import CHELSEA, cheap_profiles, inventory, module_fleet

from adbflow.runtime.pipeline import Pipeline, PipelineConfig

pytestmark = pytest.mark.fleet

fleet = module_fleet(2, ["flagship_2025"])


def _run(fleet, tmp_path, profiles) -> tuple[object, float]:
    p = Pipeline(PipelineConfig(data_dir=tmp_path / "data", profiles_dir=profiles,
                                retry_wait_s=0.1, device_wait_s=5.0), inventory(fleet))
    try:
        t0 = time.monotonic()
        job = p.run_image(CHELSEA)
        return job, time.monotonic() - t0
    finally:
        p.close()


def test_chat_only_llama_cli_fails_fast_with_the_fix(fleet, tmp_path) -> None:
    profiles = cheap_profiles(tmp_path / "profiles", n_predict=24)
    vf = profiles / "virtual_fleet.toml"
    vf.write_text(re.sub(r'(?m)^binary = "/data/local/tmp/llama-completion".*$',
                         'binary = "/data/local/tmp/llama-cli"', vf.read_text()))
    job, seconds = _run(fleet, tmp_path, profiles)
    assert job.state == "failed"
    assert "chat-only" in job.error and "llama-completion" in job.error, job.error
    assert seconds < 120          # the stage timeout alone is 300 s per attempt


def test_llama_completion_story_names_the_picture_and_ends_on_a_sentence(fleet, tmp_path) -> None:
    profiles = cheap_profiles(tmp_path / "profiles", n_predict=48)
    job, _ = _run(fleet, tmp_path, profiles)
    assert job.state == "done", job.error
    story = job.result["story"]
    top = job.result["labels"][0]["name"].split(",")[0].lower()
    assert story.startswith("Once upon a time, there was") and top in story.lower(), story
    assert re.search(r"[.!?…][\"')\]]*$", story), story
    assert "<|im_" not in story and "assistant" not in story.lower()[:40]
