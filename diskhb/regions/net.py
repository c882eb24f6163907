"""A network heartbeat region: one UDP link (unicast peers, multicast group or broadcast).

Rules of this file:
- `publish` sends our beat as one authenticated datagram to every destination of the link on a
  non-blocking socket; it never waits and never raises for a send error. A failed send to any
  destination is a failed write of ours (IoCompleted, naming the destination); each
  destination's error is logged once when it starts and once when it ends.
- `poll` drains at most POLL_PACKETS_MAX datagrams (the rest wait in the socket for the next
  poll) and returns a Beat for each authenticated, fresh packet of another node (netpath.receiver),
  a DuplicateId for our own id under another generation seen advancing, and our sends and
  receives as IoSubmitted/IoCompleted. A peer heard from a source port other than the one we
  send it to (the two sides disagree about `port`: a one-way link) is logged once per source.
- Mistakes the operator can fix (key file, bind address or interface, port in use, bad peer,
  group or broadcast address) raise OperatorError at start(), never later.
- One region per link: redundant links are several NetRegions, each with its own socket, key
  file, replay state and counters.
"""

from __future__ import annotations

import logging

from diskhb.core.types import Beat, IoCompleted, IoSubmitted
from diskhb.errors import OperatorError
from diskhb.regions.base import OwnBeat
from diskhb.regions.signed import SignedRegion
from netpath import metrics, wire
from netpath.keys import KeyRing, load_key_file
from netpath.receiver import Receiver
from netpath.replay import REBOOT_QUIET_MS
from netpath.transport import DEFAULT_PORT, DEFAULT_TTL, UdpLink, open_link

log = logging.getLogger("diskhb.net")

POLL_PACKETS_MAX = 1024  # per poll: a flood delays the rest to the next tick, it never stalls one
ODD_SOURCES_MAX = 64  # sources with an unexpected port remembered (each logged once)


