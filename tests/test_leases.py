"""Slot leases: the pure rules (lease_rules), and device_scripts/lease.sh on a virtual phone
compared against them, plus two processes racing for one slot.

Why both: the rules are where a silent wrong result would come from, so they are tested
exhaustively without devices; the device script must make the same decisions (checked on
random operation sequences with a test clock) and be atomic under real concurrency (two
processes, many rounds: never both holding, tokens strictly increasing).
"""
from __future__ import annotations

import random
import shlex
import subprocess
import sys
import textwrap

import pytest
from fleet_helpers import device, module_fleet

from adbflow.device import lease
from adbflow.device.lease_rules import (
    FREE,
    Op,
    Record,
    Verdict,
    apply,
    holds,
    is_live,
    parse_record,
    slot_state,
    valid_owner,
)

BOOT = "b1"


def step(rec, op, owner="A", token=0, ttl=100, now=1000, boot=BOOT):
    return apply(rec, op, owner=owner, token=token, ttl_ds=ttl, now_ds=now, boot=boot)


# ---------------------------------------------------------------------- pure rules

def test_free_slot_is_granted_with_the_next_token_and_a_live_one_is_busy_even_to_its_owner():
    g = step(Record(token=7), Op.ACQUIRE, owner="A")
    assert g.verdict is Verdict.GRANTED and g.record.token == 8 and g.record.owner == "A"
    assert g.record.expires_ds == 1100 and g.left_ds == 100
    for who in ("A", "B"):
        b = step(g.record, Op.ACQUIRE, owner=who, now=1050)
        assert b.verdict is Verdict.BUSY and b.record == g.record and b.left_ds == 50


def test_expired_lease_is_granted_to_another_with_a_larger_token_and_the_old_holder_lost_it():
    a = step(Record(), Op.ACQUIRE, owner="A").record
    b = step(a, Op.ACQUIRE, owner="B", now=1100)          # expires_ds == now: expired
    assert b.verdict is Verdict.GRANTED and b.record.token == a.token + 1
    for op in (Op.RENEW, Op.GUARD, Op.FINISH, Op.RELEASE):
        out = step(b.record, op, owner="A", token=a.token, now=1101)
        assert out.verdict is Verdict.LOST and out.record == b.record


def test_renew_extends_only_for_the_owner_with_the_current_token():
    a = step(Record(), Op.ACQUIRE, owner="A").record
    r = step(a, Op.RENEW, owner="A", token=a.token, ttl=100, now=1090)
    assert r.verdict is Verdict.RENEWED and r.record.expires_ds == 1190
    assert step(a, Op.RENEW, owner="B", token=a.token, now=1090).verdict is Verdict.LOST
    assert step(a, Op.RENEW, owner="A", token=a.token + 1, now=1090).verdict is Verdict.LOST
    assert step(a, Op.RENEW, owner="A", token=a.token, now=1100).verdict is Verdict.LOST


def test_release_keeps_the_token_so_tokens_only_increase():
    rec, tokens = Record(), []
    for i in range(5):
        g = step(rec, Op.ACQUIRE, owner=f"o{i}", now=1000 + i)
        tokens.append(g.record.token)
        rel = step(g.record, Op.FINISH, owner=f"o{i}", token=g.record.token, now=1000 + i)
        assert rel.verdict is Verdict.RELEASED and rel.record.owner == FREE
        assert rel.record.token == g.record.token
        rec = rel.record
    assert tokens == sorted(set(tokens)) and tokens[0] == 1


def test_a_reboot_expires_every_lease_by_boot_id_or_by_the_clock_going_back():
    a = step(Record(), Op.ACQUIRE, owner="A", now=5000).record
    assert is_live(a, 5001, BOOT)
    assert not is_live(a, 5001, "b2")                     # new boot id
    assert not is_live(a, 40, BOOT)                        # uptime went back: rebooted
    assert step(a, Op.ACQUIRE, owner="B", now=40).verdict is Verdict.GRANTED
    assert not holds(a, "A", a.token, 40, BOOT)


def test_malformed_records_read_as_free_and_owner_ids_have_no_spaces():
    for line in ("", "garbage", "adbflow-lease 2 1 A b 1 2", "adbflow-lease 1 x A b 1 2",
                 "adbflow-lease 1 1 A b 1", "adbflow-lease 1 ١ A b 1 2"):
        assert parse_record(line) == Record(), line
    rec = Record(3, "A", BOOT, 10, 20)
    assert parse_record(rec.format()) == rec
    assert valid_owner("host:12:ab") and not valid_owner("a b") and not valid_owner(FREE)
    assert not valid_owner("x" * 81)


