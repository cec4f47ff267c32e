# adbflow mesh election: which phone hosts the orchestrator role when `mesh up` named none
# (mode single without --orchestrator). Rules and messages: README "Mesh election"; the same
# decisions in Python (the model the tests compare against): adbflow/mesh/election.py.
# One file, four uses:
#   sourced by worker.sh   el_answer: VOTE_REQUEST, HEARTBEAT (election), JOBS, CLAIM, DONE
#                          (this phone's job records, served to the elected orchestrator;
#                          CLAIM and DONE source orch.sh for its picture claims)
#   EL_RUN=loop   the elector, on every phone (start.sh): candidacy, votes, heartbeats
#   EL_RUN=lead   the orchestrator role, started/stopped by the elector on the leader only
#   EL_RUN=origin the camera watcher, on every phone: a picture becomes a job record here
# Why no central database: every phone keeps its own term, vote and leader (state/elect) and
# its own job records; a leader exists only while a majority hears its heartbeats, and every
# picture is claimed on the phone that took it with the picture claim everything else uses
# (orch.sh's _jkey/_acquire/_claim: lease.sh's adbflow_claim, the key and the result record
# of a laptop-side `adbflow watch` and of p2p orchestrators; the claim's token fences the
# leader's parts and commit): a laptop and an elected mesh process each picture once.
# Everything from peers is data: numbers and names are checked by character class, bodies
# go to files, nothing is evaluated.
M=/data/local/tmp/adbflow-mesh
[ -n "$ME" ] || read -r ME < "$M/me"
. "$M/wire.sh"
. "$M/lease.sh"
. "$M/cost.sh"
# conf/elect (from `mesh up`): LEASE BEAT POLL CLAIM, deciseconds.
#   LEASE  a follower that heard no heartbeat for LEASE stands for election (rank-delayed)
#   BEAT   the leader's heartbeat period; voters stay loyal for LEASE - BEAT after a beat
#   POLL   the elector's and the lead's loop period
#   CLAIM  how long the orchestrator holds a picture (covers classify + story)
_el_conf() {
  EL_LEASE=100 EL_BEAT=20 EL_POLL=5 EL_CLAIM=600
  { read -r _a _b _c _d < "$M/conf/elect"; } 2>/dev/null
  for _z in "$_a" "$_b" "$_c" "$_d"; do case $_z in ''|*[!0-9]*) return 0;; esac
    [ ${#_z} -le 5 ] || return 0; done
  [ "$_b" -ge 1 ] && [ "$_a" -ge $((_b * 2)) ] && [ "$_c" -ge 1 ] || return 0
  EL_LEASE=$_a EL_BEAT=$_b EL_POLL=$_c EL_CLAIM=$_d
}
_el_conf
EL_STICKY=$((EL_LEASE - EL_BEAT))
# the role lease (lease.sh slot on the leader itself) lapses before any voter's loyalty does:
# a leader cut off from the majority has stopped leading before a new one can be elected
EL_ROLE_TTL=$((EL_LEASE - 2 * EL_BEAT)); [ $EL_ROLE_TTL -ge "$EL_BEAT" ] || EL_ROLE_TTL=$EL_BEAT
_el_now() { read -r _u _x < /proc/uptime; _ui=${_u%.*} _uc=${_u#*.}; EL_NOW=$((_ui * 10 + ${_uc:0:1})); }
_el_name() { case $1 in ''|*[!a-z0-9]*) return 1;; esac; [ ${#1} -le 16 ]; }
_el_num() { case $1 in ''|*[!0-9]*) return 1;; esac; [ ${#1} -le 9 ]; }
_el_sleep() { sleep "$(($1 / 10)).$(($1 % 10))"; }

# ---- pure rules (no I/O; tests run them in mksh next to the Python twin) ----------------
# (S1,N1) better than (S2,N2): lower score, then lower name (names p1..pN follow the serials)
_el_better() { [ "$1" -lt "$3" ] || { [ "$1" = "$3" ] && [[ "$2" < "$4" ]]; }; }
# _el_vote_rule TERM CAND CSCORE MYTERM MYLEADER MYVOTE AGE STICKY ME MYSCORE -> verdict
_el_vote_rule() {
  [ "$1" -lt "$4" ] && { echo stale-term; return; }
  # loyalty: to the leader heard, else to the candidate voted for, less than STICKY ago
  _lo=$5; [ "$_lo" = - ] && [ "$6" != "$9" ] && _lo=$6
  [ "$_lo" != - ] && [ "$_lo" != "$2" ] && [ "$7" -lt "$8" ] && { echo leader-alive; return; }
  _el_better "${10}" "$9" "$3" "$2" && { echo better-bid; return; }
  _v=$6; [ "$1" -gt "$4" ] && _v=-
  case $_v in -|"$2") echo granted; return;; esac
  # a candidate that has not won yields its own vote to a better candidate of its term: its
  # win needs VOTED = itself at the end (checked under the lock), so no term gets two leaders
  [ "$_v" = "$9" ] && [ "$5" != "$9" ] && { echo granted; return; }
  echo voted-other
}
# _el_beat_rule TERM LEADER MYTERM MYLEADER -> ok | stale | conflict
_el_beat_rule() {
  [ "$1" -lt "$3" ] && { echo stale; return; }
  [ "$1" = "$3" ] && [ "$4" != - ] && [ "$4" != "$2" ] && { echo conflict; return; }
  echo ok
}
# _el_due NOW LASTBEAT LEASE BEAT RANK: no heartbeat for LEASE + RANK x 2 beats (two: a
# vote round of mksh handlers can take a beat on a loaded phone; the next in rank must not
# stand while the first one's round is still out)
_el_due() { [ $(($1 - $2)) -ge $(($3 + $5 * 2 * $4)) ]; }
_el_majority() { echo $(($1 / 2 + 1)); }

# ---- this phone's election state: `TERM LEADER VOTED LASTBEAT_DS` (flock-guarded) -------
EL_F=$M/state/elect
_el_rd() {
  E_TERM=0 E_LEADER=- E_VOTED=- E_BEAT=0
  _er_t= _er_l= _er_v= _er_b=      # own names: callers hold _t etc. across a locked read
  { read -r _er_t _er_l _er_v _er_b < "$EL_F"; } 2>/dev/null
  _el_num "$_er_t" && _el_num "${_er_b#-}" || return 0
  E_TERM=$_er_t E_BEAT=$_er_b
  _el_name "$_er_l" && E_LEADER=$_er_l
  _el_name "$_er_v" && E_VOTED=$_er_v
  return 0
}
_el_wr() { echo "$E_TERM $E_LEADER $E_VOTED $E_BEAT" > "$EL_F.tmp-$$" && mv -f "$EL_F.tmp-$$" "$EL_F"; }
# run "$@" with the state lock held (fd 7)
_el_locked() { { flock 7; "$@"; } 7>>"$M/state/elect.lock"; }
_el_lease() { adbflow_lease "e$$" "$@" | while read -r _a _v _tk _o _lf _n; do
    [ "$_a" = "=:adbflow:e$$:lease" ] && echo "$_v $_tk $_o $_lf"; done; }
# my role bid `SCORE SPEED LEVEL CHARGING`: measured by the elector every beat
# (state/role-bid), read by the handlers (a heartbeat answer then costs no extra processes)
_el_bid_now() { _role_bid > "$M/state/role-bid.tmp-$$" && mv -f "$M/state/role-bid.tmp-$$" "$M/state/role-bid"; }
_el_bid() {
  _eb=; { read -r _eb < "$M/state/role-bid"; } 2>/dev/null
  case $_eb in *[!0-9\ ]*|'') _role_bid;; *) echo "$_eb";; esac
}
_el_peers() { while read -r _pn _px _py; do _el_name "$_pn" && echo "$_pn"; done < "$M/peers"; }
_el_count() { _el_peers | grep -c .; }
# my rank among the successors: the leader's order (heartbeats), then the peers file order
_el_rank() {
  _o=; { read -r _o < "$M/state/elect-order"; } 2>/dev/null
  _r=0
  for _n in $(IFS=.; set -f; echo $_o) $(_el_peers); do
    [ "$_n" = "$ME" ] && { echo $_r; return; }
    _r=$((_r + 1))
  done
  echo $_r
}
# _el_ask PEER TYPE ARG [BODYFILE [MAXBYTES [IDLE_S]]]: one request/answer, the answer in
# R_* (R_BODY: a file the caller removes). Why not orch.sh's _ask: short timeouts (2 s to
# connect, 4 s idle by default: a dead or cut-off peer must not hold up a heartbeat round),
# an answer bound per call (a PICTURE is larger than a RESULT), and quiet (heartbeats are
# periodic: a dead peer would fill the log).
_el_ask() {
  _pa= _pp=; while read -r _an _aa _ap; do [ "$_an" = "$1" ] && _pa=$_aa _pp=$_ap; done < "$M/peers"
  [ -n "$_pa" ] || return 1
  _rq=$M/tmp/erq-$$-$1 _rp=$M/tmp/erp-$$-$1
  mesh_send "$2" "$1" "$3" "$4" > "$_rq"
  nc -w 2 -W "${6:-4}" "$_pa" "$_pp" < "$_rq" 2>/dev/null | head -c "${5:-4096}" > "$_rp"
  mesh_recv < "$_rp"; _rc=$?
  rm -f "$_rq" "$_rp"
  [ $_rc = 0 ] && [ "$R_FROM" = "$1" ] || { rm -f "$R_BODY"; return 1; }
}

# ---- answers (worker.sh context: R_T R_FROM R_ARG R_BODY set, message authentic) ---------
_el_reply() { mesh_send "$1" "$R_FROM" "$2" "$3"; }
el_answer() {
  case $R_T in
  VOTE_REQUEST) _el_on_vote;; HEARTBEAT) _el_on_beat;;
  JOBS) _el_on_jobs;; CLAIM) _el_on_claim;; DONE) _el_on_done;;
  esac
}
_el_on_vote() {    # ARG: TERM,SCORE
  IFS=, read -r _t _s _x <<EOT
$R_ARG
EOT
  _el_num "$_t" && _el_num "$_s" || return 0
  set -- $(_el_bid); _ms=$1 _bid="$1,$2,$3,$4"
  _el_locked _el_vote_locked
  mesh_log "elect: vote term $_t for $R_FROM (score $_s): $EL_VERDICT (mine $_ms)"
  _el_reply VOTE "$E_TERM,$EL_VERDICT,$_bid"
}
_el_vote_locked() {
  _el_rd; _el_now
  EL_VERDICT=$(_el_vote_rule "$_t" "$R_FROM" "$_s" "$E_TERM" "$E_LEADER" "$E_VOTED" \
    $((EL_NOW - E_BEAT)) "$EL_STICKY" "$ME" "$_ms")
  case $EL_VERDICT in
  granted) [ "$_t" -gt "$E_TERM" ] && E_LEADER=-
    E_TERM=$_t E_VOTED=$R_FROM E_BEAT=$EL_NOW; _el_wr;;
  better-bid|voted-other)
    [ "$_t" -gt "$E_TERM" ] && { E_TERM=$_t E_VOTED=- E_LEADER=-; _el_wr; }
    # a better bidder than an active candidate stands at once (not after its rank delay)
    [ "$EL_VERDICT" = better-bid ] && : > "$M/state/elect-run";;
  esac
}
_el_on_beat() {    # ARG: TERM,SUCCESSOR.ORDER
  IFS=, read -r _t _ord _x <<EOT
$R_ARG
EOT
  _el_num "$_t" || return 0
  case $_ord in *[!a-z0-9.-]*) return 0;; esac
  _el_locked _el_beat_locked
  [ "$EL_VERDICT" = ok ] && [ "$_was" != "$R_FROM" ] && mesh_log "elect: term $_t leader $R_FROM (heartbeat)"
  [ "$EL_VERDICT" = ok ] || mesh_log "elect: heartbeat term $_t from $R_FROM: $EL_VERDICT (mine $E_TERM)"
  set -- $(_el_bid)
  _el_reply ACK "$E_TERM,$EL_VERDICT,$1"
}
_el_beat_locked() {
  _el_rd; _el_now; _was=$E_LEADER
  EL_VERDICT=$(_el_beat_rule "$_t" "$R_FROM" "$E_TERM" "$E_LEADER")
  [ "$EL_VERDICT" = ok ] || return 0
  [ "$_t" -gt "$E_TERM" ] && { E_VOTED=$R_FROM; _was=-; }
  E_TERM=$_t E_LEADER=$R_FROM E_BEAT=$EL_NOW; _el_wr
  printf '%s\n' "${_ord:0:90}" > "$M/state/elect-order"
}
# the orchestrator asking this phone (the pictures' origin): only the leader of my term
_el_mine() { _el_rd; [ "$E_LEADER" = "$R_FROM" ] && [ "$E_TERM" = "$1" ]; }
_el_on_jobs() {    # ARG: TERM -> ACK TERM,N.N.N (pending job records) | TERM,none
  _el_num "$R_ARG" || return 0
  _el_locked _el_mine "$R_ARG" || { _el_reply REFUSE "$R_ARG,not-leader"; return 0; }
  _l=
  for _s in "$M"/jobs/*/state; do
    [ -f "$_s" ] || continue; read -r _v < "$_s"; [ "$_v" = pending ] || continue
    _n=${_s%/state}; _n=${_n##*/}; _el_num "$_n" || continue
    [ ${#_l} -le 80 ] && _l=$_l.$_n
  done
  _l=${_l#.}
  _el_reply ACK "$R_ARG,${_l:-none}"
}
# the picture claims of orch.sh (_jkey _acquire _claim _record: lease.sh's adbflow_claim, the
# key and record a laptop-side `adbflow watch` and a p2p orchestrator use), for the elected
# orchestrator: owner mesh.LEADER.tTERM ($1), time to live $2 (deciseconds)
_el_claims() { MESH_LIB=1 . "$M/orch.sh"; CLAIM_OWNER=$1 CLAIM_DS=$2; }
_el_on_claim() {   # ARG: JOB,TERM,TTL -> PICTURE JOB,TOKEN (body: the BMP) | REFUSE JOB,WHY
  IFS=, read -r _j _t _ttl _x <<EOT
$R_ARG
EOT
  _el_num "$_j" && _el_num "$_t" && _el_num "$_ttl" || return 0
  [ "$_ttl" -le 6000 ] || _ttl=6000
  _jd=$M/jobs/$_j
  [ -f "$_jd/state" ] || { _el_reply REFUSE "$_j,unknown"; return 0; }
  _el_locked _el_mine "$_t" || { _el_reply REFUSE "$_j,not-leader"; return 0; }
  _el_claims "mesh.$R_FROM.t$_t" "$_ttl"
  # under the job's lock: the state check and the claim are one step (a commit cannot
  # slip between them). The picture's claim: done by another orchestrator (a laptop's
  # watch, say) -> recorded done-elsewhere, as orch.sh does; held by one -> busy
  _why=$({ flock 6; read -r _v < "$_jd/state"
    [ "$_v" = pending ] || { echo "$_v"; exit 0; }
    read -r _src < "$_jd/source"
    _jkey "$_j" || { echo failed-image; exit 0; }
    _acquire "$_j"
    case $? in 0) echo "granted $CL_TOK";; 1) echo done-elsewhere "$(cat "$_jd/elsewhere")";;
      *) [ -n "$CL_HELD" ] && echo busy || echo error;; esac; } 6>>"$_jd/lock")
  set -f; set -- $_why; set +f
  case $1 in
  granted) mesh_log "origin: job $_j claimed by $R_FROM term $_t token $2"
    _el_reply PICTURE "$_j,$2" "$_jd/input.bmp";;
  done-elsewhere) mesh_log "origin: job $_j done elsewhere (by ${2:-?}), not claimed by $R_FROM"
    _el_reply REFUSE "$_j,done-elsewhere";;
  *) _el_reply REFUSE "$_j,${1:-error}";;
  esac
}
# a commit that did not happen: no outputs left in the job record (it stays as it was)
_el_unout() { rm -f "$1/classify.out" "$1/prompt" "$1/generate.out" "$1/classify.who" \
  "$1/generate.who" "$1/part-"*; }
