"""Quorum: does the partition this node sees hold a majority of the cluster's votes? I/O-free.

Only a quorate partition may fence or take storage over (rather no service than two writers).
Inputs: the configured cluster (QuorumSpec), each node's overall liveness state (liveness X1-X4),
the cluster digest each peer advertises, the outcome of the two-node tie-break race, and the
caller's monotonic now_ms. Output: the verdict (Quorum) and QuorumChanged events. The rules:

  Q1 VOTES: every configured node has votes >= 0 (default 1); expected_votes comes from the
     configuration (default: the sum) and is at least that sum (a configured node's votes can
     never be left out of the majority). A node's votes are what OUR configuration says: a node
     never tells us its votes.
  Q2 MEMBERS: this node and every configured node that liveness shows ALIVE on some region. An
     UNKNOWN, DEAD or LEFT node is no member: votes of a node we cannot see beating never count.
  Q3 AGREEMENT: every peer advertises the digest of its node list and votes (cluster_digest,
     never 0; 0 is advertised by a node without a [quorum]). A peer whose digest differs from
     ours (0 included) is no member (counting it could give two partitions a majority each) and
     is reported once per digest it shows; a peer with no digest yet (a first beat not read) is
     counted: liveness already demands it beats with our node id.
  Q4 MAJORITY: quorate while member votes * 2 > expected_votes (a strict majority: two halves
     of an even cluster are never both quorate).
  Q5 WAIT_FOR_ALL: with wait_for_all, no first quorum until every configured node with votes was
     a member at least once since start, or initdead_ms passed since start; once quorate, Q5
     is done for good (corosync votequorum's rule, so a node booting alone after a
     cluster-wide power loss does not fence the others).
  Q6 TWO_NODE: two_node (exactly two configured nodes, one vote each, expected 2): both members:
     quorate. Alone: quorate only while this node holds the tie-break (the race for the
     region's reserved MMP resource TIEBREAK_RESOURCE, decided by the guard this project
     trusts; the winner holds it, the loser cannot). Q5 still applies to the first quorum.
     The race is deterministic, not random delays: the favoured node (the higher [quorum]
     weight, e.g. the node serving the MDT; on a tie the lower node id) enters it as soon as it
     is alone, the other TIEBREAK_HANDICAP_DEAD_TIMES x dead_ms later, so when both are up but
     cut off from each other the favoured one wins unless it cannot reach the disk. Weights are
     part of the digest (Q3): two nodes that disagree on who is favoured never count each other.
  Q7 EVENTS: one QuorumChanged each time `quorate` flips, carrying the votes and members behind
     it and why; the verdict is recomputed at every evaluate(), never cached across inputs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Mapping

from diskhb.core.types import NODE_ID_MAX, NodeState

VOTES_MAX = 255
WEIGHT_MAX = 1000
TIEBREAK_RESOURCE = "diskhb-tiebreak"  # Q6: the MMP resource two_node nodes race for
TIEBREAK_HANDICAP_DEAD_TIMES = 2  # Q6: the unfavoured node's delay, in dead times


@dataclass(frozen=True)
class QuorumSpec:
    """The cluster as this node's configuration describes it."""
    node_id: int
    votes: Mapping[int, int]  # node id -> votes, every configured node (this one included)
    expected_votes: int | None = None  # None: the sum of votes (Q1)
    two_node: bool = False
    wait_for_all: bool = False
    initdead_ms: int = 0
    weights: Mapping[int, int] = field(default_factory=dict)  # Q6: node id -> weight (default 1)

    def validate(self) -> None:
        """One line for an operator's mistake (ValueError)."""
        if not 1 <= len(self.votes) <= NODE_ID_MAX:
            raise ValueError(f"[quorum] needs 1..{NODE_ID_MAX} nodes, got {len(self.votes)}")
        for nid, v in self.votes.items():
            if not 1 <= nid <= NODE_ID_MAX:
                raise ValueError(f"[quorum] node id {nid} is not in 1..{NODE_ID_MAX}")
            if not 0 <= v <= VOTES_MAX:
                raise ValueError(f"[quorum] node {nid}: votes {v} is not in 0..{VOTES_MAX}")
        if self.node_id not in self.votes:
            raise ValueError(f"[quorum] this node ({self.node_id}) is not in the node list")
        total = sum(self.votes.values())
        if total == 0:
            raise ValueError("[quorum] no node has a vote")
        if self.expected_votes is not None and self.expected_votes < total:
            raise ValueError(f"[quorum] expected_votes {self.expected_votes} is less than the configured"
                             f" nodes' votes ({total}): two partitions could each have a majority")
        if self.two_node and (len(self.votes) != 2 or set(self.votes.values()) != {1} or self.expected != 2):
            raise ValueError("[quorum] two_node = true needs exactly two nodes with one vote each"
                             " (and expected_votes 2)")
        for nid, w in self.weights.items():
            if nid not in self.votes:
                raise ValueError(f"[quorum] weight of node {nid}, which is not in the node list")
            if not 0 <= w <= WEIGHT_MAX:
                raise ValueError(f"[quorum] node {nid}: weight {w} is not in 0..{WEIGHT_MAX}")
        if self.initdead_ms < 0:
            raise ValueError(f"[quorum] initdead_ms {self.initdead_ms} must be >= 0")

    def weight(self, node_id: int) -> int:
        return self.weights.get(node_id, 1)

    def favoured(self) -> int:
        """Q6: the node that enters the tie-break race at once: highest weight, then lowest id."""
        return min(self.votes, key=lambda nid: (-self.weight(nid), nid))

    def race_delay_ms(self, dead_ms: int) -> int:
        """Q6: how long this node waits, once alone, before it races for the tie-break."""
        return 0 if self.favoured() == self.node_id else TIEBREAK_HANDICAP_DEAD_TIMES * dead_ms

    @property
    def expected(self) -> int:
        return self.expected_votes if self.expected_votes is not None else sum(self.votes.values())

    def digest(self) -> int:
        """Q3: what every node advertises: its node list, votes and expected votes, as 32 bits."""
        text = ";".join(f"{nid}:{self.votes[nid]}" for nid in sorted(self.votes)) + f";e{self.expected}"
        text += ";2n" if self.two_node else ""
        if self.two_node:
            text += "".join(f";w{nid}:{self.weight(nid)}" for nid in sorted(self.votes))
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") or 1  # 0: "no [quorum]"


