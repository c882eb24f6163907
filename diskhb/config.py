"""TOML -> typed settings. Every error names the file, the key and the fix, in one line.

    [node]
    name = "node1"
    id = 1                        # slot number, 1..slots
    mlock = true                  # lock the daemon in memory [default true]
    sched = "rr"                  # the loop thread's realtime policy: rr | fifo | off [default rr]
    rt_priority = 10              # its priority, 1..99 [default 10]
    oom_score_adj = -900          # -1000..1000 [default -900]
    fence = ["scsi-pr", "pill", "agent"]  # fencing methods in order, the next only when one failed
                                  # [default ["pill"] with a disk region and a [quorum]]
    [cluster]                     # optional: when given, must agree with every disk region
    name = "c1"
    interval_ms = 200
    dead_ms = 2000
    [metrics]
    listen = "127.0.0.1:9701"     # Prometheus endpoint ("" disables it)
    [[region]]
    type = "disk"                 # "disk" | "net" | "serial"
    path = "/dev/disk/by-id/..."  # or "uuid:<region uuid>": the device carrying it, found at start
    [quorum]                      # optional: the cluster's voters (diskhb.core.quorum)
    nodes = [1, 2, 3]             # every node id of the cluster, this one included
    votes = { 3 = 2 }             # votes per node id [default 1 each]
    expected_votes = 4            # [default: the sum of votes]
    wait_for_all = false          # no first quorum until every node was seen [default false]
    initdead_ms = 0               # ... or until this long after start
    [watchdog]                    # optional: a Linux watchdog device the tick feeds (diskhb.watchdog)
    device = "/dev/watchdog"
    timeout_s = 10                # [default 10]; at least 4 beat intervals
    [hooks]                       # optional: notification hooks (diskhb.hooks; README "Notification hooks")
    dir = "/etc/diskhb/hooks.d"   # run every executable in it, in name order (like run-parts)
    commands = ["/usr/local/sbin/page-oncall"]  # and/or these (must be executable at start)
    timeout_ms = 10000            # per run; then SIGTERM, SIGKILL to its process group [default 10000]
    concurrency = 4               # runs at once [default 4]
    events = ["node-dead"]        # only these events [default: all]
    [scsi-pr]                     # optional: SCSI-3 persistent reservations on the shared LUNs
    luns = ["iscsi://192.0.2.5:3260/iqn.2024-01.org.example:lun0/1", "/dev/sg3"]
                                  # every LUN of the guarded storage (fence_scsi's `devices` rule)
    initiator = "iqn.2024-01.org.example:node1"  # iSCSI initiator name [default: derived from cluster and node]
    timeout_ms = 10000            # one fence: preempt and read back on every LUN [default 10000]
    command_timeout_ms = 3000     # one SCSI command [default 3000]
    audit_interval_ms = 5000      # read every LUN's keys this often [default 5000]
    [fence-agent]                 # optional: a Pacemaker-style fence agent, the last resort
    agent = "fence_ipmilan"       # in /usr/sbin, or an absolute path
    action = "off"                # off | reboot [default off]
    timeout_ms = 60000            # per run (off, then status) [default 60000]
    params = { ip = "192.0.2.9", username = "admin", password_script = "/etc/diskhb/pw" }
    plugs = { node2 = "2" }       # node name -> the agent's plug [default: the node name]
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from typing import Any

from diskhb.core.quorum import QuorumSpec
from diskhb.core.types import NODE_ID_MAX, NODE_NAME_BYTES_MAX
from diskhb.errors import OperatorError
from diskhb.hooks.events import EVENTS as HOOK_EVENTS
from diskhb.mmp.config import parse_resources
from diskhb.regions.disk.devices import parse_uuid_spec
from diskhb.runtime import OOM_SCORE_ADJ_DEFAULT, RT_PRIORITY_DEFAULT, SCHED_POLICIES
from netpath.transport import DEFAULT_PORT

REGIONS_MAX = 32  # o2hb's limit for global heartbeat regions
DEFAULT_METRICS_LISTEN = "127.0.0.1:9701"
DEFAULT_RUN_DIR = "/run/diskhb"
DEFAULT_BAUD = 115200
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    name: str
    id: int
    run_dir: str = DEFAULT_RUN_DIR
    mlock: bool = True  # lock the daemon in memory (Heartbeat's rule: paging must not delay a beat)
    sched: str = "rr"  # the loop thread's policy: "rr" | "fifo" | "off"
    rt_priority: int = RT_PRIORITY_DEFAULT
    oom_score_adj: int = OOM_SCORE_ADJ_DEFAULT
    fence: tuple[str, ...] = ()  # fencing methods in order (FENCE_METHODS); () with no fencing


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    name: str | None = None
    interval_ms: int | None = None
    dead_ms: int | None = None


@dataclass(frozen=True, slots=True)
class RegionConfig:
    type: str
    name: str  # unique label for logs and metrics
    path: str | None = None  # disk
    bind: str | None = None  # net: address or interface name
    peers: tuple[str, ...] = ()  # net unicast
    group: str | None = None  # net multicast
    broadcast: str | None = None  # net broadcast address
    port: int | None = None  # net
    key: str | None = None  # net, serial
    device: str | None = None  # serial
    baud: int = DEFAULT_BAUD  # serial


WATCHDOG_TIMEOUT_S_DEFAULT = 10  # SBD's advice is 5-15 s: long enough for a slow tick, short for takeover


@dataclass(frozen=True, slots=True)
class WatchdogConfig:
    device: str
    timeout_s: int = WATCHDOG_TIMEOUT_S_DEFAULT


HOOK_TIMEOUT_MS_DEFAULT = 10_000
HOOK_TIMEOUT_MS_RANGE = (100, 600_000)  # a hook is a notification: seconds, never a long job
HOOK_CONCURRENCY_DEFAULT = 4
HOOK_CONCURRENCY_MAX = 16
HOOK_COMMANDS_MAX = 32  # diskhb.hooks.runner.HOOKS_MAX bounds commands and dir entries together


@dataclass(frozen=True, slots=True)
class HooksConfig:
    dir: str | None = None
    commands: tuple[str, ...] = ()
    timeout_ms: int = HOOK_TIMEOUT_MS_DEFAULT
    concurrency: int = HOOK_CONCURRENCY_DEFAULT
    events: tuple[str, ...] | None = None  # None: every event


FENCE_METHODS = ("scsi-pr", "pill", "agent")
PR_TIMEOUT_MS_DEFAULT = 10_000
PR_COMMAND_TIMEOUT_MS_DEFAULT = 3_000
PR_AUDIT_INTERVAL_MS_DEFAULT = 5_000
AGENT_TIMEOUT_MS_DEFAULT = 60_000  # an IPMI off-then-status takes seconds; a hung BMC must not hold a fence forever
AGENT_PARAMS_MAX = 64


@dataclass(frozen=True, slots=True)
class ScsiPrConfig:
    luns: tuple[str, ...]
    initiator: str | None = None
    timeout_ms: int = PR_TIMEOUT_MS_DEFAULT
    command_timeout_ms: int = PR_COMMAND_TIMEOUT_MS_DEFAULT
    audit_interval_ms: int = PR_AUDIT_INTERVAL_MS_DEFAULT


@dataclass(frozen=True, slots=True)
class FenceAgentConfig:
    agent: str
    action: str = "off"
    timeout_ms: int = AGENT_TIMEOUT_MS_DEFAULT
    params: tuple[tuple[str, str], ...] = ()
    plugs: tuple[tuple[str, str], ...] = ()  # node name -> plug


@dataclass(frozen=True, slots=True)
class Config:
    path: str
    node: NodeConfig
    cluster: ClusterConfig
    metrics_listen: str
    log_level: str
    regions: tuple[RegionConfig, ...]
    resources: tuple[Any, ...] = field(default=())  # [[resource]] entries, parsed by diskhb.mmp
    quorum: QuorumSpec | None = None  # [quorum], validated (Q1-Q7); None: none (this node never claims quorum)
    watchdog: WatchdogConfig | None = None  # [watchdog]; None: none (the tick feeds nothing)
    hooks: HooksConfig | None = None  # [hooks]; None: no notification hooks
    scsi_pr: ScsiPrConfig | None = None  # [scsi-pr]; None: no persistent reservations
    fence_agent: FenceAgentConfig | None = None  # [fence-agent]

    @property
    def disk_regions(self) -> tuple[RegionConfig, ...]:
        return tuple(r for r in self.regions if r.type == "disk")


_SECTIONS = {"node", "cluster", "metrics", "log", "region", "resource", "quorum", "watchdog", "hooks", "scsi-pr",
             "fence-agent"}
_SCSI_PR_KEYS = {"luns", "initiator", "timeout_ms", "command_timeout_ms", "audit_interval_ms"}
_AGENT_KEYS = {"agent", "action", "timeout_ms", "params", "plugs"}
_HOOKS_KEYS = {"dir", "commands", "timeout_ms", "concurrency", "events"}
_WATCHDOG_KEYS = {"device", "timeout_s"}
_QUORUM_KEYS = {"nodes", "votes", "expected_votes", "wait_for_all", "initdead_ms", "two_node", "weight"}
_NODE_KEYS = {"name", "id", "run_dir", "mlock", "sched", "rt_priority", "oom_score_adj", "fence"}
_CLUSTER_KEYS = {"name", "interval_ms", "dead_ms"}
_METRICS_KEYS = {"listen"}
_LOG_KEYS = {"level"}
_REGION_KEYS = {
    "disk": {"type", "name", "path"},
    "net": {"type", "name", "bind", "peers", "group", "broadcast", "port", "key"},
    "serial": {"type", "name", "device", "baud", "key"},
}


class _Where:
    """Builds the one-line error: `FILE: key 'region[2].path': problem; fix`."""

    def __init__(self, path: str):
        self.path = path

    def fail(self, key: str, problem: str, fix: str = "") -> OperatorError:
        msg = f"{self.path}: '{key}': {problem}"
        return OperatorError(f"{msg}; {fix}" if fix else msg)

    def unknown_keys(self, table: dict, allowed: set[str], prefix: str) -> None:
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed), n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(sorted(allowed))}"
                raise self.fail(f"{prefix}{key}", "unknown key", hint)


def _get(where: _Where, table: dict, key: str, typ: type, prefix: str, *, required=False,
         default=None):
    if key not in table:
        if required:
            raise where.fail(f"{prefix}{key}", "missing", f"add {prefix}{key} = ...")
        return default
    value = table[key]
    ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
    if not ok:
        raise where.fail(f"{prefix}{key}", f"must be {typ.__name__}, got {value!r}")
    return value


def _one_of(where: _Where, key: str, value, allowed, what: str) -> None:
    """`value` must be one of `allowed`: else one line, with the nearest name when there is one."""
    if value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1)
        raise where.fail(key, f"unknown {what} {value!r}",
                         f"did you mean {close[0]!r}?" if close else f"use {', '.join(allowed)}")


def load_config(path: str) -> Config:
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise OperatorError(f"{path}: config file not found; pass --config with an existing file") from None
    except PermissionError:
        raise OperatorError(f"{path}: permission denied reading the config; run as root or fix its mode") from None
    except IsADirectoryError:
        raise OperatorError(f"{path}: is a directory, expected a TOML file") from None
    except tomllib.TOMLDecodeError as e:
        raise OperatorError(f"{path}: not valid TOML: {e}") from None
    return parse_config(raw, path)


def parse_config(raw: dict, path: str = "<config>") -> Config:
    where = _Where(path)
    where.unknown_keys(raw, _SECTIONS, "")

    node_t = raw.get("node")
    if not isinstance(node_t, dict):
        raise where.fail("node", "missing [node] table", "add [node] with name and id")
    where.unknown_keys(node_t, _NODE_KEYS, "node.")
    name = _get(where, node_t, "name", str, "node.", required=True)
    if not name or len(name.encode()) > NODE_NAME_BYTES_MAX or "\x00" in name:
        raise where.fail("node.name", f"must be 1..{NODE_NAME_BYTES_MAX} bytes")
    node_id = _get(where, node_t, "id", int, "node.", required=True)
    if not 1 <= node_id <= NODE_ID_MAX:
        raise where.fail("node.id", f"{node_id} out of range", f"use 1..{NODE_ID_MAX} (and <= the region's slot count)")
    run_dir = _get(where, node_t, "run_dir", str, "node.", default=DEFAULT_RUN_DIR)
    mlock = _get(where, node_t, "mlock", bool, "node.", default=True)
    sched = _get(where, node_t, "sched", str, "node.", default="rr")
    if sched not in SCHED_POLICIES:
        raise where.fail("node.sched", f"unknown policy {sched!r}", f"use one of {', '.join(SCHED_POLICIES)}")
    rt_priority = _get(where, node_t, "rt_priority", int, "node.", default=RT_PRIORITY_DEFAULT)
    if not 1 <= rt_priority <= 99:
        raise where.fail("node.rt_priority", f"{rt_priority} out of range", "use 1..99")
    oom = _get(where, node_t, "oom_score_adj", int, "node.", default=OOM_SCORE_ADJ_DEFAULT)
    if not -1000 <= oom <= 1000:
        raise where.fail("node.oom_score_adj", f"{oom} out of range", "use -1000..1000")
    fence = _get(where, node_t, "fence", list, "node.")
    node = NodeConfig(name=name, id=node_id, run_dir=run_dir, mlock=mlock, sched=sched, rt_priority=rt_priority,
                      oom_score_adj=oom)

    cluster_t = raw.get("cluster", {})
    if not isinstance(cluster_t, dict):
        raise where.fail("cluster", "must be a table")
    where.unknown_keys(cluster_t, _CLUSTER_KEYS, "cluster.")
    cluster = ClusterConfig(
        name=_get(where, cluster_t, "name", str, "cluster."),
        interval_ms=_get(where, cluster_t, "interval_ms", int, "cluster."),
        dead_ms=_get(where, cluster_t, "dead_ms", int, "cluster."),
    )

    metrics_t = raw.get("metrics", {})
    if not isinstance(metrics_t, dict):
        raise where.fail("metrics", "must be a table")
    where.unknown_keys(metrics_t, _METRICS_KEYS, "metrics.")
    listen = _get(where, metrics_t, "listen", str, "metrics.", default=DEFAULT_METRICS_LISTEN)
    if listen:
        parse_listen(listen, where)

    log_t = raw.get("log", {})
    if not isinstance(log_t, dict):
        raise where.fail("log", "must be a table")
    where.unknown_keys(log_t, _LOG_KEYS, "log.")
    level = _get(where, log_t, "level", str, "log.", default="info")
    if level not in LOG_LEVELS:
        raise where.fail("log.level", f"unknown level {level!r}", f"use one of {', '.join(LOG_LEVELS)}")

    regions_t = raw.get("region")
    if not isinstance(regions_t, list) or not regions_t:
        raise where.fail("region", "no [[region]] configured", 'add [[region]] with type = "disk" and path = ...')
    if len(regions_t) > REGIONS_MAX:
        raise where.fail("region", f"{len(regions_t)} regions configured", f"at most {REGIONS_MAX}")
    regions = []
    for i, table in enumerate(regions_t, 1):
        regions.append(_parse_region(where, table, i))
    names = [r.name for r in regions]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise where.fail("region", f"duplicate region name(s) {sorted(dup)}", "give each region a unique name or path")

    resources_t = raw.get("resource", [])
    if not isinstance(resources_t, list):
        raise where.fail("resource", "must be [[resource]] tables")
    resources = tuple(parse_resources(resources_t, where))  # the MMP guard validates its own tables
    quorum = _parse_quorum(where, raw["quorum"], node_id) if "quorum" in raw else None
    watchdog = _parse_watchdog(where, raw["watchdog"]) if "watchdog" in raw else None
    hooks = _parse_hooks(where, raw["hooks"]) if "hooks" in raw else None
    scsi_pr = _parse_scsi_pr(where, raw["scsi-pr"]) if "scsi-pr" in raw else None
    agent = _parse_fence_agent(where, raw["fence-agent"]) if "fence-agent" in raw else None
    node = NodeConfig(**{**{f: getattr(node, f) for f in NodeConfig.__slots__},
                         "fence": _fence_order(where, fence, regions, quorum, scsi_pr, agent)})
    return Config(path=path, node=node, cluster=cluster, metrics_listen=listen, log_level=level,
                  regions=tuple(regions), resources=resources, quorum=quorum, watchdog=watchdog, hooks=hooks,
                  scsi_pr=scsi_pr, fence_agent=agent)


def _fence_order(where: _Where, fence: list | None, regions: list[RegionConfig], quorum, scsi_pr, agent
                 ) -> tuple[str, ...]:
    """[node] fence: the methods in order (diskhb.fencing.runner FR1), each with what it needs."""
    disks = any(r.type == "disk" for r in regions)
    if fence is None:  # the default: the pill, which needs nothing more than the regions
        return ("pill",) if disks and quorum is not None else ()
    if not fence:
        raise where.fail("node.fence", "is empty", "list methods, e.g. fence = [\"pill\"], or remove the key")
    for f in fence:
        _one_of(where, "node.fence", f, FENCE_METHODS, "method")
    if len(set(fence)) != len(fence):
        raise where.fail("node.fence", f"lists a method twice: {fence}")
    if quorum is None:
        raise where.fail("node.fence", "fencing needs a [quorum] (only a quorate partition fences)",
                         "add [quorum], or remove node.fence")
    needs = {"scsi-pr": (scsi_pr, "[scsi-pr] with luns"), "agent": (agent, "[fence-agent] with agent"),
             "pill": (disks or None, "a disk region (the pill is written into the victim's mailbox there)")}
    for f in fence:
        have, what = needs[f]
        if have is None:
            raise where.fail("node.fence", f"method {f!r} needs {what}", f"add it, or remove {f!r} from node.fence")
    return tuple(fence)


def _parse_scsi_pr(where: _Where, table: Any) -> ScsiPrConfig:
    """[scsi-pr]: the LUNs' form is checked here (diskhb.fencing.scsi_pr.parse_lun); whether they
    answer is the daemon's business at start (one line per LUN, never a refusal to start)."""
    from diskhb.fencing.scsi_pr import LUNS_MAX, ScsiPrConfigError, parse_spec

    if not isinstance(table, dict):
        raise where.fail("scsi-pr", "must be a table")
    where.unknown_keys(table, _SCSI_PR_KEYS, "scsi-pr.")
    luns = _get(where, table, "luns", list, "scsi-pr.", required=True)
    if not luns:
        raise where.fail("scsi-pr.luns", "is empty", "list every LUN of the guarded storage")
    if len(luns) > LUNS_MAX:
        raise where.fail("scsi-pr.luns", f"{len(luns)} LUNs", f"at most {LUNS_MAX}")
    for lun in luns:
        if not isinstance(lun, str):
            raise where.fail("scsi-pr.luns", f"{lun!r} is not a string")
        try:
            parse_spec(lun)
        except ScsiPrConfigError as e:
            raise where.fail("scsi-pr.luns", str(e)) from None
    if len(set(luns)) != len(luns):
        raise where.fail("scsi-pr.luns", "lists a LUN twice")
    initiator = _get(where, table, "initiator", str, "scsi-pr.")
    timeout_ms = _get(where, table, "timeout_ms", int, "scsi-pr.", default=PR_TIMEOUT_MS_DEFAULT)
    command_ms = _get(where, table, "command_timeout_ms", int, "scsi-pr.", default=PR_COMMAND_TIMEOUT_MS_DEFAULT)
    audit_ms = _get(where, table, "audit_interval_ms", int, "scsi-pr.", default=PR_AUDIT_INTERVAL_MS_DEFAULT)
    if not 100 <= command_ms <= 60_000:
        raise where.fail("scsi-pr.command_timeout_ms", f"{command_ms} is not in 100..60000")
    if not command_ms <= timeout_ms <= 120_000:
        raise where.fail("scsi-pr.timeout_ms", f"{timeout_ms} is not in command_timeout_ms ({command_ms})..120000")
    if not 500 <= audit_ms <= 3_600_000:
        raise where.fail("scsi-pr.audit_interval_ms", f"{audit_ms} is not in 500..3600000")
    return ScsiPrConfig(tuple(luns), initiator, timeout_ms, command_ms, audit_ms)


