"""`mmp release`'s decision (diskhb.mmp.release, RL1-RL4), rule by rule, without I/O."""

from diskhb.mmp import format as mf
from diskhb.mmp.release import How, plan_release

UUID = b"\x11" * 16


def block(seq=5, holder=1, gen=0xAB) -> mf.SeqBlock:
    return mf.SeqBlock(seq=seq, epoch=3, holder_id=holder, holder_generation=gen, holder_name="n", resource="db",
                       device="d", interval_ms=1000, wall_ms=0, uuid=UUID, slot_count=4, sector_size=512)


def plan(b, rec=None, alive=False, force=False):
    return plan_release("db", b, node_id=1, holder_record=rec, holder_alive=alive, force=force)


def test_rl1_clean_is_nothing_and_fsck_is_cleared_not_released():
    assert plan(block(seq=mf.SEQ_CLEAN)).how is How.NOTHING
    p = plan(block(seq=mf.SEQ_FSCK), force=True)
    assert p.how is How.REFUSE and "mmp clear" in p.text


def test_rl2_another_nodes_hold_is_never_ours_to_release():
    p = plan(block(holder=2), rec={"generation": 0xAB, "pid": 7}, alive=True, force=True)
    assert p.how is How.REFUSE and "release it there" in p.text


def test_rl3_the_live_local_holder_is_asked():
    p = plan(block(), rec={"generation": 0xAB, "pid": 7}, alive=True)
    assert p.how is How.SIGNAL and p.pid == 7
    # a record of another generation, or a dead pid, is not the holder
    assert plan(block(), rec={"generation": 0xCD, "pid": 7}, alive=True).how is How.REFUSE
    assert plan(block(), rec={"generation": 0xAB, "pid": 7}, alive=False).how is How.REFUSE


def test_rl4_a_stale_generation_only_with_force():
    p = plan(block())
    assert p.how is How.REFUSE and "--force" in p.text
    assert plan(block(), force=True).how is How.FORCE
