"""Block I/O layer: aligned buffers, direct I/O on files and loop devices, operator errors, and
IoWorker (busy refusal, latency, a hung request never stalls the caller).

Files live on a disk filesystem (disk_tmp_path), never tmpfs. Every wait is bounded; every
thread a test blocks is released in `finally`.
"""

from __future__ import annotations

import errno
import os
import select
import shutil
import subprocess
import threading
import time

import numpy as np
import pytest

from diskhb.errors import OperatorError
from diskhb.regions.disk import blockio
from diskhb.regions.disk.blockio import PAGE_BYTES, AlignedBuffer, BlockDevice, IoResult, IoWorker

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts, loop devices, seteuid)")
WAIT_S = 5.0


def wait_results(worker: IoWorker, n: int = 1, timeout_s: float = WAIT_S) -> list[IoResult]:
    out: list[IoResult] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n:
        out += worker.poll()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{worker.name}: {len(out)} of {n} results after {timeout_s} s")
        time.sleep(0.001)
    return out


def make_file(dirpath: str, size: int, name: str = "region.img", fill: int = 0) -> str:
    path = os.path.join(dirpath, name)
    with open(path, "wb") as f:
        f.write(bytes([fill]) * size)
    return path


# -- AlignedBuffer ---------------------------------------------------------------------------


@pytest.mark.parametrize("asked, pages", [(1, 1), (512, 1), (PAGE_BYTES, 1), (PAGE_BYTES + 1, 2), (10 * PAGE_BYTES, 10)])
def test_aligned_buffer_is_page_aligned_and_rounded_up(asked, pages):
    b = AlignedBuffer(asked)
    assert b.nbytes == pages * PAGE_BYTES
    assert b.address % PAGE_BYTES == 0
    assert b.view.dtype == np.uint8 and b.view.shape == (b.nbytes,)
    assert len(b.mem) == b.nbytes
    b.view[:] = 0xAB  # the numpy view and the memoryview are the same memory
    assert b.mem[b.nbytes - 1] == 0xAB


def test_aligned_buffer_refuses_empty():
    with pytest.raises(ValueError):
        AlignedBuffer(0)


def test_blockio_takes_no_locks():
    # fcntl is used for ioctl only: flock/lockf/F_SETLK mean nothing across hosts
    src = open(blockio.__file__).read()
    for forbidden in ("flock(", "lockf(", "F_SETLK", "F_OFD"):
        assert forbidden not in src


# -- regular files ---------------------------------------------------------------------------


def test_round_trip_on_a_regular_file(disk_tmp_path):
    path = make_file(disk_tmp_path, 64 * 1024)
    with BlockDevice.open(path, writable=True) as dev:
        assert (dev.path, dev.sector_size, dev.size_bytes) == (path, 512, 64 * 1024)
        assert not dev.is_block_device and dev.direct and dev.writable
        flags = int(open(f"/proc/self/fdinfo/{dev.fd}").read().split("flags:")[1].split()[0], 8)
        assert flags & os.O_DIRECT and flags & os.O_DSYNC and flags & os.O_ACCMODE == os.O_RDWR
        w = AlignedBuffer(8 * 512)
        w.view[:] = np.arange(w.nbytes, dtype=np.uint64).astype(np.uint8)
        assert dev.write_from(w, 3 * 512, 8 * 512) == 8 * 512
        r = AlignedBuffer(8 * 512)
        assert dev.read_into(r, 3 * 512, 8 * 512) == 8 * 512
        assert np.array_equal(r.view[: 8 * 512], w.view[: 8 * 512])
        got = dev.read(3 * 512, 1024)  # the allocating convenience returns its own copy
        assert got.dtype == np.uint8 and np.array_equal(got, w.view[:1024])
        got[:] = 0
        assert np.array_equal(dev.read(3 * 512, 1024), w.view[:1024])
    with open(path, "rb") as f:  # really on the file, where expected, nothing else touched
        data = f.read()
    assert data[3 * 512: 11 * 512] == w.view[: 8 * 512].tobytes()
    assert data[: 3 * 512] == bytes(3 * 512) and data[11 * 512:] == bytes(len(data) - 11 * 512)
    assert dev.fd == -1


