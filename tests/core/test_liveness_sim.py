"""A simulated cluster under a virtual clock, driving the liveness core through thousands of
ticks per seed: writers beat every interval with jitter, pause, crash, leave cleanly, restart and
come back; the reader sees corrupt samples, a slower region (every write shown late), regions
that stop seeing one node for a while (outages), and reads of its own that hang. Event-driven (no
idle stepping), deterministic per seed.

What must hold (the liveness promises, in simulated time):
  - no false alarm: a running node is never declared DEAD, whatever its pauses (up to
    SAFE_GAP_MS, some with the worst-placed corrupt sample), corrupt samples, region outages
    (never on all its regions at once) or our own hung reads; nor before dead_ms since its last write;
  - a crash is DEAD within dead_ms + 2 x interval_ms of it (single region; plus one read gap per
    corrupt sample that hid its last write), and in general within DETECT_MS_MAX of the last news
    the reader could have of the node (a write, an outage or a hang ending);
  - a clean leave is shown LEFT before the node rejoins, never DEAD, and never ALIVE again
    until it rejoins, when the core had adopted the leaving generation and seen it advance well
    before (R4: a LEFT counts only from an incarnation seen advancing; one that leaves before it
    could win is DEAD or LEFT, never ALIVE after LEFT);
  - a NodeRestarted names a generation a read showed moving on that region (R5: one sample of a
    new generation proves nothing), once per generation; a generation seen moving once the one
    the core holds has been silent everywhere for restart_quiet_ms is adopted at that tick, and
    a running node ends up known by its current generation;
  - the core's invariants hold throughout.
"""

import random
import time
from collections import deque
from dataclasses import dataclass, field

import pytest

from diskhb.core.liveness import Liveness, NodeRestarted, NodeStateChanged
from diskhb.core.timing import RESTART_QUIET_INTERVALS
from diskhb.core.types import BadSample, Beat, BeatBatch, NodeState, SlotFlag

INTERVAL_MS, DEAD_MS, JITTER_MS = 200, 2000, 30
READ_GAP_MAX_MS = INTERVAL_MS + JITTER_MS  # reads (ticks) come every interval +- jitter
BAD_STREAK_MAX = 1  # corrupt samples of one (node, region) in a row; each hides a write for one read
# The longest gap between two writes of a running node that can never look like death: the write
# closing the gap is seen at most one read gap late, plus one read per corrupt sample in the way.
SAFE_GAP_MS = DEAD_MS - (1 + BAD_STREAK_MAX) * READ_GAP_MAX_MS
# After the last news of a node, DEAD comes at most one read gap (to see that news; one more per
# corrupt sample hiding it) plus dead_ms plus one read gap (the tick that passes the deadline) later.
DETECT_MS_MAX = DEAD_MS + (2 + BAD_STREAK_MAX) * READ_GAP_MAX_MS
SLOW_REGION_LAG_MS = 2 * INTERVAL_MS + 50  # the last of several regions shows every write this late
RESTART_QUIET_MS = RESTART_QUIET_INTERVALS * INTERVAL_MS  # the core's restart_quiet_ms (R5)
# R5: a new generation is adopted once the one the core holds has shown no advance for
# restart_quiet_ms on every region; that holds from QUIET_AFTER_MS after that one's last write
# (seen on the slowest region, one read later, one more per corrupt sample) or after the core's
# previous adoption (other regions wait from then), whichever is later, plus restart_quiet_ms.
# (Sim.quiet_after_ms: the same with the run's own slowest lag, 0 with one region.)
QUIET_AFTER_MS = SLOW_REGION_LAG_MS + (1 + BAD_STREAK_MAX) * READ_GAP_MAX_MS
# A running generation is adopted by this long after its first write at the latest: the core's
# previous adoption may come up to restart_quiet_ms after that write (a generation that stopped
# at once, R5), then the quiet, then one more write seen (one read late, one more per corrupt one).
ADOPT_MS_MAX = QUIET_AFTER_MS + 2 * RESTART_QUIET_MS + (2 + BAD_STREAK_MAX) * READ_GAP_MAX_MS
ADOPT_WRITES = ADOPT_MS_MAX // (INTERVAL_MS - JITTER_MS) + 1  # writes that span ADOPT_MS_MAX at least
ACTIVE, LEFT = int(SlotFlag.ACTIVE), int(SlotFlag.LEFT)
DEAD, LEFT_STATE = NodeState.DEAD, NodeState.LEFT


