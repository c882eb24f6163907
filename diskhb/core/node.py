"""The node core: everything a diskhb daemon decides, in one object free of I/O.

The daemon's loop is: gather observations (region samples, our own I/O's submissions and
completions, MMP I/O results, control requests, the clock) -> NodeCore.step(now_ms, obs) ->
carry out the actions it returns. The whole-cluster simulator (tools.sim) drives the same class.
It composes the rule files of diskhb.core (liveness, region_health, slot_claim, timing) and the
MMP guards (diskhb.mmp.guard); the rules of its own are these:

  N1 LIFECYCLE (Phase, transitions in _PHASES): CLAIMING -> RUNNING -> LEAVING -> PUBLISHING_LEFT
     -> STOPPED; any -> FAILED on a safety stop; RUNNING or LEAVING -> SELF_FENCED (N14), which
     only a stop ends (exit 3). A node beats only while RUNNING, LEAVING or SELF_FENCED.
  N2 CLAIM: before its first beat a node claims its slot on every disk region (slot_claim): it
     reads its own slot until every region says FREE; IN_USE, or no verdict within
     dead_ms + CLAIM_SLACK_INTERVALS intervals + 2 io timeouts, refuses to start (exit 1).
  N3 CONFLICT: a read of our own slot, submitted after one of our writes to it completed, that
     shows another generation means another daemon writes with our node id: safety stop (exit 3)
     without another write. The same for our node id under another generation seen advancing on
     a link (another daemon, or someone replaying our old traffic: either way we cannot tell our
     beats from theirs, and peers cannot either).
  N4 DISK_LOST: set in our beats while any disk region of ours is failing (own I/O late or
     failed, region_health IO1-IO3): our writes may be landing late (the read-only notice).
  N5 LEAVE: on a stop request the node keeps beating (LEAVING) while every guard releases (or
     stops trying); then, and only if no resource ended lost or unconfirmed, no write of ours of
     unknown outcome was ever given up on (ledger LG3: it may still land), and no disk region is
     failing, it publishes LEFT: first on every disk region, then, once all of those writes
     completed, on the links. LEFT says "this incarnation releases nothing more and writes
     nothing more": peers take its resources over at once (fast path FP3). Otherwise it stops
     without LEFT (peers judge it by silence, and watch its blocks). A node that stopped with a
     hold ended lost or unconfirmed exits 3.
  N6 TIME: the core's clock never goes back; a sample is dated by its read's submission, but
     never before what the core was last told (a slow read finishing late must not turn time
     back). A step more than timing.stall_report_ms after the previous one means our own process
     was stalled: reported once, and guards are told (their timeouts then blame the stall, not
     the device).
  N7 LINKS: a link region on which no peer has been heard for dead_ms, while peers exist (heard
     on some region), is deaf (a wrong port, a one-way firewall): reported once when it starts and
     when it ends.
  N8 LIMITS: HELD_MAX guards, one guard per resource name, every wait bounded (claim, leave).
  N9 JUDGING: liveness deadlines are applied at every beat and at once after a disk region's
     read completes (what it sampled may prove a silence): judged only at beats, a death was
     declared up to one interval after the read that proved it.
  N10 QUORUM: with a [quorum], the quorum rules (diskhb.core.quorum, Q1-Q7) are applied each time
     liveness is judged (N9), to the states it holds then; their events go out with the others.
     Every beat advertises our cluster digest (its slot's cluster_digest, the packet's DIGEST);
     Q3 judges each peer by the digest of its newest beat. The two-node tie-break: N15.
  N11 FENCING: with a [quorum], the fencing decisions (diskhb.core.fencing, FD1-FD7) are taken
     right after quorum (N10), on the same liveness: each order is a Fence action, whose outcome
     comes back as FenceDone; a Fence is carried out off the tick, bounded in time. Until a
     fencing method is configured, the daemon reports each order as failed ("no fencing method
     configured"): the victim and its fencer are named in logs and status, nothing is shot.
  N12 MAILBOX: every slot read of a disk region also reads our mailbox there (MailboxRead, when
     it changed). A valid message meant for this incarnation (target generation ours, or 0 for
     whoever runs) and new (another seq than the one acted on) is acted on once: "test" is logged
     and shown, "clear" withdraws, "fence" fences this node (N14, self_fence SF1); all are
     acknowledged in our slot on that region (its
     mailbox_ack = the message's seq), which is how the sender learns it arrived (it never waits
     for it). A message for another incarnation, or of a kind this version does not know, is
     reported once and not acknowledged: its sender sees it pending.
  N17 OWN LOST BLOCK: when a hold ends lost, the identities its block may carry from us (the
     last we wrote, and the one in flight) are kept for the resource's next guard in this
     daemon, which claims such a block over at once through the ballot (acquisition CL4, as a
     block it gave up on) once the loss action has run. Without it the block names our own
     generation, we refuse it as "already held by this very process", and peers refuse it as
     held by a live daemon (fast_path FP1): the resource is nobody's until we restart (the CTS,
     seed 1047).
  N13 QUORATE STORAGE: with a [quorum], a guarded resource is acquired only while quorate
     (fencing FD1's rule for storage: a minority could otherwise take over what the majority
     still holds); refused, retryable, otherwise.
  N15 TIE-BREAK (quorum Q6): in a two_node cluster, a node whose peer is DEAD, or not seen ALIVE
     for dead_ms (never seen since our start, or known only through stale regions), is alone; it
     enters the race once its delay (QuorumSpec.race_delay_ms: 0 for the favoured node) has
     passed since it was first alone: it acquires TIEBREAK_RESOURCE on its first disk region
     with the same guard as any resource (so at most one node ever holds it), without N13's
     quorum check (the race is how quorum is made), and keeps holding it until it stops. A race
     refused for TIEBREAK_WAIT_MS, or denied at once (no free block), starts again
     TIEBREAK_RETRY_DEAD_TIMES dead times later. Holding it is not "guarding" for self_fence SF2.
  N16 VIEWS: every link beat carries the ids its sender sees alive (Beat.sees). We are connected
     (self_fence SF3) while the peers whose view, received within view_fresh_ms, lists us hold
     a majority with us. A DEAD peer gets a self-fence deadline (timing.self_fence_deadline_ms,
     fencing FD11) only when the cluster has a watchdog (superblock) and, with link regions, every
     other quorum member's fresh view leaves it out (counted from the first judgement that found
     so); a member heard without a fresh view might still see it: no deadline then.
  N14 SELF-FENCE (diskhb.core.self_fence SF1-SF7): a pill, an IoFenced report (our PR key
     preempted), or the triggers checked at every
     judgement, move the node to SELF_FENCED: every guard abandoned (loss actions run), then a
     BlockReadOnly action for the guarded mountpoints' devices, and the SelfFence action tells
     the daemon to stop feeding the watchdog. Beats go on with SELF_FENCED, and with READ_ONLY
     once no loss action runs and no MMP write of ours can still land. Nothing is acquired, no
     one is fenced, LEFT is never published.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from diskhb.core import timing
from diskhb.core.fencing import ATTEMPT_TIMEOUT_MS_DEFAULT, Fencing
from diskhb.core.liveness import Liveness
from diskhb.core.quorum import TIEBREAK_RESOURCE, QuorumSpec, QuorumState
from diskhb.core.record import record
from diskhb.core.region_health import OwnIoHealth, RegionHealthChanged
from diskhb.core.self_fence import SelfFence as SelfFenceRules
from diskhb.core.self_fence import SelfFenced
from diskhb.core.slot_claim import ClaimVerdict, SlotClaim, SlotSample
from diskhb.core.types import BadSample, Beat, BeatBatch, IoCompleted, IoSubmitted, NodeState, SlotFlag, hex_id
from diskhb.mmp import guard as gd
from diskhb.mmp.fast_path import PeerInfo
from diskhb.mmp.ledger import SectorLedger
from diskhb.mmp.steps import Claimant

HELD_MAX = 64  # resources one daemon holds (and acquisitions it runs) at once
LOST_BLOCKS_MAX = 256  # resources whose lost block we remember (N17)
CLAIM_SLACK_INTERVALS = 4
LEAVE_MS_MAX = 120_000  # a leave that has not finished by then stops without LEFT
TIEBREAK_WAIT_MS = 600_000  # N15: one race retries refusals this long; alone after that, it starts again
TIEBREAK_RETRY_DEAD_TIMES = 5  # N15: after a race ended refused, the next one after this many dead times
PUBLISH_LEFT_IO_TIMEOUTS = 1  # the LEFT write on a disk region gets one io timeout


# -- specs (what the daemon read at start) -----------------------------------------------------------


@record
class RegionSpec:
    name: str
    kind: str  # "disk" | "net" | "serial"
    owns_slot: bool  # a disk region: our slot there is claimed before we beat (N2)
    path: str | None = None  # for status


@record
class ResourceSpec:
    name: str
    target: gd.TargetInfo  # the MMP blocks of the disk region it lives on
    timing: timing.MmpTiming
    declared: bool = True  # from a [[resource]] table: bound to a free block without --create
    mountpoint: str | None = None  # for the lease enforcer
    remount_ro: bool = False
    on_pr_luns: bool = False  # fencing FD13: its storage lies on the [scsi-pr] LUNs (an I/O fence covers it)


@dataclass(frozen=True, slots=True)
class NodeSpec:
    node_id: int
    name: str
    generation: int
    cluster: str
    interval_ms: int
    dead_ms: int
    io_timeout_ms: int
    regions: tuple[RegionSpec, ...]
    resources: Mapping[str, ResourceSpec] = field(default_factory=dict)
    default_target: gd.TargetInfo | None = None  # where an undeclared resource lives (first disk region)
    default_timing: timing.MmpTiming | None = None
    lock_scope: str | None = None  # the node-local ballot lock's scope (None: no lock; simulation)
    quorum: QuorumSpec | None = None  # None: no [quorum] configured (never quorate, Q-rules not run)
    self_fence: bool = False  # N14: run the self-fence triggers (the daemon; not yet the simulator)
    watchdog_ms: int = 0  # the cluster's watchdog timeout (superblock): FD11's deadlines need it (0: none)
    fence_attempt_timeout_ms: int = ATTEMPT_TIMEOUT_MS_DEFAULT  # fencing FD6: at least the fence runner's bound
    io_fence: bool = False  # fencing FD13: the cluster fences by scsi-pr ([node] fence has it)


# -- observations (in) -------------------------------------------------------------------------------


@record
class OwnSlotRead:
    """Our own slot as a read saw it. `after_write`: the read was submitted after one of our
    writes to it had completed (only such a read can judge what the slot must hold, N3)."""
    region: str
    generation: int | None  # None: never written
    seq: int | None
    flags: int
    name: str
    valid: bool
    after_write: bool
    submitted_ms: int = 0  # the read's submission and completion (the slot claim's watch, N2)
    completed_ms: int = 0


@record
class DuplicateId:
    """A packet under our own node id but another generation, authenticated and fresh."""
    region: str
    generation: int
    seq: int


@record
class RegionFault:
    """A region driver raised: the region counts as failing; the daemon goes on (never the tick)."""
    region: str
    error: str


@record
class MmpIoDone:
    result: gd.IoResult


@record
class AcquireRequest:
    request_id: int
    resource: str
    wait_ms: int
    create: bool


@record
class ReleaseRequest:
    request_id: int
    resource: str


@record
class StopRequest:
    pass


@record
class LossDone:
    resource: str
    epoch: int
    report: str
    ok: bool


@record
class FenceDone:
    """N11: the outcome of a Fence action (ok: the victim was verified fenced)."""
    node_id: int
    generation: int
    attempt: int
    ok: bool
    method: str
    detail: str
    pending: bool = False  # fencing FD9: the method did its part; the victim must show it
    evidence: str = ""  # fencing FD12: what the method read back (an I/O fence's keys per LUN)


@record
class FenceRequest:
    """N11, fencing FD10: an operator's `diskhb fence NODE`."""
    request_id: int
    node_id: int
    force: bool = False
    method: str = ""  # `--method`: only this method ("": the configured order)


