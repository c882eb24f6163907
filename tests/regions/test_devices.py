"""uuid: paths and `diskhb scan` (diskhb.regions.disk.devices): the rules on made-up device
stacks (this machine has no device-mapper), then for real on loop devices."""

from __future__ import annotations

import errno
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid as uuidlib

import pytest

from diskhb.errors import OperatorError
from diskhb.regions.disk import devices as dv

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
U = "4f37125d-2ed9-4df7-96b0-22e12bde87d4"
UB = uuidlib.UUID(U).bytes


# -- uuid: paths -----------------------------------------------------------------------------------


def test_uuid_spec_is_canonical_and_strict():
    assert dv.parse_uuid_spec("/dev/sdb") is None
    assert dv.parse_uuid_spec(f"uuid:{U.upper()}") == U
    assert dv.parse_uuid_spec(f"uuid:{U.replace('-', '')}") == U
    for bad in ("uuid:", "uuid:xyz", f"uuid:{{{U}}}", f"uuid:urn:uuid:{U}", f"uuid:{U}0"):
        with pytest.raises(ValueError, match="is not uuid:<region uuid>"):
            dv.parse_uuid_spec(bad)


# -- the rules, on made-up stacks --------------------------------------------------------------------


_MINORS = itertools.count(1)


def dev(name, **kw):
    kw.setdefault("devnode", f"/dev/{name}")
    kw.setdefault("devnum", os.makedev(8, next(_MINORS)))
    kw.setdefault("size_bytes", 1 << 30)
    return dv.BlockInfo(sys_name=name, **kw)


def inventory(*infos, truncated=False):
    return dv.Inventory(tuple(infos), (), False, truncated)


def ok(uuid=UB):
    return dv.Outcome("ok", (uuid, None, uuid))


BLANK = dv.Outcome("ok", (None, None, b""))


def multipath():
    """dm-0 (multipath) over sdb and sdc; kpartx's dm-1 (its partition 1) over dm-0."""
    return [dev("sdb", holders=("dm-0",)), dev("sdc", holders=("dm-0",)),
            dev("sdb1", partition_of="sdb"), dev("sdc1", partition_of="sdc"),
            dev("dm-0", slaves=("sdb", "sdc"), holders=("dm-1",), dm_uuid="mpath-3600a0b80001"),
            dev("dm-1", slaves=("dm-0",), dm_uuid="part1-mpath-3600a0b80001")]


def test_one_device_carries_it():
    inv = inventory(dev("sda"), dev("sdb"))
    r = dv.judge(U, inv, [BLANK, ok()])
    assert r.device.sys_name == "sdb" and r.path == "/dev/sdb" and r.how == "the only device carrying it"
    assert r.describe() == f"uuid:{U} is /dev/sdb: the only device carrying it among 2 block devices"


def test_a_stable_link_names_the_device_in_logs():
    d = dev("sdb", links=("/dev/disk/by-id/wwn-0x5000c500a1b2c3d4", "/dev/disk/by-path/pci-0000:00:1f.2-ata-2"))
    r = dv.judge(U, inventory(d), [ok()])
    assert r.path == "/dev/sdb"  # opened by its kernel name: udev may re-make a link on a change event
    assert r.describe().startswith(f"uuid:{U} is /dev/disk/by-id/wwn-0x5000c500a1b2c3d4 (/dev/sdb): ")


def test_multipath_device_is_chosen_over_its_paths():
    devs = multipath()
    by = {d.sys_name: d for d in devs}
    r = dv.judge(U, inventory(*devs), [ok(), ok(), BLANK, BLANK, ok(), BLANK])
    assert r.device is by["dm-0"] and r.how == "multipath device over /dev/sdb, /dev/sdc"


def test_kpartx_partition_of_a_multipath_device_is_chosen_over_the_paths_partitions():
    devs = multipath()
    r = dv.judge(U, inventory(*devs), [BLANK, BLANK, ok(), ok(), BLANK, ok()])
    assert r.device.sys_name == "dm-1" and r.how == "multipath device over /dev/sdb1, /dev/sdc1"


def test_md_raid1_is_chosen_over_its_members():
    devs = [dev("sda", holders=("md0",)), dev("sdb", holders=("md0",)), dev("md0", slaves=("sda", "sdb"))]
    r = dv.judge(U, inventory(*devs), [ok(), ok(), ok()])
    assert r.device.sys_name == "md0" and r.how == "device over /dev/sda, /dev/sdb"


