"""The "scsi-pr" fencing method: this node's registration on the guarded LUNs, the fence (a PREEMPT
of the victim incarnation's key, read back on every LUN) and a read-only audit (issue 11).

Nothing here decides whom to fence (diskhb.core.fencing does: a victim is one incarnation, FD5);
this file carries an order out, blocking, on worker threads off the daemon's tick.

Rules of this file:
- SP1 LUNS: a LUN spec is `iscsi://host[:port]/target-iqn/lun` (libiscsi, as this node's
  initiator name) or an absolute device path (SG_IO). Specs are checked when the method is built
  (a bad one raises ScsiPrConfigError, one line: a configuration error); a transport is made at
  its LUN's first command (make_transport) and kept: after a TransportError it logs in or opens
  afresh at its next command (iscsi I2, sg_io G1). Over iSCSI that new login is a new I_T nexus
  WITHOUT our registration (iscsi I4): the audit says so (SP6), nothing re-registers.
- SP2 BOUNDED (method M1): every LUN is served on its own thread, and every command's timeout is
  min(timeout_ms, what is left before the deadline): a LUN that does not answer fails alone, by
  the deadline, and never eats the others' time. A LUN still busy JOIN_GRACE_MS past the deadline
  is reported "no answer by the deadline" (its thread ends within its command's timeout).
- SP3 REGISTER ("unfence"): REGISTER AND IGNORE EXISTING KEY with our key, then RESERVE Write
  Exclusive - Registrants Only (cdb.FENCE_TYPE) when nobody holds a reservation, then read the
  keys back: ours must be listed. A reservation held by anything but a key of a configured node
  of ours with that type (another type, a foreign key: K5) is reported on one line and never
  overridden. Keys of our own earlier incarnations (same node id, another incarnation: dead, the
  slot claim made this daemon the node's only one) are preempted, so a stale incarnation's nexus
  cannot write and the audit stays clean after a restart. Called only by the daemon's start
  once it joined a quorate membership, and by
  `diskhb unfence`: never by the audit (a node whose key was removed never re-registers
  silently).
- SP4 FENCE: the victim's key is pr_key.key_for(cluster, victim.node_id, victim.generation) (K1).
  On every LUN where it is listed, PREEMPT it (pr R5: tgt refuses PREEMPT AND ABORT, plain
  PREEMPT runs). A PREEMPT removes every registration of the key, all its nexuses (multipath,
  a stale session); two specs reaching one LU find it gone the second time. A PREEMPT answered
  RESERVATION CONFLICT or unanswered (TransportTimeout: outcome unknown, transport T2) proves
  nothing either way: the read-back decides. `ok` only when, read back on every configured LUN,
  the victim's key is absent (fence_scsi's rule) and a reservation is held: without one an
  unregistered nexus still writes, so an unreserved LUN is RESERVEd by us (registered as we
  are) before it counts. A key never listed is already absent: ok, and said so.
- SP5 OWN KEY: a fence needs our own registration: our key missing on a LUN fails that LUN with
  "this node is not registered on LUN X (fenced itself?)", whatever else it shows.
- SP6 AUDIT, READ-ONLY: READ KEYS and READ RESERVATION only, never a registration or a preempt.
  Its findings (the kinds below) name what the core or a person must act on. Our key gone after
  we registered is FENCED (the caller self-fences at once); our key still listed while the
  transport logged in again since we registered is REGISTRATION_LOST: the listing is the old
  nexus' leftover (fence-agents issue 517), reported with "run `diskhb unfence`", never repaired.
- SP7 ONE LINE (method M3): a device, a target or a transport that misbehaves is a failed LUN with
  one line; a LUN is never said fenced or registered unless read back so. Only a caller's bug
  (bad arguments) raises.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping

from diskhb.core.record import record
from diskhb.fencing import pr_key
from diskhb.fencing.method import MethodResult, Victim
from diskhb.fencing.scsi import pr
from diskhb.fencing.scsi.cdb import FENCE_TYPE
from diskhb.fencing.scsi.iscsi import IscsiUrlError, check_initiator_name, parse_url
from diskhb.fencing.scsi.pr_in import Holder, KeyList, ReservationState, generation_advanced
from diskhb.fencing.scsi.sense import SenseKey
from diskhb.fencing.scsi.transport import TIMEOUT_MS_MIN, Transport, TransportError, TransportTimeout, \
    check_timeout

METHOD = "scsi-pr"
LUNS_MAX = 16  # one thread per LUN per call (SP2): a guarded set is a few LUNs, times its paths
JOIN_GRACE_MS = 200  # SP2: a LUN's thread past the deadline by more than this is reported late
ISSUE_517 = "fence-agents issue 517"

# SP6: the kinds of an audit finding
ERROR = "error"  # the LUN did not answer, or answered what we cannot use (no PR support, garbage)
NOT_REGISTERED = "not-registered"  # this method has not registered on the LUN yet: `diskhb unfence`
FENCED = "fenced"  # our key is gone since we registered: preempted (or the target lost its PR state)
REGISTRATION_LOST = "registration-lost"  # a new login since we registered: our nexus is not registered
FOREIGN_KEY = "foreign-key"  # K5: not our cluster's tag, or not a configured node: never preempted
SEVERAL_INCARNATIONS = "several-incarnations"  # one node, keys of two incarnations: one is stale
STALE_INCARNATION = "stale-incarnation"  # a configured node's key that is not the incarnation we know
DUPLICATE_KEY = "duplicate-key"  # one key through several nexuses: paths, or a session left by a re-login
UNRESERVED = "unreserved"  # no reservation: removing a key would not stop anybody's writes
RESERVED_BY_OTHER = "reserved-by-other"  # held with another type, or by a key not of a configured node
GENERATION_MOVED = "generation-moved"  # registrations changed since the last audit (by how many)
FINDING_KINDS = (ERROR, NOT_REGISTERED, FENCED, REGISTRATION_LOST, FOREIGN_KEY, SEVERAL_INCARNATIONS,
                 STALE_INCARNATION, DUPLICATE_KEY, UNRESERVED, RESERVED_BY_OTHER, GENERATION_MOVED)


class ScsiPrConfigError(ValueError):
    """A LUN spec, initiator name or node set we refuse when the method is built: one line."""


# -- LUN specs and transports (SP1) ----------------------------------------------------------------------


@record
class LunSpec:
    kind: str  # "iscsi" or "sg_io"
    name: str  # the URL (normalized: iscsi://host:port/iqn/lun) or the device path


def parse_spec(spec: str) -> LunSpec:
    if not isinstance(spec, str) or not spec:
        raise ScsiPrConfigError(f"a LUN spec is an iscsi:// URL or a device path, got {spec!r}")
    if spec.startswith("iscsi://"):
        try:
            return LunSpec("iscsi", parse_url(spec).url)
        except IscsiUrlError as e:
            raise ScsiPrConfigError(f"LUN {spec!r}: {e}") from None
    if "://" in spec:
        raise ScsiPrConfigError(f"LUN {spec!r}: only iscsi:// URLs and device paths are supported")
    if not spec.startswith("/") or "\0" in spec:
        raise ScsiPrConfigError(f"LUN {spec!r}: a device path must be absolute (/dev/sdX, /dev/sgN, /dev/disk/...)")
    return LunSpec("sg_io", spec)


def make_transport(spec: LunSpec, initiator_name: str | None) -> Transport:
    """The transport of one LUN, not yet connected (both transports connect at their first command)."""
    if spec.kind == "iscsi":
        from diskhb.fencing.scsi.iscsi import IscsiTransport
        if initiator_name is None:
            raise ScsiPrConfigError(f"LUN {spec.name}: iSCSI needs this node's initiator name")
        return IscsiTransport(spec.name, initiator_name)
    from diskhb.fencing.scsi.sg_io import SgIoTransport
    return SgIoTransport(spec.name)


Opener = Callable[[LunSpec, "str | None"], Transport]


def _logins(t: Transport) -> int | None:
    """iscsi I4: the transport's login count (None: a local device keeps the host's one nexus)."""
    n = getattr(t, "logins", None)
    return n if isinstance(n, int) and not isinstance(n, bool) else None


class _Lun:
    """One configured LUN: its transport (made at first use) and what we know of our registration."""

    def __init__(self, spec: LunSpec):
        self.spec = spec
        self.name = spec.name
        self.transport: Transport | None = None
        self.registered = False  # a REGISTER of ours was answered GOOD on this LUN
        self.registered_logins: int | None = None  # logins() right after it
        self.logins_base = 0  # logins of the transports closed before this one: a new one counts from 0
        self.last_generation: int | None = None  # PR generation at the last audit
        self.lock = threading.Lock()  # guards making the transport

    def logins(self, t: Transport) -> int | None:
        """iscsi I4: every login of this LUN's transports so far (None: a local device keeps the host's
        one nexus, K4)."""
        n = _logins(t)
        return None if n is None else self.logins_base + n


# -- results ----------------------------------------------------------------------------------------------


@record
class LunResult:
    """One LUN's part of a register() or fence(): ok only when read back so (SP7)."""

    lun: str
    ok: bool
    detail: str  # one line
    receipt: str = ""  # "url: keys [0x..., ...] gen N, reserved WE-RO by 0x..." as read back, or ""


