# adbflow mesh orchestrator, mode `single`: this phone watches its camera folders; for each
# new picture: bid (every peer and itself), reserve the winner's classify slot, send the BMP,
# get the labels, bid again for generate, get the story; the job record and its results
# stay on this phone in $M/jobs/N/ (`adbflow mesh results` reads them).
# Started detached by start.sh when $M/orchestrator names this phone. Protocol: README
# "Mesh protocol". Picture names are untrusted: used only quoted, stored as data.
M=/data/local/tmp/adbflow-mesh
exec 2>>"$M/log/orch.err"
read -r ME < "$M/me"
MESH_ROLE=o
. "$M/wire.sh"
DIRS="/sdcard/Pictures /sdcard/DCIM/Camera"
POLL=${MESH_POLL:-1}
TTL=${MESH_TTL_DS:-600}
SIZE=224
read -r SIZE < "$M/conf/input_size" 2>/dev/null
mkdir -p "$M/jobs"
_list() { for _d in $DIRS; do for _f in "$_d"/*; do [ -f "$_f" ] || continue
  case ${_f##*/} in .*) continue;; esac; echo "$(stat -c %s "$_f") $_f"; done; done; }
_known() { grep -qxF -- "$1" "$M/state/pictures" 2>/dev/null; }
# one request/answer with PEER: $1 peer $2 type $3 arg [$4 body file]; answer in R_*
_ask() {
  _pa= _pp=; while read -r _an _aa _ap; do [ "$_an" = "$1" ] && _pa=$_aa _pp=$_ap; done < "$M/peers"
  [ -n "$_pa" ] || return 1
  _rq=$M/tmp/rq-$$-$1 _rp=$M/tmp/rp-$$-$1
  mesh_send "$2" "$1" "$3" "$4" > "$_rq"
  # a task cannot outlive its reservation (the worker does not renew it): wait TTL + 10 s
  # for the answer (-W: idle timeout; the worker sends nothing until it answers)
  nc -w 10 -W $((TTL / 10 + 10)) "$_pa" "$_pp" < "$_rq" 2>/dev/null | head -c 70000 > "$_rp"
  mesh_recv < "$_rp"; _rc=$?
  rm -f "$_rq" "$_rp"
  [ $_rc = 0 ] && [ "$R_FROM" = "$1" ] || { mesh_log "orch: no valid answer from $1 ($R_WHY)"; return 1; }
  return 0
}
# bids for SLOT from every peer at once (one background request each, answers in files),
# lowest cost first: lines `COST PEER`
_bids() { _bd=$M/tmp/bids-$$; mkdir -p "$_bd"
  while read -r _bp _ba _bq; do
    ( if _ask "$_bp" BID_REQUEST "$1" < /dev/null; then
        case ${R_ARG#*,} in ''|*[!0-9]*) ;; *) echo "${R_ARG#*,} $_bp" > "$_bd/$_bp";; esac
        rm -f "$R_BODY"; fi ) &
  done < "$M/peers"
  wait
  cat "$_bd"/* 2>/dev/null | sort -n; rm -rf "$_bd"; }
# run SLOT with input file on the best peer that grants it: output in $2.out, winner in $2.who
_stage() { _slot=$1 _in=$2 _job=$3
  _bids "$_slot" > "$_job/bids-$_slot"
  mesh_log "orch: job ${_job##*/} $_slot bids $(while read -r _l; do printf '%s; ' "$_l"; done < "$_job/bids-$_slot")"
  while read -r _cost _peer; do
    _nc=j${_job##*/}x$$
    _ask "$_peer" RESERVE "$_slot,$TTL,$_nc" < /dev/null || continue
    rm -f "$R_BODY"
    [ "$R_T" = GRANT ] || { mesh_log "orch: $_peer refused $_slot ($R_ARG)"; continue; }
    _tk=${R_ARG#*,}
    _ask "$_peer" TASK "$_slot,$_tk,$_nc" "$_in" < /dev/null || continue
    case $R_ARG in "$_slot,$_tk,ok") ;; *) rm -f "$R_BODY"; mesh_log "orch: $_peer $_slot $R_ARG"; continue;; esac
    mv -f "$R_BODY" "$_job/$_slot.out"; echo "$_peer" > "$_job/$_slot.who"
    return 0
  done < "$_job/bids-$_slot"
  return 1
}
# phase times for the job record (uptime, deciseconds): where a job's latency goes
_mark() { read -r _u _x < /proc/uptime; _ui=${_u%.*} _uc=${_u#*.}
  echo "$1 $((_ui * 10 + ${_uc:0:1}))" >> "$2/times"; }
# the story prompt from the top labels, as data: `INFO: 0.39: 285 Egyptian cat` -> `Egyptian cat`
_prompt() {
  _labels=$(grep -E '^INFO: [0-9.]+: [0-9]+ ' "$1/classify.out" | head -n 3 |
    while read -r _i _s _x _name; do printf '%s, ' "$_name"; done)
  printf 'Write a short story for children about a picture showing: %s\n' "${_labels%, }" > "$1/prompt"
}
_job() { _src=$1
  _n=1; while [ -e "$M/jobs/$_n" ]; do _n=$((_n + 1)); done
  _j=$M/jobs/$_n; mkdir -p "$_j"
  printf '%s\n' "$_src" > "$_j/source"
  echo pending > "$_j/state"
  _mark detected "$_j"
  mesh_log "orch: job $_n for a new picture"
  /data/local/tmp/img2bmp "$_src" "$M/tmp/job-$_n.bmp" "$SIZE" 2>"$_j/img2bmp.err" ||
    { echo failed-image > "$_j/state"; return; }
  _mark converted "$_j"
  _stage classify "$M/tmp/job-$_n.bmp" "$_j" || { echo failed-classify > "$_j/state"; rm -f "$M/tmp/job-$_n.bmp"; return; }
  rm -f "$M/tmp/job-$_n.bmp"
  _prompt "$_j"
  _mark classified "$_j"
  _stage generate "$_j/prompt" "$_j" || { echo failed-generate > "$_j/state"; return; }
  _mark generated "$_j"
  echo done > "$_j/state"
  mesh_log "orch: job $_n done (classify on $(cat "$_j/classify.who"), generate on $(cat "$_j/generate.who"))"
  # shown on the phone where the Android version allows it (no-op where `cmd` is absent)
  cmd notification post -S bigtext -t adbflow mesh-$_n "story ready (job $_n)" >/dev/null 2>&1
}
# watch the camera folders; call $1 PATH for each new, complete picture
_watch() {
  # baseline: pictures already there are not new
  [ -f "$M/state/pictures" ] || _list | while read -r _sz _f; do printf '%s\n' "$_f"; done > "$M/state/pictures"
  mesh_log "orch: watching $DIRS"
  while :; do
    _list > "$M/tmp/list-1"
    sleep "$POLL"
    _list > "$M/tmp/list-2"
    # a picture is new when not known, and complete when its size did not change across a poll
    while read -r _sz _f; do
      _known "$_f" && continue
      grep -qxF -- "$_sz $_f" "$M/tmp/list-1" || continue
      printf '%s\n' "$_f" >> "$M/state/pictures"
      "$1" "$_f"
    done < "$M/tmp/list-2"
  done
}
# sourced as a library (elect.sh: the elected orchestrator and the phones' job records)
[ -n "$MESH_LIB" ] && return 0
echo $$ > "$M/pids/orchestrator"
_watch _job
