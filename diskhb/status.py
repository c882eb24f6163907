"""`diskhb status` and `diskhb dump`: what a region (or the daemon serving it) says, for humans and JSON.

Without a daemon, status samples the disk itself and runs the same liveness core the daemon
runs, so it applies the same rules: a node is alive once its seq is seen advancing, dead once
it has not advanced for dead_ms of watching, left when it published LEFT. It stops as soon as
every node has a verdict, and after dead_ms + 2 intervals at the latest.

JSON shows every generation as a hex string ("0x5fa3..."; diskhb.core.types.hex_id), like the
daemon's snapshot: 64-bit numbers do not survive readers that parse numbers as doubles.
"""

from __future__ import annotations

import time

import numpy as np

from diskhb.control import find_daemon
from diskhb.core.liveness import Liveness
from diskhb.core.types import Beat, BadSample, NodeState, SlotFlag, hex_id, parse_hex_id
from diskhb.errors import OperatorError
from diskhb.mailbox import mailboxes
from diskhb.regions.disk import format as fmt
from diskhb.regions.disk.blockio import AlignedBuffer
from diskhb.regions.disk.region import bounded_call, io_error, open_region

OBSERVER_ID = 0  # status watches as nobody: every slot is a peer


def _read_slots(dev, sb: fmt.Superblock, buf: AlignedBuffer) -> np.ndarray:
    length = sb.slot_count * sb.sector_size
    try:
        bounded_call(lambda: dev.read_into(buf, sb.slot_offset, length), max(sb.io_timeout_ms, 1000), dev.path)
    except OSError as e:
        raise io_error(dev.path, e) from None
    return buf.view[:length]


def decoded_slots(raw: np.ndarray, sb: fmt.Superblock) -> dict[int, fmt.Slot | str]:
    """node id -> Slot, or the reason it is invalid; never-written slots are absent."""
    s = sb.sector_size
    rows = raw.reshape(sb.slot_count, s)
    out: dict[int, fmt.Slot | str] = {}
    for k in np.nonzero(rows[:, : fmt.STRUCT_BYTES].any(axis=1))[0]:
        node_id = int(k) + 1
        try:
            out[node_id] = fmt.decode_slot(rows[k].tobytes(), expect_node_id=node_id, region_uuid=sb.uuid)
        except fmt.FormatError as e:
            out[node_id] = str(e)
    return out


