"""OwnIoHealth.failing: unhealthy because of late or failed own I/O (H1-H3), not merely H4.

The daemon sets DISK_LOST in every heartbeat, and logs "region R unhealthy: ...", from this
property. A node whose disk fails before its first good write never flips `healthy` (it starts
unhealthy, "not yet written"), yet its disk is lost: `failing` says so. Virtual clock, no I/O.
"""

from diskhb.core.region_health import NOT_YET_WRITTEN, OwnIoHealth

TIMEOUT_MS = 1000


def test_not_yet_written_is_not_failing():
    h = OwnIoHealth("disk:a", TIMEOUT_MS)
    assert h.tick(0) == [] and h.reason == NOT_YET_WRITTEN and not h.failing
    h.submitted(0, "write")
    assert h.tick(TIMEOUT_MS) == [] and not h.failing  # in flight, not late yet


def test_first_write_failing_or_late_is_failing_without_a_flip():
    h = OwnIoHealth("disk:a", TIMEOUT_MS)
    h.submitted(0, "write")
    h.completed(1, "write", False, "EIO")
    assert h.tick(1) == [] and h.failing and h.reason == "own write failed: EIO" and h.last_ok_ms is None
    h.submitted(100, "write")
    assert h.tick(100 + TIMEOUT_MS + 1) == [] and h.failing and h.reason.startswith("own write late: in flight")
    h.completed(2000, "write", True)  # landed, but late: still failing
    assert h.tick(2000) == [] and h.failing
    h.submitted(2100, "write")
    h.completed(2105, "write", True)
    assert [e.healthy for e in h.tick(2105)] == [True] and not h.failing


def test_failing_follows_unhealthy_once_written():
    h = OwnIoHealth("disk:a", TIMEOUT_MS)
    h.submitted(0, "write")
    h.completed(5, "write", True)
    h.tick(5)
    assert h.healthy and not h.failing
    h.submitted(10, "read")
    h.completed(12, "read", False, "EIO")  # blind: unhealthy, and failing
    assert [e.healthy for e in h.tick(12)] == [False] and h.failing
