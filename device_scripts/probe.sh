# adbflow bid probe: ONE `adb shell` round trip gathers everything a bid needs.
# Sent inline (`set -- NONCE FIRST CPUINFO; <this file>`), nothing is written on the device.
# Needs only mksh + toybox (no awk): builtins read/echo/case/${v:0:n}; forks only for sleep (first
# contact), getprop (first contact) and dumpsys: a bid round hits every phone at once.
#   $1 NONCE    random token; section markers `=:adbflow:NONCE:NAME` cannot be forged by file contents
#   $2 FIRST    1 = no previous /proc/stat sample on the laptop: take two, 0.2 s apart (stat_a, stat)
#   $3 CPUINFO  1 = also `dumpsys cpuinfo` (slow on real phones: ~100 ms)
#   $4 PROPS    1 = also model/abi/sdk (static per boot: the laptop asks once, saving forks per bid)
#   $5 THERMAL  1 = also `dumpsys thermalservice` (Android 10+; the laptop asks every ~30 s, not per bid)
#   $6 LIGHT    1 = only what changes between bids (stat, meminfo, leases; marker `light`): a
#               telemetry stream's requested sample; cpus/cpufreq/thermal/battery come from the
#               stream's last full sample (they change over seconds, and cost ~3/4 of the reads)
# Every section is bounded (line counts, ${v:0:n}, lim) because device output is untrusted.
n=$1
m() { echo; echo "=:adbflow:$n:$1"; }
# lim N: at most ~N bytes of stdin. toybox head before 0.7.4 (Android 7.x) has no -c: it fails
# on the option before reading stdin, and a builtin read loop bounds the text instead.
lim() { head -c "$1" 2>/dev/null || { c=0; while IFS= read -r l || [ -n "$l" ]; do
  c=$((c+${#l}+1)); [ $c -gt "$1" ] && break; echo "$l"; done; }; }
# cpu lines come first in /proc/stat: stop at the first other line (skips the huge intr line)
st() { i=0; while read -r l && [ $i -lt 1100 ]; do
  case $l in cpu*) echo "$l";; *) break;; esac; i=$((i+1)); done < /proc/stat; }
if [ "$2" = 1 ]; then
  m stat_a; st
  sleep 0.2
fi
m stat; st
m meminfo
i=0
while read -r l && [ $i -lt 80 ]; do
  case $l in MemTotal:*|MemFree:*|MemAvailable:*|Buffers:*|Cached:*) echo "$l";; esac
  case $l in Cached:*) break;; esac; i=$((i+1))
done < /proc/meminfo
if [ "$6" = 1 ]; then m light; else
m cpus
for f in present online possible; do
  v=; { read -r v < /sys/devices/system/cpu/$f; } 2>/dev/null && echo "$f=$v"
done
m cpufreq
for d in /sys/devices/system/cpu/cpu[0-9]*; do
  [ -d "$d" ] || continue
  c=; x=; k=; { read -r c < "$d/cpufreq/scaling_cur_freq"; } 2>/dev/null
  { read -r x < "$d/cpufreq/cpuinfo_max_freq"; } 2>/dev/null
  { read -r k < "$d/cpu_capacity"; } 2>/dev/null
  echo "${d##*/} ${c:--} ${x:--} ${k:--}"
done
m thermal
# Zones in numeric order (a glob sorts zone10 before zone2), up to 256; the type of each is
# read, the temperature only of CPU/SoC-like types (a bid needs no battery, BCL or skin zone,
# and some sensors are slow to read), at most 64 of those: phones with >64 zones are chosen
# by type, not cut at an arbitrary zone. adbflow.parsers.thermal classifies the types again.
z=0; k=0; miss=0
while [ $z -lt 256 ] && [ $k -lt 64 ]; do
  d=/sys/class/thermal/thermal_zone$z; z=$((z+1))
  if [ ! -d $d ]; then miss=$((miss+1)); [ $miss -gt 8 ] && break; continue; fi
  miss=0; t=; v=; { read -r t < $d/type; } 2>/dev/null
  case $t in
    *[Bb][Cc][Ll]*|*lvl*|vbat*|ibat*|*batt*|battery*|bms*|*[Ss]kin*|*xo*therm*|pa*therm*|*usb*) continue;;
    *[Cc][Pp][Uu]*|*kryo*|apc*|[Bb][Ii][Gg]*|[Mm][Ii][Dd]*|[Ll][Ii][Tt][Tt][Ll][Ee]*|x86_pkg_temp|cluster*|tsens*|soc*|[Aa][Pp]|*-usr|[Gg][Pp][Uu]*|[Gg]3[Dd]*|mtkts*) ;;
    *) continue;;
  esac
  { read -r v < $d/temp; } 2>/dev/null
  echo "thermal_zone$((z-1))	${t:0:64}	${v:0:12}"; k=$((k+1))
done
b=/sys/class/power_supply/battery
if [ -r "$b/capacity" ]; then
  m battery_sysfs
  for f in capacity status temp current_now voltage_now; do
    v=; { read -r v < "$b/$f"; } 2>/dev/null && echo "$f=$v"
  done
else
  m battery; dumpsys battery 2>/dev/null | lim 16384
fi
fi
if [ "$4" = 1 ]; then
  m props
  for k in ro.product.model ro.product.cpu.abi ro.build.version.sdk ro.serialno; do
    v=$(getprop "$k" 2>/dev/null); echo "[$k]: [${v:0:200}]"
  done
fi
if [ "$3" = 1 ]; then
  m cpuinfo; dumpsys cpuinfo 2>/dev/null | lim 262144
fi
if [ "$5" = 1 ]; then
  m thermalservice; dumpsys thermalservice 2>/dev/null | lim 32768
fi
# slot leases (device_scripts/lease.sh): read without the lock (records are replaced by
# rename, so each read is whole); the laptop applies the rules to show a slot busy
m leases
u=; { read -r u x < /proc/uptime; } 2>/dev/null; b=; { read -r b < /proc/sys/kernel/random/boot_id; } 2>/dev/null
echo "now ${u:0:20} ${b:-"-"}"
i=0
for f in /data/local/tmp/adbflow/slot-*.lease; do
  [ -f "$f" ] || continue
  i=$((i+1)); [ $i -gt 16 ] && break
  l=; { read -r l < "$f"; } 2>/dev/null; echo "${f##*/} ${l:0:200}"
done
m end
