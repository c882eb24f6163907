"""The scsi-pr fencing method (diskhb.fencing.scsi_pr): registration, fence and audit against tgt on
127.0.0.1 (two LUNs, a victim with its own sessions, a LUN nobody answers for, a second portal
reaching the same LU), then the edges tgt cannot show over a fake PR device: no PR support,
timeouts with and without effect, a LUN that hangs past the deadline, bad configuration."""

import json
import struct
import threading
import time

import pytest

from diskhb.fencing import pr_key
from diskhb.fencing import scsi_pr as S
from diskhb.fencing.method import Victim
from diskhb.fencing.scsi import pr
from diskhb.fencing.scsi.cdb import FENCE_TYPE, PrIn, PrOut, PrType
from diskhb.fencing.scsi.transport import ScsiResult, TransportError, TransportTimeout, TransportUnavailable
from tools.tgt import _free_port

CLUSTER = "prm"
IQN_BASE = "iqn.2024-01.org.diskhb.test"  # the fixtures' initiators are IQN_BASE:node<N> (tests/fencing/conftest.py)
NODES = {1, 2, 3}
GEN1, GEN2, GEN2_NEW, GEN3 = 0x0101_0101_aaaa_0001, 0x0202_0202_bbbb_0002, 0x0202_0202_bbbb_0003, 0x0303_cccc_0003
K1, K2, K2_NEW, K3 = (pr_key.key_for(CLUSTER, n, g) for n, g in ((1, GEN1), (2, GEN2), (2, GEN2_NEW), (3, GEN3)))
FOREIGN = 0x0BAD_C0DE
T = 3000  # ms per command: generous for a loaded 2-core machine, still bounded
BUDGET_S = 4.0  # each call's deadline
VICTIM = Victim(2, "node2", GEN2)


def soon() -> float:
    return time.monotonic() + BUDGET_S


@pytest.fixture
def methods():
    made = []

    def make(urls, node_id=1, generation=GEN1, initiator=None, **kw):
        # never `from conftest import`: tests/ and tests/fencing/ both have one, and pytest imports
        # both as "conftest" (the full suite then finds the other one's names missing)
        m = S.ScsiPrMethod(CLUSTER, node_id, generation, NODES, urls,
                           initiator_name=initiator or f"{IQN_BASE}:node{node_id}", timeout_ms=T, **kw)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()


def own(m, i=0):
    """The method's own session on its i-th LUN: this node's registered nexus."""
    return m._luns[i].transport


def writes(t) -> bool:
    try:
        pr.write_blocks(t, 0, b"w" * 512, T)
        return True
    except pr.PrConflict:
        return False


def kinds(report):
    return sorted({f.kind for f in report.findings})


# -- against tgt --------------------------------------------------------------------------------------------


def test_register_on_two_luns(lun, lun2, methods):
    m = methods([lun.url, lun2.url])
    r = m.register(soon())
    assert r.ok, r.detail
    assert [x.detail for x in r.luns] == [f"{u}: registered, reserved WE-RO" for u in (lun.url, lun2.url)]
    for lu, x in zip((lun, lun2), r.luns):
        keys = pr.read_keys(lu.node("observer"), T)
        assert keys.keys == (K1,)
        holder = pr.read_reservation(lu.node("observer"), T).holder
        assert (holder.key, holder.pr_type) == (K1, FENCE_TYPE)
        assert x.receipt == f"{lu.url}: keys [0x{K1:016x}] gen {keys.generation}, reserved WE-RO by 0x{K1:016x}"
    a = m.audit(soon())
    assert a.findings == () and not a.fenced and [x.keys for x in a.luns] == [(K1,), (K1,)]
    json.dumps(a.as_json())
    # unfence again (`diskhb unfence`): idempotent, the reservation is ours already
    again = m.register(soon())
    assert again.ok and again.luns[0].detail == f"{lun.url}: registered"
    assert pr.read_keys(own(m), T).keys == (K1,)


