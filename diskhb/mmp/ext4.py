"""Read an ext4 filesystem's MMP block and judge it as e2mmpstatus does (read-only, never writes).

Facts (ext4 on-disk format; checked against mkfs.ext4 -O mmp images and live kernel mounts):
- Superblock at byte 1024: s_log_block_size u32 @0x18 (block = 1024 << it), s_magic u16
  @0x38 = 0xEF53, s_feature_incompat u32 @0x60 (MMP = 0x100, CSUM_SEED = 0x2000),
  s_feature_ro_compat u32 @0x64 (METADATA_CSUM = 0x400), s_uuid 16s @0x68,
  s_blocks_count_lo u32 @0x04 / _hi u32 @0x150 (64bit), s_first_data_block u32 @0x14,
  s_mmp_update_interval u16 @0x166, s_mmp_block u64 @0x168, s_checksum_seed u32 @0x270,
  s_checksum u32 @0x3FC (crc32c of the first 0x3FC bytes, with metadata_csum).
- mmp_struct in block s_mmp_block: magic u32 0x004D4D50 @0, seq u32 @4, time u64 @8 (wall
  seconds), nodename 64s @16, bdevname 32s @80, check_interval u16 @112, checksum u32 @1020.
  With metadata_csum the checksum is crc32c over bytes 0..1019 seeded with the filesystem's
  checksum seed (crc32c of the UUID, or s_checksum_seed with csum_seed), as ext4 computes it
  (no final inversion): with the standard crc32c that is ~crc32c(uuid + mmp[:1020]).
- seq: CLEAN 0xFF4D4D50, FSCK 0xE24D4D50, running 1..0xE24D4D4F, anything else unknown.
- e2mmpstatus: CLEAN -> safe (0); FSCK, unknown seq, bad checksum -> in use (1); a running
  seq is re-read after min(2 x ci + 1, ci + 60) s, ci = max(s_mmp_update_interval, 5,
  mmp_check_interval): changed -> in use (1), a bad checksum on the re-read -> in use (1),
  unchanged -> safe (0, a stale mount); bad MMP magic, MMP block 0 or outside the filesystem,
  not ext4, no MMP, unreadable -> error (2).
- A superblock checksum mismatch does not stop e2mmpstatus (it reopens ignoring checksums and
  still judges the MMP block): "in use" stays 1 (a live holder rewriting the superblock can
  tear our read of it, so "in use" is the verdict that matters), "safe" becomes 2 (e2fsck first).
  Checked with e2fsprogs 1.47.0.
We poll during that wait and answer "in use" at the first change (no need to sleep it out).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from crc32c import crc32c

EXT4_SUPER_MAGIC = 0xEF53
MMP_MAGIC = 0x004D4D50
MMP_SEQ_CLEAN = 0xFF4D4D50
MMP_SEQ_FSCK = 0xE24D4D50
MMP_SEQ_MAX = 0xE24D4D4F
INCOMPAT_MMP = 0x0100
INCOMPAT_64BIT = 0x0080
INCOMPAT_CSUM_SEED = 0x2000
RO_COMPAT_METADATA_CSUM = 0x0400
MMP_MIN_CHECK_INTERVAL_S = 5  # ext4's EXT4_MMP_MIN_CHECK_INTERVAL
SUPERBLOCK_OFFSET = 1024
SUPERBLOCK_BYTES = 1024
MMP_STRUCT_BYTES = 1024


class Ext4Error(ValueError):
    """Not an ext4 filesystem with a readable MMP block (e2mmpstatus exit 2)."""


@dataclass(frozen=True, slots=True)
class Ext4Super:
    block_size: int
    blocks_count: int
    first_data_block: int
    uuid: bytes
    mmp_block: int
    mmp_update_interval_s: int
    has_mmp: bool
    metadata_csum: bool
    csum_seed: int  # ext4's checksum seed (raw crc32c state)
    super_csum_ok: bool | None = None  # None: no metadata_csum; False: judged anyway (see final_verdict)


@dataclass(frozen=True, slots=True)
class MmpStruct:
    magic: int
    seq: int
    time_s: int
    nodename: str
    bdevname: str
    check_interval_s: int
    checksum: int
    checksum_ok: bool | None  # None: the filesystem has no metadata_csum

    @property
    def state(self) -> str:
        if self.seq == MMP_SEQ_CLEAN:
            return "clean"
        if self.seq == MMP_SEQ_FSCK:
            return "fsck"
        if self.seq <= MMP_SEQ_MAX:
            return "in use"
        return "unknown"


def _raw_crc32c(seed: int, data: bytes) -> int:
    """ext4's crc32c(seed, data): no pre/post inversion (the standard one inverts both)."""
    return ~crc32c(data, (~seed) & 0xFFFFFFFF) & 0xFFFFFFFF