@dataclass
class Writer:
    node_id: int
    generation: int
    seq: int = 0
    flags: int = ACTIVE
    state: str = "up"  # up | crashed | left
    next_ms: int = 0  # next write (up) or come-back (crashed, left)
    last_write_ms: int = 0
    writes_in_generation: int = 0
    corrupt_seq: int = 0  # the write that ends a tight pause: its first read is corrupt (worst case)
    hidden_reads: int = 0  # corrupt samples read before the last write was first seen
    last_write_seen: bool = False
    crash_ms: int | None = None
    left_ms: int | None = None
    dead_at_ms: int | None = None  # DEAD seen during the current crash
    left_at_ms: int | None = None  # LEFT seen during the current leave
    left_sure: bool = False  # the leave must be shown LEFT (R4: the core held it, advancing, long enough)
    crash_unseen: bool = False  # the crashed incarnation was never adopted (R5): the node stays as it was
    gen_start_ms: int = 0  # first write of the current generation
    prev_last_write_ms: int = 0  # last write of the generation before it
    first_generation: int = 0  # the one the core takes from its first sample (R2)
    generations: dict[int, int] = field(default_factory=dict)  # generation -> its number (0, 1, ...)


@dataclass
class Stats:
    ticks: int = 0
    writes: int = 0
    crashes: int = 0
    leaves: int = 0
    restarts: int = 0
    comebacks: int = 0
    pauses: int = 0
    tight_pauses: int = 0
    bad_samples: int = 0
    outages: int = 0
    hangs: int = 0
    adoption_checks: int = 0  # moves of a new generation the core had to adopt by then (R5)
    detect_ms: list[int] = field(default_factory=list)
    detect_from_crash_ms: list[int] = field(default_factory=list)


