"""What must hold in every simulated schedule, checked as the run goes (tools.sim.world calls in).

  I1 ONE WRITER: never two consumers acting on one resource at once (a consumer acts from its
     node's acquire reply until it stopped: released, its loss action ran, or its lease
     enforcer killed it; an enforcer's kill takes up to its budget).
  I2 EPOCHS: every grant of a resource carries an epoch above every earlier grant's (the fencing
     token never goes back).
  I3 LEFT AFTER RELEASES: when a node publishes LEFT, it holds nothing (no guard in its core, no
     consumer acting) and no MMP write of its incarnation is still to land.
  I4 NO FAKE NEWS: no replayed packet changes a state: an observer reports a restart only to a
     generation started after the one it had, and LEFT only for a generation that published it.
  I5 NO FALSE DEATH: an observer declares a node DEAD only if, on every region, that node landed
     no beat (a slot write landing, a packet delivered to that observer) for at least dead_ms
     minus the observer's longest read on that region, within the last 2 x dead_ms.

With a [quorum] and self-fencing (the quorum profiles; node core N10-N14, self_fence SF1-SF6):
  SF-NO-WRITE: a node incarnation issues no MMP write once it emitted SelfFence (SF5: every
     guard abandoned; SF6: for good).
  SF-READ-ONLY: once an incarnation published a beat carrying SELF_FENCED and READ_ONLY, no MMP
     write of it lands any more and none of its consumers acts (the promise peers take its blocks
     over on at once, fencing FD8, fast path FP0). I1 checks those takeovers' consumers.
  FENCE-QUORATE: an automatic Fence (one that answers no operator's order) comes only from a
     node whose quorum verdict at that step is quorate (fencing FD1).
"""

from __future__ import annotations

from collections import defaultdict, deque

from diskhb.core.fencing import FenceOutcome
from diskhb.core.liveness import NodeRestarted, NodeStateChanged
from diskhb.core.node import MmpEvent
from diskhb.core.self_fence import SelfFenced
from diskhb.core.types import NodeState

LANDINGS_KEPT = 4096


class Violation(Exception):
    def __init__(self, rule: str, text: str):
        super().__init__(f"{rule}: {text}")
        self.rule = rule
        self.text = text


