"""SCSI command descriptor blocks for persistent reservations and the few block commands around them.

I/O-free: every function returns a `Command` (the CDB, the data to send, the data length to
receive) that any transport executes unchanged. References are to SPC-4 and SBC-3 by the titles
of their sections and tables (the numbers move between revisions); each builder names its table.

Rules of this file:
- C1 BYTES: every CDB is built byte by byte from the spec's table, big-endian, reserved bytes and
  the CONTROL byte 0; the PR OUT parameter list is the basic 24-byte one with SPEC_I_PT,
  ALL_TG_PT and APTPL clear. tgt refuses each of those bits; without APTPL a restart of the
  target drops every registration and the reservation (the PR audit must notice: our own key
  missing), which is the method's decision to make, not a default of this file.
- C2 KEYS: a reservation key is an unsigned 64-bit integer. Only REGISTER (the current key of an
  unregistered I_T nexus) and REGISTER AND IGNORE EXISTING KEY take 0 as the reservation key, and
  0 as the service action key means "unregister". Every other service action needs our own
  non-zero key. PREEMPT and PREEMPT AND ABORT refuse victim key 0: against an all-registrants
  reservation it removes every registrant but us (SPC-4: preempting all-registrants
  reservations), never a fence of one node.
- C3 TYPES: only the six reservation types SPC-4 defines; scope is LU_SCOPE (0), the only one
  SPC-4 keeps.
- C4 LIMITS: PR IN allocation lengths are 8..PR_IN_ALLOC_MAX (room for KEYS_MAX keys); block I/O
  is 1..BLOCKS_MAX blocks of 512..65536 bytes, within the 32-bit LBA of the 10-byte CDBs.
"""

from __future__ import annotations

import enum
import struct

from diskhb.core.record import record

OP_TEST_UNIT_READY = 0x00
OP_READ_CAPACITY_10 = 0x25
OP_READ_10 = 0x28
OP_WRITE_10 = 0x2A
OP_PERSISTENT_RESERVE_IN = 0x5E
OP_PERSISTENT_RESERVE_OUT = 0x5F

KEY_MAX = (1 << 64) - 1
KEYS_MAX = 1024  # registrations we accept in one READ KEYS (2 per node of a 512-node, 2-path cluster)
PR_IN_HEADER_LEN = 8  # PRGENERATION + ADDITIONAL LENGTH
PR_IN_ALLOC_MAX = PR_IN_HEADER_LEN + 8 * KEYS_MAX
READ_RESERVATION_LEN = PR_IN_HEADER_LEN + 16  # one LU-scope reservation (SPC-4: READ RESERVATION data)
REPORT_CAPABILITIES_LEN = 8  # SPC-4: REPORT CAPABILITIES parameter data
PR_OUT_PARAM_LEN = 24  # the basic PERSISTENT RESERVE OUT parameter list
READ_CAPACITY_10_LEN = 8
BLOCK_SIZE_MIN = 512
BLOCK_SIZE_MAX = 65536
BLOCKS_MAX = 256  # one command moves at most 256 blocks (128 KiB at 512 B): tests and probes only
LBA_MAX = (1 << 32) - 1


class PrIn(enum.IntEnum):
    """PERSISTENT RESERVE IN service action codes (SPC-4)."""

    READ_KEYS = 0x00
    READ_RESERVATION = 0x01
    REPORT_CAPABILITIES = 0x02
    READ_FULL_STATUS = 0x03


class PrOut(enum.IntEnum):
    """PERSISTENT RESERVE OUT service action codes (SPC-4)."""

    REGISTER = 0x00
    RESERVE = 0x01
    RELEASE = 0x02
    CLEAR = 0x03
    PREEMPT = 0x04
    PREEMPT_AND_ABORT = 0x05
    REGISTER_AND_IGNORE_EXISTING_KEY = 0x06
    REGISTER_AND_MOVE = 0x07


class PrType(enum.IntEnum):
    """Persistent reservations type codes (SPC-4). NVMe numbers them differently (WERO is 3)."""

    WRITE_EXCLUSIVE = 0x1
    EXCLUSIVE_ACCESS = 0x3
    WRITE_EXCLUSIVE_REGISTRANTS_ONLY = 0x5
    EXCLUSIVE_ACCESS_REGISTRANTS_ONLY = 0x6
    WRITE_EXCLUSIVE_ALL_REGISTRANTS = 0x7
    EXCLUSIVE_ACCESS_ALL_REGISTRANTS = 0x8

    @property
    def short(self) -> str:
        return _TYPE_SHORT[self]


_TYPE_SHORT = {PrType.WRITE_EXCLUSIVE: "WE", PrType.EXCLUSIVE_ACCESS: "EA",
               PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY: "WE-RO", PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY: "EA-RO",
               PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS: "WE-AR", PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS: "EA-AR"}

SCOPE_LU = 0x0  # SPC-4 persistent reservations scope codes: the only scope left (element scope is obsolete)
FENCE_TYPE = PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY  # fence_scsi's type 5: registrants write, all read

