"""On-disk format of an MMP resource: the sequence block and the Disk Paxos ballot sectors.

Rules of this file:
- Each structure is one 512-byte struct with its crc32c in the last 4 bytes (over the 508
  before it); on 4096-byte sectors the rest of the sector is zero. Same rule as the region.
- Validate before writing (encode_* round-trips its own output) and after reading (decode_*
  checks magic, crc and every range). An invalid structure is never taken for a valid one.
- All integers little-endian.

A resource is 1 + N sectors (N = slot count) at `base`:
    base + 0       the sequence block: what every node, tool and human reads (ext4-style)
    base + i*S     the ballot sector of node i (1..N): written only by node i, ever

Sequence block (the ext4 mmp_struct idea: only `seq` decides; names and times are for humans):
    @0   magic u32 "DMMP"   @4   seq u32 (CLEAN / FSCK sentinels, else 1..SEQ_MAX)
    @8   version u16        @10  holder_id u16 (0: never held)
    @12  interval_ms u32    the holder's current update interval (adaptive; readers wait
                            2 x interval + 1 s before calling an unchanged block dead)
    @16  holder_generation u64 (random per holding process, never 0 while held)
    @24  epoch u64          +1 per acquisition: a fencing token consumers can check
    @32  wall_ms u64        holder's wall clock at the write (display only)
    @40  uuid 16s           the region's UUID (or the standalone block's, see `init`)
    @56  slot_count u32     ballot sectors that follow; @60 sector_size u16; @62 flags u16
    @64  holder_name 64s    @128 resource 64s    @192 device 64s (as the holder named it)
    @508 crc32c
Ballot sector (sanlock's paxos dblock idea, plus the proposal itself):
    @0 magic u32 "BALT"  @4 node_id u16  @6 flags u16  @8 lver u64 (the epoch being decided)
    @16 mbal u64  @24 bal u64  @32 writer_generation u64  @40 wall_ms u64  @48 uuid 16s
    @64 inp_node u16  @66 pad  @68 inp_interval_ms u32  @72 inp_generation u64
    @80 inp_basis_epoch u64  @88 inp_basis_seq u32  @92 inp_basis_holder u16  @94 pad
    @96 inp_holder_name 64s  @160 inp_resource 64s
    @224 resource 64s       the name its writer works for: at lver 1 its own wish, at lver >= 2
                            the name the block is bound to (instance 1 decided it)
    @508 crc32c
"""

from __future__ import annotations

import functools

import construct as cs
from crc32c import crc32c

from diskhb.core import timing
from diskhb.core.record import record
from diskhb.core.types import NODE_ID_MAX, NODE_NAME_BYTES_MAX

STRUCT_BYTES = 512
CRC_OFFSET = STRUCT_BYTES - 4
SECTOR_SIZES = (512, 4096)
SEQ_MAGIC = int.from_bytes(b"DMMP", "little")
BALLOT_MAGIC = int.from_bytes(b"BALT", "little")
BLOCK_VERSION = 1

# ext4's sentinels, so a human who knows e2mmpstatus reads ours the same way.
SEQ_CLEAN = 0xFF4D4D50  # released: anyone may claim (through the ballot)
SEQ_FSCK = 0xE24D4D50  # repair/maintenance in progress: nobody may claim
SEQ_MAX = 0xE24D4D4F  # running seqs are 1..SEQ_MAX; anything else above is unknown = unsafe

RESOURCE_NAME_BYTES_MAX = 64
DEVICE_NAME_BYTES_MAX = 64
INTERVAL_MS_MIN = timing.MMP_INTERVAL_MS_MIN
INTERVAL_MS_MAX = timing.MMP_INTERVAL_MS_MAX
SLOT_COUNT_MAX = NODE_ID_MAX


class BlockError(ValueError):
    """Bytes that are not a valid MMP structure (or a structure not fit to be written)."""


def _name(limit: int) -> cs.Construct:
    return cs.PaddedString(limit, "utf8")


