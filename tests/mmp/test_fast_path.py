"""diskhb.mmp.fast_path, rule by rule (FP0-FP5; FP6 is in test_guard_fixes)."""

import pytest

from diskhb.core.types import NodeState
from diskhb.mmp.fast_path import PeerInfo, Verdict, fast_path

A, D, U, L = NodeState.ALIVE, NodeState.DEAD, NodeState.UNKNOWN, NodeState.LEFT
GEN = 0x1001


@pytest.mark.parametrize("info, block_gen, verdict", [
    (PeerInfo(A, GEN, fenced=True), GEN, Verdict.TAKE_OVER),  # FP0: READ_ONLY, or self-fenced and beating
    (PeerInfo(D, GEN, fenced=True), GEN, Verdict.TAKE_OVER),  # FP0/FP4
    (PeerInfo(D, GEN, fenced=True), GEN + 1, Verdict.CLASSIC_WAIT),  # another process of that node: unknown
    (PeerInfo(A, GEN, fenced=True), GEN + 1, Verdict.CLASSIC_WAIT),
    (PeerInfo(A, GEN), GEN, Verdict.REFUSE),  # FP1
    (PeerInfo(A, GEN), GEN + 1, Verdict.CLASSIC_WAIT),  # FP2
    (PeerInfo(L, GEN), GEN, Verdict.TAKE_OVER),  # FP3
    (PeerInfo(L, GEN), GEN + 1, Verdict.CLASSIC_WAIT),
    (PeerInfo(D, GEN), GEN, Verdict.CLASSIC_WAIT),  # FP5: dead is not fenced
    (PeerInfo(U, GEN), GEN, Verdict.CLASSIC_WAIT),
    (None, GEN, Verdict.CLASSIC_WAIT),
])
def test_fast_path_table(info, block_gen, verdict):
    assert fast_path(1, block_gen, info)[0] is verdict


def test_fp6_beats_fp0():
    assert fast_path(1, GEN, PeerInfo(D, GEN, fenced=True), later_epoch_proposed=True)[0] is Verdict.CLASSIC_WAIT


def test_fp1_a_live_holder_whose_writes_fail_is_watched_not_refused():
    """DISK_LOST in its beats: it has lost (or is losing) its holds; REFUSE would leave the block
    to a daemon that cannot write it. The classic watch takes over only a block that stands still."""
    alive = PeerInfo(NodeState.ALIVE, generation=7)
    assert fast_path(2, 7, alive)[0] is Verdict.REFUSE
    verdict, why = fast_path(2, 7, PeerInfo(NodeState.ALIVE, generation=7, disk_lost=True))
    assert verdict is Verdict.CLASSIC_WAIT and "DISK_LOST" in why
    assert fast_path(2, 7, PeerInfo(NodeState.ALIVE, generation=7, fenced=True, disk_lost=True))[0] is \
        Verdict.TAKE_OVER  # FP0 first