def test_read_only_open_reads_but_cannot_write(disk_tmp_path):
    path = make_file(disk_tmp_path, 8192, fill=7)
    with BlockDevice.open(path, writable=False) as dev:
        assert dev.read(512, 512).tolist() == [7] * 512
        with pytest.raises(OSError) as e:
            dev.write_from(AlignedBuffer(512), 0, 512)
        assert e.value.errno == errno.EBADF


def test_file_sector_size_comes_from_the_caller(disk_tmp_path):
    path = make_file(disk_tmp_path, 64 * 1024)
    with BlockDevice.open(path, writable=True, sector_size=4096) as dev:
        assert dev.sector_size == 4096
        buf = AlignedBuffer(8192)
        dev.read_into(buf, 4096, 8192)
        with pytest.raises(ValueError):
            dev.read_into(buf, 512, 4096)  # whole 512-byte sectors, but not whole 4096-byte ones
        dev.sector_size = 512  # a file has no device minimum: region code may set the superblock's
        dev.read_into(buf, 512, 512)
    with pytest.raises(OperatorError, match="sector size 1000"):
        BlockDevice.open(path, writable=False, sector_size=1000)


@pytest.mark.parametrize("offset, length", [(100, 512), (512, 100), (0, 0), (-512, 512), (0, 8192)])
def test_unaligned_or_oversized_io_is_refused_before_the_kernel(disk_tmp_path, offset, length):
    path = make_file(disk_tmp_path, 64 * 1024)
    with BlockDevice.open(path, writable=True) as dev:
        buf = AlignedBuffer(4096)
        buf.view[:] = 1
        with pytest.raises(ValueError):
            dev.write_from(buf, offset, length)
        with pytest.raises(ValueError):
            dev.read_into(buf, offset, length)
    assert open(path, "rb").read() == bytes(64 * 1024)  # nothing was written


def test_short_read_past_the_end_is_eio(disk_tmp_path):
    path = make_file(disk_tmp_path, 4096)
    with BlockDevice.open(path, writable=False) as dev:
        buf = AlignedBuffer(8192)
        for offset, length in [(3584, 1024), (4096, 512)]:
            with pytest.raises(OSError) as e:
                dev.read_into(buf, offset, length)
            assert e.value.errno == errno.EIO and "short read" in str(e.value)


def test_io_after_close_is_refused(disk_tmp_path):
    dev = BlockDevice.open(make_file(disk_tmp_path, 4096), writable=False)
    dev.close()
    dev.close()  # twice is harmless
    with pytest.raises(ValueError, match="closed"):
        dev.read(0, 512)


# -- operator errors: one line, naming the path and the fix -----------------------------------


def one_line(e: BaseException) -> str:
    msg = str(e)
    assert "\n" not in msg
    return msg


def test_missing_path(disk_tmp_path):
    path = os.path.join(disk_tmp_path, "nope.img")
    for writable in (False, True):
        with pytest.raises(OperatorError) as e:
            BlockDevice.open(path, writable=writable)
        assert one_line(e.value).startswith(path + ": no such file") and "check the path" in str(e.value)


def test_directory(disk_tmp_path):
    for writable in (False, True):  # O_DIRECT on a directory says EINVAL, O_RDWR says EISDIR
        with pytest.raises(OperatorError) as e:
            BlockDevice.open(disk_tmp_path, writable=writable)
        assert one_line(e.value) == f"{disk_tmp_path}: is a directory; name a block device or a region file"


def test_not_a_file_or_device(disk_tmp_path):
    fifo = os.path.join(disk_tmp_path, "fifo")
    os.mkfifo(fifo)
    for path in ("/dev/null", fifo):  # a FIFO must not block the open waiting for a writer
        for writable in (False, True):
            with pytest.raises(OperatorError) as e:
                BlockDevice.open(path, writable=writable)
            assert one_line(e.value) == f"{path}: not a block device or regular file; name a disk or a region file"


