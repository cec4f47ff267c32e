"""Warm models: one resident llama.cpp `llama-server` per phone for the session.

Why: a one-shot `llama-completion` loads the model at every story (on phones with 1-3B models
that is seconds, more than the story itself on fast phones); a server started once keeps it
loaded, and its prompt cache skips the prompt prefix every story shares (the chat template and
the request). The classifier has no such mode: TFLite's `label_image` is one-shot only (no
server, no stdin loop), so classify stays one-shot.

How a server lives (nothing is left on the phone, also when adbflow dies):
- started on first use on 127.0.0.1 of the phone, `--port 0` (the server picks a free port and
  logs it, so two servers never race for one), by an `adb shell` that stays open: it prints
  its pid (`echo $$`) and `exec`s the server, whose log is then that stream (read on a thread,
  the tail kept for errors). The stream is the server's tether: when adbflow exits, crashes
  or is killed, the adb connection closes and adbd kills the command's process group.
- reached through `adb forward tcp:0 tcp:PORT` (adbflow.device.forward), health-checked with
  `GET /health` (503 while the model loads, 200 once ready);
- stopped on exit (`ResidentServers.close`, from Pipeline.close on every stop: Ctrl-C and
  SIGTERM too): `kill PID` (recorded at start), then the tether closed, the forward removed.
- the one thing a crash (kill -9) cannot take along is the forward: it lives in the adb
  server on the laptop. Every forward is written to a ledger in the data directory with its
  owner (the orchestrator's id, device/lease.py); the next adbflow on that data directory
  removes the forwards of owners that no longer run (ForwardLedger.sweep) before it starts
  anything. Until then the stale listener only refuses connections: its phone side is gone.
- a request with no answer within its timeout means a hung server: it is killed and the
  stage fails with ResidentServerError (an AdbError), which the attempt loop re-bids; a server
  that died is forgotten the same way. The next story on that phone starts a new one.

The decisions are pure (argv, the tether command, parsing the log and the answer); the
class around them does the I/O.
"""
from __future__ import annotations

import collections
import contextlib
import http.client
import json
import logging
import os
import re
import shlex
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adbflow.device import AdbServer, Device
from adbflow.device.forward import Forward, remove_forward
from adbflow.device.lease import dead_local_owner
from adbflow.errors import AdbError, AdbflowError, ResidentServerError
from adbflow.parsers.text import CONTROL_KEEP_NEWLINES

log = logging.getLogger("adbflow.runtime.resident")

HOST = "127.0.0.1"
PID_MARK = "ADBFLOW_RESIDENT_PID="
_LISTENING = re.compile(r"HTTP server is listening, hostname: \S+, port: (\d{1,5})\b")
MAX_ANSWER = 1 << 20         # a story answer is a few kB of JSON; more is a runaway device
LOG_TAIL_LINES = 40
RESIDENT_LEDGER = "resident-forwards.json"   # in the data directory (ForwardLedger)


def server_argv(spec: Any) -> list[str]:
    """llama-server's argv from a profile's LlamaSpec (loopback only, any free port)."""
    return [spec.server_binary, "-m", spec.model, "--host", HOST, "--port", "0",
            "-c", str(spec.ctx), "-t", str(spec.threads), "-n", str(spec.n_predict),
            "-np", "1"]


def tether_command(argv: list[str]) -> str:
    """The shell line that starts the server: its pid first, then the server itself (exec:
    the same process, so the pid is the server's and closing the stream kills it)."""
    return f"echo {PID_MARK}$$; exec {shlex.join(argv)} 2>&1"


def parse_pid(line: str) -> int | None:
    if line.startswith(PID_MARK) and line[len(PID_MARK):].strip().isdigit():
        return int(line[len(PID_MARK):].strip())
    return None


def parse_listening_port(line: str) -> int | None:
    """The port llama-server logs once it listens (`--port 0`: the one it got)."""
    m = _LISTENING.search(line)
    if not m:
        return None
    port = int(m.group(1))
    return port if 0 < port < 65536 else None


def completion_request(spec: Any, prompt: str, *, seed: int | None = None) -> dict[str, Any]:
    """The `/completion` body for a story: the profile's sampling, as llama-completion gets
    it on its command line (stages.llama_argv); the prompt cache on (llama.cpp's default)."""
    body: dict[str, Any] = {
        "prompt": prompt, "n_predict": int(spec.n_predict),
        "temperature": float(getattr(spec, "temp", 0.6)),
        "top_k": int(getattr(spec, "top_k", 40)), "top_p": float(getattr(spec, "top_p", 0.9)),
        "repeat_penalty": float(getattr(spec, "repeat_penalty", 1.15)),
        "cache_prompt": True, "stream": False,
    }
    if seed is not None:
        body["seed"] = int(seed)
    return body


