"""The heartbeat packet: one authenticated datagram (or serial frame payload) per beat.

Rules of this file:
- The layout is defined once, with construct (HEADER, BODY below); `decode` also reads the
  fixed header with a struct.Struct derived from the same field list (asserted equal at import)
  because it runs on every datagram, garbage included, before anything is authenticated.
- `decode` never raises: anything that arrives on the wire returns either a Packet or a
  rejection reason from REASONS. Cheap checks come first (length, magic, version, cluster,
  key id), then the HMAC, and only an authenticated packet is parsed further: a flood of
  garbage costs at most one HMAC per datagram.
- Everything is validated before encoding and again after decoding (node id range, name
  length, view bounds); an encoded packet is parsed back before it leaves (pair assertion).
- Big-endian (network order) throughout.

Layout (version 1):

  offset size field        meaning
  0      4    magic        b"DHBn"
  4      1    version      1
  5      1    wire_flags   bit 0: VIEW_PARTIAL (the view did not fit; some regions left out)
                           bit 1: DIGEST (a cluster digest ends the body)
  6      2    length       total packet bytes, tag included (<= PACKET_BYTES_MAX)
  8      2    key_id       which key of the key file signed it (1..65535)
  10     4    cluster_id   cluster_id(cluster name): first 4 bytes of SHA-256
  14     2    node_id      sender's node id, 1..NODE_ID_MAX
  16     2    flags        SlotFlag bits
  18     8    generation   sender's random generation (never 0)
  26     8    seq          sender's beat counter
  34     8    mono_ms      sender's monotonic clock (only ever compared with itself)
  42     1+n  name         node name, u8 length + UTF-8 (<= NODE_NAME_BYTES_MAX)
  ..     1    view_count   regions in the sender's view (<= VIEW_REGIONS_MAX)
  ..          view entry   region name (u8 length + UTF-8), encoding u8, then
                             encoding 0 (list):   u16 count + count x u16 node ids
                             encoding 1 (bitmap): u16 byte count + bytes; bit b of byte k
                                                  (LSB first) set = node 8k+b+1 alive
  L-36   4    digest       with DIGEST: the sender's [quorum] node list and votes (quorum Q3)
  L-32   32   tag          HMAC-SHA256(key[key_id], bytes 0 .. L-33)
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field
from typing import Protocol

import construct as cs

from diskhb.core.types import NODE_ID_MAX, NODE_NAME_BYTES_MAX

MAGIC = b"DHBn"
VERSION = 1
WIRE_VIEW_PARTIAL = 0x01
WIRE_DIGEST = 0x02
WIRE_FLAGS_KNOWN = WIRE_VIEW_PARTIAL | WIRE_DIGEST
DIGEST_BYTES = 4

TAG_BYTES = 32  # HMAC-SHA256
# One Ethernet frame without IP fragmentation: 1500 MTU - 40 (IPv6) - 8 (UDP) = 1452, rounded
# down. A lost fragment would lose the whole beat, so heartbeats never fragment.
PACKET_BYTES_MAX = 1400
VIEW_REGIONS_MAX = 32  # the liveness core's region limit (REGIONS_MAX)
REGION_NAME_BYTES_MAX = 255  # u8 length prefix
BITMAP_BYTES_MAX = (NODE_ID_MAX + 7) // 8
KEY_ID_MAX = 0xFFFF
U64_MAX = (1 << 64) - 1

VIEW_LIST = 0
VIEW_BITMAP = 1

# Every reason a received packet or frame can be dropped for: a small fixed set, because it
# is a metric label. Pre-authentication reasons first; then what an authenticated packet can
# still fail (format: a sender bug; the rest: the replay rule in netpath.replay); then the
# serial framing layer.
REASONS = (
    "oversize",  # longer than PACKET_BYTES_MAX (or a serial frame longer than its bound)
    "truncated",  # shorter than the fixed part, or than its own length field
    "magic",
    "version",
    "cluster",  # another cluster on the same wire (or garbage)
    "key_id",  # signed with a key id our key file does not list
    "auth",  # HMAC mismatch: wrong key, forged or garbled
    "format",  # authenticated but not a valid v1 packet (bad field values, trailing bytes)
    "replay",  # seq not above the highest seen for its generation
    "duplicate",  # seq equal to the highest seen (a duplicated datagram)
    "old_generation",  # a generation this node has already left behind
    "own_id",  # our own node id with another generation: another daemon uses our id, or a replay
    "framing",  # serial: COBS decoding failed (line noise, a frame cut by unplug)
    "crc",  # serial: CRC-32C mismatch
)

HEADER = cs.Struct(
    "magic" / cs.Bytes(4),  # @0  Bytes, not Const: a wrong magic is a counted reason, not an exception
    "version" / cs.Int8ub,  # @4
    "wire_flags" / cs.Int8ub,  # @5
    "length" / cs.Int16ub,  # @6
    "key_id" / cs.Int16ub,  # @8
    "cluster_id" / cs.Int32ub,  # @10
    "node_id" / cs.Int16ub,  # @14
    "flags" / cs.Int16ub,  # @16
    "generation" / cs.Int64ub,  # @18
    "seq" / cs.Int64ub,  # @26
    "mono_ms" / cs.Int64ub,  # @34
)
HEADER_BYTES = 42
# The same header for the hot path; the import-time check keeps the two definitions one.
_HEADER_STRUCT = struct.Struct(">4sBBHHIHHQQQ")
assert HEADER.sizeof() == _HEADER_STRUCT.size == HEADER_BYTES

VIEW_ENTRY = cs.Struct(
    "region" / cs.PascalString(cs.Int8ub, "utf8"),
    "encoding" / cs.Int8ub,
    "ids" / cs.Switch(
        cs.this.encoding,
        {
            VIEW_LIST: cs.PrefixedArray(cs.Int16ub, cs.Int16ub),
            VIEW_BITMAP: cs.Prefixed(cs.Int16ub, cs.GreedyBytes),
        },
        default=cs.Error,
    ),
)
BODY = cs.Struct(
    "name" / cs.PascalString(cs.Int8ub, "utf8"),
    "view" / cs.PrefixedArray(cs.Int8ub, VIEW_ENTRY),
    cs.Terminated,
)
# Compiled once at import: 7x faster than the interpreted parser, and this runs per packet.
_BODY_FAST = BODY.compile()
BODY_BYTES_MIN = 2  # empty name, empty view
PACKET_BYTES_MIN = HEADER_BYTES + BODY_BYTES_MIN + TAG_BYTES


def cluster_id(cluster: str) -> int:
    """The 32-bit cluster id carried in every packet: a filter against a neighbouring cluster.

    It is not a secret and not the separation between clusters (the key is); a collision
    between two cluster names (2^-32) only costs a failed HMAC per packet.
    """
    return int.from_bytes(hashlib.sha256(b"diskhb cluster\0" + cluster.encode()).digest()[:4], "big")


@dataclass(frozen=True, slots=True)
class Packet:
    """A decoded, authenticated heartbeat (or one to encode)."""

    cluster_id: int
    node_id: int
    generation: int
    seq: int
    mono_ms: int
    flags: int = 0
    name: str = ""
    view: dict[str, tuple[int, ...]] = field(default_factory=dict)
    view_partial: bool = False
    key_id: int = 0  # set by decode (the key that verified it); encode uses the key ring's
    digest: int = 0  # the sender's cluster digest (quorum Q3); 0: none (no DIGEST flag)


class Keys(Protocol):
    """What encode/decode need of a key ring (netpath.keys.KeyRing)."""

    signing_id: int

    def key(self, key_id: int) -> bytes | None: ...


def _check_fields(p: Packet) -> str | None:
    """None if the fixed fields are valid, else what is wrong (shared by encode and decode)."""
    if not 1 <= p.node_id <= NODE_ID_MAX:
        return f"node id {p.node_id} not in 1..{NODE_ID_MAX}"
    if not 1 <= p.generation <= U64_MAX:
        return f"generation {p.generation} not in 1..2^64-1"
    if not 0 <= p.seq <= U64_MAX or not 0 <= p.mono_ms <= U64_MAX:
        return "seq or mono_ms out of range"
    if not 0 <= p.flags <= 0xFFFF:
        return f"flags {p.flags:#x} do not fit 16 bits"
    if len(p.name.encode()) > NODE_NAME_BYTES_MAX:
        return f"node name longer than {NODE_NAME_BYTES_MAX} bytes"
    return None


def _view_entry_bytes(region: bytes, ids: tuple[int, ...]) -> tuple[int, int, bytes | list[int]]:
    """(size on the wire, encoding, payload) of one view entry, the smaller of list and bitmap."""
    as_list = sorted(set(ids))
    list_bytes = 2 * len(as_list)
    top = as_list[-1] if as_list else 0
    bitmap_bytes = (top + 7) // 8
    fixed = 1 + len(region) + 1 + 2
    if bitmap_bytes < list_bytes:
        bits = bytearray(bitmap_bytes)
        for i in as_list:
            bits[(i - 1) // 8] |= 1 << ((i - 1) % 8)
        return fixed + bitmap_bytes, VIEW_BITMAP, bytes(bits)
    return fixed + list_bytes, VIEW_LIST, as_list


def encode(p: Packet, keys: Keys, *, budget_bytes: int = PACKET_BYTES_MAX) -> bytes:
    """Sign `p` with the key ring's signing key. The view is cut to fit `budget_bytes`.

    Regions are taken in name order while they fit; any left out set VIEW_PARTIAL. Raises
    ValueError for invalid fixed fields (a caller bug, never wire input).
    """
    problem = _check_fields(p)
    if problem:
        raise ValueError(problem)
    if not PACKET_BYTES_MIN + NODE_NAME_BYTES_MAX <= budget_bytes <= PACKET_BYTES_MAX:
        raise ValueError(f"budget {budget_bytes} bytes out of range")
    name = p.name.encode()
    used = HEADER_BYTES + 1 + len(name) + 1 + TAG_BYTES + (DIGEST_BYTES if p.digest else 0)
    entries = []
    partial = p.view_partial
    for region in sorted(p.view):
        rb = region.encode()
        ids = tuple(i for i in p.view[region] if 1 <= i <= NODE_ID_MAX)
        if len(rb) > REGION_NAME_BYTES_MAX or len(ids) != len(p.view[region]):
            partial = True  # a name too long for the wire or an id out of range: leave it out, say so
            continue
        size, encoding, payload = _view_entry_bytes(rb, ids)
        if used + size > budget_bytes or len(entries) == VIEW_REGIONS_MAX:
            partial = True
            continue
        used += size
        entries.append({"region": region, "encoding": encoding, "ids": payload})
    body = _BODY_FAST.build({"name": p.name, "view": entries})
    if p.digest:
        body += p.digest.to_bytes(DIGEST_BYTES, "big")
    length = HEADER_BYTES + len(body) + TAG_BYTES
    assert length == used <= budget_bytes, (length, used)
    key_id = keys.signing_id
    header = _HEADER_STRUCT.pack(
        MAGIC, VERSION, (WIRE_VIEW_PARTIAL if partial else 0) | (WIRE_DIGEST if p.digest else 0), length, key_id,
        p.cluster_id,
        p.node_id, p.flags, p.generation, p.seq, p.mono_ms,
    )
    signed = header + body
    out = signed + hmac.digest(keys.key(key_id), signed, "sha256")
    # Pair assertion: what leaves must decode to what we meant (views are checked by tests).
    back = decode(out, keys, p.cluster_id)
    assert isinstance(back, Packet) and (back.node_id, back.generation, back.seq, back.flags, back.name,
                                         back.digest) == (p.node_id, p.generation, p.seq, p.flags, p.name,
                                                          p.digest), back
    return out


def _decode_view(entries) -> dict[str, tuple[int, ...]] | None:
    if len(entries) > VIEW_REGIONS_MAX:
        return None
    view: dict[str, tuple[int, ...]] = {}
    for e in entries:
        if e.region in view:
            return None
        if e.encoding == VIEW_LIST:
            ids = tuple(sorted(set(e.ids)))
        else:
            bits = e.ids
            if len(bits) > BITMAP_BYTES_MAX:
                return None
            ids = tuple(8 * k + b + 1 for k, byte in enumerate(bits) if byte for b in range(8) if byte >> b & 1)
        if ids and not (ids[0] >= 1 and ids[-1] <= NODE_ID_MAX):
            return None
        view[e.region] = ids
    return view


def peek_header(data: bytes) -> tuple | None:
    """The fixed header fields of `data` (unauthenticated!), or None if it is too short."""
    if len(data) < HEADER_BYTES:
        return None
    return _HEADER_STRUCT.unpack_from(data)


def decode(data: bytes, keys: Keys, cluster: int) -> Packet | str:
    """A verified Packet, or the rejection reason (one of REASONS). Never raises."""
    try:
        return _decode(data, keys, cluster)
    except Exception:  # noqa: BLE001 - belt and braces: nothing on the wire may raise out of here
        return "format"


def _decode(data: bytes, keys: Keys, cluster: int) -> Packet | str:
    n = len(data)
    if n > PACKET_BYTES_MAX:
        return "oversize"
    if n < HEADER_BYTES:
        return "truncated" if data[: len(MAGIC)] == MAGIC[: min(n, len(MAGIC))] else "magic"
    magic, version, wire_flags, length, key_id, cid, node_id, flags, gen, seq, mono = _HEADER_STRUCT.unpack_from(data)
    if magic != MAGIC:
        return "magic"
    if version != VERSION:
        return "version"
    if length > PACKET_BYTES_MAX:
        return "oversize"
    if n < length or length < PACKET_BYTES_MIN:
        return "truncated"
    if n > length:
        return "format"
    if cid != cluster:
        return "cluster"
    key = keys.key(key_id)
    if key is None:
        return "key_id"
    signed = memoryview(data)[: length - TAG_BYTES]
    if not hmac.compare_digest(hmac.digest(key, signed, "sha256"), data[length - TAG_BYTES : length]):
        return "auth"
    # Authenticated from here on: a failure below is a sender bug, not an attack.
    if wire_flags & ~WIRE_FLAGS_KNOWN:
        return "format"
    end, digest = len(signed), 0
    if wire_flags & WIRE_DIGEST:
        end -= DIGEST_BYTES
        if end < HEADER_BYTES + BODY_BYTES_MIN:
            return "format"
        digest = int.from_bytes(signed[end:], "big")
        if digest == 0:
            return "format"  # a sender without a digest leaves the flag clear
    try:
        body = _BODY_FAST.parse(bytes(signed[HEADER_BYTES:end]))
    except Exception:  # noqa: BLE001 - construct, unicode or stream errors alike: not a v1 body
        return "format"
    view = _decode_view(body.view)
    if view is None:
        return "format"
    p = Packet(cluster_id=cid, node_id=node_id, generation=gen, seq=seq, mono_ms=mono, flags=flags,
               name=body.name, view=view, view_partial=bool(wire_flags & WIRE_VIEW_PARTIAL), key_id=key_id,
               digest=digest)
    if _check_fields(p) is not None:
        return "format"
    return p
