"""Mesh mode `p2p` and its faults on a virtual fleet: several phones orchestrating their own
pictures over the same workers, reservations that are the workers' slot leases (renewed by
the worker while a program runs), workers and orchestrators killed mid-task, and the audits
(adbflow/mesh/audit.py): no slot double-booked in any worker's lease log, every picture
done exactly once.

Why stand-in programs (control.up(programs=...)): these tests are about who holds which
slot when, so each task is a `sleep` of a known length (a real model's time would only add
noise on a shared 2-core machine); the stand-in checks its input arrived and prints the
label_image format, the story one echoes the prompt as data. The real models run in
test_mesh_fleet.py (mode single) and bench/mesh.py.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import pytest
from fleet_helpers import CHELSEA, cheap_profiles, device, module_fleet

from adbflow.fleet import adb_server
from adbflow.mesh import audit, control
from adbflow.mesh.control import MeshMode, MeshSettings
from adbflow.mesh.wire import Kind, Peer

M = control.MESH_DIR
fleet = module_fleet(4, ["midrange_2023"])


def stand_ins(classify_s: float = 1.0, generate_s: float = 1.0) -> dict[str, list[str]]:
    """classify: fails unless the image arrived, then the label_image output format;
    generate: the prompt ($1) printed as data (never evaluated: it is an argument)."""
    return {"classify": ["sh", "-c", "test -s /data/local/tmp/received-image || exit 3; "
                         f"sleep {classify_s}; echo 'INFO: 0.90: 285 Egyptian cat'", "sh"],
            "generate": ["sh", "-c", f"sleep {generate_s}; printf 'story: %s\\n' \"$1\"", "sh",
                         control.PROMPT_MARK]}


def mesh_up(fl, tmp, orchestrators: Sequence[str], *, settings: MeshSettings | None = None,
            **programs_kw) -> tuple[control.MeshSession, list]:
    devs = [device(fl, s) for s in fl.serials]
    session = control.up(devs, port=adb_server.free_port(36000, 37000), tmp=tmp / "push",
                         mode=MeshMode.P2P, orchestrators=orchestrators,
                         settings=settings or MeshSettings(ttl_ds=150, renew_ds=50, jobs=2),
                         programs=stand_ins(**programs_kw),
                         profiles_dir=cheap_profiles(tmp / "profiles", n_predict=8))
    return session, devs


@pytest.fixture
def p2p_tmp(fleet, tmp_path):
    yield tmp_path
    control.down([device(fleet, s) for s in fleet.serials])


def procs(dev) -> list[tuple[int, int, str]]:
    rows = []
    for line in dev.shell("ps -A -o pid,ppid,args", timeout=60).stdout.splitlines()[1:]:
        f = line.split(None, 2)
        if len(f) >= 2 and f[0].isdigit() and f[1].isdigit():
            rows.append((int(f[0]), int(f[1]), f[2] if len(f) > 2 else ""))
    return rows


def kill_tree(dev, roots: Callable[[list[tuple[int, int, str]]], set[int]]) -> set[int]:
    """kill -9 the processes `roots` picks from the phone's ps and all their descendants
    (twice: a process forked between listing and killing is caught the second time)."""
    killed: set[int] = set()
    for _ in range(2):
        rows = procs(dev)
        tree = roots(rows)
        if not tree:
            break
        grew = True
        while grew:
            kids = {p for p, pp, _ in rows if pp in tree} - tree
            tree |= kids
            grew = bool(kids)
        dev.shell("kill -9 " + " ".join(str(p) for p in sorted(tree)) + " 2>/dev/null; true",
                  timeout=20)
        killed |= tree
    return killed


def pid_of(dev, role: str) -> int:
    return int(dev.shell(f"cat {M}/pids/{role}", timeout=60).stdout.strip())


def kill_role(dev, role: str) -> set[int]:
    """The whole orchestrator (role orchestrator) or worker (listener and handlers)."""
    root = pid_of(dev, role)
    return kill_tree(dev, lambda rows: {root} if any(p == root for p, _, _ in rows) else set())


def kill_handlers(dev) -> set[int]:
    """The worker's running handlers (and their programs), not its listener."""
    root = pid_of(dev, "worker")
    return kill_tree(dev, lambda rows: {p for p, pp, _ in rows if pp == root})


