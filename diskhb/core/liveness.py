"""Who is alive: the liveness rules of diskhb, free of I/O.

Everything that decides whether a node is alive, dead, left or restarted lives in this file.
This file does not know what a region is made of (disk slot, datagram, serial frame): it sees
observations (Beat, BadSample) and the caller's monotonic `now_ms`, and returns events.

Rules, per (node, region):
  R1  A valid sample whose (generation, seq) differs from the previous one of that region is an
      ADVANCE. Only an advance refreshes liveness: an unchanged sample is no news.
  R2  UNKNOWN -> ALIVE on the first advance. The first sample of a node is only a baseline
      (a slot left by a crashed daemon looks exactly like a live one until it fails to move).
  R3  ALIVE or UNKNOWN -> DEAD when nothing advanced for dead_ms (for UNKNOWN: since we started
      watching). The clock is ours: writers' clocks are never compared with ours.
  R4  A sample carrying LEFT -> LEFT (stopped cleanly: not dead, its storage was released).
  R5  A generation different from the known one (both non-zero) is a RESTART: the old
      incarnation is gone. It is reported once (NodeRestarted) and applies to every region at
      once: the other regions adopt the new generation and wait for it to advance there too.
      The first sample of a new generation is itself proof of a live writer: ALIVE at once.
  R6  A BadSample (bad checksum, torn write, wrong magic) is a missed beat: counted, never an
      advance, never a state change by itself.
Across regions (Heartbeat's "scope of heartbeat", seed 003):
  X1  Overall ALIVE if any region sees the node ALIVE.
  X2  Else LEFT if any region saw the current generation publish LEFT.
  X3  Else DEAD only when every region that knows the node says DEAD.
  X4  Else UNKNOWN.
  A region losing a node that another region still sees alive changes only that region's state
  (RegionNodeChanged: a log line and a metric), never the overall state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from diskhb.core.types import (
    GENERATION_NONE,
    NODE_ID_MAX,
    BadSample,
    Beat,
    BeatBatch,
    NodeState,
    Observation,
    SlotFlag,
)

_LEFT = int(SlotFlag.LEFT)
REGIONS_MAX = 32  # o2hb's global-heartbeat limit; a bound on per-node state
OLD_GENERATIONS_MAX = 8  # remembered so a slow region's stale sample is not a "restart back"
EVENTS_MAX = 4 * NODE_ID_MAX * 2  # a tick can at most change every node twice per region kind


@dataclass(frozen=True, slots=True)
class NodeStateChanged:
    node_id: int
    name: str
    old: NodeState
    new: NodeState
    region: str  # the region whose observation or deadline caused the change
    age_ms: int  # ms since the node last advanced on any region
    reason: str


@dataclass(frozen=True, slots=True)
class RegionNodeChanged:
    node_id: int
    name: str
    region: str
    old: NodeState
    new: NodeState
    age_ms: int


@dataclass(frozen=True, slots=True)
class NodeRestarted:
    node_id: int
    name: str
    region: str
    old_generation: int
    new_generation: int


Event = NodeStateChanged | RegionNodeChanged | NodeRestarted


@dataclass(frozen=True, slots=True)
class RegionView:
    state: NodeState
    seq: int
    generation: int
    flags: int
    age_ms: int
    bad_samples: int


@dataclass(frozen=True, slots=True)
class NodeView:
    node_id: int
    name: str
    state: NodeState
    generation: int
    seq: int
    flags: int
    age_ms: int
    regions: dict[str, RegionView]


@dataclass(slots=True)
class _Track:
    """One node as one region sees it."""

    state: NodeState = NodeState.UNKNOWN
    generation: int = GENERATION_NONE
    seq: int = 0
    flags: int = 0
    since_ms: int = 0  # last advance, or start of watching (R3)
    bad_samples: int = 0


@dataclass(slots=True)
class _Node:
    node_id: int
    name: str = ""
    state: NodeState = NodeState.UNKNOWN
    generation: int = GENERATION_NONE
    seq: int = 0
    flags: int = 0
    advanced_ms: int = 0  # last advance on any region (or first sight)
    tracks: dict[str, _Track] = field(default_factory=dict)
    old_generations: list[int] = field(default_factory=list)  # bounded by OLD_GENERATIONS_MAX


class Liveness:
    def __init__(self, *, self_id: int, interval_ms: int, dead_ms: int):
        assert 0 <= self_id <= NODE_ID_MAX
        assert 0 < interval_ms and 2 * interval_ms < dead_ms
        self.self_id = self_id
        self.interval_ms = interval_ms
        self.dead_ms = dead_ms
        self._nodes: dict[int, _Node] = {}
        self._regions: set[str] = set()
        self._alive: dict[str, set[int]] = {}  # region -> ids it sees ALIVE (kept by _set_track)
        self._events: list[Event] = []
        self._now_ms: int | None = None

    # -- input -------------------------------------------------------------------------------

    def observe(self, now_ms: int, obs: Observation) -> None:
        if isinstance(obs, BeatBatch):
            self._observe_batch(now_ms, obs)
            return
        self._advance_clock(now_ms)
        if obs.node_id == self.self_id:
            return
        if not 1 <= obs.node_id <= NODE_ID_MAX:
            raise ValueError(f"node id {obs.node_id} out of range")
        if obs.region not in self._regions:
            if len(self._regions) >= REGIONS_MAX:
                raise ValueError(f"more than {REGIONS_MAX} regions")
            self._regions.add(obs.region)
        node = self._nodes.get(obs.node_id)
        if node is None:
            node = self._nodes[obs.node_id] = _Node(obs.node_id, advanced_ms=now_ms)
        track = node.tracks.get(obs.region)
        if isinstance(obs, BadSample):  # R6
            if track is None:
                track = node.tracks[obs.region] = _Track(since_ms=now_ms)
            track.bad_samples += 1
            return
        assert isinstance(obs, Beat)
        if obs.generation == GENERATION_NONE:
            return  # never written: nothing to know
        if (track is not None and track.state is NodeState.ALIVE and node.state is NodeState.ALIVE
                and obs.generation == track.generation and not obs.flags & _LEFT):
            # Fast path, the common case of every tick: a live node beating on. Same outcome as
            # the general path below (R1 refresh or no news), without re-settling X1-X4.
            if obs.seq != track.seq:
                track.seq, track.since_ms = obs.seq, now_ms
                node.seq, node.advanced_ms = obs.seq, now_ms
            track.flags = node.flags = obs.flags
            return
        if obs.name:
            node.name = obs.name
        if track is None:
            track = node.tracks[obs.region] = _Track(since_ms=now_ms)
        self._on_beat(now_ms, node, track, obs)
        self._settle(now_ms, node, obs.region, "")

    def _observe_batch(self, now_ms: int, batch: BeatBatch) -> None:
        """Same rules as observe() row by row; the fast path is inlined for the common case."""
        self._advance_clock(now_ms)
        region, nodes, alive = batch.region, self._nodes, NodeState.ALIVE
        rows = zip(batch.node_ids, batch.generations, batch.seqs, batch.flags, batch.names)
        for node_id, generation, seq, flags, name in rows:
            node = nodes.get(node_id)
            track = node.tracks.get(region) if node is not None else None
            if (track is not None and track.state is alive and node.state is alive
                    and generation == track.generation and not flags & _LEFT):
                if seq != track.seq:
                    track.seq, track.since_ms = seq, now_ms
                    node.seq, node.advanced_ms = seq, now_ms
                track.flags = node.flags = flags
            else:
                self.observe(now_ms, Beat(node_id, region, generation, seq, flags, name))

    def _on_beat(self, now_ms: int, node: _Node, track: _Track, beat: Beat) -> None:
        region = beat.region
        if node.generation not in (GENERATION_NONE, beat.generation):  # R5
            # A sample of an incarnation older than the node's newest is a stale region view
            # (a slow medium), not a restart back: only a generation we have not seen restarts.
            if beat.generation in node.old_generations:
                return
            old = node.generation
            node.old_generations = (node.old_generations + [old])[-OLD_GENERATIONS_MAX:]
            self._events.append(NodeRestarted(node.node_id, node.name, region, old, beat.generation))
            node.generation = beat.generation
            for r, t in node.tracks.items():
                if t is not track:
                    t.generation = beat.generation
                    t.seq = 0
                    t.flags = 0
                    self._set_track(node, r, t, NodeState.UNKNOWN, now_ms)
                    t.since_ms = now_ms
            self._take(now_ms, node, track, beat, advanced=True)
            return
        if node.generation == GENERATION_NONE:
            node.generation = beat.generation
        if track.generation == GENERATION_NONE:  # R2 baseline
            track.generation, track.seq, track.flags = beat.generation, beat.seq, beat.flags
            node.seq = max(node.seq, beat.seq)
            node.flags = beat.flags
            if beat.flags & _LEFT:
                self._set_track(node, region, track, NodeState.LEFT, now_ms)
            return
        changed = (beat.generation, beat.seq) != (track.generation, track.seq)
        self._take(now_ms, node, track, beat, advanced=changed)

    def _take(self, now_ms: int, node: _Node, track: _Track, beat: Beat, advanced: bool) -> None:
        track.generation, track.seq, track.flags = beat.generation, beat.seq, beat.flags
        node.flags = beat.flags
        node.seq = beat.seq
        if beat.flags & _LEFT:  # R4
            self._set_track(node, beat.region, track, NodeState.LEFT, now_ms)
            return
        if advanced:  # R1, R2
            track.since_ms = now_ms
            node.advanced_ms = now_ms
            self._set_track(node, beat.region, track, NodeState.ALIVE, now_ms)

    # -- deadlines ---------------------------------------------------------------------------

    def tick(self, now_ms: int) -> list[Event]:
        self._advance_clock(now_ms)
        for node in self._nodes.values():
            for region, track in node.tracks.items():
                if track.state in (NodeState.ALIVE, NodeState.UNKNOWN) and track.generation != GENERATION_NONE \
                        and now_ms - track.since_ms >= self.dead_ms:  # R3
                    self._set_track(node, region, track, NodeState.DEAD, now_ms)
                    self._settle(now_ms, node, region, f"no heartbeat for {now_ms - track.since_ms} ms")
        events, self._events = self._events, []
        assert len(events) <= EVENTS_MAX
        return events

    # -- state -------------------------------------------------------------------------------

    def _set_track(self, node: _Node, region: str, track: _Track, new: NodeState, now_ms: int) -> None:
        if track.state is new:
            return
        old, track.state = track.state, new
        alive = self._alive.setdefault(region, set())
        if new is NodeState.ALIVE:
            alive.add(node.node_id)
        else:
            alive.discard(node.node_id)
        self._events.append(RegionNodeChanged(node.node_id, node.name, region, old, new,
                                              now_ms - node.advanced_ms))

    def _settle(self, now_ms: int, node: _Node, region: str, reason: str) -> None:
        """Apply X1-X4 and report a change of the overall state."""
        states = [t.state for t in node.tracks.values() if t.generation != GENERATION_NONE]
        if NodeState.ALIVE in states:
            new = NodeState.ALIVE
        elif NodeState.LEFT in states:
            new = NodeState.LEFT
        elif states and all(s is NodeState.DEAD for s in states):
            new = NodeState.DEAD
        else:
            new = NodeState.UNKNOWN
        if new is node.state:
            return
        old, node.state = node.state, new
        if not reason:
            reason = {NodeState.ALIVE: "heartbeat advancing", NodeState.LEFT: "left cleanly",
                      NodeState.UNKNOWN: "restarted, waiting for its heartbeat",
                      NodeState.DEAD: "no heartbeat"}[new]
        self._events.append(NodeStateChanged(node.node_id, node.name, old, new, region,
                                             now_ms - node.advanced_ms, reason))

    def _advance_clock(self, now_ms: int) -> None:
        assert self._now_ms is None or now_ms >= self._now_ms, "monotonic time went backwards"
        self._now_ms = now_ms

    # -- views -------------------------------------------------------------------------------

    def alive_by_region(self) -> dict[str, tuple[int, ...]]:
        """The sender view published in heartbeats: per region, the ids it sees alive."""
        return {r: tuple(sorted(ids)) for r, ids in sorted(self._alive.items()) if ids}

    def node(self, node_id: int) -> NodeView | None:
        node = self._nodes.get(node_id)
        return None if node is None else self._view(node)

    def nodes(self) -> list[NodeView]:
        return [self._view(n) for _, n in sorted(self._nodes.items())]

    def _view(self, node: _Node) -> NodeView:
        now = self._now_ms or 0
        regions = {
            r: RegionView(t.state, t.seq, t.generation, t.flags, now - t.since_ms, t.bad_samples)
            for r, t in sorted(node.tracks.items())
        }
        return NodeView(node.node_id, node.name, node.state, node.generation, node.seq, node.flags,
                        now - node.advanced_ms, regions)
