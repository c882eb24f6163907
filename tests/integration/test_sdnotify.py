"""sd_notify without libsystemd (diskhb.sdnotify) and what the daemon tells systemd when
(diskhb.supervisor R1, W1, X1): real AF_UNIX datagram sockets bound in a temp dir (a path) or in
the abstract namespace, standing in for systemd's $NOTIFY_SOCKET; a fake node core for the rules."""

from __future__ import annotations

import os
import socket
import time
from types import SimpleNamespace

import pytest

from diskhb import sdnotify
from diskhb.core.node import Phase
from diskhb.supervisor import Supervisor, feed_due, ready


def receiver(address: str | bytes) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(address)
    s.settimeout(2)
    return s


def drain(s: socket.socket) -> list[str]:
    out = []
    s.settimeout(0.05)
    try:
        while True:
            out.append(s.recv(65536).decode())
    except (TimeoutError, socket.timeout):
        return out


def test_a_path_socket_gets_each_message_as_one_datagram_and_the_environment_is_cleared(tmp_path):
    path = str(tmp_path / "notify")
    with receiver(path) as r:
        env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1", "OTHER": "x"}
        n = sdnotify.Notifier.from_env(env)
        try:
            assert n.enabled and env == {"OTHER": "x"}, "children must not speak for the service"
            assert n.send("READY=1", "STATUS=running: 3 nodes alive")
            assert n.send("WATCHDOG=1")
            assert r.recv(4096) == b"READY=1\nSTATUS=running: 3 nodes alive"
            assert r.recv(4096) == b"WATCHDOG=1"
            assert (n.sent, n.errors) == (2, 0)
        finally:
            n.close()
    env = {"NOTIFY_SOCKET": path}
    sdnotify.Notifier.from_env(env, unset=False).close()
    assert env == {"NOTIFY_SOCKET": path}


def test_an_abstract_socket_is_named_with_an_at_sign():
    name = f"diskhb-test-{os.getpid()}-{time.monotonic_ns()}"
    with receiver(b"\0" + name.encode()) as r:
        n = sdnotify.Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        try:
            assert n.send("STOPPING=1")
            assert r.recv(4096) == b"STOPPING=1"
        finally:
            n.close()


def test_without_notify_socket_nothing_is_sent_and_nothing_fails():
    n = sdnotify.Notifier.from_env({})
    assert not n.enabled and not n.send("READY=1") and n.errors == 0 and not n.new_error


@pytest.mark.parametrize("value, error", [("run/notify", "neither an absolute path"),
                                          ("vsock:2:1234", "neither an absolute path"),
                                          ("/" + "x" * 200, "longer than 107 bytes"),
                                          ("@" + "x" * 200, "longer than 107 bytes")])
def test_an_address_we_cannot_use_is_one_line(value, error):
    with pytest.raises(ValueError, match=error):
        sdnotify.Notifier.from_env({"NOTIFY_SOCKET": value})


def test_send_errors_are_counted_and_flagged_once_per_kind_never_raised(tmp_path):
    n = sdnotify.Notifier(str(tmp_path / "gone"))  # systemd's socket is not there (any more)
    try:
        assert not n.send("WATCHDOG=1") and n.errors == 1 and n.new_error
        assert "No such file" in n.last_error
        assert not n.send("WATCHDOG=1") and n.errors == 2 and not n.new_error, "the same error is not new"
        assert not n.send("STATUS=" + "x" * sdnotify.MESSAGE_MAX) and n.errors == 3 and n.new_error
    finally:
        n.close()


def test_a_full_queue_drops_the_message_without_blocking(tmp_path):
    """A manager that does not read (its queue holds /proc/sys/net/unix/max_dgram_qlen datagrams):
    every send returns at once, the overflow is counted."""
    path = str(tmp_path / "notify")
    with receiver(path):
        n = sdnotify.Notifier(path)
        try:
            t0 = time.monotonic()
            results = [n.send("WATCHDOG=1") for _ in range(2000)]
            assert time.monotonic() - t0 < 5
            assert results[0] and not all(results) and n.errors == results.count(False) and n.sent >= 1
            assert "temporarily unavailable" in n.last_error
        finally:
            n.close()


@pytest.mark.parametrize("env, usec", [
    ({}, None), ({"WATCHDOG_USEC": "0"}, None), ({"WATCHDOG_USEC": "abc"}, None),
    ({"WATCHDOG_USEC": "10000000"}, 10_000_000),
    ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "4242"}, 10_000_000),  # our pid in this table: 4242
    ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "4243"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "x"}, None),
    ({"WATCHDOG_USEC": str(sdnotify.WATCHDOG_USEC_MAX + 1)}, None),
])
def test_watchdog_usec_is_ours_only_when_watchdog_pid_says_so(env, usec):
    assert sdnotify.watchdog_usec(env, 4242) == usec