@record
class IoFenced:
    """N14, self_fence SF7: our own reservation key is gone from a guarded LUN and no reconnect of
    ours explains it: a fencer preempted this incarnation (diskhb.fencing.scsi_pr's audit)."""
    detail: str


@record
class MailboxRead:
    """N12: our mailbox on a disk region as a read found it (reported when it changed)."""
    region: str
    valid: bool  # False: a torn or corrupt sector (error says why); True with seq 0: never written
    sender_id: int = 0
    message: int = 0
    target_generation: int = 0
    seq: int = 0
    error: str = ""


NodeObservation = (Beat | BadSample | BeatBatch | IoSubmitted | IoCompleted | OwnSlotRead | DuplicateId
                   | RegionFault | MmpIoDone | AcquireRequest | ReleaseRequest | StopRequest | LossDone
                   | FenceDone | MailboxRead | FenceRequest | IoFenced)


# -- actions (out) -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OwnBeat:
    """What this node publishes on every region at each beat (the same numbers everywhere)."""
    node_id: int
    name: str
    generation: int  # random per daemon start, never 0
    seq: int  # +1 per beat; the same seq goes out on every region
    flags: int  # SlotFlag bits
    mono_ms: int  # the writer's monotonic clock (readers only compare it with itself)
    view: dict[str, tuple[int, ...]] = field(default_factory=dict)  # region -> ids seen alive (links)
    digest: int = 0  # our cluster digest (quorum Q3); 0 without a [quorum]
    mailbox_acks: Mapping[str, int] = field(default_factory=dict)  # N12: region -> the seq acted on there


@record
class Publish:
    region: str
    beat: OwnBeat


@record
class ReadOwnSlot:
    region: str


@record
class MmpIo:
    request: gd.IoRequest


@record
class RunLoss:
    resource: str
    epoch: int
    reason: str


@record
class Enforce:
    """The resource's lease enforcer: start (first lease), renew, or done (released cleanly)."""
    resource: str
    what: str  # "start" | "renew" | "done"
    deadline_ms: int = 0  # when it must fire unless renewed: takeover - its own budget (the daemon subtracts)


@record
class Reply:
    request_id: int
    answer: dict


@record
class Exit:
    code: int
    reason: str


@record
class Fence:
    """N11: we are the elected fencer of this incarnation: carry the fence out, report FenceDone."""
    node_id: int
    generation: int
    attempt: int
    reason: str
    method: str = ""  # an operator's `--method`: only this one ("": the configured order)


@record
class SelfFence:
    """N14: this node fenced itself: stop feeding the watchdog (and say so, loudly)."""
    reason: str
    detail: str


@record
class BlockReadOnly:
    """N14, self_fence SF5: set the block devices under these mountpoints read-only (BLKROSET)."""
    mountpoints: tuple[str, ...]


Action = Publish | ReadOwnSlot | MmpIo | RunLoss | Enforce | Reply | Exit | Fence | SelfFence | BlockReadOnly


# -- events (for logs and metrics; the daemon's reporter words them) ---------------------------------


@record
class Note:
    """A line worth logging: level is a logging level name."""
    level: str
    text: str


@record
class MailboxMessage:
    """N12: a message acted on (and acknowledged in our slot)."""
    region: str
    sender_id: int  # 0: an operator's `diskhb message`
    message: str  # MAILBOX_MESSAGES' name
    seq: int


# N12: the messages this version acts on (diskhb.regions.disk.format's codes)
MAILBOX_MESSAGES = {0: "clear", 1: "test", 2: "fence"}
MSG_FENCE = 2


@record
class BeatDue:
    lateness_ms: int