def lease_log(dev) -> list[audit.LeaseEvent]:
    return control.lease_log_one(dev)


def wait_for(pred: Callable[[], object], timeout: float, poll: float = 0.3, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or pred}")


def resumed(dev) -> int:
    """How many jobs the phone's orchestrator resumed after a restart (its log says so)."""
    out = dev.shell(f"grep -c 'resumed after a restart' {M}/log/mesh.log", timeout=60,
                    check=False).stdout.strip()
    return int(out) if out.isdigit() else 0


def jobs_of(devs) -> dict[str, list[dict]]:
    return {d.serial: control.results_one(d) for d in devs}


def all_final(devs, want: int) -> bool:
    jobs = [j for js in jobs_of(devs).values() for j in js]
    return len(jobs) >= want and all(j.get("state", "").startswith(("done", "failed"))
                                     for j in jobs)


def logs(devs) -> str:
    return "\n".join(f"== {d.serial}\n{control.logs_one(d, lines=80)}" for d in devs)


# ------------------------------------------------------------------ lease renewal (worker)
@pytest.mark.slow   # default suite: the burst test kills workers and orchestrators
def test_a_task_longer_than_its_lease_keeps_it_renewed_by_the_worker(fleet, p2p_tmp):
    """renew_ds 50 (5 s leases), an 8 s program: the worker renews while it runs (another
    orchestrator's RESERVE is refused after the first lease would have expired), the output
    counts, the slot is free at once after; a reservation never used expires by itself."""
    import threading
    session, devs = mesh_up(fleet, p2p_tmp, orchestrators=[fleet.serials[0]], classify_s=8)
    me, other, w = Peer("p3", session.key), Peer("p4", session.key), session.peers[1]

    def ask(peer: Peer, kind: Kind, arg: str, body: bytes = b"", timeout: float = 60):
        return peer.exchange(w.addr, w.port, peer.make(kind, w.name, arg, body),
                             peers={w.name}, timeout=timeout)
    g = ask(me, Kind.RESERVE, "classify,50,long")
    assert g.kind is Kind.GRANT
    tok = int(g.arg.split(",")[1])
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(r=ask(me, Kind.TASK, f"classify,{tok},long",
                                                         CHELSEA.read_bytes(), timeout=90)))
    t0 = time.monotonic()
    t.start()
    time.sleep(6.5)                          # past the 5 s lease: alive only if renewed
    r = ask(other, Kind.RESERVE, "classify,50,steal")
    assert r.kind is Kind.REFUSE and r.arg == "classify,busy", r
    t.join(90)
    assert out["r"].arg == f"classify,{tok},ok" and b"Egyptian cat" in out["r"].body
    assert time.monotonic() - t0 >= 8
    evs = lease_log(devs[1])
    mine = [h for h in audit.holds(evs)["classify"] if h.token == tok]
    assert mine and mine[0].released and mine[0].end_ds - mine[0].start_ds >= 80
    renews = [e for e in evs if e.verb is audit.LeaseVerb.RENEW and e.token == tok]
    assert len(renews) >= 3, renews       # at the program's start, then every 1.6 s
    g2 = ask(other, Kind.RESERVE, "classify,150,next")   # free at once after the finish
    assert g2.kind is Kind.GRANT and int(g2.arg.split(",")[1]) == tok + 1
    # never used (an orchestrator that died after the GRANT): refused until its 15 s are
    # over on the worker's clock, then granted with the next token
    assert ask(me, Kind.RESERVE, "classify,30,x").kind is Kind.REFUSE
    g3 = wait_for(lambda: (lambda m: m if m.kind is Kind.GRANT else None)(
        ask(me, Kind.RESERVE, "classify,30,late")), 60, poll=1.0, what="the expiry")
    assert int(g3.arg.split(",")[1]) == tok + 2
    hs = {h.token: h for h in audit.holds(lease_log(devs[1]))["classify"]}
    assert not hs[tok + 1].released and hs[tok + 2].start_ds >= hs[tok + 1].end_ds
    assert audit.double_bookings(lease_log(devs[1])) == []


