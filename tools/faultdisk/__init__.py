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
import signal
import subprocess
import time

from tools.faultdisk.control import (  # noqa: F401 - re-exported
    ControlError, Mode, format_control, parse_control, parse_mode, parse_state,
)
from tools.fuseproc import ROOT, START_TIMEOUT_S, FuseProcess, fusermount, mount_entry, no_follow_abspath  # noqa: F401

POLL_S = 0.01
DEFAULT_NAME = "disk.img"


class FaultDisk(FuseProcess):
    """Run faultdisk as a subprocess for the life of a `with` block (or start()/close());
    tools.fuseproc: it dies with the thread that started it, so a killed test leaves no mount."""

    name = "faultdisk"

    def __init__(self, backing_path: str, mountpoint: str, *, name: str = DEFAULT_NAME, **timeouts):
        mountpoint = no_follow_abspath(mountpoint)
        super().__init__(mountpoint, os.path.join(mountpoint, name), **timeouts)
        self.backing_path = os.path.abspath(backing_path)
        self.name_in_mount = name
        self.path = self.ready_path
        self.control_path = os.path.join(self.mountpoint, ".control")

    def command(self) -> list[str]:
        return ["-m", "tools.faultdisk", self.backing_path, self.mountpoint, "--foreground", "--name",
                self.name_in_mount, "--die-with-parent"]

    def before_stop(self, proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGUSR1)  # all=ok: hung requests complete normally; then SIGTERM EIOs the rest

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
