"""Stand-in for llama.cpp's `llama-server` on a virtual device: llama.cpp's own HTTP server
(through xllamacpp) with the real GGUF, behind a front that paces it to the device class.

What is real: `xllamacpp.Server` *is* llama.cpp's server (tools/server) built as a library.
It loads the model once and answers `/health` and `/completion` with llama.cpp's own JSON
(`content`, `tokens_predicted`, `stop`, `timings` with `cache_n`/`prompt_n`/`predicted_n`
...); its prompt cache (`cache_prompt`, on by default) reuses the KV cache of a prefix the
previous request shared, as on a phone.

What is simulated, and why a front: the device's speed. The front binds the address it was
asked for (`--host`/`--port`; port 0 = any free port, as the real server, which then logs the
port it got), hands each request to the library's server on a private abstract unix socket
(nothing else listens on TCP, nothing is left on disk) and holds the answer until a phone of
the class would have finished: the prompt tokens llama.cpp really evaluated (`prompt_n`,
after the cache) at 8x the token rate, as llama-completion's stand-in, and the generated
tokens at the profile's rate scaled by load, heat and slow_factor *as they are at the
request* (a resident program sees the load change). The `timings` numbers are rewritten to
those simulated times; the counts stay llama.cpp's. Model load: the profile's `llm_load_ms`
once, at start, while `/health` answers 503 "Loading model" like the real server.

Logs go to stderr in llama.cpp's wording for the lines adbflow reads (the listening line with
the resolved port, "model loaded"). Faults (program `llama-server`): at start as for every
stand-in (hang = never listens, fail = exit), and re-read at every `/completion` because a
resident program outlives a fault switch: hang = that request is never answered, fail =
HTTP 500. Deviations: `stream: true` is refused (501; adbflow does not stream), one slot
(`-np` > 1 is accepted but requests are served one at a time).
"""
from __future__ import annotations

import http.client
import json
import os
import secrets
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from adbflow.fleet.programs import common
from adbflow.fleet.programs.llama_completion import load_pad_s, parse_args, token_rate

PROGRAM = "llama-server"
#: flag -> (destination, takes a value): the server's subset of llama.cpp's common arguments
FLAGS: dict[str, tuple[str, bool]] = {
    "-m": ("model", True), "--model": ("model", True),
    "--host": ("host", True), "--port": ("port", True),
    "-c": ("ctx", True), "--ctx-size": ("ctx", True),
    "-n": ("n_predict", True), "--n-predict": ("n_predict", True), "--predict": ("n_predict", True),
    "-t": ("threads", True), "--threads": ("threads", True),
    "-tb": ("threads_batch", True), "--threads-batch": ("threads_batch", True),
    "-b": ("batch", True), "--batch-size": ("batch", True),
    "-np": ("parallel", True), "--parallel": ("parallel", True),
    "-to": ("timeout", True), "--timeout": ("timeout", True),
    "-s": ("seed", True), "--seed": ("seed", True),
    "--temp": ("temp", True), "--top-k": ("top_k", True), "--top-p": ("top_p", True),
    "--min-p": ("min_p", True), "--repeat-penalty": ("repeat_penalty", True),
    "--repeat-last-n": ("repeat_last_n", True),
    "-ngl": ("ngl", True), "--n-gpu-layers": ("ngl", True), "--gpu-layers": ("ngl", True),
    "-fa": ("flash_attn", True), "--flash-attn": ("flash_attn", True),
    "-a": ("alias", True), "--alias": ("alias", True),
    "--no-webui": ("no_webui", False), "--no-warmup": ("no_warmup", False),
    "--mlock": ("mlock", False), "--no-mmap": ("no_mmap", False),
    "--log-disable": ("log_disable", False), "-lv": ("verbosity", True),
    "--verbosity": ("verbosity", True), "--metrics": ("metrics", False),
}
PROMPT_RATE_X = 8.0     # prefill vs decode on phone CPUs (as llama-completion's stand-in)


