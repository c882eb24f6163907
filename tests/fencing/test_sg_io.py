"""diskhb.fencing.scsi.sg_io: the sg_io_hdr layout, how a request is laid out and an answer read (G3),
the bound on a stuck ioctl (G1), a device that is not SCSI (G2). The real ioctl on a SCSI device
runs only with DISKHB_SG_DEVICE (these machines have no kernel SCSI)."""

import ctypes
import os
import threading
import time

import pytest

from diskhb.fencing.pr_key import key_for
from diskhb.fencing.scsi import cdb as C
from diskhb.fencing.scsi import pr
from diskhb.fencing.scsi import sg_io
from diskhb.fencing.scsi.sg_io import SG_DXFER_FROM_DEV, SG_DXFER_NONE, SG_DXFER_TO_DEV, Request, SgIoHdr, \
    SgIoTransport
from diskhb.fencing.scsi.transport import TransportError, TransportTimeout, TransportUnavailable


def test_sg_io_hdr_layout_matches_linux_64_bit():
    """include/scsi/sg.h on x86-64/arm64: offsets of every field, 88 bytes."""
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        pytest.skip("the offsets below are the 64-bit ones")
    expected = dict(interface_id=0, dxfer_direction=4, cmd_len=8, mx_sb_len=9, iovec_count=10, dxfer_len=12,
                    dxferp=16, cmdp=24, sbp=32, timeout=40, flags=44, pack_id=48, usr_ptr=56, status=64,
                    masked_status=65, msg_status=66, sb_len_wr=67, host_status=68, driver_status=70, resid=72,
                    duration=76, info=80)
    assert {name: getattr(SgIoHdr, name).offset for name in expected} == expected
    assert ctypes.sizeof(SgIoHdr) == 88
    assert sg_io.SG_IO == 0x2285


def test_request_for_a_pr_out_points_at_our_bytes():
    cmd = C.preempt(0x0102030405060708, 0x1112131415161718)
    req = Request(cmd.cdb, cmd.data_out, cmd.data_in_len, 1500)
    h = req.hdr
    assert (h.interface_id, h.dxfer_direction, h.cmd_len, h.dxfer_len, h.timeout, h.iovec_count) == \
        (ord("S"), SG_DXFER_TO_DEV, 10, 24, 1500, 0)
    assert ctypes.string_at(h.cmdp, h.cmd_len) == cmd.cdb
    assert ctypes.string_at(h.dxferp, h.dxfer_len) == cmd.data_out
    assert h.mx_sb_len == sg_io.SENSE_BUF_LEN and h.sbp


def test_request_directions():
    r = Request(C.read_keys().cdb, None, 264, 1000)
    assert (r.hdr.dxfer_direction, r.hdr.dxfer_len) == (SG_DXFER_FROM_DEV, 264) and r.hdr.dxferp
    r = Request(C.test_unit_ready().cdb, None, 0, 1000)
    assert (r.hdr.dxfer_direction, r.hdr.dxfer_len, r.hdr.dxferp) == (SG_DXFER_NONE, 0, None)


def answered(data_in_len=264, **fields):
    req = Request(C.read_keys().cdb, None, data_in_len, 1000)
    for k, v in fields.items():
        setattr(req.hdr, k, v)
    return req


def test_result_good_trims_the_residual():
    req = answered(resid=264 - 16)
    ctypes.memmove(req.data, bytes(range(16)), 16)
    r = req.result("dev: PR IN")
    assert (r.status, r.data_in, r.sense) == (0, bytes(range(16)), b"")


def test_result_check_condition_carries_the_sense_written():
    req = answered(status=0x02, driver_status=sg_io.DRIVER_SENSE, sb_len_wr=18, resid=264)
    ctypes.memmove(req.sense, bytes.fromhex("700005000000000a00000000240000000000"), 18)
    r = req.result("dev: PR IN")
    assert (r.status, r.data_in, r.sense[:3]) == (2, b"", bytes([0x70, 0, 5])) and len(r.sense) == 18


