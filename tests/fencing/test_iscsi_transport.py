"""diskhb.fencing.scsi.iscsi: URLs and names we refuse (I5), the libiscsi binding, and every way a
session can fail, each bounded in time (I1, I2) and one line, against a private tgtd."""

import os
import signal
import socket
import time

import pytest

from diskhb.fencing.scsi import cdb as C
from diskhb.fencing.scsi import pr
from diskhb.fencing.scsi.iscsi import IscsiTarget, IscsiUrlError, check_initiator_name, parse_url
from diskhb.fencing.scsi.transport import TransportError, TransportTimeout

SLACK_S = 0.5  # what a bounded call may take beyond its timeout on a loaded 2-core machine


# -- URLs and names (no target needed) ----------------------------------------------------------------


@pytest.mark.parametrize("url,want", [
    ("iscsi://127.0.0.1:3261/iqn.2024-01.test:lun0/1", IscsiTarget("127.0.0.1", 3261, "iqn.2024-01.test:lun0", 1)),
    ("iscsi://10.0.0.5/iqn.2024-01.test%3Alun0/0", IscsiTarget("10.0.0.5", 3260, "iqn.2024-01.test:lun0", 0)),
    ("iscsi://[fe80::1]:3300/eui.02004567A425678D/16383", IscsiTarget("fe80::1", 3300, "eui.02004567A425678D", 16383)),
])
def test_good_urls(url, want):
    t = parse_url(url)
    assert t == want
    assert parse_url(t.url) == t  # the URL we print parses back to the same target


@pytest.mark.parametrize("url,match", [
    ("http://127.0.0.1/iqn.x:y/1", "not an iscsi:// URL"),
    ("iscsi://storage.example/iqn.2024-01.test:lun0/1", "must be an IP address"),
    ("iscsi://user%pass@127.0.0.1/iqn.2024-01.test:lun0/1", "CHAP credentials"),
    ("iscsi://127.0.0.1:99999/iqn.2024-01.test:lun0/1", "bad iscsi URL"),
    ("iscsi://127.0.0.1/iqn.2024-01.test:lun0", "expected iscsi://host"),
    ("iscsi://127.0.0.1/iqn.2024-01.test:lun0/1/2", "expected iscsi://host"),
    ("iscsi://127.0.0.1/iqn.2024-01.test:lun0/x", "LUN must be"),
    ("iscsi://127.0.0.1/iqn.2024-01.test:lun0/16384", "LUN must be"),
    ("iscsi://127.0.0.1/target0/1", "must start with iqn."),
    ("iscsi://127.0.0.1/iqn.2024-01.te st/1", "character outside"),
    ("iscsi://127.0.0.1/iqn.2024-01.test:lun0/1?x=1", "no query"),
    ("iscsi://127.0.0.1//1", "target name is empty"),
])
def test_bad_urls_are_one_line(url, match):
    with pytest.raises(IscsiUrlError, match=match) as e:
        parse_url(url)
    assert "\n" not in str(e.value)


def test_initiator_names():
    assert check_initiator_name("iqn.2024-01.org.diskhb:node1") == "iqn.2024-01.org.diskhb:node1"
    for bad in ("", "node1", "iqn." + "x" * 220, "iqn.2024-01.org.diskhb:node 1", "iqn.ü"):
        with pytest.raises(IscsiUrlError):
            check_initiator_name(bad)


# -- against tgt: each failure bounded and one line ---------------------------------------------------


def timed(fn):
    t0 = time.monotonic()
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the caller checks what was raised
        return e, time.monotonic() - t0
    return None, time.monotonic() - t0


