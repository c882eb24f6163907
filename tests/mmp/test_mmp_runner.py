"""The CLI's driver (diskhb.mmp.runner.Runner) and the foreground holder (diskhb.mmp.foreground):
under a virtual clock, over an in-memory disk whose every I/O takes a fixed time."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from diskhb.core.timing import classic_wait_ms
from diskhb.mmp import foreground
from diskhb.mmp import guard as gd
from diskhb.mmp import runner as runner_mod
from diskhb.mmp.format import decode_seq_block
from diskhb.mmp.guard import BlockLocation
from diskhb.mmp.runner import Runner
from diskhb.mmp.store import MemoryStore, Target

import mmp_drive
from mmp_drive import claimant, drive, make_guard

S = 512
LOC = BlockLocation(label="mem block 0", base=0, sector_size=S, slot_count=4, uuid=b"\x6d" * 16, index=0)


class SlowDisk:
    """A MemoryStore whose every read and write takes io_ms of the virtual clock."""

    def __init__(self, clock: list[int], io_ms: int):
        self.mem = MemoryStore(LOC.span, S)
        self.clock, self.io_ms = clock, io_ms
        self.path, self.sector_size, self.size_bytes = "<memory>", S, LOC.span

    def read(self, offset, length, *, timeout_ms=None):
        self.clock[0] += self.io_ms
        return self.mem.read(offset, length)

    def write(self, offset, data, *, timeout_ms=None):
        self.clock[0] += self.io_ms
        self.mem.write(offset, data)

    def close(self) -> None:
        pass


def virtual_runner(monkeypatch, io_ms: int) -> tuple[list[int], SlowDisk, Runner]:
    """A Runner over a SlowDisk on a virtual clock that its sleeps (and mmp_drive's) advance."""
    clock = [0]
    disk = SlowDisk(clock, io_ms)
    target = Target(path="<memory>", store=disk, blocks=(LOC,), uuid=LOC.uuid, standalone=False)
    runner = Runner(target, clock_ms=lambda: clock[0], wall=lambda: 0, rand=random.Random(3).randrange)
    sleep = SimpleNamespace(sleep=lambda s: clock.__setitem__(0, clock[0] + max(1, round(s * 1000))),
                            monotonic=lambda: 0)
    monkeypatch.setattr(runner_mod, "time", sleep)
    monkeypatch.setattr(mmp_drive, "time", sleep)
    return clock, disk, runner




def test_a_hold_whose_first_verify_is_due_at_once_is_not_lost(monkeypatch):
    """Interval 200 ms, every I/O 120 ms: the commit write and its read-back take 240 ms, so the
    hold's first verify is due in the very step that acquires. foreground.acquire drives the
    guard until it holds: that verify must not be lost between acquire() and hold()."""
    clock = [0]
    disk = SlowDisk(clock, 120)
    target = Target(path="<memory>", store=disk, blocks=(LOC,), uuid=LOC.uuid, standalone=False)
    runner = Runner(target, clock_ms=lambda: clock[0], wall=lambda: 0, rand=random.Random(3).randrange)
    monkeypatch.setattr(runner_mod, "time",
                        SimpleNamespace(sleep=lambda s: clock.__setitem__(0, clock[0] + max(1, round(s * 1000)))))
    guard = make_guard(runner, claimant(1, "db", 200), create=True)
    got, lease, denied = foreground.acquire(runner, guard)
    assert got is not None and denied is None, denied
    events: list = []
    runner.drive(guard, on_event=events.append, until=lambda: clock[0] >= got.issued_ms + 5000)
    lost = [e for e in events if isinstance(e, gd.Gone)]
    assert not lost, lost  # a healthy (if slow) disk: the guard keeps bumping
    assert guard.holding and guard.hold.bumps >= 5


def test_the_same_guard_keeps_bumping_when_no_result_is_dropped(monkeypatch):
    """The control for the test above: the guard itself is fine on that disk when every result
    reaches it (tests/mmp/mmp_drive.drive asks until() only with no result pending)."""
    clock = [0]
    disk = SlowDisk(clock, 120)
    target = Target(path="<memory>", store=disk, blocks=(LOC,), uuid=LOC.uuid, standalone=False)
    runner = Runner(target, clock_ms=lambda: clock[0], wall=lambda: 0, rand=random.Random(3).randrange)
    monkeypatch.setattr(mmp_drive, "time", SimpleNamespace(
        sleep=lambda s: clock.__setitem__(0, clock[0] + max(1, round(s * 1000))), monotonic=lambda: 0))
    guard = make_guard(runner, claimant(1, "db", 200), create=True)
    events = drive(runner, guard, until=lambda: guard.holding)
    got = next(e for e in events if isinstance(e, gd.GotIt))
    events = drive(runner, guard, until=lambda: clock[0] >= got.issued_ms + 5000)
    assert not [e for e in events if isinstance(e, gd.Gone)]
    assert guard.holding and guard.hold.bumps >= 5




def test_the_enforcer_learns_a_shortened_lease_before_the_write_that_shortens_it(monkeypatch):
    """Schedule E at the driver: one slow cycle stretches the advertised interval (HD-adapt),
    fast ones bring it back to the base. The bump that advertises the shorter interval may land
    the moment it is issued, and a claimant that sees it waits C(shorter) only: whoever renews
    the lease enforcer (foreground.hold, from on_event) must have the shorter lease before that
    write goes out. If this process froze inside the write, the enforcer would act too late."""
    clock, disk, runner = virtual_runner(monkeypatch, io_ms=5)
    guard = make_guard(runner, claimant(1, "db", 200), create=True)
    drive(runner, guard, until=lambda: guard.holding)
    leases: list[gd.Lease] = []
    bumps: list[tuple[int, int, gd.Lease]] = []  # (issue, advertised interval, the lease on_event had then)
    inner = disk.write

    def write(offset, data, *, timeout_ms=None):
        if offset == LOC.base and leases:
            bumps.append((clock[0], decode_seq_block(data).interval_ms, leases[-1]))
        inner(offset, data, timeout_ms=timeout_ms)

    disk.write = write
    disk.io_ms = 150  # one slow cycle: 300 ms -> the next bump advertises 600 ms
    runner.drive(guard, on_event=lambda ev: leases.append(ev) if isinstance(ev, gd.Lease) else None,
                 until=lambda: guard.hold.bumps >= 2)
    disk.io_ms = 5
    runner.drive(guard, on_event=lambda ev: leases.append(ev) if isinstance(ev, gd.Lease) else None,
                 until=lambda: guard.done or guard.hold.bumps >= 14)
    assert guard.holding
    shrinking = [(t, i, lease) for (t, i, lease), (_, before, _) in zip(bumps[1:], bumps) if i < before]
    assert shrinking, [(t, i) for t, i, _ in bumps]
    for t, interval, lease in shrinking:
        assert lease.takeover_ms <= t + classic_wait_ms(interval), (t, interval, lease)


def test_a_process_stopped_inside_a_bump_blames_the_stop_not_the_device(monkeypatch):
    """Issue 9 point 8, the case a fresh clone's run found: SIGSTOP while a bump write was in
    flight; after SIGCONT the write's result comes back long past its deadline. The hold is lost
    (its completion is past the loss deadline), and the reason says this process was stopped."""
    clock, disk, runner = virtual_runner(monkeypatch, io_ms=5)
    guard = make_guard(runner, claimant(1, "db", 500), create=True)
    drive(runner, guard, until=lambda: guard.holding and guard.hold.bumps >= 2)
    inner = disk.write

    def stopped_inside(offset, data, *, timeout_ms=None):
        inner(offset, data, timeout_ms=timeout_ms)
        clock[0] += 3000  # SIGSTOP ... SIGCONT: the write completed, we hear of it 3 s later
        disk.write = inner

    disk.write = stopped_inside
    events: list = []
    runner.drive(guard, on_event=events.append)
    gone = [e for e in events if isinstance(e, gd.Gone)]
    assert len(gone) == 1 and not gone[0].released, events
    assert "past our loss deadline" in gone[0].lost and "this process was stalled for" in gone[0].lost, gone[0].lost
    assert "hung device" not in gone[0].lost
