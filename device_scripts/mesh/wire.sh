# adbflow mesh wire protocol, device side (/system/bin/sh = mksh + toybox: sha256sum, stat, head, date, flock).
# Format and rules: README "Mesh protocol"; the same framing in Python: adbflow/mesh/wire.py.
# A message: a 256-byte header line, then LEN body bytes:
#   AFM1 TYPE FROM TO COUNTER TS ARG LEN MAC   (space separated, padded with spaces to 255, \n)
# MAC = sha256hex(KEY || sha256hex(KEY || "AFM1 TYPE FROM TO COUNTER TS ARG LEN BODYSHA256"))
# KEY = the 64 hex chars of $M/key (chmod 600). Nested keyed sha256, not HMAC: HMAC needs
# the key xor-ed with ipad/opad bytes, which toybox cannot do without a byte-level tool per
# byte; nesting keeps the property we need from HMAC here (no length extension: the outer
# hash covers a fixed 128-byte input) with two sha256sum calls.
# Nothing read from the wire is ever evaluated: fields are split with `set -f` (no globbing),
# checked against fixed character classes, and the body only ever goes to a file.
M=${M:-/data/local/tmp/adbflow-mesh}
MESH_HDR=256
MESH_SKEW=120                      # seconds of wall clock difference tolerated
MESH_WINDOW=64                     # counters accepted out of order per peer (replay window)
_msha() { sha256sum | { read -r _h _x; echo "$_h"; }; }
mesh_mac() { _mi=$({ cat "$M/key"; printf '%s' "$1"; } | _msha)
  { cat "$M/key"; printf '%s' "$_mi"; } | _msha; }
