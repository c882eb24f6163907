"""Carries out the node core's MMP I/O off the daemon's loop (the daemon's side of the guards).

Rules of this file:
- No decision is made here: each IoRequest of diskhb.mmp.guard is executed as asked and its
  IoResult comes back through poll() (the loop is woken by `notify`). The guard judges
  deadlines itself (GD1): a request that hangs is simply never answered in time.
- A write is issued only if the clock, read right before the write syscall on the worker thread,
  is not past its issue_by_ms; otherwise its result says too_late and nothing was written. The
  result's submitted_ms is that moment (the issue), a read's is the moment before its syscall.
- Per device one IoWorker with IN_FLIGHT_MAX threads, each request with its own aligned buffer, so
  a request hung in the kernel holds only its own thread and buffer; with every thread hung, a
  new request fails at once ("busy"). Locks (the node-local ballot lock) are taken inline: a
  bind of an abstract socket never blocks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from diskhb.errors import OperatorError
from diskhb.mmp.guard import IoRequest, IoResult
from diskhb.mmp.local import try_lock
from diskhb.regions.disk.blockio import AlignedBuffer, BlockDevice, IoWorker
from diskhb.runtime import monotonic_ms

IN_FLIGHT_MAX = 4  # per device: guards on one device do not wait behind each other
_TOO_LATE = object()


class MmpExecutor:
    def __init__(self, devices: dict[str, BlockDevice], *, notify: threading.Event,
                 clock_ms: Callable[[], int] = monotonic_ms):
        self.devices = devices  # path -> an open writable O_DIRECT device (owned: closed by close())
        self.clock_ms = clock_ms
        self.notify = notify
        self._workers = {path: IoWorker(f"mmp:{path}", IN_FLIGHT_MAX, clock_ms=clock_ms, notify=notify)
                         for path in devices}
        self._ready: list[IoResult] = []  # answered at once (locks, refusals)
        self._locks: dict[str, object] = {}

    def submit(self, req: IoRequest) -> None:
        now = self.clock_ms()
        if req.op in ("lock", "unlock"):
            self._lock(req, now)
            return
        worker, dev = self._workers.get(req.path), self.devices.get(req.path)
        if worker is None:
            self._answer(IoResult(req.id, now, now, error=f"{req.path}: not a disk region of this daemon"))
            return
        clock = self.clock_ms

        def run():
            buf = AlignedBuffer(req.length)
            if req.op == "read":
                issued = clock()
                dev.read_into(buf, req.offset, req.length)
                return issued, buf.view[: req.length].tobytes()
            buf.view[: req.length] = np.frombuffer(req.data, dtype=np.uint8)
            issued = clock()
            if req.issue_by_ms is not None and issued > req.issue_by_ms:
                return issued, _TOO_LATE
            dev.write_from(buf, req.offset, req.length)
            return issued, None

        if not worker.submit(run, tag=req.id, now_ms=now):
            self._answer(IoResult(req.id, now, now, error=f"busy: {IN_FLIGHT_MAX} requests already hung on {req.path}"))

    def poll(self) -> list[IoResult]:
        out, self._ready = self._ready, []
        for worker in self._workers.values():
            for r in worker.poll():
                if not r.ok:
                    out.append(IoResult(r.tag, r.submitted_ms, r.completed_ms, error=_why(r.error)))
                    continue
                issued, data = r.value
                if data is _TOO_LATE:
                    out.append(IoResult(r.tag, issued, r.completed_ms, too_late=True))
                else:
                    out.append(IoResult(r.tag, issued, r.completed_ms, data=data))
        return out

    def close(self) -> None:
        for sock in self._locks.values():
            sock.close()
        self._locks.clear()
        for path, worker in self._workers.items():
            worker.close()
            if worker.in_flight() is None:
                self.devices[path].close()  # a hung request still uses the fd: leave it to exit

    def _lock(self, req: IoRequest, now: int) -> None:
        if req.op == "unlock":
            sock = self._locks.pop(req.lock, None)
            if sock is not None:
                sock.close()
            return
        try:
            sock = try_lock(req.lock, req.path)
        except OperatorError as e:
            self._answer(IoResult(req.id, now, now, error=str(e)))
            return
        if sock is not None:
            self._locks[req.lock] = sock
        self._answer(IoResult(req.id, now, self.clock_ms(), error=None if sock is not None else "busy"))

    def _answer(self, r: IoResult) -> None:
        self._ready.append(r)
        self.notify.set()


def _why(e: OSError | None) -> str:
    import errno

    if e is None:
        return "unknown error"
    return f"{errno.errorcode.get(e.errno or 0, e.errno)}: {e.strerror or e}"