def _parse_fence_agent(where: _Where, table: Any) -> FenceAgentConfig:
    """[fence-agent]: form only; the agent's presence is checked at start (diskhb.fencing.agent)."""
    if not isinstance(table, dict):
        raise where.fail("fence-agent", "must be a table")
    where.unknown_keys(table, _AGENT_KEYS, "fence-agent.")
    agent = _get(where, table, "agent", str, "fence-agent.", required=True)
    if not agent or "\n" in agent:
        raise where.fail("fence-agent.agent", f"{agent!r} is not an agent name or path", 'e.g. agent = "fence_ipmilan"')
    action = _get(where, table, "action", str, "fence-agent.", default="off")
    if action not in ("off", "reboot"):
        raise where.fail("fence-agent.action", f"{action!r}", "use off or reboot")
    timeout_ms = _get(where, table, "timeout_ms", int, "fence-agent.", default=AGENT_TIMEOUT_MS_DEFAULT)
    if not 1_000 <= timeout_ms <= 600_000:
        raise where.fail("fence-agent.timeout_ms", f"{timeout_ms} is not in 1000..600000")
    pairs = {}
    for key in ("params", "plugs"):
        t = _get(where, table, key, dict, "fence-agent.", default={})
        if len(t) > AGENT_PARAMS_MAX:
            raise where.fail(f"fence-agent.{key}", f"{len(t)} entries", f"at most {AGENT_PARAMS_MAX}")
        for k, v in t.items():
            if isinstance(v, bool) or not isinstance(v, (str, int)):
                raise where.fail(f"fence-agent.{key}.{k}", f"must be a string, got {v!r}")
            if "\n" in str(v) or "\n" in k:
                raise where.fail(f"fence-agent.{key}.{k}", "contains a newline (it would add a line to the agent's"
                                 " stdin)")
        pairs[key] = tuple((str(k), str(v)) for k, v in t.items())
    return FenceAgentConfig(agent, action, timeout_ms, pairs["params"], pairs["plugs"])


