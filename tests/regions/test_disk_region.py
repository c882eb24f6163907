"""DiskRegion through its Region interface: publish()/poll()/request_own_slot() against a real
region file (O_DIRECT on a disk filesystem), and on a FaultDisk whose writes hang.

What a disk region owes the node core (diskhb.regions.base, diskhb.core.node):
- every I/O of ours comes out of poll() as IoSubmitted/IoCompleted, a write tagged with the
  beat's seq (the core matches the LEFT write by it);
- our own slot is reported as OwnSlotRead, with after_write only for a read submitted after one
  of our writes had completed (only such a read can judge what our slot must hold, core N3: a
  read racing our first write may still see an earlier incarnation's slot);
- other nodes' slots come as one BeatBatch per read, dated by the read's submission;
- a hung write is submitted and never completed while it hangs, and publish/poll never wait.

Times are the real monotonic clock the region's workers date completions with. Every region is
closed and every FaultDisk torn down in a finaliser, pass or fail.
"""

from __future__ import annotations

import os
import time

import pytest

from diskhb.core.node import IoCompleted, IoSubmitted, OwnBeat, OwnSlotRead
from diskhb.core.region_health import OwnIoHealth
from diskhb.core.types import BeatBatch, SlotFlag
from diskhb.regions.disk.make import make_region
from diskhb.regions.disk.region import DiskRegion
from diskhb.runtime import monotonic_ms

WAIT_S = 5.0
CLUSTER = "test-cluster"
ACTIVE = int(SlotFlag.ACTIVE)


def format_region(path: str, slots: int = 8):
    return make_region(path, cluster=CLUSTER, slots=slots, sector_size=512, interval_ms=200, dead_ms=2000,
                       io_timeout_ms=None, mmp_resources=0, force=False)


@pytest.fixture
def regions():
    """Start DiskRegions through this; all are closed at the end, even on failure."""
    made: list[DiskRegion] = []

    def make(path: str, node_id: int, name: str = "disk:r") -> DiskRegion:
        r = DiskRegion(name, path, node_id=node_id, node_name=f"n{node_id}", clock_ms=monotonic_ms)
        made.append(r)
        r.start(monotonic_ms())
        return r

    try:
        yield make
    finally:
        for r in made:
            r.close()


def beat(node_id: int, generation: int, seq: int, flags: int = ACTIVE, digest: int = 0) -> OwnBeat:
    return OwnBeat(node_id, f"n{node_id}", generation, seq, flags, 1_000_000 + 200 * seq, {}, digest)


def poll_until(region: DiskRegion, done, what: str, timeout_s: float = WAIT_S) -> list:
    """Poll (never blocking) until done(everything polled so far) holds; bounded."""
    got: list = []
    deadline = time.monotonic() + timeout_s
    while True:
        got += region.poll(monotonic_ms())
        if done(got):
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not seen within {timeout_s} s: {got}")
        time.sleep(0.002)


def completed(kind: str, tag=None):
    """done() for poll_until: a completion of `kind` (with that tag, for writes) came."""
    return lambda got: any(isinstance(o, IoCompleted) and o.kind == kind and (tag is None or o.tag == tag)
                           for o in got)


def by_read(obs: list) -> list[tuple[object, int | None]]:
    """(observation, submitted_ms of the read it came from) for every OwnSlotRead/BeatBatch:
    poll() puts a read's IoCompleted right before what that read decoded."""
    out, read_at = [], None
    for o in obs:
        if isinstance(o, IoCompleted) and o.kind == "read":
            read_at = o.submitted_ms
        elif isinstance(o, (OwnSlotRead, BeatBatch)):
            out.append((o, read_at))
    return out


