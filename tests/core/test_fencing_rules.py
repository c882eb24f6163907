"""diskhb.core.fencing, rule by rule (FD1-FD7): who is a victim, who fences it, when to try again."""

import pytest

from diskhb.core.fencing import (RETRY_MS_MAX, RETRY_MS_MIN, FenceOrder, FenceOutcome, Fencing, VictimBack,
                                 VictimNamed, _fencer)
from diskhb.core.quorum import Quorum
from diskhb.core.types import NodeState, Peer, SlotFlag

A, D, U, L = NodeState.ALIVE, NodeState.DEAD, NodeState.UNKNOWN, NodeState.LEFT
ACTIVE = int(SlotFlag.ACTIVE)


def q(*members, quorate=True):
    return Quorum(quorate, len(members), 3, tuple(members), "test")


def peers(**states):
    """peers(n2=D, n3=A) -> {2: Peer(DEAD, 0x20, ACTIVE), ...}; a tuple gives (state, generation, flags)."""
    out = {}
    for k, v in states.items():
        nid = int(k[1:])
        out[nid] = Peer(*v) if isinstance(v, tuple) else Peer(v, 0x10 + nid, ACTIVE)
    return out


def orders(out):
    return [(o.node_id, o.attempt) for o in out[0]]


def kinds(out):
    return [type(e).__name__ for e in out[1]]


# -- FD2: who is a victim --------------------------------------------------------------------------


@pytest.mark.parametrize("state, victim", [(D, True), (A, False), (U, False), (L, False)])
def test_fd2_only_a_dead_peer_is_a_victim(state, victim):
    f = Fencing(1, (1, 2, 3))
    out = f.evaluate(0, q(1, 3), peers(n2=state, n3=A))
    assert (2 in f.victims) is victim
    assert kinds(out) == (["VictimNamed"] if victim else [])


def test_fd2_a_never_seen_node_is_no_victim():
    f = Fencing(1, (1, 2, 3))
    assert f.evaluate(0, q(1, 3), {3: Peer(A, 5, ACTIVE)}) == ([], [])
    assert f.evaluate(0, q(1, 3), peers(n2=(D, 0, 0), n3=A)) == ([], [])  # no generation: never beat


@pytest.mark.parametrize("flags", [SlotFlag.DISK_LOST, SlotFlag.READ_ONLY, SlotFlag.DISK_LOST | SlotFlag.READ_ONLY])
def test_fd2_last_flags_spare_a_dead_peer_of_nothing(flags):
    f = Fencing(3, (1, 2, 3))
    out = f.evaluate(0, q(1, 3), peers(n1=A, n2=(D, 0x22, ACTIVE | int(flags))))
    assert orders(out) == [(2, 1)]


def test_fd2_ourselves_and_unconfigured_nodes_are_never_victims():
    f = Fencing(1, (1, 2))
    out = f.evaluate(0, q(1, 2), {1: Peer(D, 9, ACTIVE), 7: Peer(D, 9, ACTIVE), 2: Peer(A, 3, ACTIVE)})
    assert out == ([], []) and f.victims == {}


# -- FD1: quorate only -----------------------------------------------------------------------------


def test_fd1_no_victim_without_quorum():
    f = Fencing(1, (1, 2, 3))
    assert f.evaluate(0, q(1, quorate=False), peers(n2=D, n3=D)) == ([], [])
    assert f.evaluate(0, None, peers(n2=D, n3=D)) == ([], [])  # no [quorum]: never quorate
    assert f.victims == {}


def test_fd1_losing_quorum_starts_no_new_attempt_and_the_running_one_finishes():
    f = Fencing(3, (1, 2, 3))
    assert orders(f.evaluate(0, q(1, 3), peers(n1=A, n2=D))) == [(2, 1)]
    f.outcome(100, 2, 0x12, 1, False, "pill", "mailbox write failed")
    assert orders(f.evaluate(5_000, q(3, quorate=False), peers(n1=D, n2=D))) == []  # n1 is no victim either
    assert 1 not in f.victims
    assert orders(f.evaluate(6_000, q(1, 3), peers(n1=A, n2=D))) == [(2, 2)]  # quorate again: retried


