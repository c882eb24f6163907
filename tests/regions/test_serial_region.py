"""SerialRegion over pty pairs joined by a relay thread: a null-modem cable we can cut and replug.

The tty paths the regions open are symlinks in a temporary directory that the test controls:
"unplug" closes the pty master and removes the symlink (the device node vanishes, as a USB
adapter's does); "replug" opens a new pty and points the symlink at it. Everything (relay
thread, fds, regions) is torn down in fixture finalisers, even when a test fails.
"""

from __future__ import annotations

import os
import select
import threading
import time
import tty

import pytest
from prometheus_client import REGISTRY

from diskhb.core.types import SlotFlag
from diskhb.errors import OperatorError
from diskhb.regions.base import OwnBeat
from diskhb.regions.serial import REOPEN_MS_MIN, SerialRegion, packet_budget
from netpath import wire
from netpath.framing import encode_frame
from netpath.keys import generate_key_file

WAIT_S = 5.0


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

    def make(name: str, node_id: int, device: str, key: str, **kw) -> SerialRegion:
        kw.setdefault("io_timeout_ms", 500)
        r = SerialRegion(name, cluster="test-cluster", node_id=node_id, device=device, key=key, **kw)
        made.append(r)
        r.start(0)
        return r

    yield make
    for r in made:
        r._close()


class Sender:
    def __init__(self, node_id: int, generation: int):
        self.node_id, self.generation, self.seq, self.mono = node_id, generation, 0, 5_000_000

    def beat(self, flags: int = SlotFlag.ACTIVE, view=None) -> OwnBeat:
        self.seq += 1
        self.mono += 200
        return OwnBeat(self.node_id, f"node{self.node_id}", self.generation, self.seq, int(flags), self.mono,
                       0, view or {})


def poll_until(region: SerialRegion, now_ms: int, want: int, timeout_s: float = WAIT_S) -> list:
    got: list = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        got += region.poll(now_ms)
        if len(got) < want:
            time.sleep(0.002)
    return got


def exchange(a, sa, b, sb, rounds: int, now0: int = 0):
    seen_a, seen_b = [], []
    for i in range(rounds):
        now = now0 + 200 * (i + 1)
        a.tick(now, sa.beat())
        b.tick(now, sb.beat())
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
    a.health.tick(1000)
    assert a.health.healthy, a.health.reason
    assert sum(a.rejected.values()) == 0 and sum(b.rejected.values()) == 0


def test_19200_baud_cuts_the_view_to_the_line_budget(modem, key, regions):
    assert packet_budget(19200) == 192 and packet_budget(115200) == 1152
    a = regions("ser-view", 1, modem.paths[0], key, baud=19200)
    b = regions("ser-view", 2, modem.paths[1], key, baud=19200)
    view = {"net:a": (2, 3), **{f"disk:/dev/disk/by-id/wwn-{i:04d}": tuple(range(1, 60, 2)) for i in range(6)}}
    a.tick(200, Sender(1, 1).beat(view=view))
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
        a.tick(200 * i, sa.beat())
        got += poll_until(b, 200 * i, 1)
    assert [x.seq for x in got] == [2, 3, 4]  # every real beat after the noise got through
    assert b.rejected["framing"] >= 1 and b.rejected["crc"] + b.rejected["framing"] >= 2
    # A frame that passes CRC but not the HMAC (a stranger on the line) is dropped as "auth"/"magic".
    modem.inject(1, encode_frame(b"\x00" * 100))
    deadline = time.monotonic() + WAIT_S
    while b.rejected["magic"] == 0 and time.monotonic() < deadline:
        assert b.poll(1000) == []
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
        a.poll(now)
        time.sleep(0.002)
    assert a.port is None and a.lost and "device lost" in a.lost
    waits = []
    for _ in range(40):  # unplugged for 40 ticks: never raises, stays unhealthy, backoff is bounded
        now += 200
        a.tick(now, sa.beat())
        assert a.poll(now) == []
        waits.append(a._reopen_wait_ms)
    a.health.tick(now)
    assert not a.health.healthy and "device lost" in a.health.reason
    assert max(waits) == 800 and REOPEN_MS_MIN * 2 in waits  # doubled from the minimum, capped
    assert "ENOENT" in a.lost  # the path is gone while unplugged

    modem.plug(0)
    got_a, got_b = [], []
    deadline = time.monotonic() + WAIT_S
    while (not got_a or not got_b) and time.monotonic() < deadline:
        now += 200
        a.tick(now, sa.beat())
        b.tick(now, sb.beat())
        time.sleep(0.005)
        got_a += a.poll(now)
        got_b += b.poll(now)
    assert got_a and got_b, "beats did not flow again after replug"
    assert a.reopens_total == 1 and a.lost is None
    assert REGISTRY.get_sample_value("diskhb_net_link_reopens_total", {"region": "ser-plug"}) == reopens0 + 1
    a.health.tick(now)
    assert a.health.healthy, a.health.reason


def test_a_stuck_line_shows_as_our_write_late(modem, key, regions):
    a = regions("ser-stuck", 1, modem.paths[0], key, io_timeout_ms=300)
    sa = Sender(1, 1)
    modem.paused.set()  # nothing reads A's far end: the pty fills, then our frame cannot drain
    now = 0
    for _ in range(5000):
        now += 1
        a.tick(now, sa.beat())
        if a._tx:
            break
    assert a._tx, "the pty never filled up"
    stuck_at = now
    assert a.frames_skipped_total == 0
    a.tick(now + 100, sa.beat())
    assert a.frames_skipped_total == 1  # no backlog: the next beat waits for the line
    a.health.tick(stuck_at + 301)
    assert not a.health.healthy and "own write late" in a.health.reason
    modem.paused.clear()
    deadline = time.monotonic() + WAIT_S
    while a._tx and time.monotonic() < deadline:
        a.poll(stuck_at + 400)
        time.sleep(0.005)
    assert not a._tx
    a.tick(stuck_at + 500, sa.beat())
    a.health.tick(stuck_at + 500)
    assert a.health.healthy, a.health.reason


def test_stop_writes_the_final_frame(modem, key, regions):
    a = regions("ser-stop", 1, modem.paths[0], key)
    b = regions("ser-stop", 2, modem.paths[1], key)
    sa = Sender(1, 1)
    a.tick(200, sa.beat())
    assert poll_until(b, 200, 1)
    assert a.stop(sa.beat(flags=SlotFlag.LEFT), 500) is True
    got = poll_until(b, 400, 1)
    assert got and got[0].flags & SlotFlag.LEFT
    assert a.port is None and a.stop(sa.beat(), 100) is False


def test_operator_mistakes_at_start(tmp_path, modem, key, regions):
    def start(device, **kw):
        r = SerialRegion("s", cluster="c", node_id=1, io_timeout_ms=500, device=device, key=kw.pop("key", key), **kw)
        try:
            r.start(0)
        finally:
            r._close()

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
        SerialRegion("s", cluster="c", node_id=1, io_timeout_ms=500, device=modem.paths[1], key=key, baud=12345)


def test_the_daemons_factory_arguments_are_accepted(key):
    r = SerialRegion("serial:/dev/ttyS1", cluster="c", node_id=3, io_timeout_ms=100, device="/dev/ttyS1",
                     baud=19200, key=key)
    assert r.kind == "serial" and r.budget_bytes == 192
    assert r.rejected == {reason: 0 for reason in wire.REASONS} and r.views == {}
    assert r.poll(0) == [] and r.tick(0, Sender(3, 1).beat()) is None  # not started: inert
