"""`diskhb format` never writes over a device this host uses, not even with --force; and a
device that is not a diskhb region is named for what it holds, not sent to `diskhb format`.

Real loop devices (root). Every mount, swap area, dm table, partition and helper process a test
makes is undone in `finally`, pass or fail; the loopdev fixture then detaches the device.
"""

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from cluster import diskhb
from diskhb.errors import Refused
from diskhb.regions.disk import inuse
from diskhb.regions.disk.blockio import BlockDevice

HEAD_BYTES = 1 << 20  # compared before/after: format's zeroing and superblock would land here
CMD_TIMEOUT_S = 30
WAIT_S = 5  # for a partition node or a helper process to appear


def need(tool: str, package: str) -> None:
    if not shutil.which(tool):
        pytest.skip(f"needs {tool} (Debian package {package})")


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=CMD_TIMEOUT_S)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def head_hash(dev: str, nbytes: int = HEAD_BYTES) -> str:
    """Hash of what is on the device (O_DIRECT: the disk's bytes, not our page cache)."""
    with BlockDevice.open(dev, writable=False) as d:
        return hashlib.sha256(d.read(0, nbytes).tobytes()).hexdigest()


def one_line_error(r: subprocess.CompletedProcess, code: int, *texts: str) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    err = r.stderr.strip()
    assert "Traceback" not in r.stderr and len(err.splitlines()) == 1, r.stderr
    assert err.startswith("diskhb: error: "), err
    for text in texts:
        assert text in err, (text, err)
    return err


def format_force(dev: str) -> subprocess.CompletedProcess:
    return diskhb("format", dev, "--cluster", "x", "--force")


def refused_untouched(dev: str, *texts: str, nbytes: int = HEAD_BYTES) -> None:
    """format --force on dev: exit 1, one line naming the reason, and not a byte changed."""
    before = head_hash(dev, nbytes)
    one_line_error(format_force(dev), 1, *texts, "nothing was written")
    assert head_hash(dev, nbytes) == before


def make_ext4(dev: str, label: str = "data") -> None:
    need("mkfs.ext4", "e2fsprogs")
    # no lazy init: a background inode-table zeroing thread would change the bytes we compare
    run("mkfs.ext4", "-q", "-F", "-L", label, "-E", "lazy_itable_init=0,lazy_journal_init=0", dev)


