"""The thin I/O runner: carries out what diskhb.mmp.guard decides, with real time and I/O.

Rules of this file:
- No decision is made here. Each guard step is executed (sleep until, read, write) and its
  result, with the I/O's submission and completion times, handed back to the guard.
- The one check made here is mechanical: a WriteSeq is issued only if the clock, read right
  before the write, is not past the step's issue_by_ms (else the guard is told and decides).
- I/O deadlines: a holder's I/O may never outlive its H1/H2 limits, so every hold I/O gets
  the time left until the limit as its deadline; a missed deadline wedges the store and the
  guard calls the resource lost (the loss action then runs before anyone can take over).
- Name -> block: a committed seq block naming the resource is used directly; a new name is
  bound by walking the blocks in index order (guard.classify_block explains why that is safe).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from diskhb.errors import OperatorError, Refused as RefusedError
from diskhb.mmp import format as mf
from diskhb.mmp import guard as g
from diskhb.mmp.store import BlockLocation, StoreWedged, Target, io_error, read_seq, read_view
from diskhb.runtime import monotonic_ms, wall_ms


class Cancelled(Exception):
    """The caller asked us to stop while we were waiting (a signal)."""


@dataclass(frozen=True, slots=True)
class Found:
    loc: BlockLocation
    view: mf.ResourceView


class Runner:
    def __init__(self, target: Target, *, clock_ms: Callable[[], int] = monotonic_ms,
                 wall: Callable[[], int] = wall_ms, rand: Callable[[int], int] = secrets.randbelow,
                 cancelled: Callable[[], bool] = lambda: False,
                 lock_for: Callable[[BlockLocation], AbstractContextManager] | None = None):
        self.target = target
        self.store = target.store
        self.clock_ms = clock_ms
        self.wall = wall
        self.rand = rand
        self.cancelled = cancelled
        self.lock_for = lock_for or (lambda loc: nullcontext())
        self.ios = 0

    # -- plumbing --------------------------------------------------------------------------

    def _sleep_until(self, at_ms: int) -> None:
        while True:
            if self.cancelled():
                raise Cancelled()
            left = at_ms - self.clock_ms()
            if left <= 0:
                return
            time.sleep(min(left, 50) / 1000)

    def _io(self, fn):
        self.ios += 1
        try:
            return fn()
        except OSError as e:
            raise io_error(self.target.path, e) from None

    # -- reading ---------------------------------------------------------------------------

    def views(self) -> list[tuple[BlockLocation, mf.ResourceView]]:
        return [(loc, self._io(lambda loc=loc: read_view(self.store, loc))) for loc in self.target.blocks]

    def find(self, name: str) -> Found | None:
        """The block whose committed seq block names `name` (read-only)."""
        for loc, view in self.views():
            if view.seq is not None and view.seq.resource == name:
                return Found(loc, view)
        return None

    def names(self) -> list[str]:
        out = []
        for _, view in self.views():
            if view.seq is not None:
                out.append(view.seq.resource)
        return out

    # -- acquiring -------------------------------------------------------------------------

    def run_acquisition(self, loc: BlockLocation, me: g.Claimant, *, peer_info: g.PeerInfoFn | None = None,
                        allow_fsck: bool = False, stale_self_ok: bool = False,
                        abandoned: tuple[int, int, int, int] | None = None) -> g.Step:
        m = g.Acquisition(me, uuid=loc.uuid, slot_count=loc.slot_count, sector_size=loc.sector_size,
                          rand=self.rand, peer_info=peer_info, allow_fsck=allow_fsck,
                          stale_self_ok=stale_self_ok, abandoned=abandoned)
        step = m.start(self.clock_ms())
        while True:
            m.wall_ms = self.wall()
            if isinstance(step, g.ReadResource):
                self._sleep_until(step.at_ms)
                sub = self.clock_ms()
                view = self._io(lambda: read_view(self.store, loc))
                step = m.on_resource(view, sub, self.clock_ms())
            elif isinstance(step, g.ReadSeq):
                self._sleep_until(step.at_ms)
                sub = self.clock_ms()
                seq, err = self._io(lambda: read_seq(self.store, loc))
                step = m.on_seq(seq, err, sub, self.clock_ms())
            elif isinstance(step, g.WriteBallot):
                data = mf.encode_ballot(step.ballot, loc.sector_size)
                sub = self.clock_ms()
                self._io(lambda: self.store.write(loc.ballot_pos(step.ballot.node_id), data))
                step = m.on_written(sub, self.clock_ms())
            elif isinstance(step, g.WriteSeq):
                data = mf.encode_seq_block(step.block)
                sub = self.clock_ms()
                if sub > step.issue_by_ms:
                    step = m.write_too_late(sub)
                    continue
                self._io(lambda: self.store.write(loc.base, data))
                step = m.on_written(sub, self.clock_ms())
            else:
                return step

    def acquire(self, me: g.Claimant, *, create: bool = False, peer_info: g.PeerInfoFn | None = None,
                allow_fsck: bool = False, stale_self_ok: bool = False, wait_ms: int = 0,
                on_wait: Callable[[g.Refused], None] | None = None) -> tuple[BlockLocation, g.Acquired]:
        """Acquire `me.resource`, retrying refusals that may clear for up to wait_ms.

        Raises diskhb.errors.Refused (exit 1) or OperatorError (exit 2) with one line.
        """
        deadline = self.clock_ms() + max(0, wait_ms)
        abandoned = None  # our own seq block that an earlier attempt wrote and then gave up
        while True:
            out = self._acquire_once(me, create=create, peer_info=peer_info, allow_fsck=allow_fsck,
                                     stale_self_ok=stale_self_ok, abandoned=abandoned)
            if isinstance(out, tuple):
                return out
            assert isinstance(out, g.Refused)
            abandoned = out.abandoned or abandoned
            if not out.retry:
                raise RefusedError(out.reason)
            now = self.clock_ms()
            if now >= deadline:
                raise RefusedError(out.reason + ("" if wait_ms <= 0 else f" (gave up after {wait_ms / 1000:g} s)"))
            if on_wait:
                on_wait(out)
            self._sleep_until(min(deadline, now + g.POLL_MS_MAX))

    def _acquire_once(self, me: g.Claimant, **kw) -> tuple[BlockLocation, g.Acquired] | g.Refused:
        name = me.resource
        views = self.views()
        for loc, view in views:  # a committed binding is the name's only block
            if view.seq is not None and view.seq.resource == name:
                return self._on(loc, me, **kw)
        if self.target.standalone:
            loc, view = views[0]
            bound = g.bound_name(view) if not (view.seq_error or view.ballot_errors) else None
            raise OperatorError(f"{loc.label}: this block is for resource {bound!r}, not {name!r}")
        pending = set().union(*(g.pending_names(v) for _, v in views))
        if not kw.get("create") and name not in pending:
            known = sorted({v.seq.resource for _, v in views if v.seq is not None})
            raise OperatorError(f"{self.target.path}: unknown resource {name!r} (known: "
                                f"{', '.join(known) or 'none'}); check the name, or pass --create to"
                                " bind it to a free MMP block")
        for loc, view in views:
            cls = g.classify_block(view, name)
            if cls == "other":
                continue
            if cls == "corrupt":
                raise OperatorError(f"{loc.label}: MMP block unreadable ({view.seq_error or view.ballot_errors});"
                                    f" cannot tell whether it is {name!r}'s; nothing was written;"
                                    " see 'diskhb mmp status'")
            out = self._on(loc, me, **kw)
            if isinstance(out, g.NotOurs):
                continue
            return out
        raise OperatorError(f"{self.target.path}: no free MMP block for {name!r} (all"
                            f" {len(self.target.blocks)} are bound); reformat with more --mmp-resources")

    def _on(self, loc: BlockLocation, me: g.Claimant, *, create=False, **kw):
        with self.lock_for(loc):
            out = self.run_acquisition(loc, me, **kw)
        if isinstance(out, g.Acquired):
            return loc, out
        return out

    # -- holding ---------------------------------------------------------------------------

    def bump(self, loc: BlockLocation, hold: g.Hold, *, final: int | None = None) -> g.Lost | None | str:
        """One verify-then-write cycle. None: done; Lost: lost; "retry": nothing written, try
        again soon (a transient read error, or we were too slow to issue the write)."""
        now = self.clock_ms()
        why = hold.expired(now)
        if why:
            hold.lost = why
            return g.Lost(why)
        hold.wall_ms = self.wall()
        sub = self.clock_ms()
        try:
            seq, err = read_seq(self.store, loc, timeout_ms=hold.issue_deadline_ms() - sub)
        except StoreWedged as e:
            hold.lost = f"storage hung: {e}"
            return g.Lost(hold.lost)
        except OSError:
            return "retry"  # H1 turns a storage that keeps failing into "lost" in time
        step = hold.on_verify(seq, err, sub, self.clock_ms(), final=final)
        if isinstance(step, g.Lost):
            return step
        data = mf.encode_seq_block(step.block)
        sub = self.clock_ms()
        if sub > step.issue_by_ms:
            again = hold.write_too_late(sub)
            return again if isinstance(again, g.Lost) else "retry"
        try:
            self.store.write(loc.base, data,
                             timeout_ms=hold.issued_ms + g.classic_wait_ms(hold.block.interval_ms) - sub)
        except OSError as e:
            # We cannot know whether it landed: we can no longer prove we hold it.
            hold.lost = f"our MMP write failed ({e}); cannot prove we still hold it"
            return g.Lost(hold.lost)
        return hold.on_written(sub, self.clock_ms())


# --------------------------------------------------------------------------------------------
# Signals for foreground commands


class StopFlag:
    """Set by signal handlers; read by loops (a handler must not do I/O itself)."""

    def __init__(self):
        self.signum: int | None = None
        self.event = threading.Event()

    def __call__(self, signum, _frame=None) -> None:
        self.signum = signum
        self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()
