"""What must hold after every CTS schedule, judged from the audit file, the daemons' logs and the
driver's timeline (tools.cts.cluster). Free of I/O but for reading files, so each rule can be
shown failing on made-up evidence (tests/tools/test_cts.py).

  ONE-WRITER    the audit file (appended with O_APPEND: its order is the order the writes landed)
                shows, per resource, one holder (node, generation, epoch) at a time: once another
                holder's write landed, no write of an earlier holder lands again. A resource
                written through iSCSI (--scsi-pr: lines with a sixth field, appended once the LUN
                said GOOD) is taken in the order its writes were sent: each landed between its
                sending and its line, and a correct cluster's holders never overlap there.
  EPOCHS        each new holder of a resource writes under a higher epoch than the one before.
  FENCED-WRITE  no write by a node incarnation issued after a peer counted it fenced (verified:
                its READ_ONLY promise, or its self-fence deadline passed), after it published
                READ_ONLY itself, or (to that resource) after a peer took a resource over from it:
                from those moments on its storage may be someone else's. A fence by an I/O method
                (scsi-pr) cuts the victim off the LUNs only (fencing FD13): that is PR-FENCED-WRITE's.
  PR-FENCED-WRITE no write through iSCSI (a line with a sixth field: it landed on the LUN) by a
                node incarnation sent after a peer verified it fenced by scsi-pr (its key read back
                gone from the LUN, "attempt A by scsi-pr: fenced"): the target must refuse it
                (RESERVATION CONFLICT), every nexus of that key having been preempted. Writes found
                in the LUN's blocks at the schedule's end count too: one whose answer never came
                back (its consumer killed, no answer) landed all the same.
  LUN-LAST-WRITE each of the LUN's blocks, read at the schedule's end, holds no write older than a
                landed write of another holder to that block (LBA: by the time it was sent,
                lun_lba): no holder's write landed after its successor's, such as a write still
                queued in a cut cable's TCP stream when its consumer was killed.
  FALSE-DEATH   a node incarnation is declared dead by an observer only if, in the dead time
                before, it was not beating where the observer would see it: running and not
                frozen, with its disk working (its slot moves on the shared disk) or its cable
                and the observer's both in (its datagrams arrive), for two intervals or more.
  FALSE-FENCE   the same for naming it a victim ("must be fenced").
  FENCE-QUORATE a node names a victim only if, within the two dead times before, it could see a
                majority (itself and one more of three) by the same measure.
  DETECTED      (checked live at the end, cluster.py) every node whose daemon is gone is dead or
                left in the view of every running quorate node.
  TAKEN-OVER    (likewise) with a running quorate node left, every resource is held by one
                running node whose consumer writes again after the heal.
  RECOVERED     (likewise) then every node that is down or fenced itself is restarted, as an
                operator would: every node runs quorate again, every resource is held by one
                node whose consumer writes after the restarts.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field

LUN_SLOTS, LUN_SLOT_NS, BLOCK = 8, 50_000_000, 512  # a write sent at t goes to LBA lun_lba(t): every holder
# writes every block within LUN_SLOTS x 50 ms, so a late landing overwrites a newer holder's block
IO_METHODS = ("scsi-pr",)  # fencing FD13: these cut a victim off the LUNs only
STEP_S = 0.01  # the resolution of the connectivity checks
EARLY_SLACK_S = 0.3  # the observer's read of a landing may be this late (FaultDisk, the loop)
LATE_SLACK_S = 0.05  # log lines are dated when queued; the timeline to MONITOR_S
FENCED_SLACK_S = 0.005  # log time (ms) against the audit's ns
LINK_SETTLE_S = 0.2  # a plugged veth carries at once (static ARP, tools.netns); the bridge, nearly


@dataclass(frozen=True, slots=True)
class Write:
    resource: str
    node: int
    generation: int
    epoch: int
    t: float  # monotonic seconds, read right before the write
    done: float = 0.0  # through iSCSI: when GOOD came back (the write landed between t and this); 0: not


@dataclass(frozen=True, slots=True)
class LogEvent:
    t: float  # monotonic seconds
    node: int  # whose log
    kind: str  # started, beating, death, victim, fenced, self-fenced, pill
    subject: int = 0  # the node the line is about (death, victim, fenced, pill)
    generation: int = 0
    detail: str = ""


_PATTERNS = (
    ("beating", re.compile(r"beating as generation (0x[0-9a-f]+)")),
    ("death", re.compile(r"node \S+ \(id (\d+)\): \w+ -> dead on .*\[generation (0x[0-9a-f]+)\]$")),
    ("victim", re.compile(r"node (\d+) \(generation (0x[0-9a-f]+)\) must be fenced: (.*)")),
    ("fenced", re.compile(r"fencing node (\d+) \(generation (0x[0-9a-f]+)\), attempt \d+ by (\S+): fenced")),
    ("pill", re.compile(r"fencing node (\d+) \(generation (0x[0-9a-f]+)\), attempt \d+ by pill: pending")),
    ("self-fenced", re.compile(r"SELF-FENCED \((\S+)\)")),
    ("read-only", re.compile(r"READ_ONLY published")),
    ("takeover", re.compile(r"MMP resource '(\S+)' acquired: .*taken over from \S+ \(node (\d+), generation"
                            r" (0x[0-9a-f]+)\)")),
)


def read_audit(path: str) -> list[Write]:
    out = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) in (5, 6) and line.endswith("\n"):  # a node reset mid-line leaves at most a torn last line
                done = int(parts[5]) / 1e9 if len(parts) == 6 else 0.0
                out.append(Write(parts[0], int(parts[1]), int(parts[2], 16), int(parts[3]), int(parts[4]) / 1e9, done))
    return out


def lun_lba(issued_ns: int) -> int:
    return (issued_ns // LUN_SLOT_NS) % LUN_SLOTS


def read_lun(path: str, resource: str) -> list[Write]:
    """The writes found in the LUN's blocks (each holds its audit line's first five fields and a
    newline); done is inf: they landed, their answer may never have come back."""
    out = []
    with open(path, "rb") as f:
        data = f.read(LUN_SLOTS * BLOCK)
    for k in range(LUN_SLOTS):
        text = data[k * BLOCK:(k + 1) * BLOCK].split(b"\0", 1)[0].decode(errors="replace")
        parts = text.split()
        if len(parts) == 5 and text.endswith("\n") and parts[0] == resource:
            out.append(Write(parts[0], int(parts[1]), int(parts[2], 16), int(parts[3]), int(parts[4]) / 1e9,
                             float("inf")))
    return out


def read_refused(path: str) -> list[tuple[str, int, int, float, str]]:
    """The iSCSI writes that did not land (tools.cts.consumer C3): (resource, node, generation,
    sent at, outcome) with outcome REFUSED, FAILED, UNKNOWN or JOIN."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split(maxsplit=6)
                if len(parts) >= 6 and line.endswith("\n"):
                    out.append((parts[0], int(parts[1]), int(parts[2], 16), int(parts[4]) / 1e9, parts[5]))
    except FileNotFoundError:
        pass
    return out


