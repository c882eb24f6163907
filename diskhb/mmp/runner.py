"""The CLI's driver of one guard: carries out what diskhb.mmp.guard asks, with real time and I/O.

Rules of this file:
- No decision is made here. Each request is executed (a read, a write, a lock) and its result,
  with the I/O's submission and completion times, handed back to the guard.
- The one check made here is mechanical: a write is issued only if the clock, read right before
  the write syscall, is not past its issue_by_ms (else the result says too_late).
- Every I/O gets the time left until its deadline_ms (diskhb.mmp.store: a request that misses it
  wedges the store, and the guard treats it as given up: GD1). The node daemon drives its guards
  through its own asynchronous executor instead (diskhb.mmp.executor), never this loop.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from diskhb.core.timing import write_land_max_ms
from diskhb.errors import OperatorError
from diskhb.mmp import format as mf
from diskhb.mmp.guard import BlockLocation, Guard, GuardEvent, IoRequest, IoResult
from diskhb.mmp.ledger import SectorLedger
from diskhb.mmp.store import DEFAULT_IO_TIMEOUT_MS, StoreWedged, Target, io_error
from diskhb.regions.disk.blockio import FROZEN_SLACK_MS
from diskhb.runtime import monotonic_ms, wall_ms

LOOP_MS = 20  # the longest nap between two looks at the guard (and at the caller's stop flag)


class Cancelled(Exception):
    """The caller asked us to stop while we were waiting (a signal)."""


@dataclass(frozen=True, slots=True)
class Found:
    loc: BlockLocation
    view: mf.ResourceView


class Runner:
    def __init__(self, target: Target, *, clock_ms: Callable[[], int] = monotonic_ms,
                 wall: Callable[[], int] = wall_ms, rand: Callable[[int], int] = secrets.randbelow,
                 cancelled: Callable[[], bool] = lambda: False, run_dir: str | None = None):
        self.target = target
        self.store = target.store
        self.clock_ms = clock_ms
        self.wall = wall
        self.rand = rand
        self.cancelled = cancelled
        self.run_dir = run_dir  # where the node-local ballot locks live (None: no lock: tests)
        # F1 for a CLI process: its store wedges after a timeout, so nothing more is written.
        self.ledger = SectorLedger(write_land_max_ms(DEFAULT_IO_TIMEOUT_MS))
        self.ios = 0
        self._locks: dict[str, object] = {}

    # -- reading (status, release) ----------------------------------------------------------------

    def views(self) -> list[tuple[BlockLocation, mf.ResourceView]]:
        out = []
        for loc in self.target.blocks:
            data = self._io(lambda loc=loc: self.store.read(loc.base, loc.span))
            out.append((loc, mf.decode_resource(data, sector_size=loc.sector_size, slot_count=loc.slot_count,
                                                uuid=loc.uuid)))
        return out

    def find(self, name: str) -> Found | None:
        """The block whose committed seq block names `name` (read-only)."""
        for loc, view in self.views():
            if view.seq is not None and view.seq.resource == name:
                return Found(loc, view)
        return None

    def _io(self, fn):
        self.ios += 1
        try:
            return fn()
        except OSError as e:
            raise io_error(self.target.path, e) from None

    # -- driving a guard ----------------------------------------------------------------------------

    def lock_key(self):
        """The guard's lock_key (GD3), or None without a run dir."""
        if self.run_dir is None:
            return None
        from diskhb.mmp.local import ballot_lock_key

        return lambda loc: ballot_lock_key(self.run_dir, loc)

    def drive(self, guard: Guard, *, on_event: Callable[[GuardEvent], None] | None = None,
              until: Callable[[], bool] | None = None, idle: Callable[[], None] | None = None) -> None:
        """Run `guard` until it is done (or `until()` says stop). `idle()` runs between looks
        (the foreground holder polls its command and its stop flag there)."""
        results: list[IoResult] = []
        while True:
            now = self.clock_ms()
            guard.wall_ms = self.wall()
            requests = guard.step(now, results)
            results = []
            # Events first: a lease shortened by the write about to be issued reaches the
            # enforcer before that write can land (timing HD-loss, schedule E).
            for ev in guard.drain():
                if on_event is not None:
                    on_event(ev)
            for req in requests:
                before = self.clock_ms()
                r = self.execute(req)
                # execute() waits at most until the deadline: back well after it (with or without
                # the result), this process was stopped while it waited for the I/O
                overshoot = self.clock_ms() - max(before, req.deadline_ms)
                if overshoot > FROZEN_SLACK_MS:
                    guard.stalled(overshoot)
                if r is not None:
                    results.append(r)
            if results:
                continue  # every result goes back to the guard before anyone may stop it
            if guard.done or (until is not None and until()):
                return
            if idle is not None:
                idle()
            wake = guard.next_wakeup_ms()
            left = LOOP_MS if wake is None else max(0, min(LOOP_MS, wake - self.clock_ms()))
            if left:
                before = self.clock_ms()
                time.sleep(left / 1000)
                overshoot = self.clock_ms() - before - left
                if overshoot > FROZEN_SLACK_MS:  # we were stopped (SIGSTOP, a VM pause) or starved
                    guard.stalled(overshoot)
            if self.cancelled() and not guard.holding:
                guard.release()  # stop trying: the guard ends with a refusal ("cancelled")

    def execute(self, req: IoRequest) -> IoResult | None:
        """One request, synchronously, within its deadline. None: not answered in time (the
        guard notices the deadline itself); the store is wedged from then on."""
        if req.op == "unlock":
            sock = self._locks.pop(req.lock, None)
            if sock is not None:
                sock.close()
            return None
        sub = self.clock_ms()
        if req.op == "lock":
            from diskhb.mmp.local import try_lock

            sock = try_lock(req.lock, self.target.path)
            if sock is not None:
                self._locks[req.lock] = sock
            return IoResult(req.id, sub, self.clock_ms(), error=None if sock is not None else "busy")
        timeout = req.deadline_ms - sub
        if timeout <= 0:
            return None
        if req.op == "write" and req.issue_by_ms is not None and sub > req.issue_by_ms:
            return IoResult(req.id, sub, sub, too_late=True)
        self.ios += 1
        try:
            if req.op == "read":
                data = self.store.read(req.offset, req.length, timeout_ms=timeout)
                return IoResult(req.id, sub, self.clock_ms(), data=data)
            self.store.write(req.offset, req.data, timeout_ms=timeout)
            return IoResult(req.id, sub, self.clock_ms())
        except StoreWedged:
            return None if self.clock_ms() >= req.deadline_ms else \
                IoResult(req.id, sub, self.clock_ms(), error="the store is wedged by an earlier hung request")
        except OSError as e:
            return IoResult(req.id, sub, self.clock_ms(), error=str(io_error(self.target.path, e)))

    def close_locks(self) -> None:
        for sock in self._locks.values():
            sock.close()
        self._locks.clear()


def raise_denied(ev) -> None:
    """A guard's Denied as the CLI's exception (exit 1 refused, 2 bad input)."""
    from diskhb.errors import Refused

    raise (Refused(ev.reason) if ev.exit_code == 1 else OperatorError(ev.reason))


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
