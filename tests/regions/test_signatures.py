"""What `diskhb format` finds before it writes: real images where the tools exist, synthetic otherwise.

Real images are made by the real tools (mke2fs, mkswap, sfdisk, mkfs.vfat, mkfs.btrfs, cryptsetup)
on sparse files in a temp dir on disk; a test whose tool is missing skips and names it. The
synthetic images follow the on-disk formats' own headers; where util-linux's blkid knows the
format it is asked too, as an independent check that the synthetic image is what it claims.
Every scan goes through a read_at that fails the test on any read outside the device.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import struct
import subprocess
import tempfile
import uuid as uuidlib
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diskhb.regions.disk import format as fmt
from diskhb.regions.disk.signatures import (
    HEAD_BYTES,
    READ_BYTES_MAX,
    Signature,
    describe,
    find_signatures,
)

MIB = 1 << 20
SIZE = 8 * MIB
TOOL_TIMEOUT_S = 60
READS_PER_SCAN_MAX = 6  # head, tail, LUKS2 backup headers at 1/2/4 MiB, one pointer (GPT/MMP)


# --- helpers --------------------------------------------------------------------------------------

@pytest.fixture
def img_dir():
    """A fresh temp dir on a disk filesystem (sparse files; /tmp may be tmpfs), removed afterwards."""
    base = "/var/tmp" if os.path.isdir("/var/tmp") and os.access("/var/tmp", os.W_OK) else None
    d = tempfile.mkdtemp(prefix="diskhb-sig-", dir=base)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


class Scan:
    """find_signatures over a file, recording every read and failing on any out of bounds."""

    def __init__(self, path: str, size: int | None = None):
        self.path = path
        self.size = os.path.getsize(path) if size is None else size
        self.reads: list[tuple[int, int]] = []

    def read_at(self, offset: int, length: int) -> bytes:
        assert 0 <= offset and length > 0 and offset + length <= self.size, ("read outside", offset, length)
        assert length <= READ_BYTES_MAX, ("read too long", length)
        self.reads.append((offset, length))
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(length)

    def run(self) -> list[Signature]:
        sigs = find_signatures(self.read_at, self.size)
        assert len(self.reads) <= READS_PER_SCAN_MAX, self.reads
        return sigs


def scan(path: str) -> list[Signature]:
    return Scan(path).run()


def text(path: str) -> str:
    line = describe(scan(path))
    assert "\n" not in line and "\r" not in line
    return line


def image(d: str, name: str = "img", size: int = SIZE) -> str:
    p = os.path.join(d, name)
    with open(p, "wb") as f:
        f.truncate(size)
    return p


def put(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.skip(f"{name} not installed (Debian package {package})")
    return path


def run(*argv: str, stdin: str | None = None) -> str:
    r = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    assert r.returncode == 0, (argv, r.stdout, r.stderr)
    return r.stdout


def blkid(path: str) -> dict[str, str]:
    """libblkid's low-level probe of a file: an independent opinion on what is there."""
    if not shutil.which("blkid"):
        pytest.skip("blkid not installed (Debian package util-linux)")
    r = subprocess.run(["blkid", "-p", "-o", "export", path], capture_output=True, text=True,
                       timeout=TOOL_TIMEOUT_S)
    return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)


def kinds(sigs: list[Signature]) -> list[str]:
    return [s.kind for s in sigs]


# --- nothing there --------------------------------------------------------------------------------

def test_zeros_find_nothing(img_dir):
    for size in (SIZE, 3 * MIB + 12345):
        s = Scan(image(img_dir, f"z{size}", size))
        assert s.run() == []
        assert s.reads[0] == (0, HEAD_BYTES)  # one read for the head, one for the tail, ...
    assert describe([]) == "found no known signature"


@pytest.mark.parametrize("seed", [1, 7, 2024])
def test_random_data_finds_nothing(img_dir, seed):
    rng = random.Random(seed)
    size = 3 * MIB + rng.randrange(MIB)
    p = os.path.join(img_dir, "rand")
    with open(p, "wb") as f:
        f.write(rng.randbytes(size))
    assert scan(p) == []


def test_short_magics_alone_are_not_enough(img_dir):
    """ext's 2-byte magic and the MBR's 0x55AA in random data: the fields around them say no."""
    rng = random.Random(3)
    p = os.path.join(img_dir, "rand")
    with open(p, "wb") as f:
        f.write(rng.randbytes(2 * MIB))
    put(p, 1024 + 56, struct.pack("<H", 0xEF53))
    put(p, 510, b"\x55\xaa")
    put(p, 1024 + 20, struct.pack("<I", 7))  # first data block 7: not ext whatever else is random
    put(p, 446, b"\x33")  # a boot flag that is neither 0 nor 0x80: boot code, not a table
    assert scan(p) == []


