"""Learned service times: EWMA per (device, stage), normalised by load, persisted in SQLite."""
from __future__ import annotations

import sqlite3

import pytest

from adbflow.scheduling.service_times import ServiceTimes, load_factor


def test_load_factor_is_processor_sharing_capped():
    assert load_factor(0.0) == 1.0
    assert load_factor(50.0) == pytest.approx(2.0)
    assert load_factor(100.0) == pytest.approx(20.0)        # capped at 95 %
    assert load_factor(float("nan")) == 1.0
    assert load_factor(50.0, sensitivity=0.5) == pytest.approx(1 / 0.75)


def test_ewma_learns_per_unit_time_at_zero_load():
    st = ServiceTimes(None, alpha=0.5)
    assert st.estimate("a", "generate") is None
    st.record("a", "generate", 6.4, cpu_load=0.0, units=64)       # 0.1 s/token idle
    assert st.estimate("a", "generate") == pytest.approx(0.1)
    st.record("a", "generate", 12.8, cpu_load=50.0, units=64)     # 2x slower at 50 %: same speed
    assert st.estimate("a", "generate") == pytest.approx(0.1)
    st.record("a", "generate", 19.2, cpu_load=0.0, units=64)      # really slower now
    assert st.estimate("a", "generate") == pytest.approx(0.2)
    assert st.details("a", "generate").samples == 3
    assert st.estimate("a", "classify") is None and st.estimate("b", "generate") is None


def test_nonsense_samples_are_ignored():
    st = ServiceTimes(None)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        st.record("a", "classify", bad, cpu_load=0.0)
    st.record("a", "classify", 1.0, cpu_load=0.0, units=0)
    assert st.estimate("a", "classify") is None


def test_persists_in_its_own_table_of_the_journal_file(tmp_path):
    db = tmp_path / "journal.sqlite"
    with sqlite3.connect(db) as con:                     # the journal's own table is untouched
        con.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, name TEXT)")
        con.execute("INSERT INTO jobs (name) VALUES ('x')")
    st = ServiceTimes(db)
    st.record("127.0.0.1:20000", "classify", 0.2, cpu_load=0.0, at=123.0)
    st.record("127.0.0.1:20000", "classify", 0.4, cpu_load=0.0, at=124.0)
    expected = st.estimate("127.0.0.1:20000", "classify")
    st.close()
    again = ServiceTimes(db)
    assert again.estimate("127.0.0.1:20000", "classify") == pytest.approx(expected)
    assert again.last_run("127.0.0.1:20000", "classify") == 124.0
    assert again.details("127.0.0.1:20000", "classify").samples == 2
    again.close()
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT name FROM jobs").fetchall() == [("x",)]
