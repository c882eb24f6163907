"""May this daemon take its slot? The start-up rule that keeps one writer per slot.

Rules of this file:
- A slot that was never written, or whose last writer published LEFT, is free at once.
- A slot whose writer published ACTIVE is free only after it has stayed unchanged for dead_ms
  of our own watching (the same rule peers use to call that writer dead), so a crashed daemon's
  slot is reclaimed after one dead time and a live one is never shared. The watch runs from the
  first read's completion to a later read's submission: each read sampled the slot somewhere in
  between its submission and completion, so that is the stretch every sample is known to cover.
- Any change of the slot while we watch means another daemon is beating in it: refuse.
- A checksum-invalid sample is not a change and not proof of absence: it only costs time, and
  after IN_USE_BAD_SAMPLES_MAX of them in a row we refuse (someone is writing garbage into it).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from diskhb.core.types import SlotFlag

IN_USE_BAD_SAMPLES_MAX = 8


class ClaimVerdict(enum.Enum):
    WAIT = "wait"
    FREE = "free"
    IN_USE = "in_use"


@dataclass(frozen=True, slots=True)
class SlotSample:
    """What our own slot held at one read: None fields mean 'never written'."""

    generation: int | None
    seq: int | None
    flags: int
    name: str = ""
    valid: bool = True  # False: failed validation (torn/corrupt)


class SlotClaim:
    def __init__(self, dead_ms: int):
        assert dead_ms > 0
        self.dead_ms = dead_ms
        self.first: SlotSample | None = None
        self.first_ms: int | None = None
        self.bad_in_row = 0
        self.reason = ""

    def observe(self, sample: SlotSample, submitted_ms: int, completed_ms: int) -> ClaimVerdict:
        if not sample.valid:
            self.bad_in_row += 1
            if self.bad_in_row >= IN_USE_BAD_SAMPLES_MAX:
                self.reason = "the slot keeps failing its checksum: something else writes into it"
                return ClaimVerdict.IN_USE
            return ClaimVerdict.WAIT
        self.bad_in_row = 0
        if sample.generation is None or sample.flags & SlotFlag.LEFT:
            return ClaimVerdict.FREE
        if self.first is None:
            self.first, self.first_ms = sample, completed_ms
            return ClaimVerdict.WAIT
        assert self.first_ms is not None
        if (sample.generation, sample.seq) != (self.first.generation, self.first.seq):
            self.reason = (
                f"node {sample.name!r} (generation {sample.generation:#x}) is beating in it"
            )
            return ClaimVerdict.IN_USE
        if submitted_ms - self.first_ms >= self.dead_ms:
            return ClaimVerdict.FREE
        return ClaimVerdict.WAIT