def test_commands_and_logins(lun):
    a = lun.node(1)
    assert not a.connected and a.logins == 0
    assert pr.read_capacity(a, 2000) == ((4 << 20) // 512, 512)
    assert a.connected and a.logins == 1
    pr.write_blocks(a, 7, b"\xa5" * 1024, 2000)
    assert pr.read_blocks(a, 7, 2, 2000) == b"\xa5" * 1024
    with open(lun.tgtd.backing_file(lun.iqn), "rb") as f:  # it really went to the LUN
        f.seek(7 * 512)
        assert f.read(1024) == b"\xa5" * 1024
    a.close()
    assert not a.connected
    pr.read_keys(a, 2000)  # a closed transport logs in again
    assert a.logins == 2


def test_connection_refused_is_quick_and_one_line(lun):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens on it once closed
    t = lun.node(1, url=f"iscsi://127.0.0.1:{port}/{lun.iqn}/1")
    e, took = timed(lambda: pr.read_keys(t, 2000))
    assert isinstance(e, TransportError) and not isinstance(e, TransportTimeout)
    assert str(e).startswith(f"iscsi://127.0.0.1:{port}/{lun.iqn}/1: login as {lun.initiator(1)} failed")
    assert "\n" not in str(e) and took < 2.0


def test_a_portal_that_never_answers_is_bounded(lun):
    """I1: TCP connects (the kernel's backlog) but no login answer ever comes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        t = lun.node(1, url=f"iscsi://127.0.0.1:{s.getsockname()[1]}/{lun.iqn}/1")
        e, took = timed(lambda: pr.read_keys(t, 400))
    assert isinstance(e, TransportTimeout) and "no login within the timeout" in str(e), e
    assert 0.35 < took < 0.4 + SLACK_S


def test_a_frozen_target_is_bounded_and_the_session_starts_afresh(lun):
    """I1/I2: tgtd stopped mid-session: the command times out, the session is dropped, and once
    the target is back the next command logs in again (a new I_T nexus)."""
    a = lun.node(1)
    pr.read_keys(a, 2000)
    pid = lun.tgtd.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        e, took = timed(lambda: pr.register_and_ignore(a, 0xA1, 300))
    finally:
        os.kill(pid, signal.SIGCONT)
    assert isinstance(e, TransportTimeout) and e.outcome_unknown, e
    assert "no answer within the timeout (it may still run on the target)" in str(e)
    assert 0.25 < took < 0.3 + SLACK_S
    assert not a.connected
    keys = pr.read_keys(a, 3000)  # the frozen REGISTER ran once tgtd woke up, on the dead nexus:
    assert a.logins == 2 and keys.keys in ((), (0xA1,))  # outcome unknown means exactly this


def test_unknown_target_refused_initiator_and_missing_lun(lun, tgtd):
    t = lun.node(1, url=f"iscsi://127.0.0.1:{tgtd.port}/{lun.iqn}x/1")
    with pytest.raises(TransportError, match="login as .* failed: .*(not found|Target)") as e:
        pr.read_keys(t, 2000)
    assert "\n" not in str(e.value)
    iqn = f"{lun.iqn}-acl"
    url = tgtd.add_target(iqn, size_bytes=1 << 20, initiators=[lun.initiator(1)])
    try:
        assert pr.read_keys(lun.node(1, url=url), 2000).keys == ()
        with pytest.raises(TransportError, match=f"login as {lun.initiator(2)} failed"):
            pr.read_keys(lun.node(2, url=url), 2000)
    finally:
        tgtd.remove_target(iqn)
    with pytest.raises(TransportError, match="LOGICAL_UNIT_NOT_SUPPORTED"):
        pr.read_keys(lun.node(1, url=lun.url[:-1] + "5"), 2000)


def test_a_lun_without_persistent_reservations(lun):
    """tgt's LUN 0 is its controller: no PR IN/OUT at all. One line, and no fallback to pretend."""
    c = lun.node(1, url=lun.url[:-1] + "0")
    with pytest.raises(pr.PrRejected, match="PR IN READ KEYS: CHECK CONDITION: ILLEGAL REQUEST: "
                                            "INVALID COMMAND OPERATION CODE"):
        pr.read_keys(c, 2000)
    with pytest.raises(pr.PrRejected, match="INVALID COMMAND OPERATION CODE"):
        pr.preempt_victim(c, 0xA1, 0xB2, 2000)


def test_bad_requests_never_reach_the_wire(lun):
    a = lun.node(1)
    for args in ((b"\x00" * 5, None, 0, 1000), (C.read_keys().cdb, None, 264, 10),
                 (C.read_keys().cdb, b"x", 264, 1000), (C.read_keys().cdb, None, 2 << 20, 1000)):
        with pytest.raises(ValueError):
            a.execute(*args)
    assert a.logins == 0
