"""Test helper: one MMP guard (diskhb.mmp.guard.Guard) driven synchronously through a Runner.

The CLI drives its guard with Runner.drive; these helpers do the same (Runner.execute for every
request, the runner's clock) with two differences a test needs: every result is handed back to
the guard before the caller's `until()` is asked (so stopping between two steps never leaves a
request whose answer is lost), and every drive is bounded in real time.

    held = acquire(runner, claimant(1), create=True)      # Held: the guard, its GotIt
    assert bump(held) is None                              # one more verify + write
    gone = release(held)                                   # verify + CLEAN: gd.Gone(released=True)

A refusal raises what the CLI raises (diskhb.errors.Refused, exit 1, or OperatorError, exit 2).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from diskhb.core import timing
from diskhb.mmp import format as mf
from diskhb.mmp import guard as gd
from diskhb.mmp.runner import Runner, raise_denied
from diskhb.mmp.steps import Claimant, Refusal
from diskhb.runtime import new_generation

DRIVE_LIMIT_S = 60.0  # no drive in these tests may take longer (real time)
NAP_MS = 20  # Runner.drive's LOOP_MS


def claimant(node_id: int, resource: str = "db", interval_ms: int = 1000, *, generation: int | None = None,
             holder_name: str | None = None, device: str = "test") -> Claimant:
    return Claimant(node_id=node_id, generation=generation or new_generation(),
                    holder_name=holder_name or f"n{node_id}", resource=resource, interval_ms=interval_ms,
                    ceiling_ms=timing.mmp_ceiling_ms(interval_ms), device=device)


def drive(runner: Runner, guard: gd.Guard, *, until: Callable[[], bool] | None = None,
          on_event: Callable[[object], None] | None = None, limit_s: float = DRIVE_LIMIT_S) -> list:
    """Run `guard` until it is done or `until()` (asked only with no result pending); its events."""
    events: list = []
    results: list[gd.IoResult] = []
    end = time.monotonic() + limit_s
    while True:
        assert time.monotonic() < end, f"the guard ran for more than {limit_s} s (state {guard.state})"
        now = runner.clock_ms()
        guard.wall_ms = runner.wall()
        requests = guard.step(now, results)
        results = [r for r in map(runner.execute, requests) if r is not None]
        for ev in guard.drain():
            events.append(ev)
            if on_event is not None:
                on_event(ev)
        if guard.done:
            return events
        if results:
            continue
        if until is not None and until():
            return events
        wake = guard.next_wakeup_ms()
        left = NAP_MS if wake is None else max(0, min(NAP_MS, wake - runner.clock_ms()))
        if left:
            time.sleep(left / 1000)


@dataclass
class Held:
    runner: Runner
    guard: gd.Guard
    got: gd.GotIt
    events: list = field(default_factory=list)

    @property
    def loc(self) -> gd.BlockLocation:
        return self.guard.loc

    @property
    def hold(self):
        return self.guard.hold

    @property
    def block(self) -> mf.SeqBlock:
        return self.guard.hold.block

    @property
    def epoch(self) -> int:
        return self.got.epoch

    @property
    def note(self) -> str:
        return self.got.note


def make_guard(runner: Runner, me: Claimant, *, loss_budget_ms: int = 0, wait_ms: int = 0, create: bool = False,
               peer_info=None, allow_fsck: bool = False, stale_self_ok: bool = False,
               finish: int | None = None) -> gd.Guard:
    return gd.Guard(me, runner.target.info, timing=timing.MmpTiming(me.interval_ms, loss_budget_ms),
                    ledger=runner.ledger, rand=runner.rand, now_ms=runner.clock_ms(), wait_ms=wait_ms, create=create,
                    peer_info=peer_info, allow_fsck=allow_fsck, stale_self_ok=stale_self_ok, finish=finish,
                    lock_key=runner.lock_key())


def record_refusals(guard: gd.Guard, into: list[Refusal]) -> None:
    """Collect the refusals the guard retries (what the old runner.acquire's on_wait saw)."""
    inner = guard._refused

    def refused(r: Refusal, now_ms: int) -> None:
        into.append(r)
        inner(r, now_ms)

    guard._refused = refused


def acquire(runner: Runner, me: Claimant, *, on_refusal: list | None = None, **kw) -> Held:
    """Drive a new guard until it holds; raise the refusal (as the CLI would) otherwise."""
    guard = make_guard(runner, me, **kw)
    if on_refusal is not None:
        record_refusals(guard, on_refusal)
    events = drive(runner, guard, until=lambda: guard.holding)
    got = next((e for e in events if isinstance(e, gd.GotIt)), None)
    if got is None:
        denied = next(e for e in events if isinstance(e, gd.Denied))
        raise_denied(denied)
    return Held(runner, guard, got, events)


def gone_of(events: list) -> gd.Gone | None:
    return next((e for e in events if isinstance(e, gd.Gone)), None)


def bump(held: Held) -> gd.Gone | None:
    """Let the guard make its next bump (verify, write): None once it completed, else its end."""
    guard = held.guard
    if guard.done:
        return gone_of(held.events)
    n = guard.hold.bumps
    events = drive(held.runner, guard, until=lambda: guard.hold.bumps > n)
    held.events.extend(events)
    return gone_of(events)


def release(held: Held) -> gd.Gone | None:
    """Ask the guard to release (verify, CLEAN): its Gone (None: it had ended already)."""
    guard = held.guard
    if guard.done:
        return None
    guard.release()
    events = drive(held.runner, guard)
    held.events.extend(events)
    return gone_of(events)