@settings(max_examples=40, deadline=None)
@given(size=st.integers(min_value=0, max_value=3 * MIB), seed=st.integers(0, 2**32 - 1))
def test_any_size_never_reads_outside_the_device(tmp_path_factory, size, seed):
    """Random contents of every size, odd ones included: no read leaves [0, size), nothing found."""
    d = tmp_path_factory.mktemp("any")
    p = str(d / "dev")
    with open(p, "wb") as f:
        f.write(random.Random(seed).randbytes(size))
    assert scan(p) == []


@pytest.mark.parametrize("size", [0, 1, 511, 512, 4095, 4096, 4097, 64 * 1024 + 70, 128 * 1024,
                                  MIB - 1, MIB + 1, MIB + 300 * 1024])
def test_small_devices_are_scanned_within_their_size(img_dir, size):
    p = image(img_dir, "small", size)
    assert scan(p) == []
    if size >= 4096:
        put(p, 0, b"XFSB" + struct.pack(">IQ", 4096, 1))
        assert kinds(scan(p)) == ["filesystem"]


def test_a_device_that_reads_short_is_bounded(img_dir):
    """A reader that returns less than asked (e.g. a partial last sector) must not loop."""
    p = image(img_dir, "short", 5 * MIB)
    calls = []

    def read_at(offset, length):
        calls.append((offset, length))
        assert offset + length <= 5 * MIB
        return b"\0" * (length // 2)

    assert find_signatures(read_at, 5 * MIB) == []
    assert len(calls) <= 16


# --- ext2/3/4, real mke2fs ------------------------------------------------------------------------

def dumpe2fs(path: str) -> dict[str, str]:
    out = run("dumpe2fs", "-h", path)
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)}


def test_ext4_label_and_uuid(img_dir):
    tool("mkfs.ext4", "e2fsprogs")
    p = image(img_dir)
    run("mkfs.ext4", "-q", "-F", "-L", "data", p)
    [sig] = scan(p)
    uid = dumpe2fs(p)["Filesystem UUID"]
    assert sig == Signature("filesystem", f"ext4 filesystem label 'data' (UUID {uid})", 1024)
    assert describe([sig]) == f"found ext4 filesystem label 'data' (UUID {uid}) at offset 1024"


def test_ext2_ext3_and_an_external_journal(img_dir):
    tool("mke2fs", "e2fsprogs")
    p = image(img_dir)
    run("mke2fs", "-q", "-F", "-t", "ext2", p)
    assert text(p).startswith("found ext2 filesystem (UUID ")
    run("mke2fs", "-q", "-F", "-t", "ext3", "-L", "old", p)
    assert text(p).startswith("found ext3 filesystem label 'old' (UUID ")
    run("mke2fs", "-q", "-F", "-O", "journal_dev", "-b", "4096", p)
    assert text(p).startswith("found ext3/ext4 external journal device (UUID ")


def test_ext4_mmp_reports_who_holds_it(img_dir):
    """MMP (multi-mount protection): clean after mkfs, then IN USE by another node, then fsck.
    The MMP block's place comes from dumpe2fs, so our superblock parsing is checked too."""
    tool("mkfs.ext4", "e2fsprogs")
    p = image(img_dir)
    run("mkfs.ext4", "-q", "-F", "-O", "mmp", "-E", "mmp_update_interval=5", p)
    info = dumpe2fs(p)
    assert "mmp" in info["Filesystem features"].split()
    node = os.uname().nodename
    assert f"MMP enabled, clean, last written by {node!r}" in text(p)
    at = int(info["MMP block number"]) * int(info["Block size"])
    put(p, at + 4, struct.pack("<I", 42))  # an MMP sequence: mounted and being updated
    put(p, at + 16, b"othernode".ljust(64, b"\0"))
    assert "MMP enabled, IN USE by 'othernode'" in text(p)
    put(p, at + 4, struct.pack("<I", 0xE24D4D50))
    assert "MMP enabled, being checked (fsck) by 'othernode'" in text(p)
    assert blkid(p).get("TYPE") == "ext4"


# --- swap, partition tables, FAT: real tools ------------------------------------------------------