# -- FD3: READ_ONLY ----------------------------------------------------------------------------------


def test_fd3_an_alive_read_only_peer_is_released_without_fencing():
    f = Fencing(1, (1, 2, 3))
    out = f.evaluate(0, q(1, 2, 3), peers(n2=(A, 0x12, ACTIVE | int(SlotFlag.READ_ONLY)), n3=A))
    assert out == ([], []) and f.released == {2: 0x12}
    assert f.may_take_over(2, 0x12) == "read-only"
    assert f.may_take_over(3, 0x13) is None
    f.evaluate(10, q(1, 2, 3), peers(n2=A, n3=A))  # the promise is withdrawn
    assert f.released == {} and f.may_take_over(2, 0x12) is None


def test_fd3_no_takeover_without_quorum():
    f = Fencing(1, (1, 2, 3))
    f.evaluate(0, q(1, 2, quorate=False), peers(n2=(A, 0x12, ACTIVE | int(SlotFlag.READ_ONLY))))
    assert f.may_take_over(2, 0x12) is None


# -- FD4: one fencer ---------------------------------------------------------------------------------


@pytest.mark.parametrize("victim, members, fencer", [
    (2, (1, 3), 3), (3, (1, 2), 1), (1, (2, 3), 2), (2, (1, 3, 4), 3), (4, (1, 2, 3), 1), (2, (5,), 5)])
def test_fd4_the_fencer_is_the_next_member_after_the_victim(victim, members, fencer):
    assert _fencer(victim, members) == fencer


def test_fd4_every_member_names_the_same_fencer_and_only_it_orders():
    views = {n: Fencing(n, (1, 2, 3, 4)) for n in (1, 3, 4)}
    got = {n: f.evaluate(0, q(1, 3, 4), peers(n1=A, n2=D, n3=A, n4=A)) for n, f in views.items()}
    for n, out in got.items():
        named = [e for e in out[1] if isinstance(e, VictimNamed)]
        assert [(e.node_id, e.fencer) for e in named] == [(2, 3)]
        assert orders(out) == ([(2, 1)] if n == 3 else [])


def test_fd4_when_the_fencer_leaves_the_next_member_takes_over():
    f = Fencing(4, (1, 2, 3, 4))
    assert orders(f.evaluate(0, q(1, 3, 4), peers(n1=A, n2=D, n3=A))) == []
    out = f.evaluate(1_000, q(1, 4), peers(n1=A, n2=D, n3=D))  # n3, the fencer, died too
    assert orders(out) == [(2, 1), (3, 1)]  # 4 follows 3 and 2's next member now
    assert [(e.node_id, e.fencer) for e in out[1] if isinstance(e, VictimNamed)] == [(2, 4), (3, 4)]


# -- FD5: once per incarnation -------------------------------------------------------------------------


def test_fd5_one_attempt_in_flight_and_a_verified_fence_is_final():
    f = Fencing(3, (1, 2, 3))
    assert orders(f.evaluate(0, q(1, 3), peers(n1=A, n2=D))) == [(2, 1)]
    assert orders(f.evaluate(500, q(1, 3), peers(n1=A, n2=D))) == []  # in flight
    ev = f.outcome(800, 2, 0x12, 1, True, "pill", "acknowledged")
    assert ev == [FenceOutcome(2, 0x12, 1, True, "pill", "acknowledged")]
    assert f.fenced(2, 0x12) and not f.fenced(2, 0x99)
    assert f.may_take_over(2, 0x12) == "fenced"
    assert orders(f.evaluate(100_000, q(1, 3), peers(n1=A, n2=D))) == []
    # I/O fencing leaves it running: beating again does not undo the fence of this incarnation
    assert f.evaluate(101_000, q(1, 3), peers(n1=A, n2=A)) == ([], []) and f.fenced(2, 0x12)


