"""One test per defect fixed in the MMP guard's rework, at the level of the I/O-free machines.

Most run whole Guards (diskhb.mmp.guard) over an in-memory disk (diskhb.mmp.store.MemoryStore)
under a virtual clock: `World` below carries out each IoRequest with the latency a test picks
(a read samples the disk at one moment between submission and completion; a write lands at one
moment between issue and completion, or is held until the test lands it: timing.py F1), and
records every request issued and every event. Schedule E is a Hold alone; the last tests drive
the Acquisition's transition table.

    A  P's commit write lands late over Q's epoch-2 block: P's retry watches (CL4, CL2), it does
       not claim over "its own abandoned write" at once
    B  a third node R watches at least C(the ceiling in Q's ballot), not C(P's interval) (CL2)
    C  a stale CLEAN of epoch 1 over Q's epoch-2 block is watched, not claimed through (CL2)
    D  a ballot write of ours that timed out blocks new writes to its sector (GD2, LG1)
    E  a bump advertising a shorter interval shortens the lease the moment it is issued (HD-loss)
    F  the final full read of a watch sees a ballot the first read missed and extends it (CL2)
    FP6 a fast path never skips the watch when a later epoch was proposed
    h2 every (Phase, Input) pair outside acquisition.TRANSITIONS is a ProtocolError
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from diskhb.core.timing import MmpTiming, classic_wait_ms, mmp_ceiling_ms
from diskhb.core.types import NodeState
from diskhb.mmp import format as mf
from diskhb.mmp import guard as gd
from diskhb.mmp.acquisition import TRANSITIONS, Acquisition, Input, Phase, ProtocolError
from diskhb.mmp.fast_path import PeerInfo
from diskhb.mmp.hold import IO_CYCLES_REMEMBERED, Hold
from diskhb.mmp.ledger import SectorLedger
from diskhb.mmp.steps import (
    Acquired,
    Claimant,
    Lost,
    NotOurs,
    ReadResource,
    ReadSeq,
    Refusal,
    WriteBallot,
    WriteSeq,
)
from diskhb.mmp.store import MemoryStore

UUID = b"\x5c" * 16
S = 512
SLOTS = 4
PATH = "<memory>"
WRITE_LAND_MAX_MS = 20_000  # F1's bound for every node here (2 x the default 10 s I/O timeout)


def claimant(node_id: int, interval_ms: int = 1000, generation: int | None = None) -> Claimant:
    return Claimant(node_id=node_id, generation=generation or 0x1000 + node_id, holder_name=f"n{node_id}",
                    resource="db", interval_ms=interval_ms, ceiling_ms=mmp_ceiling_ms(interval_ms), device="mem")


# --------------------------------------------------------------------------------------------
# The world: guards, an in-memory disk, a virtual clock


@dataclass
class Issued:
    t: int
    who: str
    req: gd.IoRequest


@dataclass
class HeldWrite:
    """A write the test lands (and completes) itself."""
    who: str = ""
    req: gd.IoRequest | None = None
    t: int | None = None  # issue


class World:
    def __init__(self, *, seed: int = 1):
        self.loc = gd.BlockLocation(label="mem block 0", base=0, sector_size=S, slot_count=SLOTS, uuid=UUID, index=0)
        self.store = MemoryStore(self.loc.span, S)
        self.info = gd.TargetInfo(PATH, (self.loc,), False)
        self.rng = random.Random(seed)
        self.now = 0
        self._heap: list = []
        self._n = 0
        self.guards: dict[str, gd.Guard] = {}
        self._inbox: dict[str, list[gd.IoResult]] = {}
        self.issued: list[Issued] = []
        self.events: list[tuple[int, str, object]] = []
        # (who, req) -> (land or sample delay, completion delay after it) or None for the default;
        # a delay of None: held (HeldWrite), or never completed
        self.latency: Callable[[str, gd.IoRequest], tuple[int | None, int | None] | None] = lambda who, req: None
        self._held: list[tuple[Callable, HeldWrite]] = []

    # -- set up ----------------------------------------------------------------------------------

    def guard(self, who: str, me: Claimant, *, loss_budget_ms: int = 0, wait_ms: int = 600_000,
              create: bool = True, **kw) -> gd.Guard:
        g = gd.Guard(me, self.info, timing=MmpTiming(me.interval_ms, loss_budget_ms),
                     ledger=SectorLedger(WRITE_LAND_MAX_MS), rand=self.rng.randrange, now_ms=self.now,
                     wait_ms=wait_ms, create=create, **kw)
        self.guards[who] = g
        return g

    def hold_write(self, who: str, pred: Callable[[gd.IoRequest], bool]) -> HeldWrite:
        """The next write of `who` matching `pred` is held in the I/O stack until land()."""
        h = HeldWrite()
        self._held.append((lambda w, req: w == who and req.op == "write" and pred(req), h))
        return h

    def land(self, h: HeldWrite, at_ms: int, complete_at_ms: int | None) -> None:
        assert h.req is not None and at_ms >= self.now
        assert at_ms - h.t <= WRITE_LAND_MAX_MS, "F1: a write lands within write_land_max_ms of its issue"
        req = h.req
        self.at(at_ms, lambda: self.store.write(req.offset, req.data))
        if complete_at_ms is not None:
            self.at(complete_at_ms, lambda: self._answer(h.who, gd.IoResult(req.id, h.t, complete_at_ms)))

    def poke_ballot(self, b: mf.Ballot) -> None:
        self.store.write(self.loc.ballot_pos(b.node_id), mf.encode_ballot(b, S))

    def poke_seq(self, block: mf.SeqBlock) -> None:
        self.store.write(self.loc.base, mf.encode_seq_block(block))

    # -- running ---------------------------------------------------------------------------------

    def at(self, t: int, fn) -> None:
        self._n += 1
        heapq.heappush(self._heap, (t, self._n, fn))

    def _answer(self, who: str, r: gd.IoResult) -> None:
        self._inbox.setdefault(who, []).append(r)

    def _io(self, who: str, req: gd.IoRequest) -> None:
        t = self.now
        self.issued.append(Issued(t, who, req))
        if req.op in ("lock", "unlock"):
            if req.op == "lock":
                self._answer(who, gd.IoResult(req.id, t, t))
            return
        if req.op == "write" and req.issue_by_ms is not None and t > req.issue_by_ms:
            self._answer(who, gd.IoResult(req.id, t, t, too_late=True))
            return
        for k, (pred, h) in enumerate(self._held):
            if pred(who, req):
                del self._held[k]
                h.who, h.req, h.t = who, req, t
                return
        a, b = self.latency(who, req) or (1, 1)
        if req.op == "read":
            box: dict = {}
            self.at(t + a, lambda: box.setdefault("d", self.store.read(req.offset, req.length)))
            if b is not None:
                self.at(t + a + b, lambda: self._answer(who, gd.IoResult(req.id, t, t + a + b, data=box["d"])))
        else:
            self.at(t + a, lambda: self.store.write(req.offset, req.data))
            if b is not None:
                self.at(t + a + b, lambda: self._answer(who, gd.IoResult(req.id, t, t + a + b)))

    def _instant(self) -> None:
        for _ in range(1000):
            while self._heap and self._heap[0][0] <= self.now:
                heapq.heappop(self._heap)[2]()
            moved = False
            for who, g in list(self.guards.items()):
                results = self._inbox.pop(who, [])
                if g.done and not results:
                    continue
                reqs = g.step(self.now, results)
                for ev in g.drain():
                    self.events.append((self.now, who, ev))
                for req in reqs:
                    self._io(who, req)
                moved = moved or bool(reqs) or bool(results)
            if not moved and not (self._heap and self._heap[0][0] <= self.now):
                return
        raise AssertionError(f"no rest at {self.now} ms")

    def run(self, until: Callable[[], bool], limit_ms: int = 3_600_000) -> None:
        end = self.now + limit_ms
        while True:
            self._instant()
            if until():
                return
            times = [self._heap[0][0]] if self._heap else []
            times += [w for g in self.guards.values() if not g.done and (w := g.next_wakeup_ms()) is not None]
            assert times, f"nothing left to happen at {self.now} ms"
            self.now = max(self.now + 1, min(times))
            assert self.now <= end, f"still running after {limit_ms} ms"

    def run_to(self, t_ms: int) -> None:
        self.at(t_ms, lambda: None)
        self.run(lambda: self.now >= t_ms)

    # -- what happened ---------------------------------------------------------------------------

    def of(self, who: str, kind) -> list[tuple[int, object]]:
        return [(t, ev) for t, w, ev in self.events if w == who and isinstance(ev, kind)]

    def got(self, who: str) -> tuple[int, gd.GotIt] | None:
        got = self.of(who, gd.GotIt)
        return got[0] if got else None

    def writes(self, who: str, offset: int, after_ms: int = -1) -> list[int]:
        return [i.t for i in self.issued if i.who == who and i.req.op == "write" and i.req.offset == offset
                and i.t > after_ms]

    def first_write(self, who: str, offset: int, after_ms: int = -1, limit_ms: int = 120_000) -> int:
        """Run until `who` writes at `offset` (after after_ms): when it did."""
        self.run(lambda: bool(self.writes(who, offset, after_ms)), limit_ms)
        return self.writes(who, offset, after_ms)[0]


def proposal(me: Claimant, basis_epoch: int = 0) -> mf.Proposal:
    return mf.Proposal(node_id=me.node_id, generation=me.generation, holder_name=me.holder_name,
                       resource=me.resource, interval_ms=me.ceiling_ms, basis_epoch=basis_epoch, basis_seq=0,
                       basis_holder=0)


def accepted(me: Claimant, lver: int, basis_epoch: int = 0) -> mf.Ballot:
    """`me`'s ballot sector after it won instance `lver` (phase 2 written)."""
    mbal = 8192 + me.node_id
    return mf.Ballot(node_id=me.node_id, lver=lver, mbal=mbal, bal=mbal, inp=proposal(me, basis_epoch), uuid=UUID,
                     writer_generation=me.generation, resource="db")


