"""What is already on a device? Known signatures, read at their documented offsets.

`diskhb format` refuses to overwrite anything found here without --force, and the refusal says
what was found. Rules of this file:
- Few reads: one read of the first HEAD_BYTES and one of the last TAIL_BYTES_MAX cover almost
  every probe; a handful of small extra reads happen only where a header points elsewhere (GPT
  entry array, ext4 MMP block) or for the LUKS2 backup headers beyond the head.
- Nothing is read outside [0, size_bytes), whatever the on-disk fields say (small devices,
  corrupt headers); no read is longer than READ_BYTES_MAX (make.py's reader caps there).
- A probe must never fire on zeros or random data: short magics (ext's 2 bytes, MBR's 0x55AA)
  are backed by range checks of the fields around them. Tests check zeros and random bytes.
- Names read from disk (labels, cluster names) are shown with repr() and cut short, so a hostile
  or corrupt label cannot break the one-line error message or the terminal.
- I/O-free: reads go through the injected read_at(offset, length) -> bytes.

Offsets are those of the on-disk formats' own headers (e2fsprogs, xfsprogs, btrfs-progs,
util-linux swap, LVM2 label, mdadm, LUKS1/LUKS2, UEFI GPT, OpenZFS vdev label, OCFS2, GFS2,
SBD, sanlock), the same places libblkid looks.
"""

from __future__ import annotations

import struct
import uuid as uuidlib
import zlib
from dataclasses import dataclass
from typing import Callable

ReadAt = Callable[[int, int], bytes]

KIB = 1024
READ_BYTES_MAX = 1 << 20  # longest single read we ask for
READS_MAX = 16  # a scan needs 2..6 reads; the bound only matters for devices that read short
HEAD_BYTES = 1 << 20  # everything at the start: ext/xfs/btrfs/swap/lvm/md/luks/gpt/zfs L0+L1/...
ZFS_LABEL_BYTES = 256 * KIB
NAME_CHARS_MAX = 64  # longest on-disk name echoed back in a message

DISKHB_MAGIC = b"DISKHB\x00\x01"  # == diskhb.regions.disk.format.SUPERBLOCK_MAGIC
DISKHB_CLUSTER_OFFSET, DISKHB_CLUSTER_BYTES = 32, 64

MD_MAGIC = 0xA92B4EFC
ZFS_UBERBLOCK_MAGIC = 0x00BAB10C
ZFS_VERSION_MAX = 5000  # SPA_VERSION_FEATURES; uberblock versions are 1..5000
SANLOCK_DELTA_MAGIC = 0x12212010
SANLOCK_PAXOS_MAGIC = 0x06152010
GFS2_MAGIC = 0x01161970


@dataclass(frozen=True, slots=True)
class Signature:
    kind: str  # filesystem | partition-table | raid | lvm | crypto | cluster | diskhb | swap
    description: str  # one line, no offset (describe() adds it)
    offset: int  # byte offset of the structure that carries the magic


class _Device:
    """Bounded, cached reads. Every byte comes from read_at within [0, size)."""

    def __init__(self, read_at: ReadAt, size: int):
        self.size = max(0, int(size))
        self.reads = 0
        self._read_at = read_at
        self._chunks: list[tuple[int, bytes]] = []
        self._load(0, min(self.size, HEAD_BYTES))
        # The tail holds ZFS labels 2 and 3 (the last two 256 KiB units of the label-aligned
        # size), MD v0.90/v1.0 superblocks and the GPT backup header; all lie at or after this.
        tail = max(HEAD_BYTES, _align_down(self.size, ZFS_LABEL_BYTES) - 2 * ZFS_LABEL_BYTES)
        if tail < self.size:
            self._load(tail, self.size - tail)

    def _load(self, offset: int, length: int) -> bytes:
        if (length <= 0 or length > READ_BYTES_MAX or offset < 0 or offset + length > self.size
                or self.reads >= READS_MAX):
            return b""
        self.reads += 1
        data = bytes(self._read_at(offset, length))[:length]
        if data:
            self._chunks.append((offset, data))  # a short read is kept: it still answers probes
        return data if len(data) == length else b""

    def get(self, offset: int, length: int) -> bytes:
        """Exactly `length` bytes at `offset`, or b"" if that is outside the device or unreadable."""
        if offset < 0 or length <= 0 or offset + length > self.size:
            return b""
        for start, data in self._chunks:
            if start <= offset and offset + length <= start + len(data):
                return data[offset - start: offset - start + length]
        return self._load(offset, length)


