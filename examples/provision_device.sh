#!/usr/bin/env bash
# Push the programs and models adbflow runs (label_image, benchmark_model, a .tflite model,
# labels, llama-cli, a GGUF) onto one Android device over adb, and prove they arrived intact.
#
# Why a script and not adbflow: adbflow never installs anything by itself (the phones are
# borrowed); setting a phone up is a deliberate, one-off step the owner runs.
#
# Usage:
#   examples/provision_device.sh [-s SERIAL] [--adb-server HOST:PORT] [--dest DIR]
#                                [--cache DIR] [--no-verify] NAME=SOURCE ...
#
#   NAME    file name on the device (in DIR, default /data/local/tmp), e.g. label_image
#   SOURCE  a local file, or an http(s)://, file:// URL (downloaded with curl), optionally
#           followed by `!MEMBER` to take MEMBER out of a .tgz/.tar.gz archive, and/or
#           `#sha256=HEX` to check the downloaded/extracted file before it is pushed.
#
# Example (a real phone set up like profiles/default.toml expects):
#   examples/provision_device.sh -s R5CT1234 \
#     label_image=bazel-bin/tensorflow/lite/examples/label_image/label_image \
#     'inception_v3.tflite=https://storage.googleapis.com/download.tensorflow.org/models/tflite/model_zoo/upload_20180427/inception_v3_2018_04_27.tgz!inception_v3.tflite' \
#     'labels.txt=https://storage.googleapis.com/download.tensorflow.org/models/mobilenet_v1_1.0_224_frozen.tgz!mobilenet_v1_1.0_224/labels.txt' \
#     llama-cli=build-android/bin/llama-cli  model.gguf=~/models/SmolLM2-135M-Instruct-Q4_K_M.gguf
#
# ELF files and #! scripts are made executable (0755); everything else is 0644. After each push the
# device's `sha256sum` must equal the laptop's, else the script fails. Android 6 has no
# sha256sum: toybox `md5sum` is compared instead; a device with neither fails unless
# --no-verify (the check is then skipped, with a warning).
# Every adb/curl call is bounded by `timeout`. Exit codes: 0 ok, 1 a push/check failed,
# 2 bad usage.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "provision_device: $*" >&2; exit 1; }

SERIAL="${ANDROID_SERIAL:-}"
ADB_SERVER=""
DEST="/data/local/tmp"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/adbflow/provision"
PUSH_TIMEOUT="${PROVISION_PUSH_TIMEOUT:-600}"   # a GGUF over USB2 takes a while
SHELL_TIMEOUT=60
FETCH_TIMEOUT="${PROVISION_FETCH_TIMEOUT:-1200}"
ITEMS=()
VERIFY=1

while [ $# -gt 0 ]; do
  case "$1" in
    -s|--serial) SERIAL="${2:?}"; shift 2 ;;
    --adb-server) ADB_SERVER="${2:?}"; shift 2 ;;
    --dest) DEST="${2:?}"; shift 2 ;;
    --cache) CACHE="${2:?}"; shift 2 ;;
    --no-verify) VERIFY=0; shift ;;
    -h|--help) usage ;;
    -*) echo "unknown option $1" >&2; usage ;;
    *=*) ITEMS+=("$1"); shift ;;
    *) echo "expected NAME=SOURCE, got: $1" >&2; usage ;;
  esac
