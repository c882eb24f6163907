"""What a region driver is: the I/O side of one heartbeat medium (disk, network link, serial line).

Rules of this file (every driver follows them):
- `tick` and `poll` never block: real I/O runs on worker threads (disk) or non-blocking sockets
  and file descriptors (net, serial). A hung medium shows up as "own I/O late" in `health`, which
  the daemon reports; it never stalls the heartbeat tick.
- A driver reports what it saw (observations) and how its own I/O went (`health`). It decides
  nothing about liveness: that is the core's job (diskhb.core.liveness).
- Every queue, buffer and retry inside a driver has a bound.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

from diskhb.core.region_health import OwnIoHealth
from diskhb.core.types import Observation


@dataclass(slots=True)
class OwnBeat:
    """What this node publishes on every region at each tick (the same numbers everywhere)."""

    node_id: int
    name: str
    generation: int  # random per daemon start, never 0
    seq: int  # +1 per tick; the same seq goes out on every region
    flags: int  # diskhb.core.types.SlotFlag bits
    mono_ms: int  # the writer's monotonic clock (readers only compare it with itself)
    wall_ms: int  # for humans only
    # The sender's view: region name -> ids of nodes it sees alive there (network/serial carry it).
    view: dict[str, tuple[int, ...]] = field(default_factory=dict)


class Region(abc.ABC):
    """One heartbeat medium. Lifecycle: start() once, then tick()/poll() every tick, stop() once."""

    kind: str  # "disk" | "net" | "serial"
    name: str  # unique, stable, bounded cardinality: used as a log field and metric label
    health: OwnIoHealth

    @abc.abstractmethod
    def start(self, now_ms: int) -> None:
        """Open the medium and start workers. Raise OperatorError for a mistake the admin can fix."""

    @abc.abstractmethod
    def tick(self, now_ms: int, beat: OwnBeat) -> None:
        """Publish `beat` and start the next read, without blocking."""

    @abc.abstractmethod
    def poll(self, now_ms: int) -> list[Observation]:
        """Return what arrived since the last poll, without blocking."""

    @abc.abstractmethod
    def stop(self, beat: OwnBeat, timeout_ms: int) -> bool:
        """Publish a final beat (LEFT set by the caller) waiting at most timeout_ms; True if done."""