def test_fence_a_victim_on_two_luns(lun, lun2, methods):
    victims = [lun.node(2), lun2.node(2)]
    for v in victims:
        pr.register_and_ignore(v, K2, T)
    m = methods([lun.url, lun2.url])
    assert m.register(soon()).ok
    assert all(writes(v) for v in victims)  # registrants only: the victim writes until fenced
    r = m.fence(VICTIM, soon())
    assert r.ok and not r.pending, r.detail
    assert r.detail == (f"node 2 (node2) key 0x{K2:016x} absent from all 2 LUN(s): {lun.url}: preempt removed 1 "
                        f"registration(s); {lun2.url}: preempt removed 1 registration(s)")
    for lu in (lun, lun2):
        assert f"{lu.url}: keys [0x{K1:016x}] gen " in r.receipt
    assert f"0x{K2:016x}" not in r.receipt and r.receipt.count("reserved WE-RO by") == 2
    for i, v in enumerate(victims):
        assert not writes(v)  # RESERVATION CONFLICT (after the RESERVATIONS PREEMPTED unit attention)
        assert not writes(v)
        assert writes(own(m, i))  # the survivor's write lands
    # a second order against the same incarnation: nothing left to remove, still verified
    again = m.fence(VICTIM, soon())
    assert again.ok and again.detail.endswith(f"{lun2.url}: already absent")


def test_a_victim_on_two_nexuses_is_cut_off_both(lun, methods):
    v1, v2 = lun.node(2), lun.node(2)
    for v in (v1, v2):
        pr.register_and_ignore(v, K2, T)
    m = methods([lun.url])
    assert m.register(soon()).ok
    assert pr.read_keys(own(m), T).duplicates() == {K2: 2}
    r = m.fence(VICTIM, soon())
    assert r.ok and "preempt removed 2 registration(s)" in r.detail
    assert not writes(v1) and not writes(v2)
    assert pr.read_keys(own(m), T).keys == (K1,)


def test_one_lu_through_two_portals(lun, methods, tgtd):
    """Multipath-style duplicates: two specs reaching one LU (two nexuses of ours, one key twice). The
    PREEMPT through one path removes the victim; the other path finds it gone: verified on both."""
    portal = f"127.0.0.2:{tgtd.port}"
    tgtd.tgtadm("--mode", "portal", "--op", "new", "--param", f"portal={portal}")
    m = v = None
    try:
        second = lun.url.replace("127.0.0.1", "127.0.0.2")
        v = lun.node(2, url=second)
        pr.register_and_ignore(v, K2, T)
        m = methods([lun.url, second])
        assert m.register(soon()).ok
        a = m.audit(soon())
        assert kinds(a) == [S.DUPLICATE_KEY]  # our key through two nexuses: the two paths
        r = m.fence(VICTIM, soon())
        assert r.ok, r.detail
        assert "preempt removed 1 registration(s)" in r.detail
        assert "already absent" in r.detail or "RESERVATION CONFLICT" in r.detail  # whichever path came second
        assert not writes(v) and writes(own(m, 0)) and writes(own(m, 1))
    finally:
        for s in (m, v):
            if s is not None:
                s.close()
        tgtd.tgtadm("--mode", "portal", "--op", "delete", "--param", f"portal={portal}")


def test_fence_of_a_victim_not_registered_is_ok(lun, methods):
    m = methods([lun.url])
    assert m.register(soon()).ok
    r = m.fence(VICTIM, soon())
    assert r.ok and r.detail.endswith(f"{lun.url}: already absent")
    assert r.receipt.startswith(f"{lun.url}: keys [0x{K1:016x}] gen ")


def test_fence_with_one_lun_unreachable(lun, methods):
    dead = f"iscsi://127.0.0.1:{_free_port()}/{lun.iqn}/1"  # nothing listens there
    v = lun.node(2)
    pr.register_and_ignore(v, K2, T)
    m = methods([lun.url, dead])
    reg = m.register(soon())
    assert not reg.ok and reg.luns[0].ok and not reg.luns[1].ok
    assert reg.detail.startswith(f"not registered on 1 of 2 LUN(s): {dead}: ")
    r = m.fence(VICTIM, soon())
    assert not r.ok and "\n" not in r.detail
    assert r.detail.startswith(f"node 2 (node2) key 0x{K2:016x} not verified fenced on 1 of 2 LUN(s): {dead}: ")
    assert r.receipt.startswith(f"{lun.url}: keys [0x{K1:016x}]")  # the reachable LUN was fenced and read back
    assert not writes(v)
    a = m.audit(soon())
    assert [x.reachable for x in a.luns] == [True, False] and a.luns[1].findings[0].kind == S.ERROR


