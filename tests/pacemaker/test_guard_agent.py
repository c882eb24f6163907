"""The resource agent ocf:diskhb:guard (contrib/ocf/guard) on real daemons: OCF exit codes of
start/monitor/stop, a second node refused or waiting, a killed or frozen daemon (monitor fails,
stop takes the block over before it says stopped), bad parameters (one line, the right code,
nothing acquired or released), and Pacemaker's own checks: ocf-tester, the OCF metadata schema,
crm_resource --validate. Daemons are stopped by the fixtures, pass or fail."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from cluster import diskhb, wait_until
from pcmk import (CLASSIC_S, OCF_SHELLFUNCS, RESOURCE, config_of, offline_config, quorate, ra,  # noqa: F401
                  kill_group, ra_env, reasons, run_group, tools, with_overlay)

pytestmark = pytest.mark.slow

OCF_SUCCESS, OCF_ERR_GENERIC, OCF_ERR_UNIMPLEMENTED = 0, 1, 3
OCF_ERR_INSTALLED, OCF_ERR_CONFIGURED, OCF_NOT_RUNNING = 5, 6, 7
RA_DTD_DIR = "/usr/share/resource-agents"


def need(*commands: str) -> None:
    for c in commands:
        if not shutil.which(c):
            pytest.skip(f"needs {c} (Debian resource-agents / pacemaker-cli-utils / libxml2-utils)")


def block(region: str) -> dict:
    r = diskhb("mmp", "status", RESOURCE, "--region", region, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["resources"][0]


def one_reason(r: subprocess.CompletedProcess, text: str) -> None:
    """Bad input and refusals: exactly one line on stderr, the exit reason, saying `text`."""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and reasons(r) == lines and text in lines[0], r.stderr


def test_metadata_is_valid_ocf(tools):
    need("xmllint")
    r = ra(tools["agent"], "meta-data", {})
    assert r.returncode == 0 and "<version>1.1</version>" in r.stdout
    if not os.path.exists(os.path.join(RA_DTD_DIR, "ra-api-1.dtd")):
        pytest.skip("needs resource-agents' ra-api-1.dtd and metadata.rng")
    for args in (["--valid"], ["--relaxng", os.path.join(RA_DTD_DIR, "metadata.rng")]):
        v = subprocess.run(["xmllint", "--noout", *args, "-"], input=r.stdout, capture_output=True, text=True,
                           cwd=RA_DTD_DIR, timeout=30)
        assert v.returncode == 0, (args, v.stderr)


def test_bad_parameters_and_no_daemon_one_line_each(tools, tmp_path):
    """No daemon runs: parameter and installation problems get their OCF code and one line;
    start refuses (never a foreground holder), monitor says not running, stop has nothing to do."""
    config, region = offline_config(tmp_path)
    agent = tools["agent"]
    ok = ra_env(config, tools["diskhb"])

    one_reason(ra(agent, "validate-all", {**ok, "OCF_RESKEY_resource": ""}), "resource is required")
    assert ra(agent, "start", {**ok, "OCF_RESKEY_resource": ""}).returncode == OCF_ERR_CONFIGURED
    for bad in ("a b", "a/b"):
        r = ra(agent, "start", {**ok, "OCF_RESKEY_resource": bad})
        assert r.returncode == OCF_ERR_CONFIGURED
        one_reason(r, "no spaces or '/'")
    r = ra(agent, "start", {**ok, "OCF_RESKEY_resource": "x" * 65})
    assert r.returncode == OCF_ERR_CONFIGURED and "64 bytes" in r.stderr
    r = ra(agent, "start", {**ok, "OCF_RESKEY_wait": "soon"})
    assert r.returncode == OCF_ERR_CONFIGURED
    one_reason(r, "wait 'soon'")

    missing_bin = {**ok, "OCF_RESKEY_binary": str(tmp_path / "no-diskhb")}
    r = ra(agent, "validate-all", missing_bin)
    assert r.returncode == OCF_ERR_INSTALLED
    one_reason(r, "not found")
    assert ra(agent, "monitor", missing_bin, probe=True).returncode == OCF_NOT_RUNNING
    assert ra(agent, "stop", missing_bin).returncode == OCF_SUCCESS
    missing_cfg = {**ok, "OCF_RESKEY_config": str(tmp_path / "none.toml")}
    assert ra(agent, "start", missing_cfg).returncode == OCF_ERR_INSTALLED
    assert ra(agent, "monitor", missing_cfg, probe=True).returncode == OCF_NOT_RUNNING
    r = ra(agent, "validate-all", {**ok, "OCF_RESKEY_resource": "undeclared"})
    assert r.returncode == OCF_ERR_INSTALLED
    one_reason(r, "no [[resource]] table names 'undeclared'")
    assert ra(agent, "validate-all", ok).returncode == OCF_SUCCESS
    assert ra(agent, "promote", ok).returncode == OCF_ERR_UNIMPLEMENTED

    r = diskhb("mmp", "acquire", RESOURCE, "--region", region, "--node-id", "1", "--daemon")
    assert r.returncode == 2 and "--daemon goes with --config" in r.stderr
    r = ra(agent, "start", ok)  # no daemon: refused, nothing held in the foreground
    assert r.returncode == OCF_ERR_GENERIC
    one_reason(r, "no daemon of node 1 answers")
    r = diskhb("mmp", "status", RESOURCE, "--region", region)
    assert r.returncode == 2 and "no MMP block names it" in r.stderr  # nothing was acquired
    r = ra(agent, "monitor", ok)
    assert r.returncode == OCF_NOT_RUNNING, r.stderr
    assert ra(agent, "stop", ok).returncode == OCF_SUCCESS

    if os.path.exists(OCF_SHELLFUNCS):  # the agent's own helpers, without resource-agents
        bare = {**ok, "OCF_FUNCTIONS_DIR": str(tmp_path), "OCF_RESKEY_resource": ""}
        one_reason(ra(agent, "start", bare), "resource is required")
        assert ra(agent, "monitor", {**ok, "OCF_FUNCTIONS_DIR": str(tmp_path)}).returncode == OCF_NOT_RUNNING


def test_start_monitor_stop_and_a_second_node(quorate, tools):
    c, agent = quorate, tools["agent"]
    n1 = ra_env(config_of(c, 1), tools["diskhb"])
    n2 = ra_env(config_of(c, 2), tools["diskhb"])
    assert ra(agent, "monitor", n1, probe=True).returncode == OCF_NOT_RUNNING
    r = ra(agent, "start", n1)
    assert r.returncode == OCF_SUCCESS, r.stderr
    assert [h["resource"] for h in c.view(1)["mmp"]] == [RESOURCE]
    assert ra(agent, "monitor", n1).returncode == OCF_SUCCESS
    assert ra(agent, "monitor", n1, probe=True).returncode == OCF_SUCCESS
    assert ra(agent, "start", n1).returncode == OCF_SUCCESS  # a started resource starts again: success

    t0 = time.monotonic()
    r = ra(agent, "start", n2)  # wait=0: node 1's daemon is alive, refused at once
    assert r.returncode == OCF_ERR_GENERIC and time.monotonic() - t0 < CLASSIC_S + 3
    one_reason(r, "held by node1")
    assert ra(agent, "monitor", n2).returncode == OCF_NOT_RUNNING
    assert ra(agent, "stop", n2).returncode == OCF_SUCCESS  # not ours: nothing released
    assert ra(agent, "monitor", n1).returncode == OCF_SUCCESS and block(c.region)["holder"]["id"] == 1

    waiting = subprocess.Popen([agent, "start"], env={**n2, "OCF_RESKEY_wait": "30"}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        time.sleep(1.0)
        assert waiting.poll() is None, "start with wait=30 returned while node 1 holds it"
        r = ra(agent, "stop", n1)
        assert r.returncode == OCF_SUCCESS, r.stderr
        assert ra(agent, "monitor", n1).returncode == OCF_NOT_RUNNING
        _, err = waiting.communicate(timeout=40)
    finally:
        kill_group(waiting)
    assert waiting.returncode == OCF_SUCCESS, err
    assert ra(agent, "monitor", n2).returncode == OCF_SUCCESS and block(c.region)["holder"]["id"] == 2
    assert ra(agent, "stop", n2).returncode == OCF_SUCCESS
    assert ra(agent, "monitor", n2).returncode == OCF_NOT_RUNNING
    assert ra(agent, "stop", n2).returncode == OCF_SUCCESS
    assert block(c.region)["state"] == "clean"


def test_stop_cancels_a_start_still_waiting(quorate, tools):
    """A start that outlived its timeout leaves the daemon acquiring (with wait); Pacemaker then
    stops the resource: the stop must cancel the acquisition, or the daemon would take the
    resource later behind Pacemaker's back."""
    c, agent = quorate, tools["agent"]
    n1 = ra_env(config_of(c, 1), tools["diskhb"])
    n2 = ra_env(config_of(c, 2), tools["diskhb"])
    assert ra(agent, "start", n1).returncode == OCF_SUCCESS
    waiting = subprocess.Popen([agent, "start"], env={**n2, "OCF_RESKEY_wait": "60"}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_until(lambda: RESOURCE in (c.view(2) or {}).get("mmp_acquiring", []), 10, "node 2 acquiring")
        r = ra(agent, "monitor", n2)
        assert r.returncode == OCF_ERR_GENERIC and "acquiring" in r.stderr
        r = ra(agent, "stop", n2)
        assert r.returncode == OCF_SUCCESS, r.stderr
        _, err = waiting.communicate(timeout=30)
    finally:
        kill_group(waiting)
    assert waiting.returncode == OCF_ERR_GENERIC and "cancelled" in err, err
    assert ra(agent, "stop", n1).returncode == OCF_SUCCESS
    time.sleep(CLASSIC_S)  # had the acquisition survived, node 2 would hold it by now
    assert not c.view(2)["mmp"] and not c.view(2)["mmp_acquiring"] and block(c.region)["state"] == "clean"


def test_a_killed_daemon_fails_the_monitor_and_stop_takes_the_block_over(quorate, tools):
    """SIGKILL leaves the block naming node 1 under a generation nobody renews: not "stopped"
    (monitor 1, also as a probe); stop succeeds only after taking it over and writing CLEAN."""
    c, agent = quorate, tools["agent"]
    n1 = ra_env(config_of(c, 1), tools["diskhb"])
    assert ra(agent, "start", n1).returncode == OCF_SUCCESS
    c.kill(1)
    for probe in (False, True):
        r = ra(agent, "monitor", n1, probe=probe)
        assert r.returncode == OCF_ERR_GENERIC
        one_reason(r, "stale")
    assert block(c.region)["state"] == "held" and block(c.region)["holder"]["id"] == 1
    r = ra(agent, "stop", n1)
    assert r.returncode == OCF_SUCCESS, r.stderr
    assert "release --force: released" in r.stderr
    b = block(c.region)
    assert b["state"] == "clean", b
    assert ra(agent, "monitor", n1).returncode == OCF_NOT_RUNNING
    t0 = time.monotonic()  # CLEAN: node 2 takes it at once
    assert ra(agent, "start", ra_env(config_of(c, 2), tools["diskhb"])).returncode == OCF_SUCCESS
    assert time.monotonic() - t0 < CLASSIC_S + 2


def test_a_frozen_daemon_fails_the_monitor_and_stop_takes_the_block_over(quorate, tools):
    c, agent = quorate, tools["agent"]
    n1 = ra_env(config_of(c, 1), tools["diskhb"])
    assert ra(agent, "start", n1).returncode == OCF_SUCCESS
    c.procs[1].send_signal(signal.SIGSTOP)
    try:
        r = ra(agent, "monitor", n1)
        assert r.returncode == OCF_ERR_GENERIC
        one_reason(r, "silent")
        r = ra(agent, "stop", n1)
        assert r.returncode == OCF_SUCCESS, r.stderr
        assert block(c.region)["state"] == "clean"
    finally:
        c.procs[1].send_signal(signal.SIGCONT)
    # It wakes up to a block that moved: it never writes it again (its hold is lost).
    wait_until(lambda: RESOURCE not in [h["resource"] for h in (c.view(1) or {}).get("mmp") or []
                                        if h["state"] == "held"], 15, "node 1 no longer holds it")
    assert block(c.region)["state"] == "clean"
    assert ra(agent, "monitor", n1).returncode == OCF_NOT_RUNNING


def test_ocf_tester_passes(quorate, tools):
    need("ocf-tester")
    c = quorate
    r = run_group(["ocf-tester", "-n", "guard-test", "-o", f"resource={RESOURCE}", "-o", f"config={config_of(c, 1)}",
                   "-o", f"binary={tools['diskhb']}", tools["agent"]], timeout=300)
    assert r.returncode == 0 and "passed all tests" in r.stdout, r.stdout + r.stderr
    assert block(c.region)["state"] == "clean"


def test_crm_resource_validate(tools, tmp_path):
    need("crm_resource")
    config, _ = offline_config(tmp_path)
    opts = f"--option config={config} --option binary={tools['diskhb']}"
    cmd = (f"crm_resource --validate --class ocf --provider diskhb --agent guard --option resource={RESOURCE} {opts};"
           " echo rc=$?;"
           f" crm_resource --validate --class ocf --provider diskhb --agent guard {opts}; echo rc=$?")
    r = with_overlay("/usr/lib/ocf/resource.d", {"diskhb/guard": tools["agent"]}, cmd, str(tmp_path / "ovl"))
    out = r.stdout + r.stderr
    assert "returned 0 (ok)" in out and "rc=0" in out, out
    assert "returned 6 (not configured: parameter resource is required" in out, out
    assert not os.path.exists("/usr/lib/ocf/resource.d/diskhb"), "the overlay leaked into the system"


def test_make_install_agents_into_a_destdir(tmp_path):
    """`make install-agents`: the resource agent where Pacemaker looks for ocf:diskhb:guard, and
    /usr/sbin/fence_diskhb a link to the fence agent of `make install`'s venv (refused without)."""
    need("make")
    from cluster import ROOT

    libdir, root = tmp_path / "lib", tmp_path / "root"
    make = ["make", "-s", f"DESTDIR={root}", f"LIBDIR={libdir}"]
    r = subprocess.run([*make, "install-agents"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "run make install first" in r.stderr and not root.exists()
    (libdir / "bin").mkdir(parents=True)
    (libdir / "bin" / "fence_diskhb").write_text("#!/bin/sh\n")
    (libdir / "bin" / "fence_diskhb").chmod(0o755)
    r = subprocess.run([*make, "install-agents"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    guard = root / "usr/lib/ocf/resource.d/diskhb/guard"
    assert guard.read_bytes() == open(os.path.join(ROOT, "contrib/ocf/guard"), "rb").read()
    assert os.stat(guard).st_mode & 0o777 == 0o755
    assert os.readlink(root / "usr/sbin/fence_diskhb") == str(libdir / "bin" / "fence_diskhb")
    r = subprocess.run([*make, "uninstall-agents"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not guard.exists() and not (root / "usr/sbin/fence_diskhb").is_symlink()
