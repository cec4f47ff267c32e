# adbflow mesh bids, sourced by worker.sh (slot bids) and elect.sh (orchestrator-role bids):
# one cost model for both. Needs $M; reads only /proc, /sys and the profile's conf/ files.
# Slot bid (worker BID): the expected run time in ms (lower wins): the profile's idle time
# for the slot (conf/SLOT.ms, from the device profile) scaled by the CPU load per core (1 min
# loadavg); `busy` while the slot is leased (by anybody: laptop or phone). Needs lease.sh.
_speed() {
  _base=100; read -r _base 2>/dev/null < "$M/conf/$1.ms"
  case $_base in ''|*[!0-9]*) _base=100;; esac
  read -r _l1 _x < /proc/loadavg
  _ci=${_l1%.*} _cf=${_l1#*.}00
  _cores=$(grep -c '^processor' /proc/cpuinfo); [ "${_cores:-0}" -gt 0 ] || _cores=1
  echo $(( _base * (100 + (_ci * 100 + ${_cf:0:2}) / _cores) / 100 ))
}
_cost() {
  _left=$(adbflow_lease q read "$1" - 0 0 | while read -r _a _v _tk _o _lf _n; do
      [ "$_a" = "=:adbflow:q:lease" ] && echo "$_lf"; done)
  case $_left in ''|0) _speed "$1";; *) echo busy;; esac
}
# battery as the probe reads it (device_scripts/probe.sh): sysfs, else `dumpsys battery`.
# Prints `LEVEL CHARGING` (0-100, 1 when charging or full); unknown: `100 1` (a phone that
# reports no battery is taken as mains powered, like a dev board).
_battery() {
  _lv= _st=
  { read -r _lv < /sys/class/power_supply/battery/capacity; } 2>/dev/null
  { read -r _st < /sys/class/power_supply/battery/status; } 2>/dev/null
  case $_lv in ''|*[!0-9]*)
    _lv= _st=
    dumpsys battery 2>/dev/null | head -c 16384 > "$M/tmp/battery-$$"
    while IFS=: read -r _k _v; do
      set -f; set -- $_v; set +f
      case $_k in *level) _lv=$1;; *status) case $1 in 2) _st=Charging;; 5) _st=Full;; esac;; esac
    done < "$M/tmp/battery-$$"
    rm -f "$M/tmp/battery-$$";;
  esac
  case $_lv in ''|*[!0-9]*) echo 100 1; return;; esac
  [ "${#_lv}" -le 3 ] && [ "$_lv" -le 100 ] || _lv=100
  case $_st in Charging|Full) echo "$_lv 1";; *) echo "$_lv 0";; esac
}
# the orchestrator-role score (lower wins; same integers as adbflow/mesh/election.py
# role_score): the phone's expected time for a whole job (classify + generate at its load),
# multiplied by 4 on battery and by (200 - LEVEL) / 100: battery weighs more than speed
# (a phone 3x faster but unplugged loses to a charging one at the same level).
_role_score() {   # $1 speed_ms $2 level $3 charging -> score
  _m=4; [ "$3" = 1 ] && _m=1
  echo $(( $1 * _m * (200 - $2) / 100 ))
}
# `SCORE SPEED LEVEL CHARGING` for this phone now
_role_bid() {
  _sp=$(( $(_speed classify) + $(_speed generate) ))
  set -- $(_battery)
  echo "$(_role_score "$_sp" "$1" "$2") $_sp $1 $2"
}
