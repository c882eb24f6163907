"""`diskhb mmp ...` end to end through the real CLI: every command, its exit codes, bad input
answered in one line with nothing overwritten, the FSCK sentinel, a corrupt block, `mmp run`,
a stale holder of our own, and `acquire/release --config` handed to this node's daemon.

Exit codes (diskhb/mmp/cli.py): 0 ok, 1 safe refusal, 2 bad input, 3 lost while held.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from cluster import DISKHB, ROOT, Cluster, diskhb, wait_until

INTERVAL_MS = 200
CLASSIC_S = (2 * INTERVAL_MS + 1000) / 1000  # the classic watch at this interval


def one_line_error(r: subprocess.CompletedProcess, code: int, needle: str) -> None:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert needle in lines[0], (needle, lines[0])


def digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def block(region: str, resource: str = "db") -> dict:
    r = diskhb("mmp", "status", resource, "--region", region, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["resources"][0]


@pytest.fixture
def region(disk_tmp_path):
    path = os.path.join(disk_tmp_path, "region.img")
    r = diskhb("format", path, "--cluster", "test", "--slots", "4", "--interval-ms", "100", "--dead-ms", "1000")
    assert r.returncode == 0, r.stderr
    return path


@pytest.fixture
def procs():
    """Background CLI processes, always stopped (by PID) after the test."""
    started: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        p = subprocess.Popen(DISKHB + [str(a) for a in args], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
        started.append(p)
        return p

    try:
        yield start
    finally:
        for p in started:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGCONT)
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


def hold(start, region: str, node_id: int, *extra: str) -> subprocess.Popen:
    """A foreground `mmp acquire` of db; returns once the block shows it held."""
    p = start("mmp", "acquire", "db", "--region", region, "--node-id", node_id, "--interval-ms", INTERVAL_MS,
              "--run-dir", os.path.join(os.path.dirname(region), "run"), *extra)
    wait_until(lambda: p.poll() is not None or block_state(region) == "held", 15, "the foreground hold")
    assert p.poll() is None, p.communicate()
    return p


def block_state(region: str) -> str | None:
    r = diskhb("mmp", "status", "--region", region, "--json")
    rows = [x for x in json.loads(r.stdout)["resources"] if x.get("resource") == "db"]
    return rows[0]["state"] if rows else None


def test_run_exits_with_the_command_code_and_leaves_the_block_clean(region):
    r = diskhb("mmp", "run", "db", "--region", region, "--node-id", "1", "--create", "--interval-ms", INTERVAL_MS,
               "--", "sh", "-c", 'echo "epoch=$DISKHB_MMP_EPOCH resource=$DISKHB_MMP_RESOURCE"; exit 7')
    assert r.returncode == 7, r.stderr
    assert "epoch=1 resource=db" in r.stdout
    b = block(region)
    assert (b["state"], b["epoch"], b["holder"]["id"], b["seq_hex"]) == ("clean", 1, 1, "0xff4d4d50")
    # Every acquisition is a new epoch (the fencing token), whoever takes it.
    r = diskhb("mmp", "run", "db", "--region", region, "--node-id", "2", "--", "sh", "-c", "echo $DISKHB_MMP_EPOCH")
    assert (r.returncode, r.stdout.strip()) == (0, "2"), r.stderr
    assert block(region)["epoch"] == 2
    # A command that cannot start releases what was taken for it.
    r = diskhb("mmp", "run", "db", "--region", region, "--node-id", "2", "--", "/no/such/program")
    one_line_error(r, 2, "cannot run '/no/such/program'")
    assert block(region)["state"] == "clean"


def test_a_live_holder_is_refused_by_name_and_released_from_another_command(region, procs):
    assert diskhb("mmp", "run", "db", "--region", region, "--node-id", "1", "--create", "--", "true").returncode == 0
    holder = hold(procs, region, 1)
    b = block(region)
    assert b["state"] == "held" and b["holder"]["id"] == 1
    t0 = time.monotonic()
    r = diskhb("mmp", "acquire", "db", "--region", region, "--node-id", "2", "--interval-ms", INTERVAL_MS)
    took_s = time.monotonic() - t0
    one_line_error(r, 1, "(node 1,")
    assert took_s < CLASSIC_S + 2.0, took_s  # classic path: one watch, then the refusal
    r = diskhb("mmp", "run", "db", "--region", region, "--node-id", "3", "--", "true")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    # `release` from another shell: the holder process writes CLEAN and exits 0.
    r = diskhb("mmp", "release", "db", "--region", region, "--node-id", "1",
               "--run-dir", os.path.join(os.path.dirname(region), "run"))
    assert r.returncode == 0 and "released db" in r.stderr, r.stderr
    assert holder.wait(10) == 0
    assert block(region)["state"] == "clean"
    # Releasing what is not held says so and changes nothing.
    before = digest(region)
    r = diskhb("mmp", "release", "db", "--region", region, "--node-id", "1")
    assert r.returncode == 0 and "not held" in r.stderr
    assert digest(region) == before


def test_release_of_another_nodes_resource_is_refused(region, procs):
    assert diskhb("mmp", "run", "db", "--region", region, "--node-id", "1", "--create", "--", "true").returncode == 0
    holder = hold(procs, region, 1)
    one_line_error(diskhb("mmp", "release", "db", "--region", region, "--node-id", "2"), 1, "not by this node")
    assert holder.poll() is None and block(region)["state"] == "held"


def test_our_own_stale_generation_is_refused_until_release_force(region, procs):
    assert diskhb("mmp", "run", "db", "--region", region, "--node-id", "1", "--create", "--", "true").returncode == 0
    holder = hold(procs, region, 1)
    os.killpg(holder.pid, signal.SIGKILL)  # the holder dies without a word: the block stays "held"
    holder.wait(10)
    stale = block(region)
    assert stale["state"] == "held"
    run_dir = os.path.join(os.path.dirname(region), "run")
    r = diskhb("mmp", "release", "db", "--region", region, "--node-id", "1", "--run-dir", run_dir)
    one_line_error(r, 1, "--force")
    assert block(region)["seq"] == stale["seq"]  # nothing written
    r = diskhb("mmp", "release", "db", "--region", region, "--node-id", "1", "--run-dir", run_dir, "--force")
    assert r.returncode == 0 and "took over the stale generation" in r.stderr, r.stderr
    b = block(region)
    assert b["state"] == "clean" and b["epoch"] == stale["epoch"] + 1


def test_fsck_mark_blocks_everyone_until_clear(region):
    assert diskhb("mmp", "run", "db", "--region", region, "--node-id", "1", "--create", "--", "true").returncode == 0
    r = diskhb("mmp", "fsck", "db", "--region", region, "--node-id", "1")
    assert r.returncode == 0 and "marked FSCK" in r.stderr, r.stderr
    assert block(region)["state"] == "fsck"
    before = digest(region)
    one_line_error(diskhb("mmp", "run", "db", "--region", region, "--node-id", "2", "--", "true"), 1, "FSCK")
    one_line_error(diskhb("mmp", "acquire", "db", "--region", region, "--node-id", "1"), 1, "FSCK")
    one_line_error(diskhb("mmp", "fsck", "db", "--region", region, "--node-id", "2"), 1, "FSCK")
    one_line_error(diskhb("mmp", "release", "db", "--region", region, "--node-id", "1"), 1, "mmp clear db")
    assert digest(region) == before  # every refusal left the disk alone
    r = diskhb("mmp", "clear", "db", "--region", region, "--node-id", "2")
    assert r.returncode == 0 and "CLEAN again" in r.stderr, r.stderr
    assert block(region)["state"] == "clean"
    one_line_error(diskhb("mmp", "clear", "db", "--region", region, "--node-id", "2"), 1, "not marked FSCK")


def test_a_corrupt_block_is_reported_and_never_overwritten(region):
    from diskhb.mmp.store import open_region_target

    for name in ("db", "web"):
        r = diskhb("mmp", "run", name, "--region", region, "--node-id", "1", "--create", "--", "true")
        assert r.returncode == 0, r.stderr
    t = open_region_target(region, writable=False)
    base = t.blocks[0].base
    t.close()
    with open(region, "r+b") as f:
        f.seek(base + 40)
        f.write(b"\xde\xad\xbe\xef")  # inside the seq sector: its crc32c no longer matches
    r = diskhb("mmp", "status", "--region", region, "--json")
    assert r.returncode == 0
    row = json.loads(r.stdout)["resources"][0]
    assert row["state"] == "corrupt" and row["error"], row
    assert block(region, "web")["block"] == 1
    before = digest(region)
    # The block may be db's: neither acquiring nor re-creating db may touch it or bind db elsewhere.
    for extra in ((), ("--create",)):
        r = diskhb("mmp", "acquire", "db", "--region", region, "--node-id", "2", *extra)
        one_line_error(r, 2, "nothing was written")
        assert digest(region) == before
    # Nor any new name: block 0 may be bound to it, and two blocks for one name are two guards.
    one_line_error(diskhb("mmp", "run", "logs", "--region", region, "--node-id", "2", "--create", "--", "true"), 2,
                   "nothing was written")
    # A resource bound to a readable block goes on working.
    r = diskhb("mmp", "run", "web", "--region", region, "--node-id", "2", "--", "true")
    assert r.returncode == 0, r.stderr
    assert block(region, "web")["epoch"] == 2
    with open(region, "rb") as f:
        f.seek(base + 40)
        assert f.read(4) == b"\xde\xad\xbe\xef"


def test_bad_input_is_one_line_and_changes_nothing(region, disk_tmp_path):
    before = digest(region)
    cases = [
        (("mmp", "status", "nosuch", "--region", region), 2, "unknown resource 'nosuch'"),
        (("mmp", "acquire", "nosuch", "--region", region, "--node-id", "1"), 2, "nosuch"),
        (("mmp", "release", "nosuch", "--region", region, "--node-id", "1"), 2, "unknown resource 'nosuch'"),
        (("mmp", "acquire", "db", "--region", region), 2, "--node-id"),
        (("mmp", "acquire", "db", "--region", region, "--node-id", "9", "--create"), 2, "beyond its 4 ballot slots"),
        (("mmp", "acquire", "bad name!", "--region", region, "--node-id", "1", "--create"), 2, "resource name"),
        (("mmp", "acquire", "db", "--region", region, "--node-id", "1", "--create", "--interval-ms", "5"), 2,
         "--interval-ms 5"),
        (("mmp", "status", "--region", region, "--device", region, "--offset", "0"), 2, "exactly one of"),
        (("mmp", "status", "--device", region), 2, "go together"),
        (("mmp", "status"), 2, "exactly one of"),
        (("mmp", "status", "--region", os.path.join(disk_tmp_path, "missing.img")), 2, "missing.img"),
        (("mmp", "inspect", region), 2, "error"),  # a diskhb region is not ext4
    ]
    for args, code, needle in cases:
        r = diskhb(*args)
        if args[1] == "inspect":  # reports on stdout, e2mmpstatus style
            assert r.returncode == code and needle in r.stdout and "Traceback" not in r.stderr, r
            continue
        one_line_error(r, code, needle)
    blank = os.path.join(disk_tmp_path, "blank.img")
    with open(blank, "wb") as f:
        f.truncate(1 << 20)
    one_line_error(diskhb("mmp", "status", "--region", blank), 2, "blank.img")
    one_line_error(diskhb("mmp", "acquire", "db", "--region", blank, "--node-id", "1", "--create"), 2, "blank.img")
    assert digest(blank) == digest(blank) and open(blank, "rb").read() == bytes(1 << 20)
    assert digest(region) == before


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv (util-linux)")
def test_no_permission_is_one_line(region):
    from cluster import WITHOUT_DAC, keep_from_root

    keep_from_root(region)
    r = subprocess.run(WITHOUT_DAC + DISKHB + ["mmp", "acquire", "db", "--region", region, "--node-id", "1", "--create",
                                       "--run-dir", "/tmp"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    one_line_error(r, 2, "permission denied")


def test_standalone_block_on_any_device(disk_tmp_path):
    dev = os.path.join(disk_tmp_path, "dev.img")
    with open(dev, "wb") as f:
        f.truncate(1 << 20)
    r = diskhb("mmp", "init", "lun7", "--device", dev, "--offset", "8192", "--slots", "2")
    assert r.returncode == 0, r.stderr
    where = ("--device", dev, "--offset", "8192")
    r = diskhb("mmp", "run", "lun7", *where, "--node-id", "2", "--", "sh", "-c", "echo $DISKHB_MMP_EPOCH")
    assert (r.returncode, r.stdout.strip()) == (0, "1"), r.stderr
    r = diskhb("mmp", "status", "lun7", *where, "--json")
    row = json.loads(r.stdout)["resources"][0]
    assert (row["resource"], row["state"], row["epoch"]) == ("lun7", "clean", 1)
    before = digest(dev)
    one_line_error(diskhb("mmp", "init", "lun7", "--device", dev, "--offset", "8192"), 2, "--force")
    one_line_error(diskhb("mmp", "run", "lun7", *where, "--node-id", "3", "--", "true"), 2, "ballot slots")
    one_line_error(diskhb("mmp", "status", "--device", dev, "--offset", "0"), 2, "")
    assert digest(dev) == before


# -- with daemons ----------------------------------------------------------------------------

RESOURCE = f'[[resource]]\nname = "db"\ninterval_ms = 2000\non_loss = ["none"]\n'
DAEMON_CLASSIC_S = (2 * 2000 + 1000) / 1000


@pytest.fixture
def cluster(region):
    c = Cluster(os.path.dirname(region), region)
    try:
        for i in (1, 2):
            c.start(i, extra=RESOURCE)
        c.wait_state(1, 2, "alive")
        c.wait_state(2, 1, "alive")
        yield c
    finally:
        c.stop_all()


def test_acquire_and_release_with_config_go_through_the_daemon(cluster):
    c = cluster
    cfg1, cfg2 = c.config(1, extra=RESOURCE), c.config(2, extra=RESOURCE)
    r = diskhb("mmp", "acquire", "db", "--config", cfg1, timeout=60)
    assert r.returncode == 0 and "held by the daemon" in r.stderr, r.stderr
    b = block(c.region)
    gen1 = c.view(1)["node"]["generation"]
    assert b["state"] == "held" and b["holder"]["id"] == 1 and int(b["holder"]["generation"], 16) == int(gen1, 16)
    assert [h["resource"] for h in c.view(1)["mmp"]] == ["db"]
    # Node 2's daemon knows node 1's daemon beats under that generation: refused at once.
    t0 = time.monotonic()
    one_line_error(diskhb("mmp", "acquire", "db", "--config", cfg2), 1, "node1")
    assert time.monotonic() - t0 < DAEMON_CLASSIC_S - 1.5
    # A foreground claimant on node 3 (no daemon of its own) asks any daemon serving the region.
    t0 = time.monotonic()
    r = diskhb("mmp", "run", "db", "--region", c.region, "--node-id", "3", "--run-dir", c.run_dir, "--", "true")
    one_line_error(r, 1, "node1")
    assert time.monotonic() - t0 < DAEMON_CLASSIC_S - 1.5
    # Ad-hoc loss settings cannot be handed to the daemon.
    one_line_error(diskhb("mmp", "acquire", "db", "--config", cfg1, "--on-loss-command", "true"), 2, "--foreground")
    r = diskhb("mmp", "release", "db", "--config", cfg1, timeout=60)
    assert r.returncode == 0 and "held by the daemon" in r.stderr, r.stderr
    assert block(c.region)["state"] == "clean" and c.view(1)["mmp"] == []
    r = diskhb("mmp", "acquire", "db", "--config", cfg2, timeout=60)
    assert r.returncode == 0, r.stderr
    assert block(c.region)["holder"]["id"] == 2 and [h["resource"] for h in c.view(2)["mmp"]] == ["db"]


def test_acquire_foreground_with_a_daemon_running(cluster, procs):
    c = cluster
    cfg1 = c.config(1, extra=RESOURCE)
    p = procs("mmp", "acquire", "db", "--config", cfg1, "--foreground", "--interval-ms", "500")
    wait_until(lambda: p.poll() is not None or block_state(c.region) == "held", 20, "the foreground hold")
    assert p.poll() is None, p.communicate()
    assert c.view(1)["mmp"] == []  # this process holds it, not the daemon
    gen1 = c.view(1)["node"]["generation"]
    assert int(block(c.region)["holder"]["generation"], 16) != int(gen1, 16)
    p.send_signal(signal.SIGTERM)
    assert p.wait(15) == 0
    assert block(c.region)["state"] == "clean"
