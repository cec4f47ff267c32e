"""Numbers from device output: "1e309" and 400-digit runs overflow float() to inf; no parser
may hand such a value on (the fuzz suite found one that did)."""
from __future__ import annotations

from pathlib import Path

import pytest

from adbflow.parsers.adb_messages import parse_transfer_summaries
from adbflow.parsers.cpuinfo import parse_dumpsys_cpuinfo
from adbflow.parsers.numbers import finite_float
from adbflow.parsers.thermal import parse_thermal

FIX = Path(__file__).parent / "fixtures"
HUGE = "9" * 400          # no exponent, still inf as a float


@pytest.mark.parametrize("text,expected", [("1.5", 1.5), ("-2e3", -2000.0), ("0", 0.0),
                                           ("1e309", None), ("-1e309", None), (HUGE, None),
                                           ("nan", None), ("inf", None), ("1.2.3", None), ("", None)])
def test_finite_float(text, expected):
    assert finite_float(text) == expected


def test_thermal_reading_that_overflows_has_no_temperature():
    src = (FIX / "thermal/samsung_A52_5G_android12_androidSE_246774_thermalservice.txt").read_text()
    assert "mValue=25.6, mType=0, mName=AP," in src
    # the AP sensor in both sections (cached and current from HAL)
    t = parse_thermal(src.replace("mValue=25.6, mType=0, mName=AP,", "mValue=1e309, mType=0, mName=AP,"))
    assert {r.name: r.temp_c for r in t.readings}["AP"] is None
    assert len(t.readings) == 9 and t.hottest_c() == 25.7


def test_cpuinfo_percentage_that_overflows_counts_as_zero():
    d = parse_dumpsys_cpuinfo(f"Load: 1.0 / 1.0 / 1.0\nCPU usage from 1000ms to 0ms ago:\n"
                              f"  {HUGE}% 123/evil: {HUGE}% user + 1% kernel\n"
                              f"  5% 124/ok: 3% user + 2% kernel\n")
    rows = {r.name: r for r in d.windows[0].rows}
    assert (rows["evil"].pct, rows["evil"].user_pct, rows["evil"].kernel_pct) == (0.0, 0.0, 1.0)
    assert rows["ok"].pct == 5.0


def test_transfer_seconds_that_overflow_are_unknown():
    (s,) = parse_transfer_summaries(f"x: 1 file pushed, 0 skipped. 38.3 MB/s (773025920 bytes in {HUGE}s)\n")
    assert (s.files, s.nbytes, s.seconds) == (1, 773025920, None)
    (old,) = parse_transfer_summaries(f"1234 KB/s (22546 bytes in {HUGE}s)\n")
    assert (old.nbytes, old.seconds) == (22546, None)
