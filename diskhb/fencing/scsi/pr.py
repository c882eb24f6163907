"""Persistent-reservation operations over any transport: one call each, a typed result or one line.

The building blocks of the scsi-pr fencing method (register at start, reserve, preempt a victim,
read the keys back, audit): cdb.py builds, the transport carries, pr_in.py and sense.py read.

Rules of this file:
- R1 UNIT ATTENTION: a command answered CHECK CONDITION / UNIT ATTENTION was not executed (SAM-5:
  the UA is reported instead); it is sent again, at most UA_RETRIES_MAX times. The UAs are
  kept in the Reply (and named in an error's message): REGISTRATIONS PREEMPTED (tgt says
  RESERVATIONS PREEMPTED) is how a fenced node's next command learns it.
- R2 ERRORS: RESERVATION CONFLICT is PrConflict; any other CHECK CONDITION, or another non-GOOD
  status (BUSY, TASK SET FULL, ...), is PrRejected with the decoded sense; GOOD with data that
  breaks SPC-4 is PrBadData; a transport failure propagates as TransportError, outcome_unknown
  kept (a PREEMPT that timed out may have run: read the keys back before believing anything).
  Every message is one line.
- R3 ONE DEADLINE: timeout_ms bounds the whole operation, UA retries and re-reads included.
- R4 COMPLETE LISTS: read_keys() returns only a complete list (pr_in P2): a truncated one is read
  again with the length it needs, at most READ_KEYS_TRIES times in all.
- R5 FALLBACK: preempt_victim() sends PREEMPT AND ABORT and, only when the device refuses that
  service action as unsupported (ILLEGAL REQUEST: INVALID FIELD IN CDB, at CDB byte 1 or with no
  field pointer, as tgt does), plain PREEMPT; it says which one ran. Any other refusal (a
  conflict, INVALID COMMAND OPERATION CODE: no PR at all) is the caller's failure.
"""

from __future__ import annotations

import time

from diskhb.core.record import record
from diskhb.fencing.scsi import cdb as C
from diskhb.fencing.scsi.pr_in import Capabilities, KeyList, PrDataError, ReservationState, parse_read_keys, \
    parse_read_reservation, parse_report_capabilities
from diskhb.fencing.scsi.sense import Sense, SenseError, SenseKey, Status, decode, describe
from diskhb.fencing.scsi.transport import TIMEOUT_MS_MIN, Transport, TransportTimeout

UA_RETRIES_MAX = 8  # tgt queues one UA per event (login reset, preempted, released, ...)
READ_KEYS_TRIES = 3  # the list may grow between two reads


class PrError(Exception):
    """The device answered but did not do it. One line; status and decoded sense attached."""

    def __init__(self, message: str, status: int, sense: Sense | None):
        super().__init__(message)
        self.status = status
        self.sense = sense


class PrConflict(PrError):
    """RESERVATION CONFLICT: not registered, a wrong key, or reserved by someone else."""


class PrRejected(PrError):
    """CHECK CONDITION (not a UA) or another status: unsupported, invalid, not ready, busy."""

    @property
    def unsupported_service_action(self) -> bool:
        """R5: ILLEGAL REQUEST, INVALID FIELD IN CDB, pointing at the service action (CDB byte 1)
        or at nothing: the device does not implement this service action (SPC-4)."""
        s = self.sense
        return s is not None and s.key == SenseKey.ILLEGAL_REQUEST and (s.asc, s.ascq) == (0x24, 0x00) \
            and (s.field is None or (s.field.in_cdb and s.field.byte == 1))


class PrBadData(PrError):
    """GOOD, but the data does not follow SPC-4 (pr_in P1-P3): a broken device or transport."""


@record
class Reply:
    data_in: bytes
    unit_attentions: tuple[Sense, ...]  # R1: consumed on the way, oldest first


def _decode(sense: bytes) -> Sense | None:
    try:
        return decode(sense)
    except SenseError:
        return None


def run(t: Transport, cmd: C.Command, timeout_ms: int) -> Reply:
    """Execute one command to a GOOD status (R1-R3)."""
    deadline = time.monotonic() + timeout_ms / 1000
    uas: list[Sense] = []
    while True:
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms < TIMEOUT_MS_MIN:
            raise TransportTimeout(f"{t.name}: {cmd.name}: out of time after {len(uas)} unit attention(s)")
        r = t.execute(cmd.cdb, cmd.data_out, cmd.data_in_len, left_ms)
        if r.status == Status.GOOD:
            return Reply(r.data_in, tuple(uas))
        sense = _decode(r.sense) if r.sense else None
        if r.status == Status.CHECK_CONDITION and sense is not None and sense.key == SenseKey.UNIT_ATTENTION \
                and len(uas) < UA_RETRIES_MAX:
            uas.append(sense)
            continue
        msg = f"{t.name}: {cmd.name}: {describe(r.status, r.sense)}"
        if uas:
            msg += f" (after {len(uas)} unit attention(s), last: {uas[-1].message()})"
        cls = PrConflict if r.status == Status.RESERVATION_CONFLICT else PrRejected
        raise cls(msg, r.status, sense)


def _parse(t: Transport, cmd: C.Command, parser, data: bytes):
    try:
        return parser(data, cmd.data_in_len)
    except PrDataError as e:
        raise PrBadData(f"{t.name}: {e}", Status.GOOD, None) from None


