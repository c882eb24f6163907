"""`mmp run` and the mounts its command leaves behind (diskhb/mmp/mounts.py): mount(8) returns
at once, the guard releases, the filesystem stays mounted: one warning line, the exit code kept."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from cluster import diskhb
from diskhb.mmp import mounts
from diskhb.mmp.sentinel import MountTable

MOUNTINFO = b"""\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:25 / /run rw,nosuid shared:5 - tmpfs tmpfs rw
41 22 7:3 / /mnt/ost\\0400 rw,relatime shared:30 - ext4 /dev/loop3 rw
42 22 0:51 / /srv/data rw,relatime shared:31 - tmpfs tmpfs rw
"""


def test_a_mount_is_named_by_its_device_or_its_mount_point():
    table = MountTable(MOUNTINFO)
    assert mounts.mounts_named(table, {"7:3"}, set()) == {41: "/mnt/ost 0"}
    assert mounts.mounts_named(table, set(), {"/srv/data"}) == {42: "/srv/data"}
    assert mounts.mounts_named(table, {"8:1"}, {"/"}) == {}, "the root filesystem is never 'left mounted'"
    assert mounts.mounts_named(table, set(), {"/srv"}) == {}


def test_words_come_from_argv_and_from_a_shell_string(tmp_path):
    devices, paths = mounts.named(["sh", "-c", "mount -t tmpfs x '/srv/data/'; echo done"], cwd=str(tmp_path))
    assert devices == set() and "/srv/data" in paths
    _, paths = mounts.named(["mount", "-o", "loop", "img", "./mnt/../mnt2"], cwd="/work")
    assert "/work/mnt2" in paths
    if os.path.exists("/dev/null"):
        devices, _ = mounts.named(["mount", "/dev/null", "/x"])
        assert devices == set(), "a character device names no filesystem"


def test_the_warning_says_what_to_do_in_one_line():
    line = mounts.warning("ost0", "mount", ["/mnt/ost0"])
    assert "\n" not in line and line.startswith("diskhb: warning: /mnt/ost0 is still mounted after 'mount' exited")
    assert 'mountpoint = "/mnt/ost0"' in line and "diskhb mmp acquire ost0 --config FILE" in line


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount")


@pytest.fixture
def mnt(disk_tmp_path):
    """An empty directory, unmounted (as often as needed) after the test."""
    path = os.path.join(disk_tmp_path, "mnt")
    os.mkdir(path)
    try:
        yield path
    finally:
        for _ in range(4):
            if subprocess.run(["umount", path], capture_output=True, timeout=30).returncode != 0:
                break


@pytest.fixture
def region(disk_tmp_path):
    path = os.path.join(disk_tmp_path, "region.img")
    r = diskhb("format", path, "--cluster", "test", "--slots", "4", "--interval-ms", "100", "--dead-ms", "1000")
    assert r.returncode == 0, r.stderr
    return path


def run(region: str, *command: str, env: dict | None = None):
    return diskhb("mmp", "run", "db", "--region", region, "--node-id", "1", "--create", "--interval-ms", "200",
                  "--", *command, env=env)


def warnings(r) -> list[str]:
    return [x for x in r.stderr.splitlines() if x.startswith("diskhb: warning:")]


@needs_root
def test_mmp_run_warns_when_its_mount_outlives_it(region, mnt):
    r = run(region, "mount", "-t", "tmpfs", "-o", "size=1m", "diskhb-test", mnt)
    assert r.returncode == 0, r.stderr
    assert os.path.ismount(mnt), "mount(8) returned and the filesystem stayed mounted"
    assert len(warnings(r)) == 1, r.stderr
    assert warnings(r)[0].startswith(f"diskhb: warning: {mnt} is still mounted after 'mount' exited, but db was"
                                     " released"), r.stderr
    status = json.loads(diskhb("mmp", "status", "db", "--region", region, "--json").stdout)
    assert status["resources"][0]["state"] == "clean", "released: the mount is guarded by nobody"


@needs_root
def test_no_warning_when_nothing_was_left_mounted_or_it_was_mounted_before(region, mnt):
    r = run(region, "sh", "-c", f"mount -t tmpfs -o size=1m diskhb-test {mnt} && umount {mnt}")
    assert r.returncode == 0 and not warnings(r), r.stderr
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "diskhb-test", mnt], check=True, timeout=30)
    r = run(region, "ls", mnt)  # a command using a filesystem it did not mount
    assert r.returncode == 0 and not warnings(r), r.stderr


@needs_root
def test_a_failing_command_keeps_its_exit_code_and_gets_no_warning(region, mnt):
    r = run(region, "sh", "-c", f"mount -t tmpfs -o size=1m diskhb-test {mnt}; exit 5")
    assert r.returncode == 5 and not warnings(r), r.stderr


@needs_root
@pytest.mark.skipif(not shutil.which("mkfs.ext4"), reason="needs mkfs.ext4 (Debian package e2fsprogs)")
def test_an_ext4_loop_device_named_only_by_its_device(region, loopdev, mnt):  # unmounted before detached
    dev = loopdev(size_bytes=16 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", dev], check=True, capture_output=True, timeout=60)
    # the mount point comes from the environment: the command names the device alone
    r = run(region, "sh", "-c", f'mount {dev} "$MNT"', env={**os.environ, "MNT": mnt})
    assert r.returncode == 0, r.stderr
    assert os.path.ismount(mnt) and len(warnings(r)) == 1 and f"warning: {mnt} is still mounted" in r.stderr, r.stderr