def _align_down(value: int, unit: int) -> int:
    return value - value % unit


def _u16(b: bytes, off: int) -> int:
    return struct.unpack_from("<H", b, off)[0]


def _u32(b: bytes, off: int) -> int:
    return struct.unpack_from("<I", b, off)[0]


def _u64(b: bytes, off: int) -> int:
    return struct.unpack_from("<Q", b, off)[0]


def _name(raw: bytes) -> str:
    """An on-disk name as a safe, quoted, bounded string: NUL-terminated, UTF-8 with replacement."""
    text = raw.split(b"\0", 1)[0].decode("utf-8", "replace").strip()
    if len(text) > NAME_CHARS_MAX:
        text = text[:NAME_CHARS_MAX] + "..."
    return repr(text)  # repr escapes newlines, escapes and other unprintables: one line stays one line


def _uuid(raw: bytes) -> str:
    return str(uuidlib.UUID(bytes=bytes(raw[:16])))


def _ascii_id(raw: bytes) -> str:
    """A textual UUID field (LUKS): shown bare when it is one, quoted and escaped otherwise."""
    text = raw.split(b"\0", 1)[0]
    if text and all(c in b"0123456789abcdefABCDEF-" for c in text):
        return text.decode("ascii")
    return _name(raw)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


# --- our own --------------------------------------------------------------------------------------

def _diskhb(dev: _Device) -> list[Signature]:
    head = dev.get(0, DISKHB_CLUSTER_OFFSET + DISKHB_CLUSTER_BYTES)
    if head[:8] != DISKHB_MAGIC:
        return []
    cluster = _name(head[DISKHB_CLUSTER_OFFSET:])
    return [Signature("diskhb", f"diskhb region (cluster {cluster})", 0)]


# --- filesystems ----------------------------------------------------------------------------------

# ext2/3/4 feature bits (e2fsprogs lib/ext2fs/ext2_fs.h).
EXT_COMPAT_HAS_JOURNAL = 0x4
EXT_INCOMPAT_FILETYPE, EXT_INCOMPAT_RECOVER, EXT_INCOMPAT_JOURNAL_DEV = 0x2, 0x4, 0x8
EXT_INCOMPAT_META_BG, EXT_INCOMPAT_64BIT, EXT_INCOMPAT_MMP = 0x10, 0x80, 0x100
EXT_RO_COMPAT_OLD = 0x1 | 0x2 | 0x4  # sparse_super, large_file, btree_dir: all ext2 knows
EXT2_INCOMPAT_OK = EXT_INCOMPAT_FILETYPE | EXT_INCOMPAT_META_BG
EXT3_INCOMPAT_OK = EXT2_INCOMPAT_OK | EXT_INCOMPAT_RECOVER
MMP_MAGIC = 0x004D4D50
MMP_SEQ_CLEAN, MMP_SEQ_FSCK, MMP_SEQ_MAX = 0xFF4D4D50, 0xE24D4D50, 0xE24D4D4F


def _ext(dev: _Device) -> list[Signature]:
    sb = dev.get(1024, 1024)
    if len(sb) < 1024 or _u16(sb, 56) != 0xEF53:
        return []
    # The magic is 2 bytes: demand a sane geometry too, so random data does not look like ext.
    compat, incompat, ro_compat = _u32(sb, 92), _u32(sb, 96), _u32(sb, 100)
    blocks = _u32(sb, 4) | ((_u32(sb, 0x150) << 32) if incompat & EXT_INCOMPAT_64BIT else 0)
    log_block = _u32(sb, 24)  # block size = 1024 << log_block, at most 64 KiB
    sane = (blocks > 0 and _u32(sb, 20) <= 1 and log_block <= 6  # first data block, block size
            and _u32(sb, 32) > 0 and _u32(sb, 76) <= 1)  # blocks per group, revision level
    uid = _uuid(sb[104:120])
    if sane and incompat & EXT_INCOMPAT_JOURNAL_DEV:  # an external journal has no inodes
        return [Signature("filesystem", f"ext3/ext4 external journal device (UUID {uid})", 1024)]
    if not (sane and _u32(sb, 0) > 0 and _u32(sb, 40) > 0):  # inodes, inodes per group
        return []
    # The same rule as libblkid: the oldest driver that could mount it names it.
    old_ro = not ro_compat & ~EXT_RO_COMPAT_OLD
    if not compat & EXT_COMPAT_HAS_JOURNAL and old_ro and not incompat & ~EXT2_INCOMPAT_OK:
        kind = "ext2"
    elif compat & EXT_COMPAT_HAS_JOURNAL and old_ro and not incompat & ~EXT3_INCOMPAT_OK:
        kind = "ext3"
    else:
        kind = "ext4"
    label = sb[120:136].split(b"\0", 1)[0]
    details = [f"UUID {uid}"]
    if incompat & EXT_INCOMPAT_MMP:
        details.append(_ext_mmp(dev, sb, 1024 << log_block))
    lab = f" label {_name(label)}" if label else ""
    return [Signature("filesystem", f"{kind} filesystem{lab} ({', '.join(details)})", 1024)]


