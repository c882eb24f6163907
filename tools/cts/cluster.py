"""The CTS's cluster: three real daemons, each in its own network, PID and mount namespace, and
what the driver did to them, on one clock (CLOCK_MONOTONIC, seconds).

    node i: ip netns exec <ns i> unshare --pid --fork --mount-proc -- python -m tools.cts.node
            (PID 1 of the node: the daemon, a consumer per resource, a tmpfs per resource)
            disk region: the shared backing file through node i's own FaultDisk mount
            net region:  UDP to the two others over veth links (tools.netns)
            watchdog:    node i's own FUSE watchdog; its reset kills node i's PID 1, and so the node
            LUN (--scsi-pr): a private tgtd on the host, listening on the test net's host address
                         (tools.netns host_link: 10.77.NET.254 on a veth to the bridge), so each
                         node reaches it through its own cable; a fresh target per schedule

The namespaces, FUSE mounts and watchdogs live as long as the CtsCluster and serve every
schedule; each schedule starts from a fresh region (a copy of one formatted template), a fresh
audit file and fresh nodes. Everything is torn down in close(), pass or fail, by PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

from diskhb.control import ControlError, request
from tools import netns
from tools.procs import alive, children, cmdline

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DISKHB = [sys.executable, "-m", "diskhb.cli"]
NODES = (1, 2, 3)
RESOURCES = ("r1", "r2")
LUN_RESOURCE = "lun"  # --scsi-pr: the third resource, on_pr_luns, its consumer writing through iSCSI
PR_IQN = "iqn.2026-12.org.diskhb.cts"  # targets PR_IQN:lunK; initiators PR_IQN:n<i> (daemon), :n<i>:consumer
LUN_BYTES = 4 << 20
PR_AUDIT_MS, PR_TIMEOUT_MS, PR_COMMAND_MS = 1000, 10_000, 8000  # commands outlive a cut cable's TCP backoff
CLUSTER = "cts"
INTERVAL_MS, DEAD_MS, IO_TIMEOUT_MS, WATCHDOG_S = 100, 1000, 250, 1
MMP_INTERVAL_MS = 600
MONITOR_S = 0.02  # how often process deaths are looked for: their times are this exact
STOP_WAIT_S = 10.0
DOG_QUIET_WAIT_S = 3.0  # a watchdog left armed by a killed daemon fires within its timeout
FIRST_HOLDER = 1  # node 1's consumers start first, so it holds every resource when faults begin
CONSUMER_DELAY_S = 4.0  # the other nodes' consumers start this much later
# A cluster broken on purpose, to show the checks fail (tests/tools/test_cts.py): no loss action
# and no lease enforcer (nothing stops a consumer), watchdogs that reset nobody.
BREAKAGES = frozenset({"no-loss-action", "no-watchdog-reset"})


class Timeline:
    """What the driver did and saw: (t, node, what, value), t in monotonic seconds.
    what: "daemon" (pid or None), "stopped" (bool), "link" (bool: plugged), "disk" (mode)."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, int, str, object]] = []
        self.lock = threading.Lock()

    def mark(self, node: int, what: str, value, t: float | None = None) -> None:
        with self.lock:
            self.marks.append((time.monotonic() if t is None else t, node, what, value))


