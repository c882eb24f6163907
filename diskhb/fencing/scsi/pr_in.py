"""Parsing PERSISTENT RESERVE IN parameter data (SPC-4): registered keys, the reservation, capabilities.

I/O-free. Each parser takes the bytes a transport returned (the residual already cut off) and the
allocation length the CDB asked for, and returns a typed record or raises PrDataError with one
line naming the command and what was wrong.

Rules of this file:
- P1 LENGTHS: the header's ADDITIONAL LENGTH is authoritative. A device returns min(allocation
  length, 8 + additional length) bytes: fewer is a short answer and an error; more is padding
  of a transport that cannot report the residual and is ignored.
- P2 TRUNCATED: a READ KEYS list cut at the allocation length is returned with complete=False and
  the length it needs: a caller deciding that a key is gone must read again with that length
  (pr.read_keys does, once). A partial list never proves a key absent.
- P3 BOUNDS: at most cdb.KEYS_MAX keys (the device says more: error, never a huge allocation);
  ADDITIONAL LENGTH a multiple of 8; a reservation descriptor exactly 16 bytes of LU scope and
  a type SPC-4 defines. Anything else is garbage from a broken device or transport: an error.
- P4 GENERATION: PRGENERATION is a 32-bit counter the device bumps on REGISTER, REGISTER AND
  IGNORE, PREEMPT, PREEMPT AND ABORT and CLEAR (not on RESERVE or RELEASE) and that wraps;
  generation_advanced() compares modulo 2^32.
"""

from __future__ import annotations

import struct
from collections import Counter

from diskhb.core.record import record
from diskhb.fencing.scsi.cdb import KEYS_MAX, PR_IN_HEADER_LEN, READ_RESERVATION_LEN, REPORT_CAPABILITIES_LEN, \
    SCOPE_LU, PrType

GENERATION_MOD = 1 << 32


class PrDataError(ValueError):
    """PR IN data that does not follow SPC-4: one line, naming the command."""


@record
class KeyList:
    """READ KEYS: the PR generation and every registered key, in the device's order (a key
    registered through several I_T nexuses, e.g. paths of a multipath device, appears once per
    nexus)."""

    generation: int
    keys: tuple[int, ...]
    complete: bool  # P2: False when the allocation length cut the list short
    needed_len: int  # the allocation length the whole list needs

    def count(self, key: int) -> int:
        return self.keys.count(key)

    def duplicates(self) -> dict[int, int]:
        """Keys registered more than once, with their counts."""
        return {k: n for k, n in Counter(self.keys).items() if n > 1}


@record
class Holder:
    """The persistent reservation of a logical unit. For the all-registrants types the key is 0
    (SPC-4: every registrant holds an all-registrants reservation)."""

    key: int
    pr_type: PrType
    scope: int


@record
class ReservationState:
    generation: int
    holder: Holder | None  # None: no persistent reservation


@record
class Capabilities:
    """REPORT CAPABILITIES parameter data (SPC-4)."""

    rlr_c: bool  # replace lost reservation capable
    crh: bool  # compatible reservation handling
    sip_c: bool  # SPEC_I_PT capable
    atp_c: bool  # ALL_TG_PT capable
    ptpl_c: bool  # persist through power loss capable
    tmv: bool  # the type mask is valid
    allow_commands: int
    ptpl_a: bool  # persist through power loss activated
    types: frozenset[PrType]  # meaningful only when tmv

    def supports(self, pr_type: PrType) -> bool | None:
        """True/False from the type mask; None when the device does not say (TMV clear)."""
        return (pr_type in self.types) if self.tmv else None


def _header(what: str, data: bytes, alloc_len: int) -> tuple[int, int]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PrDataError(f"{what}: data must be bytes, got {type(data).__name__}")
    if len(data) < PR_IN_HEADER_LEN:
        raise PrDataError(f"{what}: {len(data)} bytes, shorter than the {PR_IN_HEADER_LEN}-byte header")
    if alloc_len < PR_IN_HEADER_LEN:
        raise PrDataError(f"{what}: allocation length {alloc_len} is below the header's {PR_IN_HEADER_LEN} bytes")
    return struct.unpack_from(">II", data, 0)


def _check_short(what: str, got: int, alloc_len: int, avail: int) -> None:
    """P1: the device must return min(allocation length, what it has)."""
    if got < min(alloc_len, avail):
        raise PrDataError(f"{what}: short answer: {got} bytes of {avail} with room for {alloc_len}")


