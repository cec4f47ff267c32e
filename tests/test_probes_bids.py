"""probe.sh under mksh + toybox only (host /proc, /sys), probe parsing, Bidder logic with an
in-memory Device double (the fleet-backed checks are in test_bids_fleet.py)."""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import time

import pytest
from pipeline_fakes import ShellOnlyPort

from adbflow.device import AdbServer, ShellResult
from adbflow.device.probe import parse_probe_output, probe_command, probe_script, split_sections
from adbflow.errors import AdbTimeoutError, DeviceUnavailableError, ParseError
from adbflow.scheduling.bids import Bid, Bidder, pick_lowest_cpu

MKSH, TOYBOX = shutil.which("mksh") or "/usr/bin/mksh", shutil.which("toybox") or "/usr/bin/toybox"
needs_shells = pytest.mark.skipif(not (os.path.exists(MKSH) and os.path.exists(TOYBOX)),
                                  reason="mksh/toybox not installed")


@pytest.fixture(scope="module")
def toybox_path(tmp_path_factory) -> str:
    """A PATH holding only toybox applets: no bash, coreutils, awk (like a phone)."""
    d = tmp_path_factory.mktemp("toybox-bin")
    applets = subprocess.run([TOYBOX], capture_output=True, text=True).stdout.split()
    for a in applets:
        (d / a).symlink_to(TOYBOX)
    assert not (d / "awk").exists() and not (d / "bash").exists()
    return str(d)


def run_probe_locally(toybox_path: str, *flags: str) -> tuple[str, str]:
    cmd = probe_command("cafe01", first=flags[0] == "1", with_cpuinfo=flags[1] == "1",
                        with_props=flags[2] == "1")
    p = subprocess.run([MKSH, "-c", cmd], capture_output=True, text=True, timeout=20,
                       env={"PATH": toybox_path}, cwd="/")
    assert p.returncode == 0, p.stderr
    return p.stdout, p.stderr


@needs_shells
def test_probe_script_runs_under_mksh_and_toybox(toybox_path):
    out, err = run_probe_locally(toybox_path, "1", "0", "1")
    assert err == ""                                   # no applet missing, no syntax error
    rep = parse_probe_output(out, "cafe01")
    assert rep.complete and rep.stat_a is not None
    assert len(rep.stat.per_cpu) == os.cpu_count()
    assert rep.present == list(range(os.cpu_count()))
    assert rep.meminfo.total_kb > 0 and not rep.meminfo.available_estimated
    assert rep.stat.total.total >= rep.stat_a.total.total
    assert "intr" not in out                           # the huge intr line is not shipped
    assert rep.props == {"ro.product.model": "", "ro.product.cpu.abi": "",   # no getprop on host
                         "ro.build.version.sdk": "", "ro.serialno": ""}


@needs_shells
def test_probe_steady_state_is_small_and_has_no_second_sample(toybox_path):
    t = time.monotonic()
    out, _ = run_probe_locally(toybox_path, "0", "0", "0")
    assert time.monotonic() - t < 5
    sec = split_sections(out, "cafe01")
    assert "stat_a" not in sec and "props" not in sec and "end" in sec
    assert len(out) < 8192


def test_probe_command_is_inline_without_comments():
    cmd = probe_command("ab12", first=True, with_cpuinfo=False, with_props=True)
    assert cmd.startswith("set -- ab12 1 0 1 0\n")
    assert "\n#" not in cmd and "adb push" not in cmd
    assert len(probe_script()) < 3000
    with pytest.raises(ValueError):
        probe_command("a; rm -rf /", first=True, with_cpuinfo=False, with_props=False)


def test_forged_markers_do_not_create_sections():
    out = ("\n=:adbflow:n1:stat\ncpu  10 0 10 80 0 0 0 0\n=:adbflow:evil:meminfo\n"
           "\n=:adbflow:n1:meminfo\nMemTotal: 100 kB\nMemAvailable: 50 kB\n"
           "\n=:adbflow:n1:thermal\nthermal_zone0\tx\t41000\n=:adbflow:n2:end\n")
    rep = parse_probe_output(out, "n1")
    assert not rep.complete                             # foreign nonce's `end` ignored
    assert rep.meminfo.available_kb == 50 and rep.thermal.hottest_c() == 41.0
    with pytest.raises(ParseError):
        parse_probe_output(out, "other")


# ------------------------------------------------------------------ Bidder with a double
def probe_text(nonce: str, stat_lines: list[str], first_lines: list[str] | None, props: bool,
               avail: int = 4_000_000) -> str:
    parts = []
    if first_lines:
        parts += [f"=:adbflow:{nonce}:stat_a", *first_lines]
    parts += [f"=:adbflow:{nonce}:stat", *stat_lines,
              f"=:adbflow:{nonce}:meminfo", "MemTotal: 8000000 kB", f"MemAvailable: {avail} kB",
              f"=:adbflow:{nonce}:cpus", "present=0-1", "online=0-1",
              f"=:adbflow:{nonce}:cpufreq", "cpu0 1000 2000", "cpu1 2000 2000",
              f"=:adbflow:{nonce}:battery_sysfs", "capacity=50", "status=Discharging", "temp=300"]
    if props:
        parts += [f"=:adbflow:{nonce}:props", "[ro.product.model]: [Pixel 9]", "[ro.product.cpu.abi]: [arm64-v8a]"]
    parts.append(f"=:adbflow:{nonce}:end")
    return "\n".join(parts) + "\n"


