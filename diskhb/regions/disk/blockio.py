"""Direct block I/O on shared devices and files, and workers that keep hung I/O off the tick.

Rules of this file:
- Shared sectors are read with O_DIRECT (never from our page cache: another host wrote them)
  and written with O_DIRECT|O_DSYNC (on stable storage before we call a beat written).
  One O_RDWR|O_DIRECT|O_DSYNC descriptor serves both: O_DSYNC only affects writes.
- Buffers are page-aligned anonymous mmaps viewed through numpy; they are allocated once and
  reused every tick. Offsets and lengths are whole sectors.
- No fcntl/flock locks anywhere: they mean nothing across hosts.
- A thread stuck in the kernel on a hung device cannot be cancelled. IoWorker therefore keeps
  at most one request in flight and refuses new work while it is stuck; the caller reports the
  region unhealthy (core.region_health) and carries on with its other regions.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import queue
import stat
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from diskhb.errors import OperatorError

BLKSSZGET = 0x1268  # logical sector size (int)
BLKGETSIZE64 = 0x80081272  # size in bytes (u64)
PAGE_BYTES = mmap.PAGESIZE
WORKER_CLOSE_WAIT_S = 0.5


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class AlignedBuffer:
    """A page-aligned buffer (anonymous mmap) seen as a numpy uint8 array."""

    def __init__(self, nbytes: int):
        assert nbytes > 0
        self.nbytes = -(-nbytes // PAGE_BYTES) * PAGE_BYTES
        self._mmap = mmap.mmap(-1, self.nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.view = np.frombuffer(self._mmap, dtype=np.uint8)
        self.mem = memoryview(self._mmap)


def _open_error(path: str, e: OSError, writable: bool) -> OperatorError:
    if e.errno == errno.ENOENT:
        return OperatorError(f"{path}: no such file or device; check the path")
    if e.errno in (errno.EACCES, errno.EPERM):
        mode = "read-write" if writable else "read"
        return OperatorError(f"{path}: permission denied opening it {mode}; run as root or fix its permissions")
    if e.errno == errno.EISDIR or os.path.isdir(path):  # O_DIRECT on a directory gives EINVAL
        return OperatorError(f"{path}: is a directory; name a block device or a region file")
    if e.errno == errno.EINVAL:
        return OperatorError(f"{path}: the filesystem does not support O_DIRECT (tmpfs?);"
                             " put the region file on a disk filesystem or use a block device")
    if e.errno == errno.EROFS:
        return OperatorError(f"{path}: read-only filesystem or device")
    if e.errno == errno.EBUSY:
        return OperatorError(f"{path}: device is busy (opened exclusively by something else)")
    return OperatorError(f"{path}: cannot open ({e.strerror})")


def _sysfs_sector_size(st_rdev: int) -> int | None:
    major, minor = os.major(st_rdev), os.minor(st_rdev)
    try:
        real = os.path.realpath(f"/sys/dev/block/{major}:{minor}")
        # a partition's queue/ lives in its parent disk's directory
        for base in (real, os.path.dirname(real)):
            p = os.path.join(base, "queue", "logical_block_size")
            if os.path.exists(p):
                with open(p) as f:
                    return int(f.read().strip())
    except (OSError, ValueError):
        pass
    return None


class BlockDevice:
    """An open region device or file. `sector_size` is the device's (block device) or the
    caller's (file: from the superblock, 512 until known)."""

    def __init__(self, path: str, fd: int, sector_size: int, size_bytes: int, is_block_device: bool):
        self.path = path
        self.fd = fd
        self.sector_size = sector_size
        self.size_bytes = size_bytes
        self.is_block_device = is_block_device

    @classmethod
    def open(cls, path: str, *, writable: bool, sector_size: int | None = None) -> "BlockDevice":
        flags = os.O_DIRECT | os.O_CLOEXEC
        flags |= (os.O_RDWR | os.O_DSYNC) if writable else os.O_RDONLY
        try:
            fd = os.open(path, flags)
        except OSError as e:
            raise _open_error(path, e, writable) from None
        try:
            st = os.fstat(fd)
            if stat.S_ISBLK(st.st_mode):
                buf = bytearray(8)
                fcntl.ioctl(fd, BLKGETSIZE64, buf)  # ioctl, not a lock: asks the size
                size = struct.unpack("<Q", buf)[0]
                try:
                    ssz = struct.unpack("<i", fcntl.ioctl(fd, BLKSSZGET, b"\0" * 4))[0]
                except OSError:
                    ssz = _sysfs_sector_size(st.st_rdev) or 512
                return cls(path, fd, ssz, size, True)
            if not stat.S_ISREG(st.st_mode):
                raise OperatorError(f"{path}: not a block device or regular file")
            return cls(path, fd, sector_size or 512, st.st_size, False)
        except BaseException:
            os.close(fd)
            raise

    def _check(self, buf: AlignedBuffer, offset: int, length: int) -> None:
        s = self.sector_size
        if offset % s or length % s or length <= 0:
            raise ValueError(f"unaligned I/O: offset {offset} length {length} (sector {s})")
        if length > buf.nbytes:
            raise ValueError(f"I/O of {length} bytes into a {buf.nbytes}-byte buffer")

    def read_into(self, buf: AlignedBuffer, offset: int, length: int) -> int:
        self._check(buf, offset, length)
        n = os.preadv(self.fd, [buf.mem[:length]], offset)
        if n != length:
            raise OSError(errno.EIO, f"short read: {n} of {length} bytes at {offset}")
        return n

    def write_from(self, buf: AlignedBuffer, offset: int, length: int) -> int:
        self._check(buf, offset, length)
        n = os.pwritev(self.fd, [buf.mem[:length]], offset)
        if n != length:
            raise OSError(errno.EIO, f"short write: {n} of {length} bytes at {offset}")
        return n

    def close(self) -> None:
        if self.fd >= 0:
            try:
                os.close(self.fd)
            finally:
                self.fd = -1


