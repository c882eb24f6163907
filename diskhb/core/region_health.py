"""Does our own I/O on a region work? The rules, free of I/O.

Everything that decides whether our own writes (heartbeats, sends) and reads (the peers' slots,
receives) on one region work lives here. Times are the caller's monotonic `now_ms`.

  IO1  LATE: unhealthy while any request of ours (write or read) has been in flight longer than
      io_timeout_ms: a hung device must be reported long before peers would call us dead
      (io_timeout_ms < dead_ms is enforced where regions are formatted and configured).
  IO2  WRITE: unhealthy when our last completed write failed, or took longer than io_timeout_ms
      (a heartbeat that lands that late is as good as missing). Cleared by the next successful
      write that took at most io_timeout_ms.
  IO3  READ: the same for reads: a failed or late read leaves us blind on the region. Cleared by
      the next on-time successful read.
  IO4  NOT YET WRITTEN: a region starts unhealthy, reason "not yet written", until our first
      successful on-time write: status must not claim a region works before our heartbeat is
      on it. That first success is the first health event (healthy=True).
  IO5  Reasons, when several hold, in this order: late in flight (the most urgent, and it grows),
      write, read, not yet written. Events are emitted when `healthy` flips, at tick(); the
      `reason` is always the current one (a late request's age grows every tick without an event).
  IO6  A completion with no submission on record is an I/O that took no time (a non-blocking
      receive, a send that failed at once). Requests of one kind complete in the order they
      were submitted (one worker per kind); at most IN_FLIGHT_MAX of a kind are in flight.
  sampled_ms: when the newest successful read was submitted: what the region reported was on
  the medium at least then (Liveness.tick uses it so that a region we cannot read kills nobody).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from diskhb.core.types import IoCompleted, IoSubmitted

KINDS = ("write", "read")
NOT_YET_WRITTEN = "not yet written"  # IO4's reason
IN_FLIGHT_MAX = 4  # per kind; regions keep one (a worker's request may complete before it is polled)


@dataclass(frozen=True, slots=True)
class RegionHealthChanged:
    region: str
    healthy: bool
    reason: str  # "" when healthy


class OwnIoHealth:
    def __init__(self, region: str, io_timeout_ms: int):
        if io_timeout_ms <= 0:
            raise ValueError(f"io_timeout_ms must be > 0, got {io_timeout_ms}")
        self.region = region
        self.io_timeout_ms = io_timeout_ms
        self._healthy = False
        self._reason = NOT_YET_WRITTEN  # IO4
        self._last_ok_ms: int | None = None
        self._landed_ms: int | None = None  # submission of the newest write that completed OK
        self._sampled_ms: int | None = None
        self._in_flight: dict[str, deque[int]] = {k: deque() for k in KINDS}  # submission times, oldest first
        self._fault: dict[str, str | None] = {k: None for k in KINDS}  # IO2/IO3: verdict of the last completion
        self._now_ms: int | None = None

    @property
    def healthy(self) -> bool:
        return self._healthy

    @property
    def reason(self) -> str:
        """Why the region is unhealthy, as of the last tick ("" when healthy)."""
        return self._reason

    @property
    def failing(self) -> bool:
        """Unhealthy because our own I/O is late or failed (IO1-IO3), as of the last tick; not
        merely because nothing was written yet (IO4). A region whose very first write fails or
        hangs is failing even though it never had a good write."""
        return not self._healthy and self._reason != NOT_YET_WRITTEN

    @property
    def last_ok_ms(self) -> int | None:
        """When our last successful on-time write completed (None: never)."""
        return self._last_ok_ms

    @property
    def landed_ms(self) -> int | None:
        """When the newest write of ours that completed OK (late or not) was submitted: it landed
        no earlier than that (F1). Self-fencing's lease (diskhb.core.self_fence SF3) counts from it."""
        return self._landed_ms

    def oldest_in_flight_ms(self, kind: str = "write") -> int | None:
        """When the oldest request of that kind still in flight was submitted (None: none)."""
        queue = self._in_flight[kind]
        return queue[0] if queue else None

    @property
    def sampled_ms(self) -> int | None:
        """When the newest successful read was submitted (None: no read yet)."""
        return self._sampled_ms

    def submitted(self, now_ms: int, kind: str) -> None:
        assert kind in KINDS, kind
        queue = self._in_flight[kind]
        assert len(queue) < IN_FLIGHT_MAX, f"more than {IN_FLIGHT_MAX} {kind}s in flight on {self.region}"
        assert not queue or now_ms >= queue[-1]
        queue.append(now_ms)

    def observe(self, ev: IoSubmitted | IoCompleted) -> None:
        """A region's report of one of our own I/Os (what the node core feeds in)."""
        assert ev.region == self.region, ev
        if type(ev) is IoSubmitted:
            self.submitted(ev.at_ms, ev.kind)
        else:
            self.completed(ev.at_ms, ev.kind, ev.ok, ev.error)

    def completed(self, now_ms: int, kind: str, ok: bool, error: str | None = None) -> None:
        assert kind in KINDS, kind
        queue = self._in_flight[kind]
        started_ms = queue.popleft() if queue else now_ms  # IO6
        took_ms = now_ms - started_ms
        assert took_ms >= 0, f"{kind} completed before it was submitted"
        if ok and kind == "write":
            self._landed_ms = started_ms if self._landed_ms is None else max(self._landed_ms, started_ms)
        if not ok:  # IO2, IO3
            self._fault[kind] = f"own {kind} failed: {error or 'unknown error'}"
        elif took_ms > self.io_timeout_ms:
            self._fault[kind] = f"own {kind} late: took {took_ms} ms > io_timeout {self.io_timeout_ms} ms"
        else:
            self._fault[kind] = None
            if kind == "write":
                self._last_ok_ms = now_ms
        if ok and kind == "read":  # late or not, what it read is real
            self._sampled_ms = started_ms if self._sampled_ms is None else max(self._sampled_ms, started_ms)

    def tick(self, now_ms: int) -> list[RegionHealthChanged]:
        assert self._now_ms is None or now_ms >= self._now_ms, f"time went back: {self._now_ms} -> {now_ms} ms"
        self._now_ms = now_ms
        reason = ""
        for kind in KINDS:  # IO1: the oldest request of a kind is the one that hangs
            queue = self._in_flight[kind]
            if queue and now_ms - queue[0] > self.io_timeout_ms:
                reason = f"own {kind} late: in flight {now_ms - queue[0]} ms > io_timeout {self.io_timeout_ms} ms"
                break
        reason = reason or self._fault["write"] or self._fault["read"] or ""  # IO5
        if not reason and self._last_ok_ms is None:
            reason = NOT_YET_WRITTEN  # IO4
        healthy = not reason
        events = [RegionHealthChanged(self.region, healthy, reason)] if healthy != self._healthy else []
        self._healthy, self._reason = healthy, reason
        return events
