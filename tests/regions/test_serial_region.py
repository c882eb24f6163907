"""SerialRegion over pty pairs joined by a relay thread: a null-modem cable we can cut and replug.

The tty paths the regions open are symlinks in a temporary directory that the test controls:
"unplug" closes the pty master and removes the symlink (the device node vanishes, as a USB
adapter's does); "replug" opens a new pty and points the symlink at it. Everything (relay
thread, fds, regions) is torn down in fixture finalisers, even when a test fails.

A region reports its own I/O as IoSubmitted/IoCompleted out of poll(); the node core feeds them
to an OwnIoHealth (diskhb.core.region_health). These tests do the same (`polled`, `feed`): the
health they assert on is built only from what poll() returned.
"""

from __future__ import annotations

import os
import select
import threading
import time
import tty

import pytest

import regionio
from prometheus_client import REGISTRY

from diskhb.core.node import IoCompleted, IoSubmitted
from diskhb.core.region_health import OwnIoHealth
from diskhb.core.types import Beat, SlotFlag
from diskhb.errors import OperatorError
from diskhb.regions.base import OwnBeat
from diskhb.regions.serial import REOPEN_MS_MIN, SerialRegion, packet_budget
from netpath import wire
from netpath.framing import FrameReader, encode_frame
from netpath.keys import generate_key_file, load_key_file

WAIT_S = 5.0
IO_TIMEOUT_MS = 500
def health(region, io_timeout_ms: int = IO_TIMEOUT_MS) -> OwnIoHealth:
    return regionio.health(region, io_timeout_ms)


def polled(region: SerialRegion, now_ms: int) -> list:
    """region.poll(now_ms) with its own I/O fed to its health: the samples it returned."""
    return regionio.feed(health(region), region.poll(now_ms))


def settle_reopen(region: SerialRegion, timeout_s: float = WAIT_S) -> None:
    """Wait (bounded) for a reopen running on the region's helper thread to finish, so that
    the next publish/poll picks its result up: makes backoff steps deterministic."""
    t = region._opener
    if t is not None:
        t.join(timeout_s)
        assert not t.is_alive(), "a reopen did not finish"


def close_region(region: SerialRegion) -> None:
    """close(), then wait for a reopen still running and close what it may have opened."""
    region.close()
    t = region._opener
    if t is not None:
        t.join(WAIT_S)
    for got in region._opened:
        if not isinstance(got, BaseException):
            got.close()
    region._opened.clear()


class NullModem:
    """Two ptys whose masters are cross-connected by a thread; ends 0 and 1 are symlink paths."""

    def __init__(self, directory: str):
        self.paths = [os.path.join(directory, "ttyA"), os.path.join(directory, "ttyB")]
        self.masters: list[int | None] = [None, None]
        self.slaves: list[int | None] = [None, None]  # kept open so a master never reads EIO meanwhile
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.paused = threading.Event()  # set: the cable carries nothing (a stuck line)
        for end in (0, 1):
            self.plug(end)
        self.thread = threading.Thread(target=self._relay, name="nullmodem", daemon=True)
        self.thread.start()

    def plug(self, end: int) -> None:
        m, s = os.openpty()
        tty.setraw(s)
        os.set_blocking(m, False)
        tmp = self.paths[end] + ".new"
        os.symlink(os.ttyname(s), tmp)
        with self.lock:
            self.masters[end], self.slaves[end] = m, s
            os.replace(tmp, self.paths[end])

    def unplug(self, end: int) -> None:
        with self.lock:
            for fds in (self.masters, self.slaves):
                if fds[end] is not None:
                    os.close(fds[end])
                    fds[end] = None
            if os.path.lexists(self.paths[end]):
                os.unlink(self.paths[end])

    def inject(self, end: int, data: bytes) -> None:
        """Bytes that arrive at `end` as if from the line (noise, a stranger's frames)."""
        with self.lock:
            os.write(self.masters[end], data)

    def _relay(self) -> None:
        while not self.stopping.is_set():
            with self.lock:
                fds = [m for m in self.masters if m is not None]
            if self.paused.is_set() or not fds:
                time.sleep(0.005)
                continue
            try:
                ready, _, _ = select.select(fds, [], [], 0.01)
            except (OSError, ValueError):
                continue  # an fd closed by unplug between the copy and the select
            with self.lock:
                for end in (0, 1):
                    m, other = self.masters[end], self.masters[1 - end]
                    if m is None or m not in ready:
                        continue
                    try:
                        data = os.read(m, 4096)
                    except OSError:
                        continue
                    if other is not None and data:
                        try:
                            os.write(other, data)
                        except OSError:
                            pass  # a full or vanished far end: a cable does not buffer

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        for end in (0, 1):
            self.unplug(end)