def err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def error_body(code: int, message: str, kind: str) -> dict[str, Any]:
    """llama.cpp server's error JSON (format_error_response)."""
    return {"error": {"code": code, "message": message, "type": kind}}


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP to the library's server on its abstract unix socket."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def simulated_timings(real: dict[str, Any], rate: float) -> tuple[float, dict[str, Any]]:
    """(seconds a phone of the class takes, `timings` with the simulated times). Pure.
    The token counts are llama.cpp's: `prompt_n` is what it evaluated after its cache."""
    prompt_n = int(real.get("prompt_n") or 0)
    predicted_n = int(real.get("predicted_n") or 0)
    prompt_rate = rate * PROMPT_RATE_X
    prompt_ms = 1000.0 * prompt_n / prompt_rate
    predicted_ms = 1000.0 * predicted_n / rate
    out = dict(real)
    out.update(prompt_ms=prompt_ms,
               prompt_per_token_ms=prompt_ms / prompt_n if prompt_n else 0.0,
               prompt_per_second=prompt_rate if prompt_n else 0.0,
               predicted_ms=predicted_ms,
               predicted_per_token_ms=predicted_ms / predicted_n if predicted_n else 0.0,
               predicted_per_second=rate if predicted_n else 0.0)
    return (prompt_ms + predicted_ms) / 1000.0, out