@record
class RegisterResult:
    own_key: int
    luns: tuple[LunResult, ...]

    @property
    def ok(self) -> bool:
        return bool(self.luns) and all(r.ok for r in self.luns)

    @property
    def detail(self) -> str:
        bad = [r.detail for r in self.luns if not r.ok]
        if not bad:
            return f"registered 0x{self.own_key:016x} on {len(self.luns)} LUN(s)"
        return f"not registered on {len(bad)} of {len(self.luns)} LUN(s): " + "; ".join(bad)


@record
class Finding:
    kind: str  # one of the kinds above (SP6)
    detail: str  # one line, naming the LUN


@record
class LunAudit:
    lun: str
    reachable: bool  # the device answered (an error answer counts: see error)
    error: str  # one line, "" when keys and reservation were read
    generation: int | None  # PRGENERATION
    generation_moved: int | None  # since the previous audit (None: no previous one)
    keys: tuple[int, ...]  # as READ KEYS listed them, one per registration (nexus)
    described: tuple[str, ...]  # the same, through pr_key.describe
    reservation: Holder | None
    reservation_text: str  # "none", or "WE-RO by 0x... (node 1, incarnation ...)"
    findings: tuple[Finding, ...]

    def as_json(self) -> dict:
        return {"lun": self.lun, "reachable": self.reachable, "error": self.error or None,
                "generation": self.generation, "generation_moved": self.generation_moved,
                "keys": list(self.described),
                "reservation": None if self.reservation is None else
                {"key": f"0x{self.reservation.key:016x}", "type": self.reservation.pr_type.short,
                 "text": self.reservation_text},
                "findings": [{"kind": f.kind, "detail": f.detail} for f in self.findings]}


