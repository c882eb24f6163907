"""The guard of one resource, from the first read to its release or loss. I/O-free.

One Guard runs one request for one resource name: find its block (name binding), acquire it
(diskhb.mmp.acquisition, retrying refusals that may clear until `wait_ms` runs out), hold it
(diskhb.mmp.hold) until asked to release, then write CLEAN; or lose it. The node core drives
many (one per held resource) from the daemon's loop; the CLI's runner drives one.

Its I/O goes out as IoRequests and comes back as IoResults (the driver's monotonic times);
it asks for at most one at a time. Rules of this file (the claim and hold rules proper live in
acquisition.py and hold.py):
  GD1 TIMEOUT: a request not answered by its deadline_ms is given up: a read as failed, a
      write as of unknown outcome, recorded in the sector ledger (LG1) and, for the hold, a loss.
  GD2 SECTORS: no write to a sector the ledger says a write of ours may still reach (LG1): the
      acquisition is refused (retryable) until then.
  GD3 LOCK: a claim's ballot runs under the node-local ballot lock of its block (processes of
      one node share a ballot sector, diskhb.mmp.local), waited for at most LOCK_WAIT_MS.
  GD4 CARRY: blocks of ours we gave up on (stale_own) and instances at which we issued a seq
      write (own_commits) carry over between attempts of this guard (acquisition CL2, CL4).
  GD5 RELEASE: on request, after the write in flight completes, verify and write CLEAN.
      Released only when that write completed in time; otherwise unconfirmed (a write of ours
      may still land: the daemon then never publishes LEFT).
  GD6 LEASE: while holding, every change of the hold's takeover moment is reported (Lease),
      so the driver can tell consumers and renew the independent enforcer.
  GD7 NEWS IN TIME: an acquisition is reported (GotIt) only if its lease is still running when
      we learn of it; a process stopped between its read-back and now learns of a lease that
      already ran out, and reports nothing held (found by the whole-cluster simulator: a daemon
      frozen 15 s told its client "acquired" of an epoch others had long gone past).
  GD8 ABANDON: a node that fences itself (diskhb.core.self_fence) abandons every guard: no
      further I/O of any kind to the block, a write in flight given up (GD1: recorded in the
      ledger), the local lock let go; a hold ends lost (its loss action runs), anything else
      denied. The block is left as it is: peers treat it as a crashed holder's (classic watch),
      or take it over at once on the node's verified self-fence (fast_path FP0).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from diskhb.core.record import record
from diskhb.core.timing import MmpTiming
from diskhb.mmp import format as mf
from diskhb.mmp.acquisition import POLL_MS_MAX, Acquisition
from diskhb.mmp.binding import bound_name, classify_block, pending_names
from diskhb.mmp.fast_path import PeerInfoFn
from diskhb.mmp.hold import Hold
from diskhb.mmp.ledger import SectorLedger
from diskhb.mmp.steps import (
    Acquired,
    Claimant,
    Identity,
    Lost,
    NotOurs,
    ReadResource,
    ReadSeq,
    Refusal,
    WriteBallot,
    WriteSeq,
)

LOCK_WAIT_MS = 30_000
LOCK_POLL_MS = 20
READ_DEADLINE_MS = 10_000  # a claim's read that takes longer is given up (the claim refused)
WRITE_DEADLINE_MS = 10_000  # a ballot write likewise
WAIT_MS_MAX = 24 * 3600 * 1000


@record
class BlockLocation:
    """One resource block: its seq block at `base`, node i's ballot sector at base + i * sector_size."""

    label: str  # for humans: "REGION block K" or "DEVICE@OFFSET"
    base: int
    sector_size: int
    slot_count: int
    uuid: bytes
    index: int | None  # block number in a region's MMP area; None for an explicit offset

    @property
    def span(self) -> int:
        return (1 + self.slot_count) * self.sector_size

    def ballot_pos(self, node_id: int) -> int:
        assert 1 <= node_id <= self.slot_count, node_id
        return self.base + node_id * self.sector_size


def lock_key(scope: str, loc: BlockLocation) -> str:
    """The node-local ballot lock of a block (GD3): `scope` names this node's run dir."""
    return f"{scope} mmp-{loc.uuid.hex()}-{'dev' if loc.index is None else loc.index}"


@record
class TargetInfo:
    """Where a guard looks: the MMP blocks of one device (a region's area, or one block)."""

    path: str
    blocks: tuple[BlockLocation, ...]
    standalone: bool  # one explicit block (mmp init --device/--offset)