def test_random_sequences_never_grant_two_live_holders():
    rnd = random.Random(4)
    rec, now, holders = Record(), 0, {}
    for _ in range(5000):
        now += rnd.randint(0, 30)
        who = rnd.choice("ABC")
        op = rnd.choice([Op.ACQUIRE, Op.RENEW, Op.GUARD, Op.FINISH])
        out = step(rec, op, owner=who, token=holders.get(who, 0), ttl=rnd.randint(1, 60),
                   now=now)
        if out.verdict is Verdict.GRANTED:
            assert out.record.token == rec.token + 1
            holders[who] = out.record.token
        rec = out.record
        live = [w for w, t in holders.items() if holds(rec, w, t, now, BOOT)]
        assert len(live) <= 1


def test_slot_state_shows_busy_only_while_live():
    rec = Record(4, "A", BOOT, 100, 150)
    s = slot_state("classify", rec, 120, BOOT)
    assert s.busy and s.owner == "A" and s.left_s == 3.0
    assert not slot_state("classify", rec, 150, BOOT).busy
    assert not slot_state("classify", rec, 120, "other").busy


def test_guarded_command_output_is_checked_before_and_after_the_run():
    class Dev:
        serial = "x"
    le = lease.DeviceLease(Dev(), "classify", "A", 5, 20)
    n = "abc123"
    ok = (f"\n=:adbflow:{n}:lease held 5 A 200 10\nlabels here\n"
          f"\n=:adbflow:{n}:lease released 5 - 0 12\n")
    assert le.check_run(ok, n).strip() == "labels here"
    stolen = ok.replace("released 5 - 0", "lost 6 B 200")
    with pytest.raises(lease.LeaseLost, match="after the run"):
        le.check_run(stolen, n)
    with pytest.raises(lease.LeaseLost, match="before the run"):
        le.check_run(f"\n=:adbflow:{n}:lease lost 6 B 200 10\n", n)
    # program output cannot forge an answer: another nonce is just text
    forged = f"\n=:adbflow:{n}:lease held 5 A 200 10\n=:adbflow:zzz:lease released 5 - 0 1\n"
    with pytest.raises(lease.LeaseLost):
        le.check_run(forged, n)


# ---------------------------------------------------------------------- on a virtual phone

fleet = module_fleet(1, ["midrange_2023"])


@pytest.mark.fleet
def test_device_script_matches_the_model_on_random_sequences(fleet):
    """Same operations, same test clock: the script's verdicts, tokens and the record it
    wrote equal the model's."""
    dev = device(fleet, fleet.serials[0])
    slot = "modeltest"
    dev.shell(f"rm -f {lease.LEASE_DIR}/slot-{slot}.lease", timeout=10)
    rnd = random.Random(11)
    rec, now, boot, tokens = Record(), 500, "bootA", {}
    for i in range(60):
        now += rnd.randint(0, 40)
        if i == 40:
            boot = "bootB"                      # a reboot in the middle
        who = rnd.choice("AB")
        op = rnd.choice([Op.ACQUIRE, Op.ACQUIRE, Op.RENEW, Op.GUARD, Op.FINISH, Op.READ])
        ttl = rnd.randint(1, 60)
        tok = tokens.get(who, 0)
        want = apply(rec, op, owner=who, token=tok, ttl_ds=ttl, now_ds=now, boot=boot)
        got = lease.call(dev, op.value, slot, who, tok, ttl / 10.0, clock=(now, boot))
        assert got.verdict is want.verdict, (i, op, rec, got)
        assert got.token == want.record.token or got.verdict is Verdict.LOST, (i, got, want)
        if got.verdict is Verdict.GRANTED:
            tokens[who] = got.token
        rec = want.record
        text = dev.shell(f"cat {lease.LEASE_DIR}/slot-{slot}.lease", timeout=10,
                         check=False).stdout.strip()
        if text:
            assert parse_record(text) == rec, (i, op, text, rec)


