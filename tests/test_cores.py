"""llama.cpp's threads go on a phone's performance cores (adbflow.scheduling.cores): the
probe's cpufreq/cpu_capacity lines, the pure rule, the fleet's simulation of a thread on a
little core, and on virtual phones a story on a 2 big + 6 little Snapdragon 720G class
running with 2 threads and faster than with the profile's 4."""

from __future__ import annotations

import pytest

from adbflow.device import AdbServer, Device
from adbflow.fleet.profile import load_virtual_profile
from adbflow.fleet.programs import common
from adbflow.fleet.programs.llama_completion import token_rate
from adbflow.parsers.sysfs import CpuFreq, parse_cpufreq
from adbflow.runtime.stages import StageTimeouts, generate_on, llama_for
from adbflow.scheduling.bids import Bidder
from adbflow.scheduling.cores import performance_cores, program_threads
from adbflow.scheduling.profiles import ProfileBook
from tests.fleet_helpers import cheap_profiles

CLASSES = ["ancient_2015", "budget_2018", "flagship_2019", "flagship_2023", "flagship_2024",
           "flagship_2025", "legacy_2016", "lowend_2020", "midrange_2023", "old_2017"]


def _freqs(*clusters: tuple[int, int, int | None]) -> dict[int, CpuFreq]:
    """(count, max_khz, capacity) per cluster -> the probe's per-cpu readings."""
    out, i = {}, 0
    for n, mx, cap in clusters:
        for _ in range(n):
            out[i] = CpuFreq(mx // 2, mx, cap)
            i += 1
    return out


def test_the_probe_line_carries_capacity_and_dashes_for_unreadable_files() -> None:
    f = parse_cpufreq("cpu0 300000 1800000 350\ncpu1 - 1800000 -\ncpu2 - - -\n"
                      "cpu7 2300000 2300000 1024\ncpu3 1 2 3 4\ncpu4 x 1 1\ncpuX 1 1 1\n")
    assert f[0] == CpuFreq(300000, 1800000, 350)
    assert f[1] == CpuFreq(None, 1800000, None) and f[2] == CpuFreq(None, None, None)
    assert f[7].capacity == 1024 and set(f) == {0, 1, 2, 7}     # malformed lines skipped
    assert parse_cpufreq("cpu0 300000 1800000\n")[0] == CpuFreq(300000, 1800000, None)


def test_performance_cores_from_capacity_then_frequency_clusters() -> None:
    # capacity: a Snapdragon 720G (2 x A76 2.3 GHz, 6 x A55 1.8 GHz), a 1+3+4 and a 2+6 mid
    assert performance_cores(_freqs((6, 1800000, 350), (2, 2300000, 1024))) == 2
    assert performance_cores(_freqs((4, 1800000, 284), (3, 2420000, 872),
                                    (1, 2840000, 1024))) == 4
    assert performance_cores(_freqs((6, 3530000, 837), (2, 4320000, 1024))) == 8
    # no capacity: three clusters drop the slowest; two only when it is <= 80 % of the top
    assert performance_cores(_freqs((4, 1800000, None), (3, 2420000, None),
                                    (1, 2840000, None))) == 4
    assert performance_cores(_freqs((6, 1800000, None), (2, 2300000, None))) == 2
    assert performance_cores(_freqs((6, 3530000, None), (2, 4320000, None))) == 8
    assert performance_cores(_freqs((8, 2000000, None))) == 8
    # capacity on only some cores is not trusted (frequency decides)
    mixed = _freqs((6, 1800000, None), (2, 2300000, 1024))
    assert performance_cores(mixed) == 2
    assert performance_cores({}) is None
    assert performance_cores({0: CpuFreq(None, None, None)}) is None


def test_program_threads_caps_at_the_performance_cores() -> None:
    assert program_threads(4, 2) == 2 and program_threads(4, 8) == 4
    assert program_threads(4, None) == 4 and program_threads(0, None) == 1


@pytest.mark.parametrize("cls", CLASSES)
def test_the_fleet_topology_reads_back_as_its_big_and_mid_cores(cls: str) -> None:
    """What a virtual phone's sysfs says (cpu_capacity, cpuinfo_max_freq) gives adbflow's
    rule the class's own big + mid count, with and without the capacity file."""
    vp = load_virtual_profile(cls)
    maxes, caps = vp.core_max_khz(), vp.core_capacity()
    with_cap = {i: CpuFreq(None, m, c) for i, (m, c) in enumerate(zip(maxes, caps))}
    no_cap = {i: CpuFreq(None, m, None) for i, m in enumerate(maxes)}
    assert max(caps) == 1024
    assert performance_cores(with_cap) == vp.perf_cores == vp.cores_big + vp.cores_mid
    # a Helio P60 clocks its A73s and A53s alike (2.0 GHz): only cpu_capacity tells them
    # apart, and without it every core counts (no guess)
    same_clock = len(set(maxes)) == 1
    assert performance_cores(no_cap) == (vp.ncores if same_clock else vp.perf_cores)
    assert same_clock == (cls == "budget_2018")


def test_a_thread_on_a_little_core_slows_the_simulated_decode() -> None:
    low = common.DeviceState(ncores=8, perf_cores=2, llm_tok_s=7.0)
    flag = common.DeviceState(ncores=8, perf_cores=4, llm_tok_s=20.0)
    idle = common.Slowdown(load=1.0, thermal=1.0, slow=1.0)
    assert token_rate(low, 2, idle) == pytest.approx(7.0)
    assert token_rate(low, 4, idle) == pytest.approx(7.0 * 0.65)
    assert token_rate(low, 1, idle) < token_rate(low, 2, idle)
    assert token_rate(flag, 4, idle) == pytest.approx(20.0)
    assert token_rate(flag, 6, idle) == pytest.approx(20.0 * 0.65)
    assert token_rate(flag, 12, idle) < token_rate(flag, 8, idle)


@pytest.mark.timing
def test_a_story_on_a_2_plus_6_phone_runs_on_its_2_big_cores(fleet_factory, tmp_path) -> None:
    fleet = fleet_factory(devices=2, profiles=["lowend_2020", "flagship_2019"])
    try:
        book = ProfileBook.load(cheap_profiles(tmp_path / "profiles", n_predict=12))
        timeouts = StageTimeouts(generate_s=120.0)
        threads: dict[str, int] = {}
        for serial in fleet.serials:
            dev = Device(serial, AdbServer(port=fleet.adb_port))
            bid = Bidder().bid(dev)
            assert bid.ok, bid
            profile = book.for_model(bid.model)
            spec = llama_for(profile, bid.perf_cores)
            threads[str(bid.model).split()[-1]] = spec.threads
            if spec.threads == profile.llama.threads:
                continue
            mine = generate_on(dev, spec, "a cat", timeouts=timeouts)
            four = generate_on(dev, profile.llama, "a cat", timeouts=timeouts)
            r_mine, r_four = float(mine["eval_tok_s"]), float(four["eval_tok_s"])
            assert r_four < 0.8 * r_mine, (r_four, r_mine)
        assert threads == {"lowend_2020": 2, "flagship_2019": 4}, threads
    finally:
        fleet_factory.release(fleet)
