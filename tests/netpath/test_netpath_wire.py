"""netpath.wire: round trips, every rejection reason, and fuzzing of the decoder (never raises)."""

from __future__ import annotations

import hmac

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diskhb.core.types import NODE_ID_MAX, NODE_NAME_BYTES_MAX
from netpath import wire
from netpath.keys import KeyRing

KEY1 = bytes(range(32))
KEY2 = bytes(range(32, 64))
RING = KeyRing(1, {1: KEY1, 2: KEY2})
CID = wire.cluster_id("alpha")
FUZZ = settings(derandomize=True, deadline=None, max_examples=400,
                suppress_health_check=[HealthCheck.too_slow])


def packet(**kw) -> wire.Packet:
    base = dict(cluster_id=CID, node_id=7, generation=0x1234_5678_9ABC, seq=42, mono_ms=123_456, flags=1,
                name="node-7", view={"disk:/dev/sdb": (1, 2, 7), "net:lan": tuple(range(1, 300))})
    base.update(kw)
    return wire.Packet(**base)


def sign(signed: bytes, key: bytes = KEY1) -> bytes:
    return signed + hmac.digest(key, signed, "sha256")


def test_round_trip_keeps_every_field():
    p = packet()
    data = wire.encode(p, RING)
    got = wire.decode(data, RING, CID)
    assert isinstance(got, wire.Packet)
    assert got == wire.Packet(cluster_id=CID, node_id=7, generation=p.generation, seq=42, mono_ms=123_456,
                              flags=1, name="node-7", view=p.view, view_partial=False, key_id=1)
    assert len(data) <= wire.PACKET_BYTES_MAX


@pytest.mark.parametrize("digest", [1, 0xDEADBEEF, 2**32 - 1])
def test_a_cluster_digest_rides_at_the_end_of_the_body(digest):
    p = packet(digest=digest)
    data = wire.encode(p, RING)
    assert data[5] & wire.WIRE_DIGEST and data[-36:-32] == digest.to_bytes(4, "big")
    got = wire.decode(data, RING, CID)
    assert isinstance(got, wire.Packet) and got.digest == digest and got.view == p.view and got.name == p.name
    assert len(data) == len(wire.encode(packet(), RING)) + wire.DIGEST_BYTES
    assert not wire.encode(packet(), RING)[5] & wire.WIRE_DIGEST  # none: no flag, no bytes


def test_a_digest_flag_without_room_or_with_digest_zero_is_format():
    good = wire.encode(packet(view={}, name=""), RING)
    signed = bytearray(good[:-32])
    signed[5] |= wire.WIRE_DIGEST  # the flag, but the body has no 4 bytes to spare
    assert wire.decode(sign(bytes(signed)), RING, CID) == "format"
    zero = wire.encode(packet(view={}, digest=5), RING)[:-32]
    zero = zero[:-4] + bytes(4)
    assert wire.decode(sign(zero), RING, CID) == "format"


def test_layout_offsets_match_the_documented_table():
    data = wire.encode(packet(view={}), RING)
    assert data[0:4] == b"DHBn" and data[4] == 1 and data[5] == 0
    assert int.from_bytes(data[6:8], "big") == len(data)
    assert int.from_bytes(data[8:10], "big") == 1
    assert int.from_bytes(data[10:14], "big") == CID
    assert int.from_bytes(data[14:16], "big") == 7
    assert int.from_bytes(data[16:18], "big") == 1
    assert int.from_bytes(data[18:26], "big") == 0x1234_5678_9ABC
    assert int.from_bytes(data[26:34], "big") == 42
    assert int.from_bytes(data[34:42], "big") == 123_456
    assert data[42] == len("node-7") and data[43:49] == b"node-7" and data[49] == 0  # name, empty view
    assert data[-32:] == hmac.digest(KEY1, data[:-32], "sha256")


@given(st.tuples(st.binary(min_size=4, max_size=4), st.integers(0, 255), st.integers(0, 255),
                 st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1), st.integers(0, 0xFFFF),
                 st.integers(0, 0xFFFF), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1),
                 st.integers(0, 2**64 - 1)))
@FUZZ
def test_fast_header_equals_the_construct_definition(fields):
    names = ["magic", "version", "wire_flags", "length", "key_id", "cluster_id", "node_id", "flags",
             "generation", "seq", "mono_ms"]
    built = wire.HEADER.build(dict(zip(names, fields)))
    assert built == wire._HEADER_STRUCT.pack(*fields)
    assert wire.peek_header(built) == fields


def test_views_use_the_smaller_encoding_and_round_trip():
    sparse = {"a": (5, 4000)}  # list: 4 bytes; bitmap would be 500
    dense = {"b": tuple(range(1, 65))}  # bitmap: 8 bytes; list would be 128
    for view in (sparse, dense, {"empty": ()}):
        got = wire.decode(wire.encode(packet(view=view), RING), RING, CID)
        assert got.view == view and not got.view_partial
    assert len(wire.encode(packet(view=dense), RING)) < len(wire.encode(packet(view={"b": (1,)}), RING)) + 10


def test_a_view_too_big_for_the_budget_is_cut_and_flagged():
    view = {f"region-{i:02d}": tuple(range(i + 1, 4096, 3)) for i in range(40)}
    data = wire.encode(packet(view=view), RING, budget_bytes=192)
    assert len(data) <= 192
    got = wire.decode(data, RING, CID)
    assert got.view_partial
    assert all(got.view[r] == view[r] for r in got.view)  # what is there is complete
    full = wire.decode(wire.encode(packet(view={"x": (1, 2)}), RING, budget_bytes=192), RING, CID)
    assert full.view == {"x": (1, 2)} and not full.view_partial


