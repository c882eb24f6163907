"""The whole-cluster simulator (tools.sim): its CI budget of random schedules, replay of a seed,
and its command line's bad input.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tools.sim.world import World

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CI_SEEDS = 2000
CI_SECONDS = 30
CI_BUDGET_S = 180  # 3 minutes on the project's CI kind: 2 cores


def sim(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.sim", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
@pytest.mark.timeout(CI_BUDGET_S + 120)
def test_ci_budget_of_random_schedules_all_pass():
    """2,000 seeds of 30 simulated seconds each (3 daemons and 5 command-line guards), through
    the module's own multiprocessing path (one job per core), with 0 violations, in 3 minutes."""
    t0 = time.monotonic()
    r = sim("--seeds", str(CI_SEEDS), "--seconds", str(CI_SECONDS), timeout=CI_BUDGET_S + 100)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert r.stdout.startswith(f"{CI_SEEDS} schedules, 0 violations,"), r.stdout[:500]
    assert took <= CI_BUDGET_S, f"{CI_SEEDS} x {CI_SECONDS} s took {took:.0f} s, over {CI_BUDGET_S} s: {r.stdout[:300]}"


@pytest.mark.parametrize("seed", [7, 1234])
def test_a_seed_replays_the_same_trace(seed):
    a = World(seed, seconds=10).run()
    b = World(seed, seconds=10).run()
    assert a.trace_hash == b.trace_hash and list(a.trace) == list(b.trace)
    assert a.steps == b.steps > 0
    assert World(seed + 1, seconds=10).run().trace_hash != a.trace_hash


def test_the_cli_prints_the_trace_hash_a_replay_gives():
    r1, r2 = sim("--seeds", "1", "--start", "42", "--seconds", "5", "--trace"), \
        sim("--seeds", "1", "--start", "42", "--seconds", "5", "--trace")
    assert r1.returncode == r2.returncode == 0, r1.stdout + r1.stderr
    line = r1.stdout.splitlines()[0]
    assert line.startswith("seed 42: trace ") and line == r2.stdout.splitlines()[0]
    assert line.split()[-1] == World(42, seconds=5).run().trace_hash


@pytest.mark.parametrize("args, says", [
    (["--seeds", "0"], "--seeds 0 must be >= 1"),
    (["--nodes", "0"], "--nodes 0 must be in 1..8"),
    (["--nodes", "x"], "invalid int value: 'x'"),
    (["--nodes", "4", "--procs", "5"], "--procs 5 must be in 0..4 with --nodes 4"),
])
def test_bad_input_is_one_line_and_exit_2(args, says):
    r = sim(*args)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tools.sim: error: ") and says in lines[0], r.stderr