def cpu_lines(busy: int, idle: int) -> list[str]:
    return [f"cpu  {2 * busy} 0 0 {2 * idle} 0 0 0 0", f"cpu0 {busy} 0 0 {idle} 0 0 0 0",
            f"cpu1 {busy} 0 0 {idle} 0 0 0 0"]


class FakeDevice(ShellOnlyPort):
    """Device double: answers probe commands from a jiffies counter advancing at `load` %."""

    def __init__(self, serial: str, load: float, *, fail: Exception | None = None, delay: float = 0.0):
        self.serial, self.load, self.fail, self.delay = serial, load, fail, delay
        self.server, self.model = AdbServer(), None
        self.calls: list[str] = []
        self.busy = self.idle = 0

    def _sample(self) -> list[str]:
        self.busy += int(self.load)
        self.idle += 100 - int(self.load)
        return cpu_lines(self.busy, self.idle)

    def shell(self, cmd: str, *, timeout: float, check: bool = True, max_output: int = 0, **_):
        self.calls.append(cmd)
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise self.fail
        nonce, first, _cpuinfo, props, _thermal = cmd.split("\n", 1)[0].split()[2:7]
        first_lines = self._sample() if first == "1" else None
        text = probe_text(nonce, self._sample(), first_lines, props == "1")
        return ShellResult(self.serial, cmd, 0, text, "", 0.21 if first == "1" else 0.01)


def test_bidder_first_contact_then_no_sleep(monkeypatch):
    monkeypatch.setattr("adbflow.scheduling.bids.MIN_WINDOW_S", 0.0)
    dev = FakeDevice("A", 30)
    bidder = Bidder()
    b1 = bidder.bid(dev)
    assert dev.calls[0].split("\n")[0].endswith(" 1 0 1 1")   # two samples, props, thermalservice
    assert b1.ok and b1.cpu_load == pytest.approx(30) and b1.model == "Pixel 9"
    assert b1.load_window_s == pytest.approx(0.2) and b1.probe_rtt_s == pytest.approx(0.01)
    assert b1.freq_ratio == pytest.approx(0.75) and b1.battery_level == 50 and b1.temperature_c == 30.0
    dev.load = 70
    b2 = bidder.bid(dev)
    assert dev.calls[1].split("\n")[0].endswith(" 0 0 0 0")  # no sleep, props, thermalservice
    assert b2.cpu_load == pytest.approx(70) and b2.model == "Pixel 9" and b2.abi == "arm64-v8a"
    assert b2.per_core_load == [pytest.approx(70), pytest.approx(70)]


def test_bidder_resamples_when_previous_is_too_recent():
    dev = FakeDevice("A", 30)
    bidder = Bidder()
    bidder.bid(dev)
    bidder.bid(dev)                                  # immediately: window would be ~0 s
    assert dev.calls[1].split("\n")[0].split()[3] == "1"


def test_failures_become_bids_with_errors_and_round_is_parallel():
    devs = [FakeDevice("ok1", 40, delay=0.3), FakeDevice("ok2", 20, delay=0.3),
            FakeDevice("slow", 5, fail=AdbTimeoutError("slow", "probe"), delay=0.3),
            FakeDevice("gone", 1, fail=DeviceUnavailableError("gone", "probe", message="device offline",
                                                              hint="replug"), delay=0.3)]
    with Bidder(timeout=1) as bidder:
        t = time.monotonic()
        bids = bidder.gather(devs)
        assert time.monotonic() - t < 0.9            # 4 x 0.3 s sequential would be 1.2 s
    assert [b.serial for b in bids] == ["ok1", "ok2", "slow", "gone"]
    assert "timeout" in bids[2].error and not bids[2].ok
    assert "device offline" in bids[3].error and "replug" in bids[3].error
    assert math.isnan(bids[3].cpu_load) and bids[3].to_json()["cpu_load"] is None
    assert pick_lowest_cpu(bids) == "ok2"
    assert pick_lowest_cpu(bids[2:]) is None


def test_garbage_probe_output_is_an_error_bid():
    class Garbage(FakeDevice):
        def shell(self, cmd, **kw):
            return ShellResult(self.serial, cmd, 0, "\x00\xff" * 100, "", 0.01)
    g = Garbage("g", 0)
    b = Bidder().bid(g)
    assert not b.ok and "unparsable" in b.error
    assert "output began" in b.error                 # what came back, for the bug report


def test_one_mangled_probe_output_is_probed_again():
    class OnceMangled(FakeDevice):
        mangled = 0

        def shell(self, cmd, **kw):
            if not self.mangled:
                self.mangled += 1
                return ShellResult(self.serial, cmd, 0, "", "", 0.01)   # output lost in transit
            return super().shell(cmd, **kw)
    dev = OnceMangled("m", 30)
    b = Bidder().bid(dev)
    assert b.ok and b.cpu_load == pytest.approx(30) and dev.mangled == 1


def test_pick_lowest_cpu_tie_breaks():
    def bid(serial, load, mem):
        return Bid(serial, None, 4, load, [], mem, 8_000_000, None, None, None, 1.0, 0.01, 0.0)
    assert pick_lowest_cpu([bid("b", 10, 1), bid("a", 10, 1)]) == "a"
    assert pick_lowest_cpu([bid("a", 10, 1), bid("b", 10, 5)]) == "b"
    assert pick_lowest_cpu([bid("a", 10.5, 9), bid("b", 10.4, 1)]) == "b"
