"""Loss actions (diskhb/mmp/loss.py) on real processes and, as root, a real ext4 mount."""

from __future__ import annotations

import builtins
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from diskhb.mmp.loss import LOST, LossAction, check_mountpoint, kill_writers, mount_users, on_lost, run_loss_action


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


# -- finding a mountpoint's users from /proc alone ----------------------------------------------

MAPPER = """
import mmap, sys, time
with open(sys.argv[1], "rb") as f:
    m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)  # the file stays mapped, its fd is closed
print("mapped", flush=True)
time.sleep(60)
"""
HOLD_OPEN = 'exec 3<"$1"; exec sleep 60'  # sleep with fd 3 open on the file, cwd elsewhere

PATH_CALLS = [(os, "stat"), (os, "lstat"), (os, "statvfs"), (os, "access"), (os, "listdir"), (os, "scandir"),
              (os, "readlink"), (os, "open"), (os, "chdir"), (os.path, "ismount"), (os.path, "realpath"),
              (os.path, "exists"), (os.path, "isdir"), (os.path, "islink"), (builtins, "open")]


def _forbid_paths_under(monkeypatch, *roots: str) -> list:
    """Every path-taking call that could reach a filesystem raises for a path at or below one
    of `roots` (and is recorded): proof that a check went through /proc and mountinfo only."""
    touched: list = []

    def under(path) -> bool:
        try:
            path = os.fsdecode(os.fspath(path))
        except TypeError:
            return False  # an fd
        return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)

    def guard(real, name):
        def call(*args, **kwargs):
            path = args[0] if args else kwargs.get("path", kwargs.get("file"))
            if path is not None and under(path):
                touched.append((name, path))
                raise AssertionError(f"{name}({path!r}): touched a guarded mountpoint")
            return real(*args, **kwargs)
        return call

    for module, name in PATH_CALLS:
        monkeypatch.setattr(module, name, guard(getattr(module, name), f"{module.__name__}.{name}"))
    return touched


def _until_found(scan, expected: set[int], timeout_s: float = 5.0) -> set[int]:
    """Scan until every expected process is seen (they need a moment to open, map, chdir)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = scan()
        if found >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def _end(procs) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(5)


def _umount(path: str) -> None:
    for _ in range(50):  # a killed process may need a moment to let go
        if subprocess.run(["umount", path], capture_output=True, timeout=30).returncode == 0:
            return
        time.sleep(0.1)
    subprocess.run(["umount", "-l", path], capture_output=True, timeout=30)


def test_check_mountpoint_refuses_root_relative_paths_and_non_mount_points(disk_tmp_path, monkeypatch):
    touched = _forbid_paths_under(monkeypatch, disk_tmp_path)
    for root in ("/", "//", "/.", "/tmp/..", "relative/path", ""):
        assert "must be an absolute mount point other than /" in check_mountpoint(root), root
    for plain in (disk_tmp_path, os.path.join(disk_tmp_path, "nope"), disk_tmp_path + "/"):
        assert "is not a mount point" in check_mountpoint(plain), plain
        assert mount_users(plain) == set()
    assert touched == []


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a tmpfs")
def test_mount_users_finds_open_mapped_and_cwd_users_through_a_bind_mount(disk_tmp_path, monkeypatch):
    """Each user reaches the filesystem only through a bind mount of a subdirectory: an open
    file (found by fdinfo's mnt_id: the bind mount's id is one of the device's), a mapped file
    whose fd is closed (maps' major:minor), a cwd (readlink, resolved in mountinfo). Not one
    stat, listdir or realpath on or below either mount point or a symlink to one."""
    mnt, bind, link = (os.path.join(disk_tmp_path, x) for x in ("srv", "bind", "link"))
    os.makedirs(mnt)
    os.makedirs(bind)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "diskhb-test", mnt], check=True, timeout=30)
    procs: list[subprocess.Popen] = []
    bound = False
    try:
        os.makedirs(os.path.join(mnt, "sub"))
        for name in ("open.dat", "mapped.dat"):
            with open(os.path.join(mnt, "sub", name), "wb") as f:
                f.write(b"x" * 4096)
        subprocess.run(["mount", "--bind", os.path.join(mnt, "sub"), bind], check=True, timeout=30)
        bound = True
        os.symlink(mnt, link)
        procs.append(subprocess.Popen(["sh", "-c", HOLD_OPEN, "sh", os.path.join(bind, "open.dat")], cwd="/",
                                      start_new_session=True))
        procs.append(subprocess.Popen([sys.executable, "-c", MAPPER, os.path.join(bind, "mapped.dat")], cwd="/",
                                      stdout=subprocess.PIPE, start_new_session=True))
        assert procs[-1].stdout.readline() == b"mapped\n"
        procs.append(subprocess.Popen(["sleep", "60"], cwd=bind, start_new_session=True))
        procs.append(subprocess.Popen(["sleep", "60"], cwd="/", start_new_session=True))
        opener, mapper, inside, bystander = procs
        expected = {opener.pid, mapper.pid, inside.pid}
        touched = _forbid_paths_under(monkeypatch, mnt, bind, link)
        assert _until_found(lambda: mount_users(mnt), expected) == expected
        assert mount_users(bind) == expected  # by device: either mount point names the same users
        assert mount_users(bind + "/") == expected
        assert check_mountpoint(mnt) is None and check_mountpoint(bind) is None
        assert "is not a mount point" in check_mountpoint(os.path.join(mnt, "sub"))  # a directory inside
        assert "is not a mount point" in check_mountpoint(link)  # a symlink to one is not followed
        assert mount_users(link) == set()
        assert touched == []
    finally:
        monkeypatch.undo()
        _end(procs)
        if bound:
            _umount(bind)
        _umount(mnt)


@pytest.mark.root
def test_the_scan_answers_while_the_filesystem_hangs(make_faultdisk):
    """A real hang: the FUSE daemon behind a faultdisk mount is SIGSTOPped, so every request to
    that filesystem (a stat of its mount point, a statfs) blocks until SIGCONT. check_mountpoint
    and mount_users still answer at once, and find a process with a file open on it and one
    with its cwd there."""
    fd = make_faultdisk()
    procs = [subprocess.Popen(["sh", "-c", HOLD_OPEN, "sh", fd.path], cwd="/", start_new_session=True),
             subprocess.Popen(["sleep", "60"], cwd=fd.mountpoint, start_new_session=True)]
    expected = {p.pid for p in procs}
    probe = None
    try:
        assert _until_found(lambda: mount_users(fd.mountpoint), expected) == expected
        os.kill(fd.pid, signal.SIGSTOP)
        probe = threading.Thread(target=os.statvfs, args=(fd.mountpoint,), daemon=True)
        probe.start()
        probe.join(0.5)
        assert probe.is_alive(), "the premise: a request to this filesystem now hangs"
        answer: dict = {}

        def scan() -> None:
            answer["check"] = check_mountpoint(fd.mountpoint)
            answer["users"] = mount_users(fd.mountpoint)

        t0 = time.monotonic()
        scanner = threading.Thread(target=scan, daemon=True)
        scanner.start()
        scanner.join(5)
        took_s = time.monotonic() - t0
        assert not scanner.is_alive(), "the scan hung on the filesystem"
        assert answer == {"check": None, "users": expected}
        assert took_s < 2.0, took_s
    finally:
        os.kill(fd.pid, signal.SIGCONT)  # the hung probe completes, the fixture can unmount
        if probe is not None:
            probe.join(5)
        _end(procs)
