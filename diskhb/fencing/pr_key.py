"""The persistent-reservation key of a node incarnation: derived, never configured, never 0.

I/O-free. One 64-bit key, written big-endian on the wire and shown as 16 hex digits:

    0x CCCC NNNN GGGGGGGG
       |    |    +-- incarnation: the low 32 bits of the daemon's generation (random per start;
       |    |        the log shows generations in hex), so an operator can match a key to a node
       |    +------- node id, 1..4096 (the slot number)
       +------------ cluster tag: 16 bits of BLAKE2b over the cluster name

Rules of this file:
- K1 DERIVED: key_for(cluster, node_id, generation) is the only way a key is made. Every node
  computes every other node's key from what it already knows: the cluster name, the node id and
  the generation the node advertises in its heartbeat. A fencer therefore preempts exactly the
  incarnation it decided to fence (fencing FD5: a victim is (node, generation)).
- K2 NEVER 0: node ids start at 1, so the node field and the key are never 0 (0 means "no key"
  to REGISTER, and "every other registrant" to PREEMPT against an all-registrants reservation).
- K3 UNIQUE: two node ids of one cluster never share a key, whatever their generations; one
  node's incarnations share the top 32 bits and differ in the low 32 unless their generations
  agree there (a 2^-32 chance per restart; then a late fence of the old incarnation would also
  remove the new one, which fails safe: the node is cut off, never let in).
- K4 INCARNATION: the key changes with every start, so each start registers afresh (REGISTER AND
  IGNORE EXISTING KEY) and a fence ordered against an earlier incarnation cannot remove a newer
  one that rejoined legitimately. Registration is per I_T nexus, not per key: what stops a stale
  incarnation's writes is that its nexus is no longer registered after the preempt; the key
  makes the preempt name that incarnation, and lets an audit tell a stale registration (a key
  whose incarnation part is not the node's current generation) from a current one. Over iSCSI
  (libiscsi) each daemon start logs in as a new nexus; on a local device (SG_IO) every process of the host
  shares the host's nexus, and a new start's REGISTER AND IGNORE replaces the old key on it:
  either way a late preempt of the old key leaves the new registration alone.
- K5 OURS: a key is attributed to a node only when its cluster tag is ours and its node id is a
  configured one; every other key on a guarded LUN is foreign (another cluster, a tool, a typo):
  the audit reports it, never preempts it on that evidence alone (a 16-bit tag is a label, not
  an authentication).
"""

from __future__ import annotations

import hashlib

from diskhb.core.record import record
from diskhb.core.types import NODE_ID_MAX

CLUSTER_NAME_BYTES_MAX = 64  # the region format's limit
_PERSON = b"diskhb-pr-key-v1"  # BLAKE2b personalization: a new key format changes it


class PrKeyError(ValueError):
    """A key that cannot be derived (bad cluster name, node id or generation): one line."""


@record
class KeyParts:
    cluster_tag: int
    node_id: int
    incarnation: int


def cluster_tag(cluster: str) -> int:
    if not isinstance(cluster, str) or not cluster:
        raise PrKeyError("a reservation key needs a non-empty cluster name")
    raw = cluster.encode("utf-8")
    if len(raw) > CLUSTER_NAME_BYTES_MAX:
        raise PrKeyError(f"cluster name is {len(raw)} bytes, more than {CLUSTER_NAME_BYTES_MAX}")
    return int.from_bytes(hashlib.blake2b(raw, digest_size=2, person=_PERSON).digest(), "big")


def key_for(cluster: str, node_id: int, generation: int) -> int:
    """K1: the key of node `node_id`'s incarnation `generation` in `cluster`."""
    if isinstance(node_id, bool) or not isinstance(node_id, int) or not 1 <= node_id <= NODE_ID_MAX:
        raise PrKeyError(f"node id must be 1..{NODE_ID_MAX}, got {node_id!r}")
    if isinstance(generation, bool) or not isinstance(generation, int) or not 0 < generation < (1 << 64):
        raise PrKeyError(f"generation must be a non-zero unsigned 64-bit integer, got {generation!r}")
    key = (cluster_tag(cluster) << 48) | (node_id << 32) | (generation & 0xFFFF_FFFF)
    if key == 0:  # K2: node_id >= 1 guarantees it; a safety check raises, never asserts
        raise PrKeyError("internal: derived reservation key 0")
    return key


def split(key: int) -> KeyParts:
    if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < (1 << 64):
        raise PrKeyError(f"a reservation key is an unsigned 64-bit integer, got {key!r}")
    return KeyParts(key >> 48, (key >> 32) & 0xFFFF, key & 0xFFFF_FFFF)


def node_of(key: int, cluster: str, node_ids: frozenset[int] | set[int]) -> int | None:
    """K5: the configured node whose key this is, else None (foreign)."""
    parts = split(key)
    if parts.cluster_tag != cluster_tag(cluster) or parts.node_id not in node_ids:
        return None
    return parts.node_id


def is_incarnation(key: int, cluster: str, node_id: int, generation: int) -> bool:
    """K4: is `key` the key of exactly this incarnation?"""
    return key == key_for(cluster, node_id, generation)


def describe(key: int, cluster: str | None = None) -> str:
    """'0x1a2b0002c3d4e5f6 (node 2, incarnation c3d4e5f6)'; '(foreign)' when the tag is not ours."""
    parts = split(key)
    text = f"0x{key:016x}"
    if cluster is not None and parts.cluster_tag != cluster_tag(cluster):
        return f"{text} (foreign)"
    return f"{text} (node {parts.node_id}, incarnation {parts.incarnation:08x})"
