"""Quorum rules Q1-Q7 (diskhb.core.quorum), one or more tests per rule, on a virtual clock."""

from __future__ import annotations

import itertools

import pytest

from diskhb.core.quorum import DigestMismatch, QuorumChanged, QuorumSpec, QuorumState
from diskhb.core.types import NODE_ID_MAX, NodeState

A, U, D, L = NodeState.ALIVE, NodeState.UNKNOWN, NodeState.DEAD, NodeState.LEFT


def state(votes=None, me=1, **kw) -> QuorumState:
    return QuorumState(QuorumSpec(me, votes or {1: 1, 2: 1, 3: 1}, **kw), started_ms=0)


def digest(q: QuorumState) -> int:
    return q.spec.digest()


# -- Q1: votes and expected votes ------------------------------------------------------------------


@pytest.mark.parametrize("kw, error", [
    (dict(votes={}), f"needs 1..{NODE_ID_MAX} nodes"),
    (dict(votes={1: 1, 0: 1}), "node id 0"),
    (dict(votes={1: 1, 2: 300}), "votes 300"),
    (dict(votes={2: 1}), "this node (1) is not in the node list"),
    (dict(votes={1: 0, 2: 0}), "no node has a vote"),
    (dict(votes={1: 1, 2: 1, 3: 1}, expected_votes=2), "expected_votes 2 is less than"),
    (dict(votes={1: 1, 2: 1, 3: 1}, two_node=True), "two_node = true needs exactly two nodes"),
    (dict(votes={1: 1, 2: 2}, two_node=True), "two_node = true needs exactly two nodes"),
    (dict(votes={1: 1, 2: 1}, two_node=True, expected_votes=3), "two_node = true needs"),
    (dict(votes={1: 1}, initdead_ms=-1), "initdead_ms -1"),
])
def test_q1_bad_settings_are_refused_with_one_line(kw, error):
    with pytest.raises(ValueError, match=error.replace("(", r"\(").replace(")", r"\)")) as e:
        QuorumSpec(1, **kw).validate()
    assert "\n" not in str(e.value) and str(e.value).startswith("[quorum] ")


def test_q1_expected_votes_defaults_to_the_sum_and_may_be_larger():
    assert QuorumSpec(1, {1: 1, 2: 2, 3: 0}).expected == 3
    q = state({1: 1, 2: 1, 3: 1}, expected_votes=7)  # four votes not configured yet
    verdict, _ = q.evaluate(0, {2: A, 3: A}, {})
    assert not verdict.quorate and verdict.votes == 3 and verdict.expected_votes == 7


def test_q1_votes_are_ours_not_what_a_node_claims():
    q = state({1: 1, 2: 3, 3: 1})
    assert q.evaluate(0, {2: A}, {2: digest(q)})[0].votes == 4


# -- Q2: members --------------------------------------------------------------------------------------


@pytest.mark.parametrize("s2, s3", list(itertools.product([A, U, D, L, None], repeat=2)))
def test_q2_only_alive_nodes_are_members_and_q4_needs_a_strict_majority(s2, s3):
    q = state()
    states = {n: s for n, s in ((2, s2), (3, s3)) if s is not None}
    verdict, _ = q.evaluate(0, states, {})
    alive = [n for n, s in ((2, s2), (3, s3)) if s is A]
    assert verdict.members == (1, *alive)
    assert verdict.votes == 1 + len(alive)
    assert verdict.quorate is (len(alive) >= 1)


def test_q2_an_unconfigured_node_is_never_a_member():
    q = state({1: 1, 2: 1})
    assert q.evaluate(0, {2: A, 9: A}, {})[0].members == (1, 2)


# -- Q3: agreement ------------------------------------------------------------------------------------


def test_q3_a_peer_with_another_node_list_is_not_counted_and_is_reported_once_per_digest():
    q = state()
    other = QuorumSpec(2, {1: 1, 2: 1, 3: 1, 4: 1}).digest()
    verdict, events = q.evaluate(0, {2: A, 3: A}, {2: other, 3: digest(q)})
    assert verdict.members == (1, 3) and verdict.refused == (2,) and verdict.quorate
    assert [e for e in events if isinstance(e, DigestMismatch)] == [DigestMismatch(2, other, digest(q))]
    _, events = q.evaluate(10, {2: A, 3: A}, {2: other, 3: digest(q)})
    assert not [e for e in events if isinstance(e, DigestMismatch)]
    third = QuorumSpec(2, {1: 1, 2: 2, 3: 1}).digest()  # it changed its votes: a new report
    _, events = q.evaluate(20, {2: A, 3: A}, {2: third, 3: digest(q)})
    assert [e.theirs for e in events if isinstance(e, DigestMismatch)] == [third]


def test_q3_two_sides_that_disagree_about_the_node_list_cannot_both_be_quorate():
    # node 1 thinks the cluster is {1, 2, 3}; nodes 4, 5 think it is {1, 2, 3, 4, 5}: each side
    # alone would count a majority of its own list if it counted the others' beats
    small = state({1: 1, 2: 1, 3: 1})
    big = QuorumState(QuorumSpec(4, {1: 1, 2: 1, 3: 1, 4: 1, 5: 1}), started_ms=0)
    v_small, _ = small.evaluate(0, {2: A}, {2: digest(small)})  # 1, 2 with the small list
    v_big, _ = big.evaluate(0, {1: A, 2: A, 5: A}, {1: digest(small), 2: digest(small), 5: digest(big)})
    assert v_small.quorate and not v_big.quorate and v_big.refused == (1, 2)


