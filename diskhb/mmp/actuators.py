"""What the daemon does when the node core says a held resource is lost, or its lease moved:
loss actions on bounded threads, and one lease enforcer process per hold.

Rules of this file:
- The loop never waits here: a loss action runs on its own thread (at most HELD_MAX at once,
  each bounded by the resource's own timeouts: timing.loss_budget_ms) and reports back through
  done() (the loop is woken by `notify`); an enforcer renewal is one non-blocking pipe write.
- The enforcer is told the moment it must fire: the takeover moment of the core's Lease minus its
  own budget (sentinel.enforcer_budget_ms), so it has finished before anyone may take over.
"""

from __future__ import annotations

import logging
import threading

from diskhb.core.node import LossDone
from diskhb.mmp.config import ResourceConfig
from diskhb.mmp.loss import LossAction, on_lost
from diskhb.mmp.sentinel import Enforcer, enforcer_budget_ms

log = logging.getLogger("diskhb.mmp")

LOSS_THREADS_MAX = 64


def loss_action_for(rc: ResourceConfig | None) -> LossAction:
    """The configured loss action. The daemon runs no command of the resource's, so "kill"
    stops the processes using the resource's mountpoint (and fails loudly without one)."""
    if rc is None:
        return LossAction(kinds=("none",))
    return LossAction(kinds=rc.on_loss, command=rc.loss_command, mountpoint=rc.mountpoint, kill_mount_users=True,
                      grace_ms=rc.kill_grace_ms, timeout_ms=rc.loss_command_timeout_ms,
                      remount_timeout_ms=rc.remount_timeout_ms)


class LossWorker:
    def __init__(self, resources: dict[str, ResourceConfig], notify: threading.Event):
        self.resources = resources
        self.notify = notify
        self._lock = threading.Lock()
        self._done: list[LossDone] = []
        self._running = 0

    def run(self, resource: str, epoch: int, reason: str) -> None:
        action = loss_action_for(self.resources.get(resource))
        with self._lock:
            if self._running >= LOSS_THREADS_MAX:
                log.critical("MMP resource %r lost but %d loss actions already run: its enforcer will act",
                             resource, LOSS_THREADS_MAX)
                return
            self._running += 1

        def go() -> None:
            ok, line = False, "loss action failed"
            try:
                report = on_lost(action, resource=resource, epoch=epoch, reason=reason, say=log.critical)
                ok, line = not report.failed, report.line()
            except Exception as e:  # noqa: BLE001 - reported, and the enforcer still stands behind it
                line = f"loss action raised: {e!r}"
            with self._lock:
                self._running -= 1
                self._done.append(LossDone(resource, epoch, line, ok))
            self.notify.set()

        threading.Thread(target=go, name=f"loss:{resource}", daemon=True).start()

    def done(self) -> list[LossDone]:
        with self._lock:
            out, self._done = self._done, []
        return out


class Enforcers:
    """One lease enforcer process per held resource (diskhb.mmp.sentinel)."""

    def __init__(self, resources: dict[str, ResourceConfig]):
        self.resources = resources
        self._running: dict[str, Enforcer] = {}

    def budget_ms(self, resource: str) -> int:
        rc = self.resources.get(resource)
        mnt = rc.mountpoint if rc is not None else None
        return enforcer_budget_ms(mnt is not None, mnt is not None and "remount-ro" in rc.on_loss,
                                  rc.remount_timeout_ms if rc is not None else 0)

    def start(self, resource: str, takeover_ms: int) -> None:
        rc = self.resources.get(resource)
        deadline = takeover_ms - self.budget_ms(resource)
        if rc is None or rc.mountpoint is None:
            return  # nothing of ours writes it: consumers check the epoch fencing token
        try:
            self._running[resource] = Enforcer.start(
                deadline, mountpoint=rc.mountpoint, remount_ro="remount-ro" in rc.on_loss, resource=resource,
                remount_timeout_ms=rc.remount_timeout_ms)
        except OSError as e:
            log.critical("MMP resource %r: cannot start its lease enforcer (%s): a frozen daemon could no"
                         " longer stop its users", resource, e)

    def renew(self, resource: str, takeover_ms: int) -> None:
        e = self._running.get(resource)
        if e is not None:
            e.renew(takeover_ms - self.budget_ms(resource))

    def done(self, resource: str) -> None:
        e = self._running.pop(resource, None)
        if e is not None:
            threading.Thread(target=e.done, name=f"enforcer-done:{resource}", daemon=True).start()

    def close(self) -> None:
        for name in list(self._running):
            self.done(name)
