"""`adbflow mesh up / status / logs / down`: install, inspect and remove the mesh over adb.

Why over adb, once: the mesh runs on the phones without the laptop (agentless: only mksh,
toybox and the pushed model programs), so the laptop's job is to push one folder
(MESH_DIR), a fresh session key only the shell user can read, the peer list, and start the
worker listener detached (its own session: it survives the adb shell, the cable and the
adb server). `down` kills exactly the pids `up` recorded (and their process group) and
removes the folder, then lists it to prove it is gone. Nothing is registered at boot.
"""
from __future__ import annotations

import enum
import logging
import re
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from adbflow.device import Device
from adbflow.device.probe import run_probe
from adbflow.errors import (
    MeshError,  # noqa: F401 - defined in adbflow.errors
    ParseError,
)
from adbflow.mesh.audit import LeaseEvent, parse_lease_log
from adbflow.mesh.election import ElectionTiming
from adbflow.mesh.wire import new_key
from adbflow.paths import DEVICE_SCRIPTS_DIR, PROFILES_DIR
from adbflow.runtime.stages import REMOTE_IMAGE, label_image_argv, llama_argv, llama_for
from adbflow.scheduling.cores import performance_cores
from adbflow.scheduling.profiles import ProfileBook

log = logging.getLogger("adbflow.mesh")

MESH_DIR = "/data/local/tmp/adbflow-mesh"
DEFAULT_PORT = 7655
SCRIPTS = ("wire.sh", "worker.sh", "start.sh", "orch.sh", "cost.sh", "elect.sh")
PROMPT_MARK = "@PROMPT@"
_TIMEOUT = 20.0
_INET = re.compile(r"inet (?:addr:)?(\d{1,3}(?:\.\d{1,3}){3})")


@dataclass(frozen=True)
class PeerSpec:
    name: str          # p1, p2, ...: what goes on the wire (FROM/TO)
    serial: str
    addr: str
    port: int


class MeshMode(str, enum.Enum):
    """Who orchestrates: `single`, one phone for its pictures and nobody else's; `p2p`,
    several (default: every) phone, each for its own pictures, borrowing the others'
    workers through reservations (the same orchestrator program, orch.sh, on each)."""
    SINGLE = "single"
    P2P = "p2p"


@dataclass(frozen=True)
class MeshSettings:
    """The orchestrators' and workers' knobs (pushed to conf/). Why these defaults: a
    reservation only has to cover GRANT -> TASK start (the worker renews its lease every
    renew_ds / 3 while the program runs), so 10 s is plenty and a dead orchestrator's
    reservation is free again 10 s later; task_s bounds one program run (the worker kills
    it after that; the orchestrator stops waiting 15 s later)."""
    jobs: int = 2            # pictures one orchestrator handles at once
    ttl_ds: int = 100        # reservation time to live (deciseconds, worker's clock)
    renew_ds: int = 100      # lease time a renewal grants while the program runs
    task_s: int = 300        # longest program run
    stage_s: int = 300       # how long a stage keeps bidding when every slot is busy
    claim_ds: int = 300      # a picture claim's time to live (the laptop's claim_ttl_s)

    def files(self) -> dict[str, str]:
        return {f"conf/{k}": f"{int(v)}\n" for k, v in asdict(self).items()}


@dataclass
class MeshSession:
    key: str
    peers: list[PeerSpec] = field(default_factory=list)
    orchestrator: str | None = None     # mode single: the peer name hosting it
    elected: bool = False               # mode single, no phone named: the phones elect it
    mode: MeshMode = MeshMode.SINGLE
    orchestrators: list[str] = field(default_factory=list)   # peer names running orch.sh

    def peers_file(self) -> str:
        return "".join(f"{p.name} {p.addr} {p.port}\n" for p in self.peers)


def wifi_address(device: Device) -> str:
    """The phone's Wi-Fi IPv4 address (wlan0), from `ip` or toybox `ifconfig`."""
    res = device.shell("ip -o -4 addr show wlan0 2>/dev/null; ifconfig wlan0 2>/dev/null",
                       timeout=_TIMEOUT, check=False)
    for m in _INET.finditer(res.stdout):
        if not m.group(1).startswith("127.0.0."):
            return m.group(1)
    raise MeshError(f"{device.serial}: no Wi-Fi address on wlan0",
                    hint="connect the phone to Wi-Fi, or pass --addr SERIAL=IP")


