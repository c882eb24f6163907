"""A real `diskhb run` talking to a stand-in for systemd: a datagram socket bound in the test's
temp dir as $NOTIFY_SOCKET, with $WATCHDOG_USEC set (diskhb.supervisor R1, W1, X1; diskhb.journald).

- READY=1 comes once, and only when our first beat is on every region: at that moment both
  region files already hold our slot with this daemon's generation (read right after READY; the
  hanging-region test shows READY really waits for a beat);
- WATCHDOG=1 keeps coming, never further apart than WatchdogSec; SIGTERM brings STOPPING=1;
- a daemon that fences itself (the disk pill, written here by the fencers' own writer) sends no
  WATCHDOG=1 from then on, as it no longer feeds the hardware watchdog: systemd's fires too;
- a region whose writes hang at start delays READY by dead_ms, then READY names it (R1 b);
- with $JOURNAL_STREAM naming its stderr, log lines carry `<N>` priorities and no timestamp.
Every daemon is stopped by PID in teardown (the Cluster helper), pass or fail.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from cluster import DISKHB, ROOT, Cluster, diskhb, wait_until
from diskhb.mailbox import write_message
from diskhb.regions.disk import format as fmt

pytestmark = pytest.mark.slow

WATCHDOG_USEC = 2_000_000  # fed every 500 ms (WatchdogSec / 4)
DEAD_MS = 1000


class Manager:
    """systemd's end of $NOTIFY_SOCKET: every datagram, in order, with when it arrived."""

    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            with self._lock:
                self.messages.append((time.monotonic(), data.decode()))

    def texts(self) -> list[str]:
        with self._lock:
            return [text for _, text in self.messages]

    def index(self, pred, timeout_s: float, what: str) -> int:
        """Index of the first message matching pred (waits for it)."""
        return wait_until(lambda: next((i + 1 for i, t in enumerate(self.texts()) if pred(t)), None),
                          timeout_s, what) - 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def manager(tmp_path):
    m = Manager(str(tmp_path / "notify"))
    try:
        yield m
    finally:
        m.close()


def make_cluster(tmp_path, regions: int = 1, paths: tuple[str, ...] = ()) -> Cluster:
    made = []
    for i in range(regions):
        path = str(tmp_path / f"region{i}.img")
        r = diskhb("format", path, "--cluster", "test", "--slots", "8", "--interval-ms", "100",
                   "--dead-ms", str(DEAD_MS))
        assert r.returncode == 0, r.stderr
        made.append(path)
    made += paths
    return Cluster(str(tmp_path), made[0], extra_regions=tuple(made[1:]))


@pytest.fixture
def clusters():
    made: list[Cluster] = []
    try:
        yield made
    finally:
        for c in made:
            c.stop_all()


def start(c: Cluster, manager: Manager, *, journal: bool = False) -> subprocess.Popen:
    """`diskhb run` as systemd would start it (Cluster.start, plus the environment)."""
    cfg = c.config(1)
    log = os.path.join(c.workdir, "node1.log")
    c.logs[1] = log
    with open(log, "w") as out:
        env = dict(os.environ, NOTIFY_SOCKET=manager.path, WATCHDOG_USEC=str(WATCHDOG_USEC))
        env.pop("JOURNAL_STREAM", None)
        if journal:
            st = os.fstat(out.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        p = subprocess.Popen(DISKHB + ["run", "--config", cfg], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                             env=env)
    c.procs[1] = p
    c.all_procs.append(p)
    return p


def generation(c: Cluster) -> int:
    m = wait_until(lambda: re.search(r"started node \S+ id 1 generation (0x[0-9a-f]+)", c.log(1)), 10,
                   "the start-up line")
    return int(m.group(1), 16)


def own_slot(path: str) -> fmt.Slot | None:
    with open(path, "rb") as f:
        data = f.read(1 << 20)
    sb = fmt.decode_superblock(data)
    pos = sb.slot_pos(1)
    try:
        return fmt.decode_slot(data[pos:pos + sb.sector_size], expect_node_id=1, region_uuid=sb.uuid)
    except fmt.SlotEmpty:
        return None


def watchdog_times(manager: Manager, after: int, before: int | None = None) -> list[float]:
    with manager._lock:
        return [t for t, text in manager.messages[after:before] if text == "WATCHDOG=1"]


def test_ready_after_the_first_beat_on_every_region_then_watchdog_then_stopping(tmp_path, manager, clusters):
    c = make_cluster(tmp_path, regions=2)
    clusters.append(c)
    p = start(c, manager)
    i = manager.index(lambda t: t.startswith("READY=1"), 15, "READY=1")
    slots = [own_slot(path) for path in (c.region, *c.extra_regions)]  # read at once: READY came after them
    gen = generation(c)
    assert all(s is not None and s.generation == gen and s.seq >= 1 for s in slots), slots
    texts = manager.texts()
    assert texts[0].startswith("EXTEND_TIMEOUT_USEC=") and any(t.startswith("STATUS=claiming") for t in texts[:i])
    assert re.fullmatch(r"READY=1\nSTATUS=running: 1 of 1 nodes alive", texts[i]), texts[i]

    time.sleep(3)
    fed = watchdog_times(manager, i)
    assert len(fed) >= 4, f"{len(fed)} WATCHDOG=1 in 3 s"
    gaps = [b - a for a, b in zip(fed, fed[1:])]
    assert max(gaps) < WATCHDOG_USEC / 1e6, gaps

    p.send_signal(signal.SIGTERM)
    assert p.wait(15) == 0
    j = manager.index(lambda t: t == "STOPPING=1", 5, "STOPPING=1")
    assert j > i and manager.index(lambda t: t == "STATUS=stopping: left cleanly (exit 0)", 5, "the last STATUS") > j
    assert sum(t.startswith("READY=1") for t in manager.texts()) == 1
    first = c.log(1).splitlines()[0]
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} diskhb\[\d+\] INFO ", first), "not under journald: unchanged"


