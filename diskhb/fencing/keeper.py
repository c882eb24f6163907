"""This node's persistent reservation over the daemon's life: registered once quorate, audited every
few seconds, never registered again silently (issue 11). Driven from the daemon's tick, whose only
work here is to start a thread and collect its result.

Rules of this file:
- PK1 FIRST REGISTRATION: this incarnation registers (scsi_pr SP3) at the first tick that finds it
  RUNNING and quorate: a node restarted into a minority stays unregistered, so it cannot write
  the LUNs (rather no service than a write it is not entitled to). LUNs where that failed (a
  target down) are tried again, those only (`missing_only`), every audit interval while quorate.
- PK2 NEVER AGAIN SILENTLY: once registered on a LUN, the daemon never registers there again by
  itself. The audit finding our key gone with no re-login of ours (scsi_pr FENCED) is a fencer's
  preempt: an IoFenced goes to the core at once (self_fence SF7). Our registration lost by a
  re-login (REGISTRATION_LOST, fence-agents issue 517) is logged and shown, and waits for
  `diskhb unfence`: the LUN refuses our writes meanwhile, which is safe.
- PK3 AUDIT: every audit_interval_ms, one at a time, bounded by timeout_ms, with the generations
  the core knows (a configured node's key of another incarnation is stale). A finding is logged
  when it appears and when it clears (not at every audit; INFO_FINDINGS at info, being no fault), counted once per appearance in
  diskhb_pr_audit_findings_total{kind}; the last report is in status (`scsi_pr`).
- PK4 UNFENCE: `diskhb unfence` registers again on every LUN (REGISTER AND IGNORE EXISTING KEY is
  idempotent), only while RUNNING and quorate and never once an audit found us FENCED: a node
  whose key a fencer removed has fenced itself, and only a restart rejoins (PK1 again).
- PK5 OFF THE TICK: tick() and unfence() start at most one thread each and never wait; results
  are taken at the next tick.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from diskhb import metrics as m
from diskhb.core.node import IoFenced
from diskhb.fencing import scsi_pr as sp

log = logging.getLogger("diskhb.fence")

# PK3: findings that are no fault: the PR generation moving (a registration came or went), and one
# key through several nexuses (multipath: every path of a host registers the host's key)
INFO_FINDINGS = (sp.GENERATION_MOVED, sp.DUPLICATE_KEY)


class PrKeeper:
    def __init__(self, method: sp.ScsiPrMethod, *, audit_interval_ms: int, timeout_ms: int,
                 notify: threading.Event):
        self.method = method
        self.audit_interval_ms = audit_interval_ms
        self.timeout_ms = timeout_ms
        self.notify = notify
        self._lock = threading.Lock()
        self._busy = False  # PK5: one register or audit thread at a time
        self._results: list = []  # (kind, result) from the thread
        self.registered = False  # PK1: every LUN registered by this incarnation at least once
        self.register_tried = False
        self.next_ms = 0  # the next audit or registration retry (our monotonic clock)
        self.fenced = ""  # PK2, PK4: why we were found preempted ("" not)
        self.last_register: sp.RegisterResult | None = None
        self.last_audit: sp.AuditReport | None = None
        self._shown: set[tuple[str, str]] = set()  # PK3: findings logged already (kind, detail)
        for kind in sp.FINDING_KINDS:
            m.PR_AUDIT_FINDINGS.labels(kind)

    def tick(self, now_ms: int, *, running: bool, quorate: bool, known: Callable[[], dict[int, int]]) -> list:
        """Observations for the core (IoFenced), from what finished since the last tick; starts the
        next registration or audit when due."""
        out: list = []
        with self._lock:
            results, self._results = self._results, []
        for kind, result in results:
            out.extend(self._take(kind, result))
        if not running or now_ms < self.next_ms:
            return out
        if not self.registered:
            if quorate:  # PK1
                self._start("register", lambda d: self.method.register(d, missing_only=self.register_tried),
                            now_ms)
        else:
            generations = known()
            self._start("audit", lambda d: self.method.audit(d, generations), now_ms)  # PK3
        return out

    def unfence(self, *, running: bool, quorate: bool, answer: Callable[[dict], None]) -> None:
        """PK4: `diskhb unfence`; answer() is called once, from the thread or at once."""
        def refuse(text: str) -> None:
            answer({"ok": False, "exit": 1, "error": text})

        if not running:
            return refuse("this daemon is not running normally (starting, stopping or self-fenced): restart it"
                          " to rejoin, which registers again once quorate")
        if self.fenced:
            return refuse(f"this incarnation was fenced ({self.fenced}); restart the daemon to rejoin")
        if not quorate:
            return refuse("this node is not quorate: a minority must not register on the shared LUNs")

        def go() -> None:
            try:
                result = self.method.register(time.monotonic() + self.timeout_ms / 1000)
            except Exception as e:  # noqa: BLE001 - answered, never lost
                answer({"ok": False, "exit": 1, "error": f"internal error: {e!r}"})
                return
            with self._lock:
                self._results.append(("unfence", result))
            self.notify.set()
            lines = [r.detail for r in result.luns]
            if result.ok:
                answer({"ok": True, "luns": lines})
            else:
                answer({"ok": False, "exit": 1, "error": result.detail, "luns": lines})

        threading.Thread(target=go, name="diskhb-unfence", daemon=True).start()

    def _start(self, kind: str, work: Callable, now_ms: int) -> None:
        with self._lock:
            if self._busy:
                return
            self._busy = True
        self.next_ms = now_ms + self.audit_interval_ms

        def go() -> None:
            try:
                result = work(time.monotonic() + self.timeout_ms / 1000)
            except Exception as e:  # noqa: BLE001 - a bug: logged, tried again at the next interval
                log.exception("scsi-pr %s: internal error", kind)
                result = e
            with self._lock:
                self._busy = False
                self._results.append((kind, result))
            self.notify.set()

        threading.Thread(target=go, name=f"diskhb-pr-{kind}", daemon=True).start()

    def _take(self, kind: str, result) -> list:
        if isinstance(result, Exception):
            return []
        if kind in ("register", "unfence"):
            self.last_register = result
            self.register_tried = True
            for r in result.luns:
                m.PR_REGISTERED.labels(r.lun).set(1 if r.ok else 0)
            if result.ok:
                if not self.registered or kind == "unfence":
                    log.info("scsi-pr: %s (%s)", result.detail, "; ".join(r.detail for r in result.luns))
                self.registered = True
            else:
                log.error("scsi-pr: %s%s", result.detail, "" if kind == "unfence" else
                          f"; trying those LUNs again in {self.audit_interval_ms} ms")
            return []
        report: sp.AuditReport = result
        self.last_audit = report
        m.PR_AUDITS.inc()
        now = {(f.kind, f.detail) for f in report.findings}
        for f in report.findings:
            if (f.kind, f.detail) not in self._shown:
                m.PR_AUDIT_FINDINGS.labels(f.kind).inc()
                level = logging.CRITICAL if f.kind == sp.FENCED else \
                    logging.INFO if f.kind in INFO_FINDINGS else logging.ERROR
                log.log(level, "scsi-pr audit: %s: %s", f.kind, f.detail)
        for kind_, detail in self._shown - now:
            if kind_ != sp.GENERATION_MOVED:
                log.info("scsi-pr audit: cleared: %s: %s", kind_, detail)
        self._shown = {k for k in now if k[0] != sp.GENERATION_MOVED}  # each move is news
        for lun in report.luns:
            if lun.reachable and not lun.error:  # an unreachable LUN says nothing new of our key
                lost = any(f.kind in (sp.FENCED, sp.REGISTRATION_LOST, sp.NOT_REGISTERED) for f in lun.findings)
                m.PR_REGISTERED.labels(lun.lun).set(0 if lost else 1)
        if report.fenced and not self.fenced:  # PK2
            self.fenced = "; ".join(f.detail for f in report.findings if f.kind == sp.FENCED)
            return [IoFenced(f"our reservation key was removed: {self.fenced}")]
        return []

    def status(self) -> dict:
        return {"own_key": f"0x{self.method.own_key:016x}", "luns": list(self.method.luns),
                "registered": self.registered, "fenced": self.fenced or None,
                "register": None if self.last_register is None else
                {"ok": self.last_register.ok, "detail": self.last_register.detail},
                "audit": None if self.last_audit is None else self.last_audit.as_json()}

    def close(self) -> None:
        pass  # the method is closed by the fence runner or the daemon, once
