"""The mesh on a virtual fleet: device_scripts/mesh/*.sh against adbflow/mesh/wire.py both
ways, a worker reached over the "Wi-Fi" (loopback addresses) doing real work under the slot
lease, hostile peers that change and run nothing (canaries), `mesh up` surviving the adb
server, and `mesh down` leaving no process and no file.

Why on the fleet: the shell side runs the same mksh/toybox a phone runs; a Python-only test
could not catch a quoting bug in wire.sh or worker.sh, and those are where a hostile peer
would get in.
"""
from __future__ import annotations

import hashlib
import socket
import time

import pytest
from fleet_helpers import CAT_WORDS, CHELSEA, COFFEE, COFFEE_WORDS, cheap_profiles, device, module_fleet

from adbflow.fleet import adb_server
from adbflow.mesh import control, wire
from adbflow.mesh.wire import Kind, Peer
from adbflow.parsers.label_image import parse_label_image
from adbflow.runtime.imaging import prepare_bmp

fleet = module_fleet(2, ["flagship_2025"])
M = control.MESH_DIR
CANARY = "/data/local/tmp/canary-mesh"
HOSTILE = "$(touch /data/local/tmp/pwned1);`touch /data/local/tmp/pwned2`;touch /data/local/tmp/pwned3|x&"


@pytest.fixture(scope="module")
def mesh(fleet, tmp_path_factory):
    """The mesh up on the module's fleet: worker addresses 127.0.1.N, canaries planted."""
    tmp = tmp_path_factory.mktemp("mesh")
    devs = [device(fleet, s) for s in fleet.serials]
    for d in devs:
        d.shell(f"echo canary-$RANDOM > {CANARY}", timeout=10)
    base = 40 + (fleet.adb_port % 200)
    addrs = {s: f"127.0.1.{base + i}" for i, s in enumerate(fleet.serials)}
    port = adb_server.free_port(30000, 31000)
    session = control.up(devs, addrs=addrs, port=port, tmp=tmp / "push",
                         profiles_dir=cheap_profiles(tmp / "profiles", n_predict=8))
    PEERS.clear()
    yield session, devs, tmp
    control.down(devs)


def canaries(devs) -> list[str]:
    # `; true`: as uid 2000, find meets unreadable folders and exits 1; what it prints counts
    return [d.shell(f"cat {CANARY}; ls /data/local/tmp/pwned* 2>/dev/null; "
                    "find / -xdev -name 'pwned*' 2>/dev/null; true", timeout=90).stdout
            for d in devs]


PEERS: dict[str, Peer] = {}


def as_peer(session, name: str = "p2") -> Peer:
    """One Peer per name for the whole module: workers remember the last counter of each
    sender, so a fresh Peer (counter 0) would be refused as a replay."""
    if name not in PEERS:
        PEERS[name] = Peer(name, session.key)
    return PEERS[name]


def talk(session, me: Peer, to: control.PeerSpec, raw: bytes, timeout: float = 30.0):
    return me.exchange(to.addr, to.port, raw, peers={to.name}, timeout=timeout)


def tmp_left(dev, wait_s: float = 5.0) -> str:
    """What handlers left in the mesh tmp folder once they exited (a handler answers, then
    removes its body file: give the last one a moment)."""
    deadline = time.monotonic() + wait_s
    while True:
        left = dev.shell(f"ls {M}/tmp", timeout=10).stdout.strip()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def worker_log(dev) -> str:
    return dev.shell(f"cat {M}/log/mesh.log", timeout=10).stdout


def test_up_pushes_one_folder_with_a_private_key_and_starts_a_listener_per_phone(mesh):
    session, devs, _ = mesh
    for st, peer in zip(control.status(devs), session.peers):
        assert st["present"] and st["worker_alive"] and st["name"] == peer.name
        assert {"key", "peers", "wire.sh", "worker.sh", "lease.sh"} <= set(st["files"])
    d = devs[0]
    assert d.shell(f"stat -c %a {M}/key", timeout=10).stdout.strip() == "600"
    assert d.shell(f"cat {M}/key", timeout=10).stdout == session.key
    # listening on its own address only (not 0.0.0.0)
    p1 = session.peers[0]
    with socket.create_connection((p1.addr, p1.port), timeout=5):
        pass
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", p1.port), timeout=2).close()


