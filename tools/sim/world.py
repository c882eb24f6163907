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
  quorum   (the QUORUM profiles, a quarter of the seeds: World.pick_profile) every daemon runs
           with a [quorum] of all daemon ids and self-fencing. Elected fencers and operators
           (`diskhb fence`) write the disk pill into the victim's mailbox (a disk write like the
           others); every slot-area read also reads the reader's own mailbox. A node that fences
           itself stops feeding its watchdog, which resets it (a crash; consumers gone at once)
           watchdog_s after its last feed: so does any freeze that long. BlockReadOnly stops
           its consumers' writes at once. Nodes may be cut off from the shared disk.
Invariants are checked as the run goes (tools.sim.invariants).

Scripted runs (tools.sim.schedules) use the same world with a script: it picks the profile, sets
up command-line guards that follow plans (tools.sim.procs.PlanStep), turns the random workload
and faults off, and may give any MMP request a Fate of its own (Script.fate, given the request):
its completion, and a write's landing, at set delays or when the script says (World.land,
World.complete: F1 checked). Unscripted runs draw nothing differently for it: same seed, same
trace hash as before scripts existed.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import random
from collections import deque
from dataclasses import dataclass, field

from diskhb.core import node as core
from diskhb.core import timing
from diskhb.core.quorum import QuorumSpec
from diskhb.core.types import BadSample, BeatBatch, Beat, SlotFlag
from diskhb.mailbox import IO_TIMEOUT_MS as PILL_IO_TIMEOUT_MS
from diskhb.mmp import format as mf
from diskhb.mmp import guard as gd
from diskhb.fencing.runner import ORDERS_MAX as PILLS_MAX
from diskhb.pill import METHOD as PILL
from diskhb.watchdog import check_timeout
from netpath.replay import ReplayGuard

from tools.sim.invariants import Checker, Violation

SECTOR = 512
SLOTS = 8  # node ids 1..SLOTS (ballot sectors per MMP block too)
RESOURCES = 2
UUID = bytes(range(1, 17))
TRACE_MAX = 4000
ENFORCER_BUDGET_MS = 250  # the sim's lease enforcer needs this to stop a hold's consumers
REPLAY_REBOOT_QUIET_MS = 3_000
PROCS = 5  # command-line guard processes (tools.sim.procs) beside the daemons, on the free node ids
_LEFT = int(SlotFlag.LEFT)  # a plain int: Flag arithmetic is slow, and every publish asks
_SF_RO = int(SlotFlag.SELF_FENCED | SlotFlag.READ_ONLY)  # self_fence SF5's promise (fencing FD8)
_UNFED = (core.Phase.FAILED, core.Phase.SELF_FENCED)  # the daemon feeds its watchdog in no other phase
NO_MESSAGE = (0, 0, 0, 0, 0)  # a mailbox never written: seq 0 (sender, code, target generation, seq, write)
SPIN_STEPS = 1000  # steps of one process at one simulated ms: its loop spins (see World.spinning)


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
    mmp_slow_p: float = 0.06  # MMP writes are slow or hang more often: that is where late landings bite
    mmp_hang_p: float = 0.02
    late_land_p: float = 0.5  # a slow or hung MMP write held in the I/O stack: lands late in its F1 window
    stall_p_per_s: float = 0.02  # a whole-disk stall of one node (every request of it waits until it ends)
    stall_ms: tuple[int, int] = (200, 6_000)
    resources: int = RESOURCES  # how many of the blocks the workload contends for
    # swarm testing: the kinds of MMP writes (World.write_kind) this profile may hold in the I/O
    # stack (World._hold), each enabled for a seed with its probability, each write of an enabled
    # kind then held with its own; a held write lands late within F1's window (World._held_land)
    hold: tuple[tuple[str, float, float], ...] = ()  # (kind, enabled for a seed with p, each write held with p)
    node_waits: tuple[int, ...] = (0, 2000, 10_000, 30_000)  # a daemon client's acquire --wait (ms)
    proc_waits: tuple[int, ...] = (0, 2000, 10_000, 30_000, 60_000)  # a command-line guard's --wait
    proc_any_interval: bool = True  # command-line guards also draw intervals from 200 ms to 20 s
    interval_ends: bool = False  # every actor's interval is one of resource_intervals_ms's two ends
    proc_work_ms: tuple[tuple[int, int], ...] = ((50, 5000), (5000, 20_000))  # how long their command runs
    node_work_ms: tuple[int, int] = (50, 8_000)  # how long a daemon's consumer acts
    run_x: int = 1  # a run of this profile lasts run_x times the run length asked for (--seconds)
    # when a held commit or CLEAN lands (World._hold): right after another actor's bump, with this
    # probability each time ("land-other"), or only after a bump under which an instance past the
    # bumping holder's epoch is begun, nothing accepted at it yet ("land-open": late in F1's window)
    stale_lands: tuple[str, float] = ("land-other", 0.3)
    # the quorum profiles (QUORUM): every daemon runs with a [quorum] of all daemon ids (1 vote
    # each) and self-fencing; elected fencers write the disk pill (SimNode._fence); a watchdog
    # resets a daemon watchdog_s after its last feed (so a freeze that long is a reset)
    quorum: bool = False
    watchdog_s: int = 0  # 0: no watchdog
    fence_requests_per_s: float = 0.0  # an operator's `diskhb fence NODE`, cluster-wide
    cut_p_per_s: float = 0.0  # per node and second: cut off from the shared disk (every request EIO)
    cut_ms: tuple[int, int] = (1000, 15_000)

    @property
    def io_timeout_ms(self) -> int:
        return timing.default_io_timeout_ms(self.interval_ms, self.dead_ms)

    @property
    def write_land_max_ms(self) -> int:
        return timing.write_land_max_ms(self.io_timeout_ms)


HOLD = (("commit", 0.4, 0.5), ("clean", 0.4, 0.5), ("prepare", 0.4, 0.15), ("past", 0.4, 0.6),
        ("accept", 0.4, 0.05), ("shorter", 0.4, 0.6), ("verify", 0.4, 0.8), ("p2read", 0.4, 0.3))
# (kind, enabled for a seed with p, each write or read of it held with p): World.write_kind, World._hold
_SWARM = dict(hold=HOLD, resources=1, freeze_p_per_s=0.01, crash_p_per_s=0.005, leave_p_per_s=0.005,
              partition_p_per_s=0.01, stall_p_per_s=0.01, hang_p=0.002, mmp_hang_p=0.01, mmp_slow_p=0.06,
              slow_ms=900, node_waits=(2000, 30_000, 60_000), proc_waits=(10_000, 30_000, 60_000))
SWARM = (
    # fast: short intervals and holds, claims race each other, abandoned ballots held (D)
    Profile(200, 30_000, (200, 500), proc_any_interval=False, proc_work_ms=((50, 1000), (1000, 4000)),
            node_work_ms=(50, 3000), **{**_SWARM, "hold": (*HOLD[:2], ("prepare", 1.0, 0.15), *HOLD[3:])}),
    # mixed intervals, adaptive ones rising and falling, shorter bumps held (E)
    Profile(500, 16_000, (200, 20_000), **{**_SWARM, "hold": (*HOLD[:5], ("shorter", 1.0, 0.6), *HOLD[6:])}),
    Profile(1000, 30_000, (1000, 16_000), proc_any_interval=False, **_SWARM),
)

# late: a commit or CLEAN given up on by its writer stays in the I/O stack (F1's whole window,
# 30-60 s here) and lands right after a later holder's bump, at a moment when a claimant that
# went past that holder's claim in progress has begun the next instance and given it up (its
# phase 1 held, landing when the holder commits, completing past its deadline): the ground of
# schedules A and C. Every kind of the five enabled in every seed; claimants wait long (the
# writer of the stale commit is still trying when it lands), holders hold long and their verify
# read is slow (they learn of the landing late); fewer of the other faults. Runs twice as long
# (Profile.run_x): the watches are long (2 x 8 s + 1 s: the ceiling of the claim gone past).
_LATE_HOLD = (("commit", 1.0, 0.25), ("clean", 1.0, 1.0), ("past", 1.0, 1.0), ("verify", 1.0, 1.0),
              ("p2read", 1.0, 0.5))