@pytest.fixture
def modem(tmp_path):
    m = NullModem(str(tmp_path))
    yield m
    m.close()


@pytest.fixture
def key(tmp_path) -> str:
    path = str(tmp_path / "authkey")
    generate_key_file(path, 1)
    return path


@pytest.fixture
def regions():
    made: list[SerialRegion] = []

    def make(name: str, node_id: int, device: str, key: str, io_timeout_ms: int = IO_TIMEOUT_MS,
             **kw) -> SerialRegion:
        r = SerialRegion(name, cluster="test-cluster", node_id=node_id, device=device, key=key, **kw)
        made.append(r)
        health(r, io_timeout_ms)
        r.start(0)
        return r

    try:
        yield make
    finally:
        for r in made:
            close_region(r)


class Sender:
    def __init__(self, node_id: int, generation: int):
        self.node_id, self.generation, self.seq, self.mono = node_id, generation, 0, 5_000_000

    def beat(self, flags: int = SlotFlag.ACTIVE, view=None) -> OwnBeat:
        self.seq += 1
        self.mono += 200
        return OwnBeat(self.node_id, f"node{self.node_id}", self.generation, self.seq, int(flags), self.mono,
                       view or {})


def poll_until(region: SerialRegion, now_ms: int, want: int, timeout_s: float = WAIT_S) -> list:
    """Poll until `want` samples came (own I/O fed to the region's health on the way)."""
    got: list = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        got += polled(region, now_ms)
        if len(got) < want:
            time.sleep(0.002)
    return got


def exchange(a, sa, b, sb, rounds: int, now0: int = 0):
    seen_a, seen_b = [], []
    for i in range(rounds):
        now = now0 + 200 * (i + 1)
        a.publish(now, sa.beat(), now)
        b.publish(now, sb.beat(), now)
        seen_b += poll_until(b, now, 1)
        seen_a += poll_until(a, now, 1)
    return seen_a, seen_b


@pytest.mark.parametrize("baud", [115200, 19200])
def test_two_nodes_exchange_beats_over_a_null_modem(modem, key, regions, baud):
    a = regions(f"ser-{baud}", 1, modem.paths[0], key, baud=baud)
    b = regions(f"ser-{baud}", 2, modem.paths[1], key, baud=baud)
    sa, sb = Sender(1, 0xA), Sender(2, 0xB)
    seen_a, seen_b = exchange(a, sa, b, sb, rounds=4)
    assert [x.seq for x in seen_b] == [1, 2, 3, 4] and {x.node_id for x in seen_b} == {1}
    assert [x.seq for x in seen_a] == [1, 2, 3, 4] and {x.region for x in seen_a} == {f"ser-{baud}"}
    health(a).tick(1000)
    assert health(a).healthy, health(a).reason
    assert sum(a.rejected.values()) == 0 and sum(b.rejected.values()) == 0


def test_19200_baud_cuts_the_view_to_the_line_budget(modem, key, regions):
    assert packet_budget(19200) == 192 and packet_budget(115200) == 1152
    a = regions("ser-view", 1, modem.paths[0], key, baud=19200)
    b = regions("ser-view", 2, modem.paths[1], key, baud=19200)
    view = {"net:a": (2, 3), **{f"disk:/dev/disk/by-id/wwn-{i:04d}": tuple(range(1, 60, 2)) for i in range(6)}}
    a.publish(200, Sender(1, 1).beat(view=view), 200)
    assert poll_until(b, 200, 1)
    got = b.views[1]
    assert b.receiver.view_partial[1] and got and all(got[r] == view[r] for r in got)


