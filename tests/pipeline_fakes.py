"""In-memory doubles at the Device seam for pipeline unit tests (no adb, no fleet).

FakeDevice answers like adbflow.device.Device: sync-style file ops on a dict, and `run(argv)`
imitating label_image (reads BMP only, prints the real `INFO: score: index label` format)
and llama-cli (echoes the prompt, prints llama_perf lines on stderr). Faults per program:
fail (exit 1), hang (timeout), garbage (unparsable output), gone (device disconnects).
It does not classify: labels are canned; the fleet tests run the real models.
`shell(cmd)` understands only device_scripts/lease.sh commands (the slot leases), answering
them with the pure lease model (adbflow.device.lease_rules) on a monotonic clock.
"""
from __future__ import annotations

import contextlib
import queue
import shlex
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from adbflow.device import RemoteEntry, ShellResult
from adbflow.device import lease as lease_protocol
from adbflow.device.lease_rules import Op, Record, Verdict, apply
from adbflow.device.port import DevicePort
from adbflow.errors import (
    AdbTimeoutError,
    CommandFailed,
    DeviceUnavailableError,
    RemoteNotFound,
    TransferTooLarge,
)
from adbflow.scheduling.bids import Bid

MODEL = "adbflow-virtual midrange_2023"
LABEL_OUT = ("INFO: Loaded model /data/local/tmp/efficientnet_lite0.tflite\nINFO: invoked\n"
             "INFO: average time: 42.5 ms\nINFO: 0.61: 282 tiger cat\n"
             "INFO: 0.21: 281 tabby, tabby cat\nINFO: 0.05: 285 Egyptian cat\n")
PERF = ("llama_perf_context_print: prompt eval time =      50.00 ms /    20 tokens (    2.50 ms "
        "per token,   400.00 tokens per second)\nllama_perf_context_print:        eval time =   "
        "1000.00 ms /    30 runs   (   33.33 ms per token,    30.00 tokens per second)\n")
STORY = "Once upon a time a tiger cat napped in the sun. It dreamed of fish. The end."


class FakeStream:
    def __init__(self, dev: FakeDevice) -> None:
        self.dev, self.closed = dev, False

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def __iter__(self):
        while not self.closed and self.dev.online:
            try:
                line = self.dev.event_lines.get(timeout=0.05)
            except queue.Empty:
                continue
            yield line

    def close(self) -> None:
        self.closed = True


