"""SCSI-PR fencing on real daemons against tgt on 127.0.0.1 (issue 11): each daemon registers its
incarnation's key once quorate (diskhb.fencing.keeper PK1), a dead node's fencer preempts it and
reads the keys back (scsi_pr SP4) before its storage counts as fenced, a frozen victim that
wakes finds its key gone and fences itself (SF7), a receipt follows one window later (fencing
FD12), and `diskhb unfence` registers again only when that is safe (PK4). Daemons, sessions and
the target are torn down by fixtures, pass or fail."""

from __future__ import annotations

import signal
import urllib.request

import pytest

from cluster import Cluster, diskhb, metric_value, wait_until
from diskhb.fencing import pr_key
from diskhb.fencing.scsi import pr

CLUSTER = "test"  # the cluster fixture's region
T = 3000


def scsi_pr_conf(url: str, n: int) -> str:
    return (f'[scsi-pr]\nluns = ["{url}"]\ninitiator = "iqn.2024-01.org.diskhb.test:d{n}"\n'
            f"audit_interval_ms = 500\ntimeout_ms = 3000\ncommand_timeout_ms = 1000\n")


def start(c: Cluster, lun, nodes=(1, 2, 3), fence='["scsi-pr", "pill"]') -> None:
    for i in nodes:
        c.start(i, extra="[quorum]\nnodes = [1, 2, 3]\n" + scsi_pr_conf(lun.url, i), node_extra=f"fence = {fence}\n")
    for i in nodes:
        wait_until(lambda i=i: ((c.view(i) or {}).get("scsi_pr") or {}).get("registered"), 20,
                   f"node {i} registered on the LUN")


def key_of(c: Cluster, n: int) -> int:
    return int(c.view(n)["scsi_pr"]["own_key"], 16)


def metrics(c: Cluster, node_id: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{c.ports[node_id]}/metrics", timeout=5).read().decode()


def test_each_daemon_registers_its_incarnation_once_quorate_and_the_audit_is_clean(cluster, lun):
    c = cluster
    start(c, lun)
    keys = {n: key_of(c, n) for n in (1, 2, 3)}
    for n, k in keys.items():
        assert pr_key.split(k).node_id == n and pr_key.split(k).incarnation == int(c.view(n)["node"]["generation"], 16) \
            & 0xFFFF_FFFF
    listed = pr.read_keys(lun.node("observer"), T).keys
    assert sorted(listed) == sorted(keys.values())
    wait_until(lambda: (c.view(1)["scsi_pr"]["audit"] or {}).get("luns"), 10, "an audit")
    audit = c.view(1)["scsi_pr"]["audit"]
    assert not audit["fenced"] and [f["kind"] for f in audit["luns"][0]["findings"]
                                    if f["kind"] != "generation-moved"] == []
    assert audit["luns"][0]["reservation"]["type"] == "WE-RO"
    assert c.view(1)["fence_methods"] == ["scsi-pr", "pill"]
    assert metric_value(metrics(c, 1), "diskhb_pr_registered", lun=lun.url) == 1.0
    table = diskhb("status", "--config", c.config(1)).stdout
    assert f"scsi-pr: key 0x{keys[1]:016x} registered on 1 LUN(s)" in table, table
    assert "fence methods: scsi-pr then pill" in table and f"scsi-pr audit {lun.url}: 3 key(s)" in table, table


def test_a_dead_node_is_fenced_by_preempting_its_key_then_a_receipt_follows(cluster, lun):
    c = cluster
    start(c, lun)
    k2 = key_of(c, 2)
    c.kill(2)  # its session dies with it; tgt keeps its registration
    # node 3 is node 2's fencer (fencing FD4: the first member after it)
    wait_until(lambda: any(v["node"] == 2 and v["fenced"] for v in (c.view(3) or {}).get("fencing") or []), 15,
               "node 3 fences node 2")
    [row] = [v for v in c.view(3)["fencing"] if v["node"] == 2]
    assert row["method"] == "scsi-pr" and "fenced by scsi-pr" in row["last"]
    assert k2 not in pr.read_keys(lun.node("observer"), T).keys
    m = metrics(c, 3)
    assert metric_value(m, "diskhb_fence_attempts_total", method="scsi-pr", result="fenced") == 1.0
    assert metric_value(m, "diskhb_fence_attempts_total", method="pill", result="pending") == 0.0  # never needed
    # FD12: no watchdog here, so the window is dead_ms (1 s): node 2 stays silent, the receipt is issued
    wait_until(lambda: (c.view(3) or {}).get("fence_receipts"), 10, "a receipt")
    [receipt] = c.view(3)["fence_receipts"]
    assert receipt["node"] == 2 and receipt["issued"] and "keys [" in receipt["evidence"]
    assert metric_value(metrics(c, 3), "diskhb_fence_receipts_total") == 1.0
    assert "fencing receipt for node 2" in c.log(3)


def test_a_frozen_victim_that_wakes_finds_its_key_gone_and_fences_itself(cluster, lun):
    c = cluster
    start(c, lun)
    c.procs[1].send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: any(v["node"] == 1 and v["fenced"] for v in (c.view(2) or {}).get("fencing") or []), 15,
                   "node 2 fences node 1")
    finally:
        c.procs[1].send_signal(signal.SIGCONT)
    # awake, it fences itself: its lease ran out while frozen (SF3), or its audit finds its key gone (SF7)
    wait_until(lambda: ((c.view(1) or {}).get("self_fence") or {}).get("reason") in ("lease", "io-fenced"), 15,
               "node 1 fences itself")
    wait_until(lambda: "scsi-pr audit: fenced: this node's key" in c.log(1), 10, "its audit sees the preempt")
    r = diskhb("unfence", "--config", c.config(1))
    assert r.returncode == 1 and "restart" in r.stderr and "Traceback" not in r.stderr  # PK4


