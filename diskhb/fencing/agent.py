"""The "agent" fencing method: STONITH through a Pacemaker-style fence agent, the last resort.

A fence agent (fence-agents' fence_ipmilan, fence_apc, ...; our own fence_diskhb is one seen from
the other side) is an executable that reads `key=value` lines on stdin and exits with a code
(fence_rules in diskhb.pacemaker lists the facts of that interface we follow). `fence = [...,
"agent"]` runs the configured agent against the victim's plug when the methods before it failed.

Rules of this file:
- A1 STDIN ONLY: the action, the plug and every configured param go to the agent as stdin lines,
  never on its command line (a password on argv is readable by every user through
  /proc/PID/cmdline). Params are checked when the method is built (check_params): keys
  [a-z_][a-z0-9_]*, values without a line break (a newline in a value would be a second line:
  `pw=x\\naction=on` injects another key), not the keys we set (action, plug, port, nodename,
  option), bounded in number and size.
- A2 THE PLUG: the victim's node name is the plug (Pacemaker's convention: the node is named by
  `plug`, once `port`), unless plug_map names another one for it (a PDU outlet, a VM's name).
- A3 BOUNDED: each run of the agent gets min(timeout_ms, what is left to the fence's deadline);
  it runs in a session and process group of its own, and at the end of that time the whole
  group gets SIGTERM and then SIGKILL (diskhb.procgroup: the same rules as a hook's),
  so an agent's ssh or ipmitool child does not outlive it either. Its stdout (the first
  STDOUT_BYTES_MAX bytes) and stderr (the last STDERR_BYTES_MAX: where an agent says why) are
  kept; the rest is read and dropped. fence() thus returns by its deadline plus at most KILL_S
  (the runner's SIGTERM grace and reap wait: 2 s). An agent is not started with less than
  RUN_TIME_MIN_S left: it would only be killed in the middle of its work.
- A4 VERIFIED (method M2): an `off` that exits 0 is not trusted alone (an agent may exit 0 on a
  wrong plug, a PDU may acknowledge and not switch): a `status` run follows and only its answer
  OFF makes the fence ok. fence-agents' status exits 2 for OFF, 0 for ON, 1 for an error, and
  prints `Status: OFF` / `Status: ON`: exit 2, or exit 0 with `Status: OFF` (some older agents),
  is OFF; a status that contradicts itself (exit 2 and `Status: ON`) is a failure, not an OFF.
  One status run, no retry: an agent's off already waits for the device to report off before
  it exits 0 (fence-agents' power_wait/power_timeout), so an ON right after is a wrong plug or
  a lie, not a slow device; and a retry would only spend the deadline the next method needs.
- A5 REBOOT IS OFF, VERIFY, ON: with action "reboot" the agent is run as `off`, `status` (A4) and
  then `on` (what Pacemaker's fencer does for an agent without reboot, and fence-agents'
  method=onoff). The agent's own `reboot` ends with the node ON, so its status afterwards
  proves nothing; this way the OFF is seen. A failed `on` after a verified off leaves the fence
  ok (the victim is off: fenced all the same) and the detail says so.
- A6 ONE LINE, NEVER RAISES (method M3): a missing or non-executable agent, an exit code, a
  timeout, a status still ON, a failed status: each a failed MethodResult whose detail is one
  line (the agent's last stderr line quoted, clipped to DETAIL_LINE_CHARS_MAX). Config errors
  (a bad param, a bad name, a missing agent at start: validate()) are OperatorError, one line.
- A7 NAMED AGENTS ARE fence_*: a bare name is looked up in AGENT_DIR (/usr/sbin, where Pacemaker
  finds them) and must start with `fence_`: `agent = "reboot"` must not run /usr/sbin/reboot
  with our stdin. Any other executable is named by its absolute path. The file must be safe to
  run as root (diskhb.hooks.runner.check_file: a regular executable file, owned by root or us,
  writable by nobody else), checked at start (validate) and again before every run.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from dataclasses import dataclass

from diskhb.core.record import record
from diskhb.core.types import NODE_ID_MAX
from diskhb.errors import OperatorError
from diskhb.fencing.method import MethodResult, Victim
from diskhb.hooks.runner import check_file, hook_environment
from diskhb.procgroup import KILL_GRACE_S, REAP_WAIT_S, Output, communicate, group_gone, signame, stop_group, unprotect

log = logging.getLogger("diskhb.fencing.agent")

AGENT_DIR = "/usr/sbin"  # where a bare agent name is looked up (Pacemaker's place for fence agents)
STDOUT_BYTES_MAX = 64 << 10  # of a run's stdout, its head kept (metadata: the largest agents print ~30 KiB)
STDERR_BYTES_MAX = 64 << 10  # of a run's stderr, its tail kept (the last line says why it failed)
DETAIL_LINE_CHARS_MAX = 200  # of an agent's line quoted in a detail
PARAMS_MAX = 64  # fence_ipmilan, the agent with the most, has ~45 options
PARAM_KEY_CHARS_MAX = 64
PARAM_VALUE_BYTES_MAX = 4096  # PATH_MAX: an identity file or a certificate path
PARAMS_BYTES_MAX = 32 << 10  # all of stdin: under a pipe's 64 KiB, so it is written at once
PLUGS_MAX = NODE_ID_MAX  # plug_map entries: one per node at most
TIMEOUT_MS_MIN = 100
TIMEOUT_MS_MAX = 600_000  # 10 min: a fence that takes longer is a fence that did not happen
TIMEOUT_MS_DEFAULT = 30_000  # fence-agents' power_timeout is 20 s; its login adds a few
RUN_TIME_MIN_S = 0.1  # less left to the deadline and the agent is not started: it would be killed mid-action
ACTIONS = ("off", "reboot")
RESERVED_KEYS = ("action", "plug", "port", "nodename", "option")  # set by us (A1); `option`: old agents' action
EXIT_ON = 0  # status exit codes (fence-agents)
EXIT_OFF = 2
KILL_S = KILL_GRACE_S + REAP_WAIT_S  # what a kill may add to a deadline (A3)

_KEY_OK = re.compile(r"[a-z_][a-z0-9_]*")
_NAME_OK = re.compile(r"fence_[A-Za-z0-9_.-]+")
_STATUS_LINE = re.compile(r"^\s*Status:\s*(ON|OFF)\s*$", re.IGNORECASE | re.MULTILINE)
_BAD_VALUE_CHARS = ("\n", "\r", "\0")


@record
class AgentReply:
    """The outcome of monitor() or metadata(): ok, one line, and (metadata) the agent's output."""
    ok: bool
    detail: str
    output: str = ""


