"""Direct block I/O on shared devices and files, and workers that keep hung I/O off the tick.

Rules of this file:
- Shared sectors are read with O_DIRECT (never from our page cache: another host wrote them)
  and written with O_DIRECT|O_DSYNC (on stable storage before we call a beat written).
- One descriptor per device: O_RDWR|O_DIRECT|O_DSYNC when writable, O_RDONLY|O_DIRECT when not.
  O_DSYNC only affects writes, so reads through the same fd are plain direct reads; pread and
  pwrite carry their own offset, so the read worker and the write worker share the fd without
  a lock; one open means one place where permission/EROFS/EBUSY is reported, and one close.
  A read-only open needs no write permission (status/dump on a device we may not write).
- Buffers are page-aligned anonymous mmaps viewed through numpy; they are allocated once and
  reused every tick (read_into/write_from allocate nothing). Offsets and lengths are whole
  sectors. A buffer belongs to the worker from submit until the caller has polled its result.
- No fcntl/flock locks anywhere: they mean nothing across hosts. (ioctl here only asks sizes.)
- A thread stuck in the kernel on a hung device cannot be cancelled or killed: it stays stuck
  until the device answers (or forever). IoWorker therefore keeps a bounded number of requests
  in flight (default one), refuses new work while they are stuck instead of queueing behind
  them, and never waits for them on close. The caller turns the age of the request in flight
  into "own I/O late" (core.region_health) and carries on with its other regions.
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

from diskhb.errors import OperatorError, Refused
from diskhb.runtime import monotonic_ms

BLKSSZGET = 0x1268  # logical sector size (int)
BLKGETSIZE64 = 0x80081272  # size in bytes (u64)
PAGE_BYTES = mmap.PAGESIZE
DEFAULT_FILE_SECTOR_BYTES = 512  # a region file's sector size until its superblock says otherwise
SECTOR_BYTES_MIN = 512
SECTOR_BYTES_MAX = 64 * 1024
WORKER_CLOSE_WAIT_S = 0.5  # close() waits at most this for idle worker threads to stop
WORKER_IN_FLIGHT_MAX = 16  # a worker never holds more requests than this (threads are per slot)


class AlignedBuffer:
    """A page-aligned buffer (anonymous mmap) seen as a numpy uint8 array.

    O_DIRECT needs the memory aligned too (to the logical sector size, sometimes the DMA
    alignment): a page covers every device we know. `nbytes` is rounded up to whole pages.
    """

    def __init__(self, nbytes: int):
        if nbytes <= 0:
            raise ValueError(f"buffer size must be positive, not {nbytes}")
        self.nbytes = -(-nbytes // PAGE_BYTES) * PAGE_BYTES
        self._mmap = mmap.mmap(-1, self.nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.view = np.frombuffer(self._mmap, dtype=np.uint8)
        self.mem = memoryview(self._mmap)

    @property
    def address(self) -> int:
        """Start address in memory (for alignment assertions)."""
        return self.view.ctypes.data


def _open_error(path: str, e: OSError, writable: bool) -> OperatorError:
    """One line naming the path, what is wrong and the fix."""
    mode = "read-write" if writable else "read-only"
    if e.errno == errno.ENOENT:
        return OperatorError(f"{path}: no such file or device; check the path (is the device attached?)")
    if e.errno in (errno.EACCES, errno.EPERM):
        return OperatorError(f"{path}: permission denied opening it {mode};"
                             " run as root or fix its owner/mode (a udev rule for devices)")
    if e.errno == errno.EISDIR or os.path.isdir(path):  # O_DIRECT on a directory gives EINVAL
        return OperatorError(f"{path}: is a directory; name a block device or a region file")
    if e.errno == errno.ENOTDIR:
        return OperatorError(f"{path}: a component of the path is not a directory; check the path")
    if e.errno in (errno.ENXIO, errno.ENODEV, errno.ENOMEDIUM):
        return OperatorError(f"{path}: no device behind this node ({e.strerror}); check the disk is present")
    if e.errno == errno.EROFS:
        return OperatorError(f"{path}: read-only filesystem or device; make it writable or use another path")
    if e.errno == errno.EBUSY:
        return OperatorError(f"{path}: device is busy (opened exclusively by something else); find the holder")
    return OperatorError(f"{path}: cannot open it {mode} ({e.strerror})")


def _no_direct_error(path: str) -> OperatorError:
    return OperatorError(f"{path}: the filesystem does not support O_DIRECT (tmpfs? ramfs?);"
                         " put the region file on a disk filesystem or use a block device")


def _not_file_error(path: str) -> OperatorError:
    return OperatorError(f"{path}: not a block device or regular file; name a disk or a region file")


def _sysfs_sector_size(st_rdev: int) -> int | None:
    """Logical block size from sysfs, for when BLKSSZGET is refused."""
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


def _valid_sector_size(n: int) -> bool:
    return SECTOR_BYTES_MIN <= n <= SECTOR_BYTES_MAX and n & (n - 1) == 0


class BlockDevice:
    """An open region device or file.

    `sector_size` is the device's logical block size (block device; a caller's value is ignored,
    compare it yourself) or the caller's (file: from the superblock, 512 until known). It may be
    raised later (region code sets the superblock's) but never below a device's logical size.
    `direct` is False only for a file opened with allow_buffered=True on a filesystem without
    O_DIRECT (tests/tools only).
    """

    def __init__(self, path: str, fd: int, sector_size: int, size_bytes: int, is_block_device: bool,
                 *, writable: bool = False, direct: bool = True, logical_sector_size: int | None = None):
        self.path = path
        self.fd = fd
        self.size_bytes = size_bytes
        self.is_block_device = is_block_device
        self.writable = writable
        self.direct = direct
        # the device's own minimum (block devices); a file's alignment needs are not known to us
        self.logical_sector_size = logical_sector_size
        self._sector_size = 0
        self.sector_size = sector_size

    @property
    def sector_size(self) -> int:
        return self._sector_size

    @sector_size.setter
    def sector_size(self, n: int) -> None:
        if not _valid_sector_size(n):
            raise ValueError(f"{self.path}: sector size {n} is not a power of two in"
                             f" {SECTOR_BYTES_MIN}..{SECTOR_BYTES_MAX}")
        if self.logical_sector_size and n % self.logical_sector_size:
            raise ValueError(f"{self.path}: sector size {n} is below the device's"
                             f" {self.logical_sector_size}-byte logical blocks")
        self._sector_size = n

    @classmethod
    def open(cls, path: str, *, writable: bool, sector_size: int | None = None,
             allow_buffered: bool = False, exclusive: bool = False) -> "BlockDevice":
        """Open for direct I/O; every operator mistake is a one-line OperatorError.

        allow_buffered: a regular file whose filesystem refuses O_DIRECT is opened buffered
        (O_DSYNC kept for writes) instead of refused. Only for tests and tools: a shared region
        read through the page cache would show stale peer slots.
        exclusive: a block device is opened O_EXCL, so no mount, swapon or device-mapper table
        can claim it while we hold it (diskhb format); if something already has, Refused. No
        effect on a regular file (O_EXCL without O_CREAT means nothing defined there).
        """
        if sector_size is not None and not _valid_sector_size(sector_size):
            raise OperatorError(f"{path}: sector size {sector_size} is not a power of two in"
                                f" {SECTOR_BYTES_MIN}..{SECTOR_BYTES_MAX}; use 512 or 4096")
        pre = 0
        try:
            pre = os.stat(path).st_mode
            # a FIFO would block open() until a writer came; a socket or tty is no disk either
            if not (stat.S_ISREG(pre) or stat.S_ISBLK(pre) or stat.S_ISDIR(pre)):
                raise _not_file_error(path)
        except OSError:
            pass  # open() below reports it with the right message
        base = os.O_CLOEXEC | ((os.O_RDWR | os.O_DSYNC) if writable else os.O_RDONLY)
        if exclusive and stat.S_ISBLK(pre):
            base |= os.O_EXCL
        direct = True
        try:
            fd = os.open(path, base | os.O_DIRECT)
        except OSError as e:
            if e.errno == errno.EBUSY and base & os.O_EXCL:
                raise Refused(f"{path}: in use: open exclusively by another process (a mount, swap area,"
                              " RAID/LVM/multipath stack or a tool such as mkfs); nothing was written") from None
            if e.errno != errno.EINVAL or os.path.isdir(path):
                raise _open_error(path, e, writable) from None
            # EINVAL at open: is it O_DIRECT (tmpfs before Linux 6.6, ramfs, some FUSE/network
            # filesystems) or something else? Opening without it tells.
            try:
                fd = os.open(path, base)
            except OSError as e2:
                raise _open_error(path, e2, writable) from None
            mode = os.fstat(fd).st_mode
            if not allow_buffered or not stat.S_ISREG(mode):
                os.close(fd)
                if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
                    raise _not_file_error(path) from None  # e.g. a character device
                raise _no_direct_error(path) from None
            direct = False
        try:
            st = os.fstat(fd)
            if stat.S_ISBLK(st.st_mode):
                buf = bytearray(8)
                fcntl.ioctl(fd, BLKGETSIZE64, buf)  # ioctl, not a lock: asks the size
                size = struct.unpack("<Q", buf)[0]
                try:
                    ssz = struct.unpack("<i", fcntl.ioctl(fd, BLKSSZGET, b"\0" * 4))[0]
                except OSError:
                    ssz = _sysfs_sector_size(st.st_rdev) or DEFAULT_FILE_SECTOR_BYTES
                if not _valid_sector_size(ssz):
                    raise OperatorError(f"{path}: the device reports {ssz}-byte logical blocks;"
                                        " diskhb supports 512..65536 (powers of two)")
                return cls(path, fd, ssz, size, True, writable=writable, direct=direct,
                           logical_sector_size=ssz)
            if not stat.S_ISREG(st.st_mode):
                raise _not_file_error(path)
            return cls(path, fd, sector_size or DEFAULT_FILE_SECTOR_BYTES, st.st_size, False,
                       writable=writable, direct=direct)
        except BaseException:
            os.close(fd)
            raise

    def _check(self, buf: AlignedBuffer, offset: int, length: int) -> None:
        s = self.sector_size
        if offset < 0 or length <= 0 or offset % s or length % s:
            raise ValueError(f"{self.path}: unaligned I/O: offset {offset} length {length}"
                             f" (must be positive whole {s}-byte sectors)")
        if length > buf.nbytes:
            raise ValueError(f"{self.path}: I/O of {length} bytes into a {buf.nbytes}-byte buffer")
        if self.fd < 0:
            raise ValueError(f"{self.path}: I/O on a closed device")

    def _einval(self, what: str, offset: int, length: int) -> OSError:
        # Our own checks passed, so the kernel wants a coarser alignment than sector_size:
        # e.g. a 512-byte region file on a filesystem whose disk has 4096-byte logical blocks.
        return OSError(errno.EINVAL, f"{self.path}: O_DIRECT {what} of {length} bytes at {offset}"
                                     f" refused: the device needs an alignment above {self.sector_size} bytes")

    def read_into(self, buf: AlignedBuffer, offset: int, length: int) -> int:
        """Read whole sectors into buf[:length]; a short read is EIO (a region never ends early)."""
        self._check(buf, offset, length)
        try:
            n = os.preadv(self.fd, [buf.mem[:length]], offset)
        except OSError as e:
            if e.errno == errno.EINVAL and self.direct:
                raise self._einval("read", offset, length) from None
            raise
        if n != length:
            raise OSError(errno.EIO, f"{self.path}: short read: {n} of {length} bytes at {offset}")
        return n

    def write_from(self, buf: AlignedBuffer, offset: int, length: int) -> int:
        """Write buf[:length] as whole sectors, durable on return (O_DSYNC); short write is EIO."""
        self._check(buf, offset, length)
        try:
            n = os.pwritev(self.fd, [buf.mem[:length]], offset)
        except OSError as e:
            if e.errno == errno.EINVAL and self.direct:
                raise self._einval("write", offset, length) from None
            raise
        if n != length:
            raise OSError(errno.EIO, f"{self.path}: short write: {n} of {length} bytes at {offset}")
        return n

    def read(self, offset: int, length: int) -> np.ndarray:
        """Convenience for tools and tests: a fresh uint8 array (allocates; the tick uses read_into).

        Each call has its own buffer, deliberately: a shared one would need a lock, and a read
        hung on the device would then block every other read() at that lock, outside any worker.
        """
        buf = AlignedBuffer(max(length, 1))
        self.read_into(buf, offset, length)
        return buf.view[:length]

    def close(self) -> None:
        """Close the fd. Never while a request is in flight on it (the fd number could be reused).

        An error from close (e.g. ENOTCONN from a FUSE disk whose daemon died) is ignored: Linux
        frees the fd anyway, and every write was already durable (O_DSYNC) or already failed.
        """
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> "BlockDevice":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class IoResult:
    tag: Any
    ok: bool
    value: Any
    error: OSError | None
    submitted_ms: int
    completed_ms: int


class IoWorker:
    """Runs I/O callables on its own threads; never queues behind a hung one.

    At most `max_in_flight` requests are held at once, counting from submit until the caller
    has polled the result: until then the request's buffer still belongs to the worker, and the
    bound also bounds the result queue. Each slot has its own thread, so an accepted request
    never waits behind another. Intended use: one worker per (region, kind), reads and writes
    apart, so a hung read never hides a write completion.
    """

    def __init__(self, name: str, max_in_flight: int = 1, *, clock_ms: Callable[[], int] = monotonic_ms,
                 notify: threading.Event | None = None):
        if not 1 <= max_in_flight <= WORKER_IN_FLIGHT_MAX:
            raise ValueError(f"max_in_flight must be in 1..{WORKER_IN_FLIGHT_MAX}, not {max_in_flight}")
        self.name = name
        self.max_in_flight = max_in_flight
        self.clock_ms = clock_ms
        self.notify = notify  # set at every completion (a loop that sleeps until something happens)
        self._lock = threading.Lock()
        self._completed = threading.Condition(self._lock)
        self._requests: queue.SimpleQueue = queue.SimpleQueue()  # bounded by the slot count
        self._results: list[IoResult] = []  # bounded by the slot count; drained by poll
        self._running: dict[int, tuple[Any, int]] = {}  # request id -> (tag, submitted_ms), oldest first
        self._held = 0  # accepted and not yet polled
        self._next_id = 0
        self._closed = False
        self._threads = [threading.Thread(target=self._run, name=f"io:{name}:{i}", daemon=True)
                         for i in range(max_in_flight)]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[[], Any], *, tag: Any, now_ms: int) -> bool:
        """Start fn on a worker thread; False (and nothing done) when no slot is free or closed."""
        with self._lock:
            if self._closed or self._held >= self.max_in_flight:
                return False
            self._held += 1
            rid = self._next_id
            self._next_id += 1
            self._running[rid] = (tag, now_ms)
        self._requests.put((rid, fn, tag, now_ms))
        return True

    def poll(self) -> list[IoResult]:
        """Completed requests since the last poll, in completion order; never blocks."""
        with self._lock:
            out, self._results = self._results, []
            self._held -= len(out)
        return out

    def wait(self, timeout_ms: int) -> list[IoResult]:
        """Block up to timeout_ms for a completion, then poll (for callers that may block: tools
        and command-line paths, never the daemon's loop)."""
        with self._lock:
            self._completed.wait_for(lambda: bool(self._results), max(0, timeout_ms) / 1000)
        return self.poll()

    def in_flight(self) -> tuple[Any, int] | None:
        """(tag, submitted_ms) of the oldest request not yet completed, or None."""
        with self._lock:
            return next(iter(self._running.values()), None)

    def in_flight_count(self) -> int:
        with self._lock:
            return len(self._running)

    def _run(self) -> None:
        while True:
            item = self._requests.get()
            if item is None:
                return
            rid, fn, tag, submitted = item
            try:
                value, err = fn(), None
            except OSError as e:
                value, err = None, e
            except Exception as e:  # noqa: BLE001 - a bug must not kill the worker silently
                # Reported as a failed I/O (the region turns unhealthy, visibly) with the bug
                # chained as the cause, rather than a dead thread that looks like a hung device.
                value, err = None, OSError(errno.EIO, f"internal error in I/O request: {e!r}")
                err.__cause__ = e
            result = IoResult(tag, err is None, value, err, submitted, self.clock_ms())
            with self._lock:
                del self._running[rid]
                self._results.append(result)
                self._completed.notify_all()
            if self.notify is not None:
                self.notify.set()

    def close(self, timeout_s: float = WORKER_CLOSE_WAIT_S) -> bool:
        """Refuse new work and stop the threads; True when all stopped.

        Waits at most timeout_s, and not at all while a request is in flight: a thread stuck in
        the kernel stays stuck (it is a daemon thread; it ends when the device answers). Results
        completed before close can still be polled.
        """
        with self._lock:
            self._closed = True
            stuck = bool(self._running)
        for _ in self._threads:
            self._requests.put(None)
        deadline = time.monotonic() + (0.0 if stuck else timeout_s)
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)


FROZEN_SLACK_MS = 200  # a wait that returns this much later than asked: our process was stopped


def bounded_call(fn: Callable[[], Any], timeout_ms: int, what: str, *, clock_ms: Callable[[], int] = monotonic_ms):
    """Run blocking I/O with a deadline, for command-line paths (a hung device must not hang
    them): an IoWorker of one request. Raises OperatorError when the deadline passes, naming a
    process freeze rather than the device when the wait itself came back late."""
    worker = IoWorker(f"call:{what}", clock_ms=clock_ms)
    start = clock_ms()
    worker.submit(fn, tag=None, now_ms=start)
    try:
        got = worker.wait(timeout_ms)
        if not got:
            late = clock_ms() - start - timeout_ms
            if late > FROZEN_SLACK_MS:
                got = worker.wait(FROZEN_SLACK_MS)  # the I/O thread was stopped with us: let it finish
                if got:
                    return _value(got[0])
                raise OperatorError(f"{what}: I/O did not complete within {timeout_ms / 1000:g} s: this process was"
                                    f" stopped for about {late} ms while it waited, and the I/O has not completed since")
            raise OperatorError(f"{what}: I/O did not complete within {timeout_ms / 1000:g} s (hung device?)")
        return _value(got[0])
    finally:
        worker.close()


def _value(r: IoResult):
    if r.error is not None:
        if r.error.__cause__ is not None and not isinstance(r.error.__cause__, OSError):
            raise r.error.__cause__
        raise r.error
    return r.value
