"""The CLI as an operator meets it: format/status/dump, and one clear line for every mistake."""

import json
import os
import shutil
import subprocess

import pytest

from cluster import Cluster, diskhb

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loop devices, setpriv)")


def one_line_error(r, code, text):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    err = r.stderr.strip()
    assert "Traceback" not in r.stderr and len(err.splitlines()) == 1, r.stderr
    assert err.startswith("diskhb: error: ") and text in err, err


def fmt(path, *extra):
    return diskhb("format", path, "--cluster", "test", *extra)


def test_format_creates_a_file_and_status_sees_no_nodes(tmp_path):
    p = str(tmp_path / "r.img")
    r = fmt(p, "--slots", "16")
    assert r.returncode == 0 and "16 slots of 512 bytes" in r.stdout
    view = json.loads(diskhb("status", p, "--json", "--no-daemon").stdout)
    assert view["nodes"] == [] and view["cluster"] == "test"


def test_refuses_to_format_over_ext4_and_says_what_it_found(tmp_path):
    if not shutil.which("mkfs.ext4"):
        pytest.skip("mkfs.ext4 (e2fsprogs) not installed")
    p = tmp_path / "ext4.img"
    subprocess.run(["truncate", "-s", "8M", str(p)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-L", "data", str(p)], check=True, capture_output=True)
    before = p.read_bytes()
    r = fmt(str(p), "--slots", "8")
    one_line_error(r, 1, "found ext4 filesystem label 'data'")
    assert "nothing was written" in r.stderr and p.read_bytes() == before
    assert fmt(str(p), "--slots", "8", "--force").returncode == 0
    assert fmt(str(p), "--slots", "8").returncode == 1  # now it is a diskhb region: refused too
    r = fmt(str(p), "--slots", "8")
    assert "diskhb region (cluster 'test')" in r.stderr


def test_force_never_formats_a_live_region(tmp_path):
    p = str(tmp_path / "r.img")
    assert fmt(p, "--slots", "4", "--interval-ms", "100", "--dead-ms", "1000").returncode == 0
    c = Cluster(str(tmp_path), p)
    try:
        c.start(1)
        c.wait_state(1, 1, "alive")
        r = fmt(p, "--slots", "4", "--force")
        one_line_error(r, 1, "nodes are beating in this region: node1 (id 1)")
    finally:
        c.stop_all()
    assert fmt(p, "--slots", "4", "--force").returncode == 0  # idle now (left cleanly)


@pytest.mark.parametrize("args,code,text", [
    (["--slots", "0"], 2, "Invalid value for '--slots'"),
    (["--interval-ms", "1000", "--dead-ms", "1500"], 2, "must exceed 2 x interval"),
    (["--sector-size", "1024"], 2, "Invalid value for '--sector-size'"),
])
def test_format_bad_arguments(tmp_path, args, code, text):
    r = fmt(str(tmp_path / "r.img"), *args)
    assert r.returncode == code and text in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "r.img").exists()  # nothing left behind


def test_region_too_small_for_the_slot_count(tmp_path):
    p = tmp_path / "small.img"
    p.write_bytes(bytes(64 * 1024))
    one_line_error(fmt(str(p), "--slots", "2000"), 2, "region too small: 2000 slots of 512 bytes need")
    assert p.read_bytes() == bytes(64 * 1024)


def test_unformatted_truncated_and_missing(tmp_path):
    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(1 << 20))
    one_line_error(diskhb("status", str(blank)), 2, "no diskhb superblock")
    one_line_error(diskhb("dump", str(blank)), 2, "run 'diskhb format")
    p = str(tmp_path / "r.img")
    assert fmt(p, "--slots", "64").returncode == 0
    os.truncate(p, 8192)
    one_line_error(diskhb("status", p), 2, "region is truncated")
    one_line_error(diskhb("status", str(tmp_path / "nope.img")), 2, "no such file or device")
    one_line_error(diskhb("status", str(tmp_path)), 2, "is a directory")


