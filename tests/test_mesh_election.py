"""The orchestrator election (issue 16, done-when 2): the pure rules (adbflow/mesh/election.py)
through their cases, the same rules in mksh (device_scripts/mesh/elect.sh, cost.sh) on the
same inputs, and on a virtual fleet: `mesh up` with no phone named elects one leader; the
leader's mesh processes killed (adb stays), another phone takes the role within the lease
time, the election is logged with its bids, and a picture taken then is processed once.

Why the shell rules run here too: the phones run the mksh version; a twin that only agrees
with itself would not catch a quoting or an arithmetic slip in elect.sh.
"""
from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
from fleet_helpers import CAT_WORDS, CHELSEA, COFFEE, cheap_profiles, device

from adbflow.fleet import adb_server
from adbflow.mesh import control, election
from adbflow.mesh.election import (
    Answer,
    Beat,
    ElectionTiming,
    PhoneState,
    RoleBid,
    Verdict,
    heartbeat,
    vote,
)
from adbflow.mesh.wire import Kind, Peer
from adbflow.paths import DEVICE_SCRIPTS_DIR

T = ElectionTiming(lease_ds=100, beat_ds=20, poll_ds=5, claim_ds=600)
MESH = DEVICE_SCRIPTS_DIR / "mesh"


# ---------------------------------------------------------------- the pure decision
def test_battery_and_charging_weigh_more_than_speed():
    fast_unplugged = RoleBid("p1", speed_ms=1000, level=90, charging=False)
    slow_charging = RoleBid("p2", speed_ms=3000, level=90, charging=True)
    assert election.winner([fast_unplugged, slow_charging]) == "p2"
    # all charging: speed decides; same speed: the fuller battery
    assert election.winner([RoleBid("p1", 1000, 50, True), RoleBid("p2", 3000, 50, True)]) == "p1"
    assert election.winner([RoleBid("p1", 1000, 30, True), RoleBid("p2", 1000, 90, True)]) == "p2"
    assert election.role_score(1000, 100, True) == 1000
    assert election.role_score(1000, 100, False) == 4000
    assert election.role_score(1000, 0, False) == 8000


def test_ties_go_to_the_lower_name_and_no_bids_elect_nobody():
    same = [RoleBid("p3", 500, 80, True), RoleBid("p2", 500, 80, True), RoleBid("p9", 500, 80, True)]
    assert election.winner(same) == "p2"
    assert election.winner([]) is None


def test_a_voter_grants_one_vote_per_term():
    s = PhoneState(term=3, leader=None, voted=None, last_beat_ds=0)
    kw = dict(me="p3", my_score=9000, now_ds=1000, timing=T)
    v, s2 = vote(s, term=4, candidate="p1", candidate_score=100, **kw)
    assert v is Verdict.GRANTED and (s2.term, s2.voted, s2.last_beat_ds) == (4, "p1", 1000)
    v, _ = vote(s2, term=4, candidate="p2", candidate_score=50, **kw)
    assert v is Verdict.LEADER_ALIVE                  # loyal to its fresh vote
    v, _ = vote(s2, term=4, candidate="p2", candidate_score=50,
                **{**kw, "now_ds": 1000 + T.sticky_ds})
    assert v is Verdict.VOTED_OTHER                   # and still one vote per term
    v, _ = vote(s2, term=4, candidate="p1", candidate_score=100, **kw)   # the same, again
    assert v is Verdict.GRANTED
    # loyal to its vote for the lease minus a beat: a later candidate is refused, then not
    v, _ = vote(s2, term=5, candidate="p2", candidate_score=50, now_ds=1000 + T.sticky_ds - 1,
                me="p3", my_score=9000, timing=T)
    assert v is Verdict.LEADER_ALIVE
    v, s3 = vote(s2, term=5, candidate="p2", candidate_score=50, now_ds=1000 + T.sticky_ds,
                 me="p3", my_score=9000, timing=T)
    assert v is Verdict.GRANTED and s3.voted == "p2"
    assert not election.may_stand(s3, now_ds=1000 + 2 * T.sticky_ds - 1, timing=T)


