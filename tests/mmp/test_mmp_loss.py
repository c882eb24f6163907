"""Loss actions (diskhb/mmp/loss.py) on real processes and, as root, a real ext4 mount."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

from diskhb.mmp.loss import LOST, LossAction, kill_writers, on_lost, run_loss_action


def _group(script: str) -> subprocess.Popen:
    return subprocess.Popen(["sh", "-c", script], start_new_session=True)


def _reaper(p: subprocess.Popen):
    return lambda: p.poll()


def test_kill_stops_a_group_with_sigterm_when_it_obeys():
    p = _group("sleep 30 & wait")
    try:
        time.sleep(0.1)
        out = kill_writers(p.pid, None, 2000, reap=_reaper(p))
        assert out == f"stopped by SIGTERM (process group {p.pid})"
        assert p.wait(5) is not None
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


def test_kill_uses_sigkill_after_the_grace_when_sigterm_is_ignored():
    p = _group("trap '' TERM; sleep 30 & wait; sleep 30")
    try:
        time.sleep(0.2)  # let the trap be set
        t0 = time.monotonic()
        out = kill_writers(p.pid, None, 300, reap=_reaper(p))
        took_s = time.monotonic() - t0
        assert out == f"SIGKILL after 300 ms (process group {p.pid})", out
        assert 0.25 <= took_s < 3.0
        assert p.wait(5) == -signal.SIGKILL
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


def test_kill_of_a_group_that_is_gone():
    p = _group("exit 0")
    p.wait(5)
    assert kill_writers(p.pid, None, 100) == "no process to stop"


def test_command_gets_the_resource_epoch_and_reason(tmp_path):
    out = tmp_path / "env"
    action = LossAction(kinds=("command",), command=f'echo "$DISKHB_MMP_RESOURCE $DISKHB_MMP_EPOCH $DISKHB_MMP_REASON" > {out}')
    before = LOST.labels("db")._value.get()
    report = on_lost(action, resource="db", epoch=7, reason="taken over by node 2")
    assert report.failed == [] and "ok" in report.line()
    assert out.read_text().strip() == "db 7 taken over by node 2"
    assert LOST.labels("db")._value.get() == before + 1


def test_a_failing_or_hanging_command_is_reported_and_bounded():
    report = run_loss_action(LossAction(kinds=("command",), command="echo nope >&2; exit 4"),
                             resource="db", epoch=1, reason="x")
    assert report.failed and "exit 4: nope" in report.failed[0]
    t0 = time.monotonic()
    report = run_loss_action(LossAction(kinds=("command",), command="sleep 30", timeout_ms=300),
                             resource="db", epoch=1, reason="x")
    assert time.monotonic() - t0 < 5
    assert "timed out after 300 ms" in report.line()


def test_kill_runs_before_the_command(tmp_path):
    marker = tmp_path / "order"
    p = _group(f"trap 'echo killed >> {marker}; exit 0' TERM; while :; do sleep 0.05; done")
    try:
        time.sleep(0.2)
        action = LossAction(kinds=("command", "kill"), command=f"echo command >> {marker}", pgid=p.pid,
                            grace_ms=2000)
        report = run_loss_action(action, resource="db", epoch=3, reason="x", reap=_reaper(p))
        assert report.failed == [], report.line()
        assert marker.read_text().split() == ["killed", "command"]
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(5)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a loop device")
@pytest.mark.skipif(not shutil.which("mkfs.ext4"), reason="needs mkfs.ext4 (Debian package e2fsprogs)")
def test_remount_ro_stops_writes_to_a_real_filesystem(loopdev, disk_tmp_path):
    dev = loopdev(size_bytes=32 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", dev], check=True, capture_output=True, timeout=60)
    mnt = os.path.join(disk_tmp_path, "mnt")
    os.mkdir(mnt)
    subprocess.run(["mount", dev, mnt], check=True, capture_output=True, timeout=30)
    try:
        with open(os.path.join(mnt, "before"), "w") as f:
            f.write("x")
        report = run_loss_action(LossAction(kinds=("remount-ro",), mountpoint=mnt), resource="db", epoch=1,
                                 reason="x")
        assert report.failed == [], report.line()
        with pytest.raises(OSError):
            with open(os.path.join(mnt, "after"), "w") as f:
                f.write("x")
        with open(os.path.join(mnt, "before")) as f:
            assert f.read() == "x"  # readers keep working
        # Not mounted any more: the failure is reported, never raised.
        report = run_loss_action(LossAction(kinds=("remount-ro",), mountpoint=os.path.join(disk_tmp_path, "nope")),
                                 resource="db", epoch=1, reason="x")
        assert report.failed and "remount" in report.failed[0]
    finally:
        subprocess.run(["umount", mnt], capture_output=True, timeout=30)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a tmpfs")
def test_kill_stops_every_user_of_the_mountpoint_and_nobody_else(disk_tmp_path):
    """The daemon's "kill": processes with a file open, or their cwd, on the mounted filesystem;
    one shared grace, then SIGKILL. A process elsewhere is left alone."""
    mnt = os.path.join(disk_tmp_path, "srv")
    os.makedirs(mnt)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "diskhb-test", mnt], check=True, timeout=30)
    procs = []
    try:
        os.makedirs(os.path.join(mnt, "db"))
        procs.append(subprocess.Popen(["sh", "-c", "exec 3>>db/log; while :; do echo x >&3; sleep 0.05; done"],
                                      cwd=mnt, start_new_session=True))  # open file and cwd on it
        procs.append(subprocess.Popen(["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"],
                                      cwd=os.path.join(mnt, "db"), start_new_session=True))
        procs.append(subprocess.Popen(["sleep", "30"], cwd=disk_tmp_path, start_new_session=True))
        writer, stubborn, bystander = procs
        time.sleep(0.3)
        t0 = time.monotonic()
        report = run_loss_action(LossAction(kinds=("kill",), mountpoint=mnt, kill_mount_users=True, grace_ms=300),
                                 resource="db", epoch=1, reason="x")
        assert time.monotonic() - t0 < 2.0  # one grace, not one per target
        assert report.failed == [], report.line()
        assert "SIGKILL after 300 ms" in report.line() and f"using {mnt}" in report.line(), report.line()
        assert writer.wait(5) == -signal.SIGTERM
        assert stubborn.wait(5) == -signal.SIGKILL
        assert bystander.poll() is None
        # Not a mount point, or "/": refused, never a kill of everything on the root filesystem.
        for bad in (disk_tmp_path, "/"):
            report = run_loss_action(LossAction(kinds=("kill",), mountpoint=bad, kill_mount_users=True),
                                     resource="db", epoch=1, reason="x")
            assert report.failed and "mount point" in report.failed[0], report.line()
        assert bystander.poll() is None
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)
        # A `sleep` child of a killed shell may still sit in it for a moment: retry, then detach.
        for _ in range(50):
            if subprocess.run(["umount", mnt], capture_output=True, timeout=30).returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", mnt], capture_output=True, timeout=30)


def test_kill_without_a_command_or_mountpoint_fails_loudly():
    report = run_loss_action(LossAction(kinds=("kill",)), resource="db", epoch=1, reason="x")
    assert report.failed and "nothing to kill" in report.failed[0]
