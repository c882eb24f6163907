"""A whole diskhb cluster on one virtual clock: the real node cores and MMP guards over simulated
disks and links, with adversarial timing, from one seed (TigerBeetle's VOPR idea).

What is real: every node runs diskhb.core.node.NodeCore (liveness, region health, slot claim,
LEFT, the MMP guards of diskhb.mmp with their Disk Paxos ballots, encoded to and decoded from
real sector bytes) and each link receiver runs netpath.replay's ReplayGuard. What is simulated:
  disks    one shared device: heartbeat slots (kept as tuples: their byte format is tested
           elsewhere) and the MMP area (real bytes). Every request has its own latency; a write
           lands at a random moment between its issue and its completion (never later than
           write_land_max_ms after its issue, F1) and a hung one may complete much later or
           never; a read samples each sector at its own moment between submission and completion
           (F2). EIO, torn slot writes, whole-disk stalls of one node.
  links    one UDP-like link: delay, loss, duplication, reordering, partitions of any shape,
           replays of recorded packets (through each receiver's ReplayGuard).
  processes a node's daemon can freeze (SIGSTOP: its I/O in the kernel goes on, its threads do
           not), crash (its in-flight writes still land; it is gone once they have completed,
           F4), restart (new generation), leave cleanly. Its consumers hold resources through it
           and write (act) only while held, until the loss action or the lease enforcer (a
           separate process: not frozen with the daemon) has stopped them.
Invariants are checked as the run goes (tools.sim.invariants).
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections import deque
from dataclasses import dataclass, field

from diskhb.core import node as core
from diskhb.core import timing
from diskhb.core.types import BadSample, BeatBatch, Beat, SlotFlag
from diskhb.mmp import format as mf
from diskhb.mmp import guard as gd
from netpath.replay import ReplayGuard

from tools.sim.invariants import Checker, Violation

SECTOR = 512
SLOTS = 8  # node ids 1..SLOTS (ballot sectors per MMP block too)
RESOURCES = 2
UUID = bytes(range(1, 17))
TRACE_MAX = 4000
ENFORCER_BUDGET_MS = 250  # the sim's lease enforcer needs this to stop a hold's consumers
REPLAY_REBOOT_QUIET_MS = 3_000


@dataclass(frozen=True)
class Profile:
    """Cluster timing and how hostile the world is."""
    interval_ms: int
    dead_ms: int
    resource_intervals_ms: tuple[int, int]  # each node draws its interval per resource in this range
    io_ms: tuple[int, int] = (1, 15)  # usual latency range
    slow_p: float = 0.03  # a request that is slow (up to slow_ms)
    slow_ms: int = 3_000
    hang_p: float = 0.005  # a request that hangs (completes after up to hang_ms, or never)
    hang_ms: int = 30_000
    eio_p: float = 0.002
    torn_p: float = 0.002
    freeze_p_per_s: float = 0.02  # per node and simulated second
    freeze_ms: tuple[int, int] = (100, 25_000)
    crash_p_per_s: float = 0.01
    leave_p_per_s: float = 0.01
    partition_p_per_s: float = 0.02
    replay_p: float = 0.02  # a packet delivery that is a replay of an older one
    net: bool = True

    @property
    def io_timeout_ms(self) -> int:
        return timing.default_io_timeout_ms(self.interval_ms, self.dead_ms)

    @property
    def write_land_max_ms(self) -> int:
        return timing.write_land_max_ms(self.io_timeout_ms)


PROFILES = (
    Profile(200, 2000, (200, 1000)),
    Profile(500, 5000, (200, 5000)),
    Profile(1000, 8000, (200, 20_000)),
    Profile(200, 2000, (300, 2_000), net=False),
    Profile(500, 8000, (200, 20_000), slow_p=0.08, hang_p=0.02),
)


def mmp_layout() -> tuple[int, tuple[gd.BlockLocation, ...]]:
    span = (1 + SLOTS) * SECTOR
    blocks = tuple(gd.BlockLocation(f"sim block {k}", k * span, SECTOR, SLOTS, UUID, k) for k in range(RESOURCES))
    return RESOURCES * span, blocks


def fresh_mmp_area() -> bytearray:
    size, blocks = mmp_layout()
    data = bytearray(size)
    for k, loc in enumerate(blocks):
        clean = mf.SeqBlock(seq=mf.SEQ_CLEAN, epoch=0, holder_id=0, holder_generation=0, holder_name="",
                            resource=f"r{k}", device="sim", interval_ms=1000, wall_ms=0, uuid=UUID,
                            slot_count=SLOTS, sector_size=SECTOR)
        data[loc.base: loc.base + SECTOR] = mf.encode_seq_block(clean)
    return data


# -- one run ------------------------------------------------------------------------------------------


class World:
    def __init__(self, seed: int, *, nodes: int = 3, seconds: int = 30, profile: Profile | None = None,
                 script=None):
        if not 1 <= nodes <= SLOTS:
            raise ValueError(f"nodes must be in 1..{SLOTS}")
        self.seed = seed
        self.rng = random.Random(seed)
        self.profile = profile or self.rng.choice(PROFILES)
        self.end_ms = seconds * 1000
        self.now = 0
        self._heap: list = []
        self._seq = 0
        self.trace: deque[str] = deque(maxlen=TRACE_MAX)
        self._hash = hashlib.sha256()
        self.steps = 0
        self.slots: dict[int, tuple | None] = {i: None for i in range(1, SLOTS + 1)}  # node -> (gen, seq, flags, name) | "torn"
        self.mmp = fresh_mmp_area()
        self.mmp_size, self.blocks = mmp_layout()
        self.target = gd.TargetInfo("sim-disk", self.blocks, False)
        self.checker = Checker(self)
        self.partition: dict[int, int] = {}  # node -> group (links carry only within a group)
        self.history: list = []  # (time, sender, link packet) for replays
        self.script = script
        self.nodes = [SimNode(self, i + 1) for i in range(nodes)]
        if script is not None:
            script.setup(self)
        for n in self.nodes:
            n.boot(self.rng.randint(0, 300))
        if script is None:
            self._plan_faults()

    # -- the scheduler ---------------------------------------------------------------------------

    def at(self, t: int, fn, *args) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (max(t, self.now), self._seq, fn, args))

    def log(self, text: str) -> None:
        line = f"{self.now:>7} {text}"
        self.trace.append(line)
        self._hash.update(line.encode())

    @property
    def trace_hash(self) -> str:
        return self._hash.hexdigest()[:16]

    def run(self) -> "World":
        try:
            while self._heap and self._heap[0][0] <= self.end_ms:
                t, _, fn, args = heapq.heappop(self._heap)
                self.now = t
                fn(*args)
        except Violation as v:
            self.checker.violation = v
        return self

    # -- random faults ------------------------------------------------------------------------------

    def _plan_faults(self) -> None:
        p, rng = self.profile, self.rng
        seconds = self.end_ms // 1000
        for n in self.nodes:
            for s in range(seconds):
                t = s * 1000 + rng.randint(0, 999)
                r = rng.random()
                if r < p.freeze_p_per_s:
                    self.at(t, n.freeze, rng.randint(*p.freeze_ms))
                elif r < p.freeze_p_per_s + p.crash_p_per_s:
                    self.at(t, n.crash)
                elif r < p.freeze_p_per_s + p.crash_p_per_s + p.leave_p_per_s:
                    self.at(t, n.leave)
        for s in range(seconds):
            if rng.random() < p.partition_p_per_s:
                t = s * 1000 + rng.randint(0, 999)
                self.at(t, self._partition, rng.randint(500, 15_000))

    def _partition(self, length_ms: int) -> None:
        groups = {n.node_id: self.rng.randint(0, 1) for n in self.nodes}
        self.partition = groups
        self.log(f"net partition {groups} for {length_ms} ms")
        self.at(self.now + length_ms, self._heal)

    def _heal(self) -> None:
        self.partition = {}
        self.log("net healed")

    def linked(self, a: int, b: int) -> bool:
        return not self.partition or self.partition.get(a) == self.partition.get(b)

    # -- I/O latency --------------------------------------------------------------------------------

    def latency(self, node: "SimNode") -> tuple[int | None, bool]:
        """(completion delay or None for never, eio) of one request of `node`."""
        p, rng = self.profile, self.rng
        if self.script is not None:
            got = self.script.latency(self, node)
            if got is not None:
                return got
        if node.disk_stalled_until > self.now:
            return node.disk_stalled_until - self.now + rng.randint(*p.io_ms), False
        r = rng.random()
        if r < p.hang_p:
            return (None if rng.random() < 0.3 else rng.randint(p.slow_ms, p.hang_ms)), False
        if r < p.hang_p + p.slow_p:
            return rng.randint(p.io_ms[1], p.slow_ms), False
        if r < p.hang_p + p.slow_p + p.eio_p:
            return rng.randint(*p.io_ms), True
        return rng.randint(*p.io_ms), False

    def landing(self, issue: int, complete_delay: int | None) -> int:
        """F1: a write lands between its issue and its completion, and by write_land_max_ms."""
        bound = self.profile.write_land_max_ms if complete_delay is None else min(
            complete_delay, self.profile.write_land_max_ms)
        if self.script is not None:
            got = self.script.landing(self, issue, bound)
            if got is not None:
                return got
        return issue + self.rng.randint(0, max(0, bound))


# -- a node ----------------------------------------------------------------------------------------------


@dataclass
class Act:
    """A consumer writing a held resource: from the acquire reply to its stop."""
    resource: str
    epoch: int
    incarnation: int
    started: int
    stop_by: int | None = None  # the latest moment its stop can take effect (enforcer)


@dataclass
class Incarnation:
    number: int
    generation: int
    core: core.NodeCore
    running: bool = True  # the daemon process (False: crashed or exited)
    exited_at: int | None = None
    frozen_until: int = 0
    inbox: list = field(default_factory=list)
    step_at: int | None = None
    writes_in_flight: int = 0  # MMP and slot writes not completed yet
    requests: dict = field(default_factory=dict)  # request id -> ("acquire"|"release", resource)
    enforcer: dict = field(default_factory=dict)  # resource -> fire deadline
    left_published: bool = False
    crashed: bool = False
    slot_write_busy: bool = False
    slot_read_busy: bool = False
    mmp_in_flight: int = 0


class SimNode:
    def __init__(self, world: World, node_id: int):
        self.w = world
        self.node_id = node_id
        self.name = f"n{node_id}"
        self.inc: Incarnation | None = None
        self.incarnations = 0
        self.acts: dict[str, Act] = {}  # resource -> what this node's consumer does now
        self.disk_stalled_until = 0
        self.replay = ReplayGuard(reboot_quiet_ms=REPLAY_REBOOT_QUIET_MS)  # our receiver on the link
        self.intervals: dict[int, int] = {}  # resource index -> this node's interval for it
        self.rng = random.Random(world.rng.getrandbits(64))

    # -- process life ------------------------------------------------------------------------------

    def boot(self, at_ms: int) -> None:
        self.w.at(at_ms, self._start)

    def _start(self) -> None:
        w, p = self.w, self.w.profile
        self.incarnations += 1
        gen = self.rng.getrandbits(62) | 1
        regions = [core.RegionSpec("disk", "disk", True, "sim-disk")]
        if p.net:
            regions.append(core.RegionSpec("net", "net", False, "sim-net"))
        resources = {}
        lo, hi = p.resource_intervals_ms
        for k in range(RESOURCES):
            # each node holds each resource with its own interval (schedule B: 20 s and 1 s)
            interval = self.intervals.setdefault(k, self.rng.choice((lo, lo, hi, self.rng.randint(lo, hi))))
            budget = timing.loss_budget_ms(("kill",), kill_grace_ms=max(1, interval // 4), remount_timeout_ms=0,
                                           command_timeout_ms=0, mountpoint=True)
            budget = min(budget, interval - timing.MMP_WRITE_MIN_MS)
            resources[f"r{k}"] = core.ResourceSpec(f"r{k}", w.target, timing.MmpTiming(interval, budget), True,
                                                   "/mnt/sim")
        spec = core.NodeSpec(node_id=self.node_id, name=self.name, generation=gen, cluster="sim",
                             interval_ms=p.interval_ms, dead_ms=p.dead_ms, io_timeout_ms=p.io_timeout_ms,
                             regions=tuple(regions), resources=resources, default_target=w.target,
                             default_timing=timing.MmpTiming(1000, 0), lock_scope=None)
        c = core.NodeCore(spec, now_ms=w.now, rand=self.rng.randrange)
        self.inc = Incarnation(self.incarnations, gen, c)
        w.checker.started(self, self.inc)
        w.log(f"{self.name} starts generation {gen:#x}")
        self._schedule(w.now)
        self._plan_work()

    def freeze(self, length_ms: int) -> None:
        inc = self.inc
        if inc is None or not inc.running:
            return
        inc.frozen_until = max(inc.frozen_until, self.w.now + length_ms)
        self.w.log(f"{self.name} frozen for {length_ms} ms")
        self._schedule(inc.frozen_until)
        self._check_enforcers()

    def crash(self) -> None:
        inc = self.inc
        if inc is None or not inc.running:
            return
        self.w.log(f"{self.name} crashes (writes in flight: {inc.writes_in_flight})")
        inc.running = False
        inc.crashed = True
        self._maybe_exited()

    def leave(self) -> None:
        inc = self.inc
        if inc is None or not inc.running:
            return
        self.w.log(f"{self.name} asked to stop")
        self._stop_acts("the node leaves")
        inc.inbox.append(core.StopRequest())
        self._schedule(self.w.now)

    def _maybe_exited(self) -> None:
        """F4: a process whose writes are still in flight has not exited yet."""
        inc = self.inc
        if inc.running or inc.exited_at is not None or inc.writes_in_flight:
            return
        inc.exited_at = self.w.now
        self.w.log(f"{self.name} generation {inc.generation:#x} has exited")
        for resource in list(inc.enforcer):  # the pipe closes without "done": each enforcer fires
            self._enforcer_fires(resource, "the daemon exited")
        for resource in list(self.acts):
            self._stop_act(resource, self.w.now, "no daemon holds it any more")
        self.w.at(self.w.now + self.rng.randint(200, 3000), self._start)

    # -- the daemon's loop -------------------------------------------------------------------------

    def _schedule(self, t: int) -> None:
        inc = self.inc
        if inc is None or not inc.running:
            return
        t = max(t, self.w.now, inc.frozen_until)
        if inc.step_at is not None and inc.step_at <= t:
            return
        inc.step_at = t
        self.w.at(t, self._step, inc)

    def _step(self, inc: Incarnation) -> None:
        w = self.w
        if inc is not self.inc or not inc.running or inc.step_at != w.now:
            return
        inc.step_at = None
        if inc.frozen_until > w.now:
            self._schedule(inc.frozen_until)
            return
        obs, inc.inbox = inc.inbox, []
        if w.profile.net:
            obs.append(core.IoCompleted("net", "read", w.now, True, submitted_ms=w.now))
        w.steps += 1
        actions = inc.core.step(w.now, obs, wall_ms=w.now)
        for a in actions:
            self._act(inc, a)
        for ev in inc.core.drain_events():
            w.checker.event(self, inc, ev)
        if inc.running:
            self._schedule(inc.core.next_wakeup_ms() + self.rng.randint(0, 3))

    def _deliver(self, inc: Incarnation, obs) -> None:
        if inc is not self.inc or not inc.running:
            return
        inc.inbox.append(obs)
        self._schedule(self.w.now + self.rng.randint(0, 2))

    def _act(self, inc: Incarnation, a) -> None:
        w = self.w
        if isinstance(a, core.Publish):
            if a.beat.flags & SlotFlag.LEFT:
                w.checker.left(self, inc, a.region)
            if a.region == "disk":
                self._slot_write(inc, a.beat)
                self._slot_read(inc)
            else:
                self._send(inc, a.beat)
        elif isinstance(a, core.ReadOwnSlot):
            self._own_slot_read(inc)
        elif isinstance(a, core.MmpIo):
            self._mmp_io(inc, a.request)
        elif isinstance(a, core.Reply):
            self._reply(inc, a)
        elif isinstance(a, core.RunLoss):
            self._run_loss(inc, a)
        elif isinstance(a, core.Enforce):
            if a.what == "done":
                inc.enforcer.pop(a.resource, None)
            else:
                inc.enforcer[a.resource] = a.deadline_ms - ENFORCER_BUDGET_MS
                w.at(inc.enforcer[a.resource], self._enforcer_due, inc, a.resource)
        elif isinstance(a, core.Exit):
            w.log(f"{self.name} exits {a.code}: {a.reason}")
            inc.running = False
            self._maybe_exited()
        else:
            raise AssertionError(a)

    # -- the heartbeat slot ------------------------------------------------------------------------

    def _slot_write(self, inc: Incarnation, beat) -> None:
        w = self.w
        if inc.slot_write_busy:
            return
        inc.slot_write_busy = True
        inc.writes_in_flight += 1
        delay, eio = w.latency(self)
        issue = w.now
        inc.inbox.append(core.IoSubmitted("disk", "write", issue, beat.seq))
        value = (beat.generation, beat.seq, beat.flags, beat.name)
        if not eio:
            land = w.landing(issue, delay)
            torn = self.rng.random() < w.profile.torn_p
            w.at(land, self._slot_land, value, torn)
        if delay is not None:
            w.at(issue + delay, self._slot_written, inc, issue, beat.seq, not eio)

    def _slot_land(self, value: tuple, torn: bool) -> None:
        self.w.slots[self.node_id] = "torn" if torn else value
        if not torn:  # a torn slot is no beat (a missed one)
            self.w.checker.beat_landed(self, "disk", self.w.now, value)

    def _slot_written(self, inc: Incarnation, issue: int, seq: int, ok: bool) -> None:
        inc.slot_write_busy = False
        inc.writes_in_flight -= 1
        if not inc.running:
            self._maybe_exited()
            return
        self._deliver(inc, core.IoCompleted("disk", "write", self.w.now, ok, None if ok else "EIO", seq, issue))

    def _slot_read(self, inc: Incarnation) -> None:
        w = self.w
        if inc.slot_read_busy:
            return
        inc.slot_read_busy = True
        delay, eio = w.latency(self)
        sub = w.now
        inc.inbox.append(core.IoSubmitted("disk", "read", sub))
        if delay is None:
            return  # hung for ever: the read stays in flight
        box: dict[int, object] = {}
        for i in range(1, SLOTS + 1):  # F2: each sector at its own moment
            w.at(sub + self.rng.randint(0, delay), self._sample, box, i)
        w.at(sub + delay, self._slot_read_done, inc, sub, box, eio)

    def _sample(self, box: dict, i: int) -> None:
        box[i] = self.w.slots[i]

    def _slot_read_done(self, inc: Incarnation, sub: int, box: dict, eio: bool) -> None:
        inc.slot_read_busy = False
        if inc is not self.inc or not inc.running:
            return
        w = self.w
        w.checker.read_done(self, "disk", w.now - sub)
        obs: list = [core.IoCompleted("disk", "read", w.now, not eio, "EIO" if eio else None, submitted_ms=sub)]
        if not eio:
            ids, gens, seqs, flags, names = [], [], [], [], []
            for i in range(1, SLOTS + 1):
                v = box.get(i)
                if v is None:
                    continue
                if v == "torn":
                    if i != self.node_id:
                        obs.append(BadSample(i, "disk", "checksum mismatch (torn or corrupt write)"))
                    continue
                if i == self.node_id:
                    obs.append(core.OwnSlotRead("disk", v[0], v[1], v[2], v[3], True, True))
                    continue
                ids.append(i), gens.append(v[0]), seqs.append(v[1]), flags.append(v[2]), names.append(v[3])
            if ids:
                obs.append(BeatBatch("disk", ids, gens, seqs, flags, names, sub))
        for o in obs:
            self._deliver(inc, o)

    def _own_slot_read(self, inc: Incarnation) -> None:
        w = self.w
        if inc.slot_read_busy:
            return
        inc.slot_read_busy = True
        delay, _ = w.latency(self)
        inc.inbox.append(core.IoSubmitted("disk", "read", w.now))
        if delay is None:
            return
        w.at(w.now + delay, self._own_slot_done, inc, w.now)

    def _own_slot_done(self, inc: Incarnation, sub: int) -> None:
        inc.slot_read_busy = False
        v = self.w.slots[self.node_id]
        self._deliver(inc, core.IoCompleted("disk", "read", self.w.now, True, submitted_ms=sub))
        when = (sub, self.w.now)
        if v is None:
            self._deliver(inc, core.OwnSlotRead("disk", None, None, 0, "", True, False, *when))
        elif v == "torn":
            self._deliver(inc, core.OwnSlotRead("disk", None, None, 0, "", False, False, *when))
        else:
            self._deliver(inc, core.OwnSlotRead("disk", v[0], v[1], v[2], v[3], True, False, *when))

    # -- the link ------------------------------------------------------------------------------------

    def _send(self, inc: Incarnation, beat) -> None:
        w = self.w
        inc.inbox.append(core.IoSubmitted("net", "write", w.now, beat.seq))
        inc.inbox.append(core.IoCompleted("net", "write", w.now, True, None, beat.seq, w.now))
        packet = (self.node_id, beat.generation, beat.seq, beat.mono_ms, beat.flags, beat.name)
        w.history.append(packet)
        del w.history[:-200]
        for other in w.nodes:
            if other is self or not w.linked(self.node_id, other.node_id):
                continue
            r = self.rng.random()
            if r < 0.02:
                continue  # lost
            copies = 2 if r > 0.99 else 1  # duplicated
            for _ in range(copies):
                w.at(w.now + self.rng.randint(0, 8) + (40 if self.rng.random() < 0.05 else 0),
                     other.receive, packet, False)
            if w.history and self.rng.random() < w.profile.replay_p:  # someone replays an old packet
                old = self.rng.choice(w.history)
                if old[0] != other.node_id:
                    w.at(w.now + self.rng.randint(0, 50), other.receive, old, True)

    def receive(self, packet: tuple, replayed: bool) -> None:
        inc = self.inc
        if inc is None or not inc.running:
            return
        sender, gen, seq, mono, flags, name = packet
        if sender == self.node_id:
            return  # our own id: the sim never replays our own packets to us (netpath's own_id rule)
        if self.replay.check(self.w.now, sender, gen, seq, mono) is not None:
            return
        if not replayed:
            self.w.checker.beat_landed(self.w.nodes[sender - 1], f"net>{self.node_id}", self.w.now, (gen, seq, flags, name))
        self.w.checker.packet(self, packet, replayed)
        self._deliver(inc, Beat(sender, "net", gen, seq, flags, name))

    # -- MMP I/O ----------------------------------------------------------------------------------------

    def _mmp_io(self, inc: Incarnation, req: gd.IoRequest) -> None:
        w = self.w
        if req.op in ("lock", "unlock"):
            if req.op == "lock":
                self._deliver(inc, core.MmpIoDone(gd.IoResult(req.id, w.now, w.now)))
            return
        if inc.mmp_in_flight >= 4:
            self._deliver(inc, core.MmpIoDone(gd.IoResult(req.id, w.now, w.now, error="busy")))
            return
        delay, eio = w.latency(self)
        issue = w.now
        inc.mmp_in_flight += 1
        if req.op == "read":
            if delay is None:
                return
            box: dict[int, bytes] = {}
            for off in range(req.offset, req.offset + req.length, SECTOR):
                w.at(issue + self.rng.randint(0, delay), self._mmp_sample, box, off)
            w.at(issue + delay, self._mmp_read_done, inc, req, issue, box, eio)
            return
        if req.issue_by_ms is not None and issue > req.issue_by_ms:
            inc.mmp_in_flight -= 1
            self._deliver(inc, core.MmpIoDone(gd.IoResult(req.id, issue, issue, too_late=True)))
            return
        inc.writes_in_flight += 1
        if not eio:  # a write that fails with EIO never lands
            w.checker.mmp_write(self, inc, req, issue)
            w.at(w.landing(issue, delay), self._mmp_land, inc, req)
        if delay is not None:
            w.at(issue + delay, self._mmp_written, inc, req, issue, eio)

    def _mmp_sample(self, box: dict, off: int) -> None:
        box[off] = bytes(self.w.mmp[off: off + SECTOR])

    def _mmp_read_done(self, inc: Incarnation, req, issue: int, box: dict, eio: bool) -> None:
        inc.mmp_in_flight -= 1
        if eio:
            self._deliver(inc, core.MmpIoDone(gd.IoResult(req.id, issue, self.w.now, error="EIO")))
            return
        data = b"".join(box[off] for off in range(req.offset, req.offset + req.length, SECTOR))
        self._deliver(inc, core.MmpIoDone(gd.IoResult(req.id, issue, self.w.now, data=data)))

    def _mmp_land(self, inc: Incarnation, req) -> None:
        self.w.mmp[req.offset: req.offset + req.length] = req.data
        self.w.checker.mmp_landed(self, inc, req)

    def _mmp_written(self, inc: Incarnation, req, issue: int, eio: bool) -> None:
        inc.mmp_in_flight -= 1
        inc.writes_in_flight -= 1
        if not inc.running:
            self._maybe_exited()
            return
        self._deliver(inc, core.MmpIoDone(gd.IoResult(req.id, issue, self.w.now, error="EIO" if eio else None)))

    # -- the workload: consumers of resources ---------------------------------------------------------

    def _plan_work(self) -> None:
        inc = self.inc
        self.w.at(self.w.now + self.rng.randint(100, 4000), self._want, inc)

    def _want(self, inc: Incarnation) -> None:
        if inc is not self.inc or not inc.running or inc.frozen_until > self.w.now:
            if inc is self.inc and inc.running:
                self.w.at(inc.frozen_until + 1, self._want, inc)
            return
        free = [f"r{k}" for k in range(RESOURCES) if f"r{k}" not in self.acts
                and f"r{k}" not in inc.requests.values()]
        if free and not inc.core.phase.value.startswith(("leav", "publ")):
            resource = self.rng.choice(free)
            rid = 1_000_000 + self.rng.getrandbits(30)
            inc.requests[rid] = ("acquire", resource)
            wait = self.rng.choice((0, 2000, 10_000, 30_000))
            self.w.log(f"{self.name} asks for {resource} (wait {wait} ms)")
            self._deliver(inc, core.AcquireRequest(rid, resource, wait, False))
        self.w.at(self.w.now + self.rng.randint(100, 3000), self._want, inc)

    def _reply(self, inc: Incarnation, a: core.Reply) -> None:
        kind = inc.requests.pop(a.request_id, None)
        if kind is None:
            return
        what, resource = kind
        if what == "acquire" and a.answer.get("ok") and a.answer.get("note") != "already held by this daemon":
            epoch = a.answer["epoch"]
            self.w.log(f"{self.name} holds {resource} epoch {epoch}; its consumer acts")
            act = Act(resource, epoch, inc.number, self.w.now)
            self.w.checker.act_starts(self, inc, act)
            self.acts[resource] = act
            self.w.at(self.w.now + self.rng.randint(50, 8_000), self._done_with, inc, resource, epoch)
        elif what == "acquire":
            self.w.log(f"{self.name} refused {resource}: {a.answer.get('error', a.answer)}")

    def _done_with(self, inc: Incarnation, resource: str, epoch: int) -> None:
        act = self.acts.get(resource)
        if act is None or act.epoch != epoch or inc is not self.inc or not inc.running:
            return
        if inc.frozen_until > self.w.now:  # the consumer stops, but the daemon hears of it after the freeze
            pass
        self._stop_act(resource, self.w.now, "done with it")
        rid = 2_000_000 + self.rng.getrandbits(30)
        inc.requests[rid] = ("release", resource)
        self._deliver(inc, core.ReleaseRequest(rid, resource))

    def _stop_acts(self, why: str) -> None:
        for resource in list(self.acts):
            self._stop_act(resource, self.w.now, why)

    def _stop_act(self, resource: str, t: int, why: str) -> None:
        act = self.acts.pop(resource, None)
        if act is not None:
            self.w.log(f"{self.name} consumer of {resource} epoch {act.epoch} stops: {why}")
            self.w.checker.act_stops(self, act, t)

    # -- loss actions and the lease enforcer ------------------------------------------------------------

    def _run_loss(self, inc: Incarnation, a: core.RunLoss) -> None:
        spec = inc.core.spec.resources.get(a.resource)
        budget = spec.timing.loss_budget_ms if spec else 0
        took = self.rng.randint(0, max(0, budget - timing.LOSS_NOTICE_SLACK_MS)) if budget else 0
        self.w.log(f"{self.name} lost {a.resource} epoch {a.epoch}: {a.reason}")
        self.w.at(self.w.now + took, self._loss_done, inc, a, took)

    def _loss_done(self, inc: Incarnation, a: core.RunLoss, took: int) -> None:
        if inc.frozen_until > self.w.now:  # the loss thread is frozen with the daemon
            self.w.at(inc.frozen_until, self._loss_done, inc, a, took)
            return
        act = self.acts.get(a.resource)
        if act is not None and act.epoch == a.epoch:
            self._stop_act(a.resource, self.w.now, "its loss action ran")
        self._deliver(inc, core.LossDone(a.resource, a.epoch, "sim loss action", True))

    def _enforcer_due(self, inc: Incarnation, resource: str) -> None:
        deadline = inc.enforcer.get(resource)
        if deadline is None or deadline > self.w.now:
            return
        self._enforcer_fires(resource, "not renewed in time")

    def _check_enforcers(self) -> None:
        for resource, deadline in list(self.inc.enforcer.items()):
            self.w.at(deadline, self._enforcer_due, self.inc, resource)

    def _enforcer_fires(self, resource: str, why: str) -> None:
        inc = self.inc
        inc.enforcer.pop(resource, None)
        act = self.acts.get(resource)
        if act is not None:
            self.w.log(f"{self.name} enforcer of {resource} fires: {why}")
            self._stop_act(resource, self.w.now + ENFORCER_BUDGET_MS, f"its enforcer fired ({why})")
