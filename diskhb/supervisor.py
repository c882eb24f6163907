"""What the daemon tells its service manager (systemd, through diskhb.sdnotify), and when.

Called from the loop after each step (tick) and when the core says it exits (exiting); each call
sends at most a few non-blocking datagrams, and nothing here raises into the loop.

  R1 READY=1, once, at the end of the first tick at which the core is RUNNING and
     (a) a heartbeat write of ours has completed successfully on every configured region
         (OwnIoHealth.landed_ms set: a disk region's slot write returned, a link's datagram went
         out to every destination, a serial frame was written). The core writes nothing before
         RUNNING (the slot claim only reads), so this is "the first beat landed everywhere"; or
     (b) dead_ms has passed since our first beat and (a) holds on at least one region: peers see
         us alive there, and losing one region is never fatal, so a region that is down at start
         must not fail the start. A warning and STATUS name the regions without a beat.
     Never in another phase: a node that fenced itself or stops first is never READY.
  W1 WATCHDOG=1 from the tick, at most every WatchdogSec/FEED_FRACTION, only while the hardware
     watchdog would be fed too (not FAILED, not SELF_FENCED: the daemon's `_UNFED`), so systemd's
     watchdog is a second line behind it: a stuck or self-fenced daemon is killed (WatchdogSignal).
     $WATCHDOG_PID, when set, must be our pid. A WatchdogSec shorter than FEED_INTERVALS beat
     intervals is logged at start (a tick or two late would kill us).
  S1 STATUS= one line for humans (`systemctl status`), sent when it changes, rebuilt at most every
     STATUS_EVERY_MS (it counts the nodes) or at once when the phase changes; at most STATUS_MAX.
  X1 STOPPING=1, once, when a stop begins (the request reaches the loop) or the core exits.
  T1 EXTEND_TIMEOUT_USEC: the start (slot claim up to dead_ms and more, then R1(b)'s grace) and
     the stop (a leave up to LEAVE_MS_MAX, then LEFT) are bounded by the core's own limits, which
     may exceed the unit's TimeoutStartSec/TimeoutStopSec: we ask for that bound, once each.
"""

from __future__ import annotations

import logging

from diskhb import metrics as m
from diskhb import sdnotify
from diskhb.core import node as core
from diskhb.core.types import NodeState
from diskhb.watchdog import FEED_INTERVALS

log = logging.getLogger("diskhb")

FEED_FRACTION = 4  # WATCHDOG=1 at most every WatchdogSec/4 (sd_watchdog_enabled(3) advises half)
STATUS_EVERY_MS = 1000
STATUS_MAX = 200
EXTEND_SLACK_MS = 10_000  # on top of the core's bounds: start-up work, a slow exit


def ready(phase: core.Phase, landed: dict[str, bool], running_ms: int | None, now_ms: int,
          grace_ms: int) -> bool:
    """R1: may READY=1 be sent now? landed: region -> a beat of ours landed there; running_ms: when
    the core was first seen RUNNING."""
    if phase is not core.Phase.RUNNING or running_ms is None or not landed:
        return False
    if all(landed.values()):
        return True
    return any(landed.values()) and now_ms - running_ms >= grace_ms


def feed_due(fed: bool, now_ms: int, last_ms: int | None, every_ms: int) -> bool:
    """W1: send WATCHDOG=1 now? fed: the hardware watchdog is fed in this phase."""
    return fed and (last_ms is None or now_ms - last_ms >= every_ms)


def status_text(c: core.NodeCore, ready_sent: bool) -> str:
    """S1: one line from the core's state (counts every known node: not for every tick)."""
    phase = c.phase
    if phase is core.Phase.CLAIMING:
        return f"claiming slot {c.spec.node_id} (checking nobody else beats in it)"
    if phase is core.Phase.SELF_FENCED:
        sf = c.self_fence.fenced if c.self_fence is not None else None
        why = f" ({sf.reason}: {sf.detail})" if sf is not None else ""
        return f"SELF-FENCED{why}; watchdogs no longer fed, stop to rejoin"
    if phase is core.Phase.FAILED:
        return f"safety stop: {c.conflict or 'stopping'}"
    if phase in (core.Phase.LEAVING, core.Phase.PUBLISHING_LEFT):
        return "leaving: releasing resources" if phase is core.Phase.LEAVING else "leaving: publishing LEFT"
    if phase is core.Phase.STOPPED:
        return "stopped"
    states = c.liveness.states()
    alive = 1 + sum(1 for s in states.values() if s is NodeState.ALIVE)
    parts = [f"{alive} of {1 + len(states)} nodes alive"]
    q = c.quorum.last if c.quorum is not None else None
    if q is not None:
        parts.append(f"{'quorate' if q.quorate else 'NOT quorate'} ({q.votes}/{q.expected_votes} votes)")
    unwritten = [n for n, h in c.health.items() if h.landed_ms is None]
    failing = [n for n, h in c.health.items() if h.failing]
    if unwritten:
        parts.append(f"no beat landed yet on {', '.join(unwritten)}")
    if failing:
        parts.append(f"failing: {', '.join(failing)}")
    held = sum(1 for h in c.held.values() if h.state == "held")
    if held:
        parts.append(f"{held} resource{'s' if held > 1 else ''} held")
    return f"{'running' if ready_sent else 'starting'}: " + ", ".join(parts)


