"""Liveness rules R1-R6 and X1-X4 (diskhb/core/liveness.py), one test per rule, virtual clock."""

import pytest

from diskhb.core.liveness import Liveness, NodeRestarted, NodeStateChanged, RegionNodeChanged
from diskhb.core.types import BadSample, Beat, NodeState, SlotFlag

A, L = int(SlotFlag.ACTIVE), int(SlotFlag.LEFT)
ALIVE, DEAD, LEFT, UNKNOWN = NodeState.ALIVE, NodeState.DEAD, NodeState.LEFT, NodeState.UNKNOWN


def live():
    return Liveness(self_id=1, interval_ms=200, dead_ms=2000)


def overall(events):
    return [(e.node_id, e.old, e.new) for e in events if isinstance(e, NodeStateChanged)]


def test_first_sample_is_only_a_baseline_then_advance_is_alive():
    lv = live()
    lv.observe(0, Beat(2, "d", 7, 10, A, "n2"))
    assert overall(lv.tick(0)) == []
    assert lv.node(2).state is UNKNOWN
    lv.observe(200, Beat(2, "d", 7, 10, A, "n2"))  # unchanged: no news (R1)
    assert lv.node(2).state is UNKNOWN
    lv.observe(400, Beat(2, "d", 7, 11, A, "n2"))
    assert overall(lv.tick(400)) == [(2, UNKNOWN, ALIVE)]
    assert lv.node(2).name == "n2"


def test_dead_after_dead_ms_without_advance_never_before():
    lv = live()
    lv.observe(0, Beat(2, "d", 7, 1, A))
    lv.observe(200, Beat(2, "d", 7, 2, A))
    lv.tick(200)
    assert overall(lv.tick(2199)) == []
    ev = [e for e in lv.tick(2200) if isinstance(e, NodeStateChanged)]
    assert [(e.old, e.new) for e in ev] == [(ALIVE, DEAD)]
    assert ev[0].age_ms == 2000 and "2000 ms" in ev[0].reason


def test_a_slot_nobody_beats_in_is_dead_after_dead_ms_of_watching():
    lv = live()
    lv.observe(1000, Beat(3, "d", 9, 50, A))
    assert overall(lv.tick(2999)) == []
    assert overall(lv.tick(3000)) == [(3, UNKNOWN, DEAD)]


def test_left_is_not_dead():
    lv = live()
    lv.observe(0, Beat(2, "d", 7, 1, A))
    lv.observe(200, Beat(2, "d", 7, 2, A))
    lv.observe(400, Beat(2, "d", 7, 3, L))
    assert overall(lv.tick(400)) == [(2, UNKNOWN, ALIVE), (2, ALIVE, LEFT)]
    assert overall(lv.tick(100_000)) == []
    assert lv.node(2).state is LEFT


def test_left_seen_first_is_left_at_once():
    lv = live()
    lv.observe(0, Beat(2, "d", 7, 3, L))
    assert overall(lv.tick(0)) == [(2, UNKNOWN, LEFT)]


def test_generation_change_is_a_restart_and_alive_at_once():
    lv = live()
    lv.observe(0, Beat(2, "d", 7, 1, A))
    lv.observe(200, Beat(2, "d", 7, 2, A))
    lv.tick(200)
    lv.observe(400, Beat(2, "d", 8, 1, A))
    ev = lv.tick(400)
    restarts = [e for e in ev if isinstance(e, NodeRestarted)]
    assert [(e.old_generation, e.new_generation) for e in restarts] == [(7, 8)]
    assert lv.node(2).state is ALIVE and lv.node(2).generation == 8


def test_rejoin_after_left_with_new_generation():
    lv = live()
    lv.observe(0, Beat(2, "d", 7, 5, L))
    lv.observe(200, Beat(2, "d", 8, 1, A))
    lv.tick(200)
    assert lv.node(2).state is ALIVE


def test_bad_sample_is_a_missed_beat_never_a_beat():
    lv = live()
    lv.observe(0, Beat(2, "d", 7, 1, A))
    lv.observe(200, Beat(2, "d", 7, 2, A))
    for t in range(400, 2200, 200):
        lv.observe(t, BadSample(2, "d", "checksum mismatch"))
    assert overall(lv.tick(2200)) == [(2, UNKNOWN, ALIVE), (2, ALIVE, DEAD)]
    assert lv.node(2).regions["d"].bad_samples == 9


