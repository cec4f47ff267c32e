"""Is the profile's llama.cpp program a one-shot completion, or today's chat-only llama-cli?

Why: since December 2025 llama.cpp's `llama-cli` (tools/cli) is a chat. It accepts `-no-cnv`
but only prints `--no-conversation is not supported by llama-cli` / `please use
llama-completion instead`, answers `-p` as the first chat turn and then waits at `> ` for
the next one; with stdin at EOF (adb shell v2) it prints `> ` forever. Run as a story
stage that is a 300 s timeout (or an output flood) per attempt, three attempts per job.
So the first use of a (device, binary) is a short check run (`-n 1`, small output cap,
60 s at most); its verdict is cached, and a chat-only program fails the attempt at once
with an error that names the fix. The evidence test is a pure function of the output.
"""
from __future__ import annotations

import threading
from typing import Any

from adbflow.errors import (
    AdbError,
    LlamaChatOnlyError,  # noqa: F401 - defined in adbflow.errors
)

CHECK_TIMEOUT_S = 60.0
CHECK_MAX_OUTPUT = 64 << 10
CHECK_PROMPT = "Hi"
# (where, text): what only the chat-only llama-cli prints (tools/cli/cli.cpp)
_EVIDENCE = (
    ("stderr", "--no-conversation is not supported by llama-cli"),
    ("stderr", "please use llama-completion instead"),
    ("stdout", "available commands:"),
    ("stdout", "/exit or Ctrl+C"),
    ("stdout", "\n> \n> "),          # the EOF loop of the chat prompt
)
FIX = ("llama.cpp's llama-cli is a chat since December 2025: build the one-shot program "
       "(`cmake --build build-android --target llama-completion`), push it to "
       "/data/local/tmp/llama-completion and name it in the profile's [llama] binary "
       "(or push a llama-cli built from a tag before the split, e.g. b6900)")


def chat_only_evidence(stdout: str, stderr: str) -> str | None:
    """The first line of output that shows a chat-only llama-cli, or None."""
    streams = {"stdout": stdout or "", "stderr": stderr or ""}
    for where, text in _EVIDENCE:
        if text in streams[where]:
            return text.strip() or text
    # some builds or captures merge the streams
    merged = streams["stdout"] + streams["stderr"]
    for _where, text in _EVIDENCE[:2]:
        if text in merged:
            return text
    return None


def check_argv(spec: Any) -> list[str]:
    """The check run: the profile's own binary, model and flags, one token."""
    return [spec.binary, "-m", spec.model, "-p", CHECK_PROMPT, "-n", "1", "-t", str(spec.threads),
            "-c", "128", *spec.extra_args]


def chat_only_error(serial: str, cmd: str, evidence: str, stdout: str = "",
                    stderr: str = "") -> LlamaChatOnlyError:
    return LlamaChatOnlyError(serial, cmd, stdout=stdout[-2000:], stderr=stderr[-2000:],
                              message=f"{cmd.split()[0] if cmd else 'llama'} is the chat-only "
                                      f"llama-cli (it printed {evidence!r}); it would wait "
                                      "for input instead of writing the story",
                              hint=FIX)


class LlamaModes:
    """Verdicts per (serial, binary): checked once, then cached (thread-safe)."""

    def __init__(self) -> None:
        self._ok: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def ensure_one_shot(self, device: Any, spec: Any, *, timeout: float) -> None:
        """Raise LlamaChatOnlyError when `spec.binary` on `device` is chat-only. Other
        failures of the check (model missing, device trouble) are left to the real run,
        which reports them as usual; only a clean one-shot run is cached."""
        key = (device.serial, spec.binary)
        with self._lock:
            if key in self._ok:
                return
        argv = check_argv(spec)
        cmd = " ".join(argv)
        try:
            res = device.run(argv, timeout=min(timeout, CHECK_TIMEOUT_S), check=False,
                             max_output=CHECK_MAX_OUTPUT)
        except AdbError as exc:       # timed out at `> `, or the EOF loop flooded the cap
            ev = chat_only_evidence(exc.stdout, exc.stderr)
            if ev is not None:
                raise chat_only_error(device.serial, cmd, ev, exc.stdout, exc.stderr) from None
            raise
        ev = chat_only_evidence(res.stdout, res.stderr)
        if ev is not None:
            raise chat_only_error(device.serial, cmd, ev, res.stdout, res.stderr)
        if res.exit_code == 0:
            with self._lock:
                self._ok.add(key)

    def forget(self, serial: str) -> None:
        """A device that reconnected may have new programs: check again."""
        with self._lock:
            self._ok = {k for k in self._ok if k[0] != serial}


DEFAULT_MODES = LlamaModes()
