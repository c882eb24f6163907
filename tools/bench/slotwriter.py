"""Simulated peers for benchmarks: beat in slots FIRST..LAST of a region, one write per interval.

All simulated slots are rewritten with one O_DIRECT write per interval (their seq advances),
so the daemon under test sees every one of them as a live node. Valid slots: same format,
same checksum rules as a real daemon's (built once with construct, then patched with numpy).

    python -m tools.bench.slotwriter REGION FIRST LAST [--seconds S]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from crc32c import crc32c

from diskhb.core.types import SlotFlag
from diskhb.regions.disk import format as fmt
from diskhb.regions.disk.blockio import AlignedBuffer
from diskhb.regions.disk.region import open_region

SECONDS_MAX = 3600


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("region")
    ap.add_argument("first", type=int)
    ap.add_argument("last", type=int)
    ap.add_argument("--seconds", type=float, default=60)
    a = ap.parse_args()
    dev, sb = open_region(a.region, writable=True)
    s, count = sb.sector_size, a.last - a.first + 1
    assert 1 <= a.first <= a.last <= sb.slot_count and a.seconds <= SECONDS_MAX
    gen = int.from_bytes(os.urandom(8), "little") | 1
    rows = np.zeros((count, s), dtype=np.uint8)
    for k in range(count):
        node_id = a.first + k
        slot = fmt.Slot(node_id=node_id, flags=int(SlotFlag.ACTIVE), generation=gen, seq=1, mono_ms=0,
                        wall_ms=0, region_uuid=sb.uuid, name=f"sim{node_id}", interval_ms=sb.interval_ms)
        rows[k] = np.frombuffer(fmt.encode_slot(slot, s), dtype=np.uint8)
    rec = rows.view(fmt.slot_dtype(s)).reshape(count)
    buf = AlignedBuffer(count * s)
    end = time.monotonic() + a.seconds
    seq = 1
    next_t = time.monotonic()
    while time.monotonic() < end:
        seq += 1
        now_ms = time.monotonic_ns() // 1_000_000
        rec["seq"] = seq
        rec["mono_ms"] = now_ms
        rec["wall_ms"] = time.time_ns() // 1_000_000
        for k in range(count):
            rec["crc"][k] = crc32c(rows[k, : fmt.CRC_OFFSET].tobytes())
        buf.view[: count * s] = rows.reshape(-1)
        dev.write_from(buf, sb.slot_pos(a.first), count * s)
        next_t += sb.interval_ms / 1000
        time.sleep(max(0.0, next_t - time.monotonic()))
    dev.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