def argv_files(device: Device, profiles_dir: Path = PROFILES_DIR) -> dict[str, str]:
    """classify/generate argv, one argument per line (read into an array on the phone, never
    evaluated); the story prompt is the PROMPT_MARK line. Plus the model's input size."""
    rep, _ = run_probe(device, timeout=_TIMEOUT, first=False, with_props=True)
    model = rep.props.get("ro.product.model") or None
    prof = ProfileBook.load(profiles_dir).for_model(model)
    t = prof.timing
    # the workers run the story with llama.cpp's threads on their performance cores, as
    # the laptop's pipeline does (adbflow.scheduling.cores)
    llama = llama_for(prof, performance_cores(rep.freqs))
    out = {"input_size": f"{int(prof.label_image.input_size)}\n",
           "classify.ms": f"{max(1, round(t.classify_ms))}\n",
           "generate.ms": f"{max(1, round(prof.llama.n_predict * 1000 / max(t.gen_tok_s, 0.1)))}\n"}
    for slot, argv in (("classify", label_image_argv(prof.label_image, REMOTE_IMAGE)),
                       ("generate", llama_argv(llama, PROMPT_MARK))):
        if any("\n" in a for a in argv):
            raise MeshError(f"{device.serial}: a {slot} argument contains a newline",
                            hint="fix the device profile")
        out[slot] = "".join(a + "\n" for a in argv)
    return out


def up(devices: Sequence[Device], *, addrs: Mapping[str, str] | None = None,
       port: int = DEFAULT_PORT, key: str | None = None, orchestrator: str | None = None,
       mode: MeshMode = MeshMode.SINGLE, orchestrators: Sequence[str] = (),
       settings: MeshSettings = MeshSettings(),
       programs: Mapping[str, Sequence[str]] | None = None,
       elect: ElectionTiming | None = None,
       profiles_dir: Path = PROFILES_DIR, tmp: Path) -> MeshSession:
    """Install and start the mesh on every device. `addrs` overrides the Wi-Fi address per
    serial; `orchestrator` (a serial) runs mode `single` there; `elect` (mode single with no
    phone named) starts the election on every phone once every worker listens; mode `p2p`
    runs an orchestrator on each of `orchestrators` (serials; default every device).
    `programs` replaces the profile's classify/generate argv (stand-in programs for protocol
    tests and benches; the argv is still one argument per line, never evaluated). Raises
    MeshError naming the device on any failure (the others are left as they are: run
    `mesh down`)."""
    addrs = dict(addrs or {})
    session = MeshSession(key or new_key(), mode=mode)
    if mode is MeshMode.P2P:
        if orchestrator:
            raise MeshError("--orchestrator names one phone: that is mode single",
                            hint="mode p2p takes --orchestrator once per phone, or none for all")
        wanted = set(orchestrators) or {d.serial for d in devices}
    else:
        if orchestrators:
            raise MeshError("several orchestrators need mode p2p", hint="pass --mode p2p")
        wanted = {orchestrator} if orchestrator else set()
    for i, dev in enumerate(devices, 1):
        addr = addrs.get(dev.serial) or wifi_address(dev)
        session.peers.append(PeerSpec(f"p{i}", dev.serial, addr, port))
        if dev.serial in wanted:
            session.orchestrators.append(f"p{i}")
    unknown = wanted - {d.serial for d in devices}
    if unknown:
        raise MeshError(f"{', '.join(sorted(unknown))}: not among the mesh's devices",
                        hint="pass the serial of one of the listed devices")
    if orchestrator and elect:
        raise MeshError("an orchestrator named and an election asked for",
                        hint="name the orchestrator's phone, or let the phones elect it")
    if elect and mode is not MeshMode.SINGLE:
        raise MeshError("an election is for mode single (one orchestrator)",
                        hint="mode p2p runs an orchestrator on every listed phone")
    if mode is MeshMode.SINGLE and session.orchestrators:
        session.orchestrator = session.orchestrators[0]
    lease_sh = (DEVICE_SCRIPTS_DIR / "lease.sh").read_text()
    tmp.mkdir(parents=True, exist_ok=True)
    for peer, dev in zip(session.peers, devices):
        d = MESH_DIR
        dev.shell(_DOWN, timeout=_TIMEOUT, check=False)   # a previous mesh: stop it first
        dev.shell(f"rm -rf {d} && mkdir -p {d}/state {d}/log {d}/tmp {d}/pids {d}/conf && "
                  f"chmod 700 {d}", timeout=_TIMEOUT)
        files: dict[str, str] = {f"{s}": (DEVICE_SCRIPTS_DIR / "mesh" / s).read_text()
                                 for s in SCRIPTS}
        files["lease.sh"] = lease_sh
        files["peers"] = session.peers_file()
        files["me"] = peer.name + "\n"
        files["key"] = session.key
        for name, text in argv_files(dev, profiles_dir).items():
            files[f"conf/{name}" + ("" if "." in name or name == "input_size" else ".argv")] = text
        for slot, argv in (programs or {}).items():
            if slot not in ("classify", "generate") or any("\n" in a for a in argv):
                raise MeshError(f"program for {slot!r}: unknown slot or a newline in an argument",
                                hint="slots: classify, generate; one argument per item")
            files[f"conf/{slot}.argv"] = "".join(a + "\n" for a in argv)
        files.update(settings.files())
        # the claim key has the inode exactly where the laptop's has it (adbd's ls_v2)
        files["conf/claim_inodes"] = "1\n" if "ls_v2" in dev.features(timeout=_TIMEOUT) else "0\n"
        files["mode"] = mode.value + "\n"
        if session.orchestrators:
            files["orchestrator"] = "".join(n + "\n" for n in session.orchestrators)
        for rel, text in files.items():
            local = tmp / f"{peer.name}-{rel.replace('/', '_')}"
            local.write_text(text)
            fmode = 0o600 if rel == "key" else 0o644
            dev.push(local, f"{d}/{rel}", timeout=_TIMEOUT, mode=fmode)
            local.unlink()
        dev.shell(f"chmod 600 {d}/key", timeout=_TIMEOUT)
        # setsid: a new session, so closing this adb shell (SIGHUP to its group) leaves it
        dev.shell(f"setsid sh {d}/start.sh </dev/null >/dev/null 2>&1 &", timeout=_TIMEOUT)
    for _peer, dev in zip(session.peers, devices):
        deadline = time.monotonic() + 10.0
        st = status_one(dev)
        while not st.get("worker_alive") and time.monotonic() < deadline:
            time.sleep(0.2)                       # start.sh runs detached: give it a moment
            st = status_one(dev)
        if not st.get("worker_alive"):
            raise MeshError(f"{dev.serial}: the mesh worker did not start",
                            hint=f"see `adbflow mesh logs`: {st.get('log_tail', '')[-300:]}")
    if elect:
        start_election(devices, elect, tmp)
        session.elected = True
    return session