def seq_block(me: Claimant, epoch: int, seq: int = 4242, interval_ms: int | None = None) -> mf.SeqBlock:
    return mf.SeqBlock(seq=seq, epoch=epoch, holder_id=me.node_id, holder_generation=me.generation,
                       holder_name=me.holder_name, resource="db", device="mem",
                       interval_ms=interval_ms or me.interval_ms, wall_ms=0, uuid=UUID, slot_count=SLOTS, sector_size=S)


# --------------------------------------------------------------------------------------------
# Schedule A


def test_schedule_a_our_own_late_landing_over_a_later_epoch_is_watched_not_claimed_at_once():
    """P wins instance 1; its commit write is held in the I/O stack past its deadline (GD1: P
    gives the claim up, stale_own). Q, which started meanwhile, watches P's pending claim for
    C(P's ceiling), wins instance 2 and holds epoch 2. Then P's write lands over Q's block and
    completes. Q learns it at its next verify (HD-verify). P's retry finds its own stale block,
    but Q's ballot at instance 2 is past its epoch: P may not claim over it at once (CL4); it
    watches for C(Q's ceiling) (CL2), the lease Q may still run on."""
    w = World()
    p, q = claimant(1), claimant(2)
    w.guard("P", p)
    commit = w.hold_write("P", lambda req: req.offset == w.loc.base)
    w.run(lambda: commit.req is not None)
    assert mf.decode_seq_block(commit.req.data).epoch == 1  # P won instance 1 and issued its commit
    w.run_to(100)
    w.guard("Q", q)
    w.run(lambda: w.got("Q") is not None, limit_ms=60_000)
    t_q, got_q = w.got("Q")
    assert got_q.epoch == 2 and t_q >= 100 + classic_wait_ms(p.ceiling_ms)  # Q watched P's pending claim
    assert w.got("P") is None
    landed = w.now + 100
    w.land(commit, landed, landed + 500)
    # The fix: no ballot of P's for a whole watch of Q's ceiling after the landing (CL4 -> CL2).
    first_ballot = w.first_write("P", w.loc.ballot_pos(1), after_ms=landed)
    assert first_ballot >= landed + classic_wait_ms(q.ceiling_ms), f"P balloted {first_ballot - landed} ms after"
    w.run(lambda: w.got("P") is not None, limit_ms=120_000)
    lost_q = w.of("Q", gd.Gone)
    assert lost_q and "taken over by n1 (node 1" in lost_q[0][1].lost, lost_q
    t_p, got_p = w.got("P")
    # Hence never two holders: P holds (epoch 3) only after Q's lease ran out and Q knew it.
    q_lease = w.of("Q", gd.Lease)[-1][1]
    assert got_p.epoch == 3 and t_p >= q_lease.takeover_ms and t_p > lost_q[0][0], (t_p, q_lease)


