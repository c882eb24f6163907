"""diskhb.fencing.scsi.cdb: every CDB and parameter list byte by byte against SPC-4 / SBC-3 (C1-C4),
and cross-checked with sg3-utils' sg_persist, which prints what it would send (-n -vv)."""

import re
import shutil
import struct
import subprocess

import pytest

from diskhb.fencing.scsi import cdb as C
from diskhb.fencing.scsi.cdb import CdbError, PrIn, PrOut, PrType

OWN, VICTIM = 0x0102030405060708, 0x1112131415161718


def param_list(res_key=0, sa_key=0):
    """The basic PR OUT parameter list by hand: keys at 0 and 8, all else (obsolete, flags, reserved) zero."""
    return res_key.to_bytes(8, "big") + sa_key.to_bytes(8, "big") + bytes(8)


# -- PR IN -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make,action,alloc", [
    (lambda: C.read_keys(), 0x00, 8 + 8 * 32),
    (lambda: C.read_keys(8), 0x00, 8),
    (lambda: C.read_keys(C.PR_IN_ALLOC_MAX), 0x00, 8200),
    (lambda: C.read_reservation(), 0x01, 24),
    (lambda: C.report_capabilities(), 0x02, 8),
])
def test_pr_in_cdb_layout(make, action, alloc):
    c = make()
    assert len(c.cdb) == 10
    assert c.cdb[0] == 0x5E  # OPERATION CODE
    assert c.cdb[1] == action  # bits 4-0 SERVICE ACTION, 7-5 reserved
    assert c.cdb[2:7] == bytes(5)  # reserved
    assert c.cdb[7:9] == alloc.to_bytes(2, "big")  # ALLOCATION LENGTH
    assert c.cdb[9] == 0  # CONTROL
    assert c.data_out is None and c.data_in_len == alloc


def test_pr_in_names_are_one_line():
    assert C.read_keys().name == "PR IN READ KEYS"
    assert C.read_reservation().name == "PR IN READ RESERVATION"


@pytest.mark.parametrize("alloc", [0, 7, C.PR_IN_ALLOC_MAX + 1, 65535, -1, True, 8.0, "8"])
def test_pr_in_allocation_length_bounds(alloc):
    with pytest.raises(CdbError, match="allocation length"):
        C.pr_in(PrIn.READ_KEYS, alloc)


# -- PR OUT ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make,action,scope_type,res_key,sa_key", [
    (lambda: C.register(0, OWN), 0x00, 0x00, 0, OWN),
    (lambda: C.register(OWN, VICTIM), 0x00, 0x00, OWN, VICTIM),
    (lambda: C.register(OWN, 0), 0x00, 0x00, OWN, 0),  # unregister
    (lambda: C.reserve(OWN), 0x01, 0x05, OWN, 0),
    (lambda: C.reserve(OWN, PrType.WRITE_EXCLUSIVE), 0x01, 0x01, OWN, 0),
    (lambda: C.release(OWN), 0x02, 0x05, OWN, 0),
    (lambda: C.clear(OWN), 0x03, 0x00, OWN, 0),
    (lambda: C.preempt(OWN, VICTIM), 0x04, 0x05, OWN, VICTIM),
    (lambda: C.preempt(OWN, VICTIM, PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS), 0x04, 0x08, OWN, VICTIM),
    (lambda: C.preempt_and_abort(OWN, VICTIM), 0x05, 0x05, OWN, VICTIM),
    (lambda: C.register_and_ignore(OWN), 0x06, 0x00, 0, OWN),
])
def test_pr_out_cdb_and_parameter_list(make, action, scope_type, res_key, sa_key):
    c = make()
    assert len(c.cdb) == 10
    assert c.cdb[0] == 0x5F  # OPERATION CODE
    assert c.cdb[1] == action  # SERVICE ACTION
    assert c.cdb[2] == scope_type  # SCOPE (7-4) = LU_SCOPE 0, TYPE (3-0)
    assert c.cdb[3:5] == bytes(2)  # reserved
    assert c.cdb[5:9] == (24).to_bytes(4, "big")  # PARAMETER LIST LENGTH
    assert c.cdb[9] == 0  # CONTROL
    assert c.data_out == param_list(res_key, sa_key)
    assert len(c.data_out) == 24 and c.data_out[20] == 0  # SPEC_I_PT, ALL_TG_PT, APTPL clear (C1)
    assert c.data_in_len == 0


