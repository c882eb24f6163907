"""The hook runner: real processes, bounded in time, number and queue; everything started is killed."""

from __future__ import annotations

import json
import logging
import os
import signal
import time

import pytest
from prometheus_client import REGISTRY

from diskhb.config import HooksConfig
from diskhb.core.liveness import NodeStateChanged
from diskhb.core.types import NodeState
from diskhb.errors import OperatorError
from diskhb.hooks import runner as rn
from diskhb.hooks.events import Context
from diskhb.hooks.runner import HookRunner, find_hooks, run_once
from tools.procs import alive

GEN = 6894389468678002730
CTX = Context("c1", "oss1", 1, 0xABC)


def dead(node_id: int = 2) -> NodeStateChanged:
    return NodeStateChanged(node_id, f"oss{node_id}", NodeState.ALIVE, NodeState.DEAD, "disk:/r", 2100, "silent", GEN)


def script(path, body: str, mode: int = 0o755) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(mode)
    return str(path)


def runs(hook: str, result: str) -> float:
    return REGISTRY.get_sample_value("diskhb_hook_runs_total", {"hook": hook, "result": result}) or 0.0


def dropped(hook: str) -> float:
    return REGISTRY.get_sample_value("diskhb_hook_events_dropped_total", {"hook": hook}) or 0.0


def wait_for(pred, timeout_s: float, what: str):
    end = time.monotonic() + timeout_s
    while not (got := pred()):
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return got


@pytest.fixture
def cleanup(tmp_path):
    """Runners closed and every pid a hook wrote to tmp_path/*.pids killed, pass or fail."""
    runners: list[HookRunner] = []
    try:
        yield runners
    finally:
        for r in runners:
            r.close(0)
        for f in tmp_path.glob("*.pids"):
            for pid in map(int, f.read_text().split()):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def runner(cleanup, hooks: list[str], **kw) -> HookRunner:
    r = HookRunner(HooksConfig(commands=tuple(hooks), **kw), CTX, "test.toml")
    cleanup.append(r)
    return r


def test_a_hook_gets_the_event_as_json_on_stdin_and_in_its_environment(tmp_path, cleanup, caplog):
    out = tmp_path / "out"
    out.mkdir()
    hook = script(tmp_path / "notify", f"""
cat > {out}/$DISKHB_SEQ.json
env > {out}/$DISKHB_SEQ.env
echo "$$ $(ps -o pgid= -p $$) $(pwd)" > {out}/$DISKHB_SEQ.proc
echo "paged the on-call for $DISKHB_SUBJECT_NODE"
""")
    caplog.set_level(logging.INFO, logger="diskhb.hooks")
    before = runs(hook, "ok")
    r = runner(cleanup, [hook])
    r.offer(dead())
    wait_for(lambda: runs(hook, "ok") == before + 1, 10, "the run counted")
    got = json.loads((out / "1.json").read_text())
    assert (got["event"], got["seq"], got["subject_node"], got["subject_node_id"]) == ("node-dead", 1, "oss2", 2)
    assert got["generation"] == "0x5fadcab197bf182a" and int(got["generation"], 16) == GEN
    assert (got["cluster"], got["node"], got["node_id"], got["node_generation"]) == ("c1", "oss1", 1, "0xabc")
    assert abs(got["time_ms"] / 1000 - time.time()) < 30 and got["time"].endswith("Z")
    env = dict(line.split("=", 1) for line in (out / "1.env").read_text().splitlines() if "=" in line)
    assert (env["DISKHB_EVENT"], env["DISKHB_SUBJECT_NODE_ID"], env["DISKHB_GENERATION"]) == \
        ("node-dead", "2", "0x5fadcab197bf182a")
    assert (env["DISKHB_NODE"], env["DISKHB_NODE_ID"], env["DISKHB_REGION"], env["DISKHB_HOOK"]) == \
        ("oss1", "1", "disk:/r", hook)
    assert "DISKHB_RESOURCE" not in env and "NOTIFY_SOCKET" not in env
    pid, pgid, cwd = (out / "1.proc").read_text().split()
    assert pid == pgid and cwd == "/"  # a process group of its own (killable as one), not in our cwd
    wait_for(lambda: "done in" in caplog.text, 5, "the log line")
    assert f"hook {hook}: node-dead #1: | paged the on-call for oss2" in caplog.text