# --------------------------------------------------------------------------------------------
# Schedules B and C: a third node after a late landing


def test_schedule_b_a_third_node_watches_for_the_ceiling_in_the_later_ballot():
    """On disk after schedule A's landing: P's stale block of epoch 1 (a 1 s interval), P's
    ballot at instance 1, and Q's at instance 2 carrying the ceiling of Q's 20 s interval. R (a
    1 s interval) must watch at least C(Q's ceiling): Q may hold epoch 2 under P's block for
    that long. Not C(P's interval), which the block advertises."""
    w = World()
    p, q, r = claimant(1), claimant(2, interval_ms=20_000), claimant(3)
    w.poke_seq(seq_block(p, epoch=1))
    w.poke_ballot(accepted(p, 1))
    w.poke_ballot(accepted(q, 2, basis_epoch=0))
    assert q.ceiling_ms == 160_000
    w.guard("R", r)
    first_ballot = w.first_write("R", w.loc.ballot_pos(3), limit_ms=400_000)
    assert first_ballot >= classic_wait_ms(q.ceiling_ms), f"R balloted at {first_ballot} ms"
    w.run(lambda: w.got("R") is not None, limit_ms=60_000)
    assert w.got("R")[1].epoch == 3


def test_schedule_c_a_stale_clean_over_a_later_epoch_is_watched():
    """P released epoch 1, but its CLEAN write was held in the stack and landed over Q's
    epoch-2 block. R sees CLEAN (epoch 1) and Q's accepted ballot at instance 2: Q may hold
    epoch 2 for up to C(Q's ceiling) more. R must watch (CL2), not claim through the ballot."""
    w = World()
    p, q, r = claimant(1), claimant(2), claimant(3)
    w.poke_seq(seq_block(p, epoch=1, seq=mf.SEQ_CLEAN))
    w.poke_ballot(accepted(p, 1))
    w.poke_ballot(accepted(q, 2, basis_epoch=1))
    w.guard("R", r)
    first_ballot = w.first_write("R", w.loc.ballot_pos(3))
    assert first_ballot >= classic_wait_ms(q.ceiling_ms), f"R balloted at {first_ballot} ms"
    w.run(lambda: w.got("R") is not None, limit_ms=60_000)
    assert w.got("R")[1].epoch == 3