def test_a_candidate_yields_its_vote_to_a_better_candidate_unless_it_has_won():
    cand = PhoneState(term=6, leader=None, voted="p3", last_beat_ds=0)
    kw = dict(term=6, candidate="p2", candidate_score=100, me="p3", my_score=900, now_ds=500,
              timing=T)
    v, s2 = vote(cand, **kw)
    assert v is Verdict.GRANTED and s2.voted == "p2"
    won = PhoneState(term=6, leader="p3", voted="p3", last_beat_ds=0)   # lease lapsed, still won
    assert vote(won, **kw)[0] is Verdict.VOTED_OTHER
    assert vote(cand, **{**kw, "candidate_score": 901})[0] is Verdict.BETTER_BID


def test_a_lower_term_is_refused_and_a_higher_one_adopted_even_when_refused():
    s = PhoneState(term=7, leader=None, voted="p2", last_beat_ds=0)
    v, s2 = vote(s, term=6, candidate="p1", candidate_score=1, me="p3", my_score=9, now_ds=500,
                 timing=T)
    assert v is Verdict.STALE_TERM and s2 == s
    v, s2 = vote(s, term=9, candidate="p1", candidate_score=50, me="p3", my_score=9,
                 now_ds=T.sticky_ds, timing=T)
    assert v is Verdict.BETTER_BID and (s2.term, s2.voted, s2.leader) == (9, None, None)


def test_a_voter_stays_loyal_to_a_live_leader_for_lease_minus_beat():
    s = PhoneState(term=4, leader="p1", voted="p1", last_beat_ds=1000)
    kw = dict(term=9, candidate="p2", candidate_score=1, me="p3", my_score=99, timing=T)
    assert vote(s, now_ds=1000 + T.sticky_ds - 1, **kw)[0] is Verdict.LEADER_ALIVE
    assert vote(s, now_ds=1000 + T.sticky_ds, **kw)[0] is Verdict.GRANTED
    # the leader itself asking again (restarted) is not refused for loyalty to itself
    assert vote(s, now_ds=1001, **{**kw, "candidate": "p1"})[0] is Verdict.GRANTED


def test_a_worse_candidate_is_refused_by_a_better_voter_and_ties_by_name():
    s = PhoneState(term=1)
    kw = dict(term=2, now_ds=0, timing=T)
    assert vote(s, candidate="p2", candidate_score=500, me="p1", my_score=499, **kw)[0] \
        is Verdict.BETTER_BID
    assert vote(s, candidate="p2", candidate_score=500, me="p1", my_score=500, **kw)[0] \
        is Verdict.BETTER_BID
    assert vote(s, candidate="p1", candidate_score=500, me="p2", my_score=500, **kw)[0] \
        is Verdict.GRANTED


def test_heartbeats_follow_the_highest_term_and_tell_an_old_leader_to_step_down():
    s = PhoneState(term=5, leader="p1", voted="p1", last_beat_ds=10)
    b, s2 = heartbeat(s, term=5, leader="p1", now_ds=30)
    assert b is Beat.OK and s2.last_beat_ds == 30
    b, s3 = heartbeat(s, term=4, leader="p2", now_ds=30)
    assert b is Beat.STALE and s3 == s                          # p2 must step down
    b, s4 = heartbeat(s, term=5, leader="p2", now_ds=30)
    assert b is Beat.CONFLICT and s4 == s
    b, s5 = heartbeat(s, term=6, leader="p2", now_ds=30)
    assert b is Beat.OK and (s5.term, s5.leader, s5.voted) == (6, "p2", "p2")


def test_the_best_ranked_follower_stands_first():
    s = PhoneState(term=2, leader="p1", last_beat_ds=1000)
    due = [r for r in range(3) if election.candidacy_due(
        s, now_ds=1000 + T.lease_ds + 2 * T.beat_ds, rank=r, timing=T)]
    assert due == [0, 1]
    assert election.successor_order({"p1": 5, "p2": 900, "p3": 40}, leader="p1") == ["p3", "p2"]


def test_a_candidate_needs_a_majority_of_the_whole_mesh_and_no_better_bid():
    g = Answer(3, Verdict.GRANTED)
    assert election.elected(3, 3, {"p2": g, "p3": None})                 # 2 of 3
    assert not election.elected(4, 3, {"p2": g, "p3": None, "p4": None})  # 2 of 4
    assert not election.elected(3, 3, {"p2": g, "p3": Answer(3, Verdict.BETTER_BID)})
    assert not election.elected(3, 3, {"p2": g, "p3": Answer(4, Verdict.STALE_TERM)})
    assert election.majority(1) == 1 and election.majority(2) == 2 and election.majority(5) == 3


