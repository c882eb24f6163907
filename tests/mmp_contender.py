"""One contender process of the MMP race test (tests/test_mmp_race.py).

    python tests/mmp_contender.py REGION NODE_ID RESOURCE AUDIT ROUNDS DEADLINE_S SEED INTERVAL_MS

Loops until it has held RESOURCE ROUNDS times or DEADLINE_S passed: acquire (no wait), and
while holding append "<node> <epoch> begin" and, after a random pause, "<node> <epoch> end" to
AUDIT (O_APPEND: every record lands whole, in the order written on this host), then release
(CLEAN). Refusals are expected; it pauses a random moment and tries again. Every store
read/write is delayed by a random 0-2 ms now and then, so the ballot's I/O interleaves in
ever different orders across the contenders. It also counts its ballot writes per attempt, so
the test can tell real Paxos races (a refusal after we balloted: another claimant won the same
instance; a win that took more than one round) from refusals of a block already seen held.
Prints "held N refused M contested C rounds R" and exits 0; exits 4 on a refusal that must
never happen here (any reason but a live holder, a lost ballot or a slow-storage give-up).
"""

from __future__ import annotations

import os
import random
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from diskhb.errors import OperatorError, Refused as RefusedError  # noqa: E402
from diskhb.mmp import format as mf  # noqa: E402
from diskhb.mmp import guard as g  # noqa: E402
from diskhb.mmp.runner import Runner  # noqa: E402
from diskhb.mmp.store import open_region_target  # noqa: E402
from diskhb.runtime import new_generation  # noqa: E402


# A live holder (seen held, or changed while watched, or just won by another), ballot rounds
# lost to other claimants, and the commit window's give-up on a slow disk (a loaded machine).
# Anything else (a conflict on our own ballot sector, an unreadable block, our write
# overwritten at once) would mean two writers or a broken block: the test fails on it.
EXPECTED = re.compile(r"held by |just won by |ballot rounds|no decision after|not safe to hold; storage too slow")


class JitteryStore:
    """The real store, with a random short pause before some I/Os."""

    def __init__(self, store, rng: random.Random, seq_offsets: set[int]):
        self.store, self.rng = store, rng
        self.seq_offsets = seq_offsets
        self.ballot_writes = 0

    def _pause(self) -> None:
        if self.rng.random() < 0.3:
            time.sleep(self.rng.random() * 0.002)

    def read(self, offset, length, *, timeout_ms=None):
        self._pause()
        return self.store.read(offset, length, timeout_ms=timeout_ms)

    def write(self, offset, data, *, timeout_ms=None):
        self._pause()
        if offset not in self.seq_offsets:
            self.ballot_writes += 1
        return self.store.write(offset, data, timeout_ms=timeout_ms)

    def __getattr__(self, name):
        return getattr(self.store, name)


def main() -> int:
    region, node_id, resource, audit = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    rounds, deadline_s, seed, interval_ms = int(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
    rng = random.Random(seed)
    t = open_region_target(region, writable=True)
    runner = Runner(t)
    store = runner.store = JitteryStore(t.store, rng, {loc.base for loc in t.blocks})
    fd = os.open(audit, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    held = refused = contested = extra_rounds = 0
    end = time.monotonic() + deadline_s
    try:
        while held < rounds and time.monotonic() < end:
            me = g.Claimant(node_id=node_id, generation=new_generation(), holder_name=f"c{node_id}",
                            resource=resource, interval_ms=interval_ms, device="race")
            store.ballot_writes = 0
            try:
                loc, acq = runner.acquire(me, create=True)
            except OperatorError as e:  # Refused: someone else holds it or won the ballot
                if not isinstance(e, RefusedError) or not EXPECTED.search(str(e)):
                    print(f"unexpected refusal: {type(e).__name__}: {e}", file=sys.stderr)
                    return 4
                refused += 1
                contested += store.ballot_writes > 0  # we balloted, yet someone else won
                time.sleep(rng.random() * 0.005)
                continue
            extra_rounds += store.ballot_writes > 2  # phase 1 + phase 2 is one uncontested round
            epoch = acq.block.epoch
            os.write(fd, f"{node_id} {epoch} begin\n".encode())
            time.sleep(rng.choice((0, 0, rng.random() * 0.003)))
            os.write(fd, f"{node_id} {epoch} end\n".encode())
            hold = g.Hold(acq, base_interval_ms=interval_ms)
            for _ in range(10):  # "retry" means nothing was written: a transient, bounded
                out = runner.bump(loc, hold, final=mf.SEQ_CLEAN)
                if out != "retry":
                    break
            if out is not None:
                print(f"release failed: {out}", file=sys.stderr)
                return 3
            held += 1
            time.sleep(rng.choice((0, rng.random() * 0.004)))
    finally:
        os.close(fd)
        t.close()
    print(f"held {held} refused {refused} contested {contested} rounds {extra_rounds}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