# --------------------------------------------------------------------------------------------
# Schedule D: a ballot write of unknown outcome


@pytest.mark.parametrize("completes_at_ms", [None, 15_000])
def test_schedule_d_a_timed_out_ballot_write_blocks_its_sector(completes_at_ms):
    """Our phase-1 ballot write hangs: at its deadline (WRITE_DEADLINE_MS) the guard gives it
    up (GD1) and retries. That write may still land (F1): an older accepted value of ours must
    never overwrite a newer one (Disk Paxos: a node's sector never goes back). So no write to
    our ballot sector until the hung one completes, or write_land_max_ms after its issue (LG1,
    GD2). It lands at 14 s; it completes at 15 s, or never."""
    w = World()
    w.guard("N", claimant(1), wait_ms=120_000)
    pos = w.loc.ballot_pos(1)
    hung = w.hold_write("N", lambda req: req.offset == pos)
    w.run(lambda: hung.req is not None)
    issued = hung.t
    w.land(hung, issued + 14_000, None if completes_at_ms is None else issued + completes_at_ms)
    again = w.first_write("N", pos, after_ms=issued)
    free_at = issued + (WRITE_LAND_MAX_MS if completes_at_ms is None else completes_at_ms)
    assert again >= free_at, f"our ballot sector written again {again - issued} ms after the hung write's issue"
    assert again < free_at + 1000  # and not much later (a retry every 250 ms)
    w.run(lambda: w.got("N") is not None, limit_ms=120_000)
    assert issued + gd.WRITE_DEADLINE_MS <= w.of("N", gd.GotIt)[0][0]
    assert w.got("N")[1].epoch == 1


# --------------------------------------------------------------------------------------------
# Schedule E: a bump that advertises a shorter interval


