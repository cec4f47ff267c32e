#!/usr/bin/env bash
# One end-to-end check of adbflow against devices that are already up: list them, bid,
# start `adbflow watch --once --json`, take a picture on one device the way a camera app
# does, and fail unless adbflow labels it as expected and writes a story.
#
# Shared by examples/ci_fleet.sh (virtual fleet, adbflow's CI) and examples/emulator_ci.sh
# (Android emulators, examples/github-actions-emulator.yml), so the emulator workflow runs
# exactly the steps our CI tests.
#
# Usage:
#   examples/ci_pipeline_check.sh [--adb-server HOST:PORT] [--serial SERIAL] [--image FILE]
#       [--expect REGEX] [--out DIR] [--wait SECONDS] [-- EXTRA_WATCH_ARGS...]
#
#   --adb-server  adb server with the devices (default 127.0.0.1:$ANDROID_ADB_SERVER_PORT|5037)
#   --serial      device that "takes" the picture (default: the first ready device)
#   --image       picture to take (default: adbflow's chelsea.png, a cat)
#   --expect      extended regex the TOP label must match (default: an ImageNet cat class)
#   --out         keeps watch.json, watch.log, the journal (default: a temp dir, removed)
#   --wait        seconds allowed for the whole watch (default 600)
#   after --      passed to `adbflow watch` (e.g. --classify-timeout 300)
#
# Exit codes: 0 right answer; 1 wrong answer or a failed step (the reason is printed).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ADB_SERVER="127.0.0.1:${ANDROID_ADB_SERVER_PORT:-5037}"
SERIAL=""
IMAGE="$REPO/adbflow/fleet/assets/chelsea.png"
# ImageNet's five domestic-cat classes (label_image prints e.g. "tiger cat" or "tabby, tabby cat").
EXPECT='tabby|tiger cat|Persian cat|Siamese cat|Egyptian cat'
OUT=""
WAIT=600
WATCH_EXTRA=()

while [ $# -gt 0 ]; do
  case "$1" in
    --adb-server) ADB_SERVER="${2:?}"; shift 2 ;;
    --serial) SERIAL="${2:?}"; shift 2 ;;
    --image) IMAGE="${2:?}"; shift 2 ;;
    --expect) EXPECT="${2:?}"; shift 2 ;;
    --out) OUT="${2:?}"; shift 2 ;;
    --wait) WAIT="${2:?}"; shift 2 ;;
    --) shift; WATCH_EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "ci_pipeline_check: unknown argument $1 (see --help)" >&2; exit 1 ;;
  esac
done

fail() { echo "ci_pipeline_check: FAIL: $*" >&2; exit 1; }
step() { echo "== $*" >&2; }

[ -f "$IMAGE" ] || fail "no picture at $IMAGE"
KEEP_OUT=1
if [ -z "$OUT" ]; then OUT="$(mktemp -d -t adbflow-ci.XXXXXX)"; KEEP_OUT=0; fi
mkdir -p "$OUT"
ADBFLOW="${ADBFLOW:-adbflow}"
ADB="${ADBFLOW_ADB:-$(command -v adb || timeout 30 python3 -c 'import adbutils; print(adbutils.adb_path())')}"
ADB_PORT="${ADB_SERVER##*:}"
ADB_HOST="${ADB_SERVER%:*}"
[ "$ADB_HOST" != "$ADB_SERVER" ] || ADB_HOST=127.0.0.1

WATCH_PID=""
cleanup() {
  if [ -n "$WATCH_PID" ] && kill -0 "$WATCH_PID" 2>/dev/null; then
    kill "$WATCH_PID" 2>/dev/null || true
    wait "$WATCH_PID" 2>/dev/null || true
  fi
  if [ "$KEEP_OUT" = 0 ]; then rm -rf "$OUT"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "devices on $ADB_SERVER"
timeout 60 "$ADBFLOW" devices --json --adb-server "$ADB_SERVER" > "$OUT/devices.json" \
  || fail "adbflow devices failed"
SERIAL="$(timeout 30 python3 - "$OUT/devices.json" "$SERIAL" <<'PY'
import json, sys
refs = json.load(open(sys.argv[1]))
want = sys.argv[2]
ready = [r["serial"] for r in refs if r["state"] == "device"]
for r in refs:
    print(f"   {r['serial']:<24} {r['state']:<14} {r.get('model') or '-'}", file=sys.stderr)
if want and want not in ready:
    sys.exit(f"device {want} is not ready (ready: {', '.join(ready) or 'none'})")
if not ready:
    sys.exit("no device in state `device`")
print(want or ready[0])
PY
)" || fail "no usable device"