def test_result_reservation_conflict_is_an_answer():
    assert answered(status=0x18, resid=264).result("dev: WRITE").status == 0x18


@pytest.mark.parametrize("fields,cls,match", [
    (dict(host_status=0x01), TransportError, "DID_NO_CONNECT"),
    (dict(host_status=0x0E), TransportError, "DID_TRANSPORT_FAILFAST"),
    (dict(host_status=0x42), TransportError, "host status 0x42"),
    (dict(driver_status=sg_io.DRIVER_TIMEOUT), TransportTimeout, "timed the command out"),
    (dict(driver_status=0x04), TransportError, "driver status 0x04"),
])
def test_result_without_an_answer(fields, cls, match):
    with pytest.raises(cls, match=match) as e:
        answered(**fields).result("dev: PR IN")
    assert e.value.outcome_unknown


def test_a_device_that_is_not_scsi_is_one_line():
    """G2: /dev/null answers SG_IO with ENOTTY, as a loop, NVMe or virtio-blk disk does."""
    with SgIoTransport("/dev/null") as t:
        with pytest.raises(TransportUnavailable, match=r"^/dev/null: PR IN 0x00: not a SCSI device \(SG_IO: "):
            pr.read_keys(t, 1000)


def test_a_missing_device_is_one_line(tmp_path):
    with pytest.raises(TransportError, match="cannot open: No such file or directory") as e:
        SgIoTransport(str(tmp_path / "sg9")).execute(C.test_unit_ready().cdb, None, 0, 1000)
    assert not e.value.outcome_unknown
    with pytest.raises(ValueError, match="absolute"):
        SgIoTransport("sg0")


def test_a_stuck_ioctl_is_bounded_and_wedges_the_transport(monkeypatch):
    """G1: the caller is back after timeout + grace; later calls fail at once until it returns."""
    release = threading.Event()
    calls = []

    def ioctl(fd, code, hdr):
        calls.append(code)
        release.wait(10)

    monkeypatch.setattr(sg_io.fcntl, "ioctl", ioctl)
    monkeypatch.setattr(sg_io, "KERNEL_GRACE_MS", 100)
    t = SgIoTransport("/dev/null")
    try:
        t0 = time.monotonic()
        with pytest.raises(TransportTimeout, match="did not return within 300 ms"):
            t.execute(C.test_unit_ready().cdb, None, 0, 200)
        assert time.monotonic() - t0 < 1.0
        t0 = time.monotonic()
        with pytest.raises(TransportError, match="still stuck in the kernel"):
            t.execute(C.test_unit_ready().cdb, None, 0, 200)
        assert time.monotonic() - t0 < 0.1 and calls == [sg_io.SG_IO]
        release.set()
        t._stuck.join(5)
        assert t.execute(C.test_unit_ready().cdb, None, 0, 200).status == 0  # back in service
    finally:
        release.set()
        t.close()


SG_DEVICE = os.environ.get("DISKHB_SG_DEVICE")


@pytest.mark.skipif(not SG_DEVICE, reason="SG_IO cannot be exercised on these machines: no kernel SCSI (no sd/sg "
                    "driver, no /dev/sg*, no target modules). Set DISKHB_SG_DEVICE=/dev/sgN (a scratch LUN whose "
                    "reservations may be changed) to run it; the same CDBs are proven over iSCSI against tgt")
def test_register_reserve_release_on_a_real_device():
    key = key_for("diskhb-sg-test", 1, 0x5EED)
    with SgIoTransport(SG_DEVICE) as t:
        pr.register_and_ignore(t, key, 5000)
        try:
            assert key in pr.read_keys(t, 5000).keys
            pr.reserve(t, key, 5000)
            assert pr.read_reservation(t, 5000).holder.key == key
            pr.release(t, key, 5000)
        finally:
            pr.register_and_ignore(t, 0, 5000)
        assert key not in pr.read_keys(t, 5000).keys
