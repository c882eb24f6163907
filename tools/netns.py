"""Private test hosts in network namespaces joined by veth pairs to a bridge.

    hub namespace:  bridge br0 <- veth h1 / h2 / h3 (and hh, with host_link)
    node i:         veth n<i> with 10.77.<net>.<i>/24
    host (host_link=True): veth <tag>h with 10.77.<net>.254/24, its peer hh on the bridge: a
                    service of this host (a private tgtd, tools.cts --scsi-pr) listening on
                    that address is reachable from every node, through its cable

Only addresses inside namespaces this helper created are used, and, with host_link, the one
test-net address HOST_INDEX on the host's end of the veth (deleted with the hub namespace).
Names carry the test process's PID so parallel runs do not collide; teardown deletes every
namespace it made (which removes the veth pairs and the bridge with them), even after a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess


def available() -> str | None:
    """None if namespaces can be used here, else the reason to skip."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if not shutil.which("ip"):
        return "needs ip (iproute2)"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=20)


HOST_INDEX = 254  # the host's address in a test net (nodes are 1..nodes)


class TestNet:
    def __init__(self, nodes: int, net: int = 0, *, host_link: bool = False):
        if nodes >= HOST_INDEX:
            raise ValueError(f"at most {HOST_INDEX - 1} nodes")
        tag = f"dhb{os.getpid() % 100000}x{net}"
        self.hub = f"{tag}hub"
        self.ns = {i: f"{tag}n{i}" for i in range(1, nodes + 1)}
        self.net = net
        self.host_link = host_link
        self.host_dev = f"{tag}h"  # <= 15 bytes: IFNAMSIZ
        self.made: list[str] = []

    def addr(self, i: int) -> str:
        return f"10.77.{self.net}.{i}"

    def host_addr(self) -> str:
        """The host's address on the test net (host_link=True)."""
        return self.addr(HOST_INDEX)

    def up(self) -> "TestNet":
        try:
            _ip("netns", "add", self.hub)
            self.made.append(self.hub)
            _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.hub, "link", "set", "br0", "up")
            _ip("-n", self.hub, "link", "set", "lo", "up")
            for i, ns in self.ns.items():
                _ip("netns", "add", ns)
                self.made.append(ns)
                _ip("-n", self.hub, "link", "add", f"h{i}", "type", "veth", "peer", "name", f"n{i}", "netns", ns)
                _ip("-n", self.hub, "link", "set", f"h{i}", "master", "br0")
                _ip("-n", self.hub, "link", "set", f"h{i}", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("-n", ns, "addr", "add", f"{self.addr(i)}/24", "dev", f"n{i}")
                _ip("-n", ns, "link", "set", f"n{i}", "up")
            if self.host_link:  # made in the hub, its host end moved out: deleting the hub deletes both
                _ip("-n", self.hub, "link", "add", "hh", "type", "veth", "peer", "name", self.host_dev, "netns",
                    str(os.getpid()))
                _ip("-n", self.hub, "link", "set", "hh", "master", "br0")
                _ip("-n", self.hub, "link", "set", "hh", "up")
                _ip("addr", "add", f"{self.host_addr()}/24", "dev", self.host_dev)
                _ip("link", "set", self.host_dev, "up")
        except BaseException:
            self.down()
            raise
        return self

    def static_neighbours(self) -> None:
        """Permanent ARP entries between the nodes: after a cable is plugged back, datagrams flow at
        once instead of after the kernel re-resolves an entry that failed while it was out (up to
        a second): what a link carries is then exactly what the cable allows (tools.cts checks it)."""
        macs = {}
        for i, ns in self.ns.items():
            out = subprocess.run(["ip", "-n", ns, "-j", "link", "show", "dev", f"n{i}"], check=True,
                                 capture_output=True, text=True, timeout=20).stdout
            macs[i] = json.loads(out)[0]["address"]
        if self.host_link:  # both ways: the host's end and every node's
            out = subprocess.run(["ip", "-j", "link", "show", "dev", self.host_dev], check=True, capture_output=True,
                                 text=True, timeout=20).stdout
            host_mac = json.loads(out)[0]["address"]
            for i, ns in self.ns.items():
                _ip("-n", ns, "neigh", "replace", self.host_addr(), "lladdr", host_mac, "dev", f"n{i}", "nud",
                    "permanent")
                _ip("neigh", "replace", self.addr(i), "lladdr", macs[i], "dev", self.host_dev, "nud", "permanent")
        for i, ns in self.ns.items():
            for j in self.ns:
                if j != i:
                    _ip("-n", ns, "neigh", "replace", self.addr(j), "lladdr", macs[j], "dev", f"n{i}", "nud", "permanent")

    def cut(self, i: int) -> None:
        """Unplug node i's cable (its end stays up: the node sees no error, only silence)."""
        _ip("-n", self.hub, "link", "set", f"h{i}", "down")

    def plug(self, i: int) -> None:
        _ip("-n", self.hub, "link", "set", f"h{i}", "up")

    def exec_prefix(self, i: int) -> list[str]:
        return ["ip", "netns", "exec", self.ns[i]]

    def down(self) -> None:
        if self.host_link and self.made:  # at once (a namespace's links go asynchronously)
            subprocess.run(["ip", "link", "del", self.host_dev], capture_output=True, timeout=20)
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        self.made.clear()
