"""The FSCK sentinel and unreadable blocks at the guard and runner level, on a real region file
(O_DIRECT I/O through diskhb.mmp.store): a Guard (diskhb.mmp.guard) driven by a Runner
(tests/mmp/mmp_drive.py), or the I/O-free Acquisition; without the CLI (tests/integration/
test_mmp_cli.py covers that).

What must hold: an FSCK block is claimed by nobody (only the `clear` path, allow_fsck, takes
it over, through the ballot, at the next epoch); a block that cannot be read as valid (bad
crc, an unknown seq, another format's UUID, a corrupt ballot sector) is refused with nothing
written, also when it turns bad while a claimant watches it; a holder that finds FSCK, a
corrupt or a wiped block stops without writing; and a wiped seq block never takes the epoch
(the fencing token) back.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import replace

import pytest
from crc32c import crc32c

from cluster import diskhb
from diskhb.core.timing import classic_wait_ms, mmp_ceiling_ms
from diskhb.errors import OperatorError, Refused as RefusedError
from diskhb.mmp import format as mf
from diskhb.mmp import guard as gd
from diskhb.mmp.acquisition import COMMIT_CHECKS_MAX, Acquisition
from diskhb.mmp.runner import Runner
from diskhb.mmp.steps import Claimant, ReadResource, ReadSeq, Refusal, WriteBallot, WriteSeq
from diskhb.mmp.store import open_region_target
from diskhb.runtime import new_generation

from mmp_drive import Held, acquire, bump, drive, gone_of, release

INTERVAL_MS = 20  # classic wait 2 x 20 + 1000 = 1.04 s: watches end quickly


@pytest.fixture
def region(disk_tmp_path):
    path = os.path.join(disk_tmp_path, "region.img")
    r = diskhb("format", path, "--cluster", "test", "--slots", "4", "--interval-ms", "100", "--dead-ms", "1000")
    assert r.returncode == 0, r.stderr
    return path


@pytest.fixture
def runner(region):
    t = open_region_target(region, writable=True)
    try:
        yield Runner(t)
    finally:
        t.close()


def claimant(node_id: int, resource: str = "db") -> Claimant:
    return Claimant(node_id=node_id, generation=new_generation(), holder_name=f"n{node_id}",
                    resource=resource, interval_ms=INTERVAL_MS, ceiling_ms=mmp_ceiling_ms(INTERVAL_MS),
                    device="test")


def take(runner: Runner, node_id: int, **kw) -> Held:
    """Acquire db for node `node_id` (a Guard holding it; nothing of ours to stop: loss budget 0)."""
    return acquire(runner, claimant(node_id), create=True, **kw)


def asks_nothing_more(held: Held) -> bool:
    """A guard that has ended writes nothing, not even a release."""
    held.guard.release()
    return held.guard.done and held.guard.step(held.runner.clock_ms()) == []


def digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def poke(path: str, offset: int, data: bytes) -> None:
    """Write behind the store's back (another host, a stray dd); O_DIRECT reads then see it."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def seq_on_disk(runner: Runner, loc) -> bytes:
    return runner.store.read(loc.base, loc.sector_size)


def resealed(sector: bytes, **fields) -> bytes:
    """A copy of a valid seq sector with raw fields changed and a correct crc32c."""
    b = bytearray(sector[:mf.STRUCT_BYTES])
    where = {"seq": (4, 4), "uuid": (40, 16)}
    for name, value in fields.items():
        off, n = where[name]
        b[off:off + n] = value.to_bytes(n, "little") if isinstance(value, int) else value
    b[mf.CRC_OFFSET:] = crc32c(bytes(b[:mf.CRC_OFFSET])).to_bytes(4, "little")
    return bytes(b) + sector[mf.STRUCT_BYTES:]


# --------------------------------------------------------------------------------------------
# FSCK


