"""Bids: what each device says about itself right now, gathered in parallel.

Why keep the previous /proc/stat sample per device: load is a delta of cumulative counters;
with the last round's sample on the laptop, a bid is one round trip with no sleep. Only first
contact (or a stale/too-recent sample) asks the probe for two samples 0.2 s apart.
A device that fails or times out still yields a Bid (with `error`): the user sees it.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace

from adbflow.device import DevicePort
from adbflow.device.lease_rules import SlotState
from adbflow.device.probe import FIRST_SAMPLE_WINDOW_S, ProbeReport, run_probe
from adbflow.errors import AdbError, AdbflowError, AdbTimeoutError, DeviceUnavailableError, ParseError
from adbflow.parsers.proc_stat import ProcStat, cpu_load
from adbflow.parsers.sysfs import freq_ratio
from adbflow.scheduling.cores import performance_cores
from adbflow.scheduling.telemetry import Sample, Telemetry

log = logging.getLogger("adbflow.scheduling.bids")

MIN_WINDOW_S = 0.15       # a previous sample younger than this gives a noisy delta: resample
MAX_SAMPLE_AGE_S = 120.0  # older samples average over too long a past: resample
# `dumpsys thermalservice` costs a binder call and ~20-100 ms on a phone: asked within a bid
# every THERMAL_REFRESH_S per device (status changes on a scale of seconds to minutes), and
# every THERMAL_MISSING_RETRY_S on devices that have no such service (Android < 10).
THERMAL_REFRESH_S = 30.0
THERMAL_MISSING_RETRY_S = 600.0


@dataclass
class Bid:
    serial: str
    model: str | None
    cores: int
    cpu_load: float                 # 0-100 whole device; NaN when unknown (error bids)
    per_core_load: list[float]
    mem_available_kb: int
    mem_total_kb: int
    battery_level: int | None
    battery_charging: bool | None
    temperature_c: float | None
    freq_ratio: float               # mean cur/max over online cpus, 0-1 (1.0 when unknown)
    probe_rtt_s: float              # round trip minus the first-contact sampling sleep
    timestamp: float
    abi: str | None = None
    thermal_status: int | None = None
    error: str | None = None
    server: str | None = None       # adb server HOST:PORT the device was reached through
    load_window_s: float | None = None
    #: battery power drawn now (W, current x voltage) when measured; energy prior of ECT
    power_w: float | None = None
    # slot leases on the phone (device_scripts/lease.sh): a slot another orchestrator holds
    # is busy; the pipeline bids such a stage elsewhere
    slots: dict[str, SlotState] = field(default_factory=dict)

    def slot_busy(self, slot: str, ours: str | None = None) -> SlotState | None:
        """The slot's state when someone else than `ours` (an owner-id prefix) holds it."""
        st = self.slots.get(slot)
        if st is None or not st.busy:
            return None
        if ours and st.owner and st.owner.startswith(ours):
            return None
        return st
    source: str = "probe"           # "probe" (one-shot shell) or "stream" (live telemetry)
    age_s: float | None = None      # how old the sample was when the bid was made (stream)
    #: big + mid cores (adbflow.scheduling.cores): a CPU program's threads are capped at it
    perf_cores: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not math.isnan(self.cpu_load)

    def to_json(self) -> dict:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = None
        d["ok"] = self.ok
        return d

    @classmethod
    def failed(cls, device: DevicePort, error: str, *, rtt: float = 0.0) -> Bid:
        return cls(serial=device.serial, model=_model(device), cores=0, cpu_load=math.nan,
                   per_core_load=[], mem_available_kb=0, mem_total_kb=0, battery_level=None,
                   battery_charging=None, temperature_c=None, freq_ratio=math.nan,
                   probe_rtt_s=rtt, timestamp=time.time(), error=error, server=_server(device))