# -- PR IN ---------------------------------------------------------------------------------------------


def read_keys(t: Transport, timeout_ms: int) -> KeyList:
    """R4: every registered key and the PR generation, complete or an error."""
    deadline = time.monotonic() + timeout_ms / 1000
    cmd = C.read_keys()
    for _ in range(READ_KEYS_TRIES):
        keys = _parse(t, cmd, parse_read_keys, run(t, cmd, _left(t, cmd, deadline)).data_in)
        if keys.complete:
            return keys
        cmd = C.read_keys(keys.needed_len)  # bounded: pr_in refuses more than KEYS_MAX keys
    raise PrBadData(f"{t.name}: READ KEYS: the key list kept growing over {READ_KEYS_TRIES} reads",
                     Status.GOOD, None)


def _left(t: Transport, cmd: C.Command, deadline: float) -> int:
    left_ms = int((deadline - time.monotonic()) * 1000)
    if left_ms < TIMEOUT_MS_MIN:
        raise TransportTimeout(f"{t.name}: {cmd.name}: out of time")
    return left_ms


def read_reservation(t: Transport, timeout_ms: int) -> ReservationState:
    cmd = C.read_reservation()
    return _parse(t, cmd, parse_read_reservation, run(t, cmd, timeout_ms).data_in)


def report_capabilities(t: Transport, timeout_ms: int) -> Capabilities:
    cmd = C.report_capabilities()
    return _parse(t, cmd, parse_report_capabilities, run(t, cmd, timeout_ms).data_in)


# -- PR OUT --------------------------------------------------------------------------------------------


def register(t: Transport, old_key: int, new_key: int, timeout_ms: int) -> Reply:
    return run(t, C.register(old_key, new_key), timeout_ms)


def register_and_ignore(t: Transport, new_key: int, timeout_ms: int) -> Reply:
    return run(t, C.register_and_ignore(new_key), timeout_ms)


def reserve(t: Transport, own_key: int, timeout_ms: int, pr_type: C.PrType = C.FENCE_TYPE) -> Reply:
    return run(t, C.reserve(own_key, pr_type), timeout_ms)


def release(t: Transport, own_key: int, timeout_ms: int, pr_type: C.PrType = C.FENCE_TYPE) -> Reply:
    return run(t, C.release(own_key, pr_type), timeout_ms)


def clear(t: Transport, own_key: int, timeout_ms: int) -> Reply:
    return run(t, C.clear(own_key), timeout_ms)


def preempt(t: Transport, own_key: int, victim_key: int, timeout_ms: int,
            pr_type: C.PrType = C.FENCE_TYPE) -> Reply:
    return run(t, C.preempt(own_key, victim_key, pr_type), timeout_ms)


def preempt_and_abort(t: Transport, own_key: int, victim_key: int, timeout_ms: int,
                      pr_type: C.PrType = C.FENCE_TYPE) -> Reply:
    return run(t, C.preempt_and_abort(own_key, victim_key, pr_type), timeout_ms)


@record
class Preempted:
    action: str  # "preempt-and-abort" or "preempt"
    fallback_reason: str  # R5: why PREEMPT AND ABORT was not it ("" when it was)
    reply: Reply


def preempt_victim(t: Transport, own_key: int, victim_key: int, timeout_ms: int,
                   pr_type: C.PrType = C.FENCE_TYPE) -> Preempted:
    """R5: remove every registration of victim_key, taking its reservation over. The caller
    must still read the keys back: only their absence proves the fence."""
    deadline = time.monotonic() + timeout_ms / 1000
    try:
        return Preempted("preempt-and-abort", "", preempt_and_abort(t, own_key, victim_key, timeout_ms, pr_type))
    except PrRejected as e:
        if not e.unsupported_service_action:
            raise
        reason = e.sense.message() if e.sense is not None else str(e)
    cmd = C.preempt(own_key, victim_key, pr_type)
    return Preempted("preempt", reason, run(t, cmd, _left(t, cmd, deadline)))


# -- block I/O: what a fence must stop, and the capacity to aim it -----------------------------------


def read_capacity(t: Transport, timeout_ms: int) -> tuple[int, int]:
    """(number of blocks, block size) from READ CAPACITY (10)."""
    cmd = C.read_capacity_10()
    data = run(t, cmd, timeout_ms).data_in
    if len(data) < C.READ_CAPACITY_10_LEN:
        raise PrBadData(f"{t.name}: READ CAPACITY(10): {len(data)} bytes, expected 8", Status.GOOD, None)
    last, size = int.from_bytes(data[0:4], "big"), int.from_bytes(data[4:8], "big")
    return last + 1, size


def write_blocks(t: Transport, lba: int, data: bytes, timeout_ms: int, block_size: int = C.BLOCK_SIZE_MIN) -> Reply:
    return run(t, C.write_10(lba, data, block_size), timeout_ms)


def read_blocks(t: Transport, lba: int, blocks: int, timeout_ms: int, block_size: int = C.BLOCK_SIZE_MIN) -> bytes:
    cmd = C.read_10(lba, blocks, block_size)
    data = run(t, cmd, timeout_ms).data_in
    if len(data) != cmd.data_in_len:
        raise PrBadData(f"{t.name}: READ(10): {len(data)} bytes, expected {cmd.data_in_len}", Status.GOOD, None)
    return data