def test_shell_verifies_python_messages_and_python_verifies_shell_messages(mesh):
    """Both directions, fed through stdin (no network): mesh_recv on the phone accepts a
    Python-signed message with a binary body, and a mesh_send output decodes in Python."""
    session, devs, tmp = mesh
    d = devs[0]
    body = bytes(range(256)) + b"\n$(touch /data/local/tmp/pwned4)\n"
    raw = as_peer(session, "p2").make(Kind.TASK, "p1", "classify,5,nn", body)
    out = d.shell(f"M={M}; ME=p1; . $M/wire.sh; mesh_recv; echo \"rc=$? why=$R_WHY t=$R_T "
                  f"from=$R_FROM arg=$R_ARG len=$R_LEN\"; sha256sum < \"$R_BODY\"; rm -f \"$R_BODY\"",
                  timeout=20, stdin=raw).stdout
    assert f"rc=0 why= t=TASK from=p2 arg=classify,5,nn len={len(body)}" in out
    assert hashlib.sha256(body).hexdigest() in out
    # the same bytes again: a replay
    out = d.shell(f"M={M}; ME=p1; . $M/wire.sh; mesh_recv; echo \"rc=$? why=$R_WHY\"",
                  timeout=20, stdin=raw).stdout
    assert "rc=1 why=replay" in out
    # shell signs, Python verifies
    res = d.shell(f"M={M}; ME=p1; . $M/wire.sh; printf 'story \\044(x) `y`\\n' > $M/tmp/b; "
                  f"mesh_send RESULT p2 generate,3,ok $M/tmp/b; rm -f $M/tmp/b", timeout=20)
    a, b = socket.socketpair()
    a.sendall(res.stdout.encode("latin-1"))
    a.close()
    m = wire.read_message(b, session.key, me="p2", peers={"p1"}, guard=wire.ReplayGuard())
    b.close()
    assert (m.kind, m.sender, m.arg, m.body) == (Kind.RESULT, "p1", "generate,3,ok",
                                                b"story $(x) `y`\n")


def test_a_peer_classifies_on_another_phones_worker_under_its_slot_lease(mesh):
    session, devs, tmp = mesh
    me, p1 = as_peer(session, "p2"), session.peers[0]
    bid = talk(session, me, p1, me.make(Kind.BID_REQUEST, "p1", "classify"))
    assert bid.kind is Kind.BID and bid.arg.split(",")[0] == "classify"
    assert bid.arg.split(",")[1].isdigit()
    g = talk(session, me, p1, me.make(Kind.RESERVE, "p1", "classify,300,job1"))
    assert g.kind is Kind.GRANT
    token = g.arg.split(",")[1]
    # the reservation is the laptop's lease format: a second reservation is refused, and a
    # bid now says busy
    lease = devs[0].shell("cat /data/local/tmp/adbflow/slot-classify.lease", timeout=10).stdout
    assert lease.split()[:4] == ["adbflow-lease", "1", token, "mesh.p2.job1"]
    r = talk(session, me, p1, me.make(Kind.RESERVE, "p1", "classify,300,job2"))
    assert r.kind is Kind.REFUSE and r.arg == "classify,busy"
    assert talk(session, me, p1, me.make(Kind.BID_REQUEST, "p1", "classify")).arg == \
        "classify,busy"
    # a TASK with another nonce (not the reservation's owner) is refused, nothing runs
    bmp = tmp / "chelsea.bmp"
    prepare_bmp(CHELSEA, bmp, 224)
    r = talk(session, me, p1, me.make(Kind.TASK, "p1", f"classify,{token},job2", bmp.read_bytes()))
    assert r.kind is Kind.RESULT and r.arg == f"classify,{token},lost" and not r.body
    # the reservation itself was not disturbed... but the refused TASK consumed its input:
    # the holder pushes again and runs
    r = talk(session, me, p1, me.make(Kind.TASK, "p1", f"classify,{token},job1", bmp.read_bytes()))
    assert r.arg == f"classify,{token},ok"
    labels = " ".join(lb.name for lb in parse_label_image(r.body.decode()).labels)
    assert any(w in labels for w in CAT_WORDS), labels
    # finished: the slot is free again (a new reservation gets a larger token)
    g2 = talk(session, me, p1, me.make(Kind.RESERVE, "p1", "classify,300,job3"))
    assert g2.kind is Kind.GRANT and int(g2.arg.split(",")[1]) > int(token)
    rel = talk(session, me, p1, me.make(Kind.RELEASE, "p1", f"classify,{g2.arg.split(',')[1]},job3"))
    assert rel.arg.endswith(",released")


