"""The node-local ballot lock (diskhb/mmp/local.py, guard GD3): one diskhb process of a node
ballots for a block at a time; a guard that finds it taken asks again every LOCK_POLL_MS and is
refused after LOCK_WAIT_MS; a squatter of the lock name is named, not waited for; every user of a
run dir must share one network namespace (abstract socket names live in one)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from diskhb.errors import OperatorError
from diskhb.mmp import guard as gd
from diskhb.mmp.guard import BlockLocation
from diskhb.mmp.local import ballot_lock_key, ensure_run_dir, lock_scope, try_lock
from diskhb.mmp.runner import Runner
from diskhb.mmp.store import MemoryStore, Target
from diskhb.runtime import net_namespace

from mmp_drive import claimant, make_guard

LOC = BlockLocation(label="r.img block 0", base=0, sector_size=512, slot_count=4, uuid=b"u" * 16, index=0)


def test_one_holder_at_a_time_and_freed_on_exit(tmp_path):
    run = ensure_run_dir(str(tmp_path / "run"))
    key = ballot_lock_key(run, LOC)
    assert key.startswith(lock_scope(run) + " ")
    held = try_lock(key, LOC.label)
    assert held is not None
    try:
        assert try_lock(key, LOC.label) is None  # busy: answered at once, never waited for
        other = try_lock(ballot_lock_key(str(tmp_path / "other-run"), LOC), LOC.label)
        assert other is not None  # another run dir (another simulated node) is another lock
        other.close()
    finally:
        held.close()
    again = try_lock(key, LOC.label)
    assert again is not None  # freed
    again.close()
    # A holder that dies, however it dies, frees it: no stale lock file to clean up.
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            if try_lock(key, LOC.label) is not None:
                os.write(w, b"x")
                os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(1)
    os.close(w)
    assert os.read(r, 1) == b"x"
    os.close(r)
    os.waitpid(pid, 0)
    again = try_lock(key, LOC.label)
    assert again is not None
    again.close()


def test_a_guard_waits_for_the_lock_a_bounded_time_and_writes_nothing(tmp_path):
    """Another process of this node holds the block's lock: the guard asks for it every
    LOCK_POLL_MS (virtual clock, real lock) and is refused after LOCK_WAIT_MS, naming why,
    with nothing written on the disk."""
    run = ensure_run_dir(str(tmp_path / "run"))
    store = MemoryStore((1 + LOC.slot_count) * LOC.sector_size)
    target = Target(path="<memory>", store=store, blocks=(LOC,), uuid=LOC.uuid, standalone=False)
    clock = [0]
    runner = Runner(target, clock_ms=lambda: clock[0], run_dir=run)
    squatter = try_lock(ballot_lock_key(run, LOC), LOC.label)
    assert squatter is not None
    t0 = time.monotonic()
    try:
        guard = make_guard(runner, claimant(1, interval_ms=1000), create=True, wait_ms=120_000)
        asked: list[int] = []
        results: list = []
        for _ in range(10_000):
            reqs = guard.step(clock[0], results)
            results = []
            for req in reqs:
                assert req.op in ("read", "lock"), req  # never a write while the lock is taken
                if req.op == "lock":
                    asked.append(clock[0])
                r = runner.execute(req)
                if r is not None:
                    results.append(r)
            if guard.done:
                break
            if not results:
                clock[0] = max(clock[0] + 1, guard.next_wakeup_ms())
        denied = [e for e in guard.drain() if isinstance(e, gd.Denied)]
    finally:
        squatter.close()
        runner.close_locks()
    assert guard.done and len(denied) == 1, denied
    assert "another diskhb process of this node is balloting for this block" in denied[0].reason
    assert denied[0].exit_code == 1
    assert gd.LOCK_WAIT_MS < clock[0] <= gd.LOCK_WAIT_MS + 2 * gd.LOCK_POLL_MS
    gaps = {b - a for a, b in zip(asked, asked[1:])}
    assert gaps == {gd.LOCK_POLL_MS}, gaps
    assert store.data == bytearray(len(store.data))
    assert time.monotonic() - t0 < 2  # virtual time: the 30 s wait costs no real time


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a squatter as another uid")
def test_a_squatter_of_another_uid_is_named(tmp_path):
    run = ensure_run_dir(str(tmp_path / "run"))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(65534)
            os.setuid(65534)
            from diskhb.runtime import claim_local_name

            s = claim_local_name(ballot_lock_key(run, LOC))
            os.write(w, b"x")
            time.sleep(30)
            s.close()
        finally:
            os._exit(0)
    try:
        os.read(r, 1)
        with pytest.raises(OperatorError, match=f"held by process {pid} of uid 65534"):
            try_lock(ballot_lock_key(run, LOC), LOC.label)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
        os.close(w)


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
