"""NetRegion end to end over loopback only (127.0.0.0/8, ::1, multicast and broadcast pinned to lo).

Every socket is closed in a fixture finaliser; waits are bounded polls. Beats use a virtual
`now_ms`; only datagram delivery uses real (bounded) waiting.

A region reports its own I/O as IoSubmitted/IoCompleted out of poll(); the node core feeds them
to an OwnIoHealth (diskhb.core.region_health). These tests do the same (`polled`, `feed`): the
health they assert on is built only from what poll() returned.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

import regionio
from prometheus_client import REGISTRY

from diskhb.core.node import DuplicateId, IoCompleted, IoSubmitted
from diskhb.core.region_health import OwnIoHealth
from diskhb.core.types import Beat, SlotFlag
from diskhb.errors import OperatorError
from diskhb.regions import net as net_mod
from diskhb.regions.base import OwnBeat
from diskhb.regions.net import NetRegion
from netpath import wire
from netpath.keys import format_key_line, generate_key_file, load_key_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WAIT_S = 5.0
IO_TIMEOUT_MS = 500
def health(region, io_timeout_ms: int = IO_TIMEOUT_MS) -> OwnIoHealth:
    return regionio.health(region, io_timeout_ms)


def polled(region: NetRegion, now_ms: int) -> list:
    """region.poll(now_ms) with its own I/O fed to its health: the samples it returned."""
    return regionio.feed(health(region), region.poll(now_ms))


def free_udp_port(host: str = "127.0.0.1") -> int:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture
def key(tmp_path) -> str:
    path = str(tmp_path / "authkey")
    generate_key_file(path, 1)
    return path


@pytest.fixture
def regions():
    """Start NetRegions through this; all are stopped/closed at the end, even on failure."""
    made: list[NetRegion] = []

    def make(name: str, node_id: int, io_timeout_ms: int = IO_TIMEOUT_MS, **kw) -> NetRegion:
        r = NetRegion(name, cluster="test-cluster", node_id=node_id, **kw)
        made.append(r)
        health(r, io_timeout_ms)
        r.start(0)
        return r

    try:
        yield make
    finally:
        for r in made:
            r.close()


class Sender:
    """Our node's side of the tick: generation, seq and a virtual monotonic clock."""

    def __init__(self, node_id: int, generation: int, mono0: int = 1_000_000):
        self.node_id, self.generation, self.seq, self.mono = node_id, generation, 0, mono0

    def beat(self, flags: int = SlotFlag.ACTIVE, view=None) -> OwnBeat:
        self.seq += 1
        self.mono += 200
        return OwnBeat(self.node_id, f"node{self.node_id}", self.generation, self.seq, int(flags), self.mono,
                       view or {})


def poll_until(region: NetRegion, now_ms: int, want: int, timeout_s: float = WAIT_S) -> list:
    """Poll until `want` samples came (own I/O fed to the region's health on the way)."""
    got: list = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        got += polled(region, now_ms)
        if len(got) < want:
            time.sleep(0.002)
    return got


def exchange(a: NetRegion, sa: Sender, b: NetRegion, sb: Sender, rounds: int = 3, now0: int = 0):
    seen_a, seen_b = [], []
    for i in range(rounds):
        now = now0 + 200 * (i + 1)
        a.publish(now, sa.beat(), now)
        b.publish(now, sb.beat(), now)
        seen_b += poll_until(b, now, 1)
        seen_a += poll_until(a, now, 1)
    return seen_a, seen_b


def rejected_metric(region: str, reason: str) -> float:
    return REGISTRY.get_sample_value("diskhb_net_packets_rejected_total", {"region": region, "reason": reason}) or 0


def test_unicast_pair_on_two_loopback_addresses_same_port(regions, key):
    port = free_udp_port()
    a = regions("lan-u4", 1, bind="127.0.0.1", port=port, peers=["127.0.0.2"], key=key)
    b = regions("lan-u4", 2, bind="127.0.0.2", port=port, peers=["127.0.0.1"], key=key)
    sa, sb = Sender(1, 0xA1), Sender(2, 0xB2)
    assert not health(a).healthy and health(a).reason == "not yet written"
    seen_a, seen_b = exchange(a, sa, b, sb, rounds=4)
    assert [x.seq for x in seen_b] == [1, 2, 3, 4] and [x.seq for x in seen_a] == [1, 2, 3, 4]
    assert seen_b[0] == Beat(node_id=1, region="lan-u4", generation=0xA1, seq=1, flags=1, name="node1",
                              sees=frozenset())  # it sees nobody yet: its view says so
    health(a).tick(1000)
    assert health(a).healthy
    assert a.sent_total == 4 and b.receiver.accepted_total == 4
    assert sum(a.rejected.values()) == 0 and sum(b.rejected.values()) == 0


