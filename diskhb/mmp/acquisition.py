"""Acquiring one MMP block: the claimant's rules, free of I/O.

The machine is told what a read showed and when (monotonic `now_ms`, each read's submission and
completion) and answers with the next step (diskhb.mmp.steps). Its phases and the inputs each
phase takes are one table (_TRANSITIONS): anything not in it is a ProtocolError.

WHY TWO CLAIMANTS NEVER BOTH HOLD (with the holder's rules of diskhb.mmp.hold, under the fault
model of diskhb.core.timing: writes land late, reads sample each sector at its own moment)

  CL1 BALLOT. Nobody writes the seq block for epoch L but the proposer chosen by Disk Paxos
      instance L (diskhb.mmp.paxos; Gafni & Lamport, "Disk Paxos", 2003). Paxos decides at most
      one proposal per instance under any interleaving of reads and writes. ext4's "read CLEAN
      -> write" has no such step: two nodes that both read CLEAN both write.
  CL2 WATCH. A claimant takes a block over from someone who may hold it only after the block's
      identity (seq, epoch, holder, generation) stood unchanged from the completion of a first
      read to the submission of a final full read, for at least C(I_w) = 2 I_w + 1 s, where
      I_w is the largest of: the interval the block advertises (when held or FSCK), and the
      ceilings (timing.mmp_ceiling_ms) of every proposal accepted in a ballot at an instance
      past the block's epoch, as seen by the first and by the final read (sectors of one read
      are sampled at their own moments: the final read, submitted after the first completed,
      sees every ballot written before the block's state was first seen). A holder whose own
      block was overwritten by a late landing of someone else's write (or a stale CLEAN) is such
      a later proposal: it stops within its lease, which is shorter than C(its ceiling) from the
      landing (hold.py HD-loss), and the watch starts after the landing. Claims over a
      CLEAN or empty block with such later proposals watch too (schedule C).
  CL3 FAST PATHS (diskhb.mmp.fast_path) only decide whether CL2's watch may be skipped: never
      when a ballot has gone past the block's epoch (FP6). A holder that becomes released or
      fenced (FP0) while we watch its unchanged block (no later proposal seen) ends the watch,
      once per acquisition: we look again from a new full read, exactly as a new acquisition
      would (FP6 included).
  CL4 OWN STALE BLOCK. A block of this very process that it gave up on (its write or read-back
      was too slow to hold on; the write has completed, or LG1 kept us from writing since) is
      claimed over at once, through the ballot, only if no ballot has gone past its epoch;
      otherwise CL2 applies to it like to anyone's.
  CL5 COMMIT. The winner writes its seq block only after a commit check read shows the block it
      based its proposal on and no ballot of a later instance; it issues the write within
      COMMIT_WINDOW_MS of that read's submission and gives the claim up (stale own block, CL4)
      if the write took longer than COMMIT_WINDOW_MS. A claimant that goes past pending
      instances waits 2 x COMMIT_WINDOW_MS after its phase-1 write completed before its commit
      check, so a stalled winner's check saw our instance and aborted, or its write landed and we
      see it (liveness; CL2 and HD-loss keep it safe even if the write lands later still).
  CL6 SECTORS. Our ballot sector is never written while an older write of ours to it may still
      land (diskhb.mmp.ledger LG1; the driver checks before it writes).
  CL7 LIMITS. LOOKS_MAX decisions, BALLOT_ATTEMPTS_MAX lost rounds and COMMIT_CHECKS_MAX slow
      checks per acquisition; every watch and backoff bounded.
A block that changes while we watch or ballot shows a live writer: we look again and refuse
naming it (or claim it normally if it was released).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from diskhb.core.timing import MMP_COMMIT_WINDOW_MS, classic_wait_ms
from diskhb.mmp import paxos
from diskhb.mmp.binding import bound_name
from diskhb.mmp.fast_path import PeerInfoFn, Verdict, fast_path
from diskhb.mmp.format import SEQ_MAX, Ballot, Proposal, ResourceView, SeqBlock
from diskhb.mmp.steps import (
    Acquired,
    Claimant,
    Identity,
    NotOurs,
    ReadResource,
    ReadSeq,
    Refusal,
    Step,
    WriteBallot,
    WriteSeq,
    identity,
    who,
)

COMMIT_WINDOW_MS = MMP_COMMIT_WINDOW_MS
BALLOT_ATTEMPTS_MAX = 64  # rounds lost to other proposers before we give up (retry later)
LOOKS_MAX = 256  # decisions per acquisition (each follows a read); bounds every loop
COMMIT_CHECKS_MAX = 8  # commit-check reads too slow (or writes issued too late) to commit on
BACKOFF_MS_MAX = 2000  # random pause after losing a ballot round (breaks duelling proposers):
BACKOFF_MS_MIN = 4  # up to (last round's duration x 2^lost rounds), within these bounds
POLL_MS_MIN, POLL_MS_MAX = 10, 250  # watch polls: fast enough to refuse within one interval


class ProtocolError(AssertionError):
    """An input the current phase does not take: a bug in the driver."""


def poll_ms(interval_ms: int) -> int:
    return max(POLL_MS_MIN, min(POLL_MS_MAX, interval_ms // 4))


class Phase(enum.Enum):
    NEW = "new"
    LOOK = "look"  # a full read is coming: decide what to do with the block
    WATCH = "watch"  # polling the seq block for the classic wait (CL2)
    WATCH_FINAL = "watch_final"  # the full read that may end the watch
    CHANGED = "changed"  # the block moved: a full read tells what changed
    P1 = "p1"  # our phase-1 ballot write is in flight
    P1_READ = "p1_read"
    P2 = "p2"
    P2_READ = "p2_read"
    COMMIT_CHECK = "commit_check"  # the read our seq write rests on (CL5)
    COMMIT_WRITE = "commit_write"
    COMMIT_VERIFY = "commit_verify"  # reading our seq write back
    DONE = "done"


class Input(enum.Enum):
    START = "start"
    RESOURCE = "resource"  # a full read (seq block + every ballot sector)
    SEQ = "seq"  # a read of the seq block only
    WRITTEN = "written"  # our write completed
    TOO_LATE = "too_late"  # our seq write could not be issued by its issue_by_ms


# (phase, input) -> handler name. Anything not in this map is invalid (h2's rule).
_TRANSITIONS: dict[tuple[Phase, Input], str] = {
    (Phase.NEW, Input.START): "_start",
    (Phase.LOOK, Input.RESOURCE): "_decide",
    (Phase.WATCH, Input.SEQ): "_watch_poll",
    (Phase.WATCH_FINAL, Input.RESOURCE): "_watch_final",
    (Phase.CHANGED, Input.RESOURCE): "_after_change",
    (Phase.P1, Input.WRITTEN): "_p1_written",
    (Phase.P1_READ, Input.RESOURCE): "_after_p1",
    (Phase.P2, Input.WRITTEN): "_p2_written",
    (Phase.P2_READ, Input.RESOURCE): "_after_p2",
    (Phase.COMMIT_CHECK, Input.RESOURCE): "_commit_check",
    (Phase.COMMIT_WRITE, Input.WRITTEN): "_commit_written",
    (Phase.COMMIT_WRITE, Input.TOO_LATE): "_commit_too_late",
    (Phase.COMMIT_VERIFY, Input.SEQ): "_commit_verified",
}
TRANSITIONS = _TRANSITIONS  # read-only for tests


@dataclass(slots=True)
class _Watch:
    ident: Identity
    started_ms: int  # completion of the first read that showed `ident`
    interval_ms: int  # I_w: the wait is classic_wait_ms(interval_ms) from started_ms
    poll_ms: int
    who: str
    holder_only: bool = True  # no later proposal was seen: the block's holder is the one to wait for (CL3)

    @property
    def end_ms(self) -> int:
        return self.started_ms + classic_wait_ms(self.interval_ms)


def later_proposals(view: ResourceView, me: Claimant, own_commits: frozenset[int]) -> list[tuple[int, Proposal]]:
    """(lver, proposal) accepted in ballots past the seq block's epoch: claims in progress, or
    holders whose block a late landing overwrote (CL2). Our own proposals at instances where we
    never issued a seq write cannot have made anyone a holder (only the chosen proposer writes,
    CL1): they are left out."""
    out = []
    for b in view.ballots.values():
        if b.lver > view.epoch and b.inp is not None:
            p = b.inp
            if p.node_id == me.node_id and p.generation == me.generation and b.lver not in own_commits:
                continue
            out.append((b.lver, p))
    return out


class Acquisition:
    """One attempt to acquire one block for `me.resource`. Drive it: start(), then feed each
    completed I/O to on_resource / on_seq / on_written (or write_too_late) until a final step
    (Acquired, Refusal, NotOurs). `rand(n)` returns an int in [0, n) (seq values, backoff)."""

    def __init__(self, me: Claimant, *, uuid: bytes, slot_count: int, sector_size: int,
                 rand: Callable[[int], int], peer_info: PeerInfoFn | None = None,
                 allow_fsck: bool = False, stale_self_ok: bool = False,
                 stale_own: frozenset[Identity] = frozenset(), own_commits: frozenset[int] = frozenset()):
        if not 1 <= me.node_id <= slot_count:
            raise ValueError("a claimant needs a ballot sector: node id <= slot count")
        self.me = me
        self.uuid = uuid
        self.slot_count = slot_count
        self.sector_size = sector_size
        self.peer_info = peer_info
        self.rand = rand
        self.allow_fsck = allow_fsck  # `mmp clear`: the ballot takes over an FSCK block
        # `release --force`: a holder that is this node under an earlier generation is watched
        # like any other holder (taken over only if its seq stands still), instead of refused.
        self.stale_self_ok = stale_self_ok
        self.stale_own = stale_own  # CL4: blocks of this process it gave up on
        self.own_commits = set(own_commits)  # instances at which this process issued a seq write
        self.phase = Phase.NEW
        self.entitled: Identity | None = None  # seq identity we may claim over (watched or free)
        self.basis: SeqBlock | None = None
        self.min_lver = 1
        self.watch: _Watch | None = None
        self._relooked = False  # CL3
        self.mine: Ballot | None = None
        self.proposal: Proposal | None = None
        self.p1_written_ms = 0
        self.ballots_lost = 0
        self.round_started_ms = 0
        self.looks = 0
        self.slow_commits = 0
        self.commit: SeqBlock | None = None
        self.commit_submitted_ms = 0
        self.note = ""
        self.wall_ms = 0  # the driver keeps this current (display only, never decides)

    # -- entry points (each goes through the transition table) ------------------------------------

    def start(self, now_ms: int) -> Step:
        return self._dispatch(Input.START, now_ms)

    def on_resource(self, view: ResourceView, submitted_ms: int, completed_ms: int) -> Step:
        return self._dispatch(Input.RESOURCE, view, submitted_ms, completed_ms)

    def on_seq(self, seq: SeqBlock | None, error: str | None, submitted_ms: int, completed_ms: int) -> Step:
        return self._dispatch(Input.SEQ, seq, error, submitted_ms, completed_ms)

    def on_written(self, submitted_ms: int, completed_ms: int) -> Step:
        return self._dispatch(Input.WRITTEN, submitted_ms, completed_ms)

    def write_too_late(self, now_ms: int) -> Step:
        return self._dispatch(Input.TOO_LATE, now_ms)

    def _dispatch(self, what: Input, *args) -> Step:
        name = _TRANSITIONS.get((self.phase, what))
        if name is None:
            raise ProtocolError(f"acquisition: input {what.value} in phase {self.phase.value}")
        step = getattr(self, name)(*args)
        if isinstance(step, (Acquired, Refusal, NotOurs)):
            self.phase = Phase.DONE
        return step

    # -- handlers --------------------------------------------------------------------------------

    def _start(self, now_ms: int) -> Step:
        self.phase = Phase.LOOK
        return ReadResource(now_ms)

    def _decide(self, view: ResourceView, submitted_ms: int, completed_ms: int) -> Step:
        return self._look(view, completed_ms)

    def _look(self, view: ResourceView, now_ms: int) -> Step:
        stop = self._bad(view) or self._count_look()
        if stop:
            return stop
        try:
            bound = bound_name(view)
        except ValueError as e:
            return Refusal(f"{self.me.resource}: {e}; nothing was written", False)
        if bound is not None and bound != self.me.resource:
            return NotOurs(bound)
        seq, me = view.seq, self.me
        ident = identity(seq)
        later = later_proposals(view, me, frozenset(self.own_commits))
        if self.entitled == ident:
            return self._ballot(view, now_ms)
        if seq is not None and seq.state == "fsck" and not self.allow_fsck:
            return Refusal(f"{me.resource}: marked FSCK by {who(seq)} (repair in progress);"
                           f" run 'diskhb mmp clear {me.resource}' when it is done", True, who(seq))
        if seq is None or seq.state in ("clean", "fsck"):
            if later:  # CL2: a later claim may hold it under an overwritten block
                return self._start_watch(ident, now_ms, later, 0, "a claim in progress",
                                         note=f"{'free' if seq is None else seq.state}, after a claim in progress")
            self.note = "free" if seq is None else seq.state
            self.entitled = ident
            return self._ballot(view, now_ms)
        if ident in self.stale_own:
            if view.max_lver <= seq.epoch:  # CL4
                self.entitled = ident
                self.note = "over our own abandoned write"
                return self._ballot(view, now_ms)
            return self._start_watch(ident, now_ms, later, seq.interval_ms, who(seq),
                                     note=f"taken over from our own abandoned write after the watch")
        if seq.holder_id == me.node_id and not self.stale_self_ok:
            if seq.holder_generation == me.generation:
                return Refusal(f"{me.resource}: already held by this very process", False)
            return Refusal(
                f"{me.resource}: held by this node ({seq.holder_name}, node {me.node_id}) under an"
                f" earlier generation {seq.holder_generation:#x}: another diskhb process of this node"
                f" holds it or died holding it; stop it, or if it is gone run"
                f" 'diskhb mmp release {me.resource} --force'", False, who(seq))
        info = self.peer_info(seq.holder_id) if self.peer_info is not None else None
        verdict, why = fast_path(seq.holder_id, seq.holder_generation, info,
                                 later_epoch_proposed=view.max_lver > seq.epoch)
        if verdict is Verdict.REFUSE:
            return Refusal(f"{me.resource}: held by {who(seq)}, epoch {seq.epoch} ({why})", True, who(seq))
        if verdict is Verdict.TAKE_OVER:
            self.entitled = ident
            self.note = f"taken over from {who(seq)}: {why}"
            return self._ballot(view, now_ms)
        return self._start_watch(ident, now_ms, later, seq.interval_ms, who(seq),
                                 note=f"taken over from {who(seq)}: unchanged for the classic wait")

    def _start_watch(self, ident: Identity, now_ms: int, later: list[tuple[int, Proposal]], interval_ms: int,
                     name: str, *, note: str) -> Step:
        """CL2: watch the block from now (the completion of the read that showed it)."""
        interval = max([interval_ms] + [p.interval_ms for _, p in later])
        self.watch = _Watch(ident, now_ms, interval, poll_ms(interval), name, holder_only=not later)
        self.note = note
        self.phase = Phase.WATCH
        return ReadSeq(min(now_ms + self.watch.poll_ms, self.watch.end_ms))

    def _watch_poll(self, seq: SeqBlock | None, error: str | None, submitted_ms: int, completed_ms: int) -> Step:
        w = self.watch
        assert w is not None
        if error is not None or identity(seq) != w.ident:
            self.phase = Phase.CHANGED  # look at everything again before saying what changed
            return ReadResource(completed_ms)
        if submitted_ms >= w.end_ms:
            self.phase = Phase.WATCH_FINAL
            return ReadResource(completed_ms)
        holder, generation = w.ident[2], w.ident[3]
        if holder and w.holder_only and not self._relooked and self.peer_info is not None:  # CL3: fenced meanwhile
            info = self.peer_info(holder)
            if info is not None and info.fenced and info.generation == generation:
                self._relooked = True  # once: a look that watches again watches to the end
                self.watch = None
                self.phase = Phase.LOOK
                return ReadResource(completed_ms)
        return ReadSeq(min(completed_ms + w.poll_ms, w.end_ms))

    def _watch_final(self, view: ResourceView, submitted_ms: int, completed_ms: int) -> Step:
        w = self.watch
        assert w is not None
        if view.seq_error is not None or identity(view.seq) != w.ident:
            self.phase = Phase.CHANGED
            return self._after_change(view, submitted_ms, completed_ms)
        later = later_proposals(view, self.me, frozenset(self.own_commits))
        wider = max([w.interval_ms] + [p.interval_ms for _, p in later])
        if wider > w.interval_ms:  # CL2: a ballot the first read missed calls for a longer wait
            w.interval_ms, w.poll_ms = wider, poll_ms(wider)
        if later:
            w.holder_only = False  # CL3: the block may not be the holder's (FP6)
        if submitted_ms < w.end_ms:
            self.phase = Phase.WATCH
            return ReadSeq(min(completed_ms + w.poll_ms, w.end_ms))
        # Unchanged from the first read's completion to this read's submission, for the whole
        # wait: nobody bumps it, and every later claim has had its holder's lease run out.
        self.entitled = w.ident
        if later:  # go past every pending instance: each may have chosen someone (CL5 then waits)
            self.min_lver = max(self.min_lver, max(lver for lver, _ in later) + 1)
        self.watch = None
        self.phase = Phase.LOOK
        return self._look(view, completed_ms)

    def _after_change(self, view: ResourceView, submitted_ms: int, completed_ms: int) -> Step:
        """The block changed while we watched (or while we balloted): a live writer."""
        stop = self._bad(view)
        if stop:
            return stop
        seq = view.seq
        self.watch = None
        self.phase = Phase.LOOK
        if seq is None or seq.state == "clean":
            return self._look(view, completed_ms)  # released meanwhile: claim it normally
        if seq.resource != self.me.resource:
            return NotOurs(seq.resource)
        if seq.state == "fsck" and not self.allow_fsck:
            return self._look(view, completed_ms)  # says FSCK, once
        return Refusal(f"{self.me.resource}: held by {who(seq)}, epoch {seq.epoch}: its MMP block"
                       " changed while we watched (a live holder)", True, who(seq))

    # -- the ballot ------------------------------------------------------------------------------

    def _ballot(self, view: ResourceView, now_ms: int) -> Step:
        me, seq = self.me, view.seq
        lver = max(view.max_lver, view.epoch + 1, self.min_lver)
        self.basis = seq
        self.proposal = Proposal(
            node_id=me.node_id, generation=me.generation, holder_name=me.holder_name,
            resource=me.resource, interval_ms=me.ceiling_ms, basis_epoch=view.epoch,
            basis_seq=seq.seq if seq is not None else 0, basis_holder=seq.holder_id if seq else 0,
        )
        self.mine = paxos.start_ballot(me.node_id, lver, view.ballots, uuid=self.uuid,
                                       writer_generation=me.generation, resource=me.resource,
                                       wall_ms=self.wall_ms)
        self.phase = Phase.P1
        self.round_started_ms = now_ms
        return WriteBallot(self.mine)

    def _p1_written(self, submitted_ms: int, completed_ms: int) -> Step:
        self.phase = Phase.P1_READ
        self.p1_written_ms = completed_ms
        return ReadResource(completed_ms)

    def _p2_written(self, submitted_ms: int, completed_ms: int) -> Step:
        self.phase = Phase.P2_READ
        return ReadResource(completed_ms)

    def _round_over(self, outcome, now_ms: int) -> Step | None:
        """Handle Abort / Conflict; None when the outcome is a value to go on with."""
        if isinstance(outcome, paxos.Conflict):
            return Refusal(f"{self.me.resource}: {outcome.reason}; check node ids", False)
        if isinstance(outcome, paxos.Abort):
            self.phase = Phase.LOOK
            if outcome.later_lver:
                return ReadResource(now_ms)
            self.ballots_lost += 1
            if self.ballots_lost > BALLOT_ATTEMPTS_MAX:
                return Refusal(f"{self.me.resource}: lost {BALLOT_ATTEMPTS_MAX} ballot rounds to other"
                               " claimants; try again", True)
            round_ms = max(BACKOFF_MS_MIN, now_ms - self.round_started_ms)
            cap = min(BACKOFF_MS_MAX, round_ms << min(self.ballots_lost, 6))
            return ReadResource(now_ms + 1 + self.rand(cap))
        return None

    def _after_p1(self, view: ResourceView, submitted_ms: int, completed_ms: int) -> Step:
        stop = self._bad(view)
        if stop:
            return stop
        assert self.mine is not None and self.proposal is not None
        out = paxos.after_phase1(self.mine, view.ballots, self.proposal, wall_ms=self.wall_ms)
        stop = self._round_over(out, completed_ms)
        if stop:
            return stop
        self.mine = out
        self.phase = Phase.P2
        return WriteBallot(out)

    def _after_p2(self, view: ResourceView, submitted_ms: int, completed_ms: int) -> Step:
        stop = self._bad(view)
        if stop:
            return stop
        assert self.mine is not None
        out = paxos.after_phase2(self.mine, view.ballots)
        stop = self._round_over(out, completed_ms)
        if stop:
            return stop
        assert isinstance(out, paxos.Chosen)
        return self._chosen(out.value, out.lver, view, submitted_ms, completed_ms)

    def _chosen(self, value: Proposal, lver: int, view: ResourceView, submitted_ms: int,
                completed_ms: int) -> Step:
        me, seq = self.me, view.seq
        if value.resource != me.resource:
            return NotOurs(value.resource)  # instance 1 bound this block to another name
        if identity(seq) != identity(self.basis):
            self.phase = Phase.CHANGED  # the block moved while we balloted
            return self._after_change(view, submitted_ms, completed_ms)
        basis_now = (view.epoch, seq.seq if seq else 0, seq.holder_id if seq else 0)
        ours = value.node_id == me.node_id and value.generation == me.generation
        if ours and (value.basis_epoch, value.basis_seq, value.basis_holder) == basis_now:
            self.phase = Phase.COMMIT_CHECK
            if lver > view.epoch + 1:  # CL5: we skip a pending instance: let a late commit land first
                return ReadResource(max(completed_ms, self.p1_written_ms + 2 * COMMIT_WINDOW_MS))
            return self._commit_check(view, submitted_ms, completed_ms)
        # Someone else won instance lver (or our value of an older basis did): whoever it is may
        # be writing its seq block right now, or may hold the epoch under a block a late landing
        # overwrote. The ballots now show it past the block's epoch: CL2 decides (a watch).
        self.entitled = None
        self.phase = Phase.LOOK
        return self._look(view, completed_ms)

    # -- committing ------------------------------------------------------------------------------

    def _commit_check(self, view: ResourceView, submitted_ms: int, completed_ms: int) -> Step:
        stop = self._bad(view)
        if stop:
            return stop
        assert self.mine is not None and self.phase is Phase.COMMIT_CHECK
        if identity(view.seq) != identity(self.basis):
            self.phase = Phase.CHANGED
            return self._after_change(view, submitted_ms, completed_ms)
        if view.max_lver > self.mine.lver or view.ballots.get(self.me.node_id) != self.mine:
            self.phase = Phase.LOOK  # someone moved past our instance, or our sector changed
            return ReadResource(completed_ms)
        if completed_ms - submitted_ms > COMMIT_WINDOW_MS:  # too slow a read to rest a write on: again
            return self._slow_commit(f"our check read took {completed_ms - submitted_ms} ms"
                                     f" (> {COMMIT_WINDOW_MS} ms)") or ReadResource(completed_ms)
        me = self.me
        self.commit = SeqBlock(
            seq=1 + self.rand(SEQ_MAX), epoch=self.mine.lver, holder_id=me.node_id,
            holder_generation=me.generation, holder_name=me.holder_name, resource=me.resource,
            device=me.device, interval_ms=me.interval_ms, wall_ms=self.wall_ms, uuid=self.uuid,
            slot_count=self.slot_count, sector_size=self.sector_size,
        )
        self.phase = Phase.COMMIT_WRITE
        return WriteSeq(self.commit, submitted_ms + COMMIT_WINDOW_MS,
                        submitted_ms + 2 * COMMIT_WINDOW_MS)

    def committing(self, issued_ms: int) -> None:
        """The driver issued our commit write (it may land from now on)."""
        assert self.phase is Phase.COMMIT_WRITE and self.commit is not None
        self.own_commits.add(self.commit.epoch)
        self.commit_submitted_ms = issued_ms

    def _commit_written(self, submitted_ms: int, completed_ms: int) -> Step:
        assert self.commit is not None
        self.own_commits.add(self.commit.epoch)
        if completed_ms - submitted_ms > COMMIT_WINDOW_MS:
            # CL5: a late landing may have been missed by a claimant that went past us.
            return Refusal(f"{self.me.resource}: our MMP write took {completed_ms - submitted_ms} ms"
                           f" (> {COMMIT_WINDOW_MS} ms): not safe to hold; storage too slow?", True,
                           stale_own=self.commit.identity)
        self.commit_submitted_ms = submitted_ms
        self.phase = Phase.COMMIT_VERIFY
        return ReadSeq(completed_ms)

    def _commit_too_late(self, now_ms: int) -> Step:
        """The driver could not issue the seq write by issue_by_ms: check again first."""
        self.phase = Phase.COMMIT_CHECK
        return self._slow_commit(f"could not issue our MMP write within {COMMIT_WINDOW_MS} ms of its check") \
            or ReadResource(now_ms)

    def _commit_verified(self, seq: SeqBlock | None, error: str | None, submitted_ms: int,
                         completed_ms: int) -> Step:
        assert self.commit is not None
        late = completed_ms - self.commit_submitted_ms
        if late >= self.commit.interval_ms + 1000:
            # HD-issue already passed: the hold could not issue its next write in time.
            return Refusal(f"{self.me.resource}: reading our MMP write back took {late} ms: not safe"
                           " to hold; storage too slow?", True, stale_own=self.commit.identity)
        if error is None and identity(seq) == self.commit.identity:
            return Acquired(self.commit, self.commit_submitted_ms, completed_ms, self.note)
        now = f"{who(seq)}, epoch {seq.epoch}" if seq is not None and seq.state != "clean" else \
            (error or "something else")
        return Refusal(f"{self.me.resource}: our MMP write was overwritten at once by {now}", True)

    # -- helpers ---------------------------------------------------------------------------------

    def _slow_commit(self, what: str) -> Refusal | None:
        """Count a commit that had to be checked again; give up after COMMIT_CHECKS_MAX.
        Without this limit a disk (or a CPU) that is always this slow kept the claimant
        re-checking forever: an acquisition that never returned, --wait or not."""
        self.slow_commits += 1
        if self.slow_commits >= COMMIT_CHECKS_MAX:
            return Refusal(f"{self.me.resource}: {what}, {COMMIT_CHECKS_MAX} times: not safe to hold;"
                           " storage too slow? (our MMP block was not written)", True)
        return None

    def _bad(self, view: ResourceView) -> Refusal | None:
        r = self.me.resource
        if view.seq_error:
            return Refusal(f"{r}: MMP block is unreadable ({view.seq_error}); nothing was written", False)
        if view.ballot_errors:
            node, err = sorted(view.ballot_errors.items())[0]
            return Refusal(f"{r}: ballot sector of node {node} is unreadable ({err});"
                           " nothing was written", False)
        return None

    def _count_look(self) -> Refusal | None:
        self.looks += 1
        if self.looks > LOOKS_MAX:
            return Refusal(f"{self.me.resource}: no decision after {LOOKS_MAX} reads (heavy contention);"
                           " try again", True)
        return None
