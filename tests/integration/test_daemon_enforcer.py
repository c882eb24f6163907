"""Every hold has an independent lease enforcer (issue point 3): a daemon holding a resource whose
mountpoint (a real ext4 loop mount) has a writer; the daemon is SIGKILLed (and, separately,
SIGSTOPped). The writer is dead and the filesystem read-only before the peer's acquisition can
succeed, shown by an audit of CLOCK_MONOTONIC times (the same clock in every process of the host).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from cluster import Cluster, diskhb, wait_until

pytestmark = pytest.mark.slow

INTERVAL_MS = 1000
CLASSIC_MS = 2 * INTERVAL_MS + 1000
WRITER = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
while True:
    os.write(fd, b"%d\\n" % (time.monotonic_ns() // 1_000_000))
    time.sleep(0.005)
"""


def now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def mount_options(mnt: str) -> list[str] | None:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == mnt:
                return fields[5].split(",")
    return None


class Watch:
    """Samples the mount's options every 2 ms on a thread: the first moment it is read-only."""

    def __init__(self, mnt: str):
        self.mnt, self.ro_ms, self._stop = mnt, None, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and self.ro_ms is None:
            if "ro" in (mount_options(self.mnt) or []):
                self.ro_ms = now_ms()
            time.sleep(0.002)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(2)


@pytest.fixture
def ext4(loopdev, disk_tmp_path):
    if subprocess.run(["which", "mkfs.ext4"], capture_output=True).returncode:
        pytest.skip("needs mkfs.ext4 (Debian package e2fsprogs)")
    dev = loopdev(512, 32 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", dev], check=True, capture_output=True, timeout=60)
    mnt = os.path.join(disk_tmp_path, "mnt")
    os.makedirs(mnt)
    subprocess.run(["mount", dev, mnt], check=True, capture_output=True, timeout=30)
    try:
        yield mnt
    finally:
        for _ in range(50):
            if subprocess.run(["umount", mnt], capture_output=True, timeout=30).returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", mnt], capture_output=True, timeout=30)


@pytest.mark.parametrize("how", ["sigkill", "sigstop"])
def test_a_dead_or_frozen_daemons_writers_are_stopped_before_the_peer_can_take_over(ext4, disk_tmp_path, how):
    mnt = ext4
    region = os.path.join(disk_tmp_path, "region.img")
    r = diskhb("format", region, "--cluster", "test", "--slots", "4", "--interval-ms", "100", "--dead-ms", "1000")
    assert r.returncode == 0, r.stderr
    res = (f'[[resource]]\nname = "db"\ninterval_ms = {INTERVAL_MS}\non_loss = ["kill", "remount-ro"]\n'
           f'mountpoint = "{mnt}"\nkill_grace_ms = 100\nremount_timeout_ms = 500\n')
    c = Cluster(disk_tmp_path, region)
    writer = None
    try:
        c.start(1, extra=res)
        c.start(2, extra=res)
        c.wait_state(2, 1, "alive")
        out = ask(c, 1, "mmp-acquire db 0 1")
        assert out["ok"], out
        log = os.path.join(mnt, "writes.log")
        writer = subprocess.Popen([sys.executable, "-c", WRITER, log])
        wait_until(lambda: os.path.exists(log) and os.path.getsize(log) > 100, 5, "the writer to write")
        watch = Watch(mnt)
        t_hit = now_ms()
        c.procs[1].send_signal(signal.SIGKILL if how == "sigkill" else signal.SIGSTOP)
        try:
            if how == "sigstop":
                c.wait_state(2, 1, "dead")
            t_ask = now_ms()
            out = ask(c, 2, f"mmp-acquire db {4 * CLASSIC_MS} 0", timeout_s=60)
            t_got = now_ms()
            assert out["ok"] and out["epoch"] == 2, out
            wait_until(lambda: writer.poll() is not None, 5, "the writer to be dead")
            watch.stop()
            assert watch.ro_ms is not None, "the filesystem never went read-only"
            assert writer.returncode == -signal.SIGKILL  # killed, not exited
            with open(log) as f:
                last_write = int(f.read().split()[-1])
            # the audit: every write of the old holder, then read-only, then the peer
            assert last_write <= watch.ro_ms < t_got, (last_write, watch.ro_ms, t_got)
            if how == "sigkill":
                # the enforcer acts at once (the pipe closed): far inside the classic wait
                assert watch.ro_ms - t_hit < 1000, watch.ro_ms - t_hit
                assert watch.ro_ms < t_ask + CLASSIC_MS  # before any takeover could even start
        finally:
            if how == "sigstop":
                c.procs[1].send_signal(signal.SIGCONT)
    finally:
        if writer is not None and writer.poll() is None:
            writer.kill()
            writer.wait(5)
        c.stop_all()


def ask(c: Cluster, node_id: int, line: str, timeout_s: float = 30) -> dict:
    from diskhb.control import request

    return request(os.path.join(c.run_dir, f"diskhb-{c.cluster_name()}-{node_id}.sock"), line, timeout_s)
