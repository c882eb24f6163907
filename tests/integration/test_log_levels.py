"""Log levels say how unusual a thing is (diskhb/report.py): a node up, a clean leave and an MMP
acquire or release are normal (INFO); a death is an ERROR; the same incarnation beating again
after it was declared dead is a WARNING. And the loss line of a process without the daemon's
logging (a foreground guard, the lease enforcer) looks like every other line."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

import pytest

from cluster import ROOT
from diskhb.core.liveness import NodeRestarted, NodeStateChanged
from diskhb.core.node import MmpEvent
from diskhb.core.types import NodeState
from diskhb.report import Reporter

A, D, L, U = NodeState.ALIVE, NodeState.DEAD, NodeState.LEFT, NodeState.UNKNOWN
GEN, GEN2 = 0x5FAE41C2B9D06B2A, 0x1234


def change(old, new, generation=GEN):
    return NodeStateChanged(2, "node2", old, new, "disk", 1200, "why", generation)


def levels(caplog, *events) -> list[tuple[int, str]]:
    rep = Reporter(1, lambda: 0)
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="diskhb"):
        for ev in events:
            rep.report(ev)
    return [(r.levelno, r.getMessage()) for r in caplog.records]


def test_normal_operations_are_info(caplog):
    got = levels(caplog, change(U, A), change(A, L), MmpEvent("db", "acquired", 3, "on r block 0 (free)"),
                 MmpEvent("db", "released", 3, "on r block 0"))
    assert [lv for lv, _ in got] == [logging.INFO] * 4, got
    assert "alive -> left" in got[1][1]


def test_a_death_is_an_error_and_a_node_back_from_the_dead_a_warning(caplog):
    got = levels(caplog, change(U, A), change(A, D), change(D, A))
    assert [lv for lv, _ in got] == [logging.INFO, logging.ERROR, logging.WARNING], got
    assert "dead -> alive" in got[2][1] and "back from the dead" in got[2][1] and f"[generation {GEN:#x}]" in got[2][1]


def test_a_restart_after_a_death_is_no_return_from_the_dead(caplog):
    got = levels(caplog, change(A, D), NodeRestarted(2, "node2", "disk", GEN, GEN2), change(D, A, GEN2))
    assert [lv for lv, _ in got] == [logging.ERROR, logging.WARNING, logging.INFO], got
    assert "restarted" in got[1][1] and "back from the dead" not in got[2][1]
    # a death is judged once: the next time it comes back alive is news again only after a new death
    got = levels(caplog, change(A, D), change(D, A), change(A, U), change(U, A))
    assert [lv for lv, _ in got] == [logging.ERROR, logging.WARNING, logging.WARNING, logging.INFO], got


PLAIN = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} diskhb\[(\d+)\] "


def _stderr_of(code: str, tmp_path, journal: bool) -> tuple[str, int]:
    """(stderr, pid) of a python process running `code`, stderr a file (the journal's if journal)."""
    err = tmp_path / "stderr"
    with open(err, "w") as f:
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        if journal:
            st = os.fstat(f.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        p = subprocess.Popen([sys.executable, "-c", code], stderr=f, cwd=ROOT, env=env)
        assert p.wait(60) == 0
    return err.read_text(), p.pid


LOSS = ("from diskhb.mmp.loss import LossAction, on_lost;"
        " on_lost(LossAction(kinds=('none',)), resource='db', epoch=4, reason='another holder')")


@pytest.mark.parametrize("journal", [False, True])
def test_the_loss_line_carries_timestamp_and_pid_or_the_journal_priority(tmp_path, journal):
    text, pid = _stderr_of(LOSS, tmp_path, journal)
    lines = text.splitlines()
    assert len(lines) == 1, text
    rest = "CRITICAL MMP resource 'db' LOST (epoch 4): another holder; loss action: no action"
    if journal:
        assert lines[0] == "<2>" + rest, "journald stamps time and pid itself; the priority maps to crit"
    else:
        m = re.fullmatch(PLAIN + re.escape(rest), lines[0])
        assert m and int(m.group(1)) == pid, lines[0]


def test_the_lease_enforcers_lines_have_the_same_format(tmp_path):
    text, pid = _stderr_of("from diskhb.mmp import sentinel; sentinel._warn('w'); sentinel._log_critical('c')",
                           tmp_path, False)
    lines = text.splitlines()
    assert len(lines) == 2, text
    for line, rest in zip(lines, ("WARNING w", "CRITICAL c")):
        m = re.fullmatch(PLAIN + rest, line)
        assert m and int(m.group(1)) == pid, line


def test_a_hold_acquired_before_its_mount_gives_no_warning(tmp_path):
    """The README's way to guard a mount acquires first: an enforcer started before the mount is
    normal operations (INFO), not a warning at every acquisition."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    code = ("import time; from diskhb.mmp.sentinel import Enforcer, now_ms;"
            f" e = Enforcer.start(now_ms() + 60000, mountpoint={str(mnt)!r}, resource='db');"
            " time.sleep(1.0); assert e.done() == 0")
    text, _ = _stderr_of(code, tmp_path, False)
    lines = text.splitlines()
    assert any("is not a mount point" in x for x in lines), text
    assert all(re.match(PLAIN + "INFO lease enforcer for 'db': ", x) for x in lines), text