@dataclass(frozen=True)
class Quorum:
    """The verdict of one evaluate()."""
    quorate: bool
    votes: int  # member votes
    expected_votes: int
    members: tuple[int, ...]  # node ids, this node included
    reason: str  # why (not) quorate, one line for status and logs
    refused: tuple[int, ...] = ()  # peers left out for another digest (Q3)


@dataclass(frozen=True)
class QuorumChanged:
    quorate: bool
    votes: int
    expected_votes: int
    members: tuple[int, ...]
    reason: str


@dataclass(frozen=True)
class DigestMismatch:
    """Q3: a peer's node list or votes differ from ours (reported once per digest it shows)."""
    node_id: int
    theirs: int
    ours: int


@dataclass
class QuorumState:
    spec: QuorumSpec
    started_ms: int
    ever_quorate: bool = False
    seen: set[int] = field(default_factory=set)  # Q5: nodes that were members since start
    last: Quorum | None = None
    reported: dict[int, int] = field(default_factory=dict)  # Q3: node -> the digest last reported

    def __post_init__(self) -> None:
        self.spec.validate()
        self.seen.add(self.spec.node_id)
        self._digest = self.spec.digest()

    def evaluate(self, now_ms: int, states: Mapping[int, NodeState], digests: Mapping[int, int],
                 tiebreak_held: bool = False) -> tuple[Quorum, list]:
        """The verdict now, and the events since the previous evaluate() (Q7).

        states: liveness's overall state per node id (missing: never seen). digests: the cluster
        digest each peer advertised last (missing: none read yet). tiebreak_held: this node
        holds the two-node tie-break resource (Q6)."""
        spec, events = self.spec, []
        members, refused = [spec.node_id], []
        for nid in sorted(spec.votes):
            if nid == spec.node_id or states.get(nid) is not NodeState.ALIVE:
                continue  # Q2
            theirs = digests.get(nid)
            if theirs is not None and theirs != self._digest:  # Q3
                refused.append(nid)
                if self.reported.get(nid) != theirs:
                    self.reported[nid] = theirs
                    events.append(DigestMismatch(nid, theirs, self._digest))
                continue
            members.append(nid)
        self.seen.update(members)
        votes = sum(spec.votes[n] for n in members)
        expected = spec.expected
        quorate, reason = self._verdict(now_ms, votes, expected, members, tiebreak_held)
        q = Quorum(quorate, votes, expected, tuple(members), reason, tuple(refused))
        if quorate:
            self.ever_quorate = True
        if self.last is None or self.last.quorate != quorate:
            events.append(QuorumChanged(quorate, votes, expected, q.members, reason))
        self.last = q
        return q, events

    def _verdict(self, now_ms: int, votes: int, expected: int, members: list[int],
                 tiebreak_held: bool) -> tuple[bool, str]:
        spec = self.spec
        if spec.wait_for_all and not self.ever_quorate:  # Q5
            missing = sorted(n for n, v in spec.votes.items() if v and n not in self.seen)
            waited_ms = now_ms - self.started_ms
            if missing and waited_ms < spec.initdead_ms:
                return False, (f"wait_for_all: node{'s' if len(missing) > 1 else ''}"
                               f" {', '.join(map(str, missing))} not seen yet"
                               f" ({(spec.initdead_ms - waited_ms) / 1000:g} s of initdead left)")
        if spec.two_node and len(members) == 1:  # Q6
            if tiebreak_held:
                return True, "two_node: the peer is not seen and this node holds the tie-break"
            return False, "two_node: the peer is not seen and this node does not hold the tie-break"
        if votes * 2 > expected:  # Q4
            return True, f"{votes} of {expected} votes"
        return False, f"{votes} of {expected} votes: no majority (needs {expected // 2 + 1})"
