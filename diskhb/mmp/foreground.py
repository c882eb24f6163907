"""Holding a resource in the foreground: `diskhb mmp acquire` and `diskhb mmp run`.

Rules of this file:
- The loop bumps the block when due (guard.Hold decides; runner.bump carries it out) and
  checks H1 at least every LOOP_MS, also right after waking from a stop (SIGSTOP/SIGCONT),
  so a frozen holder runs its loss action before its next write.
- `run`: the command runs in its own process group with PR_SET_PDEATHSIG=SIGKILL, so it
  never outlives the guard (if we are SIGKILLed, the kernel kills it; its children in the
  group are killed by the loss action otherwise). Signals we get are forwarded to its
  group; we keep holding until it has exited, then release (CLEAN) and exit with its code.
- `run` also starts diskhb.mmp.sentinel, which SIGKILLs the command's group if the guard
  stops renewing (frozen guard: it cannot run its own loss action) or dies.
- Lost: loss action first (kill the command's group, then the configured extras), then a
  loud log and exit code 3. Nothing more is written to the block.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

from diskhb.mmp import format as mf
from diskhb.mmp import guard as g
from diskhb.mmp.loss import LossAction, log_loudly, on_lost
from diskhb.mmp.runner import Runner, StopFlag
from diskhb.mmp.store import BlockLocation

LOOP_MS = 20
EXIT_LOST = 3
PR_SET_PDEATHSIG = 1

try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before any fork
except (OSError, AttributeError):  # pragma: no cover - non-Linux
    _prctl = None


def _child_setup(parent_pid: int):
    def setup() -> None:
        if _prctl is not None:
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the guard died before prctl took effect
            os._exit(125)
    return setup


def spawn(cmd: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(cmd, process_group=0, preexec_fn=_child_setup(os.getpid()), env=env)


def lease_end_ms(hold_: g.Hold) -> int:
    """Until when the command may run without a newer bump: H1's deadline + half an interval
    (others may take over only from 2 x interval + 1 s after our last write)."""
    return hold_.issue_deadline_ms() + hold_.block.interval_ms // 2


def exit_code_of(returncode: int) -> int:
    """A shell's convention: killed by signal N -> 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def hold(runner: Runner, loc: BlockLocation, hold: g.Hold, *, resource: str, stop: StopFlag,
         loss: LossAction, child: subprocess.Popen | None = None, sentinel: Sentinel | None = None,
         say=print) -> int:
    """Hold until the child exits (run) or a stop signal (acquire); returns the exit code."""
    try:
        return _hold(runner, loc, hold, resource=resource, stop=stop, loss=loss, child=child,
                     sentinel=sentinel, say=say)
    finally:
        if sentinel is not None:
            sentinel.done()


def _hold(runner, loc, hold, *, resource, stop, loss, child, sentinel, say) -> int:
    forwarded: int | None = None
    while True:
        now = runner.clock_ms()
        if child is not None and child.poll() is not None:
            return _release(runner, loc, hold, resource=resource, loss=loss,
                            code=exit_code_of(child.returncode), say=say)
        if stop.is_set():
            if child is None:
                return _release(runner, loc, hold, resource=resource, loss=loss, code=0, say=say)
            if forwarded != stop.signum:
                forwarded = stop.signum
                try:
                    os.killpg(child.pid, stop.signum)
                except ProcessLookupError:
                    pass
                stop.event.clear()
                stop.signum = None
        if now >= hold.due_ms() or hold.expired(now):
            out = runner.bump(loc, hold)
            if isinstance(out, g.Lost):
                return _lost(hold, out.reason, resource=resource, loss=loss, child=child)
            if out is None and sentinel is not None:
                sentinel.renew(lease_end_ms(hold))
        wait_ms = max(1, min(LOOP_MS, hold.due_ms() - runner.clock_ms()))
        time.sleep(wait_ms / 1000)


def _release(runner: Runner, loc: BlockLocation, hold: g.Hold, *, resource: str, loss: LossAction,
             code: int, say) -> int:
    for _ in range(3):  # "retry": a transient read error or a late write; H1 bounds it anyway
        out = runner.bump(loc, hold, final=mf.SEQ_CLEAN)
        if out is None:
            say(f"released {resource} (epoch {hold.epoch}) on {loc.label}")
            return code
        if isinstance(out, g.Lost):
            return _lost(hold, out.reason, resource=resource, loss=loss, child=None)
        time.sleep(LOOP_MS / 1000)
    log_loudly(f"MMP resource {resource!r}: could not write CLEAN (epoch {hold.epoch}); others will"
               " take it over after the classic wait")
    return code


def _lost(hold: g.Hold, reason: str, *, resource: str, loss: LossAction,
          child: subprocess.Popen | None) -> int:
    action = loss
    if child is not None and child.poll() is None:
        action = LossAction(kinds=tuple(dict.fromkeys(("kill",) + loss.kinds)), command=loss.command,
                            mountpoint=loss.mountpoint, pgid=child.pid, kill_mount_users=loss.kill_mount_users,
                            grace_ms=loss.grace_ms,
                            timeout_ms=loss.timeout_ms)
    else:
        # No command of ours runs: "kill" is left only where it means the mountpoint's users.
        keep = tuple(k for k in loss.kinds if k != "kill" or loss.kill_mount_users)
        action = LossAction(kinds=keep or ("none",),
                            command=loss.command, mountpoint=loss.mountpoint,
                            kill_mount_users=loss.kill_mount_users, grace_ms=loss.grace_ms,
                            timeout_ms=loss.timeout_ms)
    on_lost(action, resource=resource, epoch=hold.epoch, reason=reason,
            reap=(child.poll if child is not None else None))
    if child is not None:
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    return EXIT_LOST