@dataclass(frozen=True, slots=True)
class IoResult:
    tag: Any
    ok: bool
    value: Any
    error: OSError | None
    submitted_ms: int
    completed_ms: int


class IoWorker:
    """Runs one I/O callable at a time on its own thread; never queues behind a hung one."""

    def __init__(self, name: str, *, clock_ms: Callable[[], int] = monotonic_ms):
        self.name = name
        self.clock_ms = clock_ms
        self._requests: queue.Queue = queue.Queue(maxsize=1)
        self._results: queue.Queue = queue.Queue(maxsize=2)  # one result + slack; drained by poll
        self._busy: tuple[Any, int] | None = None  # (tag, submitted_ms) while in flight
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"io:{name}", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any], *, tag: Any, now_ms: int) -> bool:
        with self._lock:
            if self._busy is not None or self._closed or not self._results.empty():
                return False
            self._busy = (tag, now_ms)
        self._requests.put_nowait((fn, tag, now_ms))
        return True

    def poll(self) -> list[IoResult]:
        out = []
        while True:
            try:
                out.append(self._results.get_nowait())
            except queue.Empty:
                return out

    def in_flight(self) -> tuple[Any, int] | None:
        return self._busy

    def _run(self) -> None:
        while True:
            item = self._requests.get()
            if item is None:
                return
            fn, tag, submitted = item
            try:
                value, err = fn(), None
            except OSError as e:
                value, err = None, e
            except Exception as e:  # noqa: BLE001 - a bug must not kill the worker silently
                value, err = None, OSError(errno.EIO, f"internal error in I/O request: {e!r}")
            result = IoResult(tag, err is None, value, err, submitted, self.clock_ms())
            with self._lock:
                self._busy = None
                self._results.put_nowait(result)

    def close(self) -> None:
        """Stop the thread; waits briefly, never for a hung request (that thread stays stuck)."""
        with self._lock:
            self._closed = True
        try:
            self._requests.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(WORKER_CLOSE_WAIT_S if self._busy is None else 0.0)
