"""The MMP guard and Disk Paxos under a virtual clock: random I/O latencies, pauses, crashes.

Each simulated node runs the real I/O-free machines (diskhb.mmp.acquisition.Acquisition,
diskhb.mmp.hold.Hold) against
one simulated disk. Reads sample the disk at a random moment between submission and
completion; writes land at a random moment between issue and completion. Any actor can be
paused for a random time at every point where a real process could be stopped (before any
I/O, between the clock check and... nothing: a WriteSeq is issued at the instant its clock
check passed, as the runner does). Actors also crash (never to return) and restart with a
new generation.

While it believes it holds and its lease is valid (Hold.expired() is None: HD-loss, with a loss
budget of 0, so it acts until the very moment a claimant may take over), a holder
"acts" (what its consumer would do: write data). The invariant is the prime rule:
  acts, ordered by time, never go back to an older epoch (no two writers at once),
  and each epoch was acquired by exactly one (node, generation).
"""

from __future__ import annotations

import heapq
import random

import pytest

from diskhb.core.timing import MmpTiming, mmp_ceiling_ms
from diskhb.mmp import format as mf
from diskhb.mmp.acquisition import Acquisition
from diskhb.mmp.hold import Hold
from diskhb.mmp.steps import Acquired, Claimant, Lost, ReadResource, ReadSeq, WriteBallot, WriteSeq

S = 512


class Disk:
    def __init__(self, size: int):
        self.data = bytearray(size)


class Sim:
    def __init__(self, seed: int, *, slots: int, lat_ms: tuple[int, int], pause_p: float,
                 pause_ms: int, crash_p: float, stall_p: float = 0.0, stall_ms: int = 0):
        self.rng = random.Random(seed)
        self.disk = Disk((1 + slots) * S)
        self.slots = slots
        self.lat_ms = lat_ms
        self.pause_p = pause_p
        self.pause_ms = pause_ms
        self.crash_p = crash_p
        self.stall_p = stall_p  # an I/O half (to landing, or to completion) that hangs
        self.stall_ms = stall_ms
        self.events: list = []
        self.restart: dict[int, tuple] = {}
        self.n = 0
        self.now = 0
        self.acts: list[tuple[int, int, int, int]] = []  # (time, epoch, node, generation)
        self.acquired: dict[int, tuple[int, int]] = {}  # epoch -> (node, generation)
        self.writing: dict[int, int] = {}  # id(actor) -> its writes in flight ("write_async")
        self.stats = {"acquired": 0, "refused": 0, "lost": 0, "crashed": 0, "released": 0}

    def push(self, t, fn):
        self.n += 1
        heapq.heappush(self.events, (t, self.n, fn))

    def lat(self):
        lo, hi = self.lat_ms
        if self.stall_p and self.rng.random() < self.stall_p:
            return self.rng.randint(hi, self.stall_ms)
        return self.rng.randint(lo, hi)

    def spawn(self, factory, at: int, restarts: int = 3):
        """Start an actor; if it crashes, it comes back later as a new incarnation."""
        gen = factory()
        self.restart[id(gen)] = (factory, restarts)
        self.push(at, lambda: self.step(gen, None))

    def step(self, gen, value):
        try:
            req = gen.send(value)
        except StopIteration:
            return
        t = self.now
        kind = req[0]
        # F4: a process with a write in flight cannot exit; it crashes only between its writes.
        if kind in ("now", "sleep") and not self.writing.get(id(gen)) and self.rng.random() < self.crash_p:
            self.stats["crashed"] += 1  # the actor is gone; its in-flight I/O still completes
            factory, left = self.restart.pop(id(gen), (None, 0))
            if factory is not None and left > 0:
                self.spawn(factory, t + self.rng.randint(0, 5000), left - 1)
            return
        if kind == "now":
            pause = self.rng.randint(0, self.pause_ms) if self.rng.random() < self.pause_p else 0
            self.push(t + pause, lambda: self.step(gen, self.now))
        elif kind == "sleep":
            pause = self.rng.randint(0, self.pause_ms) if self.rng.random() < self.pause_p else 0
            self.push(max(req[1], t) + pause, lambda: self.step(gen, self.now))
        elif kind == "read":
            _, off, length = req
            a, b = self.lat(), self.lat()
            box = {}
            self.push(t + a, lambda: box.setdefault("d", bytes(self.disk.data[off: off + length])))
            self.push(t + a + b, lambda: self.step(gen, (box["d"], t, t + a + b)))
        elif kind == "write":
            _, off, data = req
            a, b = self.lat(), self.lat()

            def land():
                self.disk.data[off: off + len(data)] = data
            self.push(t + a, land)
            self.push(t + a + b, lambda: self.step(gen, (t, t + a + b)))
        elif kind == "write_async":  # the actor goes on at once; `box` gets (issue, completion)
            _, off, data = req
            a, b = self.lat(), self.lat()
            box: dict = {}
            self.writing[id(gen)] = self.writing.get(id(gen), 0) + 1

            def land_async():
                self.disk.data[off: off + len(data)] = data

            def done():
                box["done"] = (t, t + a + b)
                self.writing[id(gen)] -= 1
            self.push(t + a, land_async)
            self.push(t + a + b, done)
            self.push(t, lambda: self.step(gen, box))
        elif kind == "act":
            self.acts.append((t, req[1], req[2], req[3]))
            self.push(t, lambda: self.step(gen, None))
        else:
            raise AssertionError(req)

    def run(self, until_ms: int):
        while self.events and self.events[0][0] <= until_ms:
            t, _, fn = heapq.heappop(self.events)
            self.now = t
            fn()


