"""The lease enforcer: stops a held resource's writers when its holder stops renewing.

Why: a holder that is frozen (SIGSTOP, debugger, swapped out), hung or SIGKILLed (OOM) cannot
run its own loss action, yet the writers of the resource keep writing, and from the end of
the lease on another node may take the device over. sanlock has wdmd and a hardware watchdog
for this; every hold here (the node daemon, `mmp acquire --foreground`, `mmp run`) has this
small process, in its own session, so a signal or a stop aimed at the holder does not reach it.

The holder sends a deadline (CLOCK_MONOTONIC ms, the same clock in every process of the host)
after each successful bump: the end of its lease minus `enforcer_budget_ms(...)`, the time
this process needs to act. If that moment passes with no newer one (the holder froze or hung),
or the holder's end of the pipe closes without "done" (the holder died), it acts AT ONCE, with
no SIGTERM grace (the holder had its chance; the lease is ending):
    1. SIGKILL to the command's process group (--pgid, `mmp run`);
    2. SIGKILL to every process using the filesystem mounted at --mountpoint (open or mapped
       files, cwd, root, executable; any mount of the same device, as `fuser -km`), each as
       soon as it is found;
    3. `mount -c -o remount,ro MOUNTPOINT` (--remount-ro), retried while killed writers exit;
then logs CRITICAL to syslog (LOG_DAEMON) and one line to stderr, and exits 1.

Protocol on the pipe (one line each): "D <deadline_ms>" (renew) | "done" (released: exit 0).
    python -m diskhb.mmp.sentinel FD DEADLINE_MS [--pgid N] [--mountpoint PATH] [--remount-ro]
                                  [--resource NAME] [--remount-timeout-ms N]

Rules of this file:
- Stdlib only (it starts fast, and a small process is cheap to lock in memory), and
  diskhb.journald (stdlib only too: its lines look like the daemon's). diskhb.mmp.loss imports
  the /proc scan from here.
- Nothing stats, opens, lists or resolves a path on or below a mountpoint: its filesystem may
  hang (a dead device, a stopped FUSE daemon). The mount table comes from mountinfo; a
  process's files from /proc/PID/fdinfo (mnt_id) and /proc/PID/maps (major:minor); its cwd,
  root and executable from readlink of /proc magic links, which does not reach the filesystem.
- Every wait is bounded: by the deadline, by the scan allowance, by the remount timeout.
"""

from __future__ import annotations

import argparse
import logging
import os
import posixpath
import queue
import re
import select
import signal
import subprocess
import sys
import threading
import time

from diskhb import journald

FIRE_ALLOWANCE_MS = 50  # from the deadline to the group's SIGKILL: a wake-up on a busy host
SCAN_ALLOWANCE_MS = 200  # one /proc scan for the mountpoint's users, killing as it goes
REMOUNT_TIMEOUT_MS = 1000  # remount attempts, retried while killed writers let go of their files
REMOUNT_RETRY_MS = 50  # at most this long between attempts while killed processes still exit
REMOUNT_ATTEMPTS_MAX = 20
GONE_POLL_MS = 5
DONE_WAIT_MS = 2000  # the holder's wait for a released enforcer to exit
LINE_MAX = 64  # protocol lines are short: longer garbage without a newline is dropped
SCAN_STACK_BYTES = 256 << 10  # the scan thread's stack: locked in memory like everything else
MCL_CURRENT, MCL_FUTURE = 1, 2

PROC_PIDS_MAX = 1 << 22  # /proc/sys/kernel/pid_max's ceiling: the scan is bounded by it
LINKS_PER_PID_MAX = 1 << 16  # fds and maps lines looked at per process
MOUNTINFO = "/proc/self/mountinfo"


def now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def enforcer_budget_ms(mountpoint: bool, remount_ro: bool, remount_timeout_ms: int = REMOUNT_TIMEOUT_MS) -> int:
    """How long before the lease ends the enforcer must fire to finish in time: the holder
    renews with deadline = lease_end - this."""
    budget_ms = FIRE_ALLOWANCE_MS
    if mountpoint:
        budget_ms += SCAN_ALLOWANCE_MS
        if remount_ro:
            budget_ms += remount_timeout_ms
    return budget_ms


# -- the mount table and a mountpoint's users, from /proc only -----------------------------------


def _unescape(field: bytes) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    if b"\\" in field:
        field = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), field)
    return os.fsdecode(field)


