"""What happens when a held resource is lost: loss actions, loud logs, counters.

Rules of this file:
- A loss action runs at once when the guard says Lost, before anything else, and is
  bounded in time: by H1 (diskhb.mmp.guard) the loss is known at most interval + 1 s after
  our last bump, and another node may take over from 2 x interval + 1 s on, so a kill gets
  at most `grace_ms` (default: half the interval) between SIGTERM and SIGKILL.
- Kinds:
    kill        SIGTERM, then SIGKILL after grace_ms: to the command's process group (`mmp
                run`), and to every process using the resource's mountpoint (open files,
                cwd, root or executable under it, as `fuser -km` finds them; the daemon's
                only way to stop a resource's writers, so it needs `mountpoint`).
    command     run a shell command (env DISKHB_MMP_RESOURCE, _EPOCH, _REASON), bounded.
    remount-ro  `mount -o remount,ro MOUNTPOINT` (ext4/xfs stop writing; the kernel keeps
                the mount for readers). Needs root; bounded like a command.
    none        only log and count (for consumers that check the epoch fencing token).
  Several may be combined; `kill` always runs first (it stops writers fastest).
- Logging is loud: CRITICAL to syslog (LOG_DAEMON) and one line to stderr.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from prometheus_client import Counter

LOSS_COMMAND_TIMEOUT_MS = 30_000
KILL_POLL_MS = 10

LOST = Counter("diskhb_mmp_lost_total", "MMP resources lost while held (loss action run)", ["resource"])
ACQUIRED = Counter("diskhb_mmp_acquired_total", "MMP resources acquired", ["resource"])
REFUSED = Counter("diskhb_mmp_refused_total", "MMP acquisitions refused", ["resource"])

KINDS = ("kill", "command", "remount-ro", "none")


@dataclass(frozen=True, slots=True)
class LossAction:
    kinds: tuple[str, ...] = ("kill",)
    command: str | None = None
    mountpoint: str | None = None
    pgid: int | None = None
    grace_ms: int = 500
    timeout_ms: int = LOSS_COMMAND_TIMEOUT_MS

    def validate(self) -> None:
        for k in self.kinds:
            if k not in KINDS:
                raise ValueError(f"unknown loss action {k!r} (use {', '.join(KINDS)})")
        if "command" in self.kinds and not self.command:
            raise ValueError("loss action 'command' needs a command")
        if "remount-ro" in self.kinds and not self.mountpoint:
            raise ValueError("loss action 'remount-ro' needs a mountpoint")


@dataclass(slots=True)
class LossReport:
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def line(self) -> str:
        parts = self.done + [f"FAILED {f}" for f in self.failed]
        return "; ".join(parts) or "no action"


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def kill_group(pgid: int, grace_ms: int, *, reap=None) -> str:
    """SIGTERM the group, SIGKILL whatever is left after grace_ms. `reap` polls our own child
    so a zombie does not look alive."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return f"process group {pgid} already gone"
    deadline = time.monotonic() + grace_ms / 1000
    while time.monotonic() < deadline:
        if reap:
            reap()
        if _group_gone(pgid):
            return f"process group {pgid} stopped by SIGTERM"
        time.sleep(KILL_POLL_MS / 1000)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return f"process group {pgid} stopped by SIGTERM"
    return f"process group {pgid} killed (SIGKILL after {grace_ms} ms)"


PROC_PIDS_MAX = 1 << 22  # /proc/sys/kernel/pid_max's ceiling: the scan is bounded by it
FDS_PER_PID_MAX = 1 << 20  # links looked at per process (fs.nr_open's default ceiling)


def _under(path: str, mountpoint: str) -> bool:
    return path == mountpoint or path.startswith(mountpoint.rstrip("/") + "/")


