"""The lease enforcer (diskhb/mmp/sentinel.py) on a real ext4 filesystem on a loop device.

A writer process appends its CLOCK_MONOTONIC ms to a file on the mount every ~5 ms. A holder
process (HOLDER below) starts an Enforcer with a deadline LEASE_MS ahead and renews it every
RENEW_MS, logging each deadline it sent. Then the holder is SIGKILLed (the enforcer must act at
once), SIGSTOPped (it must act at the deadline, not before), releases ("done": nothing happens)
or holds an `mmp run`-style command group (only that group is killed).

Caution, for whoever edits this file: a firing enforcer SIGKILLs every process using the mount,
this test process included. So the test never has a file on the mount open while an enforcer
may fire; it reads the writer's file only after the enforcer has exited.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from diskhb.mmp.sentinel import enforcer_budget_ms, mount_is_read_only, now_ms

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a loop device"),
    pytest.mark.skipif(not shutil.which("mkfs.ext4"), reason="needs mkfs.ext4 (Debian package e2fsprogs)"),
]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LEASE_MS = 400  # the holder's deadline is this far ahead of each renewal
RENEW_MS = 50
REMOUNT_TIMEOUT_MS = 1000
WAIT_S = 10.0  # for a process or file to get ready; generous on a loaded machine
EARLY_EPS_MS = 50  # (b): the writer's last line may precede the deadline by one writer pause

WRITER = """
import sys, time
with open(sys.argv[1], "a", buffering=1) as f:  # line-buffered: every line reaches the page cache
    for _ in range(200_000):  # bounded: ~20 minutes
        f.write(f"{time.monotonic_ns() // 1_000_000}\\n")
        time.sleep(0.005)
"""

HOLDER = """
import json, signal, subprocess, sys, time
from diskhb.mmp.sentinel import Enforcer, now_ms
cfg = json.loads(sys.argv[1])
log = open(cfg["log"], "a", buffering=1)
release = []
signal.signal(signal.SIGUSR1, lambda *_: release.append(1))
pgid = None
if cfg.get("group_pids"):  # an `mmp run`-style command: its own process group, a grandchild
    child = subprocess.Popen(["sh", "-c", f"sleep 60 & echo $$ $! > {cfg['group_pids']}; wait"],
                             process_group=0, cwd="/")
    pgid = child.pid
first = now_ms() + cfg["lease_ms"]
e = Enforcer.start(first, pgid=pgid, mountpoint=cfg.get("mnt"), remount_ro=cfg.get("remount_ro", False),
                   resource="ost0", remount_timeout_ms=cfg["remount_timeout_ms"])
log.write(f"enforcer {e.pid} {e.budget_ms}\\nD {first}\\n")
for _ in range(100_000):
    if release:
        break
    time.sleep(cfg["renew_ms"] / 1000)
    deadline = now_ms() + cfg["lease_ms"]
    e.renew(deadline)  # first the pipe, then the log: a logged deadline was sent
    log.write(f"D {deadline}\\n")
log.write(f"done {e.done()}\\n")
"""


# -- helpers ----------------------------------------------------------------------------------


def _gone(pid: int) -> bool:
    """Exited (a zombie counts: its files are closed), without waiting for a parent to reap."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2: stat.rfind(b")") + 3] in (b"Z", b"X")


