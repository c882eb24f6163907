"""The node core (diskhb.core.node) driven directly: observations in, actions out, a virtual clock.

The MMP I/O it asks for is carried out at once against an in-memory MMP area (a tiny driver
here), so leaving, releasing and losing can be scripted to the millisecond. Rules N1-N9.
"""

from __future__ import annotations

import random

import pytest

from diskhb.core import node as core
from diskhb.core import timing
from diskhb.core.liveness import NodeStateChanged
from diskhb.core.quorum import DigestMismatch, QuorumChanged, QuorumSpec
from diskhb.core.types import Beat, BeatBatch, SlotFlag
from diskhb.mmp import format as mf
from diskhb.mmp import guard as gd

S, SLOTS = 512, 4
UUID = bytes(range(16))
INTERVAL, DEAD = 100, 1000
LOC = gd.BlockLocation("mem block 0", 0, S, SLOTS, UUID, 0)
TARGET = gd.TargetInfo("mem", (LOC,), False)


def area(bound: bool = True) -> bytearray:
    data = bytearray((1 + SLOTS) * S)
    if not bound:  # never written: free for any name
        return data
    clean = mf.SeqBlock(seq=mf.SEQ_CLEAN, epoch=0, holder_id=0, holder_generation=0, holder_name="", resource="db",
                        device="m", interval_ms=1000, wall_ms=0, uuid=UUID, slot_count=SLOTS, sector_size=S)
    data[:S] = mf.encode_seq_block(clean)
    return data