# -------------------------------------------------------------- a worker killed mid-task
@pytest.mark.slow   # default suite: the burst test kills workers and orchestrators
def test_a_worker_killed_mid_task_its_lease_expires_then_the_orchestrator_gets_it_again(
        fleet, p2p_tmp):
    """p1 orchestrates; every classify slot but p2's is reserved by a laptop peer, so the
    job has to go to p2. p2's handler and program are killed mid-classify: no answer, the
    orchestrator bids again, p2 says busy until the dead task's lease expires (5 s on p2's
    clock, nobody renews it), then grants a larger token; the job is done once, on p2."""
    session, devs = mesh_up(fleet, p2p_tmp, orchestrators=[fleet.serials[0]], classify_s=4)
    lap = Peer("p4", session.key)
    held = []
    for w in (session.peers[0], session.peers[2], session.peers[3]):
        g = lap.exchange(w.addr, w.port, lap.make(Kind.RESERVE, w.name, "classify,600,block"),
                         peers={w.name})
        assert g.kind is Kind.GRANT
        held.append((w, g.arg.split(",")[1]))
    fleet.snap(fleet.serials[0], CHELSEA, name="IMG_w1.jpg")
    p2 = devs[1]
    first = wait_for(lambda: [e for e in lease_log(p2) if e.verb is audit.LeaseVerb.RENEW],
                     240, what="the classify program running on p2")[0]
    assert kill_handlers(p2)
    job = wait_for(lambda: [j for j in control.results_one(devs[0])
                            if j.get("state", "").startswith(("done", "failed"))],
                   300, what="the job to finish")
    assert len(job) == 1 and job[0]["state"] == "done", (job, logs(devs))
    assert job[0]["classify.who"] == "p2"
    hs = audit.holds(lease_log(p2))["classify"]
    dead = [h for h in hs if h.token == first.token][0]
    assert not dead.released                 # killed: nobody released it, it expired
    later = [h for h in hs if h.token > first.token and h.owner.startswith("mesh.p1.")]
    assert later and later[0].start_ds >= dead.end_ds and later[0].released
    assert audit.double_bookings(lease_log(p2)) == []
    assert "no valid answer from p2" in control.logs_one(devs[0], lines=200)
    for w, tok in held:
        lap.exchange(w.addr, w.port, lap.make(Kind.RELEASE, w.name, f"classify,{tok},block"),
                     peers={w.name})


# ----------------------------------------------- an orchestrator killed mid-task, restart
@pytest.mark.slow   # default suite: the burst test kills workers and orchestrators
def test_an_orchestrator_killed_mid_task_resumes_its_pictures_once_on_restart(fleet, p2p_tmp):
    session, devs = mesh_up(fleet, p2p_tmp, orchestrators=[fleet.serials[0]], classify_s=3)
    x = devs[0]
    for i in range(2):
        fleet.snap(fleet.serials[0], CHELSEA, name=f"IMG_o{i}.jpg")
    wait_for(lambda: sum(1 for d in devs for e in lease_log(d)
                         if e.verb is audit.LeaseVerb.RENEW) >= 1, 240, what="a task running")
    kill_role(x, "orchestrator")
    time.sleep(1)
    # a picture taken while it is dead is new on restart
    fleet.snap(fleet.serials[0], CHELSEA, name="IMG_o2.jpg")
    assert not control.status_one(x)["pids"]["orchestrator"]["alive"]
    control.restart_one(x)
    wait_for(lambda: all_final([x], 3), 480, what="3 jobs final")
    jobs = control.results_one(x)
    taken = [f"/storage/emulated/0/DCIM/Camera/IMG_o{i}.jpg" for i in range(3)]
    a = audit.pictures_done_once(taken, jobs)
    assert a.done_once == taken and not a.repeated, (jobs, logs(devs))
    assert resumed(x)
    for d in devs:
        assert audit.double_bookings(lease_log(d)) == []


