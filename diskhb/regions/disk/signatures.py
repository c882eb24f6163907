"""What is already on a device? Known signatures, read at their documented offsets.

`diskhb format` refuses to overwrite anything found here without --force. Each probe reads a
few bytes at a fixed place, so a scan costs a handful of small reads; nothing is read beyond
the device's end. A probe must never fire on zeros or random data (tests check both).
"""

from __future__ import annotations

import struct
import uuid as uuidlib
from dataclasses import dataclass
from typing import Callable

ReadAt = Callable[[int, int], bytes]


@dataclass(frozen=True, slots=True)
class Signature:
    kind: str  # filesystem | partition-table | raid | lvm | crypto | cluster | diskhb | swap
    description: str
    offset: int


def _r(read_at: ReadAt, size: int, offset: int, length: int) -> bytes:
    if offset < 0 or offset + length > size:
        return b""
    data = read_at(offset, length)
    return data if len(data) == length else b""


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _ext(read_at: ReadAt, size: int) -> list[Signature]:
    sb = _r(read_at, size, 1024, 264)
    if len(sb) < 264 or struct.unpack_from("<H", sb, 56)[0] != 0xEF53:
        return []
    compat, incompat, ro_compat = struct.unpack_from("<III", sb, 92)
    # ext4: extents(0x40)/64bit(0x80)/flex_bg(0x200) incompat or huge_file/dir_nlink ro-compat.
    if incompat & (0x40 | 0x80 | 0x200) or ro_compat & (0x8 | 0x20 | 0x40):
        kind = "ext4"
    elif compat & 0x4:  # has_journal
        kind = "ext3"
    else:
        kind = "ext2"
    label = _cstr(sb[120:136])
    uid = uuidlib.UUID(bytes=sb[104:120])
    mmp = ", MMP enabled" if incompat & 0x100 else ""
    lab = f" label {label!r}" if label else ""
    return [Signature("filesystem", f"{kind} filesystem{lab} (UUID {uid}{mmp}) at offset 1024", 1024)]


def _simple(read_at: ReadAt, size: int, offset: int, magic: bytes, kind: str, what: str) -> list[Signature]:
    return [Signature(kind, f"{what} at offset {offset}", offset)] if _r(read_at, size, offset, len(magic)) == magic else []


def _swap(read_at: ReadAt, size: int) -> list[Signature]:
    for page in (4096, 8192, 16384, 65536):
        got = _r(read_at, size, page - 10, 10)
        if got in (b"SWAPSPACE2", b"SWAP-SPACE"):
            return [Signature("swap", f"Linux swap space (page size {page})", page - 10)]
    return []


def _lvm(read_at: ReadAt, size: int) -> list[Signature]:
    for sector in range(4):
        off = sector * 512
        label = _r(read_at, size, off, 32)
        if label[:8] == b"LABELONE" and label[24:32] == b"LVM2 001":
            return [Signature("lvm", f"LVM2 physical volume label in sector {sector}", off)]
    return []


def _md(read_at: ReadAt, size: int) -> list[Signature]:
    out = []
    for off, ver in ((0, "1.1"), (4096, "1.2")):
        if _r(read_at, size, off, 4) == struct.pack("<I", 0xA92B4EFC):
            out.append(Signature("raid", f"Linux MD RAID superblock v{ver} at offset {off}", off))
    if size >= 128 * 1024:
        end = (size & ~(64 * 1024 - 1)) - 64 * 1024  # v0.90: last 64 KiB-aligned block
        if _r(read_at, size, end, 4) == struct.pack("<I", 0xA92B4EFC):
            out.append(Signature("raid", f"Linux MD RAID superblock v0.90 at offset {end}", end))
        end1 = ((size - 8192) & ~4095)  # v1.0: 8 KiB from the end, 4 KiB aligned
        if _r(read_at, size, end1, 4) == struct.pack("<I", 0xA92B4EFC):
            out.append(Signature("raid", f"Linux MD RAID superblock v1.0 at offset {end1}", end1))
    return out


