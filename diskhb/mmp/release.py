"""Who may release a resource held by this node, and how: the decision of `diskhb mmp release`,
free of I/O (the CLI reads the block and the holder record, then carries the plan out).

Rules:
  RL1 a CLEAN block has nothing to release; an FSCK block is ended by `mmp clear`, not release.
  RL2 a block held by another node is released there (never by us: we would be a second writer).
  RL3 held by this node: the local process that holds it (its holder record names our node, the
      block's generation and a live pid) is asked to release it (SIGTERM: it writes CLEAN).
  RL4 held by this node under a generation no live local process claims: only with --force, and
      then through a full acquisition that watches that generation like any holder's (taken
      over only if its seq stands still for the classic wait), then CLEAN.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from diskhb.mmp.format import SeqBlock
from diskhb.mmp.steps import who


class How(enum.Enum):
    NOTHING = "nothing"  # RL1: not held
    SIGNAL = "signal"  # RL3: ask the holding process
    FORCE = "force"  # RL4: take the stale generation over, then CLEAN
    REFUSE = "refuse"  # RL1 (FSCK), RL2, RL4 without --force


@dataclass(frozen=True, slots=True)
class Plan:
    how: How
    text: str  # for the operator
    pid: int | None = None


def plan_release(resource: str, seq: SeqBlock, *, node_id: int, holder_record: dict | None,
                 holder_alive: bool, force: bool) -> Plan:
    if seq.state == "clean":
        return Plan(How.NOTHING, f"{resource} is not held (CLEAN, epoch {seq.epoch})")
    if seq.state == "fsck":
        return Plan(How.REFUSE, f"{resource} is marked FSCK by {who(seq)}; use 'diskhb mmp clear {resource}'")
    if seq.holder_id != node_id:
        return Plan(How.REFUSE, f"{resource} is held by {who(seq)}, not by this node (id {node_id}); release it there")
    if holder_record is not None and holder_record.get("generation") == seq.holder_generation and holder_alive:
        return Plan(How.SIGNAL, f"asking process {holder_record['pid']} to release {resource}", holder_record["pid"])
    if force:
        return Plan(How.FORCE, f"taking over the stale generation {seq.holder_generation:#x} of {resource}")
    return Plan(How.REFUSE, f"{resource} is held by this node under generation {seq.holder_generation:#x}, but no"
                            " running diskhb process of this node holds it; if it is gone, 'diskhb mmp release"
                            f" {resource} --force' takes it over after the classic wait and releases it")