# --------------------------------------------------- done-when (3): bursts, kills, audits
def uptime_ds(dev) -> int:
    up = dev.shell("cat /proc/uptime", timeout=60).stdout.split()[0]
    whole, _, frac = up.partition(".")
    return int(whole) * 10 + int((frac or "0")[0])


def running_tasks(devs) -> list[int]:
    """Indexes of the devices whose lease log shows a task running now: renewed, neither
    ended nor expired (a killed task's hold stays in the log, expired)."""
    out = []
    for i, d in enumerate(devs):
        evs = lease_log(d)
        renewed = {(e.slot, e.token) for e in evs if e.verb is audit.LeaseVerb.RENEW}
        now = uptime_ds(d)
        if any((h.slot, h.token) in renewed and not h.released and h.end_ds > now
               for hs in audit.holds(evs).values() for h in hs):
            out.append(i)
    return out


def burst_run(fl, devs, session, *, orchestrators: int, bursts: int, per_burst: int,
              kills: Sequence[tuple[str, int]], timeout: float) -> dict:
    """Bursts of pictures on every orchestrating phone at once; after each burst, the
    scripted kills ((role, device index)), restarts, then the audits."""
    taken: dict[str, list[str]] = {fl.serials[i]: [] for i in range(orchestrators)}
    kill_plan = list(kills)
    killed: list[tuple[str, int]] = []
    for b in range(bursts):
        for i in range(orchestrators):
            for k in range(per_burst):
                name = f"IMG_b{b}_{k}.jpg"
                fl.snap(fl.serials[i], CHELSEA, name=name)
                taken[fl.serials[i]].append(f"/storage/emulated/0/DCIM/Camera/{name}")
        # mid-burst: kill what the plan says, where work runs: a worker with a task
        # running (renewed, not finished), an orchestrator with jobs in flight
        now = kill_plan[:2]
        del kill_plan[:2]
        for n, (role, idx) in enumerate(now):
            if role == "worker":
                busy = wait_for(lambda: running_tasks(devs), 240, poll=0.2, what="a task running")
                idx = busy[0] if busy[0] < len(devs) else idx
                now[n] = (role, idx)
                kill_role(devs[idx], "worker")
            else:
                wait_for(lambda: devs[idx].shell(f"ls {M}/tmp | grep -c '^active-'", timeout=60,
                                                 check=False).stdout.strip() not in ("", "0"),
                         240, poll=0.2, what="jobs in flight")
                kill_role(devs[idx], "orchestrator")
            killed.append(now[n])
        time.sleep(2)
        for _role, idx in now:
            control.restart_one(devs[idx])
    want = sum(len(v) for v in taken.values())
    wait_for(lambda: all_final(devs[:orchestrators], want), timeout, poll=1.0,
             what=f"{want} pictures final")
    jobs = jobs_of(devs[:orchestrators])
    per_phone = {s: audit.pictures_done_once(taken[s], jobs[s]) for s in taken}
    bookings = {d.serial: audit.double_bookings(lease_log(d)) for d in devs}
    return {"taken": taken, "audit": per_phone, "bookings": bookings, "jobs": jobs,
            "killed": killed}