RACER = textwrap.dedent("""
    import sys, secrets
    from adbflow.device import AdbServer, Device
    from adbflow.device import lease
    from adbflow.errors import SlotBusy
    port, serial, me, rounds = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    dev = Device(serial, AdbServer(port=port))
    log = lease.LEASE_DIR + "/race.log"
    granted = busy = 0
    while granted < rounds:
        try:
            le = lease.acquire(dev, "race", me, ttl_s=30)
        except SlotBusy:
            busy += 1
            continue
        granted += 1
        n = secrets.token_hex(6)
        # inside the lease: log start, hold the slot a moment, log end
        argv = ["sh", "-c", f'echo "start {le.token} {me}" >> {log}; sleep 0.02; '
                            f'echo "end {le.token} {me}" >> {log}']
        res = dev.shell(le.guarded_command(argv, n), timeout=30, check=False)
        le.check_run(res.stdout, n)
    print(granted, busy)
""")


@pytest.mark.fleet
def test_two_processes_racing_for_one_slot_never_both_hold_it(fleet):
    dev = device(fleet, fleet.serials[0])
    dev.shell(f"rm -f {lease.LEASE_DIR}/race.log {lease.LEASE_DIR}/slot-race.lease",
              timeout=10)
    rounds = 40
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(fleet.adb_port),
                               fleet.serials[0], who, str(rounds)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for who in ("racerA", "racerB")]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    busy = sum(int(out.split()[1]) for out, _ in outs)
    lines = dev.shell(f"cat {lease.LEASE_DIR}/race.log", timeout=10).stdout.split("\n")
    events = [ln.split() for ln in lines if ln.strip()]
    assert len(events) == 4 * rounds
    tokens = []
    for i in range(0, len(events), 2):          # strictly start/end pairs of one holder
        start, end = events[i], events[i + 1]
        assert start[0] == "start" and end[0] == "end" and start[1:] == end[1:], events[i:i + 2]
        tokens.append(int(start[1]))
    assert tokens == sorted(set(tokens)), tokens          # strictly increasing
    assert busy > 0, "the two racers never contended: the test proved nothing"


def test_only_provably_dead_local_owners_are_stale():
    """A killed adbflow of this laptop (same boot and pid namespace, pid gone) leaves a
    stale lease that the next orchestrator releases at once; everything else waits for
    expiry: another laptop (even one named like us), a live pid, an unknown format."""
    import os
    me = lease.owner_id()
    host, ns, pid, rnd = me.split(":")
    assert not lease.dead_local_owner(me)                                  # ourselves
    assert lease.dead_local_owner(f"{host}:{ns}:{2 ** 22 + 7}:ab")         # gone
    assert not lease.dead_local_owner(f"{host}:{ns}:1:ab")                 # pid 1 lives
    assert not lease.dead_local_owner(f"{host}:ffffffff:{2 ** 22 + 7}:ab")  # other laptop
    assert not lease.dead_local_owner(f"{host}:{2 ** 22 + 7}:ab")          # old format
    assert not lease.dead_local_owner(None) and os.getpid() == int(pid)


@pytest.mark.fleet
def test_a_killed_local_orchestrators_lease_is_released_at_once(fleet):
    """kill -9 of an adbflow leaves its lease live for up to TTL; the next orchestrator
    of the same laptop sees the owner's pid is gone and releases it instead of waiting."""
    from adbflow.errors import SlotBusy
    from adbflow.runtime.leasing import StageLeases
    dev = device(fleet, fleet.serials[0])
    host, ns, _pid, _r = lease.owner_id().split(":")
    dead = f"{host}:{ns}:{2 ** 22 + 99}:dead00"
    stale = lease.acquire(dev, "stale", dead, ttl_s=60)
    with pytest.raises(SlotBusy):                       # a live foreign owner: busy
        lease.acquire(dev, "stale", "other:1:1:x", ttl_s=60)
    with StageLeases(ttl_s=5).hold(dev, "stale") as held:
        assert held.token == stale.token + 1


# ---------------------------------------------------------------------- picture claims

def cstep(rec, op, owner="A", token=0, ttl=100, now=1000, boot=BOOT, result="-"):
    return apply(rec, op, owner=owner, token=token, ttl_ds=ttl, now_ds=now, boot=boot,
                 result=result)