def start_election(devices: Sequence[Device], timing: ElectionTiming, tmp: Path) -> None:
    """Start the elector (elect.sh) on every phone, after every worker listens: the first
    candidacy then reaches every phone (started with its worker, the first phone would stand
    before the others could vote). Detached like start.sh (setsid; pid in pids/elect)."""
    for dev in devices:
        local = tmp / "elect.conf"
        local.write_text(timing.conf_line())
        dev.push(local, f"{MESH_DIR}/conf/elect", timeout=_TIMEOUT, mode=0o644)
        local.unlink()
    for dev in devices:
        dev.shell(f"EL_RUN=loop setsid sh {MESH_DIR}/elect.sh </dev/null >/dev/null "
                  f"2>>{MESH_DIR}/log/elect.err &", timeout=_TIMEOUT)


_STATUS = f"""M={MESH_DIR}
[ -d $M ] || {{ echo present=0; exit 0; }}
echo present=1
read -r me < $M/me 2>/dev/null; echo me=$me
for f in $M/pids/*; do [ -f "$f" ] || continue; read -r p < "$f"
  case $p in ''|*[!0-9]*) continue;; esac
  if kill -0 "$p" 2>/dev/null; then echo "pid=${{f##*/}}:$p:1"; else echo "pid=${{f##*/}}:$p:0"; fi
done
for f in $M/* $M/*/*; do [ -e "$f" ] && echo "file=${{f#$M/}}"; done
read -r t l v b < $M/state/elect 2>/dev/null && echo "elect=$t:$l:$v"
"""


def status_one(dev: Device) -> dict[str, Any]:
    """What runs and what is installed on one phone (device text parsed, never evaluated)."""
    res = dev.shell(_STATUS, timeout=_TIMEOUT, check=False)
    out: dict[str, Any] = {"serial": dev.serial, "present": False, "pids": {}}
    for line in res.stdout.splitlines():
        k, _, v = line.partition("=")
        if k == "present":
            out["present"] = v == "1"
        elif k == "me":
            out["name"] = v[:16]
        elif k == "pid":
            parts = v.split(":")
            if len(parts) == 3 and parts[1].isdigit():
                out["pids"][parts[0][:16]] = {"pid": int(parts[1]), "alive": parts[2] == "1"}
        elif k == "file":
            out.setdefault("files", []).append(v[:200])
        elif k == "elect":          # the election (elect.sh state/elect): term and leader
            parts = v.split(":")
            if len(parts) == 3 and parts[0].isdigit() and len(parts[0]) <= 9:
                out["term"] = int(parts[0])
                out["leader"] = parts[1][:16] if re.fullmatch(r"[a-z0-9]{1,16}", parts[1]) \
                    else None
    out["worker_alive"] = bool(out["pids"].get("worker", {}).get("alive"))
    if out["present"] and not out["worker_alive"]:
        out["log_tail"] = logs_one(dev, lines=10)
    return out


