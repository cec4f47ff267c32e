"""The mesh audits (adbflow/mesh/audit.py) on hand-written lease logs, without devices.

Why: the p2p fleet tests conclude "zero double-booked slots" from these functions; they
must be able to fail. Each case is a log a broken lease would write.
"""
from __future__ import annotations

from adbflow.mesh import audit


def log(*lines: str) -> list[audit.LeaseEvent]:
    return audit.parse_lease_log("\n".join(lines))


def test_a_clean_log_has_no_double_booking_and_its_holds_end_where_they_did():
    evs = log("grant classify 1 mesh.p1.a 100 150",
              "renew classify 1 mesh.p1.a 110 140",       # a renewal may shorten it
              "finish classify 1 mesh.p1.a 130 130",
              "grant classify 2 mesh.p2.b 130 180",       # at the release: fine
              "renew classify 2 mesh.p2.b 140 170",       # then killed: expires at 170
              "grant classify 3 mesh.p3.c 170 220",
              "grant generate 1 mesh.p1.a 120 170")
    hs = audit.holds(evs)
    assert [(h.token, h.start_ds, h.end_ds, h.released) for h in hs["classify"]] == \
        [(1, 100, 130, True), (2, 130, 170, False), (3, 170, 220, False)]
    assert audit.double_bookings(evs) == []


def test_overlaps_reused_tokens_and_out_of_order_tokens_are_double_bookings():
    over = log("grant classify 1 mesh.p1.a 100 150", "grant classify 2 mesh.p2.b 140 190")
    assert [b.why for b in audit.double_bookings(over)] == ["granted while held"]
    renewed = log("grant classify 1 mesh.p1.a 100 150", "renew classify 1 mesh.p1.a 140 200",
                  "grant classify 2 mesh.p2.b 160 210")
    assert [b.why for b in audit.double_bookings(renewed)] == ["granted while held"]
    late_finish = log("grant classify 1 mesh.p1.a 100 150", "grant classify 2 mesh.p2.b 150 200",
                      "finish classify 1 mesh.p1.a 170 170")
    assert [b.why for b in audit.double_bookings(late_finish)] == ["granted while held"]
    twice = log("grant classify 4 mesh.p1.a 100 150", "finish classify 4 mesh.p1.a 110 110",
                "grant classify 4 mesh.p2.b 120 170")
    assert [b.why for b in audit.double_bookings(twice)] == ["token granted twice"]
    backwards = log("grant classify 5 mesh.p1.a 300 310", "finish classify 5 mesh.p1.a 305 305",
                    "grant classify 6 mesh.p2.b 200 210", "finish classify 6 mesh.p2.b 205 205")
    assert [b.why for b in audit.double_bookings(backwards)] == \
        ["token older than its predecessor"]


def test_malformed_or_hostile_lines_are_dropped_as_data():
    evs = log("grant classify 1 mesh.p1.a 100 150", "grant classify x mesh 1 2",
              "grant $(touch x) 1 o 1 2", "rm -rf / 1 2 3 4 5", "renew classify 1 a 1",
              "grant classify 99999999999 o 1 2")
    assert len(evs) == 1


def test_every_picture_done_exactly_once():
    jobs = [{"source": "/a", "state": "done"}, {"source": "/b", "state": "done"},
            {"source": "/b", "state": "failed-classify"}, {"source": "/c", "state": "pending"}]
    a = audit.pictures_done_once(["/a", "/b", "/c", "/d"], jobs)
    assert a.done_once == ["/a"] and a.missing == ["/c", "/d"] and a.repeated == {"/b": 2}