def test_timing_refuses_a_lease_shorter_than_two_beats():
    with pytest.raises(ValueError):
        ElectionTiming(lease_ds=30, beat_ds=20)
    assert T.role_ttl_ds < T.sticky_ds < T.lease_ds      # the role lapses before loyalty


def _shell_funcs(path: Path, names: list[str]) -> str:
    """The named one-block functions of a device script (`name() {` ... the next `^}`)."""
    text, out = path.read_text(), []
    for n in names:
        m = re.search(rf"(?ms)^{n}\(\) {{.*?^}}$|^{n}\(\) {{[^\n]*}}$", text)
        assert m, n
        out.append(m.group(0))
    return "\n".join(out)


def test_the_shell_rules_decide_as_the_python_twin(tmp_path):
    """elect.sh's vote/heartbeat/due rules and cost.sh's score, run by mksh on the cases
    above plus a grid, compared with election.py case by case."""
    mksh = Path("/usr/bin/mksh")
    if not mksh.exists():
        pytest.fail("mksh is needed (the virtual fleet runs it too)")
    lib = (_shell_funcs(MESH / "elect.sh", ["_el_better", "_el_vote_rule", "_el_beat_rule",
                                             "_el_due"])
           + "\n" + _shell_funcs(MESH / "cost.sh", ["_role_score"]))
    cases, expect = [], []
    names = ["p1", "p2", "p3"]
    for term in (3, 4, 5):
        for leader in (None, "p1", "p2", "p3"):
            for voted in (None, "p1", "p2", "p3"):
                for age in (0, T.sticky_ds - 1, T.sticky_ds, 500):
                    for cand, cs in (("p1", 100), ("p2", 300), ("p2", 200)):
                        s = PhoneState(4, leader, voted, 1000 - age)
                        v, _ = vote(s, term=term, candidate=cand, candidate_score=cs, me="p3",
                                    my_score=200, now_ds=1000, timing=T)
                        cases.append(f"_el_vote_rule {term} {cand} {cs} 4 {leader or '-'} "
                                     f"{voted or '-'} {age} {T.sticky_ds} p3 200")
                        expect.append(v.value)
    for term in (3, 4, 5):
        for leader in names:
            for mine in (None, "p1", "p2"):
                b, _ = heartbeat(PhoneState(4, mine), term=term, leader=leader, now_ds=0)
                cases.append(f"_el_beat_rule {term} {leader} 4 {mine or '-'}")
                expect.append(b.value)
    for rank in range(3):
        for now in (1099, 1100, 1119, 1120, 1139, 1140, 1179, 1180):
            d = election.candidacy_due(PhoneState(1, "p1", None, 1000), now_ds=now, rank=rank,
                                       timing=T)
            cases.append(f"_el_due {now} 1000 {T.lease_ds} {T.beat_ds} {rank} && echo due || echo wait")
            expect.append("due" if d else "wait")
    for sp, lv, ch in ((1000, 100, 1), (1000, 100, 0), (3333, 37, 0), (120000, 5, 0), (7, 99, 1)):
        cases.append(f"_role_score {sp} {lv} {ch}")
        expect.append(str(election.role_score(sp, lv, bool(ch))))
    script = tmp_path / "rules.sh"
    script.write_text(lib + "\n" + "\n".join(cases) + "\n")
    out = subprocess.run([str(mksh), str(script)], capture_output=True, text=True, timeout=60)
    assert out.stderr == ""
    got = out.stdout.split()
    assert len(got) == len(expect)
    bad = [(c, g, e) for c, g, e in zip(cases, got, expect) if g != e]
    assert not bad, bad[:10]


LOG = """1700000000 p1 elect: elector up (lease 40 ds, heartbeat 8 ds, rank 0)
1700000001 p1 elect: term 1 candidate p1 bids p1=3600/1800/80/1 p2=1200/600/80/1:better-bid p3=none (score/speed_ms/battery%/charging:verdict)
1700000001 p1 elect: term 1 lost: votes 1/3, better bids from p2
1700000002 p2 elect: term 2 candidate p2 bids p2=1200/600/80/1 p1=3600/1800/80/1:granted p3=$(x)/1/1/1:granted (score/speed_ms/battery%/charging:verdict)
1700000002 p2 elect: term 2 leader p2 votes 2/3
"""


