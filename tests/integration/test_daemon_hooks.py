"""Notification hooks in a real daemon: a peer killed -> the survivor's hook gets "node-dead" as JSON;
a hook that hangs delays no tick and is killed at its timeout; a hook that cannot run refuses the start."""

import json
import os
import signal
import time
import urllib.request

import pytest

from cluster import metric_value, wait_until  # the `cluster` fixture: tests/conftest.py

pytestmark = pytest.mark.slow


def _script(path: str, body: str, mode: int = 0o755) -> str:
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body)
    os.chmod(path, mode)
    return path


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return r.read().decode()
    except OSError:
        return ""


def _kill_pids(path: str) -> None:
    if os.path.exists(path):
        with open(path) as f:
            for pid in map(int, f.read().split()):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_dead_peer_reaches_the_hook_and_a_hanging_hook_delays_no_tick(cluster):
    out = os.path.join(cluster.workdir, "events")
    os.mkdir(out)
    pids = os.path.join(cluster.workdir, "hang.pids")
    record = _script(os.path.join(cluster.workdir, "record"), f'cat > {out}/"$DISKHB_EVENT.$DISKHB_SEQ.json"\n')
    hang = _script(os.path.join(cluster.workdir, "hang"),
                   f'[ "$DISKHB_EVENT" = node-dead ] || exit 0\necho $$ >> {pids}\ntrap "" TERM\nsleep 60\n')
    hooks = f'[hooks]\ncommands = ["{record}", "{hang}"]\ntimeout_ms = 3000\n'
    try:
        cluster.start(1, extra=hooks)
        cluster.start(2)
        cluster.wait_state(1, 2, "alive")
        generation = next(n["generation"] for n in cluster.view(1)["nodes"] if n["id"] == 2)
        before = _scrape(cluster.ports[1])
        cluster.kill(2)
        path = wait_until(lambda: next((os.path.join(out, f) for f in os.listdir(out) if f.startswith("node-dead.")),
                                       None), 15, "the hook to get node-dead")
        wait_until(lambda: os.path.getsize(path) > 0, 5, "the JSON written")
        with open(path) as f:
            ev = json.loads(f.read())
        assert (ev["event"], ev["subject_node_id"], ev["subject_node"], ev["state"]) == \
            ("node-dead", 2, "node2", "dead")
        assert ev["generation"] == generation and generation.startswith("0x")  # hex strings, both
        assert (ev["node"], ev["node_id"], ev["cluster"]) == ("node1", 1, "test")
        # the other hook hangs (ignoring SIGTERM) while the loop goes on beating on time
        wait_until(lambda: os.path.exists(pids), 5, "the hanging hook started")
        hung = int(open(pids).read().split()[0])
        time.sleep(2)
        assert _alive(hung)
        during = _scrape(cluster.ports[1])
        ticks = metric_value(during, "diskhb_ticks_total") - metric_value(before, "diskhb_ticks_total")
        late = [metric_value(t, "diskhb_tick_lateness_seconds_count")
                - metric_value(t, "diskhb_tick_lateness_seconds_bucket", le="0.25") for t in (before, during)]
        assert ticks >= 10 and late[1] == late[0], during  # not one tick 250 ms late while the hook hung
        assert cluster.view(1)["phase"] == "running"
        # killed at its 3 s timeout (SIGKILL: it ignores SIGTERM), counted, one line
        wait_until(lambda: not _alive(hung), 10, "the hanging hook killed")
        labels = {"hook": hang, "result": "timeout"}
        wait_until(lambda: metric_value(_scrape(cluster.ports[1]), "diskhb_hook_runs_total", **labels) == 1, 5,
                   "the timeout counted")
        assert metric_value(_scrape(cluster.ports[1]), "diskhb_hook_runs_total", hook=record, result="ok") >= 1
        wait_until(lambda: "TIMED OUT" in cluster.log(1), 5, "the timeout logged")
        assert f"hook {hang}: node-dead #1 TIMED OUT: no exit after 3000 ms; its process group: SIGKILL after 1 s" \
            in cluster.log(1)
        cluster.kill(1, signal.SIGTERM)
        assert cluster.procs[1].returncode == 0 and "Traceback" not in cluster.log(1)
    finally:
        _kill_pids(pids)


def test_a_hook_command_that_cannot_run_refuses_the_start_in_one_line(cluster):
    noexec = _script(os.path.join(cluster.workdir, "page"), "exit 0\n", 0o644)
    p = cluster.start(1, extra=f'[hooks]\ncommands = ["{noexec}"]\n')
    assert p.wait(15) == 2
    out = cluster.log(1)
    assert f"'hooks.commands': {noexec} is not executable (chmod 755 it)" in out
    assert "Traceback" not in out and len(out.strip().splitlines()) == 1
