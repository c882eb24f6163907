"""Where MMP blocks live and how their sectors are read and written.

Rules of this file:
- A SectorStore reads and writes whole sectors at sector-aligned offsets. The real one
  (BlockStore) uses diskhb.regions.disk.blockio: O_DIRECT reads (never our page cache:
  another host wrote the sector) and O_DIRECT|O_DSYNC writes into one page-aligned buffer.
- Every I/O has a deadline. A request that misses it may still be stuck in the kernel and
  still owns the buffer, so the store is then *wedged*: every later call fails at once.
  The guard's time rules (diskhb.mmp.guard, H1/H2) turn that into "lost", never a hang.
- A target is a region (its MMP area: mmp_resources blocks of 1 + slot_count sectors, from
  the superblock) or one block at an explicit offset of any device (made by `mmp init`;
  the block itself records its slot count, sector size and UUID).
"""

from __future__ import annotations

import errno
import os
import threading
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from diskhb.errors import OperatorError
from diskhb.mmp import format as mf
from diskhb.mmp.guard import BlockLocation, TargetInfo
from diskhb.regions.disk.blockio import FROZEN_SLACK_MS, AlignedBuffer, BlockDevice, IoWorker
from diskhb.runtime import monotonic_ms

DEFAULT_IO_TIMEOUT_MS = 10_000
RESOURCE_READ_BYTES_MAX = (1 + mf.SLOT_COUNT_MAX) * 4096  # one resource, largest geometry


class StoreWedged(OSError):
    """An earlier request missed its deadline and may still be in flight."""


class SectorStore(Protocol):
    path: str
    sector_size: int
    size_bytes: int

    def read(self, offset: int, length: int, *, timeout_ms: int | None = None) -> bytes: ...

    def write(self, offset: int, data: bytes, *, timeout_ms: int | None = None) -> None: ...

    def close(self) -> None: ...


def _check_aligned(offset: int, length: int, sector_size: int, size_bytes: int) -> None:
    if offset % sector_size or length % sector_size or length <= 0:
        raise ValueError(f"unaligned I/O: offset {offset} length {length} (sector {sector_size})")
    if offset + length > size_bytes:
        raise OSError(errno.EINVAL, f"I/O beyond the end of the device ({offset + length} > {size_bytes})")


class MemoryStore:
    """A shared in-memory disk for tests and simulations (thread-safe, sector-atomic)."""

    def __init__(self, size_bytes: int, sector_size: int = 512, path: str = "<memory>"):
        self.path = path
        self.sector_size = sector_size
        self.size_bytes = size_bytes
        self.data = bytearray(size_bytes)
        self._lock = threading.Lock()

    def read(self, offset: int, length: int, *, timeout_ms: int | None = None) -> bytes:
        _check_aligned(offset, length, self.sector_size, self.size_bytes)
        with self._lock:
            return bytes(self.data[offset: offset + length])

    def write(self, offset: int, data: bytes, *, timeout_ms: int | None = None) -> None:
        _check_aligned(offset, len(data), self.sector_size, self.size_bytes)
        with self._lock:
            self.data[offset: offset + len(data)] = data

    def close(self) -> None:
        pass