def test_type_5_is_write_exclusive_registrants_only():
    assert C.FENCE_TYPE == 5 == PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY
    assert C.FENCE_TYPE.short == "WE-RO"
    assert [int(t) for t in PrType] == [1, 3, 5, 6, 7, 8]  # SPC-4's type codes
    assert [int(a) for a in PrOut] == list(range(8))
    assert [int(a) for a in PrIn] == [0, 1, 2, 3]


@pytest.mark.parametrize("make,match", [
    (lambda: C.reserve(0), "reservation key must not be 0"),
    (lambda: C.release(0), "reservation key must not be 0"),
    (lambda: C.clear(0), "reservation key must not be 0"),
    (lambda: C.preempt(0, VICTIM), "reservation key must not be 0"),
    (lambda: C.preempt(OWN, 0), "victim key"),  # C2: would remove everyone under an AR reservation
    (lambda: C.preempt_and_abort(OWN, 0), "victim key"),
    (lambda: C.register(-1, OWN), "unsigned 64-bit"),
    (lambda: C.register(0, 1 << 64), "unsigned 64-bit"),
    (lambda: C.register(0, True), "unsigned 64-bit"),
    (lambda: C.register_and_ignore("1"), "unsigned 64-bit"),
    (lambda: C.reserve(OWN, 2), "not one SPC-4 defines"),
    (lambda: C.reserve(OWN, 0), "not one SPC-4 defines"),
    (lambda: C.preempt(OWN, VICTIM, 9), "not one SPC-4 defines"),
    (lambda: C.pr_out(PrOut.REGISTER, 0, OWN, PrType.WRITE_EXCLUSIVE), "takes no reservation type"),
    (lambda: C.pr_out(PrOut.CLEAR, OWN, VICTIM), "takes no service action"),
    (lambda: C.pr_out(PrOut.RESERVE, OWN, VICTIM, PrType.WRITE_EXCLUSIVE), "takes no service action"),
    (lambda: C.pr_out(PrOut.REGISTER_AND_MOVE, OWN, VICTIM), "REGISTER AND MOVE"),
])
def test_pr_out_refuses_what_must_not_be_sent(make, match):
    with pytest.raises(CdbError, match=match):
        make()


def test_register_takes_key_0_both_ways():
    assert C.register(0, 0).data_out == bytes(24)  # legal, a no-op for an unregistered nexus
    assert C.register_and_ignore(0).data_out == bytes(24)  # unregister whatever we had


# -- block commands ----------------------------------------------------------------------------------


def test_test_unit_ready_and_read_capacity():
    assert C.test_unit_ready().cdb == bytes(6)
    c = C.read_capacity_10()
    assert c.cdb == bytes([0x25]) + bytes(9) and c.data_in_len == 8


def test_read_10_and_write_10_layout():
    r = C.read_10(0x01020304, 3, 4096)
    assert r.cdb == bytes([0x28, 0, 1, 2, 3, 4, 0, 0, 3, 0]) and r.data_in_len == 3 * 4096 and r.data_out is None
    w = C.write_10(0xFFFFFFFE, b"x" * 1024)
    assert w.cdb == bytes([0x2A, 0, 0xFF, 0xFF, 0xFF, 0xFE, 0, 0, 2, 0]) and w.data_out == b"x" * 1024
    assert w.data_in_len == 0


