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

With --iscsi URL (the LUN resource of `python -m tools.cts --scsi-pr`) each write is a SCSI WRITE
(10) of one block to that LUN instead, through a libiscsi session of its own (--initiator), and:
  C1 JOIN: once its daemon holds the resource and says it registered its current incarnation's
     key (status scsi_pr: registered, not fenced, own_key = pr_key.key_for(cluster, node,
     generation)), the consumer's nexus joins that registration, as a host's second path does:
     READ KEYS (the key listed), REGISTER AND IGNORE EXISTING KEY with it, READ KEYS again. Only
     a PR generation moved by exactly one (ours) proves no PREEMPT came in between (a fence
     undone by our registration); anything else: the registration is withdrawn (REGISTER to 0)
     and the join tried again, at most JOIN_TRIES times.
  C2 NEVER AGAIN: a join that failed, or a WRITE refused or unanswered, leaves a mark in the
     mountpoint (.pr-failed-GENERATION): no consumer of that generation registers again (a
     re-registration could undo a fence). It still tries its writes, which the LUN refuses.
  C3 LANDED ONLY: the audit line is appended only after the WRITE returned GOOD, with a sixth
     field, when GOOD came back; its fifth (MONOTONIC_NS) is read right before the WRITE was sent,
     so a line's write landed between the two:
         RESOURCE NODE GENERATION EPOCH ISSUED_NS DONE_NS
     A WRITE answered RESERVATION CONFLICT goes to --refused instead, as REFUSED, another error
     as FAILED, no answer (it may land yet, or not) as UNKNOWN:
         RESOURCE NODE GENERATION EPOCH ISSUED_NS OUTCOME one line
     The block written holds the audit line's first five fields and a newline, at the LBA of the
     time it was sent (checks.lun_lba: every holder overwrites every block within 400 ms, so a
     late landing shows at the end: checks.py LUN-LAST-WRITE).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from diskhb.control import ControlError, request
from diskhb.core.types import parse_hex_id
from tools.cts.checks import BLOCK, lun_lba

WRITE_MS = 50
ACQUIRE_WAIT_MS = 8000
RETRY_S = 0.2
PR_TIMEOUT_MS = 3000  # C1's commands
WRITE_TIMEOUT_MS = 10_000  # longer than a cable cut of a schedule and TCP's backoff: a cut delays the session
JOIN_TRIES = 10


def holding(sock: str, resource: str) -> tuple[int, int] | None:
    """(generation, epoch) if the daemon says it holds `resource` now, else None."""
    st = request(sock, "status", 5)
    for m in st.get("mmp") or []:
        if m["resource"] == resource and m["state"] == "held":
            return parse_hex_id(st["node"]["generation"]), m["epoch"]
    return None


def registered_key(sock: str, cluster: str, node: int, generation: int) -> int | None:
    """C1: the key of the node's incarnation `generation`, once its daemon says it registered it and
    was not found fenced; else None."""
    from diskhb.fencing import pr_key

    st = request(sock, "status", 5)
    p = st.get("scsi_pr") or {}
    key = pr_key.key_for(cluster, node, generation)
    if parse_hex_id(st["node"]["generation"]) != generation or not p.get("registered") or p.get("fenced") \
            or int(p.get("own_key") or "0", 16) != key:
        return None
    return key


def join(t, key: int) -> str:
    """C1: our nexus registered with `key`, proven not to undo a preempt: "" or why not (one line)."""
    from diskhb.fencing.scsi import pr
    from diskhb.fencing.scsi.pr_in import generation_advanced

    why = ""
    for _ in range(JOIN_TRIES):
        before = pr.read_keys(t, PR_TIMEOUT_MS)
        if key not in before.keys:
            return f"key {key:#018x} is not registered on the LUN (fenced?)"
        pr.register_and_ignore(t, key, PR_TIMEOUT_MS)
        after = pr.read_keys(t, PR_TIMEOUT_MS)
        moved = generation_advanced(before.generation, after.generation)
        if moved == 1 and key in after.keys:
            return ""
        why = f"the PR generation moved by {moved} around our REGISTER"
        pr.register(t, key, 0, PR_TIMEOUT_MS)  # withdrawn; refused (conflict) if a preempt took it already
        time.sleep(RETRY_S)
    return f"no clean join in {JOIN_TRIES} tries: {why}"


def write_iscsi(a, fd: int, generation: int, epoch: int, key: int) -> None:
    """C1-C3, until killed."""
    from diskhb.fencing.scsi import pr
    from diskhb.fencing.scsi.iscsi import IscsiTransport
    from diskhb.fencing.scsi.transport import TransportError

    mark = f".pr-failed-{generation:x}"  # C2: in the mountpoint (our working directory)
    refused = os.open(a.refused, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    head = f"{a.resource} {a.node} {generation:#x} {epoch}"
    t = IscsiTransport(a.iscsi, a.initiator)

    def fail(issued: int, outcome: str, why: str) -> None:
        os.write(refused, f"{head} {issued} {outcome} {why}\n".encode())
        if not os.path.exists(mark):
            open(mark, "w").close()

    if not os.path.exists(mark):
        try:
            why = join(t, key)
        except (pr.PrError, TransportError) as e:
            why = str(e)
        if why:
            fail(time.monotonic_ns(), "JOIN", why.replace("\n", " "))
    while True:  # until killed
        issued = time.monotonic_ns()
        line = f"{head} {issued}"
        try:
            pr.write_blocks(t, lun_lba(issued), (line + "\n").encode().ljust(BLOCK, b"\0"), WRITE_TIMEOUT_MS)
        except pr.PrConflict as e:
            fail(issued, "REFUSED", str(e))
        except pr.PrError as e:
            fail(issued, "FAILED", str(e))
        except TransportError as e:
            fail(issued, "UNKNOWN", str(e))
        else:
            os.write(fd, f"{line} {time.monotonic_ns()}\n".encode())  # C3: landed
        time.sleep(WRITE_MS / 1000)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--resource", required=True)
    ap.add_argument("--node", type=int, required=True)
    ap.add_argument("--audit", required=True)
    ap.add_argument("--iscsi", default=None, help="write through iSCSI to this LUN (C1-C3)")
    ap.add_argument("--initiator", default=None)
    ap.add_argument("--cluster", default=None)
    ap.add_argument("--refused", default=None)
    a = ap.parse_args()
    if a.iscsi and not (a.initiator and a.cluster and a.refused):
        ap.error("--iscsi needs --initiator, --cluster and --refused")
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
        if a.iscsi:
            try:
                key = registered_key(a.socket, a.cluster, a.node, generation)
            except ControlError:
                key = None
            if key is None:  # not yet registered (PK1): ask again
                time.sleep(RETRY_S)
                continue
            write_iscsi(a, fd, generation, epoch, key)
        while True:  # until killed
            os.write(fd, f"{a.resource} {a.node} {generation:#x} {epoch} {time.monotonic_ns()}\n".encode())
            time.sleep(WRITE_MS / 1000)


if __name__ == "__main__":
    sys.exit(main())
