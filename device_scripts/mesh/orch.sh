# adbflow mesh orchestrator (modes `single` and `p2p`: the same program; `single` runs it on
# one phone, `p2p` on every phone named in $M/orchestrator, each for its own pictures, with
# no orchestrator talking to another). This phone watches its camera folders; for each new
# picture: bid (every peer and itself), reserve the winner's classify slot, send the BMP,
# get the labels, bid again for generate, get the story; the job record and its results
# stay on this phone in $M/jobs/N/ (`adbflow mesh results` reads them).
# Up to conf/jobs pictures are handled at once (each in a background subshell with its own
# file names, MESH_TAG). A stage that finds no free slot bids again until conf/stage_s.
# Restart (killed, then start.sh again): the job records say what is done; unfinished jobs
# are run again in their own record, pictures never seen get new ones: each picture ends
# with one `done` record. Reservations of a killed orchestrator expire on the workers'
# clocks (a task already running finishes there and its lease is released).
# Each picture is claimed at this phone (its origin) before any work, with the claims of
# lease.sh (`adbflow_claim`, the same function, record and key a laptop-side `adbflow watch`
# uses): done by another orchestrator -> skipped (done-elsewhere, its result recorded);
# busy -> wait; ours -> renewed while the job runs, completed with a short result record.
# Protocol: README "Mesh protocol". Picture names are untrusted: used only quoted, as data.
M=/data/local/tmp/adbflow-mesh
read -r ME < "$M/me"
MESH_ROLE=o
. "$M/wire.sh"
# the storage path, not /sdcard: a picture's claim key includes its path, and the laptop
# names pictures by it
DIRS="/storage/emulated/0/Pictures /storage/emulated/0/DCIM/Camera"
POLL=${MESH_POLL:-1}
# a number from conf/NAME, else DEFAULT, into _cv (no command substitution: elect.sh sources
# this file for every CLAIM and DONE it answers, and each $(...) is a fork on the phone)
_conf() { _cv=$2; read -r _cv 2>/dev/null < "$M/conf/$1"
  case $_cv in ''|*[!0-9]*) _cv=$2;; esac; }
_conf ttl_ds 100; TTL=$_cv        # a reservation covers GRANT -> TASK start; the worker renews it
_conf task_s 300; TASK_S=$_cv     # then, while its program runs, up to this long
_conf jobs 2; JOBS=$_cv
_conf stage_s 300; STAGE_S=$_cv
_conf input_size 224; SIZE=$_cv
_conf claim_ds 300; CLAIM_DS=$_cv   # a picture claim's time to live, renewed every third
_conf claim_inodes 0; INODES=$_cv   # the laptop's key has the inode where adbd has ls_v2
CLAIM_OWNER=mesh.$ME.o$$
[ -d "$M/jobs" ] || mkdir -p "$M/jobs"
_list() { for _d in $DIRS; do for _f in "$_d"/*; do [ -f "$_f" ] || continue
  case ${_f##*/} in .*) continue;; esac; echo "$(stat -c %s "$_f") $_f"; done; done; }
