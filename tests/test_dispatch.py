"""The dispatch decision as a pure function (adbflow.scheduling.dispatch.decide), the
in-flight accounting around it, and RetryPolicy."""
from __future__ import annotations

import copy
import random
import threading

import pytest
from bid_helpers import make_bid

from adbflow.runtime.pipeline import PipelineConfig
from adbflow.runtime.retry import RetryPolicy
from adbflow.scheduling import dispatch
from adbflow.scheduling.bids import Bid
from adbflow.scheduling.dispatch import Inflight, decide
from adbflow.scheduling.policy import POLICY_NAMES, Task, get_policy
from adbflow.scheduling.profiles import ProfileBook
from adbflow.scheduling.quarantine import Quarantined

NOW = 1_000_000.0
FAST = "adbflow-virtual flagship_2025"
CLS = Task("classify", input_bytes=300_000)


def bid(serial: str, load: float = 10.0, **kw) -> Bid:
    return make_bid(serial, **{"model": FAST, "timestamp": NOW, "cpu_load": load, **kw})


@pytest.fixture(scope="module")
def book() -> ProfileBook:
    return ProfileBook.load()


def run(name, bids, book, *, inflight=None, quarantine=None, excluded=frozenset(), seed=0):
    return decide(CLS, bids, inflight or {}, quarantine or {}, NOW, policy=get_policy(name),
                  profiles=book, excluded=excluded, rng=random.Random(seed))


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_same_inputs_give_the_same_award_and_inputs_are_not_touched(name, book) -> None:
    bids = [bid("a", 30.0), bid("b", 5.0), bid("c", 60.0), bid("d", 5.0)]
    inflight = {"b": (CLS,), "c": ()}
    table = {"d": Quarantined("d", NOW + 30, 1, "timeout", "classify: timeout")}
    before = copy.deepcopy((bids, inflight, table))
    awards = [run(name, bids, book, inflight=inflight, quarantine=table, seed=7)
              for _ in range(3)]
    assert len({(a.winner, tuple(a.held), a.decision.reason) for a in awards}) == 1
    assert awards[0].winner is not None and awards[0].held == ["d"]
    assert (bids, inflight, table) == before                # decide reads, never writes


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_a_quarantined_device_is_never_chosen_while_another_can_run(name, book) -> None:
    # "q" is the idlest device by far: every policy would pick it if it could
    bids = [bid("q", 0.0, mem_available_kb=8 << 20), bid("x", 70.0), bid("y", 80.0)]
    table = {"q": Quarantined("q", NOW + 60, 1, "timeout", "classify: timeout")}
    for seed in range(20):
        award = run(name, bids, book, quarantine=table, seed=seed)
        assert award.winner in ("x", "y") and award.held == ["q"]
    # once the strike has expired it is a candidate again
    expired = {"q": Quarantined("q", NOW - 1, 1, "timeout", "classify: timeout")}
    assert run("lowest-cpu", bids, book, quarantine=expired).winner == "q"


def test_only_quarantined_devices_left_are_still_offered(book) -> None:
    bids = [bid("q", 50.0), bid("dead", 0.0, error="timeout", cpu_load=float("nan"))]
    table = {"q": Quarantined("q", NOW + 60, 1, "timeout", "x")}
    award = run("ect", bids, book, quarantine=table)
    assert award.winner == "q" and award.held == []        # slow beats none


def test_a_healthy_bid_releases_a_connection_strike_before_the_decision(book) -> None:
    bids = [bid("back", 0.0), bid("other", 90.0)]
    table = {"back": Quarantined("back", NOW + 60, 1, "unavailable", "classify: unavailable")}
    award = run("lowest-cpu", bids, book, quarantine=table)
    assert award.released == ["back"] and award.winner == "back" and award.held == []


def test_devices_that_failed_the_stage_are_skipped_unless_only_they_remain(book) -> None:
    bids = [bid("failed-before", 0.0), bid("fresh", 90.0)]
    assert run("lowest-cpu", bids, book, excluded={"failed-before"}).winner == "fresh"
    only = [bid("failed-before", 0.0)]
    assert run("lowest-cpu", only, book, excluded={"failed-before"}).winner == "failed-before"


