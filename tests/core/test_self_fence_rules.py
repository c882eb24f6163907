"""diskhb.core.self_fence, rule by rule (SF1-SF6): when a node stops itself."""

import pytest

from diskhb.core.self_fence import REASONS, SelfFence

LEASE, WLM = 2000, 1000


def rules(*, quorum=True, disks=True) -> SelfFence:
    return SelfFence(lease_ms=LEASE, write_land_max_ms=WLM, started_ms=0, quorum=quorum, disks=disks)


def check(sf, now, *, quorate=True, connected=None, guarding=False, landed=None, beat_write=None, lapsed=None):
    connected = quorate if connected is None else connected
    return sf.check(now, quorate=quorate, connected=connected, guarding=guarding, landed_ms=landed,
                    oldest_beat_write_ms=beat_write, mmp_lapsed_ms=lapsed)


def test_sf1_a_pill_fences_at_once_and_says_from_whom():
    sf = rules()
    got = sf.pill(500, "a fence message from node 2 on region d (seq 3)")
    assert (got.reason, got.at_ms) == ("pill", 500) and "node 2" in got.detail
    assert sf.fenced is got


@pytest.mark.parametrize("guarding, fenced", [(True, True), (False, False)])
def test_sf2_losing_quorum_fences_only_a_node_that_guards_storage(guarding, fenced):
    sf = rules()
    got = check(sf, 100, quorate=False, guarding=guarding, landed=90)
    assert (got is not None and got.reason == "quorum-lost") is fenced


def test_sf2_without_a_quorum_section_nothing_is_judged_by_quorum():
    sf = rules(quorum=False)
    assert check(sf, 10 * LEASE, quorate=False, guarding=True, landed=None) is None


@pytest.mark.parametrize("landed, now, quorate, fenced", [
    (1000, 1000 + LEASE - 1, False, False),  # within the lease
    (1000, 1000 + LEASE, False, True),  # the lease ran out without quorum
    (1000, 1000 + 10 * LEASE, True, False),  # quorate: a storage outage alone stops nobody
    (None, LEASE, False, True),  # never a write landed: the lease counts from the start
    (None, LEASE - 1, False, False),
])
def test_sf3_the_lease_runs_from_the_newest_landed_write_and_only_without_quorum(landed, now, quorate, fenced):
    sf = rules()
    got = check(sf, now, quorate=quorate, landed=landed)
    assert (got is not None and got.reason == "lease") is fenced


def test_sf3_hearing_a_quorum_is_not_being_heard_by_one():
    """A one-way link: this node counts its peers (quorate) but none of them lists it."""
    got = check(rules(), 1000 + LEASE, quorate=True, connected=False, landed=1000)
    assert got is not None and got.reason == "lease"


def test_sf3_needs_a_disk_region():
    assert check(rules(disks=False), 10 * LEASE, quorate=False) is None


@pytest.mark.parametrize("guarding, beat_write, lapsed, fenced", [
    (True, 5000 - WLM, None, True),  # a heartbeat write stuck past F1's bound while guarding
    (True, 5000 - WLM + 1, None, False),  # not yet
    (False, 0, None, False),  # holding nothing: reported by region health only
    (False, None, 4000, True),  # an MMP write that lapsed: always (it may land over a later holder)
])
def test_sf4_a_stuck_write(guarding, beat_write, lapsed, fenced):
    sf = rules()
    got = check(sf, 5000, guarding=guarding, beat_write=beat_write, lapsed=lapsed)
    assert (got is not None and got.reason == "stuck-write") is fenced


def test_sf6_self_fencing_is_final_and_happens_once():
    sf = rules()
    first = check(sf, 100, quorate=False, guarding=True)
    assert first is not None
    assert sf.pill(200, "later") is None
    assert check(sf, 10 * LEASE, quorate=False, guarding=True, lapsed=1) is None
    assert sf.fenced is first


def test_reasons_are_the_metric_labels():
    sf = rules()
    seen = {check(rules(), 100, quorate=False, guarding=True).reason,
            check(rules(), LEASE, quorate=False).reason,
            check(rules(), 5000, lapsed=1).reason,
            sf.pill(0, "x").reason,
            rules().io_fenced(0, "our key is gone from lun0").reason}  # SF7
    assert seen == set(REASONS)


def test_limits():
    with pytest.raises(ValueError):
        SelfFence(lease_ms=0, write_land_max_ms=WLM, started_ms=0, quorum=True, disks=True)