def test_fd5_a_new_generation_is_a_new_node():
    f = Fencing(3, (1, 2, 3))
    f.evaluate(0, q(1, 3), peers(n1=A, n2=D))
    f.outcome(10, 2, 0x12, 1, True, "pill", "ok")
    f.evaluate(20, q(1, 3), peers(n1=A, n2=(U, 0x77, ACTIVE)))
    assert not f.fenced(2, 0x12) and 2 not in f.victims
    assert orders(f.evaluate(30, q(1, 3), peers(n1=A, n2=(D, 0x77, ACTIVE)))) == [(2, 1)]
    assert f.victims[2].generation == 0x77


def test_fd5_a_late_success_of_an_earlier_attempt_still_fences():
    f = Fencing(3, (1, 2, 3), attempt_timeout_ms=1_000)
    f.evaluate(0, q(1, 3), peers(n1=A, n2=D))
    f.evaluate(1_000, q(1, 3), peers(n1=A, n2=D))  # attempt 1 timed out
    assert orders(f.evaluate(1_000 + RETRY_MS_MIN, q(1, 3), peers(n1=A, n2=D))) == [(2, 2)]
    f.outcome(2_500, 2, 0x12, 1, True, "scsi-pr", "key gone")
    assert f.fenced(2, 0x12)
    assert f.victims[2].in_flight_since_ms is not None  # attempt 2 still runs; its outcome is only logged
    assert f.outcome(2_600, 2, 0x12, 2, False, "pill", "x")[0].ok is False and f.fenced(2, 0x12)


def test_fd5_outcomes_of_unknown_incarnations_are_reported_and_change_nothing():
    f = Fencing(3, (1, 2, 3))
    assert f.outcome(0, 2, 0x12, 1, True, "pill", "ok") == [FenceOutcome(2, 0x12, 1, True, "pill", "ok")]
    assert f.victims == {}


# -- FD6: retries --------------------------------------------------------------------------------------


def test_fd6_failures_back_off_doubling_up_to_the_maximum():
    f = Fencing(3, (1, 2, 3))
    now, attempt, gaps = 0, 0, []
    last = None
    while now < 600_000:
        out = orders(f.evaluate(now, q(1, 3), peers(n1=A, n2=D)))
        if out:
            attempt += 1
            assert out == [(2, attempt)]
            if last is not None:
                gaps.append(now - last)
            last = now
            f.outcome(now, 2, 0x12, attempt, False, "pill", "no ack")
        now += 500
    assert gaps[:4] == [1_000, 2_000, 4_000, 8_000]
    assert max(gaps) == RETRY_MS_MAX and gaps[-1] == RETRY_MS_MAX


def test_fd6_an_attempt_without_outcome_times_out_as_a_failure():
    f = Fencing(3, (1, 2, 3), attempt_timeout_ms=5_000)
    f.evaluate(0, q(1, 3), peers(n1=A, n2=D))
    out = f.evaluate(4_999, q(1, 3), peers(n1=A, n2=D))
    assert out == ([], [])
    out = f.evaluate(5_000, q(1, 3), peers(n1=A, n2=D))
    assert [(e.attempt, e.ok, e.method) for e in out[1] if isinstance(e, FenceOutcome)] == [(1, False, "none")]
    assert orders(out) == []
    assert orders(f.evaluate(5_000 + RETRY_MS_MIN, q(1, 3), peers(n1=A, n2=D))) == [(2, 2)]


# -- FD7: back ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("back, why", [((A, 0x12, ACTIVE), "advances"), ((U, 0x44, ACTIVE), "0x44"),
                                      ((L, 0x12, ACTIVE), "left")])
def test_fd7_a_victim_seen_again_is_no_victim(back, why):
    f = Fencing(3, (1, 2, 3))
    f.evaluate(0, q(1, 3), peers(n1=A, n2=D))
    out = f.evaluate(100, q(1, 3), {1: Peer(A, 0x11, ACTIVE), 2: Peer(*back)})
    backs = [e for e in out[1] if isinstance(e, VictimBack)]
    assert len(backs) == 1 and why in backs[0].reason and 2 not in f.victims
    assert orders(out) == []