@dataclass(frozen=True)
class Completion:
    """What adbflow keeps of llama-server's `/completion` answer (device data, checked)."""

    text: str
    tokens_predicted: int
    prompt_tokens: int
    cached_tokens: int
    prompt_ms: float
    predicted_ms: float
    stopped_by_eos: bool

    def to_json(self) -> dict[str, Any]:
        """The same keys as parsers.llama.LlamaResult.to_json, plus the cache."""
        tok_s = (1000.0 * self.tokens_predicted / self.predicted_ms
                 if self.predicted_ms > 0 else None)
        p_tok_s = (1000.0 * self.prompt_tokens / self.prompt_ms if self.prompt_ms > 0 else None)
        return {"text": self.text, "eval_tok_s": tok_s, "prompt_tok_s": p_tok_s,
                "eval_tokens": self.tokens_predicted, "prompt_tokens": self.prompt_tokens,
                "load_ms": 0.0, "total_ms": self.prompt_ms + self.predicted_ms,
                "interrupted": False, "cached_tokens": self.cached_tokens}


def parse_completion(body: bytes) -> Completion:
    """llama-server's native `/completion` JSON -> Completion; ValueError when it is not one."""
    data = json.loads(body.decode("utf-8", "replace"))
    if not isinstance(data, dict) or not isinstance(data.get("content"), str):
        raise ValueError("no `content` in the answer")
    raw_timings = data.get("timings")
    timings: dict[str, Any] = raw_timings if isinstance(raw_timings, dict) else {}

    def num(d: dict[str, Any], key: str) -> float:
        v = d.get(key)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) \
            and v == v and abs(v) != float("inf") and v >= 0 else 0.0

    # cleaned as parsers.llama cleans the one-shot program's stdout (same story either way)
    text = CONTROL_KEEP_NEWLINES.sub("", data["content"]).strip()[:8000]
    return Completion(text=text,
                      tokens_predicted=int(num(data, "tokens_predicted")
                                           or num(timings, "predicted_n")),
                      prompt_tokens=int(num(timings, "prompt_n")),
                      cached_tokens=int(num(timings, "cache_n")),
                      prompt_ms=num(timings, "prompt_ms"),
                      predicted_ms=num(timings, "predicted_ms"),
                      stopped_by_eos=bool(data.get("stopped_eos")))


