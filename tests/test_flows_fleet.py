"""The `cascade` flow end to end on a 2-device virtual fleet (real int8 Lite0 and Lite2 on
the devices): a confident picture is not escalated and gets a story; an unsure one is
escalated to Lite2 on the other phone and, still unsure, gets no story. Every gate decision
is in the journal, and the strict-origin stage provably pushed pixels only to the origin."""
from __future__ import annotations

import dataclasses

import pytest
from fleet_helpers import (
    CHELSEA,
    COFFEE,
    PICTURES_APP,
    cheap_profiles,
    device,
    healthy,  # noqa: F401 - a fixture, found by name
    inventory,
    module_fleet,
)

from adbflow.flows import load
from adbflow.flows.model import Gate, GateKind
from adbflow.runtime.detect import PICTURES_DIR, NewPicture
from adbflow.runtime.pipeline import Pipeline, PipelineConfig
from adbflow.runtime.stages import REMOTE_IMAGE
from adbflow.scheduling.profiles import ProfileBook

pytestmark = pytest.mark.fleet

fleet = module_fleet(2, ["midrange_2023"])

# int8 Lite0 top-1 on the fleet: coffee.png ~0.88 (espresso), chelsea.png ~0.82 (tabby);
# Lite2 on chelsea ~0.75. tau between the two small-model scores, story floor above 0.75.
TAU, STORY_FLOOR = 0.85, 0.8


def _flow():
    base = load.load("cascade")
    small, big, story = base.stages
    big = dataclasses.replace(big, gate=dataclasses.replace(big.gate, tau=TAU))
    story = dataclasses.replace(story, gate=Gate(GateKind.CONFIDENT,
                                                 min_confidence=STORY_FLOOR))
    return dataclasses.replace(base, stages=(small, big, story), drift=None).validate()


def _picture(fleet, serial, image, name) -> NewPicture:
    remote = fleet.snap(serial, image, name=name, **PICTURES_APP)
    st = device(fleet, serial).stat(remote, timeout=10)
    assert st is not None
    return NewPicture(serial, PICTURES_DIR, remote.rsplit("/", 1)[-1], int(st.size),
                      float(st.mtime), "listing")


def _received(fleet, serial) -> bool:
    return device(fleet, serial).stat(REMOTE_IMAGE, timeout=10) is not None


def test_cascade_end_to_end(healthy, tmp_path) -> None:
    fleet = healthy
    origin, other = fleet.serials
    for s in fleet.serials:
        device(fleet, s).run(["rm", "-f", REMOTE_IMAGE], timeout=10)
    fleet.load(origin, 85)   # the origin is the slow choice: only strict origin keeps it
    book = ProfileBook.load(cheap_profiles(tmp_path / "profiles"))
    p = Pipeline(PipelineConfig(data_dir=tmp_path / "data", retry_wait_s=0.2),
                 inventory(fleet), profiles=book, flow=_flow())
    try:
        # 1. confident: small on the origin, no escalation, a story
        job_id, _ = p.add_device_picture(_picture(fleet, origin, COFFEE, "coffee.png"))
        job = p.process(job_id)
        assert job.state == "done", job.error
        r = job.result
        assert r["flow"] == "cascade" and r["classified_by"] == "small"
        assert r["stages"]["small"]["serial"] == origin
        assert r["stages"]["small"]["model"] == "lite0-int8"
        assert not r["stages"]["big"]["ran"]
        assert r["stages"]["big"]["gate"]["run"] is False
        assert r["stages"]["story"]["ran"] and len(r["story"].strip()) > 5
        assert "espresso" in " ".join(lb["name"] for lb in r["labels"])
        # strict origin: the pixels reached the origin and no other phone
        assert _received(fleet, origin) and not _received(fleet, other)

        # 2. unsure: escalated to Lite2 on the idle phone, still unsure -> no story
        job_id, _ = p.add_device_picture(_picture(fleet, origin, CHELSEA, "chelsea.png"))
        job = p.process(job_id)
        assert job.state == "done", job.error
        r = job.result
        small, big = r["stages"]["small"], r["stages"]["big"]
        assert small["serial"] == origin and small["top1"] < TAU
        assert big["ran"] and big["serial"] == other and big["model"] == "lite2"
        assert big["gate"]["run"] and "tau" in big["gate"]["reason"]
        assert r["classified_by"] == "big"
        assert not r["stages"]["story"]["ran"] and r["story"] == ""
        assert any(w in " ".join(lb["name"] for lb in r["labels"]) for w in ("cat", "tabby"))

        # every stage has one journal row, skipped ones carry their gate decision
        rows = {a.stage: a for a in p.journal.attempts(job_id) if a.state == "done"}
        assert set(rows) == {"pull", "small", "big", "story"}
        assert rows["story"].output["skipped"] and rows["story"].serial is None
        assert rows["story"].output["gate"]["kind"] == "confident"
        assert rows["big"].output["selection"]["model"] == "lite2"
    finally:
        p.stop_event.set()
        p.close()


def test_filter_flow_story_only_for_animals(healthy, tmp_path) -> None:
    fleet = healthy
    origin = fleet.serials[0]
    book = ProfileBook.load(cheap_profiles(tmp_path / "profiles"))
    p = Pipeline(PipelineConfig(data_dir=tmp_path / "data", retry_wait_s=0.2),
                 inventory(fleet), profiles=book, flow=load.load("filter"))
    try:
        done = {}
        for image, name in ((CHELSEA, "cat.png"), (COFFEE, "cup.png")):
            job_id, _ = p.add_device_picture(_picture(fleet, origin, image, name))
            job = p.process(job_id)
            assert job.state == "done", job.error
            done[name] = job.result
        cat, cup = done["cat.png"], done["cup.png"]
        assert cat["stages"]["story"]["ran"] and cat["story"].strip()
        assert cat["stages"]["classify"]["model"] == "lite0-int8"
        assert not cup["stages"]["story"]["ran"] and cup["story"] == ""
        assert "not in animals" in cup["stages"]["story"]["gate"]["reason"]
    finally:
        p.stop_event.set()
        p.close()
