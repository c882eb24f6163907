"""The `mmp run` sentinel: kills the command's process group when the guard stops renewing.

Why: a guard process that is frozen (SIGSTOP, debugger, swapped out) cannot run its own loss
action, yet the command it guards keeps writing. sanlock has wdmd and a hardware watchdog for
this; `mmp run` has this small process, in its own session, so a signal or a stop aimed at
the guard does not reach it. After each successful bump the guard sends the time (CLOCK_
MONOTONIC ms, the same clock in every process of the host) until which the lease is valid:
its H1 deadline plus half an interval (another node may take over only from 2 x interval +
1 s after our last write; H1 is interval + 1 s). If that moment passes with no newer one, or
the guard's end of the pipe closes without "done" (the guard died), the whole process group
of the command gets SIGKILL at once.

Protocol on the pipe (one line each): "D <deadline_ms>" | "done". Stdlib only (starts fast).
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time


def _now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def _kill(pgid: int, why: str) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
        what = "killed"
    except ProcessLookupError:
        what = "found already gone"
    msg = f"diskhb: CRITICAL: mmp run sentinel: {why}; process group {pgid} {what}"
    try:
        import syslog

        syslog.openlog("diskhb", syslog.LOG_PID, syslog.LOG_DAEMON)
        syslog.syslog(syslog.LOG_CRIT, msg)
    except Exception:  # noqa: BLE001
        pass
    print(msg, file=sys.stderr, flush=True)


def watch(fd: int, pgid: int, deadline_ms: int) -> int:
    buf = b""
    while True:
        left = deadline_ms - _now_ms()
        if left <= 0:
            _kill(pgid, "the guard did not renew the lease in time (frozen or hung?)")
            return 1
        ready, _, _ = select.select([fd], [], [], left / 1000)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            _kill(pgid, "the guard went away without releasing")
            return 1
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line == b"done":
                return 0
            if line.startswith(b"D "):
                deadline_ms = int(line[2:])


def main(argv: list[str]) -> int:
    fd, pgid, deadline_ms = int(argv[0]), int(argv[1]), int(argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the guard's business
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return watch(fd, pgid, deadline_ms)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