def test_fence_when_our_own_key_was_removed(lun, methods):
    v = lun.node(2)
    pr.register_and_ignore(v, K2, T)
    m = methods([lun.url])
    assert m.register(soon()).ok
    pr.preempt_victim(v, K2, K1, T)  # the other side fenced us first
    r = m.fence(VICTIM, soon())
    assert not r.ok
    assert r.detail.endswith(f"not verified fenced on 1 of 1 LUN(s): this node is not registered on LUN {lun.url} "
                             f"(fenced itself?)")
    assert writes(v)  # nothing was preempted
    a = m.audit(soon())
    assert a.fenced and S.FENCED in kinds(a) and not a.registration_lost
    assert pr.read_keys(v, T).keys == (K2,)  # the audit registered nothing


def test_audit_findings(lun, methods):
    m = methods([lun.url])
    assert m.register(soon()).ok
    pr.register_and_ignore(lun.node("other"), FOREIGN, T)  # K5: not ours
    pr.register_and_ignore(lun.node(2), K2, T)  # node 2's earlier incarnation, never fenced
    pr.register_and_ignore(lun.node(2), K2_NEW, T)  # ... and its current one
    pr.register_and_ignore(lun.node(3), K3, T)  # node 3 through two paths
    pr.register_and_ignore(lun.node(3), K3, T)
    a = m.audit(soon(), known={2: GEN2_NEW, 3: GEN3})
    assert kinds(a) == sorted([S.FOREIGN_KEY, S.SEVERAL_INCARNATIONS, S.STALE_INCARNATION, S.DUPLICATE_KEY])
    by = {f.kind: f.detail for f in a.findings}
    assert by[S.FOREIGN_KEY] == f"{lun.url}: foreign key 0x000000000badc0de (foreign) registered: reported, " \
                                f"never preempted"
    assert by[S.STALE_INCARNATION].startswith(f"{lun.url}: key 0x{K2:016x} (node 2, incarnation bbbb0002) is not node "
                                              f"2's current incarnation bbbb0003")
    assert f"node 2 has keys of 2 incarnations registered (0x{K2:016x}, 0x{K2_NEW:016x})" in by[S.SEVERAL_INCARNATIONS]
    assert by[S.DUPLICATE_KEY].startswith(f"{lun.url}: key 0x{K3:016x} (node 3, incarnation cccc0003) registered "
                                          f"through 2 nexuses")
    x = a.luns[0]
    assert x.keys == (K1, FOREIGN, K2, K2_NEW, K3, K3) and x.described[1] == "0x000000000badc0de (foreign)"
    assert x.reservation_text == f"WE-RO by 0x{K1:016x} (node 1, incarnation aaaa0001)" and x.generation_moved is None
    doc = json.loads(json.dumps(a.as_json()))
    assert doc["luns"][0]["reservation"]["type"] == "WE-RO" and len(doc["luns"][0]["findings"]) == 4
    # without heartbeat knowledge, two incarnations of node 2 are still reported
    pr.register_and_ignore(lun.node(3), 0, T)  # one path of node 3 unregisters: the generation moves by 1
    b = m.audit(soon())
    assert S.STALE_INCARNATION not in kinds(b) and S.SEVERAL_INCARNATIONS in kinds(b)
    assert b.luns[0].generation_moved == 1 and S.GENERATION_MOVED in kinds(b)
    assert m.audit(soon()).luns[0].generation_moved == 0


def test_audit_before_registering_and_a_stale_incarnation_of_ourselves(lun, methods):
    earlier = methods([lun.url], generation=GEN1 + 1)  # this node's previous start, never fenced
    assert earlier.register(soon()).ok
    m = methods([lun.url])
    a = m.audit(soon())
    assert kinds(a) == [S.NOT_REGISTERED, S.STALE_INCARNATION] and not a.fenced
    assert "an earlier incarnation of this node" in a.luns[0].findings[1].detail
    assert pr.read_keys(own(m), T).keys == (K1 + 1,)  # the audit registered nothing


