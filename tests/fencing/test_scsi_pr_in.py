"""diskhb.fencing.scsi.pr_in: READ KEYS, READ RESERVATION, REPORT CAPABILITIES on good and malformed
data (P1-P4), including hypothesis over arbitrary bytes: a parser returns a record or PrDataError."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diskhb.fencing.scsi.cdb import KEYS_MAX, PR_IN_ALLOC_MAX, PrType
from diskhb.fencing.scsi.pr_in import Holder, PrDataError, generation_advanced, parse_read_keys, \
    parse_read_reservation, parse_report_capabilities

K1, K2, K3 = 0xA36E000134567890, 0xA36E000200000042, 0xFFFFFFFFFFFFFFFF


def keys_data(generation, keys, add_len=None):
    body = b"".join(k.to_bytes(8, "big") for k in keys)
    return struct.pack(">II", generation, len(body) if add_len is None else add_len) + body


def resv_data(generation, key=None, type_code=5, scope=0):
    if key is None:
        return struct.pack(">II", generation, 0)
    return struct.pack(">IIQ4xBB2x", generation, 16, key, 0, (scope << 4) | type_code)


# -- READ KEYS ----------------------------------------------------------------------------------------


def test_read_keys_empty_and_full():
    k = parse_read_keys(keys_data(0, []), 264)
    assert (k.generation, k.keys, k.complete, k.needed_len) == (0, (), True, 8)
    k = parse_read_keys(keys_data(0xFFFFFFFF, [K1, K2, K3]), 264)
    assert (k.generation, k.keys, k.complete, k.needed_len) == (0xFFFFFFFF, (K1, K2, K3), True, 32)


def test_read_keys_duplicates_are_kept_and_counted():
    k = parse_read_keys(keys_data(7, [K1, K2, K1]), 264)  # one key through two nexuses (two paths)
    assert k.keys == (K1, K2, K1) and k.count(K1) == 2 and k.duplicates() == {K1: 2}


def test_read_keys_truncated_at_the_allocation_length():
    """P2: the device cut the list at our allocation length: incomplete, and how much it needs."""
    full = keys_data(3, [K1, K2, K3])
    k = parse_read_keys(full[:20], 20)  # room for one key and half of the next
    assert (k.keys, k.complete, k.needed_len) == ((K1,), False, 32)
    k = parse_read_keys(full[:8], 8)
    assert (k.keys, k.complete, k.needed_len) == ((), False, 32)


def test_read_keys_padding_beyond_the_additional_length_is_ignored():
    """P1: a transport that cannot report the residual hands back the whole buffer."""
    k = parse_read_keys(keys_data(1, [K1]) + bytes(100), 264)
    assert k.keys == (K1,) and k.complete


def test_read_keys_at_the_limit():
    data = keys_data(1, range(1, KEYS_MAX + 1))
    assert len(parse_read_keys(data, PR_IN_ALLOC_MAX).keys) == KEYS_MAX


@pytest.mark.parametrize("data,alloc,match", [
    (b"", 264, "shorter than the 8-byte header"),
    (bytes(7), 264, "shorter than the 8-byte header"),
    (keys_data(1, [K1], add_len=12), 264, "not a multiple of 8"),
    (keys_data(1, [], add_len=8 * (KEYS_MAX + 1)), 264, "more than the 1024"),
    (keys_data(1, [], add_len=0xFFFFFFF8), 264, "more than the 1024"),
    (keys_data(1, [K1, K2])[:20], 264, "short answer: 20 bytes of 24"),  # fewer than min(alloc, avail)
    (keys_data(1, [K1]), 4, "allocation length 4"),
    ("not bytes", 264, "must be bytes"),
])
def test_read_keys_rejects_garbage(data, alloc, match):
    with pytest.raises(PrDataError, match=match) as e:
        parse_read_keys(data, alloc)
    assert str(e.value).startswith("READ KEYS: ") and "\n" not in str(e.value)


# -- READ RESERVATION ---------------------------------------------------------------------------------


def test_read_reservation_none_and_held():
    r = parse_read_reservation(resv_data(9), 24)
    assert (r.generation, r.holder) == (9, None)
    r = parse_read_reservation(resv_data(10, K1), 24)
    assert r.holder == Holder(K1, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY, 0)


def test_read_reservation_all_registrants_has_key_0():
    r = parse_read_reservation(resv_data(1, 0, type_code=7), 24)
    assert r.holder == Holder(0, PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS, 0)


@pytest.mark.parametrize("data,alloc,match", [
    (bytes(5), 24, "shorter than the 8-byte header"),
    (struct.pack(">II", 1, 8) + bytes(8), 24, "expected 0 or 16"),
    (struct.pack(">II", 1, 32) + bytes(32), 24, "expected 0 or 16"),
    (resv_data(1, K1)[:20], 24, "short answer"),
    (resv_data(1, K1), 8, "no room for the reservation"),
    (resv_data(1, K1, scope=1), 24, "scope 1"),
    (resv_data(1, K1, type_code=2), 24, "type 2 is not one SPC-4 defines"),
    (resv_data(1, K1, type_code=0xF), 24, "type 15"),
    (resv_data(1, 0, type_code=5), 24, "held by key 0"),
])
def test_read_reservation_rejects_garbage(data, alloc, match):
    with pytest.raises(PrDataError, match=match) as e:
        parse_read_reservation(data, alloc)
    assert str(e.value).startswith("READ RESERVATION: ")


# -- REPORT CAPABILITIES -----------------------------------------------------------------------------


def test_report_capabilities_tgt_answer():
    """tgt 1.0.x: LENGTH 8, TMV, every type but no options (read from its spc.c and seen on the wire)."""
    c = parse_report_capabilities(bytes([0, 8, 0, 0x80, 0xEA, 0x01, 0, 0]), 8)
    assert c.tmv and not (c.ptpl_c or c.sip_c or c.atp_c or c.crh or c.rlr_c or c.ptpl_a)
    assert c.types == frozenset(PrType)
    assert c.supports(PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY) is True


def test_report_capabilities_each_bit():
    c = parse_report_capabilities(bytes([0, 8, 0x1F, 0xF1, 0x20, 0, 0, 0]), 8)
    assert (c.rlr_c, c.crh, c.sip_c, c.atp_c, c.ptpl_c, c.tmv, c.allow_commands, c.ptpl_a) == \
        (True, True, True, True, True, True, 7, True)
    assert c.types == {PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY}
    assert c.supports(PrType.WRITE_EXCLUSIVE) is False


def test_report_capabilities_without_a_type_mask_says_nothing():
    c = parse_report_capabilities(bytes([0, 8, 0, 0, 0xFF, 0xFF, 0, 0]), 8)
    assert c.supports(PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY) is None


@pytest.mark.parametrize("data,alloc,match", [
    (bytes([0, 8, 0, 0x80]), 8, "4 bytes"),
    (bytes([0, 8, 0, 0x80, 0, 0, 0, 0]), 4, "room for 4"),
    (bytes([0, 7, 0, 0x80, 0, 0, 0, 0]), 8, "length field 7"),
    (bytes([1, 8, 0, 0x80, 0, 0, 0, 0]), 8, "length field 264"),
    (None, 8, "must be bytes"),
])
def test_report_capabilities_rejects_garbage(data, alloc, match):
    with pytest.raises(PrDataError, match=match):
        parse_report_capabilities(data, alloc)


# -- PR generation ------------------------------------------------------------------------------------


def test_generation_advances_modulo_2_32():
    assert generation_advanced(5, 5) == 0
    assert generation_advanced(5, 7) == 2
    assert generation_advanced(0xFFFFFFFF, 1) == 2  # wrapped
    with pytest.raises(PrDataError):
        generation_advanced(-1, 0)
    with pytest.raises(PrDataError):
        generation_advanced(0, 1 << 32)


# -- any bytes: a record or one line ------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, PR_IN_ALLOC_MAX))
def test_any_bytes_give_a_record_or_one_error_line(data, alloc):
    for parse in (parse_read_keys, parse_read_reservation, parse_report_capabilities):
        try:
            parse(data, alloc)
        except PrDataError as e:
            assert "\n" not in str(e)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 0xFFFFFFFF), st.lists(st.integers(0, (1 << 64) - 1), max_size=40), st.integers(8, 400))
def test_read_keys_round_trip_at_any_allocation(generation, keys, alloc):
    full = keys_data(generation, keys)
    k = parse_read_keys(full[:alloc], alloc)
    assert k.generation == generation and k.needed_len == len(full)
    assert k.complete == (alloc >= len(full))
    assert k.keys == tuple(keys[:(min(alloc, len(full)) - 8) // 8])