def test_framing_resynchronises_after_garbage(modem, key, regions):
    a = regions("ser-noise", 1, modem.paths[0], key)
    b = regions("ser-noise", 2, modem.paths[1], key)
    sa, sb = Sender(1, 1), Sender(2, 2)
    exchange(a, sa, b, sb, rounds=1)
    # Line noise with and without delimiters, a cut frame, and a frame with a bad CRC.
    bad_crc = bytearray(encode_frame(b"x" * 80))
    bad_crc[10] ^= 0x01
    modem.inject(1, b"\x13\x37noise\xff\xfe" + b"\x00\x05ab" + encode_frame(b"y" * 60)[:30] + bytes(bad_crc))
    got = []
    for i in range(2, 5):
        a.publish(200 * i, sa.beat(), 200 * i)
        got += poll_until(b, 200 * i, 1)
    assert [x.seq for x in got] == [2, 3, 4]  # every real beat after the noise got through
    assert b.rejected["framing"] >= 1 and b.rejected["crc"] + b.rejected["framing"] >= 2
    # A frame that passes CRC but not the HMAC (a stranger on the line) is dropped as "auth"/"magic".
    modem.inject(1, encode_frame(b"\x00" * 100))
    deadline = time.monotonic() + WAIT_S
    while b.rejected["magic"] == 0 and time.monotonic() < deadline:
        assert polled(b, 1000) == []
        time.sleep(0.002)
    assert b.rejected["magic"] == 1


def test_unplug_makes_the_region_unhealthy_and_replug_recovers(modem, key, regions):
    a = regions("ser-plug", 1, modem.paths[0], key, reopen_ms_max=800)
    b = regions("ser-plug", 2, modem.paths[1], key)
    sa, sb = Sender(1, 1), Sender(2, 2)
    seen_a, seen_b = exchange(a, sa, b, sb, rounds=2)
    assert len(seen_a) == 2 and len(seen_b) == 2
    reopens0 = REGISTRY.get_sample_value("diskhb_net_link_reopens_total", {"region": "ser-plug"}) or 0

    modem.unplug(0)
    now = 400
    deadline = time.monotonic() + WAIT_S
    while a.port is not None and time.monotonic() < deadline:  # the hangup shows at the next poll
        now += 10
        polled(a, now)
        time.sleep(0.002)
    assert a.port is None and a.lost and "device lost" in a.lost
    waits = []
    for _ in range(40):  # unplugged for 40 ticks: never raises, stays unhealthy, backoff is bounded
        now += 200
        a.publish(now, sa.beat(), now)
        got = a.poll(now)
        # no samples; our beat's write failed at once (no submission: nothing stays in flight)
        assert [(type(o), o.kind, o.ok, o.tag) for o in got] == [(IoCompleted, "write", False, sa.seq)], got
        assert "device lost" in got[0].error
        regionio.feed(health(a), got)
        settle_reopen(a)
        waits.append(a._reopen_wait_ms)
    health(a).tick(now)
    assert not health(a).healthy and "device lost" in health(a).reason
    assert max(waits) == 800 and REOPEN_MS_MIN * 2 in waits  # doubled from the minimum, capped
    assert "ENOENT" in a.lost  # the path is gone while unplugged

    modem.plug(0)
    got_a, got_b = [], []
    deadline = time.monotonic() + WAIT_S
    while (not got_a or not got_b) and time.monotonic() < deadline:
        now += 200
        a.publish(now, sa.beat(), now)
        b.publish(now, sb.beat(), now)
        time.sleep(0.005)
        got_a += polled(a, now)
        got_b += polled(b, now)
    assert got_a and got_b, "beats did not flow again after replug"
    assert a.reopens_total == 1 and a.lost is None
    assert REGISTRY.get_sample_value("diskhb_net_link_reopens_total", {"region": "ser-plug"}) == reopens0 + 1
    health(a).tick(now)
    assert health(a).healthy, health(a).reason


