"""A shared-disk heartbeat region: our slot written every tick, every peer's slot read in one I/O.

Rules of this file:
- The daemon's loop never waits for the disk: reads and writes run on two IoWorkers (one each,
  so a hung read never hides a write completion) with at most one request in flight per worker.
  A request still in flight at the next beat is simply not repeated; the core turns its age into
  "own write late" (every submission and completion goes out of poll() as IoSubmitted/IoCompleted;
  so the events between two polls are bounded by the two workers' one request each).
- One read per tick. A slot area of at most FULL_READ_BYTES_MAX is read whole; a larger one is
  read over the used range [lowest written .. highest written, and ours], and whole every
  RESCAN_MS so a node that joins with a higher id is found within that time. Only slots whose bytes changed since the previous read are decoded
  and reported: an unchanged slot is, for the liveness core, no news.
- Validate after reading: a slot failing checksum/magic/uuid is reported as BadSample (a missed
  beat). Our own slot is read back every beat too and goes to the core as OwnSlotRead (another
  generation in it means another daemon writes with our id: the core stops at once, N3).
"""

from __future__ import annotations

import errno
from typing import Callable

import numpy as np
from crc32c import crc32c

from diskhb.core.node import MailboxRead, OwnSlotRead
from diskhb.core.types import BadSample, BeatBatch, IoCompleted, IoSubmitted
from diskhb.errors import OperatorError
from diskhb.regions.base import OwnBeat, Region
from diskhb.regions.disk import format as fmt
from diskhb.regions.disk.blockio import AlignedBuffer, BlockDevice, IoWorker, bounded_call

RESCAN_MS = 1000
FULL_READ_BYTES_MAX = 256 * 1024  # a slot area this small is read whole every tick (64 x 4 KiB)
SUPERBLOCK_READ_BYTES = 4096  # covers the superblock on 512 and 4096-byte sectors alike
START_IO_TIMEOUT_MS = 10_000  # start-up reads happen before the region's own timeout is known


def io_error(path: str, e: OSError) -> OperatorError:
    name = errno.errorcode.get(e.errno or 0, str(e.errno))
    return OperatorError(f"{path}: I/O error ({name}: {e.strerror}); check the device and its paths")


def open_region(path: str, *, writable: bool, timeout_ms: int = START_IO_TIMEOUT_MS
                ) -> tuple[BlockDevice, fmt.Superblock]:
    """Open a formatted region and read its superblock; one-line OperatorError on any problem."""
    dev = BlockDevice.open(path, writable=writable)
    try:
        buf = AlignedBuffer(SUPERBLOCK_READ_BYTES)
        length = min(SUPERBLOCK_READ_BYTES, dev.size_bytes - dev.size_bytes % dev.sector_size)
        if length < fmt.STRUCT_BYTES:
            raise OperatorError(f"{path}: region is truncated ({dev.size_bytes} bytes); format it with diskhb format")
        try:
            bounded_call(lambda: dev.read_into(buf, 0, length), timeout_ms, path)
        except OSError as e:
            raise io_error(path, e) from None
        try:
            sb = fmt.decode_superblock(buf.view[:length].tobytes())
        except fmt.FormatError as e:
            # "run diskhb format" is the right advice only for a blank device: for one that holds
            # a filesystem, volume or table it invites destroying it, so say what is there instead.
            from diskhb.regions.disk.make import foreign_data  # late: make.py imports this module

            found = foreign_data(dev, timeout_ms)
            if found:
                raise OperatorError(
                    f"{path}: holds {found}, not a diskhb region; name the right device, or format it with"
                    f" 'diskhb format {path} --cluster NAME --force' if that data may be destroyed") from None
            raise OperatorError(f"{path}: {e}; run 'diskhb format {path} --cluster NAME' first") from None
        if dev.is_block_device and dev.sector_size > sb.sector_size:
            raise OperatorError(
                f"{path}: region was formatted for {sb.sector_size}-byte sectors but the device"
                f" has {dev.sector_size}-byte sectors; reformat with --sector-size {dev.sector_size}"
            )
        if dev.size_bytes < sb.region_bytes:
            raise OperatorError(
                f"{path}: region is truncated: {dev.size_bytes} bytes, the superblock needs"
                f" {sb.region_bytes}; restore the device or reformat it"
            )
        dev.sector_size = sb.sector_size
        return dev, sb
    except BaseException:
        dev.close()
        raise