def test_fd7_unknown_again_with_the_same_generation_keeps_the_victim():
    f = Fencing(3, (1, 2, 3))
    f.evaluate(0, q(1, 3), peers(n1=A, n2=D))
    assert f.evaluate(100, q(1, 3), peers(n1=A, n2=(U, 0x12, ACTIVE))) == ([], [])
    assert 2 in f.victims


def test_bad_settings_one_line():
    with pytest.raises(ValueError, match="not in the node list"):
        Fencing(4, (1, 2, 3))
    with pytest.raises(ValueError, match="attempt_timeout_ms"):
        Fencing(1, (1, 2), attempt_timeout_ms=0)


def test_status_rows():
    f = Fencing(3, (1, 2, 3))
    f.evaluate(0, q(1, 3), peers(n1=A, n2=D))
    f.outcome(50, 2, 0x12, 1, False, "pill", "no ack")
    [row] = f.status(1_000)
    assert row == {"node": 2, "generation": "0x12", "since_ms": 1_000, "fencer": 3, "attempts": 1,
                   "in_flight": False, "fenced": False, "last": "attempt 1 failed (pill): no ack",
                   "manual": False, "pending": "", "method": "", "receipt": ""}
    assert isinstance(FenceOrder(2, 0x12, 1, "x"), FenceOrder)


# -- FD8: a victim that fenced itself --------------------------------------------------------------

SF_RO = ACTIVE | int(SlotFlag.SELF_FENCED | SlotFlag.READ_ONLY)


def test_fd8_self_fenced_and_read_only_verifies_the_pending_pill():
    from diskhb.core.fencing import FencePending

    f = Fencing(3, (1, 2, 3))
    out = f.evaluate(0, q(1, 3), peers(n1=A, n2=(D, 0x22, ACTIVE)))
    assert orders(out) == [(2, 1)]
    [ev] = f.outcome(10, 2, 0x22, 1, False, "pill", "written on d", pending=True)  # FD9: still in flight
    assert isinstance(ev, FencePending) and f.status(10)[0]["in_flight"] and not f.fenced(2, 0x22)
    # it reads the pill and beats again, SELF_FENCED but still stopping: not back (FD7), not fenced yet
    out = f.evaluate(100, q(1, 3), peers(n1=A, n2=(A, 0x22, ACTIVE | int(SlotFlag.SELF_FENCED))))
    assert out == ([], []) and 2 in f.victims and not f.fenced(2, 0x22)
    assert f.may_take_over(2, 0x22) is None
    out = f.evaluate(200, q(1, 3), peers(n1=A, n2=(A, 0x22, SF_RO)))  # its promise: verified
    assert [(type(e).__name__, e.ok, e.method) for e in out[1]] == [("FenceOutcome", True, "self")]
    assert f.fenced(2, 0x22) and f.may_take_over(2, 0x22) == "read-only"
    out = f.evaluate(300, q(1, 3), peers(n1=A, n2=(D, 0x22, SF_RO)))  # then its watchdog resets it: final
    assert out == ([], []) and f.may_take_over(2, 0x22) == "self-fenced"


def test_fd8_any_peer_that_fenced_itself_is_released_for_good_but_not_its_next_generation():
    f = Fencing(1, (1, 2, 3))
    f.evaluate(0, q(1, 2, 3), peers(n2=(A, 0x22, SF_RO), n3=A))
    f.evaluate(100, q(1, 3), peers(n2=(D, 0x22, SF_RO), n3=A))
    assert f.may_take_over(2, 0x22) == "self-fenced"
    assert f.may_take_over(2, 0x23) is None
    f.evaluate(200, q(1, 3), peers(n2=(A, 0x22, ACTIVE | int(SlotFlag.SELF_FENCED)), n3=A))
    assert f.may_take_over(2, 0x22) == "self-fenced", "never withdrawn (SF6)"
    f.quorate = False
    assert f.may_take_over(2, 0x22) is None, "only a quorate node takes storage over (FD1)"