def test_a_story_prompt_with_shell_metacharacters_is_data(mesh):
    session, devs, _ = mesh
    me, p1 = as_peer(session, "p2"), session.peers[0]
    g = talk(session, me, p1, me.make(Kind.RESERVE, "p1", "generate,600,s1"))
    token = g.arg.split(",")[1]
    r = talk(session, me, p1, me.make(Kind.TASK, "p1", f"generate,{token},s1",
                                      f"A cat. {HOSTILE}".encode()), timeout=120)
    assert r.arg == f"generate,{token},ok" and r.body
    assert "pwned" not in "".join(canaries(devs))


def hostile_messages(session) -> list[tuple[str, bytes]]:
    good, now = as_peer(session, "p2"), int(time.time())
    wrong = Peer("p2", "0" * 64)
    out = [("wrong key", wrong.make(Kind.RESERVE, "p1", "classify,300,w")),
           ("unknown peer", Peer("p9", session.key).make(Kind.RESERVE, "p1", "classify,300,u")),
           ("stale", good.make(Kind.RESERVE, "p1", "classify,300,s", ts=now - 3600)),
           ("future", good.make(Kind.RESERVE, "p1", "classify,300,f", ts=now + 3600))]
    replayed = good.make(Kind.RESERVE, "p1", "classify,300,r")
    out += [("first", replayed), ("replay", replayed)]
    for field_i in range(9):                       # metacharacters in every header field
        f = ["AFM1", "RESERVE", "p2", "p1", str(good.counter + 100), str(now),
             "classify,300,m", "0", "0" * 64]
        f[field_i] = HOSTILE.replace(" ", "")
        out.append((f"field {field_i}", " ".join(f).ljust(255)[:255].encode() + b"\n"))
    for kind, n in (("TASK", 99999999), ("RESULT", 70000), ("BID_REQUEST", 5)):
        s = f"AFM1 {kind} p2 p1 {good.counter + 200} {now} classify,1,x {n}"
        out.append((f"size {kind}", f"{s} {'0' * 64}".ljust(255).encode() + b"\n" + b"A" * 4096))
    return out


def test_hostile_peers_change_nothing_and_run_nothing(mesh):
    session, devs, _ = mesh
    p1 = session.peers[0]
    before = canaries(devs)
    answers = {}
    for name, raw in hostile_messages(session):
        with socket.create_connection((p1.addr, p1.port), timeout=10) as s:
            try:
                s.sendall(raw)
                s.shutdown(socket.SHUT_WR)
                s.settimeout(10)
                answers[name] = s.recv(4096)
            except ConnectionResetError:       # it hung up with our unread bytes pending
                answers[name] = b""
    # only the one legitimate message got an answer (a grant, released below)
    assert [k for k, v in answers.items() if v] == ["first"], answers
    g = wire.parse_header(answers["first"][:wire.HEADER_BYTES])
    assert g[1] == "GRANT"
    me = as_peer(session, "p2")
    rel = talk(session, me, p1, me.make(Kind.RELEASE, "p1", f"{g[6]},r"))
    assert rel.arg.endswith(",released")
    log = worker_log(devs[0])
    for why in ("bad-mac", "unknown-peer", "stale", "replay", "size", "name", "type"):
        assert f"refused {why}" in log, why
    assert canaries(devs) == before and "pwned" not in "".join(before)
    assert tmp_left(devs[0]) == ""


def test_endless_input_is_cut_and_the_worker_keeps_answering(mesh):
    session, devs, _ = mesh
    p1 = session.peers[0]
    sent = 0
    with socket.create_connection((p1.addr, p1.port), timeout=10) as s:
        s.settimeout(10)
        try:
            while sent < 64 << 20:
                s.sendall(b"x" * 65536)
                sent += 65536
        except OSError:
            pass                                   # the worker read 256 bytes and hung up
    assert sent < 64 << 20
    me = as_peer(session, "p2")
    assert talk(session, me, p1, me.make(Kind.BID_REQUEST, "p1", "classify")).kind is Kind.BID
    assert tmp_left(devs[0]) == ""