class Supervisor:
    def __init__(self, notifier: sdnotify.Notifier, watchdog_usec: int | None, *, interval_ms: int,
                 dead_ms: int, io_timeout_ms: int):
        self.n = notifier
        self.interval_ms = interval_ms
        self.dead_ms = dead_ms
        self.io_timeout_ms = io_timeout_ms
        self.feed_every_ms = None if watchdog_usec is None else max(1, watchdog_usec // 1000 // FEED_FRACTION)
        self.ready_sent = False
        self.stopping_sent = False
        self.exited = False  # exiting() was called: nothing more from the tick
        self._broken = False
        self._running_ms: int | None = None
        self._last_feed_ms: int | None = None
        self._status = ""
        self._status_ms: int | None = None
        self._phase: core.Phase | None = None
        self._start_extended = False
        if notifier.enabled and watchdog_usec is not None and watchdog_usec < FEED_INTERVALS * interval_ms * 1000:
            log.warning("systemd WatchdogSec=%.3gs is shorter than %d beat intervals (%d ms): a tick or two late"
                        " and systemd kills the daemon; raise WatchdogSec", watchdog_usec / 1e6, FEED_INTERVALS,
                        FEED_INTERVALS * interval_ms)

    def tick(self, now_ms: int, c: core.NodeCore, fed: bool) -> None:
        if not self.n.enabled or self.exited:
            return
        try:
            self._tick(now_ms, c, fed)
        except Exception:  # noqa: BLE001 - a bug here must not end the loop; said once
            if not self._broken:
                self._broken = True
                log.exception("systemd notifications: internal error (the daemon goes on)")

    def _tick(self, now_ms: int, c: core.NodeCore, fed: bool) -> None:
        phase = c.phase
        if not self._start_extended:  # T1: the claim's bound, then R1(b)'s grace
            self._start_extended = True
            self._extend(max(0, c.claim_deadline_ms - now_ms) + self.dead_ms + 2 * self.interval_ms)
        if phase is core.Phase.RUNNING and self._running_ms is None:
            self._running_ms = now_ms
        if not self.ready_sent:
            landed = {name: h.landed_ms is not None for name, h in c.health.items()}
            if ready(phase, landed, self._running_ms, now_ms, self.dead_ms):
                self.ready_sent = True
                missing = [n for n, ok in landed.items() if not ok]
                if missing:
                    log.warning("ready although no beat of ours landed yet on region%s %s (%d ms after the first"
                                " beat; peers see us on the others)", "s" if len(missing) > 1 else "",
                                ", ".join(missing), now_ms - self._running_ms)
                self._status, self._status_ms, self._phase = status_text(c, True)[:STATUS_MAX], now_ms, phase
                self._send("READY=1", f"STATUS={self._status}")
        if phase in (core.Phase.LEAVING, core.Phase.PUBLISHING_LEFT):
            self.stopping()
        if self.feed_every_ms is not None and feed_due(fed, now_ms, self._last_feed_ms, self.feed_every_ms):
            self._last_feed_ms = now_ms
            self._send("WATCHDOG=1")
        if phase is not self._phase or self._status_ms is None or now_ms - self._status_ms >= STATUS_EVERY_MS:
            self._phase, self._status_ms = phase, now_ms
            text = status_text(c, self.ready_sent)[:STATUS_MAX]
            if text != self._status:
                self._status = text
                self._send(f"STATUS={text}")

    def stopping(self) -> None:
        """X1, and T1 for the stop (a leave's bound, then LEFT's write): once."""
        if self.stopping_sent or not self.n.enabled:
            return
        self.stopping_sent = True
        self._send("STOPPING=1")
        self._extend(core.LEAVE_MS_MAX + (core.PUBLISH_LEFT_IO_TIMEOUTS + 1) * self.io_timeout_ms)

    def exiting(self, code: int, reason: str) -> None:
        """The daemon exits: STOPPING=1 (if not sent yet) and a last STATUS naming why; once."""
        if not self.n.enabled or self.exited:
            return
        self.exited = True
        self.stopping()
        text = f"stopping: {reason} (exit {code})"[:STATUS_MAX]
        if text != self._status:
            self._status = text
            self._send(f"STATUS={text}")

    def close(self) -> None:
        self.n.close()

    def _extend(self, ms: int) -> None:
        self._send(f"EXTEND_TIMEOUT_USEC={(ms + EXTEND_SLACK_MS) * 1000}")

    def _send(self, *assignments: str) -> None:
        if self.n.send(*assignments):
            return
        m.SD_NOTIFY_ERRORS.inc()
        if self.n.new_error:
            log.warning("systemd notification %s not sent: %s (%d failed so far; the daemon goes on)",
                        assignments[0].split("=", 1)[0], self.n.last_error, self.n.errors)