_known() { grep -qxF -- "$1" "$M/state/pictures" 2>/dev/null; }
# one request/answer with PEER: $1 peer $2 type $3 arg [$4 body file]; answer in R_*
_ask() {
  _pa= _pp=; while read -r _an _aa _ap; do [ "$_an" = "$1" ] && _pa=$_aa _pp=$_ap; done < "$M/peers"
  [ -n "$_pa" ] || return 1
  _rq=$M/tmp/rq-$MESH_TAG-$1 _rp=$M/tmp/rp-$MESH_TAG-$1
  mesh_send "$2" "$1" "$3" "$4" > "$_rq"
  # -W: idle timeout (the worker sends nothing until it answers): a task may run TASK_S
  _wt=15; [ "$2" = TASK ] && _wt=$((TASK_S + 15))
  nc -w 10 -W "$_wt" "$_pa" "$_pp" < "$_rq" 2>/dev/null | head -c 70000 > "$_rp"
  mesh_recv < "$_rp"; _rc=$?
  rm -f "$_rq" "$_rp"
  [ $_rc = 0 ] && [ "$R_FROM" = "$1" ] || { mesh_log "orch: no valid answer from $1 ($R_WHY)"; return 1; }
  return 0
}
# bids for SLOT from every peer at once (one background request each, answers in files),
# lowest cost first: lines `COST PEER` (a busy slot does not bid)
_bids() { _bd=$M/tmp/bids-$MESH_TAG _bw=; mkdir -p "$_bd"
  while read -r _bp _ba _bq; do
    ( if _ask "$_bp" BID_REQUEST "$1" < /dev/null; then
        case ${R_ARG#*,} in ''|*[!0-9]*) ;; *) echo "${R_ARG#*,} $_bp" > "$_bd/$_bp";; esac
        rm -f "$R_BODY"; fi ) &
    _bw="$_bw $!"
  done < "$M/peers"
  wait $_bw            # these requests only (the job's claim renewal runs on beside them)
  cat "$_bd"/* 2>/dev/null | sort -n; rm -rf "$_bd"; }
# run SLOT with input file on the best peer that grants it: output in $2.out, winner in
# $2.who. Refused, lost or silent: the next bidder; nobody left: a new bid round (slots
# busy with other orchestrators' work free up), until STAGE_S.
_stage() { _slot=$1 _in=$2 _job=$3 _round=0
  _end=$(($(date +%s) + STAGE_S))
  while :; do
    _round=$((_round + 1))
    _bids "$_slot" > "$_job/bids-$_slot"
    mesh_log "orch: job ${_job##*/} $_slot round $_round bids $(while read -r _l; do printf '%s; ' "$_l"; done < "$_job/bids-$_slot")"
    while read -r _cost _peer; do
      _nc=j${_job##*/}x$$r$_round
      _ask "$_peer" RESERVE "$_slot,$TTL,$_nc" < /dev/null || continue
      rm -f "$R_BODY"
      [ "$R_T" = GRANT ] || { mesh_log "orch: $_peer refused $_slot ($R_ARG)"; continue; }
      _tk=${R_ARG#*,}
      _ask "$_peer" TASK "$_slot,$_tk,$_nc" "$_in" < /dev/null || continue
      case $R_ARG in "$_slot,$_tk,ok") ;; *) rm -f "$R_BODY"; mesh_log "orch: $_peer $_slot $R_ARG"; continue;; esac
      mv -f "$R_BODY" "$_job/$_slot.out"; echo "$_peer" > "$_job/$_slot.who"
      return 0
    done < "$_job/bids-$_slot"
    [ "$(date +%s)" -lt "$_end" ] || return 1
    sleep "0.$((RANDOM % 9 + 1))"          # jitter: orchestrators do not retry in lockstep
  done
}
# the picture's claim name, as lease_rules.claim_key: `pic-` + 32 hex digits of sha256 over
# `PATH\nINODE\nSIZE\nMTIME_S\n` (inode 0 where the laptop does not see inodes)
_ckey() { _ci=0; [ "$INODES" = 1 ] && { _ci=$(stat -c %i "$1") || return 1; }
  _cs=$(stat -c '%s %Y' "$1") || return 1
  set -- "$1" "$_ci" $_cs
  _kh=$(printf '%s\n%s\n%s\n%s\n' "$1" "$2" "$3" "$4" | _msha)
  echo "pic-${_kh:0:32}"; }
# one claim operation ($1 op $2 key $3 owner $4 token [$5 result]) in a subshell (lease.sh's
# variables stay out of ours): prints `VERDICT TOKEN OWNER LEFT_DS RESULT`
_claim() { ( . "$M/lease.sh"; adbflow_claim "c$1" "$1" "$2" "$3" "$4" "$CLAIM_DS" "${5:--}" ) |
  while read -r _ca _cv _ct _co _cl _cn _cr _cx; do
    [ "$_ca" = "=:adbflow:c$1:claim" ] && echo "$_cv $_ct $_co $_cl $_cr"; done; }
# job $1's picture ($_src) claim name: CL_KEY, kept in the job record (jobs/N/claim); the
# picture gone: failed-image
_jkey() { CL_KEY=$(_ckey "$_src") || { echo failed-image > "$M/jobs/$1/state"; return 1; }
  echo "$CL_KEY" > "$M/jobs/$1/claim"; }