SEQ_BLOCK = cs.Struct(
    "magic" / cs.Int32ul,
    "seq" / cs.Int32ul,
    "version" / cs.Int16ul,
    "holder_id" / cs.Int16ul,
    "interval_ms" / cs.Int32ul,
    "holder_generation" / cs.Int64ul,
    "epoch" / cs.Int64ul,
    "wall_ms" / cs.Int64ul,
    "uuid" / cs.Bytes(16),
    "slot_count" / cs.Int32ul,
    "sector_size" / cs.Int16ul,
    "flags" / cs.Int16ul,
    "holder_name" / _name(NODE_NAME_BYTES_MAX),
    "resource" / _name(RESOURCE_NAME_BYTES_MAX),
    "device" / _name(DEVICE_NAME_BYTES_MAX),
    "reserved" / cs.Padding(CRC_OFFSET - 256),
    "crc" / cs.Int32ul,
)

BALLOT = cs.Struct(
    "magic" / cs.Int32ul,
    "node_id" / cs.Int16ul,
    "flags" / cs.Int16ul,
    "lver" / cs.Int64ul,
    "mbal" / cs.Int64ul,
    "bal" / cs.Int64ul,
    "writer_generation" / cs.Int64ul,
    "wall_ms" / cs.Int64ul,
    "uuid" / cs.Bytes(16),
    "inp_node" / cs.Int16ul,
    "pad0" / cs.Int16ul,
    "inp_interval_ms" / cs.Int32ul,
    "inp_generation" / cs.Int64ul,
    "inp_basis_epoch" / cs.Int64ul,
    "inp_basis_seq" / cs.Int32ul,
    "inp_basis_holder" / cs.Int16ul,
    "pad1" / cs.Int16ul,
    "inp_holder_name" / _name(NODE_NAME_BYTES_MAX),
    "inp_resource" / _name(RESOURCE_NAME_BYTES_MAX),
    "resource" / _name(RESOURCE_NAME_BYTES_MAX),
    "reserved" / cs.Padding(CRC_OFFSET - 288),
    "crc" / cs.Int32ul,
)

assert SEQ_BLOCK.sizeof() == BALLOT.sizeof() == STRUCT_BYTES

# construct's compiled codecs: the same formats as generated Python code, about twice as fast
# (every MMP write encodes and decodes its sector once; tests/mmp check both give the same bytes)
_SEQ_CODEC = SEQ_BLOCK.compile()
_BALLOT_CODEC = BALLOT.compile()


def check_name(value: str, limit: int, what: str, *, allow_empty: bool = False) -> None:
    raw = value.encode("utf-8")
    if (not raw and not allow_empty) or len(raw) > limit or b"\x00" in raw:
        raise BlockError(f"{what} must be 1..{limit} bytes of UTF-8 without NUL, got {value!r}")


def check_resource_name(name: str) -> None:
    """Resource names: printable, no '/' or whitespace (they name files and log lines)."""
    check_name(name, RESOURCE_NAME_BYTES_MAX, "resource name")
    if not name.isprintable() or any(c.isspace() or c == "/" for c in name):
        raise BlockError(f"resource name {name!r} must be printable, without spaces or '/'")


def seq_state(seq: int) -> str:
    if seq == SEQ_CLEAN:
        return "clean"
    if seq == SEQ_FSCK:
        return "fsck"
    if 1 <= seq <= SEQ_MAX:
        return "held"
    return "unknown"


def next_seq(seq: int) -> int:
    """The holder's next running seq: +1, wrapping within 1..SEQ_MAX (never a sentinel)."""
    assert 1 <= seq <= SEQ_MAX, seq
    return 1 if seq == SEQ_MAX else seq + 1