def _open_as_nobody(path: str, writable: bool) -> str:
    """Open in a forked child with euid/egid nobody (root bypasses file modes); its message."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no pytest, no exceptions escaping
        try:
            os.setgroups([])
            os.setegid(65534)
            os.seteuid(65534)
            try:
                BlockDevice.open(path, writable=writable).close()
                msg = "opened"
            except OperatorError as e:
                msg = str(e)
            os.write(w, msg.encode())
        finally:
            os._exit(0)
    os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], WAIT_S)
        assert ready, "child did not answer"
        return os.read(r, 4096).decode()
    finally:
        os.close(r)
        os.waitpid(pid, 0)


@needs_root
def test_permission_denied(disk_tmp_path):
    os.chmod(disk_tmp_path, 0o755)
    path = make_file(disk_tmp_path, 4096)
    os.chmod(path, 0o644)  # nobody may read, not write
    assert _open_as_nobody(path, writable=False) == "opened"
    msg = _open_as_nobody(path, writable=True)
    assert msg.startswith(f"{path}: permission denied opening it read-write;")
    assert "run as root or fix its owner/mode" in msg and "\n" not in msg
    os.chmod(path, 0o600)
    assert _open_as_nobody(path, writable=False).startswith(f"{path}: permission denied opening it read-only;")


@pytest.fixture
def memory_fs(disk_tmp_path):
    """Factory: memory_fs('ramfs'|'tmpfs') -> a fresh mount of it, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount ramfs/tmpfs")
    mounted: list[str] = []

    def make(kind: str) -> str:
        d = os.path.join(disk_tmp_path, kind)
        os.mkdir(d)
        r = subprocess.run(["mount", "-t", kind, "-o", "size=4m", kind, d], capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            pytest.skip(f"cannot mount {kind}: {r.stderr.strip()}")
        mounted.append(d)
        return d

    try:
        yield make
    finally:
        for d in mounted:
            subprocess.run(["umount", "-l", d], capture_output=True, timeout=10)


def kernel_takes_o_direct(path: str) -> bool:
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_DIRECT))
        return True
    except OSError as e:
        assert e.errno == errno.EINVAL
        return False


@needs_root
@pytest.mark.parametrize("kind", ["ramfs", "tmpfs"])
def test_filesystem_without_o_direct_is_refused_unless_buffered_allowed(memory_fs, kind):
    path = make_file(memory_fs(kind), 8192)
    if kernel_takes_o_direct(path):
        # tmpfs accepts O_DIRECT since Linux 6.6 (it is still the page cache: fine on one host)
        assert kind == "tmpfs"
        with BlockDevice.open(path, writable=True) as dev:
            assert dev.direct
        return
    for writable in (False, True):
        with pytest.raises(OperatorError) as e:
            BlockDevice.open(path, writable=writable)
        assert one_line(e.value) == (f"{path}: the filesystem does not support O_DIRECT (tmpfs? ramfs?);"
                                     " put the region file on a disk filesystem or use a block device")
    with BlockDevice.open(path, writable=True, allow_buffered=True) as dev:  # tests/tools only
        assert not dev.direct
        flags = int(open(f"/proc/self/fdinfo/{dev.fd}").read().split("flags:")[1].split()[0], 8)
        assert flags & os.O_DSYNC and not flags & os.O_DIRECT
        buf = AlignedBuffer(512)
        buf.view[:] = 9
        dev.write_from(buf, 512, 512)
        assert dev.read(512, 512).tolist() == [9] * 512


# -- loop devices: the sector size is the device's --------------------------------------------


