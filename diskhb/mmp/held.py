"""Resources held by the node daemon: `diskhb mmp acquire/release` ask it over its control socket.

Why the daemon holds them (and not only a foreground `mmp acquire` process):
- the block then carries the daemon's own generation, the one it beats with on every region, so
  a peer's daemon refuses a claimant at once while we are alive and lets it take over at once
  after we left cleanly (guard.fast_path), instead of the classic 2 x interval + 1 s watch;
- `acquire` returns once the resource is ours, as a resource agent expects, and the daemon
  keeps bumping it every interval (verify before every write, H1/H2, adaptive interval).

Rules of this file (the decisions stay in diskhb.mmp.guard; this only runs them):
- One thread per held resource runs diskhb.mmp.foreground.hold, never the heartbeat tick.
- The daemon releases every resource (CLEAN) BEFORE it publishes LEFT: a peer takes a resource
  of a node that left cleanly without waiting, so LEFT must never be published while we may
  still write. If a release cannot be confirmed the daemon must not publish LEFT
  (release_all() says so) and peers fall back to the classic wait.
- A lost resource runs its configured loss action (kill the users of its mountpoint, remount-ro,
  command), is logged loudly and counted; the daemon itself keeps running.
- Limits: at most HELD_MAX resources, at most REQUESTS_MAX acquisitions at once, every wait
  bounded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from diskhb.core.types import NodeState
from diskhb.errors import OperatorError, Refused
from diskhb.mmp import format as mf
from diskhb.mmp import guard as g
from diskhb.mmp.config import DEFAULT_INTERVAL_MS, ResourceConfig
from diskhb.mmp.loss import ACQUIRED, REFUSED, LossAction
from diskhb.mmp.runner import Cancelled, Runner, StopFlag
from diskhb.mmp.store import BlockLocation, open_region_target

log = logging.getLogger("diskhb.mmp")

HELD_MAX = 64
REQUESTS_MAX = 4  # acquisitions running at once (each may watch a holder for 2 x interval + 1 s)
WAIT_MS_MAX = 24 * 3600 * 1000
LOCK_WAIT_MS = 30_000
RELEASE_WAIT_S = 30.0  # a release waits this long for the CLEAN write (H1 bounds it far sooner)


def peer_info_from_snapshot(snapshot: dict | None) -> g.PeerInfoFn | None:
    """guard.fast_path's input from a daemon snapshot (diskhb.daemon.Daemon.snapshot)."""
    if not snapshot or "nodes" not in snapshot:
        return None
    nodes = {n["id"]: n for n in snapshot["nodes"]}

    def info(node_id: int) -> g.PeerInfo | None:
        n = nodes.get(node_id)
        if n is None:
            return g.PeerInfo(NodeState.UNKNOWN)
        try:
            state = NodeState(n["state"])
        except ValueError:
            return g.PeerInfo(NodeState.UNKNOWN)
        return g.PeerInfo(state, generation=int(n.get("generation") or 0))

    return info


def live_peer_info(snapshot: Callable[[], dict | None]) -> g.PeerInfoFn:
    """guard.fast_path's input from a fresh daemon snapshot at every question: an acquisition
    that waits (--wait) must see a holder's node go from alive to dead or left, not keep the
    view it started with."""

    def info(node_id: int) -> g.PeerInfo | None:
        fn = peer_info_from_snapshot(snapshot())
        return fn(node_id) if fn is not None else None

    return info


def loss_action_for(rc: ResourceConfig | None) -> LossAction:
    """The configured loss action. The daemon runs no command of the resource's, so "kill"
    stops the processes using the resource's mountpoint (and fails loudly without one)."""
    if rc is None:
        return LossAction(kinds=("none",))
    return LossAction(kinds=rc.on_loss, command=rc.loss_command, mountpoint=rc.mountpoint, kill_mount_users=True,
                      grace_ms=rc.kill_grace_ms)


