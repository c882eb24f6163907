"""The node-local ballot lock (diskhb/mmp/local.py): one diskhb process of a node ballots for a
block at a time; a squatter of the lock name is named, not waited for; every user of a run dir
must share one network namespace (abstract socket names live in one)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from diskhb.errors import OperatorError, Refused
from diskhb.mmp.local import ballot_lock, ensure_run_dir
from diskhb.mmp.store import BlockLocation
from diskhb.runtime import claim_local_name, net_namespace

LOC = BlockLocation(label="r.img block 0", base=0, sector_size=512, slot_count=4, uuid=b"u" * 16, index=0)


def test_one_holder_at_a_time_and_freed_on_exit(tmp_path):
    run = ensure_run_dir(str(tmp_path / "run"))
    with ballot_lock(run, LOC, timeout_ms=1000):
        t0 = time.monotonic()
        with pytest.raises(Refused, match="another diskhb process of this node"):
            with ballot_lock(run, LOC, timeout_ms=200):
                pass
        assert time.monotonic() - t0 < 2
        with ballot_lock(str(tmp_path / "other-run"), LOC, timeout_ms=200):
            pass  # another run dir (another simulated node) is another lock
    with ballot_lock(run, LOC, timeout_ms=200):
        pass  # freed
    # A holder that dies, however it dies, frees it: no stale lock file to clean up.
    pid = os.fork()
    if pid == 0:
        try:
            with ballot_lock(run, LOC, timeout_ms=1000):
                os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(1)
    os.waitpid(pid, 0)
    with ballot_lock(run, LOC, timeout_ms=200):
        pass


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a squatter as another uid")
def test_a_squatter_of_another_uid_is_named(tmp_path):
    run = ensure_run_dir(str(tmp_path / "run"))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(65534)
            os.setuid(65534)
            s = claim_local_name(f"mmp-ballot {os.path.realpath(run)} mmp-{LOC.uuid.hex()}-0")
            os.write(w, b"x")
            time.sleep(30)
            s.close()
        finally:
            os._exit(0)
    try:
        os.read(r, 1)
        with pytest.raises(OperatorError, match=f"held by process {pid} of uid 65534"):
            with ballot_lock(run, LOC, timeout_ms=5000):
                pass
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_every_user_of_a_run_dir_shares_one_network_namespace(tmp_path):
    run = str(tmp_path / "run")
    ensure_run_dir(run)
    with open(os.path.join(run, "mmp-netns")) as f:
        assert f.read().strip() == net_namespace()
    ensure_run_dir(run)  # the same namespace again: fine
    with open(os.path.join(run, "mmp-netns"), "w") as f:
        f.write("net:[1]\n")  # as a daemon under `ip netns exec` would have left it
    with pytest.raises(OperatorError, match=r"network namespace net:\[1\].*remove .*mmp-netns"):
        ensure_run_dir(run)
