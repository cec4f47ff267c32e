"""Issue 19's bench plumbing, pure: the run_all table says met/MISSED from the measured
ratios against the issue's goals, the ideal is the sum of each phone's profile rate, and
run_all knows every issue-19 bench (the warm slot included) without a fleet."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402
import run_all  # noqa: E402
import throughput  # noqa: E402

from adbflow.paths import PROFILES_DIR  # noqa: E402
from adbflow.scheduling.profiles import ProfileBook  # noqa: E402


class _Bid:
    def __init__(self, model: str, load: float = 0.0) -> None:
        self.model, self.cpu_load, self.ok = model, load, True


def _verdicts(res: dict) -> dict[str, str]:
    return {r[0]: r[5] for r in common.table_rows(res)}


def test_throughput_rows_judge_n8_and_n16_against_09x_only() -> None:
    rows = [{"n": n, "fleet_per_min": x * 10, "ideal_per_min": 10.0, "fleet_x_ideal": x,
             "host_share": 0.3, "ideal_host_demand": 0.3}
            for n, x in ((4, 0.5), (8, 0.95), (16, 0.85))]
    v = _verdicts({"throughput": {"rows": rows, "class": ["budget_2018"], "slow_factor": 5}})
    assert v["throughput N=4 (budget_2018 x5)"].startswith("n/a")      # no goal at N=4
    assert v["throughput N=8 (budget_2018 x5)"].startswith("met")
    assert v["throughput N=16 (budget_2018 x5)"].startswith("MISSED")


def test_bid_stream_rows_use_the_issue_limits_per_size() -> None:
    rows = [{"n": 8, "shell": 10.0, "floor": 30.0, "oneshot": 40.0, "cached": 1.0,
             "requested": 16.0, "laptop_cpu": 1.0},
            {"n": 100, "shell": 10.0, "floor": 300.0, "oneshot": 400.0, "cached": 2.0,
             "requested": 29.0, "laptop_cpu": 9.0}]
    v = _verdicts({"bidstream": {"rows": rows}})
    assert v["bid round N=8 streamed, requested"].startswith("MISSED")   # 1.6x > 1.5x
    assert v["bid round N=100 streamed, requested"].startswith("met")    # 2.9x <= 3x
    assert v["bid round N=8 streamed, cached"].startswith("met")


def test_provision_and_part_tables_pass_through() -> None:
    pv = {"devices": 8, "mb": 32, "rows": [
        {"setting": "loopback", "link_mb_s": [], "provision_s": 4.0, "loop_s": 2.0,
         "x_loop": 0.5},
        {"setting": "profile link", "link_mb_s": [38.0], "provision_s": 2.0, "loop_s": 6.0,
         "x_loop": 3.0}]}
    warm = {"table": [{"what": "warm generate", "ratio": 0.5, "goal": "<= 0.7x", "ok": True}]}
    v = _verdicts({"provision": pv, "warm": warm})
    assert v["provision 8 phones x 32 MB (loopback)"].startswith("MISSED")
    assert v["provision 8 phones x 32 MB (profile link)"].startswith("met")
    assert v["warm generate"] == "met"


def test_run_all_lists_every_issue19_bench_and_a_missing_one_says_so(tmp_path,
                                                                     monkeypatch) -> None:
    assert set(run_all.ISSUE19) == {"throughput", "bidstream", "warm", "transfer_big",
                                    "provision"}
    for name, module in run_all.ISSUE19.items():
        if name != "warm":                       # the warm-models branch adds bench/warm.py
            assert (BENCH / f"{module}.py").exists(), module
    monkeypatch.setattr(run_all, "BENCH_DIR", tmp_path)
    assert "not present" in run_all.issue19_part("warm", quick=True)["error"]


def test_ideal_is_the_sum_of_each_phones_profile_rate() -> None:
    book = ProfileBook.load(PROFILES_DIR)
    slow = book.for_model("adbflow-virtual budget_2018").timing
    fast = book.for_model("adbflow-virtual flagship_2025").timing
    assert fast.gen_tok_s > slow.gen_tok_s
    work = [(50, 60)]
    one = throughput.ideal_per_min(book, [_Bid("adbflow-virtual budget_2018")], work, 1.0)
    two = throughput.ideal_per_min(book, [_Bid("adbflow-virtual budget_2018"),
                                          _Bid("adbflow-virtual flagship_2025")], work, 1.0)
    assert two > 2 * one                                     # the fast phone adds more
    assert throughput.ideal_per_min(book, [_Bid("adbflow-virtual budget_2018")], work,
                                    5.0) < one / 4           # slow_factor x5: about a fifth
    busy = throughput.ideal_per_min(book, [_Bid("adbflow-virtual budget_2018", 50.0)], work,
                                    1.0)
    assert busy < one                                        # its own apps are not ours
    per_job = 60.0 / one                       # the profile's one-shot load time is in it
    assert per_job == pytest.approx((slow.classify_ms + slow.classify_load_ms
                                     + slow.generate_load_ms) / 1000.0 + 50 / slow.prompt_tok_s
                                    + 60 / slow.gen_tok_s + 2 * slow.adb_latency_ms / 1000.0)


@pytest.mark.parametrize("ratio", [0.5, 2.0])
def test_runs_vs_profile_is_run_time_over_the_profiles(ratio) -> None:
    book = ProfileBook.load(PROFILES_DIR)
    t = book.for_model("adbflow-virtual budget_2018").timing
    work = [(50, 60)]
    assert t.generate_load_ms > 0              # a one-shot start pays the model load
    parts = {"classify.run": ratio * (t.classify_ms + t.classify_load_ms) / 1000.0 * 3.0,
             "generate.run": ratio * (t.generate_load_ms / 1000.0 + 50 / t.prompt_tok_s
                                      + 60 / t.gen_tok_s) * 3.0}
    out = throughput.runs_vs_profile(book, [_Bid("adbflow-virtual budget_2018")], parts, work, 3.0)
    assert out == pytest.approx({"classify": ratio, "generate": ratio})