@record
class AuditReport:
    own_key: int
    luns: tuple[LunAudit, ...]

    @property
    def findings(self) -> tuple[Finding, ...]:
        return tuple(f for lun in self.luns for f in lun.findings)

    def has(self, kind: str) -> bool:
        return any(f.kind == kind for f in self.findings)

    @property
    def fenced(self) -> bool:
        """SP6: our key is gone from a LUN we registered on: the caller self-fences at once."""
        return self.has(FENCED)

    @property
    def registration_lost(self) -> bool:
        return self.has(REGISTRATION_LOST)

    def as_json(self) -> dict:
        return {"method": METHOD, "own_key": f"0x{self.own_key:016x}", "fenced": self.fenced,
                "registration_lost": self.registration_lost, "luns": [lun.as_json() for lun in self.luns]}


# -- the method -------------------------------------------------------------------------------------------


class ScsiPrMethod:
    name = METHOD

    def __init__(self, cluster: str, node_id: int, generation: int, node_ids, luns: list[str], *,
                 initiator_name: str | None = None, timeout_ms: int = 5_000, opener: Opener = make_transport):
        self.cluster = cluster
        self.node_id = node_id
        self.generation = generation
        self.own_key = pr_key.key_for(cluster, node_id, generation)  # raises PrKeyError (ValueError)
        self.node_ids = frozenset(node_ids)
        if node_id not in self.node_ids:
            raise ScsiPrConfigError(f"node {node_id} is not among the configured nodes {sorted(self.node_ids)}")
        if isinstance(luns, str) or not luns:
            raise ScsiPrConfigError("scsi-pr needs a list of at least one LUN")
        if len(luns) > LUNS_MAX:
            raise ScsiPrConfigError(f"{len(luns)} LUNs, more than {LUNS_MAX}")
        specs = [parse_spec(s) for s in luns]
        seen: set[str] = set()
        for s in specs:
            if s.name in seen:
                raise ScsiPrConfigError(f"LUN {s.name} is listed twice")
            seen.add(s.name)
        if initiator_name is not None:
            try:
                check_initiator_name(initiator_name)
            except IscsiUrlError as e:
                raise ScsiPrConfigError(str(e)) from None
        elif any(s.kind == "iscsi" for s in specs):
            raise ScsiPrConfigError("iSCSI LUNs need this node's initiator name")
        check_timeout(METHOD, timeout_ms)
        self.initiator_name = initiator_name
        self.timeout_ms = timeout_ms
        self._opener = opener
        self._luns = [_Lun(s) for s in specs]

    @property
    def luns(self) -> tuple[str, ...]:
        return tuple(lun.name for lun in self._luns)

    # -- plumbing --

    def _transport(self, lun: _Lun) -> Transport:
        with lun.lock:
            if lun.transport is None:
                try:
                    lun.transport = self._opener(lun.spec, self.initiator_name)
                except TransportError:
                    raise
                except (OSError, ValueError) as e:
                    raise TransportError(f"{lun.name}: cannot set up the transport: {e}") from None
            return lun.transport

    def _ms(self, deadline: float) -> int:
        """SP2: this command's timeout, or TransportTimeout when the deadline leaves too little."""
        left = int((deadline - time.monotonic()) * 1000)
        if left < TIMEOUT_MS_MIN:
            raise TransportTimeout("out of time before the deadline")
        return min(self.timeout_ms, left)

    def _each_lun(self, what: str, work: Callable, deadline: float, failed: Callable) -> list:
        """SP2: work(lun, deadline) on one thread per LUN; failed(lun, line, answered) for a LUN
        that raised or is late (answered: the device did answer, with an error or garbage)."""
        out: list = [None] * len(self._luns)

        def run(i: int, lun: _Lun) -> None:
            try:
                out[i] = work(lun, deadline)
            except (TransportError, pr.PrError) as e:
                out[i] = failed(lun, _line(lun, e), isinstance(e, pr.PrError))
            except Exception as e:  # noqa: BLE001 - M3: reported as a failed LUN, never lost
                out[i] = failed(lun, f"{lun.name}: internal error: {e!r}", False)

        threads = [threading.Thread(target=run, args=(i, lun), name=f"diskhb-scsi-pr-{what}", daemon=True)
                   for i, lun in enumerate(self._luns)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(max(0.0, deadline + JOIN_GRACE_MS / 1000 - time.monotonic()))
        return [r if r is not None else failed(lun, f"{lun.name}: no answer by the deadline", False)
                for r, lun in zip(out, self._luns)]

    def _who(self, key: int) -> str:
        text = pr_key.describe(key, self.cluster)
        if not text.endswith("(foreign)") and pr_key.node_of(key, self.cluster, self.node_ids) is None:
            text += " (not a configured node)"
        return text

    def _holder_text(self, holder: Holder | None) -> str:
        if holder is None:
            return "none"
        if holder.key == 0:
            return f"{holder.pr_type.short} (all registrants)"
        return f"{holder.pr_type.short} by {self._who(holder.key)}"

    def _reservation_problem(self, holder: Holder | None) -> str | None:
        """SP3: None when a configured node of ours holds the fencing type, else why not."""
        if holder is None:
            return "not reserved"
        if holder.pr_type == FENCE_TYPE and holder.key and \
                pr_key.node_of(holder.key, self.cluster, self.node_ids) is not None:
            return None
        return f"reserved {self._holder_text(holder)}: not overridden"

    def _lost(self, lun: _Lun, t: Transport) -> bool:
        """SP6: the transport logged in again since our REGISTER (a nexus without our registration)."""
        n = lun.logins(t)
        return lun.registered and lun.registered_logins is not None and n is not None and n != lun.registered_logins

    def _receipt(self, lun: _Lun, keys: KeyList, res: ReservationState | None) -> str:
        out = f"{lun.name}: keys [{', '.join(f'0x{k:016x}' for k in keys.keys)}] gen {keys.generation}"
        if res is not None:
            out += ", not reserved" if res.holder is None else \
                f", reserved {res.holder.pr_type.short} by 0x{res.holder.key:016x}"
        return out

    def _lost_line(self, lun: _Lun) -> str:
        return f"this node's registration on LUN {lun.name} was lost after a reconnect ({ISSUE_517}): " \
               f"run `diskhb unfence`"

    # -- register (SP3) --

    def register(self, deadline: float, *, missing_only: bool = False) -> RegisterResult:
        """Unfence: register our key on every LUN and reserve the unreserved ones (SP3).
        missing_only: skip the LUNs this incarnation registered on already (a retry after a
        partial failure must not register again where a fencer may have removed us since)."""
        def work(lun: _Lun, d: float) -> LunResult:
            if missing_only and lun.registered:
                return LunResult(lun.name, True, f"{lun.name}: registered earlier")
            return self._register_lun(lun, d)

        results = self._each_lun("register", work, deadline,
                                 lambda lun, line, _answered: LunResult(lun.name, False, line))
        return RegisterResult(self.own_key, tuple(results))

    def _register_lun(self, lun: _Lun, deadline: float) -> LunResult:
        t = self._transport(lun)
        try:
            pr.register_and_ignore(t, self.own_key, self._ms(deadline))
        except pr.PrConflict as e:  # a device that refuses PR OUT to a non-holder: say who holds it
            return LunResult(lun.name, False, f"{_line(lun, e)}{self._held_by(t, deadline)}")
        logins = lun.logins(t)
        lun.registered, lun.registered_logins = True, logins
        stale = sorted({k for k in pr.read_keys(t, self._ms(deadline)).keys if k != self.own_key
                        and pr_key.node_of(k, self.cluster, self.node_ids) == self.node_id})
        for k in stale:  # SP3: our earlier incarnations are dead (the slot claim made us the only one)
            pr.preempt_victim(t, self.own_key, k, self._ms(deadline))
        res = pr.read_reservation(t, self._ms(deadline))
        reserved = ""
        if res.holder is None:
            try:
                pr.reserve(t, self.own_key, self._ms(deadline))
                reserved = f", reserved {FENCE_TYPE.short}"
            except pr.PrConflict:  # another node (or path) of ours reserved it meanwhile: judged below
                pass
            res = pr.read_reservation(t, self._ms(deadline))
        keys = pr.read_keys(t, self._ms(deadline))
        receipt = self._receipt(lun, keys, res)
        if self.own_key not in keys.keys:
            return LunResult(lun.name, False, f"{lun.name}: key 0x{self.own_key:016x} not listed after "
                                              f"REGISTER AND IGNORE EXISTING KEY", receipt)
        if lun.logins(t) != logins:
            return LunResult(lun.name, False, f"{lun.name}: the session was re-established during registration "
                                              f"({ISSUE_517}): run `diskhb unfence` again", receipt)
        problem = self._reservation_problem(res.holder)
        if problem is not None:
            return LunResult(lun.name, False, f"{lun.name}: registered, but {problem}", receipt)
        return LunResult(lun.name, True, f"{lun.name}: registered{reserved}", receipt)

    def _held_by(self, t: Transport, deadline: float) -> str:
        try:
            holder = pr.read_reservation(t, self._ms(deadline)).holder
        except (TransportError, pr.PrError):
            return ""
        return "" if holder is None else f" (reserved {self._holder_text(holder)})"

    # -- fence (SP4, SP5) --

    def fence(self, victim: Victim, deadline: float) -> MethodResult:
        if victim.node_id == self.node_id:
            raise ValueError(f"{METHOD}: node {self.node_id} cannot fence itself")
        if victim.node_id not in self.node_ids:  # K5: only a configured node's key is ours to preempt
            raise ValueError(f"{METHOD}: node {victim.node_id} is not a configured node")
        victim_key = pr_key.key_for(self.cluster, victim.node_id, victim.generation)
        results = self._each_lun("fence", lambda lun, d: self._fence_lun(lun, victim_key, d), deadline,
                                 lambda lun, line, _answered: LunResult(lun.name, False, line))
        receipt = "; ".join(r.receipt for r in results if r.receipt)
        who = f"node {victim.node_id} ({victim.name}) key 0x{victim_key:016x}"
        bad = [r.detail for r in results if not r.ok]
        if bad:
            return MethodResult(False, False, f"{who} not verified fenced on {len(bad)} of {len(results)} LUN(s): "
                                + "; ".join(bad), receipt)
        notes = "; ".join(r.detail for r in results)
        return MethodResult(True, False, f"{who} absent from all {len(results)} LUN(s): {notes}", receipt)

    def _fence_lun(self, lun: _Lun, victim_key: int, deadline: float) -> LunResult:
        t = self._transport(lun)
        before = pr.read_keys(t, self._ms(deadline))
        if self.own_key not in before.keys:  # SP5: a PREEMPT from us would be a RESERVATION CONFLICT
            return LunResult(lun.name, False, f"this node is not registered on LUN {lun.name} (fenced itself?)",
                             self._receipt(lun, before, None))
        if victim_key in before.keys:
            n = before.count(victim_key)
            try:
                done = pr.preempt_victim(t, self.own_key, victim_key, self._ms(deadline))
                how = f"{done.action} removed {n} registration(s)"
            except pr.PrConflict:  # SP4: someone removed it first, or our nexus is not registered
                how = "PREEMPT answered RESERVATION CONFLICT"
            except TransportError as e:  # T2: it may have run: only the read-back tells
                how = f"PREEMPT got no answer ({_strip(lun, e)})"
        else:
            how = "already absent"
        after = pr.read_keys(t, self._ms(deadline))
        res = pr.read_reservation(t, self._ms(deadline))
        if victim_key in after.keys:
            if self._lost(lun, t):
                line = self._lost_line(lun)
            elif self.own_key not in after.keys:
                line = f"this node is not registered on LUN {lun.name} (fenced itself?)"
            else:
                line = f"{lun.name}: victim key still registered {after.count(victim_key)} time(s) after: {how}"
            return LunResult(lun.name, False, line, self._receipt(lun, after, res))
        if self.own_key not in after.keys:  # SP5: preempted while we fenced
            return LunResult(lun.name, False, f"this node is not registered on LUN {lun.name} (fenced itself?)",
                             self._receipt(lun, after, res))
        if res.holder is None:  # SP4: nobody reserved: the unregistered victim could still write
            try:
                pr.reserve(t, self.own_key, self._ms(deadline))
            except (TransportError, pr.PrError) as e:
                return LunResult(lun.name, False, f"{lun.name}: victim key absent, but the LUN is not reserved "
                                                  f"(unregistered initiators still write) and RESERVE failed: "
                                                  f"{_strip(lun, e)}", self._receipt(lun, after, res))
            res = pr.read_reservation(t, self._ms(deadline))
            if res.holder is None:
                return LunResult(lun.name, False, f"{lun.name}: victim key absent, but the LUN stays unreserved "
                                                  f"after a RESERVE", self._receipt(lun, after, res))
            how += f", then reserved {res.holder.pr_type.short}"
        if self._lost(lun, t):  # verified all the same; the next fence here would fail (SP6)
            how += f"; {self._lost_line(lun)}"
        return LunResult(lun.name, True, f"{lun.name}: {how}", self._receipt(lun, after, res))

    # -- audit (SP6) --

    def audit(self, deadline: float, known: Mapping[int, int] | None = None) -> AuditReport:
        """What is registered on every LUN, read only. known: {node id: current generation} as the
        caller knows it from heartbeats (optional; our own is always known)."""
        expected = dict(known or {})
        expected[self.node_id] = self.generation
        results = self._each_lun("audit", lambda lun, d: self._audit_lun(lun, d, expected), deadline,
                                 _unreadable)
        return AuditReport(self.own_key, tuple(results))

    def _audit_lun(self, lun: _Lun, deadline: float, expected: Mapping[int, int]) -> LunAudit:
        t = self._transport(lun)
        keys = pr.read_keys(t, self._ms(deadline))
        res = pr.read_reservation(t, self._ms(deadline))
        found: list[Finding] = []
        add = found.append
        name = lun.name

        if not lun.registered:
            add(Finding(NOT_REGISTERED, f"this node has not registered on LUN {name}: run `diskhb unfence`"))
        elif self.own_key not in keys.keys:
            add(Finding(FENCED, f"this node's key 0x{self.own_key:016x} is gone from LUN {name}: fenced "
                                f"(or the target lost its reservations)"))
        elif self._lost(lun, t):
            add(Finding(REGISTRATION_LOST, f"{name}: registration lost after a reconnect ({ISSUE_517}): "
                                           f"run `diskhb unfence`"))

        by_node: dict[int, list[int]] = defaultdict(list)
        for key in dict.fromkeys(keys.keys):  # distinct, in the device's order
            node = pr_key.node_of(key, self.cluster, self.node_ids)
            if node is None:
                add(Finding(FOREIGN_KEY, f"{name}: foreign key {self._who(key)} registered: reported, never "
                                         f"preempted"))
                continue
            by_node[node].append(key)
            if node in expected and key != pr_key.key_for(self.cluster, node, expected[node]):
                whose = "an earlier incarnation of this node" if node == self.node_id else \
                    f"not node {node}'s current incarnation {expected[node] & 0xFFFF_FFFF:08x}"
                add(Finding(STALE_INCARNATION, f"{name}: key {self._who(key)} is {whose}"))
        for node, ks in sorted(by_node.items()):
            if len(ks) > 1:
                add(Finding(SEVERAL_INCARNATIONS, f"{name}: node {node} has keys of {len(ks)} incarnations "
                                                  f"registered ({', '.join(f'0x{k:016x}' for k in ks)}): a stale "
                                                  f"incarnation"))
        for key, n in keys.duplicates().items():
            add(Finding(DUPLICATE_KEY, f"{name}: key {self._who(key)} registered through {n} nexuses (paths, "
                                       f"or a session left behind by a re-login)"))

        if res.holder is None:
            add(Finding(UNRESERVED, f"{name}: not reserved: removing a key would not stop anybody's writes"))
        else:
            problem = self._reservation_problem(res.holder)
            if problem is not None:
                add(Finding(RESERVED_BY_OTHER, f"{name}: {problem}"))

        moved = None
        if lun.last_generation is not None:
            moved = generation_advanced(lun.last_generation, keys.generation)
            if moved:
                add(Finding(GENERATION_MOVED, f"{name}: PR generation moved by {moved} since the last audit "
                                              f"(registrations changed)"))
        lun.last_generation = keys.generation
        return LunAudit(name, True, "", keys.generation, moved, keys.keys,
                        tuple(pr_key.describe(k, self.cluster) for k in keys.keys), res.holder,
                        self._holder_text(res.holder), tuple(found))

    def close(self) -> None:
        for lun in self._luns:
            with lun.lock:
                t, lun.transport = lun.transport, None
                if t is not None:
                    lun.logins_base += _logins(t) or 0  # a later transport's logins count on from here
            if t is not None:
                try:
                    t.close()
                except (TransportError, OSError):
                    pass  # closing is best effort: the session goes with the context anyway


# -- one-line errors (SP7) ---------------------------------------------------------------------------------


def _strip(lun: _Lun, e: Exception) -> str:
    """The message without the leading LUN name, for a line that names it already."""
    msg = str(e)
    return msg[len(lun.name) + 2:] if msg.startswith(lun.name + ": ") else msg


def _line(lun: _Lun, e: Exception) -> str:
    if isinstance(e, pr.PrRejected) and e.sense is not None and e.sense.key == SenseKey.ILLEGAL_REQUEST \
            and (e.sense.asc, e.sense.ascq) == (0x20, 0x00):
        return f"{lun.name}: no SCSI persistent reservation support ({_strip(lun, e)})"
    return f"{lun.name}: {_strip(lun, e)}"


def _unreadable(lun: _Lun, line: str, answered: bool) -> LunAudit:
    return LunAudit(lun.name, answered, line, None, None, (), (), None, "unknown", (Finding(ERROR, line),))