def test_top_of_two_stacked_matches_wins():
    devs = [dev("sdb", holders=("dm-0",)), dev("dm-0", slaves=("sdb",), holders=("dm-1",)),
            dev("dm-1", slaves=("dm-0",))]
    assert dv.choose(devs, {d.sys_name: d for d in devs}).sys_name == "dm-1"


def test_two_unrelated_devices_are_one_error_naming_both():
    inv = inventory(dev("sdb"), dev("sdd"), dev("loop3", devnode="/dev/loop3"))
    with pytest.raises(OperatorError) as e:
        dv.judge(U, inv, [ok(), ok(), BLANK])
    msg = str(e.value)
    assert msg == (f"uuid:{U}: 2 block devices carry this region: /dev/sdb, /dev/sdd; two copies of one region"
                   " (a cloned LUN or image?): detach or reformat the stale one, or name the device by its path")


def test_paths_without_multipath_are_named_as_such():
    udev = {"ID_WWN": "0x600a0b80001"}
    with pytest.raises(OperatorError, match=r"2 block devices carry this region: /dev/sdb, /dev/sdc; they look like"
                                            r" paths to one LUN \(wwn 0x600a0b80001\): set up dm-multipath"):
        dv.judge(U, inventory(dev("sdb", udev=udev), dev("sdc", udev=udev)), [ok(), ok()])


def test_a_device_stacked_on_another_match_but_not_over_all_is_ambiguous():
    """dm-0 over sdb only, and an unrelated sdd: still two copies."""
    devs = [dev("sdb", holders=("dm-0",)), dev("dm-0", slaves=("sdb",)), dev("sdd")]
    with pytest.raises(OperatorError, match="3 block devices carry this region"):
        dv.judge(U, inventory(*devs), [ok(), ok(), ok()])


def test_no_device_carries_it():
    with pytest.raises(OperatorError) as e:
        dv.judge(U, inventory(dev("sda"), dev("sdb")), [BLANK, dv.Outcome("denied", "Operation not permitted")])
    assert str(e.value) == (f"uuid:{U}: no block device carries this region (2 block devices scanned, 1 not"
                            " permitted to us); is its device attached to this node? ('diskhb scan' lists the"
                            " regions this node sees)")


def test_a_device_that_did_not_answer_could_carry_it():
    inv = inventory(dev("sda"), dev("sdb"), dev("sdd"))
    outs = [BLANK, ok(), dv.Outcome("timeout", "no answer within 5 s")]
    with pytest.raises(OperatorError) as e:
        dv.judge(U, inv, outs)
    assert str(e.value) == (f"uuid:{U}: found on /dev/sdb, but /dev/sdd did not answer (no answer within 5 s) and"
                            " could carry it too; fix or detach them, or name the device by its path")
    with pytest.raises(OperatorError, match=r"no block device that answered carries this region \(3 block devices"
                                            r" scanned\), and /dev/sdd did not \(Input/output error\)"):
        dv.judge(U, inv, [BLANK, BLANK, dv.Outcome("error", "Input/output error")])


def test_vanished_or_forbidden_devices_do_not_count_but_a_damaged_copy_does():
    inv = inventory(dev("sda"), dev("sdb"), dev("sdc"))
    gone, denied = dv.Outcome("gone", "No such device"), dv.Outcome("denied", "Operation not permitted")
    assert dv.judge(U, inv, [gone, ok(), denied]).device.sys_name == "sdb"
    damaged = dv.Outcome("ok", (None, "superblock checksum mismatch", UB))
    with pytest.raises(OperatorError, match=r"/dev/sdc did not answer \(a damaged superblock with this uuid"
                                            r" \(superblock checksum mismatch\)\)"):
        dv.judge(U, inv, [BLANK, ok(), damaged])
    other = dv.Outcome("ok", (None, "superblock checksum mismatch", bytes(16)))  # someone else's region
    assert dv.judge(U, inv, [BLANK, ok(), other]).device.sys_name == "sdb"


def test_a_silent_path_of_the_multipath_device_found_does_not_count():
    """Active/passive arrays fail reads on the passive path: the multipath device still answers."""
    devs = multipath()
    r = dv.judge(U, inventory(*devs), [ok(), dv.Outcome("error", "Input/output error"), BLANK,
                                       dv.Outcome("timeout", "no answer within 5 s"), ok(), BLANK])
    assert r.device.sys_name == "dm-0"


def test_too_many_devices_is_refused():
    with pytest.raises(OperatorError, match=f"more than {dv.DEVICES_MAX} block devices"):
        dv.judge(U, inventory(dev("sda"), truncated=True), [ok()])