def sample_region(path: str, duration_ms: int | None = None) -> dict:
    dev, sb = open_region(path, writable=False)
    try:
        buf = AlignedBuffer(sb.slot_count * sb.sector_size)
        live = Liveness(self_id=OBSERVER_ID, interval_ms=sb.interval_ms, dead_ms=sb.dead_ms)
        limit_ms = duration_ms if duration_ms is not None else sb.dead_ms + 2 * sb.interval_ms
        t0 = time.monotonic_ns() // 1_000_000
        slots: dict[int, fmt.Slot | str] = {}
        while True:
            now = time.monotonic_ns() // 1_000_000
            raw = _read_slots(dev, sb, buf)
            res = fmt.scan_slots(raw, 1, sb.slot_count, sb.sector_size, sb.uuid)
            for k, node_id in enumerate(res.node_ids.tolist()):
                live.observe(now, Beat(node_id, path, int(res.generations[k]), int(res.seqs[k]),
                                       int(res.flags[k]), res.names[k]))
            for node_id, reason in res.bad:
                live.observe(now, BadSample(node_id, path, reason))
            live.tick(now)
            views = live.nodes()
            if now - t0 >= limit_ms or (views and all(v.state is not NodeState.UNKNOWN for v in views)) \
                    or (not views and now - t0 >= 2 * sb.interval_ms):
                slots = decoded_slots(raw, sb)
                boxes = mailboxes(dev, sb, slots)
                break
            time.sleep(sb.interval_ms / 1000)
        sampled_ms = now - t0
    finally:
        dev.close()
    wall_now = time.time_ns() // 1_000_000
    nodes = []
    for v in views:
        slot = slots.get(v.node_id)
        age_ms = v.age_ms
        if v.state is not NodeState.ALIVE and isinstance(slot, fmt.Slot) and slot.wall_ms:
            # Not seen advancing: the writer's own wall clock tells humans roughly how long ago
            # it last wrote (display only; clocks may be skewed).
            age_ms = max(age_ms, wall_now - slot.wall_ms)
        state = v.state
        if state is not NodeState.ALIVE and isinstance(slot, fmt.Slot) and slot.generation == v.generation \
                and slot.flags & SlotFlag.LEFT:
            # Its slot says it left cleanly. The core believes a LEFT only from an incarnation it saw
            # advancing (a replay must not fake a leave); a human reading the disk may believe it.
            state = NodeState.LEFT
        nodes.append({
            "id": v.node_id, "name": v.name, "state": state.value, "seq": v.seq,
            "generation": hex_id(v.generation), "age_s": round(age_ms / 1000, 3),
            "flags": SlotFlag.names(v.flags),
        })
    for node_id, slot in sorted(slots.items()):
        if isinstance(slot, str) and not any(n["id"] == node_id for n in nodes):
            nodes.append({"id": node_id, "name": "", "state": NodeState.UNKNOWN.value, "seq": None,
                          "generation": None, "age_s": None, "flags": [], "error": slot})
    nodes.sort(key=lambda n: n["id"])
    return {
        "source": "disk",
        "path": path,
        "cluster": sb.cluster,
        "uuid": sb.uuid_str,
        "interval_ms": sb.interval_ms,
        "dead_ms": sb.dead_ms,
        "sampled_s": round(sampled_ms / 1000, 3),
        "nodes": nodes,
        "mailboxes": {str(k): v for k, v in sorted(boxes.items())},  # messages in them, acknowledged or not
    }


def query_daemon(path: str, run_dir: str) -> dict | None:
    """The snapshot of a running daemon that has `path` among its disk regions, if any."""
    found = find_daemon(path, run_dir)
    return None if found is None else found[1]


def query_node_daemon(cfg, run_dir: str, path: str | None) -> dict | None:
    """The snapshot of the daemon of the node `cfg` configures (serving `path`, if given)."""
    found = find_daemon(path, run_dir, cfg.node.id, cfg.cluster.name)
    return None if found is None else found[1]