def _parse_hooks(where: _Where, table: Any) -> HooksConfig:
    """[hooks]: types, ranges and event names here; whether the files exist and may be run is
    checked when the daemon starts (diskhb.hooks.runner.find_hooks), where it matters."""
    if not isinstance(table, dict):
        raise where.fail("hooks", "must be a table")
    where.unknown_keys(table, _HOOKS_KEYS, "hooks.")
    hdir = _get(where, table, "dir", str, "hooks.")
    if hdir is not None and not os.path.isabs(hdir):
        raise where.fail("hooks.dir", f"{hdir!r} is not an absolute path", 'e.g. dir = "/etc/diskhb/hooks.d"')
    commands = _get(where, table, "commands", list, "hooks.", default=[])
    for c in commands:
        if not isinstance(c, str) or not os.path.isabs(c):
            raise where.fail("hooks.commands", f"{c!r} is not an absolute path to an executable",
                             "no arguments, no shell: wrap them in a script")
    if len(set(commands)) != len(commands):
        raise where.fail("hooks.commands", f"listed twice: {sorted({c for c in commands if commands.count(c) > 1})}")
    if len(commands) > HOOK_COMMANDS_MAX:
        raise where.fail("hooks.commands", f"{len(commands)} commands", f"at most {HOOK_COMMANDS_MAX}")
    if hdir is None and not commands:
        raise where.fail("hooks", "runs nothing", "set dir and/or commands, or remove [hooks]")
    timeout_ms = _get(where, table, "timeout_ms", int, "hooks.", default=HOOK_TIMEOUT_MS_DEFAULT)
    lo, hi = HOOK_TIMEOUT_MS_RANGE
    if not lo <= timeout_ms <= hi:
        raise where.fail("hooks.timeout_ms", f"{timeout_ms} is not in {lo}..{hi}")
    concurrency = _get(where, table, "concurrency", int, "hooks.", default=HOOK_CONCURRENCY_DEFAULT)
    if not 1 <= concurrency <= HOOK_CONCURRENCY_MAX:
        raise where.fail("hooks.concurrency", f"{concurrency} is not in 1..{HOOK_CONCURRENCY_MAX}")
    events = _get(where, table, "events", list, "hooks.")
    if events is not None:
        if not events:
            raise where.fail("hooks.events", "is empty: no hook would ever run", "list events, or remove the key")
        for e in events:
            _one_of(where, "hooks.events", e, HOOK_EVENTS, "event")
        events = tuple(dict.fromkeys(events))
    return HooksConfig(dir=os.path.normpath(hdir) if hdir else None, commands=tuple(commands),
                       timeout_ms=timeout_ms, concurrency=concurrency, events=events)