def test_publish_and_poll_report_our_io_our_slot_and_a_peers_batch(disk_tmp_path, regions):
    path = os.path.join(disk_tmp_path, "region.img")
    format_region(path)
    old_gen, gen, peer_gen = 0x0D1, 0xA1, 0xB2
    # An earlier incarnation of node 1 left its slot behind.
    earlier = regions(path, 1, name="disk:earlier")
    earlier.publish(monotonic_ms(), beat(1, old_gen, 41), 0)
    poll_until(earlier, completed("write", 41), "the earlier incarnation's write")
    earlier.close()

    a = regions(path, 1)
    b = regions(path, 2)
    # The start-up claim reads our slot alone: what is there, never "after a write".
    a.request_own_slot(monotonic_ms())
    claim = poll_until(a, lambda got: any(isinstance(o, OwnSlotRead) for o in got), "the claim read")
    got = [o for o in claim if isinstance(o, OwnSlotRead)]
    assert [(o.region, o.generation, o.seq, o.flags, o.name, o.valid, o.after_write)
            for o in got] == [("disk:r", old_gen, 41, ACTIVE, "n1", True, False)]
    # dated by its read (the claim's watch runs from one read's completion to a later submission)
    assert 0 < got[0].submitted_ms <= got[0].completed_ms

    # Our first beat: the write (tagged with its seq) and a read submitted at the same moment.
    t0 = monotonic_ms()
    a.publish(t0, beat(1, gen, 1), 0)
    obs = poll_until(a, lambda got: completed("write", 1)(got) and completed("read")(got), "beat 1's I/O")
    assert obs[:2] == [IoSubmitted("disk:r", "write", t0, 1), IoSubmitted("disk:r", "read", t0, None)]
    (w1,) = [o for o in obs if isinstance(o, IoCompleted) and o.kind == "write"]
    assert (w1.ok, w1.error, w1.tag, w1.submitted_ms) == (True, None, 1, t0) and w1.at_ms >= t0
    (r1,) = [o for o in obs if isinstance(o, IoCompleted) and o.kind == "read"]
    assert (r1.ok, r1.submitted_ms) == (True, t0) and r1.at_ms >= t0
    # That read raced our write: whichever incarnation it saw, it cannot judge our slot.
    slots = [(o, at) for o, at in by_read(obs) if isinstance(o, OwnSlotRead)]
    assert len(slots) == 1 and slots[0][0].after_write is False
    assert (slots[0][0].generation, slots[0][0].seq) in {(old_gen, 41), (gen, 1)}

    # A second writer beats in its own slot.
    time.sleep(0.003)  # the next reads are submitted in a later millisecond than w1 completed
    b.publish(monotonic_ms(), beat(2, peer_gen, 7, digest=0xC0FFEE), 0)  # quorum Q3: its cluster digest
    poll_until(b, completed("write", 7), "the peer's write")

    t2 = monotonic_ms()
    assert t2 > w1.at_ms
    a.publish(t2, beat(1, gen, 2), 0)
    obs2 = poll_until(a, lambda got: completed("write", 2)(got) and completed("read")(got), "beat 2's I/O")
    assert obs2[:2] == [IoSubmitted("disk:r", "write", t2, 2), IoSubmitted("disk:r", "read", t2, None)]
    batches = [(o, at) for o, at in by_read(obs2) if isinstance(o, BeatBatch)]
    assert batches == [(BeatBatch("disk:r", [2], [peer_gen], [7], [ACTIVE], ["n2"], seen_ms=t2, digests=[0xC0FFEE]),
                        t2)]

    # Our slot is reported when a read finds it changed; each read races the write submitted
    # with it, so which beat's read reports it first varies: beat on (bounded) until one has.
    later, seq = list(obs2), 2
    while not any(isinstance(o, OwnSlotRead) for o in later) and seq < 20:
        seq += 1
        now = monotonic_ms()
        a.publish(now, beat(1, gen, seq), 0)
        later += poll_until(a, lambda got: completed("write", seq)(got) and completed("read")(got), f"beat {seq}")
    own = [o for o, _ in by_read(later) if isinstance(o, OwnSlotRead)]
    assert own and own[0].after_write is True and own[0].valid
    assert (own[0].generation, own[0].name, own[0].flags) == (gen, "n1", ACTIVE) and 1 <= own[0].seq <= seq
    assert not [o for o in later if isinstance(o, BeatBatch) and o is not batches[0][0]]  # node 2 is unchanged

    # The rule over everything polled: after_write exactly for reads submitted after our first
    # write completed; every write carries its beat's seq, submitted and completed in order.
    for o, read_at in by_read(obs + later):
        if isinstance(o, OwnSlotRead):
            assert o.after_write == (read_at > w1.at_ms), (o, read_at, w1.at_ms)
    writes = [(type(o).__name__, o.tag) for o in obs + later
              if isinstance(o, (IoSubmitted, IoCompleted)) and o.kind == "write"]
    assert writes == [(kind, k) for k in range(1, seq + 1) for kind in ("IoSubmitted", "IoCompleted")]
    assert a.counters()["writes"] == seq and a.counters()["reads"] == seq + 1  # the claim read, one per beat