_el_on_done() {    # ARG: JOB,TOKEN,TERM,PART[,A,B]: a part of the result, the commit, a release
  IFS=, read -r _j _tk _t _p _a _b _x <<EOT
$R_ARG
EOT
  _el_num "$_j" && _el_num "$_tk" && _el_num "$_t" || return 0
  case $_p in renew|release|classify|prompt|generate|commit|fail) ;; *) return 0;; esac
  _jd=$M/jobs/$_j
  [ -f "$_jd/state" ] || return 0
  # the claim _el_on_claim took (its key kept in the job record); the token fences it: a
  # claim renewed, taken over or completed by another answers lost
  _el_claims "mesh.$R_FROM.t$_t" "$EL_CLAIM"
  CL_KEY=; { read -r CL_KEY < "$_jd/claim"; } 2>/dev/null
  case $CL_KEY in pic-*) ;; *) _el_reply ACK "$_j,$_tk,lost"; return 0;; esac
  case $_p in
  renew)     # the orchestrator between stages: the claim lasts another CLAIM
    set -- $(_claim renew "$CL_KEY" "$CLAIM_OWNER" "$_tk")
    _el_reply ACK "$_j,$_tk,${1:-error}";;
  release)   # the orchestrator gives the picture back unprocessed (it stopped leading)
    set -- $(_claim release "$CL_KEY" "$CLAIM_OWNER" "$_tk")
    [ "$1" = released ] && mesh_log "origin: job $_j released by $R_FROM term $_t token $_tk"
    _el_reply ACK "$_j,$_tk,${1:-error}";;
  classify|prompt|generate)
    # claims have no guard: a renew with the same token is one (held, and stays held)
    set -- $(_claim renew "$CL_KEY" "$CLAIM_OWNER" "$_tk")
    [ "$1" = renewed ] || { _el_reply ACK "$_j,$_tk,lost"; return 0; }
    mv -f "$R_BODY" "$_jd/part-$_tk-$_p"; _el_reply ACK "$_j,$_tk,ok";;
  commit|fail)
    if [ "$_p" = commit ]; then _el_name "$_a" && _el_name "$_b" || return 0
    else case $_a in classify|generate) ;; *) return 0;; esac; fi
    # under the job's lock: the claim completed with orch.sh's result record (what a laptop
    # reads: done), then the done record: exactly one commit per picture. The claim checked
    # first (a renew: no output is moved for a lost one); complete refused after all (lost
    # in between): the moved outputs are removed again, the job stays pending
    _v=$({ flock 6
      if [ "$_p" = fail ]; then set -- $(_claim release "$CL_KEY" "$CLAIM_OWNER" "$_tk")
        [ "$1" = released ] || { echo lost; exit 0; }
        echo "failed-$_a" > "$_jd/state"; rm -f "$_jd/part-"*; echo done; exit 0; fi
      set -- $(_claim renew "$CL_KEY" "$CLAIM_OWNER" "$_tk")
      [ "$1" = renewed ] || { echo lost; exit 0; }
      mv -f "$_jd/part-$_tk-classify" "$_jd/classify.out" &&
        mv -f "$_jd/part-$_tk-prompt" "$_jd/prompt" &&
        mv -f "$_jd/part-$_tk-generate" "$_jd/generate.out" || {
          _claim release "$CL_KEY" "$CLAIM_OWNER" "$_tk" > /dev/null
          _el_unout "$_jd"; echo failed-parts > "$_jd/state"; echo lost; exit 0; }
      echo "$_a" > "$_jd/classify.who"; echo "$_b" > "$_jd/generate.who"
      set -- $(_claim complete "$CL_KEY" "$CLAIM_OWNER" "$_tk" "$(_record "$_jd")")
      [ "$1" = completed ] || { _el_unout "$_jd"; echo lost; exit 0; }
      echo done > "$_jd/state"
      rm -f "$_jd/part-"*; echo done; } 6>>"$_jd/lock")
    if [ "$_v" = done ] && [ "$_p" = commit ]; then
      mesh_log "origin: job $_j done (classify on $_a, generate on $_b) by $R_FROM term $_t token $_tk"
      cmd notification post -S bigtext -t adbflow "mesh-$_j" "story ready (job $_j)" >/dev/null 2>&1
    elif [ "$_v" = done ]; then mesh_log "origin: job $_j failed ($_a) by $R_FROM term $_t"
    else mesh_log "origin: job $_j $_p by $R_FROM term $_t token $_tk refused (claim lost)"; fi
    _el_reply ACK "$_j,$_tk,$_v";;
  esac
}