@record
class SeqBlock:
    seq: int
    epoch: int
    holder_id: int
    holder_generation: int
    holder_name: str
    resource: str
    device: str
    interval_ms: int
    wall_ms: int
    uuid: bytes
    slot_count: int
    sector_size: int
    flags: int = 0
    version: int = BLOCK_VERSION

    @property
    def state(self) -> str:
        return seq_state(self.seq)

    @property
    def identity(self) -> tuple[int, int, int, int]:
        """What a watcher compares: any write by a holder or claimant changes it.

        A holder's bump changes seq; an acquisition changes epoch (and seq, and holder);
        a release changes seq to CLEAN. Names and clocks are left out: they decide nothing.
        """
        return (self.seq, self.epoch, self.holder_id, self.holder_generation)

    def validate(self) -> None:
        if self.version != BLOCK_VERSION:
            raise BlockError(f"MMP block version {self.version} (this diskhb reads {BLOCK_VERSION})")
        state = self.state
        if state == "unknown":
            raise BlockError(f"unknown seq {self.seq:#010x} (not CLEAN, FSCK or 1..{SEQ_MAX:#x})")
        if not 0 <= self.holder_id <= NODE_ID_MAX:
            raise BlockError(f"holder id {self.holder_id} not in 0..{NODE_ID_MAX}")
        if state != "clean" and (self.holder_id == 0 or self.holder_generation == 0):
            raise BlockError(f"a {state} block needs a holder id and generation")
        if not 0 <= self.epoch < 2**64:
            raise BlockError("epoch out of range")
        if state == "held" and self.epoch == 0:
            raise BlockError("a held block has epoch >= 1 (every acquisition adds one)")
        if not INTERVAL_MS_MIN <= self.interval_ms <= INTERVAL_MS_MAX:
            raise BlockError(f"interval {self.interval_ms} ms not in {INTERVAL_MS_MIN}..{INTERVAL_MS_MAX}")
        if self.sector_size not in SECTOR_SIZES:
            raise BlockError(f"sector size {self.sector_size} is not 512 or 4096")
        if not 1 <= self.slot_count <= SLOT_COUNT_MAX:
            raise BlockError(f"slot count {self.slot_count} not in 1..{SLOT_COUNT_MAX}")
        if len(self.uuid) != 16 or self.uuid == bytes(16):
            raise BlockError("MMP block without a UUID")
        check_resource_name(self.resource)
        check_name(self.holder_name, NODE_NAME_BYTES_MAX, "holder name", allow_empty=self.holder_id == 0)
        check_name(self.device, DEVICE_NAME_BYTES_MAX, "device name", allow_empty=True)


_SEQ_FIELDS = list(SeqBlock.__dataclass_fields__)


def _crc_ok(data: bytes) -> bool:
    return crc32c(data[:CRC_OFFSET]) == int.from_bytes(data[CRC_OFFSET:STRUCT_BYTES], "little")


def _seal(raw: bytes, sector_size: int) -> bytes:
    assert len(raw) == STRUCT_BYTES
    out = raw[:CRC_OFFSET] + crc32c(raw[:CRC_OFFSET]).to_bytes(4, "little")
    return out + bytes(sector_size - STRUCT_BYTES)


def encode_seq_block(block: SeqBlock) -> bytes:
    """One sector. Validates first and checks that the bytes decode back to `block`."""
    block.validate()
    fields = {name: getattr(block, name) for name in _SEQ_FIELDS}
    out = _seal(_SEQ_CODEC.build({**fields, "magic": SEQ_MAGIC, "crc": 0}), block.sector_size)
    assert decode_seq_block(out) == block
    return out


_ZERO_STRUCT = bytes(STRUCT_BYTES)
DECODE_CACHE_MAX = 4096  # decoded sectors remembered: a watch or a hold reads the same bytes again and again


def decode_seq_block(data: bytes | memoryview) -> SeqBlock | None:
    """None if the sector was never written (all zero); BlockError if it is not a valid block."""
    return _decode_seq_block(bytes(data[:STRUCT_BYTES]))