def norm_path(path: str) -> str:
    """Lexically normal form (no filesystem access): no '.', '..', doubled or trailing '/'."""
    path = posixpath.normpath(path)
    return "/" + path.lstrip("/") if path.startswith("//") else path


class MountTable:
    """One mount namespace's mountinfo: which device each mount id and mount point has.
    Field 1 mount id, 3 major:minor, 5 mount point, 6 per-mount options."""

    def __init__(self, text: bytes):
        self.dev_of_id: dict[int, str] = {}
        self.at_of_id: dict[int, str] = {}  # mount id -> its mount point
        self.dev_at: dict[str, str] = {}  # mount point -> device of the mount on top
        self.options_at: dict[str, str] = {}
        for line in text.splitlines():
            f = line.split(b" ", 6)
            if len(f) < 6 or not f[0].isdigit():
                continue
            dev, at = f[2].decode("ascii", "replace"), _unescape(f[4])
            self.dev_of_id[int(f[0])] = dev
            self.at_of_id[int(f[0])] = at
            self.dev_at[at] = dev  # later lines are mounted later: the last one is on top
            self.options_at[at] = f[5].decode("ascii", "replace")

    @classmethod
    def read(cls, path: str = MOUNTINFO) -> "MountTable":
        with open(path, "rb") as f:
            return cls(f.read())

    def ids_of(self, dev: str) -> set[int]:
        return {i for i, d in self.dev_of_id.items() if d == dev}

    def dev_of_path(self, path: str) -> str | None:
        """Device of the mount holding `path` (as readlink of /proc/PID/cwd gives it): the
        nearest mount point above it, found by walking up the string, never the filesystem."""
        if not path.startswith("/"):
            return None
        path = norm_path(path)
        for _ in range(path.count("/") + 1):
            dev = self.dev_at.get(path)
            if dev is not None or path == "/":
                return dev
            path = posixpath.dirname(path)
        return None


def check_mountpoint(path: str) -> str | None:
    """Why `path` cannot be a resource's mountpoint for a kill, or None. Judged from
    /proc/self/mountinfo alone (a symlink to a mount point is refused: name it as mounted)."""
    if not isinstance(path, str) or not path.startswith("/") or norm_path(path) == "/":
        return f"{path!r} must be an absolute mount point other than /"
    try:
        table = MountTable.read()
    except OSError as e:
        return f"cannot read {MOUNTINFO} ({e.strerror})"
    dev = table.dev_at.get(norm_path(path))
    if dev is None:
        return f"{path} is not a mount point (per {MOUNTINFO}; name it as mounted, without symlinks)"
    if dev == table.dev_at.get("/"):
        return f"{path} is a mount point of the root filesystem's device {dev}: its users are the whole host"
    return None


def mount_is_read_only(path: str) -> bool | None:
    """Whether the mount at `path` is read-only (per-mount options in mountinfo), None if none."""
    try:
        options = MountTable.read().options_at.get(norm_path(path))
    except OSError:
        return None
    return None if options is None else "ro" in options.split(",")


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _fdinfo_mnt_id(pid: int, fd: str) -> int | None:
    try:
        f = os.open(f"/proc/{pid}/fdinfo/{fd}", os.O_RDONLY)
    except OSError:
        return None
    try:
        text = os.read(f, 4096)
    except OSError:
        return None
    finally:
        os.close(f)
    at = text.find(b"mnt_id:")
    if at < 0:
        return None
    value = text[at + 7:].split(None, 1)
    return int(value[0]) if value and value[0].isdigit() else None


def _maps_use(pid: int, needle: bytes) -> bool:
    """Whether a line of /proc/PID/maps has our device (mapped files: executables, libraries,
    mmap'd data). The kernel prints the device as hex major:minor."""
    try:
        with open(f"/proc/{pid}/maps", "rb", buffering=0) as f:
            tail, lines = b"", 0
            while lines < LINKS_PER_PID_MAX:
                chunk = f.read(1 << 16)
                if not chunk:
                    return False
                data = tail + chunk
                cut = data.rfind(b"\n") + 1
                body, tail = data[:cut], data[cut:]
                lines += body.count(b"\n")
                if needle in body and any(len(x) > 3 and x[3] == needle.strip()
                                          for x in (ln.split(None, 5) for ln in body.split(b"\n") if needle in ln)):
                    return True
    except OSError:
        return False
    return False