def _parse_watchdog(where: _Where, table: Any) -> WatchdogConfig:
    """[watchdog] device, timeout_s (checked against the beat interval when the daemon starts)."""
    if not isinstance(table, dict):
        raise where.fail("watchdog", "must be a table")
    where.unknown_keys(table, _WATCHDOG_KEYS, "watchdog.")
    device = _get(where, table, "device", str, "watchdog.", required=True)
    if not device:
        raise where.fail("watchdog.device", "is empty", 'e.g. device = "/dev/watchdog"')
    timeout_s = _get(where, table, "timeout_s", int, "watchdog.", default=WATCHDOG_TIMEOUT_S_DEFAULT)
    if not 1 <= timeout_s <= 3600:
        raise where.fail("watchdog.timeout_s", f"{timeout_s} is not in 1..3600")
    return WatchdogConfig(device, timeout_s)


def _parse_quorum(where: _Where, table: Any, node_id: int) -> QuorumSpec:
    """[quorum] nodes = [1, 2, 3], votes = { 3 = 2 } (default 1 each), expected_votes,
    wait_for_all, initdead_ms, two_node, weight = { 1 = 10 } (the two-node tie-break race);
    checked by the quorum rules' own validation (one line)."""
    if not isinstance(table, dict):
        raise where.fail("quorum", "must be a table")
    where.unknown_keys(table, _QUORUM_KEYS, "quorum.")
    nodes = _get(where, table, "nodes", list, "quorum.", required=True)
    if not nodes or not all(isinstance(n, int) and not isinstance(n, bool) for n in nodes):
        raise where.fail("quorum.nodes", "must list the node ids of the cluster", "e.g. nodes = [1, 2, 3]")
    if len(set(nodes)) != len(nodes):
        raise where.fail("quorum.nodes", f"node ids listed twice: {sorted({n for n in nodes if nodes.count(n) > 1})}")
    votes_t = _get(where, table, "votes", dict, "quorum.", default={})
    votes = {n: 1 for n in nodes}
    for key, v in votes_t.items():
        if not key.isdigit() or int(key) not in votes:
            raise where.fail(f"quorum.votes.{key}", "is not a node id listed in quorum.nodes")
        if not isinstance(v, int) or isinstance(v, bool):
            raise where.fail(f"quorum.votes.{key}", f"must be an integer, got {v!r}")
        votes[int(key)] = v
    expected = _get(where, table, "expected_votes", int, "quorum.")
    wait_for_all = _get(where, table, "wait_for_all", bool, "quorum.", default=False)
    initdead_ms = _get(where, table, "initdead_ms", int, "quorum.", default=0)
    two_node = _get(where, table, "two_node", bool, "quorum.", default=False)
    weights = {}
    for key, w in _get(where, table, "weight", dict, "quorum.", default={}).items():
        if not key.isdigit() or int(key) not in votes:
            raise where.fail(f"quorum.weight.{key}", "is not a node id listed in quorum.nodes")
        if not isinstance(w, int) or isinstance(w, bool):
            raise where.fail(f"quorum.weight.{key}", f"must be an integer, got {w!r}")
        weights[int(key)] = w
    if weights and not two_node:
        raise where.fail("quorum.weight", "only decides the two-node tie-break race", "set two_node = true")
    spec = QuorumSpec(node_id, votes, expected, two_node=two_node, wait_for_all=wait_for_all,
                      initdead_ms=initdead_ms, weights=weights)
    try:
        spec.validate()
    except ValueError as e:
        raise where.fail("quorum", str(e).removeprefix("[quorum] ")) from None
    return spec