def test_schedule_e_a_pending_write_with_a_shorter_interval_shortens_the_lease_at_once():
    """Our last completed write advertised 1394 ms (after one slow cycle of 697 ms, HD-adapt);
    the next bump advertises the base, 228 ms. From its issue on it may land, and a claimant
    that sees it watches C(228) only: the lease counts from it (takeover = issue + 2 x 228 +
    1000), not from the previous write's C(1394)."""
    base, budget = 228, 150
    h = Hold(Acquired(seq_block(claimant(1, base), epoch=1), 0, 5), timing=MmpTiming(base, budget))
    # One slow cycle (verify submitted at 228, write completed 697 ms later) ...
    step = h.on_verify(h.block, None, 228, 233)
    h.issuing(233)
    assert h.on_written(233, 228 + 697) is None
    # ... then fast ones, until the slow one is forgotten: the last write still advertised it.
    t = 228 + 697
    for _ in range(2 * IO_CYCLES_REMEMBERED):
        step = h.on_verify(h.block, None, t, t + 2)
        assert isinstance(step, WriteSeq)
        h.issuing(t + 2)
        assert h.on_written(t + 2, t + 5) is None
        t = max(t + 5, h.due_ms())
        if h.next_interval_ms() == base:
            break
    assert h.block.interval_ms == 1394 and len(h.cycles_ms) == IO_CYCLES_REMEMBERED
    last_issue = h.issued_ms
    assert h.takeover_ms() == last_issue + classic_wait_ms(1394)
    step = h.on_verify(h.block, None, t, t + 3)
    assert isinstance(step, WriteSeq) and step.block.interval_ms == base
    issue = t + 3
    deadline = h.issuing(issue)
    assert h.takeover_ms() == issue + 2 * 228 + 1000 < last_issue + classic_wait_ms(1394)
    assert deadline == h.loss_deadline_ms() == issue + 2 * 228 + 1000 - budget
    assert h.expired(deadline - 1) is None
    assert h.expired(deadline) is not None
    # Completing at that deadline is a loss after the fact (the write may have landed at once).
    out = h.on_written(issue, deadline)
    assert isinstance(out, Lost), out


# --------------------------------------------------------------------------------------------
# CL2: the non-atomic first read


def test_the_final_read_of_a_watch_extends_it_for_a_ballot_the_first_read_missed():
    """P holds epoch 1 (1 s interval) and has stopped bumping. R's first full read samples the
    ballot sectors before Q's accepted ballot at instance 2 (ceiling 8 s) was written, and
    completes after (F2): R starts a watch of C(1 s). Its final full read sees Q's ballot:
    the watch must go on for C(8 s) from the same start."""
    w = World()
    p, q, r = claimant(1), claimant(2), claimant(3)
    w.poke_seq(seq_block(p, epoch=1))
    w.poke_ballot(accepted(p, 1))
    reads: list[int] = []

    def latency(who: str, req: gd.IoRequest):
        if who == "R" and req.op == "read" and req.length == w.loc.span:
            reads.append(w.now)
            if len(reads) == 2:  # the acquisition's first look (the first read is the guard's walk)
                w.at(w.now + 50, lambda: w.poke_ballot(accepted(q, 2, basis_epoch=1)))
                return 1, 200  # sampled at +1, completed at +201: the ballot lands in between
        return None

    w.latency = latency
    w.guard("R", r)
    first_ballot = w.first_write("R", w.loc.ballot_pos(3))
    start = reads[1] + 201
    assert first_ballot >= start + classic_wait_ms(q.ceiling_ms), f"R balloted {first_ballot - start} ms after"
    w.run(lambda: w.got("R") is not None, limit_ms=60_000)
    assert w.got("R")[1].epoch == 3


# --------------------------------------------------------------------------------------------
# FP6


@pytest.mark.parametrize("info", [PeerInfo(NodeState.LEFT, generation=0x1001),
                                  PeerInfo(NodeState.DEAD, generation=0x1001, fenced=True)],
                         ids=["left-cleanly", "dead-fenced"])
def test_fp6_no_fast_path_when_a_later_epoch_was_proposed(info):
    """P's stale block, Q's accepted ballot at instance 2. What R's daemon knows of P's node
    (left cleanly, or fenced) says nothing of Q, which may hold epoch 2 under P's block: R
    watches C(Q's ceiling) instead of taking P's block over at once."""
    w = World()
    p, q, r = claimant(1), claimant(2), claimant(3)
    assert info.generation == p.generation
    w.poke_seq(seq_block(p, epoch=1))
    w.poke_ballot(accepted(p, 1))
    w.poke_ballot(accepted(q, 2, basis_epoch=0))
    w.guard("R", r, peer_info=lambda node_id: info if node_id == 1 else None)
    first_ballot = w.first_write("R", w.loc.ballot_pos(3))
    assert first_ballot >= classic_wait_ms(q.ceiling_ms), f"R balloted at {first_ballot} ms"
    w.run(lambda: w.got("R") is not None, limit_ms=60_000)
    assert "unchanged for the classic wait" in w.got("R")[1].note