def parse_log(path: str, node: int, wall_minus_mono_s: float) -> list[LogEvent]:
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            try:
                wall = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            except ValueError:
                continue
            t = wall - wall_minus_mono_s
            for kind, rx in _PATTERNS:
                m = rx.search(line)
                if not m:
                    continue
                if kind == "beating":
                    out.append(LogEvent(t, node, kind, node, int(m.group(1), 16)))
                elif kind == "self-fenced":
                    out.append(LogEvent(t, node, kind, node, 0, m.group(1)))
                elif kind == "read-only":  # the incarnation: the one beating at t (History.current)
                    out.append(LogEvent(t, node, kind, node))
                elif kind == "takeover":
                    out.append(LogEvent(t, node, kind, int(m.group(2)), int(m.group(3), 16), m.group(1)))
                else:
                    detail = m.group(3) if m.lastindex and m.lastindex >= 3 else ""
                    out.append(LogEvent(t, node, kind, int(m.group(1)), int(m.group(2), 16), detail))
                break
    return out


@dataclass
class History:
    """The timeline of one schedule, asked what held at a moment."""

    marks: list  # (t, node, what, value) as cluster.Timeline records them
    events: list[LogEvent]
    interval_s: float
    dead_s: float
    nodes: tuple[int, ...]
    _series: dict = field(default_factory=dict)
    incarnations: dict = field(default_factory=dict)  # (node, generation) -> (beating from, ended at)

    def __post_init__(self) -> None:
        for t, node, what, value in sorted(self.marks, key=lambda m: m[0]):
            self._series.setdefault((node, what), []).append((t, value))
        for ev in sorted(self.events, key=lambda e: e.t):
            if ev.kind == "beating":
                pid = self.value(ev.node, "daemon", ev.t, None)
                end = next((t for t, v in self._series.get((ev.node, "daemon"), []) if t > ev.t and v != pid),
                           float("inf"))
                self.incarnations[(ev.node, ev.generation)] = (ev.t, end)

    def value(self, node: int, what: str, t: float, default):
        v = default
        for mt, mv in self._series.get((node, what), []):
            if mt > t:
                break
            v = mv
        return v

    def beating(self, node: int, generation: int, t: float) -> bool:
        span = self.incarnations.get((node, generation))
        return span is not None and span[0] <= t < span[1] and not self.value(node, "stopped", t, False)

    def current(self, node: int, t: float) -> int | None:
        for (n, gen), (start, end) in self.incarnations.items():
            if n == node and start <= t < end:
                return gen
        return None

    def seen_by(self, node: int, generation: int, observer: int, t: float) -> bool:
        """Node `node`'s incarnation beat where `observer` sees it at time t (its disk slot
        moves, or its datagrams reach the observer)."""
        if not self.beating(node, generation, t):
            return False
        disk = self.value(node, "disk", t, "ok")
        if disk == "ok" or disk.startswith("slow"):
            return True
        return self.plugged(node, t) and self.plugged(observer, t)

    def plugged(self, node: int, t: float) -> bool:
        """The node's cable in, and for LINK_SETTLE_S already (a plug is not delivery at once)."""
        return bool(self.value(node, "link", t, True) and self.value(node, "link", t - LINK_SETTLE_S, True))

    def longest_seen_s(self, node: int, generation: int, observer: int, t0: float, t1: float) -> float:
        best = run = 0.0
        t = t0
        while t < t1:
            run = run + STEP_S if self.seen_by(node, generation, observer, t) else 0.0
            best = max(best, run)
            t += STEP_S
        return best