@record
class Stalled:
    gap_ms: int


@record
class Hearing:
    """N7: a link region started or stopped hearing peers."""
    region: str
    receiving: bool
    silent_ms: int


@record
class MmpEvent:
    resource: str
    what: str  # acquired | refused | lost | released | unconfirmed
    epoch: int = 0
    text: str = ""


class Phase(enum.Enum):
    CLAIMING = "claiming"
    RUNNING = "running"
    LEAVING = "leaving"
    PUBLISHING_LEFT = "publishing_left"
    STOPPED = "stopped"
    FAILED = "failed"
    SELF_FENCED = "self_fenced"


_BEATING = (Phase.CLAIMING, Phase.RUNNING, Phase.LEAVING, Phase.SELF_FENCED)
_LIVE = (Phase.RUNNING, Phase.LEAVING, Phase.SELF_FENCED)  # phases that beat, judge and drive guards  # phases that beat (or claim) on schedule (a tuple: no enum hashing)

# N1: the phases each phase may move to.
_PHASES: dict[Phase, frozenset[Phase]] = {
    Phase.CLAIMING: frozenset({Phase.RUNNING, Phase.STOPPED, Phase.FAILED}),
    Phase.RUNNING: frozenset({Phase.LEAVING, Phase.FAILED, Phase.SELF_FENCED}),
    Phase.LEAVING: frozenset({Phase.PUBLISHING_LEFT, Phase.STOPPED, Phase.FAILED, Phase.SELF_FENCED}),
    Phase.PUBLISHING_LEFT: frozenset({Phase.STOPPED, Phase.FAILED}),
    Phase.STOPPED: frozenset(),
    Phase.FAILED: frozenset(),
    Phase.SELF_FENCED: frozenset({Phase.STOPPED, Phase.FAILED}),
}


@dataclass(slots=True)
class _Held:
    """One guard and what the core knows of it."""
    guard: gd.Guard
    spec: ResourceSpec
    acquire_reply: int | None = None  # the acquire request waiting for the outcome
    release_replies: list[int] = field(default_factory=list)
    state: str = "acquiring"  # acquiring | held | releasing | released | lost | refused
    epoch: int = 0
    location: str = ""
    takeover_ms: int = 0
    loss_deadline_ms: int = 0
    enforced: bool = False
    loss_running: bool = False
    wake_ms: int | None = 0  # the guard's next_wakeup_ms(), kept exact: a new guard is due at once (0),
    # and a guard changes only in its step or on release(), after each of which this is refreshed

    def release(self) -> None:
        self.guard.release()
        self.wake_ms = self.guard.next_wakeup_ms()


