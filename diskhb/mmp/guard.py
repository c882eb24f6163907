"""MMP guard: who may claim, hold and lose a resource. Every such rule lives here, free of I/O.

This file does no I/O and reads no clock: it is told what a read showed and when (monotonic
`now_ms`, the read's submission and completion times) and answers with the next step
(read, write this ballot, write this seq block, acquired, refused, lost). The runner
(diskhb.mmp.runner) carries the steps out; a daemon can drive the same machines from its tick.

WHY TWO CONTENDERS CAN NEVER BOTH HOLD
======================================
Holding means: our block is on disk, and at every interval we re-read it, find exactly what we
last wrote, and only then write the next seq. Three mechanisms cover three different threats.

1. Simultaneous claimants (nobody holds: CLEAN, never used, or a holder judged dead).
   They do not race on the seq block. Each runs Disk Paxos instance L = epoch + 1 over its
   own ballot sector (diskhb.mmp.paxos). Paxos decides at most one proposal per instance
   under ANY interleaving and latency of reads and writes (no timing assumption), and only
   the proposer whose proposal was chosen may write the seq block for epoch L. ext4's
   "read CLEAN -> claim at once" has no such step: two nodes that both read CLEAN both
   write, and the earlier one only notices after its sleep -- or never, if its re-read
   came before the other's write landed.
   A proposal names the seq-block state it was based on (basis). The winner writes only
   after a check read shows that exact state still there and no ballot of a later instance
   (the "commit check"); so a winner that stalls after winning cannot write over someone
   who later moved past it, unless it stalls in the microseconds between that check
   and its write syscall (see 4).

2. A live holder (the classic path, ext4's seq watch). A claimant that finds the block held
   watches it: it is judged dead only if the seq block's identity (seq, epoch, holder,
   generation) is unchanged over a window of at least 2 x interval + 1 s measured from the
   first read's completion to the last read's submission (so the window is certain even
   with slow reads). `interval` is the one the holder wrote into the block.
   A holder guarantees a change inside every such window by its own clock:
     H1 it issues each write at most interval + 1 s after issuing the previous one
        (or it gives up without writing: LOST);
     H2 if a write completes 2 x interval + 1 s or more after the previous write was
        issued, readers may have judged it dead in between: LOST (retroactively).
   Landing times lie between issue and completion, so H1+H2 keep every gap between two
   landings below a reader's window: a live holder is never judged dead, and a holder
   that was stopped (SIGSTOP, VM pause, hung I/O) learns it on waking before writing.
   Before every write the holder also re-reads and compares (verify-before-write): if a
   claimant took over, the holder sees it and stops.
   The adaptive interval (ext4's) keeps H1/H2 satisfiable on slow storage: each write
   stores clamp(2 x recent I/O cycle, base interval, 300 s), so readers wait longer.

3. A stalled winner of an earlier instance (it won instance L, then stalled before its
   commit check or its write). Its commit check is its phase-2 read or a later one; it
   writes only if that read completed within COMMIT_WINDOW_MS of its submission, issues
   the write within COMMIT_WINDOW_MS of that submission, and gives the claim up if the
   write took longer than COMMIT_WINDOW_MS to complete. So a winner whose check read
   sampled the disk before time a has its write on disk before a + 2 x COMMIT_WINDOW_MS.
   A claimant that goes past a pending instance (L > epoch + 1) waits 2 x COMMIT_WINDOW_MS
   after its phase-1 write (at lver L) completed before its own commit check: either the
   stalled winner's check saw our later instance and it aborted, or its write has landed
   and our check sees the block changed and we back off. (Safety.)
   Others learn a winner's proposal from the ballot sectors. If its basis no longer matches
   the seq block, its commit check must fail: it is ignored. Otherwise it is judged like a
   holder (fast path, or watched for 2 x interval + 1 s) before instance L + 1 is started,
   so a winner about to commit is not pre-empted, and a loser of a CLEAN race is refused
   as soon as the winner's seq block appears, naming it. (Liveness.)

4. What remains (no software on a plain disk can close it; ext4 and sanlock have the same):
   a process stopped in the microseconds between its last time/identity check and the
   write syscall, or a write held in the I/O stack longer than the windows above, can
   land after a takeover. Both sides then detect it at their next verify (within one
   interval) and run their loss action; meanwhile consumers can reject the stale holder
   by its epoch (a fencing token: +1 at every acquisition). Hardware arbitration
   (SCSI/NVMe reservations, diskhb's fencing) closes it.

Fast paths (a daemon is running and knows the holder node's liveness) only decide whether
the classic watch can be skipped; a take-over still goes through the ballot and the commit
check (the holder must not have moved since we looked). See `fast_path`.

Name binding: a never-used block is bound to a resource name by instance 1 of its ballot;
later instances carry the same name (ballot.resource), so claims on different names that
race into one free block are decided by the same Paxos instance. Blocks are walked in index
order and skipped only once their binding is decided and is another name, so one name is
never bound to two blocks (`classify_block`).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from diskhb.core.types import NodeState
from diskhb.mmp import paxos
from diskhb.mmp.format import (
    INTERVAL_MS_MAX,
    SEQ_CLEAN,
    SEQ_FSCK,
    SEQ_MAX,
    Ballot,
    Proposal,
    ResourceView,
    SeqBlock,
    next_seq,
)

CLASSIC_MARGIN_MS = 1000  # ext4's "+1 s" in 2 x interval + 1 s
COMMIT_WINDOW_MS = 500  # see 3. above
BALLOT_ATTEMPTS_MAX = 64  # rounds lost to other proposers before we give up (retry later)
LOOKS_MAX = 256  # decisions per acquisition (each follows a read); bounds every loop
COMMIT_CHECKS_MAX = 8  # commit-check reads too slow (or writes issued too late) to commit on
BACKOFF_MS_MAX = 2000  # random pause after losing a ballot round (breaks duelling proposers):
BACKOFF_MS_MIN = 4  # up to (last round's duration x 2^lost rounds), within these bounds
POLL_MS_MIN, POLL_MS_MAX = 10, 250  # watch polls: fast enough to refuse within one interval
IO_CYCLES_REMEMBERED = 8  # adaptive interval: the slowest of the recent cycles counts

EMPTY_IDENTITY = (0, 0, 0, 0)  # a never-written seq block


def classic_wait_ms(interval_ms: int) -> int:
    """How long an unchanged block must be watched before its holder is called dead."""
    return 2 * interval_ms + CLASSIC_MARGIN_MS


def poll_ms(interval_ms: int) -> int:
    return max(POLL_MS_MIN, min(POLL_MS_MAX, interval_ms // 4))


def identity(seq: SeqBlock | None) -> tuple[int, int, int, int]:
    return seq.identity if seq is not None else EMPTY_IDENTITY


def who(seq: SeqBlock) -> str:
    return f"{seq.holder_name} (node {seq.holder_id}, generation {seq.holder_generation:#x})"


# --------------------------------------------------------------------------------------------
# Fast paths: the injectable decision a running daemon feeds with what it knows.


class Verdict(enum.Enum):
    REFUSE = "refuse"  # the holder is alive: refuse at once
    TAKE_OVER = "take-over"  # the holder cannot write any more: skip the classic watch
    CLASSIC_WAIT = "classic-wait"  # we know nothing decisive: watch the seq block


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """What a daemon knows of the node named as holder in the block."""

    state: NodeState  # alive / left / dead / unknown (diskhb.core.liveness, any region)
    generation: int = 0  # that node's current daemon generation (0: unknown)
    fenced: bool = False  # its death was confirmed by a fence (I/O fenced or reset)


PeerInfoFn = Callable[[int], "PeerInfo | None"]


def fast_path(holder_id: int, holder_generation: int, info: PeerInfo | None) -> tuple[Verdict, str]:
    """Decide whether the classic watch can be skipped, and which way.

    - alive, and the block's generation is the daemon generation it beats with: the daemon
      itself holds it -> REFUSE now (it bumps every interval; watching would only confirm).
    - alive with another generation: the holder is some other process of that node (an
      `mmp run`, or an earlier incarnation); the node's liveness says nothing about it ->
      CLASSIC_WAIT (its seq decides; a live one is refused within one interval anyway).
    - left cleanly with the same generation: a daemon releases its resources before it
      publishes LEFT -> TAKE_OVER. With another generation -> CLASSIC_WAIT.
    - dead and confirmed fenced: no process of that node can write -> TAKE_OVER.
    - dead without a fence, unknown, or no daemon: CLASSIC_WAIT (a partitioned node looks
      dead on every heartbeat region yet may still write this disk).
    """
    if info is None:
        return Verdict.CLASSIC_WAIT, "no daemon view of the holder"
    same = info.generation != 0 and info.generation == holder_generation
    if info.state is NodeState.ALIVE:
        if same:
            return Verdict.REFUSE, "its daemon is alive"
        return Verdict.CLASSIC_WAIT, "its node is alive, but under another generation"
    if info.state is NodeState.LEFT:
        if same:
            return Verdict.TAKE_OVER, "its daemon left cleanly"
        return Verdict.CLASSIC_WAIT, "its node left, but under another generation"
    if info.state is NodeState.DEAD and info.fenced:
        return Verdict.TAKE_OVER, "its node is dead and fenced"
    if info.state is NodeState.DEAD:
        return Verdict.CLASSIC_WAIT, "its node is dead but not fenced"
    return Verdict.CLASSIC_WAIT, "its node's state is unknown"


# --------------------------------------------------------------------------------------------
# Name binding


def bound_name(view: ResourceView) -> str | None:
    """The resource name the block is bound to, if that is decided and visible.

    A committed seq block names it. Otherwise any ballot at instance >= 2 carries it (an
    instance >= 2 is only started after instance 1 was decided). Else: undetermined.
    """
    if view.seq is not None:
        return view.seq.resource
    names = {b.resource for b in view.ballots.values() if b.lver >= 2}
    if len(names) > 1:
        raise ValueError(f"ballots at later instances disagree on the block's name: {sorted(names)}")
    return names.pop() if names else None


def classify_block(view: ResourceView, name: str) -> str:
    """'ours' | 'other' | 'free' | 'undetermined' | 'corrupt' for the walk over blocks."""
    if view.seq_error or view.ballot_errors:
        return "corrupt"
    try:
        bound = bound_name(view)
    except ValueError:
        return "corrupt"
    if bound is not None:
        return "ours" if bound == name else "other"
    return "free" if not view.ballots else "undetermined"


def pending_names(view: ResourceView) -> set[str]:
    """Names proposed in ballots (for status and 'unknown resource' checks)."""
    out = {b.resource for b in view.ballots.values()}
    out |= {b.inp.resource for b in view.ballots.values() if b.inp is not None}
    return out


# --------------------------------------------------------------------------------------------
# Steps (what the runner must do next)


@dataclass(frozen=True, slots=True)
class ReadResource:
    """Read the seq block and every ballot sector (one contiguous read), not before at_ms."""

    at_ms: int


@dataclass(frozen=True, slots=True)
class ReadSeq:
    """Read only the seq block, not before at_ms."""

    at_ms: int


@dataclass(frozen=True, slots=True)
class WriteBallot:
    ballot: Ballot


@dataclass(frozen=True, slots=True)
class WriteSeq:
    """Write this block. Check the clock right before the write syscall: after issue_by_ms
    it must not be issued (the check it rests on is too old): call write_too_late()."""

    block: SeqBlock
    issue_by_ms: int


@dataclass(frozen=True, slots=True)
class Acquired:
    block: SeqBlock
    submitted_ms: int  # when the acquisition write was issued (H1/H2 count from it)
    completed_ms: int
    note: str = ""  # how we got it (clean, taken over after a watch, fast path, ...)


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str  # one line for the operator
    retry: bool  # a later attempt may succeed (the holder may release); False: bad input
    holder: str | None = None
    # Our own seq block is on disk with this identity, but we gave it up (our write or its
    # read-back was too slow to hold on): a retry by this process may claim over it at once.
    abandoned: tuple[int, int, int, int] | None = None


@dataclass(frozen=True, slots=True)
class NotOurs:
    """The block is bound to another resource name: the walk moves to the next block."""

    bound_to: str


@dataclass(frozen=True, slots=True)
class Lost:
    reason: str


Step = ReadResource | ReadSeq | WriteBallot | WriteSeq | Acquired | Refused | NotOurs | Lost


@dataclass(frozen=True, slots=True)
class Claimant:
    node_id: int
    generation: int
    holder_name: str
    resource: str
    interval_ms: int
    device: str = ""


@dataclass(slots=True)
class _Watch:
    ident: tuple[int, int, int, int]
    deadline_ms: int  # a read submitted at or after this, still unchanged, ends the watch
    poll_ms: int
    who: str
    then_min_lver: int  # instance to start at after the watch (pending winner: its lver + 1)


class Acquisition:
    """One attempt to acquire one block for `me.resource`. Drive it: start(), then feed each
    completed I/O to on_resource / on_seq / on_written until a final step (Acquired,
    Refused, NotOurs). `rand(n)` returns an int in [0, n) (seq values, backoff)."""

    def __init__(self, me: Claimant, *, uuid: bytes, slot_count: int, sector_size: int,
                 rand: Callable[[int], int], peer_info: PeerInfoFn | None = None,
                 allow_fsck: bool = False, stale_self_ok: bool = False,
                 abandoned: tuple[int, int, int, int] | None = None):
        assert 1 <= me.node_id <= slot_count, "a claimant needs a ballot sector: node id <= slot count"
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
        # Refused.abandoned of this process's previous attempt: that block is ours, its write
        # completed (nothing of ours is in flight) and nobody acted on it, so it is claimed over
        # at once, through the ballot, at the next epoch. Without this the retry saw our own
        # generation as holder and refused for good: "already held by this very process".
        self.abandoned = abandoned
        self.phase = "new"
        self.entitled: tuple[int, int, int, int] | None = None  # seq identity we may claim over
        self.basis: SeqBlock | None = None
        self.min_lver = 1
        self.watch: _Watch | None = None
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
        self.wall_ms = 0  # the runner keeps this current (display only, never decides)

    # -- entry points --------------------------------------------------------------------

    def start(self, now_ms: int) -> Step:
        assert self.phase == "new"
        self.phase = "look"
        return ReadResource(now_ms)

    def on_resource(self, view: ResourceView, submitted_ms: int, completed_ms: int) -> Step:
        phase = self.phase
        if phase == "look":
            return self._decide(view, completed_ms)
        if phase == "changed":
            return self._after_change(view, completed_ms)
        if phase == "watch_final":
            return self._watch_final(view, submitted_ms, completed_ms)
        if phase == "p1_read":
            return self._after_p1(view, completed_ms)
        if phase == "p2_read":
            return self._after_p2(view, submitted_ms, completed_ms)
        if phase == "commit_check":
            return self._commit_check(view, submitted_ms, completed_ms)
        raise AssertionError(f"resource read in phase {phase}")

    def on_seq(self, seq: SeqBlock | None, error: str | None, submitted_ms: int, completed_ms: int) -> Step:
        if self.phase == "watch":
            return self._watch_poll(seq, error, submitted_ms, completed_ms)
        if self.phase == "commit_verify":
            assert self.commit is not None
            late = completed_ms - self.commit_submitted_ms
            if late >= self.commit.interval_ms + CLASSIC_MARGIN_MS:
                # H1 already expired: the read may show a state older than a takeover.
                return Refused(f"{self.me.resource}: reading our MMP write back took {late} ms: not safe"
                               " to hold; storage too slow?", True, abandoned=self.commit.identity)
            if error is None and identity(seq) == self.commit.identity:
                return Acquired(self.commit, self.commit_submitted_ms, completed_ms, self.note)
            now = f"{who(seq)}, epoch {seq.epoch}" if seq is not None and seq.state != "clean" else \
                (error or "something else")
            return Refused(f"{self.me.resource}: our MMP write was overwritten at once by {now}", True)
        raise AssertionError(f"seq read in phase {self.phase}")

    def on_written(self, submitted_ms: int, completed_ms: int) -> Step:
        if self.phase == "p1":
            self.phase = "p1_read"
            self.p1_written_ms = completed_ms
            return ReadResource(completed_ms)
        if self.phase == "p2":
            self.phase = "p2_read"
            return ReadResource(completed_ms)
        if self.phase == "commit_write":
            if completed_ms - submitted_ms > COMMIT_WINDOW_MS:
                # Rule 3: a late landing may have been missed by a claimant skipping us.
                return Refused(f"{self.me.resource}: our MMP write took {completed_ms - submitted_ms} ms"
                               f" (> {COMMIT_WINDOW_MS} ms): not safe to hold; storage too slow?", True,
                               abandoned=self.commit.identity)
            self.commit_submitted_ms = submitted_ms
            self.phase = "commit_verify"
            return ReadSeq(completed_ms)
        raise AssertionError(f"write completed in phase {self.phase}")

    def write_too_late(self, now_ms: int) -> Step:
        """The runner could not issue the seq write by issue_by_ms: check again first."""
        assert self.phase == "commit_write"
        self.phase = "commit_check"
        return self._slow_commit(f"could not issue our MMP write within {COMMIT_WINDOW_MS} ms of its check") \
            or ReadResource(now_ms)

    def _slow_commit(self, what: str) -> Refused | None:
        """Count a commit that had to be checked again; give up after COMMIT_CHECKS_MAX.
        Without this limit a disk (or a CPU) that is always this slow kept the claimant
        re-checking forever: an acquisition that never returned, --wait or not."""
        self.slow_commits += 1
        if self.slow_commits >= COMMIT_CHECKS_MAX:
            return Refused(f"{self.me.resource}: {what}, {COMMIT_CHECKS_MAX} times: not safe to hold;"
                           " storage too slow? (our MMP block was not written)", True)
        return None

    # -- deciding --------------------------------------------------------------------------

    def _bad(self, view: ResourceView) -> Refused | None:
        r = self.me.resource
        if view.seq_error:
            return Refused(f"{r}: MMP block is unreadable ({view.seq_error}); nothing was written", False)
        if view.ballot_errors:
            node, err = sorted(view.ballot_errors.items())[0]
            return Refused(f"{r}: ballot sector of node {node} is unreadable ({err});"
                           " nothing was written", False)
        return None

    def _count_look(self) -> Refused | None:
        self.looks += 1
        if self.looks > LOOKS_MAX:
            return Refused(f"{self.me.resource}: no decision after {LOOKS_MAX} reads (heavy contention);"
                           " try again", True)
        return None

    def _decide(self, view: ResourceView, now_ms: int) -> Step:
        stop = self._bad(view) or self._count_look()
        if stop:
            return stop
        try:
            bound = bound_name(view)
        except ValueError as e:
            return Refused(f"{self.me.resource}: {e}; nothing was written", False)
        if bound is not None and bound != self.me.resource:
            return NotOurs(bound)
        seq, me = view.seq, self.me
        ident = identity(seq)
        if seq is not None and seq.state == "fsck" and not (self.allow_fsck or self.entitled == ident):
            return Refused(f"{me.resource}: marked FSCK by {who(seq)} (repair in progress);"
                           f" run 'diskhb mmp clear {me.resource}' when it is done", True, who(seq))
        if seq is None or seq.state in ("clean", "fsck") or self.entitled == ident:
            if self.entitled != ident:
                self.note = "free" if seq is None else seq.state
            self.entitled = ident
            return self._ballot(view, now_ms)
        if self.abandoned is not None and ident == self.abandoned:
            self.entitled = ident
            self.note = "over our own abandoned write"
            return self._ballot(view, now_ms)
        # Held by someone.
        if seq.holder_id == me.node_id and not self.stale_self_ok:
            if seq.holder_generation == me.generation:
                return Refused(f"{me.resource}: already held by this very process", False)
            return Refused(
                f"{me.resource}: held by this node ({seq.holder_name}, node {me.node_id}) under an"
                f" earlier generation {seq.holder_generation:#x}: another diskhb process of this node"
                f" holds it or died holding it; stop it, or if it is gone run"
                f" 'diskhb mmp release {me.resource} --force'", False, who(seq))
        return self._judge_holder(seq.holder_id, seq.holder_generation, who(seq), seq.interval_ms,
                                  ident, now_ms, view, then_min_lver=1, what=f"held by {who(seq)},"
                                  f" epoch {seq.epoch}")

    def _judge_holder(self, node_id: int, generation: int, name: str, interval_ms: int,
                      ident, now_ms: int, view: ResourceView, *, then_min_lver: int, what: str) -> Step:
        info = self.peer_info(node_id) if self.peer_info is not None else None
        verdict, why = fast_path(node_id, generation, info)
        if verdict is Verdict.REFUSE:
            return Refused(f"{self.me.resource}: {what} ({why})", True, name)
        if verdict is Verdict.TAKE_OVER:
            self.entitled = ident
            self.min_lver = max(self.min_lver, then_min_lver)
            self.note = f"taken over from {name}: {why}"
            return self._ballot(view, now_ms)
        self.watch = _Watch(ident, now_ms + classic_wait_ms(interval_ms), poll_ms(interval_ms),
                            name, then_min_lver)
        self.phase = "watch"
        return ReadSeq(now_ms + self.watch.poll_ms)

    def _watch_poll(self, seq, error, submitted_ms: int, completed_ms: int) -> Step:
        w = self.watch
        assert w is not None
        if error is not None or identity(seq) != w.ident:
            self.phase = "changed"  # look at everything again before saying what changed
            return ReadResource(completed_ms)
        if submitted_ms >= w.deadline_ms:
            self.phase = "watch_final"
            return ReadResource(completed_ms)
        return ReadSeq(min(completed_ms + w.poll_ms, w.deadline_ms))

    def _watch_final(self, view: ResourceView, submitted_ms: int, completed_ms: int) -> Step:
        w = self.watch
        assert w is not None
        if view.seq_error is None and identity(view.seq) == w.ident:
            # Unchanged from the first read's completion to this read's submission, for at
            # least 2 x interval + 1 s: nobody bumps it. Entitled to claim over this state.
            self.entitled = w.ident
            self.min_lver = max(self.min_lver, w.then_min_lver)
            self.note = f"taken over from {w.who}: unchanged for the classic wait"
            self.watch = None
            self.phase = "look"
            return self._decide(view, completed_ms)
        self.phase = "changed"
        return self._after_change(view, completed_ms)

    def _after_change(self, view: ResourceView, now_ms: int) -> Step:
        """The block changed while we watched (or while we balloted): a live writer."""
        stop = self._bad(view)
        if stop:
            return stop
        seq = view.seq
        self.watch = None
        self.phase = "look"
        if seq is None or seq.state == "clean":
            return self._decide(view, now_ms)  # it was released meanwhile: claim it normally
        if seq.resource != self.me.resource:
            return NotOurs(seq.resource)
        if seq.state == "fsck" and not self.allow_fsck:
            return self._decide(view, now_ms)  # says FSCK, once
        return Refused(f"{self.me.resource}: held by {who(seq)}, epoch {seq.epoch}: its MMP block"
                       " changed while we watched (a live holder)", True, who(seq))

    # -- the ballot ----------------------------------------------------------------------

    def _ballot(self, view: ResourceView, now_ms: int) -> Step:
        me, seq = self.me, view.seq
        lver = max(view.max_lver, view.epoch + 1, self.min_lver)
        self.basis = seq
        self.proposal = Proposal(
            node_id=me.node_id, generation=me.generation, holder_name=me.holder_name,
            resource=me.resource, interval_ms=me.interval_ms, basis_epoch=view.epoch,
            basis_seq=seq.seq if seq is not None else 0, basis_holder=seq.holder_id if seq else 0,
        )
        self.mine = paxos.start_ballot(me.node_id, lver, view.ballots, uuid=self.uuid,
                                       writer_generation=me.generation, resource=me.resource,
                                       wall_ms=self.wall_ms)
        self.phase = "p1"
        self.round_started_ms = now_ms
        return WriteBallot(self.mine)

    def _round_over(self, view: ResourceView, outcome, now_ms: int) -> Step | None:
        """Handle Abort / Conflict; None when the outcome is a value to go on with."""
        if isinstance(outcome, paxos.Conflict):
            return Refused(f"{self.me.resource}: {outcome.reason}; check node ids", False)
        if isinstance(outcome, paxos.Abort):
            self.phase = "look"
            if outcome.later_lver:
                return ReadResource(now_ms)
            self.ballots_lost += 1
            if self.ballots_lost > BALLOT_ATTEMPTS_MAX:
                return Refused(f"{self.me.resource}: lost {BALLOT_ATTEMPTS_MAX} ballot rounds to other"
                               " claimants; try again", True)
            round_ms = max(BACKOFF_MS_MIN, now_ms - self.round_started_ms)
            cap = min(BACKOFF_MS_MAX, round_ms << min(self.ballots_lost, 6))
            return ReadResource(now_ms + 1 + self.rand(cap))
        return None

    def _after_p1(self, view: ResourceView, now_ms: int) -> Step:
        stop = self._bad(view)
        if stop:
            return stop
        assert self.mine is not None and self.proposal is not None
        out = paxos.after_phase1(self.mine, view.ballots, self.proposal, wall_ms=self.wall_ms)
        stop = self._round_over(view, out, now_ms)
        if stop:
            return stop
        self.mine = out
        self.phase = "p2"
        return WriteBallot(out)

    def _after_p2(self, view: ResourceView, submitted_ms: int, completed_ms: int) -> Step:
        stop = self._bad(view)
        if stop:
            return stop
        assert self.mine is not None
        out = paxos.after_phase2(self.mine, view.ballots)
        stop = self._round_over(view, out, completed_ms)
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
            self.phase = "changed"  # the block moved while we balloted
            return self._after_change(view, completed_ms)
        basis_now = (view.epoch, seq.seq if seq else 0, seq.holder_id if seq else 0)
        ours = value.node_id == me.node_id and value.generation == me.generation
        if ours and (value.basis_epoch, value.basis_seq, value.basis_holder) == basis_now:
            if lver > view.epoch + 1:
                # We skip a pending instance: let any late commit of its winner land first.
                self.phase = "commit_check"
                return ReadResource(max(completed_ms, self.p1_written_ms + 2 * COMMIT_WINDOW_MS))
            self.phase = "commit_check"
            return self._commit_check(view, submitted_ms, completed_ms)
        if (value.basis_epoch, value.basis_seq, value.basis_holder) != basis_now:
            # Its commit check must fail: it will never write. Move to the next instance.
            self.min_lver = max(self.min_lver, lver + 1)
            self.phase = "look"
            return ReadResource(completed_ms)
        # Someone else won and may be writing its seq block right now: judge it like a holder.
        self.phase = "look"
        interval = max(value.interval_ms, seq.interval_ms if seq is not None else 0)
        return self._judge_holder(value.node_id, value.generation, value.who(), interval,
                                  identity(seq), completed_ms, view, then_min_lver=lver + 1,
                                  what=f"just won by {value.who()} (epoch {lver})")

    # -- committing ------------------------------------------------------------------------

    def _commit_check(self, view: ResourceView, submitted_ms: int, completed_ms: int) -> Step:
        stop = self._bad(view)
        if stop:
            return stop
        assert self.mine is not None and self.phase == "commit_check"
        if identity(view.seq) != identity(self.basis):
            self.phase = "changed"
            return self._after_change(view, completed_ms)
        if view.max_lver > self.mine.lver or view.ballots.get(self.me.node_id) != self.mine:
            self.phase = "look"  # someone moved past our instance, or our sector changed
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
        self.phase = "commit_write"
        return WriteSeq(self.commit, submitted_ms + COMMIT_WINDOW_MS)


# --------------------------------------------------------------------------------------------
# Holding


class Hold:
    """The holder's rules: verify before every write, H1/H2 timing, adaptive interval, release.

    Cycle: at due_ms() read the seq block (ReadSeq), hand it to on_verify(); write what it
    returns (WriteSeq, before issue_by_ms); hand the completion to on_written().
    """

    def __init__(self, acquired: Acquired, *, base_interval_ms: int):
        self.block = acquired.block
        self.base_interval_ms = base_interval_ms
        self.issued_ms = acquired.submitted_ms  # issue time of the last completed write
        self.cycles_ms: deque[int] = deque(maxlen=IO_CYCLES_REMEMBERED)
        self.pending: SeqBlock | None = None
        self.verify_submitted_ms = 0
        self.bumps = 0
        self.lost: str | None = None
        self.wall_ms = 0

    @property
    def epoch(self) -> int:
        return self.block.epoch

    def due_ms(self) -> int:
        return self.issued_ms + self.base_interval_ms

    def issue_deadline_ms(self) -> int:
        """H1: the last moment the next write may be issued."""
        return self.issued_ms + self.block.interval_ms + CLASSIC_MARGIN_MS

    def expired(self, now_ms: int) -> str | None:
        """H1 as a check the runner can make at any time (e.g. right after a SIGCONT)."""
        late = now_ms - self.issued_ms
        if now_ms >= self.issue_deadline_ms():
            return (f"could not bump for {late} ms (limit {self.block.interval_ms + CLASSIC_MARGIN_MS} ms):"
                    " another node may already have taken it over")
        return None

    def next_interval_ms(self) -> int:
        slowest = max(self.cycles_ms, default=0)
        return max(self.base_interval_ms, min(INTERVAL_MS_MAX, 2 * slowest))

    def on_verify(self, seq: SeqBlock | None, error: str | None, submitted_ms: int,
                  completed_ms: int, *, final: int | None = None) -> WriteSeq | Lost:
        """Judge a verify read. `final`: write this sentinel (SEQ_CLEAN / SEQ_FSCK) instead of
        a bump (release)."""
        if self.lost:
            return Lost(self.lost)
        why = self.expired(completed_ms)
        if why is None and error is not None:
            why = f"our MMP block became unreadable ({error})"
        if why is None and identity(seq) != self.block.identity:
            if seq is None:
                why = "our MMP block was wiped"
            elif seq.state == "clean":
                why = f"our MMP block was released by someone else ({seq.holder_name}, node {seq.holder_id})"
            elif seq.state == "fsck":
                why = f"our MMP block was marked FSCK by {who(seq)}"
            else:
                why = f"taken over by {who(seq)}, epoch {seq.epoch}"
        if why is not None:
            self.lost = why
            return Lost(why)
        self.verify_submitted_ms = submitted_ms
        b = self.block
        if final is None:
            new = replace(b, seq=next_seq(b.seq), interval_ms=self.next_interval_ms(), wall_ms=self.wall_ms)
        else:
            assert final in (SEQ_CLEAN, SEQ_FSCK)
            new = replace(b, seq=final, wall_ms=self.wall_ms)
        self.pending = new
        return WriteSeq(new, min(submitted_ms + COMMIT_WINDOW_MS, self.issue_deadline_ms()))

    def write_too_late(self, now_ms: int) -> ReadSeq | Lost:
        """The write could not be issued by issue_by_ms: verify again (or we are expired)."""
        self.pending = None
        why = self.expired(now_ms)
        if why:
            self.lost = why
            return Lost(why)
        return ReadSeq(now_ms)

    def on_written(self, submitted_ms: int, completed_ms: int) -> Lost | None:
        assert self.pending is not None
        new, self.pending = self.pending, None
        if completed_ms - self.issued_ms >= classic_wait_ms(self.block.interval_ms):
            # H2: the gap between two landings may have exceeded what readers wait.
            self.lost = (f"our MMP write completed {completed_ms - self.issued_ms} ms after the previous"
                         f" one was issued (readers wait {classic_wait_ms(self.block.interval_ms)} ms):"
                         " another node may have taken it over")
            return Lost(self.lost)
        self.cycles_ms.append(completed_ms - self.verify_submitted_ms)
        self.block = new
        self.issued_ms = submitted_ms
        self.bumps += 1
        return None
