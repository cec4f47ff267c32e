# adbflow slot leases and picture claims: ONE `adb shell` round trip per operation. Format
# and rules: README "Leases"; the same rules in Python (the model the tests compare
# against): adbflow/device/lease_rules.py.
# Sent inline like probe.sh: this file defines `adbflow_lease` and `adbflow_claim`, the
# laptop appends calls (phone-side orchestrators source it):
#   adbflow_lease NONCE OP SLOT OWNER TOKEN TTL_DS [NOW_DS BOOT]
#   OP  acquire  grant the slot if free or expired (new token = last token + 1), else busy
#       renew    extend the expiry if OWNER still holds TOKEN, else lost
#       guard    check OWNER holds TOKEN; move its pushed input in-SLOT-TOKEN to $DST (if
#                set) under the lock; else lost (the caller then must not run the program)
#       finish   check OWNER still holds TOKEN and release it: released, else lost
#       release  like finish (no program ran)
#       read     print the current record
#   adbflow_claim NONCE OP KEY OWNER TOKEN TTL_DS RESULT [NOW_DS BOOT]
#   A claim is a lease on one picture (KEY, from the picture's identity) at its origin
#   phone: same record, same rules, plus a done state that never expires.
#   OP  acquire  granted (free/expired), busy (live claim of another or of OWNER itself),
#                done (someone completed it: prints who and the RESULT they recorded)
#       renew    as for slots
#       complete OWNER holds TOKEN: record RESULT under the claim, now done: completed
#       release  give it up unfinished (the picture is free again): released / lost
#       read     state, or done with the result
#   RESULT  [A-Za-z0-9._:=,+/-]{1,240} (the laptop's short result record; `-` = none)
#   NOW_DS BOOT  test clock (deciseconds, boot id); real runs leave them out
# Prints one line `=:adbflow:NONCE:lease VERDICT TOKEN OWNER LEFT_DS NOW_DS` (claims:
# `=:adbflow:NONCE:claim ... NOW_DS RESULT`; verdicts: granted busy renewed lost held
# released completed done state error). Returns 0 for granted/renewed/held/released/
# completed/state, 2 for done, 1 otherwise.
# Needs only mksh + toybox (flock: toybox since Android 7.0; takes an fd, hence `9>`).
# Runs as the shell user (uid 2000): writes only under /data/local/tmp/adbflow.
# Why deciseconds of /proc/uptime: the device's own monotonic clock (not settable, unlike the
# wall clock), and mksh arithmetic is 32-bit (deciseconds last 6.8 years of uptime). A reboot
# is seen as a new boot id (or an uptime smaller than the last write): every lease expired.
# Shell variables are global: callers should not keep their own in names starting `_`+one
# letter (_d _f _i _n ...) across a call.
adbflow_lease() { _w=lease _res=- _lk=slot-$3; _adbflow_op "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8"; }
adbflow_claim() { _w=claim _res=${7:--} _lk=claims; _adbflow_op "$1" "$2" "$3" "$4" "$5" "$6" "$8" "$9"; }
_adbflow_op() {
  _n=$1 _op=$2 _slot=$3 _me=$4 _tok=$5 _ttl=$6 _now=$7 _boot=$8 L_res=
  _d=/data/local/tmp/adbflow
  _k=slot; [ "$_w" = claim ] && _k=claim
  _f=$_d/$_k-$_slot.lease
  case $_slot in ''|*[!a-z0-9_-]*) _say error 0 - 0; return 1;; esac
  [ ${#_slot} -le 64 ] || { _say error 0 - 0; return 1; }
  case $_ttl in ''|*[!0-9]*) _ttl=0;; esac
  case $_tok in ''|*[!0-9]*) _tok=0;; esac
  case $_res in *[!A-Za-z0-9._:=,+/-]*) _say error 0 - 0; return 1;; esac
  [ ${#_res} -le 240 ] || { _say error 0 - 0; return 1; }
  case $_w:$_op in
    lease:acquire|lease:renew|lease:guard|lease:finish|lease:release|lease:read) ;;
    claim:acquire|claim:renew|claim:complete|claim:release|claim:read) ;;
    *) _say error 0 - 0; return 1;;
  esac
  [ -d "$_d" ] || mkdir -p "$_d" 2>/dev/null
  if [ "$_op" = read ]; then
    _clk; _rd
    [ -n "$L_res" ] && { _say done "$L_tok" "$L_own" 0; return 2; }
    _say state "$L_tok" "$L_own" "$(_left)"; return 0
  fi
  {
    _i=0
    until flock -n 9; do
      _i=$((_i + 1)); [ $_i -ge 300 ] && { _say error 0 - 0; return 1; }
      sleep 0.01
    done
    # the clock is read under the lock: read before it, a waiter's "now" could be older
    # than the record the previous holder just wrote (and look like a reboot)
    _clk
    _rd
    case $_op in
      acquire)
        [ -n "$L_res" ] && { _say done "$L_tok" "$L_own" 0; return 2; }
        if _free; then
          L_tok=$((L_tok + 1)) L_own=$_me
          _wr $((_now + _ttl)) || { _say error 0 - 0; return 1; }
          [ $_k = slot ] && rm -f "$_d/in-$_slot-"* 2>/dev/null
          _say granted "$L_tok" "$L_own" "$_ttl"; return 0
        fi
        _say busy "$L_tok" "$L_own" "$(_left)"; return 1;;
      renew)
        _mine || { _say lost "$L_tok" "$L_own" "$(_left)"; return 1; }
        _wr $((_now + _ttl)) || { _say error "$L_tok" "$L_own" "$(_left)"; return 1; }
        _say renewed "$L_tok" "$L_own" "$_ttl"; return 0;;
      guard)
        _mine || { _say lost "$L_tok" "$L_own" "$(_left)"; return 1; }
        if [ -n "$DST" ]; then
          mv -f "$_d/in-$_slot-$_tok" "$DST" 2>/dev/null || {
            _say error "$L_tok" "$L_own" "$(_left)"; return 1; }
        fi
        _say held "$L_tok" "$L_own" "$(_left)"; return 0;;
      complete)
        _mine || { _say lost "$L_tok" "$L_own" "$(_left)"; return 1; }
        L_res=$_res
        _wr 0 || { _say error "$L_tok" "$L_own" 0; return 1; }
        _say completed "$L_tok" "$L_own" 0; return 0;;
      finish|release)
        _mine || { _say lost "$L_tok" "$L_own" "$(_left)"; return 1; }
        L_own=-
        _wr 0 || { _say error "$L_tok" - 0; return 1; }
        _say released "$L_tok" - 0; return 0;;
    esac
    _say error 0 - 0; return 1
  } 9>>"$_d/$_lk.lock"
}
_clk() {
  [ -n "$_now" ] && return 0
  read -r _up _x < /proc/uptime
  _i=${_up%.*} _c=${_up#*.}
  _now=$((_i * 10 + ${_c:0:1}))
  _boot=-
  { read -r _boot < /proc/sys/kernel/random/boot_id; } 2>/dev/null
  _boot=${_boot:-"-"}
}
# the record: `adbflow-lease 1 TOKEN OWNER BOOT WRITTEN_DS EXPIRES_DS [RESULT]` (OWNER - =
# free; RESULT only on a completed claim, which then never expires: done)
_rd() {
  L_tok=0 L_own=- L_boot=- L_at=0 L_exp=0 L_res=
  _mg= _v= _t= _o= _b= _a= _e= _r=
  [ -f "$_f" ] && read -r _mg _v _t _o _b _a _e _r _x < "$_f"
  [ "$_mg" = adbflow-lease ] && [ "$_v" = 1 ] || return 0
  for _z in "$_t" "$_a" "$_e"; do case $_z in ''|*[!0-9]*) return 0;; esac; done
  L_tok=$_t L_own=${_o:0:80} L_boot=$_b L_at=$_a L_exp=$_e
  case $_r in *[!A-Za-z0-9._:=,+/-]*) _r=;; esac
  [ $_k = claim ] && [ "$L_own" != - ] && L_res=${_r:0:240}
  return 0
}
_wr() {
  echo "adbflow-lease 1 $L_tok $L_own $_boot $_now $1${L_res:+ $L_res}" > "$_f.tmp" &&
    mv -f "$_f.tmp" "$_f"
}
_live() { [ "$L_own" != - ] && [ "$L_boot" = "$_boot" ] && [ "$_now" -ge "$L_at" ] &&
  [ "$_now" -lt "$L_exp" ]; }
_free() { ! _live; }
_mine() { [ -z "$L_res" ] && _live && [ "$L_own" = "$_me" ] && [ "$L_tok" = "$_tok" ]; }
_left() { if _live; then echo $((L_exp - _now)); else echo 0; fi; }
_say() {
  echo
  if [ $_w = claim ]; then echo "=:adbflow:$_n:claim $1 $2 $3 $4 $_now ${L_res:--}"
  else echo "=:adbflow:$_n:lease $1 $2 $3 $4 $_now"; fi
}