def test_views_are_carried_and_exposed(regions, key):
    pa, pb = free_udp_port(), free_udp_port()
    a = regions("lan-view", 1, bind="127.0.0.1", port=pa, peers=[f"127.0.0.1:{pb}"], key=key)
    b = regions("lan-view", 2, bind="127.0.0.1", port=pb, peers=[f"127.0.0.1:{pa}"], key=key)
    a.publish(10, Sender(1, 5).beat(view={"disk:/dev/sdb": (2, 3), "lan-view": (2,)}), 10)
    assert poll_until(b, 10, 1)
    assert b.views == {1: {"disk:/dev/sdb": (2, 3), "lan-view": (2,)}}


def test_unicast_over_ipv6_loopback(regions, key):
    pa, pb = free_udp_port("::1"), free_udp_port("::1")
    a = regions("lan-u6", 1, bind="::1", port=pa, peers=[f"[::1]:{pb}"], key=key)
    b = regions("lan-u6", 2, bind="::1", port=pb, peers=[f"[::1]:{pa}"], key=key)
    seen_a, seen_b = exchange(a, Sender(1, 11), b, Sender(2, 22))
    assert [x.seq for x in seen_a] == [1, 2, 3] and [x.node_id for x in seen_b] == [1, 1, 1]


def test_multicast_ipv4_on_loopback(regions, key):
    port = free_udp_port()
    # ttl 0: the datagrams cannot leave this host even in theory; bind=lo pins the link to loopback.
    kw = dict(bind="lo", port=port, group="239.255.77.1", ttl=0, key=key)
    a = regions("lan-m4", 1, **kw)
    b = regions("lan-m4", 2, **kw)
    seen_a, seen_b = exchange(a, Sender(1, 1), b, Sender(2, 2))
    assert [x.node_id for x in seen_a] == [2, 2, 2] and [x.node_id for x in seen_b] == [1, 1, 1]
    assert a.receiver.own_looped >= 1  # our own datagrams come back and are dropped silently
    assert sum(a.rejected.values()) == 0


def test_broadcast_on_loopback(regions, key):
    port = free_udp_port()
    kw = dict(bind="lo", port=port, broadcast="127.255.255.255", key=key)
    a = regions("lan-b4", 1, **kw)
    b = regions("lan-b4", 2, **kw)
    seen_a, seen_b = exchange(a, Sender(1, 1), b, Sender(2, 2))
    assert [x.seq for x in seen_a] == [1, 2, 3] and [x.seq for x in seen_b] == [1, 2, 3]
    assert b.receiver.own_looped >= 1


_V6_MCAST_CHILD = r"""
import json, subprocess, sys, time
def sh(*a):
    subprocess.run(list(a), check=True, capture_output=True)
# A veth pair inside this throwaway namespace: hb0 and hb1 are two ends of one cable.
sh("ip", "link", "set", "lo", "up")
sh("ip", "link", "add", "hb0", "type", "veth", "peer", "name", "hb1")
sh("ip", "link", "set", "hb0", "up")
sh("ip", "link", "set", "hb1", "up")
for _ in range(200):  # bounded: link-local addresses leave duplicate address detection
    out = subprocess.run(["ip", "-6", "addr"], capture_output=True, text=True).stdout
    if out.count("fe80::") >= 2 and "tentative" not in out:
        break
    time.sleep(0.05)
from diskhb.core.types import Beat
from diskhb.regions.net import NetRegion
from diskhb.regions.base import OwnBeat
key, port = sys.argv[1], int(sys.argv[2])
a = NetRegion("m6", cluster="c", node_id=1, bind="hb0", port=port, group="ff02::1:77", key=key)
b = NetRegion("m6", cluster="c", node_id=2, bind="hb1", port=port, group="ff02::1:77", key=key)
a.start(0); b.start(0)
got = []
for i in range(1, 4):
    a.publish(i, OwnBeat(1, "a", 7, i, 1, 1000 + 200 * i, {}), 0)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        new = [x for x in b.poll(i) if isinstance(x, Beat)]
        got += [x.seq for x in new]
        if new:
            break
        time.sleep(0.002)
a.poll(9)
print(json.dumps({"seqs": got, "rejected": sum(b.rejected.values()), "a_got": a.receiver.accepted_total}))
"""


