"""MMP fast paths: when what a running daemon knows of the holder's node lets a claimant skip the
classic watch, and which way. I/O-free; the node core hands in liveness as data (PeerInfo).

Rules:
  FP0 released: the node's daemon of the block's generation stopped writing guarded storage and
      said so (a READ_ONLY promise, a verified fence, or a verified self-fence: core.fencing
      FD3, FD5, FD8), as judged by a quorate daemon -> TAKE_OVER, whatever its liveness.
  FP1 alive, and the block carries the generation that node's daemon beats with: the daemon
      itself holds it and bumps it every interval -> REFUSE at once (watching would only confirm).
      Unless its beats say DISK_LOST: its own writes are failing, so it has lost its holds or is
      about to (hold.py HD-loss); REFUSE would leave the resource to a daemon that cannot write
      it for as long as it lives -> CLASSIC_WAIT (the watch takes over only a block that stands
      still; the CTS found the trap: a holder's disk failing for 3 s left its resources held by
      nobody, refused to everyone, until it restarted).
  FP2 alive under another generation: some other process of that node holds it (an `mmp run`,
      or an earlier incarnation); the node's liveness says nothing about it -> CLASSIC_WAIT.
  FP3 left cleanly with the same generation: a daemon releases its resources before it
      publishes LEFT and then writes nothing more -> TAKE_OVER. Another generation -> CLASSIC_WAIT.
  FP4 dead and confirmed fenced (the incarnation the block names: a fence verified for the
      daemon's generation says nothing of another process) -> TAKE_OVER (FP0 covers it).
  FP5 dead without a fence, unknown (no fresh evidence), or no daemon view: CLASSIC_WAIT (a
      partitioned node looks dead on every heartbeat region yet may still write this disk).
  FP6 when a ballot shows a later epoch proposed than the block's (a claim in progress, or a
      holder whose own block was overwritten by a late landing), the block may not be the
      holder's at all: neither REFUSE nor TAKE_OVER on the block's holder -> CLASSIC_WAIT, with
      the watch the acquisition derives from the ballots (CL2).
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from diskhb.core.record import record
from diskhb.core.types import NodeState


class Verdict(enum.Enum):
    REFUSE = "refuse"  # the holder is alive: refuse at once
    TAKE_OVER = "take-over"  # the holder cannot write any more: skip the classic watch
    CLASSIC_WAIT = "classic-wait"  # we know nothing decisive: watch the seq block


@record
class PeerInfo:
    """What a daemon knows of the node named as holder in the block."""

    state: NodeState  # alive / left / dead / unknown (diskhb.core.liveness, any region)
    generation: int = 0  # that node's current daemon generation (0: unknown)
    fenced: bool = False  # FP0: this generation was verified fenced or promised READ_ONLY (fencing FD3/FD5/FD8)
    disk_lost: bool = False  # FP1: its beats carry DISK_LOST (its own writes failing or late)


PeerInfoFn = Callable[[int], "PeerInfo | None"]


def fast_path(holder_id: int, holder_generation: int, info: PeerInfo | None, *,
              later_epoch_proposed: bool = False) -> tuple[Verdict, str]:
    if later_epoch_proposed:  # FP6
        return Verdict.CLASSIC_WAIT, "a later epoch was proposed in the ballots"
    if info is None:  # FP5
        return Verdict.CLASSIC_WAIT, "no daemon view of the holder"
    same = info.generation != 0 and info.generation == holder_generation
    if info.fenced and same:  # FP0
        return Verdict.TAKE_OVER, "its daemon stopped writing (fenced, or read-only)"
    if info.state is NodeState.ALIVE:  # FP1, FP2
        if same and info.disk_lost:
            return Verdict.CLASSIC_WAIT, "its daemon is alive but its writes are failing (DISK_LOST)"
        if same:
            return Verdict.REFUSE, "its daemon is alive"
        return Verdict.CLASSIC_WAIT, "its node is alive, but under another generation"
    if info.state is NodeState.LEFT:  # FP3
        if same:
            return Verdict.TAKE_OVER, "its daemon left cleanly"
        return Verdict.CLASSIC_WAIT, "its node left, but under another generation"
    if info.state is NodeState.DEAD:  # FP5
        return Verdict.CLASSIC_WAIT, "its node is dead but not fenced"
    return Verdict.CLASSIC_WAIT, "its node's state is unknown"