def test_fd9_a_pill_nobody_acts_on_times_out_and_is_tried_again():
    f = Fencing(3, (1, 2, 3), attempt_timeout_ms=5_000)
    f.evaluate(0, q(1, 3), peers(n1=A, n2=D))
    f.outcome(10, 2, 0x12, 1, False, "pill", "written on d", pending=True)
    assert f.evaluate(4_000, q(1, 3), peers(n1=A, n2=D)) == ([], [])
    out = f.evaluate(5_000, q(1, 3), peers(n1=A, n2=D))
    assert kinds(out) == ["FenceOutcome"] and "waiting: pill: written on d" in out[1][0].detail
    assert orders(f.evaluate(5_000 + RETRY_MS_MIN, q(1, 3), peers(n1=A, n2=D))) == [(2, 2)]


# -- FD10: an operator's order ---------------------------------------------------------------------


def test_fd10_manual_fence_of_a_live_peer_without_election_or_retry():
    f = Fencing(1, (1, 2, 3))
    f.evaluate(0, q(1, 2, 3), peers(n2=A, n3=A))
    order = f.manual(10, 3, 0x13, quorate=True, force=False)
    assert isinstance(order, FenceOrder) and (order.node_id, order.attempt) == (3, 1)
    assert "in progress" in f.manual(20, 3, 0x13, quorate=True, force=False)
    f.outcome(30, 3, 0x13, 1, False, "pill", "cannot write", pending=False)
    out = f.evaluate(RETRY_MS_MAX * 2, q(1, 2, 3), peers(n2=A, n3=A))
    assert out == ([], []), "alive: not back (FD7), and no automatic retry"
    assert f.status(0)[0]["manual"] and "failed" in f.status(0)[0]["last"]
    assert f.manual(40, 3, 0x13, quorate=True, force=False).attempt == 2  # ordered again


@pytest.mark.parametrize("node, generation, quorate, force, why", [
    (1, 0x11, True, False, "itself"),
    (7, 0x17, True, False, "not in [quorum] nodes"),
    (2, 0, True, False, "not been seen"),
    (2, 0x12, False, False, "not quorate"),
])
def test_fd10_refusals(node, generation, quorate, force, why):
    f = Fencing(1, (1, 2, 3))
    f.evaluate(0, q(1, 2, 3) if quorate else q(1, quorate=False), peers(n2=A, n3=A))
    got = f.manual(10, node, generation, quorate=quorate, force=force)
    assert isinstance(got, str) and why in got
    assert not f.victims


def test_fd10_force_fences_without_quorum_and_a_restart_ends_the_order():
    f = Fencing(1, (1, 2, 3))
    f.evaluate(0, q(1, quorate=False), peers(n2=A, n3=A))
    order = f.manual(10, 2, 0x12, quorate=False, force=True)
    assert "forced" in order.reason
    out = f.evaluate(100, q(1, quorate=False), peers(n2=(A, 0x99, ACTIVE), n3=A))
    assert kinds(out) == ["VictimBack"] and not f.victims


# -- FD11: the self-fence deadline -------------------------------------------------------------------


def pending_victim(f: Fencing):
    f.evaluate(0, q(1, 3), peers(n1=A, n2=(D, 0x22, ACTIVE)))
    f.outcome(10, 2, 0x22, 1, False, "pill", "written on d", pending=True)