def _parse_region(where: _Where, table: Any, i: int) -> RegionConfig:
    prefix = f"region[{i}]."
    if not isinstance(table, dict):
        raise where.fail(f"region[{i}]", "must be a table")
    rtype = _get(where, table, "type", str, prefix, required=True)
    if rtype not in _REGION_KEYS:
        raise where.fail(f"{prefix}type", f"unknown region type {rtype!r}", 'use "disk", "net" or "serial"')
    where.unknown_keys(table, _REGION_KEYS[rtype], prefix)
    label = _get(where, table, "name", str, prefix)
    if rtype == "disk":
        p = _get(where, table, "path", str, prefix, required=True)
        if p[:5].lower() == "uuid=":
            raise where.fail(f"{prefix}path", f"{p!r}: fstab's UUID= is not a path here", f'write "uuid:{p[5:]}"')
        try:
            u = parse_uuid_spec(p)
        except ValueError as e:
            raise where.fail(f"{prefix}path", str(e), "use uuid:<the uuid 'diskhb format' printed> ('diskhb scan'"
                             " lists the regions of this node's devices)") from None
        if u is not None:  # resolved to a device when the daemon starts (diskhb.regions.disk.devices)
            return RegionConfig(type="disk", name=label or f"disk:uuid:{u}", path=f"uuid:{u}")
        return RegionConfig(type="disk", name=label or f"disk:{p}", path=os.path.normpath(p) if p else p)
    key = _get(where, table, "key", str, prefix, required=True)
    if rtype == "net":
        bind = _get(where, table, "bind", str, prefix)
        peers = _get(where, table, "peers", list, prefix, default=[])
        for p in peers:
            if not isinstance(p, str):
                raise where.fail(f"{prefix}peers", f"entries must be strings, got {p!r}")
        group = _get(where, table, "group", str, prefix)
        bcast = _get(where, table, "broadcast", str, prefix)
        port = _get(where, table, "port", int, prefix, default=DEFAULT_PORT)
        if not 1 <= port <= 65535:
            raise where.fail(f"{prefix}port", f"{port} out of range", "use 1..65535")
        modes = sum(1 for m in (peers, group, bcast) if m)
        if modes != 1:
            raise where.fail(prefix.rstrip("."), "needs exactly one of peers, group, broadcast")
        if group is not None:
            try:
                if not ipaddress.ip_address(group).is_multicast:
                    raise ValueError
            except ValueError:
                raise where.fail(f"{prefix}group", f"{group!r} is not a multicast address") from None
        where_label = bind or group or bcast or ",".join(peers)
        return RegionConfig(type="net", name=label or f"net:{where_label}", bind=bind,
                            peers=tuple(peers), group=group, broadcast=bcast, port=port, key=key)
    device = _get(where, table, "device", str, prefix, required=True)
    baud = _get(where, table, "baud", int, prefix, default=DEFAULT_BAUD)
    if baud not in (9600, 19200, 38400, 57600, 115200, 230400):
        raise where.fail(f"{prefix}baud", f"unsupported baud {baud}", "use 19200, 38400, 57600 or 115200")
    return RegionConfig(type="serial", name=label or f"serial:{device}", device=device, baud=baud, key=key)


def parse_listen(listen: str, where: _Where | None = None) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port)."""
    host, sep, port_s = listen.rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port_s)
        if not sep or not host or not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        msg = f"listen address {listen!r} is not host:port"
        if where:
            raise where.fail("metrics.listen", msg, 'e.g. "127.0.0.1:9701"') from None
        raise OperatorError(msg) from None
    return host, port