def test_fsck_refuses_every_claimant_until_allow_fsck_takes_it_at_the_next_epoch(region, runner):
    held = take(runner, 1, finish=mf.SEQ_FSCK)  # as 'mmp fsck' does: acquire, then at once FSCK
    gone = next(e for e in held.events if isinstance(e, gd.Gone))
    assert gone.released and gone.final == mf.SEQ_FSCK and gone.lost is None, gone
    seq, err = runner.find("db").view.seq, None
    assert err is None and seq.state == "fsck" and seq.epoch == held.epoch and seq.holder_id == 1
    before = digest(region)
    for node_id in (2, 1):  # another node, and the marking node itself under a new generation
        with pytest.raises(RefusedError, match="marked FSCK by n1.*mmp clear db"):
            acquire(runner, claimant(node_id))
    # FSCK may clear (retry): a waiting claimant keeps asking, but only for as long as it was told.
    t0 = time.monotonic()
    with pytest.raises(RefusedError, match=r"FSCK.*gave up after 0.3 s"):
        acquire(runner, claimant(2), wait_ms=300)
    assert 0.3 <= time.monotonic() - t0 < 5
    assert digest(region) == before, "a refusal of an FSCK block wrote something"
    # The clear path: through the ballot, at the next epoch, never by rewriting the sentinel in place.
    held2 = take(runner, 2, allow_fsck=True)
    assert held2.loc == held.loc and held2.epoch == held.epoch + 1 and held2.note == "fsck"
    assert release(held2).released
    assert runner.find("db").view.seq.state == "clean"


def test_fsck_appearing_during_a_watch_is_refused_as_fsck_without_a_write():
    """Acquisition level: node 2 watches node 1's held block; node 1 marks it FSCK meanwhile."""
    uuid = b"\x11" * 16
    held = mf.SeqBlock(seq=77, epoch=4, holder_id=1, holder_generation=0xA1, holder_name="n1", resource="db",
                       device="d", interval_ms=INTERVAL_MS, wall_ms=0, uuid=uuid, slot_count=4, sector_size=512)
    fsck = replace(held, seq=mf.SEQ_FSCK)
    m = Acquisition(claimant(2), uuid=uuid, slot_count=4, sector_size=512, rand=lambda n: 0)
    steps = [m.start(0)]
    steps.append(m.on_resource(mf.ResourceView(held, None, {}, {}), 0, 1))
    assert isinstance(steps[-1], ReadSeq)  # watching
    steps.append(m.on_seq(fsck, None, 300, 301))
    assert isinstance(steps[-1], ReadResource)  # changed: look at everything again
    steps.append(m.on_resource(mf.ResourceView(fsck, None, {}, {}), 302, 303))
    out = steps[-1]
    assert isinstance(out, Refusal) and out.retry and "marked FSCK by n1" in out.reason, out
    assert not any(isinstance(s, (WriteBallot, WriteSeq)) for s in steps)


def test_a_holder_that_finds_fsck_written_by_another_stops_without_writing(region, runner):
    held = take(runner, 1)
    theirs = replace(held.block, seq=mf.SEQ_FSCK, holder_id=2, holder_generation=0xB2, holder_name="n2")
    runner.store.write(held.loc.base, mf.encode_seq_block(theirs))
    before = digest(region)
    out = bump(held)
    assert out is not None and "marked FSCK by n2 (node 2" in out.lost, out
    assert not out.released and not out.unknown_write
    assert asks_nothing_more(held)  # not even a release
    assert digest(region) == before


# --------------------------------------------------------------------------------------------
# Unreadable blocks


def corrupt(kind: str, region: str, runner: Runner, loc) -> None:
    if kind == "crc":
        poke(region, loc.base + 40, b"\xde\xad\xbe\xef")  # inside the seq struct: crc32c mismatch
    elif kind == "unknown-seq":
        poke(region, loc.base, resealed(seq_on_disk(runner, loc), seq=0xF0000000))  # valid crc, no state
    elif kind == "other-uuid":
        poke(region, loc.base, resealed(seq_on_disk(runner, loc), uuid=b"\x42" * 16))  # an older format's
    elif kind == "ballot":
        poke(region, loc.ballot_pos(3), b"\xff" * 512)  # node 3's ballot: may hide an accepted proposal
    else:
        raise AssertionError(kind)


KINDS = ["crc", "unknown-seq", "other-uuid", "ballot"]
ERRORS = {"crc": "checksum mismatch", "unknown-seq": "unknown seq", "other-uuid": "UUID differs",
          "ballot": "ballot sector of node 3 is unreadable"}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("state", ["held", "clean"])
def test_an_unreadable_block_is_refused_and_nothing_is_written(region, runner, kind, state):
    held = take(runner, 1)
    if state == "clean":
        assert release(held).released
    corrupt(kind, region, runner, held.loc)
    before = digest(region)
    for node_id, create in ((2, False), (2, True), (4, True)):
        with pytest.raises(OperatorError) as e:
            acquire(runner, claimant(node_id), create=create, wait_ms=200)
        msg = str(e.value)
        assert "nothing was written" in msg and "\n" not in msg, msg
        if kind == "ballot":
            # Exit 2 now (it was 1): the guard maps a refusal that no retry can clear (corrupt
            # data, bad input) to exit 2 and keeps 1 for refusals that may clear (guard.Denied).
            assert ERRORS[kind] in msg and e.value.exit_code == 2, msg
        else:  # the seq block names nothing: cannot tell it is db's block, no name may bind elsewhere
            assert "unreadable" in msg and ERRORS[kind] in msg and e.value.exit_code == 2, msg
    with pytest.raises(OperatorError, match="nothing was written"):
        acquire(runner, claimant(2, resource="web"), create=True)
    assert digest(region) == before


