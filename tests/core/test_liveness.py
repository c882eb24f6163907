"""Liveness rules R1-R8 and X1-X4 (diskhb/core/liveness.py): one test per rule under a virtual
clock, then the limits, and property tests (invariants after any input; BeatBatch == Beats)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import diskhb.core.liveness as liveness
from diskhb.core.liveness import (
    OLD_GENERATIONS_MAX,
    REGIONS_MAX,
    Liveness,
    NodeRestarted,
    NodeStateChanged,
    RegionNodeChanged,
    overall_state,
)
from diskhb.core.types import NODE_ID_MAX, BadSample, Beat, BeatBatch, NodeState, SlotFlag

A, L = int(SlotFlag.ACTIVE), int(SlotFlag.LEFT)
ALIVE, DEAD, LEFT, UNKNOWN = NodeState.ALIVE, NodeState.DEAD, NodeState.LEFT, NodeState.UNKNOWN
INTERVAL_MS, DEAD_MS = 200, 2000


def live():
    return Liveness(self_id=1, interval_ms=INTERVAL_MS, dead_ms=DEAD_MS)


def overall(events):
    return [(e.node_id, e.old, e.new) for e in events if isinstance(e, NodeStateChanged)]


def regional(events):
    return [(e.node_id, e.region, e.old, e.new) for e in events if isinstance(e, RegionNodeChanged)]


def restarts(events):
    return [(e.node_id, e.region, e.old_generation, e.new_generation)
            for e in events if isinstance(e, NodeRestarted)]


def alive_on(lv, node_id, *regions, gen=7, t0=0):
    """Bring a node to ALIVE on the given regions: a baseline, then one advance."""
    for t, seq in ((t0, 1), (t0 + INTERVAL_MS, 2)):
        for r in regions:
            lv.observe(t, Beat(node_id, r, gen, seq, A, f"n{node_id}"))
    lv.tick(t0 + INTERVAL_MS)
    assert lv.node(node_id).state is ALIVE
    return t0 + INTERVAL_MS


# -- R1, R2: advance and baseline ----------------------------------------------------------------


def test_first_sample_is_only_a_baseline_then_an_advance_is_alive():
    lv = live()
    lv.observe(0, Beat(2, "d", 7, 10, A, "n2"))
    assert overall(lv.tick(0)) == []
    assert lv.node(2).state is UNKNOWN and lv.node(2).name == "n2"
    lv.observe(200, Beat(2, "d", 7, 10, A, "n2"))  # unchanged: no news (R1)
    assert lv.tick(200) == [] and lv.node(2).state is UNKNOWN
    lv.observe(400, Beat(2, "d", 7, 11, A, "n2"))
    ev = lv.tick(400)
    assert overall(ev) == [(2, UNKNOWN, ALIVE)]
    assert regional(ev) == [(2, "d", UNKNOWN, ALIVE)]
    (changed,) = [e for e in ev if isinstance(e, NodeStateChanged)]
    assert (changed.region, changed.age_ms, changed.name) == ("d", 0, "n2")
    assert "advancing" in changed.reason


def test_only_a_changed_seq_refreshes_not_changed_flags():
    lv = live()
    t = alive_on(lv, 2, "d")
    lv.observe(t + 1000, Beat(2, "d", 7, 2, A | int(SlotFlag.READ_ONLY)))  # flags moved, seq did not
    assert lv.node(2).flags & SlotFlag.READ_ONLY  # shown ...
    assert overall(lv.tick(t + DEAD_MS)) == [(2, ALIVE, DEAD)]  # ... but no sign of life


def test_a_seq_that_differs_is_an_advance_even_if_lower():
    lv = live()
    t = alive_on(lv, 2, "d")
    lv.observe(t + 1500, Beat(2, "d", 7, 1, A))  # differs from the previous sample: a live writer
    assert overall(lv.tick(t + DEAD_MS)) == []
    assert lv.node(2).regions["d"].age_ms == DEAD_MS - 1500


# -- R3: deadlines ---------------------------------------------------------------------------------


def test_alive_is_dead_after_dead_ms_without_advance_never_before():
    lv = live()
    t = alive_on(lv, 2, "d")
    assert overall(lv.tick(t + DEAD_MS - 1)) == []
    ev = lv.tick(t + DEAD_MS)
    (changed,) = [e for e in ev if isinstance(e, NodeStateChanged)]
    assert (changed.old, changed.new, changed.region, changed.age_ms) == (ALIVE, DEAD, "d", DEAD_MS)
    assert "2000 ms" in changed.reason
    assert regional(ev) == [(2, "d", ALIVE, DEAD)]
    assert lv.tick(t + 10 * DEAD_MS) == []  # said once


def test_a_slot_nobody_beats_in_is_dead_after_dead_ms_of_watching():
    """Written, but nobody beats: the daemon crashed before we started."""
    lv = live()
    lv.observe(1000, Beat(3, "d", 9, 50, A))
    assert overall(lv.tick(2999)) == []
    assert overall(lv.tick(3000)) == [(3, UNKNOWN, DEAD)]


def test_the_baseline_deadline_counts_from_the_first_valid_sample():
    lv = live()
    lv.observe(0, BadSample(3, "d", "checksum mismatch"))  # no knowledge: no deadline yet
    lv.observe(5000, Beat(3, "d", 9, 50, A))
    assert overall(lv.tick(6999)) == []
    assert overall(lv.tick(7000)) == [(3, UNKNOWN, DEAD)]


def test_dead_node_beating_again_is_alive_again():
    lv = live()
    t = alive_on(lv, 2, "d")
    lv.tick(t + 5000)
    assert lv.node(2).state is DEAD
    lv.observe(t + 5200, Beat(2, "d", 7, 3, A))
    assert overall(lv.tick(t + 5200)) == [(2, DEAD, ALIVE)]


def test_a_region_that_cannot_read_kills_nobody():
    """sampled_ms: our reads on the region hang (or our tick stalled): it has not looked since.
    After dead_ms of that its evidence is stale (R8): UNKNOWN, still never DEAD."""
    lv = live()
    t = alive_on(lv, 2, "d")  # last advance seen at t
    read_ms = t + 100  # the newest completed read was submitted then; later ones hang
    for now in range(t + 200, t + 10_000, 200):
        ev = lv.tick(now, sampled_ms={"d": read_ms})
        assert DEAD not in [e.new for e in ev], now
        assert lv.node(2).state is (ALIVE if now - read_ms < DEAD_MS else UNKNOWN), now
    # a hung read completes at last: it was submitted long ago, so what it shows is still stale
    # evidence (R8): no DEAD on it, however long the region had looked by then
    assert overall(lv.tick(t + 10_000, sampled_ms={"d": t + DEAD_MS})) == []
    assert lv.node(2).state is UNKNOWN
    # a fresh read (submitted within dead_ms) shows no advance: now the region has looked for dead_ms
    assert overall(lv.tick(t + 10_050, sampled_ms={"d": t + 10_000})) == [(2, UNKNOWN, DEAD)]


def test_without_sampled_ms_a_hung_reader_would_kill_everyone():
    """Why tick() takes sampled_ms: judged by the tick clock alone, a reader that hangs for
    dead_ms declares every peer dead though nobody stopped beating."""
    lv = live()
    t = alive_on(lv, 2, "d")
    assert overall(lv.tick(t + DEAD_MS)) == [(2, ALIVE, DEAD)]


def test_sampled_ms_judges_only_the_regions_it_names():
    lv = live()
    t = alive_on(lv, 2, "disk", "net")
    ev = lv.tick(t + DEAD_MS, sampled_ms={"disk": t + 1})  # disk blind (not yet stale: R8); net judged at now
    assert regional(ev) == [(2, "net", ALIVE, DEAD)] and overall(ev) == []


# -- R4: left ----------------------------------------------------------------------------------------


def test_left_is_not_dead():
    lv = live()
    t = alive_on(lv, 2, "d")
    lv.observe(t + 200, Beat(2, "d", 7, 3, L))
    ev = lv.tick(t + 200)
    assert overall(ev) == [(2, ALIVE, LEFT)]
    assert "left cleanly" in [e for e in ev if isinstance(e, NodeStateChanged)][0].reason
    assert lv.tick(t + 100_000) == []
    assert lv.node(2).state is LEFT and lv.node(2).flags & SlotFlag.LEFT


def test_left_in_a_first_sample_is_only_a_baseline():
    """R2, R4: a LEFT counts only from an incarnation seen advancing in our lifetime; a first
    sample carrying it (a slot we never saw move, or a replayed recording) says nothing."""
    lv = live()
    lv.observe(0, Beat(2, "d", 7, 3, L))
    assert overall(lv.tick(0)) == [] and lv.node(2).state is UNKNOWN
    assert lv.node(2).flags & SlotFlag.LEFT  # shown as written ...
    lv.observe(200, Beat(2, "d", 7, 3, L))
    assert overall(lv.tick(DEAD_MS - 1)) == []
    assert overall(lv.tick(DEAD_MS)) == [(2, UNKNOWN, DEAD)]  # ... but never LEFT: R3 as for any baseline


def test_left_on_one_region_is_left_on_all_and_the_slower_region_is_ignored():
    lv = live()
    t = alive_on(lv, 2, "disk", "net")
    lv.observe(t + 200, Beat(2, "disk", 7, 3, L))
    ev = lv.tick(t + 200)
    assert overall(ev) == [(2, ALIVE, LEFT)]  # at once, not after net times out
    assert sorted(regional(ev)) == [(2, "disk", ALIVE, LEFT), (2, "net", ALIVE, LEFT)]
    lv.observe(t + 250, Beat(2, "net", 7, 3, A))  # net delivers the beat before LEFT late
    lv.observe(t + 300, Beat(2, "net", 7, 2, A))
    assert lv.tick(t + 300) == []
    lv.observe(t + 400, Beat(2, "net", 7, 3, L))  # and then the LEFT itself
    assert lv.tick(t + 100_000) == [] and lv.node(2).state is LEFT


def test_an_advance_past_left_without_left_is_a_live_writer():
    lv = live()
    t = alive_on(lv, 2, "d")
    lv.observe(t + 200, Beat(2, "d", 7, 3, L))
    lv.observe(t + 400, Beat(2, "d", 7, 4, A))
    assert overall(lv.tick(t + 400)) == [(2, ALIVE, LEFT), (2, LEFT, ALIVE)]


def test_rejoin_after_left_with_a_new_generation():
    """R5: the new generation moves right after the LEFT (within restart_quiet_ms); it is adopted
    at the first tick that finds the left one quiet, without waiting for one more beat."""
    lv = live()
    t = alive_on(lv, 2, "d")
    lv.observe(t + 200, Beat(2, "d", 7, 3, L))
    assert overall(lv.tick(t + 200)) == [(2, ALIVE, LEFT)]
    lv.observe(t + 400, Beat(2, "d", 8, 1, A))
    lv.observe(t + 600, Beat(2, "d", 8, 2, A))  # moved; 7 quiet for 400 ms only
    assert lv.tick(t + 600) == [] and lv.node(2).regions["d"].candidate == 8
    ev = lv.tick(t + 200 + lv.restart_quiet_ms)
    assert overall(ev) == [(2, LEFT, ALIVE)] and restarts(ev) == [(2, "d", 7, 8)]
    assert lv.node(2).regions["d"].age_ms == 200  # the advance is the move, seen at t + 600


# -- R5: restart -------------------------------------------------------------------------------------


def test_generation_change_is_a_restart_once_it_moves_and_the_old_one_is_quiet():
    lv = live()
    t = alive_on(lv, 2, "d")
    lv.observe(t + 200, Beat(2, "d", 8, 1, A))  # a candidate: nothing else changes (R5)
    assert lv.tick(t + 200) == [] and lv.node(2).generation == 7
    lv.observe(t + 400, Beat(2, "d", 8, 2, A))  # moving, but 7 advanced only 400 ms ago
    assert lv.tick(t + 400) == []
    lv.observe(t + 600, Beat(2, "d", 8, 3, A))  # 7 quiet for restart_quiet_ms
    ev = lv.tick(t + 600)
    assert restarts(ev) == [(2, "d", 7, 8)] and overall(ev) == []  # alive before, alive after
    view = lv.node(2)
    assert (view.state, view.generation, view.seq) == (ALIVE, 8, 3)


def test_restart_of_a_dead_node_is_alive_with_a_reason():
    lv = live()
    t = alive_on(lv, 2, "d")
    lv.tick(t + DEAD_MS)
    lv.observe(t + 9000, Beat(2, "d", 8, 1, A))
    assert lv.tick(t + 9000) == []  # one sample proves nothing (a replayed packet looks the same)
    lv.observe(t + 9200, Beat(2, "d", 8, 2, A))
    ev = lv.tick(t + 9200)
    assert overall(ev) == [(2, DEAD, ALIVE)] and restarts(ev) == [(2, "d", 7, 8)]
    assert "new generation 0x8" in [e for e in ev if isinstance(e, NodeStateChanged)][0].reason


def test_restart_seen_on_one_region_is_a_restart_everywhere():
    lv = live()
    t = alive_on(lv, 2, "disk", "net")
    for k in (1, 2):
        lv.observe(t + 200 * k, Beat(2, "net", 8, k, A))
        assert lv.tick(t + 200 * k) == []
    lv.observe(t + 600, Beat(2, "net", 8, 3, A))
    ev = lv.tick(t + 600)
    assert restarts(ev) == [(2, "net", 7, 8)]
    assert regional(ev) == [(2, "disk", ALIVE, UNKNOWN)]  # disk waits for the new generation
    disk = lv.node(2).regions["disk"]
    assert (disk.generation, disk.state, disk.age_ms) == (8, UNKNOWN, 0)
    # the disk still shows the old incarnation for a while: a candidate there, not a restart back
    lv.observe(t + 800, Beat(2, "disk", 7, 3, A))
    lv.observe(t + 800, Beat(2, "net", 8, 4, A))
    assert lv.tick(t + 800) == []
    lv.observe(t + 1000, Beat(2, "disk", 8, 4, A))  # baseline of the new generation there
    assert lv.tick(t + 1000) == []
    lv.observe(t + 1200, Beat(2, "disk", 8, 5, A))
    assert regional(lv.tick(t + 1200)) == [(2, "disk", UNKNOWN, ALIVE)]


def test_a_slow_region_showing_an_incarnation_we_missed_is_history_not_a_restart():
    """The node restarted twice (7 -> 8 -> 9); the fast region shows 9 first, the slow one then
    shows 8, moving. Taking 8 for a restart would pin the node to 8 (9 would then look stale)
    and declare it dead while it beats on in 9: 8 is a candidate that cannot win while 9 beats."""
    lv = live()
    t = alive_on(lv, 2, "disk", "net")
    lv.observe(t + 1000, Beat(2, "disk", 9, 1, A))
    lv.observe(t + 1200, Beat(2, "disk", 9, 2, A))
    assert restarts(lv.tick(t + 1200)) == [(2, "disk", 7, 9)]  # 7 was quiet on both regions
    for k, now in enumerate(range(t + 1400, t + 8000, 200)):
        lv.observe(now, Beat(2, "disk", 9, 3 + k, A))
        lv.observe(now, Beat(2, "net", 8 if k < 3 else 9, 1 + k, A))  # net: 8's beats, then 9's
        ev = lv.tick(now)
        assert restarts(ev) == [] and overall(ev) == [], now
    view = lv.node(2)
    assert view.generation == 9 and view.regions["net"].state is ALIVE
    lv.check_invariants()


def test_a_restart_that_stops_at_once_is_adopted_once_the_old_one_is_quiet():
    lv = live()
    t = alive_on(lv, 2, "disk", "net")
    lv.observe(t + 200, Beat(2, "disk", 9, 1, A))
    lv.observe(t + 400, Beat(2, "disk", 9, 2, A))  # moved, 7 not quiet yet ... and 9 stops at once
    assert lv.tick(t + 400) == []
    assert restarts(lv.tick(t + lv.restart_quiet_ms)) == [(2, "disk", 7, 9)]  # 7 quiet, 9's move recent
    lv.tick(t + 400 + DEAD_MS)  # DEAD from 9's last advance on disk ...
    assert lv.node(2).state is UNKNOWN  # ... net waits for 9 since the restart
    lv.tick(t + lv.restart_quiet_ms + DEAD_MS)
    assert lv.node(2).state is DEAD
    lv.observe(t + 5000, Beat(2, "net", 10, 1, A))
    lv.observe(t + 5200, Beat(2, "net", 10, 2, A))
    assert restarts(lv.tick(t + 5200)) == [(2, "net", 9, 10)] and lv.node(2).state is ALIVE


def test_region_that_never_shows_the_new_generation_is_dead_there_only():
    lv = live()
    t = alive_on(lv, 2, "disk", "net")
    for now in range(t + 200, t + 4000, 200):
        lv.observe(now, Beat(2, "net", 8, now, A))
        assert overall(lv.tick(now)) == []
    assert lv.node(2).regions["disk"].state is DEAD and lv.node(2).state is ALIVE


def test_an_earlier_generation_wins_back_only_once_the_current_one_is_quiet():
    """R5: a generation the node had before is a candidate like any other. While the current
    one beats it never wins; once that is quiet it does (a replay adopted during a pause undone)."""
    lv = live()
    t = alive_on(lv, 2, "disk", "net", gen=5)
    for k, now in enumerate(range(t + 200, t + 1200, 200)):  # restart 5 -> 7 on both regions
        for r in ("disk", "net"):
            lv.observe(now, Beat(2, r, 7, 1 + k, A))
        lv.tick(now)
    assert lv.node(2).generation == 7 and lv.node(2).state is ALIVE
    t = t + 1200
    for k, now in enumerate(range(t, t + 3000, 200)):  # 7 beats on disk; net shows 5 moving
        lv.observe(now, Beat(2, "disk", 7, 10 + k, A))
        lv.observe(now, Beat(2, "net", 5, 100 + k, A))
        ev = lv.tick(now)
        assert restarts(ev) == [] and overall(ev) == [], now
    t += 3000  # 7 stops; 5 moves on
    for k, now in enumerate(range(t, t + 1000, 200)):
        lv.observe(now, Beat(2, "net", 5, 200 + k, A))
        ev = lv.tick(now)
        if restarts(ev):
            break
    assert restarts(ev) == [(2, "net", 7, 5)] and now - (t - 200) <= lv.restart_quiet_ms + INTERVAL_MS
    assert lv.node(2).generation == 5 and lv.node(2).state is ALIVE
    lv.check_invariants()


def test_restarts_remember_a_bounded_history():
    lv = live()
    now = 0
    for g in range(10, 10 + 3 * OLD_GENERATIONS_MAX):
        for seq in (1, 2, 3, 4):
            now += INTERVAL_MS
            lv.observe(now, Beat(2, "d", g, seq, A))
            lv.tick(now)
        now += lv.restart_quiet_ms
        lv.tick(now)
        assert lv.node(2).generation == g, g
    lv.check_invariants()  # asserts the history bound (OLD_GENERATIONS_MAX)


# -- R6, R7: bad samples, ignored samples ------------------------------------------------------------


def test_bad_samples_are_no_beat_and_no_proof_of_silence():
    """R6: a slot that reads bad is judged only up to its last valid sample: never DEAD on that
    evidence, UNKNOWN ('unreadable') once the region looked dead_ms past it; the next valid
    sample decides again (here: no advance since -> DEAD at once)."""
    lv = live()
    t = alive_on(lv, 2, "d")
    for now in range(t + 200, t + DEAD_MS + 1, 200):
        lv.observe(now, BadSample(2, "d", "checksum mismatch"))
        assert lv.node(2).state is ALIVE or now == t + DEAD_MS
        assert overall(lv.tick(now)) == ([(2, ALIVE, UNKNOWN)] if now == t + DEAD_MS else [])
    assert lv.node(2).regions["d"].bad_samples == DEAD_MS // 200
    assert lv.tick(t + 5 * DEAD_MS) == []  # still unreadable: no death on it
    seq = lv.node(2).seq
    lv.observe(t + 5 * DEAD_MS, Beat(2, "d", lv.node(2).generation, seq, A))  # readable, not advanced
    assert overall(lv.tick(t + 5 * DEAD_MS)) == [(2, UNKNOWN, DEAD)]


def test_one_torn_read_after_our_own_freeze_kills_nobody():
    """Found by the whole-cluster simulator (seed 9864): an observer frozen 5.4 s read, on
    waking, its peer's slot torn (a write landing as it read): taking that for a missed beat
    declared the peer dead, which had beaten all along. The next valid sample decides."""
    lv = live()
    t = alive_on(lv, 2, "d")
    woke = t + 5400
    lv.observe(woke, BadSample(2, "d", "checksum mismatch"))
    assert overall(lv.tick(woke)) == [(2, ALIVE, UNKNOWN)]  # unreadable since t: not dead
    lv.observe(woke + 200, Beat(2, "d", lv.node(2).generation, lv.node(2).seq + 27, A))
    assert overall(lv.tick(woke + 200)) == [(2, UNKNOWN, ALIVE)]


def test_bad_samples_alone_never_make_a_node_known():
    lv = live()
    lv.observe(0, BadSample(4, "d", "bad magic"))
    assert lv.tick(100_000) == []
    view = lv.node(4)
    assert view.state is UNKNOWN and view.regions["d"].bad_samples == 1
    # nor do they count as a region that knows it (X3): disk alone decides here
    lv2 = live()
    t = alive_on(lv2, 2, "disk")
    lv2.observe(t, BadSample(2, "net", "bad hmac"))
    assert overall(lv2.tick(t + DEAD_MS)) == [(2, ALIVE, DEAD)]


def test_own_node_and_generation_zero_are_ignored():
    lv = live()
    lv.observe(0, Beat(1, "d", 7, 1, A))
    lv.observe(0, BadSample(1, "d", "bad"))
    lv.observe(0, Beat(3, "d", 0, 1, A))
    assert lv.nodes() == [] and lv.tick(100_000) == []


# -- X1-X4: across regions ---------------------------------------------------------------------------


@pytest.mark.parametrize("states, expect", [
    ([], UNKNOWN),
    ([UNKNOWN], UNKNOWN),
    ([DEAD], DEAD),
    ([DEAD, DEAD], DEAD),
    ([DEAD, UNKNOWN], UNKNOWN),
    ([DEAD, ALIVE], ALIVE),
    ([LEFT, ALIVE], ALIVE),
    ([LEFT, DEAD], LEFT),
    ([LEFT, UNKNOWN], LEFT),
])
def test_overall_state_table(states, expect):
    assert overall_state(states) is expect


def test_alive_while_any_region_sees_it():
    lv = live()
    t = alive_on(lv, 2, "disk", "net")
    for now in range(t + 200, t + 6000, 200):  # the disk stops showing progress, the network goes on
        lv.observe(now, Beat(2, "net", 7, now, A))
        assert overall(lv.tick(now)) == [], now
    view = lv.node(2)
    assert view.state is ALIVE and view.regions["disk"].state is DEAD and view.regions["net"].state is ALIVE


def test_region_loss_is_a_region_event_only():
    lv = live()
    t = alive_on(lv, 2, "disk", "net")
    lv.observe(t + 1800, Beat(2, "net", 7, 3, A))
    ev = lv.tick(t + DEAD_MS)
    assert overall(ev) == [] and regional(ev) == [(2, "disk", ALIVE, DEAD)]
    (changed,) = [e for e in ev if isinstance(e, RegionNodeChanged)]
    assert changed.age_ms == DEAD_MS


def test_dead_only_when_every_region_says_dead():
    lv = live()
    t = alive_on(lv, 2, "disk", "net")
    lv.observe(t + 800, Beat(2, "net", 7, 3, A))
    assert overall(lv.tick(t + DEAD_MS)) == []  # disk dead, net alive
    ev = lv.tick(t + 800 + DEAD_MS)
    assert overall(ev) == [(2, ALIVE, DEAD)]
    (changed,) = [e for e in ev if isinstance(e, NodeStateChanged)]
    assert (changed.region, changed.age_ms) == ("net", DEAD_MS)


def test_unknown_while_a_region_that_knows_it_is_not_sure():
    lv = live()
    t = alive_on(lv, 2, "disk")
    lv.observe(t + 1000, Beat(2, "net", 7, 2, A))  # net: a baseline only
    assert overall(lv.tick(t + DEAD_MS)) == [(2, ALIVE, UNKNOWN)]
    assert overall(lv.tick(t + 1000 + DEAD_MS)) == [(2, UNKNOWN, DEAD)]


def test_a_region_that_first_sees_a_dead_node_makes_it_unknown_until_it_decides():
    """X3 counts every region that knows the node: one that has only a baseline is not sure."""
    lv = live()
    t = alive_on(lv, 2, "net")
    lv.tick(t + DEAD_MS)
    assert lv.node(2).state is DEAD
    lv.observe(t + 3000, Beat(2, "disk", 7, 2, A))  # the disk region starts late and shows the slot
    ev = lv.tick(t + 3000)
    assert overall(ev) == [(2, DEAD, UNKNOWN)] and "first seen on disk" in ev[-1].reason
    assert overall(lv.tick(t + 3000 + DEAD_MS)) == [(2, UNKNOWN, DEAD)]


def test_left_on_one_region_dead_on_the_other_is_left():
    lv = live()
    t = alive_on(lv, 2, "disk")
    lv.observe(t + 200, Beat(2, "net", 7, 3, L))
    lv.tick(t + 200)
    assert overall(lv.tick(t + 100_000)) == [] and lv.node(2).state is LEFT


# -- views and events --------------------------------------------------------------------------------


def test_views():
    lv = live()
    assert lv.node(5) is None
    alive_on(lv, 5, "net", "disk")
    lv.observe(400, Beat(3, "disk", 9, 1, A, "n3"))
    lv.observe(500, Beat(5, "disk", 7, 3, A | int(SlotFlag.DISK_LOST)))
    lv.observe(600, Beat(5, "net", 7, 2, A))  # a slower region: older seq, older flags
    lv.tick(900)
    assert [v.node_id for v in lv.nodes()] == [3, 5]
    v = lv.node(5)
    assert (v.name, v.state, v.generation, v.seq, v.age_ms) == ("n5", ALIVE, 7, 3, 400)
    assert v.flags == A | int(SlotFlag.DISK_LOST)  # flags of the newest sample
    assert list(v.regions) == ["disk", "net"]
    d = v.regions["disk"]
    assert (d.state, d.seq, d.generation, d.flags, d.age_ms, d.bad_samples) == (
        ALIVE, 3, 7, A | int(SlotFlag.DISK_LOST), 400, 0)
    assert v.regions["net"].age_ms == 700
    assert lv.alive_by_region() == {"disk": (5,), "net": (5,)}


def test_events_come_out_once_in_order():
    lv = live()
    lv.observe(0, Beat(2, "d", 7, 1, A))
    lv.observe(0, Beat(3, "d", 7, 1, A))
    lv.observe(100, Beat(3, "d", 7, 2, A))
    lv.observe(150, Beat(3, "d", 7, 3, L))
    lv.observe(200, Beat(2, "d", 7, 2, A))
    ev = lv.tick(200)
    assert overall(ev) == [(3, UNKNOWN, ALIVE), (3, ALIVE, LEFT), (2, UNKNOWN, ALIVE)]
    assert lv.tick(200) == []


def test_event_queue_is_bounded_and_drops_are_counted(monkeypatch):
    monkeypatch.setattr(liveness, "EVENTS_MAX", 3)
    lv = live()
    for node_id in range(2, 7):
        lv.observe(0, Beat(node_id, "d", 7, 1, A))
        lv.observe(0, Beat(node_id, "d", 7, 2, A))  # two events each
    assert len(lv.tick(0)) == 3 and lv.events_dropped == 7
    assert [v.state for v in lv.nodes()] == [ALIVE] * 5  # the state is still right


# -- limits ------------------------------------------------------------------------------------------


def test_time_never_goes_backwards_and_is_int_ms():
    lv = live()
    lv.tick(100)
    with pytest.raises(AssertionError):
        lv.tick(99)
    with pytest.raises(AssertionError):
        lv.observe(50, Beat(2, "d", 7, 1, A))
    with pytest.raises(AssertionError):
        lv.tick(200.5)
    with pytest.raises(AssertionError):
        lv.tick(300, sampled_ms={"d": 301})


def test_node_ids_and_regions_are_bounded():
    lv = live()
    for bad in (0, NODE_ID_MAX + 1, -3):
        with pytest.raises(ValueError):
            lv.observe(0, Beat(bad, "d", 7, 1, A))
    lv.observe(0, Beat(NODE_ID_MAX, "d", 7, 1, A))
    for i in range(REGIONS_MAX - 1):
        lv.observe(0, Beat(2, f"r{i}", 7, 1, A))
    with pytest.raises(ValueError, match="32 regions"):
        lv.observe(0, BadSample(2, "one too many", "x"))
    assert len(lv.node(2).regions) == REGIONS_MAX - 1
    lv.check_invariants()


@pytest.mark.parametrize("args", [(-1, 200, 2000), (NODE_ID_MAX + 1, 200, 2000), (1, 0, 2000), (1, 200, 400)])
def test_bad_construction(args):
    with pytest.raises(ValueError):
        Liveness(*args)


# -- properties --------------------------------------------------------------------------------------

NODES, REGIONS, GENS = (2, 3, 4), ("disk", "net"), (5, 6, 7)
beat_rows = st.tuples(st.sampled_from(NODES), st.sampled_from(GENS), st.integers(0, 6),
                      st.sampled_from((A, L, A | int(SlotFlag.DISK_LOST))))
steps = st.lists(st.tuples(
    st.integers(0, 1500),  # ms since the previous step
    st.sampled_from(REGIONS),
    st.one_of(st.lists(beat_rows, min_size=1, max_size=4), st.sampled_from(NODES)),  # beats, or a bad sample
    st.booleans(),  # tick after the step?
), max_size=60)


def drive(lv, program, batch):
    now, events = 0, []
    for dt, region, what, do_tick in program:
        now += dt
        if isinstance(what, int):
            lv.observe(now, BadSample(what, region, "bad"))
        else:
            rows = {node_id: (gen, seq, flags) for node_id, gen, seq, flags in what}  # one row per node
            if batch:
                ids = list(rows)
                lv.observe(now, BeatBatch(region, ids, [rows[i][0] for i in ids], [rows[i][1] for i in ids],
                                          [rows[i][2] for i in ids], [f"n{i}" for i in ids]))
            else:
                for i, (gen, seq, flags) in rows.items():
                    lv.observe(now, Beat(i, region, gen, seq, flags, f"n{i}"))
        if do_tick:
            events += lv.tick(now)
        lv.check_invariants()
    return events + lv.tick(now + 10 * DEAD_MS)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_invariants_hold_and_overall_events_tell_a_consistent_story(program):
    lv = live()
    events = drive(lv, program, batch=False)
    lv.check_invariants()
    told = {}
    for e in events:
        if isinstance(e, NodeStateChanged):
            assert e.old is told.get(e.node_id, UNKNOWN) and e.new is not e.old
            told[e.node_id] = e.new
    for v in lv.nodes():
        assert v.state is told.get(v.node_id, UNKNOWN)
        assert v.state is not ALIVE  # long after the last input, nobody is alive


@settings(max_examples=300, deadline=None)
@given(steps)
def test_a_batch_means_exactly_its_beats(program):
    one, many = live(), live()
    assert drive(one, program, batch=True) == drive(many, program, batch=False)
    assert one.nodes() == many.nodes()
