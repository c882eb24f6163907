"""Name binding under a race: claimants of different names --create'ing into one fresh region.

diskhb/mmp/binding.py NB1-NB3: a never-used block is bound to a name by instance 1 of its
ballot; blocks are walked in index order (diskhb.mmp.guard.Guard) and skipped only once their
binding is decided and is another name, so one name is never bound to two blocks. Here threads
(each its own Runner driving a Guard, and node id)
race to bind and hold names on a shared in-memory disk (diskhb.mmp.store.MemoryStore,
sector-atomic) with random pauses before every I/O, over many fresh regions. Checked: each
name ends on exactly one block, different names on different blocks, every holder of a name
held it on that block, and epochs per block are unique.
"""

from __future__ import annotations

import random
import threading
import time

import pytest

from diskhb.mmp.guard import BlockLocation
from diskhb.mmp.runner import Runner
from diskhb.mmp.store import MemoryStore, Target

from mmp_drive import acquire, claimant as make_claimant, release

S = 512
SLOTS = 4
BLOCKS = 3
UUID = b"\x77" * 16


class Jittery:
    def __init__(self, store: MemoryStore, rng: random.Random):
        self.store, self.rng = store, rng

    def _pause(self) -> None:
        if self.rng.random() < 0.5:
            time.sleep(self.rng.random() * 0.002)

    def read(self, offset, length, *, timeout_ms=None):
        self._pause()
        return self.store.read(offset, length)

    def write(self, offset, data, *, timeout_ms=None):
        self._pause()
        return self.store.write(offset, data)

    def __getattr__(self, name):
        return getattr(self.store, name)


def fresh_target(store) -> Target:
    span = (1 + SLOTS) * S
    blocks = tuple(BlockLocation(label=f"mem block {k}", base=k * span, sector_size=S, slot_count=SLOTS,
                                 uuid=UUID, index=k) for k in range(BLOCKS))
    return Target(path="<memory>", store=store, blocks=blocks, uuid=UUID, standalone=False)


def trial(seed: int, names: list[str]) -> list[tuple[str, int, int]]:
    disk = MemoryStore(BLOCKS * (1 + SLOTS) * S)
    got: list[tuple[str, int, int]] = []
    errors: list[BaseException] = []

    def claimant(node_id: int, name: str) -> None:
        rng = random.Random(seed * 31 + node_id)
        runner = Runner(fresh_target(Jittery(disk, rng)), rand=rng.randrange)
        try:
            for _ in range(2):
                time.sleep(rng.random() * 0.003)
                me = make_claimant(node_id, name, 20, generation=rng.randrange(1, 2**63), device="mem")
                held = acquire(runner, me, create=True, wait_ms=10_000)
                got.append((name, held.loc.index, held.epoch))
                time.sleep(rng.random() * 0.002)
                gone = release(held)
                assert gone is not None and gone.released, gone
        except Exception as e:  # noqa: BLE001 - refusals (OperatorError), failed asserts: handed to the test
            errors.append(e)

    threads = [threading.Thread(target=claimant, args=(i + 1, n), daemon=True) for i, n in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a claimant did not finish in 30 s"
    assert not errors, errors
    # On disk: each name committed on one block.
    runner = Runner(fresh_target(disk))
    on_disk = {}
    for loc, view in runner.views():
        if view.seq is not None:
            assert view.seq.resource not in on_disk, f"{view.seq.resource} on blocks {on_disk} and {loc.index}"
            on_disk[view.seq.resource] = loc.index
    for name, index, _ in got:
        assert on_disk[name] == index, f"seed {seed}: {name} held on block {index}, bound to {on_disk[name]}"
    per_block: dict[int, list[int]] = {}
    for _, index, epoch in got:
        per_block.setdefault(index, []).append(epoch)
    for index, epochs in per_block.items():
        assert len(set(epochs)) == len(epochs), f"seed {seed}: block {index} epochs {epochs}"
    return got


@pytest.mark.parametrize("names", [["a", "b"], ["a", "b", "a", "b"], ["a", "b", "c", "a"]])
def test_racing_creates_bind_each_name_to_one_block(names):
    bound_to_block0 = set()
    for seed in range(25):
        got = trial(seed, names)
        assert len(got) == 2 * len(names)
        bound_to_block0 |= {n for n, i, _ in got if i == 0}
    assert len(bound_to_block0) > 1, "the race for block 0 always went the same way: not a race"