def test_the_election_log_is_parsed_strictly():
    es = election.parse_elections(LOG)
    assert [(e.term, e.candidate, e.won) for e in es] == [(1, "p1", False), (2, "p2", True)]
    assert es[1].won_at_s == 1700000002 and es[0].won_at_s is None
    assert es[0].bids["p3"] is None and es[0].verdicts == {"p2": "better-bid"}
    assert "p3" not in es[1].bids              # a malformed bid is not a bid
    assert election.winner(b for b in es[1].bids.values() if b) == "p2"


# ---------------------------------------------------------------- on the fleet
FAST = ElectionTiming(lease_ds=80, beat_ds=15, poll_ds=5, claim_ds=600)
#: what the take-over may exceed the lease by: the fleet's /proc/uptime ticks once a second
#: (the phones' clock for every lease), one elector poll (0.5 s), one vote round of mksh
#: handlers (~0.5 s; 2 s and more when the shared 2-core machine runs a load of 40+)
SLACK_S = 4.0


def _kill_mesh(dev) -> int:
    """Every process the mesh runs on the phone (recorded pids and their process groups),
    SIGKILL, without removing a file: the phone as if its mesh had crashed; adb untouched.
    Returns the phone's wall clock (s) at the kill: the phones' logs use that clock."""
    out = dev.shell(f"M={control.MESH_DIR}; for f in $M/pgid $M/pids/*; do [ -f \"$f\" ] || "
                    "continue; read -r p < \"$f\"; case $p in ''|*[!0-9]*) continue;; esac; "
                    "kill -KILL -- -$p 2>/dev/null; kill -KILL $p 2>/dev/null; done; date +%s",
                    timeout=20).stdout
    return int(out.split()[-1])


def _wait_leader(devs, *, not_on: str | None = None, timeout: float = 30.0,
                 everyone: bool = False):
    """The (term, leader) a majority agrees on (`everyone`: every phone, and only the
    leader runs the orchestrator role), other than `not_on`."""
    deadline = time.monotonic() + timeout
    rows = []
    while time.monotonic() < deadline:
        rows = control.status(devs)
        got = control.leader(rows)
        hosts = [r["name"] for r in rows if r["pids"].get("lead", {}).get("alive")]
        if got and got[1] != not_on and (not everyone or (
                hosts == [got[1]] and all((r.get("term"), r.get("leader")) == got for r in rows))):
            return got, rows
        time.sleep(0.3)
    raise AssertionError(f"no leader: {rows}\n" + "\n".join(control.logs_one(d) for d in devs))


def _wait_jobs(dev, n: int, timeout: float = 90.0, devs=()):
    deadline = time.monotonic() + timeout
    jobs = []
    while time.monotonic() < deadline:
        jobs = control.results_one(dev)
        if len(jobs) >= n and all(j.get("state", "").startswith(("done", "failed")) for j in jobs):
            return jobs
        time.sleep(0.5)
    raise AssertionError(f"jobs not finished: {jobs}\n{control.logs_one(dev, lines=80)}\n"
                         f"{_elog(devs)}")


def _elog(devs) -> str:
    """The election lines of every phone's log, in time order (for failure messages)."""
    lines = [ln for d in devs for ln in _log(d).splitlines() if " elect: " in ln or " lead: " in ln]
    return "\n".join(sorted(lines, key=lambda ln: ln.split(" ", 1)[0]))


def _log(dev) -> str:
    return dev.shell(f"cat {control.MESH_DIR}/log/mesh.log", timeout=20).stdout


@pytest.fixture
def elected_mesh(fleet_factory, tmp_path):
    fl = fleet_factory(devices=3, profiles=["flagship_2025", "midrange_2023", "old_2017"])
    devs = [device(fl, s) for s in fl.serials]
    session = control.up(devs, port=adb_server.free_port(34000, 35000), tmp=tmp_path / "p",
                         elect=FAST, profiles_dir=cheap_profiles(tmp_path / "profiles", n_predict=8))
    try:
        yield fl, devs, session
    finally:
        try:
            control.down(devs)
        finally:
            fleet_factory.release(fl)