def mount(dev: str, mnt: str) -> None:
    os.makedirs(mnt, exist_ok=True)
    r = run("mount", "-o", "noatime", dev, mnt, check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot mount ext4 here: {r.stderr.strip()}")


def umount(mnt: str) -> None:
    if os.path.ismount(mnt):
        run("umount", mnt, check=False)


def write_file(mnt: str, name: str, data: bytes) -> None:
    with open(os.path.join(mnt, name), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.sync()  # the journal and metadata on disk too: nothing left for ext4 to write later


def assert_ext4_intact(dev: str, name: str, data: bytes) -> None:
    """After umount: e2fsck finds nothing, and the file reads back (debugfs: no mount needed)."""
    r = run("e2fsck", "-n", "-f", dev, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run("debugfs", "-R", f"cat /{name}", dev)
    assert r.stdout.encode() == data


@pytest.fixture
def root():
    if os.geteuid() != 0:
        pytest.skip("needs root (loop devices, mount, swapon)")


def test_mounted_ext4_is_refused_even_with_force(root, loopdev, disk_tmp_path):
    dev = loopdev(size_bytes=16 << 20)
    make_ext4(dev)
    mnt = os.path.join(disk_tmp_path, "mnt")
    data = b"precious data\n"
    try:
        mount(dev, mnt)
        write_file(mnt, "precious.txt", data)
        refused_untouched(dev, f"{dev}: in use: mounted at {mnt} (ext4)")
    finally:
        umount(mnt)
    assert_ext4_intact(dev, "precious.txt", data)


def test_mounted_partition_refuses_its_whole_disk(root, loopdev, disk_tmp_path):
    need("sfdisk", "fdisk")
    need("partx", "util-linux")
    dev = loopdev(size_bytes=16 << 20)
    part = f"{dev}p1"
    mnt = os.path.join(disk_tmp_path, "mnt")
    data = b"on the partition\n"
    # sfdisk cannot make the kernel re-read a loop device attached without -P (and some kernels
    # parse no tables at all): partx adds the partition from user space (BLKPG) either way.
    r = subprocess.run(["sfdisk", "-q", "--no-reread", dev], input="start=2048, type=83\n",
                       capture_output=True, text=True, timeout=CMD_TIMEOUT_S)
    assert r.returncode == 0, r.stderr
    try:
        run("partx", "-a", dev)
        deadline = time.monotonic() + WAIT_S
        while not os.path.exists(part) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not os.path.exists(part):
            pytest.skip(f"{part} did not appear after partx -a (no devtmpfs/udev?)")
        make_ext4(part)
        try:
            mount(part, mnt)
            write_file(mnt, "p.txt", data)
            # 2 MiB: the partition table and the start of the partition (its ext4 superblock)
            refused_untouched(dev, f"{dev}: in use: partition {os.path.basename(part)} mounted at {mnt}",
                              nbytes=2 << 20)
            refused_untouched(part, f"{part}: in use: mounted at {mnt}")
        finally:
            umount(mnt)
        assert_ext4_intact(part, "p.txt", data)
    finally:
        run("partx", "-d", dev, check=False)  # else the partition outlives the detached loop device


def test_active_swap_is_refused(root, loopdev):
    need("mkswap", "util-linux")
    need("swapon", "util-linux")
    dev = loopdev()
    run("mkswap", "-q", dev)
    r = run("swapon", dev, check=False)
    if r.returncode != 0:
        pytest.skip(f"swapon refused here: {r.stderr.strip()}")
    try:
        refused_untouched(dev, f"{dev}: in use: an active swap area")
    finally:
        run("swapoff", dev, check=False)


def test_device_mapper_holder_is_named(root, loopdev):
    if not os.path.exists("/sys/class/misc/device-mapper"):
        pytest.skip("the kernel has no device-mapper driver (CONFIG_BLK_DEV_DM, module dm_mod)")
    need("dmsetup", "dmsetup")
    dev = loopdev()
    name = f"diskhb-test-{os.getpid()}"
    sectors = 8 << 20 >> 9
    # no udev in a test box: do not wait for a udev cookie that never comes
    run("dmsetup", "create", "--noudevsync", name, "--table", f"0 {sectors} linear {dev} 0")
    try:
        holders = os.listdir(f"/sys/class/block/{os.path.basename(dev)}/holders")
        assert len(holders) == 1 and holders[0].startswith("dm-"), holders
        refused_untouched(dev, f"{dev}: in use: held by {holders[0]} (device-mapper '{name}')")
    finally:
        run("dmsetup", "remove", "--noudevsync", name, check=False)


def test_exclusive_open_by_another_process_is_refused(root, loopdev):
    dev = loopdev()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDONLY | os.O_EXCL)\nprint('held', flush=True)\ntime.sleep(120)\n", dev],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        refused_untouched(dev, f"{dev}: in use: open exclusively by another process")
        # the race the check above cannot close: our own exclusive open refuses as well
        with pytest.raises(Refused, match="open exclusively by another process"):
            BlockDevice.open(dev, writable=True, exclusive=True)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=WAIT_S)
        holder.stdout.close()


def test_format_holds_the_device_so_nothing_can_mount_it_meanwhile(root, loopdev, disk_tmp_path):
    dev = loopdev()
    make_ext4(dev)
    mnt = os.path.join(disk_tmp_path, "mnt")
    os.makedirs(mnt)
    try:
        with BlockDevice.open(dev, writable=True, exclusive=True):
            r = run("mount", dev, mnt, check=False)
            assert r.returncode != 0, "mount succeeded while format held the device O_EXCL"
    finally:
        umount(mnt)


def test_a_free_device_is_still_formatted(root, loopdev):
    dev = loopdev()
    r = format_force(dev)
    assert r.returncode == 0, r.stderr
    r = diskhb("status", dev, "--json", "--no-daemon", "--sample-ms", "0")
    assert r.returncode == 0 and '"cluster": "x"' in r.stdout, r.stdout + r.stderr


def test_status_and_run_name_the_ext4_they_found(root, loopdev, disk_tmp_path):
    dev = loopdev()
    make_ext4(dev, label="data")
    want = (f"{dev}: holds ext4 filesystem label 'data'", "not a diskhb region", "name the right device")
    err = one_line_error(diskhb("status", dev, "--run-dir", disk_tmp_path), 2, *want)
    assert "first" not in err  # no "run 'diskhb format ...' first" for a device holding data
    cfg = os.path.join(disk_tmp_path, "node.toml")
    with open(cfg, "w") as f:
        f.write(f'[node]\nname = "a"\nid = 1\nrun_dir = "{disk_tmp_path}"\n[metrics]\nlisten = ""\n'
                f'[[region]]\ntype = "disk"\npath = "{dev}"\n')
    one_line_error(diskhb("run", "--config", cfg), 2, *want)


def test_blank_device_is_still_sent_to_diskhb_format(root, loopdev, disk_tmp_path):
    dev = loopdev()
    one_line_error(diskhb("status", dev, "--run-dir", disk_tmp_path), 2, "no diskhb superblock",
                   f"run 'diskhb format {dev} --cluster NAME' first")


# --- /sys and /proc parsing, on fake trees (no root, and device-mapper needs no kernel driver) ---

def test_holder_of_a_partition_is_named_with_its_dm_name(tmp_path, monkeypatch):
    sysfs = tmp_path / "class-block"
    (sysfs / "loop9" / "holders").mkdir(parents=True)
    (sysfs / "loop9p1" / "holders" / "dm-3").mkdir(parents=True)
    (sysfs / "dm-3" / "dm").mkdir(parents=True)
    (sysfs / "dm-3" / "dm" / "name").write_text("vg-data\n")
    (sysfs / "md0" / "md").mkdir(parents=True)
    monkeypatch.setattr(inuse, "SYS_CLASS_BLOCK", str(sysfs))
    related = [("", "loop9", "7:9"), ("partition loop9p1 ", "loop9p1", "259:0")]
    assert inuse._holder_reason(related) == "partition loop9p1 held by dm-3 (device-mapper 'vg-data')"
    (sysfs / "loop9" / "holders" / "md0").mkdir()
    assert inuse._holder_reason(related) == "held by md0 (MD RAID)"


def test_mountinfo_matches_by_device_number_or_source_and_keeps_escapes(tmp_path, monkeypatch):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        "30 22 7:9 / /srv/my\\040data rw,relatime shared:5 master:1 - xfs /dev/loop9 rw\n"
        "31 22 0:52 / /mnt/b rw - btrfs /dev/loop10 rw\n")
    monkeypatch.setattr(inuse, "MOUNTINFO", str(mountinfo))
    assert inuse._mount_reason({"7:9": ""}, {}) == "mounted at /srv/my\\040data (xfs)"
    # btrfs shows an anonymous 0:N device number; the source still names the device
    assert inuse._mount_reason({"7:10": ""}, {"/dev/loop10": ""}) == "mounted at /mnt/b (btrfs)"
    assert inuse._mount_reason({"7:11": ""}, {"/dev/loop11": ""}) is None
