"""The orchestrator election's decisions in Python: the twin of device_scripts/mesh/elect.sh
(README "Mesh election").

Why a twin: the phones run the mksh rules (elect.sh), but rules about terms and votes are
where a distributed protocol goes wrong, so they are written a second time as pure functions
that tests drive through every case, and the tests run the shell rules on the same inputs
and compare. The fleet test also recomputes each logged election from its logged bids
(`parse_elections`) and checks that the phone that won is the one these rules pick.

The rules, in short (Raft's terms and one vote per term, with bids instead of random timers):
- a phone keeps `TERM LEADER VOTED LASTBEAT` (its own file; no central database);
- a follower that heard no heartbeat for `lease + rank * 2 beats` stands for term + 1 with its
  role bid (rank: its place in the leader's successor order, best bid first), so the best
  bidder stands first and the others rarely compete;
- a voter refuses a lower term, refuses while it heard a live leader or granted its vote
  (loyalty window `lease - beat`: a phone cut off and back cannot depose a working leader,
  a late candidate cannot upset one that is winning), refuses a
  candidate whose bid is worse than its own (and then stands itself at once), and otherwise
  grants one vote per term (a candidate that has not won may give its own vote to a better
  candidate of its term; it can then no longer win that term);
- a candidate refused for a better bid waits a lease (the better one stands at once);
- a candidate wins with a majority of the whole mesh and no better bid among the answers;
- a leader whose heartbeat round meets a higher term steps down; one that gets no majority
  for its role lease's time (`lease - 2 * beat`, shorter than any voter's loyalty) steps down.
"""
from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ElectionTiming:
    """Deciseconds (the phones' /proc/uptime clock). `claim_ds` is how long the orchestrator
    holds a picture it claimed: it must cover classify + story (as orch.sh's TTL does)."""
    lease_ds: int = 100
    beat_ds: int = 20
    poll_ds: int = 5
    claim_ds: int = 600

    def __post_init__(self) -> None:
        if not (1 <= self.beat_ds and self.lease_ds >= 2 * self.beat_ds and self.poll_ds >= 1
                and self.claim_ds >= 1 and max(self.lease_ds, self.claim_ds) < 100_000):
            raise ValueError(f"election timing out of range: {self}")

    @property
    def sticky_ds(self) -> int:
        """A voter stays loyal to a leader it heard this recently."""
        return self.lease_ds - self.beat_ds

    @property
    def role_ttl_ds(self) -> int:
        """The leader's role lease: lapses before any voter's loyalty does."""
        return max(self.beat_ds, self.lease_ds - 2 * self.beat_ds)

    def conf_line(self) -> str:
        """conf/elect on the phone: `LEASE BEAT POLL CLAIM`."""
        return f"{self.lease_ds} {self.beat_ds} {self.poll_ds} {self.claim_ds}\n"


def role_score(speed_ms: int, level: int, charging: bool) -> int:
    """The orchestrator-role score (lower wins), the same integers as cost.sh `_role_score`:
    the phone's expected time for a whole job (classify + story at its load), x4 on battery,
    x(200 - level)/100. Battery weighs more than speed: a phone 3x faster but unplugged
    loses to a charging one at the same level."""
    return speed_ms * (1 if charging else 4) * (200 - level) // 100


@dataclass(frozen=True)
class RoleBid:
    name: str
    speed_ms: int
    level: int
    charging: bool

    @property
    def score(self) -> int:
        return role_score(self.speed_ms, self.level, self.charging)


def better(a: tuple[int, str], b: tuple[int, str]) -> bool:
    """(score, name) a beats b: lower score, then the lower name (names p1..pN follow the
    serials' order, so the tie-break is deterministic)."""
    return a < b


def winner(bids: Iterable[RoleBid]) -> str | None:
    """Who should host the orchestrator among these bids (None: no bids)."""
    best = min(((b.score, b.name) for b in bids), default=None)
    return best[1] if best else None


def majority(n: int) -> int:
    return n // 2 + 1


class Verdict(str, enum.Enum):
    """A voter's answer to VOTE_REQUEST (the strings elect.sh sends)."""
    GRANTED = "granted"
    STALE_TERM = "stale-term"
    LEADER_ALIVE = "leader-alive"
    BETTER_BID = "better-bid"
    VOTED_OTHER = "voted-other"


@dataclass(frozen=True)
class PhoneState:
    """One phone's election record (state/elect): LEADER/VOTED None for `-`."""
    term: int = 0
    leader: str | None = None
    voted: str | None = None
    last_beat_ds: int = 0