class Checker:
    def __init__(self, world):
        self.w = world
        self.violation: Violation | None = None
        self.acts: dict[str, list] = defaultdict(list)  # resource -> [[node, inc, epoch, start, end]]
        self.max_epoch: dict[str, int] = {}
        self.landings: dict[tuple[int, str], deque] = defaultdict(lambda: deque(maxlen=LANDINGS_KEPT))
        self.read_lat: dict[tuple[int, str], deque] = defaultdict(lambda: deque(maxlen=LANDINGS_KEPT))
        self.started_at: dict[tuple[int, int], int] = {}  # (node, generation) -> start time
        self.left_published: set[tuple[int, int]] = set()
        self.unlanded: dict[tuple[int, int], set] = defaultdict(set)  # (node, inc) -> MMP write ids to land
        self.self_fenced_at: dict[tuple[int, int], int] = {}  # (node, inc) -> when it emitted SelfFence
        self.read_only_at: dict[tuple[int, int], int] = {}  # (node, inc) -> its first SELF_FENCED+READ_ONLY beat
        self.stats = defaultdict(int)

    def fail(self, rule: str, text: str) -> None:
        self.w.log(f"VIOLATION {rule}: {text}")
        raise Violation(rule, text)

    # -- lifecycle ---------------------------------------------------------------------------------------

    def started(self, node, inc) -> None:
        self.started_at[(node.node_id, inc.generation)] = self.w.now
        self.stats["incarnations"] += 1

    # -- I1, I2 ------------------------------------------------------------------------------------------

    def act_starts(self, node, inc, act) -> None:
        now = self.w.now
        if (node.node_id, inc.number) in self.read_only_at:
            self.fail("SF-READ-ONLY", f"{node.name} (incarnation {inc.number}) promised READ_ONLY at"
                                      f" {self.read_only_at[(node.node_id, inc.number)]} and its consumer"
                                      f" now acts on {act.resource} epoch {act.epoch}")
        for other in self.acts[act.resource]:
            n, i, epoch, start, end = other
            if end is None or end > now:
                self.fail("I1", f"{node.name} (incarnation {inc.number}) acts on {act.resource} epoch {act.epoch}"
                                f" while n{n} (incarnation {i}) acts on it with epoch {epoch} since {start}"
                                f" (until {'now' if end is None else end})")
        if act.epoch <= self.max_epoch.get(act.resource, 0):
            self.fail("I2", f"{node.name} got {act.resource} at epoch {act.epoch}, not above"
                            f" {self.max_epoch[act.resource]} granted before")
        self.max_epoch[act.resource] = act.epoch
        self.acts[act.resource] = [a for a in self.acts[act.resource] if a[4] is None or a[4] > now - 60_000]
        self.acts[act.resource].append([node.node_id, inc.number, act.epoch, now, None])
        self.stats["grants"] += 1

    def act_stops(self, node, act, t: int) -> None:
        for a in self.acts[act.resource]:
            if a[0] == node.node_id and a[2] == act.epoch and a[4] is None:
                a[4] = t

    def act_stops_sooner(self, node, act, t: int) -> None:
        """A consumer whose stop was under way (its enforcer's kill) is gone at t already."""
        for a in self.acts[act.resource]:
            if a[0] == node.node_id and a[2] == act.epoch and a[4] is not None and a[4] > t:
                a[4] = t

    # -- I3 ----------------------------------------------------------------------------------------------

    def left(self, node, inc, region: str) -> None:
        key = (node.node_id, inc.generation)
        if key in self.left_published:
            return
        self.left_published.add(key)
        self.stats["leaves"] += 1
        if inc.core.held:
            self.fail("I3", f"{node.name} publishes LEFT while its core still has {sorted(inc.core.held)}")
        if node.acts:
            self.fail("I3", f"{node.name} publishes LEFT while its consumers act on {sorted(node.acts)}")
        if self.unlanded[(node.node_id, inc.number)]:
            self.fail("I3", f"{node.name} publishes LEFT with an MMP write still to land")

    def mmp_write(self, node, inc, req, issue: int) -> None:
        self.unlanded[(node.node_id, inc.number)].add(req.id)

    def mmp_landed(self, node, inc, req) -> None:
        key = (node.node_id, inc.number)
        self.unlanded[key].discard(req.id)
        if key in self.read_only_at:
            self.fail("SF-READ-ONLY", f"{node.name} (incarnation {inc.number}) promised READ_ONLY at"
                                      f" {self.read_only_at[key]}, and its MMP write at offset {req.offset}"
                                      f" lands after it")

    # -- SF-NO-WRITE, SF-READ-ONLY, FENCE-QUORATE ---------------------------------------------------

    def self_fenced(self, node, inc, action) -> None:
        self.self_fenced_at.setdefault((node.node_id, inc.number), self.w.now)

    def write_after_self_fence(self, node, inc, req) -> None:
        self.fail("SF-NO-WRITE", f"{node.name} (incarnation {inc.number}) fenced itself at"
                                 f" {self.self_fenced_at.get((node.node_id, inc.number))} and now issues an MMP"
                                 f" write at offset {req.offset}")

    def read_only(self, node, inc) -> None:
        key, now = (node.node_id, inc.number), self.w.now
        if key in self.read_only_at:
            return
        self.read_only_at[key] = now
        self.stats["read_only_promises"] += 1
        for resource, acts in self.acts.items():
            for n, i, epoch, start, end in acts:
                if n == node.node_id and i == inc.number and (end is None or end > now):
                    self.fail("SF-READ-ONLY", f"{node.name} (incarnation {inc.number}) publishes SELF_FENCED,"
                                              f" READ_ONLY while its consumer acts on {resource} epoch {epoch}"
                                              f" (until {'now' if end is None else end})")

    def fence_order(self, node, inc, action) -> None:
        self.stats["fences_ordered"] += 1
        q = inc.core.quorum.last if inc.core.quorum is not None else None
        if q is None or not q.quorate:
            self.fail("FENCE-QUORATE", f"{node.name} orders n{action.node_id} ({action.generation:#x}) fenced"
                                       f" ({action.reason}) while not quorate:"
                                       f" {'not judged yet' if q is None else q.reason}")


    # -- I4, I5 --------------------------------------------------------------------------------------

    def beat_landed(self, node, region: str, t: int, value) -> None:
        self.landings[(node.node_id, region)].append(t)

    def read_done(self, observer, region: str, latency_ms: int) -> None:
        self.read_lat[(observer.node_id, region)].append((self.w.now, latency_ms))

    def packet(self, receiver, packet, replayed: bool) -> None:
        if replayed:
            self.stats["replays_accepted"] += 1

    def event(self, node, inc, ev) -> None:
        if isinstance(ev, NodeRestarted):
            old = self.started_at.get((ev.node_id, ev.old_generation))
            new = self.started_at.get((ev.node_id, ev.new_generation))
            if new is None or (old is not None and new < old):
                self.fail("I4", f"{node.name} believes n{ev.node_id} restarted from {ev.old_generation:#x} to"
                                f" {ev.new_generation:#x}, which is not a newer incarnation")
        elif isinstance(ev, NodeStateChanged):
            if ev.new is NodeState.LEFT and (ev.node_id, ev.generation) not in self.left_published:
                self.fail("I4", f"{node.name} believes n{ev.node_id} left under generation"
                                f" {ev.generation:#x}, which never published LEFT")
            elif ev.new is NodeState.DEAD:
                self.stats["deaths"] += 1
                self._dead(node, inc, ev)
        elif isinstance(ev, MmpEvent):
            self.stats[f"mmp_{ev.what}"] += 1
            if ev.what == "acquired" and "stopped writing (fenced, or read-only)" in ev.text:
                self.stats["fp0_takeovers"] += 1  # fast path FP0: taken over at once
        elif isinstance(ev, SelfFenced):
            self.stats[f"self_fence_{ev.reason}"] += 1
        elif isinstance(ev, FenceOutcome) and ev.ok:
            self.stats[f"fenced_{ev.method}"] += 1

    def _dead(self, observer, inc, ev) -> None:
        w, now = self.w, self.w.now
        dead_ms = w.profile.dead_ms
        view = inc.core.liveness.node(ev.node_id)
        # only the regions that know the node's current generation decided its death (a region
        # still waiting for a restarted node's new generation there is no evidence either way)
        regions = [r for r, rv in view.regions.items() if rv.generation == view.generation] if view else []
        for region in regions:
            key_region = "disk" if region == "disk" else f"net>{observer.node_id}"
            lands = self.landings[(ev.node_id, key_region)]
            lat = [ms for t, ms in self.read_lat[(observer.node_id, region)] if t >= now - 2 * dead_ms]
            need = dead_ms - (max(lat) if lat else 0) - 5
            start = now - 2 * dead_ms
            prev = max((t for t in lands if t <= start), default=None)
            times = [t for t in lands if start < t <= now]
            edges = ([prev] if prev is not None else [start]) + times + [now]
            gap = max(b - a for a, b in zip(edges, edges[1:]))
            if gap < need:
                self.w.log(f"I5 detail: {observer.name}'s view of n{ev.node_id}: {view}; sampled"
                           f" { {n: h.sampled_ms for n, h in inc.core.health.items()} }")
                self.fail("I5", f"{observer.name} declares n{ev.node_id} dead, but on {region} its beats landed"
                                f" with gaps of at most {gap} ms in the last {2 * dead_ms} ms (needs {need})")
