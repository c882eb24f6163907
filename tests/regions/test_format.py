"""Region format v1: construct definition, numpy mirror, validation on both sides."""

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diskhb.core.types import SlotFlag
from diskhb.regions.disk import format as fmt

UUID = bytes(range(1, 17))

names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                min_size=1, max_size=20).filter(lambda s: 1 <= len(s.encode()) <= 64)
u64 = st.integers(0, 2**64 - 1)


def slot_strategy(node_id=st.integers(1, fmt.SLOTS_MAX)):
    return st.builds(fmt.Slot, node_id=node_id, flags=st.integers(0, 0xFFFF),
                     generation=st.integers(1, 2**64 - 1), seq=u64, mono_ms=u64, wall_ms=u64,
                     region_uuid=st.just(UUID), name=names, interval_ms=st.integers(0, 2**32 - 1),
                     cluster_digest=st.integers(0, 2**32 - 1), mailbox_ack=u64)


@settings(max_examples=300, deadline=None)
@given(slot=slot_strategy(), sector=st.sampled_from(fmt.SECTOR_SIZES))
def test_slot_round_trip(slot, sector):
    data = fmt.encode_slot(slot, sector)
    assert len(data) == sector
    assert fmt.decode_slot(data, expect_node_id=slot.node_id, region_uuid=UUID) == slot


@settings(max_examples=200, deadline=None)
@given(slot=slot_strategy(), sector=st.sampled_from(fmt.SECTOR_SIZES))
def test_numpy_dtype_is_byte_for_byte_the_construct_definition(slot, sector):
    data = fmt.encode_slot(slot, sector)
    rec = np.frombuffer(data, dtype=fmt.slot_dtype(sector))[0]
    parsed = fmt.SLOT.parse(data)
    for name in fmt.slot_dtype(sector).names:
        got = rec[name]
        want = parsed[name]
        if name == "name":
            assert got.decode() == want
        elif name == "region_uuid":
            assert bytes(got) == want
        else:
            assert int(got) == want, name
    # And the same offsets: every dtype field sits where construct puts it.
    offsets = {}
    pos = 0
    for sub in fmt.SLOT.subcons:
        offsets[sub.name] = pos
        pos += sub.sizeof()
    for name, (_dt, off) in fmt.slot_dtype(sector).fields.items():
        assert offsets[name] == off, name
    assert fmt.slot_dtype(sector).itemsize == sector


@settings(max_examples=100, deadline=None)
@given(sector=st.sampled_from(fmt.SECTOR_SIZES), slots=st.integers(1, 2000),
       mmp=st.integers(0, 16), interval=st.integers(20, 2000), cluster=names)
def test_superblock_round_trip(sector, slots, mmp, interval, cluster):
    sb = fmt.new_superblock(cluster=cluster, sector_size=sector, slot_count=slots, mmp_resources=mmp,
                            interval_ms=interval, dead_ms=interval * 10, region_uuid=os.urandom(16),
                            created_wall_ms=123)
    data = fmt.encode_superblock(sb)
    assert len(data) == sector
    assert fmt.decode_superblock(data) == sb
    # areas never overlap and are in order, each aligned to the sector size
    assert sb.slot_offset >= fmt.SUPERBLOCK_RESERVED_BYTES
    assert sb.mailbox_offset >= sb.slot_offset + slots * sector
    assert sb.mmp_offset >= sb.mailbox_offset + slots * sector
    assert sb.region_bytes >= sb.mmp_offset + mmp * (1 + slots) * sector
    for off in (sb.slot_offset, sb.mailbox_offset, sb.mmp_offset, sb.region_bytes):
        assert off % sector == 0


def _sb(**kw):
    base = dict(cluster="c", sector_size=512, slot_count=8, region_uuid=UUID, created_wall_ms=0)
    base.update(kw)
    return fmt.new_superblock(**base)


@pytest.mark.parametrize("flip", [0, 9, 40, 100, 300, 508])
def test_superblock_any_flipped_byte_is_rejected(flip):
    data = bytearray(fmt.encode_superblock(_sb()))
    data[flip] ^= 0x40
    with pytest.raises(fmt.FormatError):
        fmt.decode_superblock(bytes(data))


def test_superblock_rejects_bad_timing_and_sizes():
    with pytest.raises(fmt.FormatError, match="dead time"):
        _sb(interval_ms=1000, dead_ms=2000)
    with pytest.raises(fmt.FormatError, match="slot count"):
        _sb(slot_count=0)
    with pytest.raises(fmt.FormatError, match="sector size"):
        _sb(sector_size=1024)
    with pytest.raises(fmt.FormatError, match="I/O timeout"):
        _sb(io_timeout_ms=5000)


def test_unformatted_and_truncated():
    with pytest.raises(fmt.FormatError, match="no diskhb superblock"):
        fmt.decode_superblock(bytes(512))
    with pytest.raises(fmt.FormatError, match="truncated"):
        fmt.decode_superblock(fmt.encode_superblock(_sb())[:100])


