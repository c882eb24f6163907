"""Command-line guard processes in the simulated cluster: `diskhb mmp run`-style holders.

Each is one process of its own node id (no daemon, no heartbeat: the classic path only) that
drives one real diskhb.mmp.guard.Guard, as diskhb.mmp.runner does, against the shared simulated
disk: acquire a resource (waiting up to a random time), let its command write while held, then
release; or lose it (the loss action stops the command), or freeze (its lease enforcer, a process
of its own, stops the command at the lease's end), or crash (the enforcer fires once the process
is gone: F4, not before its writes completed). Then the node runs a new process (new generation).
They hammer the MMP blocks far more often than daemons do: that is where late landings bite.

Unscripted, each draws its resource, interval (the profile's range, or anything from 200 ms to
20 s), --wait (the profile's choices, up to 60 s) and how long its command runs (up to 20 s: long holds are where the
adaptive interval rises and falls) from the seed. Scripted (tools.sim.schedules), it follows a
plan: one PlanStep per process it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from diskhb.core import timing
from diskhb.mmp import guard as gd
from diskhb.mmp.ledger import SectorLedger
from diskhb.mmp.steps import Claimant

from tools.sim.world import ENFORCER_BUDGET_MS, Act, Actor, Rng


@dataclass(frozen=True)
class PlanStep:
    """One process of a scripted command-line guard: `mmp run --wait wait_ms` of `resource`
    with base interval `interval_ms`, started at `at_ms` (not before the previous process of
    this node exited; None: when the script calls SimProc.start_next), whose command runs
    `hold_ms` once the resource is held (None: until the hold ends otherwise)."""
    at_ms: int | None
    resource: str
    interval_ms: int
    wait_ms: int = 0
    hold_ms: int | None = None


@dataclass
class _Proc:
    number: int
    generation: int
    guard: gd.Guard
    running: bool = True
    exited: bool = False
    frozen_until: int = 0
    step_at: int | None = None
    results: list = None
    writes_in_flight: int = 0
    in_flight: int = 0
    enforcer_ms: int | None = None  # its lease enforcer fires then unless renewed
    spin_ms: int = -1  # World.spinning
    spin_steps: int = 0
    wakes: set = field(default_factory=set)  # Actor._schedule
    held_epoch: int = 0


class SimProc(Actor):
    def __init__(self, world, node_id: int, plan: list[PlanStep] | None = None, name: str | None = None):
        self.w = world
        self.node_id = node_id
        self.name = name or f"cli{node_id}"
        self.rng = Rng(world.rng.getrandbits(64))
        self.acts: dict[str, Act] = {}
        self.inc: _Proc | None = None
        self.disk_stalled_until = 0  # the world's latency model asks
        self.disk_cut_until = 0
        self.number = 0
        self.plan = None if plan is None else list(plan)
        self.step: PlanStep | None = None  # the plan step of the current process
        self._pending_start = False  # start_next() called while a process still runs
        if self.plan is None:
            self.w.at(self.rng.randint(0, 2000), self._start)
        else:
            self._plan_next()

    def _plan_next(self) -> None:
        if self.plan and self.plan[0].at_ms is not None:
            self.w.at(max(self.plan[0].at_ms, self.w.now), self._start)

    def start_next(self) -> None:
        """Scripts: run the next plan step now (or as soon as the current process has exited)."""
        if self.inc is None or self.inc.exited:
            self.w.at(self.w.now, self._start)
        else:
            self._pending_start = True

    # -- life ------------------------------------------------------------------------------------

    def _start(self) -> None:
        w, p = self.w, self.w.profile
        if self.plan is not None:
            if self.inc is not None and not self.inc.exited:
                self._pending_start = True  # its time came while the previous process still runs
                return
            if not self.plan:
                return
            self.step = self.plan.pop(0)
        self.number += 1
        if self.step is not None:
            resource, interval = self.step.resource, self.step.interval_ms
        else:
            resource = f"r{self.rng.randrange(p.resources)}"
            lo, hi = p.resource_intervals_ms  # the profile's range, or (unless it says not) anything from 200 ms to 20 s
            choices = (lo, hi, self.rng.randint(lo, hi), int(200 * 100 ** self.rng.random()))
            interval = self.rng.choice(choices[:2] if p.interval_ends else choices if p.proc_any_interval else choices[:3])
        budget = min(timing.loss_budget_ms(("kill",), kill_grace_ms=max(1, interval // 4), remount_timeout_ms=0,
                                           command_timeout_ms=0, mountpoint=False),
                     interval - timing.MMP_WRITE_MIN_MS)
        gen = self.rng.getrandbits(62) | 1
        me = Claimant(self.node_id, gen, self.name, resource, interval, timing.mmp_ceiling_ms(interval), "sim")
        guard = gd.Guard(me, w.target, timing=timing.MmpTiming(interval, budget),
                         ledger=SectorLedger(p.write_land_max_ms), rand=self.rng.randrange, now_ms=w.now,
                         wait_ms=self.step.wait_ms if self.step else self.rng.choice(p.proc_waits))
        self.inc = _Proc(self.number, gen, guard, results=[])
        w.checker.started(self, self.inc)
        w.log(f"{self.name} process {self.number} ({gen:#x}) wants {resource} (interval {interval} ms)")
        self._schedule(w.now)

    def freeze(self, length_ms: int) -> None:
        inc = self.inc
        if inc is None or not inc.running:
            return
        inc.frozen_until = max(inc.frozen_until, self.w.now + length_ms)
        self.w.log(f"{self.name} frozen for {length_ms} ms")
        self._schedule(inc.frozen_until)

    def crash(self) -> None:
        inc = self.inc
        if inc is None or not inc.running:
            return
        self.w.log(f"{self.name} crashes (writes in flight: {inc.writes_in_flight})")
        inc.running = False
        self._maybe_exited()

    def _end(self, why: str) -> None:
        inc = self.inc
        inc.running = False
        self.w.log(f"{self.name} process {inc.number} ends: {why}")
        self._maybe_exited()

    def _maybe_exited(self) -> None:
        inc = self.inc
        if inc.running or inc.exited or inc.writes_in_flight:
            return  # F4: a process with a write in flight has not exited
        inc.exited = True
        if inc.enforcer_ms is not None:
            self._enforcer_fires("the process is gone")
        for resource in list(self.acts):
            self._stop_act(resource, self.w.now, "its process is gone")
        if self.plan is None:
            self.w.at(self.w.now + self.rng.randint(50, 3000), self._start)
        elif self._pending_start:
            self._pending_start = False
            self.w.at(self.w.now, self._start)
        else:
            self._plan_next()

    # -- the driver (diskhb.mmp.runner's loop, asynchronous) ------------------------------------------

    def _step(self, inc: _Proc) -> None:
        w = self.w
        if not self._woken(inc):
            return
        w.steps += 1
        g = inc.guard
        g.wall_ms = w.now
        results, inc.results = inc.results, []
        requests = g.step(w.now, results)
        for ev in g.drain():  # first, as the runner does: a shorter lease reaches the enforcer before the write
            self._event(inc, ev)
        for req in requests:
            self._io(inc, req)
        if not inc.running:
            return
        wake = g.next_wakeup_ms()
        if wake is not None:
            self._schedule(w.spinning(self, inc, wake))

    def _event(self, inc: _Proc, ev) -> None:
        w = self.w
        if w.script is not None:
            w.script.event(w, self, ev)
        if isinstance(ev, gd.GotIt):
            w.log(f"{self.name} holds {ev.resource} epoch {ev.epoch}; its command writes")
            act = Act(ev.resource, ev.epoch, inc.number, w.now)
            w.checker.act_starts(self, inc, act)
            self.acts[ev.resource] = act
            inc.held_epoch = ev.epoch
            if self.step is None:
                hold = self.rng.choice(tuple(self.rng.randint(lo, hi) for lo, hi in w.profile.proc_work_ms))  # some run long
                w.at(w.now + hold, self._done_with, inc, ev.resource, ev.epoch)
            elif self.step.hold_ms is not None:
                w.at(w.now + self.step.hold_ms, self._done_with, inc, ev.resource, ev.epoch)
        elif isinstance(ev, gd.Lease):
            inc.enforcer_ms = ev.takeover_ms - ENFORCER_BUDGET_MS
            w.at(inc.enforcer_ms, self._enforcer_due, inc)
        elif isinstance(ev, gd.Denied):
            w.log(f"{self.name} refused {ev.resource}: {ev.reason}")
            self._end("refused")
        elif isinstance(ev, gd.Gone):
            if ev.released:
                inc.enforcer_ms = None
                self._end(f"released {ev.resource}")
            else:
                w.log(f"{self.name} lost {ev.resource} epoch {ev.epoch}: {ev.lost}")
                spec = inc.guard.timing
                took = self.rng.randint(0, max(0, spec.loss_budget_ms - timing.LOSS_NOTICE_SLACK_MS))
                w.at(w.now + took, self._loss_done, inc, ev.resource, ev.epoch)

    def _done_with(self, inc: _Proc, resource: str, epoch: int) -> None:
        act = self.acts.get(resource)
        if inc is not self.inc or not inc.running or act is None or act.epoch != epoch:
            return
        self._stop_act(resource, self.w.now, "its command exited")  # then the guard writes CLEAN
        inc.guard.release()
        self._schedule(self.w.now)

    def _loss_done(self, inc: _Proc, resource: str, epoch: int) -> None:
        if inc.frozen_until > self.w.now:  # the loss action runs in the (frozen) guard process
            self.w.at(inc.frozen_until, self._loss_done, inc, resource, epoch)
            return
        act = self.acts.get(resource)
        if act is not None and act.epoch == epoch:
            self._stop_act(resource, self.w.now, "its loss action ran")
        inc.enforcer_ms = None
        if inc.running:
            self._end("lost")

    def _enforcer_due(self, inc: _Proc) -> None:
        if inc is self.inc and inc.enforcer_ms is not None and inc.enforcer_ms <= self.w.now:
            self._enforcer_fires("not renewed in time")

    def _enforcer_fires(self, why: str) -> None:
        inc = self.inc
        inc.enforcer_ms = None
        for resource in list(self.acts):
            self.w.log(f"{self.name} enforcer fires: {why}")
            self._stop_act(resource, self.w.now + ENFORCER_BUDGET_MS, f"its enforcer fired ({why})")

    def _stop_act(self, resource: str, t: int, why: str) -> None:
        act = self.acts.pop(resource, None)
        if act is not None:
            self.w.log(f"{self.name} command on {resource} epoch {act.epoch} stops: {why}")
            self.w.checker.act_stops(self, act, t)

    # -- its I/O ----------------------------------------------------------------------------------------

    def _io(self, inc: _Proc, req: gd.IoRequest) -> None:
        w = self.w
        if req.op in ("lock", "unlock"):
            return  # one process per node id here: no local lock needed (none asked: lock_key None)
        if inc.in_flight >= 4:
            self._answer(inc, gd.IoResult(req.id, w.now, w.now, error="busy"))
            return
        delay, eio = w.latency(self, mmp_write=req.op == "write", req=req)
        issue = w.now
        if req.op == "read":
            if delay is None:
                return  # hung for ever: the guard gives up at its deadline
            inc.in_flight += 1
            w.at(issue + delay, self._read_done, inc, req, issue, eio)
            return
        if req.issue_by_ms is not None and issue > req.issue_by_ms:
            self._answer(inc, gd.IoResult(req.id, issue, issue, too_late=True))
            return
        inc.writes_in_flight += 1
        inc.in_flight += 1
        w.schedule_write(self, req, issue, delay, eio, (_land, w, req, self), (self._written, inc, req, issue, eio))

    def _read_done(self, inc: _Proc, req, issue: int, eio: bool) -> None:
        inc.in_flight -= 1
        if eio:
            self._answer(inc, gd.IoResult(req.id, issue, self.w.now, error="EIO"))
            return
        data = self.w.read_mmp(self.rng, req.offset, req.length, issue, self.w.now)
        self._answer(inc, gd.IoResult(req.id, issue, self.w.now, data=data))

    def _written(self, inc: _Proc, req, issue: int, eio: bool) -> None:
        inc.in_flight -= 1
        inc.writes_in_flight -= 1
        if self.w.script is not None:
            self.w.script.completed(self.w, self, req)
        if not inc.running:
            self._maybe_exited()
            return
        self._answer(inc, gd.IoResult(req.id, issue, self.w.now, error="EIO" if eio else None))

    def _answer(self, inc: _Proc, r: gd.IoResult) -> None:
        if inc is not self.inc or not inc.running:
            return
        inc.results.append(r)
        self._schedule(self.w.now + 1)


def _land(w, req, actor) -> None:
    w.land_mmp(req.offset, req.data)
    if w.script is not None:
        w.script.landed(w, actor, req)
