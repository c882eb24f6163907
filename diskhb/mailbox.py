"""`diskhb message PATH NODE test|clear`: write a message into a node's mailbox, and read
mailboxes back with their acknowledgements (for status). The disk pill (message "fence") is
written the same way by the daemon's fencing (diskhb.pill), never by hand.

The sender never waits for the node: it writes the message (the next seq of that mailbox, meant
for the incarnation its slot shows now), reads it back, and returns. The node acts on it at its
next slot read (node core N12) and acknowledges in its own slot (mailbox_ack); `diskhb status`
shows a message as pending until then.
"""

from __future__ import annotations

from diskhb.core.types import hex_id
from diskhb.errors import OperatorError
from diskhb.regions.disk import format as fmt
from diskhb.regions.disk.blockio import AlignedBuffer
from diskhb.regions.disk.region import bounded_call, io_error, open_region
from diskhb.runtime import wall_ms

OPERATOR_ID = 0  # the sender id of a message written by hand
IO_TIMEOUT_MS = 10_000

BY_NAME = {name: code for code, name in fmt.MESSAGES.items()}


def send_message(path: str, node_id: int, message: str, sender_id: int = OPERATOR_ID) -> str:
    """Write `message` into node_id's mailbox on the region at path; one line saying what was done."""
    if message not in BY_NAME:
        raise OperatorError(f"unknown message {message!r}: use one of {', '.join(sorted(BY_NAME))}")
    seq, generation = write_message(path, node_id, BY_NAME[message], sender_id)
    who = (f"node {node_id} (generation {generation:#x})" if generation else
           f"node {node_id} (no daemon has written its slot: whoever runs next)")
    return (f"{path}: {message} message (seq {seq}) written to the mailbox of {who}; it acknowledges at its next"
            " beat: see 'diskhb status'")


def write_message(path: str, node_id: int, code: int, sender_id: int = OPERATOR_ID,
                  generation: int | None = None) -> tuple[int, int]:
    """Write message `code` into node_id's mailbox (the next seq), meant for `generation` (None:
    the one its slot shows now), read it back; (seq, target generation). OperatorError: one line."""
    dev, sb = open_region(path, writable=True)
    try:
        if not 1 <= node_id <= sb.slot_count:
            raise OperatorError(f"{path}: node {node_id} does not exist here (slots 1..{sb.slot_count})")
        if not 0 <= sender_id <= sb.slot_count:
            raise OperatorError(f"{path}: --sender {sender_id} is not 0 (an operator) or a node id 1..{sb.slot_count}")
        s = sb.sector_size
        buf = AlignedBuffer(s)
        slot = _read_slot(dev, sb, buf, node_id)
        old = _read_mailbox(dev, sb, buf, node_id)
        if generation is None:
            generation = slot.generation if isinstance(slot, fmt.Slot) else 0
        seq = (old.seq if isinstance(old, fmt.Mailbox) else 0) + 1
        mb = fmt.Mailbox(target_id=node_id, sender_id=sender_id, message=code,
                         target_generation=generation, seq=seq, sender_generation=0, wall_ms=wall_ms(),
                         region_uuid=sb.uuid)
        buf.view[:s] = memoryview(fmt.encode_mailbox(mb, s))
        pos = sb.mailbox_pos(node_id)
        try:
            bounded_call(lambda: dev.write_from(buf, pos, s), IO_TIMEOUT_MS, path)
        except OSError as e:
            raise io_error(path, e) from None
        if _read_mailbox(dev, sb, buf, node_id) != mb:  # validate after writing, as every structure
            raise OperatorError(f"{path}: the message read back differs from what was written; check the device")
    finally:
        dev.close()
    return seq, generation


def mailboxes(dev, sb: fmt.Superblock, slots: dict[int, fmt.Slot | str]) -> dict[int, dict]:
    """node id -> its mailbox's message and whether its slot acknowledges it (written ones only)."""
    s = sb.sector_size
    area = _read_sector(dev, AlignedBuffer(sb.slot_count * s), sb.mailbox_offset, sb.slot_count * s)
    out: dict[int, dict] = {}
    for node_id in range(1, sb.slot_count + 1):
        raw = area[(node_id - 1) * s: node_id * s]
        try:
            mb = fmt.decode_mailbox(raw, expect_target_id=node_id)
        except fmt.FormatError as e:
            out[node_id] = {"error": str(e)}
            continue
        if mb is None or mb.region_uuid != sb.uuid:
            continue
        slot = slots.get(node_id)
        acked = isinstance(slot, fmt.Slot) and slot.mailbox_ack == mb.seq
        if mb.message == fmt.MSG_CLEAR and acked:
            continue  # nothing to show: cleared, and the node knows
        out[node_id] = {"message": fmt.MESSAGES.get(mb.message, f"code {mb.message}"), "sender": mb.sender_id,
                        "seq": mb.seq, "target_generation": hex_id(mb.target_generation), "acknowledged": acked}
    return out


def _read_sector(dev, buf: AlignedBuffer, pos: int, size: int) -> bytes:
    try:
        bounded_call(lambda: dev.read_into(buf, pos, size), IO_TIMEOUT_MS, dev.path)
    except OSError as e:
        raise io_error(dev.path, e) from None
    return buf.view[:size].tobytes()


def _read_slot(dev, sb: fmt.Superblock, buf: AlignedBuffer, node_id: int) -> fmt.Slot | None:
    raw = _read_sector(dev, buf, sb.slot_pos(node_id), sb.sector_size)
    try:
        return fmt.decode_slot(raw, expect_node_id=node_id, region_uuid=sb.uuid)
    except (fmt.SlotEmpty, fmt.FormatError):
        return None


def _read_mailbox(dev, sb: fmt.Superblock, buf: AlignedBuffer, node_id: int) -> fmt.Mailbox | None:
    raw = _read_sector(dev, buf, sb.mailbox_pos(node_id), sb.sector_size)
    try:
        return fmt.decode_mailbox(raw, expect_target_id=node_id)
    except fmt.FormatError:
        return None  # a torn or foreign sector: overwritten by the new message (seq restarts at 1)
