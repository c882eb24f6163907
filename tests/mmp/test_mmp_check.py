"""The verdict of `diskhb mmp check` (diskhb.mmp.check, rules CK1-CK8): what the resource agent's
monitor and stop act on. Each rule on made-up daemon answers and blocks, no I/O."""

from __future__ import annotations

import pytest

from diskhb.mmp import check as ck

NOW = 1_000_000
ME = 2


def snap(*entries, acquiring=(), pid=4321) -> dict:
    return {"source": "daemon", "node": {"id": ME, "pid": pid, "generation": 0xAB}, "mmp": list(entries),
            "mmp_acquiring": list(acquiring)}


def entry(state="held", deadline=NOW + 500, takeover=NOW + 900, resource="ost0") -> dict:
    return {"resource": resource, "state": state, "epoch": 7, "loss_deadline_ms": deadline, "takeover_ms": takeover}


def judge(daemon=ck.DAEMON_ANSWERED, snapshot=None, **kw) -> ck.Verdict:
    return ck.judge("ost0", ME, daemon=daemon, snapshot=snapshot, now_ms=NOW, **kw)


def test_ck1_held_only_with_the_loss_deadline_ahead():
    v = judge(snapshot=snap(entry()))
    assert (v.code, v.word) == (ck.HELD, "held") and "pid 4321" in v.text and "0.5 s" in v.text
    assert not ck.needs_block("ost0", daemon=ck.DAEMON_ANSWERED, snapshot=snap(entry()))


@pytest.mark.parametrize("deadline", [NOW, NOW - 1, NOW - 3000])
def test_ck2_a_lease_at_or_past_its_loss_deadline_is_expired(deadline):
    v = judge(snapshot=snap(entry(deadline=deadline)))
    assert (v.code, v.word) == (ck.TROUBLE, "expired"), v


def test_ck2_an_older_daemon_without_loss_deadline_is_judged_by_its_takeover_time():
    e = entry(takeover=NOW + 10)
    del e["loss_deadline_ms"]
    assert judge(snapshot=snap(e)).code == ck.HELD
    e["takeover_ms"] = NOW - 10
    assert judge(snapshot=snap(e)).word == "expired"


@pytest.mark.parametrize("state", ["lost", "releasing"])
def test_ck3_lost_and_releasing_are_in_transit(state):
    v = judge(snapshot=snap(entry(state=state)))
    assert (v.code, v.word) == (ck.TROUBLE, state)


def test_ck3_an_acquisition_in_progress_is_in_transit():
    s = snap(acquiring=["ost0"])
    assert not ck.needs_block("ost0", daemon=ck.DAEMON_ANSWERED, snapshot=s)
    assert (judge(snapshot=s).code, judge(snapshot=s).word) == (ck.TROUBLE, "acquiring")


def test_another_resource_held_says_nothing_of_ours():
    s = snap(entry(resource="other"))
    assert ck.needs_block("ost0", daemon=ck.DAEMON_ANSWERED, snapshot=s)
    assert judge(snapshot=s).word == "free"


OURS = ck.Block("held", holder_id=ME, holder_name="n2", generation=0x1234, epoch=3)


def test_ck4_a_live_local_process_holding_it():
    v = judge(snapshot=snap(), block=OURS, process_pid=99)
    assert (v.code, v.word) == (ck.TROUBLE, "process") and "99" in v.text


@pytest.mark.parametrize("daemon", [ck.DAEMON_ANSWERED, ck.DAEMON_GONE])
def test_ck5_our_block_nobody_renews_is_stale_never_stopped(daemon):
    v = judge(daemon=daemon, snapshot=snap() if daemon == ck.DAEMON_ANSWERED else None, block=OURS)
    assert (v.code, v.word) == (ck.TROUBLE, "stale") and "0x1234" in v.text and "--force" in v.text


def test_ck6_a_silent_daemon_and_our_block():
    v = judge(daemon=ck.DAEMON_SILENT, block=OURS)
    assert (v.code, v.word) == (ck.TROUBLE, "silent")
    v = judge(daemon=ck.DAEMON_SILENT, block=ck.Block("clean", epoch=3))
    assert (v.code, v.word) == (ck.NOT_HELD, "free")


@pytest.mark.parametrize("block", [None, ck.Block("clean", epoch=3), ck.Block("fsck", holder_id=ME, epoch=3),
                                   ck.Block("held", holder_id=1, holder_name="n1", generation=5, epoch=3)])
def test_ck7_not_ours(block):
    assert judge(snapshot=snap(), block=block).code == ck.NOT_HELD
    v = judge(daemon=ck.DAEMON_GONE, block=block)
    assert (v.code, v.word) == (ck.NOT_HELD, "down")


def test_ck8_unreadable_block():
    assert judge(snapshot=snap(), block_error="EIO").word == "unknown"
    assert judge(daemon=ck.DAEMON_GONE, block_error="EIO").code == ck.TROUBLE
    assert judge(snapshot=snap(), open_error="no such file").code == ck.TROUBLE
    v = judge(daemon=ck.DAEMON_GONE, open_error="no such file")
    assert (v.code, v.word) == (ck.NOT_HELD, "down")


def test_a_daemon_entry_wins_over_the_block():
    """CK1 needs no disk read: the daemon answers for what it lists."""
    assert judge(snapshot=snap(entry()), block=ck.Block("clean")).code == ck.HELD