@dataclass(frozen=True, slots=True)
class _Run:
    """One run of the agent: `failure` is "" when it exited (rc), else one line why not."""
    action: str
    rc: int | None
    failure: str
    stdout: bytes = b""
    stderr: bytes = b""
    ms: int = 0

    def why(self) -> str:
        """One line for a run that did not succeed: how it ended and the agent's last word."""
        if self.failure:
            return self.failure
        how = f"exit code {self.rc}" if self.rc >= 0 else f"killed by {signame(-self.rc)}"
        return f"{how}: {last_line(self.stderr, self.stdout)}"


# -- config-time checks ---------------------------------------------------------------------------


def resolve_agent(agent: str, where: str = "[fence.agent]") -> str:
    """A7: the agent's path: an absolute path as it is, a bare fence_* name in AGENT_DIR."""
    if not isinstance(agent, str) or not agent:
        raise OperatorError(f"{where}: 'agent' must name a fence agent, e.g. \"fence_ipmilan\" or an absolute path")
    if os.path.isabs(agent):
        if "\0" in agent:
            raise OperatorError(f"{where}: 'agent' {agent!r} is not a valid path")
        return os.path.normpath(agent)
    if not _NAME_OK.fullmatch(agent):
        raise OperatorError(f"{where}: 'agent' {agent!r}: a name must be a fence agent's, fence_* (looked up in"
                            f" {AGENT_DIR}); name any other executable by its absolute path")
    return os.path.join(AGENT_DIR, agent)


