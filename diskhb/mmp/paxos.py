"""Disk Paxos over per-node ballot sectors (Gafni & Lamport; sanlock's paxos lease is the model).

Rules of this file (I/O-free: no os, time, threading; it is handed what a read showed):
- One instance per epoch: instance `lver` decides who holds epoch `lver` of one resource
  (and, for lver 1 of a never-used block, which resource name the block carries).
- Node i writes only its own ballot sector; a proposer writes its sector, then reads every
  sector of the resource in one read, and judges by what it read. One disk, so "a majority
  of disks" is that disk: Disk Paxos with one disk needs only that a read returns the last
  completed write of every sector (O_DIRECT|O_DSYNC on shared storage gives that).
- Ballot numbers are unique per node: mbal = k * MBAL_STRIDE + node_id (node_id < STRIDE).
- A node's sector never goes back: a new attempt carries over the (bal, inp) it accepted at
  the same lver, and its mbal is above every mbal seen at that lver (its own included). This
  is what lets a restarted process (a new CLI run, a restarted daemon) take part safely.
- No timing assumption anywhere in here: any interleaving of any number of proposers'
  writes and reads decides at most one value per instance (tests/test_mmp_paxos.py drives
  random interleavings against an in-memory disk and checks exactly that).

The protocol, per attempt at instance L with our proposal v0:
  phase 1: write (lver=L, mbal=m, bal, inp carried over); read all.
           abort if any sector has lver > L (a later instance started: our view is old),
           or lver == L and mbal > m (a higher ballot is running).
           v = inp of the highest bal among sectors at lver L (ours included), else v0.
  phase 2: write (lver=L, mbal=m, bal=m, inp=v); read all; abort on the same conditions.
           Otherwise v is chosen: every later ballot at L will find and re-propose it.
  Learning: a proposer that finds someone else's accepted value proposes that value, so a
  completed round tells it the decision even when it is not the winner.
"""

from __future__ import annotations

from collections.abc import Mapping

from diskhb.core.record import record
from diskhb.mmp.format import Ballot, Proposal

MBAL_STRIDE = 8192  # > NODE_ID_MAX (4096): mbal % MBAL_STRIDE is the proposer's node id
MBAL_ROUND_MAX = 2**50  # limit: 2**50 rounds x 8192 stays inside u64


@record
class Abort:
    """The attempt must stop; `later_lver` > 0 when a later instance was seen."""

    reason: str
    later_lver: int = 0
    by_node: int = 0


@record
class Conflict:
    """Our own sector holds something we did not write: another process writes with our node
    id (a duplicate node id in the cluster, or two local processes without the node lock).
    Nothing may be decided on top of that; the caller refuses and says so."""

    reason: str


@record
class Chosen:
    value: Proposal
    lver: int


def start_ballot(node_id: int, lver: int, seen: Mapping[int, Ballot], *, uuid: bytes,
                 writer_generation: int, resource: str, wall_ms: int) -> Ballot:
    """Our phase-1 sector for instance `lver`, given a read of every sector."""
    assert 1 <= node_id < MBAL_STRIDE and lver >= 1
    own = seen.get(node_id)
    assert own is None or own.lver <= lver, "a node's ballot sector never goes back an instance"
    top = max((b.mbal for b in seen.values() if b.lver == lver), default=0)
    rnd = top // MBAL_STRIDE + 1
    if rnd > MBAL_ROUND_MAX:
        raise ValueError("ballot rounds exhausted for this instance")
    carried_bal, carried_inp = (own.bal, own.inp) if own is not None and own.lver == lver else (0, None)
    return Ballot(node_id=node_id, lver=lver, mbal=rnd * MBAL_STRIDE + node_id, bal=carried_bal,
                  inp=carried_inp, uuid=uuid, writer_generation=writer_generation, resource=resource,
                  wall_ms=wall_ms)


def _check(mine: Ballot, seen: Mapping[int, Ballot]) -> Abort | Conflict | None:
    own = seen.get(mine.node_id)
    if own != mine:
        return Conflict(
            f"our ballot sector (node {mine.node_id}) does not hold what we wrote"
            + (f" (it holds generation {own.writer_generation:#x})" if own else " (it is empty)")
            + ": another process is writing with our node id"
        )
    later = max((b.lver for b in seen.values()), default=0)
    if later > mine.lver:
        node = next(b.node_id for b in seen.values() if b.lver == later)
        return Abort(f"node {node} started instance {later} (we ran {mine.lver})", later, node)
    for b in seen.values():
        if b.node_id != mine.node_id and b.lver == mine.lver and b.mbal > mine.mbal:
            return Abort(f"node {b.node_id} runs a higher ballot at instance {mine.lver}", 0, b.node_id)
    return None


def after_phase1(mine: Ballot, seen: Mapping[int, Ballot], our_value: Proposal, *,
                 wall_ms: int) -> Ballot | Abort | Conflict:
    """Given the read after our phase-1 write: our phase-2 sector, or why to stop."""
    stop = _check(mine, seen)
    if stop is not None:
        return stop
    accepted = [b for b in seen.values() if b.lver == mine.lver and b.bal > 0]
    value = max(accepted, key=lambda b: b.bal).inp if accepted else our_value
    assert value is not None
    return Ballot(node_id=mine.node_id, lver=mine.lver, mbal=mine.mbal, bal=mine.mbal, inp=value,
                  uuid=mine.uuid, writer_generation=mine.writer_generation, resource=mine.resource,
                  wall_ms=wall_ms)


def after_phase2(mine: Ballot, seen: Mapping[int, Ballot]) -> Chosen | Abort | Conflict:
    """Given the read after our phase-2 write: the chosen value, or why to stop."""
    assert mine.bal == mine.mbal and mine.inp is not None
    stop = _check(mine, seen)
    if stop is not None:
        return stop
    return Chosen(mine.inp, mine.lver)
