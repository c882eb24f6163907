"""Daemons as real processes on one shared region file: beat, crash, restart, leave, refuse."""

import json
import re
import signal
import time
import urllib.request

import pytest

from cluster import diskhb, wait_until  # the `cluster` fixture: tests/conftest.py

pytestmark = pytest.mark.slow


def test_three_daemons_see_each_other_and_status_agrees(cluster):
    for i in (1, 2, 3):
        cluster.start(i)
    for obs in (1, 2, 3):
        for other in (1, 2, 3):
            if other != obs:
                cluster.wait_state(obs, other, "alive")
    r = diskhb("status", cluster.region, "--json", "--no-daemon")
    assert r.returncode == 0, r.stderr
    view = json.loads(r.stdout)
    assert [(n["id"], n["name"], n["state"]) for n in view["nodes"]] == [
        (1, "node1", "alive"), (2, "node2", "alive"), (3, "node3", "alive")]
    for n in view["nodes"]:
        assert set(n) >= {"id", "name", "state", "seq", "generation", "age_s", "flags"}
        assert n["flags"] == ["active"] and int(n["generation"], 16) > 0 and n["age_s"] < 1
    # with a daemon running, status answers from the daemon and shows regions per node
    r = diskhb("status", cluster.region, "--json", "--run-dir", cluster.run_dir)
    view = json.loads(r.stdout)
    assert view["source"] == "daemon"
    assert all(cluster.region.endswith(list(n["regions"])[0].split(":", 1)[1]) for n in view["nodes"])
    table = diskhb("status", cluster.region, "--run-dir", cluster.run_dir).stdout
    assert "node2" in table and "alive" in table
    assert view["quorum"] is None and "quorum: not configured" in table


def test_quorum_in_status_and_metrics_follows_the_nodes_seen(cluster):
    quorum = "[quorum]\nnodes = [1, 2, 3]\n"
    cluster.start(1, extra=quorum)

    def quorum_of(node_id):
        return (cluster.view(node_id) or {}).get("quorum")

    wait_until(lambda: quorum_of(1) is not None and quorum_of(1)["votes"] == 1, timeout_s=10, what="node 1 judged")
    q = quorum_of(1)
    assert (q["quorate"], q["votes"], q["expected_votes"], q["members"]) == (False, 1, 3, [1])
    cluster.start(2, extra=quorum)
    wait_until(lambda: quorum_of(1)["quorate"], timeout_s=10, what="node 1 quorate with node 2 alive")
    q = quorum_of(1)
    assert (q["votes"], q["members"]) == (2, [1, 2])
    wait_until(lambda: (quorum_of(2) or {}).get("quorate"), timeout_s=10, what="node 2 quorate too")
    table = diskhb("status", cluster.region, "--run-dir", cluster.run_dir).stdout  # either daemon answers
    assert "quorum: QUORATE, 2 of 3 votes, members 1, 2" in table
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{cluster.ports[1]}/metrics", timeout=5).read().decode()
    assert re.search(r"^diskhb_quorate 1\.0$", metrics, re.M)
    assert re.search(r"^diskhb_quorum_votes 2\.0$", metrics, re.M)
    assert re.search(r"^diskhb_quorum_expected_votes 3\.0$", metrics, re.M)
    cluster.kill(2)
    wait_until(lambda: not quorum_of(1)["quorate"], timeout_s=10, what="node 1 loses quorum when node 2 dies")
    assert "quorum lost" in cluster.log(1)


def test_nodes_that_disagree_about_the_node_list_are_not_counted(cluster):
    cluster.start(1, extra="[quorum]\nnodes = [1, 2, 3]\n")
    cluster.start(2, extra="[quorum]\nnodes = [1, 2]\n")  # another cluster description (Q3)

    def quorum_of(node_id):
        return ((cluster.view(node_id) or {}).get("quorum")) or {}

    wait_until(lambda: quorum_of(1).get("refused") == [2], timeout_s=10, what="node 1 refuses node 2")
    wait_until(lambda: quorum_of(2).get("refused") == [1], timeout_s=10, what="node 2 refuses node 1")
    assert (quorum_of(1)["quorate"], quorum_of(1)["members"]) == (False, [1])
    assert cluster.state_of(1, 2) == "alive"  # alive, only not counted
    table = diskhb("status", cluster.region, "--run-dir", cluster.run_dir).stdout
    assert "NOT COUNTED (another [quorum]): " in table
    wait_until(lambda: "node 2 advertises another cluster" in cluster.log(1), 5, "one line in node 1's log")


