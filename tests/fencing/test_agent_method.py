"""The "agent" fencing method (diskhb.fencing.agent): real agent processes, bounded, verified by status.

Most tests run tests/fencing/agents/fence_test (a protocol-following agent with a state file per
plug and misbehaviour on request), copied into tmp_path with mode 755 (the method refuses a file
writable by group or others, whatever the checkout's umask). The fence_dummy tests run the real
Debian agent (fence-agents) and are skipped where it is not installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from diskhb.errors import OperatorError
from diskhb.fencing import agent as ag
from diskhb.fencing.agent import AgentMethod
from diskhb.fencing.method import Victim
from diskhb.procgroup import group_gone
from tools.procs import alive

HERE = Path(__file__).parent
FENCE_TEST = HERE / "agents" / "fence_test"
FENCE_DUMMY = "/usr/sbin/fence_dummy"
VICTIM = Victim(2, "oss2", 0x5FADCAB197BF182A)
SLACK_S = 1.0  # what a loaded test machine may add to a bound


def far() -> float:
    return time.monotonic() + 30


def wait_for(pred, timeout_s: float, what: str):
    end = time.monotonic() + timeout_s
    while not (got := pred()):
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return got


class Lab:
    """One test's agent copy, state file and run record; every pid an agent wrote is killed at the end."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.agent = str(tmp / "fence_test")
        shutil.copyfile(FENCE_TEST, self.agent)
        os.chmod(self.agent, 0o755)
        self.state = tmp / "power.json"
        self.record = tmp / "runs.jsonl"
        self.pids = tmp / "agent.pids"

    def method(self, timeout_ms: int = 5000, action: str = "off", plug_map=None, agent: str | None = None,
               **params: str) -> AgentMethod:
        base = {"state_file": str(self.state), "record_file": str(self.record), "pid_file": str(self.pids)}
        return AgentMethod(agent or self.agent, {**base, **params}, plug_map, timeout_ms, action)

    def power(self, plug: str = "oss2") -> str:
        return json.loads(self.state.read_text()).get(plug, "on") if self.state.exists() else "on"

    def set_power(self, **states: str) -> None:
        self.state.write_text(json.dumps(states))

    def runs(self) -> list[dict]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def actions(self) -> list[str]:
        return [re.search(r"^action=(\w+)$", r["stdin"], re.M).group(1) for r in self.runs()]

    def hung(self) -> tuple[int, int]:
        leader, child = map(int, wait_for(lambda: self.pids.exists() and self.pids.read_text().split(), 5,
                                          "the agent's pids"))
        return leader, child

    def kill_all(self) -> None:
        if self.pids.exists():
            for pid in map(int, self.pids.read_text().split()):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.kill_all()


def script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def one_line(detail: str) -> str:
    assert "\n" not in detail and "\r" not in detail, detail
    return detail


# -- a fence that works ----------------------------------------------------------------------------


def test_off_is_verified_by_status_and_everything_goes_on_stdin(lab):
    lab.set_power(oss2="on", oss3="on")
    m = lab.method(passwd="s3cret pass", login="admin")
    r = m.fence(VICTIM, far())
    assert r.ok and not r.pending, r.detail
    assert one_line(r.detail) == "agent fence_test, node oss2 (plug 'oss2'): off, verified by status (exit 2)"
    assert r.receipt == f"{lab.agent} plug=oss2: off exit 0 ({r.receipt.split('(')[1].split(')')[0]}); status" \
                        " exit 2, 'Status: OFF'"
    assert (lab.power("oss2"), lab.power("oss3")) == ("off", "on")
    runs = lab.runs()
    assert lab.actions() == ["off", "status"]
    for run, action in zip(runs, ("off", "status")):
        assert run["argv"] == [lab.agent]  # A1: nothing on the command line (passwords are in /proc/PID/cmdline)
        assert run["stdin"] == (f"action={action}\nplug=oss2\nstate_file={lab.state}\nrecord_file={lab.record}\n"
                                f"pid_file={lab.pids}\npasswd=s3cret pass\nlogin=admin\n")
    assert "s3cret" not in repr(m)


def test_plug_map_names_the_victims_plug(lab):
    lab.set_power(oss2="on")
    r = lab.method(plug_map={"oss2": "outlet-7", "oss3": "outlet-8"}).fence(VICTIM, far())
    assert r.ok and "plug 'outlet-7'" in r.detail
    assert (lab.power("outlet-7"), lab.power("oss2"), lab.power("outlet-8")) == ("off", "on", "on")
    assert all("plug=outlet-7\n" in run["stdin"] for run in lab.runs())


