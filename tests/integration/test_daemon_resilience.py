"""The loop never dies of one region; a fatal error goes through the loss actions before exit
(issue point 4). The daemon runs in-process on a thread, so a fault can be injected into it."""

from __future__ import annotations

import os
import threading
import time

import pytest

from cluster import diskhb, wait_until
from diskhb import metrics as m
from diskhb.config import parse_config
from diskhb.control import Acquire, request
from diskhb.daemon import Daemon


@pytest.fixture
def region(disk_tmp_path):
    path = os.path.join(disk_tmp_path, "region.img")
    r = diskhb("format", path, "--cluster", "t", "--slots", "4", "--interval-ms", "100", "--dead-ms", "1000")
    assert r.returncode == 0, r.stderr
    return path


def start(region: str, run_dir: str, extra: dict | None = None) -> tuple[Daemon, threading.Thread, dict]:
    raw = {"node": {"name": "n1", "id": 1, "run_dir": run_dir}, "metrics": {"listen": ""},
           "region": [{"type": "disk", "name": "d", "path": region}], **(extra or {})}
    d = Daemon(parse_config(raw, "<test>"))
    d.start()
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("code", d.run()), daemon=True)
    t.start()
    wait_until(lambda: d.core.phase.value == "running", 10, "the daemon to run")
    return d, t, out


def snapshot(d: Daemon) -> dict:
    return d.ask_snapshot()


def test_a_region_that_raises_is_a_failing_region_and_the_loop_goes_on(region, disk_tmp_path):
    d, t, out = start(region, os.path.join(disk_tmp_path, "run"))
    try:
        disk = d.disks[0]
        real_poll, faults = disk.poll, {"left": 8}

        def broken_poll(now_ms):
            if faults["left"] > 0:
                faults["left"] -= 1
                raise RuntimeError("a bug in the driver")
            return real_poll(now_ms)

        before = m.REGION_FAULTS.labels("d")._value.get()
        disk.poll = broken_poll
        wait_until(lambda: faults["left"] == 0, 5, "the faults to be hit")
        reg = snapshot(d)["regions"][0]
        assert not reg["healthy"] and "internal error" in reg["reason"] and "a bug in the driver" in reg["reason"]
        assert m.REGION_FAULTS.labels("d")._value.get() - before == 8
        wait_until(lambda: snapshot(d)["regions"][0]["healthy"], 5, "the region healthy again")
        assert t.is_alive() and d.core.phase.value == "running"
    finally:
        d.request_stop()
        t.join(10)
    assert out.get("code") == 0


def test_a_fatal_error_in_the_core_runs_every_loss_action_then_exits_3(region, disk_tmp_path):
    marker = os.path.join(disk_tmp_path, "lost")
    extra = {"resource": [{"name": "db", "interval_ms": 1000, "on_loss": ["command"],
                           "loss_command": f"echo $DISKHB_MMP_RESOURCE > {marker}", "loss_command_timeout_ms": 500}]}
    run_dir = os.path.join(disk_tmp_path, "run")
    d, t, out = start(region, run_dir, extra)
    try:
        got = request(os.path.join(run_dir, "diskhb-t-1.sock"), Acquire("db", 0, True), 10)
        assert got["ok"], got

        def broken_step(*args, **kw):
            raise RuntimeError("a bug in the core")

        d.core.step = broken_step
        t.join(30)
        assert not t.is_alive()
    finally:
        if t.is_alive():
            d.request_stop()
            t.join(10)
    assert out.get("code") == 3
    with open(marker) as f:
        assert f.read().strip() == "db"  # the loss action ran before the exit
