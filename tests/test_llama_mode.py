"""A chat-only llama-cli (llama.cpp since 2025-12) fails the story stage at once with the
fix, instead of waiting at its `> ` prompt for the stage timeout."""
from __future__ import annotations

import shlex
import time
from dataclasses import replace
from pathlib import Path

import pytest
from pipeline_fakes import FakeBidder, FakeDevice, FakeInventory
from test_pipeline_unit import CHELSEA, add

from adbflow.device import ShellResult
from adbflow.errors import AdbError
from adbflow.runtime import stages
from adbflow.runtime.llama_mode import LlamaChatOnlyError, LlamaModes, chat_only_evidence
from adbflow.runtime.pipeline import Pipeline, PipelineConfig
from adbflow.runtime.story import finish_story, first_repeat
from adbflow.scheduling.profiles import LlamaSpec

# what tools/cli/cli.cpp prints (stdout: console::log, stderr: console::error)
CHAT_STDERR = ("--no-conversation is not supported by llama-cli\n"
               "please use llama-completion instead\n")
CHAT_STDOUT = ("\nLoading model... \n\nbuild      : b7300\nmodel      : model.gguf\n"
               "modalities : text\n\navailable commands:\n  /exit or Ctrl+C     stop or exit\n"
               "\n> Hi\n\nHello! How can I help?\n\n\n> \n> \n> ")


def test_evidence_is_read_from_real_output_only() -> None:
    assert chat_only_evidence("", CHAT_STDERR) is not None
    assert chat_only_evidence(CHAT_STDOUT, "") is not None
    assert chat_only_evidence(CHAT_STDOUT + CHAT_STDERR, "") is not None   # merged streams
    story = "Once upon a time, there was a cat. [end of text]\n"
    assert chat_only_evidence(story, "llama_perf_context_print: eval time = 1 ms") is None
    assert chat_only_evidence("> quoted text in a story", "") is None


class ChatOnlyDevice(FakeDevice):
    """Its llama-completion path holds today's llama-cli: flood of `> ` at stdin EOF."""

    def run(self, argv, *, timeout: float, max_output: int = 1 << 24, check: bool = True,
            stdin: bytes | None = None) -> ShellResult:
        argv = list(argv)
        if argv[0].endswith("llama-completion"):
            self.calls.append(argv)
            raise AdbError(self.serial, shlex.join(argv), stdout=CHAT_STDOUT[-4000:],
                           stderr=CHAT_STDERR, message=f"output exceeded {max_output} bytes; "
                                                       "command killed")
        return super().run(argv, timeout=timeout, max_output=max_output, check=check,
                           stdin=stdin)


SPEC = LlamaSpec(binary="/data/local/tmp/llama-completion", model="/data/local/tmp/m.gguf",
                 extra_args=["-no-cnv", "--no-display-prompt"])


def test_check_runs_once_per_device_and_binary() -> None:
    modes = LlamaModes()
    good = FakeDevice("g1")
    modes.ensure_one_shot(good, SPEC, timeout=300)
    modes.ensure_one_shot(good, SPEC, timeout=300)
    assert len(good.calls) == 1 and good.calls[0][good.calls[0].index("-n") + 1] == "1"
    modes.ensure_one_shot(good, replace(SPEC, binary="/data/local/tmp/other/llama-completion"),
                          timeout=300)
    assert len(good.calls) == 2
    bad = ChatOnlyDevice("c1")
    with pytest.raises(LlamaChatOnlyError, match="chat-only") as exc:
        modes.ensure_one_shot(bad, SPEC, timeout=300)
    assert "llama-completion" in str(exc.value.hint) and exc.value.serial == "c1"


def test_pipeline_fails_fast_with_the_fix_when_every_device_is_chat_only(tmp_path: Path) -> None:
    devs = [ChatOnlyDevice(f"dev{i}") for i in (1, 2, 3)]
    p = Pipeline(PipelineConfig(data_dir=tmp_path / "d", retry_wait_s=0.01, device_wait_s=0.2,
                                use_inotify=False),
                 FakeInventory(devs), bidder=FakeBidder({}))
    jid = add(p, devs[0], "IMG_1.png", CHELSEA)
    t0 = time.monotonic()
    job = p.process(jid)
    assert time.monotonic() - t0 < 10
    assert job.state == "failed"
    assert "chat-only" in job.error and "llama-completion" in job.error


def test_pipeline_moves_the_story_to_a_device_with_a_one_shot_program(tmp_path: Path) -> None:
    devs = [ChatOnlyDevice("dev1"), FakeDevice("dev2"), ChatOnlyDevice("dev3")]
    p = Pipeline(PipelineConfig(data_dir=tmp_path / "d", retry_wait_s=0.01, device_wait_s=0.2,
                                use_inotify=False),
                 FakeInventory(devs), bidder=FakeBidder({"dev1": 70.0, "dev2": 40.0, "dev3": 5.0}))
    job = p.process(add(p, devs[1], "IMG_2.png", CHELSEA))
    assert job.state == "done", job.error
    assert job.result["devices"]["generate"] == "dev2"
    assert job.result["story"].startswith("Once upon a time, there was a tiger cat")


def test_story_is_chat_templated_and_finished() -> None:
    dev = FakeDevice("t1")
    out = stages.generate_on(dev, SPEC, "Write a story about a cat.",
                             timeouts=stages.StageTimeouts(), opening="Once upon a time",
                             modes=LlamaModes())
    argv = dev.calls[-1]
    sent = argv[argv.index("-p") + 1]
    assert sent.startswith("<|im_start|>system\n") and sent.endswith(
        "<|im_start|>assistant\nOnce upon a time")
    assert {"--temp", "--top-k", "--top-p", "--repeat-penalty"} <= set(argv)
    assert out["story"].startswith("Once upon a time")
    s = finish_story("Once upon a time, there was a yurt", " in the heart of a forest. It was "
                     "warm. Birds sang in the heart of a tree. And then the")
    assert s == "Once upon a time, there was a yurt in the heart of a forest. It was warm."
    assert first_repeat(s) is None