def check_value(value: object, what: str, where: str) -> str:
    """A1: a value that is one stdin line, as the agent will read it."""
    if not isinstance(value, str):
        raise OperatorError(f"{where}: {what} must be a string (quote it: \"{value}\")")
    if not value:
        raise OperatorError(f"{where}: {what} is empty (remove it, or give it a value)")
    bad = next((c for c in _BAD_VALUE_CHARS if c in value), None)
    if bad is not None:
        raise OperatorError(f"{where}: {what} contains {bad!r}: it would end the line and start another key for"
                            " the agent")
    if value != value.strip():
        raise OperatorError(f"{where}: {what} starts or ends with white space: the agent strips it")
    if len(value.encode("utf-8", "surrogatepass")) > PARAM_VALUE_BYTES_MAX:
        raise OperatorError(f"{where}: {what} is longer than {PARAM_VALUE_BYTES_MAX} bytes")
    return value


def check_params(params: dict[str, str], where: str = "[fence.agent]") -> dict[str, str]:
    """A1: the configured params, checked; OperatorError (one line) for the first bad one."""
    if not isinstance(params, dict):
        raise OperatorError(f"{where}: 'params' must be a table of key = \"value\"")
    if len(params) > PARAMS_MAX:
        raise OperatorError(f"{where}: {len(params)} params; at most {PARAMS_MAX}")
    size = 0
    for key, value in params.items():
        if not isinstance(key, str) or len(key) > PARAM_KEY_CHARS_MAX or not _KEY_OK.fullmatch(key):
            raise OperatorError(f"{where}: param {str(key)[:80]!r}: a key is [a-z_][a-z0-9_]*, at most"
                                f" {PARAM_KEY_CHARS_MAX} characters (the agent's stdin name: ipaddr, login,"
                                " passwd, ...)")
        if key in RESERVED_KEYS:
            raise OperatorError(f"{where}: param {key!r} is set by diskhb for each run (action, and the victim's"
                                " plug: use plug_map to name a node's plug); remove it")
        check_value(value, f"param {key!r}", where)
        size += len(key) + 2 + len(value.encode("utf-8", "surrogatepass"))
    if size > PARAMS_BYTES_MAX:
        raise OperatorError(f"{where}: params take {size} bytes; at most {PARAMS_BYTES_MAX}")
    return dict(params)


def check_plug_map(plug_map: dict[str, str] | None, where: str = "[fence.agent]") -> dict[str, str]:
    if plug_map is None:
        return {}
    if not isinstance(plug_map, dict):
        raise OperatorError(f"{where}: 'plug_map' must be a table of node name = \"plug\"")
    if len(plug_map) > PLUGS_MAX:
        raise OperatorError(f"{where}: plug_map has {len(plug_map)} entries; at most {PLUGS_MAX}")
    for node, plug in plug_map.items():
        if not isinstance(node, str) or not node:
            raise OperatorError(f"{where}: plug_map: {node!r} is not a node name")
        check_value(plug, f"plug_map[{node!r}]", where)
    return dict(plug_map)


def check_timeout_ms(timeout_ms: object, where: str = "[fence.agent]") -> int:
    if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or \
            not TIMEOUT_MS_MIN <= timeout_ms <= TIMEOUT_MS_MAX:
        raise OperatorError(f"{where}: 'timeout_ms' must be {TIMEOUT_MS_MIN}..{TIMEOUT_MS_MAX}, got {timeout_ms!r}")
    return timeout_ms


# -- output -----------------------------------------------------------------------------------------


def last_line(*outputs: bytes) -> str:
    """The last non-blank line of the first output that has one, printable and clipped."""
    for data in outputs:
        for line in reversed(data.decode("utf-8", "replace").splitlines()):
            line = "".join(c if c.isprintable() else "?" for c in line).strip()
            if line:
                return _clip(line)
    return "no output"


def _clip(text: str) -> str:
    return text if len(text) <= DETAIL_LINE_CHARS_MAX else text[:DETAIL_LINE_CHARS_MAX - 3] + "..."


def status_said(stdout: bytes) -> str | None:
    """"on" or "off" from the last `Status: ON|OFF` line, else None."""
    found = _STATUS_LINE.findall(stdout.decode("utf-8", "replace"))
    return found[-1].lower() if found else None


# -- the method -----------------------------------------------------------------------------------


