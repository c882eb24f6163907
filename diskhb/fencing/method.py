"""The one interface every fencing method offers to the daemon's fence runner.

A method is what carries a fence out: the disk pill (diskhb.pill), SCSI-3 persistent
reservations (diskhb.fencing.scsi_pr), a Pacemaker-style fence agent (diskhb.fencing.agent). The
decision (who, when, which incarnation) is the core's (diskhb.core.fencing); the order of the
methods is the operator's (`fence = ["scsi-pr", "pill", "agent"]`).

Rules of this file:
- M1 BLOCKING, BOUNDED: fence() runs on a worker thread of the runner, never on the tick, and
  returns by `deadline` (a time.monotonic() value) plus a small constant: every wait inside
  is bounded by it (a subprocess is killed, a SCSI command has a timeout).
- M2 VERIFIED OR NOT: `ok` only when the method verified that the victim's incarnation can no
  longer write shared storage (its key read back absent from every LUN; the agent's `status`
  says off). `pending` when it did its part and only the victim can show the effect (the pill).
  Anything else is a failure, with one line saying why: nothing is reported fenced that is not.
- M3 NEVER RAISES for a device, a target or an agent that misbehaves: that is a failure result.
  It raises only for a bug of the caller.
"""

from __future__ import annotations

from typing import Protocol

from diskhb.core.record import record


@record
class Victim:
    """The incarnation to fence (fencing FD5): what every method may need to name it."""
    node_id: int
    name: str  # the node's name as configured ([fence.agent] maps it to a plug/port)
    generation: int


@record
class MethodResult:
    ok: bool  # M2: verified fenced
    pending: bool  # M2: done; the victim's own beat will show it (FD9)
    detail: str  # one line, for the log and status
    receipt: str = ""  # what proves it (scsi-pr: the keys read back on each LUN), for the receipt


class Method(Protocol):
    name: str  # "scsi-pr", "pill", "agent": the `method` label of diskhb_fence_attempts_total

    def fence(self, victim: Victim, deadline: float) -> MethodResult: ...

    def close(self) -> None: ...