@dataclass
class _Memory:
    """What the laptop remembers about one device between rounds."""
    sample: ProcStat | None = None
    sample_t: float = 0.0
    props: dict[str, str] = field(default_factory=dict)
    thermal: object | None = None        # last parsed thermalservice (ThermalInfo)
    thermal_t: float | None = None       # when it was asked for (monotonic)
    thermal_missing: bool = False
    #: one probe of a device at a time; concurrent rounds share it (see Bidder._probe)
    probe_lock: threading.Lock = field(default_factory=threading.Lock)
    last_bid: Bid | None = None
    last_bid_end: float = -math.inf      # monotonic time the last probe's answer arrived


def bid_temperature(rep: ProbeReport, thermalservice=None) -> float | None:
    """CPU/SoC degrees for the bid: zones chosen by type (never battery/BCL/level zones),
    else thermalservice's CPU temperatures, else the battery's (the only reading some
    devices give the shell user: zones unreadable under SELinux, no thermal HAL)."""
    temp = rep.thermal.cpu_c() if rep.thermal else None
    if temp is None and thermalservice is not None:
        temp = thermalservice.cpu_c()
    return temp if temp is not None else rep.battery_temp_c


def thermal_due(mem: _Memory, now: float, refresh_s: float = THERMAL_REFRESH_S) -> bool:
    """Should this bid also ask for `dumpsys thermalservice`? (pure)"""
    if mem.thermal_t is None:
        return True
    return now - mem.thermal_t >= (THERMAL_MISSING_RETRY_S if mem.thermal_missing else refresh_s)


def _model(device: DevicePort) -> str | None:
    """The model the inventory already knows (adb's `devices -l`), used when the probe's
    props lack ro.product.model. Not part of DevicePort: a port need not know it."""
    return getattr(device, "model", None)


def _server(device: DevicePort) -> str:
    """HOST:PORT of the adb server a `Device` is reached through ('' for other ports);
    with the serial it keys the per-device memory (one serial may sit on two servers)."""
    server = getattr(device, "server", None)
    return "" if server is None else str(server)


def build_bid(device: DevicePort, rep: ProbeReport, *, load, window_s: float | None,
              rtt: float, props: dict[str, str], thermalservice=None) -> Bid:
    """Pure assembly of a Bid from a parsed probe and the computed load."""
    cores = len(rep.present) or len(rep.stat.per_cpu) or 1
    ratio = freq_ratio(rep.freqs, rep.online or None)
    temp = bid_temperature(rep, thermalservice)
    error = None if load is not None else "cpu counters did not advance between samples"
    return Bid(
        serial=device.serial,
        model=props.get("ro.product.model") or _model(device),
        cores=cores,
        cpu_load=round(load.cpu_load, 2) if load is not None else math.nan,
        per_core_load=[round(v, 2) for v in load.per_core.values()] if load is not None else [],
        mem_available_kb=rep.meminfo.available_kb,
        mem_total_kb=rep.meminfo.total_kb,
        battery_level=rep.battery_level,
        battery_charging=rep.battery_charging,
        power_w=rep.battery_power_w,
        temperature_c=temp,
        freq_ratio=round(ratio, 3) if ratio is not None else 1.0,
        probe_rtt_s=round(rtt, 4),
        timestamp=time.time(),
        abi=props.get("ro.product.cpu.abi") or None,
        thermal_status=getattr(thermalservice, "status", None),
        error=error,
        server=_server(device),
        load_window_s=round(window_s, 3) if window_s is not None else None,
        slots=dict(rep.slots),
        perf_cores=performance_cores(rep.freqs),
    )