def _ext_mmp(dev: _Device, sb: bytes, block_bytes: int) -> str:
    """MMP state: whether some node has (or last had) this filesystem mounted, and which."""
    block = _u64(sb, 0x168)
    mmp = dev.get(block * block_bytes, 128) if block else b""
    if len(mmp) < 128 or _u32(mmp, 0) != MMP_MAGIC:
        return "MMP enabled, MMP block unreadable"
    seq, node = _u32(mmp, 4), _name(mmp[16:80])
    if seq == MMP_SEQ_CLEAN:
        return f"MMP enabled, clean, last written by {node}"
    if seq == MMP_SEQ_FSCK:
        return f"MMP enabled, being checked (fsck) by {node}"
    if seq <= MMP_SEQ_MAX:
        return f"MMP enabled, IN USE by {node} (or that node stopped without unmounting)"
    return "MMP enabled, unknown MMP state"


def _xfs(dev: _Device) -> list[Signature]:
    sb = dev.get(0, 120)
    if sb[:4] != b"XFSB":
        return []
    block, dblocks = struct.unpack_from(">IQ", sb, 4)
    if not (512 <= block <= 65536 and block & (block - 1) == 0 and dblocks):
        return []
    label = sb[108:120].split(b"\0", 1)[0]
    lab = f" label {_name(label)}" if label else ""
    return [Signature("filesystem", f"XFS filesystem{lab} (UUID {_uuid(sb[32:48])})", 0)]


def _btrfs(dev: _Device) -> list[Signature]:
    base = 64 * KIB  # primary superblock; its own bytenr field must say so
    sb = dev.get(base, 0x12B + 256)
    if len(sb) < 72 or sb[64:72] != b"_BHRfS_M" or _u64(sb, 48) != base:
        return []
    label = sb[0x12B:].split(b"\0", 1)[0]
    lab = f" label {_name(label)}" if label else ""
    return [Signature("filesystem", f"btrfs filesystem{lab} (UUID {_uuid(sb[32:48])})", base)]


# Hibernation images written into swap space replace the swap magic with one of these.
SWAP_HIBERNATION = (b"S1SUSPEND", b"S2SUSPEND", b"ULSUSPEND", b"LINHIB0001")


def _swap(dev: _Device) -> list[Signature]:
    for page in (4096, 8192, 16384, 65536):  # the magic ends the first page, whatever its size
        magic = dev.get(page - 10, 10)
        if magic in (b"SWAPSPACE2", b"SWAP-SPACE"):
            hdr = dev.get(1024, 44)  # v1 header: version, last_page, nr_badpages, uuid, label
            desc = "Linux swap space"
            if magic == b"SWAPSPACE2" and len(hdr) == 44 and _u32(hdr, 0) == 1:
                label = hdr[28:44].split(b"\0", 1)[0]
                desc += (f" label {_name(label)}" if label else "") + f" (UUID {_uuid(hdr[12:28])})"
            return [Signature("swap", desc, page - 10)]
        if any(magic.startswith(m) for m in SWAP_HIBERNATION):
            return [Signature("swap", "Linux swap space holding a hibernation image", page - 10)]
    return []


