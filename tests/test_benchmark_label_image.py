"""benchmark_label_image: the load fit, the profile it writes, and a run on the virtual fleet."""
from __future__ import annotations

import shutil

import pytest

from adbflow.paths import PROFILES_DIR
from adbflow.scheduling.profiles import ProfileBook
from benchmark_label_image.run import DeviceReport, Point, fit_load_sensitivity, main, measured_profile


def test_fit_recovers_processor_sharing_and_partial_sensitivity():
    t0, s = fit_load_sensitivity([Point(0, 100.0), Point(50, 200.0), Point(75, 400.0)])
    assert t0 == pytest.approx(100.0) and s == pytest.approx(1.0)
    pts = [Point(load, 80.0 / (1 - 0.5 * load / 100)) for load in (10, 40, 70)]
    t0, s = fit_load_sensitivity(pts)
    assert s == pytest.approx(0.5, abs=1e-6) and t0 == pytest.approx(80.0, rel=1e-6)
    t0, s = fit_load_sensitivity([Point(0, 100.0), Point(60, 90.0)])   # noise: never < 0
    assert s == 0.0
    with pytest.raises(ValueError):
        fit_load_sensitivity([])


def test_measured_profile_takes_over_for_that_exact_model(tmp_path):
    book = ProfileBook.load()
    base = book.for_model("Pixel 4")
    rep = DeviceReport("SER", "Pixel 4", base.name, "benchmark_model",
                       points=[Point(0, 150.0, 12.0), Point(60, 300.0)], adb_latency_ms=3.5,
                       bandwidth_mb_s=41.0, classify_ms=150.0, load_sensitivity=0.83)
    prof = measured_profile(base, "Pixel 4", rep)
    assert prof.match_models == ["Pixel 4"] and prof.timing.classify_ms == 150.0
    assert prof.timing.gen_tok_s == base.timing.gen_tok_s          # not measured: kept
    assert prof.label_image == base.label_image
    assert prof.measurements[0]["measured_load_pct"] == 12.0


@pytest.mark.timing   # compares speeds measured at two loads
@pytest.mark.fleet
def test_calibrates_virtual_devices_at_two_loads(fleet_factory, tmp_path, capsys):
    client = fleet_factory(devices=2, profiles=["flagship_2025", "old_2017"])
    try:
        out = tmp_path / "profiles"
        rc = main(["--adb-server", f"127.0.0.1:{client.adb_port}", "--loads", "0", "60",
                   "--runs", "3", "--out", str(out), "--fleet-state-dir", str(client.state_dir)])
        text = capsys.readouterr().out
        assert rc == 0, text
        files = sorted(p.name for p in out.glob("*.toml"))
        assert files == ["adbflow-virtual_flagship_2025.toml", "adbflow-virtual_old_2017.toml"]
        # the measured files load next to the repository's profiles and win for their model
        book_dir = tmp_path / "book"
        book_dir.mkdir()
        for f in list(PROFILES_DIR.glob("*.toml")) + list(out.glob("*.toml")):
            shutil.copy(f, book_dir)
        book = ProfileBook.load(book_dir)
        fast = book.for_model("adbflow-virtual flagship_2025")
        slow = book.for_model("adbflow-virtual old_2017")
        assert fast.name == "adbflow-virtual_flagship_2025"
        assert fast.label_image.model == "/data/local/tmp/efficientnet_lite0.tflite"
        assert slow.timing.classify_ms > 2 * fast.timing.classify_ms     # 385 vs 60 ms classes
        for prof in (fast, slow):
            loads = {m["load_pct"]: m["ms"] for m in prof.measurements}
            assert loads[60.0] > loads[0.0] * 1.2      # load slows the padded stand-in down
            assert 0.0 < prof.timing.load_sensitivity <= 1.0
    finally:
        fleet_factory.release(client)