def test_a_test_message_is_acknowledged_by_the_daemon_and_pending_for_a_node_not_running(cluster):
    cluster.start(1)
    wait_until(lambda: cluster.view(1) and cluster.view(1)["phase"] == "running", 10, "node 1 running")
    t0 = time.monotonic()
    r = diskhb("message", cluster.region, "1", "test")
    assert r.returncode == 0 and "test message (seq 1) written to the mailbox of node 1 (generation 0x" in r.stdout
    assert time.monotonic() - t0 < 5  # never waits for the node
    wait_until(lambda: ((cluster.view(1) or {}).get("mailbox") or {}).get(f"disk:{cluster.region}", {}).get("state")
               == "acknowledged", 5, "node 1 acknowledges")
    wait_until(lambda: "test message from an operator (seq 1) received and acknowledged" in cluster.log(1), 5, "logged")
    table = diskhb("status", cluster.region, "--run-dir", cluster.run_dir).stdout
    assert f"mailbox on disk:{cluster.region}: test from an operator (seq 1): acknowledged" in table
    assert diskhb("message", cluster.region, "2", "test", "--sender", "1").returncode == 0  # nobody runs node 2
    view = json.loads(diskhb("status", cluster.region, "--no-daemon", "--json", "--sample-ms", "300").stdout)
    assert view["mailboxes"]["1"]["acknowledged"] is True  # its slot carries the ack
    assert (view["mailboxes"]["2"]["acknowledged"], view["mailboxes"]["2"]["sender"]) == (False, 1)
    table = diskhb("status", cluster.region, "--no-daemon", "--sample-ms", "300").stdout
    assert "mailbox of node 2: test from node 1 (seq 1): PENDING" in table
    assert diskhb("message", cluster.region, "1", "clear").returncode == 0
    wait_until(lambda: "1" not in json.loads(diskhb("status", cluster.region, "--no-daemon", "--json", "--sample-ms",
                                                    "300").stdout)["mailboxes"], 5, "the clear acknowledged")
    bad = diskhb("message", cluster.region, "9", "test")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "node 9 does not exist" in bad.stderr


def test_a_dead_node_is_named_for_fencing_by_the_quorate_survivors(cluster):
    quorum = "[quorum]\nnodes = [1, 2, 3]\n"
    for i in (1, 2, 3):
        cluster.start(i, extra=quorum)
    for i in (1, 3):
        wait_until(lambda i=i: ((cluster.view(i) or {}).get("quorum") or {}).get("votes") == 3, timeout_s=10,
                   what=f"node {i} sees all three")
    cluster.kill(2)

    def victims(node_id):
        return (cluster.view(node_id) or {}).get("fencing") or []

    # FD4: the fencer of node 2 is the next member after it, node 3; node 1 names it too
    wait_until(lambda: victims(3) and victims(3)[0]["attempts"] >= 1, timeout_s=10, what="node 3 tries to fence 2")
    wait_until(lambda: victims(1), timeout_s=10, what="node 1 names the victim")
    v1, v3 = victims(1)[0], victims(3)[0]
    assert (v1["node"], v1["fencer"], v1["attempts"], v1["fenced"]) == (2, 3, 0, False)
    assert (v3["node"], v3["fencer"], v3["fenced"]) == (2, 3, False)
    assert "pill written on disk" in v3["last"] and v3["in_flight"]  # pending until node 2 fences itself (FD9)
    table = diskhb("status", cluster.region, "--run-dir", cluster.run_dir).stdout
    assert re.search(r"fencing: node 2 \(0x[0-9a-f]+\) TO BE FENCED for \d+\.\d s, fencer", table)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{cluster.ports[3]}/metrics", timeout=5).read().decode()
    assert re.search(r'^diskhb_fence_attempts_total\{method="pill",result="pending"\} [1-9]', metrics, re.M)
    wait_until(lambda: "node 2 (generation" in cluster.log(3) and "must be fenced" in cluster.log(3), 5, "logged")
    cluster.start(2, extra=quorum)  # FD7: a restart is no victim any more
    wait_until(lambda: not victims(3) and not victims(1), timeout_s=15, what="the restarted node 2 is no victim")
    wait_until(lambda: "needs no fencing any more: restarted as generation" in cluster.log(3), 5, "logged")
    # the pill meant for its old incarnation is no order to the new one
    wait_until(lambda: "not ours" in cluster.log(2), 5, "the restarted node 2 ignores the old pill")
    wait_until(lambda: cluster.view(2), 5, "node 2 answers")
    assert cluster.view(2)["phase"] == "running" and not cluster.view(2)["self_fence"]