def test_no_eligible_device_is_an_award_without_winner(book) -> None:
    award = run("ect", [bid("dead", error="offline", cpu_load=float("nan"))], book)
    assert award.winner is None and "no eligible device" in award.decision.reason
    assert award.others == ()


def test_inflight_is_read_and_updated_only_through_decide_and_add(book) -> None:
    """Two equal phones: the second task goes to the phone without our first one (the
    award is visible to the next decision), `others` says what ran there, and releasing
    the award frees the phone again."""
    inflight = Inflight()
    bids = [bid("a"), bid("b")]
    kw = dict(policy=get_policy("ect"), profiles=book, rng=random.Random(3))
    first = inflight.decide_and_add(CLS, bids, {}, NOW, **kw)
    assert inflight.snapshot() == {first.winner: (CLS,)} and first.others == ()
    second = inflight.decide_and_add(CLS, bids, {}, NOW, **kw)
    assert second.winner != first.winner
    assert set(inflight.snapshot()) == {"a", "b"}
    inflight.start(first, NOW + 1)
    assert inflight.snapshot()[first.winner][0].started_at == NOW + 1
    inflight.remove(first)
    inflight.remove(second)
    assert inflight.snapshot() == {}
    # a winner the caller cannot reach is not counted as busy
    third = inflight.decide_and_add(CLS, bids, {}, NOW, eligible={"nobody"}, **kw)
    assert third.winner in ("a", "b") and inflight.snapshot() == {}
    # others: our tasks already on the winner when it won
    only = [bid("solo")]
    one = inflight.decide_and_add(CLS, only, {}, NOW, **kw)
    two = inflight.decide_and_add(CLS, only, {}, NOW, **kw)
    assert one.others == () and two.others == (CLS,)


def test_concurrent_decisions_never_lose_an_award(book) -> None:
    inflight = Inflight()
    bids = [bid(s) for s in "abcd"]
    awards: list = []
    lock = threading.Lock()

    def worker(seed: int) -> None:
        for _ in range(10):
            a = inflight.decide_and_add(CLS, bids, {}, NOW, policy=get_policy("ect"),
                                        profiles=book, rng=random.Random(seed))
            with lock:
                awards.append(a)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(v) for v in inflight.snapshot().values()) == 40
    for a in awards:
        inflight.remove(a)
    assert inflight.snapshot() == {}


def test_the_simulator_decides_through_the_same_function(monkeypatch) -> None:
    from adbflow.sim import SimConfig, fleet_profiles, make_instance, simulate
    calls = []
    real = dispatch.decide

    def spy(*a, **kw):
        calls.append(a[0].stage)
        return real(*a, **kw)

    monkeypatch.setattr("adbflow.sim.engine.decide", spy)
    cfg = SimConfig(n_jobs=12, seed=2)
    inst = make_instance(cfg, fleet_profiles(ProfileBook.load())[:3])
    res = simulate(inst, "ect")
    assert calls.count("classify") == 12 and calls.count("generate") == 12
    assert sum(sum(v.values()) for v in res.awards.values()) == 24


# ---------------------------------------------------------------------- RetryPolicy

def test_retry_budget_counts_failures_from_earlier_runs() -> None:
    r = RetryPolicy(attempts=3)
    assert [r.budget(n) for n in range(5)] == [3, 2, 1, 0, 0]


def test_origin_stages_back_off_others_pause_flat_and_both_are_capped() -> None:
    cfg = PipelineConfig(retry_wait_s=1.5)
    origin, other = cfg.retry(origin_only=True), cfg.retry()
    assert origin.attempts == other.attempts == cfg.attempts
    assert [origin.pause_after(n) for n in range(5)] == [1.5, 3.0, 6.0, 10.0, 10.0]
    assert [other.pause_after(n) for n in range(3)] == [1.5, 1.5, 1.5]
    # the rule the attempt loop had inline: min(retry_wait_s * (2**n if origin else 1), 10)
    for wait in (0.2, 1.0, 7.0, 30.0):
        for n in range(6):
            for back in (True, False):
                r = RetryPolicy(3, wait, back)
                assert r.pause_after(n) == min(wait * (2 ** n if back else 1), 10.0)