def test_a_live_node_fenced_by_an_operator_through_scsi_pr_fences_itself_at_its_next_audit(cluster, lun):
    c = cluster
    start(c, lun)
    k1 = key_of(c, 1)
    r = diskhb("fence", "1", "--method", "scsi-pr", "--config", c.config(2))
    assert r.returncode == 0 and "scsi-pr" in r.stdout, r.stderr
    wait_until(lambda: any(v["node"] == 1 and v["fenced"] for v in (c.view(2) or {}).get("fencing") or []), 10,
               "node 2 fenced node 1")
    assert k1 not in pr.read_keys(lun.node("observer"), T).keys
    wait_until(lambda: ((c.view(1) or {}).get("self_fence") or {}).get("reason") == "io-fenced", 10,
               "node 1 fences itself (SF7)")
    assert "SELF-FENCED (io-fenced): our reservation key was removed" in c.log(1)
    assert metric_value(metrics(c, 1), "diskhb_self_fence_total", reason="io-fenced") == 1.0
    assert metric_value(metrics(c, 1), "diskhb_pr_audit_findings_total", kind="fenced") == 1.0


def test_unfence_registers_again_only_when_quorate(cluster, lun):
    c = cluster
    start(c, lun)
    r = diskhb("unfence", "--config", c.config(1))
    assert r.returncode == 0 and "registered" in r.stdout, r.stderr
    c.kill(2)
    c.kill(3)
    wait_until(lambda: not (c.view(1) or {}).get("quorum", {}).get("quorate"), 15, "node 1 loses quorum")
    r = diskhb("unfence", "--config", c.config(1))
    assert r.returncode == 1 and "not quorate" in r.stderr


