"""diskhb.fencing.runner, rule by rule (FR1-FR5): the configured methods in order, off the tick."""

import threading
import time

import pytest

from diskhb import metrics as m
from diskhb.core.node import Fence
from diskhb.fencing.method import MethodResult
from diskhb.fencing.runner import ORDERS_MAX, FenceRunner

OK = MethodResult(True, False, "verified", "lun0: keys []")
PENDING = MethodResult(False, True, "written")
FAILED = MethodResult(False, False, "no")


class Scripted:
    """A method whose results are given in advance; records whom it was asked to fence."""

    def __init__(self, name, *results, hold: threading.Event | None = None, sleep_s: float = 0.0):
        self.name, self.results, self.hold, self.sleep_s = name, list(results), hold, sleep_s
        self.calls, self.closed = [], False

    def fence(self, victim, deadline):
        self.calls.append((victim, deadline))
        if self.hold is not None:
            self.hold.wait(5)
        if self.sleep_s:
            time.sleep(self.sleep_s)
        return self.results.pop(0) if len(self.results) > 1 else self.results[0]

    def close(self):
        self.closed = True


def run(runner, order, name="n2"):
    assert runner.fence(order, name) is None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        got = runner.done()
        if got:
            return got
        time.sleep(0.01)
    raise AssertionError("no outcome")


def count(method, result):
    return m.FENCE_ATTEMPTS.labels(method, result)._value.get()


def test_fr1_the_next_method_runs_only_when_the_previous_failed():
    pr, pill, agent = Scripted("scsi-pr", FAILED), Scripted("pill", OK), Scripted("agent", OK)
    r = FenceRunner([(pr, 1000), (pill, 1000), (agent, 1000)], threading.Event())
    [done] = run(r, Fence(2, 0x12, 1, "dead"))
    assert (done.ok, done.method, done.pending) == (True, "pill", False)
    assert done.detail == "verified (after: scsi-pr: no)" and done.evidence == "lun0: keys []"
    assert len(pr.calls) == 1 and len(pill.calls) == 1 and agent.calls == []
    victim = pill.calls[0][0]
    assert (victim.node_id, victim.name, victim.generation) == (2, "n2", 0x12)


def test_fr1_every_method_failed_is_a_failure_naming_each():
    r = FenceRunner([(Scripted("scsi-pr", FAILED), 1000), (Scripted("agent", MethodResult(False, False, "exit 1")),
                                                          1000)], threading.Event())
    [done] = run(r, Fence(2, 0x12, 1, "dead"))
    assert not done.ok and not done.pending and done.detail == "scsi-pr: no; agent: exit 1"


def test_fr2_after_a_pending_outcome_the_next_order_starts_at_the_next_method():
    pill, agent = Scripted("pill", PENDING), Scripted("agent", OK)
    r = FenceRunner([(pill, 1000), (agent, 1000)], threading.Event())
    [first] = run(r, Fence(2, 0x12, 1, "dead"))
    assert first.pending and agent.calls == []
    [second] = run(r, Fence(2, 0x12, 2, "dead"))  # the core retried: the victim never showed it
    assert second.ok and second.method == "agent" and len(pill.calls) == 1
    [third] = run(r, Fence(2, 0x99, 1, "dead"))  # another incarnation starts from the top
    assert third.pending and len(pill.calls) == 2


def test_fr2_wraps_around_after_the_last_method():
    pill = Scripted("pill", PENDING)
    r = FenceRunner([(pill, 1000)], threading.Event())
    run(r, Fence(2, 0x12, 1, "dead"))
    [again] = run(r, Fence(2, 0x12, 2, "dead"))
    assert again.pending and len(pill.calls) == 2


def test_fr3_each_method_gets_its_own_deadline_and_a_late_failure_is_a_timeout():
    slow = Scripted("scsi-pr", FAILED, sleep_s=0.15)
    pill = Scripted("pill", PENDING)
    before = count("scsi-pr", "timeout")
    r = FenceRunner([(slow, 100), (pill, 3000)], threading.Event())
    t0 = time.monotonic()
    [done] = run(r, Fence(2, 0x12, 1, "dead"))
    assert done.pending and count("scsi-pr", "timeout") == before + 1
    assert slow.calls[0][1] - t0 == pytest.approx(0.1, abs=0.05)
    assert pill.calls[0][1] - slow.calls[0][1] >= 3.0  # counted from when the pill started


def test_fr3_orders_beyond_the_limit_fail_at_once_never_queue():
    hold = threading.Event()
    wake = threading.Event()
    r = FenceRunner([(Scripted("agent", OK, hold=hold), 5000)], wake)
    try:
        for n in range(ORDERS_MAX):
            assert r.fence(Fence(n + 2, 1, 1, "dead"), f"n{n}") is None
        over = r.fence(Fence(99, 1, 1, "dead"), "n99")
        assert over is not None and not over.ok and f"{ORDERS_MAX} fences are running" in over.detail
    finally:
        hold.set()
    deadline = time.monotonic() + 5
    got = []
    while len(got) < ORDERS_MAX and time.monotonic() < deadline:
        got += r.done()
        time.sleep(0.01)
    assert len(got) == ORDERS_MAX and all(d.ok for d in got) and wake.is_set()


def test_fr4_every_method_run_is_counted_once():
    before = {(k, v): count(k, v) for k in ("scsi-pr", "pill") for v in ("failed", "pending")}
    r = FenceRunner([(Scripted("scsi-pr", FAILED), 1000), (Scripted("pill", PENDING), 1000)], threading.Event())
    run(r, Fence(3, 0x13, 1, "dead"))
    assert count("scsi-pr", "failed") == before["scsi-pr", "failed"] + 1
    assert count("pill", "pending") == before["pill", "pending"] + 1
    assert count("pill", "failed") == before["pill", "failed"]


def test_fr5_an_operators_method_runs_alone():
    pr, pill = Scripted("scsi-pr", OK), Scripted("pill", PENDING)
    r = FenceRunner([(pill, 1000), (pr, 1000)], threading.Event())
    [done] = run(r, Fence(2, 0x12, 1, "operator", "scsi-pr"))
    assert done.ok and done.method == "scsi-pr" and pill.calls == []
    now = r.fence(Fence(2, 0x12, 2, "operator", "agent"), "n2")
    assert now is not None and not now.ok and "method 'agent' is not configured here" in now.detail


def test_a_method_that_raises_is_a_failure_and_the_chain_goes_on():
    class Broken:
        name = "scsi-pr"

        def fence(self, victim, deadline):
            raise RuntimeError("bug")

        def close(self):
            raise RuntimeError("bug")

    r = FenceRunner([(Broken(), 1000), (Scripted("pill", PENDING), 1000)], threading.Event())
    [done] = run(r, Fence(2, 0x12, 1, "dead"))
    assert done.pending and "internal error: RuntimeError('bug')" in done.detail
    r.close()  # a method that fails to close does not stop the others


def test_close_closes_every_method():
    a, b = Scripted("pill", OK), Scripted("agent", OK)
    FenceRunner([(a, 1), (b, 1)], threading.Event()).close()
    assert a.closed and b.closed


def test_fr3_the_chains_bound_is_what_the_core_waits_for():
    from diskhb.fencing.runner import METHOD_SLACK_MS

    r = FenceRunner([(Scripted("scsi-pr", OK), 10_000), (Scripted("agent", OK), 120_000)], threading.Event())
    assert r.bound_ms == 130_000 + 2 * METHOD_SLACK_MS
