"""A FUSE server of ours (tools.faultdisk, tools.fusewatchdog) run as a subprocess for the life of
a `with` block or start()/close(): started, waited for until it is mounted, and on close ended and
unmounted, each step bounded, twice-safe.

The subprocess dies with the thread that started it (--die-with-parent: PR_SET_PDEATHSIG), so a
killed test leaves no mount behind; start it from a thread that lives as long as the mount
should (a fixture, the main thread). Its log sits beside the mount point (a test's temp dir) and
is removed on close unless FAULTDISK_KEEP_LOG is set.

This module does not import mfusepy (the test process needs no libfuse).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
POLL_S = 0.01


def _unescape(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def no_follow_abspath(path: str) -> str:
    # realpath of the parent only: stat'ing the mount point itself would ask the FUSE daemon,
    # which may be the very thing that hangs
    path = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def mount_entry(mountpoint: str) -> dict | None:
    """The fuse mount at mountpoint from /proc/self/mountinfo (no FUSE request), or None."""
    target = no_follow_abspath(mountpoint)
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


def fusermount(mountpoint: str, lazy: bool) -> bool:
    args = ["fusermount3", "-u", *(["-z"] if lazy else []), mountpoint]
    try:
        return subprocess.run(args, capture_output=True, timeout=STOP_TIMEOUT_S).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class FuseProcess:
    """Subclasses say which module serves, with what arguments, and what path shows it is up."""

    name = "fuse"  # for messages and the log's name

    def __init__(self, mountpoint: str, ready_path: str, *, start_timeout_s: float = START_TIMEOUT_S,
                 stop_timeout_s: float = STOP_TIMEOUT_S):
        self.mountpoint = no_follow_abspath(mountpoint)
        self.ready_path = ready_path
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.proc: subprocess.Popen | None = None
        self.log_path: str | None = None
        self._made_mountpoint = False

    def command(self) -> list[str]:
        """The server's argv after the interpreter, ending with --die-with-parent."""
        raise NotImplementedError

    def before_stop(self, proc: subprocess.Popen) -> None:
        """Called before SIGTERM (faultdisk releases its hung requests here)."""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self):
        if not shutil.which("fusermount3") or not os.path.exists("/dev/fuse"):
            raise RuntimeError(f"{self.name} needs fusermount3 (Debian package fuse3) and /dev/fuse")
        if not os.path.isdir(self.mountpoint):
            os.makedirs(self.mountpoint)
            self._made_mountpoint = True
        fd, self.log_path = tempfile.mkstemp(prefix=f".{os.path.basename(self.mountpoint)}-{self.name}-",
                                             suffix=".log", dir=os.path.dirname(self.mountpoint))
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            self.proc = subprocess.Popen([sys.executable, *self.command()], stdin=subprocess.DEVNULL,
                                         stdout=fd, stderr=fd, env=env, cwd=ROOT)
        finally:
            os.close(fd)
        try:
            deadline = time.monotonic() + self.start_timeout_s
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log()[-2000:]}")
                if mount_entry(self.mountpoint) is not None and os.path.exists(self.ready_path):
                    return self
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} not mounted within {self.start_timeout_s:g} s: {self.log()[-2000:]}")
                time.sleep(POLL_S)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """End the server, unmount; bounded, and safe to call twice."""
        p = self.proc
        if p is not None and p.poll() is None:
            try:
                self.before_stop(p)
                p.send_signal(signal.SIGTERM)
                p.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()  # closing /dev/fuse aborts the connection: nothing stays hung
                try:
                    p.wait(self.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    pass
        if mount_entry(self.mountpoint) is not None:  # the process died without unmounting
            if not fusermount(self.mountpoint, lazy=False):
                fusermount(self.mountpoint, lazy=True)
        if self._made_mountpoint and mount_entry(self.mountpoint) is None:
            try:
                os.rmdir(self.mountpoint)
                self._made_mountpoint = False
            except OSError:
                pass
        if self.log_path and os.path.exists(self.log_path) and not os.environ.get("FAULTDISK_KEEP_LOG"):
            os.unlink(self.log_path)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def log(self) -> str:
        try:
            with open(self.log_path or "", errors="replace") as f:
                return f.read()
        except OSError:
            return ""