def _vbr(dev: _Device) -> list[Signature]:
    """FAT/NTFS/exFAT boot sectors: they end in 0x55AA like an MBR, so they are told apart here."""
    bs = dev.get(0, 512)
    if len(bs) < 512:
        return []
    if bs[3:11] == b"NTFS    ":
        return [Signature("filesystem", "NTFS filesystem", 0)]
    if bs[3:11] == b"EXFAT   ":
        return [Signature("filesystem", "exFAT filesystem", 0)]
    if bs[510:512] != b"\x55\xaa":
        return []
    sector, per_cluster, reserved, fats = _u16(bs, 11), bs[13], _u16(bs, 14), bs[16]
    if not (sector in (512, 1024, 2048, 4096) and per_cluster and per_cluster & (per_cluster - 1) == 0
            and reserved and fats in (1, 2)):
        return []
    if bs[82:90] == b"FAT32   ":
        kind, serial, label = "FAT32", _u32(bs, 67), bs[71:82]
    elif bs[54:62] in (b"FAT12   ", b"FAT16   ", b"FAT     "):
        kind, serial, label = bs[54:59].decode().strip(), _u32(bs, 39), bs[43:54]
    else:
        return []
    label = label.rstrip(b" \0")
    lab = f" label {_name(label)}" if label and label != b"NO NAME" else ""
    return [Signature("filesystem", f"{kind} filesystem{lab} (serial {serial >> 16:04X}-{serial & 0xFFFF:04X})", 0)]


def _zfs(dev: _Device) -> list[Signature]:
    # Four 256 KiB vdev labels: two at the start, two at the end of the label-aligned size. Each
    # holds an XDR nvlist at +16 KiB (pool name) and an uberblock ring at +128 KiB..+256 KiB
    # whose slots are 1 KiB or larger powers of two, so every slot starts on a 1 KiB boundary.
    end = _align_down(dev.size, ZFS_LABEL_BYTES)
    for n, label in enumerate((0, ZFS_LABEL_BYTES, end - 2 * ZFS_LABEL_BYTES, end - ZFS_LABEL_BYTES)):
        if label < 0 or (n >= 2 and label < 2 * ZFS_LABEL_BYTES):
            continue  # too small for labels 2/3 distinct from 0/1
        ring = dev.get(label + 128 * KIB, 128 * KIB)
        for slot in range(0, len(ring), KIB):
            for endian in "<>":
                magic, version = struct.unpack_from(endian + "QQ", ring, slot)
                if magic == ZFS_UBERBLOCK_MAGIC and 1 <= version <= ZFS_VERSION_MAX:
                    pool = _zfs_pool_name(dev.get(label + 16 * KIB, 8 * KIB))
                    name = f" of pool {pool}" if pool else ""
                    return [Signature("filesystem", f"ZFS vdev{name} (label {n})", label)]
    return []


def _zfs_pool_name(nvlist: bytes) -> str:
    # XDR nvpair: name as XDR string ("name"), type DATA_TYPE_STRING (9), 1 element, then the value.
    key = b"\x00\x00\x00\x04name\x00\x00\x00\x09\x00\x00\x00\x01"
    at = nvlist.find(key)
    if at < 0:
        return ""
    at += len(key)
    if at + 4 > len(nvlist):
        return ""
    length = struct.unpack_from(">I", nvlist, at)[0]
    raw = nvlist[at + 4: at + 4 + min(length, 256)]
    return _name(raw) if raw else ""


def _ocfs2(dev: _Device) -> list[Signature]:
    # The superblock is an inode in block 2 at the fs block size; its super-block part starts at
    # 0xC0, with s_label[64] at +0x50 and s_uuid[16] at +0x90.
    for block in (512, 1024, 2048, 4096):
        sb = dev.get(2 * block, 0x160)
        if sb[:6] == b"OCFSV2":
            label = sb[0x110:0x150].split(b"\0", 1)[0]
            lab = f" label {_name(label)}" if label else ""
            desc = f"OCFS2 filesystem{lab} (UUID {_uuid(sb[0x150:0x160])}, block size {block})"
            return [Signature("filesystem", desc, 2 * block)]
    return []


def _gfs2(dev: _Device) -> list[Signature]:
    base = 64 * KIB
    sb = dev.get(base, 224)
    if len(sb) < 224:
        return []
    magic, mh_type = struct.unpack_from(">II", sb, 0)
    if magic != GFS2_MAGIC or mh_type != 1:  # meta header of type GFS2_METATYPE_SB
        return []
    fs_format = struct.unpack_from(">I", sb, 24)[0]
    kind = "GFS" if fs_format == 1309 else "GFS2"
    table = sb[160:224].split(b"\0", 1)[0]
    tab = f" (lock table {_name(table)})" if table else ""
    return [Signature("filesystem", f"{kind} filesystem{tab}", base)]


