"""Holding an MMP block: the holder's rules, free of I/O (timing from diskhb.core.timing).

Cycle: at due_ms() read the seq block, hand it to on_verify(); issue the WriteSeq it returns
(not after its issue_by_ms; tell issuing()), hand the completion to on_written(). A write not
completed by its deadline_ms: on_write_unknown(). Check expired() whenever the driver wakes
(also right after a freeze) and before it lets consumers act.

Rules (w_k is our last completed write, issued at i_k, advertising interval I_k; B is the
loss budget; timing.py walks a millisecond timeline through them):
  HD-verify  before every write, read the block back: anything but exactly our last write
             (taken over, released by someone, FSCK, wiped, unreadable) is a loss. Nothing
             more is written after a loss.
  HD-issue   the next write is issued by i_k + I_k + M, or not at all (loss).
  HD-loss    the loss deadline is takeover - B, takeover being the earliest moment a claimant
             can take over given every write of ours that may have landed: i_k + C(I_k), and
             while w_{k+1} is in flight also i_{k+1} + C(I_{k+1}) (schedule E: a write that
             advertises a shorter interval shortens the lease the moment it may have landed).
             Past the deadline without a newer completed write: loss. A write completing after
             the deadline (as it stood while the write was in flight): loss, retroactively.
  HD-adapt   each write advertises clamp(2 x the slowest of the last IO_CYCLES_REMEMBERED
             cycles, base, ceiling): slow storage makes readers wait longer (ext4's rule); the
             ceiling, carried in our ballot, bounds it (acquisition CL2).
  HD-unknown a write whose outcome we do not know (deadline passed) is a loss; the driver
             records it in the sector ledger (LG1).
  HD-release release = a verify and a CLEAN (or FSCK) write in place of a bump; it is
             confirmed only by that write's completion within the deadline.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace

from diskhb.core.timing import (
    MmpTiming,
    classic_wait_ms,
    mmp_issue_deadline_ms,
    mmp_loss_deadline_ms,
    mmp_takeover_ms,
)
from diskhb.mmp.acquisition import COMMIT_WINDOW_MS
from diskhb.mmp.format import SEQ_CLEAN, SEQ_FSCK, SeqBlock, next_seq
from diskhb.mmp.steps import Acquired, Lost, ReadSeq, WriteSeq, identity, who

IO_CYCLES_REMEMBERED = 8  # HD-adapt: the slowest of the recent cycles counts


class Hold:
    def __init__(self, acquired: Acquired, *, timing: MmpTiming):
        self.timing = timing
        self.block = acquired.block  # our last completed write
        self.issued_ms = acquired.submitted_ms  # i_k
        self.cycles_ms: deque[int] = deque(maxlen=IO_CYCLES_REMEMBERED)
        self.pending: SeqBlock | None = None  # the write on_verify asked for
        self.pending_issued_ms: int | None = None  # set once it is issued (may land from then on)
        self.verify_submitted_ms = 0
        self.bumps = 0
        self.lost: str | None = None
        self.released = False
        self.wall_ms = 0

    @property
    def epoch(self) -> int:
        return self.block.epoch

    @property
    def base_interval_ms(self) -> int:
        return self.timing.interval_ms

    def due_ms(self) -> int:
        return self.issued_ms + self.base_interval_ms

    def issue_deadline_ms(self) -> int:
        """HD-issue."""
        return mmp_issue_deadline_ms(self.issued_ms, self.block.interval_ms)

    def takeover_ms(self) -> int:
        """The earliest takeover given every write of ours that may have landed (HD-loss)."""
        t = mmp_takeover_ms(self.issued_ms, self.block.interval_ms)
        if self.pending is not None and self.pending_issued_ms is not None:
            t = min(t, mmp_takeover_ms(self.pending_issued_ms, self.pending.interval_ms))
        return t

    def loss_deadline_ms(self) -> int:
        """HD-loss: the loss action must start here (it ends by takeover_ms())."""
        return mmp_loss_deadline_ms(self.takeover_ms(), self.timing.loss_budget_ms)

    def expired(self, now_ms: int) -> str | None:
        """HD-loss as a check the driver makes at any time (also right after a freeze)."""
        if self.lost:
            return self.lost
        if now_ms >= self.loss_deadline_ms():
            late = now_ms - self.issued_ms
            return (f"could not renew for {late} ms (our last write advertised {self.block.interval_ms} ms;"
                    f" another node may take over {classic_wait_ms(self.block.interval_ms)} ms after it):"
                    " storage too slow, or this process was stopped")
        return None

    def next_interval_ms(self) -> int:
        """HD-adapt."""
        slowest = max(self.cycles_ms, default=0)
        return max(self.base_interval_ms, min(self.timing.ceiling_ms, 2 * slowest))

    def on_verify(self, seq: SeqBlock | None, error: str | None, submitted_ms: int,
                  completed_ms: int, *, final: int | None = None) -> WriteSeq | Lost:
        """Judge a verify read (HD-verify). `final`: write this sentinel (SEQ_CLEAN / SEQ_FSCK)
        instead of a bump (release)."""
        if self.lost:
            return Lost(self.lost)
        assert self.pending is None, "one write at a time"
        why = self.expired(completed_ms)
        if why is None and completed_ms >= self.issue_deadline_ms():
            why = (f"our verify read completed {completed_ms - self.issued_ms} ms after our last write"
                   f" (limit {self.issue_deadline_ms() - self.issued_ms} ms): storage too slow")
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
            return self._lose(why)
        self.verify_submitted_ms = submitted_ms
        b = self.block
        if final is None:
            new = replace(b, seq=next_seq(b.seq), interval_ms=self.next_interval_ms(), wall_ms=self.wall_ms)
        else:
            assert final in (SEQ_CLEAN, SEQ_FSCK)
            new = replace(b, seq=final, wall_ms=self.wall_ms)
        self.pending = new
        issue_by = min(submitted_ms + COMMIT_WINDOW_MS, self.issue_deadline_ms())
        return WriteSeq(new, issue_by, self.loss_deadline_ms())

    def issuing(self, now_ms: int) -> int:
        """The driver issues the pending write now; returns its deadline (it may shorten the
        lease at once if it advertises a shorter interval, HD-loss)."""
        assert self.pending is not None and self.pending_issued_ms is None
        self.pending_issued_ms = now_ms
        return self.loss_deadline_ms()

    def write_too_late(self, now_ms: int) -> ReadSeq | Lost:
        """The write could not be issued by issue_by_ms: verify again (or we are past a limit)."""
        assert self.pending is not None and self.pending_issued_ms is None
        self.pending = None
        why = self.expired(now_ms)
        if why is None and now_ms >= self.issue_deadline_ms():
            why = "could not issue our next MMP write in time (HD-issue)"
        if why:
            return self._lose(why)
        return ReadSeq(now_ms)

    def on_written(self, submitted_ms: int, completed_ms: int) -> Lost | None:
        assert self.pending is not None
        if self.pending_issued_ms is None:
            self.pending_issued_ms = submitted_ms
        deadline = self.loss_deadline_ms()  # as it stood while the write was in flight
        new = self.pending
        if completed_ms >= deadline:
            self.pending = self.pending_issued_ms = None
            return self._lose(f"our MMP write completed {completed_ms - self.issued_ms} ms after our previous one"
                              f" was issued, past our loss deadline ({deadline - self.issued_ms} ms): another"
                              " node may already have taken it over")
        self.pending = self.pending_issued_ms = None
        self.cycles_ms.append(completed_ms - self.verify_submitted_ms)
        self.block = new
        self.issued_ms = submitted_ms
        self.bumps += 1
        if new.seq in (SEQ_CLEAN, SEQ_FSCK):
            self.released = True
        return None

    def on_write_failed(self, why: str) -> Lost:
        """HD-unknown: the write failed or passed its deadline: we can no longer prove we hold it."""
        self.pending = self.pending_issued_ms = None
        return self._lose(why)

    def _lose(self, why: str) -> Lost:
        self.lost = why
        return Lost(why)