# -- the I/O it asks for --------------------------------------------------------------------------


@record
class IoRequest:
    id: int
    op: str  # "read" | "write" | "lock" | "unlock"
    path: str
    offset: int = 0
    length: int = 0
    data: bytes | None = None
    issue_by_ms: int | None = None  # a write not issued by then is not issued (IoResult.too_late)
    deadline_ms: int = 0  # GD1
    lock: str = ""  # lock ops: the block's lock key


@record
class IoResult:
    id: int
    submitted_ms: int
    completed_ms: int
    data: bytes | None = None
    error: str | None = None  # an I/O error (or, for a lock, "busy")
    too_late: bool = False


# -- what it reports ------------------------------------------------------------------------------


@record
class GotIt:
    resource: str
    epoch: int
    location: str
    note: str
    issued_ms: int  # the acquisition write's issue


@record
class Denied:
    resource: str
    reason: str
    exit_code: int  # 1 refused (may clear), 2 bad input / corrupt / unknown name


@record
class Lease:
    """While held: consumers may act until loss_deadline_ms (then the loss action runs); nobody
    can take over before takeover_ms."""
    resource: str
    takeover_ms: int
    loss_deadline_ms: int


@record
class Gone:
    """The hold ended. `released` True: our CLEAN (or FSCK) write completed in time. Otherwise
    `lost` says why (HD rules), and `unknown_write` whether a write of ours may still land."""
    resource: str
    epoch: int
    released: bool
    lost: str | None
    unknown_write: bool = False
    final: int = mf.SEQ_CLEAN


GuardEvent = GotIt | Denied | Lease | Gone


class State(enum.Enum):
    FINDING = "finding"  # reading every block of the target (name binding)
    LOCKING = "locking"  # waiting for the local ballot lock (GD3)
    ACQUIRING = "acquiring"
    BACKOFF = "backoff"  # refused, retrying until wait_ms runs out
    HOLDING = "holding"
    RELEASING = "releasing"
    DONE = "done"


@dataclass(slots=True)
class _Inflight:
    req: IoRequest
    kind: str  # what the result feeds: view | seq | ballot | commit | verify | bump | lock
    submitted_ms: int
    sector: tuple[str, int] | None = None  # writes: the sector (ledger key)


