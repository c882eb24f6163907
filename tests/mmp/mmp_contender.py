"""One contender process of the MMP race test (tests/mmp/test_mmp_race.py).

    python tests/mmp/mmp_contender.py REGION NODE_ID RESOURCE AUDIT ROUNDS DEADLINE_S SEED INTERVAL_MS \
        [HOLD_MS_MAX CRASH_P]

Loops until it has held RESOURCE ROUNDS times or DEADLINE_S passed: acquire (no wait; a Guard
driven by a Runner, tests/mmp/mmp_drive.py), and
while holding append "<node> <epoch> begin" and, after a random pause, "<node> <epoch> end" to
AUDIT (O_APPEND: every record lands whole, in the order written on this host), then release
(CLEAN). Refusals are expected; it pauses a random moment and tries again. Every store
read/write is delayed by a random 0-2 ms now and then, so the ballot's I/O interleaves in
ever different orders across the contenders. It also counts its ballot writes per attempt, so
the test can tell real Paxos races (a refusal after we balloted: another claimant won the same
instance; a win that took more than one round) from refusals of a block already seen held.
Prints "held N refused M contested C rounds R takeovers T crashes K" and exits 0; exits 4 on
a refusal that must never happen here (any reason but a live holder, a lost ballot or a
slow-storage give-up), 5 if a hold was lost or its lease ran out while it acted (only a stall
of more than a second can do that; the loss budget is 0: nothing of ours to stop).

HOLD_MS_MAX > 0: each hold lasts a random 0..HOLD_MS_MAX ms, bumping the seq block every
interval meanwhile (claimants watch it move and are refused). CRASH_P: the chance that a
holder "crashes" instead of releasing: it stops acting and never writes again, and its
block must be taken over by the classic wait. Such a hold ends with "<node> <epoch> crash
<issue_ms of our last write> <interval_ms in it>" so the test can check that the next
holder began no sooner than 2 x interval + 1 s after that write could have landed.
Records carry CLOCK_MONOTONIC ms (one clock for every process on the host).
"""

from __future__ import annotations

import os
import random
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # mmp_drive

from diskhb.errors import OperatorError, Refused as RefusedError  # noqa: E402
from diskhb.mmp.runner import Runner  # noqa: E402
from diskhb.mmp.store import open_region_target  # noqa: E402
from mmp_drive import acquire, claimant, drive, gone_of, release  # noqa: E402


# A live holder (seen held, or changed while watched), ballot rounds lost to other claimants,
# and the commit window's give-up on a slow disk (a loaded machine). Anything else (a conflict
# on our own ballot sector, an unreadable block, our write overwritten at once) would mean two
# writers or a broken block: the test fails on it. (The old "just won by" refusal is gone: a
# claimant that lost an instance now watches the winner, CL2, and sees its block appear.)
EXPECTED = re.compile(r"held by |ballot rounds|no decision after|not safe to hold; storage too slow")


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
    hold_ms_max = int(sys.argv[9]) if len(sys.argv) > 9 else 0
    crash_p = float(sys.argv[10]) if len(sys.argv) > 10 else 0.0
    rng = random.Random(seed)
    t = open_region_target(region, writable=True)
    runner = Runner(t)
    store = runner.store = JitteryStore(t.store, rng, {loc.base for loc in t.blocks})
    fd = os.open(audit, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    held = refused = contested = extra_rounds = takeovers = crashes = 0
    end = time.monotonic() + deadline_s
    try:
        while held < rounds and time.monotonic() < end:
            me = claimant(node_id, resource, interval_ms, holder_name=f"c{node_id}", device="race")
            store.ballot_writes = 0
            try:
                # stale_self_ok: our own node's crashed holder is watched and taken over like any
                # other's (a restarted node would use 'release --force'); never set otherwise.
                h = acquire(runner, me, create=True, stale_self_ok=crash_p > 0)
            except OperatorError as e:  # Refused: someone else holds it or won the ballot
                if not isinstance(e, RefusedError) or not EXPECTED.search(str(e)):
                    print(f"unexpected refusal: {type(e).__name__}: {e}", file=sys.stderr)
                    return 4
                refused += 1
                contested += store.ballot_writes > 0  # we balloted, yet someone else won
                time.sleep(rng.random() * 0.005)
                continue
            extra_rounds += store.ballot_writes > 2  # phase 1 + phase 2 is one uncontested round
            takeovers += h.note.startswith("taken over")
            epoch = h.epoch
            hold = h.hold
            os.write(fd, f"{node_id} {epoch} begin {runner.clock_ms()}\n".encode())
            if hold_ms_max:
                until = runner.clock_ms() + rng.choice((0, rng.randrange(hold_ms_max + 1)))
                # The guard bumps every interval meanwhile; every result is handed back before
                # we stop driving it (mmp_drive.drive), so hold.issued_ms is our last write's.
                gone = gone_of(drive(runner, h.guard, until=lambda: runner.clock_ms() >= until))
                if gone is not None:
                    print(f"lost while holding: {gone.lost}", file=sys.stderr)
                    return 5
            else:
                time.sleep(rng.choice((0, 0, rng.random() * 0.003)))
            crash = rng.random() < crash_p
            what = f"crash {hold.issued_ms} {hold.block.interval_ms}" if crash else "end"
            os.write(fd, f"{node_id} {epoch} {what} {runner.clock_ms()}\n".encode())
            if hold.expired(runner.clock_ms()):  # it acted until just now: its lease must still hold
                print(f"epoch {epoch}: the lease ran out while acting (a stall > 1 s?)", file=sys.stderr)
                return 5
            if crash:  # gone without a word: the block stays "held" and nobody bumps it
                crashes += 1
                held += 1
                continue
            out = release(h)
            if out is None or not out.released:
                print(f"release failed: {out}", file=sys.stderr)
                return 3
            held += 1
            time.sleep(rng.choice((0, rng.random() * 0.004)))
    finally:
        os.close(fd)
        t.close()
    print(f"held {held} refused {refused} contested {contested} rounds {extra_rounds} takeovers {takeovers}"
          f" crashes {crashes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