def render_table(view: dict) -> str:
    head = f"cluster {view['cluster']}  interval {view['interval_ms']} ms  dead {view['dead_ms']} ms"
    if view["source"] == "disk":
        head += f"  region {view['path']}  (disk view, sampled {view['sampled_s']:.1f} s)"
    else:
        node = view["node"]
        head += f"  (daemon view of {node['name']}, id {node['id']}, pid {node['pid']})"
    lines = [head]
    if view["source"] == "daemon":
        for r in view["regions"]:
            state = "healthy" if r["healthy"] else f"UNHEALTHY: {r['reason']}"
            lines.append(f"  region {r['name']}: {state}")
        sf = view.get("self_fence")
        if sf:
            lines.append(f"  SELF-FENCED ({sf['reason']}): {sf['detail']};"
                         + (" READ_ONLY: nothing of ours can write guarded storage" if sf["read_only"] else
                            " stopping its guarded resources") + "; restart the daemon to rejoin")
        for h in view.get("mmp", []):
            lines.append(f"  holds MMP resource {h['resource']} (epoch {h['epoch']}, {h['state']}) on {h['path']}")
        q = view.get("quorum")
        if q is None:
            lines.append("  quorum: not configured ([quorum] in the config)")
        else:
            lines.append(f"  quorum: {'QUORATE' if q['quorate'] else 'NOT QUORATE'}, {q['votes']} of"
                         f" {q['expected_votes']} votes, members {', '.join(map(str, q['members'])) or '-'}"
                         f" ({q['reason']})"
                         + (f"; NOT COUNTED (another [quorum]): {', '.join(map(str, q['refused']))}"
                            if q.get("refused") else ""))
        wd = view.get("watchdog")
        if wd:
            lines.append(f"  watchdog: {wd['device']} ({wd['identity']}), timeout {wd['timeout_s']} s, worst keepalive"
                         f" gap {wd['worst_gap_ms'] / 1000:.2f} s, margin {wd['margin_s']:.2f} s"
                         + (f", {wd['errors']} keepalive errors" if wd["errors"] else ""))
        elif "watchdog" in view:
            lines.append("  watchdog: none ([watchdog] in the config)")
        for region, mb in (view.get("mailbox") or {}).items():
            if "seq" not in mb:
                lines.append(f"  mailbox on {region}: INVALID: {mb.get('error', '')}")
                continue
            sender = "an operator" if mb["sender"] == 0 else f"node {mb['sender']}"
            lines.append(f"  mailbox on {region}: {mb['message']} from {sender} (seq {mb['seq']}): {mb['state']}")
        for v in view.get("fencing") or []:
            who = "this node" if v["fencer"] == node["id"] else f"node {v['fencer']}" if v["fencer"] else "nobody yet"
            state = "FENCED" if v["fenced"] else "FENCE ORDERED" if v.get("manual") else "TO BE FENCED"
            lines.append(f"  fencing: node {v['node']} ({v['generation']}) {state} for {v['since_ms'] / 1000:.1f} s,"
                         f" fencer {who}, {v['attempts']} attempt{'s' if v['attempts'] != 1 else ''}"
                         + (f": {v['last']}" if v["last"] else "")
                         + (" (in flight)" if v.get("in_flight") and not v.get("pending") else "")
                         + (f"; receipt {v['receipt']}" if v.get("receipt") else ""))
        if view.get("fence_methods"):
            lines.append(f"  fence methods: {' then '.join(view['fence_methods'])}")
        pr = view.get("scsi_pr")
        if pr:
            state = (f"FENCED ({pr['fenced']})" if pr["fenced"] else "registered" if pr["registered"] else
                     "NOT REGISTERED" + (f": {pr['register']['detail']}" if pr.get("register") else
                                         " (waits for quorum)"))
            lines.append(f"  scsi-pr: key {pr['own_key']} {state} on {len(pr['luns'])} LUN(s)")
            for lun in ((pr.get("audit") or {}).get("luns") or []):
                found = [f"{f['kind']}: {f['detail']}" for f in lun["findings"] if f["kind"] != "generation-moved"]
                what = lun["error"] if lun.get("error") else (
                    f"{len(lun['keys'])} key(s), PR generation {lun['generation']}, reserved "
                    f"{(lun.get('reservation') or {}).get('text', 'by nobody')}")
                lines.append(f"  scsi-pr audit {lun['lun']}: {what}" + (f"; {'; '.join(found)}" if found else ""))
    cols = ["ID", "NAME", "STATE", "SEQ", "GENERATION", "AGE_S", "FLAGS"]
    if view["source"] == "daemon":
        cols.append("REGIONS")
    rows = [cols]
    for n in view["nodes"]:
        gen = hex_id(parse_hex_id(n["generation"])) if n.get("generation") is not None else "-"
        age = f"{n['age_s']:.1f}" if n.get("age_s") is not None else "-"
        flags = ",".join(n["flags"]) or "-"
        if n.get("error"):
            flags = f"INVALID: {n['error']}"
        row = [str(n["id"]), n["name"] + (" (self)" if n.get("self") else ""), n["state"],
               "-" if n["seq"] is None else str(n["seq"]), gen, age, flags]
        if view["source"] == "daemon":
            row.append(" ".join(f"{r}={rv['state']}" for r, rv in n.get("regions", {}).items()))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    for node_id, mb in (view.get("mailboxes") or {}).items():  # the disk view: mailboxes with a message
        sender = "an operator" if mb.get("sender") == 0 else f"node {mb.get('sender')}"
        lines.append(f"mailbox of node {node_id}: INVALID: {mb['error']}" if "error" in mb else
                     f"mailbox of node {node_id}: {mb['message']} from {sender} (seq {mb['seq']}):"
                     f" {'acknowledged' if mb['acknowledged'] else 'PENDING'}")
    return "\n".join(lines)