mesh_log() { echo "$(date +%s) $ME $*" >> "$M/log/mesh.log"; }
# the sender's counter: +1 per message sent (flock-guarded file)
mesh_ctr() {
  { flock 8; _c=0; read -r _c 2>/dev/null < "$M/state/ctr"
    case $_c in ''|*[!0-9]*) _c=0;; esac
    _c=$((_c + 1)); echo "$_c" > "$M/state/ctr"; echo "$_c"; } 8>>"$M/state/ctr.lock"
}
# mesh_send TYPE TO ARG [BODYFILE]: the framed message on stdout
mesh_send() {
  _t=$1 _to=$2 _arg=$3 _bf=$4
  if [ -n "$_bf" ]; then _len=$(stat -c %s "$_bf"); _bh=$(_msha < "$_bf")
  else _len=0 _bh=$(printf '' | _msha); fi
  _c=$(mesh_ctr) _ts=$(date +%s)
  _s="AFM1 $_t $ME $_to $_c $_ts $_arg $_len"
  printf '%-255s\n' "$_s $(mesh_mac "$_s $_bh")"
  [ -n "$_bf" ] && cat "$_bf"
  return 0
}
# max body bytes per type (forged sizes are refused before anything is read)
mesh_max() { case $1 in TASK|PICTURE) echo 8388608;; RESULT|DONE) echo 65536;; *) echo 0;; esac; }
# mesh_recv: reads one message from stdin. Sets R_T R_FROM R_ARG R_LEN R_BODY (a file) and
# returns 0 only when it is well formed, from a listed peer, to us, fresh, authentic and not
# a replay; otherwise R_WHY says why (logged by the caller) and nothing else happened.
mesh_recv() {
  R_T= R_FROM= R_ARG= R_LEN=0 R_BODY= R_WHY=
  IFS= read -r -N $MESH_HDR _h || [ -n "$_h" ] || { R_WHY=empty; return 1; }
  set -f; set -- $_h; set +f
  [ $# = 9 ] && [ "$1" = AFM1 ] || { R_WHY=header; return 1; }
  case $2 in BID_REQUEST|BID|RESERVE|GRANT|REFUSE|TASK|RESULT|RELEASE) ;;
    VOTE_REQUEST|VOTE|HEARTBEAT|ACK|JOBS|CLAIM|PICTURE|DONE) ;;     # election (elect.sh)
    *) R_WHY=type; return 1;; esac
  for _z in "$3" "$4"; do case $_z in ''|*[!a-z0-9]*) R_WHY=name; return 1;; esac; done
  for _z in "$5" "$6" "$8"; do case $_z in ''|*[!0-9]*) R_WHY=number; return 1;; esac; done
  [ ${#5} -le 9 ] && [ ${#6} -le 10 ] && [ ${#8} -le 8 ] || { R_WHY=number; return 1; }
  case $7 in *[!A-Za-z0-9.,_-]*) R_WHY=arg; return 1;; esac
  [ ${#7} -le 100 ] || { R_WHY=arg; return 1; }
  case $9 in *[!0-9a-f]*) R_WHY=mac; return 1;; esac
  [ ${#9} = 64 ] || { R_WHY=mac; return 1; }
  [ "$4" = "$ME" ] || { R_WHY=not-for-me; return 1; }
  _kp=; while read -r _pn _px _py; do [ "$_pn" = "$3" ] && _kp=1; done < "$M/peers"
  [ -n "$_kp" ] || { R_WHY=unknown-peer; return 1; }
  [ "$8" -le "$(mesh_max "$2")" ] || { R_WHY=size; return 1; }
  _now=$(date +%s)
  [ "$6" -le $((_now + MESH_SKEW)) ] && [ "$6" -ge $((_now - MESH_SKEW)) ] || { R_WHY=stale; return 1; }
  R_BODY=$M/tmp/body-${MESH_TAG:-$$}-$3
  if [ "$8" -gt 0 ]; then head -c "$8" > "$R_BODY"; else : > "$R_BODY"; fi
  [ "$(stat -c %s "$R_BODY")" = "$8" ] || { R_WHY=short; rm -f "$R_BODY"; return 1; }
  _bh=$(_msha < "$R_BODY")
  [ "$(mesh_mac "$1 $2 $3 $4 $5 $6 $7 $8 $_bh")" = "$9" ] || { R_WHY=bad-mac; rm -f "$R_BODY"; return 1; }
  # replay: a sliding window per peer and role (MESH_WINDOW counters, as IPsec's): a counter
  # above the highest accepted one moves the window; one inside it is accepted once (several
  # connections from one peer can arrive out of order: a p2p orchestrator runs jobs in
  # parallel); one below it, or seen before, is a replay. Checked and stored under a lock
  # (two connections replaying one message cannot both pass). The worker (requests) and the
  # orchestrator (answers) keep separate records (MESH_ROLE w / o; the elector: e); a
  # sender's elector and orchestrator send concurrently: their requests are two streams
  # (election: VOTE_REQUEST, HEARTBEAT; the rest), one window each. Record: `MAX SEEN...`.
  _rs=${MESH_ROLE:-w}; case $2 in VOTE_REQUEST|HEARTBEAT) _rs=${_rs}e;; esac
  _cn=$5 _sf=$M/state/seen-$_rs-$3
  _ok=$({ flock 8; _w=; read -r _w 2>/dev/null < "$_sf"
    set -f; set -- $_w; set +f
    _mx=${1:-0}; case $_mx in *[!0-9]*) _mx=0;; esac; [ $# -gt 0 ] && shift
    _top=$_mx; [ "$_cn" -gt "$_top" ] && _top=$_cn
    _nw=$_cn _hit=
    for _sc in "$@"; do case $_sc in ''|*[!0-9]*) continue;; esac
      [ "$_sc" = "$_cn" ] && _hit=1
      [ "$_sc" -gt $((_top - MESH_WINDOW)) ] && [ "$_sc" != "$_cn" ] && _nw="$_nw $_sc"
    done
    if [ "$_cn" -gt 0 ] && [ -z "$_hit" ] && [ "$_cn" -gt $((_mx - MESH_WINDOW)) ]; then
      echo "$_top $_nw" > "$_sf"; echo y; fi; } 8>>"$M/state/seen.lock")
  [ "$_ok" = y ] || { R_WHY=replay; rm -f "$R_BODY"; return 1; }
  R_T=$2 R_FROM=$3 R_ARG=$7 R_LEN=$8
  return 0
}
