"""Facts of this process that the I/O-free cores are given, never read themselves.

Decisions use monotonic_ms (CLOCK_MONOTONIC: never jumps with NTP or an operator's `date`);
wall_ms is written into blocks and shown to humans only. A generation names one start of a
process (daemon or MMP holder): random so that a restart is told apart from a slow beat.
claim_local_name is how processes of this host keep out of each other's way without lock files.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import time

GENERATION_BITS = 63  # fits signed 64-bit consumers too; never 0 (0 means "none" on disk)


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def new_generation() -> int:
    while True:
        gen = int.from_bytes(os.urandom(8), "little") & ((1 << GENERATION_BITS) - 1)
        if gen:
            return gen


def claim_local_name(scope: str) -> socket.socket:
    """Bind the abstract unix socket name for `scope`: one holder on this host at a time.

    Our lock primitive instead of fcntl/flock (banned here: they mean nothing across hosts and
    invite the mistake of trusting them there). The kernel frees the name when the socket is
    closed or the process dies, however it dies, and no file is left behind. Abstract names
    are per network namespace: processes meant to exclude each other must share one.
    Raises OSError, errno EADDRINUSE while another socket holds the name.
    """
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.bind(_local_name(scope))
        s.listen(1)  # so a contender can ask who holds it (local_name_holder)
    except OSError:
        s.close()
        raise
    return s


def _local_name(scope: str) -> bytes:
    digest = hashlib.sha256(scope.encode()).hexdigest()[:32]  # abstract names: at most 107 bytes
    return f"\0diskhb-{digest}".encode()


def local_name_holder(scope: str) -> tuple[int, int] | None:
    """(pid, uid) of the process holding `scope`'s name, or None if nobody answers.

    Any local user can bind an abstract name; a holder that is not us (another uid) is a
    squatter to be named, not a diskhb process to wait for."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.settimeout(1.0)
            c.connect(_local_name(scope))
            pid, uid, _gid = struct.unpack("3i", c.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                              struct.calcsize("3i")))
            return pid, uid
    except OSError:
        return None


def net_namespace() -> str:
    """This process's network namespace ("net:[inode]"): abstract names live in it."""
    try:
        return os.readlink("/proc/self/ns/net")
    except OSError:
        return "net:[?]"


# -- Heartbeat's "locked into memory and soft realtime" ---------------------------------------------

MCL_CURRENT, MCL_FUTURE = 1, 2
SCHED_POLICIES = {"rr": "SCHED_RR", "fifo": "SCHED_FIFO", "off": None}
RT_PRIORITY_DEFAULT = 10  # above every normal task, far below the kernel's own RT threads (50+)
OOM_SCORE_ADJ_DEFAULT = -900  # the OOM killer picks us last (-1000 would make us unkillable)


def harden(*, mlock: bool, sched: str, rt_priority: int, oom_score_adj: int) -> list[str]:
    """Lock memory, give the calling thread (the daemon's loop) a realtime policy, lower our OOM
    score. Each step may be refused (no CAP_IPC_LOCK, no CAP_SYS_NICE, a container): the returned
    lines say what we got and what not, for the start-up log; nothing here is fatal."""
    import ctypes

    out = []
    if mlock:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mlockall(MCL_CURRENT | MCL_FUTURE) == 0:
            out.append("memory locked (mlockall)")
        else:
            out.append(f"memory NOT locked: mlockall failed ({os.strerror(ctypes.get_errno())})")
    policy = SCHED_POLICIES[sched]
    if policy is not None:
        try:
            # 0: this thread only; RESET_ON_FORK: threads and processes it starts (I/O workers, loss
            # actions) are not realtime (a busy one must never starve the host).
            os.sched_setscheduler(0, getattr(os, policy) | os.SCHED_RESET_ON_FORK, os.sched_param(rt_priority))
            out.append(f"loop thread {policy} priority {rt_priority}")
        except OSError as e:
            out.append(f"loop thread NOT realtime: {policy} refused ({e.strerror})")
    else:
        out.append("loop thread not realtime (sched = \"off\")")
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(oom_score_adj))
        out.append(f"oom_score_adj {oom_score_adj}")
    except OSError as e:
        out.append(f"oom_score_adj NOT set: {e.strerror}")
    return out