# -- the rules: READY (R1), WATCHDOG (W1) -------------------------------------------------------------

def test_ready_waits_for_a_beat_on_every_region_or_dead_ms_with_one():
    both = {"a": True, "b": True}
    one = {"a": True, "b": False}
    assert ready(Phase.RUNNING, both, 1000, 1000, 2000)
    assert not ready(Phase.RUNNING, one, 1000, 2999, 2000), "a region without our beat: wait"
    assert ready(Phase.RUNNING, one, 1000, 3000, 2000), "dead_ms later, peers see us on the other"
    assert not ready(Phase.RUNNING, {"a": False, "b": False}, 1000, 99_000, 2000), "no beat landed anywhere"
    for phase in (Phase.CLAIMING, Phase.SELF_FENCED, Phase.FAILED, Phase.LEAVING, Phase.STOPPED):
        assert not ready(phase, both, 1000, 99_000, 2000), phase


def test_the_watchdog_is_fed_at_its_cadence_only_while_the_hardware_one_is():
    assert feed_due(True, 0, None, 250)
    assert not feed_due(True, 1249, 1000, 250) and feed_due(True, 1250, 1000, 250)
    assert not feed_due(False, 99_000, 1000, 250), "self-fenced or failed: systemd's watchdog fires too"


def fake_core(phase: Phase, landed: bool = True):
    health = SimpleNamespace(landed_ms=5 if landed else None, failing=False)
    return SimpleNamespace(phase=phase, health={"disk:a": health}, claim_deadline_ms=1500,
                           liveness=SimpleNamespace(states=dict), quorum=None, held={}, conflict=None,
                           spec=SimpleNamespace(node_id=1),
                           self_fence=SimpleNamespace(fenced=SimpleNamespace(reason="pill", detail="a fence message")))


def test_the_supervisor_sends_ready_once_feeds_until_self_fenced_and_says_stopping_once(tmp_path):
    path = str(tmp_path / "notify")
    with receiver(path) as r:
        sup = Supervisor(sdnotify.Notifier(path), 1_000_000, interval_ms=100, dead_ms=1000, io_timeout_ms=500)
        try:
            sup.tick(0, fake_core(Phase.CLAIMING), True)
            first = drain(r)
            assert first[0] == f"EXTEND_TIMEOUT_USEC={(1500 + 1000 + 200 + 10_000) * 1000}"
            assert "WATCHDOG=1" in first and not any("READY" in x for x in first)
            assert first[-1].startswith("STATUS=claiming slot 1")
            sup.tick(100, fake_core(Phase.RUNNING, landed=False), True)
            assert not any("READY" in x for x in drain(r))
            sup.tick(200, fake_core(Phase.RUNNING), True)
            sup.tick(300, fake_core(Phase.RUNNING), True)
            got = drain(r)
            assert got.count("READY=1\nSTATUS=running: 1 of 1 nodes alive") == 1 and got.count("WATCHDOG=1") == 1
            for t in range(400, 2000, 100):
                sup.tick(t, fake_core(Phase.SELF_FENCED), False)
            got = drain(r)
            assert "WATCHDOG=1" not in got, "self-fenced: no longer fed"
            assert got == ["STATUS=SELF-FENCED (pill: a fence message); watchdogs no longer fed, stop to rejoin"]
            sup.exiting(3, "stopped while self-fenced")
            sup.exiting(3, "again")
            sup.tick(2100, fake_core(Phase.STOPPED), True)
            assert drain(r) == ["STOPPING=1", f"EXTEND_TIMEOUT_USEC={(120_000 + 2 * 500 + 10_000) * 1000}",
                                "STATUS=stopping: stopped while self-fenced (exit 3)"]
        finally:
            sup.close()


def test_a_watchdog_shorter_than_four_intervals_is_one_warning_and_a_bug_here_never_ends_the_loop(tmp_path, caplog):
    path = str(tmp_path / "notify")
    with receiver(path) as r:
        sup = Supervisor(sdnotify.Notifier(path), 300_000, interval_ms=100, dead_ms=1000, io_timeout_ms=500)
        try:
            assert "WatchdogSec=0.3s is shorter than 4 beat intervals" in caplog.text
            caplog.clear()
            broken = SimpleNamespace(phase=Phase.RUNNING, claim_deadline_ms=0)  # no health: raises
            for t in (0, 100, 200):
                sup.tick(t, broken, True)
            assert caplog.text.count("systemd notifications: internal error") == 1
            assert drain(r)[0].startswith("EXTEND_TIMEOUT_USEC=")
        finally:
            sup.close()
