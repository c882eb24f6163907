"""The FUSE side of faultdisk: one file passed through to a backing image, with injected faults.

    <mountpoint>/disk.img   reads/writes go to the backing file (pread/pwrite), subject to the
                            read and write modes; opened with direct_io so the kernel does not
                            cache (O_DIRECT opens work; an O_DSYNC write is synced to the backing)
    <mountpoint>/.control   write 'write=hang', 'read=eio', 'all=ok', 'read=slow:200' ...;
                            read it for the modes and counters

Rules of this file:
- libfuse runs each request on its own worker thread (multi-threaded loop), so a request hung
  here never blocks the control file or the other direction. Workers are capped at
  FUSE_THREADS_MAX (libfuse 3.14's default of 10 was too few: ten hung requests made the
  control file unreachable). Beyond the cap SIGUSR1 is the out-of-band release (all=ok) that
  needs no FUSE thread.
- A hang is a wait on a condition variable, never a sleep: changing the mode wakes it, and the
  request is judged again under the new mode (ok -> done, eio -> EIO). Shutting down fails
  every waiting and later request with EIO, so no thread stays in here after unmount.
- Signals (SIGINT/SIGTERM/SIGHUP/SIGUSR1) are blocked in every thread and taken by one thread
  with sigwait: libfuse's own handlers would end the loop while a hung request is still inside
  a callback, and its exit joins that worker: a deadlock.
- The backing file's size is the device size: writes past it fail with ENOSPC, reads end at it.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import threading
import time

import mfusepy

from tools.faultdisk.control import KINDS, OK, ControlError, Mode, parse_control

HANG_MAX_S = 3600.0  # even a hang ends (with EIO) after an hour: nothing waits forever
UNMOUNT_TIMEOUT_S = 5.0
EXIT_AFTER_UNMOUNT_S = 0.5  # after a lazy unmount the loop may never end: exit, which aborts it
FUSE_THREADS_MAX = 64
SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1}


def log(msg: str) -> None:
    print(f"faultdisk[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)


class FaultState:
    """The two modes, the requests waiting on them, and counters. Thread-safe."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._modes: dict[str, Mode] = {k: OK for k in KINDS}
        self._generation = 0  # bumped on every change: wakes slow requests to re-judge
        self._closing = False
        self.counters = {f"{p}_{k}": 0 for p in ("done", "eio", "hung") for k in KINDS}
        self.counters["syncs"] = 0  # fdatasync/fsync of the backing file (O_DSYNC writes, fsync)

    def apply(self, changes: dict[str, Mode]) -> None:
        with self._cond:
            self._modes.update(changes)
            self._generation += 1
            self._cond.notify_all()

    def release(self) -> None:
        self.apply({k: OK for k in KINDS})

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def count(self, key: str) -> None:
        with self._cond:
            self.counters[key] += 1

    def describe(self) -> str:
        with self._cond:
            parts = [f"{k}={self._modes[k]}" for k in KINDS]
            parts += [f"{k}={v}" for k, v in self.counters.items()]
        return " ".join(parts) + "\n"

    def gate(self, kind: str) -> None:
        """Return when a `kind` request may go to the backing file; raise OSError(EIO) if not."""
        hang_deadline = time.monotonic() + HANG_MAX_S
        with self._cond:
            while True:
                if self._closing:
                    raise OSError(errno.EIO, "faultdisk is shutting down")
                mode = self._modes[kind]
                if mode.kind == "ok":
                    self.counters[f"done_{kind}"] += 1
                    return
                if mode.kind == "eio":
                    self.counters[f"eio_{kind}"] += 1
                    raise OSError(errno.EIO, f"injected {kind} error")
                if mode.kind == "hang":
                    self.counters[f"hung_{kind}"] += 1
                    try:
                        left = hang_deadline - time.monotonic()
                        woke = self._cond.wait_for(
                            lambda: self._closing or self._modes[kind].kind != "hang", timeout=max(0.0, left))
                    finally:
                        self.counters[f"hung_{kind}"] -= 1
                    if not woke:
                        raise OSError(errno.EIO, f"{kind} hung for {HANG_MAX_S:g} s")
                    continue
                assert mode.kind == "slow"
                gen = self._generation
                changed = self._cond.wait_for(lambda: self._closing or self._generation != gen,
                                              timeout=mode.delay_ms / 1000)
                if changed:
                    continue  # judged again under the new mode
                self.counters[f"done_{kind}"] += 1
                return