def hexdump(data: bytes, base: int = 0, skip_zero_tail: bool = True) -> str:
    if skip_zero_tail:
        end = len(data.rstrip(b"\x00"))
        end = min(len(data), -(-end // 16) * 16)
    else:
        end = len(data)
    out = []
    for off in range(0, end, 16):
        chunk = data[off: off + 16]
        hexs = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        out.append(f"{base + off:08x}  {hexs:<47}  |{text}|")
    if end < len(data):
        out.append(f"{base + end:08x}  ... zeros to {base + len(data):08x}")
    return "\n".join(out)


def dump_region(path: str, *, slot: int | None, raw: bool) -> str:
    dev, sb = open_region(path, writable=False)
    try:
        s = sb.sector_size
        buf = AlignedBuffer(max(sb.slot_count * s, 4096))
        try:
            bounded_call(lambda: dev.read_into(buf, 0, s), 10_000, path)
            sb_bytes = buf.view[:s].tobytes()
        except OSError as e:
            raise io_error(path, e) from None
        out = ["superblock @0:"]
        for k in ("version", "uuid_str", "cluster", "sector_size", "slot_count", "mmp_resources",
                  "slot_offset", "mailbox_offset", "mmp_offset", "region_bytes", "interval_ms", "dead_ms",
                  "io_timeout_ms", "created_wall_ms"):
            value = getattr(sb, k)
            if k == "created_wall_ms":
                value = f"{value} ({time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(value / 1000))})"
            out.append(f"  {k.removesuffix('_str')}: {value}")
        if raw:
            out.append(hexdump(sb_bytes))
        if slot is not None and not 1 <= slot <= sb.slot_count:
            raise OperatorError(f"{path}: --slot {slot} out of range; the region has slots 1..{sb.slot_count}")
        slots_raw = _read_slots(dev, sb, buf).tobytes()
        ids = [slot] if slot is not None else range(1, sb.slot_count + 1)
        mbx = AlignedBuffer(sb.slot_count * s)
        try:
            bounded_call(lambda: dev.read_into(mbx, sb.mailbox_offset, sb.slot_count * s), 10_000, path)
        except OSError as e:
            raise io_error(path, e) from None
        for node_id in ids:
            sector = slots_raw[(node_id - 1) * s: node_id * s]
            pos = sb.slot_pos(node_id)
            if sector == bytes(s) and slot is None:
                continue
            try:
                sl = fmt.decode_slot(sector, expect_node_id=node_id, region_uuid=sb.uuid)
                wall = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(sl.wall_ms / 1000))
                out.append(f"slot {node_id} @{pos}: name={sl.name!r} generation={sl.generation:#x} seq={sl.seq}"
                           f" flags={','.join(SlotFlag.names(sl.flags)) or '-'} mono_ms={sl.mono_ms}"
                           f" wall={wall} interval_ms={sl.interval_ms}")
            except fmt.SlotEmpty:
                out.append(f"slot {node_id} @{pos}: never written")
            except fmt.FormatError as e:
                out.append(f"slot {node_id} @{pos}: INVALID: {e}")
            if raw:
                out.append(hexdump(sector, pos))
            msector = mbx.view[(node_id - 1) * s: node_id * s].tobytes()
            mpos = sb.mailbox_pos(node_id)
            try:
                mb = fmt.decode_mailbox(msector, expect_target_id=node_id)
                line = None if mb is None else (
                    f"from node {mb.sender_id} message={fmt.MESSAGES.get(mb.message, f'code {mb.message}')}"
                    f" seq={mb.seq} target_generation={mb.target_generation:#x}")
            except fmt.FormatError as e:
                line = f"INVALID: {e}"
            if line is None and slot is not None:  # asked for this node: say so rather than print nothing
                line = "never written"
            if line is not None:
                out.append(f"mailbox {node_id} @{mpos}: {line}")
                if raw:
                    out.append(hexdump(msector, mpos))
        out.append(f"mmp area @{sb.mmp_offset}: {sb.mmp_resources} resource blocks"
                   " (see 'diskhb mmp status --region PATH')")
        return "\n".join(out)
    finally:
        dev.close()