@pytest.mark.parametrize("make,match", [
    (lambda: C.read_10(0, 0), "1..256 blocks"),
    (lambda: C.read_10(0, C.BLOCKS_MAX + 1), "1..256 blocks"),
    (lambda: C.read_10(0xFFFFFFFF, 2), "beyond the 32-bit LBA"),
    (lambda: C.read_10(-1, 1), "beyond the 32-bit LBA"),
    (lambda: C.read_10(0, 1, 1000), "power of two"),
    (lambda: C.read_10(0, 1, 256), "power of two"),
    (lambda: C.write_10(0, b""), "whole blocks"),
    (lambda: C.write_10(0, b"x" * 513), "whole blocks"),
    (lambda: C.write_10(0, b"x" * 512, 0), "power of two"),
    (lambda: C.write_10(0, b"x" * 512 * 257), "1..256 blocks"),
])
def test_block_command_bounds(make, match):
    with pytest.raises(CdbError, match=match):
        make()


# -- cross-check with sg3-utils: sg_persist prints the CDB and parameters before SG_IO fails ---------


def sg_persist(*args):
    """(cdb bytes, parameter bytes or None) sg_persist -n -vv would send; /dev/null fails the ioctl."""
    r = subprocess.run(["sg_persist", "-n", "-vv", *args, "/dev/null"], capture_output=True, text=True, timeout=10)
    out = r.stdout + r.stderr
    m = re.search(r"cdb: \[([0-9a-f ]+)\]", out)
    assert m, out
    cdb = bytes.fromhex(m.group(1))
    params = b""
    for line in out.splitlines():  # hexdump rows: " 00     01 02 ... 08  09 ... 10    ascii"
        m = re.match(r"^ ([0-9a-f]{2})\s{2,}(.*)$", line)
        if m:
            assert int(m.group(1), 16) == len(params), out
            hexes = []
            for tok in m.group(2).split():
                if len(hexes) == 16 or not re.fullmatch(r"[0-9a-f]{2}", tok):
                    break
                hexes.append(tok)
            params += bytes.fromhex("".join(hexes))
    return cdb, params or None


needs_sg_persist = pytest.mark.skipif(shutil.which("sg_persist") is None,
                                      reason="sg_persist not found (Debian sg3-utils; `make test` installs it)")


@needs_sg_persist
@pytest.mark.parametrize("ours,args", [
    (lambda: C.register(0, OWN), ["--out", "--register", f"--param-sark=0x{OWN:x}"]),
    (lambda: C.register(OWN, VICTIM), ["--out", "--register", f"--param-rk=0x{OWN:x}", f"--param-sark=0x{VICTIM:x}"]),
    (lambda: C.register_and_ignore(OWN), ["--out", "--register-ignore", f"--param-sark=0x{OWN:x}"]),
    (lambda: C.reserve(OWN), ["--out", "--reserve", f"--param-rk=0x{OWN:x}", "--prout-type=5"]),
    (lambda: C.release(OWN), ["--out", "--release", f"--param-rk=0x{OWN:x}", "--prout-type=5"]),
    (lambda: C.clear(OWN), ["--out", "--clear", f"--param-rk=0x{OWN:x}"]),
    (lambda: C.preempt(OWN, VICTIM), ["--out", "--preempt", f"--param-rk=0x{OWN:x}",
                                      f"--param-sark=0x{VICTIM:x}", "--prout-type=5"]),
    (lambda: C.preempt_and_abort(OWN, VICTIM), ["--out", "--preempt-abort", f"--param-rk=0x{OWN:x}",
                                                f"--param-sark=0x{VICTIM:x}", "--prout-type=5"]),
    (lambda: C.read_keys(264), ["--in", "--read-keys", "--maxlen=264"]),
    (lambda: C.read_reservation(), ["--in", "--read-reservation", "--maxlen=24"]),
    (lambda: C.report_capabilities(), ["--in", "--report-capabilities", "--maxlen=8"]),
])
def test_same_bytes_as_sg_persist(ours, args):
    c = ours()
    cdb, params = sg_persist(*args)
    assert c.cdb == cdb
    assert c.data_out == params


def test_command_is_a_frozen_record():
    c = C.reserve(OWN)
    with pytest.raises(Exception):
        c.cdb = b""  # type: ignore[misc]
    assert struct.unpack(">BBB2xIB", c.cdb) == (0x5F, 1, 5, 24, 0)