def test_a_stuck_line_shows_as_our_write_late(modem, key, regions):
    a = regions("ser-stuck", 1, modem.paths[0], key, io_timeout_ms=300)
    sa = Sender(1, 1)
    modem.paused.set()  # nothing reads A's far end: the pty fills, then our frame cannot drain
    now = 0
    for _ in range(5000):
        now += 1
        a.publish(now, sa.beat(), now)
        polled(a, now)
        if a._tx:
            break
    assert a._tx, "the pty never filled up"
    stuck_at = now
    assert a.frames_skipped_total == 0
    a.publish(now + 100, sa.beat(), now + 100)
    assert a.frames_skipped_total == 1  # no backlog: the next beat waits for the line
    assert polled(a, now + 100) == []
    health(a).tick(stuck_at + 301)
    assert not health(a).healthy and "own write late" in health(a).reason
    modem.paused.clear()
    deadline = time.monotonic() + WAIT_S
    while a._tx and time.monotonic() < deadline:
        polled(a, stuck_at + 400)
        time.sleep(0.005)
    assert not a._tx
    a.publish(stuck_at + 500, sa.beat(), stuck_at + 500)
    polled(a, stuck_at + 500)
    health(a).tick(stuck_at + 500)
    assert health(a).healthy, health(a).reason


def test_stop_writes_the_final_frame(modem, key, regions):
    """The LEFT beat is an ordinary publish decided by the node core; close(flush_ms) lets what
    the line still holds go out, then closes."""
    a = regions("ser-stop", 1, modem.paths[0], key)
    b = regions("ser-stop", 2, modem.paths[1], key)
    sa = Sender(1, 1)
    a.publish(200, sa.beat(), 200)
    assert poll_until(b, 200, 1)
    a.publish(400, sa.beat(flags=SlotFlag.LEFT), 400)
    a.close(500)
    got = poll_until(b, 400, 1)
    assert got and got[0].flags & SlotFlag.LEFT
    assert a.port is None
    a.close(100)  # twice: nothing to do, never raises
    assert a.port is None


def fill_the_line(a: SerialRegion, sa: Sender, modem: NullModem, now: int, take=None) -> int:
    """Stop the cable and publish until a frame cannot drain: its write stays in flight.
    take(observations): where a's poll() results go (default: its health)."""
    modem.paused.set()
    for _ in range(5000):
        now += 1
        a.publish(now, sa.beat(), now)
        got = a.poll(now)
        take(got) if take else regionio.feed(health(a), got)
        if a._tx:
            return now
    pytest.fail("the pty never filled up")


def fds_open_on(path: str) -> int:
    """How many of this process's descriptors are open on the tty `path` (realpath)."""
    want = os.path.realpath(path)
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}") == want
        except OSError:
            pass
    return n


def test_a_hangup_while_a_frame_drains_leaves_no_write_in_flight(modem, key, regions):
    """Six quick read-side hang-ups (POLLHUP), each while a frame is draining: the draining
    frame's write is reported failed, so none stays in flight. Before, each glitch left one
    write in flight for ever: false "own write late", then the core's OwnIoHealth asserted
    "more than 4 writes in flight" at the fifth and the daemon's tick died."""
    a = regions("ser-glitch", 1, modem.paths[0], key)
    b = regions("ser-glitch", 2, modem.paths[1], key)
    sa = Sender(1, 1)
    in_flight: dict[int, int] = {}  # write tag -> submitted at, from poll() alone
    left_in_flight = []

    def take(obs: list) -> list:
        for o in obs:
            if isinstance(o, IoSubmitted) and o.kind == "write":
                in_flight[o.tag] = o.at_ms
            elif isinstance(o, IoCompleted) and o.kind == "write" and o.tag is not None:
                in_flight.pop(o.tag, None)
        return regionio.feed(health(a), obs)  # OwnIoHealth asserts if more than 4 writes are in flight

    now = 0
    for glitch in range(6):
        now = fill_the_line(a, sa, modem, now, take)
        draining = a._tx_seq
        assert draining in in_flight  # its IoSubmitted came out of poll(), its completion not yet
        modem.unplug(0)  # the far end hangs up; nothing published meanwhile: the read side sees it
        deadline = time.monotonic() + WAIT_S
        lost = []
        while a.port is not None and time.monotonic() < deadline:
            now += 1
            lost += a.poll(now)
            time.sleep(0.001)
        assert a.port is None and "hung up" in a.lost, a.lost
        failed = [(o.kind, o.tag) for o in lost if isinstance(o, IoCompleted) and not o.ok]
        assert failed == [("read", None), ("write", draining)], failed
        take(lost)
        left_in_flight.append(dict(in_flight))
        modem.plug(0)
        modem.paused.clear()
        deadline = time.monotonic() + WAIT_S
        while a.port is None and time.monotonic() < deadline:  # reopen on the helper thread
            now += REOPEN_MS_MIN
            take(a.poll(now))
            settle_reopen(a)
    assert left_in_flight == [{}] * 6  # no write of a glitch stays in flight
    assert a.reopens_total == 6 and a.lost is None
    # The pty is back: our beats flow, the line is healthy again.
    got_b: list = []
    deadline = time.monotonic() + WAIT_S
    while not got_b and time.monotonic() < deadline:
        now += 200
        a.publish(now, sa.beat(), now)
        take(a.poll(now))
        got_b += [x for x in polled(b, now) if isinstance(x, Beat)]
        time.sleep(0.005)
    assert got_b and got_b[-1].node_id == 1
    now += 200
    take(a.poll(now))
    assert in_flight == {}
    health(a).tick(now)
    assert health(a).healthy, health(a).reason


