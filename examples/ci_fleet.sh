#!/usr/bin/env bash
# adbflow's scripted CI against the virtual fleet: the same steps the emulator workflow
# (examples/github-actions-emulator.yml) runs against real Android emulators.
#
#   1. start 3 virtual phones on a PRIVATE adb server port and state dir (never 5037: the
#      developer's own adb server and phones are left alone),
#   2. examples/ci_pipeline_check.sh: `adbflow devices`, `adbflow bid --once`, start
#      `adbflow watch --once --json`, take a picture of a cat on phone 2 with `adb shell`
#      (temporary name + mv, like a camera app), check: top label is a cat, story non-empty,
#   3. stop the fleet and that adb server, also on failure or Ctrl-C (trap).
#
# Usage: examples/ci_fleet.sh [--keep DIR] [-- CHECK_ARGS...]
#   --keep DIR      leave logs, JSON and the journal in DIR
#   -- CHECK_ARGS   passed to ci_pipeline_check.sh, e.g. `-- --image coffee.png` (must fail)
# Exit code: 0 pass, non-zero fail. Every command is bounded by `timeout`.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KEEP=""
CHECK_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) KEEP="${2:?--keep needs a directory}"; shift 2 ;;
    --) shift; CHECK_ARGS=("$@"); break ;;
    *) echo "ci_fleet: unknown argument $1" >&2; exit 2 ;;
  esac
done

WORK="$(mktemp -d -t adbflow-ci-fleet.XXXXXX)"
STATE="$WORK/fleet"
ADB="${ADBFLOW_ADB:-$(command -v adb || timeout 30 python3 -c 'import adbutils; print(adbutils.adb_path())')}"
# Free ports: the adb server's, and the first device's (devices use the next ones too).
read -r ADB_PORT BASE_PORT < <(timeout 30 python3 -c '
from adbflow.fleet.adb_server import free_port
print(free_port(15037, 16999), free_port(20000, 29000))')
FLEET_UP=0
CHECK_PID=""

cleanup() {
  rc=$?
  if [ -n "$CHECK_PID" ] && kill -0 "$CHECK_PID" 2>/dev/null; then
    kill "$CHECK_PID" 2>/dev/null || true
    wait "$CHECK_PID" 2>/dev/null || true
  fi
  if [ "$FLEET_UP" = 1 ]; then
    timeout 60 adbflow fleet down --state-dir "$STATE" >&2 || echo "ci_fleet: fleet down failed" >&2
  fi
  timeout 15 "$ADB" -P "$ADB_PORT" kill-server >/dev/null 2>&1 || true
  if [ -n "$KEEP" ]; then mkdir -p "$KEEP"; cp -r "$WORK/out" "$KEEP/" 2>/dev/null || true; fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== fleet up: 3 devices, adb server 127.0.0.1:$ADB_PORT, state $STATE" >&2
FLEET_UP=1
timeout 120 adbflow fleet up --devices 3 --adb-port "$ADB_PORT" --base-port "$BASE_PORT" \
  --state-dir "$STATE" --profile midrange_2023 --profile flagship_2023 --profile lowend_2020 \
  --json > "$WORK/fleet.json"
SERIAL="$(timeout 30 python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["devices"][1]["serial"])' \
  "$WORK/fleet.json")"

# In the background + `wait`: a TERM to this script then runs the trap at once (bash
# defers traps while a foreground command runs), and the trap stops the check first.
timeout 900 "$REPO/examples/ci_pipeline_check.sh" --adb-server "127.0.0.1:$ADB_PORT" \
  --serial "$SERIAL" --out "$WORK/out" --wait 600 "${CHECK_ARGS[@]}" &
CHECK_PID=$!
wait "$CHECK_PID"
