"""The holder's rules (diskhb.mmp.guard.Hold), I/O-free under a virtual clock: verify before
every write, H1 (bump in time or give up), H2 (a write that landed too late is a loss), the
adaptive interval on slow I/O, release."""

from __future__ import annotations

from dataclasses import replace

import pytest

from diskhb.mmp import format as mf
from diskhb.mmp import guard as g

BASE_MS = 1000


def held_block(**kw) -> mf.SeqBlock:
    b = mf.SeqBlock(seq=1234, epoch=5, holder_id=1, holder_generation=0xABC, holder_name="n1", resource="db",
                    device="sdb", interval_ms=BASE_MS, wall_ms=0, uuid=b"u" * 16, slot_count=4, sector_size=512)
    return replace(b, **kw)


def hold_at(t0_ms: int = 0) -> g.Hold:
    return g.Hold(g.Acquired(held_block(), submitted_ms=t0_ms, completed_ms=t0_ms + 5), base_interval_ms=BASE_MS)


def bump(h: g.Hold, read_at_ms: int, io_ms: int = 5, write_ms: int | None = None) -> g.WriteSeq | g.Lost:
    """One cycle: a verify read of what is on disk (our last write), then the write."""
    step = h.on_verify(h.block, None, read_at_ms, read_at_ms + io_ms)
    if isinstance(step, g.Lost):
        return step
    assert isinstance(step, g.WriteSeq)
    write_at = read_at_ms + io_ms
    assert write_at <= step.issue_by_ms
    lost = h.on_written(write_at, write_at + (io_ms if write_ms is None else write_ms))
    return lost or step


def test_a_healthy_holder_bumps_every_interval_for_a_long_time():
    h = hold_at()
    seqs = [h.block.seq]
    t = 0
    for _ in range(10_000):
        t = h.due_ms()
        step = bump(h, t)
        assert isinstance(step, g.WriteSeq), step
        seqs.append(h.block.seq)
    assert h.bumps == 10_000 and h.lost is None
    assert len(set(seqs)) == len(seqs)  # every bump is a new seq: watchers always see a change
    assert all(s not in (mf.SEQ_CLEAN, mf.SEQ_FSCK) for s in seqs)
    assert h.block.interval_ms == BASE_MS  # fast I/O: the interval stays the base one


def test_verify_before_write_sees_a_takeover_and_never_writes():
    h = hold_at()
    thief = held_block(seq=77, epoch=6, holder_id=2, holder_generation=0xDEF, holder_name="n2")
    step = h.on_verify(thief, None, h.due_ms(), h.due_ms() + 5)
    assert isinstance(step, g.Lost) and "taken over by n2 (node 2" in step.reason and "epoch 6" in step.reason
    # Once lost, always lost: no later verify can produce a write.
    again = h.on_verify(h.block, None, h.due_ms() + 100, h.due_ms() + 105)
    assert isinstance(again, g.Lost)


@pytest.mark.parametrize("found, why", [
    (None, "wiped"),
    ("clean", "released by someone else"),
    ("fsck", "marked FSCK"),
])
def test_any_change_we_did_not_make_is_a_loss(found, why):
    h = hold_at()
    seq = None if found is None else replace(h.block, seq=mf.SEQ_CLEAN if found == "clean" else mf.SEQ_FSCK)
    step = h.on_verify(seq, None, h.due_ms(), h.due_ms() + 5)
    assert isinstance(step, g.Lost) and why in step.reason


def test_an_unreadable_block_is_a_loss_not_a_guess():
    h = hold_at()
    step = h.on_verify(None, "MMP block checksum mismatch", h.due_ms(), h.due_ms() + 5)
    assert isinstance(step, g.Lost) and "unreadable" in step.reason


def test_h1_a_holder_that_wakes_too_late_gives_up_without_writing():
    h = hold_at()
    # Frozen (SIGSTOP, VM pause) past interval + 1 s since our last write was issued.
    late = BASE_MS + g.CLASSIC_MARGIN_MS
    assert h.expired(late - 1) is None
    assert h.expired(late) is not None
    step = h.on_verify(h.block, None, late, late + 5)
    assert isinstance(step, g.Lost) and "could not bump" in step.reason


