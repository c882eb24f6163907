"""`diskhb run`: compose regions, the liveness core and the actuators into one fixed-rate tick.

Rules of this file:
- The tick runs at its own pace (every interval_ms, scheduled on the monotonic clock). Inside it
  nothing blocks: regions poll/submit without waiting, logging goes through a bounded queue
  (records are dropped and counted, never waited for), metrics and status are served by other
  threads from a snapshot the tick hands over when asked.
- The core decides, the daemon carries out: it feeds observations to Liveness and OwnIoHealth
  and logs/exports what they return. It makes no liveness decision of its own.
- Safety stops: if another daemon is found writing our slot, we stop at once without writing
  (two writers in one slot would make both nodes' heartbeats lies).
- Clean stop (SIGTERM/SIGINT): publish LEFT on every region, bounded by io_timeout_ms; disk
  regions first, and no LEFT on the links if a disk region could not take it.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import queue
import signal
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.core import GaugeMetricFamily

from diskhb import metrics as m
from diskhb.config import Config, RegionConfig, parse_listen
from diskhb.core.liveness import Liveness, NodeRestarted, NodeStateChanged, RegionNodeChanged
from diskhb.core.slot_claim import ClaimVerdict, SlotClaim, SlotSample
from diskhb.core.types import BadSample, NodeState, SlotFlag
from diskhb.errors import OperatorError, Refused
from diskhb.mmp.held import DaemonHolds
from diskhb.regions.base import OwnBeat, Region
from diskhb.regions.disk import format as fmt
from diskhb.regions.disk.region import DiskRegion
from diskhb.runtime import monotonic_ms, new_generation, wall_ms

log = logging.getLogger("diskhb")

LOG_QUEUE_MAX = 1000
SNAPSHOT_WAIT_S = 3.0  # a status/metrics request waits at most this for the tick to answer
STATUS_CLIENTS_MAX = 8
CONTROL_REQUEST_BYTES_MAX = 512
MMP_REQUESTS_MAX = 8  # mmp-acquire/-release served at once (held.REQUESTS_MAX acquisitions of them)


class DroppingQueueHandler(logging.handlers.QueueHandler):
    """Never blocks the tick: when the queue is full the record is dropped and counted."""

    def enqueue(self, record):
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            m.LOG_DROPPED.inc()


def setup_logging(level: str) -> logging.handlers.QueueListener:
    q: queue.Queue = queue.Queue(maxsize=LOG_QUEUE_MAX)
    stream = logging.StreamHandler()
    stream.setFormatter(logging.Formatter("%(asctime)s diskhb[%(process)d] %(levelname)s %(message)s"))
    listener = logging.handlers.QueueListener(q, stream, respect_handler_level=False)
    root = logging.getLogger()
    root.handlers[:] = [DroppingQueueHandler(q)]
    root.setLevel(level.upper())
    listener.start()
    return listener


@dataclass(frozen=True, slots=True)
class Timing:
    cluster: str
    interval_ms: int
    dead_ms: int
    io_timeout_ms: int


class SnapshotBroker:
    """Lets server threads ask the tick thread for a consistent snapshot (bounded wait)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._ready = threading.Condition(self._lock)
        self._snapshot: dict | None = None
        self._version = 0

    def request(self, timeout_s: float = SNAPSHOT_WAIT_S) -> dict | None:
        with self._lock:
            start = self._version
            self._wanted.set()
            self._ready.wait_for(lambda: self._version != start, timeout_s)
            return self._snapshot if self._version != start else None

    def wanted(self) -> bool:
        return self._wanted.is_set()

    def publish(self, snapshot: dict) -> None:
        with self._lock:
            self._snapshot = snapshot
            self._version += 1
            self._wanted.clear()
            self._ready.notify_all()