@pytest.mark.root
@pytest.mark.parametrize("sector", [512, 4096])
def test_loop_device_sector_size_and_round_trip(loopdev, sector):
    path = loopdev(sector_size=sector, size_bytes=8 << 20)
    with BlockDevice.open(path, writable=True, sector_size=512) as dev:  # the caller's 512 is ignored
        assert dev.is_block_device and dev.direct
        assert dev.sector_size == dev.logical_sector_size == sector
        assert dev.size_bytes == 8 << 20
        assert blockio._sysfs_sector_size(os.fstat(dev.fd).st_rdev) == sector  # the fallback agrees
        buf = AlignedBuffer(2 * sector)
        buf.view[:] = 0x5A
        dev.write_from(buf, 5 * sector, 2 * sector)
        assert dev.read(5 * sector, 2 * sector).tolist() == [0x5A] * (2 * sector)
        assert dev.read(4 * sector, sector).tolist() == [0] * sector
        if sector > 512:
            with pytest.raises(ValueError):
                dev.read_into(buf, 512, 512)  # refused by us ...
            with pytest.raises(OSError) as e:
                os.preadv(dev.fd, [buf.mem[:512]], 512)  # ... because the kernel would refuse it
            assert e.value.errno == errno.EINVAL
            with pytest.raises(ValueError, match="below the device's 4096-byte"):
                dev.sector_size = 512
        dev.sector_size = 8192  # raising it (a superblock's larger sectors) is fine
        assert dev.sector_size == 8192


