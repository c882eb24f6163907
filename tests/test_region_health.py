"""Own-I/O health rules H1-H5 (diskhb/core/region_health.py)."""

from diskhb.core.region_health import OwnIoHealth


def test_starts_unhealthy_until_first_write():
    h = OwnIoHealth("d", 1000)
    assert h.tick(0) == [] and not h.healthy and h.reason == "not yet written"
    h.submitted(0, "write")
    h.completed(5, "write", True)
    ev = h.tick(10)
    assert [(e.healthy, e.reason) for e in ev] == [(True, "")] and h.healthy


def test_write_in_flight_past_io_timeout_is_late_then_recovers():
    h = OwnIoHealth("d", 1000)
    h.submitted(0, "write"); h.completed(1, "write", True); h.tick(1)
    h.submitted(200, "write")
    assert h.tick(1200) == [] and h.healthy  # exactly the timeout: not yet late
    ev = h.tick(1201)
    assert not h.healthy and "own write late: in flight 1001 ms" in ev[0].reason
    h.completed(5000, "write", True)  # completed, but far too late (H2)
    h.tick(5000)
    assert not h.healthy and "took 4800 ms" in h.reason
    h.submitted(5200, "write"); h.completed(5210, "write", True)
    assert [e.healthy for e in h.tick(5210)] == [True]


def test_failed_write_and_failed_read():
    h = OwnIoHealth("d", 1000)
    h.submitted(0, "write"); h.completed(1, "write", False, "EIO")
    h.tick(1)
    assert not h.healthy and h.reason == "own write failed: EIO"
    h.submitted(2, "write"); h.completed(3, "write", True)
    h.tick(3)
    assert h.healthy
    h.submitted(4, "read"); h.completed(5, "read", False, "EIO")
    h.tick(5)
    assert not h.healthy and h.reason == "own read failed: EIO"
    h.submitted(6, "read"); h.completed(7, "read", True)
    h.tick(7)
    assert h.healthy


def test_hung_read_makes_us_blind():
    h = OwnIoHealth("d", 500)
    h.submitted(0, "write"); h.completed(1, "write", True); h.tick(1)
    h.submitted(10, "read")
    h.tick(600)
    assert not h.healthy and h.reason.startswith("own read late")
