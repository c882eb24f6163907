"""faultdisk: the control language (pure), then the FUSE disk itself through BlockDevice and
IoWorker: O_DIRECT pass-through, eio, hang (the caller keeps running past its deadline), slow,
and teardown that releases hung requests.

FUSE tests need /dev/fuse, fusermount3 and mfusepy (the fixtures skip with the reason); every
FaultDisk is torn down in a fixture finaliser or `finally`, pass or fail.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from diskhb.regions.disk.blockio import AlignedBuffer, BlockDevice, IoWorker
from tools.faultdisk import FaultDisk, mount_entry
from tools.faultdisk.control import (
    EIO, HANG, OK, ControlError, Mode, format_control, parse_control, parse_state,
)

WAIT_S = 5.0
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def wait_for(pred, timeout_s: float = WAIT_S, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout_s} s")
        time.sleep(0.002)


# -- control language (no FUSE) ---------------------------------------------------------------


def test_parse_control():
    assert parse_control("write=hang") == {"write": HANG}
    assert parse_control("all=ok\n") == {"read": OK, "write": OK}
    assert parse_control("read=eio, write=slow:250") == {"read": EIO, "write": Mode("slow", 250)}
    assert parse_control("all=hang; read=ok") == {"read": OK, "write": HANG}  # later wins
    assert str(Mode("slow", 5)) == "slow:5" and str(HANG) == "hang"


@pytest.mark.parametrize("bad", ["", "   ", "write", "disk=hang", "write=stuck", "read=slow:", "read=slow:-1",
                                 "read=slow:700000", "read=ok write=bad"])
def test_parse_control_refuses_bad_text_whole(bad):
    with pytest.raises(ControlError):
        parse_control(bad)


def test_format_and_parse_state():
    assert format_control(write="hang") == "write=hang\n"
    assert format_control(read="slow:10", write=EIO) == "read=slow:10 write=eio\n"
    with pytest.raises(ControlError):
        format_control(read="sometimes")
    with pytest.raises(ControlError):
        format_control()
    assert parse_state("read=ok write=hang hung_write=1\n") == {"read": "ok", "write": "hang", "hung_write": 1}


# -- the FUSE disk ----------------------------------------------------------------------------


def backing_bytes(fd: FaultDisk, offset: int, length: int) -> bytes:
    with open(fd.backing_path, "rb") as f:
        f.seek(offset)
        return f.read(length)


@pytest.mark.root
def test_pass_through_with_o_direct_and_no_cache(faultdisk):
    fd = faultdisk
    assert mount_entry(fd.mountpoint)["fstype"] == "fuse.faultdisk"
    assert sorted(os.listdir(fd.mountpoint)) == [".control", "disk.img"]
    with BlockDevice.open(fd.path, writable=True) as dev:
        assert dev.direct and not dev.is_block_device and dev.size_bytes == 1 << 20
        buf = AlignedBuffer(64 * 1024)
        buf.view[:] = np.random.default_rng(1).integers(0, 256, buf.nbytes, dtype=np.uint8)
        for offset, length in [(0, 512), (4096, 4096), (512 * 999, 64 * 1024), ((1 << 20) - 512, 512)]:
            dev.write_from(buf, offset, length)
            assert backing_bytes(fd, offset, length) == buf.view[:length].tobytes()  # on the backing
            assert dev.read(offset, length).tobytes() == buf.view[:length].tobytes()  # and back
        # no page cache between us and the backing: a change behind our back is seen at once
        with open(fd.backing_path, "r+b") as f:
            f.seek(8192)
            f.write(b"\xee" * 512)
        assert dev.read(8192, 512).tolist() == [0xEE] * 512
        # a disk does not grow: writing past its end fails, reading past it is short (EIO)
        with pytest.raises(OSError) as e:
            dev.write_from(buf, 1 << 20, 512)
        assert e.value.errno == errno.ENOSPC
        with pytest.raises(OSError) as e:
            dev.read((1 << 20) - 512, 1024)
        assert e.value.errno == errno.EIO
    st = fd.state()
    assert st["read"] == st["write"] == "ok" and st["done_write"] >= 4
    assert st["syncs"] >= 4  # O_DSYNC writes reach the backing's disk, not just its page cache


@pytest.mark.root
def test_eio_modes_per_direction(faultdisk):
    fd = faultdisk
    with BlockDevice.open(fd.path, writable=True) as dev:
        buf = AlignedBuffer(512)
        fd.set(read="eio")
        with pytest.raises(OSError) as e:
            dev.read(0, 512)
        assert e.value.errno == errno.EIO
        dev.write_from(buf, 0, 512)  # writes still work
        fd.set(read="ok", write="eio")
        with pytest.raises(OSError) as e:
            dev.write_from(buf, 0, 512)
        assert e.value.errno == errno.EIO
        dev.read(0, 512)
        fd.set(all="ok")
        dev.write_from(buf, 0, 512)
    st = fd.state()
    assert (st["eio_read"], st["eio_write"]) == (1, 1)


@pytest.mark.root
def test_hung_write_stays_in_flight_while_the_caller_ticks_on_then_completes(faultdisk):
    fd = faultdisk
    deadline_ms = 100
    with BlockDevice.open(fd.path, writable=True) as dev:
        reader, writer = IoWorker("fd:read"), IoWorker("fd:write")
        try:
            wbuf, rbuf = AlignedBuffer(512), AlignedBuffer(512)
            wbuf.view[:] = 0x42
            fd.set(write="hang")
            t0 = writer.clock_ms()
            assert writer.submit(lambda: dev.write_from(wbuf, 2048, 512), tag="beat", now_ms=t0)
            fd.wait_hung("write")
            reads = late_ticks = 0
            while writer.clock_ms() - t0 < 3 * deadline_ms:  # the caller's tick loop, every 10 ms
                now = writer.clock_ms()
                assert writer.poll() == []
                assert writer.in_flight() == ("beat", t0)
                assert not writer.submit(lambda: None, tag="next", now_ms=now)  # never queued behind it
                late_ticks += now - t0 > deadline_ms
                if reader.in_flight() is None:  # reads go on beside the hung write
                    reader.submit(lambda: dev.read_into(rbuf, 0, 512), tag="r", now_ms=now)
                reads += sum(r.ok for r in reader.poll())
                time.sleep(0.01)
            assert late_ticks >= 10 and reads >= 5
            assert backing_bytes(fd, 2048, 512) == bytes(512)  # not written yet
            fd.set(write="ok")
            (r,) = wait_for(writer.poll, what="write completion")
            assert r.ok and r.tag == "beat" and r.completed_ms - r.submitted_ms >= 3 * deadline_ms
            assert backing_bytes(fd, 2048, 512) == b"\x42" * 512
        finally:
            fd.release()
            reader.close()
            writer.close()


@pytest.mark.root
def test_hung_read_is_judged_again_under_the_new_mode(faultdisk):
    fd = faultdisk
    with BlockDevice.open(fd.path, writable=False) as dev:
        reader = IoWorker("fd:read")
        try:
            fd.set(read="hang")
            assert reader.submit(lambda: dev.read(0, 512), tag="r", now_ms=0)
            fd.wait_hung("read")
            assert reader.poll() == []
            fd.set(read="eio")  # the hung request now fails instead of going through
            (r,) = wait_for(reader.poll, what="read completion")
            assert not r.ok and r.error.errno == errno.EIO
        finally:
            fd.release()
            reader.close()


@pytest.mark.root
@pytest.mark.parametrize("kind", ["read", "write"])
def test_slow_mode_latency(faultdisk, kind):
    fd = faultdisk
    delay_ms = 150
    with BlockDevice.open(fd.path, writable=True) as dev:
        buf = AlignedBuffer(512)
        op = (lambda: dev.read_into(buf, 0, 512)) if kind == "read" else (lambda: dev.write_from(buf, 0, 512))
        op()
        t0 = time.monotonic()
        op()
        fast_ms = (time.monotonic() - t0) * 1000
        fd.set(**{kind: f"slow:{delay_ms}"})
        t0 = time.monotonic()
        op()
        slow_ms = (time.monotonic() - t0) * 1000
        assert delay_ms <= slow_ms < delay_ms + 100, (fast_ms, slow_ms)
        assert fast_ms < 50


@pytest.mark.root
def test_control_file_from_the_shell(faultdisk):
    fd = faultdisk
    r = subprocess.run(f"echo write=eio > {fd.control_path} && cat {fd.control_path}", shell=True,
                       capture_output=True, text=True, timeout=WAIT_S)
    assert r.returncode == 0 and parse_state(r.stdout)["write"] == "eio"
    r = subprocess.run(f"echo write=sometimes > {fd.control_path}", shell=True, capture_output=True,
                       text=True, timeout=WAIT_S)
    assert r.returncode != 0  # EINVAL; dash's echo calls every write error "I/O error"
    assert fd.state()["write"] == "eio"  # a bad command changes nothing
    assert "bad setting" in fd.log() or "unknown mode" in fd.log()


@pytest.mark.root
def test_teardown_releases_hung_requests_and_unmounts(make_faultdisk):
    fd = make_faultdisk()
    dev = BlockDevice.open(fd.path, writable=True)
    writer = IoWorker("td:write")
    try:
        fd.set(write="hang")
        assert writer.submit(lambda: dev.write_from(AlignedBuffer(512), 0, 512), tag="w", now_ms=0)
        fd.wait_hung("write")
        t0 = time.monotonic()
        fd.close()  # the test "ends" with a write hung and the disk file still open
        assert time.monotonic() - t0 < 4.0
        (r,) = wait_for(writer.poll, what="hung write released")
        assert r.tag == "w"  # released: completed (ok) or failed, never left hanging
        assert mount_entry(fd.mountpoint) is None
        assert fd.proc.poll() is not None
    finally:
        writer.close()
        dev.close()
        fd.close()


@pytest.mark.root
def test_release_by_signal_when_all_fuse_threads_could_be_busy(faultdisk):
    fd = faultdisk
    with BlockDevice.open(fd.path, writable=False) as dev:
        workers = [IoWorker(f"many:{i}") for i in range(12)]
        try:
            fd.set(read="hang")
            bufs = [AlignedBuffer(512) for _ in workers]
            for w, b in zip(workers, bufs):
                assert w.submit(lambda b=b: dev.read_into(b, 0, 512), tag="r", now_ms=0)
            fd.wait_hung("read", count=12)  # more than libfuse's default thread count (10)
            fd.release()  # SIGUSR1: needs no FUSE thread
            for w in workers:
                (r,) = wait_for(w.poll, what="released read")
                assert r.ok
        finally:
            fd.release()
            for w in workers:
                w.close()


@pytest.mark.root
def test_command_line_background_mode(disk_tmp_path):
    from cluster import faultdisk_missing as _faultdisk_missing

    if _faultdisk_missing():
        pytest.skip(f"faultdisk needs {_faultdisk_missing()}")
    backing = os.path.join(disk_tmp_path, "cli.img")
    with open(backing, "wb") as f:
        f.truncate(64 * 1024)
    mnt = os.path.join(disk_tmp_path, "cli-mnt")
    os.mkdir(mnt)
    pid = log = None
    try:
        r = subprocess.run([sys.executable, "-m", "tools.faultdisk", backing, mnt], cwd=REPO,
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, r.stderr
        pid = int(r.stdout.split("pid ")[1].split()[0])
        log = r.stdout.split(" log ")[1].split(";")[0]
        assert os.path.getsize(os.path.join(mnt, "disk.img")) == 64 * 1024
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: mount_entry(mnt) is None, what="unmount after SIGTERM")
        wait_for(lambda: not os.path.exists(f"/proc/{pid}") or
                 open(f"/proc/{pid}/stat").read().split()[2] == "Z", what="exit")
        assert "SIGTERM: releasing requests and unmounting" in open(log).read()
        pid = None
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        if mount_entry(mnt) is not None:
            subprocess.run(["fusermount3", "-uz", mnt], capture_output=True, timeout=10)
        if log and os.path.exists(log):
            os.unlink(log)


def test_faultdisk_start_failure_is_reported_and_cleaned_up(disk_tmp_path):
    from cluster import faultdisk_missing as _faultdisk_missing

    if _faultdisk_missing():
        pytest.skip(f"faultdisk needs {_faultdisk_missing()}")
    mnt = os.path.join(disk_tmp_path, "never")
    with pytest.raises(RuntimeError, match="cannot open the backing image"):
        FaultDisk(os.path.join(disk_tmp_path, "missing.img"), mnt).start()
    assert not os.path.exists(mnt)  # the mount point it made is gone again