class _Users:
    """The search for one device's users, across mount namespaces (each read once)."""

    def __init__(self, own: MountTable, dev: str):
        self.dev = dev
        major, minor = (int(x) for x in dev.split(":"))
        self.maps_needle = b" %02x:%02x " % (major, minor)
        self.own_ns = _readlink("/proc/self/ns/mnt")
        self.tables: dict[str | None, MountTable | None] = {self.own_ns: own}
        self.ids = own.ids_of(dev)  # mount ids are unique host-wide: one set for every namespace

    def table_of(self, pid: int) -> MountTable | None:
        """The pid's own mount table: its cwd's path only means something there."""
        ns = _readlink(f"/proc/{pid}/ns/mnt")
        if ns not in self.tables:
            try:
                table = MountTable.read(f"/proc/{pid}/mountinfo")
                self.ids |= table.ids_of(self.dev)
            except OSError:
                table = None
            self.tables[ns] = table
        return self.tables[ns]

    def uses(self, pid: int) -> bool:
        table = self.table_of(pid)
        if table is not None:
            for link in ("cwd", "root", "exe"):
                path = _readlink(f"/proc/{pid}/{link}")
                if path and table.dev_of_path(path) == self.dev:
                    return True
        return self.fds_use(pid) or _maps_use(pid, self.maps_needle)

    def fds_use(self, pid: int) -> bool:
        base = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(base)[:LINKS_PER_PID_MAX]
        except OSError:
            return False  # gone, or a kernel thread
        for fd in fds:
            target = _readlink(f"{base}/{fd}")
            # socket:[..], pipe:[..], anon_inode:..: no file of a mountable filesystem
            if target and target.startswith("/") and _fdinfo_mnt_id(pid, fd) in self.ids:
                return True
        return False


def mount_users(mountpoint: str, on_found=None) -> set[int]:
    """PIDs (not ours) with an open file, a mapped file, cwd, root or executable on the
    filesystem mounted at `mountpoint` (by device, as fuser -m: bind mounts and other mount
    namespaces of it count too). `on_found(pid)` is called as each is found (the enforcer
    kills at once). Nothing on or below the mountpoint is touched."""
    try:
        own = MountTable.read()
        entries = [e for e in os.listdir("/proc") if e.isdigit()][:PROC_PIDS_MAX]
    except OSError:
        return set()
    dev = own.dev_at.get(norm_path(mountpoint))
    if dev is None:
        return set()
    users, me, out = _Users(own, dev), os.getpid(), set()
    for entry in entries:
        pid = int(entry)
        if pid != me and users.uses(pid):
            out.add(pid)
            if on_found is not None:
                on_found(pid)
    return out


# -- bounded commands -----------------------------------------------------------------------------


def run_bounded(argv: list[str], timeout_ms: int, env: dict | None = None) -> tuple[int | None, str]:
    """Run argv; (exit code, last line of its output), or (None, "") if it did not end within
    timeout_ms. Unlike subprocess.run it never waits after the kill: a `mount` stuck in the
    kernel (uninterruptible sleep) ignores SIGKILL until it wakes. OSError if it cannot start."""
    p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, errors="replace")
    try:
        out, _ = p.communicate(timeout=max(timeout_ms, 1) / 1000)
    except subprocess.TimeoutExpired:
        p.kill()
        try:
            p.communicate(timeout=0.05)
        except subprocess.TimeoutExpired:
            pass  # left to subprocess's own reaping of abandoned children
        return None, ""
    lines = (out or "").strip().splitlines()
    return p.returncode, lines[-1] if lines else ""


def remount_ro_argv(mountpoint: str) -> list[str]:
    # -c: no canonicalization, which would readlink and stat the mount point
    return ["mount", "-c", "-o", "remount,ro", mountpoint]


# -- the enforcer process -------------------------------------------------------------------------


def _log_critical(message: str) -> None:
    """CRITICAL to syslog and one line to stderr; never raises."""
    try:
        import syslog

        syslog.openlog("diskhb", syslog.LOG_PID, syslog.LOG_DAEMON)
        syslog.syslog(syslog.LOG_CRIT, message)
    except Exception:  # noqa: BLE001 - logging must not stop the enforcer
        pass
    try:
        print(journald.line(logging.CRITICAL, message), file=sys.stderr, flush=True)
    except Exception:  # noqa: BLE001 - the holder's stderr may be gone
        pass