# ---- the elector (EL_RUN=loop) -------------------------------------------------------------
_el_bidfmt() { IFS=, read -r _bs _bp _bl _bc <<EOT
$1
EOT
  echo "$_bs/$_bp/$_bl/$_bc"; }
# candidacy for term E_TERM+1: my bid and a VOTE_REQUEST to every peer at once. Won: all
# peers that answered granted or are worse, a majority of the mesh voted for me.
# _el_fanout TYPE ARG ANSWER DIR: TYPE ARG to every other peer at once; each answer of type
# ANSWER leaves its ARG in DIR/PEER (one background request per peer, waited for by pid: not
# a bare wait, the origin watcher is our child too)
_el_fanout() {
  _w=
  for _p in $(_el_peers); do [ "$_p" = "$ME" ] && continue
    ( _el_ask "$_p" "$1" "$2" < /dev/null && [ "$R_T" = "$3" ] &&
        printf '%s\n' "$R_ARG" > "$4/$_p"; rm -f "$R_BODY" ) &
    _w="$_w $!"
  done
  wait $_w
}
_el_stand() {
  rm -f "$M/state/elect-run"
  _el_locked _el_stand_locked || return 1
  _t=$E_TERM
  set -- $(_el_bid); _ms=$1 _mine="$1/$2/$3/$4"     # measured at most a beat ago
  _d=$M/tmp/votes-$$; rm -rf "$_d"; mkdir -p "$_d"
  _el_fanout VOTE_REQUEST "$_t,$_ms" VOTE "$_d"
  _n=$(_el_count) _g=1 _veto= _hi=$_t _bids="$ME=$_mine" _okb="$_ms $ME"
  for _p in $(_el_peers); do [ "$_p" = "$ME" ] && continue
    _a=; { read -r _a < "$_d/$_p"; } 2>/dev/null
    IFS=, read -r _at _av _rest <<EOT
$_a
EOT
    if ! _el_num "$_at"; then _bids="$_bids $_p=none"; continue; fi
    _bids="$_bids $_p=$(_el_bidfmt "$_rest"):$_av"
    [ "$_at" -gt "$_hi" ] && _hi=$_at
    case $_av in granted) _g=$((_g + 1));; better-bid) _veto="$_veto $_p";; esac
    _el_num "${_rest%%,*}" && _okb="$_okb
