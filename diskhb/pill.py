"""The disk pill, the daemon's fencing method: a fence message in the victim's mailbox on every
disk region, written off the tick; and setting guarded block devices read-only (BLKROSET) when
this node fences itself. Both run on bounded threads and report back through done().

Rules of this file:
- The sender never waits for the victim (SBD's `message` blocks 10 s): an order's outcome is the
  write's, reported `pending` (fencing FD9) when at least one region took the pill; the victim's
  own SELF_FENCED, READ_ONLY beat is what verifies it (FD8). No region took it: failed, with
  each region's one-line reason.
- The pill is meant for the victim's incarnation named in the order (its target generation): a
  restarted victim reads it as not its own and ignores it.
- Every write is bounded (diskhb.mailbox.IO_TIMEOUT_MS per region); at most THREADS_MAX at once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import struct
import threading

from diskhb.core.node import FenceDone
from diskhb.errors import OperatorError
from diskhb.mailbox import write_message
from diskhb.mmp.sentinel import MountTable, norm_path
from diskhb.regions.disk import format as fmt

log = logging.getLogger("diskhb.fence")

METHOD = "pill"
THREADS_MAX = 8
BLKROSET = 0x125D  # linux/fs.h _IO(0x12, 93)


class PillWorker:
    def __init__(self, regions: list[tuple[str, str]], sender_id: int, notify: threading.Event):
        self.regions = regions  # (region name, path) of every disk region
        self.sender_id = sender_id
        self.notify = notify
        self._lock = threading.Lock()
        self._done: list = []
        self._running = 0

    def fence(self, node_id: int, generation: int, attempt: int) -> FenceDone | None:
        """Start writing the pill; None when started (done() reports), else the outcome now."""
        if not self.regions:
            return FenceDone(node_id, generation, attempt, False, METHOD, "no disk region to carry a pill")
        with self._lock:
            if self._running >= THREADS_MAX:
                return FenceDone(node_id, generation, attempt, False, METHOD,
                                 f"{THREADS_MAX} pills are being written already")
            self._running += 1

        def go() -> None:
            try:
                done = self._write(node_id, generation, attempt)
            except Exception as e:  # noqa: BLE001 - reported as a failed attempt, never silent
                done = FenceDone(node_id, generation, attempt, False, METHOD, f"internal error: {e!r}")
            with self._lock:
                self._running -= 1
                self._done.append(done)
            self.notify.set()

        threading.Thread(target=go, name=f"pill:{node_id}", daemon=True).start()
        return None

    def _write(self, node_id: int, generation: int, attempt: int) -> FenceDone:
        written, errors = [], []
        for name, path in self.regions:
            try:
                seq, _ = write_message(path, node_id, fmt.MSG_FENCE, self.sender_id, generation)
                written.append(f"{name} (seq {seq})")
            except OperatorError as e:
                errors.append(f"{name}: {e}")
        if not written:
            return FenceDone(node_id, generation, attempt, False, METHOD, "; ".join(errors))
        detail = f"pill written on {', '.join(written)}; waiting for node {node_id} to fence itself"
        if errors:
            detail += f" (not on {'; '.join(errors)})"
        return FenceDone(node_id, generation, attempt, False, METHOD, detail, pending=True)

    def done(self) -> list:
        with self._lock:
            out, self._done = self._done, []
        return out


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
