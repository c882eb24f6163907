"""Name binding: which MMP block of a region carries which resource name. I/O-free.

Rules:
  NB1 A never-used block is bound to a name by instance 1 of its ballot (Disk Paxos decides
      it like any epoch); later instances carry the same name (Ballot.resource), so claims on
      different names that race into one free block are decided by the same instance.
  NB2 A committed seq block names its resource; otherwise any ballot at instance >= 2 carries
      it (an instance >= 2 is only started after instance 1 was decided); else undetermined.
  NB3 Blocks are walked in index order and skipped only once their binding is decided and is
      another name, so one name is never bound to two blocks. A corrupt block stops the walk
      (it might be the name's block).
"""

from __future__ import annotations

from diskhb.mmp.format import ResourceView


def bound_name(view: ResourceView) -> str | None:
    """NB2: the name the block is bound to, if decided and visible (ValueError if ballots disagree)."""
    if view.seq is not None:
        return view.seq.resource
    names = {b.resource for b in view.ballots.values() if b.lver >= 2}
    if len(names) > 1:
        raise ValueError(f"ballots at later instances disagree on the block's name: {sorted(names)}")
    return names.pop() if names else None


def classify_block(view: ResourceView, name: str) -> str:
    """NB3: 'ours' | 'other' | 'free' | 'undetermined' | 'corrupt' for the walk over blocks."""
    if view.seq_error or view.ballot_errors:
        return "corrupt"
    try:
        bound = bound_name(view)
    except ValueError:
        return "corrupt"
    if bound is not None:
        return "ours" if bound == name else "other"
    return "free" if not view.ballots else "undetermined"


def pending_names(view: ResourceView) -> set[str]:
    """Names proposed in ballots (for status and 'unknown resource' checks)."""
    out = {b.resource for b in view.ballots.values()}
    out |= {b.inp.resource for b in view.ballots.values() if b.inp is not None}
    return out