# --------------------------------------------------------------------------------------------
# CL3: a holder fenced while we watch


@pytest.mark.parametrize("fenced_at_ms", [1_000, None])
def test_cl3_a_holder_fenced_during_the_watch_ends_it_with_a_new_look(fenced_at_ms):
    """P's block sits unchanged (P is dead, not fenced): R watches it for C(I) = 3 s. When R's
    daemon learns at 1 s that P was fenced (FP0), R looks again and takes it over then; never
    fenced, R waits the whole watch."""
    w = World()
    p, r = claimant(1), claimant(3)
    w.poke_seq(seq_block(p, epoch=1))
    w.poke_ballot(accepted(p, 1))

    def info(node_id):
        if node_id != 1:
            return None
        fenced = fenced_at_ms is not None and w.now >= fenced_at_ms
        return PeerInfo(NodeState.DEAD, generation=p.generation, fenced=fenced)

    w.guard("R", r, peer_info=info)
    first_ballot = w.first_write("R", w.loc.ballot_pos(3))
    w.run(lambda: w.got("R") is not None, limit_ms=60_000)
    if fenced_at_ms is None:
        assert first_ballot >= classic_wait_ms(p.interval_ms)
        assert "classic wait" in w.got("R")[1].note
    else:
        assert fenced_at_ms <= first_ballot < fenced_at_ms + 500, f"R balloted at {first_ballot} ms"
        assert "stopped writing" in w.got("R")[1].note


# --------------------------------------------------------------------------------------------
# The acquisition's transition table (h2's rule: a pair not in the table is a protocol error)

STEP_TYPES = (ReadResource, ReadSeq, WriteBallot, WriteSeq, Acquired, Refusal, NotOurs)
ANSWERED_BY = {ReadResource: {Input.RESOURCE}, ReadSeq: {Input.SEQ}, WriteBallot: {Input.WRITTEN},
               WriteSeq: {Input.WRITTEN, Input.TOO_LATE}}
ME = claimant(1, 1000)
OTHER = claimant(2, 1000)


def fresh(**kw) -> Acquisition:
    return Acquisition(ME, uuid=UUID, slot_count=SLOTS, sector_size=S, rand=random.Random(7).randrange, **kw)


def feed(m: Acquisition, inp: Input, args: tuple):
    return {Input.START: m.start, Input.RESOURCE: m.on_resource, Input.SEQ: m.on_seq,
            Input.WRITTEN: m.on_written, Input.TOO_LATE: m.write_too_late}[inp](*args)


def dummy_args(inp: Input) -> tuple:
    view = mf.ResourceView(None, None, {}, {})
    return {Input.START: (0,), Input.RESOURCE: (view, 0, 1), Input.SEQ: (None, None, 0, 1),
            Input.WRITTEN: (0, 1), Input.TOO_LATE: (0,)}[inp]


@pytest.mark.parametrize("phase", list(Phase))
@pytest.mark.parametrize("inp", list(Input))
def test_every_pair_outside_the_transition_table_is_a_protocol_error(phase, inp):
    m = fresh()
    m.phase = phase
    if (phase, inp) in TRANSITIONS:
        assert callable(getattr(m, TRANSITIONS[(phase, inp)]))
        return
    with pytest.raises(ProtocolError):
        feed(m, inp, dummy_args(inp))
    assert m.phase is phase  # refused before anything changed


def test_the_table_covers_every_phase_but_done():
    assert {ph for ph, _ in TRANSITIONS} == set(Phase) - {Phase.DONE}
    assert all(hasattr(Acquisition, name) for name in TRANSITIONS.values())


# Data for random drives: blocks and ballots a disk may show (ours, another node's, stale ...).
SEQS = st.sampled_from([
    None,
    seq_block(OTHER, epoch=1),
    seq_block(OTHER, epoch=2, seq=77),
    seq_block(OTHER, epoch=1, seq=mf.SEQ_CLEAN),
    seq_block(OTHER, epoch=3, seq=mf.SEQ_FSCK),
    seq_block(ME, epoch=1),
    seq_block(claimant(1, 1000, generation=0x99), epoch=2),
])


