# adbflow mesh: start this phone's worker listener, detached (run under `setsid` by
# `adbflow mesh up`, so it is its own session and survives the adb shell, the USB cable and
# the adb server). Records every pid it starts in $M/pids/ for `mesh down`. Nothing here is
# registered at boot: a rebooted phone runs none of it.
M=/data/local/tmp/adbflow-mesh
read -r ME < "$M/me"
_addr= _port=
while read -r _n _a _p; do [ "$_n" = "$ME" ] && _addr=$_a _port=$_p; done < "$M/peers"
[ -n "$_addr" ] && [ -n "$_port" ] || { echo "no address for $ME" >> "$M/log/mesh.log"; exit 1; }
echo $$ > "$M/pgid"     # our process group (setsid): `mesh down` kills it whole
nc -L -s "$_addr" -p "$_port" sh "$M/worker.sh" < /dev/null > /dev/null 2>> "$M/log/nc.err" &
echo $! > "$M/pids/worker"
echo "$(date +%s) $ME worker listening on $_addr:$_port pid $!" >> "$M/log/mesh.log"
# mode single: the phone named in $M/orchestrator also runs the orchestrator
_o=; read -r _o 2>/dev/null < "$M/orchestrator"
if [ "$_o" = "$ME" ]; then
  sh "$M/orch.sh" < /dev/null > /dev/null 2>> "$M/log/orch.err" &
  echo $! > "$M/pids/orchestrator"
  echo "$(date +%s) $ME orchestrator (single) pid $!" >> "$M/log/mesh.log"
fi
