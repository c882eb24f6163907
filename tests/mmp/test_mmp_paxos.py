"""Disk Paxos alone (diskhb.mmp.paxos): any interleaving decides at most one value per instance.

diskhb/mmp/paxos.py promises: "any interleaving of any number of proposers' writes and reads
decides at most one value per instance". Here proposers run the real start_ballot /
after_phase1 / after_phase2 against an in-memory set of ballot sectors, under a random
scheduler, with one thing a real disk does that tests/test_mmp_sim.py does not model: a
read of all sectors is NOT one atomic snapshot. Each sector is sampled at its own moment,
and other proposers' writes land in between (one O_DIRECT read of many sectors gives no
more than per-sector atomicity). Proposers also crash between steps and come back as a new
process with the same node id (a new CLI run), carrying over what their sector holds.

Checked: every Chosen at one instance is the same value, and each value a node learns as
chosen was proposed by someone (no value out of thin air).
"""

from __future__ import annotations

import random

import pytest

from diskhb.mmp import format as mf
from diskhb.mmp import paxos

UUID = b"\x33" * 16
S = 512


class Sectors:
    """Node i's ballot sector; writes go through encode/decode like the disk's bytes do."""

    def __init__(self, n: int):
        self.raw = {i: bytes(S) for i in range(1, n + 1)}

    def write(self, b: mf.Ballot) -> None:
        self.raw[b.node_id] = mf.encode_ballot(b, S)

    def read(self, node_id: int) -> mf.Ballot | None:
        return mf.decode_ballot(self.raw[node_id], expect_node_id=node_id)


def proposal(node_id: int, gen: int) -> mf.Proposal:
    return mf.Proposal(node_id=node_id, generation=gen, holder_name=f"n{node_id}", resource="db",
                       interval_ms=1000, basis_epoch=0, basis_seq=0, basis_holder=0)


def read_all(disk: Sectors, rng: random.Random):
    """Sample the sectors one by one, in a random order, yielding between samples."""
    seen = {}
    order = list(disk.raw)
    rng.shuffle(order)
    for node_id in order:
        yield
        b = disk.read(node_id)
        if b is not None:
            seen[node_id] = b
    return seen


def proposer(disk: Sectors, rng: random.Random, node_id: int, gen: int, lver: int, out: list, attempts: int):
    value = proposal(node_id, gen)
    for _ in range(attempts):
        seen = yield from read_all(disk, rng)
        if any(b.lver > lver for b in seen.values()):
            return
        mine = paxos.start_ballot(node_id, lver, seen, uuid=UUID, writer_generation=gen, resource="db",
                                  wall_ms=0)
        yield
        disk.write(mine)
        seen = yield from read_all(disk, rng)
        nxt = paxos.after_phase1(mine, seen, value, wall_ms=0)
        assert not isinstance(nxt, paxos.Conflict), nxt
        if isinstance(nxt, paxos.Abort):
            continue
        yield
        disk.write(nxt)
        seen = yield from read_all(disk, rng)
        res = paxos.after_phase2(nxt, seen)
        assert not isinstance(res, paxos.Conflict), res
        if isinstance(res, paxos.Chosen):
            out.append((res.lver, res.value, node_id, gen))
            return


def run(seed: int, nodes: int, crash_p: float, steps_max: int = 200_000) -> list:
    rng = random.Random(seed)
    disk = Sectors(nodes)
    chosen: list = []
    proposed: set = set()
    live = {}
    restarts = {n: 3 for n in range(1, nodes + 1)}

    def start(n: int) -> None:
        gen = rng.randrange(1, 2**63)
        proposed.add((n, gen))
        live[n] = proposer(disk, rng, n, gen, 1, chosen, attempts=rng.randint(1, 6))

    for n in range(1, nodes + 1):
        start(n)
    for _ in range(steps_max):
        if not live:
            break
        n = rng.choice(list(live))
        if rng.random() < crash_p:  # this process dies; maybe a new one of the node comes later
            del live[n]
            if restarts[n] > 0:
                restarts[n] -= 1
                start(n)
            continue
        try:
            next(live[n])
        except StopIteration:
            del live[n]
    else:
        raise AssertionError("proposers did not finish")
    values = {v for lver, v, *_ in chosen}
    assert len(values) <= 1, f"seed {seed}: instance 1 decided {len(values)} values: {values}"
    for _, v, *_ in chosen:
        assert (v.node_id, v.generation) in proposed
    return chosen


@pytest.mark.parametrize("nodes, crash_p", [(2, 0.0), (3, 0.0), (5, 0.0), (3, 0.02), (6, 0.01)])
def test_one_value_per_instance_under_random_interleavings(nodes, crash_p):
    decided = 0
    for seed in range(300):
        decided += bool(run(seed * 7919 + nodes, nodes, crash_p))
    assert decided > 100  # most runs decide: the test is not vacuous


def test_a_lone_proposer_decides_its_own_value_in_one_round():
    out = run(1, 1, 0.0)
    assert len(out) == 1 and out[0][1].node_id == 1
