"""fence_diskhb on real daemons: the stdin and command-line protocols, metadata valid against
fence-agents' schema and read by Pacemaker (stonith_admin), list/status/monitor, an off that
returns 0 only once the victim's fence is verified, an off that cannot be verified or is refused
without quorum (1, one line, nothing fenced), bad input. Daemons are stopped by the fixtures."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from cluster import wait_until
from pcmk import config_of, fence, offline_config, quorate, tools, with_overlay  # noqa: F401

pytestmark = pytest.mark.slow

FENCE_RNG = "/usr/share/cluster/relaxng/metadata.rng"  # fence-agents' schema of agent metadata


def one_error(r: subprocess.CompletedProcess, text: str) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("fence_diskhb: error:") \
        and text in lines[0], (r.returncode, r.stderr)


def fencing_rows(c, observer: int, node: int) -> list[dict]:
    return [v for v in (c.view(observer) or {}).get("fencing") or [] if v["node"] == node]


def test_metadata_valid_and_read_by_pacemaker(tools, tmp_path):
    r = fence(tools, "-o", "metadata")
    assert r.returncode == 0 and r.stdout.startswith('<?xml version="1.0" ?>\n<resource-agent name="fence_diskhb"')
    assert fence(tools, stdin="action=metadata\n").stdout == r.stdout
    if not (shutil.which("xmllint") and os.path.exists(FENCE_RNG)):
        pytest.skip(f"needs xmllint (libxml2-utils) and {FENCE_RNG} (fence-agents)")
    v = subprocess.run(["xmllint", "--noout", "--relaxng", FENCE_RNG, "-"], input=r.stdout, capture_output=True,
                       text=True, timeout=30)
    assert v.returncode == 0, v.stderr
    if not shutil.which("stonith_admin"):
        pytest.skip("needs stonith_admin (pacemaker-cli-utils)")
    config, _ = offline_config(tmp_path)
    cmd = ("stonith_admin --metadata --agent fence_diskhb; echo rc=$?;"
           f" stonith_admin --validate --agent fence_diskhb --option config={config}; echo rc=$?;"
           f" stonith_admin --validate --agent fence_diskhb --option config={tmp_path}/none.toml; echo rc=$?")
    out = with_overlay("/usr/sbin", {"fence_diskhb": tools["fence_diskhb"]}, cmd, str(tmp_path / "ovl"))
    text = out.stdout + out.stderr
    assert '<resource-agent name="fence_diskhb"' in text and 'name="power_timeout"' in text, text
    assert "Validation of fence_diskhb succeeded" in text and "Validation of fence_diskhb failed" in text, text
    assert "config file not found" in text, text
    assert not os.path.exists("/usr/sbin/fence_diskhb"), "the overlay leaked into the system"


def test_bad_input_and_no_daemon_are_one_line_and_order_nothing(tools, tmp_path):
    config, _ = offline_config(tmp_path)
    one_error(fence(tools, stdin="action=destroy\nplug=2\n"), "unknown action 'destroy'")
    one_error(fence(tools, stdin=f"action=off\nconfig={config}\n"), "needs the node")
    one_error(fence(tools, "-o", "off", "-n", "a b", "--config", config), "plug 'a b'")
    one_error(fence(tools, "-o", "off", "-n", "2", "--power-timeout", "0"), "power_timeout")
    one_error(fence(tools, "-o", "off", "-x"), "option -x not recognized")
    one_error(fence(tools, "-o", "off", "-n", "2", "extra"), "unexpected arguments")
    one_error(fence(tools, "-o", "status", "-n", "2", "--config", str(tmp_path / "none.toml")), "config file not found")
    r = fence(tools, "-o", "status", "-n", "2", "--config", config)  # no daemon: an error (1), never OFF (2)
    one_error(r, "no running diskhb daemon of node 1")
    for action in ("off", "reboot", "list", "monitor"):
        one_error(fence(tools, stdin=f"action={action}\nport=2\nconfig={config}\nnodename=node1\n"),
                  "no running diskhb daemon")
    assert fence(tools, "-o", "validate-all", "--config", config).returncode == 0
    (tmp_path / "noq").mkdir()
    noq, _ = offline_config(tmp_path / "noq", quorum=False)
    one_error(fence(tools, "-o", "validate-all", "--config", noq), "no [quorum] table")
    r = fence(tools, stdin=f"action=validate-all\nconfig={config}\nunknown_key=1\n")
    assert r.returncode == 0 and "warning: ignoring unknown option 'unknown_key=1'" in r.stderr
    assert fence(tools, "-h").returncode == 0 and fence(tools, "-V").returncode == 0


def test_list_status_and_an_off_that_returns_only_once_verified(quorate, tools):
    c = quorate
    cfg = config_of(c, 1)
    r = fence(tools, "-o", "list", "--config", cfg)
    assert r.returncode == 0 and r.stdout.split() == ["node2,2", "node3,3"], r
    r = fence(tools, "-o", "list-status", "--config", cfg, "-C", ";")
    assert r.stdout.split() == ["node2;2;ON", "node3;3;ON"], r
    assert fence(tools, "-o", "monitor", "--config", cfg).returncode == 0
    r = fence(tools, "-o", "status", "-n", "node2", "--config", cfg)
    assert (r.returncode, r.stdout.strip()) == (0, "Status: ON")
    one_error(fence(tools, "-o", "status", "-n", "node9", "--config", cfg), "no such node has been seen")
    one_error(fence(tools, "-o", "off", "-n", "node1", "--config", cfg), "is this node")
    assert c.view(1)["fencing"] == []  # nothing was ordered by any of that

    r = fence(tools, stdin=f"action=off\nport=node2\nconfig={cfg}\nnodename=node1\n")
    assert r.returncode == 0 and r.stdout.startswith("Success: node 2"), (r.stdout, r.stderr)
    [row] = fencing_rows(c, 1, 2)  # at the moment it returned, the daemon had verified it
    assert row["fenced"] and row["manual"], row
    view2 = c.view(2)
    assert view2["self_fence"]["reason"] == "pill" and view2["self_fence"]["read_only"], view2["self_fence"]
    r = fence(tools, "-o", "status", "-n", "2", "--config", cfg)
    assert (r.returncode, r.stdout.strip()) == (2, "Status: OFF")
    r = fence(tools, "-o", "off", "-n", "2", "--config", cfg)
    assert r.returncode == 0 and "Already OFF" in r.stdout
    one_error(fence(tools, "-o", "on", "-n", "node2", "--config", cfg), "cannot turn a node on")
    r = fence(tools, "-o", "on", "-n", "node3", "--config", cfg)
    assert r.returncode == 0 and "Already ON" in r.stdout
    assert fence(tools, "-o", "list-status", "--config", cfg).stdout.split() == ["node2,2,OFF", "node3,3,ON"]


def test_an_unverifiable_off_fails_and_without_quorum_nothing_is_fenced(quorate, tools):
    c = quorate
    cfg = config_of(c, 1)
    c.kill(3)  # no cluster watchdog: nobody can verify a SIGKILLed node
    c.wait_state(1, 3, "dead")
    t0 = time.monotonic()
    r = fence(tools, "-o", "reboot", "-n", "node3", "--config", cfg, "--power-timeout", "2")
    assert time.monotonic() - t0 >= 2
    one_error(r, "not verified within 2 s")
    r = fence(tools, "-o", "status", "-n", "3", "--config", cfg)  # dead, not verified: it may still run
    assert (r.returncode, r.stdout.strip()) == (0, "Status: ON")

    c.kill(2)
    wait_until(lambda: not c.view(1)["quorum"]["quorate"], 10, "node 1 alone, not quorate")
    rows = fencing_rows(c, 1, 2)
    one_error(fence(tools, stdin=f"action=off\nplug=node2\nconfig={cfg}\n"), "not quorate")
    assert fencing_rows(c, 1, 2) == rows == [], "an order without quorum"
    assert fence(tools, "-o", "monitor", "--config", cfg).returncode == 0  # the daemon answers; it just may not fence