_PR_OUT_NAMES = {a: "PR OUT " + a.name.replace("_", " ") for a in PrOut}
_PR_IN_NAMES = {a: "PR IN " + a.name.replace("_", " ") for a in PrIn}


class CdbError(ValueError):
    """A command that must not be sent (a bad key, type, length): a bug of the caller, one line."""


@record
class Command:
    """One SCSI command, ready for any transport: `name` is for one-line messages."""

    name: str
    cdb: bytes
    data_out: bytes | None  # sent to the device (None: nothing)
    data_in_len: int  # bytes the device may return (0: none)


def _key(value: int, what: str, *, zero_ok: bool) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= KEY_MAX:
        raise CdbError(f"{what} must be an unsigned 64-bit integer, got {value!r}")
    if value == 0 and not zero_ok:
        raise CdbError(f"{what} must not be 0")
    return value


def _type(value: int) -> PrType:
    try:
        return PrType(value)
    except ValueError:
        raise CdbError(f"reservation type {value!r} is not one SPC-4 defines (1, 3, 5, 6, 7, 8)") from None


# -- PERSISTENT RESERVE IN (5Eh) ---------------------------------------------------------------------


def pr_in(action: PrIn, alloc_len: int) -> Command:
    """SPC-4, PERSISTENT RESERVE IN command: byte 0 opcode 5Eh, byte 1 bits 4-0 service action, bytes 2-6 reserved,
    bytes 7-8 ALLOCATION LENGTH (big-endian), byte 9 CONTROL."""
    action = PrIn(action)
    if isinstance(alloc_len, bool) or not isinstance(alloc_len, int) \
            or not PR_IN_HEADER_LEN <= alloc_len <= PR_IN_ALLOC_MAX:
        raise CdbError(f"PR IN allocation length must be {PR_IN_HEADER_LEN}..{PR_IN_ALLOC_MAX}, got {alloc_len!r}")
    cdb = struct.pack(">BB5xHB", OP_PERSISTENT_RESERVE_IN, action, alloc_len, 0)
    return Command(_PR_IN_NAMES[action], cdb, None, alloc_len)


def read_keys(alloc_len: int = PR_IN_HEADER_LEN + 8 * 32) -> Command:
    """READ KEYS: the PR generation and every registered key (32 fit by default;
    pr_in.parse_read_keys says how much a longer list needs)."""
    return pr_in(PrIn.READ_KEYS, alloc_len)


def read_reservation() -> Command:
    """READ RESERVATION: the PR generation and the holder's key, scope and type."""
    return pr_in(PrIn.READ_RESERVATION, READ_RESERVATION_LEN)


def report_capabilities() -> Command:
    """REPORT CAPABILITIES: which types and options the device supports."""
    return pr_in(PrIn.REPORT_CAPABILITIES, REPORT_CAPABILITIES_LEN)


# -- PERSISTENT RESERVE OUT (5Fh) --------------------------------------------------------------------


def pr_out(action: PrOut, res_key: int, sa_key: int, pr_type: PrType | None = None) -> Command:
    """SPC-4, PERSISTENT RESERVE OUT command: byte 0 opcode 5Fh, byte 1 bits 4-0 service action, byte 2 bits 7-4 SCOPE
    and bits 3-0 TYPE, bytes 3-4 reserved, bytes 5-8 PARAMETER LIST LENGTH (big-endian, 24),
    byte 9 CONTROL. Basic parameter list: bytes 0-7 RESERVATION KEY, 8-15 SERVICE ACTION
    RESERVATION KEY, 16-19 obsolete, byte 20 SPEC_I_PT (bit 3) ALL_TG_PT (bit 2) APTPL (bit 0),
    byte 21 reserved, 22-23 obsolete: all zero here (C1).

    pr_type is required by RESERVE, RELEASE, PREEMPT and PREEMPT AND ABORT and ignored by the
    device for the others (SPC-4: service actions and valid parameters), which get scope/type
    byte 0."""
    action = PrOut(action)
    if action == PrOut.REGISTER_AND_MOVE:
        raise CdbError("REGISTER AND MOVE takes another parameter list: not supported")
    typed = action in (PrOut.RESERVE, PrOut.RELEASE, PrOut.PREEMPT, PrOut.PREEMPT_AND_ABORT)
    if typed:
        scope_type = (SCOPE_LU << 4) | _type(pr_type if pr_type is not None else 0)
    elif pr_type is not None:
        raise CdbError(f"{_PR_OUT_NAMES[action]} takes no reservation type")
    else:
        scope_type = 0
    # C2: which keys may be 0
    _key(res_key, "reservation key",
         zero_ok=action in (PrOut.REGISTER, PrOut.REGISTER_AND_IGNORE_EXISTING_KEY))
    if action in (PrOut.PREEMPT, PrOut.PREEMPT_AND_ABORT):
        _key(sa_key, "victim key (service action reservation key)", zero_ok=False)
    elif action in (PrOut.REGISTER, PrOut.REGISTER_AND_IGNORE_EXISTING_KEY):
        _key(sa_key, "new key (service action reservation key)", zero_ok=True)
    elif _key(sa_key, "service action reservation key", zero_ok=True) != 0:
        raise CdbError(f"{_PR_OUT_NAMES[action]} takes no service action reservation key")
    cdb = struct.pack(">BBB2xIB", OP_PERSISTENT_RESERVE_OUT, action, scope_type, PR_OUT_PARAM_LEN, 0)
    params = struct.pack(">QQ4xBx2x", res_key, sa_key, 0)
    return Command(_PR_OUT_NAMES[action], cdb, params, 0)


