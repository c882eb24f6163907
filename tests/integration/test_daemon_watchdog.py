"""The daemon and its watchdog ([watchdog], diskhb.watchdog) on the FUSE watchdog
(tools.fusewatchdog; this machine has no /dev/watchdog): fed from the tick, margin in status and
metrics, disarmed by a clean stop, left armed by a safety stop, and a frozen daemon is reset (its
process killed) after the timeout. Bad settings are one line and arm nothing.

Needs /dev/fuse, fusermount3 and mfusepy (skips with the reason); daemons and the watchdog are
torn down in fixtures, pass or fail.
"""

from __future__ import annotations

import re
import signal
import time
import urllib.request

import pytest

from cluster import diskhb, metric_value, wait_until
from tools.fusewatchdog import FuseWatchdog  # the `cluster` and `fusewd` fixtures: tests/conftest.py


def watchdog_cfg(wd: FuseWatchdog, timeout_s: int = 2) -> str:
    return f'[watchdog]\ndevice = "{wd.path}"\ntimeout_s = {timeout_s}\n'


def test_fed_from_the_tick_shown_and_disarmed_by_a_clean_stop(cluster, fusewd):
    p = cluster.start(1, extra=watchdog_cfg(fusewd))
    fusewd.set_reset_pid(p.pid)
    wait_until(lambda: (cluster.view(1) or {}).get("watchdog"), 10, "the daemon up with its watchdog")
    time.sleep(3)  # past the 2 s timeout: only the tick's keepalives keep the node alive
    assert p.poll() is None and fusewd.state()["fired"] == 0 and fusewd.state()["armed"] == 1
    wd = cluster.view(1)["watchdog"]
    assert (wd["identity"], wd["timeout_s"], wd["errors"]) == ("diskhb FUSE watchdog", 2, 0)
    assert wd["keepalives"] >= 20 and 0 < wd["worst_gap_ms"] < 1000 and wd["margin_s"] > 1.0
    table = diskhb("status", cluster.region, "--run-dir", cluster.run_dir).stdout
    assert re.search(r"watchdog: \S+ \(diskhb FUSE watchdog\), timeout 2 s, worst keepalive gap 0\.\d\d s,"
                     r" margin 1\.\d\d s", table), table
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{cluster.ports[1]}/metrics", timeout=5).read().decode()
    assert metric_value(metrics, "diskhb_watchdog_timeout_seconds") == 2.0
    assert 1.0 < metric_value(metrics, "diskhb_watchdog_margin_seconds") <= 2.0
    cluster.kill(1, signal.SIGTERM)
    assert p.returncode == 0
    st = fusewd.state()
    assert (st["armed"], st["magic_closes"], st["fired"]) == (0, 1, 0)
    assert "watchdog" in cluster.log(1) and "disarmed (clean stop)" in cluster.log(1)


def test_a_frozen_daemon_is_reset_after_the_timeout(cluster, fusewd):
    p = cluster.start(1, extra=watchdog_cfg(fusewd))
    fusewd.set_reset_pid(p.pid)
    wait_until(lambda: (cluster.view(1) or {}).get("watchdog"), 10, "the daemon up with its watchdog")
    p.send_signal(signal.SIGSTOP)  # a stuck tick: nobody feeds the watchdog
    t0 = time.monotonic()
    p.wait(15)
    took = time.monotonic() - t0
    assert p.returncode == -signal.SIGKILL and fusewd.state()["fired"] == 1
    assert 1.0 <= took <= 10.0  # after its 2 s timeout (less the last keepalive's age), never before


def test_a_crashed_daemon_leaves_it_armed(cluster, fusewd):
    p = cluster.start(1, extra=watchdog_cfg(fusewd))
    wait_until(lambda: (cluster.view(1) or {}).get("watchdog"), 10, "the daemon up with its watchdog")
    fusewd.set_reset_pid(0)  # nobody to kill: we only watch it fire
    cluster.kill(1, signal.SIGKILL)
    wait_until(lambda: fusewd.state()["fired"] == 1, 10, "the watchdog fires for the dead daemon")
    assert fusewd.state()["magic_closes"] == 0


@pytest.mark.parametrize("setting, error", [
    ("device", "not a watchdog device"),
    ("short", "[watchdog] timeout_s 1 is too short for interval_ms 800"),
])
def test_bad_watchdog_settings_are_one_line_and_arm_nothing(cluster, fusewd, tmp_path, setting, error):
    if setting == "device":
        plain = tmp_path / "plain"
        plain.write_bytes(b"")
        extra = f'[watchdog]\ndevice = "{plain}"\n'
    else:  # an 800 ms interval: a 1 s watchdog cannot be fed in time
        region = str(tmp_path / "slow.img")
        assert diskhb("format", region, "--cluster", "test", "--slots", "8", "--interval-ms", "800",
                      "--dead-ms", "8000").returncode == 0
        cluster.region = region
        extra = f'[watchdog]\ndevice = "{fusewd.path}"\ntimeout_s = 1\n'
    p = cluster.start(1, extra=extra)
    p.wait(15)
    out = cluster.log(1)
    assert p.returncode == 2 and error in out and len(out.strip().splitlines()) == 1, out
    assert fusewd.state()["armed"] == 0 and fusewd.state()["opens"] == 0
