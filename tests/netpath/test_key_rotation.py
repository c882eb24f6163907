"""Key rotation on running daemons: SIGHUP re-reads key files; no step loses the network region.

The three documented steps (netpath.keys) applied to two live daemons, one node at a time; after
every step each daemon must still see the other on the network region, not only on the disk.
A bad key file on SIGHUP is refused with a log line and the old keys keep working.
"""

import os
import signal
import socket

import pytest

from cluster import Cluster, diskhb, wait_until
from netpath.keys import KEY_BYTES

pytestmark = pytest.mark.slow

NET = "lan"


def key_line(key_id: int) -> str:
    return f"{key_id} {os.urandom(KEY_BYTES).hex()}\n"


def write_keys(path: str, *lines: str) -> None:
    tmp = path + ".new"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write("".join(lines))
    os.replace(tmp, path)  # the daemon's reader never sees half a file


def net_state(c: Cluster, observer: int, node_id: int) -> str | None:
    v = c.view(observer)
    for n in (v or {}).get("nodes", []):
        if n["id"] == node_id:
            return n["regions"].get(NET, {}).get("state")
    return None


def sees_on_net(c: Cluster, a: int, b: int) -> bool:
    return net_state(c, a, b) == "alive" and net_state(c, b, a) == "alive"


@pytest.fixture
def pair(tmp_path):
    region = str(tmp_path / "region.img")
    r = diskhb("format", region, "--cluster", "test", "--slots", "4", "--interval-ms", "100", "--dead-ms", "1000")
    assert r.returncode == 0, r.stderr
    c = Cluster(str(tmp_path), region)
    old = key_line(1)
    keys = {i: str(tmp_path / f"node{i}.key") for i in (1, 2)}
    for path in keys.values():
        write_keys(path, old)
    udp = {1: free_udp_port(), 2: free_udp_port()}
    try:
        for i, j in ((1, 2), (2, 1)):
            c.start(i, extra=f'[[region]]\ntype = "net"\nname = "{NET}"\nbind = "127.0.0.1"\nport = {udp[i]}\n'
                             f'peers = ["127.0.0.1:{udp[j]}"]\nkey = "{keys[i]}"\n')
        wait_until(lambda: sees_on_net(c, 1, 2), 15, "both nodes to see each other on the network")
        yield c, keys, old
    finally:
        c.stop_all()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hup(c: Cluster, i: int) -> None:
    c.procs[i].send_signal(signal.SIGHUP)


def test_three_step_rotation_keeps_the_network_region(pair):
    c, keys, old = pair
    new = key_line(2)
    steps = ((old, new), (new, old), (new,))
    for lines in steps:
        for i in (1, 2):  # one node at a time: every mix of neighbouring steps must work
            write_keys(keys[i], *lines)
            hup(c, i)
            wait_until(lambda: f"keys {','.join(line.split()[0] for line in lines)} loaded" in c.log(i), 10,
                       f"node {i} to load step {lines!r}")
            wait_until(lambda: sees_on_net(c, 1, 2), 10, "the network region to keep both nodes")
    for i in (1, 2):
        assert c.procs[i].poll() is None
        assert "Traceback" not in c.log(i)


def test_a_bad_key_file_on_reload_keeps_the_old_keys(pair):
    c, keys, old = pair
    os.chmod(keys[1], 0o644)  # readable by others: refused
    hup(c, 1)
    wait_until(lambda: "key reload refused, old keys kept" in c.log(1), 10, "the refusal to be logged")
    os.chmod(keys[1], 0o600)
    write_keys(keys[2], key_line(3))  # node 2 moves to a key node 1 never had
    hup(c, 2)
    wait_until(lambda: net_state(c, 1, 2) == "dead", 10, "node 1 to stop accepting node 2's packets")
    assert c.state_of(1, 2) == "alive"  # the disk still sees it: losing one region is never fatal
    write_keys(keys[2], old)
    hup(c, 2)
    wait_until(lambda: sees_on_net(c, 1, 2), 10, "the network region to recover")
