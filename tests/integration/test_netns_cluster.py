"""Three daemons, each in its own network namespace, beating on a shared disk AND a UDP link (issue 3).

    node i: namespace dhb...n<i> (10.77.<net>.<i>, veth to a bridge in a hub namespace)
            disk region "disk": the shared backing file through node i's own FaultDisk mount
            net region "lan":   unicast to the two other nodes, HMAC key from `diskhb keygen`

A node is alive while ANY region sees it (README): losing one region is a per-region change
only. Checked with real processes:
  (a) node 3's cable cut while the disk works: nobody dies; the views say the net region lost
      node 3 and the disk still sees it; plugged back, the net sees it again;
  (b) node 2's disk hangs, then fails with EIO, while the net works: nobody dies; node 2's own
      disk region is unhealthy; the peers see node 2's disk_lost flag (carried by its datagrams,
      since its disk slot no longer moves) in status and in diskhb_node_flag; recovery clears it;
  (c) node 3 SIGKILLed (disk and net both silent): the peers declare it dead within dead_ms + slack.

Teardown, pass or fail: hung requests released, daemons stopped (by PID), FUSE servers ended,
namespaces deleted. Metrics listen on each namespace's own loopback, so they are scraped from
inside it (`ip netns exec NS curl`); the control sockets live on the shared file system.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tools import netns
from cluster import metric_value, ROOT, Cluster, diskhb, wait_until

pytestmark = [pytest.mark.root, pytest.mark.slow]

DISK, NET = "disk", "lan"
INTERVAL_MS = 100
DEAD_MS = 1500
IO_TIMEOUT_MS = 500
METRICS_PORT = 9701  # every namespace has its own loopback: one port for all
NODES = (1, 2, 3)


class NsCluster(Cluster):
    def __init__(self, workdir: str, backing: str, net: netns.TestNet, disks: dict, key: str):
        super().__init__(workdir, backing)
        self.net, self.disks, self.key = net, disks, key

    def config(self, node_id: int, name: str | None = None, extra: str = "") -> str:
        path = os.path.join(self.workdir, f"node{node_id}.toml")
        peers = ", ".join(f'"{self.net.addr(j)}"' for j in NODES if j != node_id)
        with open(path, "w") as f:
            f.write(f'[node]\nname = "node{node_id}"\nid = {node_id}\nrun_dir = "{self.run_dir}"\n'
                    f'[metrics]\nlisten = "127.0.0.1:{METRICS_PORT}"\n'
                    f'[[region]]\ntype = "disk"\nname = "{DISK}"\npath = "{self.disks[node_id].path}"\n'
                    f'[[region]]\ntype = "net"\nname = "{NET}"\nbind = "{self.net.addr(node_id)}"\n'
                    f'peers = [{peers}]\nkey = "{self.key}"\n')
        return path

    def start(self, node_id: int, name: str | None = None, extra: str = "") -> subprocess.Popen:
        cfg = self.config(node_id)
        log = os.path.join(self.workdir, f"node{node_id}.{len(self.logs)}.log")
        self.logs[node_id] = log
        with open(log, "w") as out:  # ip netns exec execs python: the PID is the daemon's
            p = subprocess.Popen(self.net.exec_prefix(node_id) + [sys.executable, "-m", "diskhb.cli", "run",
                                                                   "--config", cfg],
                                 stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        self.procs[node_id] = p
        self.all_procs.append(p)
        return p

    def metrics(self, node_id: int) -> str:
        r = subprocess.run(self.net.exec_prefix(node_id) + ["curl", "-sf", "--max-time", "5",
                                                            f"http://127.0.0.1:{METRICS_PORT}/metrics"],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, f"metrics of node {node_id}: curl exit {r.returncode} {r.stderr}"
        return r.stdout

    def node(self, observer: int, node_id: int) -> dict | None:
        v = self.view(observer)
        return next((n for n in (v or {}).get("nodes", []) if n["id"] == node_id), None)

    def region_state(self, observer: int, node_id: int, region: str) -> str | None:
        n = self.node(observer, node_id)
        return (n or {}).get("regions", {}).get(region, {}).get("state")

    def status(self, node_id: int) -> dict:
        """`diskhb status PATH --json` with the daemon's run_dir: the daemon's own view."""
        r = diskhb("status", self.disks[node_id].path, "--json", "--run-dir", self.run_dir, timeout=30)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out.get("source") == "daemon", out
        return out


def overall_deaths(log: str) -> list[str]:
    """Overall "node X (id N): S -> dead" decisions (per-region losses are "on region R: ...")."""
    return [ln for ln in log.splitlines() if re.search(r"\(id \d+\): \w+ -> dead", ln)]


def by_id(status: dict, node_id: int) -> dict:
    return next(n for n in status["nodes"] if n["id"] == node_id)


@contextlib.contextmanager
def ns_cluster(disk_tmp_path, cls: type = NsCluster, *, net_no: int = 7, mmp_resources: int = 0):
    """A formatted region, a key, the namespaces and one FaultDisk per node; torn down, pass or
    fail (hung requests released, daemons stopped, FUSE ended, namespaces deleted)."""
    from cluster import faultdisk_missing as _faultdisk_missing

    reason = netns.available()
    if reason:
        pytest.skip(reason)
    missing = _faultdisk_missing()
    if missing:
        pytest.skip(f"faultdisk needs {missing}")
    if not shutil.which("curl"):
        pytest.skip("needs curl to scrape metrics inside a namespace")
    from tools.faultdisk import FaultDisk

    backing = os.path.join(disk_tmp_path, "region.img")
    r = diskhb("format", backing, "--cluster", "test", "--slots", "8", "--interval-ms", INTERVAL_MS,
               "--dead-ms", DEAD_MS, "--io-timeout-ms", IO_TIMEOUT_MS, "--mmp-resources", str(mmp_resources))
    assert r.returncode == 0, r.stderr
    key = os.path.join(disk_tmp_path, "authkey")
    r = diskhb("keygen", key)
    assert r.returncode == 0, r.stderr
    assert os.stat(key).st_mode & 0o777 == 0o600
    net = netns.TestNet(len(NODES), net=net_no)
    disks: dict = {}
    c = None
    try:
        net.up()
        for i in NODES:  # mounted before the daemons start: `ip netns exec` copies the mounts
            disks[i] = FaultDisk(backing, os.path.join(disk_tmp_path, f"mnt{i}")).start()
        c = cls(disk_tmp_path, backing, net, disks, key)
        yield c
    finally:
        try:
            for fd in disks.values():
                fd.release()  # no daemon may wait on a hung request while it stops
            if c is not None:
                c.stop_all()
        finally:  # each step runs even if the one before it failed
            try:
                for fd in disks.values():
                    fd.close()
            finally:
                net.down()


@pytest.fixture
def nscluster(disk_tmp_path):
    with ns_cluster(disk_tmp_path) as c:
        yield c


def sees(c: NsCluster, a: int, b: int, region: str) -> bool:
    return c.region_state(a, b, region) == "alive"


def test_one_region_lost_kills_nobody_and_both_lost_kills(nscluster):
    c = nscluster
    for i in NODES:
        c.start(i)
    for a in NODES:
        for b in NODES:
            if a != b:
                for region in (DISK, NET):
                    wait_until(lambda: sees(c, a, b, region), 20, f"node {a} to see node {b} on {region}")

    # (a) node 3's cable cut: the net loses node 3 (and node 3 the others), the disk does not
    c.net.cut(3)
    for a in (1, 2):
        wait_until(lambda: c.region_state(a, 3, NET) == "dead", DEAD_MS / 1000 + 3, f"node {a}: net loses node 3")
    wait_until(lambda: c.region_state(3, 1, NET) == "dead" and c.region_state(3, 2, NET) == "dead",
               DEAD_MS / 1000 + 3, "node 3: net loses nodes 1 and 2")
    st = c.status(1)
    n3 = by_id(st, 3)
    assert n3["state"] == "alive", n3
    assert n3["regions"][NET]["state"] == "dead" and n3["regions"][DISK]["state"] == "alive", n3
    assert by_id(st, 2)["regions"][NET]["state"] == "alive"
    for a in NODES:
        for b in NODES:
            if a != b:
                assert c.state_of(a, b) == "alive", (a, b, c.view(a))
    assert re.search(r"node node3 \(id 3\) on region lan: alive -> dead", c.log(1)), c.log(1)[-2000:]
    c.net.plug(3)
    for a in (1, 2):
        wait_until(lambda: sees(c, a, 3, NET) and sees(c, 3, a, NET), 5, f"nodes {a} and 3 to see each other on net again")
    for i in NODES:
        assert overall_deaths(c.log(i)) == [], c.log(i)[-3000:]

    # (b) node 2's disk hangs, then fails: node 2 keeps beating on the net with disk_lost
    fd2 = c.disks[2]
    fd2.set(all="hang")
    fd2.wait_hung("write")
    wait_until(lambda: not (c.view(2) or {}).get("regions", [{}])[0].get("healthy", True), 3,
               "node 2's own disk region unhealthy")
    for a in (1, 3):
        wait_until(lambda: "disk_lost" in (c.node(a, 2) or {}).get("flags", []), 3, f"node {a} to see node 2 disk_lost")
    flag = lambda a: metric_value(c.metrics(a), "diskhb_node_flag", node="node2", flag="disk_lost")  # noqa: E731
    assert flag(1) == 1.0 and flag(3) == 1.0
    assert metric_value(c.metrics(2), "diskhb_region_healthy", region=DISK) == 0.0
    assert metric_value(c.metrics(2), "diskhb_region_healthy", region=NET) == 1.0
    st = c.status(3)
    assert "disk_lost" in by_id(st, 2)["flags"] and by_id(st, 2)["state"] == "alive"
    mine = c.status(2)  # status answers from the daemon even while the daemon's own disk hangs
    assert not mine["regions"][0]["healthy"] and "disk_lost" in by_id(mine, 2)["flags"], mine
    # past dead_ms the peers' disk region loses node 2 (its slot stands still); the net keeps it
    for a in (1, 3):
        wait_until(lambda: c.region_state(a, 2, DISK) == "dead", DEAD_MS / 1000 + 3, f"node {a}: disk loses node 2")
    fd2.set(all="eio")  # the hung requests now fail, and so does every new one
    wait_until(lambda: "own write failed: EIO" in (c.view(2) or {}).get("regions", [{}])[0].get("reason", ""), 3,
               "node 2's disk region: own write failed")
    time.sleep(DEAD_MS / 1000)  # failing for a while longer still kills nobody
    for a in NODES:
        for b in NODES:
            if a != b:
                assert c.state_of(a, b) == "alive", (a, b, c.view(a))
    assert "disk_lost" in c.node(1, 2)["flags"]
    fd2.set(all="ok")
    wait_until(lambda: (c.view(2) or {}).get("regions", [{}])[0].get("healthy"), 5, "node 2's disk healthy again")
    for a in (1, 3):
        wait_until(lambda: "disk_lost" not in c.node(a, 2)["flags"] and sees(c, a, 2, DISK), 5,
                   f"node {a}: node 2 back on disk, flag cleared")
        assert flag(a) == 0.0
    assert "disk_lost" not in by_id(c.status(1), 2)["flags"]
    # node 2 could not read the disk: that is no evidence against anyone (sampled_ms)
    assert not re.search(r"on region disk: \w+ -> dead", c.log(2)), c.log(2)[-3000:]
    text = c.metrics(2)  # node 2's tick never waited on its disk
    assert metric_value(text, "diskhb_tick_lateness_seconds_bucket", le="0.25") == \
        metric_value(text, "diskhb_tick_lateness_seconds_count") > 0, text
    for i in NODES:
        assert overall_deaths(c.log(i)) == [], c.log(i)[-3000:]

    # (c) node 3 gone from both regions at once
    t0 = time.monotonic()
    c.kill(3)
    for a in (1, 2):
        c.wait_state(a, 3, "dead", timeout_s=DEAD_MS / 1000 + 1.5)
    took_s = time.monotonic() - t0
    assert took_s >= DEAD_MS / 1000 - 2 * INTERVAL_MS / 1000, took_s
    for a in (1, 2):
        assert [ln for ln in overall_deaths(c.log(a)) if "node3" not in ln] == [], c.log(a)[-3000:]
    assert c.state_of(1, 2) == "alive" and c.state_of(2, 1) == "alive"

    # (d) node 2 restarted while its disk writes fail from the first one: it never wrote the
    #     disk in this life, yet its writes fail: the notice must go out all the same
    gen2 = c.node(1, 2)["generation"]
    c.procs[2].send_signal(signal.SIGTERM)
    assert c.procs[2].wait(10) == 0
    wait_until(lambda: c.state_of(1, 2) == "left", 5, "node 1 to see node 2 leave")
    fd2.set(write="eio")
    c.start(2)
    wait_until(lambda: (n := c.node(1, 2)) and n["generation"] != gen2 and n["state"] == "alive", 10,
               "node 1 to see node 2's new generation alive (on the net)")
    wait_until(lambda: "own write failed: EIO" in (c.view(2) or {}).get("regions", [{}])[0].get("reason", ""), 3,
               "node 2's disk region: own write failed")
    wait_until(lambda: "disk_lost" in c.node(1, 2)["flags"], 3, "node 1 to see node 2 disk_lost")
    assert re.search(r"ERROR region disk unhealthy: own write failed: EIO", c.log(2)), c.log(2)[-2000:]
    assert c.region_state(1, 2, DISK) != "alive"
    fd2.set(write="ok")
    wait_until(lambda: "disk_lost" not in c.node(1, 2)["flags"] and sees(c, 1, 2, DISK), 5,
               "node 2 on disk again, flag cleared")
    assert [ln for ln in overall_deaths(c.log(1)) if "node3" not in ln] == [], c.log(1)[-3000:]

    # (e) a clean stop while node 2's disk write hangs: LEFT cannot reach the disk, so the
    #     daemon must not announce it on the net either (it could not promise to write no more):
    #     peers declare node 2 dead, never left
    fd2.set(write="hang")
    fd2.wait_hung("write")
    p2 = c.procs[2]
    seen_before = len(c.log(1))
    p2.send_signal(signal.SIGTERM)
    wait_until(lambda: "INFO stopped" in c.log(2), IO_TIMEOUT_MS / 1000 + 3, "node 2's bounded stop")
    assert "not publishing LEFT on the other regions" in c.log(2), c.log(2)[-2000:]
    c.wait_state(1, 2, "dead", timeout_s=DEAD_MS / 1000 + 3)
    fd2.set(write="ok")  # the disk answers: the process can end now
    assert p2.wait(10) == 0
    after = c.log(1)[seen_before:]
    assert re.search(r"node node2 \(id 2\): alive -> dead", after), after[-2000:]
    assert "-> left" not in after, after[-2000:]  # its late beat may show it alive once more: never left