class NetRegion(SignedRegion):
    kind = "net"

    def __init__(self, name: str, *, cluster: str, node_id: int, key: str,
                 bind: str | None = None, port: int | None = None, peers: list[str] | tuple[str, ...] | None = None,
                 group: str | None = None, broadcast: str | None = None, ttl: int = DEFAULT_TTL,
                 reboot_quiet_ms: int = REBOOT_QUIET_MS):
        modes = sum(1 for m in (peers, group, broadcast) if m)
        if modes != 1:
            raise OperatorError(f"region {name}: a net region needs exactly one of peers, group or broadcast")
        if not key:
            raise OperatorError(f"region {name}: a net region needs key = a key file (diskhb keygen PATH)")
        self.name = name
        self.cluster = cluster
        self.node_id = node_id
        self.key_path = key
        self.bind = bind
        self.port = DEFAULT_PORT if port is None else port
        self.peers = list(peers) if peers else None
        self.group = group
        self.broadcast = broadcast
        self.ttl = ttl
        self.reboot_quiet_ms = reboot_quiet_ms
        self.link: UdpLink | None = None
        self.keys: KeyRing | None = None
        self.receiver: Receiver | None = None
        self.sent_total = 0
        self.send_errors_total = 0
        self.sent_bytes_total = 0
        self.received_bytes_total = 0
        self._dest_errors: dict[str, str | None] = {}
        self._recv_error: str | None = None
        self._events: list = []  # our sends since the last poll (one per publish)
        self._odd_sources: set[str] = set()
        self._sent = metrics.PACKETS_SENT.labels(name)
        self._send_errors = metrics.SEND_ERRORS.labels(name)

    def describe(self) -> str:
        if self.link is None:
            return f"{self.name} (not open)"
        keys = ",".join(str(i) for i in self.keys.ids) if self.keys else "?"
        return (f"{self.name}: {self.link.mode} {self.link.local} -> {', '.join(self.link.labels)}"
                f" keys {keys} (signing {self.keys.signing_id if self.keys else '?'})")

    # -- life cycle -------------------------------------------------------------------------

    def start(self, now_ms: int) -> None:
        self.keys = load_key_file(self.key_path)
        self.link = open_link(port=self.port, bind=self.bind, peers=self.peers, group=self.group,
                              broadcast=self.broadcast, ttl=self.ttl)
        self.receiver = Receiver(self.name, cluster=self.cluster, node_id=self.node_id, keys=self.keys,
                                 reboot_quiet_ms=self.reboot_quiet_ms)
        log.info("region %s", self.describe())

    @property
    def path(self) -> str | None:
        return self.link.local if self.link else None

    def publish(self, now_ms: int, beat: OwnBeat, wall_ms: int) -> None:
        if self.link is None:
            return
        self.receiver.own_generation = beat.generation
        data = self._encode(beat)
        self._events.append(IoSubmitted(self.name, "write", now_ms, beat.seq))
        results = self.link.send(data)
        failed = [(dest, err) for dest, err in results if err]
        for dest, err in results:
            self._note_dest(dest, err)
        ok_count = len(results) - len(failed)
        self.sent_total += ok_count
        self.sent_bytes_total += ok_count * len(data)
        self.send_errors_total += len(failed)
        if ok_count:
            self._sent.inc(ok_count)
        if failed:
            self._send_errors.inc(len(failed))
        error = f"send to {failed[0][0]}: {failed[0][1]}" if failed else None
        self._events.append(IoCompleted(self.name, "write", now_ms, not failed, error, beat.seq, now_ms))

    def poll(self, now_ms: int) -> list:
        out, self._events = self._events, []
        if self.link is None:
            return out
        datagrams, error = self.link.recv_batch(POLL_PACKETS_MAX)
        self._note_recv(error)
        out.append(IoCompleted(self.name, "read", now_ms, error is None, error, submitted_ms=now_ms))
        for data, source in datagrams:
            self.received_bytes_total += len(data)
            got = self.receiver.handle(now_ms, data, source)
            if got is not None:
                out.append(got)
                if isinstance(got, Beat):
                    self._check_source(source)
        return out

    def close(self, flush_ms: int = 0) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None

    def counters(self) -> dict[str, int]:
        return {"read_bytes": self.received_bytes_total, "write_bytes": self.sent_bytes_total}

    # -- internals --------------------------------------------------------------------------

    def _encode(self, beat: OwnBeat) -> bytes:
        p = wire.Packet(cluster_id=self.receiver.cluster_id, node_id=beat.node_id, generation=beat.generation,
                        seq=beat.seq, mono_ms=beat.mono_ms, flags=beat.flags, name=beat.name, view=beat.view,
                        digest=beat.digest)
        return wire.encode(p, self.keys)

    def _note_dest(self, dest: str, err: str | None) -> None:
        """Log a destination's send error when it starts, changes or ends: never once per tick."""
        before = self._dest_errors.get(dest)
        if err == before:
            return
        self._dest_errors[dest] = err
        if err:
            log.warning("region %s: cannot send heartbeat to %s: %s", self.name, dest, err)
        else:
            log.info("region %s: sending to %s works again", self.name, dest)

    def _note_recv(self, error: str | None) -> None:
        if error != self._recv_error:
            if error:
                log.warning("region %s: receive failed: %s", self.name, error)
            else:
                log.info("region %s: receiving works again", self.name)
            self._recv_error = error

    def _check_source(self, source: str) -> None:
        """A peer we send to at host:P that sends to us from host:Q (Q != P) has another `port`
        setting than ours: it hears nothing of ours. Said once per source."""
        if self.link is None or self.peers is None or source in self.link.labels or source in self._odd_sources:
            return
        host = source.rsplit(":", 1)[0]
        same_host = [d for d in self.link.labels if d.rsplit(":", 1)[0] == host]
        if same_host and len(self._odd_sources) < ODD_SOURCES_MAX:
            self._odd_sources.add(source)
            log.warning("region %s: heartbeats from %s, but we send that peer's to %s: the two sides disagree"
                        " about the port, so this link works one way only; set the same port on both",
                        self.name, source, same_host[0])