class BlockStore:
    """A device or file through BlockDevice, each request on an IoWorker with a deadline (for
    command-line paths; the daemon's MMP I/O goes through diskhb.mmp.executor instead)."""

    def __init__(self, dev: BlockDevice, *, io_timeout_ms: int = DEFAULT_IO_TIMEOUT_MS,
                 buffer_bytes: int = 1 << 20):
        self.dev = dev
        self.path = dev.path
        self.sector_size = dev.sector_size
        self.size_bytes = dev.size_bytes
        self.io_timeout_ms = io_timeout_ms
        self._buf = AlignedBuffer(buffer_bytes)
        self._worker = IoWorker(f"mmp-io:{dev.path}")
        self._wedged: str | None = None

    @classmethod
    def open(cls, path: str, *, writable: bool, sector_size: int | None = None,
             io_timeout_ms: int = DEFAULT_IO_TIMEOUT_MS) -> "BlockStore":
        dev = BlockDevice.open(path, writable=writable, sector_size=sector_size)
        return cls(dev, io_timeout_ms=io_timeout_ms)

    def _call(self, fn, timeout_ms: int | None, what: str):
        if self._wedged:
            raise StoreWedged(errno.EIO, self._wedged)
        limit = self.io_timeout_ms if timeout_ms is None else max(0, timeout_ms)
        start = monotonic_ms()
        self._worker.submit(fn, tag=None, now_ms=start)
        got = self._worker.wait(limit)
        if not got:
            late = monotonic_ms() - start - limit
            if late > FROZEN_SLACK_MS:  # we were stopped while waiting: the I/O may be done now
                got = self._worker.wait(FROZEN_SLACK_MS)
            if not got:
                why = (f"this process was stopped for about {late} ms while it waited" if late > FROZEN_SLACK_MS
                       else "hung device?")
                self._wedged = f"{self.path}: {what} did not complete within {limit} ms ({why})"
                raise StoreWedged(errno.ETIMEDOUT, self._wedged)
        r = got[0]
        if r.error is not None:
            cause = r.error.__cause__
            raise cause if cause is not None and not isinstance(cause, OSError) else r.error
        return r.value

    def _ensure(self, length: int) -> None:
        if length > self._buf.nbytes:
            if length > RESOURCE_READ_BYTES_MAX:
                raise ValueError(f"I/O of {length} bytes exceeds the MMP limit")
            self._buf = AlignedBuffer(length)

    def read(self, offset: int, length: int, *, timeout_ms: int | None = None) -> bytes:
        _check_aligned(offset, length, self.sector_size, self.size_bytes)
        self._ensure(length)

        def run():
            self.dev.read_into(self._buf, offset, length)
            return self._buf.view[:length].tobytes()

        return self._call(run, timeout_ms, f"read of {length} bytes at {offset}")

    def write(self, offset: int, data: bytes, *, timeout_ms: int | None = None) -> None:
        _check_aligned(offset, len(data), self.sector_size, self.size_bytes)
        self._ensure(len(data))

        def run():
            self._buf.view[: len(data)] = np.frombuffer(data, dtype=np.uint8)
            self.dev.write_from(self._buf, offset, len(data))

        self._call(run, timeout_ms, f"write of {len(data)} bytes at {offset}")

    def close(self) -> None:
        self._worker.close()
        if self._wedged:
            return  # the stuck request still uses the fd and the buffer: leave them to exit
        self.dev.close()


# --------------------------------------------------------------------------------------------
# Locations


@dataclass(frozen=True, slots=True)
class Target:
    """What a command names: a region's MMP area, or one block of a device."""

    path: str
    store: SectorStore
    blocks: tuple[BlockLocation, ...]
    uuid: bytes
    standalone: bool  # True: one explicit block (--device/--offset)

    def close(self) -> None:
        self.store.close()

    @property
    def info(self) -> TargetInfo:
        """What the I/O-free guard needs to know of it."""
        return TargetInfo(self.path, self.blocks, self.standalone)


def read_view(store: SectorStore, loc: BlockLocation, *, timeout_ms: int | None = None) -> mf.ResourceView:
    data = store.read(loc.base, loc.span, timeout_ms=timeout_ms)
    return mf.decode_resource(data, sector_size=loc.sector_size, slot_count=loc.slot_count, uuid=loc.uuid)


def read_seq(store: SectorStore, loc: BlockLocation, *, timeout_ms: int | None = None
             ) -> tuple[mf.SeqBlock | None, str | None]:
    return mf.decode_seq_sector(store.read(loc.base, loc.sector_size, timeout_ms=timeout_ms), loc.uuid)


def io_error(path: str, e: OSError) -> OperatorError:
    if isinstance(e, StoreWedged):
        return OperatorError(str(e))
    name = errno.errorcode.get(e.errno or 0, str(e.errno))
    return OperatorError(f"{path}: I/O error ({name}: {e.strerror or e}); check the device and its paths")


def open_region_target(path: str, *, writable: bool, io_timeout_ms: int = DEFAULT_IO_TIMEOUT_MS) -> Target:
    """A formatted diskhb region's MMP area; one-line OperatorError on any problem."""
    from diskhb.regions.disk.region import open_region

    dev, sb = open_region(path, writable=writable)
    if sb.mmp_resources == 0:
        dev.close()
        raise OperatorError(f"{path}: the region has no MMP blocks (formatted with --mmp-resources 0);"
                            " reformat it with --mmp-resources N")
    store = BlockStore(dev, io_timeout_ms=io_timeout_ms)
    blocks = tuple(
        BlockLocation(label=f"{path} block {k}", base=sb.mmp_resource_pos(k), sector_size=sb.sector_size,
                      slot_count=sb.slot_count, uuid=sb.uuid, index=k)
        for k in range(sb.mmp_resources)
    )
    return Target(path=path, store=store, blocks=blocks, uuid=sb.uuid, standalone=False)


