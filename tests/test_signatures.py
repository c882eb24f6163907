"""Existing-data detection for `diskhb format`: real images where the tools exist, synthetic otherwise."""

import os
import random
import shutil
import struct
import subprocess

import pytest

from diskhb.regions.disk.signatures import describe, find_signatures

SIZE = 8 << 20


def scan(path):
    size = os.path.getsize(path)

    def read_at(offset, length):
        assert 0 <= offset and offset + length <= size, "read past the end"
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(length)

    return find_signatures(read_at, size)


def image(tmp_path, name="img", size=SIZE):
    p = tmp_path / name
    with open(p, "wb") as f:
        f.truncate(size)
    return str(p)


def tool(name):
    if not shutil.which(name):
        pytest.skip(f"{name} not installed")


def test_zeros_and_random_data_find_nothing(tmp_path):
    assert scan(image(tmp_path)) == []
    p = tmp_path / "rand"
    rng = random.Random(7)
    p.write_bytes(bytes(rng.getrandbits(8) for _ in range(1 << 20)))
    assert scan(str(p)) == []


@pytest.mark.parametrize("variant,expect", [([], "ext4"), (["-O", "mmp"], "MMP enabled")])
def test_ext4(tmp_path, variant, expect):
    tool("mkfs.ext4")
    p = image(tmp_path)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "lab", *variant, p], check=True, capture_output=True)
    sigs = scan(p)
    assert sigs[0].kind == "filesystem" and expect in sigs[0].description and "'lab'" in sigs[0].description


def test_ext2_and_ext3(tmp_path):
    tool("mkfs.ext2")
    p = image(tmp_path)
    subprocess.run(["mkfs.ext2", "-q", "-F", p], check=True, capture_output=True)
    assert scan(p)[0].description.startswith("ext2")
    subprocess.run(["mkfs.ext3", "-q", "-F", p], check=True, capture_output=True)
    assert scan(p)[0].description.startswith("ext3")


def test_swap(tmp_path):
    tool("mkswap")
    p = image(tmp_path)
    subprocess.run(["mkswap", p], check=True, capture_output=True)
    assert [s.kind for s in scan(p)] == ["swap"]


def test_mbr_and_gpt(tmp_path):
    tool("sfdisk")
    p = image(tmp_path)
    subprocess.run(["sfdisk", "-q", p], input="label: dos\n,4M,83\n", text=True, check=True, capture_output=True)
    assert "MBR partition table (1 partitions)" in describe(scan(p))
    p2 = image(tmp_path, "gpt")
    subprocess.run(["sfdisk", "-q", p2], input="label: gpt\n,4M\n", text=True, check=True, capture_output=True)
    assert "GPT partition table" in describe(scan(p2))


def synthetic(tmp_path, offset, data, size=SIZE):
    p = image(tmp_path, f"s{offset}", size)
    with open(p, "r+b") as f:
        f.seek(offset)
        f.write(data)
    return scan(p)


@pytest.mark.parametrize("offset,data,text", [
    (0, b"XFSB", "XFS"),
    (65536 + 64, b"_BHRfS_M", "btrfs"),
    (512, b"LABELONE" + bytes(16) + b"LVM2 001", "LVM2"),
    (4096, struct.pack("<I", 0xA92B4EFC), "MD RAID superblock v1.2"),
    (0, b"LUKS\xba\xbe", "LUKS"),
    (128 * 1024, struct.pack("<Q", 0x00BAB10C), "ZFS"),
    (8192, b"OCFSV2", "OCFS2"),
    (0, b"SBD_SBD_", "SBD"),
    (0, struct.pack("<I", 0x12212010), "sanlock"),
])
def test_synthetic_signatures(tmp_path, offset, data, text):
    assert text in describe(synthetic(tmp_path, offset, data))


def test_tiny_device_is_never_read_past_its_end(tmp_path):
    assert synthetic(tmp_path, 0, b"XFSB", size=4096)[0].description.startswith("XFS")
    assert scan(image(tmp_path, "t", 512)) == []