class CtsCluster:
    def __init__(self, work: str, net_no: int = 9, *, broken: frozenset[str] = frozenset(), scsi_pr: bool = False):
        from tools.faultdisk import FaultDisk
        from tools.fusewatchdog import FuseWatchdog

        unknown = broken - BREAKAGES
        if unknown:
            raise ValueError(f"unknown breakage {', '.join(sorted(unknown))}: known are {', '.join(sorted(BREAKAGES))}")
        self.broken = broken
        self.scsi_pr = scsi_pr
        self.resources = RESOURCES + ((LUN_RESOURCE,) if scsi_pr else ())
        self.tgt = None  # tools.tgt.Tgt with --scsi-pr
        self.lun_iqn: str | None = None
        self.lun_url = ""
        self._luns = 0
        self.work = work
        self.run_dir = os.path.join(work, "run")
        self.template = os.path.join(work, "template.img")
        self.backing = os.path.join(work, "region.img")
        self.net = netns.TestNet(len(NODES), net=net_no, host_link=scsi_pr)
        self.disks: dict = {}
        self.dogs: dict = {}
        self.inits: dict[int, subprocess.Popen] = {}  # unshare's process per node (its child is PID 1)
        self.init_pid: dict[int, int | None] = {}
        self.daemon_pid: dict[int, int | None] = {}
        self.stopped: set[int] = set()
        self.timeline = Timeline()
        self._monitor: threading.Thread | None = None
        self._monitoring = threading.Event()
        try:
            self._run(DISKHB + ["format", self.template, "--cluster", CLUSTER, "--slots", "4",
                                "--interval-ms", str(INTERVAL_MS), "--dead-ms", str(DEAD_MS),
                                "--io-timeout-ms", str(IO_TIMEOUT_MS), "--mmp-resources", str(len(self.resources) + 2),
                                "--watchdog-timeout-s", str(WATCHDOG_S)])
            shutil.copyfile(self.template, self.backing)
            self.key = os.path.join(work, "authkey")
            self._run(DISKHB + ["keygen", self.key])
            self.net.up()
            self.net.static_neighbours()
            if scsi_pr:
                from diskhb.fencing.scsi.iscsi import load_libiscsi
                from tools import tgt

                load_libiscsi()  # TransportUnavailable, one line, when libiscsi is missing
                self.tgt = tgt.Tgt(portal_host=self.net.host_addr()).start()
            for i in NODES:  # mounted before any node starts: each node's mount namespace copies them
                self.disks[i] = FaultDisk(self.backing, os.path.join(work, f"disk{i}")).start()
                self.dogs[i] = FuseWatchdog(os.path.join(work, f"wd{i}")).start()
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _run(argv: list[str]) -> None:
        r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[2:4])}: {r.stderr.strip()}")

    # -- one schedule's life ------------------------------------------------------------------------

    def begin(self, sched_dir: str) -> None:
        """Fresh region, audit and logs; every link plugged and disk ok; then every node started."""
        self.sched_dir = sched_dir
        os.makedirs(sched_dir, exist_ok=True)
        self.audit = os.path.join(sched_dir, "audit.log")
        open(self.audit, "w").close()
        self.refused = os.path.join(sched_dir, "lun-refused.log")
        if self.tgt is not None:  # a fresh LU: no registration or reservation of an earlier schedule
            if self.lun_iqn is not None:
                self.tgt.remove_target(self.lun_iqn)
                self.lun_iqn = None
            self._luns += 1
            iqn = f"{PR_IQN}:lun{self._luns}"
            self.lun_url = self.tgt.add_target(iqn, size_bytes=LUN_BYTES)
            self.lun_iqn = iqn
        with open(self.template, "rb") as src, open(self.backing, "r+b") as dst:  # in place: FUSE holds it open
            dst.write(src.read())
            dst.flush()
            os.fsync(dst.fileno())
        self.timeline = Timeline()
        self.node_starts: dict[int, int] = {}
        for i in NODES:
            self.set_link(i, True)
            self.set_disk(i, "ok")
        self._monitoring.set()
        self._monitor = threading.Thread(target=self._watch, name="cts-monitor", daemon=True)
        self._monitor.start()
        for i in NODES:
            self.start_node(i, 0.0 if i == FIRST_HOLDER else CONSUMER_DELAY_S)

    def end(self) -> None:
        """Every node killed (its namespace with it), every fault undone, every watchdog quiet."""
        for i in NODES:
            self.cont(i)
            p = self.init_pid.get(i)
            if p:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
        for p in self.inits.values():
            try:
                p.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(STOP_WAIT_S)
        self.inits.clear()
        self._monitoring.clear()
        if self._monitor is not None:
            self._monitor.join(5)
        for i in NODES:
            self.set_link(i, True)
            self.set_disk(i, "ok")
        self._quiet_dogs()

    def _quiet_dogs(self) -> None:
        deadline = time.monotonic() + DOG_QUIET_WAIT_S
        for i, dog in self.dogs.items():
            dog.set_reset_pid(0)
            while dog.state().get("armed") and time.monotonic() < deadline:
                time.sleep(0.05)

    # -- nodes --------------------------------------------------------------------------------------

    def config(self, i: int) -> str:
        path = os.path.join(self.sched_dir, f"n{i}.toml")
        peers = ", ".join(f'"{self.net.addr(j)}"' for j in NODES if j != i)
        if "no-loss-action" in self.broken:
            resources = "".join(f'[[resource]]\nname = "{r}"\ninterval_ms = {MMP_INTERVAL_MS}\non_loss = ["none"]\n'
                                for r in RESOURCES)
        else:
            resources = "".join(f'[[resource]]\nname = "{r}"\ninterval_ms = {MMP_INTERVAL_MS}\non_loss = ["kill"]\n'
                                f'kill_grace_ms = 200\nmountpoint = "{self.mountpoint(i, r)}"\n' for r in RESOURCES)
        pr = ""
        if self.scsi_pr:
            action = 'on_loss = ["none"]\n' if "no-loss-action" in self.broken else \
                f'on_loss = ["kill"]\nkill_grace_ms = 200\nmountpoint = "{self.mountpoint(i, LUN_RESOURCE)}"\n'
            resources += (f'[[resource]]\nname = "{LUN_RESOURCE}"\ninterval_ms = {MMP_INTERVAL_MS}\non_pr_luns = true\n'
                          f'{action}')
            pr = (f'[scsi-pr]\nluns = ["{self.lun_url}"]\ninitiator = "{PR_IQN}:n{i}"\n'
                  f'audit_interval_ms = {PR_AUDIT_MS}\ntimeout_ms = {PR_TIMEOUT_MS}\n'
                  f'command_timeout_ms = {PR_COMMAND_MS}\n')
        with open(path, "w") as f:
            f.write(f'[node]\nname = "n{i}"\nid = {i}\nrun_dir = "{self.run_dir}"\n'
                    + ('fence = ["scsi-pr", "pill"]\n' if self.scsi_pr else "") + '[metrics]\nlisten = ""\n'
                    f'[quorum]\nnodes = [{", ".join(map(str, NODES))}]\n'
                    f'[watchdog]\ndevice = "{self.dogs[i].path}"\ntimeout_s = {WATCHDOG_S}\n{resources}'
                    f'[[region]]\ntype = "disk"\nname = "disk"\npath = "{self.disks[i].path}"\n'
                    f'[[region]]\ntype = "net"\nname = "lan"\nbind = "{self.net.addr(i)}"\npeers = [{peers}]\n'
                    f'key = "{self.key}"\n{pr}')
        return path

    def mountpoint(self, i: int, r: str) -> str:
        return os.path.join(self.sched_dir, f"n{i}", r)

    def socket(self, i: int) -> str:
        return os.path.join(self.run_dir, f"diskhb-{CLUSTER}-{i}.sock")

    def start_node(self, i: int, consumer_delay_s: float = 0.0) -> None:
        """A new node i (new namespaces, a new daemon generation). Its watchdog must be quiet first:
        a reset still due from the node before would hit this one."""
        deadline = time.monotonic() + DOG_QUIET_WAIT_S
        while self.dogs[i].state().get("armed") and time.monotonic() < deadline:
            time.sleep(0.02)
        os.makedirs(os.path.join(self.sched_dir, f"n{i}"), exist_ok=True)
        k = self.node_starts[i] = self.node_starts.get(i, 0) + 1  # daemon logs: n<i>.<k>.<daemon start>.log
        cmd = self.net.exec_prefix(i) + [
            "unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "--", sys.executable, "-m", "tools.cts.node",
            "--node-id", str(i), "--node-dir", os.path.join(self.sched_dir, f"n{i}"), "--config", self.config(i),
            "--socket", self.socket(i), "--audit", self.audit, "--root", ROOT,
            "--log-prefix", os.path.join(self.sched_dir, f"n{i}.{k}"), "--resources", ",".join(self.resources),
            "--consumer-delay-s", str(consumer_delay_s)]
        if self.scsi_pr:
            cmd += ["--iscsi-resource", LUN_RESOURCE, "--iscsi", self.lun_url, "--initiator", f"{PR_IQN}:n{i}:consumer",
                    "--cluster", CLUSTER, "--refused", self.refused]
        with open(os.path.join(self.sched_dir, f"n{i}.{k}.init.out"), "w") as out:
            p = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                 env={**os.environ, "PYTHONPATH": ROOT})
        self.inits[i] = p
        deadline = time.monotonic() + 10
        while not children(p.pid):
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"node {i}: its namespace did not start (see {out.name})")
            time.sleep(0.01)
        self.init_pid[i] = children(p.pid)[0]
        self.dogs[i].set_reset_pid(0 if "no-watchdog-reset" in self.broken else self.init_pid[i])

    def node_up(self, i: int) -> bool:
        p = self.init_pid.get(i)
        return bool(p) and alive(p)

    def _find_daemon(self, i: int) -> int | None:
        init = self.init_pid.get(i)
        if not init or not alive(init):
            return None
        for c in children(init):
            if "diskhb.cli run" in cmdline(c) and alive(c):
                return c
        return None

    def _watch(self) -> None:
        while self._monitoring.is_set():
            for i in NODES:
                pid = self._find_daemon(i)
                if pid != self.daemon_pid.get(i):
                    self.daemon_pid[i] = pid
                    self.timeline.mark(i, "daemon", pid)
            time.sleep(MONITOR_S)

    # -- faults -------------------------------------------------------------------------------------

    def signal_daemon(self, i: int, sig: int) -> bool:
        pid = self._find_daemon(i)
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        return True

    def freeze(self, i: int) -> None:
        if self.signal_daemon(i, signal.SIGSTOP):
            self.stopped.add(i)
            self.timeline.mark(i, "stopped", True)

    def cont(self, i: int) -> None:
        if i in self.stopped:
            self.stopped.discard(i)
            self.signal_daemon(i, signal.SIGCONT)
            self.timeline.mark(i, "stopped", False)

    def reset(self, i: int) -> None:
        p = self.init_pid.get(i)
        if p and alive(p):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)

    def restart(self, i: int) -> None:
        if self.node_up(i):
            self.cont(i)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.init_pid[i], signal.SIGUSR1)
        else:
            self.start_node(i)

    def set_link(self, i: int, up: bool) -> None:
        (self.net.plug if up else self.net.cut)(i)
        self.timeline.mark(i, "link", up)

    def set_disk(self, i: int, mode: str) -> None:
        self.disks[i].set(all=mode)
        self.timeline.mark(i, "disk", mode)

    # -- looking ------------------------------------------------------------------------------------

    def status(self, i: int) -> dict | None:
        if i in self.stopped or self.daemon_pid.get(i) is None:
            return None
        try:
            return request(self.socket(i), "status", 2)
        except ControlError:
            return None

    def logs(self, i: int) -> list[str]:
        return sorted(os.path.join(self.sched_dir, f) for f in os.listdir(self.sched_dir)
                      if f.startswith(f"n{i}.") and f.endswith(".log"))

    def close(self) -> None:
        try:
            if self.inits:
                self.end()
        finally:
            try:
                try:
                    if self.tgt is not None:  # before the net: its portal's address goes with it
                        self.tgt.stop()
                finally:
                    for fd in self.disks.values():
                        fd.release()
                    for fd in self.disks.values():
                        fd.close()
                    for dog in self.dogs.values():
                        dog.close()
            finally:
                self.net.down()
