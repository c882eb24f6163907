"""Who is alive: the liveness rules of diskhb, free of I/O.

Everything that decides whether a peer is alive, dead, left or restarted lives in this file and
nowhere else. This file does not know what a region is made of (disk slot, datagram, serial
frame) nor how it is read: it takes observations (Beat, BadSample, BeatBatch) with the caller's
monotonic `now_ms`, and hands out events from tick(). No os, time or threading here; a writer's
clock is never compared with ours: only a change of what it wrote counts.

Words: a *track* is one node as one region sees it. An *advance* is proof of a live writer.
A node's seq is one counter across its regions (the daemon writes the same seq everywhere).
A region *looked* at tick()'s now_ms or, for a region in tick()'s `sampled_ms`, when its newest
completed read was submitted. A *candidate* is a generation other than the node's current one,
as one region shows it (R5).

Per (node, region), the track:
  R1  ADVANCE: a valid sample of the node's current generation whose seq differs from the
      previous sample of it on that region. Only an advance refreshes liveness; an unchanged
      sample is no news, whatever its flags.
  R2  BASELINE: the first sample of a generation on a region is only a baseline: a slot left
      behind by a crashed daemon, or a replayed recording, looks exactly like a live one until
      it fails to move. The node's first generation is taken from its first sample (a baseline
      like any: UNKNOWN); every later one has to win as a candidate (R5).
  R3  DEADLINE: UNKNOWN or ALIVE -> DEAD when the region has shown no advance for dead_ms, from
      the last advance (from the baseline for UNKNOWN) to the moment the region last looked:
      a region we cannot read, or a stalled tick, kills nobody. (After such a gap the next
      valid sample decides at once; a corrupt one decides nothing: R6.) But -> UNKNOWN instead
      while a candidate was new or moved on that region less than dead_ms before it looked:
      something of that node id still writes there, a restart not adopted yet is no death.
      That holds for a DEAD track too once the candidate moved there (DEAD -> UNKNOWN, and DEAD
      again once it has not moved for dead_ms; its first sample alone proves nothing, as one
      replayed packet looks the same): the old incarnation died there, then the node restarted,
      and R5 may be unable to adopt the restart for a while (a stale region that cannot
      testify); judged DEAD, the region would declare the node dead when that stale region
      came back, however recently the new incarnation beat (the simulator's seed 1278253).
      A replay of another generation could keep a region UNKNOWN this way, as it already could
      an ALIVE one: that delays a fence (a denial of service), never lets a node write twice.
  R4  LEFT: a sample of the current generation carrying LEFT -> LEFT on every region that knows
      the node, at once: this incarnation stopped cleanly and released its storage; it is not
      dead. It counts only from an incarnation seen advancing in this process's lifetime: the
      generation advanced (R1) before that sample, and no other generation of the node moved
      (R5) on any region within restart_quiet_ms (two incarnations at once: a replay, believe
      neither's LEFT). Otherwise the sample is taken as if it had no LEFT (its flags are still
      shown; a LEFT read in a baseline says nothing). A sample at or below the LEFT seq is a
      slower region catching up (ignored); an advance past it without LEFT is a live writer
      again (ALIVE); a new generation is a rejoin (R5).
  R5  RESTART: a sample of a generation other than the node's (both non-zero) is a candidate on
      its region only: it changes nothing else (no event, no other region, its flags unread);
      the track remembers the candidate's generation, seq and flags, when it was first seen and
      when it last moved (showed another seq of that generation). It is adopted when it moves
      while the current generation is quiet, or at the first tick that finds the current one
      quiet if it moved less than restart_quiet_ms before (the restart that then stops at once).
      Quiet: on every region that knows the node, the region looked restart_quiet_ms or more
      after the current generation's last advance (or baseline, or restart) there, and no such
      region is stale with the node UNKNOWN there (R8: it cannot testify). Adopting: one
      NodeRestarted; every other region that knows the node waits for the new generation
      (UNKNOWN, baseline pending, deadline from now) or, if it shows it as a candidate too,
      takes that sample as its baseline (UNKNOWN, deadline from when it last showed something
      new of it); the candidate's newest sample is an advance (ALIVE on its region), and a LEFT
      on it counts only if the candidate had moved before it. A real restart silences the old
      incarnation everywhere at once, so it waits restart_quiet_ms once; a recording replayed
      (netpath.replay P4b) while the node is seen beating on any region never wins, however
      many packets. A generation the node had before (a slow region's stale view, an
      incarnation we missed) is a candidate like any other: it cannot win while the current one
      beats, and it wins back once that one is quiet (which is how a replay adopted while the
      node was silent everywhere is undone when it stops). Except a generation this observer
      saw publish LEFT (counted, R4): it writes nothing more (node core N5), so its samples are
      a replay or a stale region, never a candidate (the simulator's seed 152528: a replayed
      left incarnation adopted back lent its node a quorum vote for a dead time).
  R6  BAD: a BadSample (bad checksum, torn write, wrong magic) is counted per (node, region)
      for metrics; never an advance, never knowledge, and no proof of silence either: the slot
      changed into something we cannot read, and what landed there since our last valid sample
      is unknown (the whole-cluster simulator found the death this rule prevents: an observer
      frozen 5.4 s read one torn slot on waking and declared its writer dead, which had landed
      beats all along). So from a track's first bad sample after a valid one until its next
      valid one, R3 judges it only up to that last valid sample, and once the region has looked
      dead_ms past it the track is UNKNOWN ("unreadable"), as a stale region's (R8).
  R7  IGNORED: samples of our own id (our slot is judged by region health, not here) and of
      generation 0 (never written; regions do not report it, the rule is kept anyway).
  R8  STALE: a region that has not looked for dead_ms (at a tick: now_ms - sampled_ms[region]
      >= dead_ms) is stale until a tick finds it looked within dead_ms. Evidence that old is no
      proof of life and no proof of death: its ALIVE and DEAD tracks -> UNKNOWN ("stale: region
      not read for N ms"), never DEAD on it (a DEAD reached while it was fresh does not stand
      either: the node may have been writing there since, unseen; together with another
      region's fresh DEAD it would declare a node dead that beats — the whole-cluster simulator
      found that); an advance read there meanwhile (a hung read completing with what it read
      long ago) moves the deadline but makes the track UNKNOWN, never ALIVE; LEFT stays (a
      promise the node made). Once it is fresh again the next sample decides (R1-R3: no advance
      since the last one for dead_ms is DEAD again at once).
      Downstream: a node whose only evidence is stale is UNKNOWN: never a fencing victim, never
      a reason for the MMP fast path to refuse (those consumers live elsewhere).
Across the regions that know the node (have a valid sample of it), Heartbeat's "scope":
  X1  ALIVE if any region sees it ALIVE.
  X2  else LEFT if any region saw the current generation publish LEFT.
  X3  else DEAD if every region says DEAD.
  X4  else UNKNOWN.
  So a region losing a node that another region still sees alive is a RegionNodeChanged only,
  and ALIVE needs a region with fresh evidence (R8) seeing the node advance.
Limits: node ids 1..NODE_ID_MAX and REGIONS_MAX regions (ValueError beyond); one candidate per
track (a newer one replaces it); OLD_GENERATIONS_MAX generations remembered per node (history,
for the restart reason); restart_quiet_ms = timing.restart_quiet_ms(interval_ms); EVENTS_MAX
events between two ticks (more are dropped and counted in events_dropped: states stay right,
only the history is cut).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from diskhb.core import timing
from diskhb.core.record import record
from diskhb.core.types import (
    GENERATION_NONE,
    NODE_ID_MAX,
    BadSample,
    Beat,
    BeatBatch,
    NodeState,
    Observation,
    Peer,
    SlotFlag,
)

REGIONS_MAX = 32  # o2hb's global-heartbeat limit; bounds the per-node state
OLD_GENERATIONS_MAX = 8  # generations a node had before, for the restart reason (R5)
EVENTS_MAX = NODE_ID_MAX * (REGIONS_MAX + 2)  # every track, node state and restart once per tick
# R5, R4: how long the current generation must have shown no advance on every region before
# another one is adopted: timing.restart_quiet_ms (one place for every duration, with the why).

_LEFT_FLAG = int(SlotFlag.LEFT)
_U, _A, _D, _L = NodeState.UNKNOWN, NodeState.ALIVE, NodeState.DEAD, NodeState.LEFT


# -- events and views (what callers see) -------------------------------------------------------


@record
class NodeStateChanged:
    """The overall state (X1-X4) of a node changed."""

    node_id: int
    name: str
    old: NodeState
    new: NodeState
    region: str  # the region whose observation or deadline caused the change
    age_ms: int  # ms since the node last advanced on any region
    reason: str
    generation: int = 0  # the incarnation the new state is about


@record
class RegionNodeChanged:
    """One region's view of a node changed (R1-R5, R8)."""

    node_id: int
    name: str
    region: str
    old: NodeState
    new: NodeState
    age_ms: int  # ms since the node last advanced on this region


