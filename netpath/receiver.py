"""The receive path shared by network and serial regions: bytes in, Beats out, drops counted.

Rules of this file:
- `handle` never raises and never trusts a byte: it decodes (netpath.wire: cheap checks, then
  HMAC, then the body), applies the replay rule (netpath.replay) and only then believes the
  packet. Every drop is counted by reason in `rejected` and in the Prometheus counter.
- Our own packets come back on multicast and broadcast links: with our generation they are
  dropped silently (`own_looped`); with another generation under our node id they are counted
  as "own_id", and once such a generation is seen advancing (a later seq of it) `handle`
  returns a DuplicateId: the node core stops (N3). (Someone replaying two recorded packets of
  an earlier incarnation of ours can cause that stop too: a denial of service, never two
  writers; rotating the key makes old recordings worthless.)
- Bounded state: replay state, views and names hold at most one entry per node id, and node ids
  are validated (1..NODE_ID_MAX) by the decoder before anything is stored.
- The first drop of each reason is logged (with the sender's address); later ones only counted,
  so a flood cannot flood the log.
"""

from __future__ import annotations

import logging

from diskhb.core.node import DuplicateId
from diskhb.core.types import Beat
from netpath import metrics
from netpath.keys import KeyRing
from netpath.replay import REBOOT_QUIET_MS, ReplayGuard
from netpath.wire import REASONS, Packet, cluster_id, decode

log = logging.getLogger("diskhb.netpath")

OWN_ID_GENERATIONS_MAX = 8  # foreign generations under our id remembered (to see one advance)


class Receiver:
    def __init__(self, region: str, *, cluster: str, node_id: int, keys: KeyRing,
                 reboot_quiet_ms: int = REBOOT_QUIET_MS):
        self.region = region
        self.cluster_id = cluster_id(cluster)
        self.node_id = node_id
        self.keys = keys
        self.own_generation: int | None = None  # set by the region at each tick
        self.guard = ReplayGuard(reboot_quiet_ms=reboot_quiet_ms)
        self.rejected: dict[str, int] = {r: 0 for r in REASONS}
        self.accepted_total = 0
        self.own_looped = 0
        # The sender's view from its latest accepted packet: node -> {its region: alive ids}.
        self.views: dict[int, dict[str, tuple[int, ...]]] = {}
        self.view_partial: dict[int, bool] = {}
        self._own_id_seqs: dict[int, int] = {}  # foreign generation under our id -> highest seq seen
        self._counters = {r: metrics.PACKETS_REJECTED.labels(region, r) for r in REASONS}
        self._accepted = metrics.PACKETS_ACCEPTED.labels(region)

    def reject(self, reason: str, source: str = "") -> None:
        assert reason in self.rejected, reason
        self.rejected[reason] += 1
        self._counters[reason].inc()
        if self.rejected[reason] == 1:
            log.warning("region %s: dropped a heartbeat packet from %s: %s (further drops are only counted:"
                        " diskhb_net_packets_rejected_total)", self.region, source or "?", reason)

    def handle(self, now_ms: int, data: bytes, source: str = "") -> Beat | DuplicateId | None:
        got = decode(data, self.keys, self.cluster_id)
        if isinstance(got, str):
            self.reject(got, source)
            return None
        p: Packet = got
        if p.node_id == self.node_id:
            if p.generation == self.own_generation:
                self.own_looped += 1
                return None
            self.reject("own_id", source)
            seen = self._own_id_seqs.get(p.generation)
            if seen is not None and p.seq > seen:
                return DuplicateId(self.region, p.generation, p.seq)
            if seen is None and len(self._own_id_seqs) >= OWN_ID_GENERATIONS_MAX:
                self._own_id_seqs.pop(next(iter(self._own_id_seqs)))
            self._own_id_seqs[p.generation] = max(p.seq, seen or 0)
            return None
        stale = self.guard.check(now_ms, p.node_id, p.generation, p.seq, p.mono_ms)
        if stale is not None:
            self.reject(stale, source)
            return None
        self.accepted_total += 1
        self._accepted.inc()
        self.views[p.node_id] = p.view
        self.view_partial[p.node_id] = p.view_partial
        # Who the sender sees alive on any region (self_fence SF3, fencing FD11); unknown when
        # its view did not fit the packet: an id left out is no proof it is not seen.
        sees = None if p.view_partial else frozenset(i for ids in p.view.values() for i in ids)
        return Beat(node_id=p.node_id, region=self.region, generation=p.generation, seq=p.seq,
                    flags=p.flags, name=p.name, digest=p.digest, sees=sees)