def _slot(node_id=3, **kw):
    base = dict(node_id=node_id, flags=int(SlotFlag.ACTIVE), generation=0x1234, seq=7, mono_ms=1,
                wall_ms=2, region_uuid=UUID, name=f"n{node_id}", interval_ms=200)
    base.update(kw)
    return fmt.Slot(**base)


@pytest.mark.parametrize("sector", fmt.SECTOR_SIZES)
def test_scan_finds_good_skips_empty_reports_torn_and_corrupt(sector):
    n = 6
    raw = bytearray(n * sector)
    for node_id in (1, 2, 3, 4, 5):
        raw[(node_id - 1) * sector: node_id * sector] = fmt.encode_slot(_slot(node_id, seq=node_id * 10), sector)
    # slot 2: torn write (second half of the struct from an older write: crc mismatch)
    raw[sector + 256] ^= 0xFF
    # slot 3: written by the wrong node id
    raw[2 * sector: 3 * sector] = fmt.encode_slot(_slot(4), sector)
    # slot 4: from an earlier format of the region
    raw[3 * sector: 4 * sector] = fmt.encode_slot(_slot(4, region_uuid=bytes(16 * [9])), sector)
    # slot 6: never written; slot 5: good; slot 1: good
    res = fmt.scan_slots(np.frombuffer(bytes(raw), dtype=np.uint8), 1, n, sector, UUID)
    assert res.node_ids.tolist() == [1, 5]
    assert res.seqs.tolist() == [10, 50]
    assert res.names == ["n1", "n5"]
    bad = dict(res.bad)
    assert set(bad) == {2, 3, 4}
    assert "checksum" in bad[2] and "node id" in bad[3] and "earlier format" in bad[4]
    # The construct side agrees on every slot.
    for node_id in range(1, n + 1):
        sector_bytes = bytes(raw[(node_id - 1) * sector: node_id * sector])
        if node_id == 6:
            with pytest.raises(fmt.SlotEmpty):
                fmt.decode_slot(sector_bytes, expect_node_id=6, region_uuid=UUID)
        elif node_id in bad:
            with pytest.raises(fmt.FormatError):
                fmt.decode_slot(sector_bytes, expect_node_id=node_id, region_uuid=UUID)
        else:
            fmt.decode_slot(sector_bytes, expect_node_id=node_id, region_uuid=UUID)


@settings(max_examples=200, deadline=None)
@given(slot=slot_strategy(st.just(1)), pos=st.integers(0, 507), bit=st.integers(0, 7))
def test_any_single_bit_flip_in_a_slot_is_never_a_beat(slot, pos, bit):
    data = bytearray(fmt.encode_slot(slot, 512))
    data[pos] ^= 1 << bit
    res = fmt.scan_slots(np.frombuffer(bytes(data), dtype=np.uint8), 1, 1, 512, UUID)
    assert res.node_ids.size == 0 and len(res.bad) == 1


def test_zero_magic_with_data_is_torn_not_empty():
    data = bytearray(fmt.encode_slot(_slot(1), 512))
    data[0:4] = bytes(4)
    res = fmt.scan_slots(np.frombuffer(bytes(data), dtype=np.uint8), 1, 1, 512, UUID)
    assert res.bad and res.node_ids.size == 0


def test_encode_refuses_invalid_slots():
    with pytest.raises(fmt.FormatError, match="generation 0"):
        fmt.encode_slot(_slot(generation=0), 512)
    with pytest.raises(fmt.FormatError, match="node name"):
        fmt.encode_slot(_slot(name="x" * 65), 512)
    with pytest.raises(fmt.FormatError, match="node id"):
        fmt.encode_slot(_slot(node_id=0), 512)


def test_mailbox_round_trip_and_corruption():
    mb = fmt.Mailbox(target_id=2, sender_id=1, message=3, target_generation=5, seq=9,
                     sender_generation=7, wall_ms=11, region_uuid=UUID)
    data = fmt.encode_mailbox(mb, 4096)
    assert fmt.decode_mailbox(data, expect_target_id=2) == mb
    assert fmt.decode_mailbox(bytes(512), expect_target_id=2) is None
    bad = bytearray(data)
    bad[20] ^= 1
    with pytest.raises(fmt.FormatError):
        fmt.decode_mailbox(bytes(bad), expect_target_id=2)


def test_scan_2000_slots_is_fast_enough_for_the_tick():
    """Not a timing assertion (benchmarks do that); just that 2000 slots decode correctly."""
    sector = 512
    raw = b"".join(fmt.encode_slot(_slot(i, seq=i), sector) for i in range(1, 2001))
    res = fmt.scan_slots(np.frombuffer(raw, dtype=np.uint8), 1, 2000, sector, UUID)
    assert res.node_ids.tolist() == list(range(1, 2001))
    assert res.seqs.tolist() == list(range(1, 2001))
