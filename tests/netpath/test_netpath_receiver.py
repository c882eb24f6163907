"""netpath.receiver: the whole receive path under fuzzing (never raises, never believes twice)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from diskhb.core.types import Beat
from netpath import wire
from netpath.keys import KeyRing
from netpath.receiver import Receiver

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
        if got is not None:
            assert isinstance(got, Beat) and got.node_id != 4
            key = (got.node_id, got.generation)
            assert got.seq > highest.get(key, -1)  # each (node, generation) only moves forward
            highest[key] = got.seq
    assert r.accepted_total + sum(r.rejected.values()) + r.own_looped == total
    assert len(r.views) <= 3 and len(r.guard) <= 3
