"""SG_IO transport: raw CDBs to a local SCSI device (/dev/sgN, or a SCSI disk's block device).

The ioctl takes a struct sg_io_hdr (include/scsi/sg.h), built here with ctypes; cdb.py's bytes go
out unchanged, so what the iSCSI tests prove about the commands holds here too.

Rules of this file:
- G1 BOUNDED (transport T1): the kernel aborts a command after sg_io_hdr.timeout ms, but its error
  handling (aborts, resets) may hold the ioctl much longer, uninterruptibly. So the ioctl runs on
  a worker thread and the caller waits timeout_ms + KERNEL_GRACE_MS at most; a call past that is
  a TransportTimeout and the transport is *wedged*: every later call fails at once until the
  stuck ioctl returns (at most one stuck thread per transport, never a pile).
- G2 NOT SCSI: a device that is not SCSI (a loop, NVMe or virtio-blk disk, a file) answers SG_IO
  with ENOTTY or EINVAL: TransportUnavailable, one line.
- G3 ANSWERED: host_status (the HBA/transport: DID_*) or a driver_status other than DRIVER_SENSE
  means the device did not answer (TransportError, outcome unknown); otherwise the status byte,
  the data actually moved (dxfer_len - resid) and the sense the kernel wrote (sb_len_wr) are
  the answer.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import threading

from diskhb.fencing.scsi.transport import ScsiResult, TransportError, TransportTimeout, TransportUnavailable, \
    check_request, opname

SG_IO = 0x2285  # include/scsi/sg.h
SG_INTERFACE_ID = ord("S")
SG_DXFER_NONE, SG_DXFER_TO_DEV, SG_DXFER_FROM_DEV = -1, -2, -3
SENSE_BUF_LEN = 252  # SPC-4's largest sense
KERNEL_GRACE_MS = 2_000  # G1: what we allow the kernel's abort beyond the command's timeout
DRIVER_SENSE = 0x08
DRIVER_TIMEOUT = 0x06
_HOST_NAMES = {0x01: "DID_NO_CONNECT", 0x02: "DID_BUS_BUSY", 0x03: "DID_TIME_OUT", 0x04: "DID_BAD_TARGET",
               0x05: "DID_ABORT", 0x06: "DID_PARITY", 0x07: "DID_ERROR", 0x08: "DID_RESET", 0x09: "DID_BAD_INTR",
               0x0B: "DID_IMM_RETRY", 0x0C: "DID_REQUEUE", 0x0D: "DID_TRANSPORT_DISRUPTED",
               0x0E: "DID_TRANSPORT_FAILFAST", 0x0F: "DID_TARGET_FAILURE", 0x10: "DID_NEXUS_FAILURE",
               0x11: "DID_ALLOC_FAILURE", 0x12: "DID_MEDIUM_ERROR", 0x13: "DID_TRANSPORT_MARGINAL"}


class SgIoHdr(ctypes.Structure):
    """struct sg_io_hdr (include/scsi/sg.h), 88 bytes on 64-bit Linux."""

    _fields_ = [("interface_id", ctypes.c_int), ("dxfer_direction", ctypes.c_int), ("cmd_len", ctypes.c_ubyte),
                ("mx_sb_len", ctypes.c_ubyte), ("iovec_count", ctypes.c_ushort), ("dxfer_len", ctypes.c_uint),
                ("dxferp", ctypes.c_void_p), ("cmdp", ctypes.c_void_p), ("sbp", ctypes.c_void_p),
                ("timeout", ctypes.c_uint), ("flags", ctypes.c_uint), ("pack_id", ctypes.c_int),
                ("usr_ptr", ctypes.c_void_p), ("status", ctypes.c_ubyte), ("masked_status", ctypes.c_ubyte),
                ("msg_status", ctypes.c_ubyte), ("sb_len_wr", ctypes.c_ubyte), ("host_status", ctypes.c_ushort),
                ("driver_status", ctypes.c_ushort), ("resid", ctypes.c_int), ("duration", ctypes.c_uint),
                ("info", ctypes.c_uint)]


class Request:
    """One command's header and the buffers it points into (kept alive together)."""

    def __init__(self, cdb: bytes, data_out: bytes | None, data_in_len: int, timeout_ms: int):
        self.cdb = ctypes.create_string_buffer(bytes(cdb), len(cdb))
        self.sense = ctypes.create_string_buffer(SENSE_BUF_LEN)
        if data_out is not None:
            self.data = ctypes.create_string_buffer(bytes(data_out), len(data_out))
            direction, length = SG_DXFER_TO_DEV, len(data_out)
        elif data_in_len:
            self.data = ctypes.create_string_buffer(data_in_len)
            direction, length = SG_DXFER_FROM_DEV, data_in_len
        else:
            self.data, direction, length = None, SG_DXFER_NONE, 0
        self.data_in_len = data_in_len
        h = self.hdr = SgIoHdr()
        h.interface_id, h.dxfer_direction = SG_INTERFACE_ID, direction
        h.cmd_len, h.mx_sb_len = len(cdb), SENSE_BUF_LEN
        h.dxfer_len, h.dxferp = length, ctypes.addressof(self.data) if self.data is not None else None
        h.cmdp, h.sbp = ctypes.addressof(self.cdb), ctypes.addressof(self.sense)
        h.timeout = timeout_ms

    def result(self, what: str) -> ScsiResult:
        """G3: the device's answer, or TransportError when the host or driver reports none."""
        h = self.hdr
        if h.host_status:
            name = _HOST_NAMES.get(h.host_status, f"host status 0x{h.host_status:02x}")
            raise TransportError(f"{what}: no answer from the device: {name}", outcome_unknown=True)
        driver = h.driver_status & 0x0F
        if driver == DRIVER_TIMEOUT:
            raise TransportTimeout(f"{what}: the kernel timed the command out")
        if driver not in (0, DRIVER_SENSE):
            raise TransportError(f"{what}: no answer from the device: driver status 0x{h.driver_status:02x}",
                                 outcome_unknown=True)
        got = max(0, min(self.data_in_len, self.data_in_len - h.resid)) if self.data_in_len else 0
        data = self.data.raw[:got] if got else b""
        sense = self.sense.raw[:min(h.sb_len_wr, SENSE_BUF_LEN)]
        return ScsiResult(h.status, data, sense)


