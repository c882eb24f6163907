"""A real 2-node Pacemaker + corosync cluster on this machine (tools.pcmk): each node in its own
network, UTS, PID and mount namespace with its own corosync, pacemakerd and diskhb daemon;
fence_diskhb is the stonith device, a group ocf:diskhb:guard -> ocf:heartbeat:Filesystem (ext4 on
a shared loop device) prefers n1. A standby moves the group cleanly (no fencing, no watchdog
reset) and back; SIGKILL of n1's whole namespace gets it fenced through diskhb and the group
started on n2; so does a frozen n1 (every process stopped), which its watchdog resets. An
audit reads both nodes' mount tables every 100 ms: never two mounts.
Everything is torn down by the fixture, pass or fail."""

from __future__ import annotations

import shutil
import tempfile

import pytest

from tools import pcmk

pytestmark = [pytest.mark.root, pytest.mark.slow]

BOTH = {"n1", "n2"}
FAILOVER_LIMIT_S = 20  # the target is 10 s (BENCHMARKS.md); this bound only catches a hang


@pytest.fixture
def cluster():
    why = pcmk.missing()
    if why:
        pytest.skip(why)
    work = tempfile.mkdtemp(prefix="diskhb-pcmk-", dir="/var/tmp")
    c = None
    try:
        c = pcmk.PcmkCluster(work)
        yield c
    finally:
        if c is not None:
            c.close()
        shutil.rmtree(work, ignore_errors=True)


def up(c: pcmk.PcmkCluster) -> None:
    c.start()
    c.wait(lambda: c.online(1) == BOTH and c.online(2) == BOTH, 90, "both nodes online in both views")
    c.configure(1)
    c.wait(lambda: c.mounted(1) and c.where(1) == "n1", 60, "the group started on n1")


def fenced_and_moved(c: pcmk.PcmkCluster, took: float) -> list[str]:
    c.wait(lambda: c.where(2) == "n2", 30, "Pacemaker to report the group on n2")
    history = c.fences(2)
    assert any(h.startswith(("reboot of n1 successful", "off of n1 successful")) for h in history), history
    assert took <= FAILOVER_LIMIT_S, f"failover took {took:.1f} s"
    return history


def test_standby_moves_the_group_cleanly_and_a_killed_node_is_fenced_through_diskhb(cluster):
    c = cluster
    with pcmk.Audit(c) as audit:
        up(c)

        c.standby("n1", True, via=2)  # a clean move: no fencing
        c.wait(lambda: c.mounted(2) and c.where(2) == "n2", 60, "the group moved to n2")
        assert not c.mounted(1)
        c.standby("n1", False, via=2)
        c.wait(lambda: c.mounted(1) and c.where(1) == "n1", 60, "the group back on n1 (its preference)")
        assert c.node_up(1) and c.node_up(2)
        assert c.fences(1) == [] and c.fences(2) == [], (c.fences(1), c.fences(2))
        assert all(d.state()["fired"] == 0 for d in c.dogs.values()), "a standby reset nobody"

        took = c.failover(1, 2)  # SIGKILL of n1's PID 1: its whole namespace
        history = fenced_and_moved(c, took)
        print(f"\nfailover (SIGKILL of n1 -> ext4 mounted on n2): {took:.2f} s; fencing: {history}")
    assert audit.samples > 100, audit.samples
    assert not audit.overlaps, f"two mounts at {len(audit.overlaps)} samples"


def test_a_frozen_node_is_reset_by_its_watchdog_fenced_through_diskhb_and_its_group_moves(cluster):
    """Every process of n1 stopped (SIGSTOP): its filesystem stays mounted in its namespace until
    its watchdog, no longer fed, SIGKILLs its PID 1; only then is it counted fenced and mounted on
    n2."""
    c = cluster
    with pcmk.Audit(c) as audit:
        up(c)
        took = c.failover(1, 2, how="freeze")
        history = fenced_and_moved(c, took)
        assert c.dogs[1].state()["fired"] == 1 and not c.node_up(1)
        assert c.dogs[2].state()["fired"] == 0
        print(f"\nfailover (SIGSTOP of n1 -> ext4 mounted on n2): {took:.2f} s; fencing: {history}")
    assert audit.samples > 100, audit.samples
    assert not audit.overlaps, f"two mounts at {len(audit.overlaps)} samples"
