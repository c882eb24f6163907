"""Fencing decisions: who is a victim, who fences it, when to try again. I/O-free.

Decisions only: carrying a fence out (the disk pill, SCSI-PR, a fence agent) is the caller's, who
reports each attempt's outcome back. Inputs: the quorum verdict (diskhb.core.quorum), each peer's
liveness (overall state, generation, flags: liveness X1-X4, with R3 and R8 behind every DEAD),
the attempts' outcomes and the caller's monotonic now_ms. The rules:

  FD1 QUORATE: only a quorate node names victims and orders fences. A node that loses quorum
      starts no new attempt; one in flight finishes (it cannot be recalled), its outcome is kept.
  FD2 VICTIM: a configured peer whose overall state is DEAD: no region showed it advancing for
      dead_ms, judged on fresh evidence only (liveness R3, R8). UNKNOWN is no victim (not watched
      long enough, or seen only through stale regions: a storage outage on every node fences
      nobody), LEFT is none (it released its storage cleanly), ALIVE on any region is none
      (losing one region never fences). Its last flags spare it of nothing: DISK_LOST says its
      writes are late or failing, so they may still land; a READ_ONLY promise counts only while
      the node renews it (FD3), never from a node gone silent.
  FD3 READ_ONLY: a peer ALIVE whose newest beat of its current generation carries READ_ONLY has
      stopped every guarded resource with no shared-storage write in flight (the sender's rule):
      it is recovered without fencing, and its storage may be taken over at once (`released`).
  FD4 ONE FENCER: a victim's fencer is the first quorum member after it in node-id order,
      wrapping around: every node that sees the same membership names the same one, and the
      work spreads over the cluster. When the fencer leaves the membership, the next member is
      named at the next evaluation. Nodes with different views may both fence one victim:
      fencing is idempotent, so that costs an attempt, never safety.
  FD5 ONCE: a victim is one incarnation (node, generation), with at most one attempt of ours in
      flight. Once an attempt is verified, that incarnation is fenced for good: no further
      attempt, whatever it shows later (I/O fencing leaves it running and beating); only a new
      generation is a new node.
  FD6 RETRY: an attempt that fails, or outlives attempt_timeout_ms without an outcome, is retried
      after a backoff doubling from RETRY_MS_MIN to RETRY_MS_MAX; every outcome is an event.
  FD7 BACK: a victim not yet fenced that is seen ALIVE again (same generation advancing, or a
      restart) is no victim any more: no new attempt, reported once.
  FD8 SELF-FENCED: a peer whose current generation shows SELF_FENCED together with READ_ONLY has
      fenced itself and kept its promise (diskhb.core.self_fence SF5: every guard abandoned,
      every loss action finished, no write to guarded storage can still land). SELF_FENCED is
      never withdrawn by an incarnation (SF6), so that is final: the incarnation counts as
      verified fenced, whatever it shows later, and its storage may be taken over at once (a
      victim of ours is fenced by it, method "self"). SELF_FENCED alone (actions still running)
      verifies nothing yet.
  FD9 PENDING: a method that did its part but whose effect only the victim can show (the disk
      pill: written, the victim acts on it at its next read) reports `pending`: the attempt stays
      in flight until FD8 verifies it, or it times out (FD6) and is tried again. A victim that
      never reads the pill (dead, frozen, cut off from the disk) is never verified by it: its
      storage then waits for the MMP guard's classic watch, which needs nobody's cooperation.
  FD11 DEADLINE: a victim whose pill was delivered (FD9) and that stays DEAD past its self-fence
      deadline (core.timing.self_fence_deadline_ms, handed in by the caller: only when the
      cluster has a watchdog, and only while every quorum member's link view leaves it out) is
      fenced (method "deadline"): whatever it is doing, it fenced itself and its watchdog reset
      it by then (self_fence SF3, SF5). Judged only while quorate (FD1).
  FD12 RECEIPT: an I/O fence (a method in IO_METHODS: the victim's key read back gone from
      every LUN) lets the victim run on, so what it proves is checked once more: a receipt is
      issued when the victim's incarnation has not advanced on any region for receipt_window_ms
      (one watchdog window: a victim that fenced itself or was reset by then is down; dead_ms
      without a watchdog) after the fence was verified, or it restarted (the incarnation is
      gone); it is void, and says so, when that incarnation advanced after the fence: it runs
      on, cut off from the LUNs (that is what I/O fencing allows, but the operator must know).
      The receipt is evidence for the log, status and metrics; it gates nothing: storage is
      taken over at the verified fence (FD5), which is why the takeover needs no wait for the
      victim's watchdog.
  FD13 WHAT AN I/O FENCE COVERS: a victim fenced by an I/O method (IO_METHODS) is cut off the
      configured LUNs only, and may run on: its storage elsewhere (a resource not marked
      on_pr_luns) is not taken over on that verdict; it waits for what covers everything (the
      victim's own SELF_FENCED promise, FD8; its self-fence deadline, FD11; or the MMP guard's
      classic watch). A pill, an agent's verified off, a self-fence cover every resource.
      The other way round, when the cluster fences by scsi-pr (io_fence), a resource on the LUNs
      is taken over at once only on a verified I/O fence or at the victim's self-fence deadline
      (FD11: its watchdog reset it by then, and with it every write its host still had queued):
      a READ_ONLY or SELF_FENCED promise (FD3, FD8) covers what the daemon wrote and what it
      stopped, not a WRITE an application's killed process left in a TCP stream (iSCSI) on a
      cable that may come back; for that resource the promise counts for nothing and the MMP
      guard watches the classic way (bounded by the timing model and the watchdog).
  FD10 MANUAL: an operator's order (`diskhb fence NODE`) fences a configured peer other than us,
      alive or not, as we see its incarnation now; refused without quorum unless forced. This
      node is its fencer; it is tried once (no automatic retry: the operator sees the outcome in
      status and may order it again).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from diskhb.core.quorum import Quorum
from diskhb.core.record import record
from diskhb.core.types import GENERATION_NONE, NODE_ID_MAX, NodeState, Peer, SlotFlag, hex_id

RETRY_MS_MIN = 1_000
RETRY_MS_MAX = 60_000
ATTEMPT_TIMEOUT_MS_DEFAULT = 60_000  # a safety net: each method bounds its own run time
VICTIMS_MAX = NODE_ID_MAX  # one record per configured peer at most (bounded by the node list)
IO_METHODS = ("scsi-pr",)  # FD12: fences that cut the victim off its storage and leave it running
RECEIPTS_KEPT = 16  # FD12: the newest receipts shown in status


# -- out: orders (actions for the caller) and events --------------------------------------------------


@record
class FenceOrder:
    """FD4: we are the fencer of this incarnation: run the configured methods, report outcome()."""
    node_id: int
    generation: int
    attempt: int  # 1, 2, ... per incarnation (FD6)
    reason: str


@record
class VictimNamed:
    node_id: int
    generation: int
    fencer: int  # FD4: the node that fences it (possibly us)
    reason: str


@record
class FenceOutcome:
    node_id: int
    generation: int
    attempt: int
    ok: bool  # verified fenced (FD5)
    method: str
    detail: str


@record
class FencePending:
    """FD9: a method did its part; the victim has not shown the effect yet."""
    node_id: int
    generation: int
    attempt: int
    method: str
    detail: str


@record
class FenceReceipt:
    """FD12: the evidence of an I/O fence, checked over a watchdog window (issued), or not (void)."""
    node_id: int
    generation: int
    method: str
    issued: bool
    evidence: str  # what the method read back (each LUN's keys), then what the window showed


@record
class VictimBack:
    """FD7: no victim any more (alive again, restarted, or left)."""
    node_id: int
    generation: int
    reason: str


@dataclass(slots=True)
class _Victim:
    generation: int
    since_ms: int  # named then
    fencer: int = 0
    attempts: int = 0
    in_flight_since_ms: int | None = None  # our attempt running since (FD5: at most one)
    retry_at_ms: int = 0  # FD6: no new attempt before
    backoff_ms: int = RETRY_MS_MIN
    fenced: bool = False
    last: str = ""  # the last outcome, for status
    manual: bool = False  # FD10
    pending: str = ""  # FD9: what the in-flight attempt waits for
    fenced_ms: int = 0  # FD12: when the fence was verified
    method: str = ""  # FD12: the method that verified it
    evidence: str = ""  # FD12: what it read back
    receipt: str = ""  # FD12: "" until issued or void, then the one-line verdict


class Fencing:
    def __init__(self, self_id: int, nodes: tuple[int, ...], *,
                 attempt_timeout_ms: int = ATTEMPT_TIMEOUT_MS_DEFAULT, receipt_window_ms: int = 0,
                 io_fence: bool = False):
        if self_id not in nodes:
            raise ValueError(f"fencing: this node ({self_id}) is not in the node list")
        if attempt_timeout_ms <= 0:
            raise ValueError(f"fencing: attempt_timeout_ms {attempt_timeout_ms} must be > 0")
        self.self_id = self_id
        self.nodes = tuple(sorted(nodes))
        self.attempt_timeout_ms = attempt_timeout_ms
        self.receipt_window_ms = receipt_window_ms  # FD12 (0: no receipts)
        self.io_fence = io_fence  # FD13: the cluster fences by scsi-pr
        self.receipts: list[dict] = []  # FD12: the newest RECEIPTS_KEPT, for status
        self.victims: dict[int, _Victim] = {}  # node id -> its current incarnation's record
        self.released: dict[int, int] = {}  # FD3: peer -> the generation whose READ_ONLY promise stands
        self.self_fenced: dict[int, int] = {}  # FD8: peer -> its generation that fenced itself (final)
        self.quorate = False  # as of the last evaluate()

    def evaluate(self, now_ms: int, quorum: Quorum | None, peers: Mapping[int, Peer],
                 deadlines: Mapping[int, int] | None = None) -> tuple[list[FenceOrder], list]:
        """Orders to carry out now, and events, from the current quorum and liveness; deadlines:
        the self-fence deadline of each DEAD peer for which one can be given (FD11)."""
        orders: list[FenceOrder] = []
        events: list = []
        quorate = self.quorate = quorum is not None and quorum.quorate
        self.released = {n: peers[n].generation for n in self.nodes
                         if n != self.self_id and _read_only(peers.get(n))}  # FD3
        for nid in self.nodes:
            if nid == self.self_id:
                continue
            p = peers.get(nid)
            v = self.victims.get(nid)
            if p is not None and p.generation != GENERATION_NONE and _self_fenced(p) \
                    and self.self_fenced.get(nid) != p.generation:  # FD8
                self.self_fenced[nid] = p.generation
                if v is not None and v.generation == p.generation and not v.fenced:
                    v.fenced, v.in_flight_since_ms, v.pending = True, None, ""
                    v.last = "fenced itself (SELF_FENCED, READ_ONLY)"
                    events.append(FenceOutcome(nid, v.generation, v.attempts, True, "self",
                                               "it fenced itself and stopped writing guarded storage"))
            if v is not None and v.manual and not v.fenced and p is not None \
                    and p.generation not in (v.generation, GENERATION_NONE):
                del self.victims[nid]  # FD10: the incarnation ordered fenced is gone
                events.append(VictimBack(nid, v.generation, f"restarted as generation {p.generation:#x}"))
                v = None
            if v is not None and not v.fenced and v.pending and quorate and deadlines and p is not None \
                    and p.state is NodeState.DEAD and p.generation == v.generation \
                    and deadlines.get(nid, now_ms + 1) <= now_ms:  # FD11
                v.fenced, v.in_flight_since_ms, v.pending = True, None, ""
                v.last = "silent past its self-fence deadline (it fenced itself; its watchdog reset it)"
                events.append(FenceOutcome(nid, v.generation, v.attempts, True, "deadline",
                                           "its pill was delivered and it stayed silent past its self-fence deadline"))
            if v is not None and v.manual:  # FD10: no election, no automatic retry
                if v.in_flight_since_ms is not None and now_ms - v.in_flight_since_ms >= self.attempt_timeout_ms:
                    v.in_flight_since_ms = None
                    events.append(self._failed(now_ms, nid, v, v.attempts, "none",
                                               f"no outcome within {self.attempt_timeout_ms} ms{_waiting(v)}"))
                continue
            if v is not None and not v.fenced and _back(p, v):  # FD7
                del self.victims[nid]
                why = ("left cleanly" if p.state is NodeState.LEFT else
                       f"restarted as generation {p.generation:#x}" if p.generation != v.generation else
                       "its heartbeat advances again")
                events.append(VictimBack(nid, v.generation, why))
                v = None
            if v is not None and v.fenced and p is not None and p.generation not in (v.generation, GENERATION_NONE):
                if v.method in IO_METHODS and not v.receipt:  # FD12: the fenced incarnation is gone
                    events.append(self._receipt(nid, v, True, f"it restarted as generation {p.generation:#x}"))
                del self.victims[nid]  # FD5: a new generation is a new node
                v = None
            if v is not None and v.fenced and v.method in IO_METHODS and not v.receipt and p is not None \
                    and self.receipt_window_ms:  # FD12
                if p.advanced_ms > v.fenced_ms:
                    events.append(self._receipt(nid, v, False, f"its heartbeat advanced {p.advanced_ms - v.fenced_ms}"
                                                               " ms after the fence: it runs on, cut off from the LUNs"))
                elif now_ms - v.fenced_ms >= self.receipt_window_ms:
                    events.append(self._receipt(nid, v, True, f"its heartbeat stayed frozen for"
                                                              f" {now_ms - v.fenced_ms} ms after the fence"))
            if v is None and quorate and p is not None and p.state is NodeState.DEAD \
                    and p.generation != GENERATION_NONE:  # FD1, FD2
                v = self.victims[nid] = _Victim(p.generation, now_ms)
            if v is None or v.fenced:
                continue
            if v.in_flight_since_ms is not None and now_ms - v.in_flight_since_ms >= self.attempt_timeout_ms:
                v.in_flight_since_ms = None  # FD6: an outcome that never came is a failure
                events.append(self._failed(now_ms, nid, v, v.attempts, "none",
                                           f"no outcome within {self.attempt_timeout_ms} ms{_waiting(v)}"))
            if not quorate:
                continue  # FD1
            fencer = _fencer(nid, quorum.members)
            if fencer != v.fencer:
                v.fencer = fencer
                events.append(VictimNamed(nid, v.generation, fencer,
                                          f"dead on every region (generation {v.generation:#x}); fencer"
                                          f" {'this node' if fencer == self.self_id else f'node {fencer}'}"))
            if fencer == self.self_id and v.in_flight_since_ms is None and now_ms >= v.retry_at_ms:
                v.attempts += 1
                v.in_flight_since_ms = now_ms
                orders.append(FenceOrder(nid, v.generation, v.attempts,
                                         f"node {nid} dead on every region, this node is its fencer"))
        return orders, events

    def manual(self, now_ms: int, node_id: int, generation: int, *, quorate: bool,
               force: bool) -> FenceOrder | str:
        """FD10: an operator's order (quorate: this node's verdict now); the order to carry out,
        or why not (one line)."""
        if node_id == self.self_id:
            return "refusing to fence this node itself (stop its daemon, or fence it from another node)"
        if node_id not in self.nodes:
            return f"node {node_id} is not in [quorum] nodes ({', '.join(map(str, self.nodes))})"
        if generation == GENERATION_NONE:
            return f"node {node_id} has not been seen on any region: there is no incarnation to fence"
        if not quorate and not force:
            return "this node is not quorate: a minority must not fence (use --force if you are sure)"
        v = self.victims.get(node_id)
        if v is not None and v.generation == generation:
            if v.fenced:
                return f"node {node_id} (generation {generation:#x}) is fenced already: {v.last}"
            if v.in_flight_since_ms is not None:
                return f"a fence of node {node_id} is in progress (attempt {v.attempts}){_waiting(v)}"
        if self.self_fenced.get(node_id) == generation:
            return f"node {node_id} (generation {generation:#x}) has fenced itself already"
        v = _Victim(generation, now_ms, fencer=self.self_id, manual=True,
                    attempts=v.attempts if v is not None and v.generation == generation else 0)
        self.victims[node_id] = v
        v.attempts += 1
        v.in_flight_since_ms = now_ms
        return FenceOrder(node_id, generation, v.attempts, "ordered by an operator"
                          + (" (forced, without quorum)" if not quorate else ""))

    def outcome(self, now_ms: int, node_id: int, generation: int, attempt: int, ok: bool, method: str,
                detail: str, pending: bool = False, evidence: str = "") -> list:
        """The result of a FenceOrder (verified: ok; done but waiting for the victim to show it:
        pending, FD9). A late outcome of an earlier attempt still counts when it is a success:
        the incarnation is fenced either way (FD5)."""
        v = self.victims.get(node_id)
        if v is None or v.generation != generation:
            return [FenceOutcome(node_id, generation, attempt, ok, method, detail)]  # history: logged only
        if pending and not ok and attempt == v.attempts and not v.fenced:  # FD9: still in flight
            v.pending = f"{method}: {detail}"
            v.last = f"attempt {attempt} ({method}): {detail}"
            return [FencePending(node_id, generation, attempt, method, detail)]
        if attempt == v.attempts:
            v.in_flight_since_ms = None
            v.pending = ""
        if v.fenced:  # FD5: final already (a late outcome of another attempt): reported only
            return [FenceOutcome(node_id, generation, attempt, ok, method, detail)]
        if ok:
            v.fenced, v.last = True, f"fenced by {method}: {detail}"
            v.fenced_ms, v.method, v.evidence = now_ms, method, evidence  # FD12
            return [FenceOutcome(node_id, generation, attempt, True, method, detail)]
        if attempt != v.attempts:
            return [FenceOutcome(node_id, generation, attempt, False, method, detail)]
        return [self._failed(now_ms, node_id, v, attempt, method, detail)]

    def fenced(self, node_id: int, generation: int) -> bool:
        """FD5: this incarnation was verified fenced (its storage may be taken over)."""
        v = self.victims.get(node_id)
        return v is not None and v.fenced and v.generation == generation

    def may_take_over(self, node_id: int, generation: int, *, io_covered: bool = False) -> str | None:
        """Why this incarnation's storage may be taken over now without waiting for it ("read-only":
        FD3, "fenced": FD5), or None. Only a quorate node takes storage over (FD1). io_covered:
        the storage lies on the LUNs an I/O fence cuts it off (FD13)."""
        if not self.quorate:
            return None
        promise_counts = not (io_covered and self.io_fence)  # FD13
        if promise_counts and self.released.get(node_id) == generation:
            return "read-only"
        if promise_counts and self.self_fenced.get(node_id) == generation:  # FD8
            return "self-fenced"
        if not self.fenced(node_id, generation):
            return None
        v = self.victims[node_id]
        if io_covered and self.io_fence:  # FD13: only what stops queued writes too
            return "fenced" if v.method in IO_METHODS or v.method == "deadline" else None
        return "fenced" if io_covered or v.method not in IO_METHODS else None  # FD13

    def status(self, now_ms: int) -> list[dict]:
        return [{"node": nid, "generation": hex_id(v.generation), "since_ms": now_ms - v.since_ms,
                 "fencer": v.fencer, "attempts": v.attempts, "in_flight": v.in_flight_since_ms is not None,
                 "fenced": v.fenced, "last": v.last, "manual": v.manual, "pending": v.pending,
                 "method": v.method, "receipt": v.receipt}
                for nid, v in sorted(self.victims.items())]

    def _receipt(self, node_id: int, v: _Victim, issued: bool, window: str) -> FenceReceipt:
        """FD12."""
        v.receipt = ("issued: " if issued else "void: ") + window
        evidence = f"{v.evidence}; {window}" if v.evidence else window
        self.receipts = (self.receipts + [{"node": node_id, "generation": hex_id(v.generation), "method": v.method,
                                           "issued": issued, "evidence": evidence}])[-RECEIPTS_KEPT:]
        return FenceReceipt(node_id, v.generation, v.method, issued, evidence)

    def _failed(self, now_ms: int, node_id: int, v: _Victim, attempt: int, method: str, detail: str) -> FenceOutcome:
        v.retry_at_ms = now_ms + v.backoff_ms  # FD6
        v.backoff_ms = min(RETRY_MS_MAX, 2 * v.backoff_ms)
        v.last = f"attempt {attempt} failed ({method}): {detail}"
        return FenceOutcome(node_id, v.generation, attempt, False, method, detail)


def _fencer(victim: int, members: tuple[int, ...]) -> int:
    """FD4: the first member after the victim in id order, wrapping around."""
    ordered = sorted(members)
    return next((m for m in ordered if m > victim), ordered[0])


def _read_only(p: Peer | None) -> bool:
    return p is not None and p.state is NodeState.ALIVE and bool(p.flags & SlotFlag.READ_ONLY)


def _self_fenced(p: Peer) -> bool:
    """FD8: SELF_FENCED and its READ_ONLY promise, both."""
    return p.flags & _SELF_FENCED_RO == _SELF_FENCED_RO


_SELF_FENCED_RO = int(SlotFlag.SELF_FENCED | SlotFlag.READ_ONLY)


def _waiting(v: _Victim) -> str:
    return f" (waiting: {v.pending})" if v.pending else ""


def _back(p: Peer | None, v: _Victim) -> bool:
    """FD7: a victim that shows life again (or left cleanly) needs no fence."""
    if p is None:
        return False
    if p.generation == v.generation and p.flags & SlotFlag.SELF_FENCED:
        return False  # beating again because it read the pill: FD8 decides once it is READ_ONLY
    return p.state in (NodeState.ALIVE, NodeState.LEFT) or p.generation not in (v.generation, GENERATION_NONE)
