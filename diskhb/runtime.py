"""Facts of this process that the I/O-free cores are given, never read themselves.

Decisions use monotonic_ms (CLOCK_MONOTONIC: never jumps with NTP or an operator's `date`);
wall_ms is written into blocks and shown to humans only. A generation names one start of a
process (daemon or MMP holder): random so that a restart is told apart from a slow beat.
"""

from __future__ import annotations

import os
import time

GENERATION_BITS = 63  # fits signed 64-bit consumers too; never 0 (0 means "none" on disk)


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def new_generation() -> int:
    while True:
        gen = int.from_bytes(os.urandom(8), "little") & ((1 << GENERATION_BITS) - 1)
        if gen:
            return gen
