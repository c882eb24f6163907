"""The fault model's F4 on this machine (diskhb.core.timing): a process with a write in flight does
not exit, however it is killed, until the write completes; and what it holds (the node-local ballot
lock, an abstract socket) stays held until then. The sector ledger (diskhb.mmp.ledger LG2) and the
ballot lock lean on this to keep a node's own ballot sector from going back across processes."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import pytest

from diskhb.runtime import claim_local_name

WRITER = r"""
import os, sys, mmap
from diskhb.runtime import claim_local_name
lock = claim_local_name(sys.argv[2])            # held for as long as this process lives
fd = os.open(sys.argv[1], os.O_RDWR | os.O_DIRECT | os.O_DSYNC)
buf = mmap.mmap(-1, 4096)
buf[:512] = b"L" * 512
print("writing", flush=True)
os.pwritev(fd, [memoryview(buf)[:512]], 0)     # hangs in the FaultDisk until released
print("written", flush=True)
"""


def test_a_killed_writer_does_not_exit_nor_free_its_lock_before_its_write_completes(make_faultdisk):
    fd = make_faultdisk()
    scope = f"diskhb-test-f4 {os.getpid()} {time.monotonic_ns()}"
    fd.set(write="hang")
    p = subprocess.Popen([sys.executable, "-c", WRITER, fd.path, scope], stdout=subprocess.PIPE, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    try:
        assert p.stdout.readline().strip() == "writing"
        fd.wait_hung("write")
        p.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:  # killed, but its write is in flight: it has not exited
            assert p.poll() is None, "the killed writer exited with its write in flight"
            with pytest.raises(OSError) as e:
                claim_local_name(scope).close()
            assert e.value.errno == errno.EADDRINUSE  # and its lock is still held
            time.sleep(0.1)
        fd.set(write="ok")  # the write completes: now it exits, and the lock is free
        assert p.wait(10) == -signal.SIGKILL
        claim_local_name(scope).close()
    finally:
        fd.release()
        if p.poll() is None:
            p.kill()
            p.wait(10)