def test_the_mesh_keeps_working_without_the_adb_server(mesh, fleet):
    session, devs, tmp = mesh
    adb_server.kill_server(fleet.adb_port)
    try:
        assert not adb_server.server_alive(fleet.adb_port)
        me, p2 = as_peer(session, "p1"), session.peers[1]
        g = talk(session, me, p2, me.make(Kind.RESERVE, "p2", "classify,300,noadb"))
        bmp = tmp / "chelsea.bmp"
        prepare_bmp(CHELSEA, bmp, 224)
        r = talk(session, me, p2, me.make(Kind.TASK, "p2", f"classify,{g.arg.split(',')[1]},noadb",
                                          bmp.read_bytes()))
        assert r.arg.endswith(",ok") and b"cat" in r.body
    finally:
        adb_server.start_server(fleet.adb_port)
        for s in fleet.serials:
            adb_server.request_sync(fleet.adb_port, f"host:connect:{s}")
        for s in fleet.serials:
            fleet.wait_adb_state(s, "device", timeout=30)
    assert all(st["worker_alive"] for st in control.status(devs))
    assert "done classify" in worker_log(devs[1])


def test_a_phone_cut_off_the_wifi_is_unreachable_for_its_peers_while_adb_works(mesh, fleet):
    """fleet.wifi(serial, False): the peers' `nc` cannot reach it and its own cannot reach
    them; adb still works; restored, the same request is answered."""
    session, devs, _ = mesh
    p1, p2 = devs
    # the phones talk over their wlan0 addresses (the fleet's), not the fixture's ones
    a1, a2 = (control.wifi_address(d) for d in devs)
    port = adb_server.free_port(33000, 34000)
    p2.shell(f"setsid nc -l -s {a2} -p {port} sh -c 'echo pong' </dev/null >/dev/null 2>&1 &",
             timeout=10)
    time.sleep(0.5)
    fleet.wifi(p2.serial, False)
    try:
        r = p1.shell(f"echo ping | nc -w 3 {a2} {port}; echo rc=$?", timeout=20, check=False)
        assert "pong" not in r.stdout and "rc=1" in r.stdout
        r = p2.shell(f"echo ping | nc -w 3 {a1} 9; echo rc=$?", timeout=20, check=False)
        assert "unreachable" in r.stderr and "rc=1" in r.stdout
        assert p2.shell("echo adb-ok", timeout=10).stdout.strip() == "adb-ok"
    finally:
        fleet.wifi(p2.serial, True)
    r = p1.shell(f"echo ping | nc -w 3 {a2} {port}", timeout=20, check=False)
    assert "pong" in r.stdout


def test_down_stops_every_process_and_removes_every_file(mesh, fleet, tmp_path):
    session, devs, _ = mesh
    pids = {d.serial: st["pids"]["worker"]["pid"] for d, st in zip(devs, control.status(devs))}
    control.down(devs)
    for d in devs:
        assert d.shell(f"ls -d {M} 2>/dev/null; kill -0 {pids[d.serial]} 2>/dev/null && "
                       "echo alive; ps -A -o args | grep -c '[n]c -L'", timeout=10,
                       check=False).stdout.split() \
            == ["0"]
    p1 = session.peers[0]
    with pytest.raises(OSError):
        socket.create_connection((p1.addr, p1.port), timeout=2).close()
    control.down(devs)           # idempotent on a clean phone (the fixture calls it again)


def test_cli_up_status_results_down_with_addresses_found_on_wlan0(mesh, fleet, tmp_path,
                                                                  monkeypatch):
    """The commands as a user runs them: addresses read from wlan0 (the fleet's loopback
    Wi-Fi), the session kept chmod 600 in the data dir, `up` twice stops the first mesh."""
    import json
    import os

    from typer.testing import CliRunner

    from adbflow.cli.main import app
    monkeypatch.setenv("ADBFLOW_HOME", str(tmp_path / "home"))
    srv = ["--adb-server", f"127.0.0.1:{fleet.adb_port}"]
    port = str(adb_server.free_port(32000, 33000))
    run = CliRunner().invoke
    for _ in range(2):
        r = run(app, ["mesh", "up", *srv, "--port", port, "--json"])
        assert r.exit_code == 0, r.output
    up_out = json.loads(r.output)
    assert [p["addr"].startswith("127.1.") for p in up_out["peers"]] == [True, True]
    assert "key" not in r.output
    sess = tmp_path / "home" / "mesh" / "session.json"
    assert os.stat(sess).st_mode & 0o777 == 0o600
    r = run(app, ["mesh", "status", *srv, "--json"])
    rows = json.loads(r.output)
    assert [row["worker_alive"] for row in rows] == [True, True]
    ps = [device(fleet, s).shell("ps -A -o args | grep -c '[n]c -L'", timeout=10,
                                 check=False).stdout.strip() for s in fleet.serials]
    assert ps == ["1", "1"]                        # the first `up`'s listener was stopped
    r = run(app, ["mesh", "results", *srv])
    assert r.exit_code == 0 and "no mesh jobs" in r.output
    r = run(app, ["mesh", "logs", *srv])
    assert "worker listening on" in r.output
    r = run(app, ["mesh", "down", *srv])
    assert r.exit_code == 0 and r.output.count("stopped, removed") == 2
    assert all(not row["present"] for row in control.status(
        [device(fleet, s) for s in fleet.serials]))


