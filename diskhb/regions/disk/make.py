"""`diskhb format`: lay a v1 region onto a device or file, refusing to destroy anything by accident.

Rules of this file:
- Look before writing: an existing filesystem, partition table, LVM/RAID/LUKS label or diskhb
  region is reported and left alone unless --force.
- Never write over a device this host uses (mounted, swap, held by device-mapper/MD, open
  O_EXCL), not even with --force: mkfs refuses that too. The format itself holds the device
  O_EXCL from the look to the last write, so nothing can mount it in between.
- Even with --force, never format a diskhb region that nodes are beating in: sample it for the
  dead time first (reformatting under a live cluster would make every node's slot a lie).
- Write order: zero every area, then the superblock last, then read it back and compare.
  A format interrupted half-way leaves no valid superblock, so no daemon will use it.
"""

from __future__ import annotations

import os
import stat
import time
import uuid as uuidlib

import numpy as np

from diskhb.errors import OperatorError, Refused
from diskhb.regions.disk import format as fmt
from diskhb.regions.disk.blockio import AlignedBuffer, BlockDevice
from diskhb.regions.disk.inuse import why_in_use
from diskhb.regions.disk.region import bounded_call, io_error
from diskhb.regions.disk.signatures import describe, find_signatures
from diskhb.runtime import monotonic_ms

ZERO_CHUNK_BYTES = 1 << 20
SIGNATURE_READ_BYTES_MAX = 1 << 20  # signatures live near the start (and a few near the end)
IO_TIMEOUT_MS = 30_000
SCAN_TIMEOUT_MS = 30_000  # a whole signature scan (2..16 reads of at most 1 MiB) takes at most this


def make_region(path: str, *, cluster: str, slots: int, sector_size: int | None, interval_ms: int,
                dead_ms: int, io_timeout_ms: int | None, mmp_resources: int, force: bool,
                watchdog_ms: int = 0) -> fmt.Superblock:
    created = False
    try:
        os.stat(path)
        missing = False
    except FileNotFoundError:
        missing = True
    except PermissionError:
        raise OperatorError(f"{path}: permission denied; run as root or fix the permissions") from None
    if missing:
        parent = os.path.dirname(os.path.abspath(path))
        if not os.access(parent, os.X_OK) and os.path.isdir(parent):
            raise OperatorError(f"{path}: permission denied on {parent}; run as root or fix the permissions")
        if not os.path.isdir(parent):
            raise OperatorError(f"{path}: directory {parent} does not exist")
        if path.startswith("/dev/"):
            raise OperatorError(f"{path}: no such device; check the path (ls -l /dev/disk/by-id/)")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
        except OSError as e:
            raise OperatorError(f"{path}: cannot create the region file ({e.strerror})") from None
        created = True
    try:
        return _make(path, created, cluster=cluster, slots=slots, sector_size=sector_size,
                     interval_ms=interval_ms, dead_ms=dead_ms, io_timeout_ms=io_timeout_ms,
                     mmp_resources=mmp_resources, force=force, watchdog_ms=watchdog_ms)
    except BaseException:
        if created:
            os.unlink(path)
        raise


def _make(path, created, *, cluster, slots, sector_size, interval_ms, dead_ms, io_timeout_ms,
          mmp_resources, force, watchdog_ms) -> fmt.Superblock:
    if not created:
        _refuse_if_in_use(path)
    # O_EXCL (block devices): a mount or swapon that starts after the check above fails with EBUSY
    # until we have written the superblock and closed; one that won the race makes this open fail.
    dev = BlockDevice.open(path, writable=True, sector_size=sector_size or 512, exclusive=True)
    try:
        if dev.is_block_device:
            if sector_size is None:
                sector_size = dev.sector_size if dev.sector_size in fmt.SECTOR_SIZES else 4096
            elif sector_size < dev.sector_size:
                raise OperatorError(f"{path}: the device has {dev.sector_size}-byte sectors;"
                                    f" use --sector-size {dev.sector_size}")
        sector_size = sector_size or 512
        try:
            sb = fmt.new_superblock(
                cluster=cluster, sector_size=sector_size, slot_count=slots, mmp_resources=mmp_resources,
                interval_ms=interval_ms, dead_ms=dead_ms, io_timeout_ms=io_timeout_ms,
                region_uuid=uuidlib.uuid4().bytes, created_wall_ms=time.time_ns() // 1_000_000,
                watchdog_ms=watchdog_ms,
            )
        except fmt.FormatError as e:
            raise OperatorError(f"{path}: {e}") from None
        size = dev.size_bytes
        is_file = stat.S_ISREG(os.fstat(dev.fd).st_mode)
        if not created and size > 0:
            _look_before_writing(dev, path, size, force)
        if size < sb.region_bytes:
            if is_file and (created or size == 0):
                os.ftruncate(dev.fd, sb.region_bytes)
                size = sb.region_bytes
                dev.size_bytes = size
            else:
                raise OperatorError(
                    f"{path}: region too small: {slots} slots of {sector_size} bytes need"
                    f" {sb.region_bytes} bytes, {path} has {size}; use fewer --slots or a larger device"
                )
        _write(dev, sb, path)
        return sb
    finally:
        dev.close()


