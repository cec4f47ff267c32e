# adbflow mesh worker: one connection, one request, one answer (run by `nc -L` per
# connection; stdin/stdout are the socket). Protocol: README "Mesh protocol".
# Slots are the laptop's slot leases (lease.sh, same files, same format): a TASK runs only
# under the reservation (lease) its GRANT gave, and its output counts only if the lease is
# still held after the program ran. Images land only at /data/local/tmp/received-image.
# While the program runs, this handler renews the lease itself (every RENEW_DS / 3): the
# lease then lives exactly as long as the program does (README "Mesh protocol": why the
# worker renews and not the orchestrator). Every lease step is appended to log/lease.log
# (`VERB SLOT TOKEN OWNER NOW_DS END_DS`, the lease's own clock read under its lock), so a
# double-booked slot can be audited afterwards (adbflow/mesh/audit.py).
M=/data/local/tmp/adbflow-mesh
exec 2>>"$M/log/worker.err"
read -r ME < "$M/me"
. "$M/wire.sh"
. "$M/lease.sh"
IMG=/data/local/tmp/received-image
LD=/data/local/tmp/adbflow
trap 'rm -f "$M/tmp/"*-$$ "$M/tmp/"*-$$-* "$M/tmp/"*-$$.*' EXIT
if ! mesh_recv; then mesh_log "refused $R_WHY"; exit 0; fi   # no answer to a bad message
# the election and the job records on this phone (orchestrator role): elect.sh (issue 16)
case $R_T in VOTE_REQUEST|HEARTBEAT|JOBS|CLAIM|DONE) . "$M/elect.sh"; el_answer; exit 0;; esac
mesh_log "recv $R_T from $R_FROM arg $R_ARG len $R_LEN"
_slot() { case $1 in classify|generate) return 0;; esac; return 1; }
_word() { case $1 in ''|*[!A-Za-z0-9_-]*) return 1;; esac; [ ${#1} -le 24 ]; }
_num() { case $1 in ''|*[!0-9]*) return 1;; esac; [ ${#1} -le 9 ]; }
# lease answers: `=:adbflow:NONCE:lease VERDICT TOKEN OWNER LEFT NOW` -> `VERDICT TOKEN LEFT NOW`
_lease() { _ln=m$$; adbflow_lease "$_ln" "$@" | while read -r _a _v _tk _o _lf _nw _x; do
    [ "$_a" = "=:adbflow:$_ln:lease" ] && echo "$_v $_tk $_lf $_nw"; done; }
# the lease log: $1 verb, $2 slot, $3 owner, $4.. a _lease answer (VERDICT TOKEN LEFT NOW);
# END is the expiry (grant, renew), the release time (finish, release) or 0 (lost)
_llog() { _e=0; case $1 in grant|renew) _e=$(($7 + $6));; finish|release) _e=$7;; esac
  echo "$1 $2 $5 $3 $7 $_e" >> "$M/log/lease.log"; }
RENEW_DS=100; read -r RENEW_DS 2>/dev/null < "$M/conf/renew_ds"
case $RENEW_DS in ''|*[!0-9]*) RENEW_DS=100;; esac; [ "$RENEW_DS" -ge 30 ] || RENEW_DS=30
TASK_S=300; read -r TASK_S 2>/dev/null < "$M/conf/task_s"
case $TASK_S in ''|*[!0-9]*) TASK_S=300;; esac
OUT_MAX=1048576                  # program output kept on disk at most (the answer: 64 KiB)
# renew SLOT's lease for OWNER/TOKEN while the program PID runs (and this handler lives);
# stop it when the lease is lost, the output too big or the run too long
_renew_loop() { trap - EXIT     # a background subshell: the handler's cleanup is not ours
  _rs=$1 _ro=$2 _rt=$3 _rp=$4 _rf=$5 _per=$((RENEW_DS / 3))
  _sl=$((_per / 10)).$((_per % 10)) _t0=$(date +%s)
  while sleep "$_sl"; do
    kill -0 "$_rp" 2>/dev/null || return 0
    kill -0 "$$" 2>/dev/null || { kill "$_rp"; return 0; }          # the handler was killed
    set -- $(_lease renew "$_rs" "$_ro" "$_rt" "$RENEW_DS")
    if [ "$1" = renewed ]; then _llog renew "$_rs" "$_ro" "$@"
    else _llog lost "$_rs" "$_ro" x "$_rt" 0 "${4:-0}"; kill "$_rp"; return 0; fi
    [ "$(stat -c %s "$_rf" 2>/dev/null || echo 0)" -le $OUT_MAX ] || { kill "$_rp"; return 0; }
    [ $(($(date +%s) - _t0)) -le "$TASK_S" ] || { kill "$_rp"; return 0; }
  done; }