# one acquire of CL_KEY for CLAIM_OWNER (job $1): 0 ours (CL_TOK); 1 done by another (its
# owner and result recorded in jobs/N/elsewhere, state done-elsewhere); 2 busy (CL_HELD:
# the live claim's TOKEN OWNER) or an error (CL_HELD empty). One attempt: the elected
# orchestrator's origin answers each CLAIM with one (elect.sh); _take waits.
_acquire() { _tj=$M/jobs/$1 CL_HELD=
  set -f; set -- $(_claim acquire "$CL_KEY" "$CLAIM_OWNER" 0); set +f
  case $1 in
    granted) CL_TOK=$2; return 0;;
    done) printf '%s %s\n' "$3" "$5" > "$_tj/elsewhere"; echo done-elsewhere > "$_tj/state"
      mesh_log "orch: job ${_tj##*/} done elsewhere"; return 1;;
    busy) CL_HELD="$2 $3";;
  esac; return 2; }
# claim job $1's picture: 0 with CL_KEY CL_TOK when ours; 1 when done elsewhere (recorded)
_take() { _jkey "$1" || return 1
  while :; do
    _acquire "$1"; case $? in 0) return 0;; 1) return 1;; esac
    # held by a killed orchestrator of this phone (its pid gone): stale, take it over
    set -f; set -- "$1" $CL_HELD; set +f
    _op=; case $3 in "mesh.$ME.o"*) _op=${3#"mesh.$ME.o"};; esac
    case $_op in ''|*[!0-9]*) ;; *)
      if [ "$_op" != $$ ] && ! kill -0 "$_op" 2>/dev/null; then
        _claim release "$CL_KEY" "$3" "$2" > /dev/null; continue; fi;; esac
    sleep 1
  done; }
