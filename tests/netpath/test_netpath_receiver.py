"""netpath.receiver: the whole receive path under fuzzing (never raises, never believes twice), and
end to end with the liveness core: what a replay the receiver must take can still do."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from diskhb.core.liveness import Liveness, NodeRestarted, NodeStateChanged
from diskhb.core.node import DuplicateId
from diskhb.core.types import Beat, NodeState, SlotFlag
from netpath import wire
from netpath.keys import KeyRing
from netpath.receiver import Receiver
from netpath.replay import REBOOT_QUIET_MS

RING = KeyRing(1, {1: bytes(range(32))})
FOREIGN = KeyRing(1, {1: bytes(range(1, 33))})
CID = wire.cluster_id("fuzz")
FUZZ = settings(derandomize=True, deadline=None, max_examples=200)

packets = st.one_of(
    st.binary(max_size=300),  # garbage
    st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(0, 20), st.integers(0, 5000),
              st.booleans(), st.integers(0, 300)),  # node, generation, seq, mono, forged?, cut
)


@given(st.lists(packets, max_size=60))
@FUZZ
def test_fuzz_receive_path_never_raises_and_never_accepts_an_old_seq(items):
    r = Receiver("fuzz", cluster="fuzz", node_id=4, keys=RING, reboot_quiet_ms=1000)
    r.own_generation = 1
    highest: dict[tuple[int, int], int] = {}
    now = 0
    total = 0
    for item in items:
        now += 100
        if isinstance(item, bytes):
            data = item
        else:
            node, gen, seq, mono, forged, cut = item
            data = wire.encode(wire.Packet(cluster_id=CID, node_id=node, generation=gen, seq=seq, mono_ms=mono),
                               FOREIGN if forged else RING)
            if cut:
                data = data[:-cut] if cut < len(data) else data
        total += 1
        got = r.handle(now, data, "fuzz")
        if isinstance(got, DuplicateId):  # another generation under our id, advancing: the node stops
            assert not isinstance(item, bytes) and item[0] == 4 and got.generation != 1, (item, got)
            continue
        if got is not None:
            assert isinstance(got, Beat) and got.node_id != 4
            key = (got.node_id, got.generation)
            assert got.seq > highest.get(key, -1)  # each (node, generation) only moves forward
            highest[key] = got.seq
    assert r.accepted_total + sum(r.rejected.values()) + r.own_looped == total
    assert len(r.views) <= 3 and len(r.guard) <= 3


def test_a_recording_replayed_after_reboot_quiet_is_accepted_by_the_link_but_fakes_no_leave():
    """End to end: node 2's packets recorded during an earlier boot, LEFT last, replayed on a
    link it has been silent on for reboot_quiet_ms (cut), while it beats on the disk. The
    receiver must take them (netpath.replay P4b: nothing on a one-way medium can tell them from
    a reboot); the liveness core must not make the node LEFT or restarted (R4, R5)."""
    interval_ms, dead_ms = 200, 2000
    ring_cid = wire.cluster_id("e2e")
    rx = Receiver("net", cluster="e2e", node_id=1, keys=RING)  # the default reboot_quiet_ms
    rx.own_generation = 11
    lv = Liveness(self_id=1, interval_ms=interval_ms, dead_ms=dead_ms)
    active, left = int(SlotFlag.ACTIVE), int(SlotFlag.LEFT)

    def packet(gen: int, seq: int, mono_ms: int, flags: int = active) -> bytes:
        return wire.encode(wire.Packet(cluster_id=ring_cid, node_id=2, generation=gen, seq=seq, mono_ms=mono_ms,
                                       flags=flags, name="n2"), RING)

    # An earlier, longer boot of node 2 (generation 5): its clock ran far; it ended with LEFT.
    recording = [packet(5, s, 9_000_000 + interval_ms * s) for s in range(1, 40)]
    recording.append(packet(5, 40, 9_000_000 + interval_ms * 40, left))
    events, seq = [], 0

    def beat(now: int, on_net: bool) -> None:  # the running daemon, generation 7
        nonlocal seq
        seq += 1
        lv.observe(now, Beat(2, "disk", 7, seq, active, "n2"))
        if on_net:
            got = rx.handle(now, packet(7, seq, 50_000 + now), "10.0.0.2")
            assert got is not None and got.generation == 7
            lv.observe(now, got)

    for now in range(0, 2000, interval_ms):
        beat(now, on_net=True)
        events += lv.tick(now)
    assert lv.node(2).state is NodeState.ALIVE
    cut = now  # the link is cut from here; the disk goes on
    for now in range(cut + interval_ms, cut + REBOOT_QUIET_MS + interval_ms, interval_ms):
        beat(now, on_net=False)
        events += lv.tick(now)
    replayed = iter(recording)
    for now in range(now + interval_ms, now + 3000, interval_ms):
        beat(now, on_net=False)
        for k, data in zip(range(4), replayed):  # four recorded packets per beat, between beats
            got = rx.handle(now + 10 * (k + 1), data, "10.0.0.66")
            assert got is not None and got.generation == 5  # taken: P4b, then P2
            lv.observe(now + 10 * (k + 1), got)
        events += lv.tick(now + 50)
    assert next(replayed, None) is None and rx.guard.current(2) == (5, 40)  # the LEFT was taken too
    for now in range(now + interval_ms, now + 3000, interval_ms):
        beat(now, on_net=False)
        events += lv.tick(now)
    assert [e for e in events if isinstance(e, NodeRestarted)] == []
    assert [(e.old, e.new) for e in events if isinstance(e, NodeStateChanged)] == [
        (NodeState.UNKNOWN, NodeState.ALIVE)]  # once, at the start: never LEFT, never anything else
    view = lv.node(2)
    assert (view.state, view.generation) == (NodeState.ALIVE, 7)
    assert view.regions["disk"].state is NodeState.ALIVE and view.regions["net"].candidate == 5
