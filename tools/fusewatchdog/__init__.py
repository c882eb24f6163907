"""fusewatchdog: a user-space watchdog device (the Linux watchdog API, served through FUSE) that
"resets" a test node on expiry by killing it. For tests on machines without /dev/watchdog,
softdog or CUSE; the daemon uses it exactly as a real device (diskhb.watchdog).

Shell:
    python -m tools.fusewatchdog /mnt/wd --reset-pid PID     # /mnt/wd/watchdog is the device
    cat /mnt/wd/.state                                        # armed, fired, timeout_s, ...
    echo reset_pid=1234 > /mnt/wd/.state                      # whom a reset kills
    kill PID                                                  # disarm, unmount, exit

Python (tests):
    with FuseWatchdog(mountpoint) as wd:
        wd.set_reset_pid(daemon.pid); ...; assert wd.state()["fired"] == 0

This module does not import mfusepy (the test process needs no libfuse); fs.py does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

from tools.faultdisk import ROOT, _fusermount, _no_follow_abspath, mount_entry

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
POLL_S = 0.01


class FuseWatchdog:
    """Run fusewatchdog as a subprocess for the life of a `with` block (or start()/close());
    it dies with the thread that started it (PR_SET_PDEATHSIG), so no mount outlives a test."""

    def __init__(self, mountpoint: str):
        self.mountpoint = _no_follow_abspath(mountpoint)
        self.path = os.path.join(self.mountpoint, "watchdog")
        self.state_path = os.path.join(self.mountpoint, ".state")
        self.proc: subprocess.Popen | None = None
        self.log_path: str | None = None
        self._made_mountpoint = False

    def start(self) -> "FuseWatchdog":
        if not os.path.isdir(self.mountpoint):
            os.makedirs(self.mountpoint)
            self._made_mountpoint = True
        fd, self.log_path = tempfile.mkstemp(prefix=".fusewatchdog-", suffix=".log",
                                             dir=os.path.dirname(self.mountpoint))
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "tools.fusewatchdog", self.mountpoint,
                                          "--die-with-parent"], stdin=subprocess.DEVNULL, stdout=fd, stderr=fd,
                                         env=env, cwd=ROOT)
        finally:
            os.close(fd)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while mount_entry(self.mountpoint) is None or not os.path.exists(self.path):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"fusewatchdog exited with {self.proc.returncode}: {self.log()[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"fusewatchdog not mounted within {START_TIMEOUT_S:g} s: {self.log()[-2000:]}")
                time.sleep(POLL_S)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Disarm, unmount, end the process; bounded, and safe to call twice."""
        p = self.proc
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                p.kill()
                try:
                    p.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    pass
        if mount_entry(self.mountpoint) is not None and not _fusermount(self.mountpoint, lazy=False):
            _fusermount(self.mountpoint, lazy=True)
        if self._made_mountpoint and mount_entry(self.mountpoint) is None:
            try:
                os.rmdir(self.mountpoint)
                self._made_mountpoint = False
            except OSError:
                pass
        if self.log_path and os.path.exists(self.log_path) and not os.environ.get("FAULTDISK_KEEP_LOG"):
            os.unlink(self.log_path)

    def __enter__(self) -> "FuseWatchdog":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def set_reset_pid(self, pid: int) -> None:
        with open(self.state_path, "w") as f:
            f.write(f"reset_pid={pid}\n")

    def state(self) -> dict[str, int]:
        with open(self.state_path, "rb", buffering=0) as f:
            text = f.read(4096).decode()
        return {k: int(v) for k, _, v in (line.partition("=") for line in text.splitlines()) if k}

    def log(self) -> str:
        try:
            with open(self.log_path or "", errors="replace") as f:
                return f.read()
        except OSError:
            return ""
