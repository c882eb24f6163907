"""netpath.replay: one test per rule (P1-P4) under a virtual clock, plus the bounds."""

from __future__ import annotations

from netpath.replay import GAP_UNKNOWN_MS, QUIET_BEATS, RETIRED_MAX, ReplayGuard

INTERVAL = 200


def beating(guard: ReplayGuard, node: int, gen: int, seqs, *, t0: int = 0, mono0: int = 50_000):
    """Feed seqs of one generation at INTERVAL; returns the last (now, mono)."""
    now = mono = 0
    for i, seq in enumerate(seqs):
        now, mono = t0 + i * INTERVAL, mono0 + i * INTERVAL
        assert guard.check(now, node, gen, seq, mono) is None
    return now, mono


def test_p1_first_packet_is_taken():
    g = ReplayGuard()
    assert g.check(0, 3, 77, 1000, 5) is None
    assert g.current(3) == (77, 1000)


def test_p2_seq_must_rise_duplicates_and_replays_are_named():
    g = ReplayGuard()
    now, mono = beating(g, 3, 77, range(1, 6))
    assert g.check(now + 1, 3, 77, 5, mono) == "duplicate"
    assert g.check(now + 1, 3, 77, 3, mono - 2 * INTERVAL) == "replay"
    assert g.check(now + 1, 3, 77, 9, mono - 1) == "replay"  # seq up but the sender's clock went back
    assert g.check(now + INTERVAL, 3, 77, 8, mono + 3 * INTERVAL) is None  # gaps (lost packets) are fine
    assert g.current(3) == (77, 8)


def test_p3_a_left_generation_never_comes_back():
    g = ReplayGuard()
    now, mono = beating(g, 3, 77, range(1, 4))
    later = now + QUIET_BEATS * INTERVAL
    assert g.check(later, 3, 88, 1, mono + 5000) is None  # restart
    assert g.check(later + 1, 3, 77, 1000, mono + 9000) == "old_generation"  # even with a higher seq


def test_p4a_daemon_restart_on_the_same_boot_is_accepted_once_quiet():
    g = ReplayGuard()
    now, mono = beating(g, 3, 77, range(1, 10))
    # The old generation beat QUIET_BEATS intervals ago at most: not quiet yet.
    assert g.check(now + QUIET_BEATS * INTERVAL - 1, 3, 88, 1, mono + 10_000) == "old_generation"
    assert g.check(now + QUIET_BEATS * INTERVAL, 3, 88, 1, mono + 10_000) is None
    assert g.current(3) == (88, 1)


def test_p4_a_recording_never_displaces_a_live_generation():
    g = ReplayGuard()
    now, mono = beating(g, 3, 77, range(1, 20))
    # A recording from an earlier, longer boot: its clock ran much further than the live one.
    for k in range(1, 30):
        t = now + k * 50  # injected between the live beats
        if k % 4 == 0:
            assert g.check(t, 3, 77, 19 + k // 4, mono + k * 50) is None  # the live node keeps beating
        else:
            assert g.check(t, 3, 66, 5000 + k, 10**9 + k) == "old_generation"
    assert g.current(3)[0] == 77


def test_p4a_a_same_boot_replay_of_an_earlier_generation_is_refused_even_when_quiet():
    g = ReplayGuard()
    beating(g, 3, 55, range(1, 4), mono0=1000)  # an earlier incarnation (forgotten later is fine)
    now, mono = beating(g, 3, 77, range(1, 4), t0=10_000, mono0=20_000)
    # gen 55 was retired; an unknown one with an older clock, silent well past the beat gap but not reboot-quiet:
    assert g.check(now + 5 * INTERVAL, 3, 44, 9, 5_000) == "old_generation"


def test_p4b_a_reboot_resets_the_clock_and_is_accepted_after_reboot_quiet():
    g = ReplayGuard(reboot_quiet_ms=10_000)
    now, mono = beating(g, 3, 77, range(1, 10), mono0=900_000)
    assert g.check(now + 9_999, 3, 99, 1, 2_000) == "old_generation"  # older clock, not quiet long enough
    assert g.check(now + 10_000, 3, 99, 1, 2_000) is None
    assert g.current(3) == (99, 1)
    assert g.check(now + 10_001, 3, 77, 10, mono + 1) == "old_generation"  # the old boot's stream is dead


def test_gap_is_learned_from_the_senders_clock():
    g = ReplayGuard()
    assert g.check(0, 3, 77, 1, 1000) is None
    # one beat only: the unknown-gap default applies
    assert g.check(QUIET_BEATS * GAP_UNKNOWN_MS - 1, 3, 88, 1, 10**6) == "old_generation"
    assert g.check(QUIET_BEATS * GAP_UNKNOWN_MS, 3, 88, 1, 10**6) is None
    g = ReplayGuard()
    beating(g, 4, 1, range(1, 3))  # 200 ms apart on the sender's clock
    assert g.check(INTERVAL + QUIET_BEATS * INTERVAL, 4, 2, 1, 10**6) is None


def test_state_is_bounded():
    g = ReplayGuard(reboot_quiet_ms=1)
    now = 0
    for gen in range(1, 100):
        now += 10
        assert g.check(now, 5, gen, 1, now) is None
    assert len(g._senders[5].retired) == RETIRED_MAX
    for node in range(1, 4097):
        g.check(now, node, 1, 1, 1)
    assert len(g) == 4096