done
[ ${#ITEMS[@]} -gt 0 ] || usage
case "$DEST" in /*) ;; *) die "--dest must be an absolute device path: $DEST" ;; esac

# adb: $ADBFLOW_ADB, else adb on PATH, else the adb shipped in the adbutils wheel
# (the same order adbflow itself uses).
ADB="${ADBFLOW_ADB:-}"
if [ -z "$ADB" ]; then
  ADB="$(command -v adb || true)"
  [ -n "$ADB" ] || ADB="$(timeout 30 python3 -c 'import adbutils; print(adbutils.adb_path())')"
fi
ADB_ARGS=()
if [ -n "$ADB_SERVER" ]; then
  case "$ADB_SERVER" in
    *:*) ADB_ARGS+=(-H "${ADB_SERVER%:*}" -P "${ADB_SERVER##*:}") ;;
    *) ADB_ARGS+=(-P "$ADB_SERVER") ;;
  esac
fi
if [ -n "$SERIAL" ]; then ADB_ARGS+=(-s "$SERIAL"); fi

# POSIX single-quoting for the device shell: every argument we send is data, never code.
q() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

sha256_local() { sha256sum "$1" | cut -d' ' -f1; }
md5_local() { md5sum "$1" | cut -d' ' -f1; }

# Which checksum tool the device has: sha256sum (Android 7+ toybox), else md5sum (Android 6
# toybox/toolbox), else none. Asked once; the answer is one word.
remote_sum_tool() {
  timeout "$SHELL_TIMEOUT" "$ADB" "${ADB_ARGS[@]}" shell \
    'if command -v sha256sum >/dev/null 2>&1; then echo sha256sum;
     elif command -v md5sum >/dev/null 2>&1; then echo md5sum; else echo none; fi' \
    | tr -d '\r' | head -n 1
}

# fetch SOURCE -> prints a local path holding the bytes (downloads/extracts into $CACHE).
fetch() {
  local src="$1" want="" member="" path
  case "$src" in *'#sha256='*) want="${src##*#sha256=}"; src="${src%#sha256=*}" ;; esac
  case "$src" in *'!'*) member="${src#*!}"; src="${src%%!*}" ;; esac
  case "$src" in
    http://*|https://*|file://*)
      mkdir -p "$CACHE"
      path="$CACHE/$(printf '%s' "$src" | sha256sum | cut -c1-16)-$(basename "${src%%\?*}")"
      if [ ! -s "$path" ]; then
        echo "  downloading $src" >&2
        timeout "$FETCH_TIMEOUT" curl --fail --silent --show-error --location \
          --retry 3 --output "$path.part" "$src" || die "download failed: $src"
        mv "$path.part" "$path"
      fi ;;
    "~/"*) path="$HOME/${src#\~/}" ;;
    *) path="$src" ;;
  esac
  [ -f "$path" ] || die "no such file: $path"
  if [ -n "$member" ]; then
    local out="$CACHE/$(printf '%s!%s' "$path" "$member" | sha256sum | cut -c1-16)-$(basename "$member")"
    mkdir -p "$CACHE"
    # Archives list members as `name` or `./name`: accept both.
    timeout 300 tar -xzf "$path" -O -- "$member" > "$out.part" 2>/dev/null \
      || timeout 300 tar -xzf "$path" -O -- "./$member" > "$out.part" \
      || die "$member not in $path"
    mv "$out.part" "$out"; path="$out"
  fi
  if [ -n "$want" ] && [ "$(sha256_local "$path")" != "$want" ]; then
    die "sha256 mismatch for $1 (got $(sha256_local "$path"))"
  fi
  printf '%s\n' "$path"
}

timeout 30 "$ADB" "${ADB_ARGS[@]}" get-state >/dev/null \
  || die "device ${SERIAL:-(default)} not ready (adb ${ADB_ARGS[*]} get-state); check 'adb devices'"
timeout "$SHELL_TIMEOUT" "$ADB" "${ADB_ARGS[@]}" shell "mkdir -p $(q "$DEST")" \
  || die "cannot create $DEST on the device"
SUM_TOOL="$(remote_sum_tool)"
case "$SUM_TOOL" in
  sha256sum|md5sum) ;;
  *) [ "$VERIFY" = 0 ] || die "the device has neither sha256sum nor md5sum to check the pushes; pass --no-verify to skip the check"
     echo "warning: no checksum tool on the device: pushes are not verified (--no-verify)" >&2
     SUM_TOOL=none ;;
esac

for item in "${ITEMS[@]}"; do
  name="${item%%=*}"; source="${item#*=}"
  # A device file name, not a path: no slashes, no leading dot or dash.
  [[ "$name" =~ ^[A-Za-z0-9_][A-Za-z0-9._+-]*$ ]] || die "bad device file name: $name"
  local_path="$(fetch "$source")"
  remote="$DEST/$name"
  mode=644
  case "$(head -c 4 "$local_path" | od -An -tx1 | tr -d ' \n')" in
    7f454c46|2321*) mode=755 ;;   # ELF binary or #! script: a program
  esac
  echo "push $local_path -> $remote ($(stat -c %s "$local_path") bytes, mode $mode)"
  timeout "$PUSH_TIMEOUT" "$ADB" "${ADB_ARGS[@]}" push "$local_path" "$remote" >/dev/null \
    || die "adb push to $remote failed"
  timeout "$SHELL_TIMEOUT" "$ADB" "${ADB_ARGS[@]}" shell "chmod $mode $(q "$remote")" \
    || die "chmod $mode $remote failed"
  [ "$SUM_TOOL" = none ] && continue
  remote_sum="$(timeout "$SHELL_TIMEOUT" "$ADB" "${ADB_ARGS[@]}" shell "$SUM_TOOL $(q "$remote")" \
    | tr -d '\r' | cut -d' ' -f1)"
  if [ "$SUM_TOOL" = sha256sum ]; then want="$(sha256_local "$local_path")"; else want="$(md5_local "$local_path")"; fi
  [ "$remote_sum" = "$want" ] \
    || die "$remote on the device has ${SUM_TOOL%sum} '$remote_sum', expected $want"
done
echo "provisioned ${#ITEMS[@]} file(s) in $DEST on ${SERIAL:-the default device}"