@dataclass
class _Holding:
    resource: str
    path: str
    loc: BlockLocation
    epoch: int
    stop: StopFlag = field(default_factory=StopFlag)
    thread: threading.Thread | None = None
    released: threading.Event = field(default_factory=threading.Event)
    outcome: str = "held"  # held, released, lost, release-unconfirmed


class DaemonHolds:
    def __init__(self, *, node_id: int, node_name: str, generation: int, run_dir: str,
                 disk_paths: dict[str, str], resources: tuple[ResourceConfig, ...],
                 snapshot: Callable[[], dict | None]):
        self.node_id, self.node_name, self.generation = node_id, node_name, generation
        self.run_dir = run_dir
        self.disk_paths = disk_paths  # region name -> path
        self.resources = {r.name: r for r in resources}
        self.snapshot = snapshot
        self._lock = threading.Lock()
        self._held: dict[str, _Holding] = {}
        self._requests = 0  # acquisitions running (under _lock; _idle is notified when it drops)
        self._idle = threading.Condition(self._lock)
        self._closing = threading.Event()
        # A resource that ended lost or unconfirmed: one of our writes may still be in flight,
        # so this daemon must not publish LEFT for the rest of its life (release_all).
        self._tainted = False

    # -- what the control socket calls ------------------------------------------------------

    def acquire(self, resource: str, *, wait_ms: int, create: bool) -> dict:
        """Acquire and keep holding; returns once held or refused (one-line reason)."""
        with self._lock:
            if self._closing.is_set():
                raise Refused("the daemon is stopping")
            if self._requests >= REQUESTS_MAX:
                raise Refused(f"{REQUESTS_MAX} acquisitions already running in this daemon; try again")
            self._requests += 1
        try:
            return self._acquire(resource, min(max(0, wait_ms), WAIT_MS_MAX), create)
        except Cancelled:
            raise Refused("the daemon is stopping") from None
        finally:
            with self._lock:
                self._requests -= 1
                self._idle.notify_all()

    def release(self, resource: str) -> dict:
        with self._lock:
            h = self._held.get(resource)
        if h is None:
            raise OperatorError(f"resource {resource!r} is not held by this daemon")
        self._stop(h)
        if not h.released.wait(RELEASE_WAIT_S):
            raise Refused(f"resource {resource!r}: release not confirmed within {RELEASE_WAIT_S:g} s")
        return {"ok": True, "resource": resource, "epoch": h.epoch, "outcome": h.outcome}

    def describe(self) -> list[dict]:
        with self._lock:
            return [{"resource": h.resource, "path": h.path, "block": h.loc.index, "epoch": h.epoch,
                     "state": h.outcome} for h in self._held.values()]

    def release_all(self, timeout_s: float = RELEASE_WAIT_S) -> bool:
        """Stop acquiring, release everything; True only if every release wrote CLEAN.

        A lost resource counts as unconfirmed: it may have been lost because our own write
        hung, and that write can still land; LEFT would let peers skip the classic wait."""
        self._closing.set()  # running acquisitions see it (Runner's cancelled) and give up
        with self._lock:
            self._idle.wait_for(lambda: self._requests == 0, timeout_s)
            held = list(self._held.values())
        for h in held:
            self._stop(h)
        ok = not self._tainted
        if self._tainted:
            log.critical("MMP: a resource ended lost or unconfirmed in this run; a write of ours may still land")
        for h in held:
            if not h.released.wait(timeout_s) or h.outcome != "released":
                log.critical("MMP resource %r: release not confirmed (%s)", h.resource, h.outcome)
                ok = False
        return ok

    # -- inside ------------------------------------------------------------------------------

    def _acquire(self, resource: str, wait_ms: int, create: bool) -> dict:
        with self._lock:
            if resource in self._held and self._held[resource].outcome == "held":
                h = self._held[resource]
                return {"ok": True, "resource": resource, "epoch": h.epoch, "note": "already held by this daemon"}
            if len(self._held) >= HELD_MAX:
                raise Refused(f"this daemon already holds {HELD_MAX} resources")
        rc = self.resources.get(resource)
        path = self._path_for(resource, rc)
        interval_ms = rc.interval_ms if rc else DEFAULT_INTERVAL_MS
        target = open_region_target(path, writable=True)
        try:
            loc, acq, runner = self._run_acquisition(target, resource, rc, interval_ms, wait_ms, create)
        except BaseException:
            target.close()
            raise
        h = _Holding(resource=resource, path=path, loc=loc, epoch=acq.block.epoch)
        h.thread = threading.Thread(target=self._hold, args=(h, runner, acq, interval_ms, rc, target),
                                    name=f"mmp-{resource}", daemon=True)
        with self._lock:
            self._held[resource] = h
        h.thread.start()
        log.warning("MMP resource %r acquired: epoch %d on %s (%s)", resource, acq.block.epoch, loc.label,
                    acq.note or "ballot won")
        return {"ok": True, "resource": resource, "epoch": acq.block.epoch, "location": loc.label,
                "note": acq.note}

    def _path_for(self, resource: str, rc: ResourceConfig | None) -> str:
        if not self.disk_paths:
            raise OperatorError("this daemon has no disk region; MMP blocks live on disk regions")
        if rc is not None and rc.region:
            for name, path in self.disk_paths.items():
                if rc.region in (name, path):
                    return path
            raise OperatorError(f"resource {resource!r} names region {rc.region!r}, not a disk region of this daemon")
        return next(iter(self.disk_paths.values()))

    def _run_acquisition(self, target, resource, rc, interval_ms, wait_ms, create):
        from diskhb.mmp.local import ballot_lock, ensure_run_dir

        run_dir = ensure_run_dir(self.run_dir)
        slots = target.blocks[0].slot_count
        if not 1 <= self.node_id <= slots:
            raise OperatorError(f"{target.path}: node id {self.node_id} is beyond its {slots} ballot slots")
        me = g.Claimant(node_id=self.node_id, generation=self.generation, holder_name=self.node_name,
                        resource=resource, interval_ms=interval_ms, device=target.path.rsplit("/", 1)[-1][:32])
        cancelled = self._closing.is_set
        runner = Runner(target, cancelled=cancelled,
                        lock_for=lambda loc: ballot_lock(run_dir, loc, timeout_ms=LOCK_WAIT_MS, cancelled=cancelled))
        try:
            loc, acq = runner.acquire(me, create=create or rc is not None,
                                      peer_info=live_peer_info(self.snapshot), wait_ms=wait_ms)
        except Refused:
            REFUSED.labels(resource).inc()
            raise
        ACQUIRED.labels(resource).inc()
        return loc, acq, runner

    def _hold(self, h: _Holding, runner: Runner, acq: g.Acquired, interval_ms: int,
              rc: ResourceConfig | None, target) -> None:
        from diskhb.mmp import foreground

        try:
            hold = g.Hold(acq, base_interval_ms=interval_ms)
            code = foreground.hold(runner, h.loc, hold, resource=h.resource, stop=h.stop, loss=loss_action_for(rc),
                                   say=lambda msg: log.warning("%s", msg))
            if code == foreground.EXIT_LOST or hold.lost:
                h.outcome = "lost"
            else:  # released only if our CLEAN write is what the block last holds from us
                h.outcome = "released" if hold.block.seq == mf.SEQ_CLEAN else "release-unconfirmed"
        except Exception as e:  # noqa: BLE001 - a holder thread must report, never vanish silently
            log.critical("MMP resource %r: holder failed: %s", h.resource, e)
            h.outcome = "release-unconfirmed"
        finally:
            target.close()
            with self._lock:
                if h.outcome != "released" and not self._closing.is_set():
                    self._tainted = True
                if self._held.get(h.resource) is h:
                    del self._held[h.resource]
            h.released.set()

    @staticmethod
    def _stop(h: _Holding) -> None:
        h.stop.event.set()
