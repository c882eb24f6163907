"""Shared fixtures: a temp dir on a disk filesystem, loop devices, and the FUSE fault disk.

Every fixture tears down what it made in `finally`, even when the test fails, and skips with a
reason naming what is missing (root, losetup, fusermount3, /dev/fuse, mfusepy).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEMORY_FS = {"tmpfs", "ramfs"}  # no real O_DIRECT (or none at all): useless for direct I/O tests


def fs_type(path: str) -> str:
    """Filesystem type holding `path` (longest mount point prefix in /proc/self/mounts)."""
    path = os.path.realpath(path)
    best, kind = "", "?"
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            mnt = fields[1].replace("\\040", " ")
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, kind = mnt, fields[2]
    return kind


@pytest.fixture
def disk_tmp_path():
    """A fresh directory on a disk filesystem (O_DIRECT works there). Not pytest's tmp_path:
    /tmp is tmpfs on many machines. /var/tmp first, then the repository's own .tmp/."""
    for base in ("/var/tmp", os.path.join(REPO, ".tmp")):
        os.makedirs(base, exist_ok=True)
        if fs_type(base) not in MEMORY_FS:
            break
    else:
        pytest.skip("no disk filesystem for a temp dir: /var/tmp and the repo are on tmpfs/ramfs")
    d = tempfile.mkdtemp(prefix="diskhb-test-", dir=base)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def loopdev(disk_tmp_path):
    """Factory: loopdev(sector_size=512, size_bytes=8 MiB) -> '/dev/loopN' over a zeroed file.

    Needs root and losetup; every device made is detached afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to attach loop devices")
    if not shutil.which("losetup") or not os.path.exists("/dev/loop-control"):
        pytest.skip("needs losetup (util-linux) and /dev/loop-control")
    made: list[str] = []

    def make(sector_size: int = 512, size_bytes: int = 8 << 20) -> str:
        img = os.path.join(disk_tmp_path, f"loop{len(made)}-{sector_size}.img")
        with open(img, "wb") as f:
            f.truncate(size_bytes)
        r = subprocess.run(["losetup", "--sector-size", str(sector_size), "--find", "--show", img],
                           capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            pytest.skip(f"losetup could not attach a loop device: {r.stderr.strip()}")
        dev = r.stdout.strip()
        made.append(dev)
        return dev

    try:
        yield make
    finally:
        for dev in made:
            subprocess.run(["losetup", "--detach", dev], capture_output=True, timeout=10)


# In tests/cluster.py: test modules import it by module name, and "conftest" is not one name
# (tests/fencing has a conftest.py of its own, which pytest also imports as "conftest").
from cluster import faultdisk_missing as _faultdisk_missing  # noqa: E402


@pytest.fixture
def make_faultdisk(disk_tmp_path):
    """Factory: make_faultdisk(size_bytes=1 MiB) -> a started FaultDisk over a zeroed image.

    Torn down (hangs released, unmounted, process ended) after the test, pass or fail."""
    missing = _faultdisk_missing()
    if missing:
        pytest.skip(f"faultdisk needs {missing}")
    from tools.faultdisk import FaultDisk

    made: list[FaultDisk] = []

    def make(size_bytes: int = 1 << 20) -> FaultDisk:
        n = len(made)
        backing = os.path.join(disk_tmp_path, f"faultdisk{n}.img")
        with open(backing, "wb") as f:
            f.truncate(size_bytes)
        fd = FaultDisk(backing, os.path.join(disk_tmp_path, f"mnt{n}"))
        made.append(fd)
        return fd.start()

    try:
        yield make
    finally:
        for fd in reversed(made):
            fd.close()


@pytest.fixture
def faultdisk(make_faultdisk):
    """A mounted FaultDisk over a 1 MiB zeroed image, all modes ok; `.path` is the disk file."""
    return make_faultdisk()


@pytest.fixture
def fusewd(tmp_path):
    """A mounted FUSE watchdog (tools.fusewatchdog), disarmed and unmounted after the test."""
    missing = _faultdisk_missing()
    if missing:
        pytest.skip(f"the FUSE watchdog needs {missing}")
    from tools.fusewatchdog import FuseWatchdog

    wd = FuseWatchdog(str(tmp_path / "wd")).start()
    try:
        yield wd
    finally:
        wd.close()


@pytest.fixture
def cluster(tmp_path):
    """Daemons on one formatted region (8 slots, 100/1000 ms), every one stopped after the test.
    Modules with a cluster of their own define their own fixture."""
    from cluster import Cluster, diskhb

    region = str(tmp_path / "region.img")
    r = diskhb("format", region, "--cluster", "test", "--slots", "8", "--interval-ms", "100", "--dead-ms", "1000")
    assert r.returncode == 0, r.stderr
    c = Cluster(str(tmp_path), region)
    try:
        yield c
    finally:
        c.stop_all()