_LATE = {**_SWARM, "hold": _LATE_HOLD, "freeze_p_per_s": 0.005, "crash_p_per_s": 0.0025, "leave_p_per_s": 0.0025,
         "stall_p_per_s": 0.005, "partition_p_per_s": 0.005, "node_waits": (60_000, 120_000),
         "proc_waits": (60_000, 120_000), "proc_work_ms": ((5000, 30_000),), "node_work_ms": (2000, 30_000),
         "stale_lands": ("land-open", 0.5), "run_x": 2}
LATE = (
    # one interval for all (A: the stale commit's writer, the claimant that went past its claim
    # and the one that went past that claimant all watched with the same 8 s ceiling)
    Profile(1000, 60_000, (1000, 1000), proc_any_interval=False, **_LATE),
    # 700 ms and 5.6 s, nothing between (C: a claimant of 700 ms takes over from a 5.6 s holder
    # whose CLEAN is held; another that watched as long goes past its claim: its 5.6 s ceiling
    # is no longer than the watch); holds short or long
    Profile(700, 30_000, (700, 5600), proc_any_interval=False, interval_ends=True,
            **{**_LATE, "proc_work_ms": ((50, 3000), (5000, 30_000)), "node_work_ms": (50, 30_000)}),
)

# quorum: every daemon runs with a [quorum] of all daemon ids and self-fencing (node core N10-N14),
# its watchdog timeout FEED_INTERVALS intervals or more (diskhb.watchdog.check_timeout): a freeze
# longer than that resets the node. Elected fencers and operators (`diskhb fence`) write disk
# pills; the victim fences itself, and once it promises READ_ONLY its blocks are taken over at
# once (FP0). Nodes cut off from the shared disk (a lost SAN path: every request fails) lose
# quorum when their net partition is a minority too (SF2, SF3); long stalls leave MMP writes
# stuck (SF4). Freezes are shorter: some outlast the watchdog, some do not.
_QUORUM = dict(quorum=True, fence_requests_per_s=0.05, cut_p_per_s=0.015, cut_ms=(1000, 15_000),
               partition_p_per_s=0.04, freeze_ms=(100, 6000))
QUORUM = (
    Profile(200, 2000, (200, 1000), watchdog_s=1, **_QUORUM),
    # one hot resource: holders fenced by a pill, their block taken over at once (FP0)
    Profile(500, 5000, (200, 5000), watchdog_s=2, resources=1, node_waits=(2000, 10_000, 30_000), **_QUORUM),
    Profile(1000, 8000, (500, 8000), watchdog_s=4, stall_ms=(200, 12_000), **_QUORUM),
    # swarm's held writes (late landings within F1) under self-fencing: a self-fenced holder's
    # given-up writes may land until write_land_max_ms; READ_ONLY must wait for them (SF5)
    Profile(500, 8000, (200, 5000), watchdog_s=3, **{**_SWARM, **_QUORUM, "freeze_p_per_s": 0.01}),
)

PROFILES = (
    Profile(200, 2000, (200, 1000)),
    Profile(500, 5000, (200, 5000)),
    Profile(1000, 8000, (200, 20_000)),
    Profile(200, 2000, (300, 2_000), net=False),
    Profile(500, 8000, (200, 20_000), slow_p=0.08, hang_p=0.02),
    # long dead times (sanlock's, o2hb's are longer still): F1's window (write_land_max_ms =
    # dead_ms here) outlasts the guards' 10 s write deadline, so a write given up on may still land
    Profile(1000, 20_000, (200, 20_000)),
    Profile(500, 30_000, (200, 5_000), slow_p=0.08, hang_p=0.02),
    # hot spots: every actor after one resource, MMP writes often held in the I/O stack and
    # landing late within F1's window (8 s, 20 s): the ground of schedules A, C and D
    Profile(500, 8000, (200, 5000), mmp_slow_p=0.12, mmp_hang_p=0.06, late_land_p=0.8, resources=1),
    Profile(1000, 20_000, (200, 20_000), mmp_slow_p=0.12, mmp_hang_p=0.06, late_land_p=0.8, resources=1),
    # swarm (TigerBeetle's VOPR, Jepsen): one hot resource, short and mixed intervals, clients
    # that wait (retry while another holds), and per seed a random set of kinds of MMP I/O held
    # in the I/O stack, each write landing late in F1's window at the moment that hurts most
    # (World._hold): abandoned ballots after the writer's next attempt chose (D), bumps that
    # shorten the advertised interval completing late (E), commits and CLEANs over a later
    # holder's block and claims going past a claim in progress; the fast and the mixed ones
    # twice (they find D and E)
    *SWARM, *SWARM[:2],
    # late (A, C); the second twice (C)
    *LATE, LATE[1],
    # quorum, the disk pill and self-fencing (QUORUM, drawn apart: World.pick_profile)
    *QUORUM,
)
DRAWN = len(PROFILES) - len(QUORUM)  # the profiles a seed draws from as it always did (World.pick_profile)
QUORUM_SHARE = 0.25  # of the seeds run a quorum profile instead (the others: the same trace as before)


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


class Rng(random.Random):
    """random.Random with a cheaper randint (the simulator draws hundreds of thousands): the
    same seed gives the same draws; uniform up to float rounding, which no schedule minds."""

    def randint(self, a: int, b: int) -> int:
        return a + int(self.random() * (b - a + 1))


READ_SPAN_MAX_MS = 60_000  # no simulated read lasts longer (hangs: 30 s; stalls: 6 s); asserted


class SectorHistory:
    """What one MMP sector or heartbeat slot held over time, so that a read samples it at its
    own moment between its issue and its completion (F2) when it completes, with no event per
    sector. Bounded: landings older than READ_SPAN_MAX_MS are dropped, but for the one in force
    then (no read reaches further back)."""

    def __init__(self, initial):
        self.times, self.values = [-1], [initial]

    def land(self, t: int, value) -> None:
        self.times.append(t)
        self.values.append(value)
        if len(self.times) > 64 and self.times[1] < t - READ_SPAN_MAX_MS:
            k = bisect.bisect_right(self.times, t - READ_SPAN_MAX_MS) - 1
            del self.times[:k], self.values[:k]

    def sample(self, rng, issue: int, done: int):
        """No draw when nothing landed during the read."""
        assert done - issue <= READ_SPAN_MAX_MS, f"a read of {done - issue} ms: raise READ_SPAN_MAX_MS"
        if self.times[-1] <= issue:
            return self.values[-1]
        return self.values[bisect.bisect_right(self.times, issue + int(rng.random() * (done - issue + 1))) - 1]


# -- one run ------------------------------------------------------------------------------------------


HELD = "held"  # a Fate's landing or completion that the script brings about itself (World.land/complete)


@dataclass(eq=False)
class Fate:
    """What a script decides for one MMP request (Script.fate): its completion `complete` ms
    after its issue (None: never; HELD: when the script calls World.complete), and for a write
    its landing `land` ms after its issue (HELD: when the script calls World.land; None: at a
    random moment before its completion, as unscripted). The world fills in the rest."""
    complete: int | str | None = 1
    land: int | str | None = None
    eio: bool = False
    actor: object = None
    req: object = None
    issue: int | None = None
    landed_at: int | None = None
    completed_at: int | None = None
    _land: tuple | None = None  # (fn, *args) the world runs when it lands
    _done: tuple | None = None