# ---------------------------------------------------------------- mode single (done-when 1)
def test_single_story_is_made_by_another_phone_while_the_adb_server_is_down(
        fleet_factory, tmp_path):
    """After `mesh up` (orchestrator on X, addresses found from wlan0 as on a phone), the
    adb server is stopped, a picture is taken on X through the fleet's own control, and the
    story is produced for X by the phones' workers; read back once adb is back."""
    fl = fleet_factory(devices=3, profiles=["old_2017", "flagship_2025", "flagship_2025"])
    try:
        devs = [device(fl, s) for s in fl.serials]
        x = devs[0]                                   # old_2017: slowest, so others win bids
        session = control.up(devs, port=adb_server.free_port(31000, 32000), tmp=tmp_path / "p",
                             orchestrator=x.serial,
                             profiles_dir=cheap_profiles(tmp_path / "profiles", n_predict=8))
        assert {p.addr for p in session.peers} == {f"127.1.{int(s.rsplit(':', 1)[1]) >> 8}."
                                                   f"{int(s.rsplit(':', 1)[1]) & 255}"
                                                   for s in fl.serials}
        assert control.status_one(x)["pids"]["orchestrator"]["alive"]
        adb_server.kill_server(fl.adb_port)
        fl.snap(x.serial, CHELSEA, name="IMG_$(touch pwned)_1.png")
        time.sleep(1)
        deadline = time.monotonic() + 120
        adb_server.start_server(fl.adb_port)
        # adb is back only to read; wait for the job to finish on the phone
        for s in fl.serials:
            adb_server.request_sync(fl.adb_port, f"host:connect:{s}")
        for s in fl.serials:
            fl.wait_adb_state(s, "device", timeout=30)
        jobs = []
        while time.monotonic() < deadline:
            jobs = control.results_one(x)
            if jobs and jobs[0].get("state", "").startswith(("done", "failed")):
                break
            time.sleep(1)
        assert len(jobs) == 1, (jobs, control.logs_one(x))
        job = jobs[0]
        assert job["state"] == "done", (job, [print(control.logs_one(d)) for d in devs])
        assert job["source"].endswith("IMG_$(touch pwned)_1.png")
        assert any(w in " ".join(job["labels"]) for w in CAT_WORDS), job
        assert job["story"], job
        names = {p.name: p.serial for p in session.peers}
        assert job["classify.who"] != "p1" or job["generate.who"] != "p1", job
        assert names[job["classify.who"]] != x.serial or names[job["generate.who"]] != x.serial
        assert "pwned" not in " ".join(canaries(devs)).replace(CANARY, "")
        # the winner goes off the Wi-Fi (adb stays): the next picture is done by another
        winner = names[job["classify.who"]]
        assert winner != x.serial
        fl.wifi(winner, False)
        try:
            fl.snap(x.serial, COFFEE, name="IMG_2.png")
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                jobs = control.results_one(x)
                if len(jobs) == 2 and jobs[1].get("state", "").startswith(("done", "failed")):
                    break
                time.sleep(1)
            second = jobs[1]
            assert second["state"] == "done", (second, [print(control.logs_one(d)) for d in devs])
            assert names[second["classify.who"]] != winner, second
            assert names[second["generate.who"]] != winner
            assert any(w in " ".join(second["labels"]) for w in COFFEE_WORDS), second
        finally:
            fl.wifi(winner, True)
    finally:
        try:
            control.down([device(fl, s) for s in fl.serials])
        finally:
            fleet_factory.release(fl)
