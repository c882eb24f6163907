"""SCSI-3 persistent reservations end to end over iSCSI against tgt on 127.0.0.1 (issue 11, part 4):
two nodes, each its own initiator name and key; the fence is a preempt, and after it the victim's
WRITEs fail with RESERVATION CONFLICT while the survivor's land. Also: what tgt refuses, a LUN
reserved by someone else, key conflicts, a key on two paths, a reconnect that loses the
registration, and how the PR generation moves."""

import pytest

from diskhb.fencing import pr_key
from diskhb.fencing.scsi import pr
from diskhb.fencing.scsi.cdb import FENCE_TYPE, PrType
from diskhb.fencing.scsi.pr_in import generation_advanced
from diskhb.fencing.scsi.sense import SenseKey

CLUSTER = "e2e"
GEN_A, GEN_B = 0x1111_2222_3333_4444, 0x5555_6666_7777_8888
KA, KB = pr_key.key_for(CLUSTER, 1, GEN_A), pr_key.key_for(CLUSTER, 2, GEN_B)
T = 3000  # ms per operation: generous for a loaded 2-core machine, still bounded
BLOCK_A, BLOCK_B = b"A" * 512, b"B" * 512


def two_nodes(lun):
    """Node A and node B registered, A holding Write Exclusive - Registrants Only (type 5)."""
    a, b = lun.node(1), lun.node(2)
    pr.register_and_ignore(a, KA, T)
    pr.register_and_ignore(b, KB, T)
    pr.reserve(a, KA, T)
    return a, b


def test_fence_by_preempt_end_to_end(lun):
    a, b = lun.node(1), lun.node(2)
    g0 = pr.read_keys(b, T).generation
    pr.register_and_ignore(a, KA, T)
    pr.register_and_ignore(b, KB, T)
    keys = pr.read_keys(b, T)
    assert sorted(keys.keys) == sorted([KA, KB]) and generation_advanced(g0, keys.generation) == 2

    pr.reserve(a, KA, T)
    r = pr.read_reservation(b, T)
    assert (r.holder.key, r.holder.pr_type, r.generation) == (KA, FENCE_TYPE, keys.generation)  # RESERVE: +0

    pr.write_blocks(a, 0, BLOCK_A, T)  # registrants only: both write
    pr.write_blocks(b, 1, BLOCK_B, T)

    # the fence: B preempts A's key (tgt refuses PREEMPT AND ABORT: plain PREEMPT)
    done = pr.preempt_victim(b, KB, KA, T)
    assert (done.action, done.fallback_reason) == ("preempt", "ILLEGAL REQUEST: INVALID FIELD IN CDB "
                                                              "(asc 0x24 ascq 0x00)")
    after = pr.read_keys(b, T)
    assert KA not in after.keys and after.keys == (KB,)  # fence_scsi's rule: the victim's key is gone
    assert generation_advanced(keys.generation, after.generation) == 1
    r = pr.read_reservation(b, T)
    assert (r.holder.key, r.holder.pr_type) == (KB, FENCE_TYPE)  # B took the reservation over

    # the victim learns it, and cannot write any more; the survivor can
    with pytest.raises(pr.PrConflict) as e:
        pr.write_blocks(a, 0, b"a" * 512, T)
    assert "RESERVATIONS PREEMPTED (asc 0x2a ascq 0x03)" in str(e.value)  # the UA before the conflict
    with pytest.raises(pr.PrConflict, match=r"WRITE\(10\): RESERVATION CONFLICT$"):
        pr.write_blocks(a, 2, b"a" * 512, T)
    pr.write_blocks(b, 1, b"b" * 512, T)
    assert pr.read_blocks(a, 0, 3, T) == BLOCK_A + b"b" * 512 + bytes(512)  # reads are still allowed
    with open(lun.tgtd.backing_file(lun.iqn), "rb") as f:
        assert f.read(1536) == BLOCK_A + b"b" * 512 + bytes(512)  # no write of the victim landed

    # CLEAR (an operator's tool): no registration, no reservation, A writes again
    pr.clear(b, KB, T)
    cleared = pr.read_keys(b, T)
    assert cleared.keys == () and generation_advanced(after.generation, cleared.generation) == 1
    assert pr.read_reservation(a, T).holder is None
    pr.write_blocks(a, 2, b"a" * 512, T)


