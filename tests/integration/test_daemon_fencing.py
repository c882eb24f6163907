"""Self-fencing and the disk pill on real daemons (diskhb.core.self_fence, fencing FD8-FD10,
diskhb.pill): `diskhb fence NODE` writes the pill, the victim fences itself (its guard
abandoned, its beats SELF_FENCED then READ_ONLY, its watchdog no longer fed: the FUSE watchdog
resets it), the fencer sees the fence verified and takes the victim's resource over at once
(fast path FP0) instead of watching it for the classic wait; a node left without quorum while
holding fences itself. Daemons and the FUSE watchdog are torn down by fixtures, pass or fail.
"""

from __future__ import annotations

import signal
import time
import urllib.request

from cluster import Cluster, diskhb, metric_value, wait_until  # `cluster`, `fusewd`: tests/conftest.py
from test_mmp_daemon import ask

INTERVAL_MS = 2000  # the resource's MMP interval: a classic watch takes 2 x 2 + 1 = 5 s
CLASSIC_S = (2 * INTERVAL_MS + 1000) / 1000
RESOURCE = f'[[resource]]\nname = "db"\ninterval_ms = {INTERVAL_MS}\non_loss = ["none"]\n'
QUORUM = "[quorum]\nnodes = [1, 2, 3]\n"


def start_all(c: Cluster, extra2: str = "") -> None:
    for i in (1, 2, 3):
        c.start(i, extra=QUORUM + RESOURCE + (extra2 if i == 2 else ""))
    for i in (1, 2, 3):
        wait_until(lambda i=i: ((c.view(i) or {}).get("quorum") or {}).get("votes") == 3, 15,
                   f"node {i} counts all three")


