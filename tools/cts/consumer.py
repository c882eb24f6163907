"""A consumer of one guarded resource, run inside a test node (python -m tools.cts.consumer).

It asks its node's daemon for the resource (waiting), learns the epoch and the daemon's
generation from the daemon's status, then writes one audit line every WRITE_MS until it is
killed: it never stops by itself, so every write after a loss is the daemon's failure to stop
it (the loss action, the lease enforcer, self-fencing, the watchdog), which is the point.

Its working directory is the resource's mountpoint (a tmpfs of the node's own mount namespace),
which is how the daemon's loss action and lease enforcer find it (processes using the mount).

An audit line, appended with O_APPEND to the one audit file all nodes share (so the file's order
is the order in which the writes landed):
    RESOURCE NODE GENERATION EPOCH MONOTONIC_NS
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from diskhb.control import ControlError, request
from diskhb.core.types import parse_hex_id

WRITE_MS = 50
ACQUIRE_WAIT_MS = 8000
RETRY_S = 0.2


def holding(sock: str, resource: str) -> tuple[int, int] | None:
    """(generation, epoch) if the daemon says it holds `resource` now, else None."""
    st = request(sock, "status", 5)
    for m in st.get("mmp") or []:
        if m["resource"] == resource and m["state"] == "held":
            return parse_hex_id(st["node"]["generation"]), m["epoch"]
    return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--resource", required=True)
    ap.add_argument("--node", type=int, required=True)
    ap.add_argument("--audit", required=True)
    a = ap.parse_args()
    fd = os.open(a.audit, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    while True:
        try:
            answer = request(a.socket, f"mmp-acquire {a.resource} {ACQUIRE_WAIT_MS} 1", ACQUIRE_WAIT_MS / 1000 + 30)
            held = holding(a.socket, a.resource) if answer.get("ok") else None
        except ControlError:
            held = None
        if held is None:
            time.sleep(RETRY_S)
            continue
        generation, epoch = held
        while True:  # until killed
            os.write(fd, f"{a.resource} {a.node} {generation:#x} {epoch} {time.monotonic_ns()}\n".encode())
            time.sleep(WRITE_MS / 1000)


if __name__ == "__main__":
    sys.exit(main())