_reply() { mesh_send "$1" "$R_FROM" "$2" "$3"; }
. "$M/cost.sh"    # _cost SLOT: the bid (one cost model with the orchestrator-role bid)
_run_argv() {   # $1 argv file (one argument per line), $2 prompt file: never evaluated
  set -A _av; _i=0
  while IFS= read -r _w; do
    [ "$_w" = @PROMPT@ ] && _w=$(head -c 4096 "$2")
    _av[_i]=$_w; _i=$((_i + 1)); done < "$1"
  exec "${_av[@]}"     # run in the background: its pid ($!) is then the program's
}
case $R_T in
BID_REQUEST)
  _slot "$R_ARG" || exit 0
  _reply BID "$R_ARG,$(_cost "$R_ARG")";;
RESERVE)   # ARG: SLOT,TTL_DS,NONCE -> the lease owner mesh.FROM.NONCE
  IFS=, read -r _s _ttl _nc <<EOT
$R_ARG
EOT
  _slot "$_s" && _num "$_ttl" && _word "$_nc" || exit 0
  [ "$_ttl" -le 600 ] || _ttl=600
  set -- $(_lease acquire "$_s" "mesh.$R_FROM.$_nc" 0 "$_ttl")
  if [ "$1" = granted ]; then _llog grant "$_s" "mesh.$R_FROM.$_nc" "$@"
    mesh_log "grant $_s $2 mesh.$R_FROM.$_nc"; _reply GRANT "$_s,$2"
  else _reply REFUSE "$_s,${1:-error}"; fi;;
TASK)      # ARG: SLOT,TOKEN,NONCE; body: the BMP (classify) or the prompt (generate)
  IFS=, read -r _s _tk _nc <<EOT
$R_ARG
EOT
  _slot "$_s" && _num "$_tk" && _word "$_nc" || exit 0
  _own=mesh.$R_FROM.$_nc _out=$M/tmp/out-$$
  mv -f "$R_BODY" "$LD/in-$_s-$_tk"
  if [ "$_s" = classify ]; then _dst=$IMG; else _dst=$M/tmp/prompt-$$; fi
  DST=$_dst; set -- $(_lease guard "$_s" "$_own" "$_tk" 0); DST=
  if [ "$1" != held ]; then rm -f "$LD/in-$_s-$_tk"; _reply RESULT "$_s,$_tk,lost"; exit 0; fi
  # the expiry now counts from the program's start (the reservation covered GRANT -> here)
  set -- $(_lease renew "$_s" "$_own" "$_tk" "$RENEW_DS")
  if [ "$1" != renewed ]; then _llog lost "$_s" "$_own" x "$_tk" 0 "${4:-0}"
    [ "$_s" = generate ] && rm -f "$_dst"; _reply RESULT "$_s,$_tk,lost"; exit 0; fi
  _llog renew "$_s" "$_own" "$@"
  _run_argv "$M/conf/$_s.argv" "$_dst" > "$_out.raw" 2>&1 < /dev/null &
  _pp=$!
  _renew_loop "$_s" "$_own" "$_tk" "$_pp" "$_out.raw" &
  _rl=$!
  wait "$_pp"
  kill "$_rl" 2>/dev/null; wait "$_rl" 2>/dev/null
  head -c 65536 "$_out.raw" > "$_out"; rm -f "$_out.raw"
  [ "$_s" = generate ] && rm -f "$_dst"
  set -- $(_lease finish "$_s" "$_own" "$_tk" 0)
  if [ "$1" = released ]; then _llog finish "$_s" "$_own" "$@"
    mesh_log "done $_s $_tk $_own"; _reply RESULT "$_s,$_tk,ok" "$_out"
  else _llog lost "$_s" "$_own" x "$_tk" 0 "${4:-0}"; _reply RESULT "$_s,$_tk,lost"; fi;;
RELEASE)   # ARG: SLOT,TOKEN,NONCE
  IFS=, read -r _s _tk _nc <<EOT
$R_ARG
EOT
  _slot "$_s" && _num "$_tk" && _word "$_nc" || exit 0
  set -- $(_lease release "$_s" "mesh.$R_FROM.$_nc" "$_tk" 0)
  [ "$1" = released ] && _llog release "$_s" "mesh.$R_FROM.$_nc" "$@"
  _reply RESULT "$_s,$_tk,${1:-error}";;
esac
exit 0
