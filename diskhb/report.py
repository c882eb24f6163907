"""Words and numbers for what the node core decided: its events as log lines and metrics.

The core says what happened (diskhb.core.node and the rule files it composes); this file only
chooses the level, the wording and the counter. Logging goes through the daemon's bounded queue
(a blocked log never stalls the loop). Every event is then offered to the notification hooks
(diskhb.hooks), which pick their own and never block.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from diskhb import metrics as m
from diskhb.core.fencing import FenceOutcome, FencePending, FenceReceipt, VictimBack, VictimNamed
from diskhb.core.liveness import NodeRestarted, NodeStateChanged, RegionNodeChanged
from diskhb.core.node import BeatDue, Hearing, MailboxMessage, MmpEvent, Note, Stalled
from diskhb.core.quorum import DigestMismatch, QuorumChanged
from diskhb.core.region_health import RegionHealthChanged
from diskhb.core.self_fence import SelfFenced
from diskhb.core.types import NodeState
from diskhb.mmp.loss import ACQUIRED, LOST, REFUSED

log = logging.getLogger("diskhb")

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
           "critical": logging.CRITICAL}


def _state_level(new: NodeState, back: bool) -> int:
    """Normal operations (a node up, a clean leave) are INFO; a death is an ERROR; the same
    incarnation beating again after it was declared dead is a WARNING: peers may have acted on a
    death that was not one (its storage taken over while it was only frozen)."""
    if new is NodeState.DEAD:
        return logging.ERROR
    if new is NodeState.ALIVE:
        return logging.WARNING if back else logging.INFO
    return logging.INFO if new is NodeState.LEFT else logging.WARNING


class Reporter:
    def __init__(self, regions: int, clock_ms: Callable[[], int]):
        self.regions = regions  # with one region, a per-region change says nothing the overall one does not
        self.clock_ms = clock_ms
        self._quorum_judged = False  # the first quorum verdict is no loss
        self._fence_started: dict[int, tuple[int, int]] = {}  # node id -> (generation, ms): one per node
        self.hooks = None  # a diskhb.hooks.runner.HookRunner, when [hooks] is configured
        self._dead: dict[int, int] = {}  # node id -> the generation it was declared dead in

    def report(self, ev) -> None:
        self._report(ev)
        if self.hooks is not None:
            self.hooks.offer(ev)

    def _report(self, ev) -> None:
        if isinstance(ev, NodeStateChanged):
            back = ev.new is NodeState.ALIVE and self._dead.pop(ev.node_id, None) == ev.generation
            if ev.new is NodeState.DEAD:
                self._dead[ev.node_id] = ev.generation
            log.log(_state_level(ev.new, back), "node %s (id %d): %s -> %s on %s (age %.2f s): %s [generation %#x]%s",
                    ev.name or "?", ev.node_id, ev.old.value, ev.new.value, ev.region, ev.age_ms / 1000, ev.reason,
                    ev.generation, " (back from the dead: the same incarnation, so it was frozen or cut off and"
                    " never stopped)" if back else "")
            m.NODE_TRANSITIONS.labels(ev.name or str(ev.node_id), ev.new.value).inc()
        elif isinstance(ev, RegionNodeChanged):
            if self.regions == 1:
                return
            m.REGION_NODE_TRANSITIONS.labels(ev.name or str(ev.node_id), ev.region, ev.new.value).inc()
            # Losing a node on one region is worth a warning (a link or path may be failing); the
            # node itself is dead only when the overall change says so, on its own line.
            level = logging.WARNING if ev.new is NodeState.DEAD else logging.INFO
            log.log(level, "node %s (id %d) on region %s: %s -> %s (age %.2f s)", ev.name or "?", ev.node_id,
                    ev.region, ev.old.value, ev.new.value, ev.age_ms / 1000)
        elif isinstance(ev, NodeRestarted):
            log.warning("node %s (id %d) restarted on %s: generation %#x -> %#x", ev.name or "?", ev.node_id,
                        ev.region, ev.old_generation, ev.new_generation)
            m.NODE_RESTARTS.labels(ev.name or str(ev.node_id)).inc()
        elif isinstance(ev, RegionHealthChanged):
            m.REGION_HEALTHY.labels(ev.region).set(1 if ev.healthy else 0)
            if ev.healthy:
                log.info("region %s: own I/O healthy", ev.region)
        elif isinstance(ev, BeatDue):
            m.TICK_LATENESS.observe(ev.lateness_ms / 1000)
            m.TICKS.inc()
        elif isinstance(ev, Stalled):
            m.SELF_STALLS.inc()
            m.SELF_STALL_SECONDS.set(ev.gap_ms / 1000)
        elif isinstance(ev, MmpEvent):
            self._mmp(ev)
        elif isinstance(ev, Hearing):
            m.REGION_RECEIVING.labels(ev.region).set(1 if ev.receiving else 0)
            if ev.receiving:
                log.info("region %s: hearing peers again", ev.region)
            else:
                log.error("region %s: no heartbeat from any peer for %d ms while peers are alive on other regions"
                          " (wrong port or address, or a one-way firewall?)", ev.region, ev.silent_ms)
        elif isinstance(ev, QuorumChanged):
            m.QUORATE.set(1 if ev.quorate else 0)
            m.QUORUM_VOTES.set(ev.votes)
            m.QUORUM_EXPECTED_VOTES.set(ev.expected_votes)
            what = "gained" if ev.quorate else "lost" if self._quorum_judged else "not reached yet"
            self._quorum_judged = True
            log.log(logging.INFO if ev.quorate else logging.WARNING, "quorum %s: %s (members %s)",
                    what, ev.reason, ", ".join(map(str, ev.members)))
        elif isinstance(ev, DigestMismatch):
            if ev.theirs == 0:
                log.error("node %d has no [quorum]: not counted for quorum; make [quorum] the same on every node",
                          ev.node_id)
            else:
                log.error("node %d advertises another cluster (node list or votes, digest %#010x; ours %#010x):"
                          " not counted for quorum; make [quorum] the same on every node", ev.node_id, ev.theirs,
                          ev.ours)
        elif isinstance(ev, VictimNamed):
            log.error("node %d (generation %#x) must be fenced: %s", ev.node_id, ev.generation, ev.reason)
        elif isinstance(ev, FenceOutcome):
            if ev.method not in m.RUNNER_METHODS:  # the runner counted each method it ran (FR4)
                m.FENCE_ATTEMPTS.labels(ev.method, "fenced" if ev.ok else "failed").inc()
            log.log(logging.WARNING if ev.ok else logging.ERROR, "fencing node %d (generation %#x), attempt %d by %s:"
                    " %s: %s", ev.node_id, ev.generation, ev.attempt, ev.method, "fenced" if ev.ok else "FAILED",
                    ev.detail)
        elif isinstance(ev, FencePending):
            log.warning("fencing node %d (generation %#x), attempt %d by %s: %s", ev.node_id, ev.generation,
                        ev.attempt, ev.method, ev.detail)
        elif isinstance(ev, FenceReceipt):  # fencing FD12
            if ev.issued:
                m.FENCE_RECEIPTS.inc()
                log.warning("fencing receipt for node %d (generation %#x), %s: %s", ev.node_id, ev.generation,
                            ev.method, ev.evidence)
            else:
                log.error("no fencing receipt for node %d (generation %#x), %s: %s", ev.node_id, ev.generation,
                          ev.method, ev.evidence)
        elif isinstance(ev, SelfFenced):
            m.SELF_FENCE.labels(ev.reason).inc()
            log.critical("SELF-FENCED (%s): %s; every guarded resource is being stopped, nothing more is written"
                         " to guarded storage, the watchdog is no longer fed; restart the daemon to rejoin",
                         ev.reason, ev.detail)
        elif isinstance(ev, VictimBack):
            log.warning("node %d (generation %#x) needs no fencing any more: %s", ev.node_id, ev.generation, ev.reason)
        elif isinstance(ev, MailboxMessage):
            sender = "an operator" if ev.sender_id == 0 else f"node {ev.sender_id}"
            if ev.message == "fence":
                log.critical("region %s: fence message (the disk pill) from %s (seq %d) received and acknowledged",
                             ev.region, sender, ev.seq)
            elif ev.message == "test":
                log.warning("region %s: test message from %s (seq %d) received and acknowledged", ev.region, sender,
                            ev.seq)
            else:
                log.info("region %s: mailbox cleared by %s (seq %d)", ev.region, sender, ev.seq)
        elif isinstance(ev, Note):
            log.log(_LEVELS[ev.level], "%s", ev.text)
        else:
            log.debug("event %r", ev)
        self._measure(ev)

    def fence_started(self, node_id: int, generation: int) -> None:
        """A victim named, or a fence ordered (a manual fence names no victim): its fence time starts."""
        if self._fence_started.get(node_id, (None,))[0] != generation:
            self._fence_started[node_id] = (generation, self.clock_ms())

    def _measure(self, ev) -> None:
        """Detection and fence latencies (what the dashboard plots)."""
        if isinstance(ev, NodeStateChanged) and ev.new is NodeState.DEAD:
            m.DEATH_DETECTION.observe(ev.age_ms / 1000)
        elif isinstance(ev, VictimNamed):
            self.fence_started(ev.node_id, ev.generation)
        elif isinstance(ev, VictimBack):
            self._fence_started.pop(ev.node_id, None)
        elif isinstance(ev, FenceOutcome) and ev.ok:
            started = self._fence_started.get(ev.node_id)
            if started is not None and started[0] == ev.generation:
                del self._fence_started[ev.node_id]
                m.FENCE_DURATION.labels(ev.method).observe((self.clock_ms() - started[1]) / 1000)

    @staticmethod
    def _mmp(ev: MmpEvent) -> None:
        if ev.what in ("acquired", "released", "lost"):  # a refusal says nothing of a hold we may have
            m.MMP_HELD.labels(ev.resource).set(1 if ev.what == "acquired" else 0)
        if ev.what == "acquired":
            ACQUIRED.labels(ev.resource).inc()
            LOST.labels(ev.resource)  # the series exists at 0: a later loss is an increase() alerts see
            log.info("MMP resource %r acquired: epoch %d %s", ev.resource, ev.epoch, ev.text)
        elif ev.what == "refused":
            REFUSED.labels(ev.resource).inc()
            log.info("MMP resource %r not acquired: %s", ev.resource, ev.text)
        elif ev.what == "released":
            log.info("released %s (epoch %d) %s", ev.resource, ev.epoch, ev.text)
        elif ev.what == "lost":
            log.critical("MMP resource %r lost (epoch %d): %s; running its loss action", ev.resource, ev.epoch, ev.text)