class Backend:
    """The library's llama.cpp server and the one-slot pacing in front of it."""

    def __init__(self, threads: int, request_timeout_s: float) -> None:
        self.socket_name = f"\0adbflow-llama-server-{os.getpid()}-{secrets.token_hex(4)}.sock"
        self.threads = threads
        self.timeout_s = request_timeout_s
        self.ready = threading.Event()
        self.slot = threading.Lock()
        self.server: Any = None          # keeps the library's server alive

    def load(self, model: str, n_ctx: int, n_predict: int) -> None:
        import xllamacpp  # heavy: only once the listener is up

        params = xllamacpp.CommonParams()
        params.model.path = model
        params.n_ctx = max(256, min(n_ctx, 2048))   # a short story; saves host RAM
        params.n_predict = n_predict
        # one host thread: the host's cores are shared by the whole fleet (see
        # llama_completion); the device's threads only set the simulated rate
        params.cpuparams.n_threads = 1
        params.cpuparams_batch.n_threads = 1
        params.n_parallel = 1
        params.warmup = False
        params.verbosity = -1
        params.hostnames = [self.socket_name]
        self.server = xllamacpp.Server(params)

    def call(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        conn = _UnixHTTPConnection(self.socket_name, self.timeout_s)
        try:
            conn.request(method, path, body=body,
                         headers={"Content-Type": "application/json"} if body else {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def complete(self, request: dict[str, Any], path: str) -> tuple[int, dict[str, Any]]:
        """One completion, held until the simulated device time has passed."""
        with self.slot:
            t0 = time.monotonic()
            status, raw = self.call("POST", path, json.dumps(request).encode())
            try:
                answer = json.loads(raw)
            except ValueError:
                return 500, error_body(500, "invalid answer from llama.cpp", "server_error")
            if status != 200 or not isinstance(answer, dict) or "timings" not in answer:
                return status, answer
            state = common.load_state()
            rate = token_rate(state, self.threads, common.slowdown(state))
            seconds, answer["timings"] = simulated_timings(answer["timings"], rate)
            common.sleep_until(t0 + seconds)
            return 200, answer


def make_handler(backend: Backend) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "llama.cpp"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            err(f"srv  log_server_r: request: {self.command} {self.path} "
                f"{self.client_address[0]} {status}")

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path != "/health":
                self._send(404, error_body(404, "File Not Found", "not_found_error"))
            elif not backend.ready.is_set():
                self._send(503, error_body(503, "Loading model", "unavailable_error"))
            else:
                status, raw = backend.call("GET", "/health", None)
                self._send(status, json.loads(raw))

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length > 0 else b""
            if self.path not in ("/completion", "/completions"):
                self._send(404, error_body(404, "File Not Found", "not_found_error"))
                return
            if not backend.ready.is_set():
                self._send(503, error_body(503, "Loading model", "unavailable_error"))
                return
            try:
                request = json.loads(body or b"{}")
            except ValueError:
                self._send(400, error_body(400, "invalid JSON body", "invalid_request_error"))
                return
            if not isinstance(request, dict):
                self._send(400, error_body(400, "the body must be a JSON object",
                                           "invalid_request_error"))
                return
            if request.get("stream"):
                self._send(501, error_body(501, "streaming is not supported by the adbflow "
                                           "virtual device's llama-server", "not_supported_error"))
                return
            fault = common.load_state().program_fault(PROGRAM)
            if fault.get("mode") == "hang":          # a wedged server: never answers
                while True:
                    time.sleep(3600)
            if fault.get("mode") == "fail":
                self._send(500, error_body(500, str(fault.get("message") or "simulated failure"),
                                           "server_error"))
                return
            status, answer = backend.complete(request, self.path)
            self._send(status, answer)

    return Handler


def set_process_name(name: str) -> None:
    """`ps -A` on a phone shows the binary's name (llama-server), not an interpreter's."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    common.install_signal_defaults()
    set_process_name(PROGRAM)
    args = parse_args(sys.argv[1:] if argv is None else argv, FLAGS)
    state = common.load_state()
    common.apply_program_fault(PROGRAM, state)
    v = args.values
    model = v.get("model", "models/7B/ggml-model-f16.gguf")
    host = v.get("host", "127.0.0.1")
    try:
        port = int(v.get("port", 8080))
        threads = int(v.get("threads", 4))
        n_ctx = int(v.get("ctx", 4096))
        n_predict = int(v.get("n_predict", -1))
        timeout_s = float(v.get("timeout", 600))
    except ValueError as exc:
        err(f"error: invalid parameter for argument: {exc}")
        return 1
    t_start = time.monotonic()
    err(f"build: 0 (xllamacpp) with prebuilt llama.cpp for {os.uname().machine}-linux")
    err(f"system info: n_threads = {threads}, n_threads_batch = {threads}, "
        f"total_threads = {state.ncores}")
    err("main: binding port with default address family")
    backend = Backend(threads, timeout_s)
    try:
        httpd = ThreadingHTTPServer((host, port), make_handler(backend))
    except OSError:
        err(f"main: couldn't bind HTTP server socket, hostname: {host}, port: {port}")
        return 1
    httpd.daemon_threads = True
    port = httpd.server_address[1]
    threading.Thread(target=httpd.serve_forever, name="http", daemon=True).start()
    err(f"main: HTTP server is listening, hostname: {host}, port: {port}, http threads: 3")
    err("main: loading model")
    err(f"srv    load_model: loading model '{model}'")
    if not os.path.isfile(model):
        err(f"gguf_init_from_file: failed to open GGUF file '{model}'")
        err(f"srv    load_model: failed to load model, '{model}'")
        err("main: exiting due to model loading error")
        os._exit(1)
    try:
        backend.load(model, n_ctx, n_predict)
    except Exception as exc:  # xllamacpp raises plain RuntimeError/Exception subclasses
        err(f"llama_model_load: error loading model: {exc}")
        err("main: exiting due to model loading error")
        os._exit(1)
    slow = common.slowdown(state)
    common.sleep_until(t_start + load_pad_s(state, slow))
    err(f"adbflow virtual device ({state.profile}): real {os.path.basename(model)} on the host "
        f"CPU through llama.cpp's server; model load simulated = "
        f"{(time.monotonic() - t_start) * 1000:.0f} ms (profile {state.llm_load_ms:g} ms, "
        f"{slow.describe()}); token rate simulated per request "
        f"(profile {state.llm_tok_s:g} tok/s, threads {threads})")
    backend.ready.set()
    err("main: model loaded")
    err(f"main: server is listening on http://{host}:{port} - starting the main loop")
    err("srv  update_slots: all slots are idle")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