step "one bid round"
timeout 60 "$ADBFLOW" bid --once --json --adb-server "$ADB_SERVER" > "$OUT/bids.json" \
  || fail "adbflow bid --once found no winner (see $OUT/bids.json)"
timeout 30 python3 - "$OUT/bids.json" <<'PY' || fail "a device could not bid"
import json, sys
doc = json.load(open(sys.argv[1]))
bad = [b for b in doc["bids"] if b.get("error")]
for b in doc["bids"]:
    print(f"   {b['serial']:<24} cpu {b.get('cpu_load')} %  mem free "
          f"{(b.get('mem_available_kb') or 0) // 1024} MB  {b.get('error') or ''}", file=sys.stderr)
sys.exit(f"bid errors: {bad}" if bad else 0)
PY

step "adbflow watch --once --json (in the background, before the picture)"
timeout "$WAIT" "$ADBFLOW" watch --once --json --adb-server "$ADB_SERVER" \
  --data-dir "$OUT/data" --max-wait "$WAIT" "${WATCH_EXTRA[@]}" \
  > "$OUT/watch.json" 2> "$OUT/watch.log" &
WATCH_PID=$!
# `watch` prints "watching ..." once it has listed every device: pictures present before
# that line are the baseline (not processed), pictures after it are new.
for _ in $(seq 1 120); do
  grep -q '^watching ' "$OUT/watch.log" 2>/dev/null && break
  kill -0 "$WATCH_PID" 2>/dev/null || { cat "$OUT/watch.log" >&2; fail "watch exited early"; }
  sleep 0.5
done
grep -q '^watching ' "$OUT/watch.log" || { cat "$OUT/watch.log" >&2; fail "watch not ready in 60 s"; }

# Like a camera app: write under a hidden temporary name, then rename into place.
EXT="${IMAGE##*.}"
[[ "$EXT" =~ ^[A-Za-z0-9]{1,5}$ ]] || EXT=jpg    # the name goes into a device shell command
NAME="IMG_$(date +%Y%m%d_%H%M%S)_ci.$EXT"
PICS=/sdcard/Pictures
step "take a picture on $SERIAL: $PICS/$NAME"
ADB_S=("$ADB" -H "$ADB_HOST" -P "$ADB_PORT" -s "$SERIAL")
timeout 120 "${ADB_S[@]}" push "$IMAGE" "/data/local/tmp/adbflow-ci-picture" >/dev/null \
  || fail "adb push to $SERIAL failed"
timeout 60 "${ADB_S[@]}" shell "mkdir -p $PICS && cp /data/local/tmp/adbflow-ci-picture $PICS/.pending-$NAME \
  && mv $PICS/.pending-$NAME $PICS/$NAME && rm /data/local/tmp/adbflow-ci-picture" \
  || fail "could not write the picture on $SERIAL"

step "waiting for the result (up to $WAIT s)"
set +e
wait "$WATCH_PID"; rc=$?
set -e
WATCH_PID=""
cat "$OUT/watch.log" >&2
[ "$rc" = 0 ] || fail "adbflow watch exited with $rc"

timeout 30 python3 - "$OUT/watch.json" "$SERIAL" "$NAME" "$EXPECT" <<'PY' || fail "wrong result"
import json, re, sys
path, serial, name, expect = sys.argv[1:]
docs = [json.loads(line) for line in open(path) if line.strip()]
if len(docs) != 1:
    sys.exit(f"expected one job document, got {len(docs)}")
doc = docs[0]
print(json.dumps({k: doc.get(k) for k in ("job", "state", "origin", "name", "labels", "story",
                                          "devices", "timings")}, indent=1), file=sys.stderr)
problems = []
if doc.get("state") != "done":
    problems.append(f"job state {doc.get('state')!r}: {doc.get('error')}")
if doc.get("origin") != serial or doc.get("name") != name:
    problems.append(f"processed {doc.get('origin')}:{doc.get('name')}, not {serial}:{name}")
labels = doc.get("labels") or []
top = labels[0]["name"] if labels else ""
if not re.search(expect, top, re.I):
    problems.append(f"top label {top!r} does not match /{expect}/")
if not (doc.get("story") or "").strip():
    problems.append("empty story")
if problems:
    sys.exit("; ".join(problems))
print(f"OK: {name} on {serial} -> {top!r} (classified on {doc['devices']['classify']}, "
      f"story by {doc['devices']['generate']}): {doc['story'].strip()[:120]!r}", file=sys.stderr)
PY
echo "ci_pipeline_check: PASS ($NAME -> labels + story)"