def test_a_node_restarted_into_a_minority_never_registers(cluster, lun):
    c = cluster
    c.start(1, extra="[quorum]\nnodes = [1, 2, 3]\n" + scsi_pr_conf(lun.url, 1), node_extra='fence = ["scsi-pr"]\n')
    wait_until(lambda: (c.view(1) or {}).get("quorum") is not None, 15, "node 1 up")
    wait_until(lambda: "scsi-pr: key" in c.log(1), 10, "its key is announced")
    assert c.view(1)["scsi_pr"]["registered"] is False
    assert pr.read_keys(lun.node("observer"), T).keys == ()


@pytest.mark.parametrize("conf, message", [
    ('[scsi-pr]\nluns = ["iscsi://localhost/iqn.x:y/1"]\n', "must be an IP address"),
    ('[scsi-pr]\nluns = ["sdb"]\n', "must be absolute"),
    ('[scsi-pr]\nluns = []\n', "is empty"),
])
def test_bad_scsi_pr_config_is_one_line(cluster, conf, message):
    path = cluster.config(1, extra="[quorum]\nnodes = [1, 2, 3]\n" + conf)
    r = diskhb("run", "--check", "--config", path)  # the checklist: one FAIL line for the config
    assert r.returncode == 1 and [ln for ln in r.stdout.splitlines() if ln.startswith("FAIL")] == \
        [ln for ln in r.stdout.splitlines() if message in ln and ln.startswith("FAIL  config")], r.stdout


def test_a_fence_method_without_its_section_is_one_line(cluster):
    path = cluster.config(1, extra="[quorum]\nnodes = [1, 2, 3]\n", node_extra='fence = ["scsi-pr"]\n')
    r = diskhb("run", "--check", "--config", path)
    assert r.returncode == 1 and "method 'scsi-pr' needs [scsi-pr]" in r.stdout, r.stdout


def test_only_a_resource_on_the_luns_is_taken_over_at_the_scsi_pr_fence(cluster, lun):
    """Fencing FD13: the victim may run on after an I/O fence; storage off the LUNs waits for the
    MMP guard's classic watch."""
    import time

    from diskhb.control import request, socket_path

    def ask(c, n, line):
        return request(socket_path(c.run_dir, CLUSTER, n), line, 30)

    c = cluster
    interval_ms = 2000  # a classic watch takes 2 x 2 + 1 = 5 s
    res = (f'[[resource]]\nname = "onlun"\ninterval_ms = {interval_ms}\non_loss = ["none"]\non_pr_luns = true\n'
           f'[[resource]]\nname = "local"\ninterval_ms = {interval_ms}\non_loss = ["none"]\n')
    for i in (1, 2, 3):
        c.start(i, extra="[quorum]\nnodes = [1, 2, 3]\n" + scsi_pr_conf(lun.url, i) + res,
                node_extra='fence = ["scsi-pr"]\n')
    for i in (1, 2, 3):
        wait_until(lambda i=i: ((c.view(i) or {}).get("scsi_pr") or {}).get("registered"), 20, f"node {i} registered")
    assert ask(c, 2, "mmp-acquire onlun 0 1")["ok"] and ask(c, 2, "mmp-acquire local 0 1")["ok"]
    c.kill(2)
    wait_until(lambda: any(v["node"] == 2 and v["fenced"] for v in (c.view(1) or {}).get("fencing") or [])
               or any(v["node"] == 2 and v["fenced"] for v in (c.view(3) or {}).get("fencing") or []), 15,
               "node 2 fenced")
    wait_until(lambda: any(v["node"] == 2 and v["fenced"] for v in (c.view(3) or {}).get("fencing") or []), 15,
               "node 3, the fencer, fenced node 2")
    t0 = time.monotonic()
    out = ask(c, 3, "mmp-acquire onlun 0 0")
    fast = time.monotonic() - t0
    assert out["ok"] and "stopped writing" in out["note"] and fast < 2, (out, fast)
    t0 = time.monotonic()
    out = ask(c, 3, "mmp-acquire local 0 0")
    slow = time.monotonic() - t0
    assert out["ok"] and slow >= (2 * interval_ms + 1000) / 1000 - 0.5, (out, slow)
