"""The words the MMP guard's I/O-free machines speak: who claims, and the steps they ask for.

An acquisition (diskhb.mmp.acquisition) or a hold (diskhb.mmp.hold) is told what a read showed
and when, and answers with one step: an I/O to carry out (ReadResource, ReadSeq, WriteBallot,
WriteSeq) or an outcome (Acquired, Refusal, NotOurs, Lost). Whoever drives them (the node core
through diskhb.mmp.guard, or the CLI's runner) carries the I/O steps out and hands back their
submission and completion times on its monotonic clock.
"""

from __future__ import annotations


from diskhb.core.record import record
from diskhb.mmp.format import Ballot, SeqBlock

Identity = tuple[int, int, int, int]  # SeqBlock.identity: (seq, epoch, holder_id, holder_generation)
EMPTY_IDENTITY: Identity = (0, 0, 0, 0)  # a never-written seq block


def identity(seq: SeqBlock | None) -> Identity:
    return seq.identity if seq is not None else EMPTY_IDENTITY


def who(seq: SeqBlock) -> str:
    return f"{seq.holder_name} (node {seq.holder_id}, generation {seq.holder_generation:#x})"


@record
class Claimant:
    """Who asks for a resource: a node id (its ballot sector), the generation of the process
    (a daemon's beat generation, or a CLI process's own), and the hold's base interval."""

    node_id: int
    generation: int
    holder_name: str
    resource: str
    interval_ms: int  # base interval; the hold advertises more when I/O is slow (adaptive)
    ceiling_ms: int  # the most it may ever advertise (timing.mmp_ceiling_ms): carried in ballots
    device: str = ""


# -- I/O steps -----------------------------------------------------------------------------------


@record
class ReadResource:
    """Read the seq block and every ballot sector (one contiguous read), not before at_ms."""

    at_ms: int


@record
class ReadSeq:
    """Read only the seq block, not before at_ms."""

    at_ms: int


@record
class WriteBallot:
    ballot: Ballot


@record
class WriteSeq:
    """Write this block. The clock is checked right before the write syscall: after issue_by_ms
    it must not be issued (the check it rests on is too old); the machine is told instead.
    A write not completed by deadline_ms has an unknown outcome: the machine gives up on it."""

    block: SeqBlock
    issue_by_ms: int
    deadline_ms: int


# -- outcomes ------------------------------------------------------------------------------------


@record
class Acquired:
    block: SeqBlock
    submitted_ms: int  # when the acquisition write was issued (the hold's timing counts from it)
    completed_ms: int
    note: str = ""  # how we got it (clean, taken over after a watch, fast path, ...)


@record
class Refusal:
    reason: str  # one line for the operator
    retry: bool  # a later attempt may succeed (the holder may release); False: bad input
    holder: str | None = None
    # A seq block of ours is on disk with this identity, but we gave it up (our write or its
    # read-back was too slow to hold on): the next attempt of this process may claim over it
    # (acquisition CL4), unless a later epoch was proposed meanwhile.
    stale_own: Identity | None = None


@record
class NotOurs:
    """The block is bound to another resource name: the walk moves to the next block."""

    bound_to: str


@record
class Lost:
    reason: str


Step = ReadResource | ReadSeq | WriteBallot | WriteSeq | Acquired | Refusal | NotOurs | Lost
