"""Which core events are worth a notification hook, under which stable name, with which fields.

I/O-free and cheap: map() runs on the daemon's loop thread (diskhb.report hands it every
event) and only builds a small dict; JSON and environment are made by the hook workers
(diskhb.hooks.runner). The names below are an interface: scripts match on them, so they are
never renamed, only added to.

A hook sees what an operator would page on, once per change, not every flap of one region's
view: a node dead, back (alive again after dead or left), left cleanly or restarted; our own
I/O on a region lost and regained; quorum gained and lost (the first verdict, not quorate yet at
start, is no loss); a victim named, fenced or not; this node fenced itself; an MMP resource
acquired (or taken over from a holder that stopped), lost, released.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from diskhb.core.fencing import FenceOutcome, VictimNamed
from diskhb.core.liveness import NodeRestarted, NodeStateChanged
from diskhb.core.node import MmpEvent
from diskhb.core.quorum import QuorumChanged
from diskhb.core.region_health import RegionHealthChanged
from diskhb.core.self_fence import SelfFenced
from diskhb.core.types import NODE_ID_MAX, NodeState

EVENTS = (
    "node-dead", "node-back", "node-left", "node-restarted",
    "region-lost", "region-regained",
    "quorum-gained", "quorum-lost",
    "fence-needed", "node-fenced", "fence-failed", "self-fenced",
    "mmp-acquired", "mmp-taken-over", "mmp-lost", "mmp-released",
)
SCHEMA = 1  # bumped only if a field changes meaning; new fields are added without a bump

# Every payload has every field, null where it does not apply: scripts never meet a missing key.
# Generations are hex strings ("0x..."): 64-bit integers are rounded by jq, JavaScript and Grafana.
COMMON_FIELDS = ("schema", "event", "seq", "time", "time_ms", "cluster", "node", "node_id", "node_generation")
EVENT_FIELDS = (
    "subject_node", "subject_node_id", "generation", "old_generation", "state", "previous_state", "age_ms",
    "region", "resource", "epoch", "method", "attempt", "fencer_node_id", "votes", "expected_votes", "members",
    "cause", "reason",
)
TEXT_MAX = 1024  # a reason longer than this is cut (it is a log line's worth, not a document)


@dataclass(frozen=True, slots=True)
class Context:
    """Facts of this daemon every payload carries."""
    cluster: str
    node: str
    node_id: int
    generation: int


@dataclass(frozen=True, slots=True)
class HookEvent:
    name: str
    seq: int  # per daemon, from 1: hooks run concurrently, so they may finish out of order
    wall_ms: int
    fields: dict  # EVENT_FIELDS that apply; the rest are null in the payload

    def payload(self, ctx: Context) -> dict:
        out = {"schema": SCHEMA, "event": self.name, "seq": self.seq, "time": iso8601(self.wall_ms),
               "time_ms": self.wall_ms, "cluster": ctx.cluster, "node": ctx.node, "node_id": ctx.node_id,
               "node_generation": hex_generation(ctx.generation)}
        for key in EVENT_FIELDS:
            out[key] = self.fields.get(key)
        return out


def hex_generation(generation: int | None) -> str | None:
    return None if generation is None else f"{generation:#x}"


def iso8601(wall_ms: int) -> str:
    t = datetime.datetime.fromtimestamp(wall_ms / 1000, datetime.timezone.utc)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def environment(payload: dict) -> dict[str, str]:
    """DISKHB_<FIELD> for every field that is not null: lists comma-separated, booleans 0/1."""
    env = {}
    for key, value in payload.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = int(value)
        elif isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        env[f"DISKHB_{key.upper()}"] = str(value).replace("\0", "")  # execve refuses a NUL
    return env


def _text(s: str) -> str:
    return s if len(s) <= TEXT_MAX else s[:TEXT_MAX - 3] + "..."


class EventMapper:
    """Core event -> (hook event name, fields) or None. Keeps the little history a name needs
    ("back" only after dead or left, "regained" only after lost), on the loop thread only."""

    def __init__(self):
        self._quorum_judged = False
        self._down: set[int] = set()  # nodes dead or left since they were last alive
        self._lost: set[str] = set()  # regions our own I/O failed on, not healthy since
        self._names: dict[int, str] = {}  # node id -> name, for events that carry only the id

    def map(self, ev) -> tuple[str, dict] | None:
        if isinstance(ev, NodeStateChanged):
            return self._node(ev)
        if isinstance(ev, NodeRestarted):
            self._name(ev.node_id, ev.name)
            return "node-restarted", {**self._subject(ev.node_id, ev.new_generation), "region": ev.region,
                                      "old_generation": hex_generation(ev.old_generation)}
        if isinstance(ev, RegionHealthChanged):
            if not ev.healthy:
                self._lost.add(ev.region)
                return "region-lost", {"region": ev.region, "reason": _text(ev.reason)}
            if ev.region in self._lost:  # a region's first healthy write at start is no news
                self._lost.discard(ev.region)
                return "region-regained", {"region": ev.region}
            return None
        if isinstance(ev, QuorumChanged):
            judged, self._quorum_judged = self._quorum_judged, True
            if not ev.quorate and not judged:
                return None  # not reached yet at start: nothing was lost
            return ("quorum-gained" if ev.quorate else "quorum-lost"), {
                "votes": ev.votes, "expected_votes": ev.expected_votes, "members": list(ev.members),
                "reason": _text(ev.reason)}
        if isinstance(ev, VictimNamed):
            return "fence-needed", {**self._subject(ev.node_id, ev.generation), "fencer_node_id": ev.fencer,
                                    "reason": _text(ev.reason)}
        if isinstance(ev, FenceOutcome):
            return ("node-fenced" if ev.ok else "fence-failed"), {
                **self._subject(ev.node_id, ev.generation), "method": ev.method, "attempt": ev.attempt,
                "reason": _text(ev.detail)}
        if isinstance(ev, SelfFenced):
            return "self-fenced", {"cause": ev.reason, "reason": _text(ev.detail)}
        if isinstance(ev, MmpEvent):
            return self._mmp(ev)
        return None

    def _node(self, ev: NodeStateChanged) -> tuple[str, dict] | None:
        self._name(ev.node_id, ev.name)
        if ev.new is NodeState.DEAD:
            name = "node-dead"
            self._down.add(ev.node_id)
        elif ev.new is NodeState.LEFT:
            name = "node-left"
            self._down.add(ev.node_id)
        elif ev.new is NodeState.ALIVE and ev.node_id in self._down:
            name = "node-back"
            self._down.discard(ev.node_id)
        else:
            return None  # unknown, or alive for the first time (every peer at our start)
        return name, {**self._subject(ev.node_id, ev.generation), "state": ev.new.value,
                      "previous_state": ev.old.value, "region": ev.region, "age_ms": ev.age_ms,
                      "reason": _text(ev.reason)}

    @staticmethod
    def _mmp(ev: MmpEvent) -> tuple[str, dict] | None:
        if ev.what == "acquired":
            name = "mmp-taken-over" if "taken over from" in ev.text else "mmp-acquired"
        elif ev.what in ("lost", "released"):
            name = f"mmp-{ev.what}"
        else:
            return None  # refused, unconfirmed: an answer to a request, not a change
        return name, {"resource": ev.resource, "epoch": ev.epoch, "reason": _text(ev.text)}

    def _name(self, node_id: int, name: str) -> None:
        if name and 1 <= node_id <= NODE_ID_MAX:
            self._names[node_id] = name

    def _subject(self, node_id: int, generation: int) -> dict:
        return {"subject_node": self._names.get(node_id), "subject_node_id": node_id,
                "generation": hex_generation(generation)}
