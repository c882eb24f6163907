"""Liveness rules against replays and stale evidence (diskhb/core/liveness.py R2-R5, R8), under a
virtual clock: what a recording replayed after silence (netpath.replay P4b) can no longer fake,
what a real restart still gets, and what a region we cannot read may still say.

The node under test beats every INTERVAL_MS on a disk region and on one or two links; a link is
"cut" when its beats stop reaching us, and the attacker's recording is of an earlier boot (another
generation) ending with the LEFT that incarnation published when it stopped.
"""

import pytest

from diskhb.core.liveness import Liveness, NodeRestarted, NodeStateChanged
from diskhb.core.timing import RESTART_QUIET_INTERVALS
from diskhb.core.types import Beat, NodeState, SlotFlag

A, L = int(SlotFlag.ACTIVE), int(SlotFlag.LEFT)
ALIVE, DEAD, LEFT, UNKNOWN = NodeState.ALIVE, NodeState.DEAD, NodeState.LEFT, NodeState.UNKNOWN
INTERVAL_MS, DEAD_MS = 200, 2000
REBOOT_QUIET_MS = 10_000  # netpath.replay: a link accepts a new generation after this much silence
LIVE, RECORDED = 7, 5  # generations: the running daemon, and an earlier boot somebody recorded


def live():
    return Liveness(self_id=1, interval_ms=INTERVAL_MS, dead_ms=DEAD_MS)


def overall(events):
    return [(e.node_id, e.old, e.new) for e in events if isinstance(e, NodeStateChanged)]


def restarts(events):
    return [(e.region, e.old_generation, e.new_generation) for e in events if isinstance(e, NodeRestarted)]


class Node:
    """Node 2 beating in LIVE on some regions: one seq counter, as the daemon writes it."""

    def __init__(self, lv: Liveness, regions, gen: int = LIVE):
        self.lv, self.regions, self.gen, self.seq = lv, set(regions), gen, 0
        self.events: list = []

    def beat(self, now: int, regions=None, flags: int = A) -> None:
        self.seq += 1
        for r in sorted(self.regions if regions is None else regions):
            self.lv.observe(now, Beat(2, r, self.gen, self.seq, flags, "n2"))

    def run(self, t0: int, t1: int, regions=None, extra=None) -> int:
        """Beat every interval in [t0, t1), tick after each beat; `extra(now)` may inject more."""
        now = t0
        for now in range(t0, t1, INTERVAL_MS):
            self.beat(now, regions)
            if extra is not None:
                extra(now)
            self.events += self.lv.tick(now)
            self.lv.check_invariants()
        return now


def replay(lv: Liveness, now: int, region: str, seqs, *, last_left: bool = True) -> None:
    """The recording of RECORDED, sent back to back on `region` (the last packet carries LEFT)."""
    seqs = list(seqs)
    for i, seq in enumerate(seqs):
        flags = L if last_left and i == len(seqs) - 1 else A
        lv.observe(now, Beat(2, region, RECORDED, seq, flags, "n2"))


# -- defect 1: a replayed packet fakes no leave and no restart (R4, R5) -------------------------


@pytest.mark.parametrize("cut, beating", [
    ("net", ("disk",)),
    ("serial", ("disk",)),  # a serial-like second link: the same rule, another region name
    ("net", ("disk", "serial")),
])
def test_a_replayed_left_after_silence_on_a_link_fakes_nothing_while_the_disk_beats(cut, beating):
    lv = live()
    node = Node(lv, (cut, *beating))
    t = node.run(0, 2000)
    assert lv.node(2).state is ALIVE
    node.events = []
    # The link is cut: the node beats on `beating` only. After REBOOT_QUIET_MS of silence there
    # the link's replay guard accepts another generation (P4b): the recording is replayed at
    # the pace it was recorded, ending with its LEFT.
    node.regions = set(beating)
    t = node.run(t + INTERVAL_MS, t + REBOOT_QUIET_MS)
    assert lv.node(2).regions[cut].state is DEAD and lv.node(2).state is ALIVE
    seqs = iter(range(900, 1000))
    t = node.run(t + INTERVAL_MS, t + 4000, extra=lambda now: replay(lv, now, cut, [next(seqs)], last_left=False))
    t = node.run(t + INTERVAL_MS, t + 2 * INTERVAL_MS, extra=lambda now: replay(lv, now, cut, [next(seqs)]))
    t = node.run(t + INTERVAL_MS, t + 3000)  # and the disk goes on
    assert restarts(node.events) == []
    assert overall(node.events) == []  # ALIVE throughout: never LEFT, never UNKNOWN or DEAD
    view = lv.node(2)
    assert (view.state, view.generation) == (ALIVE, LIVE)
    for r in beating:  # the live node's beats still count there
        assert (view.regions[r].state, view.regions[r].generation, view.regions[r].age_ms) == (ALIVE, LIVE, 0)
    assert view.regions[cut].candidate == RECORDED and view.regions[cut].state is DEAD