def _until(pred, timeout_s: float, what: str, poll_s: float = 0.001):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def _lines(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def _deadlines(log: str) -> list[int]:
    return [int(x.split()[1]) for x in _lines(log) if x.startswith("D ")]


def _enforcer_pid(log: str) -> int | None:
    for line in _lines(log):
        if line.startswith("enforcer "):
            return int(line.split()[1])
    return None


def _kill_enforcer(pid: int | None) -> None:
    """Ours (our holder started it) and still there: end it. Checked by its command line, so a
    recycled pid is never hit."""
    if pid is None:
        return
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"diskhb.mmp.sentinel" not in f.read():
                return
        os.kill(pid, signal.SIGKILL)
    except (OSError, ProcessLookupError):
        pass


class Rig:
    """The writer, the holder, the enforcer they start; all ended by close()."""

    def __init__(self, tmp: str, mnt: str):
        self.tmp, self.mnt = tmp, mnt
        self.data = os.path.join(mnt, "writer.log")  # on the mount
        self.log = os.path.join(tmp, "holder.log")  # not on the mount
        self.err = os.path.join(tmp, "holder.err")
        self.group_pids = os.path.join(tmp, "group.pids")
        self.writer: subprocess.Popen | None = None
        self.holder: subprocess.Popen | None = None

    def start_writer(self) -> None:
        self.writer = subprocess.Popen([sys.executable, "-c", WRITER, self.data], cwd="/", start_new_session=True)
        # Reading the file is safe here: no enforcer runs yet.
        _until(lambda: len(_lines(self.data)) >= 3, WAIT_S, "the writer's first lines", poll_s=0.01)

    def start_holder(self, **cfg) -> None:
        cfg = {"log": self.log, "lease_ms": LEASE_MS, "renew_ms": RENEW_MS,
               "remount_timeout_ms": REMOUNT_TIMEOUT_MS, **cfg}
        env = {**os.environ, "PYTHONPATH": REPO}
        with open(self.err, "w") as err:
            self.holder = subprocess.Popen([sys.executable, "-c", HOLDER, json.dumps(cfg)], cwd="/", env=env,
                                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                           start_new_session=True)
        _until(lambda: len(_deadlines(self.log)) >= 3, WAIT_S, "the holder's first renewals", poll_s=0.01)

    @property
    def enforcer(self) -> int | None:
        return _enforcer_pid(self.log)

    def wait_enforcer_gone(self) -> None:
        _until(lambda: _gone(self.enforcer), WAIT_S, "the enforcer to exit")

    def critical(self) -> str:
        return "\n".join(x for x in _lines(self.err) if "CRITICAL" in x)

    def close(self) -> None:
        for p in (self.holder, self.writer):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGCONT)  # a stopped holder: SIGKILL ends it anyway
                p.kill()
            if p is not None:
                p.wait(10)
        _kill_enforcer(self.enforcer)
        for pid in (int(x) for x in " ".join(_lines(self.group_pids)).split()):
            if not _gone(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture
def ext4(loopdev, disk_tmp_path):
    """A fresh ext4 filesystem on a loop device, mounted read-write; unmounted afterwards."""
    dev = loopdev(size_bytes=32 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", dev], check=True, capture_output=True, timeout=60)
    mnt = os.path.join(disk_tmp_path, "ost0")
    os.mkdir(mnt)
    subprocess.run(["mount", dev, mnt], check=True, capture_output=True, timeout=30)
    try:
        yield mnt
    finally:
        for _ in range(50):  # a killed process may take a moment to let go of the mount
            if subprocess.run(["umount", mnt], capture_output=True, timeout=30).returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", mnt], capture_output=True, timeout=30)


@pytest.fixture
def rig(ext4, disk_tmp_path):
    r = Rig(disk_tmp_path, ext4)
    try:
        yield r
    finally:
        r.close()


def _watch_for_enforcement(rig: Rig, timeout_s: float) -> tuple[int, int]:
    """(ms when the writer was seen dead, ms when the mount was seen read-only), polled every ms.
    Only /proc and mountinfo are read: nothing on the mount."""
    dead_ms = ro_ms = None
    deadline = time.monotonic() + timeout_s
    while (dead_ms is None or ro_ms is None) and time.monotonic() < deadline:
        if dead_ms is None and rig.writer.poll() is not None:
            dead_ms = now_ms()
        if ro_ms is None and mount_is_read_only(rig.mnt):
            ro_ms = now_ms()
        time.sleep(0.001)
    assert dead_ms is not None and ro_ms is not None, \
        f"not enforced within {timeout_s} s (writer dead: {dead_ms}, read-only: {ro_ms}): {rig.critical()}"
    return dead_ms, ro_ms


def _assert_read_only(mnt: str) -> None:
    with pytest.raises(OSError) as e:
        with open(os.path.join(mnt, "after"), "w") as f:
            f.write("x")
    assert e.value.errno == errno.EROFS, e.value


# -- the cases --------------------------------------------------------------------------------


def test_a_killed_holder_makes_the_enforcer_act_at_once(rig):
    """(a) SIGKILL: the pipe closes without "done". The writer gets SIGKILL and the mount goes
    read-only at once: within the enforcer's budget of the kill, no waiting for the deadline."""
    rig.start_writer()
    rig.start_holder(mnt=rig.mnt, remount_ro=True)
    budget_ms = enforcer_budget_ms(True, True, REMOUNT_TIMEOUT_MS)
    last_deadline_ms = _deadlines(rig.log)[-1]
    kill_ms = now_ms()
    rig.holder.kill()
    dead_ms, ro_ms = _watch_for_enforcement(rig, WAIT_S)
    assert rig.writer.returncode == -signal.SIGKILL  # killed, not failed on EROFS
    assert ro_ms - kill_ms <= budget_ms, (ro_ms - kill_ms, budget_ms)
    assert dead_ms < last_deadline_ms, "it waited for the deadline instead of acting at once"
    rig.wait_enforcer_gone()
    _assert_read_only(rig.mnt)
    last_line_ms = int(_lines(rig.data)[-1])
    assert last_line_ms <= ro_ms
    crit = rig.critical()
    assert "went away without releasing" in crit and "SIGKILL to 1 process(es) using" in crit, crit
    assert f"{rig.mnt} remounted read-only" in crit, crit
    print(f"\n(a) after the holder's SIGKILL: writer's last line {last_line_ms - kill_ms:+d} ms, writer seen dead"
          f" {dead_ms - kill_ms:+d} ms, read-only seen {ro_ms - kill_ms:+d} ms (budget {budget_ms} ms;"
          f" the deadline was {last_deadline_ms - kill_ms:+d} ms)\n    {crit}")


def test_a_stopped_holder_makes_the_enforcer_act_at_the_deadline_not_before(rig):
    """(b) SIGSTOP right after a renewal: nothing happens until that renewal's deadline (the
    writer's last line is no earlier than deadline - EARLY_EPS_MS), then the writer is killed
    and the mount is read-only no later than deadline + budget."""
    rig.start_writer()
    rig.start_holder(mnt=rig.mnt, remount_ro=True)
    budget_ms = enforcer_budget_ms(True, True, REMOUNT_TIMEOUT_MS)
    seen = len(_deadlines(rig.log))
    _until(lambda: len(_deadlines(rig.log)) > seen, WAIT_S, "a fresh renewal")
    rig.holder.send_signal(signal.SIGSTOP)  # mid-sleep: the next renewal is ~RENEW_MS away
    stop_ms = now_ms()
    time.sleep(0.01)
    deadline_ms = _deadlines(rig.log)[-1]
    dead_ms, ro_ms = _watch_for_enforcement(rig, WAIT_S + LEASE_MS / 1000)
    assert rig.writer.returncode == -signal.SIGKILL
    assert dead_ms >= deadline_ms, f"the writer died {deadline_ms - dead_ms} ms before the deadline"
    assert ro_ms <= deadline_ms + budget_ms, (ro_ms - deadline_ms, budget_ms)
    rig.wait_enforcer_gone()
    _assert_read_only(rig.mnt)
    last_line_ms = int(_lines(rig.data)[-1])
    assert last_line_ms >= deadline_ms - EARLY_EPS_MS, f"the writer stopped {deadline_ms - last_line_ms} ms early"
    assert rig.holder.poll() is None, "the stopped holder is not a user of the mount: left alone"
    crit = rig.critical()
    assert "did not renew the lease by its deadline" in crit and "SIGKILL to 1 process(es) using" in crit, crit
    print(f"\n(b) relative to the last deadline: holder stopped {stop_ms - deadline_ms:+d} ms, writer's last line"
          f" {last_line_ms - deadline_ms:+d} ms, writer seen dead {dead_ms - deadline_ms:+d} ms, read-only seen"
          f" {ro_ms - deadline_ms:+d} ms (budget {budget_ms} ms)\n    {crit}")


def test_a_clean_release_leaves_everything_alone(rig):
    """(c) "done": the enforcer exits 0; past two leases the writer still writes, the mount is rw."""
    rig.start_writer()
    rig.start_holder(mnt=rig.mnt, remount_ro=True)
    rig.holder.send_signal(signal.SIGUSR1)
    assert rig.holder.wait(WAIT_S) == 0
    assert "done 0" in _lines(rig.log), _lines(rig.log)  # Enforcer.done() returned its exit code 0
    assert _gone(rig.enforcer)
    time.sleep(2 * LEASE_MS / 1000)
    assert rig.writer.poll() is None
    assert mount_is_read_only(rig.mnt) is False
    with open(os.path.join(rig.mnt, "after"), "w") as f:
        f.write("x")
    assert int(_lines(rig.data)[-1]) > now_ms() - 500, "the writer went on writing"
    assert rig.critical() == ""


def test_a_killed_holder_of_a_command_takes_the_command_group_along(rig):
    """(d) `mmp run`-style: the enforcer has only the command's process group (no mountpoint).
    The holder's SIGKILL kills the group, grandchild included (no PDEATHSIG here), at once; a
    writer on the mount outside the group is left alone and the mount stays read-write."""
    rig.start_writer()
    rig.start_holder(group_pids=rig.group_pids)
    pids = _until(lambda: [int(x) for x in " ".join(_lines(rig.group_pids)).split()][-2:] or None, WAIT_S,
                  "the command's pids")
    assert len(pids) == 2 and not any(_gone(p) for p in pids)
    kill_ms = now_ms()
    rig.holder.kill()
    _until(lambda: all(_gone(p) for p in pids), WAIT_S, "the command group to die")
    gone_ms = now_ms()
    assert gone_ms - kill_ms <= enforcer_budget_ms(False, False, 0) + 100, gone_ms - kill_ms
    rig.wait_enforcer_gone()
    assert rig.writer.poll() is None and mount_is_read_only(rig.mnt) is False
    crit = rig.critical()
    assert f"SIGKILL to process group {pids[0]}" in crit and "using" not in crit, crit
    print(f"\n(d) command group gone {gone_ms - kill_ms} ms after the holder's SIGKILL\n    {crit}")