class NodeCore:
    def __init__(self, spec: NodeSpec, *, now_ms: int, rand: Callable[[int], int]):
        self.spec = spec
        self.rand = rand
        self.phase = Phase.CLAIMING
        self.seq = 0
        self.flags = int(SlotFlag.ACTIVE)
        self.exit_code: int | None = None
        self.liveness = Liveness(self_id=spec.node_id, interval_ms=spec.interval_ms, dead_ms=spec.dead_ms)
        self.quorum = QuorumState(spec.quorum, started_ms=now_ms) if spec.quorum is not None else None  # N10
        self.fencing = Fencing(spec.node_id, tuple(spec.quorum.votes), attempt_timeout_ms=spec.fence_attempt_timeout_ms,
                               receipt_window_ms=spec.watchdog_ms or spec.dead_ms, io_fence=spec.io_fence) \
            if spec.quorum is not None else None  # N11; fencing FD12's window: one watchdog timeout
        self._digest = spec.quorum.digest() if spec.quorum is not None else 0  # Q3: what our beats advertise
        self.peer_digests: dict[int, int] = {}  # Q3: node -> the digest its newest beat advertised
        self.mailbox: dict[str, dict] = {}  # N12: region -> the newest message there, as status shows it
        self._mailbox_acks: dict[str, int] = {}  # N12: region -> the seq acted on (published; replaced, not mutated)
        self._pill: tuple[str, str] | None = None  # N12, N14: (reason, what) of a pill or an I/O fence, acted on in step()
        self.self_fence = SelfFenceRules(
            lease_ms=timing.self_fence_lease_ms(spec.dead_ms),
            write_land_max_ms=timing.write_land_max_ms(spec.io_timeout_ms), started_ms=now_ms,
            quorum=spec.quorum is not None, disks=any(r.kind == "disk" for r in spec.regions),
        ) if spec.self_fence else None  # N14
        self._read_only_asked = False  # N14: BlockReadOnly sent
        self._stop_asked = False  # a stop request came (a node that fences itself while leaving then stops)
        self._alone_since_ms: int | None = None  # N15: since when a two_node peer is not seen alive
        self._links = any(r.kind != "disk" for r in spec.regions)
        self._views: dict[int, tuple[int, frozenset[int]]] = {}  # N16: peer -> (received, ids it sees alive)
        self._view_fresh_ms = timing.view_fresh_ms(spec.interval_ms)
        self._excluded_since: dict[int, int] = {}  # N16: dead peer -> since when no member's view shows it
        self._race_after_ms = 0  # N15: a race that ended refused is not run again before this
        self.health = {r.name: OwnIoHealth(r.name, spec.io_timeout_ms) for r in spec.regions}
        self.kind = {r.name: r.kind for r in spec.regions}
        self.ledger = SectorLedger(timing.write_land_max_ms(spec.io_timeout_ms))
        self.claims = {r.name: SlotClaim(spec.dead_ms) for r in spec.regions if r.owns_slot}
        self.claim_verdicts: dict[str, ClaimVerdict] = {r: ClaimVerdict.WAIT for r in self.claims}
        # the watch needs dead_ms between a read's completion and a later read's submission; the
        # first read may take up to the io timeout twice over before it counts as late (a loaded
        # host: the CTS's restarts at 100 / 1000 ms ran out of 4 intervals' slack)
        self.claim_deadline_ms = now_ms + spec.dead_ms + CLAIM_SLACK_INTERVALS * spec.interval_ms + \
            2 * spec.io_timeout_ms
        self.claim_refused: str | None = None
        self.held: dict[str, _Held] = {}
        self.lost_blocks: dict[str, frozenset] = {}  # N17: resource -> block identities of a hold we lost
        self.tainted: str | None = None  # N5: why LEFT may never be published
        self.conflict: str | None = None
        self.failing: set[str] = set()  # regions whose failing was reported
        self.deaf: set[str] = set()  # N7
        self._judge_due = False  # N9: a disk read completed since the last liveness tick
        self.heard_ms: dict[str, int] = {r.name: now_ms for r in spec.regions if r.kind != "disk"}
        self.left_seq: int | None = None
        self.left_done: dict[str, bool | None] = {}  # disk region -> LEFT write ok (None: pending)
        self.left_deadline_ms = 0  # the LEFT write must be taken by then (the writer may still be busy)
        self.left_submitted: dict[str, int] = {}  # disk region -> when its LEFT write was submitted
        self.leave_deadline_ms = 0
        self.events: list = []
        self.next_beat_ms = now_ms
        self._core_ms = now_ms
        self._last_step_ms = now_ms
        self.due_ms = now_ms  # when the last step asks to be woken (next_wakeup_ms() then; N6)
        self.stalls = 0
        self._stall_report_ms = timing.stall_report_ms(spec.interval_ms)
        self.last_stall_ms = 0
        self._ids = 0
        self._owner: dict[int, _Held] = {}  # MMP request id -> the guard that asked
        self._guard_results: dict[str, list[gd.IoResult]] = {}
        self.stats = {"beats": 0, "mmp_requests": 0}
        self.wall_ms = 0

    # -- the one entry point -----------------------------------------------------------------------

    def step(self, now_ms: int, observations=(), *, wall_ms: int = 0) -> list[Action]:
        """wall_ms: the wall clock, written into MMP blocks for humans (never decides anything)."""
        assert now_ms >= self._last_step_ms, f"time went back: {self._last_step_ms} -> {now_ms} ms"
        self.wall_ms = wall_ms
        actions: list[Action] = []
        late = now_ms - self.due_ms
        if late >= self._stall_report_ms:  # N6: later than we asked to be woken
            self.stalls += 1
            self.last_stall_ms = late
            self.events.append(Stalled(late))
            self.events.append(Note("warning", f"this daemon was stalled for {late} ms (stopped, frozen"
                                               " or starved of CPU); judging by what it sees now"))
            for h in self.held.values():
                h.guard.stalled(late)
        self._last_step_ms = now_ms
        for obs in observations:
            self._observe(now_ms, obs, actions)
        if self._pill is not None:
            self._take_pill(now_ms, actions)
        if self.phase is Phase.CLAIMING:
            self._claiming(now_ms, actions)
        elif self.phase in _LIVE:
            self._guards(now_ms, actions)
            if self.phase is Phase.LEAVING:
                self._leaving(now_ms, actions)
            elif self.phase is Phase.SELF_FENCED:
                self._self_fenced(now_ms, actions)
            if self.phase in _LIVE and now_ms >= self.next_beat_ms:
                self._beat(now_ms, actions)
            elif self._judge_due and self.phase in _LIVE:
                self._judge(now_ms, actions)
        elif self.phase is Phase.PUBLISHING_LEFT:
            self._publishing_left(now_ms, actions)
        elif self.phase is Phase.FAILED:
            self._failing(now_ms, actions)
        if now_ms > self._core_ms:
            self._core_ms = now_ms
        self.due_ms = self.next_wakeup_ms()
        return actions

    def next_wakeup_ms(self) -> int:
        """When step() must run again even if nothing is observed."""
        t = self.next_beat_ms if self.phase in _BEATING else self._last_step_ms + LEAVE_MS_MAX
        for h in self.held.values():
            w = h.wake_ms
            if w is not None and w < t:
                t = w
        if self.phase is Phase.PUBLISHING_LEFT:
            t = min([t, self.left_deadline_ms] + [v + self.spec.io_timeout_ms for v in self.left_submitted.values()])
        return t

    def drain_events(self) -> list:
        out, self.events = self.events, []
        return out

    # -- observations ------------------------------------------------------------------------------

    def _observe(self, now_ms: int, obs, actions: list[Action]) -> None:
        # the most frequent first: every I/O of ours is reported twice
        if isinstance(obs, IoSubmitted):
            self.health[obs.region].observe(obs)
            if obs.kind == "write" and self.left_seq is not None and obs.tag == self.left_seq \
                    and obs.region in self.left_done:
                self.left_submitted[obs.region] = obs.at_ms
            return
        if isinstance(obs, IoCompleted):
            self.health[obs.region].observe(obs)
            if obs.kind == "read" and obs.ok and self.kind[obs.region] == "disk":
                self._judge_due = True  # N9
            if obs.kind == "write" and self.left_seq is not None and obs.tag == self.left_seq \
                    and obs.region in self.left_done:
                self.left_done[obs.region] = obs.ok
            return
        if isinstance(obs, (Beat, BadSample, BeatBatch)):
            if self.quorum is not None:  # N10, Q3
                if type(obs) is Beat:
                    self.peer_digests[obs.node_id] = obs.digest
                    if obs.sees is not None:  # N16: a link beat carries the sender's view
                        self._views[obs.node_id] = (now_ms, obs.sees)
                elif type(obs) is BeatBatch:
                    self.peer_digests.update(zip(obs.node_ids, obs.digests or [0] * len(obs.node_ids)))
            seen = getattr(obs, "seen_ms", None)
            t = max(now_ms if seen is None else min(seen, now_ms), self._core_ms)
            self.liveness.observe(t, obs)
            self._core_ms = t
            if obs.region in self.heard_ms and not isinstance(obs, BadSample):
                self.heard_ms[obs.region] = now_ms
            return
        if isinstance(obs, OwnSlotRead):
            self._own_slot(now_ms, obs)
            return
        if isinstance(obs, DuplicateId):
            self._safety_stop(f"region {obs.region}: another daemon beats with our node id"
                              f" {self.spec.node_id} (generation {obs.generation:#x}); we stop: two nodes"
                              " under one id make both their heartbeats lies")
            return
        if isinstance(obs, RegionFault):
            h = self.health[obs.region]
            h.completed(now_ms, "read", False, f"internal error: {obs.error}")
            self.events.append(Note("error", f"region {obs.region}: internal error, the region counts as"
                                             f" failing: {obs.error}"))
            return
        if isinstance(obs, MmpIoDone):
            owner = self._owner.pop(obs.result.id, None)
            if owner is not None:
                name = owner.spec.name
                if self.held.get(name) is owner:
                    self._guard_results.setdefault(name, []).append(obs.result)
                else:  # its guard has ended: a write it gave up on completes (LG1: its outcome is known now)
                    owner.guard.settle(obs.result)
            return
        if isinstance(obs, AcquireRequest):
            self._acquire(now_ms, obs, actions)
            return
        if isinstance(obs, ReleaseRequest):
            self._release(now_ms, obs, actions)
            return
        if isinstance(obs, StopRequest):
            self._stop_asked = True
            if self.phase is Phase.SELF_FENCED:
                self._move(Phase.STOPPED)
                self._exit(actions, 3, "stopped while self-fenced")
            elif self.phase is Phase.CLAIMING:
                self._move(Phase.STOPPED)
                self._exit(actions, 0, "stopped before the first beat")
            elif self.phase is Phase.RUNNING:
                self._move(Phase.LEAVING)
                self.leave_deadline_ms = now_ms + LEAVE_MS_MAX
                for h in self.held.values():
                    h.release()
            return
        if isinstance(obs, LossDone):
            h = self.held.get(obs.resource)
            if h is not None and h.epoch == obs.epoch:
                h.loss_running = False
                if h.enforced:
                    actions.append(Enforce(obs.resource, "done"))
                    h.enforced = False
                del self.held[obs.resource]
            return
        if isinstance(obs, MailboxRead):
            self._mailbox_read(now_ms, obs)
            return
        if isinstance(obs, FenceDone):
            if self.fencing is not None:  # N11
                self.events.extend(self.fencing.outcome(now_ms, obs.node_id, obs.generation, obs.attempt, obs.ok,
                                                        obs.method, obs.detail, obs.pending, obs.evidence))
            return
        if isinstance(obs, FenceRequest):
            self._fence_request(now_ms, obs, actions)
            return
        if isinstance(obs, IoFenced):  # N14, SF7: acted on in step(), where actions go out
            if self.self_fence is not None and self._pill is None:
                self._pill = ("io-fenced", obs.detail)
            return
        raise TypeError(f"unknown observation {obs!r}")

    def _mailbox_read(self, now_ms: int, obs: MailboxRead) -> None:
        """N12."""
        if not obs.valid:
            self.mailbox[obs.region] = {"state": "invalid", "error": obs.error}
            self.events.append(Note("warning", f"region {obs.region}: our mailbox is unreadable: {obs.error}"))
            return
        if obs.seq == 0:  # never written
            self.mailbox.pop(obs.region, None)
            return
        if obs.seq == self._mailbox_acks.get(obs.region):
            return  # acted on already (our own slot shows it)
        kind = MAILBOX_MESSAGES.get(obs.message)
        shown = {"sender": obs.sender_id, "message": kind or f"code {obs.message}", "seq": obs.seq,
                 "target_generation": hex_id(obs.target_generation), "at_ms": now_ms}
        sender = "an operator" if obs.sender_id == 0 else f"node {obs.sender_id}"
        if obs.target_generation not in (0, self.spec.generation):
            self.mailbox[obs.region] = {**shown, "state": "not for us"}
            self.events.append(Note("warning", f"region {obs.region}: a {shown['message']} message from {sender}"
                                               f" (seq {obs.seq}) is for generation {obs.target_generation:#x},"
                                               f" not ours ({self.spec.generation:#x}): ignored"))
            return
        if kind is None:
            self.mailbox[obs.region] = {**shown, "state": "not understood"}
            self.events.append(Note("error", f"region {obs.region}: message code {obs.message} from {sender}"
                                             f" (seq {obs.seq}) is unknown to this version: not acknowledged"))
            return
        if obs.message == MSG_FENCE and self.self_fence is None:
            self.mailbox[obs.region] = {**shown, "state": "not understood"}
            self.events.append(Note("error", f"region {obs.region}: a fence message from {sender} (seq {obs.seq}),"
                                             " but this node runs without self-fencing: not acknowledged"))
            return
        self.mailbox[obs.region] = {**shown, "state": "acknowledged"}
        self._mailbox_acks = {**self._mailbox_acks, obs.region: obs.seq}  # a new dict: beats already out keep theirs
        self.events.append(MailboxMessage(obs.region, obs.sender_id, kind, obs.seq))
        if obs.message == MSG_FENCE:  # N14, SF1: acted on in step(), where actions go out
            self._pill = ("pill", f"a fence message from {sender} on region {obs.region} (seq {obs.seq})")

    def _own_slot(self, now_ms: int, obs: OwnSlotRead) -> None:
        if self.phase is Phase.CLAIMING:
            claim = self.claims.get(obs.region)
            if claim is None or self.claim_verdicts[obs.region] is not ClaimVerdict.WAIT:
                return
            sample = SlotSample(obs.generation, obs.seq, obs.flags, obs.name, valid=obs.valid)
            verdict = claim.observe(sample, obs.submitted_ms, obs.completed_ms)
            self.claim_verdicts[obs.region] = verdict
            if verdict is ClaimVerdict.IN_USE and self.claim_refused is None:
                self.claim_refused = (f"region {obs.region}: slot {self.spec.node_id} is in live use: {claim.reason};"
                                      " stop the other daemon or give this node another id")
            return
        if obs.after_write and obs.valid and obs.generation not in (None, self.spec.generation):  # N3
            self._safety_stop(f"slot {self.spec.node_id} on region {obs.region} now holds generation"
                              f" {obs.generation:#x} of node {obs.name!r}: another daemon is running with"
                              f" node id {self.spec.node_id}")

    # -- claiming (N2) -----------------------------------------------------------------------------

    def _claiming(self, now_ms: int, actions: list[Action]) -> None:
        if self.claim_refused is not None:
            self.events.append(Note("error", self.claim_refused))
            self._move(Phase.STOPPED)
            self._exit(actions, 1, "slot in use")
            return
        waiting = [r for r, v in self.claim_verdicts.items() if v is ClaimVerdict.WAIT]
        if not waiting:
            self._move(Phase.RUNNING)
            self.events.append(Note("info", f"slot {self.spec.node_id} claimed on every disk region: beating as"
                                            f" generation {self.spec.generation:#x}"))
            if self.self_fence is not None:
                self.self_fence.started_ms = now_ms  # SF3's lease counts from our first beat, not the claim
            self.next_beat_ms = now_ms
            self._beat(now_ms, actions)
            return
        if now_ms > self.claim_deadline_ms:
            self._move(Phase.STOPPED)
            self.events.append(Note("error", f"region {waiting[0]}: could not confirm slot {self.spec.node_id}"
                                             " is free in time"))
            self._exit(actions, 1, "slot claim timed out")
            return
        if now_ms >= self.next_beat_ms:
            self.next_beat_ms = now_ms + self.spec.interval_ms
            actions.extend(ReadOwnSlot(r) for r in waiting)

    # -- beating -----------------------------------------------------------------------------------

    def _beat(self, now_ms: int, actions: list[Action]) -> None:
        self.events.append(BeatDue(max(0, now_ms - self.next_beat_ms)))
        self._tick_health(now_ms)
        self.seq += 1
        self.stats["beats"] += 1
        beat = self._own_beat(now_ms)
        if self.conflict is None:
            actions.extend(Publish(r.name, beat) for r in self.spec.regions)
        self._judge(now_ms, actions)
        self._tick_links(now_ms)
        self.next_beat_ms += self.spec.interval_ms
        if self.next_beat_ms <= now_ms:  # we fell more than a beat behind: skip, do not burst
            self.next_beat_ms = now_ms + self.spec.interval_ms

    def _judge(self, now_ms: int, actions: list[Action]) -> None:
        self._judge_due = False
        sampled = {name: h.sampled_ms for name, h in self.health.items() if h.sampled_ms is not None}
        self.events.extend(self.liveness.tick(now_ms, sampled))
        verdict = None
        if self.quorum is not None:  # N10
            tb = self.held.get(TIEBREAK_RESOURCE)
            verdict, events = self.quorum.evaluate(now_ms, self.liveness.states(), self.peer_digests,
                                                   tiebreak_held=tb is not None and tb.state == "held")
            if self.quorum.spec.two_node and self.phase is Phase.RUNNING:  # N15
                self._race(now_ms)
            self.events.extend(events)
            if self.fencing is not None and self.phase is Phase.RUNNING:  # N11: a leaving node fences nobody
                peers = self.liveness.peers()
                orders, events = self.fencing.evaluate(now_ms, verdict, peers, self._deadlines(now_ms, verdict, peers))
                self.events.extend(events)
                actions.extend(Fence(o.node_id, o.generation, o.attempt, o.reason) for o in orders)
        sf = self.self_fence
        if sf is not None and sf.fenced is None and (self.phase is Phase.RUNNING or self.phase is Phase.LEAVING):
            self._check_self_fence(now_ms, verdict is not None and verdict.quorate, self._connected(now_ms), actions)

    # -- link views (N16) --------------------------------------------------------------------------

    def _fresh_view(self, now_ms: int, node_id: int) -> frozenset[int] | None:
        got = self._views.get(node_id)
        return None if got is None or now_ms - got[0] > self._view_fresh_ms else got[1]

    def _connected(self, now_ms: int) -> bool:
        """N16, self_fence SF3: a quorate set hears us: ourselves and the peers whose fresh link view
        lists us hold a majority (two_node: or we hold the tie-break). Without link regions never:
        a node cannot tell from the disk alone that anyone reads its writes."""
        q = self.spec.quorum
        if q is None or not self._links:
            return False
        me, ours = self.spec.node_id, self._digest
        votes = q.votes[me] + sum(q.votes.get(n, 0) for n in self._views
                                  if n != me and self.peer_digests.get(n, ours) == ours
                                  and me in (self._fresh_view(now_ms, n) or ()))
        if votes * 2 > q.expected:
            return True
        tb = self.held.get(TIEBREAK_RESOURCE)
        return q.two_node and tb is not None and tb.state == "held"

    def _deadlines(self, now_ms: int, verdict, peers) -> dict[int, int] | None:
        """N16, fencing FD11: each DEAD peer's self-fence deadline, when the cluster has a watchdog
        and no quorum member's fresh link view shows it (a member heard without one, when we have
        links, may see it: then none)."""
        if not self.spec.watchdog_ms or verdict is None:
            return None
        out = {}
        blind, seen = False, set()  # what the other members' fresh views show, gathered once
        if self._links:
            for m in verdict.members:
                if m != self.spec.node_id:
                    v = self._fresh_view(now_ms, m)
                    if v is None:
                        blind = True
                        break
                    seen |= v
        for nid, p in peers.items():
            if p.state is not NodeState.DEAD:
                self._excluded_since.pop(nid, None)
                continue
            if self._links:
                if blind or nid in seen:
                    self._excluded_since.pop(nid, None)
                    continue
                since = self._excluded_since.setdefault(nid, now_ms)
            else:
                since = None  # SF3 without links: its lease alone
            out[nid] = timing.self_fence_deadline_ms(
                advanced_ms=p.advanced_ms, excluded_ms=since, interval_ms=self.spec.interval_ms,
                dead_ms=self.spec.dead_ms, io_timeout_ms=self.spec.io_timeout_ms, watchdog_ms=self.spec.watchdog_ms)
        return out

    # -- self-fencing (N14) ------------------------------------------------------------------------

    def _check_self_fence(self, now_ms: int, quorate: bool, connected: bool, actions: list[Action]) -> None:
        landed = oldest = None
        for name, h in self.health.items():
            if self.kind[name] != "disk":
                continue
            t = h.landed_ms
            if t is not None and (landed is None or t > landed):
                landed = t
            t = h.oldest_in_flight_ms("write")
            if t is not None and (oldest is None or t < oldest):
                oldest = t
        guarding = any(h.state in ("acquiring", "held", "releasing") for name, h in self.held.items()
                       if name != TIEBREAK_RESOURCE)  # the tie-break guards nothing: it makes quorum
        fenced = self.self_fence.check(now_ms, quorate=quorate, connected=connected, guarding=guarding, landed_ms=landed,
                                       oldest_beat_write_ms=oldest, mmp_lapsed_ms=self.ledger.take_lapsed(now_ms))
        if fenced is not None:
            self._fence_self(now_ms, fenced, actions)

    def _take_pill(self, now_ms: int, actions: list[Action]) -> None:
        (reason, what), self._pill = self._pill, None
        if self.phase is not Phase.RUNNING and self.phase is not Phase.LEAVING:
            return  # already fenced (acknowledged only), or stopping for good
        fenced = self.self_fence.pill(now_ms, what) if reason == "pill" else self.self_fence.io_fenced(now_ms, what)
        if fenced is not None:
            self._fence_self(now_ms, fenced, actions)

    def _fence_self(self, now_ms: int, sf: SelfFenced, actions: list[Action]) -> None:
        """SF5: abandon every guard (loss actions run), stop feeding the watchdog; beats go on."""
        self._move(Phase.SELF_FENCED)
        self.flags |= SlotFlag.SELF_FENCED
        self.events.append(sf)
        actions.append(SelfFence(sf.reason, sf.detail))
        why = f"this node fenced itself: {sf.detail}"
        for h in list(self.held.values()):
            h.guard.abandon(now_ms, why)
            h.wake_ms = h.guard.next_wakeup_ms()
            for ev in h.guard.drain():
                self._guard_event(now_ms, h, ev, actions)
        self._self_fenced(now_ms, actions)

    def _self_fenced(self, now_ms: int, actions: list[Action]) -> None:
        """SF5: once every loss action has finished, the guarded devices go read-only; once no
        MMP write of ours can still land either, our beats promise READ_ONLY (fencing FD8)."""
        if self.held:
            return  # loss actions still running (LossDone removes each)
        if self._stop_asked and self.exit_code is None:  # it was leaving: the stop asked for, now
            self._move(Phase.STOPPED)
            self._exit(actions, 3, "self-fenced while stopping")
            return
        if not self._read_only_asked:
            self._read_only_asked = True
            mountpoints = tuple(sorted({r.mountpoint for r in self.spec.resources.values() if r.mountpoint}))
            if mountpoints:
                actions.append(BlockReadOnly(mountpoints))
        if not self.flags & SlotFlag.READ_ONLY and not self.ledger.unknown(now_ms):
            self.flags |= SlotFlag.READ_ONLY
            self.events.append(Note("critical", "self-fenced: every guarded resource stopped and no write of ours"
                                                " to guarded storage can still land: READ_ONLY published"))

    def _own_beat(self, now_ms: int) -> OwnBeat:
        view = self.liveness.alive_by_region() if any(k != "disk" for k in self.kind.values()) else {}
        return OwnBeat(self.spec.node_id, self.spec.name, self.spec.generation, self.seq, int(self.flags),
                       now_ms, view, self._digest, self._mailbox_acks)

    def _tick_health(self, now_ms: int) -> None:
        disk_lost = False
        for name, h in self.health.items():
            for ev in h.tick(now_ms):
                self.events.append(ev)
            if h.failing and name not in self.failing:
                self.failing.add(name)
                self.events.append(Note("error", f"region {name} unhealthy: {h.reason}"))
            elif not h.failing and name in self.failing:
                self.failing.discard(name)
            if self.kind[name] == "disk" and h.failing:  # N4
                disk_lost = True
        self.flags = (self.flags | SlotFlag.DISK_LOST) if disk_lost else (self.flags & ~SlotFlag.DISK_LOST)

    def _tick_links(self, now_ms: int) -> None:
        """N7."""
        peers_exist = self.liveness.any_alive()
        for name, heard in self.heard_ms.items():
            deaf = peers_exist and now_ms - heard >= self.spec.dead_ms
            if deaf and name not in self.deaf:
                self.deaf.add(name)
                self.events.append(Hearing(name, False, now_ms - heard))
            elif not deaf and name in self.deaf:
                self.deaf.discard(name)
                self.events.append(Hearing(name, True, 0))

    # -- MMP guards --------------------------------------------------------------------------------

    def peer_info(self, node_id: int, on_pr_luns: bool = False) -> PeerInfo:
        """What liveness knows of a node, for the fast paths (diskhb.mmp.fast_path); on_pr_luns:
        for a resource an I/O fence covers (fencing FD13)."""
        nv = self.liveness.node(node_id)
        if nv is None:
            return PeerInfo(NodeState.UNKNOWN)
        released = self.fencing is not None and \
            self.fencing.may_take_over(node_id, nv.generation, io_covered=on_pr_luns) is not None
        return PeerInfo(nv.state, generation=nv.generation, fenced=released,  # FP0
                        disk_lost=bool(nv.flags & SlotFlag.DISK_LOST))  # FP1

    def _fence_request(self, now_ms: int, req: FenceRequest, actions: list[Action]) -> None:
        """N11, fencing FD10: `diskhb fence NODE`; answered at once (the sender never waits for the
        victim: status shows the outcome)."""
        def refuse(text: str, code: int = 1) -> None:
            actions.append(Reply(req.request_id, {"ok": False, "exit": code, "error": text}))

        if self.fencing is None:
            refuse("this node has no [quorum]: fencing decisions need one (diskhb message can still deliver a"
                   " test message)", 2)
            return
        if self.phase is not Phase.RUNNING:
            refuse(f"this daemon is {self.phase.value.replace('_', '-')}: it fences nobody")
            return
        if self.quorum.last is None:
            refuse("quorum is not judged yet (before the first beat); try again")
            return
        nv = self.liveness.node(req.node_id)
        generation = 0 if nv is None else nv.generation
        got = self.fencing.manual(now_ms, req.node_id, generation, quorate=self.quorum.last.quorate, force=req.force)
        if isinstance(got, str):
            refuse(got, 2 if req.node_id == self.spec.node_id or req.node_id not in self.fencing.nodes else 1)
            return
        actions.append(Fence(got.node_id, got.generation, got.attempt, got.reason, req.method))
        actions.append(Reply(req.request_id, {"ok": True, "node": got.node_id, "generation": hex_id(got.generation),
                                              "attempt": got.attempt,
                                              "note": "fence ordered: see 'diskhb status' for its outcome"}))

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    def _acquire(self, now_ms: int, req: AcquireRequest, actions: list[Action]) -> None:
        def refuse(text: str, code: int = 1) -> None:
            actions.append(Reply(req.request_id, {"ok": False, "exit": code, "error": text}))

        if self.phase is not Phase.RUNNING:
            refuse("the daemon is starting" if self.phase is Phase.CLAIMING else
                   f"this node fenced itself ({self.self_fence.fenced.detail}); restart its daemon to rejoin"
                   if self.phase is Phase.SELF_FENCED else "the daemon is stopping")
            return
        if req.resource == TIEBREAK_RESOURCE:
            refuse(f"{TIEBREAK_RESOURCE!r} is reserved for the two-node tie-break race", 2)
            return
        if self.quorum is not None and (self.quorum.last is None or not self.quorum.last.quorate):  # N13
            refuse("this node is not quorate: a minority takes no storage over (see 'diskhb status')")
            return
        h = self.held.get(req.resource)
        if h is not None:
            if h.state == "held":
                actions.append(Reply(req.request_id, {"ok": True, "resource": req.resource, "epoch": h.epoch,
                                                      "location": h.location, "note": "already held by this daemon"}))
            else:
                refuse(f"resource {req.resource!r} is {h.state} in this daemon; try again")
            return
        if len(self.held) >= HELD_MAX:
            refuse(f"this daemon already holds or acquires {HELD_MAX} resources")
            return
        spec = self.spec.resources.get(req.resource)
        if spec is None:
            if self.spec.default_target is None:
                refuse("this daemon has no disk region; MMP blocks live on disk regions", 2)
                return
            spec = ResourceSpec(req.resource, self.spec.default_target, self.spec.default_timing, declared=False)
        if not 1 <= self.spec.node_id <= spec.target.blocks[0].slot_count:
            refuse(f"{spec.target.path}: node id {self.spec.node_id} is beyond its"
                   f" {spec.target.blocks[0].slot_count} ballot slots", 2)
            return
        self._start_guard(now_ms, spec, req.wait_ms, req.create or spec.declared, req.request_id)

    def _start_guard(self, now_ms: int, spec: ResourceSpec, wait_ms: int, create: bool,
                     reply_id: int | None) -> None:
        me = Claimant(self.spec.node_id, self.spec.generation, self.spec.name, spec.name,
                      spec.timing.interval_ms, spec.timing.ceiling_ms,
                      device=spec.target.path.rsplit("/", 1)[-1][:32])
        lock_key = None
        if self.spec.lock_scope is not None:
            scope = self.spec.lock_scope
            lock_key = lambda loc: gd.lock_key(scope, loc)  # noqa: E731
        guard = gd.Guard(me, spec.target, timing=spec.timing, ledger=self.ledger, rand=self.rand, now_ms=now_ms,
                         wait_ms=wait_ms, create=create,
                         peer_info=lambda nid, io=spec.on_pr_luns: self.peer_info(nid, io),  # FD13
                         lock_key=lock_key, next_id=self._next_id,
                         stale_own=self.lost_blocks.pop(spec.name, frozenset()))  # N17
        self.held[spec.name] = _Held(guard, spec, acquire_reply=reply_id, wake_ms=now_ms)  # due at once

    def _race(self, now_ms: int) -> None:
        """N15, quorum Q6: alone in a two_node cluster, race for the tie-break after our delay."""
        q = self.spec.quorum
        peer = next(n for n in q.votes if n != self.spec.node_id)
        nv = self.liveness.node(peer)
        if nv is not None and nv.state is NodeState.ALIVE:
            self._alone_since_ms = None
            return
        if self._alone_since_ms is None:
            self._alone_since_ms = now_ms
        if (nv is None or nv.state is not NodeState.DEAD) and now_ms - self._alone_since_ms < self.spec.dead_ms:
            return  # not seen yet (a start), or unknown for a moment: no split until it is dead, or unseen that long
        if TIEBREAK_RESOURCE in self.held or self.spec.default_target is None or len(self.held) >= HELD_MAX:
            return
        if now_ms - self._alone_since_ms < q.race_delay_ms(self.spec.dead_ms) or now_ms < self._race_after_ms:
            return
        spec = ResourceSpec(TIEBREAK_RESOURCE, self.spec.default_target, self.spec.default_timing, declared=False)
        self.events.append(Note("warning", f"two_node: node {peer} is not seen: racing for the tie-break"
                                           f" ({TIEBREAK_RESOURCE!r} on {spec.target.path})"))
        self._start_guard(now_ms, spec, TIEBREAK_WAIT_MS, True, None)

    def _release(self, now_ms: int, req: ReleaseRequest, actions: list[Action]) -> None:
        h = self.held.get(req.resource)
        if h is None or h.state not in ("held", "releasing", "acquiring"):
            actions.append(Reply(req.request_id, {"ok": False, "exit": 2,
                                                  "error": f"resource {req.resource!r} is not held by this daemon"}))
            return
        h.release_replies.append(req.request_id)
        h.release()

    def _guards(self, now_ms: int, actions: list[Action]) -> None:
        for name, h in list(self.held.items()):
            g = h.guard
            results = self._guard_results.pop(name, None)
            if not results and (h.wake_ms is None or h.wake_ms > now_ms):
                # nothing to feed it and nothing due: a step would do nothing (next_wakeup_ms's
                # contract)
                continue
            g.wall_ms = self.wall_ms
            requests = g.step(now_ms, results or ())
            h.wake_ms = g.next_wakeup_ms()
            for ev in g.drain():  # first: a lease shortened by a write reaches the enforcer before it
                self._guard_event(now_ms, h, ev, actions)
            for req in requests:
                if req.op in ("read", "write", "lock"):
                    self._owner[req.id] = h
                self.stats["mmp_requests"] += 1
                actions.append(MmpIo(req))
        if self.tainted is None and self.ledger.unknown(now_ms):
            self.tainted = "a write of ours to an MMP block was given up on (outcome unknown)"

    def _guard_event(self, now_ms: int, h: _Held, ev, actions: list[Action]) -> None:
        name = h.spec.name
        if isinstance(ev, gd.GotIt):
            h.state, h.epoch, h.location = "held", ev.epoch, ev.location
            self.events.append(MmpEvent(name, "acquired", ev.epoch, f"on {ev.location} ({ev.note or 'ballot won'})"))
            if h.acquire_reply is not None:
                actions.append(Reply(h.acquire_reply, {"ok": True, "resource": name, "epoch": ev.epoch,
                                                        "location": ev.location, "note": ev.note}))
                h.acquire_reply = None
        elif isinstance(ev, gd.Lease):
            h.takeover_ms, h.loss_deadline_ms = ev.takeover_ms, ev.loss_deadline_ms
            actions.append(Enforce(name, "renew" if h.enforced else "start", ev.takeover_ms))
            h.enforced = True
        elif isinstance(ev, gd.Denied):
            self.events.append(MmpEvent(name, "refused", 0, ev.reason))
            if name == TIEBREAK_RESOURCE:  # N15: not at every beat (a block that cannot be had stays so)
                self._race_after_ms = now_ms + TIEBREAK_RETRY_DEAD_TIMES * self.spec.dead_ms
            for rid in [h.acquire_reply, *h.release_replies]:
                if rid is not None:
                    actions.append(Reply(rid, {"ok": False, "exit": ev.exit_code, "error": ev.reason}))
            del self.held[name]
        elif isinstance(ev, gd.Gone):
            if ev.released:
                h.state = "released"
                self.events.append(MmpEvent(name, "released", ev.epoch, f"on {h.location}"))
                if h.enforced:
                    actions.append(Enforce(name, "done"))
                    h.enforced = False
                for rid in h.release_replies:
                    actions.append(Reply(rid, {"ok": True, "resource": name, "epoch": ev.epoch, "outcome": "released"}))
                del self.held[name]
            else:
                h.state = "lost"
                self.tainted = self.tainted or f"MMP resource {name!r} ended lost or unconfirmed: {ev.lost}"
                self.events.append(MmpEvent(name, "lost", ev.epoch, ev.lost or ""))
                for rid in h.release_replies:
                    actions.append(Reply(rid, {"ok": True, "resource": name, "epoch": ev.epoch, "outcome": "lost",
                                               "error": ev.lost}))
                h.release_replies.clear()
                h.loss_running = True
                actions.append(RunLoss(name, ev.epoch, ev.lost or "lost"))
                if len(self.lost_blocks) < LOST_BLOCKS_MAX:  # N17 (beyond the bound: the classic way)
                    self.lost_blocks[name] = h.guard.own_blocks()

    # -- leaving (N5) ------------------------------------------------------------------------------

    def _leaving(self, now_ms: int, actions: list[Action]) -> None:
        if self.held and now_ms < self.leave_deadline_ms:
            return  # every guard is releasing; loss actions still running keep us here too
        if self.held:
            self.tainted = self.tainted or "a resource did not finish releasing in time"
        failing = [n for n, h in self.health.items() if self.kind[n] == "disk" and h.failing]
        why_not = self.tainted or (f"disk region {failing[0]} is failing: a write of ours may still land"
                                   if failing else None)
        if why_not is not None:
            self.events.append(Note("critical" if self.tainted else "error", f"not publishing LEFT: {why_not}"))
            self._move(Phase.STOPPED)
            self._exit(actions, 3 if self.tainted else 0, "stopped without LEFT")
            return
        self._move(Phase.PUBLISHING_LEFT)
        self.flags = (self.flags | SlotFlag.LEFT) & ~SlotFlag.ACTIVE
        self.seq += 1
        self.left_seq = self.seq
        beat = self._own_beat(now_ms)
        disks = [r.name for r in self.spec.regions if r.kind == "disk"]
        self.left_done = {r: None for r in disks}
        self.left_deadline_ms = now_ms + PUBLISH_LEFT_IO_TIMEOUTS * self.spec.io_timeout_ms
        self._left_beat = beat
        actions.extend(Publish(r, beat) for r in disks)
        self._publishing_left(now_ms, actions)

    def _publishing_left(self, now_ms: int, actions: list[Action]) -> None:
        pending = [r for r, ok in self.left_done.items() if ok is None]
        failed = [r for r, ok in self.left_done.items() if ok is False]
        # Each disk region gets one io timeout to take the LEFT write (its writer may still be busy
        # with our last beat) and one more for that write itself: an on-time write (IO2).
        late = [r for r in pending if now_ms >= (self.left_submitted[r] + self.spec.io_timeout_ms
                                                 if r in self.left_submitted else self.left_deadline_ms)]
        if pending and not late and not failed:
            # A disk writer still busy with an earlier beat does not take the LEFT one: offer it again.
            actions.extend(Publish(r, self._left_beat) for r in pending)
            return
        links = [r.name for r in self.spec.regions if r.kind != "disk"]
        if pending or failed:
            what = (failed or late)[0]
            self.events.append(Note("error", f"region {what}: could not write the left flag; not publishing"
                                             " LEFT on the other regions (peers will judge us by silence)"))
        else:
            for r in self.left_done:
                self.events.append(Note("info", f"region {r}: left cleanly"))
            actions.extend(Publish(r, self._left_beat) for r in links)
        self._move(Phase.STOPPED)
        self._exit(actions, 0, "left cleanly" if not (pending or failed) else "stopped without LEFT")

    # -- safety stop -------------------------------------------------------------------------------

    def _safety_stop(self, why: str) -> None:
        if self.phase in (Phase.FAILED, Phase.STOPPED):
            return
        self.conflict = why
        self.events.append(Note("critical", f"STOPPING: {why}"))
        self._move(Phase.FAILED)
        for h in self.held.values():
            h.release()

    def _failing(self, now_ms: int, actions: list[Action]) -> None:
        """A safety stop: holds end (released if they still can; a loss runs its action); no beat
        is published any more; exit 3 once every loss action has finished."""
        self._guards(now_ms, actions)
        if any(h.loss_running or not h.guard.done for h in self.held.values()):
            return
        if self.exit_code is None:
            self._exit(actions, 3, self.conflict or "safety stop")

    # -- helpers -----------------------------------------------------------------------------------

    def _move(self, to: Phase) -> None:
        if to not in _PHASES[self.phase]:
            raise AssertionError(f"node phase {self.phase.value} -> {to.value} is not a transition")
        self.phase = to

    def _exit(self, actions: list[Action], code: int, reason: str) -> None:
        self.exit_code = code
        actions.append(Exit(code, reason))

    # -- views -------------------------------------------------------------------------------------

    def snapshot(self) -> dict:
        """The node's view for `diskhb status` and metrics (built on the daemon's loop thread).
        Generations are hex strings (hex_id): JSON readers such as jq round 64-bit numbers."""
        nodes = []
        for nv in self.liveness.nodes():
            nodes.append({
                "id": nv.node_id, "name": nv.name, "state": nv.state.value, "seq": nv.seq,
                "generation": hex_id(nv.generation), "age_s": round(nv.age_ms / 1000, 3),
                "flags": SlotFlag.names(nv.flags),
                "regions": {r: {"state": rv.state.value, "seq": rv.seq, "age_s": round(rv.age_ms / 1000, 3),
                                "bad_samples": rv.bad_samples} for r, rv in nv.regions.items()},
            })
        nodes.append({
            "id": self.spec.node_id, "name": self.spec.name, "state": "alive", "seq": self.seq,
            "generation": hex_id(self.spec.generation), "age_s": 0.0, "flags": SlotFlag.names(self.flags),
            "self": True,
            "regions": {n: {"state": "alive" if h.healthy else "unhealthy", "seq": self.seq, "age_s": 0.0,
                            "bad_samples": 0} for n, h in self.health.items()},
        })
        nodes.sort(key=lambda n: n["id"])
        return {
            "source": "daemon",
            "cluster": self.spec.cluster,
            "phase": self.phase.value,
            "stalls": {"count": self.stalls, "last_ms": self.last_stall_ms},
            "node": {"id": self.spec.node_id, "name": self.spec.name, "generation": hex_id(self.spec.generation)},
            "interval_ms": self.spec.interval_ms,
            "dead_ms": self.spec.dead_ms,
            "regions": [{"name": r.name, "type": r.kind, "path": r.path, "healthy": self.health[r.name].healthy,
                         "reason": self.health[r.name].reason,
                         **({"receiving": r.name not in self.deaf} if r.kind != "disk" else {})}
                        for r in self.spec.regions],
            "nodes": nodes,
            # takeover_ms / loss_deadline_ms: our monotonic clock (CLOCK_MONOTONIC, one per host), so a
            # process of this host can judge the lease's freshness itself (diskhb.mmp.check CK1)
            "mmp": [{"resource": n, "path": h.spec.target.path, "block": _block_index(h), "epoch": h.epoch,
                     "state": h.state, "takeover_ms": h.takeover_ms, "loss_deadline_ms": h.loss_deadline_ms}
                    for n, h in sorted(self.held.items()) if h.state != "acquiring"],
            "mmp_acquiring": [n for n, h in sorted(self.held.items()) if h.state == "acquiring"],
            "quorum": self._quorum_view(),
            "fencing": None if self.fencing is None else self.fencing.status(self._last_step_ms),
            "fence_receipts": [] if self.fencing is None else list(self.fencing.receipts),  # fencing FD12
            "mailbox": {r: dict(m) for r, m in sorted(self.mailbox.items())},
            "self_fence": None if self.self_fence is None or self.self_fence.fenced is None else
            {"reason": self.self_fence.fenced.reason, "detail": self.self_fence.fenced.detail,
             "read_only": bool(self.flags & SlotFlag.READ_ONLY)},
        }

    def _quorum_view(self) -> dict | None:
        if self.quorum is None:
            return None
        q = self.quorum.last
        if q is None:  # before the first beat
            return {"quorate": False, "votes": 0, "expected_votes": self.quorum.spec.expected, "members": [],
                    "reason": "not judged yet (before the first beat)", "refused": []}
        return {"quorate": q.quorate, "votes": q.votes, "expected_votes": q.expected_votes,
                "members": list(q.members), "reason": q.reason, "refused": list(q.refused)}


def _block_index(h: _Held) -> int | None:
    loc = h.guard.loc
    return None if loc is None else loc.index