def test_q3_the_digest_covers_nodes_votes_expected_votes_and_two_node():
    base = QuorumSpec(1, {1: 1, 2: 1})
    variants = [QuorumSpec(1, {1: 1, 2: 1, 3: 1}), QuorumSpec(1, {1: 1, 2: 2}),
                QuorumSpec(1, {1: 1, 2: 1}, expected_votes=3), QuorumSpec(1, {1: 1, 2: 1}, two_node=True)]
    assert len({base.digest(), *(v.digest() for v in variants)}) == 5
    assert QuorumSpec(2, {2: 1, 1: 1}).digest() == base.digest()  # the same cluster seen from node 2


# -- Q4: majority ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7])
def test_q4_of_any_split_at_most_one_side_is_quorate(n):
    votes = {i: 1 for i in range(1, n + 1)}
    for size in range(1, n + 1):
        side = list(range(1, size + 1))
        rest = list(range(size + 1, n + 1))
        a = QuorumState(QuorumSpec(side[0], votes), started_ms=0)
        qa = a.evaluate(0, {i: A for i in side}, {})[0].quorate
        qb = False
        if rest:
            b = QuorumState(QuorumSpec(rest[0], votes), started_ms=0)
            qb = b.evaluate(0, {i: A for i in rest}, {})[0].quorate
        assert not (qa and qb)
        assert qa is (2 * size > n)


# -- Q5: wait_for_all -----------------------------------------------------------------------------------


def test_q5_no_first_quorum_until_every_node_was_seen():
    q = state(wait_for_all=True, initdead_ms=30_000)
    v, _ = q.evaluate(1000, {2: A}, {})
    assert not v.quorate and "node 3 not seen yet" in v.reason
    v, _ = q.evaluate(2000, {2: A, 3: A}, {})
    assert v.quorate
    v, _ = q.evaluate(3000, {2: A, 3: D}, {})  # after the first quorum, the plain majority
    assert v.quorate


def test_q5_or_until_initdead_passed():
    q = state(wait_for_all=True, initdead_ms=30_000)
    assert not q.evaluate(29_999, {2: A}, {})[0].quorate
    assert q.evaluate(30_000, {2: A}, {})[0].quorate


def test_q5_a_node_seen_once_counts_as_seen_even_if_gone_since():
    q = state(wait_for_all=True, initdead_ms=60_000)
    q.evaluate(0, {3: A}, {})  # node 3 seen (1 + 3: a majority, but 2 not seen yet)
    assert not q.last.quorate
    v, _ = q.evaluate(10, {2: A, 3: D}, {})
    assert v.quorate and v.members == (1, 2)


def test_q5_a_node_without_votes_is_not_waited_for():
    q = state({1: 1, 2: 1, 3: 0}, wait_for_all=True, initdead_ms=60_000)
    assert q.evaluate(0, {2: A}, {})[0].quorate


# -- Q6: two_node ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("peer", [A, U, D, L, None])
@pytest.mark.parametrize("held", [False, True])
def test_q6_two_node_alone_is_quorate_only_with_the_tiebreak(peer, held):
    q = state({1: 1, 2: 1}, two_node=True)
    v, _ = q.evaluate(0, {} if peer is None else {2: peer}, {}, tiebreak_held=held)
    assert v.quorate is (peer is A or held)


def test_q6_of_a_two_node_split_only_the_tiebreak_holder_is_quorate():
    n1 = state({1: 1, 2: 1}, two_node=True)
    n2 = QuorumState(QuorumSpec(2, {1: 1, 2: 1}, two_node=True), started_ms=0)
    for winner in (1, 2):
        q1 = n1.evaluate(0, {2: D}, {}, tiebreak_held=winner == 1)[0].quorate
        q2 = n2.evaluate(0, {1: D}, {}, tiebreak_held=winner == 2)[0].quorate
        assert (q1, q2) == (winner == 1, winner == 2)


def test_q6_wait_for_all_still_holds_back_the_first_quorum_of_two_node():
    q = state({1: 1, 2: 1}, two_node=True, wait_for_all=True, initdead_ms=10_000)
    assert not q.evaluate(0, {}, {}, tiebreak_held=True)[0].quorate
    assert q.evaluate(10_000, {}, {}, tiebreak_held=True)[0].quorate


# -- Q7: events -------------------------------------------------------------------------------------------


def test_q7_one_event_per_flip_with_the_votes_behind_it():
    q = state()
    _, ev = q.evaluate(0, {}, {})
    assert ev == [QuorumChanged(False, 1, 3, (1,), "1 of 3 votes: no majority (needs 2)")]
    _, ev = q.evaluate(10, {2: U}, {})
    assert ev == []
    _, ev = q.evaluate(20, {2: A}, {})
    assert ev == [QuorumChanged(True, 2, 3, (1, 2), "2 of 3 votes")]
    _, ev = q.evaluate(30, {2: A, 3: A}, {})
    assert ev == []  # more votes, still quorate: no flip
    _, ev = q.evaluate(40, {2: D, 3: D}, {})
    assert [e.quorate for e in ev] == [False]