def _warn(message: str, level: int = logging.WARNING) -> None:
    try:
        print(journald.line(level, message), file=sys.stderr, flush=True)
    except Exception:  # noqa: BLE001
        pass


def _protect() -> list[str]:
    """Make this process hard to stop by accident; returns what could not be done.

    SIGINT/SIGHUP/SIGTERM are ignored: a holder that stops cleanly says "done", so a signal
    can only be a stray (pkill diskhb, a closing terminal, systemd's SIGTERM to the unit's
    whole cgroup while the holder is still releasing) and would remove the one protection
    left if the holder then hangs. SIGKILL still ends it (an operator's deliberate choice).
    As root: oom_score_adj -1000 and mlockall, so memory pressure (the OOM killer, a page
    fault on swap) cannot keep it from firing."""
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    if os.geteuid() != 0:
        return []
    missing = []
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("-1000")
    except OSError as e:
        missing.append(f"oom_score_adj ({e.strerror})")
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mlockall(MCL_CURRENT | MCL_FUTURE) != 0:
            missing.append(f"mlockall ({os.strerror(ctypes.get_errno())})")
    except (OSError, AttributeError) as e:
        missing.append(f"mlockall ({e})")
    return missing


def _alive(pid: int) -> bool:
    """Not yet a zombie: a zombie has closed its files (exit_files comes before exit_notify)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    state = stat[stat.rfind(b")") + 2: stat.rfind(b")") + 3]
    return state not in (b"Z", b"X", b"")


def _wait_gone(pids: set[int], until_ms: int) -> bool:
    pids = set(pids)  # a snapshot: a scan still running (past its wait) may add to the original
    for _ in range(max(0, until_ms - now_ms()) // GONE_POLL_MS + 1):
        if not any(_alive(p) for p in pids):
            return True
        if now_ms() >= until_ms:
            break
        time.sleep(GONE_POLL_MS / 1000)
    return not any(_alive(p) for p in pids)


class _Scanner:
    """A thread, started with the enforcer (nothing to allocate when it fires), that scans
    /proc for the mountpoint's users and SIGKILLs each as found. The main thread waits for a
    scan at most a bounded time: a /proc/PID/maps read waits for that process's mmap lock,
    which a process stuck in a page fault on a hung device may hold."""

    def __init__(self, mountpoint: str):
        self.mountpoint = mountpoint
        self.killed: set[int] = set()
        self.requests: queue.SimpleQueue = queue.SimpleQueue()
        threading.stack_size(SCAN_STACK_BYTES)
        threading.Thread(target=self._serve, name="mount-users", daemon=True).start()

    def _serve(self) -> None:
        for _ in range(REMOUNT_ATTEMPTS_MAX + 1):
            finished = self.requests.get()
            try:
                mount_users(self.mountpoint, on_found=self._kill)
            except Exception as e:  # noqa: BLE001 - a scan error must not end the enforcer
                _warn(f"scan of the users of {self.mountpoint} failed: {e!r}")
            finally:
                finished.set()

    def _kill(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
            self.killed.add(pid)
        except (ProcessLookupError, PermissionError):
            pass

    def scan(self, timeout_ms: int) -> bool:
        """Kill every user found; True if the scan finished within timeout_ms."""
        finished = threading.Event()
        self.requests.put(finished)
        return finished.wait(max(0, timeout_ms) / 1000)


def watch(fd: int, deadline_ms: int) -> tuple[str, int]:
    """Follow the holder's renewals. Returns ("", _) on "done", ("eof", _) if the holder went
    away, ("late", deadline_ms) if the deadline passed. A renewal that was written in time is
    honoured even if read late (select with no time left still reads what is there). The loop
    ends at the latest at the last deadline the holder sent."""
    buf = b""
    while True:
        left_ms = deadline_ms - now_ms()
        ready, _, _ = select.select([fd], [], [], max(0, left_ms) / 1000)
        if not ready:
            if now_ms() >= deadline_ms:
                return "late", deadline_ms
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            return "eof", deadline_ms
        *lines, buf = (buf + chunk).split(b"\n")
        if len(buf) > LINE_MAX:
            buf = b""
        for line in lines:
            if line == b"done":
                return "", deadline_ms
            if line.startswith(b"D ") and line[2:].strip().isdigit():
                deadline_ms = int(line[2:])


def _kill_group(pgid: int) -> str:
    try:
        os.killpg(pgid, signal.SIGKILL)
        return f"SIGKILL to process group {pgid}"
    except ProcessLookupError:
        return f"process group {pgid} already gone"
    except PermissionError:
        return f"FAILED SIGKILL to process group {pgid} (not permitted)"


def _kill_users(mountpoint: str, scanner: _Scanner, until_ms: int) -> str:
    finished = scanner.scan(until_ms - now_ms())
    pids = sorted(scanner.killed)
    shown = ",".join(map(str, pids[:20])) + (",..." if len(pids) > 20 else "")
    what = (f"SIGKILL to {len(pids)} process(es) using {mountpoint} (pids {shown})" if pids
            else f"nobody was using {mountpoint}")
    return what if finished else f"{what}; FAILED to finish the scan of /proc within {SCAN_ALLOWANCE_MS} ms"


def _remount(mountpoint: str, scanner: _Scanner | None, until_ms: int) -> str:
    """remount,ro until it works or the time is up. ext4 refuses (EBUSY) while a file is open
    for writing, so: wait for the killed to let go, try, kill late starters, try again."""
    t0_ms, last = now_ms(), "no time left"
    for attempt in range(1, REMOUNT_ATTEMPTS_MAX + 1):
        if scanner is not None:
            _wait_gone(scanner.killed, min(until_ms, now_ms() + REMOUNT_RETRY_MS))
        left_ms = until_ms - now_ms()
        if left_ms <= 0:
            break
        try:
            code, out = run_bounded(remount_ro_argv(mountpoint), left_ms)
        except OSError as e:
            return f"FAILED remount of {mountpoint} read-only (mount: {e.strerror})"
        if code == 0:
            return f"{mountpoint} remounted read-only in {now_ms() - t0_ms} ms (attempt {attempt})"
        last = "timed out" if code is None else f"exit {code}: {out}"
        if scanner is not None:
            scanner.scan(min(SCAN_ALLOWANCE_MS, until_ms - now_ms()))  # late starters
    return f"FAILED remount of {mountpoint} read-only ({last})"


def enforce(args: argparse.Namespace, why: str, deadline_ms: int, scanner: _Scanner | None, holder: int) -> int:
    """Act at once: the group, the mountpoint's users, then the remount; then say so."""
    fired_ms = now_ms()
    done = [_kill_group(args.pgid)] if args.pgid else []
    if args.mountpoint:
        bad = check_mountpoint(args.mountpoint)
        if bad:
            what = "kill of the mountpoint's users" + (" and its remount" if args.remount_ro else "")
            done.append(f"FAILED {what} ({bad})")
        elif scanner is not None:
            done.append(_kill_users(args.mountpoint, scanner, fired_ms + SCAN_ALLOWANCE_MS))
        if args.remount_ro and not bad:
            done.append(_remount(args.mountpoint, scanner, fired_ms + SCAN_ALLOWANCE_MS + args.remount_timeout_ms))
    reason = (f"its holder (pid {holder}) went away without releasing" if why == "eof" else
              f"its holder (pid {holder}) did not renew the lease by its deadline (frozen or hung?);"
              f" fired {fired_ms - deadline_ms} ms after it")
    _log_critical(f"lease enforcer for {args.resource or 'a resource'!r}: {reason}; {'; '.join(done) or 'nothing to do'}"
                  f" ({now_ms() - fired_ms} ms)")
    return 1


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m diskhb.mmp.sentinel", description=__doc__.split("\n")[0])
    ap.add_argument("fd", type=int, help="read end of the holder's pipe")
    ap.add_argument("deadline_ms", type=int, help="first deadline, CLOCK_MONOTONIC ms")
    ap.add_argument("--pgid", type=int, default=None, help="SIGKILL this process group")
    ap.add_argument("--mountpoint", default=None, help="SIGKILL every user of the filesystem mounted here")
    ap.add_argument("--remount-ro", action="store_true", help="then remount it read-only")
    ap.add_argument("--resource", default="", help="the resource's name, for the log line")
    ap.add_argument("--remount-timeout-ms", type=int, default=REMOUNT_TIMEOUT_MS)
    args = ap.parse_args(argv)
    if args.remount_ro and not args.mountpoint:
        ap.error("--remount-ro needs --mountpoint")
    if args.pgid is not None and args.pgid <= 1:
        ap.error(f"--pgid {args.pgid} is not a command's process group")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    holder = os.getppid()
    missing = _protect()
    if missing:  # INFO, as the daemon's own "process:" line says the same of itself
        _warn(f"lease enforcer for {args.resource!r}: no " + ", ".join(missing), logging.INFO)
    scanner = None
    if args.mountpoint:
        bad = check_mountpoint(args.mountpoint)
        if bad:  # normal: a resource is acquired before it is mounted; judged again when firing
            _warn(f"lease enforcer for {args.resource!r}: {bad}; if it is not one when the lease ends,"
                  " its users will not be stopped", logging.INFO)
        scanner = _Scanner(args.mountpoint)
    why, deadline_ms = watch(args.fd, args.deadline_ms)
    if not why:
        return 0
    return enforce(args, why, deadline_ms, scanner, holder)


