#!/usr/bin/env bash
# The `script:` of examples/github-actions-emulator.yml, run once the emulator has booted:
# provision the emulator with real binaries and models, then run the same end-to-end
# check adbflow's CI runs against the virtual fleet (examples/ci_pipeline_check.sh).
#
# Usage: examples/emulator_ci.sh TOOLS_DIR [SERIAL]
#   TOOLS_DIR  holds label_image, benchmark_model and llama-completion built for the
#              emulator's ABI (llama.cpp's one-shot program; llama-cli is a chat since 2025-12)
#   SERIAL     default: $ANDROID_SERIAL, else the first emulator-* in `adb devices`
# Environment (set by the workflow; defaults are the workflow's pinned URLs):
#   INCEPTION_URL, LABELS_URL, GGUF_URL, GGUF_SHA256 (optional), CI_OUT (default ./ci-out),
#   EMULATOR_PROFILE_DEST (default: the checkout's profiles/), PROVISION_DEST (default
#   /data/local/tmp), ANDROID_ADB_SERVER_PORT.
#
# tests/test_examples.py runs this script against the virtual fleet (stand-in programs,
# file:// archives), so every step here also runs outside GitHub.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${1:?usage: emulator_ci.sh TOOLS_DIR [SERIAL]}"
SERIAL="${2:-${ANDROID_SERIAL:-}}"
INCEPTION_URL="${INCEPTION_URL:-https://storage.googleapis.com/download.tensorflow.org/models/tflite/model_zoo/upload_20180427/inception_v3_2018_04_27.tgz}"
LABELS_URL="${LABELS_URL:-https://storage.googleapis.com/download.tensorflow.org/models/mobilenet_v1_1.0_224_frozen.tgz}"
GGUF_URL="${GGUF_URL:-https://huggingface.co/bartowski/SmolLM2-135M-Instruct-GGUF/resolve/main/SmolLM2-135M-Instruct-Q4_K_M.gguf}"
CI_OUT="${CI_OUT:-$PWD/ci-out}"
ADB="${ADBFLOW_ADB:-$(command -v adb || timeout 30 python3 -c 'import adbutils; print(adbutils.adb_path())')}"
PROFILE_DEST="${EMULATOR_PROFILE_DEST:-$REPO/profiles}"   # where adbflow reads profiles
PROVISION_DEST="${PROVISION_DEST:-/data/local/tmp}"        # the profile's paths assume this
mkdir -p "$CI_OUT"

if [ -z "$SERIAL" ]; then
  SERIAL="$(timeout 30 "$ADB" devices | awk '$1 ~ /^emulator-/ && $2 == "device" {print $1; exit}')"
fi
[ -n "$SERIAL" ] || { timeout 30 "$ADB" devices -l >&2; echo "emulator_ci: no emulator" >&2; exit 1; }
timeout 300 "$ADB" -s "$SERIAL" wait-for-device
for _ in $(seq 1 150); do   # the runner waits for boot too; be safe when run by hand
  [ "$(timeout 10 "$ADB" -s "$SERIAL" shell getprop sys.boot_completed | tr -d '\r')" = 1 ] && break
  sleep 2
done
echo "== $SERIAL: $(timeout 10 "$ADB" -s "$SERIAL" shell getprop ro.product.model | tr -d '\r'), ABI $(timeout 10 "$ADB" -s "$SERIAL" shell getprop ro.product.cpu.abi | tr -d '\r')"

# Emulators report ro.product.model sdk_gphone*: give them a profile with 2 threads and
# the same /data/local/tmp layout as a real phone (adbflow reads profiles/*.toml).
cp "$REPO/examples/profiles/emulator_x86_64.toml" "$PROFILE_DEST/emulator_x86_64.toml"

GGUF_SRC="$GGUF_URL"
if [ -n "${GGUF_SHA256:-}" ]; then GGUF_SRC="$GGUF_URL#sha256=$GGUF_SHA256"; fi
timeout 1800 "$REPO/examples/provision_device.sh" -s "$SERIAL" --dest "$PROVISION_DEST" \
  "label_image=$TOOLS/label_image" \
  "benchmark_model=$TOOLS/benchmark_model" \
  "llama-completion=$TOOLS/llama-completion" \
  "inception_v3.tflite=$INCEPTION_URL!inception_v3.tflite" \
  "labels.txt=$LABELS_URL!mobilenet_v1_1.0_224/labels.txt" \
  "model.gguf=$GGUF_SRC"

# Emulators on shared CI runners are slow: generous per-stage timeouts.
timeout 2400 "$REPO/examples/ci_pipeline_check.sh" --serial "$SERIAL" --out "$CI_OUT" \
  --wait 1800 -- --classify-timeout 600 --generate-timeout 900