def one_writer(writes: list[Write]) -> list[str]:
    out = []
    per: dict[str, tuple] = {}
    done: dict[str, set] = {}
    bad: set[str] = set()
    # per resource, its own order: the file's, or (through iSCSI) the order the writes were sent
    order = sorted(enumerate(writes, 1), key=lambda kw: (kw[1].resource, kw[1].t if kw[1].done else kw[0]))
    for k, w in order:
        holder = (w.node, w.generation, w.epoch)
        cur = per.get(w.resource)
        if holder == cur or w.resource in bad:
            continue
        if holder in done.setdefault(w.resource, set()):
            out.append(f"ONE-WRITER: {w.resource}: node {w.node} (generation {w.generation:#x}, epoch {w.epoch})"
                       f" wrote again (audit line {k}) after node {cur[0]} (generation {cur[1]:#x}, epoch {cur[2]})"
                       " had written")
            bad.add(w.resource)
            continue
        if cur is not None:
            if w.epoch <= cur[2]:
                out.append(f"EPOCHS: {w.resource}: node {w.node} writes under epoch {w.epoch} (audit line {k})"
                           f" after node {cur[0]} wrote under epoch {cur[2]}")
                bad.add(w.resource)
            done[w.resource].add(cur)
        per[w.resource] = holder
    return out


def fenced_writes(writes: list[Write], h: History) -> list[str]:
    """FENCED-WRITE, from the first of: a peer counted the incarnation fenced, it published
    READ_ONLY, a peer took a resource over from it (that resource only)."""
    out = []
    first: dict[tuple[int, int, str | None], tuple[LogEvent, str]] = {}
    for ev in sorted(h.events, key=lambda e: e.t):
        if ev.kind == "fenced" and ev.detail not in IO_METHODS:
            first.setdefault((ev.subject, ev.generation, None), (ev, f"node {ev.node} counted it fenced ({ev.detail})"))
        elif ev.kind == "read-only" and (gen := h.current(ev.node, ev.t)) is not None:
            first.setdefault((ev.node, gen, None), (ev, "it published READ_ONLY"))
        elif ev.kind == "takeover":
            first.setdefault((ev.subject, ev.generation, ev.detail), (ev, f"node {ev.node} took {ev.detail} over from it"))
    for (node, gen, resource), (ev, why) in first.items():
        late = [w for w in writes if w.node == node and w.generation == gen and resource in (None, w.resource)
                and w.t > ev.t + FENCED_SLACK_S]
        if late:
            out.append(f"FENCED-WRITE: node {node} (generation {gen:#x}) wrote {late[0].resource} {len(late)} time(s),"
                       f" the first {late[0].t - ev.t:.3f} s after {why}")
    return out