@record
class NodeRestarted:
    """A candidate generation was adopted (R5)."""

    node_id: int
    name: str
    region: str  # the region on which the new generation was seen moving while the old was quiet
    old_generation: int
    new_generation: int


Event = NodeStateChanged | RegionNodeChanged | NodeRestarted


@record
class RegionView:
    state: NodeState
    seq: int  # 0 until the region has a sample of the current generation
    generation: int
    flags: int
    age_ms: int  # since the last advance on this region (or the baseline, or the restart)
    bad_samples: int
    stale: bool = False  # R8: the region has not looked for dead_ms (as of the last tick)
    candidate: int = GENERATION_NONE  # R5: another generation this region shows (NONE: none)


@record
class NodeView:
    node_id: int
    name: str
    state: NodeState
    generation: int
    seq: int  # the newest (highest) seq of the current generation on any region
    flags: int  # of that newest sample
    age_ms: int  # since the last advance on any region (or since first sight)
    regions: dict[str, RegionView]


# -- the transitions, all in one place ---------------------------------------------------------


class _Trigger(enum.Enum):
    ADVANCE = "advance"  # R1; R5 on the region whose sample adopted the new generation
    ADVANCE_STALE = "advance on a stale region"  # R8: the writer moved, but when is unknown
    LEFT = "left"  # R4, on every region that knows the node
    DEADLINE = "deadline"  # R3
    DEADLINE_CANDIDATE = "deadline, a candidate writes"  # R3 while a candidate is new or moving there
    RESTART = "restart"  # R5, on the other regions: wait for the new generation there
    STALE = "stale"  # R8, at a tick


