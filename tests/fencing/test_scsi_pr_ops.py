"""diskhb.fencing.scsi.pr over a scripted transport: unit attentions (R1), errors (R2), one deadline
(R3), complete key lists (R4), the PREEMPT AND ABORT fallback (R5). tgt runs them for real in
test_scsi_pr_tgt.py; here each rule's edge is forced."""

import struct
import time

import pytest

from diskhb.fencing.scsi import cdb as C
from diskhb.fencing.scsi import pr
from diskhb.fencing.scsi.transport import ScsiResult, TransportError, TransportTimeout

OWN, VICTIM = 0xA1, 0xB2


def sense(key, asc, ascq, field=None):
    b = bytearray(18)
    b[0], b[2], b[7], b[12], b[13] = 0x70, key, 10, asc, ascq
    if field is not None:
        b[15], b[16:18] = 0xC0, field.to_bytes(2, "big")  # SKSV, C/D: CDB byte `field`
    return bytes(b)


UA_PREEMPTED = ScsiResult(2, b"", sense(0x6, 0x2A, 0x03))
UA_RESET = ScsiResult(2, b"", sense(0x6, 0x29, 0x00))
CONFLICT = ScsiResult(0x18, b"", b"")
GOOD = ScsiResult(0, b"", b"")
PA_UNSUPPORTED = ScsiResult(2, b"", sense(0x5, 0x24, 0x00))


def keys(generation, ks, cut=None):
    body = b"".join(k.to_bytes(8, "big") for k in ks)
    data = struct.pack(">II", generation, len(body)) + body
    return ScsiResult(0, data[:cut] if cut else data, b"")


class Script:
    """Answers each execute() with the next scripted result (or raises it), recording the CDBs."""

    name = "fake://lun"

    def __init__(self, *answers, delay_s=0.0):
        self.answers = list(answers)
        self.sent: list[tuple[bytes, int, int]] = []
        self.delay_s = delay_s

    def execute(self, cdb, data_out, data_in_len, timeout_ms):
        self.sent.append((bytes(cdb), data_in_len, timeout_ms))
        time.sleep(self.delay_s)
        a = self.answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a

    def close(self):
        pass


def test_unit_attentions_are_retried_and_kept():
    t = Script(UA_RESET, UA_PREEMPTED, GOOD)
    r = pr.register_and_ignore(t, OWN, 2000)
    assert len(t.sent) == 3 and all(s[0] == t.sent[0][0] for s in t.sent)
    assert [u.message() for u in r.unit_attentions] == [
        "UNIT ATTENTION: POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (asc 0x29 ascq 0x00)",
        "UNIT ATTENTION: RESERVATIONS PREEMPTED (asc 0x2a ascq 0x03)"]


def test_unit_attentions_are_bounded():
    t = Script(*[UA_RESET] * (pr.UA_RETRIES_MAX + 1))
    with pytest.raises(pr.PrRejected, match="UNIT ATTENTION") as e:
        pr.register_and_ignore(t, OWN, 2000)
    assert len(t.sent) == pr.UA_RETRIES_MAX + 1 and "after 8 unit attention(s)" in str(e.value)


def test_a_fenced_writer_sees_the_preemption_then_the_conflict():
    t = Script(UA_PREEMPTED, CONFLICT)
    with pytest.raises(pr.PrConflict) as e:
        pr.write_blocks(t, 0, b"x" * 512, 2000)
    assert str(e.value) == ("fake://lun: WRITE(10): RESERVATION CONFLICT (after 1 unit attention(s), last: "
                            "UNIT ATTENTION: RESERVATIONS PREEMPTED (asc 0x2a ascq 0x03))")
    assert e.value.status == 0x18


@pytest.mark.parametrize("answer,cls,text", [
    (CONFLICT, pr.PrConflict, "fake://lun: PR OUT RESERVE: RESERVATION CONFLICT"),
    (ScsiResult(2, b"", sense(0x5, 0x20, 0)), pr.PrRejected,
     "fake://lun: PR OUT RESERVE: CHECK CONDITION: ILLEGAL REQUEST: INVALID COMMAND OPERATION CODE "
     "(asc 0x20 ascq 0x00)"),
    (ScsiResult(0x08, b"", b""), pr.PrRejected, "fake://lun: PR OUT RESERVE: BUSY"),
    (ScsiResult(2, b"", b"\x7f"), pr.PrRejected, "fake://lun: PR OUT RESERVE: CHECK CONDITION: undecodable sense"),
])
def test_refusals_are_one_typed_line(answer, cls, text):
    with pytest.raises(cls) as e:
        pr.reserve(Script(answer), OWN, 2000)
    assert str(e.value).startswith(text) and "\n" not in str(e.value)


