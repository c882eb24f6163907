"""The configured fencing methods, built once at start in `[node] fence` order (diskhb.fencing.runner).

Each method's time bound is derived here, in one place: the pill writes one sector and reads it
back on every disk region, each bounded by the mailbox's IO_TIMEOUT_MS; scsi-pr and the agent
have their own configured timeout_ms.
"""

from __future__ import annotations

from diskhb.config import Config
from diskhb.fencing.method import Method
from diskhb.mailbox import IO_TIMEOUT_MS as PILL_IO_TIMEOUT_MS
from diskhb.pill import PillMethod

PILL_SLACK_MS = 1_000  # opening the region, reading its superblock


def build_methods(cfg: Config, timing, generation: int, disks: list[tuple[str, str]]) -> list[tuple[Method, int]]:
    """(method, timeout_ms) per entry of cfg.node.fence. Raises OperatorError (one line) for a
    method that cannot run here at all (an agent that is not there)."""
    out: list[tuple[Method, int]] = []
    for name in cfg.node.fence:
        if name == "pill":
            out.append((PillMethod(disks, cfg.node.id), 2 * PILL_IO_TIMEOUT_MS * max(1, len(disks)) + PILL_SLACK_MS))
        elif name == "scsi-pr":
            out.append((scsi_pr_method(cfg, timing.cluster, generation), cfg.scsi_pr.timeout_ms))
        elif name == "agent":
            out.append((agent_method(cfg), 2 * cfg.fence_agent.timeout_ms))  # off, then status
        else:
            raise AssertionError(f"unknown fencing method {name!r} (config validates them)")
    return out


def scsi_pr_method(cfg: Config, cluster: str, generation: int):
    raise NotImplementedError


def agent_method(cfg: Config):
    raise NotImplementedError