def check_slot(path: str, node_id: int, sb: fmt.Superblock) -> None:
    if node_id > sb.slot_count:
        raise OperatorError(f"{path}: node id {node_id} is beyond the region's {sb.slot_count} slots;"
                            f" use an id in 1..{sb.slot_count} or reformat with more --slots")


class DiskRegion(Region):
    kind = "disk"
    owns_slot = True

    def __init__(self, name: str, path: str, *, node_id: int, node_name: str,
                 clock_ms: Callable[[], int], notify=None):
        self.notify = notify  # a threading.Event set at every completion (wakes the daemon's loop)
        self.name = name
        self.path = path
        self.node_id = node_id
        self.node_name = node_name
        self.clock_ms = clock_ms
        self.dev: BlockDevice | None = None
        self.sb: fmt.Superblock | None = None
        self.reads_total = 0
        self.read_bytes_total = 0
        self.writes_total = 0
        self.write_bytes_total = 0
        self._read_latency_ms: list[int] = []  # drained into histograms (bounded)
        self._write_latency_ms: list[int] = []
        self._events: list = []  # IoSubmitted/IoCompleted/OwnSlotRead since the last poll (bounded)
        self._prev: np.ndarray | None = None  # previous bytes of every slot (rows), for diffing
        self._lo = self._hi = node_id
        self._last_full_ms = -RESCAN_MS
        self._first_write_done_ms: int | None = None

    # -- life cycle --------------------------------------------------------------------------

    def start(self, now_ms: int) -> None:
        self.dev, self.sb = open_region(self.path, writable=True)
        sb = self.sb
        check_slot(self.path, self.node_id, sb)
        s = sb.sector_size
        self._read_buf = AlignedBuffer(sb.slot_count * s)
        self._mbox_buf = AlignedBuffer(s)  # our mailbox, read in the same request as the slots
        self._mbox_prev: bytes | None = None  # its bytes as last reported (a change is reported once)
        self._write_buf = AlignedBuffer(s)
        self._write_rec = self._write_buf.view[:s].view(fmt.slot_dtype(s))[0]
        self._template_key: tuple[int, int, int, int] | None = None
        self._prev = np.zeros((sb.slot_count, s), dtype=np.uint8)
        self._seen = np.zeros(sb.slot_count, dtype=bool)  # slot reported at least once
        self._reader = IoWorker(f"{self.name}:read", clock_ms=self.clock_ms, notify=self.notify)
        self._writer = IoWorker(f"{self.name}:write", clock_ms=self.clock_ms, notify=self.notify)

    def close(self, flush_ms: int = 0) -> None:
        if self.dev is None:
            return
        self._reader.close()
        self._writer.close()
        if self._writer.in_flight() is None and self._reader.in_flight() is None:
            self.dev.close()  # a hung request still uses the fd: leave it to process exit
        self.dev = None

    # -- per beat ----------------------------------------------------------------------------

    def publish(self, now_ms: int, beat: OwnBeat, wall_ms: int) -> None:
        if self.dev is None:
            return
        if self._writer.in_flight() is None:
            self._submit_write(now_ms, beat, wall_ms)
        if self._reader.in_flight() is None:
            self._submit_read(now_ms)

    def request_own_slot(self, now_ms: int) -> None:
        """A read of our own sector alone (the start-up claim, slot_claim)."""
        if self.dev is None or self._reader.in_flight() is not None:
            return
        sb, s = self.sb, self.sb.sector_size
        pos, dev, buf = sb.slot_pos(self.node_id), self.dev, self._read_buf
        if self._reader.submit(lambda: dev.read_into(buf, pos, s), tag=("own",), now_ms=now_ms):
            self._events.append(IoSubmitted(self.name, "read", now_ms))

    def poll(self, now_ms: int) -> list:
        self._drain_writes()
        out, self._events = self._events, []
        for r in self._reader.poll():
            out.append(IoCompleted(self.name, "read", r.completed_ms, r.ok, _errname(r.error),
                                   submitted_ms=r.submitted_ms))
            if not r.ok:
                continue
            self.reads_total += 1
            self._read_latency_ms.append(r.completed_ms - r.submitted_ms)
            del self._read_latency_ms[:-256]
            if r.tag == ("own",):
                self.read_bytes_total += self.sb.sector_size
                out.append(self._own_slot_alone(r.submitted_ms, r.completed_ms))
                continue
            lo, hi = r.tag
            self.read_bytes_total += (hi - lo + 2) * self.sb.sector_size  # the slots and our mailbox
            # Reads and writes run on separate workers: only a read that started after one of
            # our writes had completed can judge what our slot must hold (node core N3).
            judge_own = self._first_write_done_ms is not None and r.submitted_ms > self._first_write_done_ms
            out.extend(self._decode(lo, hi, judge_own, r.submitted_ms))
            out.extend(self._mailbox())
        return out

    def counters(self) -> dict[str, int]:
        return {"read_bytes": self.read_bytes_total, "write_bytes": self.write_bytes_total,
                "reads": self.reads_total, "writes": self.writes_total}

    def latencies_ms(self) -> tuple[list[int], list[int]]:
        w, r = self._write_latency_ms, self._read_latency_ms
        self._write_latency_ms, self._read_latency_ms = [], []
        return w, r

    # -- internals ---------------------------------------------------------------------------

    def _submit_write(self, now_ms: int, beat: OwnBeat, wall_ms: int) -> None:
        self._drain_writes()  # a completed write not polled yet still holds the worker's slot
        self._fill_slot(beat, wall_ms)
        sb = self.sb
        pos = sb.slot_pos(self.node_id)
        dev, buf, s = self.dev, self._write_buf, sb.sector_size
        if self._writer.submit(lambda: dev.write_from(buf, pos, s), tag=beat.seq, now_ms=now_ms):
            self._events.append(IoSubmitted(self.name, "write", now_ms, beat.seq))

    def _fill_slot(self, beat: OwnBeat, wall_ms: int) -> None:
        """Put our slot into the write buffer (only called while no write is in flight).

        construct builds (and validates, and round-trips) the slot whenever generation or flags
        change; in between, only seq and the two clocks move, patched through the numpy dtype.
        Either way the bytes are checked before they go to disk (pair assertion with decode).
        """
        sb, s = self.sb, self.sb.sector_size
        ack = beat.mailbox_acks.get(self.name, 0)
        if self._template_key != (beat.generation, beat.flags, beat.digest, ack):
            slot = fmt.Slot(
                node_id=self.node_id, flags=beat.flags, generation=beat.generation, seq=beat.seq,
                mono_ms=beat.mono_ms, wall_ms=wall_ms, region_uuid=sb.uuid,
                name=self.node_name, interval_ms=sb.interval_ms, cluster_digest=beat.digest, mailbox_ack=ack,
            )
            self._write_buf.view[:s] = np.frombuffer(fmt.encode_slot(slot, s), dtype=np.uint8)
            self._template_key = (beat.generation, beat.flags, beat.digest, ack)
        else:
            if not (0 <= beat.seq < 2**64 and beat.mono_ms >= 0 and wall_ms >= 0):
                raise ValueError(f"slot fields out of range: seq {beat.seq} mono {beat.mono_ms} wall {wall_ms}")
            rec = self._write_rec
            rec["seq"], rec["mono_ms"], rec["wall_ms"] = beat.seq, beat.mono_ms, wall_ms
            rec["crc"] = crc32c(self._write_buf.mem[: fmt.CRC_OFFSET])
        rec = self._write_rec
        if (int(rec["magic"]), int(rec["node_id"]), int(rec["generation"]), int(rec["seq"])) != (
                fmt.SLOT_MAGIC, self.node_id, beat.generation, beat.seq) or \
                crc32c(self._write_buf.mem[: fmt.CRC_OFFSET]) != int(rec["crc"]):
            raise ValueError("the slot about to be written does not decode to our beat")

    def _drain_writes(self) -> None:
        for r in self._writer.poll():
            self._events.append(IoCompleted(self.name, "write", r.completed_ms, r.ok, _errname(r.error), r.tag,
                                            submitted_ms=r.submitted_ms))
            if r.ok:
                self.writes_total += 1
                self.write_bytes_total += self.sb.sector_size
                if self._first_write_done_ms is None:
                    self._first_write_done_ms = r.completed_ms
                self._write_latency_ms.append(r.completed_ms - r.submitted_ms)
                del self._write_latency_ms[:-256]

    def _submit_read(self, now_ms: int) -> None:
        sb = self.sb
        if sb.slot_count * sb.sector_size <= FULL_READ_BYTES_MAX or now_ms - self._last_full_ms >= RESCAN_MS:
            lo, hi = 1, sb.slot_count
            self._last_full_ms = now_ms
        else:
            lo, hi = min(self._lo, self.node_id), max(self._hi, self.node_id)
        s = sb.sector_size
        pos, length = sb.slot_pos(lo), (hi - lo + 1) * s
        dev, buf, mbuf, mpos = self.dev, self._read_buf, self._mbox_buf, sb.mailbox_pos(self.node_id)

        def read() -> None:  # one request: the slots, then our mailbox (the layout keeps them apart)
            dev.read_into(buf, pos, length)
            dev.read_into(mbuf, mpos, s)

        if self._reader.submit(read, tag=(lo, hi), now_ms=now_ms):
            self._events.append(IoSubmitted(self.name, "read", now_ms))

    def _mailbox(self) -> list:
        """Our mailbox as the read found it, when it changed (node core N12 judges it)."""
        s = self.sb.sector_size
        raw = self._mbox_buf.view[:s].tobytes()
        if raw == self._mbox_prev:
            return []
        self._mbox_prev = raw
        try:
            mb = fmt.decode_mailbox(raw, expect_target_id=self.node_id)
        except fmt.FormatError as e:
            return [MailboxRead(self.name, False, error=str(e))]
        if mb is None:
            return [MailboxRead(self.name, True)]
        if mb.region_uuid != self.sb.uuid:
            return [MailboxRead(self.name, False, error="mailbox belongs to an earlier format of this region")]
        return [MailboxRead(self.name, True, mb.sender_id, mb.message, mb.target_generation, mb.seq)]

    def _own_slot_alone(self, submitted_ms: int, completed_ms: int) -> OwnSlotRead:
        s, when = self.sb.sector_size, (submitted_ms, completed_ms)
        try:
            slot = fmt.decode_slot(self._read_buf.view[:s].tobytes(), expect_node_id=self.node_id,
                                   region_uuid=self.sb.uuid)
        except fmt.SlotEmpty:
            return OwnSlotRead(self.name, None, None, 0, "", True, False, *when)
        except fmt.FormatError:
            return OwnSlotRead(self.name, None, None, 0, "", False, False, *when)
        return OwnSlotRead(self.name, slot.generation, slot.seq, slot.flags, slot.name, True, False, *when)

    def _decode(self, lo: int, hi: int, judge_own: bool, seen_ms: int) -> list:
        sb, s = self.sb, self.sb.sector_size
        count = hi - lo + 1
        rows = self._read_buf.view[: count * s].reshape(count, s)
        prev = self._prev[lo - 1 : hi]
        changed = (rows != prev).any(axis=1) | ~self._seen[lo - 1 : hi]
        nonempty = rows[:, : fmt.STRUCT_BYTES].any(axis=1)
        written = np.nonzero(nonempty)[0]
        if lo == 1 and hi == sb.slot_count:  # a full scan re-learns the used range
            self._lo = int(written[0]) + 1 if written.size else self.node_id
            self._hi = int(written[-1]) + 1 if written.size else self.node_id
        idx = np.nonzero(changed & nonempty)[0]
        prev[idx] = rows[idx]
        self._seen[lo - 1 : hi][idx] = True
        if idx.size == 0:
            return []
        ids = idx.astype(np.int64) + lo
        res = fmt.scan_slot_rows(rows[idx], ids, sb.uuid)
        out: list = []
        for node_id, reason in res.bad:
            if node_id != self.node_id:
                out.append(BadSample(node_id, self.name, reason))
        ids, gens, seqs = res.node_ids.tolist(), res.generations.tolist(), res.seqs.tolist()
        flags, names, digests = res.flags.tolist(), res.names, res.digests.tolist()
        if self.node_id in ids:  # our own slot goes to the core as OwnSlotRead, never as a peer's beat
            k = ids.index(self.node_id)
            out.append(OwnSlotRead(self.name, gens[k], seqs[k], flags[k], names[k], True, judge_own))
            for col in (ids, gens, seqs, flags, names, digests):
                del col[k]
        if ids:
            out.append(BeatBatch(self.name, ids, gens, seqs, flags, names, seen_ms, digests))
        return out


def _errname(e: OSError | None) -> str | None:
    if e is None:
        return None
    return errno.errorcode.get(e.errno or 0, str(e))
