"""tools.tgt: a private tgtd per harness, isolated (own portal and management socket) and always torn
down (killed by PID, work dir and backing files removed), even when the block inside fails."""

import os
import socket

import pytest

from tools import tgt as harness

pytestmark = pytest.mark.skipif(harness.missing() is not None, reason=harness.missing() or "")


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_two_harnesses_do_not_collide_and_both_go_away():
    with harness.Tgt() as one, harness.Tgt() as two:
        assert one.port != two.port and one.workdir != two.workdir
        assert one.port != 3260 and listening(one.port) and listening(two.port)
        url = one.add_target("iqn.2024-01.org.diskhb.test:h1", size_bytes=1 << 20)
        assert url == f"iscsi://127.0.0.1:{one.port}/iqn.2024-01.org.diskhb.test:h1/1"
        assert "iqn.2024-01.org.diskhb.test:h1" in one.show()
        assert "iqn.2024-01.org.diskhb.test:h1" not in two.show()  # its own management socket
        assert os.path.getsize(one.backing_file("iqn.2024-01.org.diskhb.test:h1")) == 1 << 20
        pids, dirs, ports = (one.proc.pid, two.proc.pid), (one.workdir, two.workdir), (one.port, two.port)
    assert not any(alive(p) for p in pids)
    assert not any(os.path.exists(d) for d in dirs)
    assert not any(listening(p) for p in ports)


def test_torn_down_when_the_test_fails():
    t = harness.Tgt()
    with pytest.raises(RuntimeError, match="boom"):
        with t:
            t.add_target("iqn.2024-01.org.diskhb.test:h2")
            pid, workdir = t.proc.pid, t.workdir
            raise RuntimeError("boom")
    assert not alive(pid) and not os.path.exists(workdir)
    t.stop()  # twice-safe


def test_bad_requests_are_one_line():
    with harness.Tgt() as t:
        with pytest.raises(harness.TgtError, match="LUN size"):
            t.add_target("iqn.2024-01.org.diskhb.test:h3", size_bytes=1000)
        t.add_target("iqn.2024-01.org.diskhb.test:h3")
        with pytest.raises(harness.TgtError, match="exists already"):
            t.add_target("iqn.2024-01.org.diskhb.test:h3")
        t.remove_target("iqn.2024-01.org.diskhb.test:h3")
        assert "h3" not in t.show() and not [f for f in os.listdir(t.workdir) if f.endswith(".img")]
        with pytest.raises(harness.TgtError, match="exit"):
            t.tgtadm("--mode", "target", "--op", "show", "--tid", "99")
    with pytest.raises(harness.TgtError, match="not running"):
        t.tgtadm("--mode", "target", "--op", "show")


def test_a_taken_port_is_detected_and_another_one_used(monkeypatch):
    """tgtd does not exit when its portal cannot bind: it listens on its default wildcard portal
    (:3260) instead. The harness checks the portal list, kills it and tries another port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        ports = [taken.getsockname()[1]]
        real = harness._free_port
        monkeypatch.setattr(harness, "_free_port", lambda host="127.0.0.1": ports.pop() if ports else real(host))
        with harness.Tgt() as t:
            assert t.port != taken.getsockname()[1]
            assert t._portals() == [f"127.0.0.1:{t.port}"]


def test_the_portal_is_on_loopback_or_a_test_net_only():
    assert harness.check_portal_host("127.0.0.1") == "127.0.0.1"
    assert harness.check_portal_host("10.77.41.254") == "10.77.41.254"
    for bad in ("192.168.1.5", "0.0.0.0", "10.78.0.1", "localhost", "::1"):
        with pytest.raises(harness.TgtError):
            harness.Tgt(portal_host=bad)