def test_many_devices_are_named_briefly():
    infos = [dev(f"sd{c}") for c in "bcdefgh"]
    with pytest.raises(OperatorError) as e:
        dv.judge(U, inventory(*infos), [ok()] * len(infos))
    assert "7 block devices carry this region: /dev/sdb, /dev/sdc, /dev/sdd, /dev/sde and 3 more;" in str(e.value)
    assert "\n" not in str(e.value)


# -- reading with deadlines ------------------------------------------------------------------------


def test_run_bounded_abandons_a_hung_read_and_reports_every_kind():
    release = threading.Event()

    def fn(item):
        if item == "hang":
            release.wait(30)
        if item == "gone":
            raise OSError(errno.ENXIO, "No such device or address")
        if item == "denied":
            raise OSError(errno.EPERM, "Operation not permitted")
        if item == "eio":
            raise OSError(errno.EIO, "Input/output error")
        if item == "bug":
            raise KeyError("x")
        return item.upper()

    t0 = time.monotonic()
    try:
        outs = dv.run_bounded(["a", "hang", "gone", "denied", "eio", "bug", "b"], fn, parallel=2,
                              item_timeout_ms=300, total_timeout_ms=5000)
    finally:
        release.set()
    assert time.monotonic() - t0 < 2
    assert [o.state for o in outs] == ["ok", "timeout", "gone", "denied", "error", "error", "ok"]
    assert outs[0].value == "A" and outs[1].value == "no answer within 0.3 s"
    assert outs[4].value == "Input/output error" and outs[5].value.startswith("internal error: KeyError")


def test_run_bounded_stops_after_too_many_hung_reads_and_at_its_deadline():
    release = threading.Event()
    try:
        outs = dv.run_bounded(list(range(6)), lambda i: release.wait(30), parallel=2, item_timeout_ms=200,
                              total_timeout_ms=5000, hung_max=2)
        assert [o.state for o in outs] == ["timeout", "timeout"] + ["not read"] * 4
        t0 = time.monotonic()
        outs = dv.run_bounded(list(range(4)), lambda i: release.wait(30), parallel=4, item_timeout_ms=10_000,
                              total_timeout_ms=300)
        assert time.monotonic() - t0 < 2 and [o.state for o in outs] == ["timeout"] * 4
    finally:
        release.set()


# -- scan output -----------------------------------------------------------------------------------


def test_scan_lines_say_what_a_device_carries():
    base = {"device": "/dev/sdb", "size_bytes": 8 << 20, "by_id": [], "holders": [], "mounted": []}
    region = {**base, "kind": "diskhb", "uuid": U, "cluster": "c1", "slots": 8, "sector_size": 512,
              "interval_ms": 200, "dead_ms": 2000, "watchdog_ms": 10_000, "resolves_to": "/dev/dm-0",
              "holders": ["dm-0"], "by_id": ["/dev/disk/by-id/scsi-3600a0b80001"]}
    assert dv.describe_entry(region) == (
        f"/dev/sdb  8.0 MiB  diskhb region: cluster 'c1', uuid {U}, 8 slots of 512 bytes, interval 200 ms, dead"
        " 2000 ms, watchdog 10 s (uuid: resolves to /dev/dm-0)  [by-id: /dev/disk/by-id/scsi-3600a0b80001; held by"
        " dm-0]")
    ext = {**base, "kind": "ext4-mmp", "fs_uuid": U, "label": "ost0", "mmp_block": 9000, "mmp_interval_s": 5,
           "state": "in use", "last_node": "oss1", "last_device": "sdb", "mounted": ["/mnt/ost0"]}
    assert dv.describe_entry(ext) == (
        f"/dev/sdb  8.0 MiB  ext4 with MMP: UUID {U} label 'ost0', MMP block 9000, interval 5 s, seq running:"
        " mounted by 'oss1' on 'sdb', or a stale mount ('diskhb mmp inspect' watches it)  [by-id: none; mounted"
        " here at /mnt/ost0]")
    other = {**base, "kind": "other", "source": "udev", "signatures": ["xfs UUID=abc"]}
    assert dv.describe_entry(other) == "/dev/sdb  8.0 MiB  other (udev): xfs UUID=abc  [by-id: none]"