def test_registration_lost_after_a_reconnect(lun, methods):
    v = lun.node(2)
    pr.register_and_ignore(v, K2, T)
    m = methods([lun.url])
    assert m.register(soon()).ok
    own(m).close()  # the session drops; the next command logs in again: a new, unregistered nexus
    a = m.audit(soon())
    assert own(m).logins == 2
    assert kinds(a) == [S.REGISTRATION_LOST] and a.registration_lost and not a.fenced
    assert a.findings[0].detail == f"{lun.url}: registration lost after a reconnect (fence-agents issue 517): " \
                                   f"run `diskhb unfence`"
    assert not writes(own(m))  # the key is still listed (the old nexus), but this nexus cannot write
    r = m.fence(VICTIM, soon())  # never re-registered behind the operator's back
    assert not r.ok and r.detail.endswith(f"this node's registration on LUN {lun.url} was lost after a reconnect "
                                          f"(fence-agents issue 517): run `diskhb unfence`")
    assert writes(v)
    # `diskhb unfence`: registered again on the new nexus; the old nexus' leftover stays listed
    assert m.register(soon()).ok
    b = m.audit(soon())
    assert S.REGISTRATION_LOST not in kinds(b) and S.DUPLICATE_KEY in kinds(b)
    assert m.fence(VICTIM, soon()).ok and not writes(v) and writes(own(m))


def test_the_target_drops_our_session(lun, methods, tgtd):
    """The target ends the session (tgtadm conn delete): the next command fails (libiscsi reports the
    drop as an answerless command), the one after logs in again, unregistered: the audit says so."""
    m = methods([lun.url])
    assert m.register(soon()).ok
    tid = str(tgtd._tids[lun.iqn])
    sid = tgtd.tgtadm("--mode", "conn", "--op", "show", "--tid", tid).split("Session: ")[1].split()[0]
    tgtd.tgtadm("--mode", "conn", "--op", "delete", "--tid", tid, "--sid", sid, "--cid", "0")
    first = m.audit(soon())
    assert kinds(first) in ([S.ERROR], [S.REGISTRATION_LOST]) and not first.fenced
    second = first if first.registration_lost else m.audit(soon())
    assert kinds(second) == [S.REGISTRATION_LOST] and own(m).logins == 2


def test_closing_the_method_loses_its_registration(lun, methods):
    """close() logs out: a method used again logs in afresh (a new transport, whose own count starts
    at 0), and that nexus is not registered."""
    m = methods([lun.url])
    assert m.register(soon()).ok
    m.close()
    a = m.audit(soon())
    assert kinds(a) == [S.REGISTRATION_LOST] and own(m).logins == 1


def test_register_reports_a_foreign_exclusive_reservation(lun, methods):
    other = lun.node("other")
    pr.register_and_ignore(other, FOREIGN, T)
    pr.reserve(other, FOREIGN, T, PrType.EXCLUSIVE_ACCESS)
    m = methods([lun.url])
    r = m.register(soon())
    assert not r.ok
    assert r.luns[0].detail == f"{lun.url}: registered, but reserved EA by 0x000000000badc0de (foreign): not overridden"
    holder = pr.read_reservation(other, T).holder
    assert (holder.key, holder.pr_type) == (FOREIGN, PrType.EXCLUSIVE_ACCESS)  # untouched
    a = m.audit(soon())
    assert kinds(a) == [S.FOREIGN_KEY, S.RESERVED_BY_OTHER]


def test_fence_reserves_an_unreserved_lun(lun, methods):
    """SP4: a preempt on an unreserved LUN removes the key but stops no write: the fencer reserves."""
    v = lun.node(2)
    pr.register_and_ignore(v, K2, T)
    m = methods([lun.url])
    assert m.register(soon()).ok
    pr.release(own(m), K1, T)
    assert S.UNRESERVED in kinds(m.audit(soon()))
    r = m.fence(VICTIM, soon())
    assert r.ok and r.detail.endswith("preempt removed 1 registration(s), then reserved WE-RO")
    assert not writes(v) and writes(own(m))


# -- a fake PR device: the edges tgt does not show ---------------------------------------------------------


def _sense(key, asc, ascq):
    b = bytearray(18)
    b[0], b[2], b[7], b[12], b[13] = 0x70, key, 10, asc, ascq
    return bytes(b)


GOOD = ScsiResult(0, b"", b"")
CONFLICT = ScsiResult(0x18, b"", b"")
NO_OPCODE = ScsiResult(2, b"", _sense(0x5, 0x20, 0x00))  # ILLEGAL REQUEST: INVALID COMMAND OPERATION CODE
NO_FIELD = ScsiResult(2, b"", _sense(0x5, 0x24, 0x00))  # how tgt refuses PREEMPT AND ABORT


