"""Quorum and self-fencing of three daemons in their own network namespaces, beating on a shared
disk (each through its own FaultDisk mount) and a UDP link (test_netns_cluster's harness), with
[quorum] nodes = [1, 2, 3] (issue 10, part 9):
  (a) losing one region never fences: node 3's cable cut, then node 2's disk failing (EIO) past
      its lease: nobody is named for fencing and nobody fences itself (node 2's peers still list
      it in their link views: it is connected, self_fence SF3);
  (b) a storage outage on every node fences nobody: every disk fails past the lease; quorum
      holds on the link, no victim, no self-fence;
  (c) a minority partition of 3 (node 3's cable cut and its disk failing or hung) loses quorum
      while holding a resource, or has its write stuck, and fences itself; the majority names
      it and writes the pill.
Teardown (the fixture): hung requests released, daemons stopped, FUSE ended, namespaces deleted.
"""

from __future__ import annotations

import os
import time

import pytest

from cluster import wait_until
from test_netns_cluster import DEAD_MS, DISK, NET, NODES, NsCluster, ns_cluster, sees

pytestmark = [pytest.mark.root, pytest.mark.slow]

QUORUM = "[quorum]\nnodes = [1, 2, 3]\n"
RESOURCE = '[[resource]]\nname = "db"\ninterval_ms = 1000\non_loss = ["none"]\n'


class QuorumCluster(NsCluster):
    def config(self, node_id: int, name: str | None = None, extra: str = "") -> str:
        path = super().config(node_id, name, extra)
        with open(path) as f:
            text = f.read()
        head, sep, regions = text.partition("[[region]]")  # tables before the region array
        with open(path, "w") as f:
            f.write(head + QUORUM + RESOURCE + sep + regions)
        return path


@pytest.fixture
def qcluster(disk_tmp_path):
    with ns_cluster(disk_tmp_path, QuorumCluster, net_no=8, mmp_resources=2) as c:
        for i in NODES:
            c.start(i)
        for a in NODES:
            for b in NODES:
                if a != b:
                    for region in (DISK, NET):
                        wait_until(lambda a=a, b=b, region=region: sees(c, a, b, region), 20,
                                   f"node {a} to see node {b} on {region}")
        for i in NODES:
            wait_until(lambda i=i: ((c.view(i) or {}).get("quorum") or {}).get("votes") == 3, 10, f"node {i} quorate")
        yield c


def nobody_fenced(c: QuorumCluster, nodes=NODES) -> None:
    for i in nodes:
        v = c.view(i)
        assert v["phase"] == "running" and not v["self_fence"], (i, v["phase"], v["self_fence"])
        assert not v["fencing"], (i, v["fencing"])
        assert v["quorum"]["quorate"], (i, v["quorum"])
        assert "must be fenced" not in c.log(i) and "SELF-FENCED" not in c.log(i)


def hold_for(seconds: float, check) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        check()
        time.sleep(0.25)


def test_losing_one_region_never_fences(qcluster):
    c = qcluster
    c.net.cut(3)
    hold_for(2 * DEAD_MS / 1000, lambda: nobody_fenced(c))
    c.net.plug(3)
    for a in (1, 2):
        wait_until(lambda a=a: sees(c, a, 3, NET) and sees(c, 3, a, NET), 5, f"nodes {a} and 3 on the net again")
    c.disks[2].set(all="eio")  # node 2's writes stop landing: its lease (dead_ms) runs out, but it is heard
    wait_until(lambda: not c.view(2)["regions"][0]["healthy"], 5, "node 2's disk region failing")
    hold_for(3 * DEAD_MS / 1000, lambda: nobody_fenced(c))
    c.disks[2].set(all="ok")


def test_a_storage_outage_on_every_node_fences_nobody(qcluster):
    c = qcluster
    for i in NODES:
        c.disks[i].set(all="eio")
    hold_for(3 * DEAD_MS / 1000, lambda: nobody_fenced(c))
    for i in NODES:
        assert not c.view(i)["regions"][0]["healthy"]  # the outage was real
        c.disks[i].set(all="ok")
    for i in NODES:
        wait_until(lambda i=i: c.view(i)["regions"][0]["healthy"], 10, f"node {i}'s disk back")
    nobody_fenced(c)


@pytest.mark.parametrize("disk, reasons", [("eio", ("quorum-lost", "lease")), ("hang", ("stuck-write",))])
def test_a_minority_partition_loses_quorum_and_fences_itself(qcluster, disk, reasons):
    """Its disk failing: it loses quorum while holding (SF2) or, in the same tick, its lease runs
    out unheard (SF3): both come due at dead_ms (1.5 s); its disk hung: its heartbeat write is
    stuck past write_land_max_ms (1 s) first (SF4)."""
    c = qcluster
    out = _ask(c, 3, "mmp-acquire db 0 1")
    assert out["ok"], out
    c.net.cut(3)
    c.disks[3].set(all=disk)  # node 3 is cut off from both: its peers' beats and the disk
    wait_until(lambda: (c.view(3) or {}).get("phase") == "self_fenced", 3 * DEAD_MS / 1000 + 5,
               "node 3 fences itself")
    sf = c.view(3)["self_fence"]
    assert sf["reason"] in reasons, sf
    wait_until(lambda: not c.view(3)["quorum"]["quorate"], DEAD_MS / 1000 + 3, "node 3 without quorum")
    for i in (1, 2):  # the majority stays quorate and names node 3; node 1 is its fencer
        assert c.view(i)["quorum"]["quorate"]
        wait_until(lambda i=i: any(v["node"] == 3 for v in c.view(i)["fencing"] or []), 10, f"node {i} names node 3")
    wait_until(lambda: any(v["node"] == 3 and v["attempts"] >= 1 for v in c.view(1)["fencing"]), 10,
               "node 1 writes the pill")
    for i in (1, 2):
        assert c.view(i)["phase"] == "running" and not c.view(i)["self_fence"]


def _ask(c: QuorumCluster, node_id: int, line: str) -> dict:
    from diskhb.control import request

    return request(os.path.join(c.run_dir, f"diskhb-test-{node_id}.sock"), line, 30)