@pytest.mark.root
def test_multicast_ipv6_over_a_veth_pair_in_a_private_network_namespace(key):
    """Host lo cannot carry IPv6 multicast; a veth pair in a namespace that dies with the process can."""
    if os.geteuid() != 0:
        pytest.skip("needs root for unshare --net")
    if not (shutil.which("unshare") and shutil.which("ip")):
        pytest.skip("needs unshare (util-linux) and ip (iproute2)")
    out = subprocess.run(["unshare", "--net", sys.executable, "-c", _V6_MCAST_CHILD, key, "7001"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    if out.returncode != 0 and "Operation not supported" in out.stderr and "veth" in out.stderr:
        pytest.skip("kernel without veth")
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"seqs": [1, 2, 3], "rejected": 0, "a_got": 0}


def test_every_bad_packet_is_dropped_and_counted_by_reason(regions, key, tmp_path):
    pa, pb = free_udp_port(), free_udp_port()
    tap = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # records what A really sends, and injects
    tap.bind(("127.0.0.1", 0))
    try:
        tport = tap.getsockname()[1]
        name = "lan-rejects"
        a = regions(name, 1, bind="127.0.0.1", port=pa, peers=[f"127.0.0.1:{pb}", f"127.0.0.1:{tport}"], key=key)
        b = regions(name, 2, bind="127.0.0.1", port=pb, peers=[f"127.0.0.1:{pa}"], key=key)
        sa = Sender(1, 0xAAAA)
        recorded = []
        for i in range(1, 4):
            a.publish(i * 200, sa.beat(), i * 200)
            assert len(poll_until(b, i * 200, 1)) == 1
            tap.settimeout(WAIT_S)
            recorded.append(tap.recvfrom(2048)[0])
        before = {r: rejected_metric(name, r) for r in wire.REASONS}

        ring = load_key_file(key)
        other = tmp_path / "other"
        generate_key_file(str(other), 1)
        cid = wire.cluster_id("test-cluster")

        def pkt(ring_, cluster=cid, node_id=1, gen=0xAAAA, seq=99, mono=2_000_000):
            return wire.encode(wire.Packet(cluster_id=cluster, node_id=node_id, generation=gen, seq=seq,
                                           mono_ms=mono), ring_)

        injected = {
            "auth": [pkt(load_key_file(str(other)))],  # forged: right key id, wrong key
            "replay": [recorded[0], recorded[1]],
            "duplicate": [recorded[2]],
            "truncated": [recorded[2][:-5]],
            "oversize": [recorded[2] + bytes(1500)],
            "cluster": [pkt(ring, cluster=wire.cluster_id("another-cluster"))],
            "key_id": [wire.encode(wire.Packet(cluster_id=cid, node_id=1, generation=5, seq=1, mono_ms=1),
                                   type(ring)(9, {9: ring.key(1)}))],
            "magic": [b"hello, heartbeat"],
            "old_generation": [pkt(ring, gen=0xBBBB, seq=1, mono=5)],
            "own_id": [pkt(ring, node_id=2, gen=0xCCCC)],
            "format": [recorded[2] + b"\x00"],
        }
        total = 0
        for datas in injected.values():
            for d in datas:
                tap.sendto(d, ("127.0.0.1", pb))
                total += 1
        deadline = time.monotonic() + WAIT_S
        while sum(b.rejected.values()) < total and time.monotonic() < deadline:
            assert polled(b, 1000) == []  # nothing injected is ever believed
            time.sleep(0.002)
        for reason, datas in injected.items():
            assert b.rejected[reason] == len(datas), (reason, b.rejected)
            assert rejected_metric(name, reason) - before[reason] == len(datas), reason
        assert b.receiver.guard.current(1) == (0xAAAA, 3)
        # and the real sender is still believed afterwards
        a.publish(900, sa.beat(), 900)
        assert [x.seq for x in poll_until(b, 900, 1)] == [4]
    finally:
        tap.close()


def test_poll_is_bounded_per_call(regions, key, monkeypatch):
    monkeypatch.setattr(net_mod, "POLL_PACKETS_MAX", 5)
    port = free_udp_port()
    b = regions("lan-bound", 2, bind="127.0.0.1", port=port, peers=["127.0.0.1:9"], key=key)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(12):
            s.sendto(b"junk", ("127.0.0.1", port))
    deadline = time.monotonic() + WAIT_S
    while b.rejected["magic"] == 0 and time.monotonic() < deadline:
        b.poll(0)
        time.sleep(0.002)
    assert b.rejected["magic"] == 5  # the first poll that saw anything stopped at the bound
    while b.rejected["magic"] < 12 and time.monotonic() < deadline:
        b.poll(0)
        time.sleep(0.002)
    assert b.rejected["magic"] == 12


def test_key_rotation_with_two_ids_end_to_end(regions, tmp_path):
    k1, k2 = bytes(range(32)), bytes(range(100, 132))

    def keyfile(name: str, *lines) -> str:
        path = tmp_path / name
        path.write_text("".join(lines))
        os.chmod(path, 0o600)
        return str(path)

    step1 = keyfile("a", format_key_line(1, k1), format_key_line(2, k2))  # old signs, new accepted
    step2 = keyfile("b", format_key_line(2, k2), format_key_line(1, k1))  # new signs, old accepted
    new_only = keyfile("c", format_key_line(2, k2))
    pa, pb, pc = free_udp_port(), free_udp_port(), free_udp_port()
    a = regions("lan-rot", 1, bind="127.0.0.1", port=pa, peers=[f"127.0.0.1:{pb}", f"127.0.0.1:{pc}"], key=step1)
    b = regions("lan-rot", 2, bind="127.0.0.1", port=pb, peers=[f"127.0.0.1:{pa}"], key=step2)
    c = regions("lan-rot", 3, bind="127.0.0.1", port=pc, peers=[f"127.0.0.1:{pa}"], key=new_only)
    sa = Sender(1, 1)
    seen_a, seen_b = exchange(a, sa, b, Sender(2, 2))
    assert len(seen_a) == 3 and len(seen_b) == 3  # steps 1 and 2 talk both ways
    deadline = time.monotonic() + WAIT_S
    while c.rejected["key_id"] < 3 and time.monotonic() < deadline:
        assert polled(c, 700) == []
        time.sleep(0.002)
    assert c.rejected["key_id"] == 3  # a node already on the new key alone refuses key 1
    with open(step1, "w") as f:  # A moves to step 2 and reloads without a restart
        f.write(format_key_line(2, k2) + format_key_line(1, k1))
    a.reload_keys()
    a.publish(900, sa.beat(), 900)
    assert [x.node_id for x in poll_until(c, 900, 1)] == [1]
    assert [x.seq for x in poll_until(b, 900, 1)] == [4]
    os.chmod(step1, 0o644)
    with pytest.raises(OperatorError, match="chmod 600"):
        a.reload_keys()
    assert a.keys.signing_id == 2  # a bad reload keeps the keys in use


def test_send_errors_make_the_link_unhealthy_and_are_logged_once(regions, key, caplog):
    pa, pb = free_udp_port(), free_udp_port()
    # 127.255.255.255 without SO_BROADCAST: the kernel refuses every send there (EACCES).
    a = regions("lan-err", 1, bind="127.0.0.1", port=pa, peers=[f"127.0.0.1:{pb}", "127.255.255.255:9"], key=key)
    b = regions("lan-err", 2, bind="127.0.0.1", port=pb, peers=[f"127.0.0.1:{pa}"], key=key)
    sa = Sender(1, 1)
    caplog.set_level(logging.INFO, logger="diskhb.net")
    for i in range(1, 6):
        a.publish(i * 200, sa.beat(), i * 200)  # never raises
    polled(a, 1000)
    health(a).tick(1000)
    assert not health(a).healthy and "127.255.255.255:9" in health(a).reason and "EACCES" in health(a).reason
    assert len(poll_until(b, 1000, 5)) == 5  # the good destination still got every beat
    warnings = [r for r in caplog.records if "cannot send" in r.getMessage()]
    assert len(warnings) == 1
    assert a.send_errors_total == 5
    # the bad destination goes away (say, the route comes back): healthy again, logged once
    a.link.destinations, a.link.labels = a.link.destinations[:1], a.link.labels[:1]
    a._dest_errors["127.255.255.255:9"] = "x"
    a._note_dest("127.255.255.255:9", None)
    a.publish(1200, sa.beat(), 1200)
    polled(a, 1200)
    health(a).tick(1200)
    assert health(a).healthy
    assert any("works again" in r.getMessage() for r in caplog.records)


def test_stop_sends_the_final_beat_and_closes(regions, key):
    """The LEFT beat is an ordinary publish decided by the node core; close() then closes."""
    pa, pb = free_udp_port(), free_udp_port()
    a = regions("lan-stop", 1, bind="127.0.0.1", port=pa, peers=[f"127.0.0.1:{pb}"], key=key)
    b = regions("lan-stop", 2, bind="127.0.0.1", port=pb, peers=[f"127.0.0.1:{pa}"], key=key)
    sa = Sender(1, 1)
    a.publish(200, sa.beat(), 200)
    assert poll_until(b, 200, 1)
    polled(a, 200)
    a.publish(400, sa.beat(flags=SlotFlag.LEFT), 400)
    a.close(100)
    got = poll_until(b, 400, 1)
    assert got and got[0].flags & SlotFlag.LEFT and got[0].seq == 2
    assert a.link is None
    # The LEFT's own send happened before close: it is still reported (once), and it worked.
    assert a.poll(450) == [IoSubmitted("lan-stop", "write", 400, 2),
                           IoCompleted("lan-stop", "write", 400, True, None, 2, 400)]
    a.close(100)  # twice: nothing to do, never raises
    assert a.poll(500) == [] and a.publish(500, sa.beat(), 500) is None  # after close: inert, never raises
    assert a.poll(600) == []  # the publish after close did nothing, not even a failed send
    assert poll_until(b, 600, 1, timeout_s=0.2) == []  # and nothing went out


def test_a_one_way_link_is_logged_once_naming_the_source(regions, key, caplog):
    """A and B disagree about the port: B sends to A's port, A sends B's to a port B does not
    listen on. A hears B (from B's own port) and says once which source and which destination
    disagree; B, which hears nothing, says nothing of the kind."""
    port_a = free_udp_port()
    port_b = free_udp_port("127.0.0.2")
    while port_b == port_a:
        port_b = free_udp_port("127.0.0.2")
    caplog.set_level(logging.INFO, logger="diskhb.net")
    # A's peer has no port: A sends to 127.0.0.2 at its own port, where nothing listens.
    a = regions("lan-1way", 1, bind="127.0.0.1", port=port_a, peers=["127.0.0.2"], key=key)
    b = regions("lan-1way", 2, bind="127.0.0.2", port=port_b, peers=[f"127.0.0.1:{port_a}"], key=key)
    sa, sb = Sender(1, 0xA), Sender(2, 0xB)
    seen_a, seen_b = [], []
    for i in range(1, 5):
        now = 200 * i
        a.publish(now, sa.beat(), now)
        b.publish(now, sb.beat(), now)
        seen_a += poll_until(a, now, 1)
    seen_b += poll_until(b, 1000, 1, timeout_s=0.2)
    assert [x.seq for x in seen_a] == [1, 2, 3, 4] and seen_b == []  # one way only
    said = [r for r in caplog.records if "disagree about the port" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]  # once, not once per packet
    text = said[0].getMessage()
    assert f"127.0.0.2:{port_b}" in text and f"127.0.0.2:{port_a}" in text and "lan-1way" in text
    assert said[0].levelno == logging.WARNING
    assert a.sent_total == 4 and sum(a.rejected.values()) == 0  # the sends "work": nothing else tells


def test_our_node_id_under_another_generation_seen_advancing_is_a_duplicate_id(regions, key):
    """Another daemon beating with our node id (another generation): one packet of it is only
    counted (it may be an old recording), the same packet again neither; once that generation
    is seen advancing, poll() returns DuplicateId (the node core makes it a safety stop)."""
    pa, pr = free_udp_port(), free_udp_port()
    a = regions("lan-dup", 1, bind="127.0.0.1", port=pa, peers=[f"127.0.0.1:{pr}"], key=key)
    rogue = regions("lan-dup", 1, bind="127.0.0.1", port=pr, peers=[f"127.0.0.1:{pa}"], key=key)
    me, other = Sender(1, 0xA1), Sender(1, 0xD0)
    a.publish(200, me.beat(), 200)  # our generation is the one we publish
    polled(a, 200)

    def wait_own_id(n: int, now_ms: int) -> list:
        got: list = []
        deadline = time.monotonic() + WAIT_S
        while a.rejected["own_id"] < n and time.monotonic() < deadline:
            got += polled(a, now_ms)
            time.sleep(0.002)
        return got + polled(a, now_ms)

    first = other.beat()
    rogue.publish(200, first, 200)  # seq 1 of generation 0xD0
    assert wait_own_id(1, 200) == [] and a.rejected["own_id"] == 1  # a single packet is not enough
    rogue.publish(300, first, 300)  # the same packet again: not an advance
    assert wait_own_id(2, 300) == [] and a.rejected["own_id"] == 2
    rogue.publish(400, other.beat(), 400)  # seq 2 of it: advancing
    got = wait_own_id(3, 400)
    assert got == [DuplicateId("lan-dup", 0xD0, 2)]
    assert a.receiver.own_looped == 0 and a.receiver.accepted_total == 0  # never taken for a peer's beat


def test_operator_mistakes_surface_at_start(tmp_path, key):
    port = free_udp_port()
    loose = tmp_path / "loose"
    generate_key_file(str(loose))
    os.chmod(loose, 0o644)
    cases = [
        (dict(bind="127.0.0.1", peers=["127.0.0.1:9"], key=str(loose)), "chmod 600"),
        (dict(bind="127.0.0.1", peers=["127.0.0.1:9"], key=str(tmp_path / "none")), "not found"),
        (dict(bind="nosuchif0", peers=["127.0.0.1:9"], key=key), "neither an IP address nor an interface"),
        (dict(bind="192.0.2.55", peers=["127.0.0.1:9"], key=key), "not an address of this host"),
    ]
    for kw, match in cases:
        r = NetRegion("bad", cluster="c", node_id=1, port=port, **kw)
        with pytest.raises(OperatorError, match=match):
            r.start(0)
        assert r.link is None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))
        r = NetRegion("busy", cluster="c", node_id=1, bind="127.0.0.1", port=port,
                      peers=["127.0.0.1:9"], key=key)
        with pytest.raises(OperatorError, match="in use"):
            r.start(0)
    for kw in (dict(), dict(peers=["127.0.0.1"], group="239.1.1.1")):
        with pytest.raises(OperatorError, match="exactly one"):
            NetRegion("bad", cluster="c", node_id=1, key=key, **kw)


