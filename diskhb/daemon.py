"""`diskhb run`: the daemon, a thin composer around the I/O-free node core.

One loop, on the main thread:
    gather observations (regions' samples and our own I/O, MMP I/O results, loss actions done,
    control requests, a stop request)  ->  NodeCore.step(now_ms, observations)  ->  carry out
    the actions it returns (publish beats, MMP I/O, loss actions, enforcer renewals, replies)
    ->  report its events (logs, metrics)  ->  sleep until the core's next wake-up or until
    something happens (an I/O completes, a request arrives, a signal).
Rules of this file:
- No decision is made here (diskhb.core.node decides; timing.py derives every duration).
- Nothing on the loop blocks: regions and the MMP executor never wait for the disk, loss
  actions and enforcer ends run on threads, logging goes through a bounded queue (dropped and
  counted when full), status and metrics are answered from the loop through bounded queues.
- Notification hooks (diskhb.hooks) are offered the events the reporter logs: a bounded queue,
  worker threads, never a wait on the loop.
- The loop never dies of one region: a driver that raises is a failing region (RegionFault),
  counted, and the daemon goes on. An error in the core itself is fatal: every resource the
  daemon was told it holds is lost (its loss action runs, bounded), then exit 3.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import queue
import secrets
import signal
import threading
import time
import traceback
from typing import Callable

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily

from diskhb import control, journald, preflight, sdnotify
from diskhb import metrics as m
from diskhb.config import Config, RegionConfig, parse_listen
from diskhb.core import node as core
from diskhb.core import timing
from diskhb.core.types import BadSample, NodeState, SlotFlag, hex_id
from diskhb.errors import OperatorError
from diskhb.hooks.events import Context as HookContext
from diskhb.hooks.runner import HookRunner
from diskhb.mmp import guard as gd
from diskhb.mmp.actuators import Enforcers, LossWorker
from diskhb.mmp.executor import MmpExecutor
from diskhb.mmp.loss import LOST
from diskhb.fencing.runner import FenceRunner
from diskhb.pill import set_read_only
from diskhb.preflight import Timing
from diskhb.regions.base import Region
from diskhb.regions.disk import format as fmt
from diskhb.regions.disk.blockio import BlockDevice
from diskhb.regions.disk.devices import resolve_paths
from diskhb.regions.disk.region import DiskRegion
from diskhb.report import Reporter
from diskhb.runtime import harden, monotonic_ms, new_generation, wall_ms
from diskhb.supervisor import Supervisor
from diskhb.watchdog import Watchdog, check_timeout

log = logging.getLogger("diskhb")

LOG_QUEUE_MAX = 1000
INBOX_MAX = 64  # control and metrics requests waiting for the loop
SNAPSHOT_WAIT_S = 3.0  # a status/metrics request waits at most this for the loop to answer
FATAL_LOSS_WAIT_S = 30.0  # on a fatal error, loss actions get this long before we exit
LINK_FLUSH_MS = 500  # at a clean stop, a serial line gets this long to take its LEFT frame
WATCHDOG_FEED_MS = 100  # the tick feeds the watchdog at most this often (one ioctl: cheap, but no need)
_UNFED = (core.Phase.FAILED, core.Phase.SELF_FENCED)  # phases whose watchdog is no longer fed
_SERVING = (core.Phase.RUNNING, core.Phase.SELF_FENCED)  # phases whose slots are ours: control and HTTP served
CLEAN_EXITS = (0, 1, 2)  # stopped, refused to start, operator error: nothing held or lost (magic close)


class DroppingQueueHandler(logging.handlers.QueueHandler):
    """Never blocks the loop: when the queue is full the record is dropped and counted."""

    def enqueue(self, record):
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            m.LOG_DROPPED.inc()


def setup_logging(level: str) -> logging.handlers.QueueListener:
    q: queue.Queue = queue.Queue(maxsize=LOG_QUEUE_MAX)
    stream = logging.StreamHandler()
    stream.setFormatter(journald.formatter())  # under systemd: no timestamps of ours, priorities mapped
    listener = logging.handlers.QueueListener(q, stream, respect_handler_level=False)
    root = logging.getLogger()
    root.handlers[:] = [DroppingQueueHandler(q)]
    root.setLevel(level.upper())
    listener.start()
    return listener


class NodeCollector:
    """Per-node metrics computed at scrape time, so the loop never pays for 2000 gauges."""

    def __init__(self, snapshot: Callable[[], dict | None]):
        self.snapshot = snapshot

    def describe(self):
        return []  # registering must not wait for the loop

    def collect(self):
        snap = self.snapshot()
        alive = GaugeMetricFamily("diskhb_node_alive", "1 if the node is alive on any region", labels=["node"])
        state = GaugeMetricFamily("diskhb_node_state", "1 for the node's current state", labels=["node", "state"])
        age = GaugeMetricFamily("diskhb_node_heartbeat_age_seconds",
                                "Seconds since the node's heartbeat last advanced on the region",
                                labels=["node", "region"])
        flag = GaugeMetricFamily("diskhb_node_flag", "1 if the node's newest heartbeat carries the flag",
                                 labels=["node", "flag"])
        for n in (snap or {}).get("nodes", []):
            if n.get("self"):
                continue
            label = n["name"] or str(n["id"])
            alive.add_metric([label], 1 if n["state"] == "alive" else 0)
            for s in NodeState:
                state.add_metric([label, s.value], 1 if n["state"] == s.value else 0)
            for region, rv in n.get("regions", {}).items():
                age.add_metric([label, region], rv["age_s"])
            for f in SlotFlag:
                flag.add_metric([label, f.name.lower()], 1 if f.name.lower() in n["flags"] else 0)
        return [alive, state, age, flag]


class Daemon:
    def __init__(self, cfg: Config, *, clock_ms: Callable[[], int] = monotonic_ms,
                 notifier: sdnotify.Notifier | None = None, watchdog_usec: int | None = None):
        self.cfg = cfg
        self.notifier = notifier or sdnotify.Notifier(None)  # systemd's; disabled when not under it
        self.watchdog_usec = watchdog_usec
        self.supervisor: Supervisor | None = None
        self.clock_ms = clock_ms
        self.generation = new_generation()
        self.regions: list[Region] = []
        self.disks: list[DiskRegion] = []  # the disk regions among them (their superblocks: timing, MMP area)
        self.timing: Timing | None = None
        self.core: core.NodeCore | None = None
        self.wake = threading.Event()  # set by I/O completions, requests, signals
        self.inbox: queue.Queue = queue.Queue(maxsize=INBOX_MAX)
        self.executor: MmpExecutor | None = None
        self.loss: LossWorker | None = None
        self.fencer: FenceRunner | None = None  # None: no fencing method configured
        self.pr_method = None  # [scsi-pr]: diskhb.fencing.scsi_pr.ScsiPrMethod, shared by fencer and keeper
        self.keeper = None  # [scsi-pr]: diskhb.fencing.keeper.PrKeeper
        self.enforcers: Enforcers | None = None
        self.http = None
        self.control: control.Server | None = None
        self.exit_code: int | None = None
        self.stop_requested = False
        self._stop_sent = False
        self._answers: dict[int, control.Answer] = {}  # MMP request id -> the waiting connection
        self._request_ids = 0
        self._later: list = []  # observations made while executing actions (region faults)
        self._queries: list = []  # status and peer requests, answered after the step
        self._serving = False
        self._held: dict[str, int] = {}  # resource -> epoch, as reported (for the fatal path)
        self._io_seen: dict[str, dict[str, int]] = {}
        self.reporter: Reporter | None = None
        self.watchdog: Watchdog | None = None
        self.hooks: HookRunner | None = None
        self._watchdog_warned_ms = 0  # the worst gap last warned about

    # -- start-up ------------------------------------------------------------------------------------

    def start(self) -> None:
        try:
            devices = self._open_regions()
            self._start_links()
            self._build_core(devices)
            self._start_hooks()
            self._open_watchdog()
            t = self.timing
            self.supervisor = Supervisor(self.notifier, self.watchdog_usec, interval_ms=t.interval_ms,
                                         dead_ms=t.dead_ms, io_timeout_ms=t.io_timeout_ms)
        except BaseException:
            self._close_quietly()
            raise
        t = self.timing
        m.SELF_INFO.labels(self.cfg.node.name, str(self.cfg.node.id), t.cluster).set(1)
        log.info("started node %s id %d generation %#x cluster %s interval %d ms dead %d ms regions %s",
                 self.cfg.node.name, self.cfg.node.id, self.generation, t.cluster, t.interval_ms,
                 t.dead_ms, ", ".join(r.name for r in self.regions))

    def _open_regions(self) -> dict[str, BlockDevice]:
        cfg = self.cfg
        timings: list[tuple[str, Timing]] = []
        devices: dict[str, BlockDevice] = {}
        # uuid: paths become devices here, once, before anything is opened; never on the tick.
        resolved = resolve_paths([rc.path for rc in cfg.disk_regions])
        for rc in cfg.disk_regions:
            res = resolved.get(rc.path)
            path = res.path if res else rc.path
            if res:
                log.info("region %s: %s", rc.name, res.describe())
            region = DiskRegion(rc.name, path, node_id=cfg.node.id, node_name=cfg.node.name,
                                clock_ms=self.clock_ms, notify=self.wake)
            self.regions.append(region)  # closed by start()'s clean-up even when the check below fails
            self.disks.append(region)
            region.start(self.clock_ms())
            sb = region.sb
            if res and sb.uuid_str != res.uuid:  # the device changed between the scan and the open
                raise OperatorError(f"{rc.path}: {path} carried that region during the scan but now holds region"
                                    f" {sb.uuid_str}; check the device and start again")
            timings.append((path, preflight.superblock_timing(sb)))
            if sb.mmp_resources:
                devices[path] = BlockDevice.open(path, writable=True, sector_size=sb.sector_size)
        # The same checks, in the same order, as 'diskhb run --check' (diskhb.preflight).
        self.timing = preflight.regions_agree(timings) if timings else preflight.links_timing(cfg)
        preflight.config_agrees(cfg, self.timing)
        preflight.cluster_watchdog(cfg, self.timing)
        return devices

    def _start_links(self) -> None:
        for rc in self.cfg.regions:
            if rc.type != "disk":
                region = make_link_region(rc, self.cfg, self.timing)
                region.start(self.clock_ms())
                self.regions.append(region)

    def _build_core(self, devices: dict[str, BlockDevice]) -> None:
        from diskhb.mmp.local import ensure_run_dir, lock_scope

        cfg, t = self.cfg, self.timing
        targets: dict[str, gd.TargetInfo] = {}
        for region in self.disks:
            sb = region.sb
            if sb.mmp_resources:
                blocks = tuple(gd.BlockLocation(f"{region.path} block {k}", sb.mmp_resource_pos(k), sb.sector_size,
                                                sb.slot_count, sb.uuid, k) for k in range(sb.mmp_resources))
                targets[region.name] = gd.TargetInfo(region.path, blocks, False)
        resources = {}
        for rc in cfg.resources:
            target = self._target_for(rc, targets)
            if target is not None:
                resources[rc.name] = core.ResourceSpec(rc.name, target, rc.timing, True, rc.mountpoint,
                                                       "remount-ro" in rc.on_loss, rc.on_pr_luns)
        try:
            ensure_run_dir(cfg.node.run_dir)
        except OperatorError as e:
            log.warning("control socket disabled: %s", e)
        self.fencer = self._fence_runner()
        attempt_ms = core.ATTEMPT_TIMEOUT_MS_DEFAULT if self.fencer is None else \
            max(core.ATTEMPT_TIMEOUT_MS_DEFAULT, self.fencer.bound_ms)
        spec = core.NodeSpec(
            node_id=cfg.node.id, name=cfg.node.name, generation=self.generation, cluster=t.cluster,
            interval_ms=t.interval_ms, dead_ms=t.dead_ms, io_timeout_ms=t.io_timeout_ms,
            regions=tuple(core.RegionSpec(r.name, r.kind, r.owns_slot, r.path) for r in self.regions),
            resources=resources, default_target=next(iter(targets.values()), None),
            default_timing=timing.MmpTiming(timing.MMP_INTERVAL_MS_DEFAULT, 0),
            lock_scope=lock_scope(cfg.node.run_dir), quorum=cfg.quorum, self_fence=True, watchdog_ms=t.watchdog_ms,
            fence_attempt_timeout_ms=attempt_ms, io_fence="scsi-pr" in cfg.node.fence)
        self.core = core.NodeCore(spec, now_ms=self.clock_ms(), rand=secrets.randbelow)
        self.reporter = Reporter(len(self.regions), self.clock_ms)
        # Series at 0 from the start: a first loss or failed fence is then an increase() alerts see.
        for rc in cfg.resources:
            m.MMP_HELD.labels(rc.name).set(0)
            LOST.labels(rc.name)
        if cfg.quorum is not None:
            m.QUORUM_EXPECTED_VOTES.set(cfg.quorum.expected)
            for method in m.FENCE_METHODS:
                for result in m.FENCE_RESULTS:
                    m.FENCE_ATTEMPTS.labels(method, result)
        by_name = {rc.name: rc for rc in cfg.resources}
        self.executor = MmpExecutor(devices, notify=self.wake, clock_ms=self.clock_ms)
        self.loss = LossWorker(by_name, self.wake)
        self.enforcers = Enforcers(by_name)

    def _fence_runner(self) -> FenceRunner | None:
        """[node] fence: the methods, in order (diskhb.fencing.runner); [scsi-pr]: this node's
        registration and audit (diskhb.fencing.keeper), whether or not it fences others by it."""
        from diskhb.fencing.keeper import PrKeeper
        from diskhb.fencing.methods import build_methods, scsi_pr_method

        pc = self.cfg.scsi_pr
        if pc is not None:
            self.pr_method = scsi_pr_method(self.cfg, self.timing.cluster, self.generation)
            self.keeper = PrKeeper(self.pr_method, audit_interval_ms=pc.audit_interval_ms, timeout_ms=pc.timeout_ms,
                                   notify=self.wake)
            log.info("scsi-pr: key 0x%016x on %s; registered once this node is quorate", self.pr_method.own_key,
                     ", ".join(self.pr_method.luns))
        methods = build_methods(self.cfg, [(r.name, r.path) for r in self.disks], self.pr_method)
        return FenceRunner(methods, self.wake) if methods else None

    def _start_hooks(self) -> None:
        """Before the watchdog: a hook that cannot run refuses the start (diskhb.hooks.runner).
        Its workers start now, before harden() makes the loop thread realtime."""
        hc = self.cfg.hooks
        if hc is None:
            return
        ctx = HookContext(self.timing.cluster, self.cfg.node.name, self.cfg.node.id, self.generation)
        self.hooks = HookRunner(hc, ctx, self.cfg.path)
        self.reporter.hooks = self.hooks

    def _open_watchdog(self) -> None:
        """Last in start-up: from the open on, the node is reset unless the tick feeds it."""
        wc = self.cfg.watchdog
        if wc is None:
            return
        check_timeout(wc.timeout_s, self.timing.interval_ms)
        self.watchdog = Watchdog(wc.device, wc.timeout_s, self.clock_ms())
        m.WATCHDOG_TIMEOUT.set(self.watchdog.timeout_s)
        m.WATCHDOG_MARGIN.set(self.watchdog.margin_ms / 1000)
        log.info("watchdog %s (%s) armed: timeout %d s, fed from the tick", wc.device, self.watchdog.identity,
                 self.watchdog.timeout_s)

    def _feed_watchdog(self, now: int) -> None:
        """From the tick, never from a thread of our own (diskhb.watchdog). A node in a safety stop
        (FAILED) is not fed: if it does not exit cleanly in time, the watchdog resets it; nor is a
        node that fenced itself (self_fence SF5)."""
        w = self.watchdog
        if w is None or now - w.last_ms < WATCHDOG_FEED_MS or self.core.phase in _UNFED:
            return
        if not w.keepalive(now):
            m.WATCHDOG_ERRORS.inc()
            if w.errors == 1:
                log.error("watchdog %s: keepalive failed; the node will be reset unless a later one succeeds",
                          w.device)
            return
        m.WATCHDOG_MARGIN.set(w.margin_ms / 1000)
        if w.worst_gap_ms * 2 > w.timeout_s * 1000 and w.worst_gap_ms > self._watchdog_warned_ms:
            self._watchdog_warned_ms = w.worst_gap_ms
            log.warning("watchdog %s: a keepalive came %d ms after the previous one: %.1f s of its %d s timeout"
                        " left (a stalled tick this long again resets the node)", w.device, w.worst_gap_ms,
                        w.margin_ms / 1000, w.timeout_s)

    def _target_for(self, rc, targets: dict[str, gd.TargetInfo]) -> gd.TargetInfo | None:
        specs = {c.name: c.path for c in self.cfg.disk_regions}  # a uuid: path as configured
        name = preflight.resource_region(self.cfg, rc, {r.name: r.path for r in self.disks if r.name in targets},
                                         specs)
        return None if name is None else targets[name]

    def _start_servers(self) -> None:
        listen = self.cfg.metrics_listen
        if listen:
            from diskhb.http import make_server

            host, port = parse_listen(listen)
            try:
                self.http = make_server(host, port, self.ask_snapshot)
            except OSError as e:
                raise OperatorError(f"metrics.listen {listen}: cannot listen ({e.strerror});"
                                    " pick a free port or another address") from None
            threading.Thread(target=self.http.serve_forever, name="http", daemon=True).start()
            REGISTRY.register(NodeCollector(self.ask_snapshot))
        path = control.socket_path(self.cfg.node.run_dir, self.timing.cluster, self.cfg.node.id)
        try:
            self.control = control.Server(path, self._submit, log)
        except OSError as e:
            log.warning("control socket disabled: %s: %s", path, e.strerror)

    # -- requests from other threads -----------------------------------------------------------------

    def _submit(self, req: control.Request, answer: control.Answer) -> bool:
        try:
            self.inbox.put_nowait((req, answer))
        except queue.Full:
            return False
        self.wake.set()
        return True

    def ask_snapshot(self) -> dict | None:
        answer = control.Answer()
        if not self._submit(control.Status(), answer) or not answer.event.wait(SNAPSHOT_WAIT_S):
            return None
        return answer.value

    def request_stop(self, *_args) -> None:
        self.stop_requested = True
        self.wake.set()

    def request_key_reload(self, *_args) -> None:
        """SIGHUP: re-read the key files of network and serial regions (rotation, see netpath.keys).
        On a thread of its own: the loop never waits on a file read. A bad file keeps the old keys.
        The notification hooks are looked for again too (a script added to hooks.dir)."""
        def reload() -> None:
            if self.hooks is not None:
                self.hooks.rescan()
            for region in self.regions:
                try:
                    region.reload_keys()
                except OperatorError as e:
                    log.error("region %s: key reload refused, old keys kept: %s", region.name, e)

        threading.Thread(target=reload, name="key-reload", daemon=True).start()

    # -- the loop ------------------------------------------------------------------------------------

    def run(self) -> int:
        try:
            while self.exit_code is None:
                self.wake.clear()
                now = self.clock_ms()
                obs = self._gather(now)
                started = self.clock_ms()
                try:
                    actions = self.core.step(now, obs, wall_ms=wall_ms())
                except Exception as e:  # noqa: BLE001 - a bug in the core: the fatal path, never a silent death
                    self._fatal(f"{type(e).__name__}: {e}", traceback.format_exc())
                    break
                self._execute(now, actions)
                self._feed_watchdog(self.clock_ms())
                self.supervisor.tick(self.clock_ms(), self.core, self.core.phase not in _UNFED)  # systemd's too
                if not self._serving and self.core.phase in _SERVING:
                    # Only once our slots are ours: a second daemon with our id must not take over
                    # the first one's control socket (it is refused by the slot claim instead).
                    self._serving = True
                    try:
                        self._start_servers()
                    except OperatorError as e:
                        log.error("%s", e)
                        self.exit_code = 2
                        self.supervisor.exiting(2, str(e))
                for ev in self.core.drain_events():
                    self._note_event(ev)
                    self.reporter.report(ev)
                self._answer_queries()
                self._export_metrics()
                m.TICK_DURATION.observe((self.clock_ms() - started) / 1000)
                if self.exit_code is not None:
                    break
                wait_ms = self.core.due_ms - self.clock_ms()
                if wait_ms > 0:
                    self.wake.wait(wait_ms / 1000)
        finally:
            self._shutdown()
        return self.exit_code if self.exit_code is not None else 3

    def _gather(self, now: int) -> list:
        obs, self._later = self._later, []
        for region in self.regions:
            try:
                got = region.poll(now)
            except Exception as e:  # noqa: BLE001 - the loop never dies of one region
                m.REGION_FAULTS.labels(region.name).inc()
                obs.append(core.RegionFault(region.name, f"{type(e).__name__}: {e}"))
                continue
            for o in got:
                if isinstance(o, BadSample):
                    m.BAD_SAMPLES.labels(o.region).inc()
            obs.extend(got)
        obs.extend(core.MmpIoDone(r) for r in self.executor.poll())
        obs.extend(self.loss.done())
        if self.fencer is not None:
            obs.extend(self.fencer.done())
        if self.keeper is not None:
            q = self.core.quorum.last if self.core.quorum is not None else None
            obs.extend(self.keeper.tick(now, running=self.core.phase is core.Phase.RUNNING,
                                        quorate=q is not None and q.quorate, known=self._generations))
        while True:
            try:
                req, answer = self.inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(req, (control.Status, control.Peer)):
                self._queries.append((req, answer))
            elif isinstance(req, control.Unfence):
                self._unfence(answer)  # answered by the keeper's thread, not through the core
            else:
                self._request_ids += 1
                rid = self._request_ids
                self._answers[rid] = answer
                if isinstance(req, control.Acquire):
                    obs.append(core.AcquireRequest(rid, req.resource, req.wait_ms, req.create))
                elif isinstance(req, control.FenceNode):
                    obs.append(core.FenceRequest(rid, req.node_id, req.force, req.method))
                else:
                    obs.append(core.ReleaseRequest(rid, req.resource))
        if self.stop_requested and not self._stop_sent:
            self._stop_sent = True
            obs.append(core.StopRequest())
        return obs

    def _generations(self) -> dict[int, int]:
        """The incarnation liveness knows of each node (the PR audit's stale-key check)."""
        return {nid: p.generation for nid, p in self.core.liveness.peers().items() if p.generation}

    def _unfence(self, answer: control.Answer) -> None:
        """`diskhb unfence` (diskhb.fencing.keeper PK4); answered from the keeper's thread."""
        if self.keeper is None:
            answer.set({"ok": False, "exit": 2, "error": "this node has no [scsi-pr]: there is no key to register"})
            return
        q = self.core.quorum.last if self.core.quorum is not None else None
        self.keeper.unfence(running=self.core.phase is core.Phase.RUNNING, quorate=q is not None and q.quorate,
                            answer=answer.set)

    def _answer_queries(self) -> None:
        queries, self._queries = self._queries, []
        snap = None
        for req, answer in queries:
            if isinstance(req, control.Status):
                if snap is None:
                    snap = self.core.snapshot()
                    snap["node"]["pid"] = os.getpid()
                    snap["watchdog"] = None if self.watchdog is None else self.watchdog.status()
                    snap["scsi_pr"] = None if self.keeper is None else self.keeper.status()
                    snap["fence_methods"] = [] if self.fencer is None else list(self.fencer.order)
                answer.set(snap)
            else:
                info = self.core.peer_info(req.node_id)
                answer.set({"ok": True, "state": info.state.value, "generation": hex_id(info.generation)})

    def _execute(self, now: int, actions: list) -> None:
        wall = wall_ms()
        regions = {r.name: r for r in self.regions}
        for a in actions:
            if isinstance(a, core.Publish):
                self._guarded(regions[a.region], lambda r: r.publish(now, a.beat, wall))
            elif isinstance(a, core.ReadOwnSlot):
                self._guarded(regions[a.region], lambda r: r.request_own_slot(now))
            elif isinstance(a, core.MmpIo):
                self.executor.submit(a.request)
            elif isinstance(a, core.Enforce):
                if a.what == "start":
                    self.enforcers.start(a.resource, a.deadline_ms)
                elif a.what == "renew":
                    self.enforcers.renew(a.resource, a.deadline_ms)
                else:
                    self.enforcers.done(a.resource)
            elif isinstance(a, core.RunLoss):
                self.loss.run(a.resource, a.epoch, a.reason)
            elif isinstance(a, core.Reply):
                answer = self._answers.pop(a.request_id, None)
                if answer is not None:
                    answer.set(a.answer)
            elif isinstance(a, core.Exit):
                self.exit_code = a.code
                log.info("stopping: %s (exit %d)", a.reason, a.code)
                self.supervisor.exiting(a.code, a.reason)
            elif isinstance(a, core.Fence):
                self.reporter.fence_started(a.node_id, a.generation)
                if self.fencer is None:
                    self._later.append(core.FenceDone(a.node_id, a.generation, a.attempt, False, "none",
                                                      "no fencing method configured ([node] fence)"))
                    continue
                log.warning("fencing node %d (generation %#x), attempt %d: %s (%s)", a.node_id, a.generation,
                            a.attempt, a.method or " then ".join(self.fencer.order), a.reason)
                nv = self.core.liveness.node(a.node_id)
                done = self.fencer.fence(a, nv.name if nv is not None and nv.name else str(a.node_id))
                if done is not None:
                    self._later.append(done)
            elif isinstance(a, core.SelfFence):
                if self.watchdog is not None:
                    log.critical("watchdog %s is no longer fed: the node is reset within %d s", self.watchdog.device,
                                 self.watchdog.timeout_s)
            elif isinstance(a, core.BlockReadOnly):
                threading.Thread(target=_read_only, args=(a.mountpoints,), name="blkroset", daemon=True).start()
            else:
                raise AssertionError(f"unknown action {a!r}")

    def _guarded(self, region: Region, fn) -> None:
        try:
            fn(region)
        except Exception as e:  # noqa: BLE001 - the loop never dies of one region
            m.REGION_FAULTS.labels(region.name).inc()
            self._later.append(core.RegionFault(region.name, f"{type(e).__name__}: {e}"))

    def _note_event(self, ev) -> None:
        if isinstance(ev, core.MmpEvent):
            if ev.what == "acquired":
                self._held[ev.resource] = ev.epoch
            elif ev.what in ("released", "refused", "lost"):
                self._held.pop(ev.resource, None)

    def _export_metrics(self) -> None:
        for name, h in self.core.health.items():
            m.REGION_HEALTHY.labels(name).set(1 if h.healthy else 0)
        for region in self.regions:
            writes, reads = region.latencies_ms()
            for ms in writes:
                m.WRITE_LATENCY.labels(region.name).observe(ms / 1000)
            for ms in reads:
                m.READ_LATENCY.labels(region.name).observe(ms / 1000)
            totals = region.counters()
            seen = self._io_seen.setdefault(region.name, {})
            for key, metric, direction in (("read_bytes", m.REGION_IO_BYTES, "read"),
                                           ("write_bytes", m.REGION_IO_BYTES, "write"),
                                           ("reads", m.REGION_IOS, "read"), ("writes", m.REGION_IOS, "write")):
                value = totals.get(key)
                if value is not None and value != seen.get(key, 0):
                    metric.labels(region.name, direction).inc(value - seen.get(key, 0))
                    seen[key] = value

    # -- ending ----------------------------------------------------------------------------------------

    def _fatal(self, why: str, trace: str) -> None:
        """An error in the core: we can no longer trust our own decisions. Every resource we were
        told we hold is lost now (its loss action runs, bounded), then exit 3."""
        log.critical("fatal error in the node core: %s; every held resource is treated as lost\n%s", why, trace)
        self.supervisor.exiting(3, f"fatal error in the node core: {why}")
        for resource, epoch in list(self._held.items()):
            self.loss.run(resource, epoch, f"the daemon stops on a fatal error: {why}")
        deadline = time.monotonic() + FATAL_LOSS_WAIT_S
        left = set(self._held)
        while left and time.monotonic() < deadline:
            for done in self.loss.done():
                left.discard(done.resource)
                self.enforcers.done(done.resource)
            self.wake.wait(0.05)
            self.wake.clear()
        self.exit_code = 3

    def _shutdown(self) -> None:
        clean = self.exit_code == 0
        self.supervisor.exiting(3 if self.exit_code is None else self.exit_code, "shutting down")
        if self.watchdog is not None:  # magic close only when nothing was held or lost: else a reset
            disarm = self.exit_code in CLEAN_EXITS
            self.watchdog.close(clean=disarm)
            log.log(logging.INFO if disarm else logging.CRITICAL, "watchdog %s %s", self.watchdog.device,
                    "disarmed (clean stop)" if disarm else f"left armed (exit {self.exit_code}): the node will be"
                    f" reset in {self.watchdog.timeout_s} s")
        for region in self.regions:
            try:
                region.close(LINK_FLUSH_MS if clean else 0)
            except Exception:  # noqa: BLE001 - stopping; nothing to add
                pass
        self.regions = []
        if self.executor is not None:
            self.executor.close()
        if self.hooks is not None:  # last: the heartbeat is settled; hooks of the last events get a bounded time
            self.hooks.close()
            self.hooks = None
        # Enforcers of resources still held stay behind us: the pipe closes without "done" and
        # they act at once (a daemon that exits no longer renews anything).
        self._close_quietly()
        self.supervisor.close()
        log.info("stopped")

    def _close_quietly(self) -> None:
        if self.watchdog is not None:  # a start-up that failed after the open: disarm (a config mistake)
            self.watchdog.close(clean=True)
        if self.hooks is not None:
            self.hooks.close(0)
            self.hooks = None
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()
            self.http = None
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.fencer is not None:  # the methods: an iSCSI session logs out (bounded, best effort)
            self.fencer.close()
            self.fencer = None
        if self.pr_method is not None:  # closing twice is harmless (scsi_pr: close() forgets the transports)
            self.pr_method.close()
            self.pr_method = None
        for region in self.regions:
            try:
                region.close()
            except Exception:  # noqa: BLE001
                pass


def _read_only(mountpoints: tuple[str, ...]) -> None:
    """self_fence SF5, on a thread of its own: BLKROSET is one ioctl, but opening a dying device may block."""
    for line in set_read_only(mountpoints):
        log.critical("self-fenced: %s", line)


def make_link_region(rc: RegionConfig, cfg: Config, t: Timing) -> Region:
    """Network and serial regions (netpath)."""
    if rc.type == "net":
        from diskhb.regions.net import NetRegion

        kw = {"peers": list(rc.peers)} if rc.peers else {"group": rc.group} if rc.group else {"broadcast": rc.broadcast}
        return NetRegion(rc.name, cluster=t.cluster, node_id=cfg.node.id, bind=rc.bind, port=rc.port, key=rc.key, **kw)
    if rc.type == "serial":
        from diskhb.regions.serial import SerialRegion

        return SerialRegion(rc.name, cluster=t.cluster, node_id=cfg.node.id, device=rc.device, baud=rc.baud,
                            key=rc.key)
    raise AssertionError(rc.type)


def systemd_from_env() -> tuple[sdnotify.Notifier, int | None]:
    """$NOTIFY_SOCKET and $WATCHDOG_USEC (removed from our environment: see diskhb.sdnotify)."""
    usec = sdnotify.watchdog_usec(os.environ, os.getpid())
    try:
        notifier = sdnotify.Notifier.from_env()
    except ValueError as e:
        log.warning("%s: no notifications to systemd", e)
        notifier = sdnotify.Notifier(None)
    except OSError as e:
        log.warning("systemd notification socket: %s: no notifications to systemd", e.strerror)
        notifier = sdnotify.Notifier(None)
    return notifier, usec


def run_daemon(cfg: Config) -> int:
    listener = setup_logging(cfg.log_level)
    notifier, usec = systemd_from_env()
    d = Daemon(cfg, notifier=notifier, watchdog_usec=usec)
    signal.signal(signal.SIGTERM, d.request_stop)
    signal.signal(signal.SIGINT, d.request_stop)
    signal.signal(signal.SIGHUP, d.request_key_reload)
    try:
        d.start()
        n = cfg.node
        log.info("process: %s", "; ".join(harden(mlock=n.mlock, sched=n.sched, rt_priority=n.rt_priority,
                                                 oom_score_adj=n.oom_score_adj)))
        return d.run()
    finally:
        listener.stop()