@pytest.mark.parametrize("kind", ["crc", "unknown-seq", "other-uuid"])
def test_a_holder_that_finds_its_block_unreadable_stops_without_writing(region, runner, kind):
    held = take(runner, 1)
    assert bump(held) is None
    corrupt(kind, region, runner, held.loc)
    before = digest(region)
    out = bump(held)
    assert out is not None and "unreadable" in out.lost and ERRORS[kind] in out.lost, out
    assert asks_nothing_more(held)
    assert digest(region) == before


def test_a_holder_does_not_read_ballots_so_a_corrupt_ballot_does_not_stop_it(region, runner):
    """Only claimants read ballot sectors; the holder's verify is its seq block alone."""
    held = take(runner, 1)
    corrupt("ballot", region, runner, held.loc)
    for _ in range(3):
        assert bump(held) is None
    assert release(held).released


def test_a_block_that_turns_unreadable_while_a_claimant_watches_is_refused(region, runner):
    """Node 1 holds and stops bumping (frozen); node 2 watches it; the seq block goes bad
    during the watch: node 2 must give up at once, not count the corrupt block as 'unchanged'
    or as 'changed' and claim over it."""
    held = take(runner, 1)
    t = open_region_target(region, writable=True)
    box: dict = {}

    def claim() -> None:
        try:
            box["out"] = acquire(Runner(t), claimant(2))
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            box["error"] = e

    th = threading.Thread(target=claim, daemon=True)
    try:
        th.start()
        time.sleep(0.3)  # inside the 1.04 s classic wait
        assert th.is_alive(), box
        corrupt("crc", region, runner, held.loc)
        before = digest(region)
        th.join(10)
        assert not th.is_alive(), "the claimant did not finish"
    finally:
        th.join(10)
        t.close()
    # An OperatorError with exit 2 now (it was a Refused, exit 1): a corrupt block is not a
    # refusal that may clear by waiting (guard.Denied).
    assert isinstance(box.get("error"), OperatorError) and box["error"].exit_code == 2, box
    assert "unreadable" in str(box["error"]) and "nothing was written" in str(box["error"])
    assert digest(region) == before
    assert runner.store.read(held.loc.ballot_pos(2), held.loc.sector_size) == bytes(held.loc.sector_size)  # no ballot


# --------------------------------------------------------------------------------------------
# A wiped seq block


def test_a_wiped_seq_block_stops_its_holder_and_never_takes_the_epoch_back(region, runner):
    epochs = []
    for node_id in (1, 2, 3):
        held = take(runner, node_id)
        epochs.append(held.epoch)
        assert release(held).released
    assert epochs == [1, 2, 3]
    held = take(runner, 4)
    assert held.epoch == 4
    poke(region, held.loc.base, bytes(held.loc.sector_size))  # wiped (a stray mkfs, dd)
    out = bump(held)
    assert out is not None and "wiped" in out.lost, out
    # The name is bound by the ballots (instance >= 2 carries it); the next epoch is 5, not 1:
    # consumers fencing on the epoch must never see one go back.
    held2 = take(runner, 2)
    assert held2.loc == held.loc and held2.epoch == 5, held2.block
    assert release(held2).released


# --------------------------------------------------------------------------------------------
# Storage (or a CPU) too slow to commit on: the acquisition ends, it does not spin forever


@pytest.mark.parametrize("slow", ["reads", "write-issue"])
def test_a_claimant_on_storage_too_slow_to_commit_gives_up_without_writing_its_seq_block(slow):
    """Every read 600 ms (> the 500 ms commit window), or every seq write found too late to
    issue: the commit check can never pass. The acquisition must end with a retryable
    refusal after a bounded number of checks, never write the seq block, never spin."""
    uuid = b"\x11" * 16
    m = Acquisition(claimant(2), uuid=uuid, slot_count=4, sector_size=512, rand=lambda n: 0)
    ballots: dict = {}
    t = 0
    step = m.start(t)
    for n in range(200):
        if isinstance(step, ReadResource):
            t = max(t, step.at_ms)
            sub, t = t, t + (600 if slow == "reads" else 1)
            step = m.on_resource(mf.ResourceView(None, None, dict(ballots), {}), sub, t)
        elif isinstance(step, WriteBallot):
            ballots[step.ballot.node_id] = step.ballot
            sub, t = t, t + 1
            step = m.on_written(sub, t)
        elif isinstance(step, WriteSeq):
            assert slow == "write-issue", "a seq write on a check read slower than the commit window"
            t = step.issue_by_ms + 1  # the runner's clock check before the write syscall fails
            step = m.write_too_late(t)
        else:
            break
    assert isinstance(step, Refusal), f"no end after {n} steps: {step}"
    assert step.retry and "storage too slow" in step.reason and str(COMMIT_CHECKS_MAX) in step.reason, step
    assert m.slow_commits == COMMIT_CHECKS_MAX


