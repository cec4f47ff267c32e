# adbflow mesh worker: one connection, one request, one answer (run by `nc -L` per
# connection; stdin/stdout are the socket). Protocol: README "Mesh protocol".
# Slots are the laptop's slot leases (lease.sh, same files, same format): a TASK runs only
# under the reservation (lease) its GRANT gave, and its output counts only if the lease is
# still held after the program ran. Images land only at /data/local/tmp/received-image.
M=/data/local/tmp/adbflow-mesh
exec 2>>"$M/log/worker.err"
read -r ME < "$M/me"
. "$M/wire.sh"
. "$M/lease.sh"
IMG=/data/local/tmp/received-image
LD=/data/local/tmp/adbflow
trap 'rm -f "$M/tmp/"*-$$ "$M/tmp/"*-$$-*' EXIT
if ! mesh_recv; then mesh_log "refused $R_WHY"; exit 0; fi   # no answer to a bad message
# the election and the job records on this phone (orchestrator role): elect.sh (issue 16)
case $R_T in VOTE_REQUEST|HEARTBEAT|JOBS|CLAIM|DONE) . "$M/elect.sh"; el_answer; exit 0;; esac
mesh_log "recv $R_T from $R_FROM arg $R_ARG len $R_LEN"
_slot() { case $1 in classify|generate) return 0;; esac; return 1; }
_word() { case $1 in ''|*[!A-Za-z0-9_-]*) return 1;; esac; [ ${#1} -le 24 ]; }
_num() { case $1 in ''|*[!0-9]*) return 1;; esac; [ ${#1} -le 9 ]; }
# lease answers: `=:adbflow:NONCE:lease VERDICT TOKEN OWNER LEFT NOW`
_lease() { _ln=m$$; adbflow_lease "$_ln" "$@" | while read -r _a _v _tk _rest; do
    [ "$_a" = "=:adbflow:$_ln:lease" ] && echo "$_v $_tk"; done; }
_reply() { mesh_send "$1" "$R_FROM" "$2" "$3"; }
. "$M/cost.sh"    # _cost SLOT: the bid (one cost model with the orchestrator-role bid)
_run_argv() {   # $1 argv file (one argument per line), $2 prompt file: never evaluated
  set -A _av; _i=0
  while IFS= read -r _w; do
    [ "$_w" = @PROMPT@ ] && _w=$(head -c 4096 "$2")
    _av[_i]=$_w; _i=$((_i + 1)); done < "$1"
  "${_av[@]}"
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
  if [ "$1" = granted ]; then mesh_log "grant $_s $2 mesh.$R_FROM.$_nc"; _reply GRANT "$_s,$2"
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
  _run_argv "$M/conf/$_s.argv" "$_dst" 2>&1 | head -c 65536 > "$_out"
  [ "$_s" = generate ] && rm -f "$_dst"
  set -- $(_lease finish "$_s" "$_own" "$_tk" 0)
  if [ "$1" = released ]; then mesh_log "done $_s $_tk $_own"; _reply RESULT "$_s,$_tk,ok" "$_out"
  else _reply RESULT "$_s,$_tk,lost"; fi;;
RELEASE)   # ARG: SLOT,TOKEN,NONCE
  IFS=, read -r _s _tk _nc <<EOT
$R_ARG
EOT
  _slot "$_s" && _num "$_tk" && _word "$_nc" || exit 0
  set -- $(_lease release "$_s" "mesh.$R_FROM.$_nc" "$_tk" 0)
  _reply RESULT "$_s,$_tk,${1:-error}";;
esac
exit 0
