"""MMP resources held by the node daemon: fast refusal of a live holder, release before LEFT,
take-over after a clean leave without the classic wait, classic wait after a crash.

Daemons are real processes on one region file; requests go over their control sockets (what
`diskhb mmp acquire/release --config` sends). The resource interval is 2 s, so the classic wait
is 2 x 2 + 1 = 5 s: a refusal or take-over well under that proves the fast path was taken.
"""

import json
import signal
import os
import socket
import time

import pytest

from cluster import Cluster, diskhb, wait_until

pytestmark = pytest.mark.slow

INTERVAL_MS = 2000
CLASSIC_S = (2 * INTERVAL_MS + 1000) / 1000
RESOURCE = f'[[resource]]\nname = "db"\ninterval_ms = {INTERVAL_MS}\non_loss = ["none"]\n'


def ask(c: Cluster, node_id: int, line: str, timeout_s: float = 30) -> dict:
    path = os.path.join(c.run_dir, f"diskhb-{c.cluster_name()}-{node_id}.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(path)
        s.sendall(line.encode() + b"\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data)


def block(c: Cluster) -> dict:
    r = diskhb("mmp", "status", "db", "--region", c.region, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["resources"][0]


@pytest.fixture
def cluster(tmp_path):
    region = str(tmp_path / "region.img")
    r = diskhb("format", region, "--cluster", "test", "--slots", "4", "--interval-ms", "100", "--dead-ms", "1000")
    assert r.returncode == 0, r.stderr
    c = Cluster(str(tmp_path), region)
    try:
        for i in (1, 2):
            c.start(i, extra=RESOURCE)
        c.wait_state(1, 2, "alive")
        c.wait_state(2, 1, "alive")
        yield c
    finally:
        c.stop_all()


def test_daemon_holds_refuses_at_once_and_hands_over_after_a_clean_leave(cluster):
    c = cluster
    out = ask(c, 1, "mmp-acquire db 0 1")
    assert out["ok"] and out["epoch"] == 1, out
    gen1 = c.view(1)["node"]["generation"]
    b = block(c)
    assert b["state"] == "held" and b["holder"]["id"] == 1 and int(b["holder"]["generation"], 16) == int(gen1, 16)
    assert [h["resource"] for h in c.view(1)["mmp"]] == ["db"]
    assert ask(c, 1, "mmp-acquire db 0 0")["ok"]  # asking again is not an error

    t0 = time.monotonic()
    out = ask(c, 2, "mmp-acquire db 0 0")
    took = time.monotonic() - t0
    assert not out["ok"] and out["exit"] == 1 and "node1" in out["error"], out
    assert took < CLASSIC_S - 1, f"refusal took {took:.2f} s: the live holder was watched, not refused"

    time.sleep(2.5 * INTERVAL_MS / 1000)  # the daemon keeps bumping while it holds
    assert block(c)["seq"] != b["seq"] and block(c)["epoch"] == 1

    c.kill(1, signal.SIGTERM)  # release (CLEAN), then LEFT
    assert c.procs[1].returncode == 0
    assert "MMP resource 'db' acquired" in c.log(1) and "released db" in c.log(1)
    assert block(c)["state"] == "clean"
    t0 = time.monotonic()
    out = ask(c, 2, "mmp-acquire db 0 0")
    assert out["ok"] and out["epoch"] == 2, out
    assert time.monotonic() - t0 < CLASSIC_S - 1


def test_release_over_the_socket_and_bad_requests(cluster):
    c = cluster
    assert ask(c, 1, "mmp-acquire db 0 1")["ok"]
    out = ask(c, 1, "mmp-release db")
    assert out["ok"] and out["outcome"] == "released", out
    assert block(c)["state"] == "clean" and c.view(1)["mmp"] == []
    out = ask(c, 1, "mmp-release db")
    assert not out["ok"] and out["exit"] == 2 and "not held by this daemon" in out["error"]
    out = ask(c, 1, "mmp-acquire no/such 0 0")
    assert not out["ok"] and out["exit"] == 2, out
    out = ask(c, 1, "mmp-acquire db x 0")
    assert not out["ok"] and out["exit"] == 2 and "bad request" in out["error"]
    assert c.procs[1].poll() is None and "Traceback" not in c.log(1)


def test_a_crashed_holder_is_taken_over_only_after_the_classic_wait(cluster):
    c = cluster
    assert ask(c, 2, "mmp-acquire db 0 1")["ok"]
    c.kill(2)  # SIGKILL: no release, no LEFT
    c.wait_state(1, 2, "dead")
    t0 = time.monotonic()
    out = ask(c, 1, f"mmp-acquire db {int(3 * CLASSIC_S * 1000)} 0", timeout_s=60)
    took = time.monotonic() - t0
    assert out["ok"] and out["epoch"] == 2, out
    # Dead but not fenced: a partitioned node looks the same, so the block is watched.
    assert took >= CLASSIC_S - 1.5, f"took over after {took:.2f} s, before the classic wait"
    assert block(c)["holder"]["id"] == 1


def test_a_frozen_daemon_loses_the_resource_and_runs_its_loss_action(tmp_path):
    region = str(tmp_path / "region.img")
    r = diskhb("format", region, "--cluster", "test", "--slots", "4", "--interval-ms", "100", "--dead-ms", "1000")
    assert r.returncode == 0, r.stderr
    marker = tmp_path / "lost.marker"
    res = (f'[[resource]]\nname = "db"\ninterval_ms = {INTERVAL_MS}\non_loss = ["command"]\n'
           f'loss_command = "echo $DISKHB_MMP_RESOURCE > {marker}"\nloss_command_timeout_ms = 500\n')
    c = Cluster(str(tmp_path), region)
    try:
        c.start(1, extra=res)
        c.start(2, extra=res)
        c.wait_state(2, 1, "alive")
        assert ask(c, 1, "mmp-acquire db 0 1")["ok"]
        c.procs[1].send_signal(signal.SIGSTOP)  # a VM pause: no beats, no bumps
        try:
            c.wait_state(2, 1, "dead")
            out = ask(c, 2, f"mmp-acquire db {int(3 * CLASSIC_S * 1000)} 0", timeout_s=60)
            assert out["ok"] and out["epoch"] == 2, out
        finally:
            c.procs[1].send_signal(signal.SIGCONT)
        wait_until(lambda: marker.exists(), 15, "node1's loss action to run")
        assert marker.read_text().strip() == "db"
        wait_until(lambda: "lost" in c.log(1) and c.view(1) is not None and c.view(1)["mmp"] == [], 15,
                   "node1 to report the loss and drop the resource")
        b = block(c)
        assert b["holder"]["id"] == 2 and b["epoch"] == 2  # node1 wrote nothing after waking
        assert c.procs[1].poll() is None  # the daemon keeps heartbeating
    finally:
        c.stop_all()