class Driver:
    """One NodeCore and its world: every MMP request answered at once (or held, when asked)."""

    def __init__(self, *, regions=("disk",), resources=True, loss_budget=0, quorum=None, self_fence=False,
                 mountpoint=None, node_id=1, generation=0x1234, io_timeout_ms=DEAD // 2, mmp_interval_ms=1000):
        self.disk = area()
        specs = [core.RegionSpec(r, "disk" if r == "disk" else "net", r == "disk", r) for r in regions]
        res = {"db": core.ResourceSpec("db", TARGET, timing.MmpTiming(mmp_interval_ms, loss_budget),
                                       mountpoint=mountpoint)
               } if resources else {}
        spec = core.NodeSpec(node_id=node_id, name=f"n{node_id}", generation=generation, cluster="c",
                             interval_ms=INTERVAL,
                             dead_ms=DEAD, io_timeout_ms=io_timeout_ms, regions=tuple(specs), resources=res,
                             default_target=TARGET, default_timing=timing.MmpTiming(1000, 0), quorum=quorum,
                             self_fence=self_fence)
        self.now = 0
        self.core = core.NodeCore(spec, now_ms=0, rand=random.Random(1).randrange)
        self.inbox: list = []
        self.actions: list = []
        self.events: list = []
        self.hold_writes = False  # MMP writes hang (never answered) while set
        self.mmp_eio = False  # MMP reads fail with EIO while set
        self.hung: list = []
        self.hang_disk = False  # our slot writes hang: submitted, never completed (one in flight)
        self.disk_pending = False
        self.answer_own_slot = True

    def step(self, to_ms: int | None = None, obs=()) -> list:
        self.now = self.now if to_ms is None else to_ms
        got = self.core.step(self.now, [*self.inbox, *obs])
        self.inbox = []
        self.events += self.core.drain_events()
        for a in got:
            self._answer(a)
        self.actions += got
        return got

    def run(self, until_ms: int, step_ms: int = 10) -> list:
        out = []
        while self.now < until_ms:
            out += self.step(min(until_ms, self.now + step_ms))
        return out

    def _answer(self, a) -> None:
        if isinstance(a, core.Publish) and a.region == "disk" and self.hang_disk:
            if not self.disk_pending:  # like the region: one write in flight, no second one queued
                self.disk_pending = True
                self.inbox.append(core.IoSubmitted("disk", "write", self.now, a.beat.seq))
        elif isinstance(a, core.Publish) and a.region == "disk":
            # our slot write and a read of the area, both done at once
            self.inbox += [core.IoSubmitted("disk", "write", self.now, a.beat.seq),
                           core.IoCompleted("disk", "write", self.now, True, None, a.beat.seq, self.now),
                           core.IoSubmitted("disk", "read", self.now),
                           core.IoCompleted("disk", "read", self.now, True, submitted_ms=self.now)]
        elif isinstance(a, core.Publish):
            self.inbox += [core.IoSubmitted(a.region, "write", self.now, a.beat.seq),
                           core.IoCompleted(a.region, "write", self.now, True, None, a.beat.seq, self.now)]
        elif isinstance(a, core.RunLoss):
            self.inbox.append(core.LossDone(a.resource, a.epoch, "done", True))
        elif isinstance(a, core.ReadOwnSlot) and self.answer_own_slot:
            self.inbox.append(core.OwnSlotRead(a.region, None, None, 0, "", True, False, self.now, self.now))
        elif isinstance(a, core.MmpIo):
            r = a.request
            if r.op == "lock":
                self.inbox.append(core.MmpIoDone(gd.IoResult(r.id, self.now, self.now)))
            elif r.op == "read" and self.mmp_eio:
                self.inbox.append(core.MmpIoDone(gd.IoResult(r.id, self.now, self.now, error="EIO: Input/output error")))
            elif r.op == "read":
                data = bytes(self.disk[r.offset: r.offset + r.length])
                self.inbox.append(core.MmpIoDone(gd.IoResult(r.id, self.now, self.now, data=data)))
            elif r.op == "write":
                if self.hold_writes:
                    self.hung.append(r)
                    return
                self.disk[r.offset: r.offset + r.length] = r.data
                self.inbox.append(core.MmpIoDone(gd.IoResult(r.id, self.now, self.now)))

    def started(self) -> None:
        self.run(50)
        assert self.core.phase is core.Phase.RUNNING

    def acquire(self) -> dict:
        self.step(obs=[core.AcquireRequest(7, "db", 0, True)])
        self.run(self.now + 100)
        replies = [a.answer for a in self.actions if isinstance(a, core.Reply) and a.request_id == 7]
        assert replies, "no answer"
        return replies[-1]

    def published(self, since: int = 0) -> list[core.Publish]:
        return [a for a in self.actions[since:] if isinstance(a, core.Publish)]

    def exit(self) -> core.Exit | None:
        return next((a for a in self.actions if isinstance(a, core.Exit)), None)


def test_n2_the_claim_reads_our_slot_and_starts_beating_once_free():
    d = Driver()
    got = d.step(0)
    assert [type(a) for a in got] == [core.ReadOwnSlot] and d.core.phase is core.Phase.CLAIMING
    d.run(30)
    assert d.core.phase is core.Phase.RUNNING and d.published()


def test_n2_a_slot_in_use_refuses_to_start_with_exit_1():
    d = Driver()
    d.answer_own_slot = False
    d.step(0)
    live = [core.OwnSlotRead("disk", 0x99, s, int(SlotFlag.ACTIVE), "other", True, False, t, t)
            for s, t in ((5, 10), (6, 120))]
    d.step(10, [live[0]])
    d.step(120, [live[1]])
    assert d.exit() == core.Exit(1, "slot in use") and not d.published()


def test_n3_another_generation_in_our_slot_is_a_safety_stop_without_another_write():
    d = Driver()
    d.started()
    n = len(d.actions)
    d.step(d.now + 10, [core.OwnSlotRead("disk", 0x99, 5, 1, "impostor", True, True)])
    d.run(d.now + 300)
    assert not d.published(n) and d.exit().code == 3
    assert any(isinstance(e, core.Note) and "another daemon is running with node id 1" in e.text for e in d.events)


def test_n3_a_read_that_raced_our_first_write_judges_nothing():
    d = Driver()
    d.started()
    d.step(d.now + 10, [core.OwnSlotRead("disk", 0x99, 5, 1, "old", True, False)])  # after_write False
    assert d.core.phase is core.Phase.RUNNING


def test_n4_disk_lost_in_our_beats_while_a_disk_write_is_late():
    d = Driver()
    d.started()
    d.hang_disk = True  # the next write never completes
    d.run(d.now + DEAD // 2 + 2 * INTERVAL)
    assert d.published()[-1].beat.flags & SlotFlag.DISK_LOST


def test_n5_leaving_keeps_beating_until_the_release_and_left_comes_after_it():
    d = Driver()
    d.started()
    assert d.acquire()["ok"]
    d.hold_writes = True  # the CLEAN write hangs for a while
    n = len(d.actions)
    d.step(d.now + 1, [core.StopRequest()])
    d.run(d.now + 400)
    beats = d.published(n)
    assert beats and not any(p.beat.flags & SlotFlag.LEFT for p in beats)  # still beating, no LEFT
    assert d.core.phase is core.Phase.LEAVING
    for r in d.hung:  # the CLEAN lands and completes
        d.disk[r.offset: r.offset + r.length] = r.data
        d.inbox.append(core.MmpIoDone(gd.IoResult(r.id, d.now, d.now)))
    d.hold_writes = False
    d.run(d.now + 200)
    left = [p for p in d.published(n) if p.beat.flags & SlotFlag.LEFT]
    assert left and mf.decode_seq_block(bytes(d.disk[:S])).state == "clean"
    assert d.exit() == core.Exit(0, "left cleanly")


def test_n5_a_write_of_unknown_outcome_means_no_left_ever():
    """Issue point 6: the CLEAN write hangs past its deadline (outcome unknown: it may still land);
    the daemon stops without LEFT and exits 3."""
    d = Driver()
    d.started()
    assert d.acquire()["ok"]
    d.hold_writes = True
    n = len(d.actions)
    d.step(d.now + 1, [core.StopRequest()])
    d.run(d.now + 6000, step_ms=50)
    assert not [p for p in d.published(n) if p.beat.flags & SlotFlag.LEFT]
    assert d.exit().code == 3 and d.core.tainted
    assert any(isinstance(e, core.Note) and "not publishing LEFT" in e.text for e in d.events)


def test_n5_a_lost_hold_taints_the_daemon_for_good():
    d = Driver()
    d.started()
    assert d.acquire()["ok"]
    # someone overwrites our block: the next verify loses it, the loss action runs
    other = mf.SeqBlock(seq=9, epoch=5, holder_id=2, holder_generation=0x55, holder_name="n2", resource="db",
                        device="m", interval_ms=1000, wall_ms=0, uuid=UUID, slot_count=SLOTS, sector_size=S)
    d.disk[:S] = mf.encode_seq_block(other)
    d.run(d.now + 1500)
    loss = [a for a in d.actions if isinstance(a, core.RunLoss)]
    assert loss and "taken over" in loss[0].reason
    d.step(d.now + 1, [core.LossDone("db", loss[0].epoch, "ok", True), core.StopRequest()])
    d.run(d.now + 200)
    assert d.exit().code == 3 and not [p for p in d.published() if p.beat.flags & SlotFlag.LEFT]


def test_n6_a_stall_is_reported_once_and_named_in_guard_timeouts():
    d = Driver()
    d.started()
    d.step(d.now + timing.stall_report_ms(INTERVAL) + 500)
    stalls = [e for e in d.events if isinstance(e, core.Stalled)]
    assert len(stalls) == 1 and stalls[0].gap_ms >= timing.stall_report_ms(INTERVAL)
    d.run(d.now + 500)  # back on schedule: no more
    assert len([e for e in d.events if isinstance(e, core.Stalled)]) == 1


def test_n6_a_long_idle_sleep_asked_for_is_no_stall():
    d = Driver()
    d.step(0, [core.StopRequest()])  # stopped while claiming: the next wake-up is far away
    assert not [e for e in d.events if isinstance(e, core.Stalled)]


def test_n7_a_link_that_hears_nobody_while_peers_live_elsewhere_is_deaf_once():
    d = Driver(regions=("disk", "net"))
    d.started()
    for t in range(d.now, d.now + 3 * DEAD, INTERVAL):  # a peer beats on the disk, never on the net
        d.step(t, [Beat(2, "disk", 0x77, t // INTERVAL, 1, "n2")])
    deaf = [e for e in d.events if isinstance(e, core.Hearing)]
    assert deaf == [core.Hearing("net", False, deaf[0].silent_ms)] and deaf[0].silent_ms >= DEAD
    assert next(r for r in d.core.snapshot()["regions"] if r["name"] == "net")["receiving"] is False
    d.step(d.now + INTERVAL, [Beat(2, "net", 0x77, 10_000, 1, "n2")])
    d.step(d.now + INTERVAL)
    assert [e.receiving for e in d.events if isinstance(e, core.Hearing)] == [False, True]


def test_n9_a_death_is_declared_when_the_read_that_proves_it_completes_not_at_the_next_beat():
    d = Driver()
    d.started()
    seq = 0
    while d.now < 1000:  # the peer beats; our reads see it (each beat of ours reads the area)
        seq += 1
        d.step(d.now + INTERVAL // 2, [Beat(2, "disk", 0x77, seq, 1, "n2")])
    d.step(d.core.next_beat_ms, [Beat(2, "disk", 0x77, seq, 1, "n2")])  # a beat of ours
    seq += 1
    d.step(d.core.next_beat_ms - INTERVAL // 2, [Beat(2, "disk", 0x77, seq, 1, "n2")])  # its last, halfway
    last = d.now  # it stops here; our beats keep sampling the same seq and judging
    while d.core.next_beat_ms - last < DEAD:
        d.step(d.core.next_beat_ms, [Beat(2, "disk", 0x77, seq, 1, "n2")])
    assert not [e for e in d.events if isinstance(e, NodeStateChanged) and e.new.value == "dead"]
    t = d.core.next_beat_ms - INTERVAL // 4  # a read past the deadline completes before our next beat
    assert t - last >= DEAD
    got = d.step(t, [core.IoSubmitted("disk", "read", t), core.IoCompleted("disk", "read", t, True, submitted_ms=t),
                     Beat(2, "disk", 0x77, seq, 1, "n2")])
    assert not [a for a in got if isinstance(a, core.Publish)], "no beat of ours in this step"
    dead = [e for e in d.events if isinstance(e, NodeStateChanged) and e.new.value == "dead"]
    assert [e.node_id for e in dead] == [2], "declared at this read, not one interval later"


def test_n10_quorum_follows_liveness_at_every_beat_and_shows_in_the_snapshot():
    spec = QuorumSpec(1, {1: 1, 2: 1, 3: 1})
    d = Driver(quorum=spec)
    assert d.core.snapshot()["quorum"]["quorate"] is False
    d.started()
    assert [e.quorate for e in d.events if isinstance(e, QuorumChanged)] == [False]
    assert {p.beat.digest for p in d.published()} == {spec.digest()}  # Q3: every beat advertises ours
    seq = 0
    while d.now < 1000:  # node 2 beats: a majority of three
        seq += 1
        d.step(d.now + INTERVAL // 2, [Beat(2, "disk", 0x77, seq, 1, "n2", spec.digest())])
    assert [e.quorate for e in d.events if isinstance(e, QuorumChanged)] == [False, True]
    q = d.core.snapshot()["quorum"]
    assert (q["quorate"], q["votes"], q["expected_votes"], q["members"]) == (True, 2, 3, [1, 2])
    d.run(d.now + 2 * DEAD)  # node 2 falls silent: dead, and the quorum goes with it
    assert [e.quorate for e in d.events if isinstance(e, QuorumChanged)] == [False, True, False]
    assert d.core.snapshot()["quorum"]["members"] == [1]
    assert Driver().core.snapshot()["quorum"] is None  # no [quorum]: none claimed


@pytest.mark.parametrize("theirs", [0, 0x1234])
def test_n10_a_peer_advertising_another_cluster_is_no_member(theirs):
    spec = QuorumSpec(1, {1: 1, 2: 1, 3: 1})
    d = Driver(quorum=spec)
    d.started()
    seq = 0
    while d.now < 1000:  # node 2 beats with another node list (or none): never a member (Q3)
        seq += 1
        batch = BeatBatch("disk", [2], [0x77], [seq], [1], ["n2"], None, [theirs])
        d.step(d.now + INTERVAL // 2, [batch])
    q = d.core.snapshot()["quorum"]
    assert (q["quorate"], q["members"], q["refused"]) == (False, [1], [2])
    assert [(e.node_id, e.theirs) for e in d.events if isinstance(e, DigestMismatch)] == [(2, theirs)]
    seq += 1  # it restarts with our [quorum]: counted
    d.step(d.now + INTERVAL // 2, [BeatBatch("disk", [2], [0x77], [seq], [1], ["n2"], None, [spec.digest()])])
    d.run(d.now + 2 * INTERVAL)
    assert d.core.snapshot()["quorum"]["members"] == [1, 2]


def test_n1_phases_move_only_along_the_table():
    d = Driver()
    with pytest.raises(AssertionError, match="not a transition"):
        d.core._move(core.Phase.PUBLISHING_LEFT)


def test_the_fast_path_gets_liveness_as_data():
    d = Driver()
    d.started()
    for t in range(d.now, d.now + 500, INTERVAL):
        d.step(t, [Beat(2, "disk", 0x77, t, 1, "n2")])
    info = d.core.peer_info(2)
    assert info.state.value == "alive" and info.generation == 0x77
    assert d.core.peer_info(3).state.value == "unknown"


def test_n12_a_test_message_is_acted_on_once_and_acknowledged_in_our_slot():
    d = Driver()
    d.started()
    gen = d.core.spec.generation
    d.step(d.now + 10, [core.MailboxRead("disk", True, 0, 1, gen, 5)])
    [ev] = [e for e in d.events if isinstance(e, core.MailboxMessage)]
    assert (ev.region, ev.sender_id, ev.message, ev.seq) == ("disk", 0, "test", 5)
    d.run(d.core.next_beat_ms)
    assert d.published()[-1].beat.mailbox_acks == {"disk": 5}  # the ack goes out with our next beat
    assert d.core.snapshot()["mailbox"]["disk"]["state"] == "acknowledged"
    n = len(d.events)
    d.step(d.now + 10, [core.MailboxRead("disk", True, 0, 1, gen, 5)])  # the same message again
    d.step(d.now + 10, [core.MailboxRead("disk", True, 3, 0, 0, 6)])  # cleared by node 3, for anyone
    assert [(e.message, e.seq) for e in d.events[n:] if isinstance(e, core.MailboxMessage)] == [("clear", 6)]
    d.run(d.core.next_beat_ms)
    assert d.published()[-1].beat.mailbox_acks == {"disk": 6}


@pytest.mark.parametrize("obs, state", [
    (lambda gen: core.MailboxRead("disk", True, 0, 1, gen + 1, 7), "not for us"),  # another incarnation's
    (lambda gen: core.MailboxRead("disk", True, 2, 99, gen, 7), "not understood"),  # a code we do not know
])
def test_n12_messages_not_for_us_or_not_understood_are_never_acknowledged(obs, state):
    d = Driver()
    d.started()
    d.step(d.now + 10, [obs(d.core.spec.generation)])
    d.run(d.core.next_beat_ms + 1)
    assert not [e for e in d.events if isinstance(e, core.MailboxMessage)]
    assert d.published()[-1].beat.mailbox_acks == {}
    assert d.core.snapshot()["mailbox"]["disk"]["state"] == state
    assert [e for e in d.events if isinstance(e, core.Note) and "(seq 7)" in e.text]  # reported, once


def test_n12_an_unreadable_mailbox_is_reported_and_changes_nothing():
    d = Driver()
    d.started()
    d.step(d.now + 10, [core.MailboxRead("disk", False, error="mailbox checksum mismatch")])
    assert d.core.snapshot()["mailbox"]["disk"] == {"state": "invalid", "error": "mailbox checksum mismatch"}
    assert any(isinstance(e, core.Note) and "unreadable" in e.text for e in d.events)


def test_n12_message_codes_are_the_formats():
    from diskhb.regions.disk import format as fmt

    assert core.MAILBOX_MESSAGES == fmt.MESSAGES  # the core cannot import the format (it does no I/O)


# -- N13, N14: quorate storage, self-fencing ---------------------------------------------------------

Q3 = QuorumSpec(1, {1: 1, 2: 1, 3: 1})


def quorate(d: Driver, until_ms: int, seq0: int = 0) -> int:
    """Node 2 beats (with our [quorum]) until until_ms: we are quorate. Returns its last seq."""
    seq = seq0
    while d.now < until_ms:
        seq += 1
        d.step(d.now + INTERVAL // 2, [Beat(2, "disk", 0x77, seq, 1, "n2", Q3.digest())])
    return seq


def test_n13_a_node_without_quorum_acquires_nothing():
    d = Driver(quorum=Q3, self_fence=True)
    d.started()
    reply = d.acquire()
    assert reply["ok"] is False and reply["exit"] == 1 and "not quorate" in reply["error"]
    quorate(d, 1000)
    assert d.acquire()["ok"] is True


def test_n14_sf1_a_pill_stops_every_guard_and_the_beats_say_so():
    d = Driver(quorum=Q3, self_fence=True, mountpoint="/mnt/db")
    d.started()
    seq = quorate(d, 1000)
    assert d.acquire()["ok"] is True
    writes = sum(1 for a in d.actions if isinstance(a, core.MmpIo) and a.request.op == "write")
    gen = d.core.spec.generation
    n = len(d.actions)
    d.step(d.now + 10, [core.MailboxRead("disk", True, 2, core.MSG_FENCE, gen, 4)])
    assert d.core.phase is core.Phase.SELF_FENCED
    got = d.actions[n:]
    assert [a.reason for a in got if isinstance(a, core.SelfFence)] == ["pill"]
    assert [a.resource for a in got if isinstance(a, core.RunLoss)] == ["db"]  # its loss action runs
    seq = quorate(d, d.now + 1000, seq)
    assert [a.mountpoints for a in d.actions[n:] if isinstance(a, core.BlockReadOnly)] == [("/mnt/db",)]
    assert sum(1 for a in d.actions if isinstance(a, core.MmpIo) and a.request.op == "write") == writes, \
        "not one MMP write after the pill"
    last = d.published()[-1].beat
    assert last.flags & SlotFlag.SELF_FENCED and last.flags & SlotFlag.READ_ONLY  # fencing FD8's promise
    assert last.mailbox_acks == {"disk": 4}
    assert d.core.snapshot()["self_fence"] == {"reason": "pill", "read_only": True,
                                               "detail": "a fence message from node 2 on region disk (seq 4)"}
    reply = d.acquire()
    assert reply["ok"] is False and "fenced itself" in reply["error"]
    d.step(d.now + 10, [core.FenceRequest(9, 2)])
    assert [a.answer["ok"] for a in d.actions if isinstance(a, core.Reply) and a.request_id == 9] == [False]
    d.step(d.now + 10, [core.StopRequest()])
    assert d.exit().code == 3, "a self-fenced node never stops as if clean"


def test_n14_sf7_our_key_preempted_fences_us_like_a_pill():
    d = Driver(quorum=Q3, self_fence=True, mountpoint="/mnt/db")
    d.started()
    quorate(d, 1000)
    assert d.acquire()["ok"] is True
    n = len(d.actions)
    d.step(d.now + 10, [core.IoFenced("our key 0x1 is gone from iscsi://127.0.0.1:3260/iqn.x/1")])
    assert d.core.phase is core.Phase.SELF_FENCED
    assert [a.reason for a in d.actions[n:] if isinstance(a, core.SelfFence)] == ["io-fenced"]
    assert [a.resource for a in d.actions[n:] if isinstance(a, core.RunLoss)] == ["db"]
    assert d.core.snapshot()["self_fence"]["reason"] == "io-fenced"


def test_n11_an_operators_method_rides_on_the_fence_action():
    d = Driver(quorum=Q3, self_fence=True)
    d.started()
    quorate(d, 1000)
    d.step(d.now + 10, [core.FenceRequest(9, 2, method="scsi-pr")])
    [fence] = [a for a in d.actions if isinstance(a, core.Fence)]
    assert fence.method == "scsi-pr"


def test_n14_read_only_waits_until_no_mmp_write_of_ours_can_land():
    d = Driver(quorum=Q3, self_fence=True)
    d.started()
    seq = quorate(d, 1000)
    assert d.acquire()["ok"] is True
    d.hold_writes = True  # the next MMP write hangs
    while not d.hung:
        seq = quorate(d, d.now + 10, seq)
    issued = d.now
    d.step(d.now + 10, [core.MailboxRead("disk", True, 0, core.MSG_FENCE, 0, 1)])  # the pill, right after
    assert d.core.phase is core.Phase.SELF_FENCED
    wlm = timing.write_land_max_ms(DEAD // 2)
    seq = quorate(d, issued + wlm - 2 * INTERVAL, seq)
    assert d.published()[-1].beat.flags & SlotFlag.SELF_FENCED
    assert not d.published()[-1].beat.flags & SlotFlag.READ_ONLY, "the abandoned write may still land"
    quorate(d, issued + wlm + 2 * INTERVAL, seq)
    assert d.published()[-1].beat.flags & SlotFlag.READ_ONLY


def test_n14_sf2_losing_quorum_while_holding():
    d = Driver(quorum=Q3, self_fence=True)
    d.started()
    quorate(d, 1000)
    assert d.acquire()["ok"] is True
    d.run(d.now + 2 * DEAD)  # node 2 falls silent: quorum lost
    assert d.core.phase is core.Phase.SELF_FENCED
    assert [a.reason for a in d.actions if isinstance(a, core.SelfFence)] == ["quorum-lost"]
    assert any(isinstance(a, core.RunLoss) for a in d.actions)


def test_n14_without_self_fencing_a_pill_is_not_understood():
    d = Driver()
    d.started()
    d.step(d.now + 10, [core.MailboxRead("disk", True, 0, core.MSG_FENCE, 0, 1)])
    assert d.core.phase is core.Phase.RUNNING
    assert d.core.snapshot()["mailbox"]["disk"]["state"] == "not understood"


def test_n11_a_manual_fence_is_ordered_and_answered_at_once():
    d = Driver(quorum=Q3, self_fence=True)
    d.started()
    quorate(d, 1000)
    d.step(d.now + 10, [core.FenceRequest(9, 2)])
    [fence] = [a for a in d.actions if isinstance(a, core.Fence)]
    assert (fence.node_id, fence.generation, fence.attempt) == (2, 0x77, 1)
    [reply] = [a.answer for a in d.actions if isinstance(a, core.Reply) and a.request_id == 9]
    assert reply["ok"] and reply["generation"] == "0x77"
    d.step(d.now + 10, [core.FenceDone(2, 0x77, 1, False, "pill", "written on disk", pending=True)])
    assert d.core.snapshot()["fencing"][0]["pending"] == "pill: written on disk"
    for rid, node, why in ((10, 1, "itself"), (11, 3, "not been seen"), (12, 2, "in progress")):
        d.step(d.now + 10, [core.FenceRequest(rid, node)])
        [reply] = [a.answer for a in d.actions if isinstance(a, core.Reply) and a.request_id == rid]
        assert not reply["ok"] and why in reply["error"]
    assert len([a for a in d.actions if isinstance(a, core.Fence)]) == 1


def test_n11_a_peer_that_fenced_itself_is_released_to_the_fast_path():
    d = Driver(quorum=Q3, self_fence=True)
    d.started()
    seq = quorate(d, 1000)
    assert d.core.peer_info(2).fenced is False
    ro = int(SlotFlag.ACTIVE | SlotFlag.SELF_FENCED | SlotFlag.READ_ONLY)
    for _ in range(3):
        seq += 1
        d.step(d.now + INTERVAL // 2, [Beat(2, "disk", 0x77, seq, ro, "n2", Q3.digest())])
    d.run(d.now + INTERVAL)
    info = d.core.peer_info(2)
    assert info.fenced and info.generation == 0x77


def test_n14_a_pill_during_an_acquisition_refuses_it_without_another_write():
    d = Driver(quorum=Q3, self_fence=True)
    d.started()
    seq = quorate(d, 1000)
    d.hold_writes = True  # the claim's first write hangs
    d.step(obs=[core.AcquireRequest(7, "db", 0, True)])
    while not d.hung:
        seq = quorate(d, d.now + 10, seq)
    n = len(d.actions)
    d.step(d.now + 10, [core.MailboxRead("disk", True, 0, core.MSG_FENCE, 0, 1)])
    [reply] = [a.answer for a in d.actions if isinstance(a, core.Reply) and a.request_id == 7]
    assert not reply["ok"] and "fenced itself" in reply["error"]
    quorate(d, d.now + 2 * DEAD, seq)
    assert not [a for a in d.actions[n:] if isinstance(a, core.MmpIo) and a.request.op == "write"]


def test_n14_a_node_fenced_while_leaving_stops_once_its_loss_actions_ran():
    d = Driver(quorum=Q3, self_fence=True)
    d.started()
    seq = quorate(d, 1000)
    assert d.acquire()["ok"] is True
    d.hold_writes = True  # the release's writes hang: it keeps leaving
    d.step(d.now + 10, [core.StopRequest()])
    seq = quorate(d, d.now + 200, seq)
    assert d.core.phase is core.Phase.LEAVING
    d.step(d.now + 10, [core.MailboxRead("disk", True, 0, core.MSG_FENCE, 0, 1)])
    quorate(d, d.now + 200, seq)
    assert d.exit() is not None and d.exit().code == 3 and d.core.phase is core.Phase.STOPPED


def test_n14_sf3_the_lease_counts_from_the_first_beat_not_from_a_long_slot_claim():
    d = Driver(quorum=Q3, self_fence=True)
    d.answer_own_slot = False  # the claim waits: no verdict for longer than the lease
    d.run(DEAD + 2 * INTERVAL)
    d.answer_own_slot = True
    d.run(d.now + 2 * INTERVAL)
    assert d.core.phase is core.Phase.RUNNING, "alone, not quorate, but its writes land"
    d.hang_disk = True  # now its writes stop landing, and it is still alone
    d.run(d.now + DEAD + 2 * INTERVAL)
    assert d.core.phase is core.Phase.SELF_FENCED
    assert [a.reason for a in d.actions if isinstance(a, core.SelfFence)] == ["lease"]


# -- N15: the two-node tie-break race ------------------------------------------------------------------


def two_node(node_id: int, favoured: int) -> QuorumSpec:
    return QuorumSpec(node_id, {1: 1, 2: 1}, two_node=True, weights={favoured: 10})


@pytest.mark.parametrize("favoured", [1, 2])
def test_n15_a_split_two_node_cluster_is_broken_by_the_disk_race_and_the_favoured_node_wins(favoured):
    a = Driver(quorum=two_node(1, favoured), self_fence=True, node_id=1, generation=0x1111, resources=False)
    b = Driver(quorum=two_node(2, favoured), self_fence=True, node_id=2, generation=0x2222, resources=False)
    a.disk = b.disk = area(bound=False)  # one shared device; the nodes never see each other's beats (a split)
    for d in (a, b):
        d.started()
    while a.now < 8 * DEAD:
        for d in (a, b):
            d.step(d.now + 10)
    winner, loser = (a, b) if favoured == 1 else (b, a)
    assert winner.core.snapshot()["quorum"]["quorate"] is True
    assert "tie-break" in winner.core.snapshot()["quorum"]["reason"]
    assert loser.core.snapshot()["quorum"]["quorate"] is False
    assert [h["resource"] for h in winner.core.snapshot()["mmp"]] == ["diskhb-tiebreak"]
    assert not [h for h in loser.core.snapshot()["mmp"] if h["state"] == "held"]
    raced = [e for e in loser.events if isinstance(e, core.Note) and "racing for the tie-break" in e.text]
    assert raced, "the unfavoured node raced too, later, and lost"
    assert loser.core.phase is core.Phase.RUNNING, "not quorate, but holding nothing: no self-fence"


def test_n15_the_unfavoured_node_alone_wins_after_its_handicap():
    d = Driver(quorum=two_node(1, favoured=2), self_fence=True, resources=False)
    d.disk = area(bound=False)
    d.started()
    start = d.now
    d.run(start + 2 * DEAD - 2 * INTERVAL)
    assert d.core.snapshot()["quorum"]["quorate"] is False and not d.core.snapshot()["mmp"]
    d.run(start + 2 * DEAD + 4 * INTERVAL)
    assert d.core.snapshot()["quorum"]["quorate"] is True
    d.step(obs=[core.AcquireRequest(7, "db", 0, True)])
    d.run(d.now + 100)
    [reply] = [a.answer for a in d.actions if isinstance(a, core.Reply) and a.request_id == 7]
    assert not reply["ok"] and "no free MMP block" in reply["error"], "past N13: quorate through the tie-break"


def test_n15_the_tie_break_is_reserved():
    d = Driver(quorum=two_node(1, favoured=1), self_fence=True)
    d.started()
    d.step(obs=[core.AcquireRequest(8, "diskhb-tiebreak", 0, True)])
    [reply] = [a.answer for a in d.actions if isinstance(a, core.Reply) and a.request_id == 8]
    assert not reply["ok"] and "reserved" in reply["error"]


def test_n15_a_race_that_cannot_be_won_is_not_rerun_at_every_beat():
    d = Driver(quorum=two_node(1, favoured=1), self_fence=True)  # the only block is bound to "db"
    d.started()
    d.run(d.now + 4 * DEAD)
    raced = [e for e in d.events if isinstance(e, core.Note) and "racing for the tie-break" in e.text]
    assert len(raced) == 1 and d.core.snapshot()["quorum"]["quorate"] is False
    assert not [e for e in d.events if isinstance(e, core.Stalled)]


# -- N16: link views, the self-fence deadline --------------------------------------------------------

WD_MS = 400


def linked(**kw) -> Driver:
    return Driver(regions=("disk", "net"), quorum=Q3, self_fence=True, **kw)


def beat_both(d: Driver, seqs: dict, sees: dict, silent=()) -> None:
    """One round: every peer not silent beats on disk and net; its net beat carries `sees`."""
    obs = []
    for nid, gen in ((2, 0x77), (3, 0x88)):
        if nid in silent:
            continue
        seqs[nid] = seqs.get(nid, 0) + 1
        obs += [Beat(nid, "disk", gen, seqs[nid], 1, f"n{nid}", Q3.digest()),
                Beat(nid, "net", gen, seqs[nid], 1, f"n{nid}", Q3.digest(), frozenset(sees[nid]))]
    d.step(d.now + INTERVAL // 2, obs)


def wait_fence(d: Driver, seqs: dict, sees: dict) -> core.Fence:
    """Node 3 stays silent until we (its fencer: the member after it, wrapping) order its fence."""
    limit = d.now + 5 * DEAD
    while not any(isinstance(a, core.Fence) for a in d.actions):
        assert d.now < limit, "no fence ordered"
        beat_both(d, seqs, sees, silent=(3,))
    return next(a for a in d.actions if isinstance(a, core.Fence))


def test_n16_a_silent_victim_is_fenced_at_its_self_fence_deadline_and_released_to_the_guards():
    d = linked()
    d.core = core.NodeCore(_with_watchdog(d.core.spec), now_ms=0, rand=random.Random(1).randrange)
    d.started()
    seqs: dict = {}
    while d.now < 1000:
        beat_both(d, seqs, {2: {1, 2, 3}, 3: {1, 2, 3}})
    silent_at = d.now
    fence = wait_fence(d, seqs, {2: {1, 2}})  # node 2 lost node 3 too
    assert (fence.node_id, fence.generation) == (3, 0x88)
    d.step(d.now + 10, [core.FenceDone(3, 0x88, fence.attempt, False, "pill", "written", pending=True)])
    # no member's view showed node 3 from the first judgement after its death, a dead time after silent_at
    deadline = timing.self_fence_deadline_ms(advanced_ms=silent_at, excluded_ms=silent_at + DEAD + 2 * INTERVAL,
                                             interval_ms=INTERVAL, dead_ms=DEAD, io_timeout_ms=DEAD // 2,
                                             watchdog_ms=WD_MS)
    while d.now < deadline - 4 * INTERVAL:
        beat_both(d, seqs, {2: {1, 2}}, silent=(3,))
    assert not d.core.fencing.fenced(3, 0x88) and not d.core.peer_info(3).fenced
    while d.now < deadline + 2 * INTERVAL:
        beat_both(d, seqs, {2: {1, 2}}, silent=(3,))
    assert d.core.fencing.fenced(3, 0x88) and d.core.peer_info(3).fenced  # FP0 for its blocks
    row = d.core.snapshot()["fencing"][0]
    assert row["fenced"] and "self-fence deadline" in row["last"]


def test_n16_no_deadline_while_a_member_still_sees_the_victim():
    d = linked()
    d.core = core.NodeCore(_with_watchdog(d.core.spec), now_ms=0, rand=random.Random(1).randrange)
    d.started()
    seqs: dict = {}
    while d.now < 1000:
        beat_both(d, seqs, {2: {1, 2, 3}, 3: {1, 2, 3}})
    fence = wait_fence(d, seqs, {2: {1, 2, 3}})  # node 2 still hears node 3 on some link
    d.step(d.now + 10, [core.FenceDone(3, 0x88, fence.attempt, False, "pill", "written", pending=True)])
    while d.now < 20 * DEAD:
        beat_both(d, seqs, {2: {1, 2, 3}}, silent=(3,))
    assert not d.core.fencing.fenced(3, 0x88), "node 3 may be connected through node 2: it need not stop"


def test_n16_without_a_cluster_watchdog_a_silent_victim_is_never_fenced_by_deadline():
    d = linked()
    d.started()
    seqs: dict = {}
    while d.now < 1000:
        beat_both(d, seqs, {2: {1, 2, 3}, 3: {1, 2, 3}})
    fence = wait_fence(d, seqs, {2: {1, 2}})
    d.step(d.now + 10, [core.FenceDone(3, 0x88, fence.attempt, False, "pill", "written", pending=True)])
    while d.now < 20 * DEAD:
        beat_both(d, seqs, {2: {1, 2}}, silent=(3,))
    assert not d.core.fencing.fenced(3, 0x88), "a frozen node without a watchdog may wake and write"


def test_n16_sf3_a_node_its_peers_no_longer_hear_fences_itself_once_its_writes_stop_landing():
    d = linked()
    d.started()
    seqs: dict = {}
    while d.now < 1000:
        beat_both(d, seqs, {2: {1, 2, 3}, 3: {1, 2, 3}})
    d.hang_disk = True  # our writes stop landing, but we still hear both peers: quorate
    while d.now < 1000 + 3 * DEAD and d.core.phase is core.Phase.RUNNING:
        beat_both(d, seqs, {2: {1, 2, 3}, 3: {1, 2, 3}})
    assert d.core.phase is core.Phase.RUNNING, "they hear us on the link: a storage outage alone stops nobody"
    start = d.now
    while d.core.phase is core.Phase.RUNNING and d.now < start + 3 * DEAD:
        beat_both(d, seqs, {2: {2, 3}, 3: {2, 3}})  # a one-way link: we hear them, they do not hear us
    assert d.core.snapshot()["quorum"]["quorate"], "by our own view we are quorate"
    assert [a.reason for a in d.actions if isinstance(a, core.SelfFence)] == ["lease"]
    assert d.now - start <= timing.view_fresh_ms(INTERVAL) + 2 * INTERVAL


def _with_watchdog(spec):
    from dataclasses import replace

    return replace(spec, watchdog_ms=WD_MS)


def test_n14_a_write_given_up_that_completes_after_its_guard_ended_is_no_stuck_write():
    """The simulator's seed 158: a bump given up on (the hold lost), its guard gone once the loss
    action ran, then the write completes within write_land_max_ms: the ledger must learn it (the
    ended guard settles it), or SF4 would fence a healthy node when the bound passes."""
    # write_land_max 1.8 s; the hold (MMP interval 200 ms) is lost 1.4 s after its hung write's issue
    d = Driver(quorum=Q3, self_fence=True, io_timeout_ms=900, mmp_interval_ms=200)
    d.started()
    seq = quorate(d, 1000)
    assert d.acquire()["ok"] is True
    d.hold_writes = True
    limit = d.now + 10 * DEAD
    while "db" in d.core.held and d.now < limit:  # the bump hangs: given up, lost, loss action done
        seq = quorate(d, d.now + 10, seq)
    assert "db" not in d.core.held and d.hung
    req = d.hung[0]
    d.disk[req.offset: req.offset + req.length] = req.data  # it lands and completes, late but within F1
    d.step(d.now + 10, [core.MmpIoDone(gd.IoResult(req.id, d.now, d.now + 10))])
    assert not d.core.ledger.unknown(d.now)
    quorate(d, d.now + 3 * timing.write_land_max_ms(900), seq)
    assert d.core.phase is core.Phase.RUNNING, [a for a in d.actions if isinstance(a, core.SelfFence)]


def test_n17_a_hold_lost_to_a_failing_disk_is_claimed_back_by_the_same_daemon():
    """The CTS's seed 1047: the holder's MMP reads failed for 3 s, its hold ended lost, and its
    block, naming its own generation, was refused to it ("already held by this very process")
    and to every peer (fast_path FP1: held by a live daemon) until it restarted. Now the next
    acquisition claims its own lost block over at once, through the ballot (acquisition CL4)."""
    d = Driver()
    d.started()
    first = d.acquire()
    assert first["ok"] and first["epoch"] == 1, first
    d.mmp_eio = True
    d.run(d.now + 3000)
    assert any(isinstance(e, core.MmpEvent) and e.what == "lost" for e in d.events)
    assert "db" not in d.core.held  # its loss action ran (LossDone)
    assert d.core.lost_blocks["db"]
    d.mmp_eio = False
    d.step(obs=[core.AcquireRequest(8, "db", 0, False)])
    d.run(d.now + 200)
    (again,) = [a.answer for a in d.actions if isinstance(a, core.Reply) and a.request_id == 8]
    assert again["ok"] and again["epoch"] == 2 and "own abandoned" in again["note"], again
    assert "db" not in d.core.lost_blocks  # handed to that guard, once