def _row(*to: NodeState | None) -> dict[NodeState, NodeState | None]:
    return dict(zip((_U, _A, _D, _L), to))


# A track's next state, by trigger and current state; None: the trigger does nothing there.
_TRANSITIONS: dict[_Trigger, dict[NodeState, NodeState | None]] = {
    #                             from: UNKNOWN  ALIVE  DEAD  LEFT
    _Trigger.ADVANCE: _row(_A, _A, _A, _A),
    _Trigger.ADVANCE_STALE: _row(_U, _U, _U, None),
    _Trigger.LEFT: _row(_L, _L, _L, _L),
    _Trigger.DEADLINE: _row(_D, _D, None, None),
    _Trigger.DEADLINE_CANDIDATE: _row(_U, _U, _U, None),
    _Trigger.RESTART: _row(_U, _U, _U, _U),
    _Trigger.STALE: _row(_U, _U, _U, None),
}


def overall_state(states: list[NodeState]) -> NodeState:
    """X1-X4, over the states of the regions that know the node."""
    if _A in states:
        return _A
    if _L in states:
        return _L
    if states and all(s is _D for s in states):
        return _D
    return _U


# -- internal state ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Track:
    """One node as one region sees it."""

    state: NodeState = _U
    generation: int = GENERATION_NONE  # NONE: no valid sample here yet (the region does not know it)
    seq: int | None = None  # None: baseline pending (R2)
    flags: int = 0
    since_ms: int = 0  # last advance, baseline or restart: where the deadline (R3) counts from
    bad_samples: int = 0
    seen_ms: int = 0  # the newest valid sample of the current generation here (R6)
    blind_ms: int | None = None  # R6: reads bad since the valid sample seen then (None: readable)
    # R5: another generation this region shows (NONE: none): its newest seq and flags here, when
    # it was first seen here, how often and when it last showed another seq here (moved).
    cand_generation: int = GENERATION_NONE
    cand_seq: int = 0
    cand_flags: int = 0
    cand_first_ms: int = 0
    cand_moves: int = 0
    cand_moved_ms: int = 0  # meaningful once cand_moves > 0

    @property
    def cand_news_ms(self) -> int:
        """When the candidate last showed something new here (first sight or a move): R3."""
        return self.cand_moved_ms if self.cand_moves else self.cand_first_ms