@functools.lru_cache(maxsize=DECODE_CACHE_MAX)  # pure: the same bytes always decode the same way
def _decode_seq_block(data: bytes) -> SeqBlock | None:
    if len(data) < STRUCT_BYTES:
        raise BlockError("truncated MMP block")
    if data == _ZERO_STRUCT:
        return None
    magic = int.from_bytes(data[:4], "little")
    if magic != SEQ_MAGIC:
        raise BlockError(f"no diskhb MMP block here (magic {magic:#010x})")
    if not _crc_ok(data):
        stored = int.from_bytes(data[CRC_OFFSET:], "little")
        raise BlockError(f"MMP block checksum mismatch (stored {stored:#010x}, computed "
                         f"{crc32c(data[:CRC_OFFSET]):#010x})")
    try:
        p = _SEQ_CODEC.parse(data)
    except (cs.ConstructError, UnicodeDecodeError) as e:
        raise BlockError(f"MMP block does not parse: {e}") from None
    block = SeqBlock(**{name: p[name] for name in _SEQ_FIELDS})
    block.validate()
    return block


# --------------------------------------------------------------------------------------------
# Ballots


@record
class Proposal:
    """The value a ballot decides: who holds the next epoch, and on what observation it based
    its claim (the seq block it saw: if that block has changed since, this winner's pre-write
    check must fail, so it will never write and others need not wait for it)."""

    node_id: int
    generation: int
    holder_name: str
    resource: str
    interval_ms: int
    basis_epoch: int
    basis_seq: int  # 0: the block was never written
    basis_holder: int

    def validate(self) -> None:
        if not 1 <= self.node_id <= NODE_ID_MAX:
            raise BlockError(f"proposal node id {self.node_id} not in 1..{NODE_ID_MAX}")
        if self.generation == 0:
            raise BlockError("proposal with generation 0")
        if not INTERVAL_MS_MIN <= self.interval_ms <= INTERVAL_MS_MAX:
            raise BlockError(f"proposal interval {self.interval_ms} ms out of range")
        check_resource_name(self.resource)
        check_name(self.holder_name, NODE_NAME_BYTES_MAX, "holder name")

    def who(self) -> str:
        return f"{self.holder_name} (node {self.node_id}, generation {self.generation:#x})"


@record
class Ballot:
    """Node `node_id`'s Disk Paxos block for instance `lver` (the epoch being decided)."""

    node_id: int
    lver: int
    mbal: int  # the highest ballot this node has started at lver
    bal: int  # the ballot at which it accepted `inp` (0: accepted nothing at lver)
    inp: Proposal | None
    uuid: bytes
    writer_generation: int
    resource: str
    wall_ms: int = 0

    def validate(self) -> None:
        if not 1 <= self.node_id <= NODE_ID_MAX:
            raise BlockError(f"ballot node id {self.node_id} not in 1..{NODE_ID_MAX}")
        if self.lver < 1 or self.mbal < 1 or not 0 <= self.bal <= self.mbal:
            raise BlockError(f"ballot numbers out of order (lver {self.lver}, mbal {self.mbal}, bal {self.bal})")
        if (self.bal == 0) != (self.inp is None):
            raise BlockError("a ballot carries a proposal exactly when it accepted one (bal > 0)")
        if self.inp is not None:
            self.inp.validate()
        check_resource_name(self.resource)
        if self.lver >= 2 and self.inp is not None and self.inp.resource != self.resource:
            raise BlockError("ballot proposes another resource than the block is bound to")
        if len(self.uuid) != 16 or self.uuid == bytes(16):
            raise BlockError("ballot without a UUID")


def encode_ballot(b: Ballot, sector_size: int) -> bytes:
    b.validate()
    p = b.inp
    raw = _BALLOT_CODEC.build(dict(
        magic=BALLOT_MAGIC, node_id=b.node_id, flags=0, lver=b.lver, mbal=b.mbal, bal=b.bal,
        writer_generation=b.writer_generation, wall_ms=b.wall_ms, uuid=b.uuid,
        inp_node=p.node_id if p else 0, pad0=0, inp_interval_ms=p.interval_ms if p else 0,
        inp_generation=p.generation if p else 0, inp_basis_epoch=p.basis_epoch if p else 0,
        inp_basis_seq=p.basis_seq if p else 0, inp_basis_holder=p.basis_holder if p else 0, pad1=0,
        inp_holder_name=p.holder_name if p else "", inp_resource=p.resource if p else "",
        resource=b.resource, crc=0,
    ))
    out = _seal(raw, sector_size)
    assert decode_ballot(out, expect_node_id=b.node_id) == b
    return out


