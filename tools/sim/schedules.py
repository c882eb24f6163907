"""The five double-holder schedules of the MMP guard's rework, as scripted simulator runs.

Each was a real double holder in an earlier version of the guard (the issue that introduced
tools/sim names them A-E); tests/mmp/test_guard_fixes.py drives each against one guard's
machines. Here each is a whole World run (tools.sim.world) with a Script: command-line guard
processes (tools.sim.procs.SimProc) follow plans instead of random choices, there are no random
faults, every MMP request is quick (1-5 ms) except the few the script picks by content (P's
commit write, R's ballot at instance 3, ...), whose landing and completion it sets, within the
fault model (F1: a write lands between its issue and its completion, by write_land_max_ms after
its issue; F4: a process does not exit with a write in flight; World.land checks F1). The
invariants are the random runs' (tools.sim.invariants). On the current tree each ends with 0
violations; with its fix reverted, in I1 (two actors at once) or I2.

    A  P's commit write of epoch 1 lands over Q's epoch-2 block; P's retry finds its own
       abandoned block: CL4 (claim over it at once only if no ballot went past its epoch)
    B  a third node R watches P's stale block: CL2 (watch with the ceilings of the later
       ballots, not the block's interval)
    C  a stale CLEAN of epoch 1 lands over Q's epoch-2 block; R reads CLEAN: CL2's CLEAN branch
       (`if later:` watch)
    D  an abandoned phase-1 ballot write lands after node 1's next attempt accepted its value:
       GD2 / ledger LG1 (no write to a sector while an older write of ours to it may land)
    E  a bump advertising 228 ms after bumps that advertised 1,394 ms completes 2.4 s late:
       HD-loss (Hold.takeover_ms counts the pending write's shorter interval)

A and C need an open instance above the holder's: the current acquisition joins the highest
instance its read shows (lver = max(max_lver, epoch + 1, min_lver)) and learns the holder's
value there, so with CL4 or CL2's CLEAN branch reverted it would only loop at the holder's
instance. The open instance is the claimant's own phase-1 write at instance 3, legitimately
issued after a watch, which landed after the holder's commit check and whose completion passed
its deadline (so it never accepted anything there). The issue's original guard went to
instance 3 by itself.

python -m tools.sim --schedules runs the five and prints one line each.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from diskhb.mmp import format as mf
from diskhb.mmp import guard as gd

from tools.sim.procs import PlanStep, SimProc
from tools.sim.world import HELD, SECTOR, SLOTS, Fate, Profile, World

RESOURCE = "r0"  # block 0
BASE = 0  # its seq block's offset (tools.sim.world.mmp_layout)
SPAN = (1 + SLOTS) * SECTOR
FAST = (1, 5)  # every request the script does not pick


def calm(dead_ms: int) -> Profile:
    """No random faults: no slow, hung or failing I/O, no torn writes; F1's bound (dead_ms:
    write_land_max_ms = 2 x io_timeout_ms = dead_ms) as long as the schedule needs."""
    return Profile(1000, dead_ms, (1000, 1000), io_ms=FAST, slow_p=0, hang_p=0, eio_p=0, torn_p=0,
                   freeze_p_per_s=0, crash_p_per_s=0, leave_p_per_s=0, partition_p_per_s=0, replay_p=0,
                   net=False, mmp_slow_p=0, mmp_hang_p=0)


@dataclass
class Script:
    """The base: no daemons, no random workload; subclasses set up their processes and pick
    requests. `note(w, what)` records a milestone (and logs it): the test checks that every
    name in `needs` was reached, so a schedule cannot pass by not coming about."""
    name: str = "?"
    title: str = ""
    dead_ms: int = 10_000
    seconds: int = 60
    nodes: int = 0
    workload: bool = False
    needs: tuple[str, ...] = ()
    milestones: dict[str, int] = field(default_factory=dict)
    procs: dict[str, SimProc] = field(default_factory=dict)

    @property
    def profile(self) -> Profile:
        return calm(self.dead_ms)

    # -- the world's hooks ----------------------------------------------------------------------

    def setup(self, w: World) -> None:
        raise NotImplementedError

    def fate(self, w: World, actor, req: gd.IoRequest) -> Fate | None:
        return None

    def landed(self, w: World, actor, req: gd.IoRequest) -> None:
        pass

    def completed(self, w: World, actor, req: gd.IoRequest) -> None:
        pass

    def event(self, w: World, actor, ev) -> None:
        if isinstance(ev, gd.GotIt):
            self.note(w, f"{actor.name} holds epoch {ev.epoch}")
        elif isinstance(ev, gd.Gone) and not ev.released:
            self.note(w, f"{actor.name} lost epoch {ev.epoch}")

    # -- helpers ----------------------------------------------------------------------------------

    def proc(self, w: World, name: str, node_id: int, plan: list[PlanStep]) -> SimProc:
        p = SimProc(w, node_id, plan, name=name)
        w.procs.append(p)
        self.procs[name] = p
        return p

    def note(self, w: World, what: str) -> None:
        if what not in self.milestones:
            self.milestones[what] = w.now
            w.log(f"script: {what}")

    def missing(self) -> list[str]:
        return [m for m in self.needs if m not in self.milestones]

    def story(self) -> str:
        return "; ".join(f"{what} at {t / 1000:.1f} s" for what, t in self.milestones.items())


def seq_write(actor, req: gd.IoRequest, name: str) -> mf.SeqBlock | None:
    """The seq block `actor` named `name` writes with req (None: another request)."""
    if actor.name != name or req.op != "write" or req.offset != BASE:
        return None
    return mf.decode_seq_block(req.data)


def ballot_write(actor, req: gd.IoRequest, name: str) -> mf.Ballot | None:
    if actor.name != name or req.op != "write" or req.offset != BASE + actor.node_id * SECTOR:
        return None
    return mf.decode_ballot(req.data, expect_node_id=actor.node_id)


def full_read(actor, req: gd.IoRequest, name: str) -> bool:
    return actor.name == name and req.op == "read" and req.offset == BASE and req.length == SPAN


# -- A ---------------------------------------------------------------------------------------------------


class ScheduleA(Script):
    """P (2 s) wins instance 1; its commit write is held in the I/O stack: it gives the claim
    up at the write's deadline (stale_own) and retries. Q (2 s), started meanwhile, learns from
    the ballots that P won instance 1, watches the unchanged seq block for C(P's ceiling), wins
    instance 2 and holds epoch 2. P's retry watched for as long and went past instances 1 and 2:
    its phase-1 write at instance 3 lands only after Q's commit check and completes past its
    deadline (P never accepts at 3). Then P's commit of epoch 1 lands over Q's block just after
    one of Q's bumps, and completes. P's next retry finds its own abandoned block with a ballot
    (Q's, instance 2) past its epoch: it must watch for C(Q's ceiling) (CL4, CL2). With CL4
    reverted it claims at once, at instance 3, and holds epoch 3 while Q (which learns of the
    landing only at its next verify, up to 2 s later) still holds epoch 2. (The issue's Q had
    5 s; here Q's ceiling must not exceed P's, or P's retry would watch on instead of going past
    instance 2; the F1 bound is 60 s, as P's commit lands 46 s after its issue.)"""

    def __init__(self):
        super().__init__(name="A", title="late commit over a later epoch; our own abandoned block (CL4)",
                         dead_ms=60_000, seconds=90,
                         needs=("P's commit of epoch 1 held", "Q holds epoch 2", "P's phase 1 at instance 3 landed",
                                "P's commit of epoch 1 landed over Q's block", "Q lost epoch 2"))
        self.commit: Fate | None = None
        self.p1: Fate | None = None

    def setup(self, w: World) -> None:
        self.proc(w, "P", 1, [PlanStep(0, RESOURCE, 2000, wait_ms=600_000)])
        self.proc(w, "Q", 2, [PlanStep(500, RESOURCE, 2000, wait_ms=600_000)])

    def fate(self, w, actor, req):
        block = seq_write(actor, req, "P")
        if block is not None and block.epoch == 1 and self.commit is None:
            self.note(w, "P's commit of epoch 1 held")
            self.commit = Fate(complete=HELD, land=HELD)
            return self.commit
        ballot = ballot_write(actor, req, "P")
        if ballot is not None and ballot.lver == 3 and self.p1 is None:
            self.note(w, "P's phase 1 at instance 3 held")
            self.p1 = Fate(complete=HELD, land=HELD)
            return self.p1
        block = seq_write(actor, req, "Q")
        if block is not None and block.epoch == 2 and self.p1 is not None and self.p1.landed_at is None:
            # Q's commit check has read the ballots: P's phase-1 write lands now, and completes
            # just past its deadline (GD1: P gives it up; the ledger keeps P off its sector).
            w.land(self.p1, w.now + 1)
            w.complete(self.p1, self.p1.issue + gd.WRITE_DEADLINE_MS + 300)
            self.note(w, "P's phase 1 at instance 3 landed")
        return None

    def landed(self, w, actor, req):
        block = seq_write(actor, req, "Q")
        if (block is not None and block.epoch == 2 and self.p1 is not None and self.p1.completed_at is not None
                and w.now > self.p1.completed_at and self.commit.landed_at is None):
            w.land(self.commit, w.now + 1)  # right after one of Q's bumps: Q verifies only 2 s later
            w.complete(self.commit, w.now + 20)
            w.at(w.now + 1, self.note, w, "P's commit of epoch 1 landed over Q's block")


# -- B ---------------------------------------------------------------------------------------------------


class ScheduleB(Script):
    """P (200 ms) wins instance 1; its commit write is held; P gives up and does not retry.
    Q (20 s) learns from the ballots that P won, watches for C(P's ceiling), wins instance 2
    and holds epoch 2. P's write lands over Q's block and completes. R (1 s) then finds P's
    stale block (advertising 200 ms) and Q's ballot at instance 2 (ceiling 160 s): it must
    watch for C(160 s), the longest Q may hold under an overwritten block (CL2). With the
    ceiling rule reverted it watches C(200 ms) and holds epoch 3 while Q, which verifies every
    20 s, still holds epoch 2."""

    def __init__(self):
        super().__init__(name="B", title="third node after a late landing watches the later ballot's ceiling (CL2)",
                         dead_ms=10_000, seconds=40,
                         needs=("P's commit of epoch 1 held", "Q holds epoch 2",
                                "P's commit of epoch 1 landed over Q's block", "R starts", "Q lost epoch 2"))
        self.commit: Fate | None = None

    def setup(self, w):
        self.proc(w, "P", 1, [PlanStep(0, RESOURCE, 200, wait_ms=0)])
        self.proc(w, "Q", 2, [PlanStep(100, RESOURCE, 20_000, wait_ms=60_000)])
        self.proc(w, "R", 3, [PlanStep(None, RESOURCE, 1000, wait_ms=600_000)])

    def fate(self, w, actor, req):
        block = seq_write(actor, req, "P")
        if block is not None and block.epoch == 1 and self.commit is None:
            self.note(w, "P's commit of epoch 1 held")
            self.commit = Fate(complete=HELD, land=HELD)
            return self.commit
        return None

    def completed(self, w, actor, req):
        block = seq_write(actor, req, "Q")
        if block is not None and block.epoch == 2 and self.commit.landed_at is None:
            w.land(self.commit, w.now + 200)
            w.complete(self.commit, w.now + 210)

    def landed(self, w, actor, req):
        if self.commit is not None and req is self.commit.req:
            self.note(w, "P's commit of epoch 1 landed over Q's block")
            w.at(w.now + 100, self._start_r, w)

    def _start_r(self, w):
        self.note(w, "R starts")
        self.procs["R"].start_next()


# -- C ---------------------------------------------------------------------------------------------------


class ScheduleC(Script):
    """P (16 s) holds epoch 1 and releases: its CLEAN write is held in the I/O stack; the
    write passes its deadline (P: lost, a write of unknown outcome). Q (2 s) watched P's block
    for C(16 s), wins instance 2 and holds epoch 2 (its read after phase 2 is slow, 1.5 s).
    R (1 s) watched as long; its final read shows Q's ballot at instance 2 but not yet Q's
    block: it goes past instance 2, and its phase-1 write at instance 3 lands after Q's commit
    check and completes past its deadline. Then P's stale CLEAN (epoch 1) lands over Q's block,
    just after one of Q's bumps. R, watching Q's block, sees CLEAN with Q's accepted ballot at
    instance 2: it must watch for C(Q's ceiling) (CL2, `if later:`). Reverted, it claims CLEAN
    at once (at instance 3) and holds epoch 3 while Q still holds epoch 2. (The issue's Q had
    20 s; here Q's ceiling must not exceed P's interval, or R's watch would go on; F1's bound
    is 60 s: the CLEAN lands 44 s after its issue.)"""

    def __init__(self):
        super().__init__(name="C", title="stale CLEAN over a later epoch is watched, not claimed (CL2)",
                         dead_ms=60_000, seconds=90,
                         needs=("P holds epoch 1", "P's CLEAN of epoch 1 held", "P lost epoch 1", "Q holds epoch 2",
                                "R's phase 1 at instance 3 landed", "P's CLEAN of epoch 1 landed over Q's block",
                                "Q lost epoch 2"))
        self.clean: Fate | None = None
        self.p1: Fate | None = None
        self.q_p2 = False

    def setup(self, w):
        self.proc(w, "P", 1, [PlanStep(0, RESOURCE, 16_000, wait_ms=0, hold_ms=1000)])
        self.proc(w, "Q", 2, [PlanStep(500, RESOURCE, 2000, wait_ms=600_000)])
        self.proc(w, "R", 3, [PlanStep(1000, RESOURCE, 1000, wait_ms=600_000)])

    def fate(self, w, actor, req):
        block = seq_write(actor, req, "P")
        if block is not None and block.state == "clean" and self.clean is None:
            self.note(w, "P's CLEAN of epoch 1 held")
            self.clean = Fate(complete=HELD, land=HELD)
            return self.clean
        ballot = ballot_write(actor, req, "Q")
        if ballot is not None and ballot.lver == 2 and ballot.bal > 0:
            self.q_p2 = True
        elif self.q_p2 and full_read(actor, req, "Q"):
            self.q_p2 = False
            return Fate(complete=1500)  # Q's read after its phase 2: slow (R's final read falls in it)
        ballot = ballot_write(actor, req, "R")
        if ballot is not None and ballot.lver == 3 and self.p1 is None:
            self.note(w, "R's phase 1 at instance 3 held")
            self.p1 = Fate(complete=HELD, land=HELD)
            return self.p1
        block = seq_write(actor, req, "Q")
        if block is not None and block.epoch == 2 and self.p1 is not None and self.p1.landed_at is None:
            w.land(self.p1, w.now + 1)  # after Q's commit check read the ballots
            w.complete(self.p1, self.p1.issue + gd.WRITE_DEADLINE_MS + 300)
            self.note(w, "R's phase 1 at instance 3 landed")
        return None

    def landed(self, w, actor, req):
        block = seq_write(actor, req, "Q")
        if (block is not None and block.epoch == 2 and self.p1 is not None and self.p1.completed_at is not None
                and w.now > self.p1.completed_at and self.clean.landed_at is None):
            w.land(self.clean, w.now + 1)  # right after one of Q's bumps
            w.complete(self.clean, w.now + 20)
            w.at(w.now + 1, self.note, w, "P's CLEAN of epoch 1 landed over Q's block")


# -- D ---------------------------------------------------------------------------------------------------


class ScheduleD(Script):
    """Node 1 (P) starts instance 1; its phase-1 ballot write hangs in the I/O stack: at the
    write's deadline (10 s, GD1) P gives it up and retries. The write may still land (F1): P
    must not write its ballot sector again until it completed, or write_land_max_ms after its
    issue (GD2, ledger LG1). Reverted, P's next attempt accepts and chooses its value for
    instance 1 and issues its commit; only then does the old phase-1 write land, erasing that
    acceptance (P's commit lands 350 ms later). Node 2 (Q) starts at that moment, runs instance
    1, finds nothing accepted and is chosen too: both commit epoch 1 and both hold it (I1/I2).
    On the current tree P waits; the old write lands at 12 s, completes at 13 s; Q and P then
    take turns."""

    def __init__(self):
        super().__init__(name="D", title="abandoned phase-1 write lands after the next attempt chose (GD2, LG1)",
                         dead_ms=16_000, seconds=40,
                         needs=("P's phase 1 at instance 1 held", "P's old phase 1 landed", "Q starts"))
        self.hung: Fate | None = None
        self.erased = False  # P's old phase 1 lands after its next attempt chose (GD2 reverted only)

    def setup(self, w):
        self.proc(w, "P", 1, [PlanStep(0, RESOURCE, 1000, wait_ms=120_000, hold_ms=10_000)])
        self.proc(w, "Q", 2, [PlanStep(None, RESOURCE, 1000, wait_ms=120_000, hold_ms=10_000)])

    def fate(self, w, actor, req):
        ballot = ballot_write(actor, req, "P")
        if ballot is not None and self.hung is None:
            self.note(w, "P's phase 1 at instance 1 held")
            self.hung = Fate(complete=HELD, land=HELD)
            w.at(w.now + 12_000, self._land_hung, w)  # at the latest (F1: by 16 s)
            return self.hung
        block = seq_write(actor, req, "P")
        if block is not None and block.epoch == 1 and self.hung.landed_at is None:
            # P's next attempt chose its value and commits while the old write is in flight
            # (only with GD2 reverted): the old phase 1 lands now, P's commit 350 ms later.
            self.note(w, "P commits epoch 1 with its old phase 1 in flight")
            self.erased = True
            self._land_hung(w)
            return Fate(complete=360, land=350)
        block = seq_write(actor, req, "Q")
        if block is not None and block.epoch == 1 and self.erased:
            return Fate(complete=440, land=420)  # in time (< 500 ms), after P's read-back
        return None

    def _land_hung(self, w):
        if self.hung.landed_at is not None:
            return
        w.land(self.hung, w.now + 1)
        w.complete(self.hung, w.now + 1000)
        w.at(w.now + 1, self.note, w, "P's old phase 1 landed")
        w.at(w.now + 1, self._start_q, w)

    def _start_q(self, w):
        self.note(w, "Q starts")
        self.procs["Q"].start_next()


# -- E ---------------------------------------------------------------------------------------------------


class ScheduleE(Script):
    """P holds with a 228 ms base interval. One slow cycle (697 ms from verify to completion)
    makes its next bumps advertise 1,394 ms (HD-adapt); once that cycle is forgotten, a bump
    advertises 228 ms again. That write lands at once but completes 2.4 s later. Q, started
    just after it landed, watches P's block for C(228 ms) = 1,456 ms and takes it over. P's
    lease must count from the pending write's issue with 228 ms (Hold.takeover_ms, HD-loss): P
    loses before Q can take over. Reverted, P's lease still counts with 1,394 ms: P holds until
    its write completes, long after Q took over (I1)."""

    def __init__(self):
        super().__init__(name="E", title="a pending bump with a shorter interval shortens the lease (HD-loss)",
                         dead_ms=10_000, seconds=20,
                         needs=("P holds epoch 1", "P's slow cycle", "P's bump advertising 228 ms after 1394 ms",
                                "Q holds epoch 2"))
        self.verify_issued = 0
        self.advertised: list[int] = []

    def setup(self, w):
        self.proc(w, "P", 1, [PlanStep(0, RESOURCE, 228, wait_ms=0)])
        self.proc(w, "Q", 2, [PlanStep(None, RESOURCE, 1000, wait_ms=60_000)])

    def fate(self, w, actor, req):
        if actor.name == "P" and req.op == "read" and req.length == SECTOR:
            self.verify_issued = w.now  # P's verify read (its bumps follow one each)
            return None
        block = seq_write(actor, req, "P")
        if block is None or block.state != "held":
            return None
        self.advertised.append(block.interval_ms)
        if len(self.advertised) == 3:  # P's second bump: the slow cycle
            self.note(w, "P's slow cycle")
            return Fate(complete=697 - (w.now - self.verify_issued), land=0)
        if self.advertised[-2:] == [1394, 228]:
            self.note(w, "P's bump advertising 228 ms after 1394 ms")
            w.at(w.now + 5, self.procs["Q"].start_next)
            return Fate(complete=2400, land=0)
        return None


SCHEDULES = {"A": ScheduleA, "B": ScheduleB, "C": ScheduleC, "D": ScheduleD, "E": ScheduleE}


def run(name: str, seed: int = 1) -> tuple[World, Script]:
    script = SCHEDULES[name]()
    w = World(seed, nodes=script.nodes, seconds=script.seconds, profile=script.profile, script=script)
    return w.run(), script


def line(name: str, w: World, script: Script) -> str:
    v = w.checker.violation
    missing = script.missing()
    verdict = (f"VIOLATION {v}" if v else
               f"did not come about (missing: {', '.join(missing)})" if missing else "0 violations")
    return f"schedule {name} ({script.title}): {verdict} [trace {w.trace_hash}; {script.story()}]"