def test_corrupt_superblock(tmp_path):
    p = tmp_path / "r.img"
    assert fmt(str(p)).returncode == 0
    data = bytearray(p.read_bytes())
    data[100] ^= 0xFF
    p.write_bytes(bytes(data))
    one_line_error(diskhb("status", str(p)), 2, "superblock checksum mismatch")


@needs_root
def test_missing_permission(tmp_path):
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) not installed")
    p = tmp_path / "r.img"
    assert fmt(str(p)).returncode == 0
    from cluster import DISKHB, ROOT, WITHOUT_DAC, keep_from_root
    keep_from_root(str(p))
    cmd = WITHOUT_DAC
    r = subprocess.run(cmd + DISKHB + ["status", str(p)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    one_line_error(r, 2, "permission denied")
    r = subprocess.run(cmd + DISKHB + ["format", str(p), "--cluster", "x", "--force"], capture_output=True,
                       text=True, cwd=ROOT, timeout=60)
    one_line_error(r, 2, "permission denied")


def test_config_mistakes_are_one_line(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[node]\nname = "a"\nid = 1\nbogus = 1\n[[region]]\ntype = "disk"\npath = "/x"\n')
    one_line_error(diskhb("run", "--config", str(cfg)), 2, "'node.bogus': unknown key")
    cfg.write_text('[node]\nname = "a"\nid = 5000\n[[region]]\ntype = "disk"\npath = "/x"\n')
    one_line_error(diskhb("run", "--config", str(cfg)), 2, "'node.id': 5000 out of range")
    p = str(tmp_path / "r.img")
    assert fmt(p).returncode == 0
    cfg.write_text(f'[node]\nname = "a"\nid = 1\n[cluster]\nname = "other"\n[[region]]\ntype = "disk"\npath = "{p}"\n'
                   '[metrics]\nlisten = ""\n')
    one_line_error(diskhb("run", "--config", str(cfg)), 2, "belongs to cluster 'test'")
    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(1 << 20))
    cfg.write_text(f'[node]\nname = "a"\nid = 1\n[[region]]\ntype = "disk"\npath = "{blank}"\n')
    one_line_error(diskhb("run", "--config", str(cfg)), 2, "no diskhb superblock")


def test_dump_decodes_every_structure(tmp_path):
    p = str(tmp_path / "r.img")
    assert fmt(p, "--slots", "4", "--interval-ms", "100", "--dead-ms", "1000").returncode == 0
    c = Cluster(str(tmp_path), p)
    try:
        c.start(2)
        c.wait_state(2, 2, "alive")
    finally:
        c.stop_all()
    out = diskhb("dump", p).stdout
    assert "cluster: test" in out and "slot_count: 4" in out
    assert "slot 2 @" in out and "name='node2'" in out and "flags=left" in out
    out = diskhb("dump", p, "--slot", "2", "--raw").stdout
    assert "|SLOT" in out or "SLOT" in out  # the magic shows in the hexdump
    one_line_error(diskhb("dump", p, "--slot", "9"), 2, "--slot 9 out of range")


def test_watch_refreshes(tmp_path):
    p = str(tmp_path / "r.img")
    assert fmt(p).returncode == 0
    r = diskhb("status", p, "--watch", "--count", "2", "--sample-ms", "0")
    assert r.returncode == 0 and r.stdout.count("cluster test") == 2


def test_4096_byte_sectors(tmp_path):
    p = str(tmp_path / "r.img")
    r = fmt(p, "--sector-size", "4096", "--slots", "8", "--interval-ms", "100", "--dead-ms", "1000")
    assert "of 4096 bytes" in r.stdout
    c = Cluster(str(tmp_path), p)
    try:
        c.start(1)
        c.start(2)
        c.wait_state(1, 2, "alive")
        c.wait_state(2, 1, "alive")
    finally:
        c.stop_all()


@pytest.fixture
def loop_device(tmp_path):
    if os.geteuid() != 0 or not shutil.which("losetup"):
        pytest.skip("needs root and losetup (util-linux) for loop devices")
    made = []

    def make(sector_size: int) -> str:
        img = tmp_path / f"loop{sector_size}.img"
        subprocess.run(["truncate", "-s", "8M", str(img)], check=True)
        dev = subprocess.run(["losetup", "--sector-size", str(sector_size), "-f", "--show", str(img)],
                             check=True, capture_output=True, text=True).stdout.strip()
        made.append(dev)
        return dev

    try:
        yield make
    finally:
        for dev in made:
            subprocess.run(["losetup", "-d", dev], capture_output=True)


@needs_root
@pytest.mark.parametrize("sector", [512, 4096])
def test_loop_device_region(tmp_path, loop_device, sector):
    dev = loop_device(sector)
    r = fmt(dev, "--slots", "8", "--interval-ms", "100", "--dead-ms", "1000")
    assert r.returncode == 0, r.stderr
    assert f"of {sector} bytes" in r.stdout  # the device's sector size, detected
    if sector == 4096:
        one_line_error(fmt(dev, "--sector-size", "512", "--force"), 2, "4096-byte sectors")
    c = Cluster(str(tmp_path), dev)
    try:
        c.start(1)
        c.start(2)
        c.wait_state(1, 2, "alive")
        c.kill(2)
        c.wait_state(1, 2, "dead", timeout_s=10)
    finally:
        c.stop_all()
    view = json.loads(diskhb("status", dev, "--json", "--no-daemon").stdout)
    assert {n["id"]: n["state"] for n in view["nodes"]} == {1: "left", 2: "dead"}


@needs_root
def test_daemons_started_by_region_uuid_beat_on_its_device(tmp_path, loop_device):
    """[[region]] path = "uuid:..." (every node's config alike, whatever the device's name on it):
    resolved at start to the loop device, logged, and beaten on; status, dump and mmp take it too."""
    dev = loop_device(512)
    r = fmt(dev, "--slots", "8", "--interval-ms", "100", "--dead-ms", "1000")
    assert r.returncode == 0, r.stderr
    uuid = r.stdout.strip().rsplit("uuid ", 1)[1]
    spec = f"uuid:{uuid}"
    c = Cluster(str(tmp_path), spec)
    try:
        c.start(1, extra=f'[[resource]]\nname = "ost0"\nregion = "{spec}"\n')
        c.start(2)
        c.wait_state(1, 2, "alive")
        c.wait_state(2, 1, "alive")
        for node in (1, 2):
            assert f"region disk:{spec}: {spec} is {dev}: the only device carrying it among " in c.log(node)
        view = json.loads(diskhb("status", spec, "--json", "--run-dir", c.run_dir).stdout)
        assert view["source"] == "daemon" and [r["path"] for r in view["regions"]] == [dev]
        assert {n["id"]: n["state"] for n in view["nodes"]} == {1: "alive", 2: "alive"}
        r = diskhb("mmp", "status", "--config", c.config(1))
        assert r.returncode == 0 and r.stdout.startswith(f"{dev}:"), r.stderr
    finally:
        c.stop_all()
    view = json.loads(diskhb("status", spec, "--json", "--no-daemon").stdout)
    assert view["path"] == dev and {n["id"]: n["state"] for n in view["nodes"]} == {1: "left", 2: "left"}


@needs_root
def test_a_daemon_whose_region_uuid_matches_no_device_refuses_in_one_line(tmp_path, loop_device):
    missing = "4f37125d-2ed9-4df7-96b0-22e12bde87d4"
    c = Cluster(str(tmp_path), f"uuid:{missing}")
    r = diskhb("run", "--config", c.config(1))
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"diskhb: error: uuid:{missing}: no block device carries this region (")
    assert "Traceback" not in r.stderr