def decode_ballot(data: bytes | memoryview, *, expect_node_id: int) -> Ballot | None:
    """None if never written; BlockError if invalid (torn, corrupt, in the wrong sector)."""
    return _decode_ballot(bytes(data[:STRUCT_BYTES]), expect_node_id)


@functools.lru_cache(maxsize=DECODE_CACHE_MAX)  # pure, see decode_seq_block
def _decode_ballot(data: bytes, expect_node_id: int) -> Ballot | None:
    if data == _ZERO_STRUCT:
        return None
    magic = int.from_bytes(data[:4], "little")
    if magic != BALLOT_MAGIC:
        raise BlockError(f"bad ballot magic {magic:#010x}")
    if not _crc_ok(data):
        raise BlockError("ballot checksum mismatch")
    try:
        p = _BALLOT_CODEC.parse(data)
    except (cs.ConstructError, UnicodeDecodeError) as e:
        raise BlockError(f"ballot does not parse: {e}") from None
    if p.node_id != expect_node_id:
        raise BlockError(f"ballot sector of node {expect_node_id} holds node {p.node_id}")
    inp = None
    if p.bal:
        inp = Proposal(node_id=p.inp_node, generation=p.inp_generation, holder_name=p.inp_holder_name,
                       resource=p.inp_resource, interval_ms=p.inp_interval_ms,
                       basis_epoch=p.inp_basis_epoch, basis_seq=p.inp_basis_seq,
                       basis_holder=p.inp_basis_holder)
    b = Ballot(node_id=p.node_id, lver=p.lver, mbal=p.mbal, bal=p.bal, inp=inp, uuid=p.uuid,
               writer_generation=p.writer_generation, resource=p.resource, wall_ms=p.wall_ms)
    b.validate()
    return b


# --------------------------------------------------------------------------------------------
# One read of a whole resource (seq block + every ballot sector), decoded.


@record
class ResourceView:
    """What one contiguous read of a resource showed. Errors are kept, never skipped: a corrupt
    seq block or ballot sector may hide a holder or an accepted proposal."""

    seq: SeqBlock | None  # None: never written (and no error)
    seq_error: str | None
    ballots: dict[int, Ballot]
    ballot_errors: dict[int, str]

    @property
    def max_lver(self) -> int:
        return max((b.lver for b in self.ballots.values()), default=0)

    @property
    def epoch(self) -> int:
        return self.seq.epoch if self.seq is not None else 0


def decode_seq_sector(data: bytes, uuid: bytes | None) -> tuple[SeqBlock | None, str | None]:
    """(block or None, error): a block of another UUID is as bad as a corrupt one."""
    try:
        block = decode_seq_block(data)
    except BlockError as e:
        return None, str(e)
    if block is not None and uuid is not None and block.uuid != uuid:
        return None, "MMP block belongs to an earlier format (UUID differs)"
    return block, None


def decode_resource(data: bytes, *, sector_size: int, slot_count: int, uuid: bytes) -> ResourceView:
    assert len(data) >= (1 + slot_count) * sector_size
    seq, seq_error = decode_seq_sector(data[:STRUCT_BYTES], uuid)
    ballots: dict[int, Ballot] = {}
    errors: dict[int, str] = {}
    for node_id in range(1, slot_count + 1):
        raw = data[node_id * sector_size: node_id * sector_size + STRUCT_BYTES]
        if raw == _ZERO_STRUCT:  # never written: most sectors of a big cluster's block
            continue
        try:
            b = decode_ballot(raw, expect_node_id=node_id)
        except BlockError as e:
            errors[node_id] = str(e)
            continue
        if b is not None and b.uuid != uuid:
            errors[node_id] = "ballot belongs to an earlier format (UUID differs)"
        elif b is not None:
            ballots[node_id] = b
    return ResourceView(seq, seq_error, ballots, errors)
