"""Stand-in for TFLite's label_image on a virtual device: real model, simulated latency.

Why: the orchestrator parses label_image output and schedules by its latency. This runs
the REAL classifier (ai-edge-litert, e.g. efficientnet_lite0) with label_image's flags,
BMP-only input (like bitmap_helpers.cc) and output format (`INFO: ` prefixed lines on
stderr), and pads the measured time to the device profile's latency scaled by load,
temperature and the slow_factor fault - saying so in one extra INFO line.

Difference from the real tool, stated in the note line: when --input_mean/--input_std are
not given, a float model gets the value range it was trained for (0-255 for the bundled
efficientnet_lite0), where the real tool would normalise to [-1, 1] and misclassify.
"""
from __future__ import annotations

import getopt
import os
import struct
import sys
import time

import numpy as np

from adbflow.fleet.programs import common

SHORT = "a:b:c:d:e:f:g:i:j:l:m:p:r:s:t:v:w:x:"
LONG = {"accelerated": "a", "old_accelerated": "d", "allow_fp16": "f", "count": "c",
        "verbose": "v", "image": "i", "labels": "l", "tflite_model": "m", "profiling": "p",
        "threads": "t", "input_mean": "b", "input_std": "s", "num_results": "r",
        "max_profiling_buffer_entries": "e", "warmup_runs": "w", "gl_backend": "g",
        "hexagon_delegate": "j", "xnnpack_delegate": "x"}
USAGE = """label_image
--accelerated, -a: [0|1], use Android NNAPI or not
--old_accelerated, -d: [0|1], use old Android NNAPI delegate or not
--allow_fp16, -f: [0|1], allow running fp32 models with fp16 or not
--count, -c: loop interpreter->Invoke() for certain times
--gl_backend, -g: [0|1]: use GL GPU Delegate on Android
--hexagon_delegate, -j: [0|1]: use Hexagon Delegate on Android
--input_mean, -b: input mean
--input_std, -s: input standard deviation
--image, -i: image_name.bmp
--labels, -l: labels for the model
--tflite_model, -m: model_name.tflite
--profiling, -p: [0|1], profiling or not
--num_results, -r: number of results to show
--threads, -t: number of threads
--verbose, -v: [0|1] print more information
--warmup_runs, -w: number of warmup runs
--xnnpack_delegate, -x [0:1]: xnnpack delegate
"""


def log(severity: str, msg: str) -> None:
    """label_image's Log class: `SEVERITY: message` + endl on stderr."""
    sys.stderr.write(f"{severity}: {msg}\n")
    sys.stderr.flush()


class BmpError(Exception):
    """The input is not something bitmap_helpers could decode."""


def read_bmp(data: bytes) -> np.ndarray:
    """Decode a BMP the way bitmap_helpers.cc does (no compression, 8/24/32 bpp).

    The real code trusts the header blindly; where it would read out of bounds or
    allocate absurd sizes (e.g. a PNG/JPEG passed as .bmp) we raise BmpError."""
    if len(data) < 34 or data[:2] != b"BM":
        raise BmpError("not a BMP file (no 'BM' header)")
    header_size, = struct.unpack_from("<i", data, 10)
    width, height = struct.unpack_from("<ii", data, 18)
    bpp, = struct.unpack_from("<H", data, 28)
    compression, = struct.unpack_from("<I", data, 30) if len(data) >= 34 else (0,)
    channels = bpp // 8
    if channels not in (1, 3, 4) or width <= 0 or height == 0 or compression not in (0, 3):
        raise BmpError(f"unsupported BMP (bpp {bpp}, {width}x{height}, compression "
                       f"{compression})")
    row_size = (8 * channels * width + 31) // 32 * 4
    h = abs(height)
    if header_size < 14 or header_size + row_size * h > len(data):
        raise BmpError("BMP pixel data shorter than its header says")
    raw = np.frombuffer(data, dtype=np.uint8, count=row_size * h, offset=header_size)
    rows = raw.reshape(h, row_size)[:, :width * channels].reshape(h, width, channels)
    if height > 0:  # bottom-up unless height is negative
        rows = rows[::-1]
    if channels >= 3:  # BGR(A) -> RGB(A)
        rows = rows[:, :, [2, 1, 0] + ([3] if channels == 4 else [])]
    return np.ascontiguousarray(rows)


def resize_bilinear(img: np.ndarray, out_h: int, out_w: int, out_c: int) -> np.ndarray:
    """TFLite ResizeBilinear (align_corners=false, half_pixel_centers=false) in float32."""
    h, w, c = img.shape
    src = img.astype(np.float32)
    if c == 1 and out_c == 3:
        src = np.repeat(src, 3, axis=2)
    elif c >= 3:
        src = src[:, :, :out_c]
    ys = np.arange(out_h, dtype=np.float32) * (h / out_h)
    xs = np.arange(out_w, dtype=np.float32) * (w / out_w)
    y0 = np.floor(ys).astype(int)
    x0 = np.floor(xs).astype(int)
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    dy = (ys - y0)[:, None, None]
    dx = (xs - x0)[None, :, None]
    top = src[y0][:, x0] * (1 - dx) + src[y0][:, x1] * dx
    bot = src[y1][:, x0] * (1 - dx) + src[y1][:, x1] * dx
    return top * (1 - dy) + bot * dy


def top_n(scores: np.ndarray, n: int, threshold: float = 0.001) -> list[tuple[float, int]]:
    """get_top_n: results above the threshold, best first."""
    order = np.argsort(-scores, kind="stable")
    out = [(float(scores[i]), int(i)) for i in order[:max(0, n)] if scores[i] > threshold]
    return out