def test_swap_label_uuid_and_page_sizes(img_dir):
    tool("mkswap", "util-linux")
    p = image(img_dir)
    run("mkswap", "-L", "sw", p)
    [sig] = scan(p)
    assert sig.kind == "swap" and sig.offset == 4096 - 10
    assert sig.description == f"Linux swap space label 'sw' (UUID {blkid(p)['UUID']})"
    p2 = image(img_dir, "swap64k")
    run("mkswap", "--pagesize", "65536", p2)
    assert kinds(scan(p2)) == ["swap"] and scan(p2)[0].offset == 65536 - 10
    put(p, 4096 - 10, b"S1SUSPEND\0")  # what hibernation leaves in place of the magic
    assert text(p) == "found Linux swap space holding a hibernation image at offset 4086"


def test_mbr(img_dir):
    tool("sfdisk", "fdisk")
    p = image(img_dir)
    run("sfdisk", "-q", p, stdin="label: dos\n,2M,83\n,2M,8e\n")
    assert text(p) == "found MBR partition table (2 partitions) at offset 0"
    run("sfdisk", "-q", p, stdin="label: dos\n,2M,83\n")
    assert text(p) == "found MBR partition table (1 partition) at offset 0"


def test_gpt_protective_mbr_and_backup_header(img_dir):
    tool("sfdisk", "fdisk")
    p = image(img_dir)
    run("sfdisk", "-q", p, stdin="label: gpt\n,2M\n,2M\n,1M\n")
    # The protective MBR is part of the GPT disk: reported once, as GPT.
    assert text(p) == "found GPT partition table (3 partitions) at offset 512"
    assert blkid(p).get("PTTYPE") == "gpt"
    put(p, 512, bytes(512))  # primary header gone: the backup in the last sector still tells
    assert text(p) == f"found GPT backup partition table (3 partitions; primary header missing) at offset {SIZE - 512}"
    put(p, SIZE - 512, bytes(512))
    assert text(p) == "found protective MBR of a GPT disk (GPT headers missing) at offset 0"


def test_gpt_with_a_damaged_header_is_still_reported(img_dir):
    tool("sfdisk", "fdisk")
    p = image(img_dir)
    run("sfdisk", "-q", p, stdin="label: gpt\n,2M\n")
    put(p, 512 + 40, b"\xff")  # first usable LBA scribbled on: header crc no longer matches
    assert text(p) == "found GPT partition table (1 partition, header checksum mismatch) at offset 512"