def check_burst(res: dict, devs) -> None:
    for s, a in res["audit"].items():
        assert a.done_once == res["taken"][s] and not a.repeated, (s, a, logs(devs))
    assert all(v == [] for v in res["bookings"].values()), res["bookings"]
    # the kills hit running work: some hold ended by expiry (a killed task), some job
    # resumed (a killed orchestrator), work spread over several workers
    ended_by_expiry = [h for d in devs for hs in audit.holds(lease_log(d)).values()
                       for h in hs if not h.released]
    assert ended_by_expiry
    who = {j.get("classify.who") for js in res["jobs"].values() for j in js}
    assert len(who) >= 2, who
    orchs = {i for role, i in res["killed"] if role == "orchestrator"}
    assert any(resumed(devs[i]) for i in orchs), logs(devs)


def test_p2p_three_orchestrators_bursts_and_kills_no_double_booking_each_picture_once(
        fleet, p2p_tmp):
    """The default-suite size: 4 phones, 3 orchestrating, 2 bursts of 2 pictures on each
    of the 3 at once, an orchestrator and a worker killed mid-burst (then restarted)."""
    session, devs = mesh_up(fleet, p2p_tmp, orchestrators=fleet.serials[:3], classify_s=1.5,
                            generate_s=1.0)
    res = burst_run(fleet, devs, session, orchestrators=3, bursts=2, per_burst=2,
                    kills=[("orchestrator", 1), ("worker", 3)], timeout=480)
    check_burst(res, devs)


@pytest.mark.slow
def test_p2p_done_when_3_three_orchestrators_eight_workers_many_kills(fleet_factory, tmp_path):
    """Done-when (3) at size: 8 phones working, 3 of them orchestrating, 3 bursts of 4
    pictures on all 3 at once, orchestrators and workers killed after every burst."""
    fl = fleet_factory(devices=8, profiles=["midrange_2023"])
    try:
        session, devs = mesh_up(fl, tmp_path, orchestrators=fl.serials[:3], classify_s=2.0,
                                generate_s=1.5)
        res = burst_run(fl, devs, session, orchestrators=3, bursts=3, per_burst=4,
                        kills=[("orchestrator", 0), ("worker", 5), ("worker", 6),
                               ("orchestrator", 2), ("orchestrator", 1), ("worker", 3)],
                        timeout=900)
        check_burst(res, devs)
    finally:
        try:
            control.down([device(fl, s) for s in fl.serials])
        finally:
            fleet_factory.release(fl)


# --------------------------------------------------- replay window: shell rule == Python
def test_the_shell_replay_window_is_the_python_one(fleet, p2p_tmp):
    from adbflow.mesh import wire
    devs = [device(fleet, s) for s in fleet.serials]
    session = control.up(devs, port=adb_server.free_port(36000, 37000), tmp=p2p_tmp / "push",
                         profiles_dir=cheap_profiles(p2p_tmp / "profiles", n_predict=8))
    p = Peer("p2", session.key)
    seq = [3, 1, 3, 2, 70, 6, 7, 7, 69, 5, 71]
    raws = []
    for c in seq:
        p.counter = c - 1
        raws.append(p.make(Kind.BID_REQUEST, "p1", "classify"))
    out = devs[0].shell(f"M={M}; ME=p1; MESH_ROLE=t; . $M/wire.sh; for i in {' '.join('x' * len(seq))}; "
                        "do mesh_recv; echo \"rc=$? $R_WHY\"; done", timeout=60,
                        stdin=b"".join(raws)).stdout.split()
    shell = [w == "rc=0" for w in out if w.startswith("rc=")]
    g = wire.ReplayGuard()
    assert shell == [g.accept("p2", c) for c in seq]
    assert shell.count(False) >= 3