def test_scan_summary_names_what_was_not_read_and_udevs_absence():
    report = {"devices": [], "scanned": 3, "without_signature": 1, "elapsed_s": 0.2, "truncated": False,
              "udev": False, "skipped": [{"device": "/dev/loop7", "reason": "empty"}],
              "unanswered": [{"device": "/dev/sdd", "state": "timeout", "reason": "no answer within 10 s"},
                             {"device": "/dev/vda", "state": "denied", "reason": "Operation not permitted"}],
              "uuids": {U: {"device": None, "error": f"uuid:{U}: 2 block devices carry this region: ..."}}}
    lines = dv.describe_summary(report)
    assert lines[0] == ("scanned 3 block devices in 0.2 s: 0 with a signature, 1 without, 1 did not answer,"
                        " 1 not permitted to us (1 not read: empty, removable or too small)")
    assert lines[1:4] == ["did not answer: /dev/sdd: no answer within 10 s",
                          "not permitted: /dev/vda (Operation not permitted)",
                          f"uuid:{U}: 2 block devices carry this region: ..."]
    assert lines[4].startswith(f"udev data unavailable (no {dv.UDEV_DATA}): by-id names ")


# -- on loop devices -------------------------------------------------------------------------------


def diskhb(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "diskhb.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def one_line_error(r, code, text):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    err = r.stderr.strip()
    assert "Traceback" not in r.stderr and len(err.splitlines()) == 1, r.stderr
    assert err.startswith("diskhb: error: ") and text in err, err


def format_region(path, *extra):
    r = diskhb("format", path, "--cluster", "uuidtest", "--slots", "8", "--interval-ms", "100", "--dead-ms", "1000",
               *extra)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().rsplit("uuid ", 1)[1]


def copy_device(src, dst, nbytes):
    with open(src, "rb") as f, open(dst, "r+b") as g:
        g.write(f.read(nbytes))
        g.flush()
        os.fsync(g.fileno())


@pytest.mark.root
def test_a_region_on_a_loop_device_resolves_by_uuid(loopdev):
    blank, dev = loopdev(), loopdev(4096)
    uuid = format_region(dev)
    got = dv.resolve_paths([f"uuid:{uuid.upper()}", dev, "/some/file"])
    assert list(got) == [f"uuid:{uuid.upper()}"]  # other paths are not looked at
    r = got[f"uuid:{uuid.upper()}"]
    assert r.device.devnode == dev and r.uuid == uuid and r.device.size_bytes == 8 << 20
    assert r.path == dev and r.device.devnum == os.stat(dev).st_rdev
    assert dv.resolve_path(f"uuid:{uuid}") == r.path and dv.resolve_path(blank) == blank
    # commands that take a region path take uuid: too
    r = diskhb("dump", f"uuid:{uuid}")
    assert r.returncode == 0 and f"uuid: {uuid}" in r.stdout


@pytest.mark.root
def test_two_devices_with_one_region_are_one_clear_line(loopdev):
    a, b = loopdev(), loopdev()
    uuid = format_region(a)
    copy_device(a, b, 1 << 20)  # a cloned LUN
    one_line_error(diskhb("status", f"uuid:{uuid}"), 2,
                   f"uuid:{uuid}: 2 block devices carry this region: {a}, {b}; two copies of one region")
    with pytest.raises(OperatorError, match="2 block devices carry this region"):
        dv.resolve_paths([f"uuid:{uuid}"])
    r = diskhb("scan")
    assert r.returncode == 0
    assert f"uuid:{uuid}: 2 block devices carry this region" in r.stderr
    lines = [ln for ln in r.stdout.splitlines() if uuid in ln]
    assert len(lines) == 2 and all("(uuid: AMBIGUOUS, see below)" in ln for ln in lines)


@pytest.mark.root
def test_a_uuid_no_device_carries_is_one_clear_line(loopdev, tmp_path):
    format_region(loopdev())
    missing = str(uuidlib.uuid4())
    r = diskhb("status", f"uuid:{missing}")
    one_line_error(r, 2, f"uuid:{missing}: no block device carries this region (")
    assert "block devices scanned" in r.stderr and "is its device attached to this node?" in r.stderr
    one_line_error(diskhb("message", "uuid:nonsense", "1", "test"), 2, "'uuid:nonsense' is not uuid:<region uuid>")
    one_line_error(diskhb("format", f"uuid:{missing}", "--cluster", "x"), 2, "format takes a device or file path")
    assert not os.path.exists(os.path.join(ROOT, f"uuid:{missing}"))


@pytest.mark.root
def test_a_hung_device_stops_resolution_in_bounded_time(loopdev, make_faultdisk):
    """A loop device over a FUSE file whose reads hang: it could be the original of the region
    found elsewhere, so resolution refuses, within its deadline."""
    good = loopdev()
    uuid = format_region(good)
    fd = make_faultdisk(8 << 20)
    r = subprocess.run(["losetup", "--find", "--show", fd.path], capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        pytest.skip(f"losetup over a FUSE file: {r.stderr.strip()}")
    hung = r.stdout.strip()
    try:
        fd.set(read="hang")
        t0 = time.monotonic()
        with pytest.raises(OperatorError) as e:
            dv.resolve_paths([f"uuid:{uuid}"], item_timeout_ms=1000, total_timeout_ms=5000)
        assert time.monotonic() - t0 < 4
        msg = str(e.value)
        assert msg.startswith(f"uuid:{uuid}: found on {good}, but ") and f"{hung} did not answer" in msg
    finally:
        fd.set(all="ok")
        subprocess.run(["losetup", "--detach", hung], capture_output=True, timeout=10)


@pytest.mark.root
def test_scan_finds_the_region_and_an_ext4_mmp_filesystem(loopdev):
    if not shutil.which("mkfs.ext4"):
        pytest.skip("mkfs.ext4 (e2fsprogs) not installed")
    region, ext, blank = loopdev(), loopdev(size_bytes=32 << 20), loopdev()
    uuid = format_region(region)
    r = subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "ost0", "-O", "mmp", "-E", "mmp_update_interval=7", ext],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = diskhb("scan")
    assert r.returncode == 0, r.stderr
    by_dev = {ln.split()[0]: ln for ln in r.stdout.splitlines()}
    assert by_dev[region].startswith(f"{region}  8.0 MiB  diskhb region: cluster 'uuidtest', uuid {uuid}, 8 slots of"
                                      " 512 bytes, interval 100 ms, dead 1000 ms (uuid: this device)  [by-id: ")
    assert f"{ext}  32.0 MiB  ext4 with MMP: UUID " in by_dev[ext]
    assert "label 'ost0'" in by_dev[ext] and ", interval 7 s, clean (last written by " in by_dev[ext]
    assert blank not in by_dev  # nothing on it: only counted
    links = dv.link_index()
    for dev in (region, ext):  # by-id names: whatever /dev/disk/by-id has for it (none for loop devices
        want = sorted(p for p in links.get(os.stat(dev).st_rdev, []) if "/by-id/" in p)  # without udev rules)
        assert f"[by-id: {', '.join(want) or 'none'}" in by_dev[dev]
    assert r.stderr.startswith("scanned ")
    if not os.path.isdir(dv.UDEV_DATA):
        assert "udev data unavailable (no /run/udev/data)" in r.stderr
    report = json.loads(diskhb("scan", "--json").stdout)
    rows = {d["device"]: d for d in report["devices"]}
    assert rows[region]["kind"] == "diskhb" and rows[region]["uuid"] == uuid and rows[region]["resolves_to"] == region
    assert (rows[region]["slots"], rows[region]["interval_ms"], rows[region]["dead_ms"]) == (8, 100, 1000)
    e = rows[ext]
    assert (e["kind"], e["label"], e["mmp_interval_s"], e["state"], e["checksum_ok"]) == ("ext4-mmp", "ost0", 7,
                                                                                          "clean", True)
    assert e["mmp_block"] > 0 and e["fs_uuid"] and blank not in rows
    assert report["uuids"][uuid]["device"] == region and report["udev"] == os.path.isdir(dv.UDEV_DATA)
    assert all(abs(v) < 2**53 for row in report["devices"] for v in row.values() if isinstance(v, int))


@pytest.mark.root
def test_link_index_finds_stable_names_and_ranks_them(loopdev, tmp_path):
    dev = loopdev()
    for name in ("scsi-SATA_disk1", "wwn-0x5000c500a1b2c3d4", "ata-disk1"):
        os.symlink(dev, tmp_path / name)
    os.symlink("/nonexistent", tmp_path / "dangling")
    idx = dv.link_index([str(tmp_path)])
    rdev = os.stat(dev).st_rdev
    assert sorted(idx) == [rdev]
    d = str(tmp_path)
    got = dv._links_for(rdev, [], idx, (d,))
    names = ("scsi-SATA_disk1", "wwn-0x5000c500a1b2c3d4", "ata-disk1")
    assert got[0] == f"{d}/wwn-0x5000c500a1b2c3d4" and set(got) == {f"{d}/{n}" for n in names}