def register(old_key: int, new_key: int) -> Command:
    """REGISTER: old_key is the nexus' current key (0 when unregistered); new_key 0 unregisters."""
    return pr_out(PrOut.REGISTER, old_key, new_key)


def register_and_ignore(new_key: int) -> Command:
    """REGISTER AND IGNORE EXISTING KEY: (re)register this nexus with new_key, whatever it had."""
    return pr_out(PrOut.REGISTER_AND_IGNORE_EXISTING_KEY, 0, new_key)


def reserve(own_key: int, pr_type: PrType = FENCE_TYPE) -> Command:
    return pr_out(PrOut.RESERVE, own_key, 0, pr_type)


def release(own_key: int, pr_type: PrType = FENCE_TYPE) -> Command:
    return pr_out(PrOut.RELEASE, own_key, 0, pr_type)


def clear(own_key: int) -> Command:
    """CLEAR: removes every registration and the reservation (an operator's tool, never a fence)."""
    return pr_out(PrOut.CLEAR, own_key, 0)


def preempt(own_key: int, victim_key: int, pr_type: PrType = FENCE_TYPE) -> Command:
    """PREEMPT: removes every registration with victim_key (all its paths); takes over its
    reservation with pr_type when the victim held it."""
    return pr_out(PrOut.PREEMPT, own_key, victim_key, pr_type)


def preempt_and_abort(own_key: int, victim_key: int, pr_type: PrType = FENCE_TYPE) -> Command:
    """PREEMPT AND ABORT: PREEMPT, and the victim's queued commands are aborted too."""
    return pr_out(PrOut.PREEMPT_AND_ABORT, own_key, victim_key, pr_type)


# -- block commands: readiness, capacity, and the I/O a fence must stop (SPC-4, SBC-3) ---------------


def test_unit_ready() -> Command:
    """TEST UNIT READY (SPC-4): six bytes, opcode 00h, all else 0."""
    return Command("TEST UNIT READY", bytes(6), None, 0)


def read_capacity_10() -> Command:
    """READ CAPACITY (10) (SBC-3): opcode 25h; bytes 2-5 obsolete LBA, 8 PMI: 0."""
    return Command("READ CAPACITY(10)", struct.pack(">B9x", OP_READ_CAPACITY_10), None, READ_CAPACITY_10_LEN)


def _block_size(block_size: int) -> None:
    ok = isinstance(block_size, int) and not isinstance(block_size, bool) \
        and BLOCK_SIZE_MIN <= block_size <= BLOCK_SIZE_MAX and block_size & (block_size - 1) == 0
    if not ok:
        raise CdbError(f"block size must be a power of two in {BLOCK_SIZE_MIN}..{BLOCK_SIZE_MAX}, got {block_size!r}")


def _block_range(lba: int, blocks: int, block_size: int) -> None:
    _block_size(block_size)
    if not (isinstance(blocks, int) and 1 <= blocks <= BLOCKS_MAX):
        raise CdbError(f"a command moves 1..{BLOCKS_MAX} blocks, got {blocks!r}")
    if not (isinstance(lba, int) and 0 <= lba and lba + blocks - 1 <= LBA_MAX):
        raise CdbError(f"LBA {lba!r} + {blocks} blocks is beyond the 32-bit LBA of a 10-byte CDB")


def read_10(lba: int, blocks: int, block_size: int = BLOCK_SIZE_MIN) -> Command:
    """READ (10) (SBC-3): opcode 28h, byte 1 flags 0, bytes 2-5 LBA, byte 6 group 0,
    bytes 7-8 TRANSFER LENGTH in blocks, byte 9 CONTROL."""
    _block_range(lba, blocks, block_size)
    return Command("READ(10)", struct.pack(">BBIBHB", OP_READ_10, 0, lba, 0, blocks, 0), None, blocks * block_size)


def write_10(lba: int, data: bytes, block_size: int = BLOCK_SIZE_MIN) -> Command:
    """WRITE (10) (SBC-3): as READ (10) with opcode 2Ah; data is whole blocks."""
    data = bytes(data)
    _block_size(block_size)
    if not data or len(data) % block_size:
        raise CdbError(f"WRITE data must be whole blocks of {block_size!r} bytes, got {len(data)} bytes")
    blocks = len(data) // block_size
    _block_range(lba, blocks, block_size)
    return Command("WRITE(10)", struct.pack(">BBIBHB", OP_WRITE_10, 0, lba, 0, blocks, 0), data, 0)
