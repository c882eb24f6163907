"""Holding a resource in the foreground: `diskhb mmp acquire --foreground` and `diskhb mmp run`.

Rules of this file:
- The guard (diskhb.mmp.guard) decides everything; the runner carries its I/O out. This loop
  only watches the command and the stop flag between two looks at the guard (every LOOP_MS),
  and acts on what the guard reports: a new lease renews the enforcer; the end of the hold
  (released, or lost) ends the command.
- `run`: the command runs in its own process group with PR_SET_PDEATHSIG=SIGKILL, so it
  never outlives the guard (if we are SIGKILLed, the kernel kills it; its children in the
  group are killed by the enforcer). Signals we get are forwarded to its group; we keep
  holding until it has exited, then release (CLEAN) and exit with its code.
- Every hold with something to stop (a command, a mountpoint) has a lease enforcer
  (diskhb.mmp.sentinel), renewed at every lease: it acts if we freeze or die.
- Lost: loss action first (kill the command's group, then the configured extras), then a
  loud log and exit code 3. Nothing more is written to the block.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess

from diskhb.mmp import guard as gd
from diskhb.mmp.loss import LossAction, on_lost
from diskhb.mmp.runner import Runner, StopFlag
from diskhb.mmp.sentinel import Enforcer

EXIT_LOST = 3
PR_SET_PDEATHSIG = 1
CHILD_WAIT_S = 5

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


def exit_code_of(returncode: int) -> int:
    """A shell's convention: killed by signal N -> 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def acquire(runner: Runner, guard: gd.Guard) -> tuple[gd.GotIt | None, gd.Lease | None, gd.Denied | None]:
    """Drive the guard until it holds or is refused."""
    got: list = [None, None, None]

    def on_event(ev) -> None:
        if isinstance(ev, gd.GotIt):
            got[0] = ev
        elif isinstance(ev, gd.Lease):
            got[1] = ev
        elif isinstance(ev, gd.Denied):
            got[2] = ev

    runner.drive(guard, on_event=on_event, until=lambda: guard.holding)
    return got[0], got[1], got[2]


def hold(runner: Runner, guard: gd.Guard, *, stop: StopFlag, loss: LossAction, child: subprocess.Popen | None = None,
         enforcer: Enforcer | None = None, say=print) -> int:
    """Hold until the child exits (run) or a stop signal (acquire); returns the exit code."""
    forwarded: list[int | None] = [None]
    ended: list[gd.Gone] = []
    code = [0]

    def idle() -> None:
        if child is not None and child.poll() is not None:
            code[0] = exit_code_of(child.returncode)
            guard.release()
        if stop.is_set():
            if child is None:
                guard.release()
            elif forwarded[0] != stop.signum:
                forwarded[0] = stop.signum
                try:
                    os.killpg(child.pid, stop.signum)
                except ProcessLookupError:
                    pass
                stop.event.clear()
                stop.signum = None

    def on_event(ev) -> None:
        if isinstance(ev, gd.Lease) and enforcer is not None:
            enforcer.renew(ev.takeover_ms - enforcer.budget_ms)
        elif isinstance(ev, gd.Gone):
            ended.append(ev)

    try:
        runner.drive(guard, on_event=on_event, idle=idle)
        gone = ended[0] if ended else None
        if gone is not None and gone.released:
            say(f"released {guard.me.resource} (epoch {gone.epoch}) on {guard.loc.label}")
            if child is not None and child.poll() is None:  # the guard ended the hold: the command goes too
                child.wait()
            return code[0]
        reason = gone.lost if gone is not None else "the guard stopped"
        return _lost(guard, reason, loss=loss, child=child)
    finally:
        if enforcer is not None:  # released, or the loss action ran: nothing left for it to stop
            enforcer.done()


def _lost(guard: gd.Guard, reason: str, *, loss: LossAction, child: subprocess.Popen | None) -> int:
    if child is not None and child.poll() is None:
        action = LossAction(kinds=tuple(dict.fromkeys(("kill",) + loss.kinds)), command=loss.command,
                            mountpoint=loss.mountpoint, pgid=child.pid, kill_mount_users=loss.kill_mount_users,
                            grace_ms=loss.grace_ms, timeout_ms=loss.timeout_ms,
                            remount_timeout_ms=loss.remount_timeout_ms)
    else:
        # No command of ours runs: "kill" is left only where it means the mountpoint's users.
        keep = tuple(k for k in loss.kinds if k != "kill" or loss.kill_mount_users)
        action = LossAction(kinds=keep or ("none",), command=loss.command, mountpoint=loss.mountpoint,
                            kill_mount_users=loss.kill_mount_users, grace_ms=loss.grace_ms,
                            timeout_ms=loss.timeout_ms, remount_timeout_ms=loss.remount_timeout_ms)
    on_lost(action, resource=guard.me.resource, epoch=guard.epoch, reason=reason,
            reap=(child.poll if child is not None else None))
    if child is not None:
        try:
            child.wait(timeout=CHILD_WAIT_S)
        except subprocess.TimeoutExpired:
            pass
    return EXIT_LOST
