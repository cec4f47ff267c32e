"""Slot leases: the pure rules (lease_rules), and device_scripts/lease.sh on a virtual phone
compared against them, plus two processes racing for one slot.

Why both: the rules are where a silent wrong result would come from, so they are tested
exhaustively without devices; the device script must make the same decisions (checked on
random operation sequences with a test clock) and be atomic under real concurrency (two
processes, many rounds: never both holding, tokens strictly increasing).
"""
from __future__ import annotations

import random
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