def _refuse_if_in_use(path: str) -> None:
    reason = why_in_use(path)
    if reason:
        raise Refused(f"{path}: in use: {reason}; nothing was written (not even --force writes over a device"
                      " in use)")


def foreign_data(dev: BlockDevice, timeout_ms: int) -> str | None:
    """What a device without a valid diskhb superblock holds instead, e.g. "ext4 filesystem label
    'data' (UUID ...)"; None when blank or unknown (or only a damaged diskhb superblock is there).

    For open_region, so `status`/`run` on the wrong device name what is there. The whole scan
    gets timeout_ms, not each of its reads: a slow device must not multiply the wait.
    """
    size = dev.size_bytes
    if size <= 0:
        return None
    sigs = find_signatures(_read_at_fn(dev, size, monotonic_ms() + timeout_ms), size)
    foreign = [s.description for s in sigs if s.kind != "diskhb"]
    return ", ".join(foreign) if foreign else None


def _read_at_fn(dev: BlockDevice, size: int, deadline_ms: int):
    """read_at(offset, length) for the signature scanner over aligned O_DIRECT reads.

    Every read is bounded by what is left until deadline_ms (monotonic), so the scan is too.
    """
    s = dev.sector_size
    buf = AlignedBuffer(SIGNATURE_READ_BYTES_MAX + 2 * s)

    def read_at(offset: int, length: int) -> bytes:
        if offset < 0 or length <= 0 or offset >= size:
            return b""
        length = min(length, size - offset, SIGNATURE_READ_BYTES_MAX)
        start = offset - offset % s
        end = min(-(-(offset + length) // s) * s, size - size % s)
        if end <= start:
            return b""
        left_ms = deadline_ms - monotonic_ms()
        if left_ms <= 0:
            raise OperatorError(f"{dev.path}: reading the device's first and last MiB took longer than allowed"
                                " (hung or very slow device?)")
        try:
            bounded_call(lambda: dev.read_into(buf, start, end - start), left_ms, dev.path)
        except OSError as e:
            raise io_error(dev.path, e) from None
        return buf.view[offset - start: offset - start + length].tobytes()

    return read_at


def _look_before_writing(dev: BlockDevice, path: str, size: int, force: bool) -> None:
    sigs = find_signatures(_read_at_fn(dev, size, monotonic_ms() + SCAN_TIMEOUT_MS), size)
    if not sigs:
        return
    if not force:
        raise Refused(f"{path}: {describe(sigs)}; nothing was written (use --force to overwrite)")
    if any(s.kind == "diskhb" or s.description.startswith("diskhb") for s in sigs):
        _refuse_if_live(path)


def _refuse_if_live(path: str) -> None:
    from diskhb.status import sample_region  # late: status imports this package's region code

    try:
        view = sample_region(path)
    except OperatorError:
        return  # not a readable region after all: nothing is beating in it
    beating = [n for n in view["nodes"] if n["state"] == "alive"]
    if beating:
        names = ", ".join(f"{n['name']} (id {n['id']})" for n in beating)
        raise Refused(f"{path}: nodes are beating in this region: {names}; stop their daemons before"
                      " reformatting (not even --force formats a live region)")


def _write(dev: BlockDevice, sb: fmt.Superblock, path: str) -> None:
    s = sb.sector_size
    zeros = AlignedBuffer(ZERO_CHUNK_BYTES)
    zeros.view[:] = 0
    try:
        # The superblock sector first becomes zero, so a half-done format is plainly unformatted.
        for pos in range(0, sb.region_bytes, ZERO_CHUNK_BYTES):
            n = min(ZERO_CHUNK_BYTES, sb.region_bytes - pos)
            bounded_call(lambda: dev.write_from(zeros, pos, n), IO_TIMEOUT_MS, path)
        data = fmt.encode_superblock(sb)
        buf = AlignedBuffer(s)
        buf.view[:s] = np.frombuffer(data, dtype=np.uint8)
        bounded_call(lambda: dev.write_from(buf, 0, s), IO_TIMEOUT_MS, path)
        check = AlignedBuffer(s)
        bounded_call(lambda: dev.read_into(check, 0, s), IO_TIMEOUT_MS, path)
    except OSError as e:
        raise io_error(path, e) from None
    if check.view[:s].tobytes() != data or fmt.decode_superblock(check.view[:s].tobytes()) != sb:
        raise OperatorError(f"{path}: the superblock read back differs from what was written; check the device")