class FakeLu:
    """One logical unit's PR state, shared by its nexuses (FakeNexus), with the SPC-4 rules the method
    relies on. `hook[name]` runs before a command: it may change the state, raise or answer instead."""

    def __init__(self, no_pr=False):
        self.regs: list[tuple[object, int]] = []  # (nexus, key) in registration order
        self.holder: tuple[object, int, int] | None = None  # (nexus, key, type)
        self.generation = 0
        self.no_pr = no_pr
        self.hook: dict = {}

    def key_of(self, nexus):
        return next((k for n, k in self.regs if n is nexus), None)


class FakeNexus:
    def __init__(self, lu: FakeLu, name="fake://lun"):
        self.lu, self.name = lu, name
        self.closed = 0

    def execute(self, cdb, data_out, data_in_len, timeout_ms):
        lu = self.lu
        op, sa = cdb[0], cdb[1] & 0x1F
        name = (PrIn(sa).name if op == 0x5E else PrOut(sa).name) if op in (0x5E, 0x5F) else f"op{op:02x}"
        if name in lu.hook:
            answer = lu.hook[name](self)
            if answer is not None:
                return answer
        if op in (0x5E, 0x5F) and lu.no_pr:
            return NO_OPCODE
        if op == 0x5E and sa == PrIn.READ_KEYS:
            body = b"".join(k.to_bytes(8, "big") for _, k in lu.regs)
            return ScsiResult(0, (struct.pack(">II", lu.generation, len(body)) + body)[:data_in_len], b"")
        if op == 0x5E and sa == PrIn.READ_RESERVATION:
            if lu.holder is None:
                return ScsiResult(0, struct.pack(">II", lu.generation, 0), b"")
            return ScsiResult(0, struct.pack(">IIQ4xxBxx", lu.generation, 16, lu.holder[1], lu.holder[2]), b"")
        if op != 0x5F:
            raise AssertionError(f"unexpected command {cdb.hex()}")
        res_key, sa_key = struct.unpack_from(">QQ", data_out, 0)
        mine = lu.key_of(self)
        if sa == PrOut.REGISTER_AND_IGNORE_EXISTING_KEY:
            lu.regs = [(n, k) for n, k in lu.regs if n is not self] + ([(self, sa_key)] if sa_key else [])
            lu.generation += 1
            return GOOD
        if mine is None or mine != res_key:
            return CONFLICT
        if sa == PrOut.RESERVE:
            if lu.holder is not None and lu.holder[0] is not self:
                return CONFLICT
            lu.holder = (self, mine, cdb[2] & 0xF)
            return GOOD
        if sa == PrOut.PREEMPT_AND_ABORT:
            return NO_FIELD
        if sa == PrOut.PREEMPT:
            if not any(k == sa_key for _, k in lu.regs):
                return CONFLICT
            lu.regs = [(n, k) for n, k in lu.regs if k != sa_key]
            if lu.holder is not None and lu.holder[1] == sa_key:
                lu.holder = (self, mine, cdb[2] & 0xF)
            lu.generation += 1
            return GOOD
        raise AssertionError(f"unexpected PR OUT {sa}")

    def close(self):
        self.closed += 1


def fake_method(*lus, node_id=1, generation=GEN1, timeout_ms=1000):
    """A method over fake LUs; a victim nexus of node 2 registered on each."""
    nexuses = {}

    def opener(spec, _initiator):
        nexuses[spec.name] = FakeNexus(lus[int(spec.name.rsplit("/", 1)[1])], spec.name)
        return nexuses[spec.name]

    m = S.ScsiPrMethod(CLUSTER, node_id, generation, NODES, [f"/dev/fake/{i}" for i in range(len(lus))],
                       timeout_ms=timeout_ms, opener=opener)
    return m, nexuses


def with_victim(lu):
    v = FakeNexus(lu, "victim")
    v.execute(*_reg(K2))
    return v


def _reg(key):
    from diskhb.fencing.scsi import cdb as C
    c = C.register_and_ignore(key)
    return c.cdb, c.data_out, 0, 1000


def test_a_lun_without_persistent_reservations():
    m, _ = fake_method(FakeLu(no_pr=True))
    r = m.register(soon())
    assert not r.ok
    assert r.luns[0].detail == ("/dev/fake/0: no SCSI persistent reservation support (PR OUT REGISTER AND IGNORE "
                                "EXISTING KEY: CHECK CONDITION: ILLEGAL REQUEST: INVALID COMMAND OPERATION CODE "
                                "(asc 0x20 ascq 0x00))")
    f = m.fence(VICTIM, soon())
    assert not f.ok and "no SCSI persistent reservation support (PR IN READ KEYS" in f.detail and f.receipt == ""
    a = m.audit(soon())
    assert a.luns[0].reachable and a.luns[0].error.startswith("/dev/fake/0: no SCSI persistent reservation support")
    assert kinds(a) == [S.ERROR] and not a.fenced


