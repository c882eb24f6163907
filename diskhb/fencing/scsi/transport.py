"""The one interface every SCSI transport offers: send a CDB, get the status, the data and the sense.

A transport moves bytes and decides nothing: what a status or sense means is sense.py's, what a
PR answer says is pr_in.py's. Two implementations: sg_io.py (a local sg or block device) and
iscsi.py (libiscsi over TCP).

Rules of this file:
- T1 BOUNDED: execute() returns or raises within timeout_ms plus a small constant (the transport
  says how it keeps that); timeout_ms is TIMEOUT_MS_MIN..TIMEOUT_MS_MAX.
- T2 ANSWERED OR NOT: a ScsiResult means the device answered (any status); TransportError means
  it did not (no connection, no answer in time, a host or driver error). outcome_unknown says
  whether the command may still have reached the device: a fencer must then read back before
  believing anything (a PREEMPT that timed out may have happened).
- T3 ONE LINE: every TransportError message is one line naming the transport and the command.
- T4 ONE AT A TIME: a transport runs one command at a time; a call while another is in flight
  waits at most its own timeout.
"""

from __future__ import annotations

from typing import Protocol

from diskhb.core.record import record

TIMEOUT_MS_MIN = 50
TIMEOUT_MS_MAX = 120_000
DATA_LEN_MAX = 1 << 20  # 1 MiB per command: PR data is at most 8 KiB, test I/O 128 KiB
CDB_LEN_MIN = 6
CDB_LEN_MAX = 16


@record
class ScsiResult:
    """The device answered: its status byte, the data it returned (trimmed to what arrived), and
    the raw sense bytes (empty unless CHECK CONDITION)."""

    status: int
    data_in: bytes
    sense: bytes


class TransportError(Exception):
    """T2: the device did not answer. One line (T3)."""

    def __init__(self, message: str, *, outcome_unknown: bool = False):
        super().__init__(message)
        self.outcome_unknown = outcome_unknown


class TransportTimeout(TransportError):
    """No answer within the command's timeout: the command may have reached the device."""

    def __init__(self, message: str):
        super().__init__(message, outcome_unknown=True)


class TransportUnavailable(TransportError):
    """The transport cannot run here at all (library missing, not a SCSI device)."""


class Transport(Protocol):
    name: str  # for messages: the device path or the iSCSI URL

    def execute(self, cdb: bytes, data_out: bytes | None, data_in_len: int, timeout_ms: int) -> ScsiResult: ...

    def close(self) -> None: ...


def check_request(name: str, cdb: bytes, data_out: bytes | None, data_in_len: int, timeout_ms: int) -> None:
    """What every transport refuses before it touches the device (bugs of the caller)."""
    if not isinstance(cdb, (bytes, bytearray)) or not CDB_LEN_MIN <= len(cdb) <= CDB_LEN_MAX:
        raise ValueError(f"{name}: a CDB is {CDB_LEN_MIN}..{CDB_LEN_MAX} bytes")
    if data_out is not None and not (isinstance(data_out, (bytes, bytearray)) and 0 < len(data_out) <= DATA_LEN_MAX):
        raise ValueError(f"{name}: data out must be 1..{DATA_LEN_MAX} bytes or None")
    if isinstance(data_in_len, bool) or not isinstance(data_in_len, int) or not 0 <= data_in_len <= DATA_LEN_MAX:
        raise ValueError(f"{name}: data in length must be 0..{DATA_LEN_MAX}")
    if data_out is not None and data_in_len:
        raise ValueError(f"{name}: bidirectional commands are not supported")
    check_timeout(name, timeout_ms)


def check_timeout(name: str, timeout_ms: int) -> None:
    if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) \
            or not TIMEOUT_MS_MIN <= timeout_ms <= TIMEOUT_MS_MAX:
        raise ValueError(f"{name}: timeout must be {TIMEOUT_MS_MIN}..{TIMEOUT_MS_MAX} ms")


def opname(cdb: bytes) -> str:
    """A short name for a CDB in messages ('PR OUT 0x04', 'opcode 0x2a')."""
    if len(cdb) >= 2 and cdb[0] in (0x5E, 0x5F):
        return f"PR {'IN' if cdb[0] == 0x5E else 'OUT'} 0x{cdb[1] & 0x1F:02x}"
    return f"opcode 0x{cdb[0]:02x}" if cdb else "empty CDB"