def thread_factor(threads: int, ncores: int) -> float:
    """Latency relative to the profile's 4-thread number."""
    eff = max(1, min(threads if threads > 0 else 4, ncores))
    return (4 / eff) ** 0.9 if eff < 4 else (4 / eff) ** 0.25


def parse_args(argv: list[str]) -> dict[str, str]:
    long_opts = [f"{k}=" for k in LONG]
    try:
        opts, _rest = getopt.gnu_getopt(argv, SHORT, long_opts)
    except getopt.GetoptError as exc:
        opt = (exc.opt or "?").lstrip("-")
        prog = sys.argv[0] if sys.argv[0] and not sys.argv[0].endswith(".py") else "label_image"
        if exc.msg.endswith("requires argument"):
            sys.stderr.write(f"{prog}: option requires an argument -- {opt}\n")
        else:
            sys.stderr.write(f"{prog}: invalid option -- {opt}\n")
        sys.stderr.write(USAGE)
        sys.exit(255)
    out: dict[str, str] = {}
    for k, v in opts:
        key = k.lstrip("-")
        out[LONG.get(key, key)] = v
    return out


def _int(v: str | None, default: int) -> int:
    try:
        return int(float(v)) if v is not None else default
    except ValueError:
        return 0


def main(argv: list[str] | None = None) -> int:
    common.install_signal_defaults()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    state = common.load_state()
    common.apply_program_fault("label_image", state)

    model_path = args.get("m", "./mobilenet_quant_v1_224.tflite")
    labels_path = args.get("l", "./labels.txt")
    image_path = args.get("i", "./grace_hopper.bmp")
    loops = max(1, _int(args.get("c"), 1))
    threads = _int(args.get("t"), 4)
    n_results = _int(args.get("r"), 5)
    verbose = _int(args.get("v"), 0)
    warmups = max(0, _int(args.get("w"), 2))

    if not os.path.isfile(model_path):
        log("ERROR", f"Failed to mmap model {model_path}")
        return 255
    log("INFO", f"Loaded model {model_path}")
    log("INFO", "resolved reporter")
    from ai_edge_litert.interpreter import Interpreter  # heavy: import after arg checks
    try:
        interp = Interpreter(model_path=model_path, num_threads=1)  # host cores are shared
    except (ValueError, RuntimeError) as exc:
        log("ERROR", f"Failed to construct interpreter ({exc})")
        return 255
    if _int(args.get("a"), 0):
        log("WARN", "NNAPI acceleration is unsupported on this platform.")

    try:
        with open(image_path, "rb") as f:
            data = f.read()
    except OSError:
        log("FATAL", f"input file {image_path} not found")
        return 255
    if verbose:
        log("INFO", f"len: {len(data)}")
    try:
        img = read_bmp(data)
    except BmpError as exc:
        # The real binary decodes garbage and usually dies (bad_alloc/SIGSEGV); we fail
        # cleanly with a message and the exit status of an abort.
        log("ERROR", f"{image_path}: cannot decode image: {exc}; label_image reads BMP only "
                     "(convert with e.g. `convert in.jpg out.bmp`)")
        return 134
    if verbose:
        log("INFO", f"width, height, channels: {img.shape[1]}, {img.shape[0]}, {img.shape[2]}")

    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    _, wh, ww, wc = (int(x) for x in inp["shape"])
    resized = resize_bilinear(img, wh, ww, wc)
    if inp["dtype"] == np.float32:
        mean = float(args["b"]) if "b" in args else 0.0
        std = float(args["s"]) if "s" in args else 1.0
        tensor = ((resized - mean) / (std or 1.0)).astype(np.float32)[None]
    else:
        tensor = np.clip(resized + 0.5, 0, 255).astype(inp["dtype"])[None]
    interp.set_tensor(inp["index"], tensor)

    for _ in range(warmups if loops > 1 else 0):
        interp.invoke()
    slow = common.slowdown(state)
    model_ms = state.classify_ms_for(model_path)
    per_run_ms = model_ms * thread_factor(threads, state.ncores) * slow.total
    t0 = time.monotonic()
    for i in range(loops):
        interp.invoke()
        common.sleep_until(t0 + (i + 1) * per_run_ms / 1000.0)
    elapsed_ms = (time.monotonic() - t0) * 1000.0
    real_avg = elapsed_ms / loops
    log("INFO", "invoked")
    log("INFO", f"average time: {real_avg:g} ms")
    log("INFO", f"adbflow virtual device ({state.profile}{'' if state.found else ', no state'}): "
                f"real inference on the host CPU; time simulated = profile {state.classify_ms:g} "
                f"ms ({model_path.rsplit('/', 1)[-1]} {model_ms:g} ms) x threads x{thread_factor(threads, state.ncores):.2f}, {slow.describe()}")

    out = interp.get_output_details()[0]
    scores = interp.get_tensor(out["index"]).reshape(-1)
    if out["dtype"] in (np.uint8, np.int8):
        # label_image.cc divides uint8 scores by 255; a quantized softmax's scale is 1/256
        # with zero point 0 (so the same), and we use the tensor's own parameters when set
        scale, zero = out.get("quantization", (0.0, 0))
        if scale:
            scores = (scores.astype(np.float32) - float(zero)) * float(scale)
        else:
            scores = scores.astype(np.float32) / 255.0
    results = top_n(scores.astype(np.float32), n_results)
    try:
        with open(labels_path, encoding="utf-8", errors="replace") as f:
            labels = f.read().splitlines()
    except OSError:
        log("ERROR", f"Labels file {labels_path} not found")
        return 255
    for conf, idx in results:
        label = labels[idx] if idx < len(labels) else ""
        log("INFO", f"{conf:g}: {idx} {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
