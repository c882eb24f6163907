"""faultdisk: a FUSE disk that passes I/O through to an image file, and hangs or fails on demand.

Shell:
    python -m tools.faultdisk /var/tmp/disk.img /mnt/fd [--foreground]
    echo write=hang > /mnt/fd/.control      # writes block until the mode changes
    echo read=eio > /mnt/fd/.control        # reads fail with EIO
    echo all=slow:300 > /mnt/fd/.control    # every request takes 300 ms
    echo all=ok > /mnt/fd/.control          # hung requests go through now
    cat /mnt/fd/.control                    # modes and counters
    kill -USR1 PID                          # all=ok without going through FUSE
    kill PID  (or fusermount3 -u /mnt/fd)   # release (EIO), unmount, exit

Python (tests):
    with FaultDisk(backing, mountpoint) as fd:
        dev = BlockDevice.open(fd.path, writable=True)
        fd.set(write="hang"); fd.wait_hung("write"); ...; fd.set(all="ok")

This module does not import mfusepy (the test process needs no libfuse); fs.py does.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from tools.faultdisk.control import (  # noqa: F401 - re-exported
    ControlError, Mode, format_control, parse_control, parse_mode, parse_state,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
POLL_S = 0.01
DEFAULT_NAME = "disk.img"


def _unescape(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo
    import re

    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _no_follow_abspath(path: str) -> str:
    # realpath of the parent only: stat'ing the mount point itself would ask the FUSE daemon,
    # which may be the very thing that hangs
    path = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def mount_entry(mountpoint: str) -> dict | None:
    """The fuse mount at mountpoint from /proc/self/mountinfo (no FUSE request), or None."""
    target = _no_follow_abspath(mountpoint)
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    found = None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or not rfields:
            continue
        if _unescape(fields[4]) == target and rfields[0].startswith("fuse"):
            found = {"dev": fields[2], "fstype": rfields[0], "source": _unescape(rfields[1]) if len(rfields) > 1 else ""}
    return found  # the last one wins: it is the one on top


def _fusermount(mountpoint: str, lazy: bool) -> bool:
    args = ["fusermount3", "-u", *(["-z"] if lazy else []), mountpoint]
    try:
        return subprocess.run(args, capture_output=True, timeout=STOP_TIMEOUT_S).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class FaultDisk:
    """Run faultdisk as a subprocess for the life of a `with` block (or start()/close()).

    The subprocess dies with the thread that started it (PR_SET_PDEATHSIG: it then releases,
    unmounts and exits), so a killed test leaves no mount behind; start it from a thread that
    lives as long as the disk should (a fixture, the main thread).
    """

    def __init__(self, backing_path: str, mountpoint: str, *, name: str = DEFAULT_NAME,
                 start_timeout_s: float = START_TIMEOUT_S, stop_timeout_s: float = STOP_TIMEOUT_S):
        self.backing_path = os.path.abspath(backing_path)
        self.mountpoint = _no_follow_abspath(mountpoint)
        self.name = name
        self.path = os.path.join(self.mountpoint, name)
        self.control_path = os.path.join(self.mountpoint, ".control")
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.proc: subprocess.Popen | None = None
        self.log_path: str | None = None
        self._made_mountpoint = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> "FaultDisk":
        if not shutil.which("fusermount3") or not os.path.exists("/dev/fuse"):
            raise RuntimeError("faultdisk needs fusermount3 (Debian package fuse3) and /dev/fuse")
        if not os.path.isdir(self.mountpoint):
            os.makedirs(self.mountpoint)
            self._made_mountpoint = True
        # the log sits beside the mount point (a test's temp dir), so even a killed test leaves
        # nothing behind in /tmp
        fd, self.log_path = tempfile.mkstemp(prefix=f".{os.path.basename(self.mountpoint)}-faultdisk-",
                                             suffix=".log", dir=os.path.dirname(self.mountpoint))
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tools.faultdisk", self.backing_path, self.mountpoint,
                 "--foreground", "--name", self.name, "--die-with-parent"],
                stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, env=env, cwd=ROOT)
        finally:
            os.close(fd)
        try:
            deadline = time.monotonic() + self.start_timeout_s
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"faultdisk exited with {self.proc.returncode}: {self.log()[-2000:]}")
                if mount_entry(self.mountpoint) is not None and os.path.exists(self.path):
                    return self
                if time.monotonic() > deadline:
                    raise RuntimeError(f"faultdisk not mounted within {self.start_timeout_s:g} s: {self.log()[-2000:]}")
                time.sleep(POLL_S)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release hangs, unmount, end the process; bounded, and safe to call twice."""
        p = self.proc
        if p is not None and p.poll() is None:
            try:
                p.send_signal(signal.SIGUSR1)  # all=ok: hung requests complete normally
                p.send_signal(signal.SIGTERM)  # then: later requests EIO, unmount, exit
                p.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()  # closing /dev/fuse aborts the connection: nothing stays hung
                try:
                    p.wait(self.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    pass
        if mount_entry(self.mountpoint) is not None:  # the process died without unmounting
            if not _fusermount(self.mountpoint, lazy=False):
                _fusermount(self.mountpoint, lazy=True)
        if self._made_mountpoint and mount_entry(self.mountpoint) is None:
            try:
                os.rmdir(self.mountpoint)
                self._made_mountpoint = False
            except OSError:
                pass
        if self.log_path and os.path.exists(self.log_path) and not os.environ.get("FAULTDISK_KEEP_LOG"):
            os.unlink(self.log_path)

    def __enter__(self) -> "FaultDisk":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- control -----------------------------------------------------------------------------

    def set(self, read: str | Mode | None = None, write: str | Mode | None = None,
            all: str | Mode | None = None) -> None:  # noqa: A002 - mirrors the control language
        """Change modes, e.g. set(write="hang"), set(read="slow:200"), set(all="ok")."""
        text = format_control(read=read, write=write, all=all).encode()
        fd = os.open(self.control_path, os.O_WRONLY)
        try:
            os.write(fd, text)
        finally:
            os.close(fd)

    def state(self) -> dict:
        """Modes and counters: {'read': 'ok', 'write': 'hang', 'hung_write': 1, 'done_read': 3, ...}."""
        with open(self.control_path, "rb", buffering=0) as f:
            return parse_state(f.read(4096).decode())

    def wait_hung(self, kind: str, count: int = 1, timeout_s: float = 5.0) -> None:
        """Wait (bounded) until `count` requests of `kind` are held by a hang."""
        deadline = time.monotonic() + timeout_s
        while self.state()[f"hung_{kind}"] < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {kind} request hung within {timeout_s:g} s: {self.state()}")
            time.sleep(POLL_S)

    def release(self) -> None:
        """all=ok through a signal: works even when every FUSE thread is hung."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)

    def log(self) -> str:
        try:
            with open(self.log_path or "", errors="replace") as f:
                return f.read()
        except OSError:
            return ""