def test_bad_sample_of_unknown_node_does_not_create_a_dead_node():
    lv = live()
    lv.observe(0, BadSample(4, "d", "bad magic"))
    assert overall(lv.tick(100_000)) == []
    assert lv.node(4).state is UNKNOWN


def test_own_node_is_ignored():
    lv = live()
    lv.observe(0, Beat(1, "d", 7, 1, A))
    assert lv.nodes() == []


def test_alive_if_any_region_sees_it():
    lv = live()
    for t, seq in ((0, 1), (200, 2)):
        lv.observe(t, Beat(2, "disk", 7, seq, A))
        lv.observe(t, Beat(2, "net", 7, seq, A))
    lv.tick(200)
    # the disk stops showing progress, the network keeps going
    for t in range(400, 6000, 200):
        lv.observe(t, Beat(2, "net", 7, t, A))
        ev = lv.tick(t)
        assert overall(ev) == [], t
    view = lv.node(2)
    assert view.state is ALIVE
    assert view.regions["disk"].state is DEAD and view.regions["net"].state is ALIVE


def test_region_loss_is_a_region_event_only():
    lv = live()
    for t, seq in ((0, 1), (200, 2)):
        lv.observe(t, Beat(2, "disk", 7, seq, A))
        lv.observe(t, Beat(2, "net", 7, seq, A))
    lv.tick(200)
    lv.observe(2000, Beat(2, "net", 7, 3, A))
    ev = lv.tick(2200)
    assert overall(ev) == []
    assert [(e.region, e.old, e.new) for e in ev if isinstance(e, RegionNodeChanged)] == [("disk", ALIVE, DEAD)]


def test_dead_only_when_every_region_says_dead():
    lv = live()
    for t, seq in ((0, 1), (200, 2)):
        lv.observe(t, Beat(2, "disk", 7, seq, A))
        lv.observe(t, Beat(2, "net", 7, seq, A))
    lv.tick(200)
    lv.observe(1000, Beat(2, "net", 7, 3, A))
    assert overall(lv.tick(2200)) == []  # disk dead, net alive
    assert overall(lv.tick(3000)) == [(2, ALIVE, DEAD)]


def test_restart_seen_on_one_region_is_a_restart_everywhere():
    lv = live()
    for t, seq in ((0, 1), (200, 2)):
        lv.observe(t, Beat(2, "disk", 7, seq, A))
        lv.observe(t, Beat(2, "net", 7, seq, A))
    lv.observe(400, Beat(2, "net", 8, 1, A))
    ev = lv.tick(400)
    assert len([e for e in ev if isinstance(e, NodeRestarted)]) == 1
    assert lv.node(2).regions["disk"].generation == 8
    # the disk still shows the old incarnation for a moment: a stale view, not a restart back
    lv.observe(600, Beat(2, "disk", 7, 2, A))
    assert [e for e in lv.tick(600) if isinstance(e, NodeRestarted)] == []
    lv.observe(800, Beat(2, "disk", 8, 2, A))
    lv.tick(800)
    assert lv.node(2).regions["disk"].state is ALIVE


def test_resumed_after_a_pause_longer_than_dead_ms_is_alive_again():
    lv = live()
    lv.observe(0, Beat(2, "d", 7, 1, A))
    lv.observe(200, Beat(2, "d", 7, 2, A))
    lv.tick(3000)
    assert lv.node(2).state is DEAD
    lv.observe(3200, Beat(2, "d", 7, 3, A))
    assert overall(lv.tick(3200)) == [(2, DEAD, ALIVE)]


def test_flags_are_exposed():
    lv = live()
    lv.observe(0, Beat(2, "d", 7, 1, A | int(SlotFlag.DISK_LOST)))
    assert lv.node(2).flags & SlotFlag.DISK_LOST


def test_time_never_goes_backwards():
    lv = live()
    lv.tick(100)
    with pytest.raises(AssertionError):
        lv.tick(99)


def test_limits():
    lv = live()
    with pytest.raises(ValueError):
        lv.observe(0, Beat(99999, "d", 7, 1, A))
    for i in range(32):
        lv.observe(0, Beat(2, f"r{i}", 7, 1, A))
    with pytest.raises(ValueError):
        lv.observe(0, Beat(2, "r32", 7, 1, A))