class FakeDevice(DevicePort):
    """A phone in memory; implements DevicePort (a type checker holds it to the Protocol)."""

    def __init__(self, serial: str, model: str = MODEL, *, delay: float = 0.0) -> None:
        self.serial, self.model, self.delay = serial, model, delay
        self.files: dict[str, tuple[bytes, float]] = {}
        self.faults: dict[str, str] = {}
        self.online = True
        self.calls: list[list[str]] = []
        self.ops: list[tuple[str, str]] = []
        self.event_lines: queue.Queue[str] = queue.Queue()
        self._lock = threading.Lock()
        self.running: dict[str, int] = {}
        self.max_running: dict[str, int] = {}
        self.leases: dict[str, Record] = {}
        self.claims: dict[str, Record] = {}        # picture claims (adbflow_claim)

    # -- helpers for tests
    def snap(self, name: str, data: bytes, mtime: float | None = None,
             directory: str = "/storage/emulated/0/Pictures") -> str:
        path = f"{directory}/{name}"
        self.files[path] = (data, float(int(mtime if mtime is not None else time.time())))
        return path

    def _check(self, cmd: str) -> None:
        if not self.online:
            raise DeviceUnavailableError(self.serial, cmd, message="device offline")

    # -- Device interface
    def list_dir(self, remote: str, *, timeout: float) -> list[RemoteEntry]:
        self._check(f"ls {remote}")
        base = remote.rstrip("/") + "/"
        return [RemoteEntry(p[len(base):], len(d), m, True) for p, (d, m) in list(self.files.items())
                if p.startswith(base) and "/" not in p[len(base):]]

    def stat(self, remote: str, *, timeout: float) -> RemoteEntry | None:
        self._check(f"stat {remote}")
        if remote not in self.files:
            return None
        d, m = self.files[remote]
        return RemoteEntry(remote.rsplit("/", 1)[-1], len(d), m, True)

    def pull(self, remote: str, local: Path, *, timeout: float, max_bytes: int | None = None) -> int:
        self._check(f"pull {remote}")
        self.ops.append(("pull", remote))
        if remote not in self.files:
            raise RemoteNotFound(self.serial, f"pull {remote}", stderr="No such file or directory",
                           message="No such file or directory")
        data = self.files[remote][0]
        if max_bytes is not None and len(data) > max_bytes:
            raise TransferTooLarge(self.serial, f"pull {remote}", message=f"file larger than {max_bytes} bytes")
        Path(local).write_bytes(data)
        return len(data)

    def push(self, local: Path, remote: str, *, timeout: float, mode: int = 0o644) -> int:
        self._check(f"push {remote}")
        self.ops.append(("push", remote))
        data = Path(local).read_bytes()
        self.files[remote] = (data, time.time())
        return len(data)

    def stream_lines(self, cmd: str, *, timeout: float | None = None) -> FakeStream:
        self._check(cmd)
        return FakeStream(self)

    def shell(self, cmd: str, *, timeout: float, stdin: bytes | None = None,
              check: bool = True, max_output: int = 1 << 24) -> ShellResult:
        """lease.sh commands (one `adbflow_lease` call, or the guarded program run) are
        answered with the lease model; other shell text is only split into argv."""
        self._check("shell")
        script = lease_protocol.lease_script()
        if not cmd.startswith(script):   # shell syntax only split into argv (no real shell)
            return self.run(shlex.split(cmd), timeout=timeout, max_output=max_output,
                            check=check, stdin=stdin)
        tail = cmd[len(script):].splitlines()
        if tail[0].startswith("adbflow_lease "):
            line, _ok = self._lease(shlex.split(tail[0])[1:], None)
            return ShellResult(self.serial, cmd, 0, line, "", 0.0)
        if tail[0].startswith("adbflow_claim "):
            return ShellResult(self.serial, cmd, 0, self._claim(shlex.split(tail[0])[1:]), "",
                               0.0)
        # guarded: DST=..., if adbflow_lease guard ...; then, PROG, _rc=$?, finish, ...
        dst = shlex.split(tail[0][len("DST="):])[0] if tail[0] != "DST=" else None
        guard = shlex.split(tail[1][len("if "):-len("; then")])[1:]
        line, ok = self._lease(guard, dst)
        if not ok:
            return ShellResult(self.serial, cmd, 75, line, "", 0.0)
        # the program may span lines (a quoted prompt with newlines): it is everything
        # between the guard's `; then` line and `_rc=$?`
        body = cmd[len(script):]
        prog = body.split("; then\n", 1)[1].rsplit("\n_rc=$?\n", 1)[0]
        finish = body.rsplit("\n_rc=$?\n", 1)[1].splitlines()[0]
        try:
            res = self.run(shlex.split(prog), timeout=timeout, check=False)
        except CommandFailed as exc:     # the program's non-zero exit, as a shell sees it
            res = ShellResult(self.serial, exc.cmd, exc.exit_code or 1, exc.stdout, exc.stderr,
                              0.0)
        end, _ok = self._lease(shlex.split(finish)[1:], None)
        return ShellResult(self.serial, cmd, res.exit_code, line + res.stdout + end,
                           res.stderr, res.elapsed_s)

    def _lease(self, args: list[str], dst: str | None) -> tuple[str, bool]:
        nonce, op, slot, owner, token, ttl = args[:6]
        now, boot = (int(args[6]), args[7]) if len(args) > 7 else (int(time.monotonic() * 10),
                                                                     "fake")
        with self._lock:
            rec = self.leases.get(slot, Record())
            out = apply(rec, Op(op), owner=owner, token=int(token), ttl_ds=int(ttl),
                        now_ds=now, boot=boot)
            verdict = out.verdict
            if verdict is Verdict.GRANTED:
                for path in [p for p in self.files if p.startswith(
                        f"{lease_protocol.LEASE_DIR}/in-{slot}-")]:
                    del self.files[path]
            if verdict is Verdict.HELD and dst:
                src = lease_protocol.input_path(slot, int(token))
                if src not in self.files:
                    verdict = Verdict.ERROR
                else:
                    self.files[dst] = self.files.pop(src)
            self.leases[slot] = out.record
        shown = out.record.owner if out.record.owner != "-" else "-"
        line = f"\n=:adbflow:{nonce}:lease {verdict.value} {out.record.token} {shown} " \
               f"{out.left_ds} {now}\n"
        return line, verdict.ok and verdict is not Verdict.STATE

    def _claim(self, args: list[str]) -> str:
        """`adbflow_claim` answered with the same model (claims: records with results)."""
        nonce, op, key, owner, token, ttl, result = args[:7]
        now, boot = (int(args[7]), args[8]) if len(args) > 8 else (int(time.monotonic() * 10),
                                                                     "fake")
        with self._lock:
            rec = self.claims.get(key, Record())
            out = apply(rec, Op(op), owner=owner, token=int(token), ttl_ds=int(ttl),
                        now_ds=now, boot=boot, result=result)
            self.claims[key] = out.record
        return (f"\n=:adbflow:{nonce}:claim {out.verdict.value} {out.record.token} "
                f"{out.record.owner} {out.left_ds} {now} {out.record.result or '-'}\n")

    def run(self, argv, *, timeout: float, max_output: int = 1 << 24, check: bool = True,
            stdin: bytes | None = None) -> ShellResult:
        argv = list(argv)
        cmd = shlex.join(argv)
        self._check(cmd)
        prog = argv[0].rsplit("/", 1)[-1]
        with self._lock:
            self.calls.append(argv)
            self.running[prog] = self.running.get(prog, 0) + 1
            self.max_running[prog] = max(self.max_running.get(prog, 0), self.running[prog])
        try:
            if self.delay:
                time.sleep(self.delay)
            mode = self.faults.get(prog)
            if mode == "gone":
                self.online = False
                raise DeviceUnavailableError(self.serial, cmd, message="connection lost")
            if mode == "hang":
                raise AdbTimeoutError(self.serial, cmd, message="timed out; command killed")
            if mode == "fail":
                raise CommandFailed(self.serial, cmd, stderr="simulated failure", exit_code=1)
            if prog == "label_image":
                image = argv[argv.index("-i") + 1]
                data = self.files.get(image, (b"", 0))[0]
                if not data.startswith(b"BM"):
                    raise CommandFailed(self.serial, cmd, stderr="ERROR: input is not a BMP",
                                   exit_code=1)
                out = "\x00\x01garbage%%%\n" if mode == "garbage" else LABEL_OUT
                return ShellResult(self.serial, cmd, 0, "", out, 0.01)
            if prog in ("llama-completion", "llama-cli"):     # one-shot, like llama-completion
                prompt = argv[argv.index("-p") + 1]
                if mode == "garbage":
                    return ShellResult(self.serial, cmd, 0, "zzzz qqqq", "", 0.01)
                return ShellResult(self.serial, cmd, 0, prompt + " " + STORY + " [end of text]\n",
                                   PERF, 0.01)
            return ShellResult(self.serial, cmd, 127, "", f"{prog}: not found", 0.0)
        finally:
            with self._lock:
                self.running[prog] -= 1