@pytest.mark.parametrize("now, deadline, quorate, state, fenced", [
    (5_000, 5_000, True, D, True),
    (4_999, 5_000, True, D, False),  # not yet
    (9_000, None, True, D, False),  # no deadline given (no watchdog, or a member's view may show it)
    (9_000, 5_000, False, D, False),  # FD1
    (9_000, 5_000, True, U, False),  # not DEAD (stale evidence)
])
def test_fd11_a_silent_victim_with_a_delivered_pill_is_fenced_at_its_deadline(now, deadline, quorate, state, fenced):
    f = Fencing(3, (1, 2, 3))
    pending_victim(f)
    out = f.evaluate(now, q(1, 3, quorate=quorate), peers(n1=A, n2=(state, 0x22, ACTIVE)),
                     {} if deadline is None else {2: deadline})
    assert f.fenced(2, 0x22) is fenced
    if fenced:
        [ev] = [e for e in out[1] if isinstance(e, FenceOutcome)]
        assert (ev.ok, ev.method) == (True, "deadline")


def test_fd11_needs_a_delivered_pill():
    f = Fencing(3, (1, 2, 3))
    f.evaluate(0, q(1, 3), peers(n1=A, n2=(D, 0x22, ACTIVE)))
    f.outcome(10, 2, 0x22, 1, False, "pill", "cannot write the mailbox")  # failed, not pending
    f.evaluate(9_000, q(1, 3), peers(n1=A, n2=(D, 0x22, ACTIVE)), {2: 5_000})
    assert not f.fenced(2, 0x22)


# -- FD12: the receipt of an I/O fence --------------------------------------------------------------

WINDOW = 10_000


def io_fenced(window=WINDOW):
    """Node 3 fenced node 2 (generation 0x12, DEAD since 0) by scsi-pr at 500 ms."""
    f = Fencing(3, (1, 2, 3), receipt_window_ms=window)
    f.evaluate(0, q(1, 3), peers(n1=A, n2=D))
    out = f.outcome(500, 2, 0x12, 1, True, "scsi-pr", "key gone", evidence="lun0: keys [k1]")
    assert kinds(([], out)) == ["FenceOutcome"]
    assert f.may_take_over(2, 0x12, io_covered=True) == "fenced"  # no wait for the window
    assert f.may_take_over(2, 0x12) is None  # FD13: storage off the LUNs is not covered
    return f


def receipts(out):
    return [(e.node_id, e.issued) for e in out[1] if type(e).__name__ == "FenceReceipt"]


def test_fd12_a_victim_frozen_for_the_window_gets_a_receipt_once():
    f = io_fenced()
    assert receipts(f.evaluate(500 + WINDOW - 1, q(1, 3), peers(n1=A, n2=(D, 0x12, ACTIVE, 0)))) == []
    out = f.evaluate(500 + WINDOW, q(1, 3), peers(n1=A, n2=(D, 0x12, ACTIVE, 0)))
    assert receipts(out) == [(2, True)]
    [r] = [e for e in out[1] if type(e).__name__ == "FenceReceipt"]
    assert r.method == "scsi-pr" and r.evidence.startswith("lun0: keys [k1]; its heartbeat stayed frozen")
    assert f.receipts[-1]["issued"] is True and f.status(0)[0]["receipt"].startswith("issued")
    assert receipts(f.evaluate(600 + WINDOW, q(1, 3), peers(n1=A, n2=(D, 0x12, ACTIVE, 0)))) == []


def test_fd12_a_victim_that_beats_after_the_fence_voids_the_receipt_but_stays_fenced():
    f = io_fenced()
    out = f.evaluate(2_000, q(1, 3), peers(n1=A, n2=(A, 0x12, ACTIVE, 1_900)))
    assert receipts(out) == [(2, False)] and "advanced 1400 ms after the fence" in f.status(0)[0]["receipt"]
    assert f.fenced(2, 0x12) and kinds(out) == ["FenceReceipt"]  # FD5: fenced for good, no VictimBack


def test_fd12_a_restart_after_the_fence_issues_the_receipt():
    f = io_fenced()
    out = f.evaluate(2_000, q(1, 3), peers(n1=A, n2=(A, 0x99, ACTIVE, 1_900)))
    assert receipts(out) == [(2, True)] and "restarted as generation 0x99" in f.receipts[-1]["evidence"]
    assert 2 not in f.victims