class World:
    """One seeded run. Unscripted (script None): random profile, workload, faults and
    command-line guards (PROCS), all from the seed. Scripted (tools.sim.schedules): the script
    gives the profile, sets up the actors (command-line guards following plans; daemons without
    the random workload), and decides the fate of the MMP requests it picks (Script.fate);
    no random faults."""

    def __init__(self, seed: int, *, nodes: int = 3, seconds: int = 30, profile: Profile | None = None,
                 script=None, procs: int | None = None):
        from tools.sim.procs import SimProc

        if not (0 if script is not None else 1) <= nodes <= SLOTS:
            raise ValueError(f"nodes must be in 1..{SLOTS}")
        procs = min(PROCS, SLOTS - nodes) if procs is None else procs
        if nodes + procs > SLOTS:
            raise ValueError(f"nodes + command-line guards must be at most {SLOTS}")
        self.seed = seed
        self.rng = Rng(seed)
        self.profile = profile or self.pick_profile(seed, self.rng)
        # swarm: the kinds of MMP writes this seed holds (none for scripts: they pick their own)
        self.holding = {k: p for k, on, p in self.profile.hold if self.rng.random() < on} if script is None else {}
        self._held: list[HeldWrite] = []  # held writes not landed yet (World._hold)
        self._advertised: dict[tuple, tuple] = {}  # (block, holder id) -> (generation, epoch, interval) of its last seq write
        self._bumps: dict[int, object] = {}  # id(request) -> request: bumps in flight
        self._commits: dict[int, tuple] = {}  # id(request) -> (request, block, epoch): commits in flight
        self._committed: set[tuple[int, int]] = set()  # (block, epoch) of every commit that landed
        self._after_p2: set = set()  # actors whose phase-2 ballot write was issued, until their next full read
        self._held_ballots: dict[tuple[int, int], int] = {}  # (block, node) -> instance of its last held phase 1 landed
        self.end_ms = seconds * 1000 * (self.profile.run_x if script is None else 1)
        self.now = 0
        self._heap: list = []
        self._seq = 0
        self.trace: deque[str] = deque(maxlen=TRACE_MAX)
        self._hash = hashlib.sha256()
        self.steps = 0
        self.slots: dict[int, tuple | None] = {i: None for i in range(1, SLOTS + 1)}  # node -> (gen, seq, flags, name) | "torn"
        self.written_slots: set[int] = set()
        self.mmp = fresh_mmp_area()
        # every landing of a slot or MMP sector, as (times, values) per slot / sector offset: a
        # read samples each sector at its own moment when it completes (F2), with no event per sector
        self._slot_hist: dict[int, SectorHistory] = {}
        self._mmp_hist: dict[int, SectorHistory] = {}
        # mailboxes (node core N12): node id -> (sender, code, target generation, seq, write
        # number: a new write changes the sector even with the same fields) or "torn"
        self.mailboxes: dict[int, tuple | str] = {}
        self._mbox_hist: dict[int, SectorHistory] = {}
        self.pill_writes = 0
        self.mmp_size, self.blocks = mmp_layout()
        self.target = gd.TargetInfo("sim-disk", self.blocks, False)
        self.checker = Checker(self)
        self.partition: dict[int, int] = {}  # node -> group (links carry only within a group)
        self.history: list = []  # (time, sender, link packet) for replays
        self.script = script
        self._fates: dict[int, tuple] = {}  # id(request) -> (request, Fate): scripted requests in flight
        self.nodes = [SimNode(self, i + 1) for i in range(nodes)]
        self.procs: list = []
        if script is not None:
            script.setup(self)  # may add procs (SimProc with a plan)
        for n in self.nodes:
            n.boot(self.rng.randint(0, 300))
        if script is None:
            self.procs = [SimProc(self, nodes + 1 + i) for i in range(procs)]
            self._plan_faults()

    @staticmethod
    def pick_profile(seed: int, rng: random.Random) -> Profile:
        """A seed's profile: drawn from the first DRAWN profiles with the seed's own stream, the
        one draw every seed made before QUORUM existed (so the rest of that stream, and the trace
        of every seed that keeps its profile, stay the same); then a stream of its own says
        whether this seed runs a quorum profile instead (QUORUM_SHARE of the seeds)."""
        profile = rng.choice(PROFILES[:DRAWN])
        side = random.Random(f"quorum profile of seed {seed}")  # a str seed: the same on every run
        if side.random() < QUORUM_SHARE:
            profile = side.choice(QUORUM)
        return profile

    # -- the scheduler ---------------------------------------------------------------------------

    def at(self, t: int, fn, *args) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t if t > self.now else self.now, self._seq, fn, args))

    def log(self, text: str) -> None:
        line = f"{self.now:>7} {text}"
        self.trace.append(line)
        self._hash.update(line.encode())

    @property
    def trace_hash(self) -> str:
        return self._hash.hexdigest()[:16]

    def run(self) -> "World":
        heap, pop, end = self._heap, heapq.heappop, self.end_ms
        try:
            while heap and heap[0][0] <= end:
                t, _, fn, args = pop(heap)
                self.now = t
                fn(*args)
        except Violation as v:
            self.checker.violation = v
        return self

    # -- random faults ------------------------------------------------------------------------------

    def _plan_faults(self) -> None:
        p, rng = self.profile, self.rng
        seconds = self.end_ms // 1000
        for n in [*self.nodes, *self.procs]:
            for s in range(seconds):
                t = s * 1000 + rng.randint(0, 999)
                r = rng.random()
                if r < p.freeze_p_per_s:
                    self.at(t, n.freeze, rng.randint(*p.freeze_ms))
                elif r < p.freeze_p_per_s + p.crash_p_per_s:
                    self.at(t, n.crash)
                elif r < p.freeze_p_per_s + p.crash_p_per_s + p.leave_p_per_s and hasattr(n, "leave"):
                    self.at(t, n.leave)
                elif p.freeze_p_per_s + p.crash_p_per_s + p.leave_p_per_s <= r < \
                        p.freeze_p_per_s + p.crash_p_per_s + p.leave_p_per_s + p.stall_p_per_s:
                    self.at(t, self._stall, n, rng.randint(*p.stall_ms))
                elif p.cut_p_per_s and 0 <= r - (p.freeze_p_per_s + p.crash_p_per_s + p.leave_p_per_s
                                                 + p.stall_p_per_s) < p.cut_p_per_s:
                    self.at(t, self._cut, n, rng.randint(*p.cut_ms))
        for s in range(seconds):
            if rng.random() < p.partition_p_per_s:
                t = s * 1000 + rng.randint(0, 999)
                self.at(t, self._partition, rng.randint(500, 15_000))
        if p.fence_requests_per_s:
            for s in range(seconds):
                if rng.random() < p.fence_requests_per_s:
                    self.at(s * 1000 + rng.randint(0, 999), self._operator_fence)

    def _stall(self, n, length_ms: int) -> None:
        n.disk_stalled_until = max(n.disk_stalled_until, self.now + length_ms)
        self.log(f"{n.name}'s disk stalls for {length_ms} ms")

    def _cut(self, n, length_ms: int) -> None:
        n.disk_cut_until = max(n.disk_cut_until, self.now + length_ms)
        self.log(f"{n.name} is cut off from the disk for {length_ms} ms")

    def _operator_fence(self) -> None:
        """`diskhb fence NODE` (no --force) on a random running daemon, naming another daemon node."""
        live = [n for n in self.nodes if n.inc is not None and n.inc.running]
        if not live or len(self.nodes) < 2:
            return
        n = self.rng.choice(live)
        n.fence_request(self.rng.choice([m.node_id for m in self.nodes if m is not n]))

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

    # -- sectors and their history (F2) ----------------------------------------------------------------

    def land_slot(self, node_id: int, value) -> None:
        self.slots[node_id] = value
        self.written_slots.add(node_id)
        self._slot_hist.setdefault(node_id, SectorHistory(None)).land(self.now, value)

    def read_slot(self, rng, node_id: int, issue: int, done: int):
        """F2: slot node_id as a read from issue to done saw it (None: not written by then)."""
        return self._slot_hist[node_id].sample(rng, issue, done)

    def land_mmp(self, offset: int, data: bytes) -> None:
        for off in range(offset, offset + len(data), SECTOR):
            if off not in self._mmp_hist:
                self._mmp_hist[off] = SectorHistory(bytes(self.mmp[off: off + SECTOR]))
            self._mmp_hist[off].land(self.now, bytes(data[off - offset: off - offset + SECTOR]))
        self.mmp[offset: offset + len(data)] = data

    def read_mmp(self, rng, offset: int, length: int, issue: int, done: int) -> bytes:
        """F2: each sector as it was at its own random moment between issue and done."""
        out = []
        for off in range(offset, offset + length, SECTOR):
            h = self._mmp_hist.get(off)
            # never written since the start: as it is
            out.append(bytes(self.mmp[off: off + SECTOR]) if h is None else h.sample(rng, issue, done))
        return b"".join(out)

    def land_mailbox(self, node_id: int, value) -> None:
        self.mailboxes[node_id] = value
        self._mbox_hist.setdefault(node_id, SectorHistory(NO_MESSAGE)).land(self.now, value)

    def read_mailbox(self, rng, node_id: int, issue: int, done: int):
        """F2, like a slot: the mailbox of node_id as a read from issue to done saw it."""
        h = self._mbox_hist.get(node_id)
        return NO_MESSAGE if h is None else h.sample(rng, issue, done)

    # -- I/O latency --------------------------------------------------------------------------------

    def spinning(self, actor, inc, wake: int) -> int:
        """When a process steps next, given the wake-up its loop asked for. A loop that asks to
        run again at once, again and again without the clock moving, spins (a busy loop: a bug
        of what it runs); a real iteration takes time, so after SPIN_STEPS steps at one
        simulated ms each of its steps takes 1 ms until it asks for a later wake-up (logged,
        counted in stats "spins"): the run goes on instead of hanging."""
        if wake > self.now:
            inc.spin_steps = 0
            return wake
        if inc.spin_steps >= SPIN_STEPS:
            return self.now + 1
        if inc.spin_ms != self.now:
            inc.spin_ms, inc.spin_steps = self.now, 0
        inc.spin_steps += 1
        if inc.spin_steps < SPIN_STEPS:
            return wake
        self.checker.stats["spins"] += 1
        self.log(f"{actor.name} spins: {SPIN_STEPS} steps at {self.now} ms, each asking to run again at once")
        return self.now + 1

    def latency(self, node: "SimNode", mmp_write: bool = False, req=None) -> tuple[int | None, bool]:
        """(completion delay or None for never, eio) of one request of `node` (`req`: an MMP
        request, which a script may give a Fate of its own: schedule_write then follows it)."""
        p, rng = self.profile, self.rng
        if self.script is not None and req is not None and not (
                req.op == "write" and req.issue_by_ms is not None and self.now > req.issue_by_ms):  # not issued
            fate = self.script.fate(self, node, req)
            if fate is not None:
                fate.actor, fate.req, fate.issue = node, req, self.now
                if req.op == "write":
                    self._fates[id(req)] = (req, fate)
                return (None if fate.complete == HELD else fate.complete), fate.eio
        if node.disk_cut_until > self.now:
            return rng.randint(*p.io_ms), True  # no path to the disk: fails, never lands
        if node.disk_stalled_until > self.now:
            return node.disk_stalled_until - self.now + rng.randint(*p.io_ms), False
        if mmp_write and self.holding and req is not None and not (
                req.issue_by_ms is not None and self.now > req.issue_by_ms) and self._hold(node, req):
            return None, False  # schedule_write follows its Fate
        if "p2read" in self.holding and req is not None and req.op == "read" and req.length > SECTOR \
                and node in self._after_p2:
            self._after_p2.discard(node)
            if self._accepted(node, req.offset) and rng.random() < self.holding["p2read"]:
                # a claimant's read after its phase 2 is slow: its claim stands accepted, not
                # committed, while others' watches end (they go past it, CL2: schedule C's Q)
                self.checker.stats["held_p2read"] += 1
                return rng.randint(200, 1500), False
        if "verify" in self.holding and req is not None and req.op == "read" and req.length == SECTOR \
                and self._overwritten(node, req.offset) and rng.random() < self.holding["verify"]:
            # the verify read of a holder whose block was overwritten completes late: it learns late
            self.checker.stats["held_verify"] += 1
            left = max(1, req.deadline_ms - self.now - 1)
            return rng.randint(left - left // 4, left), False
        hang_p, slow_p = (p.mmp_hang_p, p.mmp_slow_p) if mmp_write else (p.hang_p, p.slow_p)
        r = rng.random()
        if r < hang_p:
            return (None if rng.random() < 0.3 else rng.randint(p.slow_ms, p.hang_ms)), False
        if r < hang_p + slow_p:
            return rng.randint(p.io_ms[1], p.slow_ms), False
        if r < hang_p + slow_p + p.eio_p:
            return rng.randint(*p.io_ms), True
        return rng.randint(*p.io_ms), False

    def landing(self, issue: int, complete_delay: int | None, mmp: bool = False) -> int:
        """F1: a write lands between its issue and its completion, and by write_land_max_ms.
        An MMP write that is slow or hangs is often held in the I/O stack until the stall
        clears: late_land_p of them land in the last quarter of that window."""
        p = self.profile
        bound = max(0, p.write_land_max_ms if complete_delay is None else min(complete_delay, p.write_land_max_ms))
        if mmp and (complete_delay is None or complete_delay > p.io_ms[1]) and self.rng.random() < p.late_land_p:
            return issue + self.rng.randint(bound - bound // 4, bound)
        return issue + self.rng.randint(0, bound)

    def schedule_write(self, actor, req, issue: int, delay: int | None, eio: bool, land: tuple, done: tuple) -> None:
        """An MMP write issued: its landing (unless eio) and its completion, as `latency` said, or
        as the script's Fate says. land/done: (fn, *args) to run then."""
        if self.holding:
            land = (self._landed, actor, req, land)
        got = self._fates.pop(id(req), None) if self._fates else None
        if got is None or got[0] is not req:
            if not eio:
                self.at(self.landing(issue, delay, mmp=True), *land)
            if delay is not None:
                self.at(issue + delay, *done)
            return
        fate = got[1]
        fate.issue, fate._land, fate._done = issue, (None if eio else land), done
        if not eio:
            if fate.land is None:
                self.land(fate, self.landing(issue, delay))
            elif fate.land != HELD:
                self.land(fate, issue + fate.land)
        if fate.complete not in (None, HELD):
            self.complete(fate, issue + fate.complete)

    # -- swarm: writes held in the I/O stack, by kind ------------------------------------------------

    def write_kind(self, req) -> tuple[str | None, int | None]:
        """What an MMP write is, from its bytes (and the disk), and for a bump the interval its
        holder's previous write advertised: a seq block "commit" (the first write of a holder's
        epoch), "bump" or "shorter" (a bump advertising a shorter interval than the holder's
        previous write), "clean" (a release); a ballot "accept" (phase 2: bal == mbal), "past"
        (phase 1 of a claimant that went past a live claim in progress, CL2) or "prepare" (any
        other phase 1). Remembers what each seq write advertised (one entry per block and holder)."""
        span = (1 + SLOTS) * SECTOR
        base, rel = req.offset - req.offset % span, req.offset % span
        try:
            if rel == 0:
                b = mf.decode_seq_block(req.data)
                if b is None or b.state == "fsck":
                    return None, None
                if b.state == "clean":
                    return "clean", None
                prev = self._advertised.get((base, b.holder_id))
                old = prev[2] if prev is not None and prev[:2] == (b.holder_generation, b.epoch) else None
                self._advertised[(base, b.holder_id)] = (b.holder_generation, b.epoch, b.interval_ms)
                if old is None:
                    self._commits[id(req)] = (req, base, b.epoch)
                return ("commit" if old is None else "shorter" if b.interval_ms < old else "bump"), old
            b = mf.decode_ballot(req.data, expect_node_id=rel // SECTOR)
            if b is None or b.bal == b.mbal:
                return (None if b is None else "accept"), None
            seq = mf.decode_seq_block(bytes(self.mmp[base: base + SECTOR]))
            if b.lver <= (seq.epoch if seq is not None else 0) + 1:
                return "prepare", None
            # "past": past a claim in progress (accepted at lver - 1 above the block's epoch)
            # whose commit is not held here (a live claim: it will hold) and has not landed yet
            # (a landed one was overwritten since: that claimant holds, or held, under it)
            if (base, b.lver - 1) in self._committed:
                return "prepare", None
            for i in range(1, SLOTS + 1):
                o = mf.decode_ballot(bytes(self.mmp[base + i * SECTOR: base + (i + 1) * SECTOR]), expect_node_id=i)
                if o is not None and o.lver == b.lver - 1 and o.inp is not None and i != b.node_id and not any(
                        h.kind == "commit" and h.base == base and h.actor.node_id == i for h in self._held):
                    return "past", None
        except mf.BlockError:
            return None, None
        return "prepare", None

    def _open_above(self, base: int) -> bool:
        """Whether the ballots of the block at `base` show an instance past its seq block's epoch
        begun by a phase-1 write the I/O stack held (its writer gave that attempt up: past its
        deadline) and nothing accepted at it (Profile.stale_lands "land-open")."""
        try:
            seq = mf.decode_seq_block(bytes(self.mmp[base: base + SECTOR]))
            ballots = [mf.decode_ballot(bytes(self.mmp[base + i * SECTOR: base + (i + 1) * SECTOR]), expect_node_id=i)
                       for i in range(1, SLOTS + 1)]
        except mf.BlockError:
            return False
        ballots = [b for b in ballots if b is not None]
        top = max((b.lver for b in ballots), default=0)
        return seq is not None and top > seq.epoch and not any(b.lver == top and b.inp is not None for b in ballots) \
            and any(b.lver == top and self._held_ballots.get((base, b.node_id)) == top for b in ballots)

    def _accepted(self, actor, offset: int) -> bool:
        """Whether `actor`'s ballot in the block at `offset` accepted a claim past its epoch."""
        span = (1 + SLOTS) * SECTOR
        if offset % span or actor.node_id > SLOTS:
            return False
        pos = offset + actor.node_id * SECTOR
        try:
            b = mf.decode_ballot(bytes(self.mmp[pos: pos + SECTOR]), expect_node_id=actor.node_id)
            seq = mf.decode_seq_block(bytes(self.mmp[offset: offset + SECTOR]))
        except mf.BlockError:
            return False
        return b is not None and b.inp is not None and b.bal == b.mbal and b.lver > (seq.epoch if seq else 0)

    def _overwritten(self, actor, offset: int) -> bool:
        """Whether `actor` acts on the resource of the seq block at `offset` (a read of that
        block is its verify) while the block names someone else (a late landing overwrote it)."""
        span = (1 + SLOTS) * SECTOR
        if offset % span or f"r{offset // span}" not in actor.acts:
            return False
        try:
            b = mf.decode_seq_block(bytes(self.mmp[offset: offset + SECTOR]))
        except mf.BlockError:
            return True
        return b is None or b.state != "held" or b.holder_id != actor.node_id

    def _hold(self, actor, req) -> bool:
        """Swarm: whether this MMP write of `actor`, just issued, is held in the I/O stack (its
        Fate then says when it lands and completes, within F1: between its issue and its
        completion, by write_land_max_ms after its issue). By kind:
          commit, clean  given up on by the writer (it lands after the request's deadline), it
                         lands right after another actor's bump landed on the block (that later
                         holder learns of it only at its next verify: schedules A, C; with
                         Profile.stale_lands "land-open" only when an instance past that
                         holder's is begun by a held phase 1 and nothing is accepted at it:
                         World._open_above), or late in its window (one landing per bump); it
                         completes just after it landed;
          prepare, accept  completes past its deadline (the writer gives it up, GD1); lands when
                         the writer issues its next seq write to the block (its next attempt
                         chose: schedule D), or (drawn per write) when another actor issues one
                         (its commit check has read the ballots: the open instance of A and C),
                         or late in its window; "past" ones (any number of them at a time)
                         complete half the time within 2 s of the deadline (their writer may
                         claim again: schedule A's P);
          shorter        lands at once and completes late, between the classic waits of its
                         interval and of the previous one (schedule E).
        A commit issued right after it made one of its own old ballots land is slow to land
        (D: a rival's whole ballot fits before it)."""
        p, rng, now = self.profile, self.rng, self.now
        kind, old = self.write_kind(req)
        span = (1 + SLOTS) * SECTOR
        base = req.offset - req.offset % span
        bound = p.write_land_max_ms
        own_landed = False
        if kind in ("bump", "shorter"):
            self._bumps[id(req)] = req
        elif kind == "accept":
            self._after_p2.add(actor)
        if kind in ("commit", "bump", "shorter", "clean") and self._held:
            own_landed = self._trigger("issue", actor, base)
        if own_landed and kind == "commit":
            land = rng.randint(30, 440)
            self._fates[id(req)] = (req, Fate(complete=land + rng.randint(1, 40), land=land, actor=actor, req=req,
                                              issue=now))
            return True
        if kind not in self.holding or (kind != "past" and any(h.kind == kind and h.base == base for h in self._held)) \
                or rng.random() >= self.holding[kind]:
            return False  # one held write of a kind per block at a time (but for claims going past): the others go on
        fate = Fate(complete=HELD, land=HELD, actor=actor, req=req, issue=now)
        if kind == "shorter":
            lo, hi = timing.classic_wait_ms(mf.decode_seq_block(req.data).interval_ms), timing.classic_wait_ms(old)
            fate.land, fate.complete = rng.randint(0, min(5, bound)), rng.randint(lo, max(lo, hi))
        elif kind in ("commit", "clean"):
            lo = max(0, req.deadline_ms - now)
            if lo >= bound:
                return False
            trigger, q = p.stale_lands
            until = rng.randint(lo, bound) if trigger == "land-other" else rng.randint(max(lo, bound - bound // 4), bound)
            self._held.append(HeldWrite(fate, base, actor, kind, now + lo, now + until, None, (trigger,), q))
        else:
            # past its deadline: the writer gives it up (it never accepts at that instance); a
            # "past" one often completes soon after (the writer may claim again then: schedule A's P)
            complete = req.deadline_ms - now + rng.randint(1, max(1, bound if kind != "past" or rng.random() < 0.5
                                                                    else min(bound, 2000)))
            last = min(bound, complete)
            first = min(last, req.deadline_ms - now + 1) if rng.random() < 0.5 else last - last // 4
            trigger = "issue-other" if kind == "past" else rng.choice(("issue-own", "issue-own", "issue-other"))
            self._held.append(HeldWrite(fate, base, actor, kind, now, now + rng.randint(first, last),
                                        now + complete, (trigger,), 1.0 if kind == "past" else 0.5))
        if fate.land == HELD:
            self.at(self._held[-1].until, self._held_land, self._held[-1])
        self._fates[id(req)] = (req, fate)
        self.checker.stats[f"held_{kind}"] += 1
        return True

    def _trigger(self, event: str, actor, base: int) -> bool:
        """A seq write of `actor` to the block at `base` was issued or landed: held writes that
        wait for it land now (with their probability). True if one of actor's own landed."""
        own_landed, is_open = False, None
        for h in list(self._held):
            if h.base != base or self.now < h.lo or h.fate.landed_at is not None:
                continue
            what = f"{event}-{'own' if h.actor is actor else 'other'}"
            if what == "land-other" and "land-open" in h.triggers:
                if is_open is None:
                    is_open = self._open_above(base)
                if is_open:
                    what = "land-open"
            if what in h.triggers and (what == "issue-own" or self.rng.random() < h.q):
                self._held_land(h, self.now + 1)
                self.log(f"{h.actor.name}'s held {h.kind} write lands ({what})")
                own_landed = own_landed or h.actor is actor
                if event == "land":
                    break  # one at a time over a holder's bump: the next one would only cover it
        return own_landed

    def _landed(self, actor, req, land: tuple) -> None:
        land[0](*land[1:])
        got = self._commits.pop(id(req), None)
        if got is not None and got[0] is req:
            self._committed.add(got[1:])
        if self._bumps.get(id(req)) is req:
            del self._bumps[id(req)]
            if self._held:  # right after a holder's bump: it learns of what lands next at its next verify
                self._trigger("land", actor, req.offset)

    def _held_land(self, h: "HeldWrite", t: int | None = None) -> None:
        fate = h.fate
        if fate.landed_at is not None or fate._land is None:
            return
        self._held.remove(h)
        if h.kind in ("prepare", "past"):
            b = mf.decode_ballot(fate.req.data, expect_node_id=(fate.req.offset - h.base) // SECTOR)
            self._held_ballots[(h.base, b.node_id)] = b.lver
        self.land(fate, min(self.now if t is None else t, h.until))
        self.complete(fate, fate.landed_at + self.rng.randint(1, 30) if h.complete_at is None else
                      max(h.complete_at, fate.landed_at))

    def land(self, fate: Fate, t: int) -> None:
        """A scripted write lands at t: F1 holds (between its issue and its completion, by
        write_land_max_ms after its issue), or the script is wrong."""
        assert fate._land is not None and fate.landed_at is None, "a write lands once (and not after EIO)"
        assert fate.issue <= t <= fate.issue + self.profile.write_land_max_ms, \
            f"F1: a write lands by write_land_max_ms ({self.profile.write_land_max_ms}) after its issue ({fate.issue})"
        assert fate.completed_at is None or t <= fate.completed_at, "F1: a write lands before its completion"
        fate.landed_at = max(t, self.now)
        self.at(fate.landed_at, *fate._land)

    def complete(self, fate: Fate, t: int) -> None:
        assert fate.completed_at is None and fate.issue is not None
        assert fate._land is None or fate.landed_at is not None, "F1: a write lands before its completion"
        assert t >= fate.landed_at if fate.landed_at is not None else True
        fate.completed_at = max(t, self.now)
        self.at(fate.completed_at, *fate._done)


@dataclass(eq=False)
class HeldWrite:
    """A write World._hold holds in the I/O stack: it lands when one of `triggers` happens on
    its block at or after `lo` (with probability q each time), or at `until` at the latest
    (within F1), and completes at complete_at (None: just after it landed)."""
    fate: Fate
    base: int
    actor: object
    kind: str
    lo: int
    until: int
    complete_at: int | None
    triggers: tuple[str, ...]
    q: float


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
    requests: dict = field(default_factory=dict)  # request id -> ("acquire"|"release", resource) | ("fence", node)
    enforcer: dict = field(default_factory=dict)  # resource -> fire deadline
    left_published: bool = False
    crashed: bool = False
    slot_write_busy: bool = False
    slot_read_busy: bool = False
    mmp_in_flight: int = 0
    spin_ms: int = -1  # World.spinning
    spin_steps: int = 0
    wakes: set = field(default_factory=set)  # the moments of its queued wake-ups (Actor._schedule)
    due_ms: int = -1  # the core's last asked wake-up, and how late the loop wakes for it
    due_late_ms: int = 0
    slot_ok_ms: int | None = None  # when a slot write of this incarnation first completed without error
    mailbox_seen: object = None  # what its last slot-area read found in its mailbox (None: no read yet)
    fed_ms: int = 0  # its watchdog's last feed
    self_fenced_at: int | None = None  # when it emitted SelfFence
    pills: int = 0  # pill writes it runs (diskhb.pill: at most THREADS_MAX)
    mmp_writes: dict = field(default_factory=dict)  # quorum profiles: MMP write id -> issue, until it completes


class Actor:
    """What a daemon (SimNode) and a command-line guard (tools.sim.procs.SimProc) share: one
    process at a time (self.inc, with step_at, frozen_until, running) whose loop the world's
    scheduler wakes, at most one pending wake-up each."""

    def _schedule(self, t: int) -> None:
        inc = self.inc
        if inc is None or not inc.running:
            return
        now, frozen = self.w.now, inc.frozen_until
        if t < now:
            t = now
        if t < frozen:
            t = frozen
        if inc.step_at is not None and inc.step_at <= t:
            return
        inc.step_at = t
        if t not in inc.wakes:  # an earlier wake-up at the same moment is still queued: it serves
            inc.wakes.add(t)
            self.w.at(t, self._step, inc)

    def _woken(self, inc) -> bool:
        """Whether this wake-up runs the loop now: it is the current process's pending one, and
        the process is not frozen (then it runs once the freeze ends)."""
        inc.wakes.discard(self.w.now)
        if inc is not self.inc or not inc.running or inc.step_at != self.w.now:
            return False
        inc.step_at = None
        if inc.frozen_until > self.w.now:
            self._schedule(inc.frozen_until)
            return False
        return True


class SimNode(Actor):
    def __init__(self, world: World, node_id: int):
        self.w = world
        self.node_id = node_id
        self.name = f"n{node_id}"
        self.inc: Incarnation | None = None
        self.incarnations = 0
        self.acts: dict[str, Act] = {}  # resource -> what this node's consumer does now
        self.stopping: dict[str, tuple[Act, int]] = {}  # resource -> a consumer being killed, and by when
        self.disk_stalled_until = 0
        self.disk_cut_until = 0
        self.replay = ReplayGuard(reboot_quiet_ms=REPLAY_REBOOT_QUIET_MS)  # our receiver on the link
        self.intervals: dict[int, int] = {}  # resource index -> this node's interval for it
        self.rng = Rng(world.rng.getrandbits(64))

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
            interval = self.intervals.setdefault(k, self.rng.choice((lo, hi) if p.interval_ends else
                                                                    (lo, lo, hi, self.rng.randint(lo, hi))))
            budget = timing.loss_budget_ms(("kill",), kill_grace_ms=max(1, interval // 4), remount_timeout_ms=0,
                                           command_timeout_ms=0, mountpoint=True)
            budget = min(budget, interval - timing.MMP_WRITE_MIN_MS)
            resources[f"r{k}"] = core.ResourceSpec(f"r{k}", w.target, timing.MmpTiming(interval, budget), True,
                                                   "/mnt/sim")
        spec = core.NodeSpec(node_id=self.node_id, name=self.name, generation=gen, cluster="sim",
                             interval_ms=p.interval_ms, dead_ms=p.dead_ms, io_timeout_ms=p.io_timeout_ms,
                             regions=tuple(regions), resources=resources, default_target=w.target,
                             default_timing=timing.MmpTiming(1000, 0), lock_scope=None,
                             quorum=QuorumSpec(self.node_id, {n.node_id: 1 for n in w.nodes}) if p.quorum else None,
                             self_fence=p.quorum, watchdog_ms=p.watchdog_s * 1000 if p.quorum else 0)
        c = core.NodeCore(spec, now_ms=w.now, rand=self.rng.randrange)
        self.inc = Incarnation(self.incarnations, gen, c)
        w.checker.started(self, self.inc)
        w.log(f"{self.name} starts generation {gen:#x}")
        self._schedule(w.now)
        if p.watchdog_s:  # opened at start-up, fed from the loop (diskhb.daemon)
            check_timeout(p.watchdog_s, p.interval_ms)
            self.inc.fed_ms = w.now
            w.at(w.now + p.watchdog_s * 1000, self._watchdog_due, self.inc)
        if w.script is None or getattr(w.script, "workload", False):
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

    def _watchdog_due(self, inc: Incarnation) -> None:
        """The watchdog resets the node watchdog_s after its last feed (frozen or not)."""
        if inc is not self.inc or not inc.running:
            return
        due = inc.fed_ms + self.w.profile.watchdog_s * 1000
        if due > self.w.now:
            self.w.at(due, self._watchdog_due, inc)
            return
        self.w.log(f"{self.name}'s watchdog resets the node (last fed at {inc.fed_ms} ms,"
                   f" phase {inc.core.phase.value})")
        self.w.checker.stats["watchdog_resets"] += 1
        # the whole node goes: its consumers and lease enforcers with it; its writes in flight
        # still land within F1, as a crash's do
        self._stop_acts("the node was reset", killed_too=True)
        inc.enforcer.clear()
        self.crash()

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

    def _step(self, inc: Incarnation) -> None:
        w = self.w
        if not self._woken(inc):
            return
        obs, inc.inbox = inc.inbox, []
        if w.profile.net:
            obs.append(core.IoCompleted("net", "read", w.now, True, submitted_ms=w.now))
        w.steps += 1
        actions = inc.core.step(w.now, obs, wall_ms=w.now)
        if w.profile.quorum and inc.core.fencing is not None and any(type(a) is core.Fence for a in actions):
            self._fences(inc, actions)
        for a in actions:
            self._act(inc, a)
        if w.profile.watchdog_s and inc.running and inc.core.phase not in _UNFED:
            inc.fed_ms = w.now  # after the actions, as the daemon's loop feeds it
        if inc.core.events:
            for ev in inc.core.drain_events():
                w.checker.event(self, inc, ev)
        if inc.running:
            due = inc.core.due_ms
            if due != inc.due_ms:  # the loop wakes 0-3 ms after the moment it asked for (once per moment)
                inc.due_ms, inc.due_late_ms = due, self.rng.randint(0, 3)
            self._schedule(w.spinning(self, inc, due + inc.due_late_ms))

    def _deliver(self, inc: Incarnation, obs) -> None:
        if inc is not self.inc or not inc.running:
            return
        inc.inbox.append(obs)
        self._schedule(self.w.now + 1)  # the loop wakes a moment later: what arrives meanwhile joins

    def _act(self, inc: Incarnation, a) -> None:
        w = self.w
        if isinstance(a, core.Publish):
            if a.beat.flags & _LEFT:
                w.checker.left(self, inc, a.region)
            if a.beat.flags & _SF_RO == _SF_RO:
                w.checker.read_only(self, inc)
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
        elif isinstance(a, core.Fence):
            self._fence(inc, a)
        elif isinstance(a, core.SelfFence):
            w.log(f"{self.name} fences itself ({a.reason}): {a.detail}; its watchdog is no longer fed")
            inc.self_fenced_at = w.now
            w.checker.self_fenced(self, inc, a)
            if a.reason == "stuck-write" and "MMP write" in a.detail and not any(
                    t <= w.now - w.profile.write_land_max_ms for t in inc.mmp_writes.values()):
                # no safety matter, a needless stop: the core's ledger never hears of a write's
                # completion once the guard that gave up on it ended (LG4 then calls it stuck)
                w.log(f"note: {self.name} has no MMP write in flight since {w.now - w.profile.write_land_max_ms}:"
                      " the stuck write it fenced itself for completed (its guard had ended)")
                w.checker.stats["self_fence_stuck-write_completed"] += 1
        elif isinstance(a, core.BlockReadOnly):
            # BLKROSET: their writes fail from now on
            self._stop_acts(f"its devices were set read-only ({', '.join(a.mountpoints)})", killed_too=True)
        else:
            raise AssertionError(a)

    # -- fencing: the disk pill (diskhb.pill), operators' orders -----------------------------------

    def _fences(self, inc: Incarnation, actions: list) -> None:
        """FENCE-QUORATE: each Fence of this step that answers no operator's order."""
        manual = {(a.answer.get("node"), a.answer.get("attempt")) for a in actions
                  if type(a) is core.Reply and a.answer.get("ok")
                  and inc.requests.get(a.request_id, ("",))[0] == "fence"}
        for a in actions:
            if type(a) is core.Fence and (a.node_id, a.attempt) not in manual:
                self.w.checker.fence_order(self, inc, a)

    def fence_request(self, victim: int) -> None:
        """An operator's `diskhb fence VICTIM` (no --force) to this daemon."""
        inc = self.inc
        if inc is None or not inc.running:
            return
        rid = 3_000_000 + self.rng.getrandbits(30)
        inc.requests[rid] = ("fence", victim)
        self.w.log(f"operator: diskhb fence {victim} (on {self.name})")
        self._deliver(inc, core.FenceRequest(rid, victim, False))

    def _fence(self, inc: Incarnation, a: core.Fence) -> None:
        """diskhb.pill: write a fence message into the victim's mailbox (the next seq of what it
        holds, meant for the generation ordered fenced), bounded by the mailbox's I/O timeout,
        read back; FenceDone pending (the victim's SELF_FENCED, READ_ONLY beat verifies it,
        fencing FD9) or failed. The write lands per F1 even when the writer gave up on it."""
        w = self.w
        if inc.pills >= PILLS_MAX:
            self._deliver(inc, core.FenceDone(a.node_id, a.generation, a.attempt, False, PILL,
                                              f"{PILLS_MAX} pills are being written already"))
            return
        old = w.mailboxes.get(a.node_id)
        seq = old[3] + 1 if isinstance(old, tuple) else 1  # a torn mailbox restarts at 1 (diskhb.mailbox)
        w.pill_writes += 1
        value = (self.node_id, core.MSG_FENCE, a.generation, seq, w.pill_writes)
        w.log(f"{self.name} fences n{a.node_id} ({a.generation:#x}) attempt {a.attempt}: pill seq {seq} ({a.reason})")
        w.checker.stats["pills"] += 1
        delay, eio = w.latency(self)
        issue = w.now
        inc.pills += 1
        inc.writes_in_flight += 1  # F4: the pill thread's write keeps the process from exiting
        if not eio:
            torn = self.rng.random() < w.profile.torn_p
            w.at(w.landing(issue, delay), self._pill_land, a.node_id, "torn" if torn else value)
        if delay is not None:
            w.at(issue + delay, self._pill_written, inc)
        if delay is None or delay > PILL_IO_TIMEOUT_MS:
            w.at(issue + PILL_IO_TIMEOUT_MS, self._pill_done, inc, a, None, f"timed out after {PILL_IO_TIMEOUT_MS} ms")
        else:
            w.at(issue + delay, self._pill_done, inc, a, value, "EIO" if eio else None)

    def _pill_land(self, victim: int, value) -> None:
        self.w.land_mailbox(victim, value)

    def _pill_written(self, inc: Incarnation) -> None:
        inc.writes_in_flight -= 1
        if not inc.running:
            self._maybe_exited()

    def _pill_done(self, inc: Incarnation, a: core.Fence, value, error: str | None) -> None:
        inc.pills -= 1
        if error is None and self.w.mailboxes.get(a.node_id) != value:
            error = "the message read back differs from what was written"
        if error is not None:
            self.w.log(f"{self.name}'s pill for n{a.node_id} failed: {error}")
            done = core.FenceDone(a.node_id, a.generation, a.attempt, False, PILL, f"disk: {error}")
        else:
            done = core.FenceDone(a.node_id, a.generation, a.attempt, False, PILL,
                                  f"pill written on disk (seq {value[3]}); waiting for node {a.node_id} to fence"
                                  " itself", pending=True)
        self._deliver(inc, done)

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
        value = (beat.generation, beat.seq, beat.flags, beat.name, beat.digest)  # the digest: quorum Q3
        if not eio:
            land = w.landing(issue, delay)
            torn = self.rng.random() < w.profile.torn_p
            w.at(land, self._slot_land, value, torn)
        if delay is not None:
            w.at(issue + delay, self._slot_written, inc, issue, beat.seq, not eio)

    def _slot_land(self, value: tuple, torn: bool) -> None:
        self.w.land_slot(self.node_id, "torn" if torn else value)
        if not torn:  # a torn slot is no beat (a missed one)
            self.w.checker.beat_landed(self, "disk", self.w.now, value)

    def _slot_written(self, inc: Incarnation, issue: int, seq: int, ok: bool) -> None:
        inc.slot_write_busy = False
        inc.writes_in_flight -= 1
        if ok and inc.slot_ok_ms is None:
            inc.slot_ok_ms = self.w.now
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
        w.at(sub + delay, self._slot_read_done, inc, sub, eio)

    def _slot_read_done(self, inc: Incarnation, sub: int, eio: bool) -> None:
        inc.slot_read_busy = False
        if inc is not self.inc or not inc.running:
            return
        w = self.w
        box = {i: w.read_slot(self.rng, i, sub, w.now) for i in sorted(w.written_slots)}
        w.checker.read_done(self, "disk", w.now - sub)
        obs: list = [core.IoCompleted("disk", "read", w.now, not eio, "EIO" if eio else None, submitted_ms=sub)]
        if not eio:
            ids, gens, seqs, flags, names, digests = [], [], [], [], [], []
            for i in range(1, SLOTS + 1):
                v = box.get(i)
                if v is None:
                    continue
                if v == "torn":
                    if i != self.node_id:
                        obs.append(BadSample(i, "disk", "checksum mismatch (torn or corrupt write)"))
                    continue
                if i == self.node_id:  # N3 judges only a read submitted after a write of ours completed
                    after_write = inc.slot_ok_ms is not None and inc.slot_ok_ms <= sub
                    obs.append(core.OwnSlotRead("disk", v[0], v[1], v[2], v[3], True, after_write, sub, w.now))
                    continue
                ids.append(i), gens.append(v[0]), seqs.append(v[1]), flags.append(v[2]), names.append(v[3])
                digests.append(v[4])
            if ids:
                obs.append(BeatBatch("disk", ids, gens, seqs, flags, names, sub, digests))
            m = w.read_mailbox(self.rng, self.node_id, sub, w.now)  # the same request reads our mailbox
            if m != inc.mailbox_seen:  # reported when it changed (diskhb.regions.disk.region)
                inc.mailbox_seen = m
                obs.append(core.MailboxRead("disk", False, error="checksum mismatch (torn or corrupt write)")
                           if m == "torn" else core.MailboxRead("disk", True, *m[:4]))
        for o in obs:
            self._deliver(inc, o)

    def _own_slot_read(self, inc: Incarnation) -> None:
        w = self.w
        if inc.slot_read_busy:
            return
        inc.slot_read_busy = True
        delay, eio = w.latency(self)
        inc.inbox.append(core.IoSubmitted("disk", "read", w.now))
        if delay is None:
            return
        if eio and w.profile.quorum:  # fails (a node cut off from the disk cannot claim its slot);
            w.at(w.now + delay, self._own_slot_failed, inc, w.now)  # the older profiles ignore it
            return
        w.at(w.now + delay, self._own_slot_done, inc, w.now)

    def _own_slot_failed(self, inc: Incarnation, sub: int) -> None:
        inc.slot_read_busy = False
        self._deliver(inc, core.IoCompleted("disk", "read", self.w.now, False, "EIO", submitted_ms=sub))

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
        # the sender's view rides along as in netpath's packets (node core N16); a replay carries the old one
        sees = frozenset(i for ids in beat.view.values() for i in ids)
        packet = (self.node_id, beat.generation, beat.seq, beat.mono_ms, beat.flags, beat.name, beat.digest, sees)
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
        sender, gen, seq, mono, flags, name, digest, sees = packet
        if sender == self.node_id:
            return  # our own id: the sim never replays our own packets to us (netpath's own_id rule)
        if self.replay.check(self.w.now, sender, gen, seq, mono) is not None:
            return
        if not replayed:
            self.w.checker.beat_landed(self.w.nodes[sender - 1], f"net>{self.node_id}", self.w.now, (gen, seq, flags, name))
        self.w.checker.packet(self, packet, replayed)
        self._deliver(inc, Beat(sender, "net", gen, seq, flags, name, digest, sees))

    # -- MMP I/O ----------------------------------------------------------------------------------------

    def _mmp_io(self, inc: Incarnation, req: gd.IoRequest) -> None:
        w = self.w
        if inc.self_fenced_at is not None and req.op == "write":
            w.checker.write_after_self_fence(self, inc, req)  # SF-NO-WRITE
        if req.op in ("lock", "unlock"):
            if req.op == "lock":
                self._deliver(inc, core.MmpIoDone(gd.IoResult(req.id, w.now, w.now)))
            return
        if inc.mmp_in_flight >= 4:
            self._deliver(inc, core.MmpIoDone(gd.IoResult(req.id, w.now, w.now, error="busy")))
            return
        delay, eio = w.latency(self, mmp_write=req.op == "write", req=req)
        issue = w.now
        inc.mmp_in_flight += 1
        if req.op == "read":
            if delay is None:
                return
            w.at(issue + delay, self._mmp_read_done, inc, req, issue, eio)
            return
        if req.issue_by_ms is not None and issue > req.issue_by_ms:
            inc.mmp_in_flight -= 1
            self._deliver(inc, core.MmpIoDone(gd.IoResult(req.id, issue, issue, too_late=True)))
            return
        inc.writes_in_flight += 1
        if w.profile.quorum:
            inc.mmp_writes[req.id] = issue
        if not eio:  # a write that fails with EIO never lands
            w.checker.mmp_write(self, inc, req, issue)
        w.schedule_write(self, req, issue, delay, eio, (self._mmp_land, inc, req),
                         (self._mmp_written, inc, req, issue, eio))

    def _mmp_read_done(self, inc: Incarnation, req, issue: int, eio: bool) -> None:
        inc.mmp_in_flight -= 1
        if eio:
            self._deliver(inc, core.MmpIoDone(gd.IoResult(req.id, issue, self.w.now, error="EIO")))
            return
        data = self.w.read_mmp(self.rng, req.offset, req.length, issue, self.w.now)
        self._deliver(inc, core.MmpIoDone(gd.IoResult(req.id, issue, self.w.now, data=data)))

    def _mmp_land(self, inc: Incarnation, req) -> None:
        self.w.land_mmp(req.offset, req.data)
        self.w.checker.mmp_landed(self, inc, req)
        if self.w.script is not None:
            self.w.script.landed(self.w, self, req)

    def _mmp_written(self, inc: Incarnation, req, issue: int, eio: bool) -> None:
        inc.mmp_in_flight -= 1
        inc.writes_in_flight -= 1
        if inc.mmp_writes:
            inc.mmp_writes.pop(req.id, None)
        if self.w.script is not None:
            self.w.script.completed(self.w, self, req)
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
        free = [f"r{k}" for k in range(self.w.profile.resources) if f"r{k}" not in self.acts
                and f"r{k}" not in inc.requests.values()]
        if free and not inc.core.phase.value.startswith(("leav", "publ")):
            resource = self.rng.choice(free)
            rid = 1_000_000 + self.rng.getrandbits(30)
            self._ask(inc, rid, resource, self.rng.choice(self.w.profile.node_waits))
        self.w.at(self.w.now + self.rng.randint(100, 3000), self._want, inc)

    def acquire(self, resource: str, wait_ms: int) -> None:
        """A client's `diskhb acquire RESOURCE --wait` now (scripts; the random workload: _want)."""
        if self.inc is not None and self.inc.running:
            self._ask(self.inc, 1_000_000 + self.rng.getrandbits(30), resource, wait_ms)

    def _ask(self, inc: Incarnation, rid: int, resource: str, wait_ms: int) -> None:
        inc.requests[rid] = ("acquire", resource)
        self.w.log(f"{self.name} asks for {resource} (wait {wait_ms} ms)")
        self._deliver(inc, core.AcquireRequest(rid, resource, wait_ms, False))

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
            self.w.at(self.w.now + self.rng.randint(*self.w.profile.node_work_ms), self._done_with, inc, resource, epoch)
        elif what == "acquire":
            self.w.log(f"{self.name} refused {resource}: {a.answer.get('error', a.answer)}")
        elif what == "fence":
            self.w.log(f"{self.name} answers diskhb fence {resource}: {a.answer.get('note') or a.answer.get('error')}")

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

    def _stop_acts(self, why: str, *, killed_too: bool = False) -> None:
        for resource in list(self.acts):
            self._stop_act(resource, self.w.now, why)
        if killed_too:  # those its enforcers are killing as well
            for resource in list(self.stopping):
                self._stopped_now(resource, None)

    def _stop_act(self, resource: str, t: int, why: str) -> None:
        act = self.acts.pop(resource, None)
        if act is not None:
            self.w.log(f"{self.name} consumer of {resource} epoch {act.epoch} stops: {why}")
            self.w.checker.act_stops(self, act, t)
            if t > self.w.now:
                self.stopping[resource] = (act, t)

    def _stopped_now(self, resource: str, epoch: int | None) -> None:
        """A consumer an enforcer is still killing is gone now (a loss action's kill, which
        returns once its writers are gone or SIGKILLed; BLKROSET; a reset)."""
        act, t = self.stopping.pop(resource, (None, 0))
        if act is not None and t > self.w.now and epoch in (None, act.epoch):
            self.w.checker.act_stops_sooner(self, act, self.w.now)

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
        if self.stopping:
            self._stopped_now(a.resource, a.epoch)  # its kill found the consumer its enforcer is killing
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