@pytest.mark.root
def test_a_hung_write_is_submitted_never_completed_and_nothing_blocks(faultdisk, regions):
    """FaultDisk write=hang: our write is submitted (IoSubmitted, its seq) and does not complete
    while it hangs; later beats are skipped on the busy writer (no second write queued behind
    it), reads go on, and publish/poll each return within a few ms. An OwnIoHealth fed from
    poll() calls our write late; once the disk answers, the write completes (late) with its tag
    and the next one makes the region healthy again."""
    format_region(faultdisk.path)
    a = regions(faultdisk.path, 1)
    io_timeout_ms = 100
    h = OwnIoHealth("disk:r", io_timeout_ms)
    all_obs: list = []

    def take(obs: list) -> list:
        for o in obs:
            if isinstance(o, IoSubmitted):
                h.submitted(o.at_ms, o.kind)
            elif isinstance(o, IoCompleted):
                h.completed(o.at_ms, o.kind, o.ok, o.error)
        all_obs.extend(obs)
        return obs

    gen = 0xA1
    a.publish(monotonic_ms(), beat(1, gen, 1), 0)
    take(poll_until(a, completed("write", 1), "beat 1's write"))
    try:
        faultdisk.set(write="hang")
        t_hang = monotonic_ms()
        a.publish(t_hang, beat(1, gen, 2), 0)
        faultdisk.wait_hung("write")
        mark = len(all_obs)
        seq = 2
        t_end = time.monotonic() + 3 * io_timeout_ms / 1000
        while time.monotonic() < t_end:
            seq += 1
            now = monotonic_ms()
            t0 = time.perf_counter()
            a.publish(now, beat(1, gen, seq), 0)
            t1 = time.perf_counter()
            take(a.poll(now))
            t2 = time.perf_counter()
            assert t1 - t0 < 0.05 and t2 - t1 < 0.05, (
                f"publish took {(t1 - t0) * 1000:.1f} ms, poll {(t2 - t1) * 1000:.1f} ms while a write hung")
            time.sleep(0.005)
        hung = all_obs[mark:]
        writes = [o for o in all_obs if isinstance(o, (IoSubmitted, IoCompleted)) and o.kind == "write"]
        assert [(type(o).__name__, o.tag) for o in writes] == [
            ("IoSubmitted", 1), ("IoCompleted", 1), ("IoSubmitted", 2)]  # submitted, never completed
        assert writes[-1].at_ms == t_hang
        reads = [o for o in hung if isinstance(o, IoCompleted) and o.kind == "read"]
        assert len(reads) >= 5 and all(r.ok for r in reads)  # reads go on beside the hung write
        assert not [o for o in all_obs if isinstance(o, OwnSlotRead) and o.generation != gen]
        now = monotonic_ms()
        h.tick(now)
        assert not h.healthy and h.reason.startswith("own write late: in flight"), h.reason
    finally:
        faultdisk.set(all="ok")
    done = take(poll_until(a, completed("write", 2), "the hung write's completion"))
    (w2,) = [o for o in done if isinstance(o, IoCompleted) and o.kind == "write"]
    assert w2.ok and w2.tag == 2 and w2.submitted_ms == t_hang and w2.at_ms - t_hang >= 3 * io_timeout_ms
    seq += 1
    a.publish(monotonic_ms(), beat(1, gen, seq), 0)
    take(poll_until(a, completed("write", seq), "the next write"))
    h.tick(monotonic_ms())
    assert h.healthy, h.reason