class Bidder:
    """Gathers bids; keeps per-device memory (last /proc/stat sample, static props)."""

    def __init__(self, *, timeout: float = 5.0, with_cpuinfo: bool = False,
                 max_workers: int = 32, thermal_refresh_s: float = THERMAL_REFRESH_S,
                 telemetry: Telemetry | None = None) -> None:
        self.timeout = timeout
        self.thermal_refresh_s = thermal_refresh_s
        self.with_cpuinfo = with_cpuinfo
        self.max_workers = max_workers
        #: live streams (adbflow.scheduling.telemetry); None = one-shot probes only. A
        #: device whose stream is down (or --cpuinfo, which the loop does not read) is probed.
        self.telemetry = telemetry
        self._mem: dict[tuple[str, str], _Memory] = {}
        self._lock = threading.Lock()
        self.last_reports: dict[str, ProbeReport] = {}
        self._pool: ThreadPoolExecutor | None = None

    def _memory(self, device: DevicePort) -> _Memory:
        with self._lock:
            return self._mem.setdefault((_server(device), device.serial), _Memory())

    def bid(self, device: DevicePort) -> Bid:
        """One device: from its live stream when up, else one round trip. Never raises for
        device faults: they become Bid.error."""
        if self.telemetry is not None and not self.with_cpuinfo:
            streamed = self._streamed(device)
            if streamed is not None:
                return streamed
        return self._probe(device)

    def _streamed(self, device: DevicePort) -> Bid | None:
        assert self.telemetry is not None
        try:
            sample = self.telemetry.sample(device)
        except AdbflowError:
            return None
        return None if sample is None else self._from_sample(device, sample)

    def _from_sample(self, device: DevicePort, sample: Sample) -> Bid:
        assert self.telemetry is not None
        st = self.telemetry.stream(device)
        mem = self._memory(device)
        props = (st.props if st is not None else {}) or mem.props
        rtt = sample.rtt_s if sample.rtt_s is not None else 0.0
        bid = build_bid(device, sample.report, load=sample.load, window_s=sample.window_s,
                        rtt=rtt, props=props)
        bid.timestamp = sample.wall
        bid.source = "stream"
        bid.age_s = round(sample.age_s(), 4)
        with self._lock:
            self.last_reports[device.serial] = sample.report
        return bid

    def _probe(self, device: DevicePort) -> Bid:
        """One-shot probe, single-flight per device. Why: a burst starts many jobs at once,
        and each bid round would probe every phone: N jobs x N phones probes at the same
        moment (256 on 16 phones), each a shell on the phone, all before any stream is up.
        A round that arrives while a probe of that phone is running waits for it and takes
        its answer, which arrived after the round asked, so it is as fresh as a probe of its
        own; our own in-flight work is counted by the dispatcher, not by the reading."""
        mem = self._memory(device)
        asked = time.monotonic()
        with mem.probe_lock:
            shared = mem.last_bid
            if shared is not None and mem.last_bid_end >= asked:
                return replace(shared)
            bid = self._probe_now(device, mem)
            mem.last_bid, mem.last_bid_end = bid, time.monotonic()
            return bid

    def _probe_now(self, device: DevicePort, mem: _Memory) -> Bid:
        now = time.monotonic()
        age = now - mem.sample_t
        first = mem.sample is None or not (MIN_WINDOW_S <= age <= MAX_SAMPLE_AGE_S)
        t0 = time.monotonic()
        ask_thermal = thermal_due(mem, now, self.thermal_refresh_s)
        for attempt in (1, 2):
            try:
                rep, res = run_probe(device, timeout=self.timeout, first=first,
                                     with_cpuinfo=self.with_cpuinfo, with_props=not mem.props,
                                     with_thermalservice=ask_thermal)
                break
            except AdbTimeoutError:
                return Bid.failed(device, f"timeout after {self.timeout:g}s (probe killed)",
                                  rtt=time.monotonic() - t0)
            except AdbError as exc:
                return Bid.failed(device, _short_error(exc), rtt=time.monotonic() - t0)
            except ParseError as exc:
                # One more round trip when the output was mangled in transit (a USB hiccup,
                # a half-read file): cheap next to losing the device for this round.
                if attempt == 1 and time.monotonic() - t0 < self.timeout / 2:
                    log.warning("[%s] unparsable probe output (%s), probing again: %r",
                                device.serial, exc.detail, exc.sample[:120])
                    continue
                return Bid.failed(device, f"unparsable probe output: {exc.detail} "
                                          f"(output began {exc.sample[:60]!r})",
                                  rtt=time.monotonic() - t0)
            except AdbflowError as exc:
                return Bid.failed(device, str(exc), rtt=time.monotonic() - t0)
        t_end = time.monotonic()
        rtt = res.elapsed_s - (FIRST_SAMPLE_WINDOW_S if rep.stat_a is not None else 0.0)
        if rep.props:
            mem.props = rep.props
        if rep.stat_a is not None:
            load, window = cpu_load(rep.stat_a, rep.stat), FIRST_SAMPLE_WINDOW_S
        elif mem.sample is not None:
            load, window = cpu_load(mem.sample, rep.stat), t_end - mem.sample_t
        else:
            load, window = None, None
        mem.sample, mem.sample_t = rep.stat, t_end
        if ask_thermal:
            mem.thermal_t = t_end
            mem.thermal_missing = rep.thermalservice_missing
            mem.thermal = rep.thermalservice
        with self._lock:
            self.last_reports[device.serial] = rep
        return build_bid(device, rep, load=load, window_s=window, rtt=max(0.0, rtt),
                         props=mem.props, thermalservice=mem.thermal)

    def gather(self, devices: Sequence[DevicePort]) -> list[Bid]:
        """All devices in parallel, order preserved. Streamed devices first: every stale
        stream is asked at once and answered on its open connection (no thread per phone);
        the rest (no stream yet, stream down, --cpuinfo) are probed one thread each, up to
        max_workers."""
        if not devices:
            return []
        bids: list[Bid | None] = [None] * len(devices)
        if self.telemetry is not None and not self.with_cpuinfo:
            try:
                samples = self.telemetry.sample_many(devices)
            except AdbflowError:
                samples = [None] * len(devices)
            for i, (device, sample) in enumerate(zip(devices, samples)):
                if sample is not None:
                    bids[i] = self._from_sample(device, sample)
        todo = [i for i, b in enumerate(bids) if b is None]
        if todo:
            with self._lock:
                if self._pool is None:      # kept across rounds: no thread start-up per round
                    self._pool = ThreadPoolExecutor(max_workers=self.max_workers,
                                                    thread_name_prefix="adbflow-bid")
                pool = self._pool
            for i, bid in zip(todo, pool.map(self._probe, [devices[i] for i in todo])):
                bids[i] = bid
        return [b for b in bids if b is not None]

    def close(self) -> None:
        """Stop the worker pool and every telemetry stream (their loops end on the phones)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)
        if self.telemetry is not None:
            self.telemetry.close()

    def __enter__(self) -> Bidder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _short_error(exc: AdbError) -> str:
    """AdbError text without the probe script (the `cmd` of a probe is the whole script)."""
    text = (exc.stderr.strip().splitlines()[-1] if exc.stderr.strip() else None) or exc.detail
    msg = f"deviceunavailable: {text}" if isinstance(exc, DeviceUnavailableError) else text
    return f"{msg} ({exc.hint})" if exc.hint else msg


def pick_lowest_cpu(bids: Sequence[Bid]) -> str | None:
    """Seed policy: the ok bid with the lowest whole-device CPU load.

    Ties: more available memory first, then serial (so the choice is deterministic)."""
    ok = [b for b in bids if b.ok]
    if not ok:
        return None
    return min(ok, key=lowest_cpu_key).serial


def lowest_cpu_key(bid: Bid) -> tuple[float, int, str]:
    """The lowest-CPU rule (here and in the `lowest-cpu` policy): load, then more free
    memory, then serial, so the choice is deterministic."""
    return (bid.cpu_load, -(bid.mem_available_kb or 0), bid.serial)