class SlowSeqWrites:
    """The region's store, with the next `count` seq-block writes taking `delay_s` longer."""

    def __init__(self, runner: Runner, delay_s: float, count: int):
        self.store, self.delay_s, self.count = runner.store, delay_s, count
        self.seq_offsets = {loc.base for loc in runner.target.blocks}

    def write(self, offset, data, *, timeout_ms=None):
        if offset in self.seq_offsets and self.count > 0:
            self.count -= 1
            time.sleep(self.delay_s)
        return self.store.write(offset, data, timeout_ms=timeout_ms)

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_a_claimant_whose_seq_write_was_too_slow_claims_over_its_own_write_when_it_retries(region, runner):
    """The commit write took 600 ms (> the 500 ms window): that claim is given up, but the
    block now names this very process. Retrying (--wait) must claim over it at the next
    epoch at once (CL4: no ballot went past its epoch); it used to refuse for good: 'already
    held by this very process'."""
    runner.store = SlowSeqWrites(runner, 0.6, count=1)
    waits: list[Refusal] = []
    t0 = time.monotonic()
    held = acquire(runner, claimant(1), create=True, wait_ms=5000, on_refusal=waits)
    took_s = time.monotonic() - t0
    assert len(waits) == 1 and "not safe to hold" in waits[0].reason and waits[0].stale_own, waits
    assert held.guard.stale_own == {waits[0].stale_own}  # carried to the retry (GD4)
    assert held.epoch == 2 and held.note == "over our own abandoned write", held.got
    assert took_s < 0.6 + 0.25 + 0.9, took_s  # the slow write, one poll pause, no classic wait (1.04 s)
    assert release(held).released


def test_an_abandoned_write_without_a_retry_is_taken_over_by_others_only_after_the_classic_wait(region, runner):
    runner.store = SlowSeqWrites(runner, 0.6, count=1)
    with pytest.raises(RefusedError, match="not safe to hold"):
        acquire(runner, claimant(1), create=True)
    runner.store = runner.store.store
    left = runner.find("db").view.seq
    assert left.state == "held" and left.holder_id == 1 and left.epoch == 1  # nobody bumps it
    t0 = time.monotonic()
    held = acquire(runner, claimant(2), wait_ms=5000)
    assert time.monotonic() - t0 >= classic_wait_ms(INTERVAL_MS) / 1000
    assert held.epoch == 2 and held.note.startswith("taken over from n1"), held.got


def test_only_the_exact_abandoned_block_is_claimed_over_at_once():
    """Acquisition level: `stale_own` names identities. Our node's block under another
    generation, or our abandoned block bumped since (it cannot be: nobody holds it), is not it."""
    uuid = b"\x11" * 16
    me = claimant(1)
    ours = mf.SeqBlock(seq=9, epoch=3, holder_id=1, holder_generation=me.generation, holder_name="n1",
                       resource="db", device="d", interval_ms=INTERVAL_MS, wall_ms=0, uuid=uuid, slot_count=4,
                       sector_size=512)

    def first_step(seq, stale_own):
        m = Acquisition(me, uuid=uuid, slot_count=4, sector_size=512, rand=lambda n: 0,
                        stale_own=frozenset({stale_own}))
        m.start(0)
        return m.on_resource(mf.ResourceView(seq, None, {}, {}), 0, 1)

    assert isinstance(first_step(ours, ours.identity), WriteBallot)
    moved = replace(ours, seq=10)
    out = first_step(moved, ours.identity)
    assert isinstance(out, Refusal) and "this very process" in out.reason
    other_gen = replace(ours, holder_generation=me.generation + 1)
    out = first_step(other_gen, ours.identity)
    assert isinstance(out, Refusal) and "earlier generation" in out.reason


# --------------------------------------------------------------------------------------------
# A write held in the I/O stack lands after a takeover (timing.py F1: no software can stop a
# write already queued in the kernel; HD-loss makes its holder stop first)