def mount_users(mountpoint: str) -> list[int]:
    """PIDs (not ours) with an open file, cwd, root or executable under `mountpoint`."""
    me = os.getpid()
    out = []
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()][:PROC_PIDS_MAX]
    except OSError:
        return out
    for entry in entries:
        pid = int(entry)
        if pid == me:
            continue
        base = f"/proc/{pid}"
        links = [f"{base}/cwd", f"{base}/root", f"{base}/exe"]
        try:
            links += [f"{base}/fd/{fd}" for fd in os.listdir(f"{base}/fd")[:FDS_PER_PID_MAX]]
        except OSError:
            pass  # gone, or a kernel thread
        for link in links:
            try:
                target = os.readlink(link)
            except OSError:
                continue
            if _under(target, mountpoint):
                out.append(pid)
                break
    return out


def kill_mount_users(mountpoint: str, grace_ms: int) -> str:
    """SIGTERM every user of the mountpoint, SIGKILL those left after grace_ms."""
    pids = mount_users(mountpoint)
    if not pids:
        return f"no process was using {mountpoint}"
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_ms / 1000
    left = pids
    while left and time.monotonic() < deadline:
        time.sleep(KILL_POLL_MS / 1000)
        left = [p for p in mount_users(mountpoint) if p in pids]
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return (f"{len(pids)} process(es) using {mountpoint} stopped"
            + (f" ({len(left)} by SIGKILL after {grace_ms} ms)" if left else " by SIGTERM"))


def _run(argv: list[str], env: dict, timeout_ms: int, what: str, report: LossReport) -> None:
    try:
        r = subprocess.run(argv, env=env, timeout=timeout_ms / 1000, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        report.failed.append(f"{what} (timed out after {timeout_ms} ms)")
        return
    except OSError as e:
        report.failed.append(f"{what} ({e.strerror})")
        return
    if r.returncode == 0:
        report.done.append(f"{what} ok")
    else:
        err = (r.stderr or r.stdout).strip().splitlines()
        report.failed.append(f"{what} (exit {r.returncode}{': ' + err[-1] if err else ''})")


def run_loss_action(action: LossAction, *, resource: str, epoch: int, reason: str, reap=None) -> LossReport:
    report = LossReport()
    if "kill" in action.kinds:
        if action.pgid:
            report.done.append(kill_group(action.pgid, action.grace_ms, reap=reap))
        if action.mountpoint:
            report.done.append(kill_mount_users(action.mountpoint, action.grace_ms))
        if not action.pgid and not action.mountpoint:
            report.failed.append("kill (no command of ours and no mountpoint configured: nothing to kill)")
    env = {**os.environ, "DISKHB_MMP_RESOURCE": resource, "DISKHB_MMP_EPOCH": str(epoch),
           "DISKHB_MMP_REASON": reason}
    if "remount-ro" in action.kinds and action.mountpoint:
        _run(["mount", "-o", "remount,ro", action.mountpoint], env, action.timeout_ms,
             f"remount {action.mountpoint} read-only", report)
    if "command" in action.kinds and action.command:
        _run(["/bin/sh", "-c", action.command], env, action.timeout_ms, f"command {action.command!r}", report)
    return report


def log_loudly(message: str) -> None:
    """CRITICAL to syslog and one line to stderr; never raises."""
    try:
        import syslog

        syslog.openlog("diskhb", syslog.LOG_PID, syslog.LOG_DAEMON)
        syslog.syslog(syslog.LOG_CRIT, message)
    except Exception:  # noqa: BLE001 - logging must not stop the loss handling
        pass
    try:
        print(f"diskhb: CRITICAL: {message}", file=sys.stderr, flush=True)
    except Exception:  # noqa: BLE001
        pass


def on_lost(action: LossAction, *, resource: str, epoch: int, reason: str, reap=None) -> LossReport:
    """Run the loss action first, then log and count: stopping writers comes before words."""
    report = run_loss_action(action, resource=resource, epoch=epoch, reason=reason, reap=reap)
    LOST.labels(resource).inc()
    log_loudly(f"MMP resource {resource!r} LOST (epoch {epoch}): {reason}; loss action: {report.line()}")
    return report