def test_a_write_that_cannot_be_issued_by_its_deadline_is_not_issued():
    h = hold_at()
    step = h.on_verify(h.block, None, h.due_ms(), h.due_ms() + 5)
    assert isinstance(step, g.WriteSeq)
    assert step.issue_by_ms <= step.block.interval_ms + g.CLASSIC_MARGIN_MS  # never beyond H1
    # The runner missed issue_by_ms: verify again instead (still within H1) ...
    nxt = h.write_too_late(step.issue_by_ms + 1)
    assert isinstance(nxt, g.ReadSeq) and h.pending is None
    # ... or, past H1, the resource is lost.
    assert isinstance(h.write_too_late(BASE_MS + g.CLASSIC_MARGIN_MS + 1), g.Lost)


def test_h2_a_write_that_completed_too_late_is_a_loss_after_the_fact():
    h = hold_at()
    step = h.on_verify(h.block, None, h.due_ms(), h.due_ms() + 5)
    assert isinstance(step, g.WriteSeq)
    # Issued in time, but the I/O stack held it until readers may have judged us dead.
    lost = h.on_written(h.due_ms() + 5, g.classic_wait_ms(BASE_MS))
    assert isinstance(lost, g.Lost) and "readers wait" in lost.reason
    assert h.bumps == 0


def test_slow_io_stretches_the_interval_so_a_slow_holder_is_not_taken_for_dead():
    h = hold_at()
    t = 0
    # I/O cycles (verify submission -> write completion) of 1.5 s: twice that is written.
    # (The read must stay inside COMMIT_WINDOW_MS, or the write is not issued at all.)
    for _ in range(3):
        t = h.due_ms()
        step = bump(h, t, io_ms=400, write_ms=1100)
        assert isinstance(step, g.WriteSeq), step
    assert h.block.interval_ms == 3000
    # Watchers now wait 2 x 3000 + 1000 ms: a holder with 1.5 s cycles stays inside that.
    assert g.classic_wait_ms(h.block.interval_ms) > 2 * 1500
    # When I/O is fast again, the slow cycles age out and the base interval returns.
    for _ in range(g.IO_CYCLES_REMEMBERED + 1):
        step = bump(h, h.due_ms(), io_ms=5)
        assert isinstance(step, g.WriteSeq)
    assert h.block.interval_ms == BASE_MS


def test_the_adaptive_interval_has_a_ceiling():
    h = hold_at()
    h.cycles_ms.append(10 * mf.INTERVAL_MS_MAX)
    assert h.next_interval_ms() == mf.INTERVAL_MS_MAX


@pytest.mark.parametrize("final", [mf.SEQ_CLEAN, mf.SEQ_FSCK])
def test_release_and_fsck_write_the_sentinel_after_a_verify(final):
    h = hold_at()
    step = h.on_verify(h.block, None, h.due_ms(), h.due_ms() + 5, final=final)
    assert isinstance(step, g.WriteSeq) and step.block.seq == final
    assert step.block.epoch == h.block.epoch and step.block.holder_id == 1  # who released, and when
    assert h.on_written(h.due_ms() + 5, h.due_ms() + 10) is None
    assert h.block.seq == final


def test_the_daemon_view_is_asked_afresh_at_every_question():
    """A --wait that outlasts a holder's death must see it die: no view frozen at the start."""
    from diskhb.core.types import NodeState
    from diskhb.mmp.held import live_peer_info

    states = iter(["alive", "alive", "dead", "left"])
    asked = []

    def snapshot():
        asked.append(1)
        return {"nodes": [{"id": 1, "state": next(states), "generation": 0xABC}]}

    info = live_peer_info(snapshot)
    got = [info(1).state for _ in range(4)]
    assert got == [NodeState.ALIVE, NodeState.ALIVE, NodeState.DEAD, NodeState.LEFT] and len(asked) == 4
    assert live_peer_info(lambda: None)(1) is None  # the daemon went away: no view, classic path