def _check_logged_election(devs, names, term, leader) -> election.Election:
    """The winning candidacy is in the leader's log with a bid per answering phone, and the
    Python twin picks the same winner from those bids."""
    log = _log(devs[names.index(leader)])
    won = [e for e in election.parse_elections(log) if e.won and e.term == term]
    assert len(won) == 1, log
    e = won[0]
    assert e.candidate == leader and set(e.bids) == set(names), e
    bids = [b for b in e.bids.values() if b]
    assert election.winner(bids) == leader, e
    scores = re.findall(rf"term {term} candidate {leader} bids (\S+)", log)[0]
    assert int(scores.split("=")[1].split("/")[0]) == e.bids[leader].score   # shell == twin
    return e


def test_no_phone_named_one_leader_then_another_takes_over_within_the_lease(elected_mesh):
    fl, devs, session = elected_mesh
    names = [p.name for p in session.peers]
    serial_of = {p.name: p.serial for p in session.peers}
    # one leader: every phone names it for the same term, and only it runs the role
    (term, leader), rows = _wait_leader(devs, timeout=60, everyone=True)
    _check_logged_election(devs, names, term, leader)

    # the leader's mesh processes die (adb and the phone stay): another takes the role
    dead = devs[names.index(leader)]
    killed_at = _kill_mesh(dead)
    t0 = time.monotonic()
    alive = [d for d in devs if d is not dead]
    (term2, leader2), _ = _wait_leader(devs, not_on=leader, timeout=60)
    seen = time.monotonic() - t0
    assert leader2 != leader and term2 > term
    e = _check_logged_election(devs, names, term2, leader2)
    # the take-over on the phones' clock: the kill to the new leader's `leader ... votes`
    # line (whole seconds: +1 s of rounding); the laptop's view adds its status polls
    assert e.won_at_s is not None
    took = e.won_at_s - killed_at
    print(f"take-over: {took} s on the phones' clock, {seen:.1f} s seen by `mesh status` "
          f"(lease {FAST.lease_ds / 10} s), term {term} {leader} -> term {term2} {leader2}")
    assert took <= FAST.lease_ds / 10 + SLACK_S + 1, f"take-over {took} s\n{_elog(devs)}"
    assert e.bids[leader] is None                      # the dead one did not answer
    # every surviving phone follows the new leader (a heartbeat away)
    deadline = time.monotonic() + 30
    while not all(r.get("leader") == leader2 for r in control.status(alive)):
        assert time.monotonic() < deadline, _elog(devs)
        time.sleep(0.5)
    # `mesh status --json`: term and leader per phone
    from typer.testing import CliRunner

    from adbflow.cli.main import app
    r = CliRunner().invoke(app, ["mesh", "status", "--adb-server", f"127.0.0.1:{fl.adb_port}",
                                 "--json"])
    import json
    cli_rows = json.loads(r.output)
    assert all("term" in row and "leader" in row for row in cli_rows), cli_rows
    got = {row["name"]: row["term"] for row in cli_rows}
    assert got[leader2] >= term2

    # a picture taken now on a phone that is not the new leader: processed once, by the
    # new leader's orchestration, its record and story on the phone that took it
    origin = next(d for d in alive if d.serial != serial_of[leader2])
    fl.snap(origin.serial, CHELSEA, name="IMG_elect_1.png")
    jobs = _wait_jobs(origin, 1, devs=devs)
    assert len(jobs) == 1 and jobs[0]["state"] == "done", jobs
    assert jobs[0]["source"].endswith("IMG_elect_1.png")
    assert any(w in " ".join(jobs[0]["labels"]) for w in CAT_WORDS), jobs
    assert jobs[0]["story"]
    olog = _log(origin)
    print("\n".join(ln for d in devs for ln in _log(d).splitlines() if " elect: term" in ln
                    or "origin: job" in ln or "lead: " in ln))
    assert len(re.findall(r"origin: job 1 done .* by " + leader2, olog)) == 1, olog
    assert len(re.findall(r"origin: job 1 claimed", olog)) == 1, olog
    _forged_election_messages_change_nothing(session, devs, origin, dead_name=leader,
                                             term=term2, leader=leader2)