class FakeInventory:
    def __init__(self, devices: list[FakeDevice]) -> None:
        self.all = devices

    def devices(self) -> list[FakeDevice]:
        return [d for d in self.all if d.online]

    def device(self, serial: str) -> FakeDevice:
        for d in self.all:
            if d.serial == serial and d.online:
                return d
        raise DeviceUnavailableError(serial, "devices", message="no such device")


@dataclass
class FakeBidder:
    loads: dict[str, float]

    def gather(self, devices) -> list[Bid]:
        out = []
        for d in devices:
            load = self.loads.get(d.serial, 10.0)
            out.append(Bid(serial=d.serial, model=d.model, cores=8, cpu_load=load,
                           per_core_load=[load] * 8, mem_available_kb=4 << 20,
                           mem_total_kb=8 << 20, battery_level=80, battery_charging=True,
                           temperature_c=30.0, freq_ratio=1.0, probe_rtt_s=0.01,
                           timestamp=time.time()))
        return out


class ShellOnlyPort(DevicePort):
    """Base of fakes that only answer `shell` (the bidder's probe): the other DevicePort
    methods fail the test loudly instead of returning None."""

    serial: str

    def _unused(self, what: str):
        raise AssertionError(f"{type(self).__name__} fakes only shell, not {what}")

    def run(self, argv, *, timeout: float, stdin: bytes | None = None, check: bool = True,
            max_output: int = 16 << 20) -> ShellResult:
        return self.shell(shlex.join(argv), timeout=timeout, stdin=stdin, check=check,
                          max_output=max_output)

    def push(self, local: Path, remote: str, *, timeout: float, mode: int = 0o644) -> int:
        self._unused("push")

    def pull(self, remote: str, local: Path, *, timeout: float,
             max_bytes: int | None = None) -> int:
        self._unused("pull")

    def stat(self, remote: str, *, timeout: float) -> RemoteEntry | None:
        self._unused("stat")

    def list_dir(self, remote: str, *, timeout: float) -> list[RemoteEntry]:
        self._unused("list_dir")

    def stream_lines(self, cmd: str, *, timeout: float | None = None):
        self._unused("stream_lines")


@contextlib.contextmanager
def as_gone_process():
    """Inside: journal rows are owned by a process that does not exist any more (what a
    kill -9'd orchestrator leaves behind), so the in-process "crash" of a test looks like
    a real one to recovery, which abandons only the attempts of gone processes."""
    from adbflow.runtime import owner
    real = owner.current
    gone = owner.ProcessId(real().host, 2 ** 22 + 12345, 1.0)   # above pid_max: never alive
    owner.current = lambda: gone
    try:
        yield gone
    finally:
        owner.current = real
