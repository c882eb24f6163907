"""Words the I/O-free core speaks: node states, slot flags, observations, events.

Rules of this file:
- Nothing here does I/O or reads a clock. Times are integers in milliseconds of a monotonic
  clock that the caller injects (`now_ms`); wall-clock time never decides anything.
- Observations flow in (what a region saw), events flow out (what the core decided). The core
  never calls back into a region.
"""

from __future__ import annotations

import enum

from diskhb.core.record import record

# Limits shared by every region type. Node ids are slot numbers: 1..NODE_ID_MAX.
NODE_ID_MAX = 4096
NODE_NAME_BYTES_MAX = 64
GENERATION_NONE = 0  # a daemon's generation is random and never 0; 0 means "no writer yet"


def hex_id(value: int) -> str:
    """A 64-bit generation as JSON shows it: "0x5fa3...". As a JSON number it would be rounded by
    every reader that parses numbers as doubles (jq, JavaScript, Grafana) and name another node."""
    return f"{value:#x}"


def parse_hex_id(value) -> int:
    """hex_id's inverse; a plain int (what daemons before hex_id answered) is taken as is."""
    if isinstance(value, bool):
        raise ValueError(f"not a generation: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value[:2].lower() == "0x":
        return int(value, 16)
    raise ValueError(f"not a generation: {value!r}")


class SlotFlag(enum.IntFlag):
    """State flags a node publishes in every heartbeat (disk slot, datagram, serial frame)."""

    ACTIVE = 0x0001  # a daemon owns this slot and beats in it
    LEFT = 0x0002  # the daemon stopped cleanly; its storage was released, not lost
    READ_ONLY = 0x0004  # the node stopped writing shared storage on its own (cooperative notice)
    DISK_LOST = 0x0008  # the node's own disk region failed (writes failing or late)
    SELF_FENCED = 0x0010  # the node fenced itself (resources stopped)

    @classmethod
    def names(cls, value: int) -> list[str]:
        """Lower-case flag names for humans and JSON, in bit order; unknown bits as hex."""
        out = [f.name.lower() for f in cls if value & f]
        unknown = value & ~sum(int(f) for f in cls)
        if unknown:
            out.append(f"0x{unknown:x}")
        return out


class NodeState(enum.Enum):
    UNKNOWN = "unknown"  # seen, but not yet seen beating (or not watched long enough)
    ALIVE = "alive"  # seq seen advancing within dead_ms
    DEAD = "dead"  # no advance for dead_ms (and not LEFT)
    LEFT = "left"  # published LEFT: stopped cleanly


@record
class Peer:
    """What liveness knows of one node: its overall state and its current incarnation."""
    state: NodeState
    generation: int
    flags: int  # of its newest sample
    advanced_ms: int = 0  # when it last advanced on any region (our clock)


@record
class Beat:
    """One valid (checksum-verified) heartbeat sample of one node, as one region saw it.

    A region reports the sample whether or not it changed; the core decides what a change is.
    """

    node_id: int
    region: str
    generation: int
    seq: int
    flags: int
    name: str = ""
    digest: int = 0  # the sender's cluster digest (quorum Q3); 0: it advertises no [quorum]
    sees: frozenset[int] | None = None  # links: the ids the sender sees alive on any region (None: unknown)


@record
class BadSample:
    """A slot/packet that failed validation (bad checksum, torn write, wrong magic).

    It counts as a missed beat: it never refreshes liveness.
    """

    node_id: int
    region: str
    reason: str


@record
class BeatBatch:
    """Many valid samples of one region at once, as columns: the hot path of a disk region
    with thousands of slots (no object per slot). Means exactly one Beat per row."""

    region: str
    node_ids: list[int]
    generations: list[int]
    seqs: list[int]
    flags: list[int]
    names: list[str]
    # When the medium was sampled (the read's submission: its data is at least that new).
    # The caller clamps it so the core's clock never goes back.
    seen_ms: int | None = None
    digests: list[int] | None = None  # each row's cluster digest (quorum Q3); None: not carried

    def beats(self):
        digests = self.digests or [0] * len(self.node_ids)
        for row in zip(self.node_ids, self.generations, self.seqs, self.flags, self.names, digests):
            yield Beat(row[0], self.region, row[1], row[2], row[3], row[4], row[5])


@record
class IoSubmitted:
    """One of our own heartbeat I/Os started on a region (tag: the beat's seq for writes)."""
    region: str
    kind: str  # "write" | "read"
    at_ms: int
    tag: int | None = None


@record
class IoCompleted:
    region: str
    kind: str
    at_ms: int
    ok: bool
    error: str | None = None
    tag: int | None = None
    submitted_ms: int | None = None  # reads: when the data was sampled at the earliest


Observation = Beat | BadSample | BeatBatch