def test_a_preempt_that_timed_out_but_ran_is_read_back():
    lu = FakeLu()
    m, _ = fake_method(lu)
    assert m.register(soon()).ok
    with_victim(lu)
    real = FakeNexus.execute

    def ran_then_lost(nexus):
        lu.hook.clear()
        real(nexus, *C_PREEMPT)  # the device did it; the answer never came
        raise TransportTimeout(f"{nexus.name}: PR OUT 0x04: no answer within the timeout")

    lu.hook["PREEMPT"] = ran_then_lost
    r = m.fence(VICTIM, soon())
    assert r.ok, r.detail
    assert "PREEMPT got no answer (PR OUT 0x04: no answer within the timeout)" in r.detail


def test_a_preempt_that_timed_out_and_did_not_run_fails():
    lu = FakeLu()
    m, _ = fake_method(lu)
    assert m.register(soon()).ok
    with_victim(lu)

    def lost(nexus):
        raise TransportTimeout(f"{nexus.name}: PR OUT 0x04: no answer within the timeout")

    lu.hook["PREEMPT"] = lost
    r = m.fence(VICTIM, soon())
    assert not r.ok
    assert r.detail.endswith("/dev/fake/0: victim key still registered 1 time(s) after: PREEMPT got no answer "
                             "(PR OUT 0x04: no answer within the timeout)")


def test_a_lun_that_hangs_past_the_deadline_fails_alone():
    good, stuck = FakeLu(), FakeLu()
    m, _ = fake_method(good, stuck)
    assert m.register(soon()).ok
    with_victim(good), with_victim(stuck)
    release = threading.Event()
    stuck.hook["READ_KEYS"] = lambda _n: release.wait(10) and None  # a transport that overstays its timeout
    try:
        t0 = time.monotonic()
        r = m.fence(VICTIM, t0 + 0.5)
        took = time.monotonic() - t0
    finally:
        release.set()
    assert not r.ok
    assert r.detail.endswith("not verified fenced on 1 of 2 LUN(s): /dev/fake/1: no answer by the deadline")
    assert took < 0.5 + S.JOIN_GRACE_MS / 1000 + 0.5
    assert not any(k == K2 for _, k in good.regs)  # the other LUN was fenced all the same


def test_a_read_keys_timeout_in_the_audit_is_unreachable():
    lu = FakeLu()
    m, _ = fake_method(lu)
    assert m.register(soon()).ok

    def timeout(nexus):
        raise TransportTimeout(f"{nexus.name}: PR IN 0x00: no answer within the timeout")

    lu.hook["READ_KEYS"] = timeout
    a = m.audit(soon())
    assert not a.luns[0].reachable and a.luns[0].error == "/dev/fake/0: PR IN 0x00: no answer within the timeout"
    assert not a.fenced


def test_out_of_time_fails_every_lun_at_once():
    m, _ = fake_method(FakeLu(), FakeLu())
    r = m.fence(VICTIM, time.monotonic() + 0.01)  # less than TIMEOUT_MS_MIN left; threads join within the grace
    assert not r.ok and r.detail.count("out of time before the deadline") == 2


def test_a_transport_that_cannot_be_made():
    def opener(spec, _initiator):
        raise TransportUnavailable("libiscsi not found (install the Debian package libiscsi7)")

    m = S.ScsiPrMethod(CLUSTER, 1, GEN1, NODES, ["/dev/fake"], opener=opener)
    r = m.register(soon())
    assert r.luns[0].detail == "/dev/fake: libiscsi not found (install the Debian package libiscsi7)"


def test_two_paths_to_one_fake_lu_and_a_victim_absent_on_one():
    lu, other = FakeLu(), FakeLu()
    m, _ = fake_method(lu, lu, other)  # /dev/fake/0 and /dev/fake/1 reach one LU
    assert m.register(soon()).ok
    with_victim(lu)
    r = m.fence(VICTIM, soon())
    assert r.ok, r.detail
    assert r.detail.endswith("/dev/fake/2: already absent") and "removed 1 registration(s)" in r.detail
    assert [k for _, k in lu.regs] == [K1, K1]


