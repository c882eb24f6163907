"""What happens when a held resource is lost: loss actions, loud logs, counters.

Rules of this file:
- A loss action runs at once when the guard says Lost, before anything else, and is
  bounded in time: the holder declares the loss at its loss deadline, the earliest takeover
  minus the whole loss action's budget (diskhb.core.timing HD-loss: kill grace, remount and
  command timeouts), so every kind below ends before another node may take the resource over.
- Kinds:
    kill        SIGTERM, then SIGKILL after one shared grace_ms: to the command's process
                group (`mmp run`), and for a daemon-held resource to every process using its
                mountpoint's filesystem (open or mapped files, cwd, root, executable; by
                device, as `fuser -km`): the daemon's only way to stop a resource's writers.
    command     run a shell command (env DISKHB_MMP_RESOURCE, _EPOCH, _REASON), bounded.
    remount-ro  `mount -o remount,ro MOUNTPOINT` (ext4/xfs stop writing; the kernel keeps
                the mount for readers). Needs root; bounded like a command.
    none        only log and count (for consumers that check the epoch fencing token).
  Several may be combined; `kill` always runs first (it stops writers fastest).
- A loss action never blocks on the resource's filesystem, which may hang: nothing stats,
  lists or resolves a path on or below the mountpoint. Its users are found from /proc alone
  (diskhb.mmp.sentinel, shared with the lease enforcer), and `mount -c` does not canonicalize.
- Logging is loud: CRITICAL to syslog (LOG_DAEMON) and one line to stderr, formatted as the
  daemon's lines are (diskhb.journald: timestamp and pid, or a journald priority under systemd).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field

from prometheus_client import Counter

from diskhb import journald
from diskhb.core import timing

# The /proc scan lives in the enforcer's stdlib-only module (it must start fast, without
# prometheus_client); re-exported here, where the loss actions use it.
from diskhb.mmp.sentinel import (  # noqa: F401 - re-exported
    LINKS_PER_PID_MAX, PROC_PIDS_MAX, check_mountpoint, mount_users, remount_ro_argv, run_bounded,
)
from diskhb.procgroup import group_gone  # zombies do not count: a killed group reaped late is gone

LOSS_COMMAND_TIMEOUT_MS = timing.LOSS_COMMAND_TIMEOUT_MS_DEFAULT
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
    kill_mount_users: bool = False  # "kill" also stops every user of `mountpoint` (the daemon's kill)
    grace_ms: int = 500
    timeout_ms: int = LOSS_COMMAND_TIMEOUT_MS  # the command's bound
    remount_timeout_ms: int = timing.REMOUNT_TIMEOUT_MS_DEFAULT

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


def _signal_all(pgid: int | None, pids: set[int], sig: int) -> None:
    if pgid:
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def kill_writers(pgid: int | None, mountpoint: str | None, grace_ms: int, *, reap=None) -> str:
    """SIGTERM the command's group and every user of the mountpoint at once, then after one
    shared grace_ms SIGKILL whatever is left (users found anew, late starters included): the
    whole kill fits in one grace, as the config's bound assumes."""
    users = mount_users(mountpoint) if mountpoint else set()
    if pgid and group_gone(pgid):
        pgid_alive = False
    else:
        pgid_alive = bool(pgid)
    if not pgid_alive and not users:
        return "no process to stop" + (f" (nothing was using {mountpoint})" if mountpoint else "")
    _signal_all(pgid if pgid_alive else None, users, signal.SIGTERM)
    deadline = time.monotonic() + grace_ms / 1000
    while time.monotonic() < deadline:
        if reap:
            reap()
        group_left = pgid_alive and not group_gone(pgid)
        if not group_left and not (mountpoint and mount_users(mountpoint)):
            return f"stopped by SIGTERM ({_what(pgid_alive and pgid, users, mountpoint)})"
        time.sleep(KILL_POLL_MS / 1000)
    late = mount_users(mountpoint) if mountpoint else set()
    _signal_all(pgid if pgid_alive else None, late, signal.SIGKILL)
    return f"SIGKILL after {grace_ms} ms ({_what(pgid_alive and pgid, users | late, mountpoint)})"


def _what(pgid, users: set[int], mountpoint: str | None) -> str:
    parts = [f"process group {pgid}"] if pgid else []
    if mountpoint:
        parts.append(f"{len(users)} process(es) using {mountpoint}")
    return ", ".join(parts)


def _run(argv: list[str], env: dict, timeout_ms: int, what: str, report: LossReport) -> None:
    try:
        code, last = run_bounded(argv, timeout_ms, env=env)  # no unbounded wait after a kill
    except OSError as e:
        report.failed.append(f"{what} ({e.strerror})")
        return
    if code is None:
        report.failed.append(f"{what} (timed out after {timeout_ms} ms)")
    elif code == 0:
        report.done.append(f"{what} ok")
    else:
        report.failed.append(f"{what} (exit {code}{': ' + last if last else ''})")


def run_loss_action(action: LossAction, *, resource: str, epoch: int, reason: str, reap=None) -> LossReport:
    report = LossReport()
    if "kill" in action.kinds:
        mnt = action.mountpoint if action.kill_mount_users else None
        bad = check_mountpoint(mnt) if mnt else None
        if bad:
            report.failed.append(f"kill of the mountpoint's users ({bad})")
            mnt = None
        if action.pgid or mnt:
            report.done.append("kill: " + kill_writers(action.pgid, mnt, action.grace_ms, reap=reap))
        elif not bad:
            report.failed.append("kill (no command of ours and no mountpoint configured: nothing to kill)")
    env = {**os.environ, "DISKHB_MMP_RESOURCE": resource, "DISKHB_MMP_EPOCH": str(epoch),
           "DISKHB_MMP_REASON": reason}
    if "remount-ro" in action.kinds and action.mountpoint:
        bad = check_mountpoint(action.mountpoint)  # a bind mount of / would remount / itself
        if bad:
            report.failed.append(f"remount {action.mountpoint} read-only ({bad})")
        else:
            _run(remount_ro_argv(action.mountpoint), env, action.remount_timeout_ms,
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
        print(journald.line(logging.CRITICAL, message), file=sys.stderr, flush=True)
    except Exception:  # noqa: BLE001
        pass


def on_lost(action: LossAction, *, resource: str, epoch: int, reason: str, reap=None, say=None) -> LossReport:
    """Run the loss action first, then log and count: stopping writers comes before words.
    `say`: where the line goes (the daemon: its logger); by default syslog and stderr."""
    report = run_loss_action(action, resource=resource, epoch=epoch, reason=reason, reap=reap)
    LOST.labels(resource).inc()
    (say or log_loudly)(f"MMP resource {resource!r} LOST (epoch {epoch}): {reason}; loss action: {report.line()}")
    return report