@st.composite
def other_ballots(draw) -> dict[int, mf.Ballot]:
    """Other nodes' sectors: empty, started (mbal only) or accepted, at some instance."""
    out: dict[int, mf.Ballot] = {}
    for node in (2, 3):
        if draw(st.integers(0, 2)) == 0:
            who = claimant(node, 1000)
            lver = draw(st.integers(1, 4))
            mbal = draw(st.integers(1, 2)) * 8192 + node
            won = draw(st.booleans())
            out[node] = mf.Ballot(node_id=node, lver=lver, mbal=mbal, bal=mbal if won else 0,
                                  inp=proposal(who) if won else None, uuid=UUID,
                                  writer_generation=who.generation, resource="db")
    return out


def read_view(data, m: Acquisition, disk: dict) -> mf.ResourceView:
    """What a full read shows: the disk as it is, our sector mostly what we wrote, rarely an error."""
    ballots = dict(disk["others"])
    if m.mine is not None and data.draw(st.integers(0, 5)) > 0:
        ballots[ME.node_id] = m.mine
    if data.draw(st.integers(0, 40)) == 0:
        return mf.ResourceView(None, "MMP block checksum mismatch", ballots, {})
    if data.draw(st.integers(0, 40)) == 0:
        return mf.ResourceView(disk["seq"], None, ballots, {4: "ballot checksum mismatch"})
    return mf.ResourceView(disk["seq"], None, ballots, {})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_inputs_get_valid_steps_or_a_protocol_error(data):
    """h2's property: from any phase, an input in the table is handled and answers with a step
    whose own answer the new phase takes (or an outcome, after which nothing is taken); any
    other input raises ProtocolError and changes nothing."""
    m = fresh(allow_fsck=data.draw(st.booleans()), stale_self_ok=data.draw(st.booleans()))
    disk = {"seq": data.draw(SEQS), "others": data.draw(other_ballots())}
    now = 0
    expect = {Input.START}
    for _ in range(data.draw(st.integers(1, 80))):
        if data.draw(st.integers(0, 12)) == 0:  # someone else writes meanwhile
            disk["seq"] = data.draw(SEQS)
        if data.draw(st.integers(0, 12)) == 0:
            disk["others"] = data.draw(other_ballots())
        if expect and data.draw(st.integers(0, 5)) > 0:
            inp = data.draw(st.sampled_from(sorted(expect, key=lambda i: i.value)))
        else:
            inp = data.draw(st.sampled_from(list(Input)))
        sub, now = now, now + data.draw(st.one_of(st.integers(0, 600), st.integers(0, 30_000)))
        if inp is Input.RESOURCE:
            args = (read_view(data, m, disk), sub, now)
        elif inp is Input.SEQ:
            args = (disk["seq"], None, sub, now) if data.draw(st.integers(0, 30)) else (None, "unreadable", sub, now)
        elif inp is Input.WRITTEN:
            args = (sub, now)
            if m.phase is Phase.COMMIT_WRITE and data.draw(st.integers(0, 3)) > 0:
                disk["seq"] = m.commit  # our seq write landed
        else:
            args = (now,)
        before = m.phase
        if (before, inp) not in TRANSITIONS:
            with pytest.raises(ProtocolError):
                feed(m, inp, args)
            assert m.phase is before
            continue
        step = feed(m, inp, args)
        assert isinstance(step, STEP_TYPES), step
        event(f"{before.value} -> {m.phase.value}")  # pytest --hypothesis-show-statistics
        if isinstance(step, (Acquired, Refusal, NotOurs)):
            assert m.phase is Phase.DONE
            expect = set()
            continue
        expect = ANSWERED_BY[type(step)]
        assert all((m.phase, i) in TRANSITIONS for i in expect), (m.phase, step)
        if isinstance(step, WriteBallot):
            assert step.ballot.node_id == ME.node_id and step.ballot.writer_generation == ME.generation
        if isinstance(step, WriteSeq):
            assert step.block.holder_id == ME.node_id and step.issue_by_ms <= step.deadline_ms
            if data.draw(st.booleans()):
                m.committing(now)  # the driver issued it
