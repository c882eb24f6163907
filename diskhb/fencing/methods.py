"""The configured fencing methods, built once at start in `[node] fence` order (diskhb.fencing.runner).

Each method's time bound is derived here, in one place: the pill writes one sector and reads it
back on every disk region, each bounded by the mailbox's IO_TIMEOUT_MS; scsi-pr and the agent
have their own configured timeout_ms.
"""

from __future__ import annotations

import re

from diskhb.config import Config
from diskhb.errors import OperatorError
from diskhb.fencing.method import Method
from diskhb.mailbox import IO_TIMEOUT_MS as PILL_IO_TIMEOUT_MS
from diskhb.pill import PillMethod

PILL_SLACK_MS = 1_000  # opening the region, reading its superblock
INITIATOR_PREFIX = "iqn.2024-01.org.diskhb"


def build_methods(cfg: Config, disks: list[tuple[str, str]], pr_method) -> list[tuple[Method, int]]:
    """(method, timeout_ms) per entry of cfg.node.fence; pr_method: this node's ScsiPrMethod
    (shared with the registration keeper: a fence must go out through our registered nexus).
    Raises OperatorError (one line) for a method that cannot run here at all."""
    out: list[tuple[Method, int]] = []
    for name in cfg.node.fence:
        if name == "pill":
            out.append((PillMethod(disks, cfg.node.id), 2 * PILL_IO_TIMEOUT_MS * max(1, len(disks)) + PILL_SLACK_MS))
        elif name == "scsi-pr":
            out.append((pr_method, cfg.scsi_pr.timeout_ms))
        elif name == "agent":
            out.append((agent_method(cfg), agent_timeout_ms(cfg)))
        else:
            raise AssertionError(f"unknown fencing method {name!r} (config validates them)")
    return out


def default_initiator(cluster: str, node_name: str) -> str:
    """An iSCSI initiator name for this node when [scsi-pr] initiator is not given (RFC 3720:
    lowercase, [a-z0-9.:-]); stable across restarts, so target ACLs can name it."""
    clean = lambda s: re.sub(r"[^a-z0-9.-]+", "-", s.lower()).strip("-") or "x"  # noqa: E731
    return f"{INITIATOR_PREFIX}:{clean(cluster)}:{clean(node_name)}"


def scsi_pr_method(cfg: Config, cluster: str, generation: int):
    """[scsi-pr] -> this incarnation's ScsiPrMethod (its key carries the generation: pr_key K4)."""
    from diskhb.fencing.scsi_pr import ScsiPrConfigError, ScsiPrMethod

    pc = cfg.scsi_pr
    nodes = cfg.quorum.votes if cfg.quorum is not None else (cfg.node.id,)
    try:
        return ScsiPrMethod(cluster, cfg.node.id, generation, tuple(nodes), list(pc.luns),
                            initiator_name=pc.initiator or default_initiator(cluster, cfg.node.name),
                            timeout_ms=pc.command_timeout_ms)
    except (ScsiPrConfigError, ValueError) as e:
        raise OperatorError(f"{cfg.path}: [scsi-pr]: {e}") from None


def agent_method(cfg: Config):
    """[fence-agent] -> an AgentMethod whose agent was found runnable now (one line if not)."""
    from diskhb.fencing.agent import AgentMethod

    ac = cfg.fence_agent
    method = AgentMethod(ac.agent, dict(ac.params), dict(ac.plugs), ac.timeout_ms, ac.action,
                         where=f"{cfg.path}: [fence-agent]")
    method.validate()
    return method


def agent_timeout_ms(cfg: Config) -> int:
    """off then status (agent A4), and on after them for a reboot (A5): each run bounded by timeout_ms."""
    return (3 if cfg.fence_agent.action == "reboot" else 2) * cfg.fence_agent.timeout_ms