def test_status_off_said_in_text_with_exit_0_is_accepted(lab):
    r = lab.method(status_text="1").fence(VICTIM, far())
    assert r.ok and "verified by status (exit 0)" in r.detail and "'Status: OFF'" in r.receipt


def test_reboot_is_off_verified_then_on(lab):
    r = lab.method(action="reboot").fence(VICTIM, far())
    assert r.ok and one_line(r.detail).endswith("off, verified by status (exit 2); powered on again"
                                                f" (reboot, {r.detail.rsplit(', ', 1)[1]}")
    assert lab.actions() == ["off", "status", "on"] and lab.power() == "on"


def test_reboot_whose_on_fails_is_still_fenced_and_says_so(lab):
    r = lab.method(action="reboot", fail="on").fence(VICTIM, far())
    assert r.ok and one_line(r.detail).endswith("power on FAILED (exit code 1: fence_test: error: on: simulated"
                                                " failure): the node stays off")
    assert lab.power() == "off"


# -- a fence that fails: one line each, never an exception -----------------------------------------


def test_off_exiting_1_fails_with_its_last_stderr_line(lab):
    r = lab.method(fail="off").fence(VICTIM, far())
    assert not r.ok and not r.pending
    assert one_line(r.detail) == ("agent fence_test, node oss2 (plug 'oss2'): off failed: exit code 1:"
                                  " fence_test: error: off: simulated failure")
    assert lab.actions() == ["off"] and lab.power() == "on"


def test_a_status_that_lies_is_not_a_fence(lab):
    r = lab.method(lie="1").fence(VICTIM, far())
    assert not r.ok
    assert one_line(r.detail) == ("agent fence_test, node oss2 (plug 'oss2'): off exited 0 but status still on:"
                                  " not fenced")
    assert "status exit 0, 'Status: ON'" in r.receipt
    assert lab.power() == "off"  # the agent did switch it: the method only reports what it could verify


def test_a_failing_status_is_not_a_fence(lab):
    r = lab.method(fail="status").fence(VICTIM, far())
    assert not r.ok and one_line(r.detail).endswith(
        "off exited 0 but status failed: exit code 1: fence_test: error: status: simulated failure")


def test_a_status_contradicting_itself_is_not_a_fence(lab, tmp_path):
    agent = script(tmp_path / "fence_confused", """
case "$(cat)" in *action=status*) echo "Status: ON"; exit 2;; esac
exit 0
""")
    r = AgentMethod(agent).fence(VICTIM, far())
    assert not r.ok and "status contradicts itself (exit 2 is OFF, it printed 'Status: ON')" in one_line(r.detail)


def test_an_agent_killed_by_a_signal(tmp_path):
    agent = script(tmp_path / "fence_crash", "echo 'about to crash' >&2\nkill -SEGV $$\n")
    r = AgentMethod(agent).fence(VICTIM, far())
    assert not r.ok and one_line(r.detail).endswith("off failed: killed by SIGSEGV: about to crash")


def test_a_hung_agent_is_killed_at_its_timeout_with_the_child_it_forked(lab):
    t0 = time.monotonic()
    r = lab.method(timeout_ms=600, hang="off").fence(VICTIM, far())
    took = time.monotonic() - t0
    assert not r.ok and one_line(r.detail).endswith("off failed: off timed out after 600 ms (killed)")
    assert took < 0.6 + ag.KILL_S + SLACK_S
    leader, child = lab.hung()
    assert not alive(leader) and not alive(child)
    assert group_gone(leader)  # the agent led its own process group: nothing of it is left
    assert lab.actions() == ["off"]  # no status after a failed off


def test_an_agent_ignoring_sigterm_gets_sigkill(lab):
    r = lab.method(timeout_ms=600, hang="off", ignore_term="1").fence(VICTIM, far())
    assert not r.ok and one_line(r.detail).endswith(
        f"off timed out after 600 ms (killed: SIGKILL after {ag.KILL_GRACE_S:g} s)")
    leader, child = lab.hung()
    assert not alive(leader) and not alive(child) and group_gone(leader)


def test_the_deadline_cuts_a_run_short_of_its_timeout(lab):
    t0 = time.monotonic()
    r = lab.method(timeout_ms=20_000, hang="off").fence(VICTIM, t0 + 0.6)
    took = time.monotonic() - t0
    m = re.search(r"off timed out after (\d+) ms \(killed\)$", one_line(r.detail))
    assert not r.ok and m and 400 <= int(m.group(1)) <= 600, r.detail
    assert took < 0.6 + ag.KILL_S + SLACK_S
    leader, child = lab.hung()
    assert not alive(leader) and not alive(child)


