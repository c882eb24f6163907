"""Start-up slot claim: one writer per slot, a crashed owner's slot reclaimed after dead_ms."""

from diskhb.core.slot_claim import IN_USE_BAD_SAMPLES_MAX, ClaimVerdict, SlotClaim, SlotSample
from diskhb.core.types import SlotFlag

A = int(SlotFlag.ACTIVE)


def test_empty_and_left_slots_are_free_at_once():
    assert SlotClaim(2000).observe(SlotSample(None, None, 0), 0, 0) is ClaimVerdict.FREE
    assert SlotClaim(2000).observe(SlotSample(5, 9, int(SlotFlag.LEFT)), 0, 0) is ClaimVerdict.FREE


def test_unchanged_active_slot_is_free_only_after_dead_ms():
    c = SlotClaim(2000)
    for t in range(0, 2000, 200):
        assert c.observe(SlotSample(5, 9, A), t, t) is ClaimVerdict.WAIT
    assert c.observe(SlotSample(5, 9, A), 2000, 2000) is ClaimVerdict.FREE


def test_advancing_slot_is_in_use():
    c = SlotClaim(2000)
    c.observe(SlotSample(5, 9, A, "other"), 0, 0)
    assert c.observe(SlotSample(5, 10, A, "other"), 200, 200) is ClaimVerdict.IN_USE
    assert "'other'" in c.reason


def test_corrupt_samples_cost_time_then_refuse():
    c = SlotClaim(2000)
    for i in range(IN_USE_BAD_SAMPLES_MAX - 1):
        assert c.observe(SlotSample(None, None, 0, valid=False), i, i) is ClaimVerdict.WAIT
    assert c.observe(SlotSample(None, None, 0, valid=False), 99, 99) is ClaimVerdict.IN_USE


def test_the_watch_runs_from_the_first_completion_to_a_later_submission():
    """A slow read is dated by its submission (it may have sampled the slot that early), the
    first by its completion: a read submitted 1800 ms after the first completed, and completing
    700 ms later, has watched 1800 ms, not 2500 (the issue's 'stamp with the submission')."""
    c = SlotClaim(2000)
    assert c.observe(SlotSample(5, 9, int(SlotFlag.ACTIVE)), 90, 100) is ClaimVerdict.WAIT
    assert c.observe(SlotSample(5, 9, int(SlotFlag.ACTIVE)), 1900, 2600) is ClaimVerdict.WAIT
    assert c.observe(SlotSample(5, 9, int(SlotFlag.ACTIVE)), 2100, 2110) is ClaimVerdict.FREE