@pytest.mark.root
def test_gpt_on_4096_byte_sectors(img_dir):
    """A 4Kn disk's GPT header is at 4096: made by sfdisk on a loop device with 4 KiB sectors."""
    if os.geteuid() != 0:
        pytest.skip("needs root to attach a loop device with 4096-byte sectors")
    tool("sfdisk", "fdisk")
    tool("losetup", "util-linux")
    p = image(img_dir)
    r = subprocess.run(["losetup", "--sector-size", "4096", "--find", "--show", p],
                       capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    if r.returncode != 0:
        pytest.skip(f"losetup could not attach a loop device: {r.stderr.strip()}")
    dev = r.stdout.strip()
    try:
        subprocess.run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", dev], input="label: gpt\n,2M\n,2M\n",
                       capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    finally:
        subprocess.run(["losetup", "--detach", dev], capture_output=True, timeout=TOOL_TIMEOUT_S)
    assert text(p) == "found GPT partition table (2 partitions) at offset 4096"
    put(p, 4096, bytes(4096))
    assert text(p) == f"found GPT backup partition table (2 partitions; primary header missing) at offset {SIZE - 4096}"


def test_fat_is_a_filesystem_not_a_partition_table(img_dir):
    tool("mkfs.vfat", "dosfstools")
    p = image(img_dir)
    run("mkfs.vfat", "-n", "BOOT", p)
    serial = blkid(p)["UUID"]
    assert text(p) == f"found FAT12 filesystem label 'BOOT' (serial {serial}) at offset 0"
    p32 = image(img_dir, "fat32", 40 * MIB)
    run("mkfs.vfat", "-F", "32", p32)
    assert text(p32) == f"found FAT32 filesystem (serial {blkid(p32)['UUID']}) at offset 0"


# --- btrfs, LUKS: real tools when installed -------------------------------------------------------

def test_btrfs(img_dir):
    tool("mkfs.btrfs", "btrfs-progs")
    p = image(img_dir, size=128 * MIB)  # sparse; mkfs.btrfs wants about 110 MiB at least
    run("mkfs.btrfs", "-q", "-L", "pool", p)
    assert text(p) == f"found btrfs filesystem label 'pool' (UUID {blkid(p)['UUID']}) at offset 65536"


def luks_format(path: str, *extra: str) -> None:
    tool("cryptsetup", "cryptsetup-bin")
    # pbkdf2 with few iterations: the header is what matters, not the key's strength (fast).
    run("cryptsetup", "luksFormat", "-q", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
        "--key-file", "-", *extra, path, stdin="not-a-secret")


def test_luks1_and_luks2(img_dir):
    p1 = image(img_dir, "l1", 16 * MIB)
    luks_format(p1, "--type", "luks1")
    assert text(p1) == f"found LUKS1 encrypted volume (UUID {blkid(p1)['UUID']}) at offset 0"
    p2 = image(img_dir, "l2", 16 * MIB)
    luks_format(p2, "--type", "luks2", "--label", "vault")
    uid = blkid(p2)["UUID"]
    assert text(p2) == f"found LUKS2 encrypted volume label 'vault' (UUID {uid}) at offset 0"
    put(p2, 0, bytes(4096))  # primary header wiped: LUKS2's backup header can still restore it
    assert text(p2) == "found LUKS2 backup header (primary header missing) at offset 16384"


def test_luks2_backup_header_beyond_the_first_mib(img_dir):
    p = image(img_dir, "l2", 32 * MIB)
    luks_format(p, "--type", "luks2", "--luks2-metadata-size", "2048k", "--luks2-keyslots-size", "4m")
    put(p, 0, bytes(4096))
    assert text(p) == f"found LUKS2 backup header (primary header missing) at offset {2 * MIB}"


# --- our own region -------------------------------------------------------------------------------

def test_diskhb_region_from_the_real_encoder(img_dir):
    p = image(img_dir)
    sb = fmt.new_superblock(cluster="prod-a", sector_size=512, slot_count=4, region_uuid=bytes(range(16)),
                            created_wall_ms=1)
    put(p, 0, fmt.encode_superblock(sb))
    assert scan(p) == [Signature("diskhb", "diskhb region (cluster 'prod-a')", 0)]


def test_names_from_disk_cannot_break_the_one_line_message(img_dir):
    p = image(img_dir)
    put(p, 0, b"DISKHB\x00\x01")
    put(p, 32, b"evil\n\x1b[2Jname\xff" + b"x" * 50)
    line = text(p)
    assert "\x1b" not in line and "\n" not in line and line.startswith("found diskhb region (cluster 'evil\\n")
    assert len(line) < 200


# --- synthetic images: formats whose tools are not installed here ---------------------------------

def lvm_crc(data: bytes) -> int:
    """LVM2's label crc: the crc32 table update from seed 0xf597a6cf, no final inversion."""
    return ~zlib.crc32(data, ~0xF597A6CF & 0xFFFFFFFF) & 0xFFFFFFFF


def lvm_label(sector: int, pv_uuid: str) -> bytes:
    pv = pv_uuid.encode() + struct.pack("<Q", 8 * MIB)  # PV header: uuid, device size
    pv += struct.pack("<QQQQ", MIB, 0, 0, 0)  # data areas: one, then the terminator
    pv += struct.pack("<QQQQ", 4096, MIB - 4096, 0, 0)  # metadata areas likewise
    body = struct.pack("<I", 32) + b"LVM2 001" + pv  # from offset 20 on: what the crc covers
    body = body.ljust(512 - 20, b"\0")
    return b"LABELONE" + struct.pack("<QI", sector, lvm_crc(body)) + body


@pytest.mark.parametrize("sector", [0, 1, 3])
def test_lvm2_physical_volume(img_dir, sector):
    """Synthetic (lvm2 is not installed here, and pvcreate needs a block device); blkid checks
    the label's crc and PV UUID, so the layout is the real one."""
    p = image(img_dir)
    put(p, sector * 512, lvm_label(sector, "AbCdEf0123456789ghijklmnopqrstUV"))
    want = "LVM2 physical volume (PV UUID AbCdEf-0123-4567-89gh-ijkl-mnop-qrstUV)"
    assert scan(p) == [Signature("lvm", want, sector * 512)]
    got = blkid(p)
    assert got.get("TYPE") == "LVM2_member" and got.get("UUID") == "AbCdEf-0123-4567-89gh-ijkl-mnop-qrstUV"


def md1_superblock(offset: int, name: bytes, set_uuid: bytes, level: int) -> bytes:
    max_dev = 2
    sb = bytearray(256 + 2 * max_dev)
    struct.pack_into("<IIII", sb, 0, 0xA92B4EFC, 1, 0, 0)  # magic, major 1, feature map, pad
    sb[16:32], sb[32:64] = set_uuid, name.ljust(32, b"\0")
    struct.pack_into("<QiiQii", sb, 64, 1, level, 0, 4096, 0, 2)  # ctime level layout size chunk disks
    struct.pack_into("<QQQ", sb, 128, 2048, 4096, offset // 512)  # data offset/size, super_offset
    struct.pack_into("<I", sb, 220, max_dev)
    words = sum(struct.unpack_from(f"<{len(sb) // 4}I", sb))  # mdadm's calc_sb_1_csum
    struct.pack_into("<I", sb, 216, (words & 0xFFFFFFFF) + (words >> 32) & 0xFFFFFFFF)
    return bytes(sb)


@pytest.mark.parametrize("version", ["1.1", "1.2", "1.0"])
def test_md_raid_v1(img_dir, version):
    p = image(img_dir)
    off = {"1.1": 0, "1.2": 4096, "1.0": (SIZE - 8192) & ~4095}[version]
    set_uuid = uuidlib.UUID("01234567-89ab-cdef-0123-456789abcdef").bytes
    put(p, off, md1_superblock(off, b"host:md0", set_uuid, 1))
    want = f"Linux MD RAID member (metadata {version}, raid1, array 'host:md0', UUID {uuidlib.UUID(bytes=set_uuid)})"
    assert scan(p) == [Signature("raid", want, off)]
    got = blkid(p)
    assert got.get("TYPE") == "linux_raid_member" and got.get("LABEL") == "host:md0", got
    # A superblock that names another place than where it lies is not one (copied data, say).
    put(p, off + 144, struct.pack("<Q", off // 512 + 8))
    assert scan(p) == []


def test_md_raid_v090_at_the_end(img_dir):
    size = SIZE + 12345  # not 64 KiB aligned: the superblock is in the last aligned 64 KiB block
    p = image(img_dir, size=size)
    off = (size & ~0xFFFF) - 0x10000
    put(p, off, struct.pack("<IIII", 0xA92B4EFC, 0, 90, 0) + bytes(12) + struct.pack("<i", 5))
    assert text(p) == f"found Linux MD RAID member (metadata 0.90, raid5) at offset {off}"


def xdr_str(s: bytes) -> bytes:
    return struct.pack(">I", len(s)) + s.ljust(-(-len(s) // 4) * 4, b"\0")


def xdr_pair(name: bytes, type_: int, value: bytes) -> bytes:
    body = xdr_str(name) + struct.pack(">II", type_, 1) + value
    return struct.pack(">II", len(body) + 8, len(body) + 8) + body


def zfs_label(pool: bytes) -> bytes:
    nv = b"\x01\x01\x00\x00" + struct.pack(">II", 0, 1)  # XDR encoding, nvlist version, NV_UNIQUE_NAME
    nv += xdr_pair(b"version", 8, struct.pack(">Q", 5000))  # DATA_TYPE_UINT64
    nv += xdr_pair(b"name", 9, xdr_str(pool))  # DATA_TYPE_STRING
    nv += xdr_pair(b"pool_guid", 8, struct.pack(">Q", 0x1234567890ABCDEF))
    nv += bytes(8)
    label = bytearray(256 * 1024)
    label[16 * 1024: 16 * 1024 + len(nv)] = nv
    for k in range(8):  # a few uberblocks in the ring (1 KiB slots for ashift 9)
        struct.pack_into("<QQQQQ", label, 128 * 1024 + k * 1024, 0x00BAB10C, 5000, 10 + k, 1, 1)
    return bytes(label)


def test_zfs_vdev_labels_front_and_back(img_dir):
    size = 128 * MIB + 100 * 1024  # ZFS's (and blkid's) minimum is 64 MiB; labels 2/3 end aligned
    end = size - size % (256 * 1024)
    p = image(img_dir, size=size)
    label = zfs_label(b"tank")
    for at in (0, 256 * 1024, end - 512 * 1024, end - 256 * 1024):
        put(p, at, label)
    assert text(p) == "found ZFS vdev of pool 'tank' (label 0) at offset 0"
    got = blkid(p)
    assert got.get("TYPE") == "zfs_member" and got.get("LABEL") == "tank", got
    put(p, 0, bytes(512 * 1024))  # labels 0 and 1 wiped: `zpool import` still finds 2 and 3
    assert text(p) == f"found ZFS vdev of pool 'tank' (label 2) at offset {end - 512 * 1024}"


def test_gfs2_lock_table(img_dir):
    p = image(img_dir, size=128 * MIB)  # blkid ignores GFS2 on small devices
    sb = bytearray(512)
    struct.pack_into(">II", sb, 0, 0x01161970, 1)  # meta header: magic, GFS2_METATYPE_SB
    struct.pack_into(">III", sb, 16, 100, 0, 1801)  # mh_format (SB), jid, fs_format
    struct.pack_into(">III", sb, 28, 1900, 0, 4096)  # multihost format, pad, block size
    struct.pack_into(">I", sb, 40, 12)
    sb[96:104], sb[160:174] = b"lock_dlm", b"hacluster:web"
    put(p, 64 * 1024, bytes(sb))
    assert text(p) == "found GFS2 filesystem (lock table 'hacluster:web') at offset 65536"
    got = blkid(p)
    assert got.get("TYPE") == "gfs2" and got.get("LABEL") == "hacluster:web", got


@pytest.mark.parametrize("block", [512, 1024, 2048, 4096])
def test_ocfs2_superblock_at_block_2(img_dir, block):
    p = image(img_dir, size=128 * MIB)  # blkid ignores OCFS2 on small devices
    uid = uuidlib.UUID("0cf52000-0000-4000-8000-00000000beef")
    sb = bytearray(0x160)
    sb[0:6] = b"OCFSV2"  # inode signature; the super-block part starts at 0xC0
    struct.pack_into("<HH", sb, 0xC0, 0, 90)  # major/minor revision level
    struct.pack_into("<I", sb, 0xC0 + 56, block.bit_length() - 1)  # s_blocksize_bits
    sb[0x110:0x117], sb[0x150:0x160] = b"shared1", uid.bytes  # s_label, s_uuid
    put(p, 2 * block, bytes(sb))
    assert text(p) == f"found OCFS2 filesystem label 'shared1' (UUID {uid}, block size {block}) at offset {2 * block}"
    got = blkid(p)
    assert got.get("TYPE") == "ocfs2" and got.get("LABEL") == "shared1" and got.get("UUID") == str(uid), got


def test_xfs(img_dir):
    p = image(img_dir)
    uid = uuidlib.UUID("c0ffee00-1234-4321-8888-0123456789ab")
    sb = bytearray(512)
    sb[0:4] = b"XFSB"
    struct.pack_into(">IQ", sb, 4, 4096, 2048)  # block size, data blocks
    sb[32:48], sb[108:113] = uid.bytes, b"xdata"
    put(p, 0, bytes(sb))
    assert text(p) == f"found XFS filesystem label 'xdata' (UUID {uid}) at offset 0"
    put(p, 4, struct.pack(">I", 3000))  # not a power of two: not XFS
    assert scan(p) == []


@pytest.mark.parametrize("data,want", [
    (b"SBD_SBD_\x02\x10", "SBD fencing device (pacemaker storage-based death)"),
    (struct.pack("<IIII", 0x12212010, 0x30001, 0, 512) + bytes(40) + b"vdsm-ls",
     "sanlock lockspace 'vdsm-ls' (delta leases)"),
    (struct.pack("<IIII", 0x06152010, 0x60001, 0, 512) + bytes(40) + b"ls1".ljust(48, b"\0") + b"vm-42",
     "sanlock resource lease 'vm-42' (lockspace 'ls1')"),
    (b"\xeb\x52\x90NTFS    ", "NTFS filesystem"),
])
def test_cluster_and_other_headers_at_0(img_dir, data, want):
    p = image(img_dir)
    put(p, 0, data)
    assert text(p) == f"found {want} at offset 0"


def test_several_signatures_are_all_reported_in_one_line(img_dir):
    """Stale headers survive a new mkfs elsewhere on the disk: the operator sees all of them."""
    tool("mkfs.ext4", "e2fsprogs")
    p = image(img_dir)
    run("mkfs.ext4", "-q", "-F", "-L", "data", p)
    put(p, 4096, md1_superblock(4096, b"old", bytes(16), 1))  # a leftover RAID header
    line = text(p)
    assert re.fullmatch(r"found ext4 filesystem label 'data' \(UUID [0-9a-f-]{36}\) at offset 1024, "
                        r"Linux MD RAID member \(metadata 1\.2, raid1, array 'old', UUID [0-9a-f-]{36}\)"
                        r" at offset 4096", line), line