@pytest.mark.root
def test_region_file_with_sectors_too_small_for_its_disk_gets_a_clear_einval(loopdev, disk_tmp_path):
    """A 512-byte region file on a filesystem over 4096-byte sectors: the kernel says EINVAL."""
    if not shutil.which("mkfs.ext4"):
        pytest.skip("needs mkfs.ext4 (e2fsprogs)")
    dev = loopdev(sector_size=4096, size_bytes=16 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", dev], check=True, capture_output=True, timeout=30)
    mnt = os.path.join(disk_tmp_path, "ext4")
    os.mkdir(mnt)
    subprocess.run(["mount", dev, mnt], check=True, capture_output=True, timeout=10)
    try:
        path = make_file(mnt, 64 * 1024)
        with BlockDevice.open(path, writable=True) as f:
            assert f.sector_size == 512
            with pytest.raises(OSError) as e:
                f.read(512, 512)
            assert e.value.errno == errno.EINVAL
            assert "needs an alignment above 512 bytes" in str(e.value) and path in str(e.value)
            f.sector_size = 4096
            assert f.read(4096, 4096).tolist() == [0] * 4096
    finally:
        subprocess.run(["umount", "-l", mnt], capture_output=True, timeout=10)


# -- IoWorker ---------------------------------------------------------------------------------


@pytest.fixture
def worker():
    made: list[IoWorker] = []

    def make(*args, **kw) -> IoWorker:
        w = IoWorker(*args, **kw)
        made.append(w)
        return w

    try:
        yield make
    finally:
        for w in made:
            w.close()


def test_one_in_flight_refuses_more_until_polled(worker):
    w = worker("t")
    gate = threading.Event()
    try:
        assert w.in_flight() is None
        assert w.submit(lambda: gate.wait(WAIT_S) and 42, tag="a", now_ms=100)
        assert w.in_flight() == ("a", 100)
        ran = []
        assert not w.submit(lambda: ran.append(1), tag="b", now_ms=101)  # never queued behind "a"
        assert w.poll() == []
        gate.set()
        deadline = time.monotonic() + WAIT_S
        while w.in_flight() is not None:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        # completed but not polled: its buffer is still the caller's to read, so no new request
        assert not w.submit(lambda: ran.append(1), tag="c", now_ms=102)
        (r,) = w.poll()
        assert (r.tag, r.ok, r.value, r.error, r.submitted_ms) == ("a", True, 42, None, 100)
        assert w.submit(lambda: 7, tag="d", now_ms=103)
        assert [x.value for x in wait_results(w)] == [7]
        assert ran == []
    finally:
        gate.set()


def test_completion_latency_and_injected_clock(worker):
    fake_now = [5000]
    w = worker("lat", clock_ms=lambda: fake_now[0])
    assert w.submit(lambda: "x", tag=1, now_ms=4990)
    (r,) = wait_results(w)
    assert (r.submitted_ms, r.completed_ms) == (4990, 5000)  # both from the injected clock

    w2 = worker("real")
    latencies = []
    for i in range(50):
        t0 = time.monotonic_ns()
        assert w2.submit(lambda: None, tag=i, now_ms=0)
        wait_results(w2)
        latencies.append((time.monotonic_ns() - t0) / 1e6)
    latencies.sort()
    assert latencies[25] < 5, latencies  # median hand-off well under a millisecond here; 5 ms bound


def test_a_hung_request_never_blocks_submit_poll_or_close(worker):
    w = worker("hung")
    stuck = threading.Event()  # stands in for a thread in D state: released only in finally
    try:
        assert w.submit(lambda: stuck.wait(60), tag="hung", now_ms=0)
        t0 = time.monotonic()
        for tick in range(200):  # the caller's ticks go on
            assert not w.submit(lambda: None, tag=tick, now_ms=tick)
            assert w.poll() == []
            assert w.in_flight() == ("hung", 0)
        assert time.monotonic() - t0 < 0.5
        t0 = time.monotonic()
        assert w.close() is False  # the stuck thread stays stuck; close does not wait for it
        assert time.monotonic() - t0 < 0.1
        assert not w.submit(lambda: None, tag="after", now_ms=1)
    finally:
        stuck.set()


def test_errors_are_results_not_exceptions(worker):
    w = worker("err")

    def eio():
        raise OSError(errno.EIO, "device said no")

    assert w.submit(eio, tag="e", now_ms=0)
    (r,) = wait_results(w)
    assert not r.ok and r.value is None and r.error.errno == errno.EIO

    def bug():
        raise KeyError("oops")

    assert w.submit(bug, tag="b", now_ms=0)
    (r,) = wait_results(w)
    assert not r.ok and r.error.errno == errno.EIO and "internal error" in str(r.error)
    assert isinstance(r.error.__cause__, KeyError)
    assert w.submit(lambda: 1, tag="still alive", now_ms=0)
    assert wait_results(w)[0].value == 1


def test_max_in_flight_bounds_requests_and_reports_the_oldest(worker):
    w = worker("two", 2)
    gates = [threading.Event(), threading.Event()]
    try:
        assert w.submit(lambda: gates[0].wait(WAIT_S), tag="old", now_ms=1)
        assert w.submit(lambda: gates[1].wait(WAIT_S), tag="new", now_ms=2)
        assert not w.submit(lambda: None, tag="third", now_ms=3)
        assert w.in_flight() == ("old", 1) and w.in_flight_count() == 2
        gates[1].set()  # the newer completes first: each request has its own thread
        assert [r.tag for r in wait_results(w)] == ["new"]
        assert w.in_flight() == ("old", 1)
        gates[0].set()
        assert [r.tag for r in wait_results(w)] == ["old"]
    finally:
        for g in gates:
            g.set()
    with pytest.raises(ValueError):
        IoWorker("bad", 0)


def test_close_when_idle_stops_threads_and_keeps_results(worker):
    w = worker("idle")
    assert w.submit(lambda: "done", tag=1, now_ms=0)
    while w.in_flight() is not None:
        time.sleep(0.001)
    assert w.close() is True
    assert not any(t.is_alive() for t in w._threads)
    assert [r.value for r in w.poll()] == ["done"]


def test_real_device_io_through_workers_reads_and_writes_apart(disk_tmp_path, worker):
    path = make_file(disk_tmp_path, 64 * 1024)
    with BlockDevice.open(path, writable=True) as dev:
        reader, writer = worker("r:read"), worker("r:write")
        wbuf, rbuf = AlignedBuffer(512), AlignedBuffer(4096)
        wbuf.view[:] = 3
        assert writer.submit(lambda: dev.write_from(wbuf, 1024, 512), tag="w", now_ms=0)
        (wr,) = wait_results(writer)
        assert wr.ok and wr.value == 512
        assert reader.submit(lambda: dev.read_into(rbuf, 0, 4096), tag="r", now_ms=0)
        (rr,) = wait_results(reader)
        assert rr.ok and rbuf.view[1024:1536].tolist() == [3] * 512 and rbuf.view[:1024].sum() == 0
