"""netpath.framing: COBS round trips, resynchronisation after garbage, bounds, never raising."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from netpath.framing import (
    FRAME_BYTES_MAX,
    FrameReader,
    cobs_decode,
    cobs_encode,
    decode_frame,
    encode_frame,
)
from netpath.wire import PACKET_BYTES_MAX

FUZZ = settings(derandomize=True, deadline=None, max_examples=400)


@given(st.binary(max_size=2000))
@FUZZ
def test_cobs_round_trip_has_no_zero_and_bounded_overhead(data):
    enc = cobs_encode(data)
    assert b"\x00" not in enc
    assert len(enc) <= len(data) + len(data) // 254 + 2
    assert cobs_decode(enc) == data


def test_cobs_edge_blocks():
    for data in (b"", b"\x00", b"\x00\x00", b"\x11" * 254, b"\x11" * 254 + b"\x00", b"\x11" * 255, b"\x11" * 508,
                 b"\x00" + b"\x11" * 254 + b"\x00" + b"\x22"):
        assert cobs_decode(cobs_encode(data)) == data


@given(st.binary(min_size=1, max_size=PACKET_BYTES_MAX))
@FUZZ
def test_frames_round_trip_even_when_split_anywhere(payload):
    frame = encode_frame(payload)
    assert frame[0] == 0 and frame[-1] == 0 and b"\x00" not in frame[1:-1]
    r = FrameReader()
    cut = len(frame) // 3
    assert r.feed(frame[:cut]) + r.feed(frame[cut:]) == [payload]


def test_resync_after_garbage_cut_frames_and_noise():
    a, b, c = encode_frame(b"first"), encode_frame(b"second"), encode_frame(b"third")
    r = FrameReader()
    got = r.feed(b"\x17garbage\xff" + a + b[: len(b) // 2] + c)
    # garbage before `a` costs only itself; the cut `b` spoils nothing but itself
    assert got[1] == b"first" and got[-1] == b"third"
    assert all(isinstance(x, str) for x in (got[0], *got[2:-1]))
    bad = bytearray(encode_frame(b"payload"))
    bad[3] ^= 0x01  # a bit error the CRC catches (no zero introduced)
    assert FrameReader().feed(bytes(bad)) in (["crc"], ["framing"])


def test_decode_frame_reasons():
    assert decode_frame(cobs_encode(b"ab")) == "framing"  # no room for a CRC
    assert decode_frame(b"\x05ab") == "framing"  # block runs past the end
    good = encode_frame(b"hello")[1:-1]
    assert decode_frame(good) == b"hello"
    body = bytearray(cobs_decode(good))
    body[0] ^= 0xFF
    assert decode_frame(cobs_encode(bytes(body))) == "crc"


def test_overlong_chunks_are_dropped_once_and_the_stream_recovers():
    r = FrameReader()
    got = []
    for _ in range(10):  # 10 x 1000 bytes of non-zero noise, no delimiter
        got += r.feed(b"\x55" * 1000)
    assert got == ["oversize"]
    assert len(r._buf) <= FRAME_BYTES_MAX
    assert r.feed(b"\x55\x55" + encode_frame(b"ok")) == [b"ok"]


@given(st.lists(st.binary(max_size=600), max_size=12))
@FUZZ
def test_fuzz_random_streams_never_raise(chunks):
    r = FrameReader()
    for chunk in chunks:
        for item in r.feed(chunk):
            assert isinstance(item, (bytes, str))
    assert r.feed(encode_frame(b"after")) [-1] == b"after"  # and a good frame still gets through