def test_a_completed_claim_is_done_for_everybody_for_good_and_shows_who_and_the_result():
    g = cstep(Record(), Op.ACQUIRE, owner="A")
    assert g.verdict is Verdict.GRANTED
    c = cstep(g.record, Op.COMPLETE, owner="A", token=g.record.token, now=1050,
              result="ok,label=tabby")
    assert c.verdict is Verdict.COMPLETED and c.record.done
    assert c.record.owner == "A" and c.record.result == "ok,label=tabby"
    for who, now, boot in (("B", 1051, BOOT), ("A", 1051, BOOT), ("B", 10 ** 6, BOOT),
                           ("B", 5, "rebooted")):
        d = cstep(c.record, Op.ACQUIRE, owner=who, now=now, boot=boot)
        assert d.verdict is Verdict.DONE and d.record == c.record, (who, now, boot)
    assert cstep(c.record, Op.READ).verdict is Verdict.DONE
    for op in (Op.RENEW, Op.COMPLETE, Op.RELEASE):       # nothing more to hold
        assert cstep(c.record, op, owner="A", token=g.record.token,
                     now=1052).verdict is Verdict.LOST
    assert parse_record(c.record.format(), claim=True) == c.record
    # a slot record never carries a result: the same line read as a slot is not done
    assert not parse_record(c.record.format()).done


def test_only_the_current_holder_completes_a_claim_so_a_late_crashed_claimant_cannot():
    a = cstep(Record(), Op.ACQUIRE, owner="A").record
    b = cstep(a, Op.ACQUIRE, owner="B", now=1100).record            # A's claim expired
    late = cstep(b, Op.COMPLETE, owner="A", token=a.token, now=1101, result="A-result")
    assert late.verdict is Verdict.LOST and not late.record.done
    busy = cstep(b, Op.ACQUIRE, owner="A", now=1101)
    assert busy.verdict is Verdict.BUSY and busy.record.owner == "B"
    rel = cstep(b, Op.RELEASE, owner="B", token=b.token, now=1102)   # B gives up unfinished
    assert rel.verdict is Verdict.RELEASED and not rel.record.done
    again = cstep(rel.record, Op.ACQUIRE, owner="A", now=1103)
    assert again.verdict is Verdict.GRANTED and again.record.token == b.token + 1


def test_claim_results_and_keys_are_one_safe_word():
    from adbflow.device.lease_rules import valid_key, valid_result
    assert valid_result("done,label=tabby_cat,sha=0123abcd") and valid_result("-")
    for bad in ("", "a b", "x;rm", "$(id)", "a\nb", "é", "x" * 241):
        assert not valid_result(bad), bad
    assert valid_key("p-0123456789abcdef0123") and not valid_key("IMG_1.jpg")
    assert not valid_key("a/b") and not valid_key("x" * 65)
    for line in ("adbflow-lease 1 3 A b 1 0 bad;result", "adbflow-lease 1 3 - b 1 0 r"):
        assert not parse_record(line, claim=True).done, line


def test_random_claim_sequences_complete_each_picture_at_most_once():
    rnd = random.Random(9)
    rec, now, holders, completions = Record(), 0, {}, []
    for _ in range(5000):
        if rec.done and rnd.random() < 0.05:
            rec = Record(token=rec.token)                 # next picture, same token line
        now += rnd.randint(0, 30)
        who = rnd.choice("ABC")
        op = rnd.choice([Op.ACQUIRE, Op.RENEW, Op.COMPLETE, Op.RELEASE, Op.READ])
        out = cstep(rec, op, owner=who, token=holders.get(who, 0), ttl=rnd.randint(1, 60),
                    now=now, result=f"r-{who}")
        if out.verdict is Verdict.COMPLETED:
            assert not rec.done and holds(rec, who, holders[who], now, BOOT)
            completions.append(out.record)
        if out.verdict is Verdict.GRANTED:
            holders[who] = out.record.token
        if rec.done:
            assert out.record == rec                      # done is final
        rec = out.record
    assert len(completions) > 20


