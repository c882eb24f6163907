"""A clean stop keeps beating (issue point 5): a daemon holding MMP resources whose writes are
slow (every write of it takes 1.5 s, and FUSE serializes writes to one file: a beat may wait
behind an MMP write) is stopped; it releases them while it goes on beating, publishes LEFT after
the releases, and no peer ever records it DEAD before it is LEFT. (Before, the release ran on the
tick and the node went silent meanwhile; tests/core/test_node.py shows the rule itself.)"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from cluster import diskhb, wait_until
from test_daemon_faults import fault_cluster

pytestmark = [pytest.mark.root, pytest.mark.slow]

INTERVAL_MS, DEAD_MS, IO_TIMEOUT_MS = 100, 6000, 5000
SLOW_MS = 1500  # every write of node 1 takes this long; queued behind an MMP write, 3 s: on time
# the hold's writes: a bump may wait behind a beat (3 s in all), inside HD-loss's 2 x 3 + 1 - 3 s
RESOURCES = '[[resource]]\nname = "r0"\ninterval_ms = 3000\non_loss = ["none"]\n'



@pytest.fixture
def slow_cluster(disk_tmp_path):
    with fault_cluster(disk_tmp_path, "--slots", "4", "--interval-ms", INTERVAL_MS, "--dead-ms", DEAD_MS,
                       "--io-timeout-ms", IO_TIMEOUT_MS, "--mmp-resources", "2") as c:
        yield c


def test_a_clean_stop_with_slow_releases_is_left_never_dead(slow_cluster):
    c = slow_cluster
    for i in (1, 2, 3):
        c.start(i, extra=RESOURCES)
    for obs in (2, 3):
        c.wait_state(obs, 1, "alive", timeout_s=15)
    out = ask(c, 1, "mmp-acquire r0 0 1")
    assert out["ok"], out
    c.fault.set(write=f"slow:{SLOW_MS}")
    time.sleep(3 * SLOW_MS / 1000)  # the holds adapt to the slow writes (their interval grows)
    assert all(h["state"] == "held" for h in c.view(1)["mmp"]), c.view(1)["mmp"]
    t0 = time.monotonic()
    c.procs[1].send_signal(signal.SIGTERM)
    states: dict[int, list[str]] = {2: [], 3: []}
    while c.procs[1].poll() is None and time.monotonic() - t0 < 30:
        for obs in (2, 3):
            s = c.state_of(obs, 1)
            if s and (not states[obs] or states[obs][-1] != s):
                states[obs].append(s)
        time.sleep(0.05)
    assert c.procs[1].returncode == 0, c.log(1)[-3000:]
    took = time.monotonic() - t0
    for obs in (2, 3):
        c.wait_state(obs, 1, "left", timeout_s=10)
        log = c.log(obs)
        assert "node node1 (id 1): alive -> dead" not in log and "node1 (id 1) on region shared: alive -> dead" \
            not in log, log[-2000:]
        assert "dead" not in states[obs], states
    log1 = c.log(1)
    assert log1.count("released r0") == 1 and "left cleanly" in log1
    assert log1.index("released r") < log1.index("left cleanly")
    assert took * 1000 > 2 * SLOW_MS  # the releases (and the LEFT) were slow
    view = json.loads(diskhb("mmp", "status", "--region", c.region, "--json").stdout)
    assert {r["resource"]: r["state"] for r in view["resources"] if r.get("resource")} == {"r0": "clean"}


def ask(c, node_id: int, line: str, timeout_s: float = 30) -> dict:
    from diskhb.control import request

    return request(os.path.join(c.run_dir, f"diskhb-{c.cluster_name()}-{node_id}.sock"), line, timeout_s)