def test_the_daemons_factory_arguments_are_accepted(key):
    # What diskhb.daemon.make_link_region passes (port may be None: our default applies).
    r = NetRegion("net:x", cluster="c", node_id=3, bind=None, port=None, key=key,
                  peers=["127.0.0.1:9"])
    assert r.port == net_mod.DEFAULT_PORT == 6694 and r.kind == "net"


def test_beats_drive_the_liveness_core_and_views_round_trip(regions, key):
    from diskhb.core.liveness import Liveness
    from diskhb.core.types import NodeState

    pa, pb = free_udp_port(), free_udp_port()
    a = regions("lan-live", 1, bind="127.0.0.1", port=pa, peers=[f"127.0.0.1:{pb}"], key=key)
    b = regions("lan-live", 2, bind="127.0.0.1", port=pb, peers=[f"127.0.0.1:{pa}"], key=key)
    live_a, live_b = (Liveness(self_id=i, interval_ms=200, dead_ms=1000) for i in (1, 2))
    sa, sb = Sender(1, 0x11), Sender(2, 0x22)
    for i in range(1, 4):
        now = 200 * i
        for obs in poll_until(a, now, 1 if i > 1 else 0, timeout_s=0.05 if i == 1 else WAIT_S):
            live_a.observe(now, obs)
        for obs in poll_until(b, now, 1 if i > 1 else 0, timeout_s=0.05 if i == 1 else WAIT_S):
            live_b.observe(now, obs)
        live_a.tick(now)
        live_b.tick(now)
        a.publish(now, sa.beat(view=live_a.alive_by_region()), now)
        b.publish(now, sb.beat(view=live_b.alive_by_region()), now)
    assert live_b.node(1).state is NodeState.ALIVE and live_a.node(2).state is NodeState.ALIVE
    assert poll_until(b, 800, 1)
    assert b.views[1] == {"lan-live": (2,)}  # A tells B that it sees B alive on this link


