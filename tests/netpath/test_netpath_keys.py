"""netpath.keys: key file generation, the permission rule, format errors, rotation with two ids."""

from __future__ import annotations

import os
import stat

import pytest

from diskhb.errors import OperatorError
from netpath import wire
from netpath.keys import KEY_BYTES, KeyRing, generate_key_file, load_key_file, parse_keys

HEX1 = "11" * KEY_BYTES
HEX2 = "22" * KEY_BYTES


def write(path, text: str, mode: int = 0o600) -> str:
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


def test_generate_writes_a_0600_file_that_loads(tmp_path):
    path = str(tmp_path / "authkey")
    fp = generate_key_file(path, 7)
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    ring = load_key_file(path)
    assert ring.signing_id == 7 and ring.ids == (7,) and len(ring.key(7)) == KEY_BYTES
    assert ring.fingerprint(7) == fp and len(fp) == 8
    other = str(tmp_path / "other")
    generate_key_file(other, 7)
    assert load_key_file(other).key(7) != ring.key(7)  # fresh randomness every time


def test_generate_never_overwrites_and_checks_the_id(tmp_path):
    path = str(tmp_path / "authkey")
    generate_key_file(path)
    before = open(path).read()
    with pytest.raises(OperatorError, match="already exists"):
        generate_key_file(path)
    assert open(path).read() == before
    for bad in (0, 65536):
        with pytest.raises(OperatorError, match="key id"):
            generate_key_file(str(tmp_path / f"k{bad}"), bad)
    with pytest.raises(OperatorError, match="cannot create"):
        generate_key_file(str(tmp_path / "missing-dir" / "k"))


def test_generate_makes_the_mode_exact_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        path = str(tmp_path / "k")
        generate_key_file(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o601, 0o610])
def test_group_or_other_bits_are_refused(tmp_path, mode):
    path = write(tmp_path / "k", f"1 {HEX1}\n", mode)
    with pytest.raises(OperatorError, match=f"mode {mode:04o}.*chmod 600"):
        load_key_file(path)


def test_0400_is_accepted(tmp_path):
    assert load_key_file(write(tmp_path / "k", f"1 {HEX1}\n", 0o400)).ids == (1,)


def test_foreign_owner_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to chown a file to another user")
    path = write(tmp_path / "k", f"1 {HEX1}\n")
    os.chown(path, 4242, 4242)
    with pytest.raises(OperatorError, match="owned by uid 4242"):
        load_key_file(path)


def test_missing_directory_fifo_and_huge_files_are_refused(tmp_path):
    with pytest.raises(OperatorError, match="not found.*diskhb keygen"):
        load_key_file(str(tmp_path / "nope"))
    d = tmp_path / "dir"
    d.mkdir(mode=0o700)
    with pytest.raises(OperatorError, match="not a regular file"):
        load_key_file(str(d))
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo, 0o600)
    with pytest.raises(OperatorError, match="not a regular file"):  # and the open did not hang
        load_key_file(fifo)
    big = write(tmp_path / "big", "#" * 5000 + f"\n1 {HEX1}\n")
    with pytest.raises(OperatorError, match="too large"):
        load_key_file(big)
    binary = tmp_path / "bin"
    binary.write_bytes(b"\xff\xfe" * 8)
    os.chmod(binary, 0o600)
    with pytest.raises(OperatorError, match="not a text key file"):
        load_key_file(str(binary))


@pytest.mark.parametrize("text, match", [
    ("", "no key"),
    ("# only a comment\n\n", "no key"),
    (f"1 {HEX1[:-2]}\n", "must be 32"),
    (f"1 {HEX1}00\n", "must be 32"),
    (f"1 {HEX1[:-1]}g\n", "expected"),
    (f"{HEX1}\n", "expected"),
    (f"one {HEX1}\n", "expected"),
    (f"0 {HEX1}\n", "not in 1..65535"),
    (f"65536 {HEX1}\n", "not in 1..65535"),
    (f"1 {HEX1}\n1 {HEX2}\n", "listed twice"),
    (f"1 {HEX1}\n2 {HEX2}\n3 {HEX1}\n", "more than 2"),
])
def test_format_errors_name_the_line(tmp_path, text, match):
    with pytest.raises(OperatorError, match=match):
        load_key_file(write(tmp_path / "k", text))


def test_first_key_signs_and_comments_are_ignored():
    ring = parse_keys(f"# rotation in progress\n\n  2 {HEX2}  \n# old one\n1 {HEX1.upper()}\n")
    assert ring.signing_id == 2 and ring.ids == (2, 1)
    assert ring.key(1) == bytes.fromhex(HEX1) and ring.key(3) is None


def test_rotation_steps_keep_every_pair_of_nodes_talking():
    """The three documented rotation steps: any two adjacent steps accept each other's packets."""
    cid = wire.cluster_id("c")
    old_only = parse_keys(f"1 {HEX1}\n")
    step1 = parse_keys(f"1 {HEX1}\n2 {HEX2}\n")  # new key accepted, old signs
    step2 = parse_keys(f"2 {HEX2}\n1 {HEX1}\n")  # new signs, old accepted
    new_only = parse_keys(f"2 {HEX2}\n")
    steps = [old_only, step1, step2, new_only]

    def packet(ring: KeyRing) -> bytes:
        return wire.encode(wire.Packet(cluster_id=cid, node_id=1, generation=1, seq=1, mono_ms=1), ring)

    for a, b in zip(steps, steps[1:]):
        assert isinstance(wire.decode(packet(a), b, cid), wire.Packet)
        assert isinstance(wire.decode(packet(b), a, cid), wire.Packet)
    assert wire.decode(packet(old_only), new_only, cid) == "key_id"  # retired key: refused, counted
    assert wire.decode(packet(new_only), old_only, cid) == "key_id"
