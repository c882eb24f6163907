"""The five double-holder schedules of the MMP guard's rework (A-E), as scripted whole-cluster
simulator runs (tools.sim.schedules): each must come about as scripted and end with 0
violations of the simulator's invariants. With its fix reverted each ends in I1 (two actors at
once); tools/sim/schedules.py says which fix each one guards.
"""

from __future__ import annotations

import pytest

from tools.sim import schedules


@pytest.mark.parametrize("name", sorted(schedules.SCHEDULES))
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_schedule_passes(name, seed):
    w, script = schedules.run(name, seed)
    assert w.checker.violation is None, "\n".join([str(w.checker.violation), *list(w.trace)[-40:]])
    assert not script.missing(), f"schedule {name} did not come about: {script.missing()}; {script.story()}"


def test_schedules_end_as_the_fixes_say():
    """What each fix makes of its schedule: the holder it threatened loses first, and the
    claimant holds only after it (or never, within the run)."""
    m = {name: schedules.run(name, 1)[1].milestones for name in schedules.SCHEDULES}
    a = m["A"]
    assert a["Q lost epoch 2"] < a["P holds epoch 3"]  # P watched C(Q's ceiling) after its late landing
    assert a["P holds epoch 3"] - a["P's commit of epoch 1 landed over Q's block"] >= 2 * 16_000 + 1000
    b = m["B"]
    assert "R holds epoch 3" not in b  # R watches C(160 s): longer than the run
    c = m["C"]
    assert c["Q lost epoch 2"] < c["R holds epoch 3"]
    assert c["R holds epoch 3"] - c["P's CLEAN of epoch 1 landed over Q's block"] >= 2 * 16_000 + 1000
    d = m["D"]
    assert "P commits epoch 1 with its old phase 1 in flight" not in d  # GD2 kept P off its sector
    assert d["Q holds epoch 1"] < d["P holds epoch 2"]
    e = m["E"]
    assert e["P lost epoch 1"] < e["Q holds epoch 2"]


def test_the_cli_runs_the_schedules(capsys):
    from tools.sim.__main__ import main

    assert main(["--schedules", "BE"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(": 0 violations [" in line for line in out), out
    assert out[0].startswith("schedule B ") and out[1].startswith("schedule E ")


def test_each_fix_reverted_in_a_scratch_copy_fails_its_schedule(capsys):
    """The simulator can fail: with each fix undone (tools.sim.reverts, in a copy of the tree),
    its scripted schedule ends in a violation (I1: two holders)."""
    from tools.sim.reverts import main

    assert main([]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 5 and all(line.endswith("scripted schedule I1") for line in out), out