def open_device_target(path: str, offset: int, *, writable: bool,
                       io_timeout_ms: int = DEFAULT_IO_TIMEOUT_MS) -> Target:
    """One block made by `mmp init` at `offset` bytes of any device or file."""
    dev = BlockDevice.open(path, writable=writable, sector_size=512)
    try:
        if offset < 0 or offset % dev.sector_size:
            raise OperatorError(f"{path}: offset {offset} is not a multiple of the sector size")
        store = BlockStore(dev, io_timeout_ms=io_timeout_ms)
    except BaseException:
        dev.close()
        raise
    try:
        if offset + 512 > store.size_bytes:
            raise OperatorError(f"{path}: offset {offset} is beyond the end ({store.size_bytes} bytes)")
        try:
            head = store.read(offset, dev.sector_size)
        except OSError as e:
            raise io_error(path, e) from None
        try:
            seq = mf.decode_seq_block(head)
        except mf.BlockError as e:
            raise OperatorError(f"{path}@{offset}: {e}; create one with 'diskhb mmp init'") from None
        if seq is None:
            raise OperatorError(f"{path}@{offset}: no MMP block here (all zero); create one with"
                                f" 'diskhb mmp init --device {path} --offset {offset} RESOURCE'")
        if seq.sector_size < dev.sector_size or offset % seq.sector_size:
            raise OperatorError(f"{path}@{offset}: the block was made for {seq.sector_size}-byte sectors,"
                                f" which does not fit this device ({dev.sector_size}-byte sectors)")
        store.sector_size = seq.sector_size
        loc = BlockLocation(label=f"{path}@{offset}", base=offset, sector_size=seq.sector_size,
                            slot_count=seq.slot_count, uuid=seq.uuid, index=None)
        if offset + loc.span > store.size_bytes:
            raise OperatorError(f"{path}@{offset}: the block's {seq.slot_count} ballot sectors run past"
                                " the end of the device")
        return Target(path=path, store=store, blocks=(loc,), uuid=seq.uuid, standalone=True)
    except BaseException:
        store.close()
        raise


def init_device_block(path: str, offset: int, *, resource: str, slot_count: int, sector_size: int | None,
                      interval_ms: int, holder_name: str, uuid: bytes, wall_ms: int, force: bool) -> mf.SeqBlock:
    """Lay a CLEAN block and zeroed ballot sectors at `offset`; refuses non-zero bytes unless force."""
    try:
        mf.check_resource_name(resource)
    except mf.BlockError as e:
        raise OperatorError(str(e)) from None
    dev = BlockDevice.open(path, writable=True, sector_size=sector_size or 512)
    store = BlockStore(dev)
    try:
        s = sector_size or (dev.sector_size if dev.is_block_device else 512)
        if s not in mf.SECTOR_SIZES or s < dev.sector_size:
            raise OperatorError(f"{path}: sector size {s} does not fit the device ({dev.sector_size})")
        if offset < 0 or offset % s:
            raise OperatorError(f"{path}: offset {offset} is not a multiple of the sector size {s}")
        if not 1 <= slot_count <= mf.SLOT_COUNT_MAX:
            raise OperatorError(f"--slots {slot_count} not in 1..{mf.SLOT_COUNT_MAX}")
        store.sector_size = s
        span = (1 + slot_count) * s
        if offset + span > store.size_bytes:
            raise OperatorError(f"{path}: {span} bytes at offset {offset} run past the end"
                                f" ({store.size_bytes} bytes); use fewer --slots or another offset")
        try:
            old = store.read(offset, span)
        except OSError as e:
            raise io_error(path, e) from None
        if old != bytes(span) and not force:
            raise OperatorError(f"{path}: the {span} bytes at offset {offset} are not all zero (data or"
                                " an MMP block in use?); nothing was written (use --force to overwrite)")
        block = mf.SeqBlock(seq=mf.SEQ_CLEAN, epoch=0, holder_id=0, holder_generation=0, holder_name="",
                            resource=resource, device=os.path.basename(path)[:mf.DEVICE_NAME_BYTES_MAX],
                            interval_ms=interval_ms, wall_ms=wall_ms, uuid=uuid, slot_count=slot_count,
                            sector_size=s)
        data = mf.encode_seq_block(block) + bytes(span - s)
        try:
            store.write(offset, data)
            back = store.read(offset, span)
        except OSError as e:
            raise io_error(path, e) from None
        if back != data:
            raise OperatorError(f"{path}: the block read back differs from what was written; check the device")
        return block
    finally:
        store.close()