def test_a_laptop_claim_and_the_elected_mesh_process_each_picture_once(elected_mesh):
    """The elected leader claims a picture with the claim a laptop-side `watch` uses (same
    key at the origin, same record): a picture the laptop already claimed and completed is
    not processed by the mesh (its job: done-elsewhere, with the laptop's owner and result);
    one the mesh processed reads, for the laptop, as done by the mesh (DoneElsewhere: the
    leader's owner, the origin's short result record)."""
    import shlex
    from types import SimpleNamespace

    from adbflow.device import lease
    from adbflow.runtime.claims import DoneElsewhere, PictureClaims, key_of
    fl, devs, session = elected_mesh
    names = [p.name for p in session.peers]
    (term, leader), _ = _wait_leader(devs, timeout=60, everyone=True)
    k = next(i for i, p in enumerate(session.peers) if p.name != leader)
    origin, oname = devs[k], names[k]
    inodes = "ls_v2" in origin.features(timeout=20)     # as the laptop's detector decides

    def laptop_job(path: str, job_id: int) -> SimpleNamespace:
        """The picture as a laptop's watch names it (its stat: size, mtime, inode)."""
        st = origin.stat(path, timeout=20)
        assert st is not None, path
        return SimpleNamespace(path=path, ino=st.ino if inodes else 0, size=st.size,
                               mtime=st.mtime, id=job_id)
    laptop = PictureClaims(owner=lease.owner_id(), dir_id="laptop1", ttl_s=30)
    # A: the laptop processed it first (claimed and completed before the camera folder
    # showed it: written elsewhere, then renamed in, the same file: no race with the mesh)
    cam = "/storage/emulated/0/DCIM/Camera"
    staged = fl.snap(origin.serial, CHELSEA, name="IMG_lap_a.png", directory="Download")
    pic_a = f"{cam}/IMG_lap_a.png"
    job_a = laptop_job(staged, 7)
    job_a.path = pic_a                                  # its key at the name it will have
    held = laptop.take(origin, job_a)
    assert isinstance(held, lease.DeviceClaim)
    laptop.complete(origin, held, job_a, {"labels": [{"name": "laptop cat", "score": 0.5}],
                                          "story": "The laptop told this one."})
    origin.shell(f"mv {shlex.quote(staged)} {shlex.quote(pic_a)}", timeout=20)
    assert key_of(laptop_job(pic_a, 7)) == key_of(job_a)     # renamed: the same identity
    # B: only the mesh sees it
    pic_b = fl.snap(origin.serial, CHELSEA, name="IMG_lap_b.png")
    jobs = {j["source"]: j for j in _wait_jobs(origin, 2, devs=devs)}
    assert set(jobs) == {pic_a, pic_b}, jobs
    ja, jb = jobs[pic_a], jobs[pic_b]
    assert ja["state"] == "done-elsewhere" and not ja["labels"] and not ja.get("generate.who")
    jd = f"{control.MESH_DIR}/jobs"
    owner, _, rec = origin.shell(f"cat {jd}/{ja['job']}/elsewhere", timeout=20) \
        .stdout.strip().partition(" ")
    assert owner == laptop.owner and "dir=laptop1" in rec and "label=laptop_cat" in rec, rec
    olog = _log(origin)
    assert not re.search(rf"origin: job {ja['job']} claimed", olog), olog
    assert re.search(rf"origin: job {ja['job']} done elsewhere", olog), olog
    # B done by the mesh: its claim at the origin is the laptop's key, completed
    assert jb["state"] == "done" and any(w in " ".join(jb["labels"]) for w in CAT_WORDS), jb
    job_b = laptop_job(pic_b, 8)
    assert origin.shell(f"cat {jd}/{jb['job']}/claim", timeout=20).stdout.strip() \
        == key_of(job_b)
    with pytest.raises(DoneElsewhere) as done:
        laptop.take(origin, job_b)
    got = done.value
    assert got.owner is not None and re.fullmatch(r"mesh\.p\d\.t\d+", got.owner), got.owner
    assert got.record["dir"] == f"mesh{oname}" and got.record["job"] == jb["job"], got.record
    assert got.record["out"] == "done" and got.record["by"] == jb["classify.who"], got.record
    assert any(w in got.record["label"] for w in CAT_WORDS), (got.raw, jb["labels"])
    assert len(re.findall(rf"origin: job {jb['job']} done ", olog)) == 1, olog