def test_metrics_module_registers_once(key):
    import importlib

    import netpath.metrics as nm

    before = nm.PACKETS_REJECTED
    importlib.reload(nm)  # a second registration must not raise "Duplicated timeseries"
    assert nm.PACKETS_REJECTED is before
    assert REGISTRY._names_to_collectors["diskhb_net_packets_rejected_total"] is before


_TWO_LINKS_CHILD = r"""
import json, subprocess, sys, time
def sh(*a):
    subprocess.run(list(a), check=True, capture_output=True)
# Two cables (veth pairs) inside this throwaway namespace: link A = a0-a1, link B = b0-b1.
sh("ip", "link", "set", "lo", "up")
# Both ends are addresses of this one namespace: accept packets from a local source address.
for conf in ("all", "default"):
    sh("sysctl", "-qw", f"net.ipv4.conf.{conf}.accept_local=1", f"net.ipv4.conf.{conf}.rp_filter=0")
for link, net in (("a", 1), ("b", 2)):
    sh("ip", "link", "add", f"{link}0", "type", "veth", "peer", "name", f"{link}1")
    for end in (0, 1):
        sh("ip", "addr", "add", f"10.99.{net}.{end + 1}/24", "dev", f"{link}{end}")
        sh("ip", "link", "set", f"{link}{end}", "up")
from diskhb.core.types import Beat
from diskhb.regions.net import NetRegion
from diskhb.regions.base import OwnBeat
key, mode = sys.argv[1], sys.argv[2]
def region(link, node):
    where = {"group": "239.255.9.9"} if mode == "multicast" else {"broadcast": f"10.99.{' ab'.index(link)}.255"}
    r = NetRegion(f"link-{link}", cluster="c", node_id=node, bind=f"{link}{node - 1}",
                  port=7002, key=key, **where)  # the same port and group on both links: the worst case
    r.start(0)
    return r
n1 = {l: region(l, 1) for l in "ab"}
n2 = {l: region(l, 2) for l in "ab"}
got = {"a": [], "b": []}
def round_(i, wait_for):
    for l in "ab":
        n1[l].publish(i, OwnBeat(1, "n1", 7, i, 1, 1000 + 200 * i, {}), 0)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        for l in "ab":
            got[l] += [(x.region, x.seq) for x in n2[l].poll(i) if isinstance(x, Beat)]
        if all(any(s == i for _, s in got[l]) for l in wait_for):
            break
        time.sleep(0.005)
round_(1, "ab")
round_(2, "ab")
sh("ip", "link", "set", "b1", "down")  # cut cable B at node 2's end
round_(3, "a")
time.sleep(0.2)
for l in "ab":
    got[l] += [(x.region, x.seq) for x in n2[l].poll(9) if isinstance(x, Beat)]
got["dups"] = sum(n2[l].rejected["duplicate"] for l in "ab")
print(json.dumps(got))
"""