# --- volume managers, RAID, crypto ----------------------------------------------------------------

def _lvm(dev: _Device) -> list[Signature]:
    for sector in range(4):  # the label may sit in any of the first four 512-byte sectors
        off = sector * 512
        label = dev.get(off, 512)
        if label[:8] != b"LABELONE" or label[24:32] != b"LVM2 001":
            continue
        pv_at = _u32(label, 20)  # offset of the PV header from the label's start (usually 32)
        raw = label[pv_at: pv_at + 32] if 32 <= pv_at <= 480 else b""
        desc = "LVM2 physical volume"
        if len(raw) == 32 and all(0x21 <= c < 0x7F for c in raw):
            u = raw.decode("ascii")
            parts = [u[0:6], u[6:10], u[10:14], u[14:18], u[18:22], u[22:26], u[26:32]]
            desc += f" (PV UUID {'-'.join(parts)})"
        return [Signature("lvm", desc, off)]
    return []


RAID_LEVELS = {-4: "multipath", -1: "linear", 0: "raid0", 1: "raid1", 4: "raid4", 5: "raid5",
               6: "raid6", 10: "raid10"}


def _md(dev: _Device) -> list[Signature]:
    out = []
    size = dev.size
    # v1.x: at 0 (1.1), 4 KiB (1.2), or 8..12 KiB before the end on a 4 KiB boundary (1.0).
    # super_offset (sectors) in the superblock names its own place: a cheap, strong check.
    places = [(0, "1.1"), (4096, "1.2")]
    end_place = _align_down(size - 8 * KIB, 4 * KIB)
    if end_place > 4096:  # distinct from the 1.1/1.2 places
        places.append((end_place, "1.0"))
    for off, ver in places:
        sb = dev.get(off, 256)
        if len(sb) < 256 or _u32(sb, 0) != MD_MAGIC or _u32(sb, 4) != 1 or _u64(sb, 144) != off // 512:
            continue
        level = struct.unpack_from("<i", sb, 72)[0]
        name = sb[32:64].split(b"\0", 1)[0]
        nm = f", array {_name(name)}" if name else ""
        desc = (f"Linux MD RAID member (metadata {ver}, {RAID_LEVELS.get(level, f'level {level}')}{nm},"
                f" UUID {_uuid(sb[16:32])})")
        out.append(Signature("raid", desc, off))
    # v0.90: in the last 64 KiB-aligned 64 KiB block; host byte order (either endianness).
    if size >= 128 * KIB:
        off = _align_down(size, 64 * KIB) - 64 * KIB
        sb = dev.get(off, 64)
        for endian in "<>":
            if len(sb) == 64 and struct.unpack_from(endian + "II", sb, 0) == (MD_MAGIC, 0):
                level = struct.unpack_from(endian + "i", sb, 28)[0]
                lv = RAID_LEVELS.get(level, f"level {level}")
                out.append(Signature("raid", f"Linux MD RAID member (metadata 0.90, {lv})", off))
                break
    return out


LUKS2_SECONDARY_OFFSETS = tuple(16 * KIB << i for i in range(9))  # 16 KiB .. 4 MiB


def _luks(dev: _Device) -> list[Signature]:
    hdr = dev.get(0, 208)
    if hdr[:6] == b"LUKS\xba\xbe":
        version = struct.unpack_from(">H", hdr, 6)[0]
        uid = _ascii_id(hdr[168:208])
        label = hdr[24:72].split(b"\0", 1)[0] if version == 2 else b""
        lab = f" label {_name(label)}" if label else ""
        return [Signature("crypto", f"LUKS{version} encrypted volume{lab} (UUID {uid})", 0)]
    # Primary header gone (partly wiped?) but a LUKS2 backup header can still restore the volume.
    for off in LUKS2_SECONDARY_OFFSETS:
        if dev.get(off, 6) == b"SKUL\xba\xbe":
            return [Signature("crypto", "LUKS2 backup header (primary header missing)", off)]
    return []


# --- partition tables -----------------------------------------------------------------------------

GPT_ENTRIES_BYTES_MAX = READ_BYTES_MAX


