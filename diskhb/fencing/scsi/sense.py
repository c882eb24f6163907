"""SCSI status (SAM-5) and sense data (SPC-4): decoded into typed records and one-line messages.

I/O-free. A transport hands back the status byte and the raw sense bytes; this file says what
they mean, the same way for SG_IO and iSCSI.

Rules of this file:
- S1 FORMATS: response codes 70h/71h are fixed format (sense key byte 2 bits 3-0,
  ADDITIONAL SENSE LENGTH byte 7, ASC byte 12, ASCQ byte 13, sense-key specific bytes 15-17);
  72h/73h descriptor format (sense key byte 1, ASC byte 2, ASCQ byte 3, descriptors
  from byte 8). 71h/73h are deferred errors: they report an earlier command, not this one.
  Anything else (7Fh vendor specific included) is not decodable: SenseError.
- S2 TRUNCATION: a sense buffer may be cut short by the initiator's buffer (SG_IO's mx_sb_len):
  fields beyond what arrived are None, never guessed; a descriptor reaching past the ADDITIONAL
  SENSE LENGTH the device declared is garbage: SenseError.
- S3 ONE LINE: describe() never raises and never spans lines: every outcome of a command,
  garbage included, is one line an operator can read.
"""

from __future__ import annotations

import enum
import struct

from diskhb.core.record import record

SENSE_LEN_MAX = 252  # SPC-4: 8 + ADDITIONAL SENSE LENGTH (at most 244)


class Status(enum.IntEnum):
    """SCSI status codes (SAM-5)."""

    GOOD = 0x00
    CHECK_CONDITION = 0x02
    CONDITION_MET = 0x04
    BUSY = 0x08
    RESERVATION_CONFLICT = 0x18
    TASK_SET_FULL = 0x28
    ACA_ACTIVE = 0x30
    TASK_ABORTED = 0x40


class SenseKey(enum.IntEnum):
    """Sense keys (SPC-4)."""

    NO_SENSE = 0x0
    RECOVERED_ERROR = 0x1
    NOT_READY = 0x2
    MEDIUM_ERROR = 0x3
    HARDWARE_ERROR = 0x4
    ILLEGAL_REQUEST = 0x5
    UNIT_ATTENTION = 0x6
    DATA_PROTECT = 0x7
    BLANK_CHECK = 0x8
    VENDOR_SPECIFIC = 0x9
    COPY_ABORTED = 0xA
    ABORTED_COMMAND = 0xB
    RESERVED_C = 0xC
    VOLUME_OVERFLOW = 0xD
    MISCOMPARE = 0xE
    COMPLETED = 0xF


# The additional sense codes a PR fence, its audit and a fenced writer meet (SPC-4 annex D).
ASC_NAMES = {
    (0x00, 0x00): "NO ADDITIONAL SENSE INFORMATION",
    (0x04, 0x00): "LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE",
    (0x04, 0x01): "LOGICAL UNIT IS IN PROCESS OF BECOMING READY",
    (0x04, 0x02): "LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED",
    (0x0C, 0x00): "WRITE ERROR",
    (0x11, 0x00): "UNRECOVERED READ ERROR",
    (0x1A, 0x00): "PARAMETER LIST LENGTH ERROR",
    (0x20, 0x00): "INVALID COMMAND OPERATION CODE",
    (0x21, 0x00): "LOGICAL BLOCK ADDRESS OUT OF RANGE",
    (0x24, 0x00): "INVALID FIELD IN CDB",
    (0x25, 0x00): "LOGICAL UNIT NOT SUPPORTED",
    (0x26, 0x00): "INVALID FIELD IN PARAMETER LIST",
    (0x26, 0x04): "INVALID RELEASE OF PERSISTENT RESERVATION",
    (0x27, 0x00): "WRITE PROTECTED",
    (0x28, 0x00): "NOT READY TO READY CHANGE, MEDIUM MAY HAVE CHANGED",
    (0x29, 0x00): "POWER ON, RESET, OR BUS DEVICE RESET OCCURRED",
    (0x29, 0x07): "I_T NEXUS LOSS OCCURRED",
    (0x2A, 0x01): "MODE PARAMETERS CHANGED",
    (0x2A, 0x03): "RESERVATIONS PREEMPTED",
    (0x2A, 0x04): "RESERVATIONS RELEASED",
    (0x2A, 0x05): "REGISTRATIONS PREEMPTED",
    (0x2A, 0x09): "CAPACITY DATA HAS CHANGED",
    (0x2C, 0x09): "PREVIOUS RESERVATION CONFLICT STATUS",
    (0x3A, 0x00): "MEDIUM NOT PRESENT",
    (0x3F, 0x0E): "REPORTED LUNS DATA HAS CHANGED",
    (0x44, 0x00): "INTERNAL TARGET FAILURE",
    (0x47, 0x00): "SCSI PARITY ERROR",
    (0x4B, 0x00): "DATA PHASE ERROR",
    (0x55, 0x04): "INSUFFICIENT REGISTRATION RESOURCES",
}


class SenseError(ValueError):
    """Sense bytes that follow neither SPC-4 format: one line."""


@record
class FieldPointer:
    """The sense-key specific field pointer of an ILLEGAL REQUEST (SPC-4)."""

    in_cdb: bool  # C/D: the bad field is in the CDB (else in the parameter data)
    byte: int
    bit: int | None  # None: the whole byte (BPV clear)