def http_call(port: int, method: str, path: str, body: bytes | None, *,
              timeout: float) -> tuple[int, bytes]:
    """One HTTP request to 127.0.0.1:port (the forward); raises OSError / socket.timeout."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body,
                     headers={"Content-Type": "application/json"} if body is not None else {})
        resp = conn.getresponse()
        data = resp.read(MAX_ANSWER + 1)
        if len(data) > MAX_ANSWER:
            raise ValueError(f"answer larger than {MAX_ANSWER} bytes")
        return resp.status, data
    finally:
        conn.close()


class ForwardLedger:
    """The forwards this data directory's orchestrators hold: `{owner, adb, serial, local}`
    per line of a JSON list, rewritten atomically. Why a file: a forward outlives a killed
    adbflow (it is the adb server's), so the next one must know which were ours."""

    def __init__(self, path: Path, owner: str) -> None:
        self.path = Path(path)
        self.owner = owner
        self._lock = threading.Lock()

    def _read(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        return [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []

    def _write(self, entries: list[dict[str, Any]]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries))
        os.replace(tmp, self.path)

    def add(self, device: Device, local_port: int) -> None:
        with self._lock:
            entries = self._read()
            entries.append({"owner": self.owner, "adb": str(device.server),
                            "serial": device.adb_serial, "local": int(local_port)})
            self._write(entries)

    def remove(self, local_port: int) -> None:
        with self._lock:
            self._write([e for e in self._read() if not (e.get("owner") == self.owner
                                                          and e.get("local") == local_port)])

    def sweep(self) -> int:
        """Remove the forwards whose owner process is gone (killed adbflow runs of this
        laptop); returns how many. Entries of live owners and of other hosts stay."""
        with self._lock:
            keep: list[dict[str, Any]] = []
            stale: list[dict[str, Any]] = []
            for e in self._read():
                (stale if dead_local_owner(str(e.get("owner") or "")) else keep).append(e)
            for e in stale:
                try:
                    server = AdbServer.parse(str(e["adb"]))
                    dev = Device(str(e["serial"]), server)
                    remove_forward(dev, int(e["local"]))
                except (KeyError, ValueError, TypeError, AdbflowError):
                    continue
            if stale:
                self._write(keep)
            return len(stale)


class ResidentServer:
    """One running llama-server on one phone: its tether stream, pid, port and forward."""

    def __init__(self, device: Device, spec: Any, ledger: ForwardLedger | None = None) -> None:
        self.ledger = ledger
        self.device = device
        self.serial = device.serial
        self.spec = spec
        self.argv = server_argv(spec)
        self.pid: int | None = None
        self.remote_port: int | None = None
        self.forward: Forward | None = None
        self.started_at = 0.0
        self.ready_s: float | None = None      # start -> /health 200
        self._stream: Any = None
        self._tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self._seen = threading.Condition()
        self._ended = False

    # -- errors
    def _error(self, message: str, *, kind: str, hint: str | None = None) -> ResidentServerError:
        return ResidentServerError(self.serial, shlex.join(self.argv), stdout=self.log_tail(),
                                   message=message, kind=kind, hint=hint)

    def log_tail(self) -> str:
        with self._seen:
            return "\n".join(self._tail)

    # -- start
    def start(self, *, timeout: float) -> None:
        """Start, forward and health-check; ResidentServerError (the server is stopped
        again) when it does not come up within `timeout`."""
        self.started_at = time.monotonic()
        deadline = self.started_at + timeout
        self._stream = self.device.stream_lines(tether_command(self.argv), timeout=None)
        threading.Thread(target=self._read_log, name=f"llama-server-log {self.serial}",
                         daemon=True).start()
        try:
            with self._seen:
                while self.remote_port is None and not self._ended:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise self._error(f"llama-server did not listen within {timeout:.0f} s",
                                          kind="resident-start")
                    self._seen.wait(min(left, 1.0))
                if self.remote_port is None:
                    raise self._error("llama-server exited before it listened",
                                      kind="resident-start",
                                      hint="see the log tail; is the model path right?")
            self.forward = Forward(self.device, self.remote_port,
                                   timeout=max(1.0, min(10.0, deadline - time.monotonic())))
            if self.ledger is not None:
                self.ledger.add(self.device, self.forward.local_port)
            self._wait_healthy(deadline, timeout)
            self.ready_s = time.monotonic() - self.started_at
        except BaseException:
            self.stop()
            raise

    def _read_log(self) -> None:
        stream = self._stream
        try:
            for line in stream:
                with self._seen:
                    self._tail.append(line[:500])
                    if self.pid is None:
                        self.pid = parse_pid(line)
                    if self.remote_port is None:
                        self.remote_port = parse_listening_port(line)
                    self._seen.notify_all()
        except AdbError:
            pass
        finally:
            with self._seen:
                self._ended = True
                self._seen.notify_all()

    def _wait_healthy(self, deadline: float, timeout: float) -> None:
        assert self.forward is not None
        last = "no answer"
        while True:
            if self.ended:
                raise self._error("llama-server exited while loading the model",
                                  kind="resident-start")
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._error(f"/health not ok within {timeout:.0f} s ({last})",
                                  kind="resident-start")
            try:
                status, body = http_call(self.forward.local_port, "GET", "/health", None,
                                         timeout=min(5.0, left))
                if status == 200:
                    return
                last = f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}"
            except (OSError, ValueError, http.client.HTTPException) as exc:
                last = str(exc) or type(exc).__name__
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    @property
    def ended(self) -> bool:
        with self._seen:
            return self._ended

    # -- use
    def complete(self, request: dict[str, Any], *, timeout: float) -> Completion:
        """One `/completion`. A server that does not answer in `timeout` is hung: it is
        stopped here and ResidentServerError(kind resident-hang) says so."""
        if self.forward is None or self.ended:
            raise self._error("llama-server is not running", kind="resident-died")
        try:
            status, body = http_call(self.forward.local_port, "POST", "/completion",
                                     json.dumps(request).encode(), timeout=timeout)
        except TimeoutError:
            self.stop()
            raise self._error(f"no answer within {timeout:.0f} s; llama-server killed",
                              kind="resident-hang",
                              hint="the stage is re-bid; the phone gets a new server next time"
                              ) from None
        except (OSError, ValueError, http.client.HTTPException) as exc:
            self.stop()
            raise self._error(f"llama-server connection failed ({exc}); killed",
                              kind="resident-died") from exc
        if status != 200:
            raise self._error(f"HTTP {status}: {body[:300].decode('utf-8', 'replace')}",
                              kind="resident-http")
        try:
            return parse_completion(body)
        except ValueError as exc:
            raise self._error(f"not a llama-server answer: {exc}", kind="resident-http") from exc

    # -- stop
    def stop(self) -> None:
        """Kill the server (recorded pid), close its tether, remove the forward. Safe to call
        twice; each step is tried even when an earlier one failed (a gone phone)."""
        pid, self.pid = self.pid, None
        if pid is not None and not self.ended:
            with contextlib.suppress(AdbError):
                # TERM, then KILL what is still there a moment later: one shell, quoted pid
                q = shlex.quote(str(pid))
                self.device.shell(f"kill {q} 2>/dev/null; i=0; while kill -0 {q} 2>/dev/null "
                                  f"&& [ $i -lt 20 ]; do sleep 0.1; i=$((i+1)); done; "
                                  f"kill -9 {q} 2>/dev/null; true", timeout=10.0, check=False)
        if self._stream is not None:
            self._stream.close()
        if self.forward is not None:
            local = self.forward.local_port
            self.forward.close()
            self.forward = None
            if self.ledger is not None:
                with contextlib.suppress(OSError):
                    self.ledger.remove(local)


class ResidentServers:
    """The session's resident servers, one per phone, started on first use.

    `ready()` lists the phones with a live server (what Task.resident_on gets), `server()`
    starts or returns one (None: that phone has no server binary, use the one-shot program),
    `discard()` stops a broken one, `close()` stops all (idempotent)."""

    def __init__(self, *, start_timeout_s: float = 120.0,
                 ledger: ForwardLedger | None = None) -> None:
        self.start_timeout_s = start_timeout_s
        self.ledger = ledger
        if ledger is not None:
            with contextlib.suppress(OSError):
                swept = ledger.sweep()      # forwards a killed adbflow left in the adb server
                if swept:
                    log.info("removed %d forward(s) a stopped adbflow left behind", swept)
        self._servers: dict[str, ResidentServer] = {}
        self._missing: dict[tuple[str, str], str] = {}     # (serial, binary) -> why not
        self._locks: dict[str, threading.Lock] = collections.defaultdict(threading.Lock)
        self._lock = threading.Lock()
        self._closed = False

    def ready(self) -> frozenset[str]:
        with self._lock:
            return frozenset(s for s, srv in self._servers.items() if not srv.ended)

    def servers(self) -> list[ResidentServer]:
        with self._lock:
            return list(self._servers.values())

    def server(self, device: Device, spec: Any) -> ResidentServer | None:
        """The phone's server, started now if it has none; None when the phone lacks the
        server binary (remembered: it is not asked again this session)."""
        serial = device.serial
        binary = str(getattr(spec, "server_binary", "") or "")
        if not binary or (serial, binary) in self._missing:
            return None
        with self._locks[serial]:
            with self._lock:
                if self._closed:
                    raise ResidentServerError(serial, binary, message="adbflow is stopping",
                                              kind="resident-stopping")
                current = self._servers.get(serial)
            if current is not None and not current.ended:
                return current
            if current is not None:           # died since: forget it, start a new one
                self.discard(serial)
            if device.stat(binary, timeout=10.0) is None:
                self._missing[(serial, binary)] = "not on the phone"
                log.info("%s: no %s; generate stays one-shot", serial, binary)
                return None
            srv = ResidentServer(device, spec, self.ledger)
            srv.start(timeout=self.start_timeout_s)
            with self._lock:
                if self._closed:            # stopped while starting: do not leak it
                    srv.stop()
                    raise ResidentServerError(serial, binary, message="adbflow is stopping",
                                              kind="resident-stopping")
                self._servers[serial] = srv
            log.info("%s: llama-server pid %s on port %s, ready in %.2f s", serial, srv.pid,
                     srv.remote_port, srv.ready_s or 0.0)
            return srv

    def discard(self, serial: str) -> None:
        with self._lock:
            srv = self._servers.pop(serial, None)
        if srv is not None:
            srv.stop()

    def close(self) -> None:
        """Stop every server (on exit, Ctrl-C, SIGTERM). Idempotent."""
        with self._lock:
            self._closed = True
            servers, self._servers = list(self._servers.values()), {}
        threads = [threading.Thread(target=s.stop, daemon=True) for s in servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15.0)