def _strerror(e: OSError) -> str:
    return os.strerror(e.errno) if e.errno else str(e).replace("\n", " ")


class SgIoTransport:
    """One local device. Opened at the first command; one command at a time (transport T4)."""

    def __init__(self, path: str):
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"SG_IO needs an absolute device path, got {path!r}")
        self.name = path
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._stuck: threading.Thread | None = None  # G1: an ioctl past its deadline

    def _open(self) -> int:
        if self._fd is None:
            # O_NONBLOCK: an sg open must not wait for exclusive access; O_RDWR: PR OUT needs it
            self._fd = os.open(self.name, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        return self._fd

    def execute(self, cdb: bytes, data_out: bytes | None, data_in_len: int, timeout_ms: int) -> ScsiResult:
        check_request(self.name, cdb, data_out, data_in_len, timeout_ms)
        what = f"{self.name}: {opname(cdb)}"
        if not self._lock.acquire(timeout=timeout_ms / 1000):
            raise TransportTimeout(f"{what}: transport busy with another command for {timeout_ms} ms")
        try:
            if self._stuck is not None:
                if self._stuck.is_alive():
                    raise TransportError(f"{what}: refused: an earlier SG_IO is still stuck in the kernel")
                self._stuck = None
            req = Request(cdb, data_out, data_in_len, timeout_ms)
            box: dict = {}

            def run() -> None:
                try:
                    fd = self._open()
                except OSError as e:
                    box["open"] = e
                    return
                try:
                    fcntl.ioctl(fd, SG_IO, req.hdr)
                except OSError as e:
                    box["ioctl"] = e

            worker = threading.Thread(target=run, name="diskhb-sg-io", daemon=True)
            worker.start()
            worker.join((timeout_ms + KERNEL_GRACE_MS) / 1000)
            if worker.is_alive():
                self._stuck = worker
                raise TransportTimeout(f"{what}: SG_IO did not return within {timeout_ms + KERNEL_GRACE_MS} ms")
            if "open" in box:
                raise TransportError(f"{what}: cannot open: {_strerror(box['open'])}")
            err = box.get("ioctl")
            if err is not None:
                self._close_fd()
                if err.errno in (errno.ENOTTY, errno.EINVAL):
                    raise TransportUnavailable(f"{what}: not a SCSI device (SG_IO: {_strerror(err)})")
                raise TransportError(f"{what}: SG_IO failed: {_strerror(err)}", outcome_unknown=True)
            return req.result(what)
        finally:
            self._lock.release()

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def close(self) -> None:
        with self._lock:
            if self._stuck is None or not self._stuck.is_alive():
                self._close_fd()  # a stuck ioctl keeps its fd: closing it under the kernel is no help

    def __enter__(self) -> "SgIoTransport":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