def test_sigkill_is_detected_by_every_peer_within_dead_time(cluster):
    for i in (1, 2, 3):
        cluster.start(i)
    cluster.wait_state(1, 3, "alive")
    cluster.wait_state(2, 3, "alive")
    t0 = time.monotonic()
    cluster.kill(3)
    cluster.wait_state(1, 3, "dead", timeout_s=10)
    cluster.wait_state(2, 3, "dead", timeout_s=10)
    took = time.monotonic() - t0
    assert took >= 0.8  # never before the dead time (1000 ms, minus the last interval)
    assert re.search(r"node node3 \(id 3\): alive -> dead on disk:\S+ \(age 1\.\d+ s\)", cluster.log(1))
    # the others stay alive throughout
    assert cluster.state_of(1, 2) == "alive" and cluster.state_of(2, 1) == "alive"


def test_restart_gets_a_new_generation_and_peers_notice(cluster):
    cluster.start(1)
    cluster.start(2)
    cluster.wait_state(1, 2, "alive")
    gen_before = next(n["generation"] for n in cluster.view(1)["nodes"] if n["id"] == 2)
    cluster.kill(2)
    cluster.start(2)  # must wait out the dead time of its old incarnation, then take its slot
    wait_until(lambda: (v := cluster.view(1)) and any(
        n["id"] == 2 and n["generation"] != gen_before and n["state"] == "alive" for n in v["nodes"]),
        15, "node 2 back with a new generation")
    # the log line is written by the logging thread: it may follow the status answer by a moment
    wait_until(lambda: "node node2 (id 2) restarted" in cluster.log(1), 5, "the restart logged")


def test_clean_stop_is_left_not_dead(cluster):
    cluster.start(1)
    cluster.start(2)
    cluster.wait_state(1, 2, "alive")
    cluster.kill(2, signal.SIGTERM)
    assert cluster.procs[2].returncode == 0
    cluster.wait_state(1, 2, "left", timeout_s=5)
    time.sleep(1.5)  # longer than the dead time: still left, never dead
    assert cluster.state_of(1, 2) == "left"
    view = json.loads(diskhb("status", cluster.region, "--json", "--no-daemon").stdout)
    assert next(n for n in view["nodes"] if n["id"] == 2)["flags"] == ["left"]
    # SIGINT is a clean stop too
    cluster.kill(1, signal.SIGINT)
    assert cluster.procs[1].returncode == 0


def test_second_daemon_with_the_same_id_is_refused(cluster):
    cluster.start(1)
    cluster.wait_state(1, 1, "alive")
    p = cluster.start(1, name="impostor")
    assert p.wait(15) == 1
    out = cluster.log(1)
    assert "slot 1 is in live use" in out and "Traceback" not in out
    assert cluster.procs[1].returncode == 1


def test_refuses_timing_or_cluster_disagreement(cluster):
    for extra, msg in (("[cluster]\ninterval_ms = 200\n", "cluster.interval_ms = 200 disagrees"),
                       ("[cluster]\nname = \"other\"\n", "belongs to cluster 'test'")):
        p = cluster.start(4, extra=extra)
        assert p.wait(15) == 2
        out = cluster.log(4)
        assert msg in out and "Traceback" not in out and len(out.strip().splitlines()) == 1


def test_node_id_beyond_slots_is_refused(cluster):
    p = cluster.start(9)
    assert p.wait(15) == 2
    assert "node id 9 is beyond the region's 8 slots" in cluster.log(9)


def test_metrics_follow_prometheus_names(cluster):
    cluster.start(1)
    cluster.start(2)
    cluster.wait_state(1, 2, "alive")
    wait_until(lambda: b"diskhb_heartbeat_write_latency_seconds_count" in _scrape(cluster.ports[1]), 10, "metrics")
    text = _scrape(cluster.ports[1]).decode()
    assert 'diskhb_node_alive{node="node2"} 1.0' in text
    assert re.search(r'diskhb_node_heartbeat_age_seconds\{node="node2",region="disk:[^"]+"\} \d', text)
    assert re.search(r'diskhb_region_healthy\{region="disk:[^"]+"\} 1\.0', text)
    for name in ("diskhb_heartbeat_read_latency_seconds_bucket", "diskhb_tick_lateness_seconds_bucket",
                 "diskhb_ticks_total", "diskhb_node_state{"):
        assert name in text, name
    cluster.kill(2)
    wait_until(lambda: b'diskhb_node_alive{node="node2"} 0.0' in _scrape(cluster.ports[1]), 10, "node2 dead in metrics")


def _scrape(port: int) -> bytes:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return r.read()
    except OSError:
        return b""