${_rest%%,*} $_p"
  done
  rm -rf "$_d"
  _maj=$(_el_majority "$_n")
  mesh_log "elect: term $_t candidate $ME bids $_bids (score/speed_ms/battery%/charging:verdict)"
  if [ "$_g" -ge "$_maj" ] && [ -z "$_veto" ] && [ "$_hi" = "$_t" ] && _el_locked _el_win_locked; then
    mesh_log "elect: term $_t leader $ME votes $_g/$_n"
    # successors: the others by their bids (best first): a follower's rank delays its candidacy
    printf '%s\n' "$_okb" | sort -n | while read -r _s _p; do [ "$_p" != "$ME" ] && printf '%s.' "$_p"; done \
      > "$M/state/elect-order-lead"
    _el_role acquire || { _el_stepdown "role lease refused"; return 1; }
    EL_NEXTBEAT=0
    return 0
  fi
  [ "$_hi" -gt "$_t" ] && _el_locked _el_adopt "$_hi"
  mesh_log "elect: term $_t lost: votes $_g/$_n${_veto:+, better bids from$_veto}"
  # a better bidder answered: it stands now (its run marker); leave it a lease to win
  _el_now
  if [ -n "$_veto" ]; then EL_NEXT=$((EL_NOW + EL_LEASE))
  else EL_NEXT=$((EL_NOW + ($(_el_rank) + 1) * 2 * EL_BEAT)); fi
  return 1
}
# re-checked under the lock: a heartbeat or a vote granted since the loop's look defers it
_el_stand_locked() { _el_rd; _el_now; [ $((EL_NOW - E_BEAT)) -ge "$EL_STICKY" ] || return 1
  E_TERM=$((E_TERM + 1)) E_VOTED=$ME E_LEADER=-; _el_wr; }
