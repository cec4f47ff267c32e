"""Cross-job quarantine: the pure decision (adbflow.scheduling.quarantine) and the pipeline using it
against in-memory devices (a hung device costs one timeout, not one per job)."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pytest
from pipeline_fakes import FakeBidder, FakeDevice, FakeInventory
from test_pipeline_unit import add, label_calls, make

from adbflow.cli.live import LiveView
from adbflow.paths import ASSETS_DIR
from adbflow.runtime.events import BidRound, DeviceQuarantined, DeviceReleased, Event
from adbflow.scheduling.quarantine import (
    Quarantined,
    QuarantineRules,
    active,
    apply,
    cleared_by_bids,
    forget_expired,
    strike,
)

CHELSEA = (ASSETS_DIR / "chelsea.png").read_bytes()
RULES = QuarantineRules(base_s=30, cap_s=100, memory_s=300)


@dataclass
class B:
    serial: str
    ok: bool = True


# ------------------------------------------------------------------ pure decisions

def test_strike_doubles_on_repeats_up_to_the_cap() -> None:
    q = strike(None, "s", "timeout", "classify: timeout", 1000.0, RULES)
    assert (q.until, q.strikes) == (1030.0, 1)
    # fails again after being let back: doubled, then capped
    q2 = strike(q, "s", "timeout", "x", 1040.0, RULES)
    assert (q2.until, q2.strikes) == (1100.0, 2)
    q3 = strike(q2, "s", "unavailable", "x", 1101.0, RULES)
    assert (q3.until - 1101.0, q3.strikes, q3.kind) == (100.0, 3, "unavailable")   # cap
    # a second report of the same hang while quarantined does not double it
    again = strike(q, "s", "timeout", "x", 1010.0, RULES)
    assert again.strikes == 1 and again.until == 1040.0
    # long after the last one expired: a fresh first strike
    assert strike(q2, "s", "timeout", "x", 1100.0 + 301, RULES).strikes == 1


@pytest.mark.parametrize("kind", ["exit", "parse", "no-device", "input", "internal"])
def test_cheap_failures_do_not_quarantine(kind) -> None:
    assert strike(None, "s", kind, "x", 0.0, RULES) is None
    prev = Quarantined("s", 50.0, 1, "timeout", "x")
    assert strike(prev, "s", kind, "x", 10.0, RULES) is prev


def test_apply_holds_back_quarantined_bids_but_never_starves() -> None:
    table = {"a": Quarantined("a", 100.0, 1, "timeout", "x"),
             "old": Quarantined("old", 10.0, 1, "timeout", "x")}
    bids = [B("a"), B("b"), B("old"), B("dead", ok=False)]
    kept, held = apply(bids, table, now=50.0)
    assert [b.serial for b in kept] == ["b", "old", "dead"] and held == ["a"]
    assert set(active(table, 50.0)) == {"a"}
    # every healthy device is quarantined: all are offered (slow beats none)
    kept, held = apply([B("a"), B("dead", ok=False)], table, now=50.0)
    assert [b.serial for b in kept] == ["a", "dead"] and held == []
    assert set(forget_expired(table, 10.0 + 301, RULES)) == {"a"}
    assert forget_expired(table, 100.0 + 301, RULES) == {}
    assert set(forget_expired(table, 50.0, RULES)) == {"a", "old"}


def test_healthy_bid_clears_only_connection_strikes() -> None:
    table = {"gone": Quarantined("gone", 100.0, 1, "unavailable", "x"),
             "adb": Quarantined("adb", 100.0, 1, "adb", "x"),
             "hung": Quarantined("hung", 100.0, 1, "timeout", "x"),
             "still-gone": Quarantined("still-gone", 100.0, 1, "unavailable", "x")}
    bids = [B("gone"), B("adb"), B("hung"), B("still-gone", ok=False)]
    assert cleared_by_bids(table, bids) == ["adb", "gone"]


# ------------------------------------------------------------------ in the pipeline

@pytest.fixture
def fleet():
    devs = [FakeDevice(f"dev{i}") for i in (1, 2, 3)]
    return devs, FakeInventory(devs), FakeBidder({"dev1": 70.0, "dev2": 40.0, "dev3": 5.0})


def test_hung_device_is_skipped_by_the_next_jobs_then_comes_back(tmp_path, fleet) -> None:
    devs, inv, bidder = fleet
    devs[2].faults["label_image"] = "hang"           # dev3 wins every bid, then times out
    events: list[Event] = []
    # lowest-cpu: a pure function of the fake loads, so which device wins is certain here
    # (ect would also weigh cold-start and learned times, which this test is not about)
    p = make(tmp_path, inv, bidder, quarantine=QuarantineRules(base_s=2.0, cap_s=8),
             policy="lowest-cpu")
    p.on_event = events.append
    first = p.process(add(p, devs[1], "a.png", CHELSEA))
    assert first.state == "done" and first.result["devices"]["classify"] == "dev2"
    q = [e for e in events if isinstance(e, DeviceQuarantined)]
    assert [(e.serial, e.kind, e.stage, e.strikes) for e in q] == \
        [("dev3", "timeout", "classify", 1)]
    json.dumps([e.to_json() for e in events])        # events stay JSON-able
    assert [d["serial"] for d in p.quarantined()] == ["dev3"]
    # the same job's generate and the next job do not go near dev3 while it sits out
    assert first.result["devices"]["generate"] == "dev2"
    assert first.result["decisions"]["generate"]["quarantined"] == ["dev3"]
    second = p.process(add(p, devs[1], "b.png", CHELSEA, mtime=2000.0))
    assert second.state == "done" and second.result["attempts"]["classify"] == 1
    assert label_calls(devs)["dev3"] == 1            # one timeout paid, not one per job
    bid_events = [e for e in events if isinstance(e, BidRound)]
    # bid 0 chose dev3, bid 1 (the re-bid) excluded it within the job; from then on the
    # quarantine holds it back
    assert [e.quarantined for e in bid_events[2:]] == [["dev3"]] * 3
    # expiry: dev3 is let back, succeeds, and the success clears it
    devs[2].faults.clear()
    until = p.quarantined()[0]["until"]
    time.sleep(max(0.0, until - time.time()) + 0.05)
    third = p.process(add(p, devs[1], "c.png", CHELSEA, mtime=3000.0))
    assert third.result["devices"]["classify"] == "dev3"
    released = [e for e in events if isinstance(e, DeviceReleased)]
    assert released and released[0].serial == "dev3" and "succeeded" in released[0].reason
    assert p.quarantined() == []
    p.close()


def test_only_quarantined_devices_left_are_still_used(tmp_path) -> None:
    dev = FakeDevice("solo")
    dev.faults["llama-completion"] = "hang"
    p = make(tmp_path, FakeInventory([dev]), FakeBidder({"solo": 5.0}), attempts=2)
    job = p.process(add(p, dev, "a.png", CHELSEA))
    assert job.state == "failed" and "generate failed after 2 attempts" in job.error
    dev.faults.clear()
    job2 = p.process(add(p, dev, "b.png", CHELSEA, mtime=2000.0))
    assert job2.state == "done", job2.error          # quarantined, but the only device
    assert p.quarantined() == []                     # and its success cleared it
    p.close()


def test_quarantine_can_be_disabled(tmp_path, fleet) -> None:
    devs, inv, bidder = fleet
    devs[2].faults["label_image"] = "hang"
    p = make(tmp_path, inv, bidder, quarantine=None, policy="lowest-cpu")
    p.process(add(p, devs[1], "a.png", CHELSEA))
    p.process(add(p, devs[1], "b.png", CHELSEA, mtime=2000.0))
    assert label_calls(devs)["dev3"] == 2 and p.quarantined() == []
    p.close()


def test_watch_view_shows_quarantined_devices() -> None:
    view = LiveView(json_out=False, live=False)
    now = time.time()
    view(DeviceQuarantined(serial="dev3", job=1, stage="classify", seconds=30.0,
                           until=now + 30, strikes=1, kind="timeout", error="timed out", t=now))
    caption = view.quarantine_caption(now + 5)
    assert caption.startswith("quarantined: dev3 25 s (timeout)"), caption
    assert view.quarantine_caption(now + 31) == ""   # expired: no longer shown
    assert view._table().caption.startswith("quarantined: dev3")
    view(DeviceReleased(serial="dev3", reason="healthy bid", t=now))
    assert view.quarantine_caption(now) == ""