def test_tgt_rejects_preempt_and_abort_and_changes_nothing(lun):
    a, b = two_nodes(lun)
    before = pr.read_keys(b, T)
    with pytest.raises(pr.PrRejected) as e:
        pr.preempt_and_abort(b, KB, KA, T)
    assert e.value.unsupported_service_action and e.value.sense.key == SenseKey.ILLEGAL_REQUEST
    assert str(e.value).endswith("PR OUT PREEMPT AND ABORT: CHECK CONDITION: ILLEGAL REQUEST: INVALID FIELD IN CDB "
                                 "(asc 0x24 ascq 0x00)")
    assert pr.read_keys(b, T) == before
    pr.write_blocks(a, 0, BLOCK_A, T)  # A is not fenced


def test_tgt_capabilities(lun):
    caps = pr.report_capabilities(lun.node(1), T)
    assert caps.supports(FENCE_TYPE) is True
    assert not caps.ptpl_c  # tgt refuses APTPL: a fence does not survive a restart of tgtd


def test_release_keeps_the_registrations(lun):
    a, b = two_nodes(lun)
    g = pr.read_keys(a, T).generation
    pr.release(a, KA, T)
    assert pr.read_reservation(b, T).holder is None
    assert pr.read_keys(a, T).generation == g  # RELEASE: +0
    pr.reserve(b, KB, T)
    assert pr.read_reservation(a, T).holder.key == KB


def test_a_lun_reserved_by_something_else(lun):
    """A foreign initiator (another cluster, a tool) holds WRITE EXCLUSIVE: our nodes register, but
    cannot reserve or write, and the holder's key is not ours."""
    other = lun.node("other")
    foreign = 0x0BAD_C0DE
    pr.register_and_ignore(other, foreign, T)
    pr.reserve(other, foreign, T, PrType.WRITE_EXCLUSIVE)
    a = lun.node(1)
    pr.register_and_ignore(a, KA, T)
    with pytest.raises(pr.PrConflict, match="PR OUT RESERVE: RESERVATION CONFLICT"):
        pr.reserve(a, KA, T)
    with pytest.raises(pr.PrConflict):
        pr.write_blocks(a, 0, BLOCK_A, T)
    holder = pr.read_reservation(a, T).holder
    assert (holder.key, holder.pr_type) == (foreign, PrType.WRITE_EXCLUSIVE)
    assert pr_key.node_of(holder.key, CLUSTER, {1, 2}) is None
    assert pr_key.describe(holder.key, CLUSTER) == "0x000000000badc0de (foreign)"


def test_registrants_only_held_by_a_stranger_still_lets_registrants_write(lun):
    other = lun.node("other")
    pr.register_and_ignore(other, 0x0BAD_C0DE, T)
    pr.reserve(other, 0x0BAD_C0DE, T)
    a, b = lun.node(1), lun.node(2)
    pr.register_and_ignore(a, KA, T)
    pr.write_blocks(a, 0, BLOCK_A, T)  # type 5: any registrant writes
    with pytest.raises(pr.PrConflict):
        pr.write_blocks(b, 0, BLOCK_B, T)  # B is not registered
    with pytest.raises(pr.PrConflict):
        pr.reserve(a, KA, T)  # one reservation at a time