class NodeCollector:
    """Per-node metrics computed at scrape time, so the tick never pays for 2000 gauges."""

    def __init__(self, broker: SnapshotBroker):
        self.broker = broker

    def describe(self):
        return []  # registering must not wait for a tick

    def collect(self):
        snap = self.broker.request()
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
    def __init__(self, cfg: Config, *, clock_ms: Callable[[], int] = monotonic_ms):
        self.cfg = cfg
        self.clock_ms = clock_ms
        self.generation = new_generation()
        self.seq = 0
        self.flags = int(SlotFlag.ACTIVE)
        self.regions: list[Region] = []
        self.timing: Timing | None = None
        self.liveness: Liveness | None = None
        self.holds: DaemonHolds | None = None  # MMP resources this daemon holds
        self.stop_event = threading.Event()
        self.broker = SnapshotBroker()
        self.http: ThreadingHTTPServer | None = None
        self.control: socket.socket | None = None
        self._mmp_slots = threading.BoundedSemaphore(MMP_REQUESTS_MAX)  # control threads for mmp-*
        self.control_path: str | None = None
        self.exit_code = 0
        self.started_wall_ms = wall_ms()
        self._core_ms = 0  # the last time given to the liveness core
        self._links = any(rc.type != "disk" for rc in cfg.regions)
        self._io_seen: dict[str, tuple[int, int, int, int]] = {}  # region -> I/O totals exported
        self._failing: set[str] = set()  # regions whose own I/O failing was logged

    # -- start-up ----------------------------------------------------------------------------

    def start(self) -> None:
        try:
            self._open_regions()
            self._claim_slots()
            self._start_other_regions()
            self._start_servers()
        except BaseException:
            self._close_quietly()
            raise
        t = self.timing
        self.liveness = Liveness(self_id=self.cfg.node.id, interval_ms=t.interval_ms, dead_ms=t.dead_ms)
        self.holds = DaemonHolds(node_id=self.cfg.node.id, node_name=self.cfg.node.name, generation=self.generation,
                                 run_dir=self.cfg.node.run_dir,
                                 disk_paths={rc.name: rc.path for rc in self.cfg.disk_regions},
                                 resources=self.cfg.resources, snapshot=self.broker.request)
        m.SELF_INFO.labels(self.cfg.node.name, str(self.cfg.node.id), t.cluster).set(1)
        log.info("started node %s id %d generation %#x cluster %s interval %d ms dead %d ms regions %s",
                 self.cfg.node.name, self.cfg.node.id, self.generation, t.cluster, t.interval_ms,
                 t.dead_ms, ", ".join(r.name for r in self.regions))

    def _open_regions(self) -> None:
        cfg = self.cfg
        timings: list[tuple[str, Timing]] = []
        for rc in cfg.disk_regions:
            region = DiskRegion(rc.name, rc.path, node_id=cfg.node.id, node_name=cfg.node.name,
                                clock_ms=self.clock_ms)
            region.start(self.clock_ms())
            self.regions.append(region)
            sb = region.sb
            timings.append((rc.path, Timing(sb.cluster, sb.interval_ms, sb.dead_ms, sb.io_timeout_ms)))
        want = cfg.cluster
        if timings:
            first_path, first = timings[0]
            for path, t in timings[1:]:
                if t != first:
                    raise OperatorError(
                        f"{path}: cluster/timing {t.cluster}/{t.interval_ms}/{t.dead_ms} ms differs from"
                        f" {first_path} ({first.cluster}/{first.interval_ms}/{first.dead_ms} ms);"
                        " every region of a cluster must be formatted alike"
                    )
            self.timing = first
        else:
            if want.name is None or want.interval_ms is None or want.dead_ms is None:
                raise OperatorError(
                    f"{cfg.path}: without a disk region, [cluster] needs name, interval_ms and dead_ms"
                )
            try:
                fmt.check_timing(want.interval_ms, want.dead_ms,
                                 fmt.default_io_timeout_ms(want.interval_ms, want.dead_ms))
            except fmt.FormatError as e:
                raise OperatorError(f"{cfg.path}: [cluster]: {e}") from None
            self.timing = Timing(want.name, want.interval_ms, want.dead_ms,
                                 fmt.default_io_timeout_ms(want.interval_ms, want.dead_ms))
        t = self.timing
        if want.name is not None and want.name != t.cluster:
            raise OperatorError(
                f"{cfg.path}: cluster.name is {want.name!r} but the region belongs to cluster"
                f" {t.cluster!r}; fix the config or use the right device"
            )
        for key, value in (("interval_ms", want.interval_ms), ("dead_ms", want.dead_ms)):
            if value is not None and value != getattr(t, key):
                raise OperatorError(
                    f"{cfg.path}: cluster.{key} = {value} disagrees with the region's {getattr(t, key)};"
                    " every node must use the region's timing (remove the key or reformat)"
                )

    def _claim_slots(self) -> None:
        """Refuse to start while another daemon beats in our slot (bounded by dead_ms)."""
        t = self.timing
        for region in self.regions:
            if not isinstance(region, DiskRegion):
                continue
            claim = SlotClaim(t.dead_ms)
            deadline = self.clock_ms() + t.dead_ms + 4 * t.interval_ms
            verdict = ClaimVerdict.WAIT
            while verdict is ClaimVerdict.WAIT:
                if self.clock_ms() > deadline:
                    raise Refused(f"{region.path}: could not confirm slot {self.cfg.node.id} is free in time")
                got = region.read_own_slot()
                if got is None:
                    sample = SlotSample(None, None, 0)
                elif isinstance(got, str):
                    sample = SlotSample(None, None, 0, valid=False)
                else:
                    sample = SlotSample(got.generation, got.seq, got.flags, got.name)
                verdict = claim.observe(self.clock_ms(), sample)
                if verdict is ClaimVerdict.WAIT:
                    if self.stop_event.wait(t.interval_ms / 1000):
                        raise Refused("stopped while waiting for the slot")
            if verdict is ClaimVerdict.IN_USE:
                raise Refused(
                    f"{region.path}: slot {self.cfg.node.id} is in live use: {claim.reason};"
                    " stop the other daemon or give this node another id"
                )

    def _start_other_regions(self) -> None:
        for rc in self.cfg.regions:
            if rc.type == "disk":
                continue
            region = make_link_region(rc, self.cfg, self.timing)
            region.start(self.clock_ms())
            self.regions.append(region)

    def _start_servers(self) -> None:
        listen = self.cfg.metrics_listen
        if listen:
            host, port = parse_listen(listen)
            try:
                self.http = _make_http_server(host, port, self)
            except OSError as e:
                raise OperatorError(f"metrics.listen {listen}: cannot listen ({e.strerror});"
                                    " pick a free port or another address") from None
            threading.Thread(target=self.http.serve_forever, name="http", daemon=True).start()
            REGISTRY.register(NodeCollector(self.broker))
        self._start_control_socket()

    def _start_control_socket(self) -> None:
        run_dir = self.cfg.node.run_dir
        try:
            os.makedirs(run_dir, mode=0o755, exist_ok=True)
        except OSError as e:
            log.warning("control socket disabled: cannot create %s (%s)", run_dir, e.strerror)
            return
        path = os.path.join(run_dir, f"diskhb-{self.timing.cluster}-{self.cfg.node.id}.sock")
        try:
            if os.path.exists(path):
                os.unlink(path)  # a stale socket of an earlier run; our slot claim proved it dead
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(path)
            os.chmod(path, 0o660)
            s.listen(STATUS_CLIENTS_MAX)
        except OSError as e:
            log.warning("control socket disabled: %s: %s", path, e.strerror)
            return
        self.control, self.control_path = s, path
        threading.Thread(target=self._serve_control, name="control", daemon=True).start()

    def _serve_control(self) -> None:
        assert self.control is not None
        while True:
            try:
                conn, _ = self.control.accept()
            except OSError:
                return
            try:
                conn.settimeout(SNAPSHOT_WAIT_S)
                req = conn.recv(CONTROL_REQUEST_BYTES_MAX).decode("utf-8", "replace").strip()
            except OSError:
                conn.close()
                continue
            if req.startswith("mmp-"):  # may take seconds (a classic watch): its own thread
                if not self._mmp_slots.acquire(blocking=False):
                    with conn:
                        try:
                            conn.sendall(json.dumps({"ok": False, "exit": 1, "error":
                                                     f"{MMP_REQUESTS_MAX} MMP requests already running in"
                                                     " this daemon; try again"}).encode() + b"\n")
                        except OSError:
                            pass
                    continue
                threading.Thread(target=self._answer_mmp, args=(conn, req), name="control-mmp",
                                 daemon=True).start()
                continue
            with conn:
                if req == "status":
                    body = json.dumps(self.broker.request() or {"error": "daemon busy"})
                else:
                    body = json.dumps({"error": f"unknown request {req[:32]!r}"})
                try:
                    conn.sendall(body.encode() + b"\n")
                except OSError:
                    pass

    def _answer_mmp(self, conn: socket.socket, req: str) -> None:
        """mmp-acquire NAME WAIT_MS CREATE(0|1) / mmp-release NAME: one JSON line back.

        `ok` true, or `exit` (1 refused, 2 bad input) with a one-line `error`.
        """
        try:
            self._answer_mmp_request(conn, req)
        finally:
            self._mmp_slots.release()

    def _answer_mmp_request(self, conn: socket.socket, req: str) -> None:
        with conn:
            words = req.split()
            try:
                if words[0] == "mmp-acquire" and len(words) == 4 and words[2].isdigit() and words[3] in "01":
                    out = self.holds.acquire(words[1], wait_ms=int(words[2]), create=words[3] == "1")
                elif words[0] == "mmp-release" and len(words) == 2:
                    out = self.holds.release(words[1])
                else:
                    out = {"ok": False, "exit": 2, "error": f"bad request {req[:64]!r}"}
            except Refused as e:
                out = {"ok": False, "exit": 1, "error": str(e)}
            except OperatorError as e:
                out = {"ok": False, "exit": e.exit_code, "error": str(e)}
            except Exception as e:  # noqa: BLE001 - the requester gets one line; the daemon goes on
                log.error("control: %s failed: %s", words[0], e)
                out = {"ok": False, "exit": 2, "error": f"{words[0]} failed in the daemon: {e}"}
            try:
                conn.settimeout(SNAPSHOT_WAIT_S)
                conn.sendall(json.dumps(out).encode() + b"\n")
            except OSError:
                pass

    # -- the tick ----------------------------------------------------------------------------

    def run(self) -> int:
        t = self.timing
        interval = t.interval_ms
        next_ms = self.clock_ms()
        while not self.stop_event.is_set():
            now = self.clock_ms()
            lateness = max(0, now - next_ms)
            m.TICK_LATENESS.observe(lateness / 1000)
            self.tick(now)
            if self.exit_code:
                break
            m.TICK_DURATION.observe((self.clock_ms() - now) / 1000)
            next_ms += interval
            if next_ms < self.clock_ms():  # we fell more than a tick behind: skip, do not burst
                next_ms = self.clock_ms() + interval
            self.stop_event.wait(max(0, next_ms - self.clock_ms()) / 1000)
        self.shutdown()
        return self.exit_code

    def tick(self, now: int) -> None:
        live = self.liveness
        for region in self.regions:
            for obs in region.poll(now):
                if isinstance(obs, BadSample):
                    m.BAD_SAMPLES.labels(obs.region).inc()
                # A sample is as new as the moment its read was issued; never before the core's
                # last reading of the clock (a slow read finishing late must not turn time back).
                seen = getattr(obs, "seen_ms", None)
                t = max(now if seen is None else seen, self._core_ms)
                live.observe(t, obs)
                self._core_ms = t
        self._own_health(now)
        for region in self.regions:
            conflict = getattr(region, "slot_conflict", None)
            if conflict:
                log.critical("STOPPING: %s", conflict)
                self.exit_code = 3
                return
        self.seq += 1
        beat = self._own_beat(now)
        for region in self.regions:
            region.tick(now, beat)
        # A region whose own read is stuck has not looked since `sampled_ms`: its silence is not
        # evidence against anyone after that (a hung disk must not kill every peer).
        sampled = {r.name: r.health.sampled_ms for r in self.regions if r.health.sampled_ms is not None}
        for ev in live.tick(now, sampled):
            self._report(ev)
        self._core_ms = now
        self._export_region_metrics()
        m.TICKS.inc()
        if self.broker.wanted():
            self.broker.publish(self.snapshot(now))

    def _own_health(self, now: int) -> None:
        disk_lost = False
        for region in self.regions:
            for ev in region.health.tick(now):
                if ev.healthy:
                    log.info("region %s: own I/O healthy", ev.region)
            # Logged when it starts failing, not only when `healthy` flips: a region whose first
            # write already fails goes from "not yet written" to failing without a flip.
            if region.health.failing and region.name not in self._failing:
                log.error("region %s unhealthy: %s", region.name, region.health.reason)
                self._failing.add(region.name)
            elif not region.health.failing:
                self._failing.discard(region.name)
            m.REGION_HEALTHY.labels(region.name).set(1 if region.health.healthy else 0)
            # Late or failed I/O, also when not one write has worked since we started (a node
            # whose disk failed before its first beat must send the notice too); not a region
            # merely waiting for its first write (H4).
            if region.kind == "disk" and region.health.failing:
                disk_lost = True
        # Tell peers our disk I/O is failing (issue 3 builds the read-only notice on this).
        self.flags = (self.flags | SlotFlag.DISK_LOST) if disk_lost else (self.flags & ~SlotFlag.DISK_LOST)

    def _own_beat(self, now: int) -> OwnBeat:
        # Only network and serial heartbeats carry the sender's view; disk slots have no room.
        view = self.liveness.alive_by_region() if self._links else {}
        return OwnBeat(node_id=self.cfg.node.id, name=self.cfg.node.name, generation=self.generation,
                       seq=self.seq, flags=int(self.flags), mono_ms=now, wall_ms=wall_ms(), view=view)

    def _report(self, ev) -> None:
        if isinstance(ev, NodeStateChanged):
            level = {NodeState.DEAD: logging.ERROR, NodeState.ALIVE: logging.INFO}.get(ev.new, logging.WARNING)
            log.log(level, "node %s (id %d): %s -> %s on %s (age %.2f s): %s", ev.name or "?", ev.node_id,
                    ev.old.value, ev.new.value, ev.region, ev.age_ms / 1000, ev.reason)
            m.NODE_TRANSITIONS.labels(ev.name or str(ev.node_id), ev.new.value).inc()
        elif isinstance(ev, RegionNodeChanged):
            if len(self.regions) == 1:
                return  # the overall change says the same thing
            m.REGION_NODE_TRANSITIONS.labels(ev.name or str(ev.node_id), ev.region, ev.new.value).inc()
            # Losing a node on one region is worth a warning (a link or path may be failing);
            # the node itself is dead only when the overall change says so, on its own line.
            level = logging.WARNING if ev.new is NodeState.DEAD else logging.INFO
            log.log(level, "node %s (id %d) on region %s: %s -> %s (age %.2f s)", ev.name or "?", ev.node_id,
                    ev.region, ev.old.value, ev.new.value, ev.age_ms / 1000)
        elif isinstance(ev, NodeRestarted):
            log.warning("node %s (id %d) restarted on %s: generation %#x -> %#x", ev.name or "?", ev.node_id,
                        ev.region, ev.old_generation, ev.new_generation)
            m.NODE_RESTARTS.labels(ev.name or str(ev.node_id)).inc()

    def _export_region_metrics(self) -> None:
        for region in self.regions:
            if isinstance(region, DiskRegion):
                for ms in region.write_latency_ms:
                    m.WRITE_LATENCY.labels(region.name).observe(ms / 1000)
                for ms in region.read_latency_ms:
                    m.READ_LATENCY.labels(region.name).observe(ms / 1000)
                region.write_latency_ms.clear()
                region.read_latency_ms.clear()
                totals = (region.read_bytes_total, region.write_bytes_total, region.reads_total,
                          region.writes_total)
            else:  # links count their datagrams/frames in netpath.metrics; bytes are counted here
                totals = (region.received_bytes_total, region.sent_bytes_total, 0, 0)
            seen = self._io_seen.get(region.name, (0, 0, 0, 0))
            if totals == seen:
                continue
            for i, (metric, direction) in enumerate(((m.REGION_IO_BYTES, "read"), (m.REGION_IO_BYTES, "write"),
                                                     (m.REGION_IOS, "read"), (m.REGION_IOS, "write"))):
                if totals[i] != seen[i]:
                    metric.labels(region.name, direction).inc(totals[i] - seen[i])
            self._io_seen[region.name] = totals

    def snapshot(self, now: int) -> dict:
        """The daemon's view for `diskhb status` and metrics (built on the tick thread)."""
        nodes = []
        for nv in self.liveness.nodes():
            nodes.append({
                "id": nv.node_id, "name": nv.name, "state": nv.state.value, "seq": nv.seq,
                "generation": nv.generation, "age_s": round(nv.age_ms / 1000, 3),
                "flags": SlotFlag.names(nv.flags),
                "regions": {r: {"state": rv.state.value, "seq": rv.seq, "age_s": round(rv.age_ms / 1000, 3),
                                "bad_samples": rv.bad_samples}
                            for r, rv in nv.regions.items()},
            })
        nodes.append({
            "id": self.cfg.node.id, "name": self.cfg.node.name, "state": "alive", "seq": self.seq,
            "generation": self.generation, "age_s": 0.0, "flags": SlotFlag.names(self.flags), "self": True,
            "regions": {r.name: {"state": "alive" if r.health.healthy else "unhealthy", "seq": self.seq,
                                 "age_s": 0.0, "bad_samples": 0} for r in self.regions},
        })
        nodes.sort(key=lambda n: n["id"])
        return {
            "source": "daemon",
            "cluster": self.timing.cluster,
            "node": {"id": self.cfg.node.id, "name": self.cfg.node.name, "generation": self.generation,
                     "pid": os.getpid()},
            "interval_ms": self.timing.interval_ms,
            "dead_ms": self.timing.dead_ms,
            "regions": [{"name": r.name, "type": r.kind, "path": getattr(r, "path", None),
                         "healthy": r.health.healthy, "reason": r.health.reason} for r in self.regions],
            "nodes": nodes,
            "mmp": self.holds.describe(),
        }

    # -- stop --------------------------------------------------------------------------------

    def request_stop(self, *_args) -> None:
        self.stop_event.set()

    def request_key_reload(self, *_args) -> None:
        """SIGHUP: re-read the key files of network and serial regions (rotation, see netpath.keys).

        On a thread of its own: the tick never waits on a file read. A bad file keeps the old keys.
        """
        def reload() -> None:
            for region in self.regions:
                if hasattr(region, "reload_keys"):
                    try:
                        region.reload_keys()
                    except OperatorError as e:
                        log.error("region %s: key reload refused, old keys kept: %s", region.name, e)

        threading.Thread(target=reload, name="key-reload", daemon=True).start()

    def shutdown(self) -> None:
        if self.holds is not None and not self.holds.release_all():
            # Peers take a cleanly-left node's resources without waiting: no LEFT while one of
            # ours may still be on disk as held. They will watch it (classic wait) instead.
            log.critical("not publishing LEFT: an MMP resource release was not confirmed")
            self.exit_code = self.exit_code or 3
        if self.exit_code == 0:
            self.flags = (self.flags | SlotFlag.LEFT) & ~SlotFlag.ACTIVE
            self.seq += 1
            beat = self._own_beat(self.clock_ms())
            # Disk regions first: LEFT says "this node will not write again". If a disk write of
            # ours is still stuck in the I/O stack, that promise cannot be made, so the links
            # get a last beat without LEFT and peers judge us by silence (dead, never left).
            # LEFT on any region is LEFT everywhere (liveness R4), so a disk already failing
            # gets no LEFT anywhere, and once one disk write fails no later region gets it.
            disks = [r for r in self.regions if isinstance(r, DiskRegion)]
            disks_ok = all(r.health.healthy for r in disks)
            if not disks_ok:
                log.error("not publishing LEFT: a disk region of ours is failing, a write may still land")
            for region in disks:
                if not disks_ok:
                    beat.flags = (beat.flags & ~SlotFlag.LEFT) | SlotFlag.ACTIVE
                ok = region.stop(beat, self.timing.io_timeout_ms)
                log.info("region %s: %s", region.name, "left cleanly" if ok and disks_ok else
                         "stopped" if ok else "could not write the left flag")
                if not ok and disks_ok:
                    disks_ok = False
                    log.error("not publishing LEFT on the other regions: a disk write of ours may still land")
            if not disks_ok:
                beat.flags = (beat.flags & ~SlotFlag.LEFT) | SlotFlag.ACTIVE
            for region in self.regions:
                if region in disks:
                    continue
                ok = region.stop(beat, self.timing.io_timeout_ms)
                log.info("region %s: %s", region.name, "stopped" if not disks_ok else
                         "left cleanly" if ok else "could not send the left flag")
        else:
            for region in self.regions:
                try:
                    region.stop(OwnBeat(self.cfg.node.id, self.cfg.node.name, self.generation, self.seq,
                                        0, 0, 0), 0) if not isinstance(region, DiskRegion) else None
                except Exception:  # noqa: BLE001 - stopping after a fatal error; nothing to add
                    pass
        self._close_quietly()
        log.info("stopped")

    def _close_quietly(self) -> None:
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()
            self.http = None
        if self.control is not None:
            self.control.close()
            self.control = None
            try:
                os.unlink(self.control_path)
            except OSError:
                pass