def logs_one(dev: Device, lines: int = 50) -> str:
    res = dev.shell(f"cd {MESH_DIR}/log 2>/dev/null && tail -n {int(lines)} mesh.log "
                    "worker.err orch.err nc.err 2>/dev/null", timeout=_TIMEOUT, check=False)
    return res.stdout


_DOWN = f"""M={MESH_DIR}
for f in $M/pgid $M/pids/*; do [ -f "$f" ] || continue
  while read -r p; do case $p in ''|*[!0-9]*) continue;; esac
  kill -TERM -- -$p 2>/dev/null; kill -TERM $p 2>/dev/null; done < "$f"
done
sleep 0.3
for f in $M/pgid $M/pids/*; do [ -f "$f" ] || continue
  while read -r p; do case $p in ''|*[!0-9]*) continue;; esac
  kill -KILL -- -$p 2>/dev/null; kill -KILL $p 2>/dev/null; done < "$f"
done
# a killed process is gone once reaped (the device's init reaps orphans; give it 3 s)
i=0; while :; do left=
  for f in $M/pgid $M/pids/*; do [ -f "$f" ] || continue
    while read -r p; do case $p in ''|*[!0-9]*) continue;; esac
    kill -0 $p 2>/dev/null && left="$left $p"; done < "$f"
  done
  [ -z "$left" ] && break
  i=$((i + 1)); [ $i -ge 30 ] && {{ for p in $left; do echo alive=$p; done; break; }}
  sleep 0.1
done
rm -rf $M
rm -f /data/local/tmp/adbflow/slot-role-orchestrator.*
ls -d $M 2>/dev/null && echo left=1
echo done
"""


def down_one(dev: Device) -> dict[str, Any]:
    """Stop what `up` started on one phone (recorded pids and their process groups), remove
    the folder, and verify by listing."""
    res = dev.shell(_DOWN, timeout=_TIMEOUT, check=False)
    alive = [ln for ln in res.stdout.splitlines() if ln.startswith("alive=")]
    left = "left=1" in res.stdout
    if alive or left or "done" not in res.stdout:
        raise MeshError(f"{dev.serial}: mesh down incomplete ({' '.join(alive)}"
                        f"{' folder left' if left else ''})",
                        hint=f"adb -s {dev.serial} shell ls {MESH_DIR}; kill the pids by hand")
    return {"serial": dev.serial, "stopped": True, "removed": True}


# the uptime -> realtime bracket first (adbflow.mesh.trace maps the jobs' uptime marks with
# it): realtime, /proc/uptime, realtime, with no fork in between where mksh has $EPOCHREALTIME
_RESULTS = f"""M={MESH_DIR}
_r0=${{EPOCHREALTIME:-}}; read -r _u _x < /proc/uptime; _r1=${{EPOCHREALTIME:-}}
if [ -n "$_r0" ]; then echo "=:clock e $_r0 $_u $_r1"
else _r0=$(date +%s%N); read -r _u _x < /proc/uptime; _r1=$(date +%s%N); echo "=:clock d $_r0 $_u $_r1"; fi
read -r _me < $M/me 2>/dev/null; echo "=:me $_me"
for j in $M/jobs/*; do [ -d "$j" ] || continue
  echo "=:job ${{j##*/}}"
  for f in state source classify.who generate.who prompt; do
    printf '=:%s ' $f; head -c 300 "$j/$f" 2>/dev/null | head -n 1; echo; done
  echo "=:classify.out"; head -c 8000 "$j/classify.out" 2>/dev/null; echo
  echo "=:generate.out"; head -c 16000 "$j/generate.out" 2>/dev/null; echo
  echo "=:times"; head -c 600 "$j/times" 2>/dev/null; echo
  echo "=:end"
done
"""


def results_one(dev: Device) -> list[dict[str, Any]]:
    """The jobs the phone's orchestrator recorded, with labels and story (parsed as data).
    Why the `=:` markers: the outputs are device text; a line of theirs that imitates a
    marker could at worst split its own job's text, never run anything."""
    return results_and_clock(dev)[0]