def test_key_conflicts_change_nothing(lun):
    a, b = lun.node(1), lun.node(2)
    pr.register_and_ignore(a, KA, T)
    g = pr.read_keys(a, T).generation
    with pytest.raises(pr.PrConflict):
        pr.register(a, KA ^ 1, KA ^ 2, T)  # A's current key is not KA ^ 1
    with pytest.raises(pr.PrConflict):
        pr.register(b, KB, KB, T)  # B is not registered: its current key is 0
    with pytest.raises(pr.PrConflict):
        pr.preempt(b, KB, KA, T)  # an unregistered nexus preempts nobody
    pr.register(b, 0, KB, T)
    with pytest.raises(pr.PrConflict):
        pr.preempt(b, KB ^ 1, KA, T)  # with a key that is not its own
    with pytest.raises(pr.PrConflict):
        pr.preempt(b, KB, 0x0DEAD, T)  # a key nobody holds
    with pytest.raises(pr.PrConflict):
        pr.clear(b, KA, T)  # clearing with another node's key
    # tgt departs from SPC-4 (which answers RESERVATION CONFLICT) here: it does not check a RESERVE's key.
    # The reservation is the nexus' own all the same, so nothing of ours may rely on that check.
    pr.reserve(b, KA, T)
    assert pr.read_reservation(a, T).holder.key == KB
    pr.release(b, KB, T)
    keys = pr.read_keys(a, T)
    assert sorted(keys.keys) == sorted([KA, KB]) and generation_advanced(g, keys.generation) == 1  # B's REGISTER


def test_one_key_on_two_paths_is_preempted_everywhere(lun):
    """Two sessions of node A (two I_T nexuses, like two multipath paths) with the same key: READ KEYS
    lists it twice, and one PREEMPT of that key cuts both paths."""
    a1, a2, b = lun.node(1), lun.node(1), lun.node(2)
    for s, k in ((a1, KA), (a2, KA), (b, KB)):
        pr.register_and_ignore(s, k, T)
    pr.reserve(b, KB, T)
    keys = pr.read_keys(b, T)
    assert keys.duplicates() == {KA: 2} and keys.count(KB) == 1
    pr.write_blocks(a1, 0, BLOCK_A, T)
    pr.write_blocks(a2, 0, BLOCK_A, T)
    pr.preempt_victim(b, KB, KA, T)
    assert pr.read_keys(b, T).keys == (KB,)
    for s in (a1, a2):
        with pytest.raises(pr.PrConflict):
            pr.write_blocks(s, 0, b"a" * 512, T)


def test_a_reconnect_loses_the_registration(lun):
    """iscsi I4 (fence-agents issue 517): a new login is a new I_T nexus, unregistered, while the old
    nexus' registration stays behind with the key. Writing again takes a deliberate REGISTER AND
    IGNORE EXISTING KEY, which leaves the key registered twice."""
    a, b = lun.node(1), lun.node(2)
    pr.register_and_ignore(a, KA, T)
    pr.register_and_ignore(b, KB, T)
    pr.reserve(b, KB, T)
    pr.write_blocks(a, 0, BLOCK_A, T)
    a.close()
    with pytest.raises(pr.PrConflict):
        pr.write_blocks(a, 0, BLOCK_A, T)
    assert a.logins == 2
    assert sorted(pr.read_keys(b, T).keys) == sorted([KA, KB])  # the stale registration is still listed
    pr.register_and_ignore(a, KA, T)
    assert pr.read_keys(b, T).duplicates() == {KA: 2}
    pr.write_blocks(a, 0, BLOCK_A, T)


def test_a_late_fence_of_an_old_incarnation_spares_the_new_one(lun):
    """pr_key K4: node A restarted (new generation, new key) and registered afresh; a fence still
    aimed at its old incarnation finds no such key and removes nothing."""
    a_old = lun.node(1)
    b = lun.node(2)
    pr.register_and_ignore(a_old, KA, T)
    pr.register_and_ignore(b, KB, T)
    pr.reserve(b, KB, T)
    pr.preempt_victim(b, KB, KA, T)  # the old incarnation is fenced
    a_new = lun.node(1)
    ka_new = pr_key.key_for(CLUSTER, 1, GEN_A + 1)
    pr.register_and_ignore(a_new, ka_new, T)  # after a restart that rejoined a quorate membership
    with pytest.raises(pr.PrConflict):
        pr.preempt_victim(b, KB, KA, T)  # a second, late order against the old key
    assert sorted(pr.read_keys(b, T).keys) == sorted([ka_new, KB])
    pr.write_blocks(a_new, 0, BLOCK_A, T)