def _forged_election_messages_change_nothing(session, devs, origin, *, dead_name: str,
                                             term: int, leader: str) -> None:
    """Authenticated messages (the key is known) from the dead leader's name: an old term,
    a claim or job list asked by a phone that is not the leader, a commit or a story part
    without the claim, malformed fields: refused or unanswered; the job record unchanged,
    nobody follows the sender."""
    me = Peer(dead_name, session.key, counter=10 ** 8)    # above anything the phones saw
    spec = next(p for p in session.peers if p.addr and p.serial == origin.serial)

    def ask(kind: Kind, arg: str, body: bytes = b""):
        return me.exchange(spec.addr, spec.port, me.make(kind, spec.name, arg, body),
                           peers={spec.name}, timeout=20)
    # the phones' term now (a loaded leader may have stepped down and been re-elected)
    term = control.status_one(origin)["term"]
    assert ask(Kind.JOBS, str(term)).arg == f"{term},not-leader"
    assert ask(Kind.CLAIM, f"1,{term},600").arg == "1,not-leader"
    assert ask(Kind.DONE, f"1,99,{term},commit,p1,p1").arg == "1,99,lost"
    assert ask(Kind.DONE, f"1,99,{term},generate", b"forged story").arg == "1,99,lost"
    a = ask(Kind.HEARTBEAT, f"{term - 1},-")
    assert a.kind is Kind.ACK and a.arg.split(",")[1] == "stale" and int(a.arg.split(",")[0]) >= term
    for kind, arg in ((Kind.CLAIM, "1x,1,1"), (Kind.HEARTBEAT, f"{term + 9},P1"),
                      (Kind.DONE, "1,1,1,bogus"), (Kind.JOBS, "9999999999")):
        assert ask(kind, arg) is None, (kind, arg)       # no answer to a malformed request
    jobs = control.results_one(origin)
    assert [(j["state"], j["generate.who"]) for j in jobs] == [("done", jobs[0]["generate.who"])]
    assert "forged" not in (jobs[0]["story"] or "")
    rows = [r for r in control.status(devs) if r["name"] != dead_name]
    assert all(r["term"] >= term and r["leader"] in (leader, None) for r in rows), rows


@pytest.mark.slow
def test_the_leader_killed_mid_picture_the_next_one_finishes_it_exactly_once(elected_mesh):
    """The old leader claimed the picture and died mid-job: its claim expires (claim time)
    and the new leader processes the picture; one commit, whatever the old one had sent."""
    fl, devs, session = elected_mesh
    names = [p.name for p in session.peers]
    (term, leader), _ = _wait_leader(devs, timeout=60)
    origin = next(d for d in devs if d.serial != session.peers[names.index(leader)].serial)
    fl.snap(origin.serial, COFFEE, name="IMG_elect_2.png")
    deadline = time.monotonic() + 30
    while "claimed by " + leader not in _log(origin):
        assert time.monotonic() < deadline, _log(origin)
        time.sleep(0.2)
    _kill_mesh(devs[names.index(leader)])
    (term2, leader2), _ = _wait_leader(devs, not_on=leader, timeout=60)
    jobs = _wait_jobs(origin, 1, timeout=FAST.claim_ds / 10 + 90, devs=devs)
    assert [j["state"] for j in jobs] == ["done"], jobs
    olog = _log(origin)
    assert len(re.findall(r"origin: job 1 done", olog)) == 1, olog
    assert re.search(r"origin: job 1 done .* by " + leader2, olog), olog


def test_cli_mode_single_without_a_phone_named_asks_for_an_election(monkeypatch, tmp_path):
    """`mesh up --mode single` (no --orchestrator) passes an election timing from --lease;
    with --orchestrator it does not; an unknown mode is a usage error before any adb call."""
    from typer.testing import CliRunner

    from adbflow.cli import mesh as cli_mesh
    from adbflow.cli.main import app
    seen: dict = {}

    def fake_up(devs, **kw):
        seen.update(kw)
        return control.MeshSession("0" * 64, [])
    monkeypatch.setattr(cli_mesh, "_devices", lambda *a: [])
    monkeypatch.setattr(control, "up", fake_up)
    monkeypatch.setenv("ADBFLOW_HOME", str(tmp_path))
    run = CliRunner().invoke
    assert run(app, ["mesh", "up", "--mode", "single", "--lease", "6"]).exit_code == 0
    assert seen["elect"] == ElectionTiming(lease_ds=60, beat_ds=12) and seen["orchestrator"] is None
    assert run(app, ["mesh", "up", "--mode", "single", "--orchestrator", "X"]).exit_code == 0
    assert seen["elect"] is None and seen["orchestrator"] == "X"
    seen.clear()
    assert run(app, ["mesh", "up", "--mode", "nonsense"]).exit_code == 2 and not seen
