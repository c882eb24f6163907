"""The MMP sector formats: construct's compiled codecs (what format.py runs) agree byte for byte
with the declared structures, and damage is refused either way."""

import random

import construct as cs
import pytest

from diskhb.mmp import format as mf

UUID = bytes(range(1, 17))


def seq_blocks(n: int):
    rng = random.Random(5)
    for _ in range(n):
        holder = rng.randint(1, 255)
        yield mf.SeqBlock(seq=rng.choice([mf.SEQ_CLEAN, 7, mf.SEQ_MAX]), epoch=rng.randint(0, 2**63 - 1),
                          holder_id=holder, holder_generation=rng.getrandbits(63) | 1,
                          holder_name=rng.choice(["n1", "oss-β" * 3, "x" * mf.NODE_NAME_BYTES_MAX]),
                          resource=rng.choice(["r0", "ost0007", "é" * 32]), device=rng.choice(["", "/dev/sdb"]),
                          interval_ms=rng.randint(mf.INTERVAL_MS_MIN, mf.INTERVAL_MS_MAX),
                          wall_ms=rng.getrandbits(63), uuid=UUID, slot_count=rng.randint(1, 255), sector_size=512)


def ballots(n: int):
    rng = random.Random(6)
    for _ in range(n):
        node = rng.randint(1, 255)
        inp = None if rng.random() < 0.3 else mf.Proposal(
            node_id=node, generation=rng.getrandbits(63) | 1, holder_name="n%d" % node, resource="r0",
            interval_ms=rng.randint(mf.INTERVAL_MS_MIN, mf.INTERVAL_MS_MAX), basis_epoch=rng.randint(0, 99),
            basis_seq=rng.randint(0, 2**32 - 1), basis_holder=rng.randint(0, 255))
        bal = 0 if inp is None else rng.randint(1, 2**40)
        yield mf.Ballot(node_id=node, lver=rng.randint(1, 2**40), mbal=max(bal, rng.randint(1, 2**40)), bal=bal,
                        inp=inp, uuid=UUID, writer_generation=rng.getrandbits(63) | 1, resource="r0",
                        wall_ms=rng.getrandbits(63))


@pytest.mark.parametrize("block", list(seq_blocks(40)))
def test_the_compiled_seq_codec_writes_and_reads_what_the_declared_struct_does(block):
    fields = {name: getattr(block, name) for name in mf._SEQ_FIELDS}
    raw = {**fields, "magic": mf.SEQ_MAGIC, "crc": 0}
    assert mf._SEQ_CODEC.build(raw) == mf.SEQ_BLOCK.build(raw)
    sector = mf.encode_seq_block(block)
    assert mf._SEQ_CODEC.parse(sector[:mf.STRUCT_BYTES]) == mf.SEQ_BLOCK.parse(sector[:mf.STRUCT_BYTES])
    assert mf.decode_seq_block(sector) == block


@pytest.mark.parametrize("ballot", list(ballots(40)))
def test_the_compiled_ballot_codec_writes_and_reads_what_the_declared_struct_does(ballot):
    sector = mf.encode_ballot(ballot, 512)
    data = sector[:mf.STRUCT_BYTES]
    assert mf._BALLOT_CODEC.parse(data) == mf.BALLOT.parse(data)
    assert mf._BALLOT_CODEC.build(mf.BALLOT.parse(data)) == mf.BALLOT.build(mf.BALLOT.parse(data)) == data
    assert mf.decode_ballot(sector, expect_node_id=ballot.node_id) == ballot


def test_damage_is_refused_by_checksum_and_by_the_compiled_parser():
    block = next(seq_blocks(1))
    sector = bytearray(mf.encode_seq_block(block))
    sector[40] ^= 1
    with pytest.raises(mf.BlockError, match="checksum mismatch"):
        mf.decode_seq_block(bytes(sector))
    bad_name = bytearray(sector[:mf.STRUCT_BYTES])
    bad_name[100] = 0xFF  # inside holder_name: not UTF-8
    for codec in (mf.SEQ_BLOCK, mf._SEQ_CODEC):
        with pytest.raises(cs.ConstructError):
            codec.parse(bytes(bad_name))