def test_a_status_that_hangs_is_killed_and_not_a_fence(lab):
    r = lab.method(timeout_ms=600, hang="status").fence(VICTIM, far())
    assert not r.ok and one_line(r.detail).endswith("off exited 0 but status failed: status timed out after 600 ms"
                                                    " (killed)")
    leader, child = lab.hung()
    assert not alive(leader) and not alive(child)


@pytest.mark.parametrize("left_s", [-1.0, 0.0, 0.05])
def test_no_agent_starts_when_the_deadline_has_nearly_passed(lab, left_s):
    r = lab.method().fence(VICTIM, time.monotonic() + left_s)
    m = re.search(r"off failed: off not run: (\d+) ms left to the fence deadline \(it needs at least 100 ms\)$",
                  one_line(r.detail))
    assert not r.ok and m and int(m.group(1)) <= max(0, left_s * 1000), r.detail
    assert lab.runs() == [] and lab.power() == "on"


def test_no_time_left_for_status_is_not_a_fence(lab, monkeypatch):
    """An off that takes (nearly) all the time left: its exit 0 alone is not a fence."""
    m = lab.method()
    deadline = time.monotonic() + 1.5
    real = m._run

    def slow_off(action, *a, **kw):
        run = real(action, *a, **kw)
        if action == "off":  # as if the off had taken until 50 ms before the deadline
            time.sleep(max(0.0, deadline - 0.05 - time.monotonic()))
        return run

    monkeypatch.setattr(m, "_run", slow_off)
    r = m.fence(VICTIM, deadline)
    assert not r.ok and "off exited 0 but status failed: status not run:" in one_line(r.detail), r.detail
    assert lab.actions() == ["off"] and lab.power() == "off"


def test_output_is_bounded_and_the_last_stderr_line_survives(lab):
    m = lab.method(fail="off", spew=str(1 << 20))
    run = m._run("off", "oss2", far())
    assert run.rc == 1 and len(run.stderr) <= ag.STDERR_BYTES_MAX
    assert run.why() == "exit code 1: fence_test: error: off: simulated failure"
    r = m.fence(VICTIM, far())
    assert not r.ok and len(r.detail) < 300


def test_a_long_last_line_is_clipped(tmp_path):
    agent = script(tmp_path / "fence_long", "printf 'x%.0s' $(seq 1000) >&2\nexit 1\n")
    r = AgentMethod(agent).fence(VICTIM, far())
    assert not r.ok and r.detail.endswith("x" * (ag.DETAIL_LINE_CHARS_MAX - 3) + "...")


def test_a_missing_or_unrunnable_agent_fails_in_one_line(lab, tmp_path):
    missing = AgentMethod(str(tmp_path / "fence_gone"))
    r = missing.fence(VICTIM, far())
    assert not r.ok and one_line(r.detail).endswith(f"off failed: agent {tmp_path}/fence_gone does not exist")
    os.chmod(lab.agent, 0o644)
    r = lab.method().fence(VICTIM, far())
    assert not r.ok and r.detail.endswith(f"agent {lab.agent} is not executable (chmod 755 it)")
    os.chmod(lab.agent, 0o775)
    r = lab.method().fence(VICTIM, far())
    assert not r.ok and "is writable by group or others" in r.detail
    garbage = tmp_path / "fence_garbage"
    garbage.write_bytes(b"\x7fELF not really\n")
    garbage.chmod(0o755)
    r = AgentMethod(str(garbage)).fence(VICTIM, far())
    assert not r.ok and one_line(r.detail).endswith(f"cannot run agent {garbage}: Exec format error")
    assert lab.runs() == []


def test_validate_refuses_a_missing_or_unrunnable_agent_in_one_line(lab, tmp_path):
    lab.method().validate()  # a good one passes
    with pytest.raises(OperatorError, match=r"^\[fence.agent\]: agent /usr/sbin/fence_no_such_agent does not exist"
                                            r" \(is the fence-agents package installed\?\)$"):
        AgentMethod("fence_no_such_agent").validate()
    os.chmod(lab.agent, 0o644)
    with pytest.raises(OperatorError, match="is not executable"):
        lab.method().validate()
    with pytest.raises(OperatorError, match="is not a regular file"):
        AgentMethod(str(tmp_path)).validate()


@pytest.mark.parametrize("agent, why", [
    ("reboot", "a name must be a fence agent's, fence_*"),
    ("fence_../../bin/sh", "a name must be a fence agent's"),
    ("bin/fence_x", "a name must be a fence agent's"),
    ("", "'agent' must name a fence agent"),
])
def test_bad_agent_names(agent, why):
    with pytest.raises(OperatorError, match=re.escape(why)):
        AgentMethod(agent)


