"""A child process in a session and process group of its own, bounded in time and output.

What the notification hooks (diskhb.hooks.runner), the fence agents (diskhb.fencing.agent) and the
loss actions (diskhb.mmp.loss) share: feed stdin and read the pipes without ever blocking
(communicate), keep at most a limit of what a child writes (Output), stop its whole group
(SIGTERM, SIGKILL after KILL_GRACE_S, never waiting longer than REAP_WAIT_S after that), and tell
whether anything is left of a group (group_gone: zombies are dead, only not reaped yet).
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable

DRAIN_BYTES_MAX = 1 << 20  # read after the child exited (what its children still write), then stop reading
KILL_GRACE_S = 1.0  # SIGTERM -> SIGKILL
REAP_WAIT_S = 1.0  # after SIGKILL: longer is a process stuck in the kernel, left behind
POLL_S = 0.1  # a running child notices a stop_at() this fast
PROC_PIDS_MAX = 1 << 20  # /proc entries looked at for what is left of a group (pid_max is 4M at most)


class Output:
    """What a child wrote on one pipe, bounded: its first `limit` bytes, or with tail=True its last
    (where a program says why it failed)."""

    def __init__(self, limit: int, tail: bool = False):
        self.limit = limit
        self.tail = tail
        self.kept = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        if self.tail:
            self.kept += chunk[-self.limit:]
            over = len(self.kept) - self.limit
            if over > 0:
                del self.kept[:over]
            self.dropped += max(0, len(chunk) - self.limit) + max(0, over)
            return
        room = self.limit - len(self.kept)
        self.kept += chunk[:room]
        self.dropped += max(0, len(chunk) - room)


def communicate(p: subprocess.Popen, data: bytes, outs: dict[int, Output], deadline: float,
                 stop_at: Callable[[], float | None]) -> bool:
    """Feed stdin, collect output (each pipe's fd into its Output) until the process exits (True)
    or the deadline (False)."""
    wfd = p.stdin.fileno()
    for fd in outs:
        os.set_blocking(fd, False)
    os.set_blocking(wfd, False)
    pending = memoryview(data)
    try:
        pidfd = os.pidfd_open(p.pid)  # exit as an event (Linux 5.3+); else polled
    except (AttributeError, OSError):
        pidfd = None
    with selectors.DefaultSelector() as sel:
        for fd in outs:
            sel.register(fd, selectors.EVENT_READ)
        sel.register(wfd, selectors.EVENT_WRITE)
        if pidfd is not None:
            sel.register(pidfd, selectors.EVENT_READ)
        try:
            while p.poll() is None:
                limit = deadline
                stop = stop_at()
                if stop is not None:
                    limit = min(limit, stop)
                left = limit - time.monotonic()
                if left <= 0:
                    return False
                for key, _ in sel.select(min(left, POLL_S)):
                    if key.fd in outs:
                        chunk = _read(key.fd)
                        if chunk:
                            outs[key.fd].add(chunk)
                        elif chunk is not None:  # EOF: only the exit is left to wait for
                            sel.unregister(key.fd)
                    elif key.fd == wfd:
                        try:
                            pending = pending[os.write(wfd, pending):]
                        except BrokenPipeError:  # the child does not read stdin: its choice
                            pending = pending[:0]
                        if not pending:
                            sel.unregister(wfd)
                            p.stdin.close()
            drained = 0
            for fd, out in outs.items():
                while drained < DRAIN_BYTES_MAX:  # what is already in the pipe; nothing is waited for
                    chunk = _read(fd)
                    if not chunk:
                        break
                    drained += len(chunk)
                    out.add(chunk)
            return True
        finally:
            if pidfd is not None:
                os.close(pidfd)


def _read(fd: int) -> bytes | None:
    """A chunk, b"" at EOF, None when nothing is there now."""
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def unprotect(pid: int) -> None:
    """The daemon's oom_score_adj (-900) is inherited: a child gets the default back. Right after
    the start (a child forking at once may pass -900 on to its own: a small window, accepted for
    not running Python between fork and exec in a threaded process)."""
    try:
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write("0")
    except OSError:
        pass


def group_gone(pgid: int) -> bool:
    """No live process left in the group. Zombies do not count: they are dead, only not reaped
    yet by init (some container inits reap late), and they hold the group id until then."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        pids = os.listdir("/proc")
    except OSError:
        return False
    for name in pids[:PROC_PIDS_MAX]:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()  # after "pid (comm)": state ppid pgrp ...
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[0] != b"Z" and fields[2] == str(pgid).encode():
            return False
    return True


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_group(p: subprocess.Popen, pgid: int) -> str:
    """SIGTERM the child's process group, SIGKILL after KILL_GRACE_S; never waits for longer than
    REAP_WAIT_S after the kill. The leader is reaped (poll) before the group is probed."""
    _killpg(pgid, signal.SIGTERM)
    end = time.monotonic() + KILL_GRACE_S
    while time.monotonic() < end:
        if p.poll() is not None and group_gone(pgid):
            return "stopped by SIGTERM"
        time.sleep(0.05)
    _killpg(pgid, signal.SIGKILL)
    end = time.monotonic() + REAP_WAIT_S
    while time.monotonic() < end:
        if p.poll() is not None and group_gone(pgid):
            return f"SIGKILL after {KILL_GRACE_S:g} s"
        time.sleep(0.05)
    return (f"SIGKILL after {KILL_GRACE_S:g} s did not end it within {REAP_WAIT_S:g} s (stuck in the kernel?):"
            " left behind")


def signame(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"signal {n}"
