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

from tools.fuseproc import FuseProcess, no_follow_abspath


class FuseWatchdog(FuseProcess):
    """Run fusewatchdog as a subprocess for the life of a `with` block (or start()/close());
    tools.fuseproc: it dies with the thread that started it, so no mount outlives a test."""

    name = "fusewatchdog"

    def __init__(self, mountpoint: str):
        mountpoint = no_follow_abspath(mountpoint)
        super().__init__(mountpoint, os.path.join(mountpoint, "watchdog"))
        self.path = self.ready_path
        self.state_path = os.path.join(self.mountpoint, ".state")

    def command(self) -> list[str]:
        return ["-m", "tools.fusewatchdog", self.mountpoint, "--die-with-parent"]

    def set_reset_pid(self, pid: int) -> None:
        with open(self.state_path, "w") as f:
            f.write(f"reset_pid={pid}\n")

    def state(self) -> dict[str, int]:
        with open(self.state_path, "rb", buffering=0) as f:
            text = f.read(4096).decode()
        return {k: int(v) for k, _, v in (line.partition("=") for line in text.splitlines()) if k}
