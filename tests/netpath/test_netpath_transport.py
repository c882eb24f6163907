"""netpath.transport: address parsing and every operator mistake at open (loopback only)."""

from __future__ import annotations

import ipaddress
import socket
import time

import pytest

from diskhb.errors import OperatorError
from netpath.transport import (
    DEFAULT_PORT,
    interface_addresses,
    open_link,
    parse_hostport,
    resolve_bind,
)


def free_udp_port(host: str = "127.0.0.1") -> int:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("text, host, port", [
    ("10.0.0.1", "10.0.0.1", DEFAULT_PORT),
    ("10.0.0.1:700", "10.0.0.1", 700),
    ("node-b", "node-b", DEFAULT_PORT),
    ("node-b:9", "node-b", 9),
    ("::1", "::1", DEFAULT_PORT),
    ("fe80::1%eth0", "fe80::1%eth0", DEFAULT_PORT),
    ("[::1]", "::1", DEFAULT_PORT),
    ("[::1]:7000", "::1", 7000),
])
def test_parse_hostport(text, host, port):
    assert parse_hostport(text, DEFAULT_PORT) == (host, port)


@pytest.mark.parametrize("text", ["[::1", "[::1]x", "a:0", "a:70000", "a:b", ":80", ""])
def test_parse_hostport_refuses(text):
    with pytest.raises(OperatorError):
        parse_hostport(text, DEFAULT_PORT)


def test_interfaces_and_bind_targets():
    addrs = interface_addresses()
    assert ("lo", ipaddress.ip_address("127.0.0.1")) in addrs
    t = resolve_bind("lo")
    assert t.ifname == "lo" and t.ifindex == socket.if_nametoindex("lo") and t.address is None
    t = resolve_bind("127.0.0.1")
    assert t.ifname == "lo" and t.address == "127.0.0.1" and t.family == socket.AF_INET
    assert resolve_bind(None).ifindex == 0
    with pytest.raises(OperatorError, match="neither an IP address nor an interface"):
        resolve_bind("no-such-if0")


def test_open_refusals_are_one_line_operator_errors():
    port = free_udp_port()
    cases = [
        (dict(peers=["127.0.0.1"], group="239.1.1.1"), "exactly one"),
        (dict(), "exactly one"),
        (dict(peers=["127.0.0.1", "::1"]), "mixes IPv4 and IPv6"),
        (dict(peers=["::1"], bind="127.0.0.1"), "mixes IPv4 and IPv6"),
        (dict(peers=["127.0.0.1"], bind="192.0.2.77"), "not an address of this host"),  # TEST-NET-1
        (dict(group="10.1.1.1"), "not a multicast address"),
        (dict(group="ff02::77"), "needs bind"),
        (dict(group="ff02::77", bind="127.0.0.1"), "different IP versions"),
        (dict(broadcast="::1"), "IPv6 has no broadcast"),
        (dict(broadcast="nonsense"), "not an IPv4 address"),
        (dict(peers=["127.0.0.1"], ttl=300), "ttl"),
    ]
    for kw, match in cases:
        with pytest.raises(OperatorError, match=match) as e:
            open_link(port=port, **kw)
        assert "\n" not in str(e.value)
    with pytest.raises(OperatorError, match="port 0"):
        open_link(port=0, peers=["127.0.0.1"])


def test_names_resolve_once_at_open():
    port = free_udp_port()
    link = open_link(port=port, bind="127.0.0.1", peers=["localhost:9"])  # /etc/hosts, no DNS traffic
    try:
        assert link.labels == ["127.0.0.1:9"]
    finally:
        link.close()


def test_port_in_use_is_reported():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(OperatorError, match=f"port {port} on 127.0.0.1 is in use"):
            open_link(port=port, bind="127.0.0.1", peers=["127.0.0.1:9"])


def test_unicast_send_and_receive_on_loopback():
    pa, pb = free_udp_port(), free_udp_port()
    a = open_link(port=pa, bind="127.0.0.1", peers=[f"127.0.0.1:{pb}"])
    b = open_link(port=pb, bind="127.0.0.1", peers=[f"127.0.0.1:{pa}"])
    try:
        assert a.send(b"x" * 10) == [(f"127.0.0.1:{pb}", None)]
        got = []
        for _ in range(200):
            got += b.recv_batch(10)[0]
            if got:
                break
            time.sleep(0.005)
        assert got and got[0][0] == b"x" * 10 and got[0][1] == f"127.0.0.1:{pa}"
        assert b.recv_batch(10) == ([], None)
    finally:
        a.close()
        b.close()


def test_interface_name_binds_to_the_device():
    port = free_udp_port()
    link = open_link(port=port, bind="lo", peers=[f"127.0.0.1:{port}"])
    try:
        dev = link.sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16).rstrip(b"\0")
        assert dev == b"lo"
    finally:
        link.close()
