"""The disk pill, one of the daemon's fencing methods (diskhb.fencing.method): a fence message in
the victim's mailbox on every disk region; and setting guarded block devices read-only (BLKROSET)
when this node fences itself.

Rules of this file:
- The sender never waits for the victim (SBD's `message` blocks 10 s): an order's outcome is the
  write's, reported `pending` (fencing FD9) when at least one region took the pill; the victim's
  own SELF_FENCED, READ_ONLY beat is what verifies it (FD8). No region took it: failed, with
  each region's one-line reason.
- The pill is meant for the victim's incarnation named in the order (its target generation): a
  restarted victim reads it as not its own and ignores it.
- Every write is bounded (diskhb.mailbox.IO_TIMEOUT_MS per region); it runs on the fence
  runner's thread (diskhb.fencing.runner), never on the tick.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import struct

from diskhb.errors import OperatorError
from diskhb.fencing.method import MethodResult, Victim
from diskhb.mailbox import write_message
from diskhb.mmp.sentinel import MountTable, norm_path
from diskhb.regions.disk import format as fmt

log = logging.getLogger("diskhb.fence")

METHOD = "pill"
BLKROSET = 0x125D  # linux/fs.h _IO(0x12, 93)


class PillMethod:
    name = METHOD

    def __init__(self, regions: list[tuple[str, str]], sender_id: int):
        self.regions = regions  # (region name, path) of every disk region
        self.sender_id = sender_id

    def fence(self, victim: Victim, deadline: float) -> MethodResult:
        if not self.regions:
            return MethodResult(False, False, "no disk region to carry a pill")
        written, errors = [], []
        for name, path in self.regions:  # each write bounded by the mailbox's own timeout
            try:
                seq, _ = write_message(path, victim.node_id, fmt.MSG_FENCE, self.sender_id, victim.generation)
                written.append(f"{name} (seq {seq})")
            except OperatorError as e:
                errors.append(f"{name}: {e}")
        if not written:
            return MethodResult(False, False, "; ".join(errors))
        detail = f"pill written on {', '.join(written)}; waiting for node {victim.node_id} to fence itself"
        if errors:
            detail += f" (not on {'; '.join(errors)})"
        return MethodResult(False, True, detail)

    def close(self) -> None:
        pass


def set_read_only(mountpoints: tuple[str, ...]) -> list[str]:
    """BLKROSET on the block device under each mountpoint (self_fence SF5); one line per device.
    Found from mountinfo alone (never a stat below the mountpoint, which may hang)."""
    try:
        table = MountTable.read()
    except OSError as e:
        return [f"cannot read the mount table ({e.strerror}): no device set read-only"]
    out = []
    for mnt in mountpoints:
        dev = table.dev_at.get(norm_path(mnt))
        if dev is None:
            out.append(f"{mnt}: not mounted, nothing to set read-only")
            continue
        out.append(f"{mnt}: {_blkroset(dev)}")
    return out


def _blkroset(majmin: str) -> str:
    node = _device_node(majmin)
    if node is None:
        return f"device {majmin} has no block device node here (not a block device?)"
    try:
        fd = os.open(node, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        return f"{node}: cannot open ({e.strerror})"
    try:
        if not stat.S_ISBLK(os.fstat(fd).st_mode):
            return f"{node} is not a block device"
        fcntl.ioctl(fd, BLKROSET, struct.pack("i", 1))
    except OSError as e:
        return f"{node}: BLKROSET failed ({e.strerror})"
    finally:
        os.close(fd)
    return f"{node} set read-only"


def _device_node(majmin: str) -> str | None:
    try:
        with open(f"/sys/dev/block/{majmin}/uevent") as f:
            for line in f:
                if line.startswith("DEVNAME="):
                    return "/dev/" + line.strip().split("=", 1)[1]
    except OSError:
        pass
    return f"/dev/block/{majmin}" if os.path.exists(f"/dev/block/{majmin}") else None