def test_a_self_fenced_daemon_stops_feeding_systemds_watchdog(tmp_path, manager, clusters):
    c = make_cluster(tmp_path)
    clusters.append(c)
    p = start(c, manager, journal=True)
    i = manager.index(lambda t: t.startswith("READY=1"), 15, "READY=1")
    wait_until(lambda: len(watchdog_times(manager, i)) >= 2, 5, "WATCHDOG=1 after READY")

    write_message(c.region, 1, fmt.MSG_FENCE)  # the disk pill, for the generation in its slot
    k = manager.index(lambda t: t.startswith("STATUS=SELF-FENCED (pill"), 10, "the SELF-FENCED status")
    time.sleep(4 * WATCHDOG_USEC / 4 / 1e6)  # four feeding periods
    assert p.poll() is None, "it still beats (SELF_FENCED, READ_ONLY): systemd's watchdog is what ends it"
    assert watchdog_times(manager, k) == [], "no WATCHDOG=1 once self-fenced"
    assert watchdog_times(manager, i, k), "fed until then"

    p.send_signal(signal.SIGTERM)
    assert p.wait(15) == 3
    manager.index(lambda t: t == "STATUS=stopping: stopped while self-fenced (exit 3)", 5, "the last STATUS")
    assert "STOPPING=1" in manager.texts()[k:]
    lines = c.log(1).splitlines()
    assert all(re.match(r"<[2-7]>(CRITICAL|ERROR|WARNING|INFO|DEBUG) ", line) for line in lines), lines
    assert not any(re.search(r"\d\d:\d\d:\d\d,\d{3}", line) for line in lines), "journald stamps the lines itself"
    assert any(line.startswith("<2>CRITICAL SELF-FENCED (pill)") for line in lines), lines
    assert any(line.startswith("<6>INFO started node") for line in lines), lines


@pytest.mark.root
def test_a_region_whose_writes_hang_delays_ready_by_dead_ms(tmp_path, manager, clusters, faultdisk):
    """R1 (b): the second region takes no write (FUSE faultdisk, write=hang): READY waits dead_ms
    after the first beat, then comes with a warning naming the region, whose slot is still empty."""
    r = diskhb("format", faultdisk.backing_path, "--cluster", "test", "--slots", "8", "--interval-ms", "100",
               "--dead-ms", str(DEAD_MS))
    assert r.returncode == 0, r.stderr
    c = make_cluster(tmp_path, paths=(faultdisk.path,))
    clusters.append(c)
    faultdisk.set(write="hang")
    try:
        p = start(c, manager)
        i = manager.index(lambda t: t.startswith("READY=1"), 15, "READY=1")
        assert own_slot(faultdisk.backing_path) is None and own_slot(c.region) is not None
        assert "no beat landed yet on disk:" in manager.texts()[i]
        m = wait_until(lambda: re.search(r"ready although no beat of ours landed yet on region (\S+) \((\d+) ms after",
                                         c.log(1)), 5, "the warning")
        assert m.group(1) == f"disk:{faultdisk.path}" and int(m.group(2)) >= DEAD_MS
    finally:
        faultdisk.set(all="ok")
    p.send_signal(signal.SIGTERM)
    p.wait(15)