def results_and_clock(dev: Device) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """(jobs, {"clock": the uptime bracket line, "me": the phone's peer name}), one round
    trip; each job's `times` parsed strictly (adbflow.mesh.trace.parse_times)."""
    from adbflow.mesh.trace import parse_times
    from adbflow.parsers.label_image import parse_label_image
    from adbflow.parsers.llama import parse_llama
    res = dev.shell(_RESULTS, timeout=_TIMEOUT, check=False, max_output=4 << 20)
    jobs: list[dict[str, Any]] = []
    head: dict[str, str] = {}
    cur: dict[str, Any] | None = None
    block: str | None = None
    buf: list[str] = []
    for line in res.stdout.splitlines():
        if line.startswith("=:job "):
            cur = {"job": line[6:].strip()[:12], "serial": dev.serial}
            jobs.append(cur)
        elif cur is None:
            k, _, v = line[2:].partition(" ") if line.startswith("=:") else ("", "", "")
            if k in ("clock", "me") and k not in head:
                head[k] = v.strip()[:120]
        elif line in ("=:classify.out", "=:generate.out", "=:times", "=:end"):
            if block:
                cur[block] = "\n".join(buf)
            block, buf = (line[2:] if line != "=:end" else None), []
        elif block:
            buf.append(line)
        elif line.startswith("=:"):
            k, _, v = line[2:].partition(" ")
            cur[k] = v.strip()
    for j in jobs:
        try:
            labels = parse_label_image(j.pop("classify.out", "") or "").labels
        except ParseError:
            labels = []
        j["labels"] = [lb.name for lb in labels[:5]]
        j["label_scores"] = [lb.score for lb in labels[:5]]
        out = j.pop("generate.out", "") or ""
        try:
            j["story"] = parse_llama(out, prompt=j.get("prompt"), require_text=False).text \
                if out.strip() else None
        except ParseError:
            j["story"] = None
        j["times"], refused = parse_times(j.pop("times", "") or "")
        if refused:
            j["times_refused"] = refused
    return jobs, head


def restart_one(dev: Device) -> dict[str, Any]:
    """Start again what `up` started and is no longer running on the phone (its worker
    listener, its orchestrator), keeping its state: a restarted orchestrator resumes its
    unfinished jobs from their records (each picture still ends done once)."""
    dev.shell(f"[ -d {MESH_DIR} ] && setsid sh {MESH_DIR}/start.sh </dev/null >/dev/null 2>&1 &",
              timeout=_TIMEOUT)
    deadline = time.monotonic() + 10.0
    st = status_one(dev)
    while not st.get("worker_alive") and time.monotonic() < deadline:
        time.sleep(0.2)
        st = status_one(dev)
    if not st.get("worker_alive"):
        raise MeshError(f"{dev.serial}: the mesh worker did not start again",
                        hint="`adbflow mesh up` installs it afresh")
    return st


def lease_log_one(dev: Device, max_bytes: int = 4 << 20) -> list[LeaseEvent]:
    """The worker's lease log (log/lease.log), parsed as data (malformed lines dropped)."""
    res = dev.shell(f"head -c {int(max_bytes)} {MESH_DIR}/log/lease.log 2>/dev/null",
                    timeout=_TIMEOUT, check=False, max_output=max_bytes + 4096)
    return parse_lease_log(res.stdout)


def status(devices: Sequence[Device]) -> list[dict[str, Any]]:
    return [status_one(d) for d in devices]


def leader(rows: Sequence[Mapping[str, Any]]) -> tuple[int, str] | None:
    """(term, leader) when a majority of the mesh's phones name the same leader for the same
    term (status rows of every phone), else None (an election under way, or none)."""
    votes: dict[tuple[int, str], int] = {}
    for r in rows:
        if r.get("leader") and r.get("term") is not None:
            k = (int(r["term"]), str(r["leader"]))
            votes[k] = votes.get(k, 0) + 1
    best = max(votes.items(), key=lambda kv: kv[1], default=None)
    return best[0] if best and best[1] >= len(rows) // 2 + 1 else None


def down(devices: Sequence[Device]) -> list[dict[str, Any]]:
    return [down_one(d) for d in devices]


def session_json(session: MeshSession) -> dict[str, Any]:
    """The session without its key (what may be printed)."""
    return {"peers": [asdict(p) for p in session.peers], "mode": session.mode.value,
            "orchestrators": list(session.orchestrators)}


def quote(s: str) -> str:
    return shlex.quote(s)
