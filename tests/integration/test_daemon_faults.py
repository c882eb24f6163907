"""Real daemons on one shared region while node 1's own path to it hangs or fails (issue 2).

Node 1 reaches the region through its own FaultDisk (FUSE) mount of the backing file; nodes 2
and 3 use the backing file directly, so only node 1's I/O can be made to hang or fail. All three
disk regions carry the same name ("shared"), so metrics and views line up across nodes.

What must hold (README "How it decides"):
- a write in flight longer than io_timeout_ms, or a failed one, makes node 1 log "unhealthy:
  own write late/failed", sets diskhb_region_healthy{region} to 0 and DISK_LOST in its flags;
  the tick runs on (status answers, ticks stay on time); clearing the fault makes it healthy;
- node 1's hung reads are no evidence against anyone: nobody is declared dead by node 1;
- slow writes (each later than io_timeout_ms, all inside dead_ms) keep node 1 alive but
  unhealthy, and DISK_LOST reaches the peers through the slow disk itself;
- a clean stop with a hung write cannot publish LEFT: the peers declare node 1 dead, not left;
- with only a disk region, writes stalled longer than dead_ms make the peers declare node 1
  dead (nothing else can tell them it lives); once the writes go through, the peers see the
  same generation advance again: DEAD -> ALIVE, no restart (a restart is a new generation).

Every process (daemons, FUSE servers) is ended in fixture teardown, pass or fail; hung requests
are released before the daemons are stopped so none of them waits on the disk at exit.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
import urllib.request

import pytest

from cluster import metric_value, Cluster, diskhb, wait_until

pytestmark = [pytest.mark.root, pytest.mark.slow]

REGION = "shared"
INTERVAL_MS = 100
DEAD_MS = 2000
IO_TIMEOUT_MS = 400  # well below dead_ms: a short fault is reported long before anyone could die


class FaultCluster(Cluster):
    """Cluster whose nodes may each use their own path to the region, all under one region name."""

    def __init__(self, workdir: str, region: str, paths: dict[int, str]):
        super().__init__(workdir, region)
        self.paths = paths

    def config(self, node_id: int, name: str | None = None, extra: str = "") -> str:
        path = os.path.join(self.workdir, f"node{node_id}.toml")
        port = self.ports.setdefault(node_id, _free_port())
        with open(path, "w") as f:
            f.write(f'[node]\nname = "node{node_id}"\nid = {node_id}\nrun_dir = "{self.run_dir}"\n'
                    f'[metrics]\nlisten = "127.0.0.1:{port}"\n{extra}'
                    f'[[region]]\ntype = "disk"\nname = "{REGION}"\npath = "{self.paths.get(node_id, self.region)}"\n')
        return path

    def metrics(self, node_id: int) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[node_id]}/metrics", timeout=5) as r:
            return r.read().decode()

    def region_healthy(self, node_id: int) -> float | None:
        return metric_value(self.metrics(node_id), "diskhb_region_healthy", region=REGION)

    def node(self, observer: int, node_id: int) -> dict | None:
        v = self.view(observer)
        return next((n for n in (v or {}).get("nodes", []) if n["id"] == node_id), None)


def _free_port() -> int:
    from cluster import free_port

    return free_port()


def dead_lines(log: str) -> list[str]:
    """Every overall or per-region "-> dead" decision in a daemon log."""
    return [line for line in log.splitlines() if "-> dead" in line]


@contextlib.contextmanager
def fault_cluster(disk_tmp_path, *format_args):
    """A FaultCluster over a region formatted with `format_args`, node 1 on a FaultDisk of it (the
    others on the file itself); everything torn down, hangs released first, pass or fail."""
    from cluster import faultdisk_missing as _faultdisk_missing

    missing = _faultdisk_missing()
    if missing:
        pytest.skip(f"faultdisk needs {missing}")
    if os.geteuid() != 0:
        pytest.skip("needs root: FUSE mounts shared with the daemons (allow_other)")
    from tools.faultdisk import FaultDisk

    backing = os.path.join(disk_tmp_path, "region.img")
    r = diskhb("format", backing, "--cluster", "test", *format_args)
    assert r.returncode == 0, r.stderr
    fd = FaultDisk(backing, os.path.join(disk_tmp_path, "mnt1"))
    c = None
    try:
        fd.start()
        c = FaultCluster(disk_tmp_path, backing, {1: fd.path})
        c.fault = fd
        yield c
    finally:
        try:
            fd.release()  # nothing may stay hung while the daemons stop
            if c is not None:
                c.stop_all()
        finally:
            fd.close()


@pytest.fixture
def faulty(disk_tmp_path):
    with fault_cluster(disk_tmp_path, "--slots", "8", "--interval-ms", INTERVAL_MS, "--dead-ms", DEAD_MS,
                       "--io-timeout-ms", IO_TIMEOUT_MS, "--mmp-resources", "0") as c:
        yield c


def start_all(c: FaultCluster) -> None:
    for i in (1, 2, 3):
        c.start(i)
    for obs in (1, 2, 3):
        for other in (1, 2, 3):
            if other != obs:
                c.wait_state(obs, other, "alive", timeout_s=15)
    wait_until(lambda: c.region_healthy(1) == 1.0, 5, "node 1's region healthy")


def tick_lateness_ok(c: FaultCluster, node_id: int, bound: str = "0.25") -> bool:
    """No tick of node_id started more than `bound` seconds late (histogram bucket = count)."""
    text = c.metrics(node_id)
    under = metric_value(text, "diskhb_tick_lateness_seconds_bucket", le=bound)
    total = metric_value(text, "diskhb_tick_lateness_seconds_count")
    return under is not None and total is not None and total > 0 and under == total


def assert_nobody_dead(c: FaultCluster) -> None:
    for i in (1, 2, 3):
        assert dead_lines(c.log(i)) == [], f"node {i} declared a death:\n{c.log(i)[-3000:]}"
        for j in (1, 2, 3):
            if i != j:
                assert c.state_of(i, j) == "alive", (i, j, c.view(i))


def test_own_write_hang_and_eio_then_recovery_kill_nobody(faulty):
    c, fd = faulty, faulty.fault
    start_all(c)
    ticks_before = metric_value(c.metrics(1), "diskhb_ticks_total")

    # 1. writes hang: late after io_timeout_ms, far before dead_ms
    t0 = time.monotonic()
    fd.set(write="hang")
    fd.wait_hung("write")
    wait_until(lambda: c.region_healthy(1) == 0.0, 3, "node 1's region unhealthy on a hung write")
    wait_until(lambda: "own write late" in c.log(1), 3, "node 1 to log own write late")
    assert re.search(rf"region {REGION} unhealthy: own write late: in flight \d+ ms > io_timeout {IO_TIMEOUT_MS} ms",
                     c.log(1)), c.log(1)[-2000:]
    me = c.node(1, 1)  # the tick runs on: status answers, and our flags say the disk is lost
    assert me is not None and "disk_lost" in me["flags"] and me["regions"][REGION]["state"] == "unhealthy"
    assert time.monotonic() - t0 < DEAD_MS / 1000 * 0.7, "too slow to stay inside dead_ms; the test is invalid"
    fd.set(write="ok")  # released well inside dead_ms
    wait_until(lambda: c.region_healthy(1) == 1.0, 5, "node 1 healthy after the hang is cleared")
    wait_until(lambda: "disk_lost" not in c.node(1, 1)["flags"], 3, "DISK_LOST cleared")
    assert "region shared: own I/O healthy" in c.log(1)

    # 2. writes fail: EIO at once
    fd.set(write="eio")
    wait_until(lambda: c.region_healthy(1) == 0.0, 3, "node 1's region unhealthy on EIO")
    wait_until(lambda: "own write failed: EIO" in c.log(1), 3, "node 1 to log own write failed")
    fd.set(write="ok")
    wait_until(lambda: c.region_healthy(1) == 1.0, 5, "node 1 healthy after EIO is cleared")

    # 3. reads hang for longer than dead_ms: node 1 is blind, not entitled to kill anyone; once
    #    what it last read is dead_ms old it is no proof of life either (liveness R8): unknown.
    #    Its writes go on, so the peers see it alive (with DISK_LOST: its region is unhealthy)
    fd.set(read="hang")
    t_hang = time.monotonic()
    fd.wait_hung("read")
    wait_until(lambda: "own read late" in c.log(1), 3, "node 1 to log own read late")
    wait_until(lambda: "disk_lost" in (c.node(2, 1) or {}).get("flags", []), 3,
               "node 2 to see node 1's DISK_LOST flag on the disk")
    deadline = time.monotonic() + DEAD_MS / 1000 + 1.0
    while time.monotonic() < deadline:  # the tick keeps answering throughout
        states = (c.state_of(1, 2), c.state_of(1, 3))
        assert all(s in ("alive", "unknown") for s in states), c.view(1)
        if time.monotonic() - t_hang < DEAD_MS / 1000 * 0.7:
            assert states == ("alive", "alive"), c.view(1)
        time.sleep(0.2)
    assert (c.state_of(1, 2), c.state_of(1, 3)) == ("unknown", "unknown"), c.view(1)
    fd.set(read="ok")
    wait_until(lambda: c.region_healthy(1) == 1.0, 5, "node 1 healthy after the read hang is cleared")
    wait_until(lambda: "disk_lost" not in c.node(2, 1)["flags"], 3, "node 2 to see DISK_LOST cleared")

    # 4. writes slow (each one late, but they land well inside dead_ms): unhealthy, the beats
    #    still advance, and the notice reaches the peers through the slow disk itself
    fd.set(write=f"slow:{IO_TIMEOUT_MS + 200}")
    wait_until(lambda: "own write late: took" in (c.view(1) or {}).get("regions", [{}])[0].get("reason", ""),
               5, "node 1: own write late (took)")
    wait_until(lambda: "disk_lost" in (c.node(3, 1) or {}).get("flags", []), 5,
               "node 3 to see node 1's DISK_LOST through the slow disk")
    assert c.region_healthy(1) == 0.0 and c.state_of(2, 1) == "alive"
    fd.set(write="ok")
    wait_until(lambda: c.region_healthy(1) == 1.0, 5, "node 1 healthy after slow writes")
    wait_until(lambda: "disk_lost" not in c.node(3, 1)["flags"], 3, "node 3 to see DISK_LOST cleared")
    time.sleep(3 * INTERVAL_MS / 1000)

    assert_nobody_dead(c)
    assert tick_lateness_ok(c, 1), c.metrics(1)
    ticks_after = metric_value(c.metrics(1), "diskhb_ticks_total")
    elapsed_s = time.monotonic() - t0
    # the tick never waited on the disk: about one tick per interval through every fault
    assert ticks_after - ticks_before >= 0.7 * elapsed_s * 1000 / INTERVAL_MS, (ticks_before, ticks_after, elapsed_s)
    assert all(p.poll() is None for p in c.all_procs)


def test_writes_stalled_past_dead_ms_peers_declare_dead_then_alive_in_the_same_generation(faulty):
    c, fd = faulty, faulty.fault
    start_all(c)
    gen = c.node(2, 1)["generation"]
    fd.set(write="hang")
    fd.wait_hung("write")
    t0 = time.monotonic()
    for obs in (2, 3):  # only the disk could tell them node 1 lives, and it says nothing
        c.wait_state(obs, 1, "dead", timeout_s=DEAD_MS / 1000 + 3)
    assert time.monotonic() - t0 >= DEAD_MS / 1000 - 2 * INTERVAL_MS / 1000
    assert c.state_of(1, 2) == "alive" and c.state_of(1, 3) == "alive"  # node 1 still reads fine
    fd.set(write="ok")
    for obs in (2, 3):
        c.wait_state(obs, 1, "alive", timeout_s=5)
        n = c.node(obs, 1)
        assert n["generation"] == gen, "the same incarnation wrote again: not a restart"
        # the log lines are written by the logging thread: they may follow the status answer
        wait_until(lambda: re.search(r"node node1 \(id 1\): dead -> alive on shared", c.log(obs)), 5,
                   f"node {obs} to log node 1 alive again")
        log = c.log(obs)
        assert re.search(r"node node1 \(id 1\): alive -> dead on shared", log), log[-2000:]
        assert "restarted" not in log
        assert metric_value(c.metrics(obs), "diskhb_node_restarts_total", node="node1") in (None, 0.0)
    wait_until(lambda: c.region_healthy(1) == 1.0, 5, "node 1 healthy again")
    # only node 1 died, only in the peers' eyes, and only once
    assert dead_lines(c.log(1)) == []
    for obs in (2, 3):
        assert [ln for ln in dead_lines(c.log(obs)) if "node1" not in ln] == []
        assert len(dead_lines(c.log(obs))) == 1, dead_lines(c.log(obs))
    assert c.state_of(2, 3) == "alive" and c.state_of(3, 2) == "alive"


def test_clean_stop_while_own_writes_hang_is_bounded_and_not_a_clean_leave(faulty):
    """SIGTERM with node 1's write hung: LEFT cannot reach the disk, so the daemon gives up after
    io_timeout_ms and finishes its stop promptly; the peers, who never saw LEFT, declare node 1
    dead rather than left (a leave nobody could read is no leave).

    The process itself cannot finish exiting while its thread waits in the kernel for the hung
    write (D state: FUSE, like a block device, does not abandon a request it has handed to the
    device); it exits once the disk answers. That write then lands late, a genuine beat of the
    old process, so a peer may show node 1 alive once more for up to dead_ms: never left."""
    c, fd = faulty, faulty.fault
    start_all(c)
    fd.set(write="hang")
    fd.wait_hung("write")
    p = c.procs[1]
    p.send_signal(signal.SIGTERM)
    wait_until(lambda: "INFO stopped" in c.log(1), IO_TIMEOUT_MS / 1000 + 3, "node 1's bounded stop")
    assert "region shared: could not write the left flag" in c.log(1), c.log(1)[-2000:]
    for obs in (2, 3):
        c.wait_state(obs, 1, "dead", timeout_s=DEAD_MS / 1000 + 3)
    fd.set(write="ok")  # the disk answers: the process can end now
    assert p.wait(5) == 0
    for obs in (2, 3):
        c.wait_state(obs, 1, "dead", timeout_s=DEAD_MS / 1000 + 3)
        assert "-> left" not in c.log(obs), c.log(obs)[-2000:]
    assert c.state_of(2, 3) == "alive" and c.state_of(3, 2) == "alive"
