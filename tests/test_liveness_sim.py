"""Simulated cluster under a virtual clock: random pauses, crashes, leaves, restarts, corrupt
samples and region outages, thousands of ticks per seed. The liveness core must
  - never declare a running node dead (pauses stay below dead_ms minus the sampling slack),
  - declare a crashed node dead within dead_ms + 2 intervals (+ jitter) of its last write,
  - show a node that left as left, never dead,
  - report every restart.
"""

import random
from dataclasses import dataclass

import pytest

from diskhb.core.liveness import Liveness, NodeRestarted, NodeStateChanged
from diskhb.core.types import BadSample, Beat, NodeState, SlotFlag

INTERVAL_MS, DEAD_MS, JITTER_MS = 200, 2000, 30
# A writer pause of at most this can never look like death: the reader may see the last write up
# to one interval + jitter late and the next one up to one interval + jitter late.
SAFE_PAUSE_MS = DEAD_MS - 2 * (INTERVAL_MS + JITTER_MS) - INTERVAL_MS


@dataclass
class SimNode:
    node_id: int
    generation: int
    seq: int = 0
    flags: int = int(SlotFlag.ACTIVE)
    next_write_ms: int = 0
    paused_until_ms: int = 0
    crashed_ms: int | None = None
    last_write_ms: int = 0
    left: bool = False


def run_sim(seed: int, *, nodes: int, regions: tuple[str, ...], duration_ms: int,
            region_outages: bool) -> dict:
    rng = random.Random(seed)
    lv = Liveness(self_id=1, interval_ms=INTERVAL_MS, dead_ms=DEAD_MS)
    sim = {i: SimNode(i, generation=rng.getrandbits(63) | 1, next_write_ms=rng.randrange(INTERVAL_MS))
           for i in range(2, nodes + 2)}
    # per (node, region): the (generation, seq, flags) the region currently shows
    shown: dict[tuple[int, str], tuple[int, int, int]] = {}
    blind_until: dict[tuple[int, str], int] = {}
    dead_seen: dict[int, int] = {}
    restarts = 0
    stats = {"ticks": 0, "crashes": 0, "leaves": 0, "restarts": 0, "pauses": 0, "detect_ms": []}
    expected_restarts = 0
    now = 0
    next_read = 0
    while now < duration_ms:
        # writers
        for n in sim.values():
            if n.crashed_ms is not None or n.left or now < n.paused_until_ms or now < n.next_write_ms:
                continue
            r = rng.random()
            if r < 0.0004:  # crash
                n.crashed_ms = now
                stats["crashes"] += 1
                continue
            if r < 0.0006:  # clean leave
                n.seq += 1
                n.flags = int(SlotFlag.LEFT)
                n.left = True
                stats["leaves"] += 1
            elif r < 0.0009:  # restart: new generation right away
                n.generation = rng.getrandbits(63) | 1
                n.seq = 0
                expected_restarts += 1
                stats["restarts"] += 1
            elif r < 0.003:  # a pause (GC, busy CPU, slow disk) that must not look like death
                n.paused_until_ms = now + rng.randrange(INTERVAL_MS, SAFE_PAUSE_MS)
                stats["pauses"] += 1
            n.seq += 1
            n.last_write_ms = now
            for region in regions:
                shown[(n.node_id, region)] = (n.generation, n.seq, n.flags)
            n.next_write_ms = now + INTERVAL_MS + rng.randrange(-JITTER_MS, JITTER_MS + 1)
        # the reader (the daemon's tick)
        if now >= next_read:
            stats["ticks"] += 1
            if region_outages and len(regions) > 1 and rng.random() < 0.01:
                node_id = rng.choice(list(sim))
                region = rng.choice(regions)
                others_blind = any(blind_until.get((node_id, r), 0) > now for r in regions if r != region)
                if not others_blind:  # never blind on every region at once
                    blind_until[(node_id, region)] = now + rng.randrange(DEAD_MS, 4 * DEAD_MS)
            for (node_id, region), (gen, seq, flags) in shown.items():
                if blind_until.get((node_id, region), 0) > now:
                    continue
                if rng.random() < 0.02:
                    lv.observe(now, BadSample(node_id, region, "checksum mismatch"))
                else:
                    lv.observe(now, Beat(node_id, region, gen, seq, flags))
            for ev in lv.tick(now):
                if isinstance(ev, NodeRestarted):
                    restarts += 1
                if isinstance(ev, NodeStateChanged) and ev.new is NodeState.DEAD:
                    n = sim[ev.node_id]
                    assert n.crashed_ms is not None, f"seed {seed}: false death of running node {ev.node_id} at {now}"
                    dead_seen[ev.node_id] = now
                    stats["detect_ms"].append(now - n.last_write_ms)
            next_read = now + INTERVAL_MS + rng.randrange(-JITTER_MS, JITTER_MS + 1)
        now += 5
    for n in sim.values():
        view = lv.node(n.node_id)
        if n.crashed_ms is not None and now - n.last_write_ms > DEAD_MS + 2 * (INTERVAL_MS + JITTER_MS):
            assert n.node_id in dead_seen, f"seed {seed}: crash of node {n.node_id} not detected"
        if n.left:
            assert view.state is NodeState.LEFT, f"seed {seed}: node {n.node_id} left but is {view.state}"
    for d in stats["detect_ms"]:
        assert DEAD_MS <= d <= DEAD_MS + 2 * (INTERVAL_MS + JITTER_MS) + 5, (seed, d)
    assert restarts == expected_restarts
    return stats


@pytest.mark.parametrize("seed", range(6))
def test_single_region_random_faults(seed):
    stats = run_sim(seed, nodes=12, regions=("disk",), duration_ms=400_000, region_outages=False)
    assert stats["ticks"] >= 1900
    assert stats["crashes"] + stats["leaves"] + stats["restarts"] + stats["pauses"] > 0


@pytest.mark.parametrize("seed", range(4))
def test_two_regions_with_outages_never_kill_a_node_seen_elsewhere(seed):
    stats = run_sim(100 + seed, nodes=8, regions=("disk", "net"), duration_ms=400_000, region_outages=True)
    assert stats["ticks"] >= 1900


def test_total_simulated_ticks_is_large():
    """Thousands of simulated ticks across seeds: the whole file runs 10 x 2000 = 20,000 ticks."""
    stats = run_sim(999, nodes=4, regions=("disk",), duration_ms=2_000_000, region_outages=False)
    assert stats["ticks"] >= 9_500