def metrics(c: Cluster, node_id: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{c.ports[node_id]}/metrics", timeout=5).read().decode()


def test_a_pill_fenced_holder_fences_itself_is_reset_and_its_resource_taken_over_at_once(cluster, fusewd):
    c = cluster
    start_all(c, f'[watchdog]\ndevice = "{fusewd.path}"\ntimeout_s = 2\n')
    fusewd.set_reset_pid(c.procs[2].pid)
    assert ask(c, 2, "mmp-acquire db 0 1")["ok"]

    r = diskhb("fence", "2", "--config", c.config(1))
    assert r.returncode == 0 and "fence ordered" in r.stdout, r.stderr
    wait_until(lambda: any(v["node"] == 2 and v["fenced"] for v in (c.view(1) or {}).get("fencing") or []), 10,
               "node 1 sees node 2's fence verified")
    c.procs[2].wait(15)  # no longer fed: its watchdog resets it
    assert c.procs[2].returncode == -signal.SIGKILL and fusewd.state()["fired"] == 1
    log2 = c.log(2)
    assert "SELF-FENCED (pill)" in log2 and "fence message (the disk pill) from node 1" in log2
    assert "is no longer fed" in log2
    [row] = [v for v in c.view(1)["fencing"] if v["node"] == 2]
    assert row["manual"] and "fenced itself" in row["last"]
    m = metrics(c, 1)
    assert metric_value(m, "diskhb_fence_attempts_total", method="pill", result="pending") == 1.0
    assert metric_value(m, "diskhb_fence_attempts_total", method="self", result="fenced") == 1.0
    assert metric_value(m, "diskhb_fence_duration_seconds_count", method="self") == 1.0  # ordered -> verified

    t0 = time.monotonic()
    out = ask(c, 1, "mmp-acquire db 0 0")
    took = time.monotonic() - t0
    assert out["ok"] and "stopped writing" in out["note"], out
    assert took < CLASSIC_S - 1, f"took {took:.2f} s: the self-fenced holder's block was watched"
    table = diskhb("status", c.region, "--run-dir", c.run_dir).stdout
    assert "fencing: node 2" in table and "FENCED" in table, table


def test_a_holder_left_without_quorum_fences_itself(cluster):
    c = cluster
    start_all(c)
    assert ask(c, 3, "mmp-acquire db 0 1")["ok"]
    for i in (1, 2):
        c.kill(i)
    wait_until(lambda: (c.view(3) or {}).get("phase") == "self_fenced", 10, "node 3 fences itself")
    view = c.view(3)
    assert view["self_fence"]["reason"] == "quorum-lost" and not view["mmp"]
    wait_until(lambda: c.view(3)["self_fence"]["read_only"], 5, "its READ_ONLY promise")
    assert metric_value(metrics(c, 3), "diskhb_self_fence_total", reason="quorum-lost") == 1.0
    table = diskhb("status", c.region, "--run-dir", c.run_dir).stdout
    assert "SELF-FENCED (quorum-lost)" in table and "READ_ONLY" in table, table
    out = ask(c, 3, "mmp-acquire db 0 0")
    assert not out["ok"] and "fenced itself" in out["error"]
    c.kill(3, signal.SIGTERM)
    assert c.procs[3].returncode == 3


def test_a_read_only_node_is_recovered_without_fencing(cluster):
    """Seed 003: a node alive on some region that announces READ_ONLY is not fenced; its
    resources are taken over as soon as it is seen. Node 3, left alone while holding, fences
    itself; nodes 1 and 2 come back, see it beating READ_ONLY, name no victim, write no pill, and
    node 1 takes "db" over at once (FP0), not after the classic watch."""
    c = cluster
    start_all(c)
    assert ask(c, 3, "mmp-acquire db 0 1")["ok"]
    for i in (1, 2):
        c.kill(i)
    wait_until(lambda: ((c.view(3) or {}).get("self_fence") or {}).get("read_only"), 10, "node 3 READ_ONLY")
    for i in (1, 2):
        c.start(i, extra=QUORUM + RESOURCE)
    for i in (1, 2):
        wait_until(lambda i=i: ((c.view(i) or {}).get("quorum") or {}).get("quorate"), 15, f"node {i} quorate")
    t0 = time.monotonic()
    out = ask(c, 1, "mmp-acquire db 0 0")
    took = time.monotonic() - t0
    assert out["ok"] and "stopped writing" in out["note"], out
    assert took < CLASSIC_S - 1, f"took {took:.2f} s: the READ_ONLY holder's block was watched"
    for i in (1, 2):
        log = c.log(i)
        assert "must be fenced" not in log and "fencing node" not in log, log[-3000:]
        # a daemon started a moment ago may not have seen node 3 advance yet (its first sample is a
        # baseline, liveness R2); the guard took the block over on its own evidence meanwhile
        wait_until(lambda i=i: any(n["id"] == 3 and n["state"] == "alive" and "read_only" in n["flags"]
                                   for n in c.view(i)["nodes"]), 5, f"node {i} sees node 3 alive, READ_ONLY")


def test_fence_refusals_are_one_line(cluster):
    c = cluster
    start_all(c)
    for args, code, text in ((["1"], 2, "itself"), (["9"], 2, "not in [quorum] nodes")):
        r = diskhb("fence", *args, "--config", c.config(1))
        assert r.returncode == code and text in r.stderr and "Traceback" not in r.stderr, r.stderr
    for i in (2, 3):
        c.kill(i)
    wait_until(lambda: not c.view(1)["quorum"]["quorate"], 10, "node 1 alone")
    r = diskhb("fence", "2", "--config", c.config(1))
    assert r.returncode == 1 and "not quorate" in r.stderr, r.stderr
    r = diskhb("fence", "2", "--run-dir", c.run_dir + "-none")
    assert r.returncode == 2 and "no running daemons" in r.stderr, r.stderr


def test_two_node_the_survivor_wins_the_tie_break_race_and_fences_the_other(cluster):
    c = cluster
    two = "[quorum]\nnodes = [1, 2]\ntwo_node = true\nweight = { 2 = 10 }\n"  # node 2 is favoured
    for i in (1, 2):
        c.start(i, extra=two + RESOURCE)
    for i in (1, 2):
        wait_until(lambda i=i: ((c.view(i) or {}).get("quorum") or {}).get("quorate"), 15, f"node {i} quorate")
    assert not c.view(1)["mmp"] and not c.view(2)["mmp"], "nobody races while both are seen"
    c.kill(2)  # the favoured node dies: node 1 races after its handicap (2 x dead_ms) and wins
    wait_until(lambda: c.view(1)["quorum"]["quorate"] and "tie-break" in c.view(1)["quorum"]["reason"], 15,
               "node 1 quorate through the tie-break")
    assert [h["resource"] for h in c.view(1)["mmp"]] == ["diskhb-tiebreak"]
    wait_until(lambda: any(v["node"] == 2 for v in c.view(1)["fencing"] or []), 10, "node 2 named for fencing")
    assert "racing for the tie-break" in c.log(1)
    assert ask(c, 1, "mmp-acquire db 0 1")["ok"], "quorate: it may take storage"
    c.kill(1, signal.SIGTERM)
    assert c.procs[1].returncode == 0  # the tie-break is released like any resource


def test_a_frozen_holder_is_reset_by_its_watchdog_and_taken_over_at_its_self_fence_deadline(tmp_path):
    """SIGSTOP on the holder (beyond dead_ms): its FUSE watchdog resets it (kills it) 1 s after its
    last keepalive; its fencer writes the pill (never read), and once the holder has been silent
    past its self-fence deadline (the cluster's 1 s watchdog in the superblock) the fencer
    counts it fenced and takes its resource over without the classic watch. The reset comes
    before the fence is counted: nothing of the holder's could write after."""
    from tools.fusewatchdog import FuseWatchdog

    region = str(tmp_path / "region.img")
    r = diskhb("format", region, "--cluster", "test", "--slots", "4", "--interval-ms", "100", "--dead-ms", "1000",
               "--watchdog-timeout-s", "1")
    assert r.returncode == 0 and "watchdog 1 s" in r.stdout, r.stderr
    c = Cluster(str(tmp_path), region)
    dogs = {}
    try:
        for i in (1, 2, 3):
            dogs[i] = FuseWatchdog(str(tmp_path / f"wd{i}")).start()
            c.start(i, extra=QUORUM + RESOURCE + f'[watchdog]\ndevice = "{dogs[i].path}"\ntimeout_s = 1\n')
            dogs[i].set_reset_pid(c.procs[i].pid)
        for i in (1, 2, 3):
            wait_until(lambda i=i: ((c.view(i) or {}).get("quorum") or {}).get("votes") == 3, 15,
                       f"node {i} counts all three")
        assert ask(c, 2, "mmp-acquire db 0 1")["ok"]
        c.procs[2].send_signal(signal.SIGSTOP)
        c.procs[2].wait(15)  # its watchdog is no longer fed: reset
        reset_at = time.monotonic()
        assert c.procs[2].returncode == -signal.SIGKILL and dogs[2].state()["fired"] == 1

        def fenced():  # node 3 is node 2's fencer (the member after it)
            return any(v["node"] == 2 and v["fenced"] for v in (c.view(3) or {}).get("fencing") or [])

        wait_until(fenced, 15, "node 3 counts node 2 fenced at its deadline")
        assert time.monotonic() >= reset_at
        [row] = [v for v in c.view(3)["fencing"] if v["node"] == 2]
        assert "self-fence deadline" in row["last"], row
        assert "fenced" in c.log(3) and "deadline" in c.log(3)
        t0 = time.monotonic()
        out = ask(c, 3, "mmp-acquire db 0 0")
        took = time.monotonic() - t0
        assert out["ok"] and "stopped writing" in out["note"], out
        assert took < CLASSIC_S - 1, f"took {took:.2f} s: the fenced holder's block was watched"
        for i in (1, 3):
            assert dogs[i].state()["fired"] == 0, f"node {i} was never reset"
    finally:
        c.stop_all()
        for wd in dogs.values():
            wd.close()


def test_a_node_without_the_clusters_watchdog_refuses_to_start(tmp_path):
    region = str(tmp_path / "region.img")
    assert diskhb("format", region, "--cluster", "test", "--slots", "4", "--interval-ms", "100", "--dead-ms", "1000",
                  "--watchdog-timeout-s", "1").returncode == 0
    c = Cluster(str(tmp_path), region)
    try:
        p = c.start(1)
        assert p.wait(15) == 2
        assert "the cluster relies on a watchdog of at most 1 s" in c.log(1) and "Traceback" not in c.log(1)
    finally:
        c.stop_all()