UUID = b"\x5a" * 16


def acquire(sim: Sim, me: Claimant, stale_ok: bool):
    m = Acquisition(me, uuid=UUID, slot_count=sim.slots, sector_size=S, rand=sim.rng.randrange,
                      stale_self_ok=stale_ok)
    now = yield ("now",)
    step = m.start(now)
    span = (1 + sim.slots) * S
    while True:
        if isinstance(step, ReadResource):
            yield ("sleep", step.at_ms)
            data, sub, comp = yield ("read", 0, span)
            view = mf.decode_resource(data, sector_size=S, slot_count=sim.slots, uuid=UUID)
            step = m.on_resource(view, sub, comp)
        elif isinstance(step, ReadSeq):
            yield ("sleep", step.at_ms)
            data, sub, comp = yield ("read", 0, S)
            seq, err = mf.decode_seq_sector(data, UUID)
            step = m.on_seq(seq, err, sub, comp)
        elif isinstance(step, WriteBallot):
            sub, comp = yield ("write", step.ballot.node_id * S, mf.encode_ballot(step.ballot, S))
            step = m.on_written(sub, comp)
        elif isinstance(step, WriteSeq):
            now = yield ("now",)  # a pause point; the write goes out at this very instant
            if now > step.issue_by_ms:
                step = m.write_too_late(now)
                continue
            m.committing(now)
            sub, comp = yield ("write", 0, mf.encode_seq_block(step.block))
            step = m.on_written(sub, comp)
        else:
            return step