# a label as the result record stores it, the same rule as the laptop's
# adbflow.runtime.claims.label_word (tests/test_label_word.py runs both on every ImageNet
# label): lower case, each run of other characters one `_`, none at either end, at most 40,
# `-` when nothing is left (typeset first: in a function it makes a new, empty local)
_label_word() { typeset -l _w; _w=$1
  _w=${_w//[!a-z0-9]/_}
  while [[ $_w = *__* ]]; do _w=${_w//__/_}; done
  _w=${_w#_}; _w=${_w%_}; _w=${_w:0:40}; echo "${_w:--}"; }
# the short result record under the completed claim (the laptop's parse_result_record
# reads it): who, which job, the top label as _label_word gives it
_record() {
  _lb=$(grep -E '^INFO: [0-9.]+: [0-9]+ ' "$1/classify.out" | head -n 1 |
    while read -r _i _s _x _name; do echo "$_name"; done)
  echo "v=1,dir=mesh$ME,job=${1##*/},out=done,label=$(_label_word "$_lb"),by=$(cat "$1/classify.who")"; }
# complete the claim: 0 when ours is recorded; 1 when another orchestrator's result counts
_complete() { _rc=$(_record "$1")
  for _try in 1 2 3; do
    set -f; set -- $(_claim complete "$CL_KEY" "$CLAIM_OWNER" "$CL_TOK" "$_rc"); set +f
    [ "$1" = completed ] && return 0
    _take "${_j##*/}" || return 1            # expired meanwhile: claim again
  done; return 1; }
# phase times for the job record (uptime, deciseconds): where a job's latency goes
_mark() { read -r _u _x < /proc/uptime; _ui=${_u%.*} _uc=${_u#*.}
  echo "$1 $((_ui * 10 + ${_uc:0:1}))" >> "$2/times"; }
# the story prompt from the top labels, as data: `INFO: 0.39: 285 Egyptian cat` -> `Egyptian cat`
_prompt() {
  _labels=$(grep -E '^INFO: [0-9.]+: [0-9]+ ' "$1/classify.out" | head -n 3 |
    while read -r _i _s _x _name; do printf '%s, ' "$_name"; done)
  printf 'Write a short story for children about a picture showing: %s\n' "${_labels%, }" > "$1/prompt"
}
# job N (its record exists: state pending, source): runs in a background subshell
_job() { _n=$1 _j=$M/jobs/$1; MESH_TAG=j$1x$$
  read -r _src < "$_j/source"
  mesh_log "orch: job $_n for a new picture"
  _take "$_n" || return
  _mark claimed "$_j"
  # the claim renewed while the job runs (stops with this orchestrator: then it expires)
  ( trap - EXIT; while sleep $((CLAIM_DS / 30)); do kill -0 $$ 2>/dev/null || exit 0
      _claim renew "$CL_KEY" "$CLAIM_OWNER" "$CL_TOK" > /dev/null; done ) &
  _crl=$!
  _work "$_n"; _wrc=$?
  kill "$_crl" 2>/dev/null
  if [ $_wrc != 0 ]; then _claim release "$CL_KEY" "$CLAIM_OWNER" "$CL_TOK" > /dev/null; return; fi
  if _complete "$_j"; then
    echo done > "$_j/state"
    mesh_log "orch: job $_n done (classify on $(cat "$_j/classify.who"), generate on $(cat "$_j/generate.who"))"
    # shown on the phone where the Android version allows it (no-op where `cmd` is absent)
    cmd notification post -S bigtext -t adbflow mesh-$_n "story ready (job $_n)" >/dev/null 2>&1
  fi
}
_work() {
  /data/local/tmp/img2bmp "$_src" "$M/tmp/job-$MESH_TAG.bmp" "$SIZE" 2>"$_j/img2bmp.err" ||
    { echo failed-image > "$_j/state"; return 1; }
  _mark converted "$_j"
  _stage classify "$M/tmp/job-$MESH_TAG.bmp" "$_j" ||
    { echo failed-classify > "$_j/state"; rm -f "$M/tmp/job-$MESH_TAG.bmp"; return 1; }
  rm -f "$M/tmp/job-$MESH_TAG.bmp"
  _prompt "$_j"
  _mark classified "$_j"
  _stage generate "$_j/prompt" "$_j" || { echo failed-generate > "$_j/state"; return 1; }
  _mark generated "$_j"
}
_active() { set -- "$M/tmp/active-"*; [ -e "$1" ] && echo $# || echo 0; }
# start job N in the background once fewer than JOBS run
_spawn() { while [ "$(_active)" -ge "$JOBS" ]; do sleep 0.2; done
  : > "$M/tmp/active-$1"
  ( _job "$1"; rm -f "$M/tmp/active-$1" ) < /dev/null & }
# a new picture: its record first (state, then source, atomically), then it is known
_new() { _n=1; until mkdir "$M/jobs/$_n" 2>/dev/null; do _n=$((_n + 1)); done
  echo pending > "$M/jobs/$_n/state"
  _mark detected "$M/jobs/$_n"
  printf '%s\n' "$1" > "$M/jobs/$_n/source.tmp" && mv -f "$M/jobs/$_n/source.tmp" "$M/jobs/$_n/source"
  printf '%s\n' "$1" >> "$M/state/pictures"
  _spawn "$_n"; }
# watch the camera folders; call $1 PATH for each new, complete picture (the callback makes
# it known: a record first, then state/pictures)
_watch() {
  # baseline: pictures already there are not new
  [ -f "$M/state/pictures" ] || _list | while read -r _sz _f; do printf '%s\n' "$_f"; done > "$M/state/pictures"
  while :; do
    _list > "$M/tmp/list-1"
    sleep "$POLL"
    _list > "$M/tmp/list-2"
    # a picture is new when not known, and complete when its size did not change across a poll
    while read -r _sz _f; do
      _known "$_f" && continue
      grep -qxF -- "$_sz $_f" "$M/tmp/list-1" || continue
      "$1" "$_f"
    done < "$M/tmp/list-2"
  done
}
# sourced as a library (elect.sh: the elected orchestrator, the camera watcher, and the
# origin's answers to the elected orchestrator's claims: each keeps its own stderr)
[ -n "$MESH_LIB" ] && return 0
exec 2>>"$M/log/orch.err"
echo $$ > "$M/pids/orchestrator"
# what a killed orchestrator left: its own temporary files (the worker's are not ours)
rm -rf "$M/tmp/"rq-* "$M/tmp/"rp-* "$M/tmp/"bids-* "$M/tmp/"job-* "$M/tmp/"active-* "$M/tmp/"list-*
# baseline: pictures already there are not new
[ -f "$M/state/pictures" ] || _list | while read -r _sz _f; do printf '%s\n' "$_f"; done > "$M/state/pictures"
# restart: a record without a source never became known (its picture is new again); a
# record with one is known; an unfinished one runs again (same record, fresh reservations)
for _j in "$M/jobs/"*; do [ -d "$_j" ] || continue
  [ -f "$_j/source" ] || { rm -rf "$_j"; continue; }
  read -r _src < "$_j/source"; _known "$_src" || printf '%s\n' "$_src" >> "$M/state/pictures"
  read -r _st < "$_j/state"
  case $_st in done|done-elsewhere|failed-*) continue;; esac
  mesh_log "orch: job ${_j##*/} resumed after a restart"; _mark resumed "$_j"
  _spawn "${_j##*/}"
done
mesh_log "orch: watching $DIRS (jobs at once: $JOBS)"
_watch _new
