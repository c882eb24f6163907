"""diskhb.fencing.keeper, rule by rule (PK1-PK5), with a scripted method standing in for the LUNs
(the real ScsiPrMethod against tgt is tests/fencing/test_daemon_scsi_pr.py's)."""

import threading
import time

from diskhb.core.node import IoFenced
from diskhb.fencing import scsi_pr as sp
from diskhb.fencing.keeper import PrKeeper

LUNS = ("iscsi://127.0.0.1:3260/iqn.x:a/1", "iscsi://127.0.0.1:3260/iqn.x:b/1")
INTERVAL = 1000


def lun_audit(lun, *findings):
    return sp.LunAudit(lun, True, "", 5, None, (), (), None, "none", tuple(sp.Finding(k, f"{lun}: {k}")
                                                                            for k in findings))


class Luns:
    """What register() and audit() answer, in order; every call recorded."""

    def __init__(self):
        self.own_key = 0x1234
        self.luns = LUNS
        self.registers: list[bool] = []  # missing_only of each call
        self.audits = 0
        self.register_answers = [sp.RegisterResult(self.own_key, tuple(sp.LunResult(x, True, f"{x}: registered")
                                                                       for x in LUNS))]
        self.audit_findings: list[tuple] = [()]

    def register(self, deadline, missing_only=False):
        self.registers.append(missing_only)
        return self.register_answers.pop(0) if len(self.register_answers) > 1 else self.register_answers[0]

    def audit(self, deadline, known=None):
        self.audits += 1
        kinds = self.audit_findings.pop(0) if len(self.audit_findings) > 1 else self.audit_findings[0]
        return sp.AuditReport(self.own_key, (lun_audit(LUNS[0], *kinds), lun_audit(LUNS[1])))


def keeper(luns):
    return PrKeeper(luns, audit_interval_ms=INTERVAL, timeout_ms=500, notify=threading.Event())


def settle(k, now, **kw):
    """tick() until the thread it started has reported (PK5: tick never waits)."""
    args = {"running": True, "quorate": True, "known": dict} | kw
    out = k.tick(now, **args)
    deadline = time.monotonic() + 5
    while k._busy and time.monotonic() < deadline:
        time.sleep(0.005)
    return out + k.tick(now, **{**args, "running": False})  # collects; starts nothing


def test_pk1_registers_only_once_quorate():
    luns = Luns()
    k = keeper(luns)
    assert settle(k, 0, quorate=False) == [] and luns.registers == []
    settle(k, 10)
    assert luns.registers == [False] and k.registered and k.status()["registered"]


def test_pk1_a_partial_failure_is_retried_on_the_missing_luns_only():
    luns = Luns()
    bad = sp.RegisterResult(luns.own_key, (sp.LunResult(LUNS[0], True, "ok"), sp.LunResult(LUNS[1], False, "down")))
    good = luns.register_answers[0]
    luns.register_answers = [bad, good]
    k = keeper(luns)
    settle(k, 0)
    assert not k.registered and luns.registers == [False]
    settle(k, INTERVAL - 1)  # not due yet
    assert luns.registers == [False]
    settle(k, INTERVAL)
    assert luns.registers == [False, True] and k.registered  # PK1: missing_only


def test_pk2_our_key_gone_fences_us_once_and_unfence_is_refused():
    luns = Luns()
    luns.audit_findings = [(), (sp.FENCED,)]
    k = keeper(luns)
    settle(k, 0)
    assert settle(k, INTERVAL) == [] and luns.audits == 1
    out = settle(k, 2 * INTERVAL)
    assert [type(o) for o in out] == [IoFenced] and "our reservation key was removed" in out[0].detail
    assert settle(k, 3 * INTERVAL) == []  # once
    assert luns.registers == [False]  # PK2: never registered again by itself
    got = []
    k.unfence(running=True, quorate=True, answer=got.append)
    assert got[0]["ok"] is False and "restart the daemon" in got[0]["error"]


def test_pk2_a_lost_registration_is_reported_and_waits_for_unfence():
    luns = Luns()
    luns.audit_findings = [(sp.REGISTRATION_LOST,)]
    k = keeper(luns)
    settle(k, 0)
    assert settle(k, INTERVAL) == [] and luns.registers == [False]
    assert k.status()["audit"]["luns"][0]["findings"][0]["kind"] == sp.REGISTRATION_LOST
    got = []
    k.unfence(running=True, quorate=True, answer=got.append)
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.005)
    assert got[0]["ok"] and luns.registers == [False, False]  # PK4: every LUN, not missing_only


def test_pk4_unfence_is_refused_without_quorum_or_while_not_running():
    k = keeper(Luns())
    got = []
    k.unfence(running=True, quorate=False, answer=got.append)
    k.unfence(running=False, quorate=True, answer=got.append)
    assert [g["ok"] for g in got] == [False, False]
    assert "not quorate" in got[0]["error"] and "not running normally" in got[1]["error"]


def test_pk3_one_audit_at_a_time_and_only_when_due():
    luns = Luns()
    k = keeper(luns)
    settle(k, 0)
    for now in (INTERVAL, INTERVAL + 1, INTERVAL + 999):
        settle(k, now)
    assert luns.audits == 1