class AgentMethod:
    """Fencing through a fence agent (A1-A7). Built from config; fence() on a runner's worker thread."""

    name = "agent"

    def __init__(self, agent: str, params: dict[str, str] | None = None, plug_map: dict[str, str] | None = None,
                 timeout_ms: int = TIMEOUT_MS_DEFAULT, action: str = "off", *, where: str = "[fence.agent]"):
        """OperatorError (one line) for a bad name, param, plug, timeout or action. The file is
        not looked at here: validate() does, at start."""
        self.agent = agent
        self.path = resolve_agent(agent, where)
        self.params = check_params({} if params is None else params, where)
        self.plug_map = check_plug_map(plug_map, where)
        self.timeout_ms = check_timeout_ms(timeout_ms, where)
        if action not in ACTIONS:
            raise OperatorError(f"{where}: 'action' must be one of {', '.join(ACTIONS)}, got {action!r}")
        self.action = action
        self.where = where
        self._stop_at: float | None = None  # close(): a running agent is stopped, no new one starts

    def __repr__(self) -> str:  # never the params: they hold passwords
        return f"AgentMethod({self.path!r}, action={self.action!r}, timeout_ms={self.timeout_ms})"

    # -- config time ----------------------------------------------------------------------------

    def validate(self) -> None:
        """A7: OperatorError (one line) when the agent's file cannot run."""
        problem = check_file(self.path)
        if problem:
            hint = " (is the fence-agents package installed?)" if problem == "does not exist" and \
                os.path.dirname(self.path) == AGENT_DIR else ""
            raise OperatorError(f"{self.where}: agent {self.path} {problem}{hint}")

    # -- actions ----------------------------------------------------------------------------------

    def plug_for(self, victim: Victim) -> str:
        """A2: the plug naming the victim for the agent."""
        return self.plug_map.get(victim.name, victim.name)

    def fence(self, victim: Victim, deadline: float) -> MethodResult:
        """Power the victim off and see it off (A4, A5): ok only when status says OFF. Returns by
        deadline + KILL_S; never raises for the agent (A6)."""
        plug = self.plug_for(victim)
        try:
            check_value(plug, "the plug", f"agent {os.path.basename(self.path)}, node {victim.node_id}")
        except OperatorError as e:  # a node name that would be two stdin lines: refused, not run
            return _failed(f"{e} ({plug!r})")
        who = f"agent {os.path.basename(self.path)}, node {victim.name} (plug {plug!r})"
        off = self._run("off", plug, deadline)
        if off.failure or off.rc != 0:
            return _failed(f"{who}: off failed: {off.why()}")
        st = self._run("status", plug, deadline)
        if st.failure:
            return _failed(f"{who}: off exited 0 but status failed: {st.failure}")
        said = status_said(st.stdout)
        receipt = f"{self.path} plug={plug}: off exit 0 ({off.ms} ms); status exit {st.rc}" + \
            (f", 'Status: {said.upper()}'" if said else "")
        if st.rc == EXIT_OFF and said == "on":
            return _failed(f"{who}: off exited 0 but status contradicts itself (exit 2 is OFF, it printed"
                           " 'Status: ON'): not verified", receipt)
        if st.rc == EXIT_OFF or (st.rc == EXIT_ON and said == "off"):
            detail = f"{who}: off, verified by status (exit {st.rc})"
            if self.action == "reboot":
                detail += "; " + self._power_on(plug, deadline)
            return MethodResult(True, False, detail, receipt)
        if st.rc == EXIT_ON:
            return _failed(f"{who}: off exited 0 but status still on: not fenced", receipt)
        return _failed(f"{who}: off exited 0 but status failed: {st.why()}", receipt)

    def _power_on(self, plug: str, deadline: float) -> str:
        """A5: the `on` of a reboot, after the verified off; its failure is a note, not a failure."""
        on = self._run("on", plug, deadline)
        if not on.failure and on.rc == 0:
            return f"powered on again (reboot, {on.ms} ms)"
        return f"power on FAILED ({on.why()}): the node stays off"

    def monitor(self, deadline: float | None = None) -> AgentReply:
        """The agent's `monitor` (can it reach its device?), bounded by timeout_ms and deadline."""
        r = self._run("monitor", None, self._deadline(deadline))
        if not r.failure and r.rc == 0:
            return AgentReply(True, f"agent {os.path.basename(self.path)}: monitor ok ({r.ms} ms)")
        return AgentReply(False, f"agent {os.path.basename(self.path)}: monitor failed: {r.why()}")

    def metadata(self, deadline: float | None = None) -> AgentReply:
        """The agent's `metadata` XML (no params are passed: it needs none, and gets no password)."""
        r = self._run("metadata", None, self._deadline(deadline), with_params=False)
        what = f"agent {os.path.basename(self.path)}: metadata"
        if r.failure or r.rc != 0:
            return AgentReply(False, f"{what} failed: {r.why()}")
        text = r.stdout.decode("utf-8", "replace")
        if "<resource-agent" not in text:
            return AgentReply(False, f"{what}: no <resource-agent> document in its output: not a fence agent?")
        return AgentReply(True, f"{what} ok ({len(r.stdout)} bytes)", text)

    def close(self) -> None:
        """At daemon stop: a running agent is stopped (its group killed), none starts after."""
        self._stop_at = time.monotonic()

    # -- one run ----------------------------------------------------------------------------------

    def _deadline(self, deadline: float | None) -> float:
        return time.monotonic() + self.timeout_ms / 1000 if deadline is None else deadline

    def stdin_for(self, action: str, plug: str | None, with_params: bool = True) -> bytes:
        """A1: what the agent reads: action, plug, then the params."""
        lines = [f"action={action}"]
        if plug is not None:
            lines.append(f"plug={plug}")
        if with_params:
            lines.extend(f"{k}={v}" for k, v in self.params.items())
        return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")

    def _run(self, action: str, plug: str | None, deadline: float, with_params: bool = True) -> _Run:
        """A3: one run of the agent, bounded by min(timeout_ms, deadline); never raises for it."""
        t0 = time.monotonic()
        if self._stop_at is not None:
            return _Run(action, None, f"{action} not run: the method is closed (the daemon is stopping)")
        allowed = min(self.timeout_ms / 1000, deadline - t0)
        if allowed < RUN_TIME_MIN_S:
            left = max(0, round((deadline - t0) * 1000))
            return _Run(action, None, f"{action} not run: {left} ms left to the fence deadline (it needs at least"
                                      f" {round(RUN_TIME_MIN_S * 1000)} ms)")
        problem = check_file(self.path)
        if problem:
            return _Run(action, None, f"agent {self.path} {problem}")
        try:
            p = subprocess.Popen([self.path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env=hook_environment(os.environ), cwd="/", start_new_session=True)
        except (OSError, ValueError) as e:
            return _Run(action, None, f"cannot run agent {self.path}: {getattr(e, 'strerror', None) or e}")
        unprotect(p.pid)
        out, err = Output(STDOUT_BYTES_MAX), Output(STDERR_BYTES_MAX, tail=True)
        try:
            exited = communicate(p, self.stdin_for(action, plug, with_params),
                                  {p.stdout.fileno(): out, p.stderr.fileno(): err}, t0 + allowed,
                                  lambda: self._stop_at)
        except BaseException:
            stop_group(p, p.pid)  # a bug of ours leaves no agent running
            raise
        finally:
            for f in (p.stdin, p.stdout, p.stderr):
                f.close()
        ms = round((time.monotonic() - t0) * 1000)
        if not exited:
            cleanup = stop_group(p, p.pid)
            killed = "killed" if cleanup == "stopped by SIGTERM" else f"killed: {cleanup}"
            if self._stop_at is not None:
                why = f"{action} stopped: the daemon is stopping ({killed})"
            else:
                why = f"{action} timed out after {round(allowed * 1000)} ms ({killed})"
            return _Run(action, None, why, bytes(out.kept), bytes(err.kept), ms)
        if not group_gone(p.pid):  # the agent exited: what it left running in its group
            log.warning("agent %s: %s: processes it left running: %s", self.path, action, stop_group(p, p.pid))
        return _Run(action, p.returncode, "", bytes(out.kept), bytes(err.kept), ms)


def _failed(detail: str, receipt: str = "") -> MethodResult:
    return MethodResult(False, False, detail, receipt)