def test_a_name_is_looked_up_in_usr_sbin_and_a_path_kept():
    assert AgentMethod("fence_ipmilan").path == "/usr/sbin/fence_ipmilan"
    assert AgentMethod("/opt/x/../fence/my_agent").path == "/opt/fence/my_agent"


@pytest.mark.parametrize("kw, why", [
    ({"params": {"Passwd": "x"}}, "a key is [a-z_][a-z0-9_]*"),
    ({"params": {"1x": "x"}}, "a key is [a-z_][a-z0-9_]*"),
    ({"params": {"pass-word": "x"}}, "a key is [a-z_][a-z0-9_]*"),
    ({"params": {"k" * 65: "x"}}, "at most 64 characters"),
    ({"params": {"action": "on"}}, "param 'action' is set by diskhb"),
    ({"params": {"plug": "x"}}, "param 'plug' is set by diskhb"),
    ({"params": {"port": "x"}}, "param 'port' is set by diskhb"),
    ({"params": {"nodename": "x"}}, "param 'nodename' is set by diskhb"),
    ({"params": {"option": "on"}}, "param 'option' is set by diskhb"),
    ({"params": {"passwd": "x\naction=on"}}, "contains '\\n': it would end the line"),
    ({"params": {"passwd": "x\r"}}, "contains '\\r'"),
    ({"params": {"passwd": "a\0b"}}, "contains '\\x00'"),
    ({"params": {"passwd": ""}}, "is empty"),
    ({"params": {"passwd": " x"}}, "starts or ends with white space"),
    ({"params": {"ipport": 623}}, "must be a string (quote it: \"623\")"),
    ({"params": {"v": "x" * 4097}}, "longer than 4096 bytes"),
    ({"params": {f"k{i}": "x" for i in range(65)}}, "65 params; at most 64"),
    ({"params": {f"k{i}": "x" * 4000 for i in range(10)}}, "params take"),
    ({"params": ["passwd=x"]}, "'params' must be a table"),
    ({"plug_map": {"oss2": "a\nb"}}, "plug_map['oss2'] contains '\\n'"),
    ({"plug_map": {"": "a"}}, "is not a node name"),
    ({"timeout_ms": 50}, "'timeout_ms' must be 100..600000, got 50"),
    ({"timeout_ms": 700_000}, "'timeout_ms' must be 100..600000"),
    ({"timeout_ms": True}, "'timeout_ms' must be"),
    ({"action": "on"}, "'action' must be one of off, reboot, got 'on'"),
])
def test_bad_config_is_one_operator_error(kw, why):
    with pytest.raises(OperatorError) as e:
        AgentMethod("fence_dummy", **kw)
    assert why in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert str(e.value).startswith("[fence.agent]: ")


def test_a_victim_name_that_would_inject_a_line_is_refused_not_run(lab):
    r = lab.method().fence(Victim(2, "oss2\naction=on", 1), far())
    assert not r.ok and "contains '\\n'" in one_line(r.detail) and lab.runs() == []


# -- monitor, metadata, close ---------------------------------------------------------------------


def test_monitor(lab):
    assert lab.method().monitor().ok
    assert re.fullmatch(r"agent fence_test: monitor ok \(\d+ ms\)", lab.method().monitor().detail)
    bad = lab.method(fail="monitor").monitor()
    assert not bad.ok and one_line(bad.detail) == ("agent fence_test: monitor failed: exit code 1: fence_test: error:"
                                                   " monitor: simulated failure")
    hung = lab.method(timeout_ms=300, hang="monitor").monitor()
    assert not hung.ok and hung.detail.endswith("monitor timed out after 300 ms (killed)")
    gone = AgentMethod("/nonexistent/fence_x").monitor()
    assert not gone.ok and gone.detail.endswith("monitor failed: agent /nonexistent/fence_x does not exist")


def test_metadata_gets_no_params(lab, tmp_path):
    rep = lab.method(passwd="s3cret").metadata()
    assert rep.ok and '<resource-agent name="fence_test"' in rep.output and rep.detail.startswith(
        "agent fence_test: metadata ok (")
    seen = tmp_path / "stdin.txt"
    agent = script(tmp_path / "fence_meta", f"cat > {seen}\necho '<resource-agent name=\"fence_meta\"/>'\n")
    rep = AgentMethod(agent, {"passwd": "s3cret"}).metadata()
    assert rep.ok and seen.read_text() == "action=metadata\n"  # no password for what needs none
    agent = script(tmp_path / "fence_chatty", "echo hello\n")
    rep = AgentMethod(agent).metadata()
    assert not rep.ok and rep.detail.endswith("no <resource-agent> document in its output: not a fence agent?")