def test_transport_errors_pass_through_with_their_uncertainty():
    with pytest.raises(TransportError) as e:
        pr.preempt(Script(TransportTimeout("fake://lun: PR OUT 0x04: no answer")), OWN, VICTIM, 2000)
    assert e.value.outcome_unknown


def test_one_deadline_for_all_retries():
    t = Script(UA_RESET, UA_RESET, GOOD, delay_s=0.06)
    with pytest.raises(TransportTimeout, match=r"out of time after [12] unit attention"):
        pr.register_and_ignore(t, OWN, 150)
    budgets = [s[2] for s in t.sent]
    assert 140 <= budgets[0] <= 150 and all(b < 100 for b in budgets[1:])  # each retry gets what is left


def test_read_keys_reads_again_with_the_length_it_needs():
    ks = list(range(1, 41))  # 40 keys: more than the default allocation's 32
    t = Script(keys(9, ks, cut=8 + 8 * 32), keys(9, ks))
    got = pr.read_keys(t, 2000)
    assert got.keys == tuple(ks) and got.complete
    assert [s[1] for s in t.sent] == [8 + 8 * 32, 8 + 8 * 40]


def test_read_keys_gives_up_on_a_list_that_keeps_growing():
    t = Script(keys(1, range(40), cut=264), keys(2, range(50), cut=328), keys(3, range(60), cut=408))
    with pytest.raises(pr.PrBadData, match="kept growing over 3 reads"):
        pr.read_keys(t, 2000)


def test_garbage_data_is_bad_data():
    with pytest.raises(pr.PrBadData, match="fake://lun: READ KEYS: additional length 12"):
        pr.read_keys(Script(ScsiResult(0, struct.pack(">II", 0, 12) + bytes(12), b"")), 2000)
    with pytest.raises(pr.PrBadData, match="READ RESERVATION: .*expected 0 or 16"):
        pr.read_reservation(Script(ScsiResult(0, struct.pack(">II", 0, 8) + bytes(16), b"")), 2000)


def test_preempt_victim_uses_preempt_and_abort_when_supported():
    t = Script(GOOD)
    p = pr.preempt_victim(t, OWN, VICTIM, 2000)
    assert (p.action, p.fallback_reason) == ("preempt-and-abort", "")
    assert t.sent[0][0] == C.preempt_and_abort(OWN, VICTIM).cdb


def test_preempt_victim_falls_back_to_preempt_when_the_service_action_is_unsupported():
    for refusal in (PA_UNSUPPORTED, ScsiResult(2, b"", sense(0x5, 0x24, 0x00, field=1))):
        t = Script(refusal, GOOD)
        p = pr.preempt_victim(t, OWN, VICTIM, 2000)
        assert (p.action, p.fallback_reason) == ("preempt", "ILLEGAL REQUEST: INVALID FIELD IN CDB (asc 0x24 ascq 0x00)"
                                                 + (", CDB byte 1" if refusal is not PA_UNSUPPORTED else ""))
        assert [s[0] for s in t.sent] == [C.preempt_and_abort(OWN, VICTIM).cdb, C.preempt(OWN, VICTIM).cdb]


@pytest.mark.parametrize("refusal", [
    CONFLICT,  # not registered, wrong key, victim unknown
    ScsiResult(2, b"", sense(0x5, 0x24, 0x00, field=2)),  # the type byte is wrong, not the action
    ScsiResult(2, b"", sense(0x5, 0x20, 0x00)),  # no PR OUT at all
    ScsiResult(2, b"", sense(0x2, 0x04, 0x00)),  # not ready
])
def test_preempt_victim_does_not_fall_back_on_other_refusals(refusal):
    t = Script(refusal, GOOD)
    with pytest.raises(pr.PrError):
        pr.preempt_victim(t, OWN, VICTIM, 2000)
    assert len(t.sent) == 1


def test_read_capacity():
    t = Script(ScsiResult(0, bytes.fromhex("00003fff00000200"), b""))
    assert pr.read_capacity(t, 2000) == (0x4000, 512)
    with pytest.raises(pr.PrBadData):
        pr.read_capacity(Script(ScsiResult(0, b"\x00", b"")), 2000)