def test_a_hook_that_hangs_is_killed_at_timeout_with_its_children(tmp_path, cleanup):
    pids = tmp_path / "hang.pids"
    hook = script(tmp_path / "hang", f"""
trap '' TERM
sleep 120 &
echo $$ $! > {pids}
echo started
sleep 120
""")
    t0 = time.monotonic()
    o = run_once(hook, b"{}\n", {"PATH": "/usr/bin:/bin"}, 0.3)
    took = time.monotonic() - t0
    assert o.result == "timeout" and o.detail == "no exit after 300 ms" and o.output == b"started\n"
    assert o.cleanup == "SIGKILL after 1 s"  # the shell ignores SIGTERM
    assert took < 0.3 + rn.KILL_GRACE_S + rn.REAP_WAIT_S + 0.5
    shell, child = map(int, pids.read_text().split())
    assert not alive(shell) and not alive(child)


def test_what_a_hook_leaves_running_is_stopped_when_it_exits(tmp_path, cleanup):
    pids = tmp_path / "bg.pids"
    hook = script(tmp_path / "bg", f"sleep 120 &\necho $! > {pids}\nexit 0\n")
    o = run_once(hook, b"{}\n", {"PATH": "/usr/bin:/bin"}, 5)
    assert o.result == "ok" and o.cleanup == "processes it left running: stopped by SIGTERM"
    assert not alive(int(pids.read_text()))


def test_a_hung_hook_is_counted_and_logged_in_one_line(tmp_path, cleanup, caplog):
    hook = script(tmp_path / "slow", f"echo $$ > {tmp_path}/slow.pids\nexec sleep 120\n")
    before = runs(hook, "timeout")
    r = runner(cleanup, [hook], timeout_ms=200)
    r.offer(dead())
    wait_for(lambda: runs(hook, "timeout") == before + 1, 10, "the timeout counted")
    wait_for(lambda: "TIMED OUT" in caplog.text, 5, "the log line")
    line = next(ln for ln in caplog.text.splitlines() if "TIMED OUT" in ln)
    assert f"hook {hook}: node-dead #1 TIMED OUT: no exit after 200 ms; its process group: stopped by SIGTERM" in line


def test_exit_status_and_exec_failures_are_counted(tmp_path, cleanup, caplog):
    failing = script(tmp_path / "failing", "echo 'smtp: connection refused' >&2\nexit 3\n")
    vanishing = script(tmp_path / "vanishing", "exit 0\n")
    before = runs(failing, "failed"), runs(vanishing, "error")
    r = runner(cleanup, [failing, vanishing])
    os.chmod(vanishing, 0o644)  # after the start check: a run time error, not a refusal
    r.offer(dead())
    wait_for(lambda: (runs(failing, "failed"), runs(vanishing, "error")) == (before[0] + 1, before[1] + 1), 10,
             "both counted")
    wait_for(lambda: "not run" in caplog.text and "FAILED" in caplog.text, 5, "the log lines")
    assert f"hook {failing}: node-dead #1 FAILED: exit status 3 after" in caplog.text
    assert f"hook {failing}: node-dead #1: | smtp: connection refused" in caplog.text
    assert f"hook {vanishing}: node-dead #1 not run: cannot run it: Permission denied" in caplog.text
    assert "Traceback" not in caplog.text


def test_a_command_that_cannot_run_refuses_the_start_in_one_line(tmp_path):
    ok = script(tmp_path / "ok", "exit 0\n")
    for path, why in ((script(tmp_path / "noexec", "exit 0\n", 0o644), "is not executable"),
                      (str(tmp_path / "missing"), "does not exist"),
                      (str(tmp_path), "is not a regular file"),
                      (script(tmp_path / "gw", "exit 0\n", 0o775), "is writable by group or others")):
        with pytest.raises(OperatorError) as e:
            find_hooks(HooksConfig(commands=(ok, path)), "/etc/diskhb.toml", print)
        msg = str(e.value)
        assert msg.startswith(f"/etc/diskhb.toml: 'hooks.commands': {path} {why}") and "\n" not in msg


def test_a_hooks_dir_runs_its_executables_in_order_and_skips_the_rest_with_one_warning_each(tmp_path):
    d = tmp_path / "hooks.d"
    d.mkdir()
    b = script(d / "20-page", "exit 0\n")
    a = script(d / "10_mail", "exit 0\n")
    for name in ("10_mail~", "10_mail.bak", ".10_mail.swp", "30-sms.dpkg-old"):
        script(d / name, "exit 0\n")
    script(d / "40-draft", "exit 0\n", 0o644)
    (d / "50-subdir").mkdir()
    warnings: list[str] = []
    assert find_hooks(HooksConfig(dir=str(d)), "c.toml", warnings.append) == (a, b)
    assert len(warnings) == 6 and all("\n" not in w for w in warnings)
    assert f"hook {d}/40-draft skipped: it is not executable (chmod 755 it)" in warnings
    assert any(w.startswith(f"hook {d}/10_mail~ skipped: only names of letters, digits, '_' and '-' run")
               for w in warnings)
    assert f"hook {d}/50-subdir skipped: it is not a regular file" in warnings
    with pytest.raises(OperatorError, match="'hooks.dir': .*: no such directory; create it"):
        find_hooks(HooksConfig(dir=str(tmp_path / "nope")), "c.toml", warnings.append)
    d.chmod(0o777)
    with pytest.raises(OperatorError, match="is writable by group or others"):
        find_hooks(HooksConfig(dir=str(d)), "c.toml", warnings.append)


