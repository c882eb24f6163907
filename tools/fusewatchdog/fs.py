"""The FUSE side of fusewatchdog: a user-space watchdog device with the Linux watchdog API.

    <mountpoint>/watchdog   open arms it; any write is a keepalive ('V' in it allows a magic
                            close); ioctl WDIOC_GETSUPPORT, WDIOC_SETTIMEOUT, WDIOC_GETTIMEOUT,
                            WDIOC_KEEPALIVE, WDIOC_GETTIMELEFT; close without 'V' keeps it armed
    <mountpoint>/.state     read: armed, fired, timeout_s, keepalives, opens, magic_closes;
                            write "reset_pid=N": the process to kill on expiry

On expiry it "resets the node": SIGKILL to --reset-pid (give it the init process of the test
node's PID namespace and the kernel kills every process in it), logged, `fired` counted. The
machine this project is tested on has no /dev/watchdog, no softdog and no CUSE; the daemon's
code path is the same for this device and a real one (diskhb.watchdog).

Rules of this file:
- One opener at a time (EBUSY), as the kernel's watchdog core.
- The expiry is checked every CHECK_MS by one thread, against CLOCK_MONOTONIC: a reset comes
  at most CHECK_MS late, never early.
- Signals are taken by one thread with sigwait (as in tools/faultdisk): SIGTERM disarms,
  unmounts and exits.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import stat
import struct
import sys
import threading
import time

import mfusepy

from diskhb.watchdog import (WDIOC_GETSUPPORT, WDIOC_GETTIMEOUT, WDIOC_KEEPALIVE, WDIOC_SETTIMEOUT, WDIOF_KEEPALIVEPING,
                             WDIOF_MAGICCLOSE, WDIOF_SETTIMEOUT)

WDIOC_GETTIMELEFT = 0x8004570A
IDENTITY = b"diskhb FUSE watchdog"
CHECK_MS = 20
EXIT_AFTER_UNMOUNT_S = 0.5
TIMEOUT_S_DEFAULT = 60  # softdog's default
TIMEOUT_S_MAX = 3600
SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def log(msg: str) -> None:
    print(f"fusewatchdog[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)


class Dog:
    """The timer and its state; thread-safe."""

    def __init__(self, reset_pid: int | None):
        self.reset_pid = reset_pid
        self.lock = threading.Lock()
        self.timeout_s = TIMEOUT_S_DEFAULT
        self.armed = False
        self.open = False
        self.expect_close = False
        self.deadline = 0.0
        self.counters = {"fired": 0, "keepalives": 0, "opens": 0, "magic_closes": 0}

    def ping(self) -> None:
        self.deadline = time.monotonic() + self.timeout_s
        self.counters["keepalives"] += 1

    def check(self) -> None:
        with self.lock:
            if not self.armed or time.monotonic() < self.deadline:
                return
            self.armed = False
            self.counters["fired"] += 1
        log(f"expired (timeout {self.timeout_s} s): resetting the node (SIGKILL to pid {self.reset_pid})")
        if self.reset_pid:
            try:
                os.kill(self.reset_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def state(self) -> bytes:
        with self.lock:
            items = {"armed": int(self.armed), "timeout_s": self.timeout_s, "reset_pid": self.reset_pid or 0,
                     **self.counters}
        return ("".join(f"{k}={v}\n" for k, v in items.items())).encode()


class WatchdogFS(mfusepy.Operations):
    use_ns = True

    def __init__(self, dog: Dog):
        self.dog = dog

    def getattr(self, path, fh=None):
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
        if path in ("/watchdog", "/.state"):
            return {"st_mode": stat.S_IFREG | 0o600, "st_nlink": 1,
                    "st_size": 0 if path == "/watchdog" else 4096}
        raise mfusepy.FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        return [".", "..", "watchdog", ".state"]

    def open(self, path, flags):
        if path == "/.state":
            return 0
        if path != "/watchdog":
            raise mfusepy.FuseOSError(errno.ENOENT)
        d = self.dog
        with d.lock:
            if d.open:
                raise mfusepy.FuseOSError(errno.EBUSY)
            d.open, d.armed, d.expect_close = True, True, False
            d.counters["opens"] += 1
            d.ping()
        return 1

    def read(self, path, size, offset, fh):
        if path != "/.state":
            raise mfusepy.FuseOSError(errno.EINVAL)
        return self.dog.state()[offset: offset + size]

    def write(self, path, data, offset, fh):
        d = self.dog
        if path == "/.state":
            key, _, value = data.decode("ascii", "replace").strip().partition("=")
            if key != "reset_pid" or not value.isdigit():
                raise mfusepy.FuseOSError(errno.EINVAL)
            with d.lock:
                d.reset_pid = int(value)
            return len(data)
        if path != "/watchdog":
            raise mfusepy.FuseOSError(errno.EBADF)
        with d.lock:
            d.expect_close = b"V" in data
            d.ping()
        return len(data)

    def truncate(self, path, length, fh=None):
        return 0

    def release(self, path, fh):
        if path != "/watchdog":
            return 0
        d = self.dog
        with d.lock:
            d.open = False
            if d.expect_close:
                d.armed = False
                d.counters["magic_closes"] += 1
                why = "disarmed (magic close)"
            else:
                why = "closed without magic close: stays armed" if d.armed else "closed"
        log(why)
        return 0

    def ioctl(self, path, cmd, arg, fh, flags, data):
        cmd &= 0xFFFFFFFF
        d = self.dog
        val = ctypes.cast(data, ctypes.POINTER(ctypes.c_int)) if data else None
        with d.lock:
            if cmd == WDIOC_GETSUPPORT:
                info = struct.pack("=II32s", WDIOF_SETTIMEOUT | WDIOF_MAGICCLOSE | WDIOF_KEEPALIVEPING, 1, IDENTITY)
                ctypes.memmove(data, info, len(info))
                return 0
            if cmd == WDIOC_KEEPALIVE:
                d.ping()
                return 0
            if cmd == WDIOC_SETTIMEOUT:
                if not 1 <= val[0] <= TIMEOUT_S_MAX:
                    raise mfusepy.FuseOSError(errno.EINVAL)
                d.timeout_s = val[0]
                d.ping()  # the kernel's watchdog core pings on a new timeout too
                val[0] = d.timeout_s
                return 0
            if cmd == WDIOC_GETTIMEOUT:
                val[0] = d.timeout_s
                return 0
            if cmd == WDIOC_GETTIMELEFT:
                val[0] = max(0, int(d.deadline - time.monotonic())) if d.armed else 0
                return 0
        raise mfusepy.FuseOSError(errno.ENOTTY)


def serve(mountpoint: str, reset_pid: int | None, die_with_parent: bool) -> int:
    if die_with_parent:  # a killed test leaves no mount behind (the parent is the test process)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    dog = Dog(reset_pid)
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)  # inherited by every thread started below
    stop = threading.Event()

    def checker() -> None:
        while not stop.wait(CHECK_MS / 1000):
            dog.check()

    def signals() -> None:
        sig = signal.sigwait(SIGNALS)
        log(f"signal {sig}: disarming and unmounting")
        with dog.lock:
            dog.armed = False
        stop.set()
        os.spawnlp(os.P_WAIT, "fusermount3", "fusermount3", "-u", "-z", mountpoint)
        time.sleep(EXIT_AFTER_UNMOUNT_S)  # after a lazy unmount the loop may never end (faultdisk's lesson)
        os._exit(0)

    threading.Thread(target=checker, daemon=True, name="expiry").start()
    threading.Thread(target=signals, daemon=True, name="signals").start()
    log(f"serving {mountpoint}/watchdog (reset pid {reset_pid})")
    mfusepy.FUSE(WatchdogFS(dog), mountpoint, foreground=True, nothreads=False, direct_io=True, fsname="fusewatchdog")
    stop.set()
    log("unmounted")
    return 0
