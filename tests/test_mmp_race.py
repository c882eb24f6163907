"""At most one holder, ever: contender processes racing for one MMP resource, and a frozen holder.

Each contender (tests/mmp_contender.py, a real process with its own node id) loops: acquire,
append "<node> <epoch> begin" / "... end" to a shared audit file while holding, release. The
audit must read as a strict alternation begin/end of the same holder, epochs strictly growing
(the fencing token) and every one used once. Store I/O gets random pauses, holds and retries
random lengths, so the ballot runs under ever different interleavings.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cluster import DISKHB, ROOT, diskhb, wait_until

CONTENDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mmp_contender.py")
INTERVAL_MS = 20  # the holders' interval: refusals of a live holder come within ~one interval
RACE_DEADLINE_S = 240


def check_audit(path: str) -> tuple[int, dict[int, int]]:
    """Assert the audit file shows one holder at a time and growing epochs; (holds, per node)."""
    with open(path) as f:
        records = [line.split() for line in f]
    holder = None
    last_epoch = 0
    per_node: dict[int, int] = {}
    for i, (node, epoch, what) in enumerate(records):
        node, epoch = int(node), int(epoch)
        if what == "begin":
            assert holder is None, f"record {i}: node {node} began (epoch {epoch}) while {holder} held it"
            assert epoch > last_epoch, f"record {i}: epoch {epoch} after {last_epoch}: not growing"
            holder, last_epoch = (node, epoch), epoch
        else:
            assert what == "end" and holder == (node, epoch), f"record {i}: {node} {epoch} {what} while {holder}"
            holder = None
            per_node[node] = per_node.get(node, 0) + 1
    assert holder is None, f"audit ends inside a hold: {holder}"
    return sum(per_node.values()), per_node


def race(region: str, audit: str, contenders: int, rounds_each: int, seed: int) -> dict[int, int]:
    procs = []
    try:
        for n in range(1, contenders + 1):
            procs.append(subprocess.Popen(
                [sys.executable, CONTENDER, region, str(n), "db", audit, str(rounds_each), str(RACE_DEADLINE_S),
                 str(seed * 100 + n), str(INTERVAL_MS)],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for p in procs:
            out, err = p.communicate(timeout=RACE_DEADLINE_S + 60)
            assert p.returncode == 0, err
            assert out.startswith(f"held {rounds_each} "), (out, err)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    total, per_node = check_audit(audit)
    assert total == contenders * rounds_each
    return per_node


@pytest.fixture
def region(disk_tmp_path):
    path = os.path.join(disk_tmp_path, "region.img")
    r = diskhb("format", path, "--cluster", "test", "--slots", "4", "--interval-ms", "100", "--dead-ms", "1000")
    assert r.returncode == 0, r.stderr
    return path


def block(region: str) -> dict:
    r = diskhb("mmp", "status", "db", "--region", region, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["resources"][0]


@pytest.mark.slow
@pytest.mark.parametrize("contenders, rounds_each", [(2, 120), (3, 340), (4, 60)])
def test_racing_contenders_never_hold_together(region, disk_tmp_path, contenders, rounds_each):
    """(2 x 120) + (3 x 340) + (4 x 60) = 1,500 acquisitions in all, 1,020 of them three-way."""
    audit = os.path.join(disk_tmp_path, "audit")
    per_node = race(region, audit, contenders, rounds_each, seed=contenders)
    assert set(per_node) == set(range(1, contenders + 1))
    b = block(region)
    assert b["state"] == "clean" and b["epoch"] == contenders * rounds_each


def test_racing_cli_guards_never_hold_together(region, disk_tmp_path):
    """The same through the real `diskhb mmp run` (each a new process and generation), with --wait."""
    audit = os.path.join(disk_tmp_path, "audit")
    script = (f'echo "$N $DISKHB_MMP_EPOCH begin" >> {audit}; sleep 0.0$((RANDOM % 5)); '
              f'echo "$N $DISKHB_MMP_EPOCH end" >> {audit}')
    rounds = 4
    procs = []
    try:
        for n in (1, 2, 3):
            loop = "; ".join(
                [f"{' '.join(DISKHB)} mmp run db --region {region} --node-id {n} --create --interval-ms 100"
                 f" --wait 60 -- bash -c 'N={n}; {script}' || exit 9"] * rounds)
            procs.append(subprocess.Popen(["bash", "-c", loop], cwd=ROOT, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True, start_new_session=True))
        for p in procs:
            out, err = p.communicate(timeout=180)
            assert p.returncode == 0, err
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
    total, per_node = check_audit(audit)
    assert total == 3 * rounds and per_node == {1: rounds, 2: rounds, 3: rounds}
    assert block(region)["state"] == "clean"


def _gone_or_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_frozen_holder_is_taken_over_and_learns_it_before_writing_again(region, disk_tmp_path):
    """SIGSTOP the guard of `mmp run` past the classic wait: its sentinel kills the command
    once the lease runs out, node 2 takes over (2 x interval + 1 s), and after SIGCONT the
    old guard finds the block changed before any write of its own, runs its loss action and
    exits 3. The block never shows the old holder again."""
    interval_ms = 500
    loss_file = os.path.join(disk_tmp_path, "lost")
    pid_file = os.path.join(disk_tmp_path, "child.pid")
    guard = subprocess.Popen(
        DISKHB + ["mmp", "run", "db", "--region", region, "--node-id", "1", "--create", "--interval-ms",
                  str(interval_ms), "--run-dir", os.path.join(disk_tmp_path, "run"), "--on-loss-command",
                  f"echo $DISKHB_MMP_EPOCH $DISKHB_MMP_REASON > {loss_file}", "--",
                  "sh", "-c", f"echo $$ > {pid_file}; exec sleep 60"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    taker = None
    try:
        wait_until(lambda: os.path.exists(pid_file) and open(pid_file).read().strip(), 15, "the guarded command")
        child = int(open(pid_file).read())
        mine = block(region)
        assert mine["state"] == "held" and mine["holder"]["id"] == 1
        guard.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        taker = subprocess.Popen(
            DISKHB + ["mmp", "acquire", "db", "--region", region, "--node-id", "2", "--interval-ms", "200",
                      "--wait", "20", "--run-dir", os.path.join(disk_tmp_path, "run2")],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        wait_until(lambda: block(region)["holder"]["id"] == 2 and block(region)["state"] == "held", 20,
                   "node 2 to take over")
        took_s = time.monotonic() - t0
        assert took_s >= (2 * interval_ms + 1000) / 1000 - 0.2, took_s  # never before the classic wait
        # The sentinel killed the frozen guard's command before anyone could take over.
        assert _gone_or_zombie(child), "the command of a frozen guard outlived its lease"
        theirs = block(region)
        assert theirs["epoch"] == mine["epoch"] + 1
        guard.send_signal(signal.SIGCONT)
        out, err = guard.communicate(timeout=20)
        assert guard.returncode == 3, (guard.returncode, err)
        # On waking, H1 tells it first (it could not bump in time), before any read or write.
        assert "LOST" in err and ("could not bump" in err or "taken over by" in err), err
        assert open(loss_file).read().split()[0] == str(mine["epoch"])
        # The old guard wrote nothing after waking: the block is node 2's and still moving.
        for _ in range(5):
            b = block(region)
            assert b["holder"]["id"] == 2 and b["epoch"] == theirs["epoch"] and b["state"] == "held", b
            time.sleep(0.1)
    finally:
        for p in (guard, taker):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGCONT)
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
        if os.path.exists(pid_file):
            try:
                os.kill(int(open(pid_file).read()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