def parse_super(data: bytes) -> Ext4Super:
    if len(data) < SUPERBLOCK_BYTES:
        raise Ext4Error("too small to hold an ext4 superblock")
    (magic,) = struct.unpack_from("<H", data, 0x38)
    if magic != EXT4_SUPER_MAGIC:
        raise Ext4Error("not an ext2/3/4 filesystem (no superblock magic 0xEF53)")
    (log_bs,) = struct.unpack_from("<I", data, 0x18)
    if log_bs > 6:
        raise Ext4Error(f"implausible block size (s_log_block_size {log_bs})")
    incompat, ro_compat = struct.unpack_from("<II", data, 0x60)
    uuid = data[0x68:0x78]
    (lo,) = struct.unpack_from("<I", data, 0x04)
    (hi,) = struct.unpack_from("<I", data, 0x150)
    (first,) = struct.unpack_from("<I", data, 0x14)
    (interval,) = struct.unpack_from("<H", data, 0x166)
    (mmp_block,) = struct.unpack_from("<Q", data, 0x168)
    (seed_field,) = struct.unpack_from("<I", data, 0x270)
    csum = bool(ro_compat & RO_COMPAT_METADATA_CSUM)
    super_ok = None
    if csum:  # a mismatch is not fatal: e2mmpstatus still reads the MMP block (final_verdict)
        (stored,) = struct.unpack_from("<I", data, 0x3FC)
        super_ok = _raw_crc32c(0xFFFFFFFF, data[:0x3FC]) == stored
    seed = seed_field if incompat & INCOMPAT_CSUM_SEED else _raw_crc32c(0xFFFFFFFF, uuid)
    return Ext4Super(
        block_size=1024 << log_bs,
        blocks_count=lo | ((hi << 32) if incompat & INCOMPAT_64BIT else 0),
        first_data_block=first, uuid=uuid, mmp_block=mmp_block, mmp_update_interval_s=interval,
        has_mmp=bool(incompat & INCOMPAT_MMP), metadata_csum=csum, csum_seed=seed, super_csum_ok=super_ok,
    )


def parse_mmp(data: bytes, sb: Ext4Super) -> MmpStruct:
    if len(data) < MMP_STRUCT_BYTES:
        raise Ext4Error("short MMP block")
    magic, seq, t = struct.unpack_from("<IIQ", data, 0)
    if magic != MMP_MAGIC:
        raise Ext4Error(f"MMP block {sb.mmp_block} has bad magic {magic:#010x}")
    (ci,) = struct.unpack_from("<H", data, 112)
    (stored,) = struct.unpack_from("<I", data, 1020)
    ok = _raw_crc32c(sb.csum_seed, data[:1020]) == stored if sb.metadata_csum else None
    return MmpStruct(
        magic=magic, seq=seq, time_s=t,
        nodename=data[16:80].split(b"\0", 1)[0].decode("utf-8", "replace"),
        bdevname=data[80:112].split(b"\0", 1)[0].decode("utf-8", "replace"),
        check_interval_s=ci, checksum=stored, checksum_ok=ok,
    )