def _gpt_at(dev: _Device, off: int, sector: int) -> str | None:
    hdr = dev.get(off, 92)
    if hdr[:8] != b"EFI PART":
        return None
    hdr_size, hdr_crc = _u32(hdr, 12), _u32(hdr, 16)
    full = dev.get(off, hdr_size) if 92 <= hdr_size <= sector else b""
    ok = bool(full) and zlib.crc32(full[:16] + b"\0\0\0\0" + full[20:]) == hdr_crc
    entries_lba, count, entry_size = _u64(hdr, 72), _u32(hdr, 80), _u32(hdr, 84)
    used = None
    if entry_size >= 128 and entry_size % 128 == 0 and 0 < count * entry_size <= GPT_ENTRIES_BYTES_MAX:
        table = dev.get(entries_lba * sector, count * entry_size)
        if table:
            zero = bytes(16)
            used = sum(table[i: i + 16] != zero for i in range(0, len(table), entry_size))
    parts = _plural(used, "partition") if used is not None else "partition entries unreadable"
    return parts if ok else f"{parts}, header checksum mismatch"


def _partition_tables(dev: _Device, vbr_found: bool) -> list[Signature]:
    out = []
    for sector in (512, 4096):  # the primary GPT header is LBA 1 at the disk's sector size
        got = _gpt_at(dev, sector, sector)
        if got:
            out.append(Signature("partition-table", f"GPT partition table ({got})", sector))
            break
    else:
        for sector in (512, 4096):  # backup header in the last LBA: enough to rebuild the table
            last = _align_down(dev.size, sector) - sector
            got = _gpt_at(dev, last, sector) if last > sector else None
            if got:
                out.append(Signature("partition-table",
                                     f"GPT backup partition table ({got}; primary header missing)", last))
                break
    if vbr_found:
        return out  # a FAT/NTFS boot sector is not an MBR, even though it ends in 0x55AA
    mbr = dev.get(0, 512)
    if len(mbr) < 512 or mbr[510:512] != b"\x55\xaa":
        return out
    entries = [mbr[446 + 16 * i: 462 + 16 * i] for i in range(4)]
    if any(e[0] not in (0x00, 0x80) for e in entries):
        return out  # boot flags other than 0/0x80: boot code, not a partition table
    types = [e[4] for e in entries if e[4] != 0 and _u32(e, 12) != 0]
    if not types:
        return out
    if 0xEE in types:  # protective (or hybrid) MBR: the GPT is the table that matters
        if not out:
            out.append(Signature("partition-table", "protective MBR of a GPT disk (GPT headers missing)", 0))
        return out
    out.append(Signature("partition-table", f"MBR partition table ({_plural(len(types), 'partition')})", 0))
    return out


# --- cluster infrastructure -----------------------------------------------------------------------

def _sbd(dev: _Device) -> list[Signature]:
    if dev.get(0, 8) == b"SBD_SBD_":
        return [Signature("cluster", "SBD fencing device (pacemaker storage-based death)", 0)]
    return []


def _sanlock(dev: _Device) -> list[Signature]:
    # leader_record: magic, version, flags, sector_size, 5 x u64, space_name[48] @56,
    # resource_name[48] @104 (sanlock's on-disk format is little-endian).
    rec = dev.get(0, 152)
    if len(rec) < 152:
        return []
    magic = _u32(rec, 0)
    space = rec[56:104].split(b"\0", 1)[0]
    if magic == SANLOCK_DELTA_MAGIC:
        return [Signature("cluster", f"sanlock lockspace {_name(space)} (delta leases)", 0)]
    if magic == SANLOCK_PAXOS_MAGIC:
        res = rec[104:152].split(b"\0", 1)[0]
        return [Signature("cluster", f"sanlock resource lease {_name(res)} (lockspace {_name(space)})", 0)]
    return []


def find_signatures(read_at: ReadAt, size_bytes: int) -> list[Signature]:
    """Every known signature on the device, most specific first; [] if none."""
    dev = _Device(read_at, size_bytes)
    vbr = _vbr(dev)
    out: list[Signature] = []
    for probe in (_diskhb, _ext, _xfs, _btrfs, _swap, _lvm, _md, _luks, _zfs, _ocfs2, _gfs2, _sbd, _sanlock):
        out += probe(dev)
    out += vbr
    out += _partition_tables(dev, bool(vbr))
    return out


def describe(sigs: list[Signature]) -> str:
    """One line for the refusal, e.g. "found ext4 filesystem label 'data' (UUID ...) at offset 1024"."""
    if not sigs:
        return "found no known signature"
    return "found " + ", ".join(f"{s.description} at offset {s.offset}" for s in sigs)