def test_encode_refuses_invalid_fields():
    for bad in (dict(node_id=0), dict(node_id=NODE_ID_MAX + 1), dict(generation=0), dict(seq=-1),
                dict(flags=0x10000), dict(name="x" * (NODE_NAME_BYTES_MAX + 1))):
        with pytest.raises(ValueError):
            wire.encode(packet(**bad), RING)


def test_every_rejection_reason():
    good = wire.encode(packet(), RING)
    assert isinstance(wire.decode(good, RING, CID), wire.Packet)
    cases = {
        "truncated": [good[:-1], good[:20], b"", good[: wire.HEADER_BYTES]],
        "oversize": [good[:6] + b"\x06\x00" + good[8:],  # declares 1536 bytes
                     b"DHBn" + bytes(wire.PACKET_BYTES_MAX)],
        "magic": [b"XXXX" + good[4:], b"hello"],
        "version": [good[:4] + b"\x02" + good[5:]],
        "format": [good + b"\x00"],  # trailing bytes beyond the declared length
        "auth": [good[:-1] + bytes([good[-1] ^ 1]), good[:50] + bytes([good[50] ^ 0x40]) + good[51:],
                 wire.encode(packet(), KeyRing(1, {1: KEY2}))],  # signed with another key under id 1
        "key_id": [wire.encode(packet(), KeyRing(3, {3: KEY1}))],
    }
    for reason, datas in cases.items():
        for data in datas:
            assert wire.decode(data, RING, CID) == reason, (reason, data[:16])
    assert wire.decode(good, RING, wire.cluster_id("beta")) == "cluster"
    assert wire.decode(good, KeyRing(2, {2: KEY2}), CID) == "key_id"


def test_authenticated_but_invalid_content_is_format():
    good = wire.encode(packet(view={}), RING)
    signed = bytearray(good[:-32])
    signed[14:16] = (0).to_bytes(2, "big")  # node id 0
    assert wire.decode(sign(bytes(signed)), RING, CID) == "format"
    signed = bytearray(good[:-32])
    signed[5] = 0x80  # an unknown wire flag
    assert wire.decode(sign(bytes(signed)), RING, CID) == "format"
    # a view listing node 5000 (beyond NODE_ID_MAX)
    body = b"\x00" + b"\x01" + b"\x01r" + b"\x00" + b"\x00\x01" + (5000).to_bytes(2, "big")
    header = bytearray(good[: wire.HEADER_BYTES])
    header[6:8] = (wire.HEADER_BYTES + len(body) + 32).to_bytes(2, "big")
    assert wire.decode(sign(bytes(header) + body), RING, CID) == "format"


@given(st.binary(max_size=wire.PACKET_BYTES_MAX + 100))
@FUZZ
def test_fuzz_random_bytes_never_raise_and_never_pass(data):
    got = wire.decode(data, RING, CID)
    assert got in wire.REASONS


@given(st.binary(max_size=wire.PACKET_BYTES_MAX + 100))
@FUZZ
def test_fuzz_random_bytes_behind_a_valid_header_never_raise(data):
    # Correct magic/version/cluster and length: what remains must still never raise.
    length = wire.HEADER_BYTES + len(data)
    header = wire._HEADER_STRUCT.pack(b"DHBn", 1, 0, length, 1, CID, 3, 0, 9, 1, 1)
    assert wire.decode(header + data, RING, CID) in wire.REASONS


@given(st.binary(min_size=wire.BODY_BYTES_MIN, max_size=600), st.integers(0, 255))
@FUZZ
def test_fuzz_authenticated_garbage_bodies_are_format_or_valid(body, wire_flags):
    length = wire.HEADER_BYTES + len(body) + 32
    signed = wire._HEADER_STRUCT.pack(b"DHBn", 1, wire_flags, length, 1, CID, 3, 0, 9, 1, 1) + body
    got = wire.decode(sign(signed), RING, CID)
    assert got == "format" or isinstance(got, wire.Packet)
    if isinstance(got, wire.Packet):
        assert all(1 <= i <= NODE_ID_MAX for ids in got.view.values() for i in ids)


names = st.text(max_size=20).filter(lambda s: len(s.encode()) <= NODE_NAME_BYTES_MAX)
views = st.dictionaries(st.text(min_size=0, max_size=12), st.lists(st.integers(1, NODE_ID_MAX), max_size=40)
                        .map(lambda ids: tuple(sorted(set(ids)))), max_size=6)


@given(st.integers(1, NODE_ID_MAX), st.integers(1, 2**64 - 1), st.integers(0, 2**64 - 1),
       st.integers(0, 2**64 - 1), st.integers(0, 0xFFFF), names, views, st.integers(0, 2**32 - 1))
@FUZZ
def test_fuzz_round_trip_and_single_byte_corruption(node_id, gen, seq, mono, flags, name, view, where):
    p = wire.Packet(cluster_id=CID, node_id=node_id, generation=gen, seq=seq, mono_ms=mono, flags=flags,
                    name=name, view=view)
    data = wire.encode(p, RING)
    got = wire.decode(data, RING, CID)
    assert isinstance(got, wire.Packet)
    assert (got.node_id, got.generation, got.seq, got.mono_ms, got.flags, got.name) == (
        node_id, gen, seq, mono, flags, name)
    if got.view_partial:
        assert all(view[r] == got.view[r] for r in got.view)
    else:
        assert got.view == view
    i = where % len(data)
    corrupt = data[:i] + bytes([data[i] ^ (1 + where % 255)]) + data[i + 1 :]
    assert wire.decode(corrupt, RING, CID) in wire.REASONS  # any changed byte is caught
