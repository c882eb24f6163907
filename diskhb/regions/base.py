"""What a region driver is: the I/O side of one heartbeat medium (disk, network link, serial line).

Rules of this file (every driver follows them):
- `publish` and `poll` never block: real I/O runs on worker threads (disk) or non-blocking
  sockets and file descriptors (net, serial). A hung medium shows up as an I/O of ours that
  does not complete, which the node core turns into "own I/O late"; it never stalls the loop.
- A driver reports what it saw and how its own I/O went, as observations out of `poll`: samples
  (Beat, BadSample, BeatBatch), IoSubmitted/IoCompleted for each of our own I/Os (writes carry
  the beat's seq as tag), and OwnSlotRead / DuplicateId when it sees our own id. It decides
  nothing: liveness, health, slot conflicts and LEFT are the node core's (diskhb.core.node).
- Every queue, buffer and retry inside a driver has a bound.
"""

from __future__ import annotations

import abc

from diskhb.core.node import OwnBeat

__all__ = ["OwnBeat", "Region"]


class Region(abc.ABC):
    """One heartbeat medium. Lifecycle: start() once, then publish()/poll() as the core asks,
    close() once."""

    kind: str  # "disk" | "net" | "serial"
    name: str  # unique, stable, bounded cardinality: used as a log field and metric label
    path: str | None = None  # what status shows for it (a device, an address, a tty)
    owns_slot: bool = False  # a disk region: our slot there is claimed before we beat

    @abc.abstractmethod
    def start(self, now_ms: int) -> None:
        """Open the medium and start workers. Raise OperatorError for a mistake the admin can fix."""

    @abc.abstractmethod
    def publish(self, now_ms: int, beat: OwnBeat, wall_ms: int) -> None:
        """Send or write `beat` (and start the next read) without blocking. A medium still busy
        with an earlier beat skips this one (the core sees no IoSubmitted with its seq)."""

    def request_own_slot(self, now_ms: int) -> None:
        """Read our own slot (owns_slot only); the result comes out of poll() as OwnSlotRead."""
        raise NotImplementedError(f"region {self.name} has no slot of ours")

    @abc.abstractmethod
    def poll(self, now_ms: int) -> list:
        """Observations since the last poll, without blocking."""

    @abc.abstractmethod
    def close(self, flush_ms: int = 0) -> None:
        """Stop workers and close the medium; never waits for a hung request. flush_ms: a line
        may take that long to send what it still holds (a serial frame, at a clean stop)."""

    def counters(self) -> dict[str, int]:
        """Totals for metrics: read_bytes, write_bytes, reads, writes (what the medium counts)."""
        return {}

    def latencies_ms(self) -> tuple[list[int], list[int]]:
        """(write, read) latencies since the last call, for histograms (bounded lists)."""
        return [], []

    def reload_keys(self) -> None:
        """Re-read key files (links); a disk region has none."""