def test_a_reopen_that_blocks_never_blocks_publish_or_poll(modem, key, regions, monkeypatch):
    """An open that blocks in the tty driver (here: 2 s) runs on the helper thread: publish and
    poll each return within a few ms meanwhile, reporting our writes failed; once the open
    returns, the region picks the device up and beats again."""
    a = regions("ser-slowopen", 1, modem.paths[0], key)
    sa = Sender(1, 1)
    a.publish(200, sa.beat(), 200)
    polled(a, 200)
    modem.unplug(0)
    now = 200
    deadline = time.monotonic() + WAIT_S
    while a.port is not None and time.monotonic() < deadline:  # the hang-up shows at the next poll
        now += 10
        polled(a, now)
    assert a.port is None
    modem.plug(0)
    unblock = threading.Event()
    real_open = a._open
    opens = []

    def blocking_open():
        opens.append(time.monotonic())
        unblock.wait(2.0)  # an open stuck in the driver for 2 s (the test lets it go sooner)
        return real_open()

    monkeypatch.setattr(a, "_open", blocking_open)
    try:
        t_end = time.monotonic() + 0.3
        while time.monotonic() < t_end:
            now += 50
            t0 = time.perf_counter()
            a.publish(now, sa.beat(), now)
            t1 = time.perf_counter()
            got = a.poll(now)
            t2 = time.perf_counter()
            assert t1 - t0 < 0.05 and t2 - t1 < 0.05, (
                f"publish took {(t1 - t0) * 1000:.1f} ms, poll {(t2 - t1) * 1000:.1f} ms while the reopen blocked")
            # our beat's write failed at once (the device is still lost): nothing in flight
            assert [(type(o), o.kind, getattr(o, "ok", None)) for o in got] == [(IoCompleted, "write", False)], got
            regionio.feed(health(a), got)
            time.sleep(0.005)
        assert opens and a._opener is not None and a._opener.is_alive()  # the open is still blocked
    finally:
        unblock.set()
    settle_reopen(a)
    deadline = time.monotonic() + WAIT_S
    while a.port is None and time.monotonic() < deadline:
        now += 50
        a.publish(now, sa.beat(), now)
        polled(a, now)
    assert a.port is not None and a.reopens_total == 1 and len(opens) == 1
    now += 50
    a.publish(now, sa.beat(), now)
    polled(a, now)
    health(a).tick(now)
    assert health(a).healthy, health(a).reason


def test_close_sends_the_draining_frame_and_the_newest_skipped_beat(modem, key, regions):
    """At a clean stop the core publishes LEFT; a line still draining an earlier frame skips it
    (no IoSubmitted with its seq). close(flush_ms) sends the rest of the draining frame, then
    that skipped LEFT beat. What went out is read at A's end of the cable itself (the relay
    stays stopped: it drops what the far end cannot take at once)."""
    a = regions("ser-flush", 1, modem.paths[0], key)
    sa = Sender(1, 1)
    now = fill_the_line(a, sa, modem, 0)
    draining = a._tx_seq
    a.publish(now + 1, sa.beat(flags=SlotFlag.LEFT), now + 1)
    left_seq = sa.seq
    assert a.frames_skipped_total == 1
    assert not [o for o in a.poll(now + 1) if isinstance(o, IoSubmitted)]  # the LEFT beat was skipped
    closing = threading.Thread(target=a.close, args=(3000,), name="close")
    closing.start()  # close() waits up to flush_ms for the line: we drain it meanwhile
    line = bytearray()
    master = modem.masters[0]
    try:
        while closing.is_alive() or select.select([master], [], [], 0)[0]:
            if select.select([master], [], [], 0.01)[0]:
                try:
                    line += os.read(master, 65536)
                except BlockingIOError:
                    pass
    finally:
        closing.join(WAIT_S)
    assert not closing.is_alive() and a.port is None
    ring = load_key_file(key)
    packets = [wire.decode(f, ring, wire.cluster_id("test-cluster")) for f in FrameReader().feed(bytes(line))
               if not isinstance(f, str)]
    seqs = [(p.seq, p.flags) for p in packets if not isinstance(p, str)]
    assert seqs[-2:] == [(draining, int(SlotFlag.ACTIVE)), (left_seq, int(SlotFlag.LEFT))], seqs[-3:]