_el_win_locked() { _el_rd; [ "$E_TERM" = "$_t" ] && [ "$E_VOTED" = "$ME" ] && [ "$E_LEADER" = - ] ||
  return 1; _el_now; E_LEADER=$ME E_BEAT=$EL_NOW; _el_wr; }
_el_adopt() { _el_rd; [ "$1" -gt "$E_TERM" ] && { E_TERM=$1 E_VOTED=- E_LEADER=-; _el_wr; }; return 0; }
# the role lease: acquire (elected) / renew (a heartbeat round reached a majority) / release
EL_RTOK=0 EL_RTERM=0
_el_role() {
  _ro=mesh.$ME.t$EL_RTERM
  case $1 in
  acquire) set -- $(_el_lease read role-orchestrator - 0 0)
    # a role lease of mine from an earlier term (stepped down on a higher term): mine to end
    case $3 in "mesh.$ME".*) [ "$4" != 0 ] && _el_lease release role-orchestrator "$3" "$2" 0 >/dev/null;; esac
    EL_RTERM=$E_TERM _ro=mesh.$ME.t$E_TERM
    set -- $(_el_lease acquire role-orchestrator "$_ro" 0 "$EL_ROLE_TTL")
    [ "$1" = granted ] && EL_RTOK=$2;;
  renew) set -- $(_el_lease renew role-orchestrator "$_ro" "$EL_RTOK" "$EL_ROLE_TTL");;
  release) set -- $(_el_lease release role-orchestrator "$_ro" "$EL_RTOK" 0);;
  esac
  case $1 in granted|renewed|released) return 0;; esac; return 1
}
# stepping down ends the role lease; the orchestrator process pauses (no new claims) and
# is stopped once another phone leads: re-elected, this phone goes on with the job it holds
_el_stepdown() {
  _el_locked _el_down_locked
  _el_role release
  mesh_log "elect: term $E_TERM leader $ME steps down: $1"
}
_el_down_locked() { _el_rd; [ "$E_LEADER" = "$ME" ] && { E_LEADER=-; _el_wr; }; return 0; }
# one heartbeat round: every follower at once; a higher term seen: step down; a majority of
# acks: the role lease is renewed; none for the role lease's time: step down
_el_beat() {
  _t=$E_TERM _ord=; { read -r _ord < "$M/state/elect-order-lead"; } 2>/dev/null
  _ord=${_ord%.}; _ord=${_ord:0:90}
  _d=$M/tmp/beats-$$; rm -rf "$_d"; mkdir -p "$_d"
  _el_fanout HEARTBEAT "$_t,${_ord:--}" ACK "$_d"
  _n=$(_el_count) _g=1 _hi=$_t _okb=
  for _p in $(_el_peers); do [ "$_p" = "$ME" ] && continue
    _a=; { read -r _a < "$_d/$_p"; } 2>/dev/null
    IFS=, read -r _at _av _as <<EOT
$_a
EOT
    _el_num "$_at" || continue
    [ "$_at" -gt "$_hi" ] && _hi=$_at
    [ "$_av" = ok ] && [ "$_at" = "$_t" ] && { _g=$((_g + 1)); _el_num "$_as" && _okb="$_okb
$_as $_p"; }
  done
  rm -rf "$_d"
  if [ "$_hi" -gt "$_t" ]; then
    _el_locked _el_adopt "$_hi"; _el_stepdown "saw term $_hi"; return
  fi
  if [ "$_g" -ge "$(_el_majority "$_n")" ]; then
    if _el_role renew; then
      _el_locked _el_renew_locked
      printf '%s\n' "$_okb" | sort -n | while read -r _s _p; do [ -n "$_p" ] && printf '%s.' "$_p"; done \
        > "$M/state/elect-order-lead"
    else _el_stepdown "role lease lost"; fi
  else
    set -- $(_el_lease read role-orchestrator - 0 0)
    [ "$4" = 0 ] && _el_stepdown "no majority for the role lease's time ($_g/$_n)"
  fi
}
_el_renew_locked() { _el_rd; [ "$E_LEADER" = "$ME" ] && [ "$E_TERM" = "$_t" ] || return 0
  _el_now; E_BEAT=$EL_NOW; _el_wr; }
_el_lead_on() {
  _lp=; { read -r _lp < "$M/pids/lead"; } 2>/dev/null
  _el_num "$_lp" && kill -0 "$_lp" 2>/dev/null && return 0
  EL_RUN=lead EL_TERM=$E_TERM setsid sh "$M/elect.sh" < /dev/null > /dev/null 2>> "$M/log/lead.err" &
  echo $! > "$M/pids/lead"
  mesh_log "elect: term $E_TERM $ME hosts the orchestrator (pid $!)"
}
_el_lead_off() {
  _lp=; { read -r _lp < "$M/pids/lead"; } 2>/dev/null
  _el_num "$_lp" || return 0
  # the lead first (its trap gives a claimed picture back once its current command ends),
  # then what is left of its group; in the background: the elector keeps beating/voting
  rm -f "$M/pids/lead"
  ( kill -TERM "$_lp" 2>/dev/null
    _i=0; while kill -0 "$_lp" 2>/dev/null && [ $_i -lt 30 ]; do sleep 0.2; _i=$((_i + 1)); done
    kill -KILL -- "-$_lp" 2>/dev/null ) < /dev/null > /dev/null 2>&1 &
}
_el_loop() {
  MESH_ROLE=e
  exec 2>>"$M/log/elect.err"
  echo $$ > "$M/pids/elect"
  EL_RUN=origin sh "$M/elect.sh" < /dev/null > /dev/null 2>> "$M/log/origin.err" &
  echo $! > "$M/pids/origin"
  # a fresh session: no leader heard "a lease ago", so the first candidacy waits only the rank
  _el_now; E_BEAT0=$((EL_NOW - EL_LEASE))
  [ -f "$EL_F" ] || { E_TERM=0 E_LEADER=- E_VOTED=- E_BEAT=$E_BEAT0; _el_wr; }
  mesh_log "elect: elector up (lease $EL_LEASE ds, heartbeat $EL_BEAT ds, rank $(_el_rank))"
  EL_NEXT=0 EL_NEXTBEAT=0 EL_NEXTBID=0
  while :; do
    _el_now; _el_locked _el_rd
    [ "$EL_NOW" -ge "$EL_NEXTBID" ] && { EL_NEXTBID=$((EL_NOW + EL_BEAT)); _el_bid_now; }
    if [ "$E_LEADER" = "$ME" ]; then
      _el_lead_on
      [ "$EL_NOW" -ge "$EL_NEXTBEAT" ] && { EL_NEXTBEAT=$((EL_NOW + EL_BEAT)); _el_beat; }
    else
      [ -f "$M/pids/lead" ] && [ "$E_LEADER" != - ] && { _el_role release; _el_lead_off
        mesh_log "elect: term $E_TERM $ME no longer hosts the orchestrator (leader ${E_LEADER})"; }
      _go=
      if [ -f "$M/state/elect-run" ]; then
        [ $((EL_NOW - E_BEAT)) -ge "$EL_STICKY" ] && _go=1 || rm -f "$M/state/elect-run"
      elif [ "$EL_NOW" -ge "$EL_NEXT" ] && _el_due "$EL_NOW" "$E_BEAT" "$EL_LEASE" "$EL_BEAT" "$(_el_rank)"; then
        _go=1
      fi
      [ -n "$_go" ] && _el_stand
    fi
    _el_sleep "$EL_POLL"
  done
}

# ---- the orchestrator role (EL_RUN=lead): every phone's pending pictures, one at a time ----
_lead_job() {    # $1 origin peer, $2 job number (own _L names: orch.sh's _stage sets _tk etc.)
  _Lo=$1 _Lj=$2
  _el_ask "$_Lo" CLAIM "$_Lj,$EL_TERM,$EL_CLAIM" "" 8400000 10 < /dev/null || return 1
  [ "$R_T" = PICTURE ] || { rm -f "$R_BODY"; return 1; }
  _Lt=${R_ARG#*,}; _el_num "$_Lt" || { rm -f "$R_BODY"; return 1; }
  _Ld=$M/lead/$_Lo-$_Lj-$_Lt; rm -rf "$_Ld"; mkdir -p "$_Ld"
  mv -f "$R_BODY" "$_Ld/in.bmp"
  EL_HELD="$_Lo $_Lj,$_Lt,$EL_TERM"      # given back if this orchestrator is stopped
  mesh_log "lead: term $EL_TERM job $_Lj of $_Lo (token $_Lt)"
  _Ln="$_Lj,$_Lt,$EL_TERM"
  _Lf=
  if ! _stage classify "$_Ld/in.bmp" "$_Ld"; then _Lf=classify
  else
    # the claim renewed between the stages: a slow story does not lose the picture
    _el_ask "$_Lo" DONE "$_Ln,renew" "" 4096 10 < /dev/null && rm -f "$R_BODY"
    [ "$R_ARG" = "$_Lj,$_Lt,renewed" ] || { mesh_log "lead: job $_Lj of $_Lo: claim lost ($R_ARG)"
      rm -rf "$_Ld"; EL_HELD=; return 1; }
    _prompt "$_Ld"; _stage generate "$_Ld/prompt" "$_Ld" || _Lf=generate; fi
  if [ -n "$_Lf" ]; then
    _el_ask "$_Lo" DONE "$_Ln,fail,$_Lf" "" 4096 10 < /dev/null; rm -rf "$_Ld" "$R_BODY"
    mesh_log "lead: job $_Lj of $_Lo failed ($_Lf): $R_ARG"; return 1; fi
  for _Lp in classify:classify.out prompt:prompt generate:generate.out; do
    _el_ask "$_Lo" DONE "$_Ln,${_Lp%%:*}" "$_Ld/${_Lp#*:}" 4096 10 < /dev/null && rm -f "$R_BODY" &&
      [ "$R_ARG" = "$_Lj,$_Lt,ok" ] ||
      { mesh_log "lead: job $_Lj of $_Lo: part ${_Lp%%:*} not taken ($R_ARG)"; rm -rf "$_Ld"; return 1; }
  done
  read -r _Lc < "$_Ld/classify.who"; read -r _Lg < "$_Ld/generate.who"
  _el_ask "$_Lo" DONE "$_Ln,commit,$_Lc,$_Lg" "" 4096 10 < /dev/null; rm -f "$R_BODY"
  EL_HELD=
  mesh_log "lead: job $_Lj of $_Lo commit: $R_ARG"
  rm -rf "$_Ld"
}
# stopped (stepped down: SIGTERM from the elector): the claimed picture goes back to its
# origin at once instead of waiting out the claim (a crash leaves it to expire)
_lead_stop() {
  trap - TERM
  if [ -n "$EL_HELD" ]; then set -- $EL_HELD
    _el_ask "$1" DONE "$2,release" "" 4096 5 < /dev/null && rm -f "$R_BODY"
    mesh_log "lead: term $EL_TERM stopped, job of $1 given back ($R_ARG)"; fi
  exit 0
}
_lead_loop() {
  MESH_LIB=1 . "$M/orch.sh"
  exec 2>>"$M/log/lead.err"
  TTL=$EL_CLAIM       # a reservation on a worker lasts as long as the claim on the picture
  mkdir -p "$M/lead"
  EL_HELD=; trap _lead_stop TERM
  mesh_log "lead: term $EL_TERM orchestrating the mesh's pictures"
  _Lpause=0
  while :; do
    _el_locked _el_rd
    if [ "$E_LEADER" != "$ME" ]; then
      # no leader (stepped down, an election under way): pause; another one: stop
      _el_now; [ "$_Lpause" = 0 ] && _Lpause=$EL_NOW
      [ "$E_LEADER" = - ] && [ $((EL_NOW - _Lpause)) -lt $((2 * EL_LEASE)) ] ||
        { mesh_log "lead: term $EL_TERM over (leader $E_LEADER)"; exit 0; }
      _el_sleep "$EL_BEAT"; continue
    fi
    _Lpause=0
    [ "$E_TERM" != "$EL_TERM" ] && { mesh_log "lead: re-elected, term $E_TERM"; EL_TERM=$E_TERM; }
    for _o in $(_el_peers); do
      _el_ask "$_o" JOBS "$EL_TERM" < /dev/null || continue
      rm -f "$R_BODY"; [ "$R_T" = ACK ] || continue
      _l=${R_ARG#*,}; [ "$_l" = none ] && continue
      for _jn in $(IFS=.; set -f; echo $_l); do _el_num "$_jn" && _lead_job "$_o" "$_jn"; done
      _el_locked _el_rd; [ "$E_LEADER" = "$ME" ] || break
    done
    _el_sleep "$EL_BEAT"    # asking every phone each beat: pictures wait <= a beat for it
  done
}

# ---- the camera watcher (EL_RUN=origin): this phone's pictures become job records here ---
_el_record() { _src=$1
  _n=1; while [ -e "$M/jobs/$_n" ]; do _n=$((_n + 1)); done
  _j=$M/jobs/$_n; mkdir -p "$_j"
  printf '%s\n' "$_src" > "$_j/source"
  printf '%s\n' "$_src" >> "$M/state/pictures"    # known from now on (orch.sh's _watch)
  echo converting > "$_j/state"
  _mark detected "$_j"
  /data/local/tmp/img2bmp "$_src" "$_j/input.bmp" "$SIZE" 2>"$_j/img2bmp.err" ||
    { echo failed-image > "$_j/state"; return; }
  _mark converted "$_j"
  echo pending > "$_j/state.tmp" && mv -f "$_j/state.tmp" "$_j/state"
  mesh_log "origin: job $_n recorded (pending)"
}

case ${EL_RUN:-} in
loop) _el_loop;;
lead) _el_num "$EL_TERM" && _lead_loop;;
origin) MESH_LIB=1 . "$M/orch.sh"; exec 2>>"$M/log/origin.err"; _watch _el_record;;
esac