def _mbr_gpt(read_at: ReadAt, size: int) -> list[Signature]:
    out = []
    for lba in (512, 4096):
        hdr = _r(read_at, size, lba, 8)
        if hdr == b"EFI PART":
            out.append(Signature("partition-table", f"GPT partition table (header at offset {lba})", lba))
            return out
    mbr = _r(read_at, size, 0, 512)
    if len(mbr) == 512 and mbr[510:512] == b"\x55\xaa":
        entries = [mbr[446 + 16 * i: 462 + 16 * i] for i in range(4)]
        types = [e[4] for e in entries if e[4] != 0 and e[0] in (0x00, 0x80)]
        valid_boot = all(e[0] in (0x00, 0x80) for e in entries)
        if types and valid_boot:
            if types == [0xEE]:
                out.append(Signature("partition-table", "protective MBR (GPT disk)", 0))
            else:
                out.append(Signature("partition-table", f"MBR partition table ({len(types)} partitions)", 0))
    return out


def _zfs(read_at: ReadAt, size: int) -> list[Signature]:
    # Label 0 occupies 256 KiB at offset 0; its uberblock ring starts at 128 KiB (1 KiB slots).
    magic_le, magic_be = struct.pack("<Q", 0x00BAB10C), struct.pack(">Q", 0x00BAB10C)
    for k in range(0, 32):
        off = 128 * 1024 + k * 1024
        got = _r(read_at, size, off, 8)
        if got in (magic_le, magic_be):
            return [Signature("filesystem", "ZFS pool member (vdev label uberblock)", off)]
    return []


def _diskhb(read_at: ReadAt, size: int) -> list[Signature]:
    head = _r(read_at, size, 0, 96)
    if head[:8] == b"DISKHB\x00\x01":
        return [Signature("diskhb", f"diskhb region (cluster {_cstr(head[32:96])!r})", 0)]
    return []


def _sanlock(read_at: ReadAt, size: int) -> list[Signature]:
    got = _r(read_at, size, 0, 4)
    if got == struct.pack("<I", 0x12212010):
        return [Signature("cluster", "sanlock delta lease (lockspace)", 0)]
    if got == struct.pack("<I", 0x06152010):
        return [Signature("cluster", "sanlock resource lease", 0)]
    return []


def find_signatures(read_at: ReadAt, size_bytes: int) -> list[Signature]:
    out: list[Signature] = []
    out += _diskhb(read_at, size_bytes)
    out += _ext(read_at, size_bytes)
    out += _simple(read_at, size_bytes, 0, b"XFSB", "filesystem", "XFS filesystem")
    out += _simple(read_at, size_bytes, 65536 + 64, b"_BHRfS_M", "filesystem", "btrfs filesystem")
    out += _swap(read_at, size_bytes)
    out += _lvm(read_at, size_bytes)
    out += _md(read_at, size_bytes)
    out += _simple(read_at, size_bytes, 0, b"LUKS\xba\xbe", "crypto", "LUKS encrypted volume")
    out += _mbr_gpt(read_at, size_bytes)
    out += _zfs(read_at, size_bytes)
    for block in (512, 1024, 2048, 4096):  # OCFS2 superblock is block 2 of the fs block size
        out += _simple(read_at, size_bytes, 2 * block, b"OCFSV2", "filesystem", "OCFS2 filesystem")
    out += _simple(read_at, size_bytes, 65536, b"\x01\x16\x19\x70", "filesystem", "GFS2 filesystem")
    out += _simple(read_at, size_bytes, 0, b"SBD_SBD_", "cluster", "SBD fencing device")
    out += _sanlock(read_at, size_bytes)
    return out


def describe(sigs: list[Signature]) -> str:
    return "found " + ", ".join(s.description for s in sigs)