@pytest.mark.fleet
def test_claim_script_matches_the_model_on_random_sequences(fleet):
    """adbflow_claim against the model: verdicts, tokens, results, and the record it wrote,
    across expiries, completions and a reboot (a done claim survives it)."""
    dev = device(fleet, fleet.serials[0])
    rnd = random.Random(12)
    rec, now, boot, tokens, key = Record(), 500, "bootA", {}, "cmodel0"
    dev.shell(f"rm -f {lease.LEASE_DIR}/claim-cmodel*.lease", timeout=10)
    seen = set()
    for i in range(90):
        now += rnd.randint(0, 30)
        if i == 60:
            boot = "bootB"
        if rec.done and rnd.random() < 0.3:
            key, rec = f"cmodel{i}", Record()             # the next picture
        # mostly the current holder acts (else completions would be rare)
        who = rec.owner if rec.owner != FREE and rnd.random() < 0.7 else rnd.choice("AB")
        op = rnd.choice([Op.ACQUIRE, Op.ACQUIRE, Op.RENEW, Op.COMPLETE, Op.RELEASE, Op.READ])
        ttl, tok, res = rnd.randint(1, 60), tokens.get((key, who), 0), f"ok,by={who},i={i}"
        want = apply(rec, op, owner=who, token=tok, ttl_ds=ttl, now_ds=now, boot=boot,
                     result=res)
        got = lease.claim_call(dev, op.value, key, who, tok, ttl / 10.0, result=res,
                               clock=(now, boot))
        seen.add(got.verdict)
        assert got.verdict is want.verdict, (i, op, rec, got)
        if got.verdict is not Verdict.LOST:
            assert got.token == want.record.token, (i, got, want)
        if want.record.done:
            assert got.result == want.record.result and got.owner == want.record.owner
        if got.verdict is Verdict.GRANTED:
            tokens[(key, who)] = got.token
        rec = want.record
        text = dev.shell(f"cat {lease.LEASE_DIR}/claim-{key}.lease", timeout=10,
                         check=False).stdout.strip()
        if text:
            assert parse_record(text, claim=True) == rec, (i, op, text, rec)
    assert {Verdict.GRANTED, Verdict.BUSY, Verdict.COMPLETED, Verdict.DONE,
            Verdict.LOST} <= seen, seen


@pytest.mark.fleet
def test_claim_script_refuses_unsafe_keys_results_and_slot_only_ops(fleet):
    dev = device(fleet, fleet.serials[0])
    script = lease.lease_script()
    for call in ("adbflow_claim n1 acquire 'a;b' A 0 10 -",
                 "adbflow_claim n1 acquire ok A 0 10 'x y'",
                 "adbflow_claim n1 guard ok A 0 10 -",
                 "adbflow_lease n1 complete ok A 0 10"):
        out = dev.shell(script + call, timeout=10, check=False)
        assert "lease error" in out.stdout or "claim error" in out.stdout, (call, out.stdout)
        assert out.exit_code == 1


RACE_CLAIMS = textwrap.dedent("""
    import sys
    from adbflow.device import AdbServer, Device
    from adbflow.device import lease
    port, serial, me, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    dev = Device(serial, AdbServer(port=port))
    mine = done = 0
    for i in range(n):
        got = lease.claim_acquire(dev, f"crace{i}", me, ttl_s=30)
        if isinstance(got, lease.DeviceClaim):
            r = got.complete(f"by={me}")
            assert r.verdict.value == "completed", r
            mine += 1
        else:
            done += 1
    print(mine, done)
""")


@pytest.mark.fleet
def test_two_processes_claiming_the_same_pictures_complete_each_exactly_once(fleet):
    dev = device(fleet, fleet.serials[0])
    dev.shell(f"rm -f {lease.LEASE_DIR}/claim-crace*.lease", timeout=10)
    n = 25
    procs = [subprocess.Popen([sys.executable, "-c", RACE_CLAIMS, str(fleet.adb_port),
                               fleet.serials[0], who, str(n)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for who in ("clA", "clB")]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    mine = [int(out.split()[0]) for out, _ in outs]
    assert sum(mine) == n, mine
    for i in range(n):
        r = lease.claim_call(dev, "read", f"crace{i}", "x", 0, 0)
        assert r.verdict is Verdict.DONE and r.result == f"by={r.owner}", (i, r)


@pytest.mark.fleet
def test_the_phone_computes_the_same_claim_key_as_the_laptop(fleet):
    """Phone-side orchestrators (mesh) must name a picture's claim like the laptop does,
    also for hostile names (spaces, quotes, newline-free unicode)."""
    from adbflow.device.lease_rules import claim_key, valid_key
    dev = device(fleet, fleet.serials[0])
    for path, ino, size, mtime in (("/storage/emulated/0/Pictures/IMG_1.jpg", 123, 5000, 17e8),
                                   ("/sdcard/DCIM/a b'$(x)\"é.png", 0, 1, 0.0)):
        key = claim_key(path, ino, size, mtime)
        assert valid_key(key) and key.startswith("pic-") and len(key) == 36
        q = " ".join(shlex.quote(str(v)) for v in (path, ino, size, int(mtime)))
        out = dev.shell(f"set -- {q}; printf '%s\\n%s\\n%s\\n%s\\n' \"$1\" \"$2\" \"$3\" \"$4\" "
                        "| sha256sum", timeout=10).stdout.split()[0]
        assert "pic-" + out[:32] == key, (path, out)
    assert claim_key("/a", 1, 2, 3.9) != claim_key("/a", 2, 2, 3.9)   # inode counts