# ------------------------------------ done-when (4): laptop `watch` + phone orchestrators
def test_laptop_watch_and_phone_orchestrators_on_the_same_phones_process_each_picture_once(
        fleet, p2p_tmp):
    """A laptop-side `watch` (claims on) and the orchestrators of p1 and p2, over the same
    phones at once: every picture is processed by exactly one of them, the other records
    it done elsewhere (the phone: done-elsewhere with the laptop's result; the laptop:
    skipped with the phone's). The phone computes the laptop's claim key (same picture,
    same name) - else both would process it."""
    import threading

    from adbflow.device import AdbServer, Inventory
    from adbflow.runtime.claims import key_of
    from adbflow.runtime.pipeline import Pipeline, PipelineConfig
    session, devs = mesh_up(fleet, p2p_tmp, orchestrators=fleet.serials[:2], classify_s=1.0)
    profiles = cheap_profiles(p2p_tmp / "lp", n_predict=8)
    pipe = Pipeline(PipelineConfig(data_dir=p2p_tmp / "data", profiles_dir=profiles,
                                   retry_wait_s=0.2), Inventory([AdbServer(port=fleet.adb_port)]))
    errors: list[BaseException] = []

    def watch() -> None:
        try:
            pipe.watch(poll_s=0.5, refresh_s=1.0)
        except BaseException as exc:       # noqa: BLE001 - reported by the test
            errors.append(exc)
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        time.sleep(4)                      # both sides have listed the folders (baseline)
        taken = []
        for k in range(2):
            for i in (0, 1, 2):            # phone 3 (index 2) has no orchestrator of its own
                name = f"IMG_lw{k}_{i}.jpg"
                fleet.snap(fleet.serials[i], CHELSEA, name=name)
                taken.append((fleet.serials[i], f"/storage/emulated/0/DCIM/Camera/{name}"))
            time.sleep(1.5)

        def laptop_jobs():
            return {(j.serial, j.path): j for j in pipe.journal.jobs(limit=None)}

        def settled() -> bool:
            lj = laptop_jobs()
            phone = {(d.serial, j.get("source")): j for d in devs[:2]
                     for j in control.results_one(d)}
            for key in taken:
                lap = lj.get(key)
                ph = phone.get(key)
                if key[0] in fleet.serials[:2] and (ph is None or ph.get("state") in
                                                    ("pending", None)):
                    return False
                if lap is None or lap.state not in ("done", "skipped", "failed"):
                    return False
            return True
        def where_things_are() -> str:
            lj = laptop_jobs()
            phone = {(d.serial, j.get("source")): j.get("state") for d in devs[:2]
                     for j in control.results_one(d)}
            return "\n".join(f"{k}: laptop {getattr(lj.get(k), 'state', None)} "
                             f"{getattr(lj.get(k), 'error', None)!r:.200} phone {phone.get(k)}"
                             for k in taken) + "\n" + logs(devs)
        try:
            wait_for(settled, 480, poll=1.0, what="every picture settled on both sides")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{where_things_are()}") from None
        assert not errors, errors
        lj = laptop_jobs()
        phone = {(d.serial, j.get("source")): (d, j) for d in devs[:2]
                 for j in control.results_one(d)}
        won = {"laptop": 0, "phone": 0}
        for key in taken:
            lap = lj[key]
            processed = [lap.state == "done"]
            if key in phone:
                d, ph = phone[key]
                processed.append(ph["state"] == "done")
                assert ph["state"] in ("done", "done-elsewhere"), ph
                claim = d.shell(f"cat {M}/jobs/{ph['job']}/claim", timeout=60).stdout.strip()
                assert claim == key_of(lap), (claim, lap)
                won["phone" if ph["state"] == "done" else "laptop"] += 1
            assert processed.count(True) == 1, (key, lap.state, lap.error, phone.get(key))
            if lap.state == "skipped":
                assert lap.result["elsewhere"]["owner"].startswith("mesh.p"), lap.result
        for d in devs:
            assert audit.double_bookings(lease_log(d)) == []
        print("processed by", won)
    finally:
        pipe.stop_event.set()
        t.join(60)
        pipe.close()