class Guard:
    def __init__(self, me: Claimant, target: TargetInfo, *, timing: MmpTiming, ledger: SectorLedger,
                 rand: Callable[[int], int], now_ms: int, wait_ms: int = 0, create: bool = False,
                 peer_info: PeerInfoFn | None = None, allow_fsck: bool = False, stale_self_ok: bool = False,
                 finish: int | None = None, lock_key: Callable[[BlockLocation], str] | None = None,
                 next_id: Callable[[], int] | None = None, stale_own: frozenset[Identity] = frozenset()):
        self.me = me
        self.target = target
        self.timing = timing
        self.ledger = ledger
        self.rand = rand
        self.peer_info = peer_info
        self.create = create
        self.allow_fsck = allow_fsck
        self.stale_self_ok = stale_self_ok
        self.finish = finish  # mark right after acquiring (fsck, clear, release --force)
        self.lock_key = lock_key
        self._ids = next_id or _counter()
        self.wait_ms = min(max(0, wait_ms), WAIT_MS_MAX)
        self.wait_until_ms = now_ms + self.wait_ms
        self.state = State.FINDING
        self.events: list[GuardEvent] = []
        self.stale_own: set[Identity] = set(stale_own)  # GD4 (and a lost hold's blocks: node core N17)
        self.own_commits: set[int] = set()
        self.loc: BlockLocation | None = None
        self.acq: Acquisition | None = None
        self.hold: Hold | None = None
        self.epoch = 0
        self.wall_ms = 0  # the driver keeps this current (display only)
        self._inflight: _Inflight | None = None
        self._step = None  # the machine's next step: an I/O to issue when due, or an outcome
        self._views: list[tuple[BlockLocation, mf.ResourceView]] = []
        self._candidates: list[BlockLocation] = []
        self._lock_held: str | None = None
        self._unlocks: list[str] = []
        self._lock_since_ms = 0
        self._retry_at_ms = 0
        self._release_asked = False
        self._lease: tuple[int, int] | None = None
        self._ignored: dict[int, _Inflight] = {}  # writes we gave up on (GD1): completion clears LG1
        self._stall_ms = 0  # how long this process was stalled lately (stalled())

    # -- the driver's interface -----------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.state is State.DONE

    @property
    def holding(self) -> bool:
        return self.state in (State.HOLDING, State.RELEASING)

    def own_blocks(self) -> frozenset[Identity]:
        """The identities our block may carry from us now (the last write that completed, one in
        flight or given up on, blocks we gave up on before): for the next guard after a loss
        (node core N17, acquisition CL4)."""
        out = set(self.stale_own)
        if self.hold is not None:
            out.add(self.hold.block.identity)
            if self.hold.pending is not None:
                out.add(self.hold.pending.identity)
        return frozenset(out)

    def release(self) -> None:
        """GD5: stop holding (or stop trying) at the next chance."""
        self._release_asked = True

    def abandon(self, now_ms: int, reason: str) -> None:
        """GD8: stop now, without another write (the events say how it ended)."""
        if self.state is State.DONE:
            return
        unknown = self._drop_inflight(now_ms)
        if self.holding:
            self.hold.lost = reason
            self._unlock()
            self._gone(reason, unknown)
        else:
            self._deny(reason, 1)

    def settle(self, r: IoResult) -> None:
        """A result that came after this guard ended (its driver no longer steps it): a write it
        gave up on has completed, so the ledger may forget it (LG1). Without this, a write that
        completed in time would lapse in the ledger (LG4) and its node fence itself (SF4)."""
        late = self._ignored.pop(r.id, None)
        if late is not None:
            self.ledger.completed(late.sector, late.submitted_ms)

    def next_wakeup_ms(self) -> int | None:
        """When step() has something to do without a new result (None: only results)."""
        if self.state is State.DONE:
            return None
        t = None  # the earliest of the moments below (no list: every core step asks every guard)
        if self._inflight is not None:
            t = self._inflight.req.deadline_ms
        elif self.state is State.BACKOFF or self.state is State.LOCKING:
            t = self._retry_at_ms
        elif isinstance(self._step, (ReadResource, ReadSeq)):
            t = self._step.at_ms
        elif self._step is not None or self.state is State.FINDING:
            return 0
        if self._release_asked and self._inflight is None:
            return 0  # GD5: a release (or a cancelled request) is acted on at once
        if self.hold is not None and self.holding:
            due = self.hold.loss_deadline_ms()
            if t is None or due < t:
                t = due
            if self._inflight is None and self._step is None:
                due = self.hold.due_ms()
                if due < t:
                    t = due
        return t

    def step(self, now_ms: int, results=()) -> list[IoRequest]:
        """Feed results, act on timers, and return the requests to carry out now (at most one
        read or write: a guard has one in flight at a time; unlocks are fire-and-forget)."""
        for r in results:
            self._on_result(now_ms, r)
        self._check_expiry(now_ms)  # first: past the loss deadline, that is the news (HD-loss)
        if self._inflight is not None and now_ms >= self._inflight.req.deadline_ms:
            self._timed_out(now_ms)
        out: list[IoRequest] = []
        for _ in range(16):  # instant transitions (decisions on data already read) are few
            if self.state is State.DONE or self._inflight is not None:
                break
            before = (self.state, id(self._step), len(self.events))
            req = self._advance(now_ms)
            if req is not None:
                out.append(req)
            elif before == (self.state, id(self._step), len(self.events)):
                break  # nothing due yet
        out.extend(IoRequest(self._ids(), "unlock", self.target.path, lock=k) for k in self._unlocks)
        self._unlocks.clear()
        return out

    def stalled(self, late_ms: int) -> None:
        """Our driver (this process) was stalled late_ms: a request that times out now was not
        necessarily slow storage (GD1's message says so)."""
        self._stall_ms = max(self._stall_ms, late_ms)

    def drain(self) -> list[GuardEvent]:
        out, self.events = self.events, []
        return out

    # -- advancing (may create one request) --------------------------------------------------------

    def _advance(self, now_ms: int) -> IoRequest | None:
        if self.state is State.FINDING:
            k = len(self._views)
            if k < len(self.target.blocks):
                loc = self.target.blocks[k]
                return self._read(now_ms, "view", loc.base, loc.span, now_ms + READ_DEADLINE_MS)
            self._choose_blocks(now_ms)
            return None  # the new state advances on the next round of step()'s loop
        if self.state is State.LOCKING:
            if self._release_asked:
                return self._deny("the request was cancelled", 1)
            if now_ms - self._lock_since_ms > LOCK_WAIT_MS:
                return self._deny(f"{self.loc.label}: another diskhb process of this node is balloting for"
                                  f" this block (busy for {LOCK_WAIT_MS / 1000:g} s); try again", 1)
            if now_ms < self._retry_at_ms:
                return None
            req = IoRequest(self._ids(), "lock", self.target.path, lock=self.lock_key(self.loc),
                            deadline_ms=now_ms + READ_DEADLINE_MS)
            return self._issue(req, "lock", now_ms)
        if self.state is State.BACKOFF:
            if self._release_asked:
                return self._deny("the request was cancelled", 1)
            if now_ms < self._retry_at_ms:
                return None
            self.state, self._views = State.FINDING, []
            return self._advance(now_ms)
        if self.state is State.ACQUIRING:
            return self._acquisition_io(now_ms)
        if self.holding:
            return self._hold_io(now_ms)
        return None

    def _choose_blocks(self, now_ms: int) -> None:
        """Name binding (NB1-NB3) over the views just read: the blocks to try, in order."""
        name, views = self.me.resource, self._views
        committed = [loc for loc, v in views if v.seq is not None and v.seq.resource == name]
        if committed:
            self._candidates = committed[:1]
        elif self.target.standalone:
            loc, view = views[0]
            bound = bound_name(view) if not (view.seq_error or view.ballot_errors) else None
            self._deny(f"{loc.label}: this block is for resource {bound!r}, not {name!r}", 2)
            return
        else:
            pending = set().union(*(pending_names(v) for _, v in views))
            if not self.create and name not in pending:
                known = sorted({v.seq.resource for _, v in views if v.seq is not None})
                self._deny(f"{self.target.path}: unknown resource {name!r} (known:"
                           f" {', '.join(known) or 'none'}); check the name, or pass --create to bind it"
                           " to a free MMP block", 2)
                return
            self._candidates = []
            for loc, view in views:
                cls = classify_block(view, name)
                if cls == "other":
                    continue
                if cls == "corrupt":
                    if not self._candidates:
                        self._deny(f"{loc.label}: MMP block unreadable ({view.seq_error or view.ballot_errors});"
                                   f" cannot tell whether it is {name!r}'s; nothing was written;"
                                   " see 'diskhb mmp status'", 2)
                        return
                    break
                self._candidates.append(loc)
            if not self._candidates:
                self._deny(f"{self.target.path}: no free MMP block for {name!r} (all"
                           f" {len(self.target.blocks)} are bound); reformat with more --mmp-resources", 2)
                return
        self._next_candidate(now_ms)

    def _next_candidate(self, now_ms: int) -> None:
        if not self._candidates:
            self._deny(f"{self.target.path}: no free MMP block for {self.me.resource!r}", 2)
            return
        self.loc = self._candidates.pop(0)
        busy = self.ledger.busy_until_ms(self._sector(self.loc.ballot_pos(self.me.node_id)), now_ms)
        if busy is not None:  # GD2
            self._refused(Refusal(f"{self.me.resource}: a write of ours to our ballot sector may still"
                                  f" land (for {busy - now_ms} ms more); try again then", True), now_ms)
            return
        if self.lock_key is not None:
            self.state = State.LOCKING
            self._lock_since_ms = self._retry_at_ms = now_ms
            return
        self._begin_acquisition(now_ms)

    def _begin_acquisition(self, now_ms: int) -> None:
        loc = self.loc
        self.acq = Acquisition(self.me, uuid=loc.uuid, slot_count=loc.slot_count, sector_size=loc.sector_size,
                               rand=self.rand, peer_info=self.peer_info, allow_fsck=self.allow_fsck,
                               stale_self_ok=self.stale_self_ok, stale_own=frozenset(self.stale_own),
                               own_commits=frozenset(self.own_commits))
        self.acq.wall_ms = self.wall_ms
        self.state = State.ACQUIRING
        self._step = self.acq.start(now_ms)

    def _acquisition_io(self, now_ms: int) -> IoRequest | None:
        """The acquisition's step as a request when due, or its outcome handled."""
        step, loc, acq = self._step, self.loc, self.acq
        acq.wall_ms = self.wall_ms
        if self._release_asked:
            self._step = None
            self._refused(Refusal("the request was cancelled", False), now_ms)
            return None
        if isinstance(step, (ReadResource, ReadSeq)):
            if now_ms < step.at_ms:
                return None
            self._step = None
            if isinstance(step, ReadResource):
                return self._read(now_ms, "view", loc.base, loc.span, now_ms + READ_DEADLINE_MS)
            return self._read(now_ms, "seq", loc.base, loc.sector_size, now_ms + READ_DEADLINE_MS)
        if isinstance(step, WriteBallot):
            self._step = None
            pos = loc.ballot_pos(step.ballot.node_id)
            busy = self.ledger.busy_until_ms(self._sector(pos), now_ms)
            if busy is not None:  # GD2 (a ballot write of ours timed out earlier)
                self._refused(Refusal(f"{self.me.resource}: a write of ours to our ballot sector may"
                                      f" still land (for {busy - now_ms} ms more); try again", True), now_ms)
                return None
            return self._write(now_ms, "ballot", pos, mf.encode_ballot(step.ballot, loc.sector_size), None,
                               now_ms + WRITE_DEADLINE_MS)
        if isinstance(step, WriteSeq):
            self._step = None
            if now_ms > step.issue_by_ms or self.ledger.busy_until_ms(self._sector(loc.base), now_ms) is not None:
                self._step = acq.write_too_late(now_ms)
                return None
            acq.committing(now_ms)
            self.own_commits.add(step.block.epoch)
            return self._write(now_ms, "commit", loc.base, mf.encode_seq_block(step.block), step.issue_by_ms,
                               step.deadline_ms)
        self._step = None
        if isinstance(step, Acquired):
            self._acquired(step, now_ms)
        elif isinstance(step, Refusal):
            self._refused(step, now_ms)
        elif isinstance(step, NotOurs):
            self._unlock()
            self._next_candidate(now_ms)
        return None

    def _acquired(self, acq: Acquired, now_ms: int) -> None:
        self._unlock()
        hold = Hold(acq, timing=self.timing)
        late = hold.expired(now_ms)
        if late is not None:
            # GD7: we learn of our own acquisition only now (this process was stopped between the
            # read-back and now): its lease has run out before anyone was told we hold it. Nobody
            # acts on it; the block is ours to claim over again (CL4) if nobody went past it.
            self._refused(Refusal(f"{self.me.resource}: acquired, but only learned it after its lease had run"
                                  f" out ({late}); not holding it", True, stale_own=acq.block.identity), now_ms)
            return
        self.hold = hold
        self.hold.wall_ms = self.wall_ms
        self.epoch = acq.block.epoch
        self.state = State.HOLDING
        self.events.append(GotIt(self.me.resource, self.epoch, self.loc.label, acq.note, acq.submitted_ms))
        self._report_lease()
        if self.finish is not None:
            self._release_asked = True

    def _refused(self, r: Refusal, now_ms: int) -> None:
        self._unlock()
        if r.stale_own is not None:
            self.stale_own.add(r.stale_own)
        if r.retry and now_ms < self.wait_until_ms and not self._release_asked:
            self.state = State.BACKOFF
            self._retry_at_ms = min(self.wait_until_ms, now_ms + POLL_MS_MAX)
            return
        suffix = f" (gave up after {self.wait_ms / 1000:g} s)" if r.retry and self.wait_ms > 0 else ""
        self._deny(r.reason + suffix, 1 if r.retry else 2)

    def _deny(self, reason: str, code: int) -> None:
        self._unlock()
        self.state = State.DONE
        self._step = None
        self.events.append(Denied(self.me.resource, reason, code))
        return None

    # -- holding -----------------------------------------------------------------------------------

    def _hold_io(self, now_ms: int) -> IoRequest | None:
        hold, loc = self.hold, self.loc
        hold.wall_ms = self.wall_ms
        if self._step is None:
            if not (self._release_asked or now_ms >= hold.due_ms()):
                return None
            if self._release_asked:
                self.state = State.RELEASING
            self._step = ReadSeq(now_ms)
        step, self._step = self._step, None
        if isinstance(step, ReadSeq):
            return self._read(now_ms, "verify", loc.base, loc.sector_size, hold.issue_deadline_ms())
        assert isinstance(step, WriteSeq), step
        if now_ms > step.issue_by_ms or self.ledger.busy_until_ms(self._sector(loc.base), now_ms) is not None:
            self._hold_step(hold.write_too_late(now_ms), now_ms)
            return None
        deadline = hold.issuing(now_ms)
        self._report_lease()
        return self._write(now_ms, "bump", loc.base, mf.encode_seq_block(step.block), step.issue_by_ms, deadline)

    def _hold_step(self, step, now_ms: int) -> None:
        if isinstance(step, Lost):
            self._gone(step.reason)
        else:
            self._step = step

    def _gone(self, lost: str | None, unknown_write: bool = False) -> None:
        hold = self.hold
        released = lost is None and hold.released
        self.state = State.DONE
        self._step = None
        self.events.append(Gone(self.me.resource, self.epoch, released, lost, unknown_write,
                                hold.block.seq if released else mf.SEQ_CLEAN))

    def _check_expiry(self, now_ms: int) -> None:
        """HD-loss at any wake-up, also while a request is in flight (a frozen driver wakes here)."""
        if self.hold is None or not self.holding:
            return
        why = self.hold.expired(now_ms)
        if why is None:
            return
        unknown = self._drop_inflight(now_ms)
        self.hold.lost = why
        self._gone(why, unknown)

    def _drop_inflight(self, now_ms: int) -> bool:
        """Stop waiting for the request in flight; True if it was a write (given up: GD1, LG1)."""
        f, self._inflight = self._inflight, None
        if f is None or f.req.op != "write":
            return False
        self._give_up_write(f, now_ms)
        return True

    def _report_lease(self) -> None:
        lease = (self.hold.takeover_ms(), self.hold.loss_deadline_ms())
        if lease != self._lease:
            self._lease = lease
            self.events.append(Lease(self.me.resource, *lease))

    # -- results (never create requests: _advance does) ---------------------------------------------

    def _on_result(self, now_ms: int, r: IoResult) -> None:
        late = self._ignored.pop(r.id, None)
        if late is not None:  # a write we gave up on completed after all: its outcome is known
            self.ledger.completed(late.sector, late.submitted_ms)
            return
        f = self._inflight
        if f is None or r.id != f.req.id:
            return  # a result of a read we gave up on, or of an unlock
        self._inflight = None
        if f.sector is not None:
            self.ledger.completed(f.sector, f.submitted_ms)
        getattr(self, f"_got_{f.kind}")(now_ms, f, r)

    def _got_lock(self, now_ms: int, f: _Inflight, r: IoResult) -> None:
        if r.error is None:
            self._lock_held = f.req.lock
            self._begin_acquisition(now_ms)
        else:
            self._retry_at_ms = now_ms + LOCK_POLL_MS

    def _got_view(self, now_ms: int, f: _Inflight, r: IoResult) -> None:
        finding = self.state is State.FINDING
        loc = self.target.blocks[len(self._views)] if finding else self.loc
        if r.error is not None or r.data is None:
            if finding:
                self._deny(f"{self.target.path}: I/O error reading its MMP area ({r.error}); check the device", 2)
            else:
                self._refused(Refusal(f"{self.me.resource}: I/O error ({r.error})", True), now_ms)
            return
        view = mf.decode_resource(r.data, sector_size=loc.sector_size, slot_count=loc.slot_count, uuid=loc.uuid)
        if finding:
            self._views.append((loc, view))
        else:
            self._step = self.acq.on_resource(view, r.submitted_ms, r.completed_ms)

    def _got_seq(self, now_ms: int, f: _Inflight, r: IoResult) -> None:
        if r.error is not None:
            self._refused(Refusal(f"{self.me.resource}: I/O error ({r.error})", True), now_ms)
            return
        seq, err = mf.decode_seq_sector(r.data[: self.loc.sector_size], self.loc.uuid)
        self._step = self.acq.on_seq(seq, err, r.submitted_ms, r.completed_ms)

    def _got_ballot(self, now_ms: int, f: _Inflight, r: IoResult) -> None:
        if r.error is not None:
            self._refused(Refusal(f"{self.me.resource}: our ballot write failed ({r.error})", True), now_ms)
            return
        self._step = self.acq.on_written(r.submitted_ms, r.completed_ms)

    def _got_commit(self, now_ms: int, f: _Inflight, r: IoResult) -> None:
        if r.too_late:  # never issued (own_commits keeps it: that only makes later claims watch it)
            self._step = self.acq.write_too_late(now_ms)
        elif r.error is not None:
            self.stale_own.add(self.acq.commit.identity)
            self._refused(Refusal(f"{self.me.resource}: our MMP write failed ({r.error}); nothing is held", True),
                          now_ms)
        else:
            self._step = self.acq.on_written(r.submitted_ms, r.completed_ms)

    def _got_verify(self, now_ms: int, f: _Inflight, r: IoResult) -> None:
        if r.error is not None and now_ms < self.hold.issue_deadline_ms():
            return  # a transient read error: verify again at once (HD-issue bounds it)
        seq, err = (None, r.error) if r.error is not None else \
            mf.decode_seq_sector(r.data[: self.loc.sector_size], self.loc.uuid)
        final = None
        if self._release_asked:
            self.state = State.RELEASING
            final = self.finish if self.finish is not None else mf.SEQ_CLEAN
        self._hold_step(self.hold.on_verify(seq, err, r.submitted_ms, r.completed_ms, final=final), now_ms)

    def _got_bump(self, now_ms: int, f: _Inflight, r: IoResult) -> None:
        if r.too_late:
            self._hold_step(self.hold.write_too_late(now_ms), now_ms)
            return
        if r.error is not None:
            self._gone(self.hold.on_write_failed(f"our MMP write failed ({r.error}); cannot prove we still"
                                                 " hold it").reason)
            return
        lost = self.hold.on_written(r.submitted_ms, r.completed_ms)
        if lost is not None:
            stalled = (f" (this process was stalled for {self._stall_ms} ms meanwhile: stopped or starved, not"
                       " necessarily the device)" if self._stall_ms else "")
            self._gone(lost.reason + stalled)
        elif self.hold.released:
            self._gone(None)
        else:
            self._report_lease()

    def _timed_out(self, now_ms: int) -> None:
        """GD1."""
        f, self._inflight = self._inflight, None
        cause = (f"this process was stalled for {self._stall_ms} ms meanwhile (stopped or starved), not"
                 " necessarily the device" if self._stall_ms else "hung device?")
        what = (f"{f.req.op} at {f.req.offset} of {f.req.path} not answered within"
                f" {f.req.deadline_ms - f.submitted_ms} ms ({cause})")
        self._stall_ms = 0
        if f.req.op == "write":
            self._give_up_write(f, now_ms)
        if f.kind == "lock":
            self._retry_at_ms = now_ms + LOCK_POLL_MS
        elif f.kind == "view" and self.state is State.FINDING:
            self._deny(f"{self.target.path}: {what}", 2)
        elif f.kind in ("view", "seq", "ballot"):
            self._refused(Refusal(f"{self.me.resource}: {what}", True), now_ms)
        elif f.kind == "commit":
            self.stale_own.add(self.acq.commit.identity)
            self._refused(Refusal(f"{self.me.resource}: {what}; our claim may still land: not holding it", True),
                          now_ms)
        elif f.kind == "verify":
            self._gone(self.hold.on_write_failed(f"our verify read: {what}").reason)
        elif f.kind == "bump":
            self._gone(self.hold.on_write_failed(f"our MMP write: {what}; it may still land").reason, True)
        else:
            raise AssertionError(f.kind)

    def _give_up_write(self, f: _Inflight, now_ms: int) -> None:
        self.ledger.gave_up(f.sector, f.submitted_ms, now_ms)
        self._ignored[f.req.id] = f

    # -- request plumbing ----------------------------------------------------------------------------

    def _sector(self, offset: int) -> tuple[str, int]:
        return (self.target.path, offset)

    def _read(self, now_ms: int, kind: str, offset: int, length: int, deadline_ms: int) -> IoRequest:
        return self._issue(IoRequest(self._ids(), "read", self.target.path, offset, length, deadline_ms=deadline_ms),
                           kind, now_ms)

    def _write(self, now_ms: int, kind: str, offset: int, data: bytes, issue_by: int | None,
               deadline_ms: int) -> IoRequest:
        req = IoRequest(self._ids(), "write", self.target.path, offset, len(data), data, issue_by, deadline_ms)
        return self._issue(req, kind, now_ms, sector=self._sector(offset))

    def _issue(self, req: IoRequest, kind: str, now_ms: int, sector=None) -> IoRequest:
        assert self._inflight is None, "one request at a time"
        self._inflight = _Inflight(req, kind, now_ms, sector)
        return req

    def _unlock(self) -> None:
        if self._lock_held is not None:
            self._unlocks.append(self._lock_held)
            self._lock_held = None


def _counter() -> Callable[[], int]:
    n = [0]

    def nxt() -> int:
        n[0] += 1
        return n[0]
    return nxt
