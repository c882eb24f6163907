"""Own-I/O health rules H1-H6 (diskhb/core/region_health.py), one test per rule, virtual clock."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diskhb.core.region_health import IN_FLIGHT_MAX, OwnIoHealth, RegionHealthChanged

TIMEOUT_MS = 1000


def healthy_region(now_ms=0):
    h = OwnIoHealth("disk:a", TIMEOUT_MS)
    h.submitted(now_ms, "write")
    h.completed(now_ms + 5, "write", True)
    assert h.tick(now_ms + 5) == [RegionHealthChanged("disk:a", True, "")]
    return h


def flips(events):
    return [(e.healthy, e.reason) for e in events]


def test_h4_starts_unhealthy_until_the_first_successful_write():
    h = OwnIoHealth("disk:a", TIMEOUT_MS)
    assert (h.healthy, h.reason, h.last_ok_ms, h.sampled_ms) == (False, "not yet written", None, None)
    assert h.tick(0) == []  # the starting state is not a change
    h.submitted(0, "read")
    h.completed(3, "read", True)  # reading works, but nothing of ours is on the region yet
    assert h.tick(3) == [] and h.reason == "not yet written"
    h.submitted(10, "write")
    h.completed(15, "write", True)
    assert flips(h.tick(20)) == [(True, "")]
    assert h.healthy and h.reason == "" and h.last_ok_ms == 15


def test_h1_a_write_in_flight_past_io_timeout_is_late():
    h = healthy_region()
    h.submitted(200, "write")
    assert h.tick(1200) == [] and h.healthy  # exactly the timeout: not late yet
    assert flips(h.tick(1201)) == [(False, "own write late: in flight 1001 ms > io_timeout 1000 ms")]
    assert h.tick(5323) == [] and h.reason == "own write late: in flight 5123 ms > io_timeout 1000 ms"


def test_h1_a_hung_read_makes_us_blind():
    h = healthy_region()
    h.submitted(10, "read")
    assert flips(h.tick(1011)) == [(False, "own read late: in flight 1001 ms > io_timeout 1000 ms")]


def test_h2_a_write_that_completed_too_late_stays_unhealthy_until_an_on_time_write():
    h = healthy_region()
    h.submitted(200, "write")
    h.tick(1500)
    h.completed(5000, "write", True)
    assert h.tick(5000) == [] and h.reason == "own write late: took 4800 ms > io_timeout 1000 ms"
    assert h.last_ok_ms == 5  # a late write is not an ok one
    h.submitted(5200, "write")
    h.completed(6201, "write", True)  # late again, by 1 ms
    assert h.tick(6201) == [] and not h.healthy
    h.submitted(6400, "write")
    h.completed(7400, "write", True)  # exactly io_timeout: on time
    assert flips(h.tick(7400)) == [(True, "")] and h.last_ok_ms == 7400


def test_h2_a_failed_write():
    h = healthy_region()
    h.submitted(100, "write")
    h.completed(101, "write", False, "EIO")
    assert flips(h.tick(101)) == [(False, "own write failed: EIO")]
    h.submitted(300, "write")
    h.completed(301, "write", True)
    assert flips(h.tick(301)) == [(True, "")]


def test_h3_a_failed_or_late_read_until_the_next_good_read():
    h = healthy_region()
    h.submitted(100, "read")
    h.completed(101, "read", False, "EIO")
    assert flips(h.tick(101)) == [(False, "own read failed: EIO")]
    h.submitted(200, "write")
    h.completed(201, "write", True)  # a good write does not clear a read fault
    assert h.tick(201) == [] and h.reason == "own read failed: EIO"
    h.submitted(300, "read")
    h.completed(1400, "read", True)
    assert h.tick(1400) == [] and h.reason == "own read late: took 1100 ms > io_timeout 1000 ms"
    h.submitted(1500, "read")
    h.completed(1510, "read", True)
    assert flips(h.tick(1510)) == [(True, "")]


def test_h5_reasons_in_order_late_write_read_not_yet_written():
    h = OwnIoHealth("r", TIMEOUT_MS)
    h.completed(0, "read", False, "ENXIO")
    h.tick(0)
    assert h.reason == "own read failed: ENXIO"
    h.completed(1, "write", False, "ENOSPC")
    h.tick(1)
    assert h.reason == "own write failed: ENOSPC"
    h.submitted(2, "read")
    h.tick(1003)
    assert h.reason.startswith("own read late: in flight 1001 ms")


def test_h6_completion_without_submission_takes_no_time_and_requests_complete_in_order():
    h = healthy_region()
    h.completed(100, "read", True)  # a non-blocking receive
    assert h.sampled_ms == 100
    h.submitted(200, "write")
    h.submitted(300, "write")  # the first completed but was not polled yet
    h.completed(250, "write", True)
    h.completed(1350, "write", True)  # the second: 1050 ms
    h.tick(1350)
    assert h.reason == "own write late: took 1050 ms > io_timeout 1000 ms"
    for t in range(IN_FLIGHT_MAX):
        h.submitted(2000 + t, "read")
    with pytest.raises(AssertionError):
        h.submitted(2100, "read")


def test_sampled_ms_is_when_the_newest_good_read_was_submitted():
    h = healthy_region()
    h.submitted(100, "read")
    h.completed(150, "read", True)
    assert h.sampled_ms == 100
    h.submitted(300, "read")
    h.completed(301, "read", False, "EIO")  # a failed read saw nothing
    assert h.sampled_ms == 100
    h.submitted(400, "read")
    h.completed(3000, "read", True)  # late, but what it read is real
    assert h.sampled_ms == 400


def test_limits_and_contract():
    with pytest.raises(ValueError):
        OwnIoHealth("r", 0)
    h = healthy_region()
    with pytest.raises(AssertionError):
        h.submitted(0, "trim")
    h.tick(100)
    with pytest.raises(AssertionError):
        h.tick(99)
    h.submitted(200, "write")
    with pytest.raises(AssertionError):
        h.completed(199, "write", True)


ops = st.lists(st.tuples(st.integers(0, 800), st.sampled_from(["submit", "ok", "fail", "tick"]),
                         st.sampled_from(["write", "read"])), max_size=40)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_events_are_exactly_the_flips_and_the_reason_explains_the_state(program):
    h = OwnIoHealth("r", TIMEOUT_MS)
    now, state, in_flight = 0, False, {"write": 0, "read": 0}
    for dt, op, kind in program:
        now += dt
        if op == "submit" and in_flight[kind] < IN_FLIGHT_MAX:
            h.submitted(now, kind)
            in_flight[kind] += 1
        elif op in ("ok", "fail"):
            h.completed(now, kind, op == "ok", "EIO")
            in_flight[kind] = max(0, in_flight[kind] - 1)
        events = h.tick(now)
        assert all(e.healthy is not state for e in events) and len(events) <= 1
        state = events[-1].healthy if events else state
        assert h.healthy is state and (h.reason == "") is h.healthy