def test_close_stops_a_running_agent_and_refuses_new_runs(lab):
    m = lab.method(timeout_ms=20_000, hang="off")
    got = []
    t = threading.Thread(target=lambda: got.append(m.fence(VICTIM, far())))
    t.start()
    leader, child = lab.hung()
    t0 = time.monotonic()
    m.close()
    t.join(ag.KILL_S + 2 * SLACK_S)
    assert not t.is_alive() and time.monotonic() - t0 < ag.KILL_S + SLACK_S
    assert not got[0].ok and got[0].detail.endswith("off stopped: the daemon is stopping (killed)")
    assert not alive(leader) and not alive(child) and group_gone(leader)
    r = m.fence(VICTIM, far())
    assert not r.ok and r.detail.endswith("off not run: the method is closed (the daemon is stopping)")


# -- the real fence_dummy (fence-agents) ----------------------------------------------------------
#
# What fence_dummy does (Debian 12, fence-agents 4.12): with type=file (the default) it keeps ONE
# power state for the whole "device" in status_file ("on"/"off"); it declares no_port, so the
# plug is ignored (stderr: "Parse error: Ignoring unknown option 'plug=...'") and every plug
# shares that state; a missing status file reads as OFF. `off` writes "off" (after reading the
# state: "Already OFF" when it is), `status` exits 2 with "Status: OFF" or 0 with "Status: ON",
# `reboot` ends "on", `list` is not supported (exit 1). With type=fail its status says ON and an
# off waits for an OFF that never comes (until its power_timeout, 20 s): a real hung agent.
# So it can show a verified off through a real agent, never that the right plug was switched.

needs_dummy = pytest.mark.skipif(not os.access(FENCE_DUMMY, os.X_OK), reason=f"{FENCE_DUMMY} not installed"
                                 " (apt install fence-agents-common or fence-agents)")


def dummy(tmp_path: Path, **kw) -> tuple[AgentMethod, Path]:
    status = tmp_path / "dummy.status"
    params = {"type": "file", "status_file": str(status)}
    params.update(kw.pop("params", {}))
    return AgentMethod("fence_dummy", params, timeout_ms=kw.pop("timeout_ms", 10_000), **kw), status


@needs_dummy
def test_fence_dummy_off_verified_by_its_status(tmp_path):
    m, status = dummy(tmp_path)
    m.validate()
    status.write_text("on")
    r = m.fence(VICTIM, far())
    assert r.ok, r.detail
    assert r.detail == "agent fence_dummy, node oss2 (plug 'oss2'): off, verified by status (exit 2)"
    assert "status exit 2, 'Status: OFF'" in r.receipt and status.read_text() == "off"


@needs_dummy
def test_fence_dummy_ignores_the_plug_its_state_is_one_per_device(tmp_path):
    m, status = dummy(tmp_path)
    status.write_text("on")
    run = m._run("status", "oss3", far())
    assert (run.rc, ag.status_said(run.stdout)) == (0, "on")
    assert b"Ignoring unknown option 'plug=oss3'" in run.stderr
    assert m.fence(VICTIM, far()).ok
    run = m._run("status", "oss3", far())  # another plug: OFF too, fence_dummy has one state
    assert (run.rc, ag.status_said(run.stdout)) == (2, "off")
    status.unlink()
    run = m._run("status", "oss2", far())  # no file: OFF (why a test agent, not a fence)
    assert (run.rc, ag.status_said(run.stdout)) == (2, "off")


@needs_dummy
def test_fence_dummy_reboot_is_off_verified_then_on(tmp_path):
    m, status = dummy(tmp_path, action="reboot")
    status.write_text("on")
    r = m.fence(VICTIM, far())
    assert r.ok and "off, verified by status (exit 2); powered on again" in r.detail
    assert status.read_text() == "on"


@needs_dummy
def test_fence_dummy_monitor_and_metadata(tmp_path):
    m, _ = dummy(tmp_path)
    assert m.monitor().ok
    rep = m.metadata()
    assert rep.ok and '<resource-agent name="fence_dummy"' in rep.output and 'name="status_file"' in rep.output


@needs_dummy
def test_fence_dummy_type_fail_hangs_in_off_and_is_killed(tmp_path):
    m, _ = dummy(tmp_path, params={"type": "fail"}, timeout_ms=800)
    t0 = time.monotonic()
    r = m.fence(VICTIM, far())
    assert not r.ok and r.detail.endswith("off failed: off timed out after 800 ms (killed)")
    assert time.monotonic() - t0 < 0.8 + ag.KILL_S + SLACK_S
