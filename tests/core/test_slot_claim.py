"""Start-up slot claim: one writer per slot, a crashed owner's slot reclaimed after dead_ms."""

from diskhb.core.slot_claim import IN_USE_BAD_SAMPLES_MAX, ClaimVerdict, SlotClaim, SlotSample
from diskhb.core.types import SlotFlag

A = int(SlotFlag.ACTIVE)


def test_empty_and_left_slots_are_free_at_once():
    assert SlotClaim(2000).observe(0, SlotSample(None, None, 0)) is ClaimVerdict.FREE
    assert SlotClaim(2000).observe(0, SlotSample(5, 9, int(SlotFlag.LEFT))) is ClaimVerdict.FREE


def test_unchanged_active_slot_is_free_only_after_dead_ms():
    c = SlotClaim(2000)
    for t in range(0, 2000, 200):
        assert c.observe(t, SlotSample(5, 9, A)) is ClaimVerdict.WAIT
    assert c.observe(2000, SlotSample(5, 9, A)) is ClaimVerdict.FREE


def test_advancing_slot_is_in_use():
    c = SlotClaim(2000)
    c.observe(0, SlotSample(5, 9, A, "other"))
    assert c.observe(200, SlotSample(5, 10, A, "other")) is ClaimVerdict.IN_USE
    assert "'other'" in c.reason


def test_corrupt_samples_cost_time_then_refuse():
    c = SlotClaim(2000)
    for i in range(IN_USE_BAD_SAMPLES_MAX - 1):
        assert c.observe(i, SlotSample(None, None, 0, valid=False)) is ClaimVerdict.WAIT
    assert c.observe(99, SlotSample(None, None, 0, valid=False)) is ClaimVerdict.IN_USE
