"""Which failed attempts use up a stage's budget (runtime.attempts.run_stage against a real
journal). A worker phone that leaves adb mid-attempt (`dropped`) and a fleet whose every
usable phone is another orchestrator's (`busy`) must not fail a picture: the slow
two-orchestrator test (tests/test_long_reliability.py) lost one to three disconnects and
two busy spells before this rule. Real faults (a crash, a timeout, nothing listed) still
count, and so does the origin phone's own stage."""
from __future__ import annotations

import threading

import pytest

from adbflow.errors import AdbError, DeviceUnavailableError, NoDevice, StageExhausted
from adbflow.runtime.attempts import run_stage, uncounted_kind
from adbflow.runtime.dispatcher import QuarantineBoard, only_leased
from adbflow.runtime.journal import UNCOUNTED_KINDS, Journal
from adbflow.runtime.retry import RetryPolicy
from adbflow.scheduling.quarantine import QuarantineRules


class _Origin:
    """The origin phone is listed (so an origin stage's failure is the phone's)."""

    def present(self, serial: str) -> bool:
        return True

    def wait_present(self, serial: str, seconds: float) -> bool:
        return True


def _setup(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite")
    jid, _ = journal.add_job(source="device", serial="origin", path="/sdcard/DCIM/a.jpg",
                             size=10, mtime=1.0)
    board = QuarantineBoard(QuarantineRules(), lambda e: None)
    return journal, journal.job(jid), board


def _run(journal, job, board, body, stage="generate", origin=None):
    return run_stage(job, stage, body, journal=journal, retry=RetryPolicy(3, 0.0),
                     board=board, emit=lambda e: None, stop=threading.Event(), origin=origin)


def test_phones_that_drop_off_adb_mid_stage_do_not_use_up_the_attempts(tmp_path) -> None:
    journal, job, board = _setup(tmp_path)
    seen: list[set[str]] = []

    def body(j, att):
        seen.append(set(att.excluded))
        att.serial = f"p{len(seen)}"
        if len(seen) <= 4:                   # 4 phones in a row leave adb: more than 3
            raise DeviceUnavailableError(att.serial, "llama-completion", message="device offline")
        return {"story": "ok"}

    assert _run(journal, job, board, body) == {"story": "ok"}
    assert [a.error_kind for a in journal.attempts(job.id)] == ["dropped"] * 4 + [None]
    assert seen[-1] == {"p1", "p2", "p3", "p4"}       # each dropped phone left out of this run
    assert {"p1", "p2", "p3", "p4"} <= set(board.table())   # and struck (a flapping phone)
    assert journal.failed_attempts(job.id, "generate") == []  # a restart keeps the full budget


def test_every_usable_phone_leased_elsewhere_waits_instead_of_failing(tmp_path) -> None:
    journal, job, board = _setup(tmp_path)
    calls = []

    def body(j, att):
        calls.append(1)
        if len(calls) <= 5:
            raise NoDevice("no eligible device for generate: slot leased by another "
                           "orchestrator on p1, p2", leased_elsewhere=True)
        att.serial = "p1"
        return {"story": "ok"}

    assert _run(journal, job, board, body) == {"story": "ok"}
    assert [a.error_kind for a in journal.attempts(job.id)] == ["busy"] * 5 + [None]
    assert not board.table()


@pytest.mark.parametrize("exc", [
    NoDevice("no eligible device for generate: no devices"),            # nothing listed
    AdbError("p1", "llama-completion", exit_code=134, message="abort"),  # a real crash
])
def test_real_faults_still_count(tmp_path, exc) -> None:
    journal, job, board = _setup(tmp_path)
    calls = []

    def body(j, att):
        calls.append(1)
        raise exc

    with pytest.raises(StageExhausted, match="failed after 3 attempts"):
        _run(journal, job, board, body)
    assert len(calls) == 3


def test_the_origin_stage_counts_its_phones_unavailability(tmp_path) -> None:
    journal, job, board = _setup(tmp_path)
    calls = []

    def body(j, att):
        calls.append(1)
        att.serial = "origin"
        raise DeviceUnavailableError("origin", "pull", message="device offline")

    with pytest.raises(StageExhausted):
        _run(journal, job, board, body, stage="pull", origin=_Origin())
    assert len(calls) == 3
    assert uncounted_kind(DeviceUnavailableError("o", "pull"), "o", origin_bound=True) is None


def test_only_leased_means_every_usable_phone_is_leased() -> None:
    assert only_leased({"a", "b"}, set(), {"a", "b"})
    assert only_leased({"a", "b", "c"}, {"c"}, {"a", "b"})        # c failed here before
    assert not only_leased({"a", "b"}, set(), {"a"})                # b free, yet nothing won
    assert not only_leased({"a"}, {"a"}, set())                     # nothing usable at all
    assert not only_leased(set(), set(), set())
    assert {"busy", "dropped"} <= UNCOUNTED_KINDS