def node(sim: Sim, node_id: int, *, interval_ms: int, rounds: int, stale_ok: bool = False,
         act_while_writing: bool = False):
    """`act_while_writing`: the holder goes on acting while its bump is in flight (as a consumer
    of a real hold does), for as long as its lease (HD-loss, counting that write) holds."""
    for _ in range(rounds):
        gen = sim.rng.randrange(1, 2**63)
        me = Claimant(node_id, gen, f"n{node_id}", "res", interval_ms, mmp_ceiling_ms(interval_ms))
        yield ("sleep", sim.now + sim.rng.randint(0, interval_ms // 2))
        out = yield from acquire(sim, me, stale_ok)
        if not isinstance(out, Acquired):
            sim.stats["refused"] += 1
            continue
        sim.stats["acquired"] += 1
        kind = out.note.split(":")[0].split(" from ")[0]
        sim.stats[kind] = sim.stats.get(kind, 0) + 1
        e = out.block.epoch
        assert e not in sim.acquired, f"epoch {e} acquired twice: {sim.acquired[e]} and {(node_id, gen)}"
        assert all(e > k for k in sim.acquired), "epochs must grow"
        sim.acquired[e] = (node_id, gen)
        hold = Hold(out, timing=MmpTiming(interval_ms, 0))
        until = sim.now + sim.rng.randint(0, 8 * interval_ms)
        lost = False
        while True:
            now = yield ("now",)
            if hold.expired(now):
                lost = True
                break
            yield ("act", e, node_id, gen)
            final = mf.SEQ_CLEAN if now >= until else None
            if now < hold.due_ms() and final is None:
                yield ("sleep", min(hold.due_ms(), now + interval_ms // 3))
                continue
            data, sub, comp = yield ("read", 0, S)
            seq, err = mf.decode_seq_sector(data, UUID)
            step = hold.on_verify(seq, err, sub, comp, final=final)
            if isinstance(step, Lost):
                lost = True
                break
            now = yield ("now",)
            if now > step.issue_by_ms:
                if isinstance(hold.write_too_late(now), Lost):
                    lost = True
                    break
                continue
            hold.issuing(now)
            if act_while_writing:
                box = yield ("write_async", 0, mf.encode_seq_block(step.block))
                while "done" not in box:
                    now = yield ("now",)
                    if not lost and hold.expired(now):
                        lost = True  # no more acts; the write still completes before we go on
                    if not lost and final is None:  # a release: we stopped acting before its CLEAN
                        yield ("act", e, node_id, gen)
                    yield ("sleep", now + max(1, interval_ms // 20))
                if lost:
                    break
                sub, comp = box["done"]
            else:
                sub, comp = yield ("write", 0, mf.encode_seq_block(step.block))
            if hold.on_written(sub, comp) is not None:
                lost = True
                break
            if final is not None:
                sim.stats["released"] += 1
                break
        if lost:
            sim.stats["lost"] += 1


def check_acts(sim: Sim) -> None:
    top = 0
    for t, epoch, node_id, gen in sorted(sim.acts):
        assert sim.acquired[epoch] == (node_id, gen)
        assert epoch >= top, f"at {t} ms epoch {epoch} acted after epoch {top} had: two writers"
        top = epoch


@pytest.mark.parametrize("seed", range(6))
def test_racing_contenders_with_latency_pauses_and_crashes(seed):
    sim = Sim(seed, slots=4, lat_ms=(0, 30), pause_p=0.02, pause_ms=2500, crash_p=0.0005)
    for node_id in range(1, 5):
        sim.spawn(lambda node_id=node_id: node(sim, node_id, interval_ms=100, rounds=150, stale_ok=True), 0)
    sim.run(400_000)
    check_acts(sim)
    assert sim.stats["acquired"] >= 10, sim.stats


@pytest.mark.parametrize("seed", range(4))
def test_slow_storage_is_still_safe(seed):
    """Latency far above the interval and the commit window: rules HD-issue/HD-loss and the commit
    window give up the resource, but never let two epochs act at once."""
    sim = Sim(100 + seed, slots=3, lat_ms=(0, 700), pause_p=0.03, pause_ms=3000, crash_p=0.0)
    for node_id in range(1, 4):
        sim.spawn(lambda node_id=node_id: node(sim, node_id, interval_ms=100, rounds=80, stale_ok=True), 0)
    sim.run(600_000)
    check_acts(sim)


@pytest.mark.parametrize("seed", range(5))
def test_hung_io_is_still_safe(seed):
    """Mostly fast storage where 3% of I/O halves hang for up to 3 s (a path failover)."""
    sim = Sim(300 + seed, slots=3, lat_ms=(0, 10), pause_p=0.0, pause_ms=0, crash_p=0.0,
              stall_p=0.03, stall_ms=3000)
    for node_id in range(1, 4):
        sim.spawn(lambda node_id=node_id: node(sim, node_id, interval_ms=100, rounds=150, stale_ok=True), 0)
    sim.run(400_000)
    check_acts(sim)
    assert sim.stats["acquired"] >= 20, sim.stats


@pytest.mark.parametrize("seed", range(4))
def test_pure_ballot_race_decides_one_winner_per_epoch(seed):
    """No pauses of holders matter here: many claimants of a CLEAN block at once with wild
    latencies. Paxos alone must keep it to one winner per epoch."""
    sim = Sim(200 + seed, slots=8, lat_ms=(0, 200), pause_p=0.1, pause_ms=400, crash_p=0.0)
    for node_id in range(1, 9):
        sim.spawn(lambda node_id=node_id: node(sim, node_id, interval_ms=1000, rounds=30), 0)
    sim.run(300_000)
    check_acts(sim)
    assert sim.stats["acquired"] >= 1


@pytest.mark.parametrize("seed", range(4))
def test_holders_acting_while_their_bump_is_in_flight_stay_safe(seed):
    """Slow storage whose I/O cycles vary, so the adaptive interval grows and shrinks (HD-adapt),
    and holders that act while a bump is in flight: the lease must count a pending write that
    advertises a shorter interval from its issue on (HD-loss, schedule E)."""
    sim = Sim(500 + seed, slots=3, lat_ms=(0, 120), pause_p=0.02, pause_ms=1500, crash_p=0.0005,
              stall_p=0.02, stall_ms=1500)
    for node_id in range(1, 4):
        sim.spawn(lambda node_id=node_id: node(sim, node_id, interval_ms=100, rounds=120, stale_ok=True,
                                               act_while_writing=True), 0)
    sim.run(400_000)
    check_acts(sim)
    assert sim.stats["acquired"] >= 10, sim.stats