@record
class Sense:
    response_code: int
    descriptor: bool  # S1: descriptor format (else fixed)
    deferred: bool  # S1: reports an earlier command
    key: SenseKey
    asc: int | None  # S2: None when the buffer ended before it
    ascq: int | None
    information: int | None  # the INFORMATION field when VALID (fixed) or its descriptor (descriptor)
    field: FieldPointer | None  # ILLEGAL REQUEST only, when SKSV

    def message(self) -> str:
        out = f"{self.key.name.replace('_', ' ')}: {asc_name(self.asc, self.ascq)}"
        if self.field is not None:
            where = "CDB" if self.field.in_cdb else "parameter list"
            out += f", {where} byte {self.field.byte}"
            if self.field.bit is not None:
                out += f" bit {self.field.bit}"
        if self.deferred:
            out += " (deferred: about an earlier command)"
        return out


def asc_name(asc: int | None, ascq: int | None) -> str:
    if asc is None:
        return "no additional sense code"
    if ascq is None:  # S2: never guess the qualifier
        return f"asc 0x{asc:02x} (qualifier cut off)"
    code = f"asc 0x{asc:02x} ascq 0x{ascq:02x}"
    name = ASC_NAMES.get((asc, ascq))
    if name is None and asc == 0x04:
        name = "LOGICAL UNIT NOT READY"
    return f"{name} ({code})" if name else code


def _field_pointer(key: SenseKey, sks: bytes) -> FieldPointer | None:
    """Field pointer sense-key specific data: byte 0 SKSV (bit 7) C/D (6) BPV (3) BIT POINTER
    (2-0), bytes 1-2 FIELD POINTER."""
    if key != SenseKey.ILLEGAL_REQUEST or len(sks) < 3 or not sks[0] & 0x80:
        return None
    return FieldPointer(bool(sks[0] & 0x40), struct.unpack_from(">H", sks, 1)[0],
                        (sks[0] & 0x07) if sks[0] & 0x08 else None)


def decode(data: bytes) -> Sense | None:
    """The sense bytes of one command; None when there are none (an empty buffer)."""
    if data is None or len(data) == 0:
        return None
    data = bytes(data[:SENSE_LEN_MAX])
    code = data[0] & 0x7F
    if code in (0x70, 0x71):
        return _fixed(data, code)
    if code in (0x72, 0x73):
        return _descriptor(data, code)
    raise SenseError(f"sense response code 0x{code:02x} is neither fixed (70h/71h) nor descriptor (72h/73h) format")


def _fixed(data: bytes, code: int) -> Sense:
    if len(data) < 3:
        raise SenseError(f"fixed-format sense of {len(data)} bytes has no sense key")
    key = SenseKey(data[2] & 0x0F)
    end = len(data) if len(data) < 8 else min(len(data), 8 + data[7])
    asc = data[12] if end > 12 else None
    ascq = data[13] if end > 13 else None
    info = struct.unpack_from(">I", data, 3)[0] if data[0] & 0x80 and len(data) >= 7 else None
    field = _field_pointer(key, data[15:18]) if end >= 18 else None
    return Sense(code, False, code == 0x71, key, asc, ascq, info, field)


def _descriptor(data: bytes, code: int) -> Sense:
    if len(data) < 4:
        raise SenseError(f"descriptor-format sense of {len(data)} bytes has no sense key and ASC")
    key = SenseKey(data[1] & 0x0F)
    info = field = None
    if len(data) >= 8:
        declared_end = 8 + data[7]
        end = min(len(data), declared_end)
        i = 8
        while i + 2 <= end:  # S2: stop at what arrived; overrunning what was declared is garbage
            kind, n = data[i], data[i + 1]
            if i + 2 + n > declared_end:
                raise SenseError(f"sense descriptor 0x{kind:02x} at byte {i} runs past the declared "
                                 f"additional sense length ({data[7]})")
            if i + 2 + n > end:
                break
            body = data[i + 2:i + 2 + n]
            if kind == 0x00 and n == 0x0A and body[0] & 0x80:  # the information descriptor
                info = struct.unpack_from(">Q", body, 2)[0]
            elif kind == 0x02 and n == 0x06:  # the sense key specific descriptor
                field = _field_pointer(key, body[2:5])
            i += 2 + n
    return Sense(code, True, code == 0x73, key, data[2], data[3], info, field)


def status_name(status: int) -> str:
    try:
        return Status(status).name.replace("_", " ")
    except ValueError:
        return f"status 0x{status:02x}"


def describe(status: int, sense: bytes | None = None) -> str:
    """S3: one line for a command's outcome: 'GOOD', 'RESERVATION CONFLICT',
    'CHECK CONDITION: ILLEGAL REQUEST: INVALID FIELD IN CDB (asc 0x24 ascq 0x00), CDB byte 1 bit 4'."""
    out = status_name(status)
    if status == Status.CHECK_CONDITION or sense:
        try:
            s = decode(sense or b"")
        except SenseError as e:
            return f"{out}: undecodable sense ({e})"
        if s is not None:
            out += f": {s.message()}"
        elif status == Status.CHECK_CONDITION:
            out += ": no sense data"
    return out