@dataclass(slots=True)
class _Node:
    node_id: int
    name: str = ""
    state: NodeState = _U
    generation: int = GENERATION_NONE
    seq: int = 0  # newest (highest) seq of the current generation on any region
    flags: int = 0  # flags of that sample
    advanced_ms: int = 0  # last advance on any region (first sight until then)
    moved: bool = False  # R4: the current generation advanced (R1) in this process's lifetime
    left_seq: int | None = None  # R4: the seq at which the current generation published LEFT
    tracks: dict[str, _Track] = field(default_factory=dict)
    old_generations: list[int] = field(default_factory=list)  # at most OLD_GENERATIONS_MAX, newest last
    left_generations: list[int] = field(default_factory=list)  # R5: seen publishing LEFT (counted, R4), newest last


class Liveness:
    def __init__(self, self_id: int, interval_ms: int, dead_ms: int):
        # self_id 0 is an observer with no slot of its own (`diskhb status` sampling a disk).
        if not 0 <= self_id <= NODE_ID_MAX:
            raise ValueError(f"own node id {self_id} outside 0..{NODE_ID_MAX}")
        if not 0 < interval_ms or not 2 * interval_ms < dead_ms:
            raise ValueError(f"dead_ms {dead_ms} must exceed 2 x interval_ms {interval_ms} (> 0)")
        self.self_id = self_id
        self.interval_ms = interval_ms
        self.dead_ms = dead_ms
        self.restart_quiet_ms = timing.restart_quiet_ms(interval_ms)  # R4, R5
        self.events_dropped = 0  # events lost to EVENTS_MAX (a caller that never ticks)
        self._nodes: dict[int, _Node] = {}
        self._regions: set[str] = set()
        self._alive: dict[str, set[int]] = {}  # region -> ids it sees ALIVE (kept by _move)
        self._sampled: dict[str, int] = {}  # the last tick's sampled_ms: when those regions looked
        self._stale: set[str] = set()  # R8, as of the last tick
        self._events: list[Event] = []
        self._now_ms: int | None = None

    # -- input -------------------------------------------------------------------------------

    def observe(self, now_ms: int, obs: Observation) -> None:
        """Take one observation of any region. Events come out of the next tick()."""
        if isinstance(obs, BeatBatch):
            self._observe_batch(now_ms, obs)
            return
        self._advance_clock(now_ms)
        if obs.node_id == self.self_id or (isinstance(obs, Beat) and obs.generation == GENERATION_NONE):
            return  # R7
        node, track = self._track(now_ms, obs.node_id, obs.region)
        if isinstance(obs, BadSample):  # R6
            track.bad_samples += 1
            if track.blind_ms is None and track.generation != GENERATION_NONE:
                track.blind_ms = track.seen_ms
            return
        assert isinstance(obs, Beat), obs
        self._on_beat(now_ms, node, track, obs)

    def _observe_batch(self, now_ms: int, batch: BeatBatch) -> None:
        """Same rules as observe() row by row. The common case of every tick, a live node beating
        on in its generation, is inlined; its outcome is exactly _on_beat's for that case."""
        self._advance_clock(now_ms)
        region, nodes = batch.region, self._nodes
        rows = zip(batch.node_ids, batch.generations, batch.seqs, batch.flags, batch.names)
        for node_id, generation, seq, flags, name in rows:
            node = nodes.get(node_id)
            track = node.tracks.get(region) if node is not None else None
            if (track is not None and track.state is _A and node.state is _A and track.blind_ms is None
                    and generation == track.generation and not flags & _LEFT_FLAG):
                # ALIVE node: left_seq is None; ALIVE track: its seq is known, its generation the
                # node's, its region not stale (R8), and the node has moved (R4).
                if seq != track.seq:  # R1
                    track.seq, track.since_ms, node.advanced_ms = seq, now_ms, now_ms
                track.flags, track.seen_ms = flags, now_ms
                if seq >= node.seq:
                    node.seq, node.flags = seq, flags
                if name:
                    node.name = name
            else:
                self.observe(now_ms, Beat(node_id, region, generation, seq, flags, name))

    def _on_beat(self, now_ms: int, node: _Node, track: _Track, beat: Beat) -> None:
        region, generation, seq, flags = beat.region, beat.generation, beat.seq, beat.flags
        assert generation != GENERATION_NONE  # R7, in observe()
        if beat.name:
            node.name = beat.name
        if node.generation == GENERATION_NONE:  # R2: the first generation, a baseline like any
            node.generation = generation
        elif generation != node.generation:  # R5: a candidate, on this region only
            if generation in node.left_generations:
                return  # R5: it left cleanly before our eyes and writes nothing more (N5): a replay or a stale region
            if track.cand_generation != generation:
                track.cand_generation, track.cand_seq, track.cand_flags = generation, seq, flags
                track.cand_first_ms, track.cand_moves = now_ms, 0
            elif seq != track.cand_seq:  # it moved
                track.cand_seq, track.cand_flags = seq, flags
                track.cand_moves, track.cand_moved_ms = track.cand_moves + 1, now_ms
                if self._quiet(now_ms, node):
                    self._adopt(now_ms, node, region, track)
            return
        elif node.left_seq is not None and seq <= node.left_seq and not flags & _LEFT_FLAG:
            return  # R4: a slower region still shows the beats before LEFT
        self._apply(now_ms, node, region, track, seq, flags)

    def _adopt(self, now_ms: int, node: _Node, region: str, track: _Track) -> None:
        """R5: the candidate on `track` moved and the current generation is quiet: adopt it, its
        newest sample here (seen at cand_moved_ms) being the advance that proves it."""
        seq, flags, seen_ms = track.cand_seq, track.cand_flags, track.cand_moved_ms
        moved_before = track.cand_moves >= 2  # R4: a LEFT on the adopting sample needs an earlier move
        why = self._restart(now_ms, node, region, track.cand_generation)
        node.moved = moved_before
        self._apply(now_ms, node, region, track, seq, flags, why, seen_ms)

    def _apply(self, now_ms: int, node: _Node, region: str, track: _Track, seq: int, flags: int,
               restart_why: str = "", seen_ms: int | None = None) -> None:
        """A sample of the node's current generation on `track` (R1-R4, R8); restart_why: it
        is the sample that adopted this generation (R5), seen at seen_ms."""
        restarted = bool(restart_why)
        left = bool(flags & _LEFT_FLAG) and node.moved and not self._other_moving(now_ms, node)  # R4
        baseline = track.seq is None and not restarted  # R2
        advanced = restarted or (track.seq is not None and seq != track.seq)  # R1, R5
        if baseline:
            track.since_ms = now_ms
        track.generation, track.seq, track.flags = node.generation, seq, flags
        track.seen_ms, track.blind_ms = (now_ms if seen_ms is None else seen_ms), None  # R6
        if seq >= node.seq:  # (a restart set node.seq from the new generation's samples only)
            node.seq, node.flags = seq, flags
        if advanced:
            track.since_ms = node.advanced_ms = now_ms if seen_ms is None else seen_ms
            node.moved = True
        if left:  # R4
            node.left_seq = seq if node.left_seq is None else max(node.left_seq, seq)
            for r, t in node.tracks.items():
                if t.generation != GENERATION_NONE:
                    self._move(now_ms, node, r, t, _Trigger.LEFT)
            self._settle(now_ms, node, region, f"left cleanly (LEFT published on {region})")
        elif advanced and region in self._stale:  # R8
            self._move(now_ms, node, region, track, _Trigger.ADVANCE_STALE)
            why = restart_why or "heartbeat advancing"
            self._settle(now_ms, node, region, f"{why} on {region}, but {region} is stale (not read for"
                                               f" {now_ms - self._looked_ms(region, now_ms)} ms)")
        elif advanced:
            node.left_seq = None
            self._move(now_ms, node, region, track, _Trigger.ADVANCE)
            self._settle(now_ms, node, region, f"{restart_why or 'heartbeat advancing'} on {region}")
        elif baseline:  # X3: one more region knows the node and is not sure yet
            self._settle(now_ms, node, region, f"first seen on {region}, not advancing yet")

    def _looked_ms(self, region: str, now_ms: int) -> int:
        """When the region last looked, as far as we know (R3, R5, R8)."""
        return self._sampled.get(region, now_ms)

    def _quiet(self, now_ms: int, node: _Node) -> bool:
        """R5: the current generation has not advanced on any region that knows the node for
        restart_quiet_ms of that region's looking, and no stale region is unsure of it."""
        for region, t in node.tracks.items():
            if t.generation == GENERATION_NONE:
                continue
            if region in self._stale and t.state is _U:
                return False  # R8: it cannot testify
            if self._looked_ms(region, now_ms) - t.since_ms < self.restart_quiet_ms:
                return False
        return True

    def _other_moving(self, now_ms: int, node: _Node) -> bool:
        """R4: another generation of the node moved on some region within restart_quiet_ms."""
        return any(t.cand_moves and now_ms - t.cand_moved_ms < self.restart_quiet_ms for t in node.tracks.values())

    def _restart(self, now_ms: int, node: _Node, region: str, generation: int) -> str:
        """R5: adopt the candidate; every other region waits for it. Returns the reason."""
        old = node.generation
        if node.left_seq is not None:  # R5: the incarnation we saw leave never comes back
            node.left_generations = (node.left_generations + [old])[-OLD_GENERATIONS_MAX:]
        back = generation in node.old_generations
        history = [g for g in node.old_generations if g != generation] + [old]
        node.old_generations = history[-OLD_GENERATIONS_MAX:]
        node.generation, node.left_seq, node.seq, node.flags = generation, None, 0, 0
        self._emit(NodeRestarted(node.node_id, node.name, region, old, generation))
        for r, t in node.tracks.items():
            if r == region:  # the adopting sample decides it next (R1-R4, R8), but the old
                if t.state is _L:  # incarnation's LEFT must not outlive it (a stale region keeps LEFT)
                    self._move(now_ms, node, r, t, _Trigger.RESTART)
            elif t.cand_generation == generation:  # its baseline is already here
                t.generation, t.seq, t.flags, t.since_ms = generation, t.cand_seq, t.cand_flags, t.cand_news_ms
                if t.seq >= node.seq:
                    node.seq, node.flags = t.seq, t.flags
                self._move(now_ms, node, r, t, _Trigger.RESTART)
            elif r != region and t.generation != GENERATION_NONE:
                t.generation, t.seq, t.flags, t.since_ms = generation, None, 0, now_ms
                self._move(now_ms, node, r, t, _Trigger.RESTART)
            if t.cand_generation == generation:
                t.cand_generation, t.cand_seq, t.cand_flags, t.cand_moves = GENERATION_NONE, 0, 0, 0
        if back:
            return f"earlier generation {generation:#x} moving again ({old:#x} quiet)"
        return f"new generation {generation:#x}"

    # -- deadlines ---------------------------------------------------------------------------

    def tick(self, now_ms: int, sampled_ms: Mapping[str, int] | None = None) -> list[Event]:
        """Apply deadlines (R3) and staleness (R8) and return, in order, every event since the
        previous tick.

        sampled_ms: per region, when its newest completed read was submitted (what it reported
        was on the medium at least then). A region in it is judged up to that moment only, so
        one whose reads hang, or a tick that stalled, declares nobody dead (and, once that is
        dead_ms ago, is stale: R8); a region not in it is judged up to now_ms.
        """
        self._advance_clock(now_ms)
        if sampled_ms:
            assert all(ms <= now_ms for ms in sampled_ms.values()), "a region cannot have looked in the future"
        self._sampled = dict(sampled_ms) if sampled_ms else {}
        dead_ms = self.dead_ms
        self._stale = {r for r in self._regions if now_ms - self._looked_ms(r, now_ms) >= dead_ms}  # R8
        quiet_ms = self.restart_quiet_ms
        for node in self._nodes.values():
            pending: tuple[str, _Track] | None = None  # R5: the candidate that moved last, recently
            # X1-X4 once per node, after every track moved: judged track by track, a fresh DEAD
            # on one region before another's stale DEAD turned UNKNOWN declared a transient death
            # (found by the simulator's bench run, seed 80291)
            moved: list[tuple[str, str]] = []
            for region, track in node.tracks.items():
                if track.cand_moves and now_ms - track.cand_moved_ms < quiet_ms and (
                        pending is None or track.cand_moved_ms > pending[1].cand_moved_ms):
                    pending = region, track
                if track.generation == GENERATION_NONE:
                    continue  # a region that does not know the node judges nothing of it
                looked_ms = self._looked_ms(region, now_ms)
                if track.state is _D and region in self._stale:  # R8: no proof of death either
                    self._move(now_ms, node, region, track, _Trigger.STALE)
                    moved.append((region, f"stale: {region} not read for {now_ms - looked_ms} ms"))
                if track.state is _D and region not in self._stale and track.cand_generation != GENERATION_NONE \
                        and track.cand_moves and looked_ms - track.cand_moved_ms < dead_ms:  # R3: a restart writes there
                    self._move(now_ms, node, region, track, _Trigger.DEADLINE_CANDIDATE)
                    moved.append((region, f"generation {track.cand_generation:#x} writes on {region}"
                                          " (not adopted yet)"))
                if track.state is not _A and track.state is not _U:
                    continue  # only a watched track has a deadline
                if track.blind_ms is not None:  # R6: judged only up to its last valid sample
                    if track.state is _A and looked_ms - track.blind_ms >= dead_ms:
                        self._move(now_ms, node, region, track, _Trigger.STALE)
                        moved.append((region, f"unreadable on {region}: bad samples since"
                                              f" {looked_ms - track.blind_ms} ms"))
                    looked_ms = min(looked_ms, track.blind_ms)
                if region not in self._stale and looked_ms - track.since_ms >= dead_ms:  # R3 (never on stale evidence: R8)
                    age_ms = looked_ms - track.since_ms
                    why = f"no heartbeat advance on {region} for {age_ms} ms"
                    if track.cand_generation != GENERATION_NONE and looked_ms - track.cand_news_ms < dead_ms:
                        self._move(now_ms, node, region, track, _Trigger.DEADLINE_CANDIDATE)
                        why += f", but generation {track.cand_generation:#x} writes there (not adopted yet)"
                    else:
                        self._move(now_ms, node, region, track, _Trigger.DEADLINE)
                    moved.append((region, why))
                if region in self._stale:  # R8
                    self._move(now_ms, node, region, track, _Trigger.STALE)
                    moved.append((region, f"stale: {region} not read for {now_ms - looked_ms} ms"))
            # R5: a candidate that moved while the current generation was not quiet yet wins once
            # it is, if that move came within restart_quiet_ms (after the current one went silent).
            # Adopted in this tick, the new generation's state is the node's (settled by _adopt):
            # the old one's deadline passing in the same tick is no death of the node (found by
            # the simulator's bench run, seed 72278: a DEAD, then the restart, in one tick)
            adopt = pending is not None and self._quiet(now_ms, node)
            if moved and not adopt:
                new = overall_state([t.state for t in node.tracks.values() if t.generation != GENERATION_NONE])
                region, why = next(((r, w) for r, w in reversed(moved) if node.tracks[r].state is new), moved[-1])
                self._settle(now_ms, node, region, why)
            if adopt:
                self._adopt(now_ms, node, *pending)
        events, self._events = self._events, []
        return events

    # -- state changes -----------------------------------------------------------------------

    def _move(self, now_ms: int, node: _Node, region: str, track: _Track, trigger: _Trigger) -> None:
        new = _TRANSITIONS[trigger][track.state]
        if new is None or new is track.state:
            return
        old, track.state = track.state, new
        alive = self._alive.setdefault(region, set())
        if new is _A:
            alive.add(node.node_id)
        else:
            alive.discard(node.node_id)
        self._emit(RegionNodeChanged(node.node_id, node.name, region, old, new, now_ms - track.since_ms))

    def _settle(self, now_ms: int, node: _Node, region: str, reason: str) -> None:
        """X1-X4: report a change of the overall state."""
        new = overall_state([t.state for t in node.tracks.values() if t.generation != GENERATION_NONE])
        if new is node.state:
            return
        old, node.state = node.state, new
        self._emit(NodeStateChanged(node.node_id, node.name, old, new, region, now_ms - node.advanced_ms, reason,
                                    node.generation))

    def _emit(self, event: Event) -> None:
        if len(self._events) < EVENTS_MAX:
            self._events.append(event)
        else:
            self.events_dropped += 1

    def _track(self, now_ms: int, node_id: int, region: str) -> tuple[_Node, _Track]:
        node = self._nodes.get(node_id)
        if node is None:
            if not 1 <= node_id <= NODE_ID_MAX:
                raise ValueError(f"node id {node_id} outside 1..{NODE_ID_MAX}")
            node = self._nodes[node_id] = _Node(node_id, advanced_ms=now_ms)
        track = node.tracks.get(region)
        if track is None:
            if region not in self._regions:
                if len(self._regions) >= REGIONS_MAX:
                    raise ValueError(f"region {region!r} is one more than the {REGIONS_MAX} regions allowed")
                self._regions.add(region)
            track = node.tracks[region] = _Track(since_ms=now_ms)
        return node, track

    def _advance_clock(self, now_ms: int) -> None:
        assert isinstance(now_ms, int), f"now_ms must be int milliseconds, got {now_ms!r}"
        assert self._now_ms is None or now_ms >= self._now_ms, f"time went back: {self._now_ms} -> {now_ms} ms"
        self._now_ms = now_ms

    def check_invariants(self) -> None:
        """Assert what must always hold (tests and simulations call it; it walks everything)."""
        assert len(self._nodes) <= NODE_ID_MAX and len(self._regions) <= REGIONS_MAX
        assert self._stale <= self._regions and all(ms <= (self._now_ms or 0) for ms in self._sampled.values())
        for node_id, node in self._nodes.items():
            assert 1 <= node_id <= NODE_ID_MAX and node_id != self.self_id
            known = [t for t in node.tracks.values() if t.generation != GENERATION_NONE]
            assert all(t.generation == node.generation for t in known), node
            assert node.state is overall_state([t.state for t in known]), node
            assert node.state is not _A or node.left_seq is None, node
            assert node.left_seq is None or node.moved, node  # R4: only a generation seen advancing left
            assert len(node.old_generations) <= OLD_GENERATIONS_MAX and node.generation not in node.old_generations
            assert len(set(node.old_generations)) == len(node.old_generations), node
            for region, t in node.tracks.items():
                assert region in self._regions
                assert (t.state is _A) == (node_id in self._alive.get(region, ())), (region, t)
                assert t.state is not _A or (t.seq is not None and node.moved), t  # R1, R4
                assert t.state is not _A or region not in self._stale, (region, t)  # R8
                assert t.generation != GENERATION_NONE or (t.state is _U and t.seq is None), t
                assert t.seq is None or t.seq <= node.seq, (node, t)
                if t.cand_generation == GENERATION_NONE:  # R5
                    assert t.cand_moves == 0, t
                else:
                    assert node.generation != GENERATION_NONE and t.cand_generation != node.generation, (node, t)
                    assert t.cand_moves == 0 or t.cand_moved_ms >= t.cand_first_ms, t

    # -- views -------------------------------------------------------------------------------

    def alive_by_region(self) -> dict[str, tuple[int, ...]]:
        """The sender view published in heartbeats: per region, the ids it sees alive."""
        return {r: tuple(sorted(ids)) for r, ids in sorted(self._alive.items()) if ids}

    def any_alive(self) -> bool:
        """Whether some node is ALIVE (X1), without building views (every beat asks)."""
        return any(n.state is _A for n in self._nodes.values())

    def states(self) -> dict[int, NodeState]:
        """Every known node's overall state (X1-X4), without building views (quorum asks every beat)."""
        return {nid: n.state for nid, n in self._nodes.items()}

    def peers(self) -> dict[int, Peer]:
        """Every known node's state and current incarnation (fencing asks every judgement)."""
        return {nid: Peer(n.state, n.generation, n.flags, n.advanced_ms) for nid, n in self._nodes.items()}

    def node(self, node_id: int) -> NodeView | None:
        node = self._nodes.get(node_id)
        return None if node is None else self._view(node)

    def nodes(self) -> list[NodeView]:
        return [self._view(n) for _, n in sorted(self._nodes.items())]

    def _view(self, node: _Node) -> NodeView:
        now = self._now_ms or 0
        regions = {
            r: RegionView(t.state, 0 if t.seq is None else t.seq, t.generation, t.flags, now - t.since_ms,
                          t.bad_samples, r in self._stale, t.cand_generation)
            for r, t in sorted(node.tracks.items())
        }
        return NodeView(node.node_id, node.name, node.state, node.generation, node.seq, node.flags,
                        now - node.advanced_ms, regions)