@pytest.mark.parametrize("packets", [2, 3, 50])
def test_replayed_packets_back_to_back_with_left_fake_nothing(packets):
    """Two packets (a baseline and a move) or a whole burst, all within one millisecond."""
    lv = live()
    node = Node(lv, ("disk", "net"))
    t = node.run(0, 2000)
    node.regions, node.events = {"disk"}, []
    t = node.run(t + INTERVAL_MS, t + REBOOT_QUIET_MS + INTERVAL_MS // 2)
    replay(lv, t + 1, "net", range(500, 500 + packets))  # between two disk beats
    node.events += lv.tick(t + 1)
    node.run(t + INTERVAL_MS, t + 4000)
    assert restarts(node.events) == [] and overall(node.events) == []
    assert lv.node(2).generation == LIVE and lv.node(2).state is ALIVE


def test_a_replay_heard_first_cannot_leave_while_the_real_generation_moves():
    """At our own start the first generation we hear is believed as a baseline (R2, and P1 on
    the link): if that is a recording, the real node moving on the disk still stops its LEFT
    (R4: another generation moved within restart_quiet_ms) and wins once the replay stops."""
    lv = live()
    lv.observe(0, Beat(2, "net", RECORDED, 900, A))  # the replay comes first
    node = Node(lv, ("disk",))
    seqs = iter(range(901, 1000))
    node.run(1, 1000, extra=lambda now: replay(lv, now, "net", [next(seqs)], last_left=now > 600))
    assert LEFT not in [new for _, _, new in overall(node.events)]
    assert lv.node(2).state is ALIVE and lv.node(2).flags & SlotFlag.LEFT  # the replay's LEFT, not believed
    node.run(1001, 1000 + lv.restart_quiet_ms + 2 * INTERVAL_MS)  # the replay stops; the real one wins
    assert restarts(node.events) == [("disk", RECORDED, LIVE)]
    assert (lv.node(2).generation, lv.node(2).state) == (LIVE, ALIVE)


def test_a_replay_adopted_while_the_node_paused_everywhere_is_undone_and_never_kills_it():
    """The limit (netpath.replay): silent on every region for restart_quiet_ms, the node can be
    made to look restarted. It must not look DEAD or LEFT once it beats again: its generation
    wins back as soon as the replay stops (R5), and the replay's LEFT is not believed while the
    real generation moves (R4)."""
    lv = live()
    node = Node(lv, ("disk", "net"))
    t = node.run(0, 2000)
    pause_to = t + 1500  # a pause on every region, shorter than dead_ms
    replay(lv, t + 700, "net", [900, 901], last_left=False)
    ev = lv.tick(t + 700)
    assert restarts(ev) == [("net", LIVE, RECORDED)]  # looks restarted: documented
    node.events += ev
    node.regions = {"disk"}  # the net link is the attacker's now (its guard took the replay)
    seqs = iter(range(902, 1000))
    t = node.run(pause_to, pause_to + 1000, extra=lambda now: replay(lv, now, "net", [next(seqs)],
                                                                     last_left=now >= pause_to + 600))
    assert lv.node(2).state is ALIVE and lv.node(2).generation == RECORDED
    node.run(t + INTERVAL_MS, t + 3000)  # the replay stops
    assert restarts(node.events)[-1] == ("disk", RECORDED, LIVE)
    assert not {DEAD, LEFT} & {new for _, _, new in overall(node.events)}
    assert (lv.node(2).generation, lv.node(2).state) == (LIVE, ALIVE)


def test_a_real_restart_is_adopted_within_restart_quiet_ms_and_two_intervals_never_dead():
    lv = live()
    node = Node(lv, ("disk", "net", "serial"))
    t = node.run(0, 2000)
    node.events = []
    stop = t  # the old incarnation's last beat, on every region at once
    node.gen, node.seq = 9, 0
    adopted = None
    for now in range(stop + INTERVAL_MS, stop + 3000, INTERVAL_MS):
        node.beat(now)
        ev = lv.tick(now, sampled_ms={r: now for r in node.regions})
        node.events += ev
        if restarts(ev):
            adopted = now
        assert lv.node(2).state is ALIVE, now
    assert restarts(node.events) == [(restarts(node.events)[0][0], LIVE, 9)]
    assert adopted - stop <= RESTART_QUIET_INTERVALS * INTERVAL_MS + 2 * INTERVAL_MS
    assert overall(node.events) == []
    assert all(rv.state is ALIVE and rv.generation == 9 for rv in lv.node(2).regions.values())


def test_a_restart_that_pauses_after_its_first_beat_is_not_declared_dead():
    """R3: a region showing another generation, new or moving, is UNKNOWN, not DEAD: the old
    incarnation's silence is no death while a new one writes (it wins at its next beat)."""
    lv = live()
    node = Node(lv, ("disk",))
    t = node.run(0, 2000)
    lv.observe(t + 1800, Beat(2, "disk", 9, 1, A))  # the new daemon's first beat, then a pause
    ev = lv.tick(t + DEAD_MS)
    assert overall(ev) == [(2, ALIVE, UNKNOWN)] and "0x9 writes there" in ev[-1].reason
    assert overall(lv.tick(t + 1800 + DEAD_MS - 1)) == []
    lv.observe(t + 1800 + DEAD_MS - 1, Beat(2, "disk", 9, 2, A))
    ev = lv.tick(t + 1800 + DEAD_MS - 1)
    assert overall(ev) == [(2, UNKNOWN, ALIVE)] and restarts(ev) == [("disk", LIVE, 9)]
    # and one that never beats again is DEAD dead_ms after its last sign
    lv2 = live()
    t = Node(lv2, ("disk",)).run(0, 2000)
    lv2.observe(t + 1800, Beat(2, "disk", 9, 1, A))
    assert lv2.tick(t + 1800 + DEAD_MS - 1) and lv2.node(2).state is UNKNOWN
    assert overall(lv2.tick(t + 1800 + DEAD_MS)) == [(2, UNKNOWN, DEAD)]


def test_a_clean_leave_is_left_at_once():
    lv = live()
    node = Node(lv, ("disk", "net"))
    t = node.run(0, 2000)
    node.beat(t + INTERVAL_MS, flags=L)
    ev = lv.tick(t + INTERVAL_MS)
    assert overall(ev) == [(2, ALIVE, LEFT)]
    assert lv.tick(t + 100_000) == [] and lv.node(2).state is LEFT


def test_a_left_in_the_adopting_sample_counts_only_after_an_earlier_move():
    lv = live()
    t = Node(lv, ("disk",)).run(0, 2000)
    lv.tick(t + DEAD_MS)
    lv.observe(t + 5000, Beat(2, "disk", 9, 1, A))
    lv.observe(t + 5200, Beat(2, "disk", 9, 2, L))  # adopts 9, but its LEFT is its first move
    ev = lv.tick(t + 5200)
    assert overall(ev) == [(2, DEAD, ALIVE)] and restarts(ev) == [("disk", LIVE, 9)]
    lv3 = live()
    t = Node(lv3, ("disk",)).run(0, 2000)
    lv3.tick(t + DEAD_MS)
    for k, flags in enumerate((A, A, L)):
        lv3.observe(t + 5000 + k, Beat(2, "disk", 9, 1 + k, flags))
    ev = lv3.tick(t + 5002)  # adopted at seq 2, then a LEFT of a generation seen advancing
    assert overall(ev) == [(2, DEAD, ALIVE), (2, ALIVE, LEFT)]


# -- defect 2: evidence older than dead_ms is not proof of life (R8) ------------------------------


def test_a_region_whose_reads_hang_turns_unknown_after_dead_ms_never_dead_and_alive_when_reads_resume():
    lv = live()
    node = Node(lv, ("disk",))
    t = node.run(0, 2000)
    read_ms = t + 100  # the newest completed read was submitted then; later ones hang
    events = []
    for now in range(t + INTERVAL_MS, t + 8000, INTERVAL_MS):
        ev = lv.tick(now, sampled_ms={"disk": read_ms})
        events += ev
        assert lv.node(2).state is (ALIVE if now - read_ms < DEAD_MS else UNKNOWN), now
        assert lv.node(2).regions["disk"].stale is (now - read_ms >= DEAD_MS), now
        lv.check_invariants()
    assert overall(events) == [(2, ALIVE, UNKNOWN)]
    (changed,) = [e for e in events if isinstance(e, NodeStateChanged)]
    # the first tick at or past read_ms + dead_ms
    assert changed.reason == "stale: disk not read for 2100 ms" and changed.age_ms == 2200
    # The hung read completes with what it read then (an advance past what we had): still no
    # proof of life, the region is stale until a tick finds it read within dead_ms.
    t = t + 8000
    lv.observe(t, Beat(2, "disk", LIVE, node.seq + 1, A))
    assert overall(lv.tick(t, sampled_ms={"disk": read_ms + INTERVAL_MS})) == []
    lv.observe(t + INTERVAL_MS, Beat(2, "disk", LIVE, node.seq + 2, A))  # the first fresh read ...
    assert overall(lv.tick(t + INTERVAL_MS, sampled_ms={"disk": t})) == []
    assert not lv.node(2).regions["disk"].stale  # ... makes the region fresh
    lv.observe(t + 2 * INTERVAL_MS, Beat(2, "disk", LIVE, node.seq + 3, A))
    ev = lv.tick(t + 2 * INTERVAL_MS, sampled_ms={"disk": t + INTERVAL_MS})
    assert overall(ev) == [(2, UNKNOWN, ALIVE)]  # the next advance decides, as R1 says


def test_a_stale_region_and_a_fresh_one_seeing_the_node_alive_keep_it_alive():
    lv = live()
    node = Node(lv, ("disk", "net"))
    t = node.run(0, 2000)
    read_ms = t + 100
    node.regions = {"net"}  # the disk's reads hang; the net goes on
    events = []
    for now in range(t + INTERVAL_MS, t + 8000, INTERVAL_MS):
        node.beat(now)
        events += lv.tick(now, sampled_ms={"disk": read_ms, "net": now})
        assert lv.node(2).state is ALIVE
    assert overall(events) == []
    disk = lv.node(2).regions["disk"]
    assert disk.stale and disk.state is UNKNOWN


def test_stale_evidence_is_no_proof_of_death_but_left_stays():
    """R8: a DEAD reached while the region was fresh becomes UNKNOWN once the region goes stale
    (the node may have been writing there since, unseen), and DEAD again at once when the region
    is read again and still shows no advance; a LEFT (a promise) stays."""
    lv = live()
    t = Node(lv, ("disk",)).run(0, 2000)
    lv.tick(t + DEAD_MS, sampled_ms={"disk": t + DEAD_MS})
    assert lv.node(2).state is DEAD
    assert overall(lv.tick(t + 10 * DEAD_MS, sampled_ms={"disk": t + DEAD_MS})) == [(2, DEAD, UNKNOWN)]
    assert lv.node(2).regions["disk"].stale
    assert overall(lv.tick(t + 10 * DEAD_MS + 5, sampled_ms={"disk": t + 10 * DEAD_MS})) == [(2, UNKNOWN, DEAD)]
    lv2 = live()
    node = Node(lv2, ("disk",))
    t = node.run(0, 2000)
    node.beat(t + INTERVAL_MS, flags=L)
    lv2.tick(t + INTERVAL_MS)
    assert lv2.tick(t + 10 * DEAD_MS, sampled_ms={"disk": t + INTERVAL_MS}) == [] and lv2.node(2).state is LEFT


def test_a_dead_on_a_region_gone_stale_and_a_fresh_dead_elsewhere_is_no_death():
    """Found by the whole-cluster simulator (seed 3450): n3's disk stalled long enough for the
    disk region to call it DEAD; then our disk reads hung (stale) while n3 beat there again; its
    net link went silent for dead_ms. Declaring n3 DEAD then (disk DEAD, net DEAD) was a death
    1 s after its last landed beat. A stale region's DEAD testifies nothing: UNKNOWN."""
    lv = live()
    node = Node(lv, ("disk", "net"))
    t = node.run(0, 2000)
    # n3's disk stalls: only net moves, and the disk region (fresh) calls it DEAD there
    for k in range(1, 12):
        node.beat(t + k * INTERVAL_MS, regions=("net",))
        lv.tick(t + k * INTERVAL_MS + 1)
    assert lv.node(2).regions["disk"].state is DEAD and lv.node(2).state is ALIVE
    frozen_read_ms = t + 11 * INTERVAL_MS + 1  # our disk reads hang from here on
    t2 = t + 11 * INTERVAL_MS
    for k in range(1, 12):  # its disk beats again (we cannot see it), net goes silent
        lv.tick(t2 + k * INTERVAL_MS, sampled_ms={"disk": frozen_read_ms})
    ev = lv.tick(t2 + DEAD_MS + 500, sampled_ms={"disk": frozen_read_ms})
    assert lv.node(2).regions["net"].state is DEAD and lv.node(2).regions["disk"].stale
    assert lv.node(2).state is UNKNOWN, (ev, lv.node(2))


def test_a_deadline_first_judged_after_the_region_went_stale_is_no_death():
    """R3 never on stale evidence (R8): the region looked for dead_ms without an advance, but our
    tick came late (we were frozen), after the region had gone stale: what it saw is too old to
    call the node dead now (it may well be beating): UNKNOWN. (The whole-cluster simulator found
    this as a false death: an observer frozen for 5.7 s declared a live node dead on waking.)"""
    lv = live()
    t = Node(lv, ("disk",)).run(0, 2000)
    ev = lv.tick(t + 3 * DEAD_MS, sampled_ms={"disk": t + DEAD_MS})
    assert overall(ev) == [(2, ALIVE, UNKNOWN)]


def test_a_deadline_judged_while_fresh_is_unknown_once_the_region_goes_stale():
    lv = live()
    t = Node(lv, ("disk",)).run(0, 2000)
    assert overall(lv.tick(t + DEAD_MS + 10, sampled_ms={"disk": t + DEAD_MS})) == [(2, ALIVE, DEAD)]
    assert overall(lv.tick(t + 3 * DEAD_MS, sampled_ms={"disk": t + DEAD_MS})) == [(2, DEAD, UNKNOWN)]


def test_a_stale_region_cannot_testify_that_the_old_generation_is_quiet():
    """R5 with R8: while a region that saw the old generation cannot be read, a new generation
    on another region does not win (a replay there could be racing the real node on the disk);
    the node is UNKNOWN meanwhile, never DEAD, and the restart is adopted once the disk reads."""
    lv = live()
    node = Node(lv, ("disk", "net"))
    t = node.run(0, 2000)
    read_ms = t + 100  # the disk's reads hang from here
    node.gen, node.seq, node.regions = 9, 0, {"net"}  # restarted; we only hear the net
    events = []
    for now in range(t + INTERVAL_MS, t + 6000, INTERVAL_MS):
        node.beat(now)
        events += lv.tick(now, sampled_ms={"disk": read_ms, "net": now})
        assert lv.node(2).state is not DEAD and lv.node(2).generation == LIVE, now
    assert lv.node(2).state is UNKNOWN and restarts(events) == []
    t += 6000  # the disk reads again (it shows the new generation there: a candidate too)
    node.regions = {"disk", "net"}
    node.beat(t)
    ev = lv.tick(t, sampled_ms={"disk": t, "net": t})
    assert restarts(ev) and overall(ev) == [(2, UNKNOWN, ALIVE)] and lv.node(2).generation == 9


def test_a_restart_seen_on_a_region_already_dead_for_the_old_incarnation_is_no_death():
    """R3 on a DEAD track (the simulator's seed 1278253): the old incarnation died on the link
    while the disk could not be read; then the node restarted and beat on the link only, never
    adopted (R5: the stale disk cannot testify). The link goes DEAD -> UNKNOWN while the new
    generation writes there, so when the disk reads again the node is not declared dead until
    that generation has shown nothing new for dead_ms."""
    lv = live()
    node = Node(lv, ("disk", "net"))
    t = node.run(0, 2000)
    read_ms = t + 100  # the disk's reads hang from here
    events = []
    for now in range(t + INTERVAL_MS, t + 3000, INTERVAL_MS):  # the old incarnation is gone: the link says DEAD
        events += lv.tick(now, sampled_ms={"disk": read_ms, "net": now})
    assert lv.node(2).regions["net"].state is DEAD and lv.node(2).state is UNKNOWN  # the stale disk: R8
    t += 3000
    node.gen, node.seq, node.regions = 9, 0, {"net"}  # restarted; we only hear the link
    last = t
    for now in range(t, t + 2000, INTERVAL_MS):
        node.beat(now)
        events += lv.tick(now, sampled_ms={"disk": read_ms, "net": now})
        lv.check_invariants()
        last = now
    assert lv.node(2).regions["net"].state is UNKNOWN and restarts(events) == []  # written there, not adopted
    for now in range(last + INTERVAL_MS, last + 4000, INTERVAL_MS):  # it dies; the disk reads again, stale
        events += lv.tick(now, sampled_ms={"disk": now, "net": now})
        lv.check_invariants()
        if now - last < DEAD_MS:
            assert lv.node(2).state is not DEAD, now - last
    deaths = [e for e in events if isinstance(e, NodeStateChanged) and e.new is DEAD]
    assert len(deaths) == 1 and lv.node(2).state is DEAD


def test_a_restart_adopted_on_a_stale_region_does_not_inherit_the_old_incarnations_leave():
    """R5 with R4 and R8: the node left cleanly (LEFT on its advancing generation), then restarted;
    the new generation is adopted from a read of a stale region (our reads there hung for a
    while). The old incarnation's LEFT must not carry over to the new one: it is UNKNOWN (stale
    evidence), never LEFT under the new generation. (Found by the whole-cluster simulator, seed 50:
    a claimant's fast path took a live holder's resource over as 'its daemon left cleanly'.)"""
    lv = live()
    node = Node(lv, ("disk",))
    t = node.run(0, 2000)
    node.beat(t + INTERVAL_MS, flags=int(SlotFlag.LEFT))  # the clean leave
    lv.tick(t + INTERVAL_MS)
    assert lv.node(2).state is LEFT
    # we read the disk for a while after the leave, then our reads hang for longer than dead_ms:
    # the region goes stale (what it last showed: the old incarnation, quiet and LEFT)
    read_ms = t + INTERVAL_MS + 4 * INTERVAL_MS
    lv.tick(read_ms, sampled_ms={"disk": read_ms})
    now = read_ms + DEAD_MS + 100
    lv.tick(now, sampled_ms={"disk": read_ms})
    # meanwhile it restarted; a hung read completes at last, showing the new generation moving
    node.gen, node.seq = 9, 0
    node.beat(now + 10)
    node.beat(now + 20)
    lv.tick(now + 30, sampled_ms={"disk": read_ms})  # still stale: that read was submitted long ago
    view = lv.node(2)
    assert view.generation == 9 and view.state is not LEFT, view
    lv.check_invariants()


def test_one_tick_settles_each_node_once_so_no_transient_death():
    """X1-X4 once per node per tick, after every track moved. Found by the simulator's bench run
    (seed 80291): an observer woke from a 7.6 s freeze; its net track of n2 (created first) hit
    its deadline (n2 partitioned) while its disk track still held a DEAD from before the freeze,
    on a region now stale. Judged track by track, net DEAD with disk still DEAD declared n2
    DEAD, and the disk track turned UNKNOWN (R8) only a moment later in the same tick."""
    lv = live()
    seq = 0
    for now in range(0, 1000, INTERVAL_MS):  # n2 known on net first, then on disk
        seq += 1
        lv.observe(now, Beat(2, "net", LIVE, seq, A, "n2"))
        lv.observe(now, Beat(2, "disk", LIVE, seq, A, "n2"))
        lv.tick(now)
    assert list(lv.node(2).regions) == ["disk", "net"] and lv.node(2).state is ALIVE
    t = now
    for now in range(t + INTERVAL_MS, t + DEAD_MS + 400, INTERVAL_MS):  # its disk writes stop; net goes on
        seq += 1
        lv.observe(now, Beat(2, "net", LIVE, seq, A, "n2"))
        lv.tick(now, sampled_ms={"disk": now})
    assert lv.node(2).regions["disk"].state is DEAD and lv.node(2).state is ALIVE
    read_ms = now  # our disk reads stop here (we froze); net is partitioned from n2 as well
    events = lv.tick(now + 3 * DEAD_MS, sampled_ms={"disk": read_ms})
    assert DEAD not in [e.new for e in events if isinstance(e, NodeStateChanged)], events
    assert [(e.old, e.new) for e in events if isinstance(e, NodeStateChanged)] == [(ALIVE, UNKNOWN)], events
    assert lv.node(2).state is UNKNOWN


def test_a_restart_adopted_in_the_tick_that_ends_the_old_generation_is_no_death():
    """R5 with R3 and X1-X4, found by the simulator's bench run (seed 72278): n1 crashed and
    restarted; our disk reads hung, so the new generation, beating on the net, could not be
    adopted (a stale region cannot testify that the old one is quiet) and n1 stayed UNKNOWN. The
    next fresh disk read showed the old generation's slot unchanged: in that one tick its disk
    deadline passed (DEAD) and the restart was adopted. Settled before the adoption, the node
    was declared DEAD, then ALIVE a moment later; a fencer would have shot a beating node."""
    lv = live()
    node = Node(lv, ("disk", "net"))
    t = node.run(0, 2000)
    old_seq = node.seq
    read_ms = t + 100  # our disk reads hang from here
    events = []
    for now in range(t + INTERVAL_MS, t + 3000, INTERVAL_MS):  # it crashed: silent (its restart's
        events += lv.tick(now, sampled_ms={"disk": read_ms, "net": now})  # packets not let in yet)
    assert lv.node(2).regions["net"].state is DEAD and lv.node(2).state is UNKNOWN  # disk: stale
    node.gen, node.seq, node.regions = 9, 0, {"net"}  # its new generation, heard on the net only
    for now in range(t + 3000, t + 6000, INTERVAL_MS):
        node.beat(now)
        events += lv.tick(now, sampled_ms={"disk": read_ms, "net": now})
    assert lv.node(2).state is UNKNOWN and restarts(events) == []
    assert DEAD not in [e.new for e in events if isinstance(e, NodeStateChanged)]
    now = t + 6000  # a fresh disk read: the old generation's last slot, unchanged
    lv.observe(now, Beat(2, "disk", LIVE, old_seq, A, "n2"))
    node.beat(now)
    ev = lv.tick(now, sampled_ms={"disk": now, "net": now})
    assert DEAD not in [e.new for e in ev if isinstance(e, NodeStateChanged)], ev
    assert restarts(ev) and lv.node(2).generation == 9 and lv.node(2).state is ALIVE
    lv.check_invariants()


def test_r5_a_generation_seen_leaving_is_never_adopted_again():
    """The simulator's seed 152528: generation A left cleanly, B restarted and then went silent;
    A's old packets replayed must not bring A back (N5: a node that left writes nothing more)."""
    lv = Liveness(self_id=1, interval_ms=100, dead_ms=1000)
    t = 0
    left = int(SlotFlag.LEFT)
    for seq in range(1, 6):
        t += 100
        lv.observe(t, Beat(2, "net", 0xA, seq, int(SlotFlag.ACTIVE), "n2"))
        lv.tick(t)
    t += 100
    lv.observe(t, Beat(2, "net", 0xA, 6, left, "n2"))
    lv.tick(t)
    assert lv.node(2).state is NodeState.LEFT
    for seq in range(1, 6):  # B starts (after A left: nothing of A moves any more)
        t += 100
        lv.observe(t, Beat(2, "net", 0xB, seq, int(SlotFlag.ACTIVE), "n2"))
        lv.tick(t)
    assert lv.node(2).generation == 0xB
    t += 3000  # B falls silent, dead
    lv.tick(t)
    events = []
    for seq in (2, 5):  # A's recorded packets, replayed
        t += 100
        lv.observe(t, Beat(2, "net", 0xA, seq, int(SlotFlag.ACTIVE), "n2"))
        events += lv.tick(t)
    assert lv.node(2).generation == 0xB and lv.node(2).state is NodeState.DEAD
    assert not [e for e in events if isinstance(e, NodeRestarted)]
