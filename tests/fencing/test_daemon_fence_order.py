"""The configured fencing order on real daemons (diskhb.fencing.runner FR1, FR5): scsi-pr first; when
its LUN does not answer, the fence agent (STONITH, the last resort) switches the victim off,
verified by its status; every method's attempt is counted and logged. The agent is tests/'s
protocol-following fence_test, its power states in a file."""

from __future__ import annotations

import json
import os
import shutil
import socket
import urllib.request
from pathlib import Path

from cluster import Cluster, diskhb, metric_value, wait_until

FENCE_TEST = Path(__file__).parent / "agents" / "fence_test"


def dead_port() -> int:
    """A 127.0.0.1 port with nothing listening: a LUN that does not answer."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(c: Cluster, node_id: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{c.ports[node_id]}/metrics", timeout=5).read().decode()


def test_scsi_pr_that_cannot_reach_its_lun_falls_back_to_the_agent_which_is_verified(cluster, tmp_path):
    c = cluster
    agent = str(tmp_path / "fence_test")
    shutil.copyfile(FENCE_TEST, agent)
    os.chmod(agent, 0o755)
    state = tmp_path / "power.json"
    lun = f"iscsi://127.0.0.1:{dead_port()}/iqn.2024-01.org.diskhb.test:gone/1"
    conf = ("[quorum]\nnodes = [1, 2, 3]\n"
            f'[scsi-pr]\nluns = ["{lun}"]\ninitiator = "iqn.2024-01.org.diskhb.test:x"\n'
            "timeout_ms = 1000\ncommand_timeout_ms = 500\n"
            f'[fence-agent]\nagent = "{agent}"\ntimeout_ms = 5000\nparams = {{ state_file = "{state}" }}\n'
            'plugs = { node2 = "outlet-2" }\n')
    for i in (1, 2, 3):
        c.start(i, extra=conf, node_extra='fence = ["scsi-pr", "agent"]\n')
    for i in (1, 2, 3):
        wait_until(lambda i=i: ((c.view(i) or {}).get("quorum") or {}).get("votes") == 3, 15, f"node {i} sees all")
    c.kill(2)
    wait_until(lambda: any(v["node"] == 2 and v["fenced"] for v in (c.view(3) or {}).get("fencing") or []), 20,
               "node 3 fences node 2")
    [row] = [v for v in c.view(3)["fencing"] if v["node"] == 2]
    assert row["method"] == "agent" and "after: scsi-pr:" in row["last"], row
    assert json.loads(state.read_text()) == {"outlet-2": "off"}  # the mapped plug, and only it
    m = metrics(c, 3)
    assert (metric_value(m, "diskhb_fence_attempts_total", method="scsi-pr", result="failed") or 0) \
        + (metric_value(m, "diskhb_fence_attempts_total", method="scsi-pr", result="timeout") or 0) == 1.0
    assert metric_value(m, "diskhb_fence_attempts_total", method="agent", result="fenced") == 1.0
    log3 = c.log(3)
    assert "by scsi-pr: " in log3 and "by agent: fenced" in log3
    # a scsi-pr that never registered reports it, and the node keeps running
    assert "scsi-pr: not registered on 1 of 1 LUN(s)" in c.log(1)


def test_an_agent_that_is_not_there_refuses_the_start_in_one_line(cluster, tmp_path):
    path = cluster.config(1, extra="[quorum]\nnodes = [1, 2, 3]\n"
                                   f'[fence-agent]\nagent = "{tmp_path}/fence_nothing"\n',
                          node_extra='fence = ["agent"]\n')
    r = diskhb("run", "--config", path)
    assert r.returncode == 2 and "fence_nothing" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