# -- the holder's side ----------------------------------------------------------------------------


def _package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Enforcer:
    """The holder's end of the pipe. `start` launches the enforcer; renew after every
    successful bump with deadline = lease_end - budget_ms; `done` once released."""

    def __init__(self, proc: subprocess.Popen, w: int, budget_ms: int, resource: str):
        self.proc = proc
        self.pid = proc.pid
        self.budget_ms = budget_ms
        self.resource = resource
        self._w: int | None = w
        self._warned = False

    @classmethod
    def start(cls, deadline_ms: int, *, pgid: int | None = None, mountpoint: str | None = None,
              remount_ro: bool = False, resource: str = "",
              remount_timeout_ms: int = REMOUNT_TIMEOUT_MS) -> "Enforcer":
        if remount_ro and not mountpoint:
            raise ValueError("remount_ro needs a mountpoint")
        if pgid is not None and pgid <= 1:
            raise ValueError(f"pgid {pgid} is not a command's process group")
        opts = ["--resource", resource, "--remount-timeout-ms", str(int(remount_timeout_ms))]
        opts += ["--pgid", str(pgid)] if pgid else []
        opts += ["--mountpoint", mountpoint] if mountpoint else []
        opts += ["--remount-ro"] if remount_ro else []
        env = dict(os.environ)
        env["PYTHONPATH"] = _package_root() + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        r, w = os.pipe()  # not inheritable: no other child of the holder keeps the write end open
        try:
            # cwd "/": it must never pin, or use, the filesystem it guards
            proc = subprocess.Popen([sys.executable, "-m", "diskhb.mmp.sentinel", str(r), str(int(deadline_ms)), *opts],
                                    pass_fds=(r,), start_new_session=True, cwd="/", env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        except BaseException:
            os.close(w)
            raise
        finally:
            os.close(r)
        os.set_blocking(w, False)  # renew never blocks the holder's loop
        return cls(proc, w, enforcer_budget_ms(bool(mountpoint), remount_ro, remount_timeout_ms), resource)

    def renew(self, deadline_ms: int) -> None:
        """Move the deadline; never blocks. A failure is logged once: the enforcer is gone or
        stuck, so a frozen holder could no longer be stopped."""
        if self._w is None:
            return
        try:
            os.write(self._w, f"D {int(deadline_ms)}\n".encode())
        except OSError as e:
            if not self._warned:
                self._warned = True
                _log_critical(f"lease enforcer {self.pid} for {self.resource!r} is gone or stuck ({e.strerror}):"
                              " a frozen or killed holder could no longer stop the resource's writers")

    def done(self, timeout_ms: int = DONE_WAIT_MS) -> int | None:
        """Released cleanly: tell it, close the pipe, wait (bounded) for it to exit. Returns its
        exit code (0; 1 if it had fired meanwhile), or None if it has not exited: it may be
        firing; its actions are bounded and it exits by itself, so it is not killed."""
        if self._w is not None:
            self._send_done(timeout_ms)
            os.close(self._w)
            self._w = None
        try:
            return self.proc.wait(timeout=timeout_ms / 1000)
        except subprocess.TimeoutExpired:
            return None

    def _send_done(self, timeout_ms: int) -> None:
        until_ms = now_ms() + timeout_ms
        for _ in range(timeout_ms // 10 + 1):  # a full pipe means a stuck enforcer: wait a little
            try:
                os.write(self._w, b"done\n")
                return
            except BlockingIOError:
                left_ms = until_ms - now_ms()
                if left_ms <= 0:
                    return
                select.select([], [self._w], [], min(left_ms, 10) / 1000)
            except OSError:
                return  # gone


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