class Sim:
    def __init__(self, seed: int, *, nodes: int, regions: tuple[str, ...], outages: bool = False,
                 hangs: bool = False, batch: bool = True, sampled: bool = True):
        self.rng = random.Random(seed)
        self.seed, self.regions, self.outages, self.hangs = seed, regions, outages, hangs
        self.batch, self.sampled = batch, sampled
        self.lv = Liveness(self_id=1, interval_ms=INTERVAL_MS, dead_ms=DEAD_MS)
        self.writers = {i: Writer(i, self._new_generation(), next_ms=self.rng.randrange(INTERVAL_MS))
                        for i in range(2, nodes + 2)}
        for w in self.writers.values():
            w.generations[w.generation] = 0
            w.first_generation = w.generation
        # per (node, region): writes on their way (visible from, value), and what a read returns now
        self.pending: dict[tuple[int, str], deque[tuple[int, tuple[int, int, int]]]] = {}
        self.shown: dict[tuple[int, str], tuple[int, int, int]] = {}
        self.blind_until: dict[tuple[int, str], int] = {}  # region outage for one node: shows a frozen value
        self.lag_ms = {r: SLOW_REGION_LAG_MS if len(regions) > 1 and r == regions[-1] else 0 for r in regions}
        self.quiet_after_ms = QUIET_AFTER_MS - SLOW_REGION_LAG_MS + max(self.lag_ms.values())
        self.bad_streak: dict[tuple[int, str], int] = {}
        self.hang: dict[str, tuple[int, int, dict]] = {}  # region -> (read submitted, hang ends, what it read)
        self.fresh_after_hang: set[str] = set()
        self.spoiled: set[tuple] = set()  # (value, key) whose worst-case corrupt read happened
        self.looked_ms: dict[str, int] = {}  # region -> submission of its newest completed read
        self.news_ms: dict[int, int] = {}  # node -> last time a region could first show something new
        self.last_read: dict[tuple[int, str], tuple[int, int, int]] = {}  # newest valid value read
        self.read_moving: set[tuple[int, str, int]] = set()  # (node, region, generation) read moving
        self.moved_on_first: set[int] = set()  # nodes whose current generation moved on regions[0] this read
        self.adopted_ms: dict[int, int] = {}  # node -> tick of its last NodeRestarted
        self.adopted_to: dict[int, int] = {}  # node -> the generation it named
        self.outage_end: dict[int, int] = {}  # node -> end of its latest outage
        self.hang_end_ms = 0  # end of the latest hang of our reads
        self.restarted_to: list[int] = []  # new_generation of every NodeRestarted
        self.stats = Stats()
        self.next_read_ms = 0
        self.now = 0

    def _new_generation(self) -> int:
        return self.rng.getrandbits(63) | 1

    def fail(self, msg: str):
        raise AssertionError(f"seed {self.seed} at {self.now} ms: {msg}")

    # -- writers --------------------------------------------------------------------------------

    def write(self, w: Writer) -> None:
        w.seq += 1
        w.last_write_ms = self.now
        w.writes_in_generation += 1
        w.hidden_reads, w.last_write_seen = 0, False
        self.stats.writes += 1
        for r in self.regions:
            self.pending.setdefault((w.node_id, r), deque()).append(
                (self.now + self.lag_ms[r], (w.generation, w.seq, w.flags)))

    def medium(self, key: tuple[int, str]) -> tuple[int, int, int] | None:
        """What a read of the region shows for the node now: each write once its lag has passed,
        except during an outage, when the region keeps showing what it showed before."""
        blind_until = self.blind_until.get(key, 0)
        if blind_until > self.now:
            return self.shown.get(key)
        queue = self.pending.get(key)
        while queue and queue[0][0] <= self.now:
            visible_ms, self.shown[key] = queue.popleft()
            # news of the node: when this value could first be read (after the outage that hid it)
            self.news_ms[key[0]] = max(self.news_ms.get(key[0], 0), visible_ms, blind_until)
        return self.shown.get(key)

    def new_incarnation(self, w: Writer) -> None:
        w.generation = self._new_generation()
        assert w.generation not in w.generations
        w.generations[w.generation] = len(w.generations)
        w.seq, w.flags, w.writes_in_generation = 0, ACTIVE, 0
        w.prev_last_write_ms, w.gen_start_ms = w.last_write_ms, self.now

    def writer_due(self, w: Writer) -> None:
        rng, now = self.rng, self.now
        if w.state != "up" and (self.hang or now - self.news_ms.get(w.node_id, 0) <= DETECT_MS_MAX):
            w.next_ms = now + INTERVAL_MS  # stay away until the reader could have seen it go
            return
        if w.state == "crashed":  # comes back with a new generation
            if w.dead_at_ms is None:
                self.fail(f"crash of node {w.node_id} at {w.crash_ms} never declared dead")
            w.state, w.crash_ms, w.dead_at_ms, w.crash_unseen = "up", None, None, False
            self.new_incarnation(w)
            self.stats.comebacks += 1
        elif w.state == "left":  # rejoins with a new generation
            if w.left_sure and w.left_at_ms is None:
                self.fail(f"node {w.node_id} left at {w.left_ms} but was never shown LEFT")
            w.state, w.left_ms, w.left_at_ms = "up", None, None
            self.new_incarnation(w)
            self.stats.comebacks += 1
        else:
            r = rng.random() if w.writes_in_generation else 1.0  # a node never written is nobody
            if r < 0.002:
                w.state, w.crash_ms = "crashed", now
                view = self.lv.node(w.node_id)
                if view is not None and view.generation != w.generation and view.state in (DEAD, LEFT_STATE):
                    # The core never believed this incarnation (R5: it had not moved yet, or not
                    # while the one it replaced was quiet): the node stays as the one before
                    # it ended, DEAD or LEFT, all along.
                    w.dead_at_ms, w.crash_unseen = now, True
                w.next_ms = now + rng.randrange(DETECT_MS_MAX + READ_GAP_MAX_MS, 3 * DEAD_MS)
                self.stats.crashes += 1
                return
            if r < 0.003:
                # R4: the LEFT counts if the core holds this generation, has seen it advance, and
                # no other generation of the node can still be moving on a region (the previous
                # one is seen last quiet_after_ms after this one began). Otherwise the core may
                # not believe it (a replay looks the same): DEAD or LEFT, never ALIVE after LEFT.
                view = self.lv.node(w.node_id)
                w.left_sure = (view is not None and view.generation == w.generation
                               and view.state is NodeState.ALIVE
                               and now - w.gen_start_ms >= self.quiet_after_ms + RESTART_QUIET_MS)
                w.flags = LEFT
                self.write(w)
                w.state, w.left_ms = "left", now
                w.next_ms = now + rng.randrange(DEAD_MS, 3 * DEAD_MS)
                self.stats.leaves += 1
                return
            if r < 0.005 and w.writes_in_generation >= 3:  # the daemon restarted: new generation at once
                self.new_incarnation(w)
                self.stats.restarts += 1
        self.write(w)
        gap = INTERVAL_MS + rng.randrange(-JITTER_MS, JITTER_MS + 1)
        r = rng.random()
        if r < 0.01:  # a pause (GC, busy CPU, slow disk) right at the limit: must not look like death
            gap = SAFE_GAP_MS - rng.randrange(10)
            w.corrupt_seq = w.seq + 1
            self.stats.tight_pauses += 1
        elif r < 0.04:
            gap = rng.randrange(INTERVAL_MS, SAFE_GAP_MS + 1)
            self.stats.pauses += 1
        w.next_ms = now + gap

    # -- the reader (the daemon's tick) -----------------------------------------------------------

    def maybe_start_trouble(self) -> None:
        rng, now = self.rng, self.now
        if self.outages and rng.random() < 0.01:  # a region stops seeing one node for a while
            node_id, region = rng.choice(list(self.writers)), rng.choice(self.regions)
            if not any(self.blind_until.get((node_id, r), 0) > now for r in self.regions):
                self.blind_until[(node_id, region)] = now + rng.randrange(DEAD_MS, 4 * DEAD_MS)
                self.outage_end[node_id] = self.blind_until[(node_id, region)]
                self.stats.outages += 1
        if self.hangs and rng.random() < 0.005:  # one of our reads hangs; it returns what it read then
            region = rng.choice(self.regions)
            if region not in self.hang:
                on_medium = {key: self.medium(key) for key in self.pending if key[1] == region}
                self.hang[region] = (now, now + rng.randrange(INTERVAL_MS, 5 * DEAD_MS), on_medium)
                self.hang_end_ms = max(self.hang_end_ms, self.hang[region][1])
                self.stats.hangs += 1

    def read(self, region: str, shown: dict) -> None:
        """One read of a region: a beat per written slot, some of them corrupt."""
        rng, now, lv = self.rng, self.now, self.lv
        rows = []
        for key, value in shown.items():
            node_id = key[0]
            if value is None:
                continue
            corrupt_ok = region not in self.fresh_after_hang  # see test_a_region_that_cannot_read_kills_nobody
            w = self.writers[node_id]
            worst = (value[0], value[1]) == (w.generation, w.corrupt_seq) and (value, key) not in self.spoiled
            if worst:
                self.spoiled.add((value, key))
            if corrupt_ok and self.bad_streak.get(key, 0) < BAD_STREAK_MAX and (worst or rng.random() < 0.02):
                self.bad_streak[key] = self.bad_streak.get(key, 0) + 1
                self.stats.bad_samples += 1
                self.writers[node_id].hidden_reads += not self.writers[node_id].last_write_seen
                lv.observe(now, BadSample(node_id, region, "checksum mismatch"))
                continue
            self.bad_streak[key] = 0
            before = self.last_read.get(key)
            if before is not None and before[0] == value[0] and before[1] != value[1]:
                self.read_moving.add((node_id, region, value[0]))  # the core sees it move (R1, R5)
                if region == self.regions[0] and value[0] == w.generation:
                    self.moved_on_first.add(node_id)
            self.last_read[key] = value
            w.last_write_seen |= value == (w.generation, w.seq, w.flags)
            rows.append((node_id, *value))
        rng.shuffle(rows)
        if self.batch and region == self.regions[0]:
            if rows:
                ids, gens, seqs, flags = (list(col) for col in zip(*rows))
                lv.observe(now, BeatBatch(region, ids, gens, seqs, flags, [""] * len(ids)))
        else:
            for node_id, gen, seq, flags in rows:
                lv.observe(now, Beat(node_id, region, gen, seq, flags))

    def reader_due(self) -> None:
        now = self.now
        self.stats.ticks += 1
        self.maybe_start_trouble()
        for region in self.regions:
            hang = self.hang.get(region)
            if hang is None:
                self.read(region, {key: self.medium(key) for key in self.pending if key[1] == region})
                self.looked_ms[region] = now
                self.fresh_after_hang.discard(region)
            elif now >= hang[1]:  # the hung read completes with what was on the medium when it started
                del self.hang[region]
                self.read(region, hang[2])
                self.looked_ms[region] = hang[0]
                self.fresh_after_hang.add(region)
                for node_id in self.writers:
                    self.news_ms[node_id] = max(self.news_ms.get(node_id, 0), now)
        events = self.lv.tick(now, dict(self.looked_ms) if self.sampled else None)
        for ev in events:
            self.judge(ev)
        self.check_adoptions()
        if self.stats.ticks % 50 == 0:
            self.lv.check_invariants()
        self.next_read_ms = now + INTERVAL_MS + self.rng.randrange(-JITTER_MS, JITTER_MS + 1)

    def check_adoptions(self) -> None:
        """R5's promise: a generation read moving on the first region at this tick, once the one
        the core holds has been silent everywhere for restart_quiet_ms, is adopted by this tick.
        Not judged across our own hung reads (a stale region cannot testify, R8: adoption waits
        for it) nor outages (one that ends shows the old generation's last beat late, which is
        an advance of it then: the quiet counts from there)."""
        moved, self.moved_on_first = self.moved_on_first, set()
        if self.hang or self.hang_end_ms > self.now - ADOPT_MS_MAX - DEAD_MS:
            return
        for node_id in moved:
            w = self.writers[node_id]
            held = self.adopted_to.get(node_id, w.first_generation)
            if held == w.generation or self.outage_end.get(node_id, 0) > w.prev_last_write_ms - DEAD_MS:
                continue
            silent_ms = max(w.prev_last_write_ms + self.quiet_after_ms, self.adopted_ms.get(node_id, 0))
            quiet_ms = silent_ms + RESTART_QUIET_MS
            if self.now >= quiet_ms:
                self.fail(f"node {node_id}: generation {w.generation:#x} moving at {self.now}, the previous one"
                          f" silent since {w.prev_last_write_ms}, still not adopted ({held:#x} held)")
            self.stats.adoption_checks += 1

    def judge(self, ev) -> None:
        now = self.now
        if isinstance(ev, NodeRestarted):
            self.restarted_to.append(ev.new_generation)
            self.adopted_ms[ev.node_id], self.adopted_to[ev.node_id] = now, ev.new_generation
            w = self.writers[ev.node_id]
            if ev.new_generation not in w.generations or ev.old_generation not in w.generations:
                self.fail(f"restart {ev} names a generation node {ev.node_id} never had")
            if (ev.node_id, ev.region, ev.new_generation) not in self.read_moving:
                self.fail(f"restart {ev}: that generation was never read moving on {ev.region} (R5)")
            return
        if not isinstance(ev, NodeStateChanged):
            return
        w = self.writers[ev.node_id]
        if ev.new is NodeState.DEAD:
            if w.state == "left" and not w.left_sure:
                # R4: a LEFT from a generation the core could not hold yet is not believed (a
                # replay looks the same): it is a node that stopped, DEAD is right, not before
                # dead_ms after its last write.
                if now - w.last_write_ms < DEAD_MS:
                    self.fail(f"node {ev.node_id} declared dead {now - w.last_write_ms} ms after its last write")
                return
            if w.state != "crashed":
                self.fail(f"false alarm: node {ev.node_id} ({w.state}) declared dead: {ev.reason}")
            if w.dead_at_ms is None:
                w.dead_at_ms = now
                if now - w.last_write_ms < DEAD_MS:
                    self.fail(f"node {ev.node_id} declared dead {now - w.last_write_ms} ms after its last write")
                latency = now - max(w.last_write_ms, self.news_ms[w.node_id])
                if latency > DETECT_MS_MAX:
                    self.fail(f"node {ev.node_id} declared dead {latency} ms after the last news of it")
                self.stats.detect_ms.append(latency)
                if not self.outages and not self.hangs:  # the brief's promise, from the crash
                    from_crash_ms = now - w.crash_ms - w.hidden_reads * READ_GAP_MAX_MS
                    if from_crash_ms > DEAD_MS + 2 * INTERVAL_MS:
                        self.fail(f"node {ev.node_id} declared dead {from_crash_ms} ms after its crash")
                    self.stats.detect_from_crash_ms.append(from_crash_ms)
        elif ev.new is NodeState.LEFT:
            if w.state != "left":
                self.fail(f"node {ev.node_id} ({w.state}) shown LEFT")
            w.left_at_ms = now
        elif ev.new is NodeState.ALIVE and w.state == "left" and w.left_at_ms is not None:
            self.fail(f"node {ev.node_id} left, was shown LEFT, and now ALIVE: {ev.reason}")

    # -- the loop --------------------------------------------------------------------------------

    def run(self, duration_ms: int) -> Stats:
        while self.now < duration_ms:
            self.now = min(self.next_read_ms, min(w.next_ms for w in self.writers.values()))
            for w in self.writers.values():  # writes at t are visible to a read at t
                if w.next_ms == self.now:
                    self.writer_due(w)
            if self.next_read_ms == self.now:
                self.reader_due()
        self.finish()
        return self.stats

    def finish(self) -> None:
        self.lv.check_invariants()
        # every generation reported once (an adopted generation never comes back in this workload:
        # the one it replaced has stopped for good)
        if len(set(self.restarted_to)) != len(self.restarted_to):
            self.fail(f"{len(self.restarted_to)} NodeRestarted for {len(set(self.restarted_to))} generations")
        for w in self.writers.values():
            view = self.lv.node(w.node_id)
            if self.hang:  # a region still cannot read: it may not judge anyone yet
                continue
            if w.state == "crashed" and self.now - max(w.last_write_ms, self.news_ms[w.node_id]) > DETECT_MS_MAX:
                assert w.dead_at_ms is not None and (view.state is DEAD or w.crash_unseen), (self.seed, w)
            if w.state == "left" and self.now - w.left_ms > DETECT_MS_MAX:
                assert view.state is NodeState.LEFT or (not w.left_sure and view.state is NodeState.DEAD), \
                    (self.seed, w, view)
            # adopted and shown on every region by now: a new generation wins only after the one
            # before has been silent for restart_quiet_ms (R5), ADOPT_MS_MAX at most, not within 5
            # writes as when its first sample was a restart; a hang ending puts that off (R8)
            recent_hang = w.gen_start_ms <= self.hang_end_ms and self.now - self.hang_end_ms <= ADOPT_MS_MAX
            if w.state == "up" and w.writes_in_generation > ADOPT_WRITES and not recent_hang:
                assert view.state is not NodeState.DEAD and view.generation == w.generation, (self.seed, w, view)


