"""diskhb.fencing.scsi.sense: status codes, fixed and descriptor sense (S1), truncation (S2), and the
one-line messages (S3), on good, cut and malformed sense bytes."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diskhb.fencing.scsi.sense import FieldPointer, SenseError, SenseKey, Status, decode, describe, status_name


def fixed(key, asc, ascq, *, code=0x70, valid=False, info=0, sks=b"\x00\x00\x00", add_len=10):
    """Fixed format, 18 bytes."""
    b = bytearray(18)
    b[0] = (0x80 if valid else 0) | code
    b[2] = key
    b[3:7] = info.to_bytes(4, "big")
    b[7] = add_len
    b[12], b[13] = asc, ascq
    b[15:18] = sks
    return bytes(b)


def descriptor(key, asc, ascq, *descs, code=0x72, add_len=None):
    """Descriptor format: an 8-byte header, then descriptors."""
    body = b"".join(descs)
    return bytes([code, key, asc, ascq, 0, 0, 0, len(body) if add_len is None else add_len]) + body


def info_desc(value, valid=True):
    return bytes([0x00, 0x0A, 0x80 if valid else 0, 0]) + value.to_bytes(8, "big")


def sks_desc(sks):
    return bytes([0x02, 0x06, 0, 0]) + sks + bytes(1)


def test_statuses():
    assert (Status.GOOD, Status.CHECK_CONDITION, Status.RESERVATION_CONFLICT) == (0x00, 0x02, 0x18)
    assert status_name(0x18) == "RESERVATION CONFLICT"
    assert status_name(0x22) == "status 0x22"  # obsolete COMMAND TERMINATED: not ours, shown raw
    assert describe(0x18) == "RESERVATION CONFLICT"
    assert describe(0x00) == "GOOD"
    assert describe(0x08) == "BUSY"


def test_fixed_tgt_preempt_and_abort_refusal():
    """The exact bytes tgt 1.0.85 answers PREEMPT AND ABORT with (seen on the wire)."""
    raw = bytes.fromhex("700005000000000a00000000240000000000")
    s = decode(raw)
    assert (s.response_code, s.descriptor, s.deferred, s.key, s.asc, s.ascq) == \
        (0x70, False, False, SenseKey.ILLEGAL_REQUEST, 0x24, 0x00)
    assert describe(2, raw) == "CHECK CONDITION: ILLEGAL REQUEST: INVALID FIELD IN CDB (asc 0x24 ascq 0x00)"


def test_fixed_unit_attention_reservations_preempted():
    s = decode(fixed(0x6, 0x2A, 0x03))
    assert s.key == SenseKey.UNIT_ATTENTION and s.message() == \
        "UNIT ATTENTION: RESERVATIONS PREEMPTED (asc 0x2a ascq 0x03)"
    assert decode(fixed(0x6, 0x2A, 0x05)).message().endswith("REGISTRATIONS PREEMPTED (asc 0x2a ascq 0x05)")


def test_fixed_information_and_field_pointer():
    s = decode(fixed(0x5, 0x24, 0x00, valid=True, info=0x01020304, sks=bytes([0x80 | 0x40 | 0x08 | 4, 0, 1])))
    assert s.information == 0x01020304
    assert s.field == FieldPointer(True, 1, 4)
    assert s.message() == "ILLEGAL REQUEST: INVALID FIELD IN CDB (asc 0x24 ascq 0x00), CDB byte 1 bit 4"
    s = decode(fixed(0x5, 0x26, 0x00, sks=bytes([0x80, 0, 20])))  # parameter list, whole byte
    assert s.field == FieldPointer(False, 20, None) and s.message().endswith("parameter list byte 20")


def test_fixed_deferred_and_unknown_asc():
    s = decode(fixed(0x3, 0x5D, 0x10, code=0x71))
    assert s.deferred and s.message() == "MEDIUM ERROR: asc 0x5d ascq 0x10 (deferred: about an earlier command)"
    assert decode(fixed(0x2, 0x04, 0x1C)).message() == "NOT READY: LOGICAL UNIT NOT READY (asc 0x04 ascq 0x1c)"


def test_fixed_cut_short_keeps_what_arrived():
    """S2: an 8-byte buffer has the key but no ASC; ADDITIONAL SENSE LENGTH 4 ends before it too."""
    raw = fixed(0x6, 0x2A, 0x03)
    assert (decode(raw[:8]).key, decode(raw[:8]).asc) == (SenseKey.UNIT_ATTENTION, None)
    assert decode(raw[:3]).asc is None
    s = decode(raw[:13])  # ASC arrived, ASCQ did not
    assert (s.asc, s.ascq) == (0x2A, None) and s.message() == "UNIT ATTENTION: asc 0x2a (qualifier cut off)"
    s = decode(fixed(0x6, 0x2A, 0x03, add_len=4))
    assert s.asc is None and s.message() == "UNIT ATTENTION: no additional sense code"


def test_descriptor_format():
    raw = descriptor(0x5, 0x24, 0x00, info_desc(0xDEADBEEF), sks_desc(bytes([0xC0, 0, 2])))
    s = decode(raw)
    assert (s.descriptor, s.key, s.asc, s.ascq, s.information) == (True, SenseKey.ILLEGAL_REQUEST, 0x24, 0, 0xDEADBEEF)
    assert s.field == FieldPointer(True, 2, None)
    assert decode(descriptor(0x6, 0x29, 0x07, code=0x73)).deferred
    assert decode(descriptor(0x6, 0x29, 0x07)).message() == \
        "UNIT ATTENTION: I_T NEXUS LOSS OCCURRED (asc 0x29 ascq 0x07)"


def test_descriptor_information_not_valid_and_unknown_descriptors():
    s = decode(descriptor(0x3, 0x11, 0, info_desc(5, valid=False), bytes([0x80, 2, 1, 2])))
    assert s.information is None and s.asc == 0x11


def test_descriptor_cut_by_the_buffer_is_ignored_not_guessed():
    raw = descriptor(0x5, 0x24, 0x00, info_desc(7), sks_desc(bytes([0xC0, 0, 2])))
    s = decode(raw[:8 + 12 + 3])  # the buffer ends inside the second descriptor
    assert s.information == 7 and s.field is None
    assert decode(raw[:4]).asc == 0x24


@pytest.mark.parametrize("raw,match", [
    (bytes([0x7F, 0, 0, 0]), "response code 0x7f"),  # vendor specific
    (bytes([0x00] * 18), "response code 0x00"),
    (bytes([0x70, 0]), "no sense key"),
    (bytes([0x72, 5, 0x24]), "no sense key"),
    (descriptor(0x5, 0x24, 0, info_desc(1), add_len=6), "runs past the declared"),
])
def test_garbage_is_an_error(raw, match):
    with pytest.raises(SenseError, match=match):
        decode(raw)


def test_describe_never_raises():
    assert describe(2, b"\x7f\x00") == \
        "CHECK CONDITION: undecodable sense (sense response code 0x7f is neither fixed (70h/71h) nor " \
        "descriptor (72h/73h) format)"
    assert describe(2, b"") == "CHECK CONDITION: no sense data"
    assert describe(2, None) == "CHECK CONDITION: no sense data"
    assert decode(b"") is None


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 255))
def test_any_bytes_decode_or_raise_one_line(raw, status):
    try:
        s = decode(raw)
        if s is not None:
            assert "\n" not in s.message()
    except SenseError as e:
        assert "\n" not in str(e)
    line = describe(status, raw)
    assert line and "\n" not in line