def test_after_close_publish_and_poll_never_reopen_the_line(modem, key, regions):
    a = regions("ser-closed", 1, modem.paths[0], key)
    sa = Sender(1, 1)
    a.publish(200, sa.beat(), 200)
    polled(a, 200)
    a.close()
    before = fds_open_on(modem.paths[0])
    for i in range(1, 6):
        now = 200 + 200 * i
        a.publish(now, sa.beat(), now)
        a.poll(now)
        settle_reopen(a)
    assert a.port is None and a._opener is None
    assert fds_open_on(modem.paths[0]) == before


def test_close_during_a_blocked_reopen_leaves_nothing_open(modem, key, regions, monkeypatch):
    a = regions("ser-closeopen", 1, modem.paths[0], key)
    sa = Sender(1, 1)
    a.publish(200, sa.beat(), 200)
    polled(a, 200)
    modem.unplug(0)
    now = 200
    deadline = time.monotonic() + WAIT_S
    while a.port is not None and time.monotonic() < deadline:
        now += 10
        polled(a, now)
    assert a.port is None
    modem.plug(0)
    unblock = threading.Event()
    real_open = a._open

    def blocking_open():
        unblock.wait(2.0)
        return real_open()

    monkeypatch.setattr(a, "_open", blocking_open)
    deadline = time.monotonic() + WAIT_S
    while a._opener is None and time.monotonic() < deadline:
        now += 200
        polled(a, now)
    assert a._opener is not None and a._opener.is_alive()
    before = fds_open_on(modem.paths[0])  # the modem's own end
    a.close()
    unblock.set()
    settle_reopen(a)
    assert fds_open_on(modem.paths[0]) == before


def test_operator_mistakes_at_start(tmp_path, modem, key, regions):
    def start(device, **kw):
        r = SerialRegion("s", cluster="c", node_id=1, device=device, key=kw.pop("key", key), **kw)
        try:
            r.start(0)
        finally:
            r.close()

    with pytest.raises(OperatorError, match="does not exist"):
        start(str(tmp_path / "ttyNOPE"))
    plain = tmp_path / "plain"
    plain.write_text("not a tty")
    with pytest.raises(OperatorError, match="cannot open"):
        start(str(plain))
    regions("s-busy", 1, modem.paths[0], key)
    with pytest.raises(OperatorError, match="cannot open.*(lock|EAGAIN|EWOULDBLOCK)"):
        start(modem.paths[0])  # locked by the region above: two daemons never share a cable
    loose = tmp_path / "loose"
    generate_key_file(str(loose))
    os.chmod(loose, 0o640)
    with pytest.raises(OperatorError, match="chmod 600"):
        start(modem.paths[1], key=str(loose))
    with pytest.raises(OperatorError, match="unsupported baud"):
        SerialRegion("s", cluster="c", node_id=1, device=modem.paths[1], key=key, baud=12345)


def test_the_daemons_factory_arguments_are_accepted(key):
    r = SerialRegion("serial:/dev/ttyS1", cluster="c", node_id=3, device="/dev/ttyS1",
                     baud=19200, key=key)
    assert r.kind == "serial" and r.budget_bytes == 192
    assert r.rejected == {reason: 0 for reason in wire.REASONS} and r.views == {}
    assert r.poll(0) == [] and r.publish(0, Sender(3, 1).beat(), 0) is None and r.poll(1) == []  # not started: inert
