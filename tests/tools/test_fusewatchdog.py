"""The daemon's watchdog client (diskhb.watchdog) against the FUSE watchdog (tools.fusewatchdog):
open arms it, the timeout is set and read back, keepalives hold a reset off, magic close disarms,
a close without it resets the node (its process is killed); bad devices are one line.

Needs /dev/fuse, fusermount3 and mfusepy (the fixture skips with the reason); every watchdog is
torn down in the fixture's finaliser, pass or fail, and every process a test starts is killed.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from diskhb.errors import OperatorError
from diskhb.watchdog import Watchdog, check_timeout
# the `fusewd` fixture (a started FuseWatchdog): tests/conftest.py


@pytest.fixture
def victim():
    """A process standing for the node a reset kills."""
    p = subprocess.Popen(["sleep", "60"])
    try:
        yield p
    finally:
        p.kill()
        p.wait(5)


def ms() -> int:
    return time.monotonic_ns() // 1_000_000


def test_timeout_set_identity_and_keepalive_gaps(fusewd):
    w = Watchdog(fusewd.path, 5, ms())
    try:
        assert (w.timeout_s, w.identity, w.magic_close) == (5, "diskhb FUSE watchdog", True)
        st = fusewd.state()
        assert (st["armed"], st["timeout_s"], st["opens"]) == (1, 5, 1)
        t = ms()
        assert w.keepalive(t + 100) and w.keepalive(t + 400)
        assert w.worst_gap_ms >= 300 and w.last_gap_ms == 300 and w.margin_ms == 5000 - w.worst_gap_ms
        assert fusewd.state()["keepalives"] >= 3  # the open, the timeout, two keepalives
        with pytest.raises(OperatorError, match="cannot open.*only one may"):
            Watchdog(fusewd.path, 5, ms())  # one opener at a time
    finally:
        w.close(clean=True)
    assert fusewd.state()["armed"] == 0 and fusewd.state()["magic_closes"] == 1


def test_magic_close_disarms_and_nobody_is_reset(fusewd, victim):
    fusewd.set_reset_pid(victim.pid)
    Watchdog(fusewd.path, 1, ms()).close(clean=True)
    time.sleep(1.5)
    assert victim.poll() is None and fusewd.state()["fired"] == 0


def test_keepalives_hold_the_reset_off_and_silence_brings_it(fusewd, victim):
    fusewd.set_reset_pid(victim.pid)
    w = Watchdog(fusewd.path, 2, ms())
    try:
        end = time.monotonic() + 3.0
        while time.monotonic() < end:  # fed every 100 ms: past a 2 s timeout, no reset
            assert w.keepalive(ms())
            time.sleep(0.1)
        assert victim.poll() is None and fusewd.state()["fired"] == 0
        t0 = time.monotonic()
        victim.wait(10)  # no more keepalives: the node is reset after the timeout (+ the 20 ms check)
        assert 1.5 <= time.monotonic() - t0 <= 5.0  # never early; late only by the machine's load
        assert fusewd.state()["fired"] == 1
    finally:
        w.close(clean=False)


def test_a_close_without_magic_keeps_it_armed(fusewd, victim):
    fusewd.set_reset_pid(victim.pid)
    Watchdog(fusewd.path, 1, ms()).close(clean=False)  # a crash: the process went, the timer did not
    victim.wait(5)
    assert fusewd.state()["fired"] == 1


def test_bad_devices_and_timeouts_are_one_line(tmp_path, fusewd):
    plain = tmp_path / "file"
    plain.write_bytes(b"")
    with pytest.raises(OperatorError, match="not a watchdog device"):
        Watchdog(str(plain), 5, ms())
    assert plain.read_bytes() == b""  # nothing written into a file that is no watchdog
    with pytest.raises(OperatorError, match="cannot open: No such file"):
        Watchdog(str(tmp_path / "missing"), 5, ms())
    with pytest.raises(OperatorError, match="refused"):
        Watchdog(fusewd.path, 7200, ms())  # beyond what the device takes
    assert fusewd.state()["armed"] == 0  # refused: magic-closed, nothing left armed
    with pytest.raises(OperatorError, match=r"too short for interval_ms 800.*at least 4 intervals \(4 s\)"):
        check_timeout(3, 800)
    with pytest.raises(OperatorError, match="not in 1..3600"):
        check_timeout(0, 100)
    check_timeout(4, 800)
    assert os.path.exists(fusewd.path)