def test_a_full_queue_drops_and_counts_and_never_blocks(tmp_path, cleanup, caplog):
    gate = tmp_path / "gate"
    hook = script(tmp_path / "blocked", f"echo $$ >> {tmp_path}/blocked.pids\n"
                                        f"while [ ! -e {gate} ]; do sleep 0.05; done\n")
    base = dropped(hook)
    r = runner(cleanup, [hook], concurrency=1)
    r.offer(dead())
    wait_for(lambda: (tmp_path / "blocked.pids").exists(), 10, "the first run to start")
    t0 = time.monotonic()
    for _ in range(rn.QUEUE_MAX + 5):
        r.offer(dead())
    offered_s = time.monotonic() - t0
    assert dropped(hook) == base + 5
    assert offered_s < 0.5, offered_s  # 261 offers: no waiting on the worker
    assert caplog.text.count("dropping events for now") == 1  # one line per streak, not per drop
    r.close(0)  # at stop: the running one is killed, the queued ones dropped and counted
    assert dropped(hook) == base + 5 + rn.QUEUE_MAX
    assert f"{rn.QUEUE_MAX} runs dropped at stop" in caplog.text
    assert not alive(int((tmp_path / "blocked.pids").read_text().split()[0]))


def test_concurrency_bound_is_respected(tmp_path, cleanup):
    log = tmp_path / "spans"
    hook = script(tmp_path / "span", f"echo \"start $(date +%s.%N)\" >> {log}\nsleep 0.3\n"
                                     f"echo \"end $(date +%s.%N)\" >> {log}\n")
    before = runs(hook, "ok")
    r = runner(cleanup, [hook], concurrency=2)
    for i in range(6):
        r.offer(dead(2 + i % 2))
        r.offer(NodeStateChanged(2 + i % 2, "x", NodeState.DEAD, NodeState.ALIVE, "disk:/r", 0, "back", GEN))
    wait_for(lambda: runs(hook, "ok") == before + 12, 30, "twelve runs")
    marks = sorted((float(t), kind) for kind, t in (ln.split() for ln in log.read_text().splitlines()))
    running = peak = 0
    for _, kind in marks:
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert peak == 2  # two at once, never three


def test_close_is_bounded_and_kills_a_running_hook(tmp_path, cleanup):
    hook = script(tmp_path / "stuck", f"trap '' TERM\necho $$ > {tmp_path}/stuck.pids\nsleep 120\n")
    r = runner(cleanup, [hook])
    r.offer(dead())
    wait_for(lambda: (tmp_path / "stuck.pids").exists(), 10, "the run to start")
    before = runs(hook, "timeout")
    t0 = time.monotonic()
    r.close(0.2)
    assert time.monotonic() - t0 < 0.2 + rn.KILL_GRACE_S + rn.REAP_WAIT_S + 0.5
    assert runs(hook, "timeout") == before + 1
    assert not alive(int((tmp_path / "stuck.pids").read_text()))


def test_events_filter_and_sighup_rescan(tmp_path, cleanup):
    d = tmp_path / "hooks.d"
    d.mkdir()
    r = HookRunner(HooksConfig(dir=str(d), events=("node-back",)), CTX, "c.toml")
    cleanup.append(r)
    assert r.hooks == ()
    r.offer(dead())  # nothing to run yet; mapping still follows (node-back needs the death)
    hook = script(d / "late", f"cat > {tmp_path}/got.json\n")
    r.rescan()
    assert r.hooks == (hook,)
    r.offer(dead())  # filtered out
    r.offer(NodeStateChanged(2, "oss2", NodeState.DEAD, NodeState.ALIVE, "disk:/r", 0, "beating", GEN))
    got = wait_for(lambda: (tmp_path / "got.json").exists() and (tmp_path / "got.json").read_text(), 10, "the run")
    assert json.loads(got)["event"] == "node-back" and json.loads(got)["seq"] == 1