@pytest.mark.parametrize("method", ["pill", "self", "deadline", "agent"])
def test_fd12_only_an_io_fence_gets_a_receipt(method):
    f = Fencing(3, (1, 2, 3), receipt_window_ms=WINDOW)
    f.evaluate(0, q(1, 3), peers(n1=A, n2=D))
    f.outcome(500, 2, 0x12, 1, True, method, "done")
    assert receipts(f.evaluate(600 + WINDOW, q(1, 3), peers(n1=A, n2=(D, 0x12, ACTIVE, 0)))) == []


def test_fd12_receipts_kept_are_bounded():
    from diskhb.core.fencing import RECEIPTS_KEPT
    f = Fencing(3, (1, 2, 3), receipt_window_ms=1)
    for gen in range(0x100, 0x100 + RECEIPTS_KEPT + 5):
        f.evaluate(gen * 10, q(1, 3), peers(n1=A, n2=(D, gen, ACTIVE, 0)))
        f.outcome(gen * 10, 2, gen, f.victims[2].attempts, True, "scsi-pr", "gone")
        f.evaluate(gen * 10 + 5, q(1, 3), peers(n1=A, n2=(D, gen, ACTIVE, 0)))
    assert len(f.receipts) == RECEIPTS_KEPT


@pytest.mark.parametrize("method, covered, expect", [
    ("scsi-pr", True, "fenced"), ("scsi-pr", False, None),
    ("pill", False, "fenced"), ("agent", False, "fenced"), ("deadline", False, "fenced"),
])
def test_fd13_an_io_fence_covers_only_the_storage_on_its_luns(method, covered, expect):
    f = Fencing(3, (1, 2, 3))
    f.evaluate(0, q(1, 3), peers(n1=A, n2=D))
    f.outcome(500, 2, 0x12, 1, True, method, "done")
    assert f.may_take_over(2, 0x12, io_covered=covered) == expect


SELF_RO = ACTIVE | int(SlotFlag.SELF_FENCED | SlotFlag.READ_ONLY)


@pytest.mark.parametrize("io_fence, covered, expect", [
    (False, True, "read-only"), (False, False, "read-only"), (True, False, "read-only"), (True, True, None),
])
def test_fd13_with_scsi_pr_a_promise_does_not_cover_storage_on_the_luns(io_fence, covered, expect):
    f = Fencing(3, (1, 2, 3), io_fence=io_fence)
    f.evaluate(0, q(1, 3), peers(n1=A, n2=(A, 0x12, SELF_RO)))  # FD8, and alive READ_ONLY (FD3) too
    assert f.may_take_over(2, 0x12, io_covered=covered) == expect
    f.evaluate(10, q(1, 3), peers(n1=A, n2=(D, 0x12, SELF_RO)))  # FD8 alone: it went silent after its promise
    assert f.may_take_over(2, 0x12, io_covered=covered) == (None if expect is None else "self-fenced")
    f = Fencing(3, (1, 2, 3), io_fence=io_fence)
    f.evaluate(0, q(1, 3), peers(n1=A, n2=(A, 0x12, ACTIVE | int(SlotFlag.READ_ONLY))))  # FD3 alone
    assert f.may_take_over(2, 0x12, io_covered=covered) == expect


@pytest.mark.parametrize("method, expect", [("scsi-pr", "fenced"), ("deadline", "fenced"), ("pill", None),
                                            ("agent", None)])
def test_fd13_with_scsi_pr_the_luns_need_an_io_fence_or_the_deadline(method, expect):
    f = Fencing(3, (1, 2, 3), io_fence=True)
    f.evaluate(0, q(1, 3), peers(n1=A, n2=D))
    f.outcome(500, 2, 0x12, 1, True, method, "done")
    assert f.may_take_over(2, 0x12, io_covered=True) == expect
    assert f.may_take_over(2, 0x12, io_covered=False) == ("fenced" if method != "scsi-pr" else None)