def pr_fenced_writes(writes: list[Write], h: History, lun: list[Write] = ()) -> list[str]:
    """PR-FENCED-WRITE: from the first verified scsi-pr fence of the incarnation; lun: the writes
    found in the LUN's blocks (read_lun)."""
    out = []
    writes = list({(w.resource, w.node, w.generation, w.t): w for w in list(lun) + list(writes)}.values())
    first: dict[tuple[int, int], LogEvent] = {}
    for ev in sorted(h.events, key=lambda e: e.t):
        if ev.kind == "fenced" and ev.detail in IO_METHODS:
            first.setdefault((ev.subject, ev.generation), ev)
    for (node, gen), ev in first.items():
        late = [w for w in writes if w.done and w.node == node and w.generation == gen and w.t > ev.t + FENCED_SLACK_S]
        if late:
            out.append(f"PR-FENCED-WRITE: node {node} (generation {gen:#x}) landed {len(late)} write(s) on"
                       f" {late[0].resource}, the first sent {late[0].t - ev.t:.3f} s after node {ev.node} verified it"
                       f" fenced by {ev.detail}")
    return out


def lun_last_writes(writes: list[Write], lun: list[Write]) -> list[str]:
    """LUN-LAST-WRITE: lun are the blocks read at the end (read_lun), writes the audit."""
    out = []
    for b in lun:
        lba = lun_lba(round(b.t * 1e9))
        newer = [w for w in writes if w.done and w.resource == b.resource and w.t > b.t and
                 (w.node, w.generation) != (b.node, b.generation) and lun_lba(round(w.t * 1e9)) == lba]
        if newer:
            w = newer[0]
            out.append(f"LUN-LAST-WRITE: {b.resource}: LBA {lba} holds node {b.node}'s (generation {b.generation:#x})"
                       f" write sent {w.t - b.t:.3f} s before node {w.node}'s (generation {w.generation:#x}) landed"
                       f" write there: it landed after it")
    return out


def false_deaths(h: History) -> list[str]:
    out = []
    for ev in h.events:
        if ev.kind not in ("death", "victim"):
            continue
        seen = h.longest_seen_s(ev.subject, ev.generation, ev.node, ev.t - h.dead_s + EARLY_SLACK_S,
                                ev.t - LATE_SLACK_S)
        if seen >= 2 * h.interval_s:
            what = "declared dead" if ev.kind == "death" else "named for fencing"
            out.append(f"{'FALSE-DEATH' if ev.kind == 'death' else 'FALSE-FENCE'}: node {ev.node} {what} node"
                       f" {ev.subject} (generation {ev.generation:#x}), which beat where it sees it for {seen:.2f} s"
                       f" of the dead time before")
    return out


def fence_quorate(h: History) -> list[str]:
    out = []
    majority = len(h.nodes) // 2 + 1
    for ev in h.events:
        if ev.kind != "victim":
            continue
        t, ok = ev.t - 2 * h.dead_s, False
        while t <= ev.t and not ok:
            seen = 1 + sum(1 for j in h.nodes if j != ev.node and (g := h.current(j, t)) is not None
                           and h.seen_by(j, g, ev.node, t))
            ok = seen >= majority
            t += STEP_S
        if not ok:
            out.append(f"FENCE-QUORATE: node {ev.node} named node {ev.subject} for fencing but saw no majority in the"
                       f" {2 * h.dead_s:g} s before")
    return out


def judge(writes: list[Write], h: History, lun: list[Write] = ()) -> list[str]:
    return one_writer(writes) + fenced_writes(writes, h) + pr_fenced_writes(writes, h, lun) + \
        lun_last_writes(writes, lun) + false_deaths(h) + fence_quorate(h)