class FaultDiskFS(mfusepy.Operations):
    use_ns = True  # timestamps as integer ns (mfusepy's non-deprecated form)

    def __init__(self, backing_fd: int, name: str, state: FaultState):
        self.fd = backing_fd
        self.disk = "/" + name
        self.state = state
        self.started_ns = time.time_ns()

    def _size(self) -> int:
        return os.lseek(self.fd, 0, os.SEEK_END)  # works for files and block devices alike

    # -- metadata ----------------------------------------------------------------------------

    def getattr(self, path, fh=None):
        now = self.started_ns
        base = {"st_uid": os.getuid(), "st_gid": os.getgid(), "st_atime": now, "st_mtime": now,
                "st_ctime": now, "st_blksize": 4096}
        if path == "/":
            return {**base, "st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
        if path == self.disk:
            size = self._size()
            return {**base, "st_mode": stat.S_IFREG | 0o660, "st_nlink": 1, "st_size": size,
                    "st_blocks": -(-size // 512)}
        if path == "/.control":
            # size 0 like /proc files; reads are direct_io so the kernel does not stop at 0
            return {**base, "st_mode": stat.S_IFREG | 0o660, "st_nlink": 1, "st_size": 0}
        raise mfusepy.FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        if path != "/":
            raise mfusepy.FuseOSError(errno.ENOTDIR)
        return [".", "..", self.disk[1:], ".control"]

    def statfs(self, path):
        size = self._size()
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": size // 4096, "f_bfree": 0,
                "f_bavail": 0, "f_files": 2, "f_ffree": 0, "f_namemax": 255}

    def truncate(self, path, length, fh=None):
        if path == "/.control":
            return 0  # `echo x > .control` truncates first
        if path == self.disk and length == self._size():
            return 0
        raise mfusepy.FuseOSError(errno.EPERM)  # a disk does not change size

    # -- open / close ------------------------------------------------------------------------

    def open(self, path, fi):
        if path not in (self.disk, "/.control"):
            raise mfusepy.FuseOSError(errno.ENOENT)
        fi.direct_io = 1  # every read/write reaches us: no page cache between test and fault
        fi.keep_cache = 0
        fi.fh = 1 if path == self.disk else 2
        return 0

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        return 0

    def fsync(self, path, datasync, fh):
        # Not subject to the write mode: a fault belongs to the write itself (a slow:<ms>
        # write costs <ms> once, not once more for its fsync).
        if path == self.disk:
            self.state.count("syncs")
            (os.fdatasync if datasync else os.fsync)(self.fd)
        return 0

    # -- data --------------------------------------------------------------------------------

    def read(self, path, size, offset, fh):
        if path == "/.control":
            return self.state.describe().encode()[offset: offset + size]
        self.state.gate("read")
        end = self._size()
        if offset >= end:
            return b""
        return os.pread(self.fd, min(size, end - offset), offset)

    def write(self, path, data, offset, fh):
        if path == "/.control":
            try:
                changes = parse_control(data.decode("utf-8", "replace"))
            except ControlError as e:
                log(f"control: {e}")
                raise mfusepy.FuseOSError(errno.EINVAL) from None
            self.state.apply(changes)
            log("control: " + self.state.describe().strip())
            return len(data)
        self.state.gate("write")
        end = self._size()
        if offset >= end:
            raise mfusepy.FuseOSError(errno.ENOSPC)
        n = os.pwrite(self.fd, data[: end - offset], offset)
        # direct_io writes carry the opener's O_DSYNC/O_SYNC in fi.flags and get no separate
        # fsync from the kernel: sync here so "written" means on the backing disk
        if fh.flags & (os.O_DSYNC | os.O_SYNC):
            self.state.count("syncs")
            os.fdatasync(self.fd)
        return n

    def destroy(self, path):
        self.state.close()


def _mounted(mountpoint: str) -> bool:
    from tools.faultdisk import mount_entry

    return mount_entry(mountpoint) is not None


def _unmount(mountpoint: str) -> None:
    """Unmount; if busy (someone holds the file open), detach lazily."""
    for args in (["-u"], ["-u", "-z"]):
        if not _mounted(mountpoint):
            return
        try:
            r = subprocess.run(["fusermount3", *args, mountpoint], capture_output=True, text=True,
                               timeout=UNMOUNT_TIMEOUT_S)
            if r.returncode == 0:
                return
            log(f"fusermount3 {' '.join(args)}: {r.stderr.strip()}")
        except (OSError, subprocess.TimeoutExpired) as e:
            log(f"fusermount3 {' '.join(args)}: {e}")


def serve(backing: str, mountpoint: str, *, name: str = "disk.img", allow_other: bool | None = None,
          die_with_parent: bool = False, debug: bool = False) -> int:
    """Mount and serve until unmounted or signalled (foreground). Returns an exit code."""
    if die_with_parent:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() == 1:
            return 1  # the parent is already gone
    try:
        fd = os.open(backing, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        log(f"{backing}: cannot open the backing image ({e.strerror})")
        return 2
    if not (stat.S_ISREG(os.fstat(fd).st_mode) or stat.S_ISBLK(os.fstat(fd).st_mode)):
        log(f"{backing}: not a regular file or block device")
        return 2
    if not os.path.isdir(mountpoint):
        log(f"{mountpoint}: not a directory")
        return 2
    if allow_other is None:  # root may always; others only if fuse.conf says user_allow_other
        allow_other = os.geteuid() == 0 or _fuse_conf_allows_other()

    state = FaultState()
    fs = FaultDiskFS(fd, name, state)
    loop_ended = threading.Event()

    # Block our signals everywhere (threads inherit the mask) and take them in one thread.
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)

    def signal_loop() -> None:
        while True:
            sig = signal.sigwait(SIGNALS)
            if sig == signal.SIGUSR1:
                state.release()
                log("SIGUSR1: all=ok (hung requests released)")
                continue
            log(f"{signal.Signals(sig).name}: releasing requests and unmounting")
            state.close()
            _unmount(mountpoint)
            if not loop_ended.wait(EXIT_AFTER_UNMOUNT_S):
                # lazily detached but still open somewhere: exiting closes /dev/fuse, which
                # aborts the connection (users get ENOTCONN) instead of waiting for them
                log("still in use after lazy unmount; exiting (connection aborted)")
                os._exit(0)
            return

    threading.Thread(target=signal_loop, name="signals", daemon=True).start()
    log(f"serving {backing} as {os.path.join(mountpoint, name)}")
    try:
        mfusepy.FUSE(fs, mountpoint, raw_fi=True, foreground=True, nothreads=False, debug=debug,
                     allow_other=allow_other, fsname="faultdisk",  # no path: a comma would split -o
                     subtype="faultdisk", max_threads=FUSE_THREADS_MAX)
    except RuntimeError as e:
        log(f"FUSE failed: {e}")
        return 1
    finally:
        state.close()
        loop_ended.set()
        os.close(fd)
    log("unmounted; exiting")
    return 0


def _fuse_conf_allows_other() -> bool:
    try:
        with open("/etc/fuse.conf") as f:
            return any(line.strip() == "user_allow_other" for line in f)
    except OSError:
        return False