def make_link_region(rc: RegionConfig, cfg: Config, timing: Timing) -> Region:
    """Network and serial regions (netpath)."""
    if rc.type == "net":
        from diskhb.regions.net import NetRegion

        kw = {"peers": list(rc.peers)} if rc.peers else {"group": rc.group} if rc.group else {"broadcast": rc.broadcast}
        return NetRegion(rc.name, cluster=timing.cluster, node_id=cfg.node.id, io_timeout_ms=timing.io_timeout_ms,
                         bind=rc.bind, port=rc.port, key=rc.key, **kw)
    if rc.type == "serial":
        from diskhb.regions.serial import SerialRegion

        return SerialRegion(rc.name, cluster=timing.cluster, node_id=cfg.node.id,
                            io_timeout_ms=timing.io_timeout_ms, device=rc.device, baud=rc.baud, key=rc.key)
    raise AssertionError(rc.type)


def _make_http_server(host: str, port: int, daemon: Daemon) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            if self.path.startswith("/metrics"):
                body, ctype = generate_latest(REGISTRY), "text/plain; version=0.0.4; charset=utf-8"
            elif self.path.startswith("/status"):
                body = json.dumps(daemon.broker.request() or {"error": "daemon busy"}).encode()
                ctype = "application/json"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # scrapes are not news
            pass

    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Server(ThreadingHTTPServer):
        address_family = family
        daemon_threads = True

    return Server((host, port), Handler)


def run_daemon(cfg: Config) -> int:
    listener = setup_logging(cfg.log_level)
    d = Daemon(cfg)
    signal.signal(signal.SIGTERM, d.request_stop)
    signal.signal(signal.SIGINT, d.request_stop)
    signal.signal(signal.SIGHUP, d.request_key_reload)
    try:
        d.start()
        return d.run()
    finally:
        listener.stop()