@pytest.mark.root
@pytest.mark.parametrize("mode", ["multicast", "broadcast"])
def test_redundant_links_are_separate_regions_in_a_private_network_namespace(key, mode):
    """Same port (and group) on two links: each region hears only its own cable; cutting one
    silences only that region. Runs in a namespace that disappears with the child process."""
    if os.geteuid() != 0:
        pytest.skip("needs root for unshare --net")
    if not (shutil.which("unshare") and shutil.which("ip")):
        pytest.skip("needs unshare (util-linux) and ip (iproute2)")
    out = subprocess.run(["unshare", "--net", sys.executable, "-c", _TWO_LINKS_CHILD, key, mode],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["a"] == [["link-a", 1], ["link-a", 2], ["link-a", 3]]
    assert got["b"] == [["link-b", 1], ["link-b", 2]]  # nothing from link A leaked in after the cut
    assert got["dups"] == 0  # nor before it (a copy from the other link would be a duplicate)


def test_a_beat_carries_whom_its_sender_sees_alive(regions, key):
    """Node core N16: the receiver hands the sender's view on as Beat.sees (every region's ids)."""
    port = free_udp_port()
    a = regions("lan-v", 1, bind="127.0.0.1", port=port, peers=["127.0.0.2"], key=key)
    b = regions("lan-v", 2, bind="127.0.0.2", port=port, peers=["127.0.0.1"], key=key)
    sa = Sender(1, 0xA1)
    a.publish(200, sa.beat(view={"lan-v": (2, 3), "disk": (3, 4)}), 200)
    [got] = poll_until(b, 200, 1)
    assert got.sees == frozenset({2, 3, 4})