def parse_read_keys(data: bytes, alloc_len: int) -> KeyList:
    what = "READ KEYS"
    generation, add_len = _header(what, data, alloc_len)
    if add_len % 8:
        raise PrDataError(f"{what}: additional length {add_len} is not a multiple of 8")
    if add_len > 8 * KEYS_MAX:
        raise PrDataError(f"{what}: {add_len // 8} keys registered, more than the {KEYS_MAX} we accept")
    avail = PR_IN_HEADER_LEN + add_len
    _check_short(what, len(data), alloc_len, avail)
    have = min(len(data), alloc_len, avail)
    n = (have - PR_IN_HEADER_LEN) // 8
    keys = struct.unpack_from(f">{n}Q", data, PR_IN_HEADER_LEN)
    return KeyList(generation, tuple(keys), have >= avail, avail)


def parse_read_reservation(data: bytes, alloc_len: int) -> ReservationState:
    what = "READ RESERVATION"
    generation, add_len = _header(what, data, alloc_len)
    if add_len == 0:
        return ReservationState(generation, None)
    if add_len != READ_RESERVATION_LEN - PR_IN_HEADER_LEN:
        raise PrDataError(f"{what}: additional length {add_len}, expected 0 or 16 (one LU-scope reservation)")
    if alloc_len < READ_RESERVATION_LEN:
        raise PrDataError(f"{what}: allocation length {alloc_len} leaves no room for the reservation")
    _check_short(what, len(data), alloc_len, READ_RESERVATION_LEN)
    key = struct.unpack_from(">Q", data, 8)[0]
    scope, type_code = data[21] >> 4, data[21] & 0x0F
    if scope != SCOPE_LU:
        raise PrDataError(f"{what}: scope {scope}, expected {SCOPE_LU} (LU_SCOPE)")
    try:
        pr_type = PrType(type_code)
    except ValueError:
        raise PrDataError(f"{what}: reservation type {type_code} is not one SPC-4 defines") from None
    all_registrants = pr_type in (PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS, PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS)
    if key == 0 and not all_registrants:
        raise PrDataError(f"{what}: a {pr_type.short} reservation held by key 0")
    return ReservationState(generation, Holder(key, pr_type, scope))


_TYPE_MASK = ((4, 0x80, PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS), (4, 0x40, PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY),
              (4, 0x20, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY), (4, 0x08, PrType.EXCLUSIVE_ACCESS),
              (4, 0x02, PrType.WRITE_EXCLUSIVE), (5, 0x01, PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS))


def parse_report_capabilities(data: bytes, alloc_len: int) -> Capabilities:
    """SPC-4, REPORT CAPABILITIES parameter data: bytes 0-1 LENGTH (8); byte 2 RLR_C (bit 4) CRH (3) SIP_C (2) ATP_C (1)
    PTPL_C (0); byte 3 TMV (bit 7) ALLOW COMMANDS (6-4) PTPL_A (0); bytes 4-5 the type mask
    (byte 4: WR_EX_AR 7, EX_AC_RO 6, WR_EX_RO 5, EX_AC 3, WR_EX 1; byte 5: EX_AC_AR 0)."""
    what = "REPORT CAPABILITIES"
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PrDataError(f"{what}: data must be bytes, got {type(data).__name__}")
    if alloc_len < REPORT_CAPABILITIES_LEN or len(data) < REPORT_CAPABILITIES_LEN:
        raise PrDataError(f"{what}: {len(data)} bytes (room for {alloc_len}), expected {REPORT_CAPABILITIES_LEN}")
    length = struct.unpack_from(">H", data, 0)[0]
    if length != REPORT_CAPABILITIES_LEN:
        raise PrDataError(f"{what}: length field {length}, expected {REPORT_CAPABILITIES_LEN}")
    b2, b3 = data[2], data[3]
    types = frozenset(t for i, bit, t in _TYPE_MASK if data[i] & bit)
    return Capabilities(bool(b2 & 0x10), bool(b2 & 0x08), bool(b2 & 0x04), bool(b2 & 0x02), bool(b2 & 0x01),
                        bool(b3 & 0x80), (b3 >> 4) & 0x7, bool(b3 & 0x01), types)


def generation_advanced(before: int, after: int) -> int:
    """P4: by how much PRGENERATION moved from before to after, modulo 2^32 (0: unchanged)."""
    for g in (before, after):
        if not isinstance(g, int) or not 0 <= g < GENERATION_MOD:
            raise PrDataError(f"PR generation {g!r} is not a 32-bit counter")
    return (after - before) % GENERATION_MOD
