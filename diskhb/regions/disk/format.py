"""On-disk region format v1, defined once with `construct`; numpy mirrors it for the hot path.

Rules of this file:
- Every structure is exactly one sector: each sector has exactly ONE writer (the superblock: the
  formatter; slot i and mailbox i: node i; MMP area: see diskhb.mmp). No locks are needed or used.
- Each structure is 512 bytes with its crc32c in the last 4 bytes, covering the 508 before it.
  On 4096-byte sectors the rest of the sector is zero and ignored, so one definition serves both.
- Validate before writing (encode_* asserts its own output decodes) and after reading (decode_*
  checks magic, crc and ranges). A slot that fails validation is a missed beat, never a beat.
- All integers little-endian. Offsets in the superblock are bytes from the start of the region.

Layout (S = sector size, N = slot count, R = MMP resources):
    0                superblock (one sector; the first 4 KiB are reserved for it)
    slot_offset      N slots: slot of node i at slot_offset + (i-1)*S
    mailbox_offset   N mailboxes: mailbox of node i at mailbox_offset + (i-1)*S
    mmp_offset       R resources of (1 + N) sectors: resource r at mmp_offset + r*(1+N)*S holds
                     the MMP sequence block, then node i's ballot sector at +i*S
    region_bytes     end of the region
Areas start on 4 KiB boundaries so a 512-byte-sector region can be copied to a 4K device plan.
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass

import construct as cs
import numpy as np
from crc32c import crc32c

from diskhb.core import timing
from diskhb.core.types import GENERATION_NONE, NODE_ID_MAX, NODE_NAME_BYTES_MAX, SlotFlag

FORMAT_VERSION = 1
SUPERBLOCK_MAGIC = b"DISKHB\x00\x01"
SLOT_MAGIC = 0x544F4C53  # b"SLOT"
MAILBOX_MAGIC = 0x58424D4D  # b"MMBX"
STRUCT_BYTES = 512  # every structure; crc32c at STRUCT_BYTES - 4
CRC_OFFSET = STRUCT_BYTES - 4
SECTOR_SIZES = (512, 4096)
AREA_ALIGN_BYTES = 4096
SUPERBLOCK_RESERVED_BYTES = 4096
CLUSTER_NAME_BYTES_MAX = 64

SLOTS_MIN = 1
SLOTS_MAX = NODE_ID_MAX  # >= 2000 as required; one sector each
MMP_RESOURCES_MAX = 256

# Timing limits and defaults: diskhb.core.timing (one place for every duration).
INTERVAL_MS_MIN, INTERVAL_MS_MAX = timing.HEARTBEAT_INTERVAL_MS_MIN, timing.HEARTBEAT_INTERVAL_MS_MAX
DEAD_MS_MAX = timing.DEAD_MS_MAX
IO_TIMEOUT_MS_MIN = timing.IO_TIMEOUT_MS_MIN

WATCHDOG_MS_MAX = 3_600_000
DEFAULT_SLOTS = 64
DEFAULT_MMP_RESOURCES = 8
DEFAULT_INTERVAL_MS = timing.HEARTBEAT_INTERVAL_MS_DEFAULT
DEFAULT_DEAD_MS = timing.HEARTBEAT_DEAD_MS_DEFAULT


class FormatError(ValueError):
    """Data on disk (or about to go to disk) that is not a valid v1 structure."""


def _pad_name(limit: int) -> cs.Construct:
    return cs.PaddedString(limit, "utf8")


SUPERBLOCK = cs.Struct(
    "magic" / cs.Const(SUPERBLOCK_MAGIC),  # @0
    "version" / cs.Int16ul,  # @8
    "sector_size" / cs.Int16ul,  # @10
    "flags" / cs.Int32ul,  # @12 reserved for format features, 0 in v1
    "uuid" / cs.Bytes(16),  # @16
    "cluster" / _pad_name(CLUSTER_NAME_BYTES_MAX),  # @32
    "slot_count" / cs.Int32ul,  # @96
    "mmp_resources" / cs.Int32ul,  # @100
    "slot_offset" / cs.Int64ul,  # @104
    "mailbox_offset" / cs.Int64ul,  # @112
    "mmp_offset" / cs.Int64ul,  # @120
    "region_bytes" / cs.Int64ul,  # @128
    "interval_ms" / cs.Int32ul,  # @136
    "dead_ms" / cs.Int32ul,  # @140
    "io_timeout_ms" / cs.Int32ul,  # @144
    "watchdog_ms" / cs.Int32ul,  # @148 the cluster's watchdog timeout (0: none; was reserved, 0, in v1's first files)
    "created_wall_ms" / cs.Int64ul,  # @152 for humans only
    "reserved" / cs.Padding(CRC_OFFSET - 160),  # @160 room to evolve
    "crc" / cs.Int32ul,  # @508
)

SLOT = cs.Struct(
    "magic" / cs.Int32ul,  # @0 SLOT_MAGIC once written; 0 = never written
    "node_id" / cs.Int16ul,  # @4 must equal the slot number
    "flags" / cs.Int16ul,  # @6 SlotFlag
    "generation" / cs.Int64ul,  # @8 random per daemon start, never 0
    "seq" / cs.Int64ul,  # @16 +1 per write
    "mono_ms" / cs.Int64ul,  # @24 writer's monotonic clock (comparable only with itself)
    "wall_ms" / cs.Int64ul,  # @32 writer's wall clock, display only
    "region_uuid" / cs.Bytes(16),  # @40 ties the slot to this format of the region
    "name" / _pad_name(NODE_NAME_BYTES_MAX),  # @56
    "interval_ms" / cs.Int32ul,  # @120 writer's beat interval (cross-check)
    "cluster_digest" / cs.Int32ul,  # @124 the writer's [quorum] node list and votes (quorum Q3); 0: none
    "mailbox_ack" / cs.Int64ul,  # @128 seq of the newest message in the writer's mailbox it acted on
    "reserved" / cs.Padding(CRC_OFFSET - 136),  # @136
    "crc" / cs.Int32ul,  # @508
)

MAILBOX = cs.Struct(
    "magic" / cs.Int32ul,  # @0 MAILBOX_MAGIC once written
    "target_id" / cs.Int16ul,  # @4 the node this mailbox belongs to
    "sender_id" / cs.Int16ul,  # @6 the elected fencer that wrote it
    "message" / cs.Int32ul,  # @8 0 = clear; the fencing issue defines the rest
    "reserved0" / cs.Int32ul,  # @12
    "target_generation" / cs.Int64ul,  # @16 the incarnation the message is meant for
    "seq" / cs.Int64ul,  # @24
    "sender_generation" / cs.Int64ul,  # @32
    "wall_ms" / cs.Int64ul,  # @40
    "region_uuid" / cs.Bytes(16),  # @48
    "reserved" / cs.Padding(CRC_OFFSET - 64),  # @64
    "crc" / cs.Int32ul,  # @508
)

assert SUPERBLOCK.sizeof() == SLOT.sizeof() == MAILBOX.sizeof() == STRUCT_BYTES

# The hot path: one vectorised pass over every slot of a read. Byte-for-byte the SLOT above
# (tests/test_format.py proves it); itemsize = sector size so a whole read is one array.
_SLOT_FIELDS = [
    ("magic", "<u4", 0),
    ("node_id", "<u2", 4),
    ("flags", "<u2", 6),
    ("generation", "<u8", 8),
    ("seq", "<u8", 16),
    ("mono_ms", "<u8", 24),
    ("wall_ms", "<u8", 32),
    ("region_uuid", "V16", 40),
    ("name", f"S{NODE_NAME_BYTES_MAX}", 56),
    ("interval_ms", "<u4", 120),
    ("cluster_digest", "<u4", 124),
    ("mailbox_ack", "<u8", 128),
    ("crc", "<u4", CRC_OFFSET),
]


def slot_dtype(sector_size: int) -> np.dtype:
    """numpy dtype of one slot sector (itemsize = sector_size)."""
    names, formats, offsets = zip(*_SLOT_FIELDS)
    return np.dtype(
        {"names": list(names), "formats": list(formats), "offsets": list(offsets),
         "itemsize": sector_size}
    )


def _crc_of(struct_bytes: bytes | memoryview) -> int:
    return crc32c(bytes(struct_bytes[:CRC_OFFSET]))


def _seal(build: bytes) -> bytes:
    """Set the crc field of a freshly built 512-byte structure."""
    assert len(build) == STRUCT_BYTES
    return build[:CRC_OFFSET] + _crc_of(build).to_bytes(4, "little")


def _to_sector(struct_bytes: bytes, sector_size: int) -> bytes:
    return struct_bytes + bytes(sector_size - STRUCT_BYTES)


def _check_name(value: str, limit: int, what: str) -> None:
    raw = value.encode("utf-8")
    if not raw or len(raw) > limit or b"\x00" in raw:
        raise FormatError(f"{what} must be 1..{limit} bytes of UTF-8 without NUL, got {value!r}")


# --------------------------------------------------------------------------------------------
# Superblock


@dataclass(frozen=True, slots=True)
class Superblock:
    sector_size: int
    uuid: bytes
    cluster: str
    slot_count: int
    mmp_resources: int
    slot_offset: int
    mailbox_offset: int
    mmp_offset: int
    region_bytes: int
    interval_ms: int
    dead_ms: int
    io_timeout_ms: int
    created_wall_ms: int
    version: int = FORMAT_VERSION
    flags: int = 0
    watchdog_ms: int = 0  # every node's [watchdog] is at most this; peers rely on it (timing.self_fence_deadline_ms)

    @property
    def uuid_str(self) -> str:
        return str(uuidlib.UUID(bytes=self.uuid))

    def slot_pos(self, node_id: int) -> int:
        assert 1 <= node_id <= self.slot_count, node_id
        return self.slot_offset + (node_id - 1) * self.sector_size

    def mailbox_pos(self, node_id: int) -> int:
        assert 1 <= node_id <= self.slot_count, node_id
        return self.mailbox_offset + (node_id - 1) * self.sector_size

    def mmp_resource_pos(self, index: int) -> int:
        assert 0 <= index < self.mmp_resources, index
        return self.mmp_offset + index * (1 + self.slot_count) * self.sector_size

    def validate(self) -> None:
        """Every range rule of v1; raises FormatError. Used on encode and on decode."""
        s = self.sector_size
        if self.version != FORMAT_VERSION:
            raise FormatError(f"unsupported format version {self.version} (this diskhb reads v1)")
        if s not in SECTOR_SIZES:
            raise FormatError(f"sector size {s} is not 512 or 4096")
        if len(self.uuid) != 16 or self.uuid == bytes(16):
            raise FormatError("region UUID is missing")
        _check_name(self.cluster, CLUSTER_NAME_BYTES_MAX, "cluster name")
        if not SLOTS_MIN <= self.slot_count <= SLOTS_MAX:
            raise FormatError(f"slot count {self.slot_count} not in {SLOTS_MIN}..{SLOTS_MAX}")
        if not 0 <= self.mmp_resources <= MMP_RESOURCES_MAX:
            raise FormatError(f"MMP resources {self.mmp_resources} not in 0..{MMP_RESOURCES_MAX}")
        check_timing(self.interval_ms, self.dead_ms, self.io_timeout_ms)
        if self.watchdog_ms and not 4 * self.interval_ms <= self.watchdog_ms <= WATCHDOG_MS_MAX:
            raise FormatError(f"watchdog timeout {self.watchdog_ms} ms not 0 (none) or in {4 * self.interval_ms}"
                              f"..{WATCHDOG_MS_MAX} (at least 4 beat intervals)")
        expect = layout(s, self.slot_count, self.mmp_resources)
        got = (self.slot_offset, self.mailbox_offset, self.mmp_offset, self.region_bytes)
        if got != expect:
            raise FormatError(f"area offsets {got} do not match the v1 layout {expect}")


def check_timing(interval_ms: int, dead_ms: int, io_timeout_ms: int) -> None:
    try:
        timing.check_heartbeat_timing(interval_ms, dead_ms, io_timeout_ms)
    except timing.TimingError as e:
        raise FormatError(str(e)) from None


default_io_timeout_ms = timing.default_io_timeout_ms


def _align(value: int, to: int) -> int:
    return -(-value // to) * to


def layout(sector_size: int, slot_count: int, mmp_resources: int) -> tuple[int, int, int, int]:
    """(slot_offset, mailbox_offset, mmp_offset, region_bytes) of the v1 layout."""
    slot_offset = _align(SUPERBLOCK_RESERVED_BYTES, sector_size)
    mailbox_offset = _align(slot_offset + slot_count * sector_size, AREA_ALIGN_BYTES)
    mmp_offset = _align(mailbox_offset + slot_count * sector_size, AREA_ALIGN_BYTES)
    region_bytes = _align(
        mmp_offset + mmp_resources * (1 + slot_count) * sector_size, AREA_ALIGN_BYTES
    )
    return slot_offset, mailbox_offset, mmp_offset, region_bytes


def new_superblock(
    *,
    cluster: str,
    sector_size: int,
    slot_count: int = DEFAULT_SLOTS,
    mmp_resources: int = DEFAULT_MMP_RESOURCES,
    interval_ms: int = DEFAULT_INTERVAL_MS,
    dead_ms: int = DEFAULT_DEAD_MS,
    io_timeout_ms: int | None = None,
    region_uuid: bytes,
    created_wall_ms: int,
    watchdog_ms: int = 0,
) -> Superblock:
    slot_offset, mailbox_offset, mmp_offset, region_bytes = layout(
        sector_size, slot_count, mmp_resources
    )
    sb = Superblock(
        sector_size=sector_size,
        uuid=region_uuid,
        cluster=cluster,
        slot_count=slot_count,
        mmp_resources=mmp_resources,
        slot_offset=slot_offset,
        mailbox_offset=mailbox_offset,
        mmp_offset=mmp_offset,
        region_bytes=region_bytes,
        interval_ms=interval_ms,
        dead_ms=dead_ms,
        io_timeout_ms=default_io_timeout_ms(interval_ms, dead_ms)
        if io_timeout_ms is None
        else io_timeout_ms,
        created_wall_ms=created_wall_ms,
        watchdog_ms=watchdog_ms,
    )
    sb.validate()
    return sb


_SB_FIELDS = [f for f in Superblock.__dataclass_fields__]


def encode_superblock(sb: Superblock) -> bytes:
    """One sector. Validates before and checks the result decodes back to `sb` (pair assertion)."""
    sb.validate()
    fields = {name: getattr(sb, name) for name in _SB_FIELDS}
    raw = _seal(SUPERBLOCK.build({**fields, "crc": 0}))
    out = _to_sector(raw, sb.sector_size)
    assert decode_superblock(out) == sb
    return out


def decode_superblock(data: bytes | memoryview) -> Superblock:
    """Parse and validate; FormatError names what is wrong."""
    data = bytes(data[:STRUCT_BYTES])
    if len(data) < STRUCT_BYTES:
        raise FormatError("region is truncated: fewer than 512 bytes")
    if data[:8] != SUPERBLOCK_MAGIC:
        raise FormatError("no diskhb superblock (unformatted, or not a diskhb region)")
    want = _crc_of(data)
    got = int.from_bytes(data[CRC_OFFSET:], "little")
    if want != got:
        raise FormatError(f"superblock checksum mismatch (stored {got:#010x}, computed {want:#010x})")
    try:
        p = SUPERBLOCK.parse(data)
    except (cs.ConstructError, UnicodeDecodeError) as e:
        raise FormatError(f"superblock does not parse: {e}") from None
    sb = Superblock(**{name: p[name] for name in _SB_FIELDS})
    sb.validate()
    return sb


# --------------------------------------------------------------------------------------------
# Slots


@dataclass(frozen=True, slots=True)
class Slot:
    node_id: int
    flags: int
    generation: int
    seq: int
    mono_ms: int
    wall_ms: int
    region_uuid: bytes
    name: str
    interval_ms: int
    cluster_digest: int = 0  # quorum Q3 (0: the writer has no [quorum])
    mailbox_ack: int = 0  # the seq of the newest message of its mailbox (this region's) it acted on

    def validate(self) -> None:
        if not 1 <= self.node_id <= SLOTS_MAX:
            raise FormatError(f"node id {self.node_id} not in 1..{SLOTS_MAX}")
        if not 0 <= self.cluster_digest < 2**32:
            raise FormatError("cluster digest out of range")
        if not 0 <= self.mailbox_ack < 2**64:
            raise FormatError("mailbox ack out of range")
        if self.generation == GENERATION_NONE:
            raise FormatError("generation 0 is reserved for 'never written'")
        if self.seq >= 2**64 or self.seq < 0:
            raise FormatError("seq out of range")
        _check_name(self.name, NODE_NAME_BYTES_MAX, "node name")
        if len(self.region_uuid) != 16:
            raise FormatError("region UUID must be 16 bytes")


_SLOT_FIELD_NAMES = [f for f in Slot.__dataclass_fields__]


def encode_slot(slot: Slot, sector_size: int) -> bytes:
    slot.validate()
    fields = {name: getattr(slot, name) for name in _SLOT_FIELD_NAMES}
    raw = _seal(SLOT.build({**fields, "magic": SLOT_MAGIC, "crc": 0}))
    out = _to_sector(raw, sector_size)
    assert decode_slot(out, expect_node_id=slot.node_id, region_uuid=slot.region_uuid) == slot
    return out


class SlotEmpty(Exception):
    """The slot was never written (all zero magic)."""


def decode_slot(data: bytes | memoryview, *, expect_node_id: int, region_uuid: bytes) -> Slot:
    """Parse one slot; SlotEmpty if never written, FormatError if invalid (torn, corrupt, stale)."""
    data = bytes(data[:STRUCT_BYTES])
    magic = int.from_bytes(data[:4], "little")
    if magic == 0 and data == bytes(STRUCT_BYTES):
        raise SlotEmpty()
    reason = slot_problem(data, expect_node_id, region_uuid)
    if reason:
        raise FormatError(reason)
    p = SLOT.parse(data)
    return Slot(**{name: p[name] for name in _SLOT_FIELD_NAMES})


def slot_problem(data: bytes, expect_node_id: int, region_uuid: bytes) -> str | None:
    """Why a written slot is invalid, or None. The construct-side twin of scan_slots()."""
    magic = int.from_bytes(data[:4], "little")
    if magic != SLOT_MAGIC:
        return f"bad magic {magic:#010x}"
    if _crc_of(data) != int.from_bytes(data[CRC_OFFSET:STRUCT_BYTES], "little"):
        return "checksum mismatch (torn or corrupt write)"
    p = SLOT.parse(data)
    if p.node_id != expect_node_id:
        return f"slot holds node id {p.node_id}, expected {expect_node_id}"
    if p.region_uuid != region_uuid:
        return "slot belongs to an earlier format of this region (UUID differs)"
    if p.generation == GENERATION_NONE:
        return "generation 0"
    try:
        p.name  # noqa: B018 - forces the UTF-8 decode
    except UnicodeDecodeError:
        return "node name is not UTF-8"
    return None


# --------------------------------------------------------------------------------------------
# The hot path: scan many slots at once.


@dataclass(frozen=True, slots=True)
class ScanResult:
    """Valid slots as parallel arrays, plus (node_id, reason) for the invalid ones."""

    node_ids: np.ndarray
    generations: np.ndarray
    seqs: np.ndarray
    flags: np.ndarray
    names: list[str]
    bad: list[tuple[int, str]]
    digests: np.ndarray  # cluster_digest per valid slot (quorum Q3)


def scan_slots(buf: np.ndarray, first_node_id: int, count: int, sector_size: int,
               region_uuid: bytes) -> ScanResult:
    """Validate and decode `count` consecutive slot sectors from a uint8 buffer in one pass."""
    assert buf.dtype == np.uint8 and buf.size >= count * sector_size
    rows = buf[: count * sector_size].reshape(count, sector_size)
    ids = np.arange(first_node_id, first_node_id + count, dtype=np.int64)
    return scan_slot_rows(rows, ids, region_uuid)


def scan_slot_rows(rows: np.ndarray, ids: np.ndarray, region_uuid: bytes) -> ScanResult:
    """Validate and decode slot sectors given as rows (k x sector_size) with their node ids.

    Empty (all-zero) slots are skipped silently; every other failure is reported as bad.
    The crc is computed per written slot (crc32c in C, ~1 us each); everything else is vectorised.
    """
    count, sector_size = rows.shape
    assert rows.dtype == np.uint8 and ids.shape == (count,)
    rec = np.ascontiguousarray(rows).view(slot_dtype(sector_size)).reshape(count)
    written = rec["magic"] != 0
    # A zero magic with non-zero bytes after it is a torn/corrupt slot, not an empty one.
    torn = ~written & rows[:, :STRUCT_BYTES].any(axis=1)
    bad: list[tuple[int, str]] = [(int(i), "bad magic 0x00000000") for i in ids[torn]]
    ok = written & (rec["magic"] == SLOT_MAGIC)
    for k in np.nonzero(written & ~ok)[0]:
        bad.append((int(ids[k]), f"bad magic {int(rec['magic'][k]):#010x}"))
    idx = np.nonzero(ok)[0]
    flat = memoryview(np.ascontiguousarray(rows)).cast("B")  # memoryview slices are cheap
    stored = rec["crc"][idx].tolist()
    crc_ok = np.fromiter(
        (crc32c(flat[k * sector_size: k * sector_size + CRC_OFFSET]) == c for k, c in zip(idx.tolist(), stored)),
        dtype=bool, count=idx.size,
    )
    for k in idx[~crc_ok]:
        bad.append((int(ids[k]), "checksum mismatch (torn or corrupt write)"))
    idx = idx[crc_ok]
    sel = rec[idx]
    id_ok = sel["node_id"].astype(np.int64) == ids[idx]
    uuid_ok = sel["region_uuid"] == np.void(region_uuid)
    gen_ok = sel["generation"] != 0
    for k in idx[~id_ok]:
        bad.append((int(ids[k]), f"slot holds node id {int(rec['node_id'][k])}"))
    for k in idx[id_ok & ~uuid_ok]:
        bad.append((int(ids[k]), "slot belongs to an earlier format of this region"))
    for k in idx[id_ok & uuid_ok & ~gen_ok]:
        bad.append((int(ids[k]), "generation 0"))
    names: list[str] = []
    keep: list[int] = []
    good_idx = idx[id_ok & uuid_ok & gen_ok]
    for k, raw_name in zip(good_idx.tolist(), rec["name"][good_idx].tolist()):
        try:
            names.append(raw_name.decode("utf-8"))
            keep.append(k)
        except UnicodeDecodeError:
            bad.append((int(ids[k]), "node name is not UTF-8"))
    good = np.asarray(keep, dtype=np.int64)
    bad.sort()
    return ScanResult(
        node_ids=ids[good],
        generations=rec["generation"][good],
        seqs=rec["seq"][good],
        flags=rec["flags"][good],
        names=names,
        bad=bad,
        digests=rec["cluster_digest"][good],
    )


# --------------------------------------------------------------------------------------------
# Mailboxes: mailbox i is written by those who send node i a message (an operator's `diskhb
# message`, sender 0; the elected fencer); node i reads it with every slot read and acknowledges
# in its own slot (mailbox_ack = the message's seq).

MSG_CLEAR = 0  # no message (or a withdrawn one)
MSG_TEST = 1  # acknowledge, log, show in status: proves the path from sender to node works
MSG_FENCE = 2  # the disk pill: the node fences itself on sight (diskhb.core.self_fence SF1)
MESSAGES = {MSG_CLEAR: "clear", MSG_TEST: "test", MSG_FENCE: "fence"}


@dataclass(frozen=True, slots=True)
class Mailbox:
    target_id: int
    sender_id: int
    message: int
    target_generation: int
    seq: int
    sender_generation: int
    wall_ms: int
    region_uuid: bytes


_MBX_FIELD_NAMES = [f for f in Mailbox.__dataclass_fields__]


def encode_mailbox(mbx: Mailbox, sector_size: int) -> bytes:
    if not 1 <= mbx.target_id <= SLOTS_MAX or not 0 <= mbx.sender_id <= SLOTS_MAX:
        raise FormatError("mailbox node ids out of range (sender 0 is an operator)")
    if not 0 <= mbx.seq < 2**64 or not 0 <= mbx.message < 2**32:
        raise FormatError("mailbox seq or message out of range")
    fields = {name: getattr(mbx, name) for name in _MBX_FIELD_NAMES}
    raw = _seal(MAILBOX.build({**fields, "magic": MAILBOX_MAGIC, "reserved0": 0, "crc": 0}))
    out = _to_sector(raw, sector_size)
    assert decode_mailbox(out, expect_target_id=mbx.target_id) == mbx
    return out


def decode_mailbox(data: bytes | memoryview, *, expect_target_id: int) -> Mailbox | None:
    """None if never written; FormatError if invalid."""
    data = bytes(data[:STRUCT_BYTES])
    if data == bytes(STRUCT_BYTES):
        return None
    magic = int.from_bytes(data[:4], "little")
    if magic != MAILBOX_MAGIC:
        raise FormatError(f"mailbox bad magic {magic:#010x}")
    if _crc_of(data) != int.from_bytes(data[CRC_OFFSET:], "little"):
        raise FormatError("mailbox checksum mismatch")
    p = MAILBOX.parse(data)
    if p.target_id != expect_target_id:
        raise FormatError(f"mailbox holds target {p.target_id}, expected {expect_target_id}")
    return Mailbox(**{name: p[name] for name in _MBX_FIELD_NAMES})


def describe_flags(flags: int) -> list[str]:
    return SlotFlag.names(flags)