def mmp_location(sb: Ext4Super) -> tuple[int, int]:
    """(byte offset, length to read) of the MMP block; Ext4Error if MMP is off or out of range."""
    if not sb.has_mmp:
        if sb.super_csum_ok is False:  # the feature bits themselves may be the damage
            raise Ext4Error("ext4 superblock checksum mismatch and no MMP feature in it; run e2fsck")
        raise Ext4Error("the filesystem has no MMP (mkfs.ext4 -O mmp or tune2fs -O mmp enables it)")
    if not sb.first_data_block < sb.mmp_block < sb.blocks_count:
        raise Ext4Error(f"MMP block number {sb.mmp_block} is outside the filesystem")
    return sb.mmp_block * sb.block_size, max(MMP_STRUCT_BYTES, 512)


def wait_s(sb: Ext4Super, mmp: MmpStruct) -> int:
    """e2mmpstatus's wait before the re-read: min(2 x ci + 1, ci + 60)."""
    ci = max(sb.mmp_update_interval_s, MMP_MIN_CHECK_INTERVAL_S, mmp.check_interval_s)
    return min(2 * ci + 1, ci + 60)


@dataclass(frozen=True, slots=True)
class Verdict:
    code: int  # 0 safe, 1 in use, 2 error (e2mmpstatus's exit codes)
    summary: str
    mmp: MmpStruct | None
    waited_s: float = 0.0


def first_verdict(mmp: MmpStruct) -> Verdict | None:
    """The verdict a single read gives, or None when the block must be watched."""
    who = _who(mmp)
    if mmp.checksum_ok is False:
        return Verdict(1, f"MMP block checksum is invalid (last update by {who}): not safe to mount", mmp)
    state = mmp.state
    if state == "clean":
        return Verdict(0, "it is safe to mount: MMP is clean", mmp)
    if state == "fsck":
        return Verdict(1, f"e2fsck is running on it (MMP seq FSCK, set by {who}): not safe to mount", mmp)
    if state == "unknown":
        return Verdict(1, f"MMP seq {mmp.seq:#010x} is unknown: not safe to mount", mmp)
    return None


def _who(m: MmpStruct) -> str:
    return f"'{m.nodename}' on '{m.bdevname}'"


def reread_verdict(first: MmpStruct, again: MmpStruct, waited_s: float, wait_s_: float) -> Verdict | None:
    """The verdict after re-reading a running seq `waited_s` into a `wait_s_` watch, or None
    to keep watching. A changed seq is a live holder, unless it changed to CLEAN (the holder
    unmounted: safe, as a first read of CLEAN); a bad checksum on the re-read is "in use"
    (e2fsprogs: MMP_CSUM_INVALID -> 1), checked before the seq, which it may not be fit to give."""
    if again.checksum_ok is False:
        return Verdict(1, f"MMP block checksum became invalid while watched (last update by {_who(again)}):"
                          " not safe to mount", again, waited_s)
    if again.seq != first.seq and again.state == "clean":  # unmounted while we watched: as a first read of CLEAN
        return Verdict(0, f"it is safe to mount: MMP became clean while watched (released by {_who(again)})",
                       again, waited_s)
    if again.seq != first.seq:
        return Verdict(1, f"in use by {_who(again)}: its MMP seq moved within {waited_s:.1f} s:"
                          " not safe to mount", again, waited_s)
    if waited_s >= wait_s_:
        return Verdict(0, f"safe to mount: MMP seq stood still for {waited_s:.1f} s (last update by"
                          f" {_who(again)}: a stale mount)", again, waited_s)
    return None


def final_verdict(sb: Ext4Super, v: Verdict) -> Verdict:
    """e2mmpstatus after a superblock checksum mismatch: "in use" stays 1, "safe" turns into 2."""
    if sb.super_csum_ok is not False:
        return v
    if v.code == 0:
        return Verdict(2, "error: ext4 superblock checksum mismatch (MMP itself says safe); run e2fsck"
                          " before mounting", v.mmp, v.waited_s)
    if v.code == 1:
        return Verdict(1, v.summary + " (and the superblock checksum does not match)", v.mmp, v.waited_s)
    return v