def assert_busy(stats: Stats) -> None:
    """The seed exercised what it is meant to (a quiet seed proves nothing)."""
    assert stats.crashes and stats.leaves and stats.restarts and stats.comebacks, stats
    assert stats.tight_pauses and stats.pauses and stats.bad_samples, stats
    assert stats.detect_ms and max(stats.detect_ms) <= DETECT_MS_MAX, stats
    assert stats.adoption_checks, stats  # R5's promise was put to the test


@pytest.mark.parametrize("seed", range(4))
def test_one_region_pauses_crashes_leaves_restarts(seed):
    stats = Sim(seed, nodes=12, regions=("disk",)).run(300_000)
    assert stats.ticks >= 1400
    assert_busy(stats)
    assert stats.detect_from_crash_ms


@pytest.mark.parametrize("seed", range(3))
def test_two_regions_with_outages_never_kill_a_node_another_region_sees(seed):
    stats = Sim(100 + seed, nodes=8, regions=("disk", "net"), outages=True).run(300_000)
    assert stats.ticks >= 1400 and stats.outages >= 10
    assert_busy(stats)


@pytest.mark.parametrize("seed", range(3))
def test_our_own_reads_hanging_kill_nobody(seed):
    """The reader's reads hang for up to 5 x dead_ms; tick() is told how far each region looked."""
    stats = Sim(200 + seed, nodes=8, regions=("disk",), hangs=True).run(300_000)
    assert stats.ticks >= 1400 and stats.hangs >= 3
    assert_busy(stats)


def test_everything_at_once():
    stats = Sim(300, nodes=10, regions=("disk", "net", "serial"), outages=True, hangs=True).run(300_000)
    assert stats.ticks >= 1400 and stats.outages and stats.hangs
    assert_busy(stats)


def test_without_batches_and_without_sampled_ms_same_promises():
    stats = Sim(400, nodes=8, regions=("disk", "net"), outages=True, batch=False, sampled=False).run(300_000)
    assert_busy(stats)


def test_ten_thousand_ticks_in_one_run():
    t0 = time.perf_counter()
    stats = Sim(999, nodes=16, regions=("disk",)).run(2_100_000)
    elapsed_s = time.perf_counter() - t0
    assert stats.ticks >= 10_000
    assert_busy(stats)
    print(f"{stats.ticks} ticks, {stats.writes} writes, 16 nodes, in {elapsed_s:.2f} s")