class HeldWrite:
    """The BlockStore's device, with the next write at `offset` held `delay_s` in the stack
    (inside the store's worker thread, as a hung path would): the store's deadline expires,
    the caller gets StoreWedged, and the write still lands later."""

    def __init__(self, dev, offset: int, delay_s: float):
        self.dev, self.offset, self.delay_s = dev, offset, delay_s
        self.landed_s: float | None = None

    def write_from(self, buf, offset, length):
        if offset == self.offset and self.landed_s is None:
            time.sleep(self.delay_s)
            out = self.dev.write_from(buf, offset, length)
            self.landed_s = time.monotonic()
            return out
        return self.dev.write_from(buf, offset, length)

    def __getattr__(self, name):
        return getattr(self.dev, name)


def hold_until_lost(held: Held, box: dict, limit_s: float) -> None:
    """Drive the guard (bumps every interval) until it ends; when and why."""
    end = time.monotonic() + limit_s
    try:
        events = drive(held.runner, held.guard, until=lambda: time.monotonic() >= end, limit_s=limit_s + 5)
        if held.guard.done:
            box["lost_s"] = time.monotonic()
            box["gone"] = gone_of(events)
    except BaseException as e:  # noqa: BLE001 - handed to the test thread
        box["error"] = e


def test_a_write_landing_after_a_takeover_is_seen_by_both_and_the_epoch_never_goes_back(region, runner):
    """Node 1's bump hangs in the I/O stack for 2.5 s. Its deadline (HD-loss: the earliest
    takeover minus its loss budget, here 0) tells node 1 it lost no later than node 2 may take
    over; node 2 takes over by the classic wait; node 1's write then lands on top of node 2's
    block (F1), and node 2 sees it at its next verify, within one interval, and stops. The
    epochs tell a fencing consumer which holder is stale, and the next claimant goes past
    both: the epoch never goes back."""
    held1 = take(runner, 1)
    hung = runner.store.dev = HeldWrite(runner.store.dev, held1.loc.base, 2.5)
    t2 = open_region_target(region, writable=True)
    r2 = Runner(t2)
    one: dict = {}
    two: dict = {}
    th1 = threading.Thread(target=hold_until_lost, args=(held1, one, 6), daemon=True)
    th2 = None
    try:
        th1.start()
        held2 = acquire(r2, claimant(2), wait_ms=5000)
        took_s = time.monotonic()
        assert held2.epoch == held1.epoch + 1 and held2.note.startswith("taken over from n1"), held2.got
        th2 = threading.Thread(target=hold_until_lost, args=(held2, two, 6), daemon=True)
        th2.start()
        th1.join(10)
        th2.join(10)
        assert not th1.is_alive() and not th2.is_alive()
    finally:
        th1.join(10)
        if th2 is not None:
            th2.join(10)
        t2.close()
        wait_s = time.monotonic() + 5
        while hung.landed_s is None and time.monotonic() < wait_s:
            time.sleep(0.05)
        if hung.landed_s is not None:
            runner.store._wedged = None  # the held write is done: let the fixture really close the store
    assert "error" not in one and "error" not in two, (one, two)
    # Node 1 knew before (or as) node 2 could take over: its loss action runs first. (The
    # guard's own words: its loss deadline passed with its bump unanswered, HD-loss / GD1.)
    g1 = one["gone"]
    assert g1 is not None and g1.unknown_write, g1
    assert "could not renew" in g1.lost or "not answered within" in g1.lost, g1
    assert one["lost_s"] <= took_s + 0.2, (one["lost_s"] - took_s)  # the same instant, give or take scheduling
    # The held write landed after the takeover and node 2 saw it within about one interval.
    assert hung.landed_s is not None and hung.landed_s > took_s
    g2 = two["gone"]
    assert "taken over by n1 (node 1" in g2.lost and f"epoch {held1.epoch}" in g2.lost, g2
    assert two["lost_s"] - hung.landed_s < (INTERVAL_MS + 200) / 1000, two["lost_s"] - hung.landed_s
    # On disk: node 1's stale block (its older epoch). Node 1's store is wedged for good.
    r3 = open_region_target(region, writable=True)
    try:
        stale = Runner(r3).find("db").view.seq
        assert stale.holder_id == 1 and stale.epoch == held1.epoch, stale
        held3 = acquire(Runner(r3), claimant(3), wait_ms=5000)
        assert held3.epoch == held2.epoch + 1, (held3.epoch, held2.epoch)
    finally:
        r3.close()