def vote(state: PhoneState, *, term: int, candidate: str, candidate_score: int, me: str,
         my_score: int, now_ds: int, timing: ElectionTiming) -> tuple[Verdict, PhoneState]:
    """A voter's decision and its new state (elect.sh `_el_vote_rule` + `_el_vote_locked`)."""
    if term < state.term:
        return Verdict.STALE_TERM, state
    # loyalty: to the leader heard, else to the candidate voted for (not itself)
    loyal = state.leader if state.leader is not None else (
        state.voted if state.voted != me else None)
    if loyal is not None and loyal != candidate and now_ds - state.last_beat_ds < timing.sticky_ds:
        return Verdict.LEADER_ALIVE, state
    newer = term > state.term
    if better((my_score, me), (candidate_score, candidate)):
        verdict = Verdict.BETTER_BID
    elif (None if newer else state.voted) in (None, candidate) or (
            state.voted == me and state.leader != me):
        # the second case: a candidate that has not won yields its own vote to a better
        # candidate of its term; its own win needs VOTED = itself (checked under its lock)
        return Verdict.GRANTED, PhoneState(term, None if newer else state.leader, candidate, now_ds)
    else:
        verdict = Verdict.VOTED_OTHER
    return verdict, (PhoneState(term, None, None, state.last_beat_ds) if newer else state)


class Beat(str, enum.Enum):
    OK = "ok"
    STALE = "stale"          # the sender's term is behind mine: it must step down
    CONFLICT = "conflict"    # another leader in my term (cannot happen with one vote/term)


def heartbeat(state: PhoneState, *, term: int, leader: str,
              now_ds: int) -> tuple[Beat, PhoneState]:
    """A follower's answer to HEARTBEAT and its new state (elect.sh `_el_beat_rule`)."""
    if term < state.term:
        return Beat.STALE, state
    if term == state.term and state.leader not in (None, leader):
        return Beat.CONFLICT, state
    voted = leader if term > state.term else state.voted
    return Beat.OK, PhoneState(term, leader, voted, now_ds)


def may_stand(state: PhoneState, *, now_ds: int, timing: ElectionTiming) -> bool:
    """Checked again under the state lock when a phone stands: a heartbeat or a vote it
    granted since it decided defers the candidacy (elect.sh `_el_stand_locked`)."""
    return now_ds - state.last_beat_ds >= timing.sticky_ds


def candidacy_due(state: PhoneState, *, now_ds: int, rank: int, timing: ElectionTiming) -> bool:
    """A follower stands when no heartbeat came for lease + rank x 2 beats (elect.sh
    `_el_due`; two beats: a vote round can take one on a loaded phone)."""
    return now_ds - state.last_beat_ds >= timing.lease_ds + rank * 2 * timing.beat_ds


def successor_order(scores: Mapping[str, int], leader: str) -> list[str]:
    """The followers by their last bids, best first (sent in heartbeats: each follower's
    rank). elect.sh sorts `SCORE NAME` lines with `sort -n`: same order for distinct
    scores; ties by name."""
    return [n for s, n in sorted((s, n) for n, s in scores.items()) if n != leader]


@dataclass(frozen=True)
class Answer:
    """One voter's VOTE as the candidate counts it."""
    term: int
    verdict: Verdict
    bid: RoleBid | None = None


def elected(n_phones: int, term: int, answers: Mapping[str, Answer | None]) -> bool:
    """The candidate's count (elect.sh `_el_stand`): a majority of the whole mesh (its own
    vote included), no better bid among the answers, no higher term seen."""
    got = [a for a in answers.values() if a is not None]
    if any(a.term > term for a in got) or any(a.verdict is Verdict.BETTER_BID for a in got):
        return False
    return 1 + sum(a.verdict is Verdict.GRANTED for a in got) >= majority(n_phones)


# ---- the election log (mesh.log lines written by elect.sh) ------------------------------
_CAND = re.compile(r"^(\d+) (\S+) elect: term (\d+) candidate (\S+) bids (.*?) \(score/")
_BID = re.compile(r"^([a-z0-9]{1,16})=(?:(\d+)/(\d+)/(\d+)/([01])(?::([a-z-]+))?|none)$")
_LEADER = re.compile(r"^(\d+) (\S+) elect: term (\d+) leader (\S+) votes (\d+)/(\d+)$")


@dataclass
class Election:
    """One candidacy as logged on the candidate: its bids (None: no answer), the voters'
    verdicts, and whether it won."""
    term: int
    candidate: str
    at_s: int
    bids: dict[str, RoleBid | None] = field(default_factory=dict)
    verdicts: dict[str, str] = field(default_factory=dict)
    won: bool = False
    won_at_s: int | None = None        # the `leader ... votes` line's time (phone clock)


def parse_elections(log: str) -> list[Election]:
    """Candidacies in a mesh.log (device text: parsed strictly, unknown lines ignored)."""
    out: list[Election] = []
    by_term: dict[tuple[str, int], Election] = {}
    for line in log.splitlines():
        m = _CAND.match(line)
        if m:
            e = Election(int(m.group(3)), m.group(4), int(m.group(1)))
            for tok in m.group(5).split():
                b = _BID.match(tok)
                if not b:
                    continue
                if b.group(2) is None:
                    e.bids[b.group(1)] = None
                    continue
                e.bids[b.group(1)] = RoleBid(b.group(1), int(b.group(3)), int(b.group(4)),
                                             b.group(5) == "1")
                if b.group(6):
                    e.verdicts[b.group(1)] = b.group(6)
            out.append(e)
            by_term[(e.candidate, e.term)] = e
            continue
        m = _LEADER.match(line)
        if m and (m.group(4), int(m.group(3))) in by_term:
            won = by_term[(m.group(4), int(m.group(3)))]
            won.won, won.won_at_s = True, int(m.group(1))
    return out
