# adbflow mesh: start this phone's worker listener, detached (run under `setsid` by
# `adbflow mesh up`, so it is its own session and survives the adb shell, the USB cable and
# the adb server). Records every pid it starts in $M/pids/ for `mesh down`. Nothing here is
# registered at boot: a rebooted phone runs none of it. Run again (`adbflow mesh restart`),
# it starts only what is not running, and the orchestrator resumes from its job records.
M=/data/local/tmp/adbflow-mesh
read -r ME < "$M/me"
_addr= _port=
while read -r _n _a _p; do [ "$_n" = "$ME" ] && _addr=$_a _port=$_p; done < "$M/peers"
[ -n "$_addr" ] && [ -n "$_port" ] || { echo "no address for $ME" >> "$M/log/mesh.log"; exit 1; }
_alive() { _q=; read -r _q 2>/dev/null < "$M/pids/$1"
  case $_q in ''|*[!0-9]*) return 1;; esac; kill -0 "$_q" 2>/dev/null; }
echo $$ >> "$M/pgid"    # our process group (setsid), one line per start: `mesh down` kills each
if ! _alive worker; then
  nc -L -s "$_addr" -p "$_port" sh "$M/worker.sh" < /dev/null > /dev/null 2>> "$M/log/nc.err" &
  echo $! > "$M/pids/worker"
  echo "$(date +%s) $ME worker listening on $_addr:$_port pid $!" >> "$M/log/mesh.log"
fi
# the phones named in $M/orchestrator (one per line: `single` one, `p2p` several) also run
# the orchestrator, each for the pictures it takes
if grep -qxF -- "$ME" "$M/orchestrator" 2>/dev/null && ! _alive orchestrator; then
  sh "$M/orch.sh" < /dev/null > /dev/null 2>> "$M/log/orch.err" &
  echo $! > "$M/pids/orchestrator"
  echo "$(date +%s) $ME orchestrator pid $!" >> "$M/log/mesh.log"
fi
