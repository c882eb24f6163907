"""Does our own I/O on a region work? The rules, free of I/O.

Rules of this file:
  H1  A region is unhealthy while any of our own requests (write or read) has been in flight
      longer than io_timeout_ms: a hung device must be reported long before peers would
      declare us dead (io_timeout_ms < dead_ms is enforced by the format).
  H2  A failed write, or a write that completed but took longer than io_timeout_ms, makes it
      unhealthy: a heartbeat that arrives that late is as good as missing.
  H3  A failed read makes it unhealthy too: we are blind on that region.
  H4  Healthy again only with the next successful, on-time write (and no request over time).
  H5  A region starts unhealthy with reason "not yet written": status must not claim a region
      works before our first heartbeat is on it.
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("write", "read")


@dataclass(frozen=True, slots=True)
class RegionHealthChanged:
    region: str
    healthy: bool
    reason: str


class OwnIoHealth:
    def __init__(self, region: str, io_timeout_ms: int):
        assert io_timeout_ms > 0
        self.region = region
        self.io_timeout_ms = io_timeout_ms
        self.healthy = False
        self.reason = "not yet written"  # H5
        self.last_ok_ms: int | None = None  # last successful on-time write
        self._in_flight: dict[str, int] = {}
        self._failed: str | None = None  # H2/H3 verdict of the last completion
        self._events: list[RegionHealthChanged] = []

    def submitted(self, now_ms: int, kind: str) -> None:
        assert kind in KINDS
        self._in_flight[kind] = now_ms

    def completed(self, now_ms: int, kind: str, ok: bool, error: str | None = None) -> None:
        assert kind in KINDS
        started = self._in_flight.pop(kind, now_ms)
        took = now_ms - started
        if not ok:
            self._failed = f"own {kind} failed: {error or 'error'}"
        elif kind == "write" and took > self.io_timeout_ms:
            self._failed = f"own write took {took} ms > io_timeout {self.io_timeout_ms} ms"
        elif kind == "write":
            self._failed = None  # H4
            self.last_ok_ms = now_ms
        elif self._failed and self._failed.startswith("own read"):
            self._failed = None  # a good read clears a read failure; writes decide the rest

    def tick(self, now_ms: int) -> list[RegionHealthChanged]:
        reason = None
        for kind, started in sorted(self._in_flight.items()):
            if now_ms - started > self.io_timeout_ms:  # H1
                reason = f"own {kind} late: in flight {now_ms - started} ms > io_timeout {self.io_timeout_ms} ms"
                break
        if reason is None:
            reason = self._failed
        if reason is None and self.last_ok_ms is None:
            reason = "not yet written"
        healthy = reason is None
        if healthy != self.healthy:
            self._events.append(RegionHealthChanged(self.region, healthy, reason or ""))
        self.healthy, self.reason = healthy, reason or ""
        events, self._events = self._events, []
        return events