def test_a_conflicting_preempt_without_our_registration():
    """The key of ours is listed (a leftover nexus) but this nexus is not registered: the PREEMPT
    conflicts, and the read-back names the cause."""
    lu = FakeLu()
    m, nexuses = fake_method(lu)
    assert m.register(soon()).ok
    with_victim(lu)
    leftover = FakeNexus(lu, "old")
    lu.regs = [(leftover if n is nexuses["/dev/fake/0"] else n, k) for n, k in lu.regs]
    r = m.fence(VICTIM, soon())
    assert not r.ok and "victim key still registered 1 time(s) after: PREEMPT answered RESERVATION CONFLICT" in r.detail


def test_bad_configuration_is_one_line():
    def make(luns, **kw):
        return S.ScsiPrMethod(CLUSTER, kw.pop("node_id", 1), GEN1, NODES, luns, **kw)

    cases = [
        (["iscsi://storage.example:3260/iqn.2024-01.x:y/1"], {"initiator_name": "iqn.2024-01.x:n1"},
         "the host must be an IP address"),
        (["nvme://x"], {}, "only iscsi:// URLs and device paths"),
        (["dev/sdb"], {}, "must be absolute"),
        (["/dev/sdb", "/dev/sdb"], {}, "listed twice"),
        (["iscsi://127.0.0.1/iqn.2024-01.x:y/1"], {}, "need this node's initiator name"),
        (["/dev/sdb"], {"node_id": 9}, "node 9 is not among the configured nodes"),
        ([], {}, "at least one LUN"),
        (["/dev/sdb"], {"initiator_name": "node1"}, "must start with iqn."),
    ]
    for luns, kw, text in cases:
        with pytest.raises(S.ScsiPrConfigError, match=text) as e:
            make(luns, **kw)
        assert "\n" not in str(e.value)
    m = make(["iscsi://127.0.0.1/iqn.2024-01.x%3Ay/1"], initiator_name="iqn.2024-01.x:n1")
    assert m.luns == ("iscsi://127.0.0.1:3260/iqn.2024-01.x:y/1",) and m.own_key == K1
    with pytest.raises(ValueError, match="cannot fence itself"):
        m.fence(Victim(1, "me", GEN1), soon())
    with pytest.raises(ValueError, match="node 7 is not a configured node"):
        m.fence(Victim(7, "stranger", GEN1), soon())


def test_an_opener_error_is_not_a_crash():
    def opener(spec, _initiator):
        raise TransportError(f"{spec.name}: cannot open: No such file or directory")

    m = S.ScsiPrMethod(CLUSTER, 1, GEN1, NODES, ["/dev/nope"], opener=opener)
    assert m.fence(VICTIM, soon()).detail.endswith("/dev/nope: cannot open: No such file or directory")
    assert m.audit(soon()).luns[0].findings[0].kind == S.ERROR


def _preempt_args():
    from diskhb.fencing.scsi import cdb as C
    c = C.preempt(K1, K2)
    return c.cdb, c.data_out, 0, 1000


C_PREEMPT = _preempt_args()


def test_registration_preempts_our_own_earlier_incarnations(lun, methods):
    old = methods([lun.url], node_id=2, generation=GEN2)
    assert old.register(soon()).ok
    new = methods([lun.url], node_id=2, generation=GEN2_NEW, initiator=f"{IQN_BASE}:node2b")  # a restart: a new nexus
    r = new.register(soon())
    assert r.ok, r.detail
    assert pr.read_keys(lun.node("observer"), T).keys == (K2_NEW,)  # the dead incarnation's key is gone
    assert not writes(own(old))  # and its nexus cannot write


def test_a_retry_registers_only_where_this_incarnation_never_did(lun, lun2, methods):
    m = methods([lun.url, lun2.url])
    assert m.register(soon()).ok
    fencer = methods([lun.url, lun2.url], node_id=3, generation=GEN3)
    assert fencer.register(soon()).ok
    assert fencer.fence(Victim(1, "node1", GEN1), soon()).ok  # we were fenced meanwhile
    r = m.register(soon(), missing_only=True)
    assert r.ok and [x.detail for x in r.luns] == [f"{u}: registered earlier" for u in (lun.url, lun2.url)]
    for lu in (lun, lun2):
        assert K1 not in pr.read_keys(lu.node("observer"), T).keys  # never registered again silently
