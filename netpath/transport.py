"""UDP sockets for heartbeat links: unicast peer lists, IPv4/IPv6 multicast, IPv4 broadcast.

Rules of this file:
- One link = one socket = one region. Redundant links are separate regions, each bound to its
  own address or interface, so a packet that arrived on link A is never counted on link B:
  sockets that must share a port (multicast, broadcast) are pinned to their interface
  (SO_BINDTODEVICE, IP_MULTICAST_ALL off, membership on that interface only).
- `bind` is an address of this host or an interface name. An interface name binds the socket
  to the device (SO_BINDTODEVICE; unprivileged since Linux 5.7), which is also what lets
  network-namespace tests pin a link to a veth end.
- Everything that can go wrong while opening raises OperatorError with one line; after that,
  `send` and `recv_batch` never raise: they return errors as strings.
- Non-blocking sockets only; `recv_batch` reads at most `limit` datagrams per call.
- Peers and groups are resolved once, at open (a heartbeat must not depend on DNS later: use
  addresses in HA configs).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

from diskhb.errors import OperatorError
from netpath.wire import PACKET_BYTES_MAX

# Not assigned by IANA (6696 is Babel, 694 Heartbeat's ha-cluster): Heartbeat's 694 moved into
# the user range. Every node of a link must use the same port unless peers name theirs.
DEFAULT_PORT = 6694
DEFAULT_TTL = 1  # heartbeats stay on the link; a routed heartbeat is a config mistake
RCVBUF_BYTES = 1 << 20  # room for ~700 full-size datagrams between two polls
IFNAMSIZ = 16

_IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)
_IPV6_MULTICAST_ALL = getattr(socket, "IPV6_MULTICAST_ALL", 29)
_SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


def errname(e: OSError) -> str:
    code = e.errno or 0
    return f"{errno.errorcode.get(code, str(code))}: {e.strerror or e}"


# -- interfaces -------------------------------------------------------------------------------

class _Sockaddr(ctypes.Structure):
    _fields_ = [("sa_family", ctypes.c_ushort), ("sa_data", ctypes.c_ubyte * 14)]


class _Sockaddr6(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("port", ctypes.c_uint16), ("flowinfo", ctypes.c_uint32),
                ("addr", ctypes.c_ubyte * 16), ("scope_id", ctypes.c_uint32)]


class _Ifaddrs(ctypes.Structure):
    pass


_Ifaddrs._fields_ = [
    ("ifa_next", ctypes.POINTER(_Ifaddrs)), ("ifa_name", ctypes.c_char_p), ("ifa_flags", ctypes.c_uint),
    ("ifa_addr", ctypes.POINTER(_Sockaddr)), ("ifa_netmask", ctypes.POINTER(_Sockaddr)),
    ("ifa_ifu", ctypes.POINTER(_Sockaddr)), ("ifa_data", ctypes.c_void_p),
]


def interface_addresses() -> list[tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    """(interface name, address) for every IPv4/IPv6 address of this host (getifaddrs(3))."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    head = ctypes.POINTER(_Ifaddrs)()
    if libc.getifaddrs(ctypes.byref(head)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    out = []
    try:
        p = head
        while p:
            ifa = p.contents
            if ifa.ifa_addr:
                fam = ifa.ifa_addr.contents.sa_family
                name = ifa.ifa_name.decode(errors="replace")
                if fam == socket.AF_INET:
                    out.append((name, ipaddress.IPv4Address(bytes(ifa.ifa_addr.contents.sa_data[2:6]))))
                elif fam == socket.AF_INET6:
                    sa6 = ctypes.cast(ifa.ifa_addr, ctypes.POINTER(_Sockaddr6)).contents
                    out.append((name, ipaddress.IPv6Address(bytes(sa6.addr))))
            p = ifa.ifa_next
    finally:
        libc.freeifaddrs(head)
    return out


@dataclass(frozen=True)
class BindTarget:
    """What `bind` named: an address (with the interface that holds it) or an interface."""

    text: str
    address: str | None  # None: the interface's addresses, chosen by the kernel
    ifname: str | None
    ifindex: int
    family: int | None  # None: either family (an interface name)


def resolve_bind(bind: str | None) -> BindTarget:
    if not bind:
        return BindTarget("", None, None, 0, None)
    host, _, scope = bind.partition("%")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        addr = None
    if addr is None:
        names = {name for _, name in socket.if_nameindex()}
        if bind not in names:
            raise OperatorError(f"bind {bind!r}: neither an IP address nor an interface of this host"
                                f" (interfaces: {', '.join(sorted(names))})")
        return BindTarget(bind, None, bind, socket.if_nametoindex(bind), None)
    owners = [name for name, a in interface_addresses() if a == addr]
    if scope:  # fe80::1%eth0: the address on that interface
        owners = [n for n in owners if n == scope]
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    if not owners:
        # Not listed on an interface, yet possibly local (127.0.0.2 is, via lo's 127/8 route):
        # bind() decides, and says EADDRNOTAVAIL if it is not.
        return BindTarget(bind, str(addr), None, 0, family)
    ifname = owners[0]
    return BindTarget(bind, str(addr), ifname, socket.if_nametoindex(ifname), family)


# -- destinations -----------------------------------------------------------------------------

def parse_hostport(text: str, default_port: int) -> tuple[str, int]:
    """'host', 'host:port', 'v4:port', '[v6]', '[v6]:port' or a bare IPv6 address."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise OperatorError(f"peer {text!r}: use [ipv6] or [ipv6]:port")
        port_s = rest[1:]
    elif text.count(":") == 1:
        host, _, port_s = text.partition(":")
    else:
        host, port_s = text, ""  # a name, an IPv4 address or a bare IPv6 address
    if not host:
        raise OperatorError(f"peer {text!r}: no host")
    if port_s:
        if not port_s.isdigit() or not 1 <= int(port_s) <= 65535:
            raise OperatorError(f"peer {text!r}: port must be 1..65535")
        return host, int(port_s)
    return host, default_port


def resolve(host: str, port: int, family: int | None, what: str) -> tuple[int, tuple]:
    """(family, sockaddr) of a numeric address or a name (resolved now, once)."""
    try:  # a numeric address is what it is, whatever the family (the caller compares families)
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST)
    except socket.gaierror:
        try:
            infos = socket.getaddrinfo(host, port, family or socket.AF_UNSPEC, socket.SOCK_DGRAM)
        except socket.gaierror as e:
            raise OperatorError(f"{what} {host!r}: cannot resolve ({e.strerror}); use an IP address") from None
    fam_out, _, _, _, sockaddr = infos[0]
    return fam_out, sockaddr


def _label(sockaddr: tuple) -> str:
    host, port = sockaddr[0], sockaddr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- the link ---------------------------------------------------------------------------------

class UdpLink:
    """An open, non-blocking UDP socket and where our heartbeats go."""

    def __init__(self, sock: socket.socket, destinations: list[tuple], mode: str, local: str):
        self.sock = sock
        self.destinations = destinations
        self.labels = [_label(d) for d in destinations]
        self.mode = mode
        self.local = local

    def send(self, data: bytes) -> list[tuple[str, str | None]]:
        """Send to every destination: [(destination, error or None)]. Never raises."""
        out = []
        for dest, label in zip(self.destinations, self.labels):
            try:
                sent = self.sock.sendto(data, dest)
                out.append((label, None if sent == len(data) else f"short send {sent}/{len(data)}"))
            except BlockingIOError:
                out.append((label, "EAGAIN: socket send buffer full"))
            except OSError as e:
                out.append((label, errname(e)))
        return out

    def recv_batch(self, limit: int) -> tuple[list[tuple[bytes, str]], str | None]:
        """Up to `limit` datagrams waiting now, and a receive error if one stopped us."""
        got: list[tuple[bytes, str]] = []
        while len(got) < limit:
            try:
                # One byte more than a packet may have: a longer datagram is recognisably oversize.
                data, addr = self.sock.recvfrom(PACKET_BYTES_MAX + 1)
            except BlockingIOError:
                return got, None
            except (ConnectionRefusedError, ConnectionResetError, OSError) as e:
                if isinstance(e, (ConnectionRefusedError, ConnectionResetError)) or e.errno in (
                        errno.EHOSTUNREACH, errno.ENETUNREACH):
                    continue  # a queued ICMP error about an earlier send: not a receive failure
                return got, errname(e)
            got.append((data, _label(addr) if isinstance(addr, tuple) else str(addr)))
        return got, None

    def close(self) -> None:
        self.sock.close()


def open_link(*, port: int, bind: str | None = None, peers: list[str] | None = None,
              group: str | None = None, broadcast: str | None = None, ttl: int = DEFAULT_TTL) -> UdpLink:
    """Open a link for exactly one of peers / group / broadcast. OperatorError on any mistake."""
    modes = [m for m, v in (("peers", peers), ("group", group), ("broadcast", broadcast)) if v]
    if len(modes) != 1:
        raise OperatorError("a net region needs exactly one of peers, group or broadcast")
    if not 1 <= port <= 65535:
        raise OperatorError(f"port {port} not in 1..65535")
    if not 0 <= ttl <= 255:
        raise OperatorError(f"ttl {ttl} not in 0..255")
    target = resolve_bind(bind)
    if peers:
        return _open_unicast(target, port, peers)
    if group:
        return _open_multicast(target, port, group, ttl)
    return _open_broadcast(target, port, broadcast)


def _socket(family: int) -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.setblocking(False)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # one family per link
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
    except OSError:
        pass  # the kernel's default is a smaller bound, not an error
    return s


def _bind_device(s: socket.socket, target: BindTarget) -> None:
    if not target.ifname:
        return
    try:
        s.setsockopt(socket.SOL_SOCKET, _SO_BINDTODEVICE, target.ifname.encode()[: IFNAMSIZ - 1])
    except OSError as e:
        s.close()
        raise OperatorError(f"bind {target.text}: cannot bind to interface {target.ifname} ({errname(e)});"
                            " run as root or bind to an address instead") from None


def _bind(s: socket.socket, sockaddr: tuple, target: BindTarget, port: int) -> None:
    try:
        s.bind(sockaddr)
    except OSError as e:
        s.close()
        where = target.text or sockaddr[0] or "*"
        if e.errno == errno.EADDRINUSE:
            raise OperatorError(f"port {port} on {where} is in use (another diskhb or service?);"
                                " stop it or choose another port") from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise OperatorError(f"bind {where}: not an address of this host") from None
        if e.errno == errno.EACCES:
            raise OperatorError(f"port {port}: permission denied (ports below 1024 need root)") from None
        raise OperatorError(f"cannot bind {where} port {port}: {errname(e)}") from None


def _check_family(target: BindTarget, family: int, what: str) -> None:
    if target.family is not None and target.family != family:
        raise OperatorError(f"bind {target.text} and {what} are of different IP versions; use one version per link")


def _open_unicast(target: BindTarget, port: int, peers: list[str]) -> UdpLink:
    dests = []
    family = target.family
    for text in peers:
        host, pport = parse_hostport(text, port)
        fam, sockaddr = resolve(host, pport, family, "peer")
        if family is not None and fam != family:
            raise OperatorError(f"peer {text!r}: mixes IPv4 and IPv6 on one link; use one version per link")
        family = fam
        dests.append(sockaddr)
    assert family is not None
    s = _socket(family)
    if target.address is None:
        _bind_device(s, target)  # an interface name: receive and send on that device only
    local = target.address or ("::" if family == socket.AF_INET6 else "0.0.0.0")
    # The scope id matters only for a link-local address (fe80::/10); the kernel ignores it otherwise.
    sockaddr = (local, port, 0, target.ifindex) if family == socket.AF_INET6 else (local, port)
    _bind(s, sockaddr, target, port)
    return UdpLink(s, dests, "unicast", _label((local, port)))


def _open_multicast(target: BindTarget, port: int, group: str, ttl: int) -> UdpLink:
    try:
        g = ipaddress.ip_address(group)
    except ValueError:
        raise OperatorError(f"group {group!r}: not an IP address") from None
    if not g.is_multicast:
        raise OperatorError(f"group {group}: not a multicast address (224.0.0.0/4 or ff00::/8)")
    family = socket.AF_INET6 if g.version == 6 else socket.AF_INET
    _check_family(target, family, f"group {group}")
    s = _socket(family)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # every local listener of the group gets a copy
    _bind_device(s, target)
    try:
        if family == socket.AF_INET:
            local_if = socket.inet_aton(target.address or "0.0.0.0")
            mreqn = struct.pack("4s4si", g.packed, local_if, target.ifindex)
            _bind(s, (group, port), target, port)  # binding the group address filters other traffic
            s.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            dest = (group, port)
        else:
            if not target.ifindex:
                raise OperatorError(f"group {group}: IPv6 multicast needs bind = an interface name or address")
            _bind(s, (group, port, 0, target.ifindex), target, port)
            try:
                s.setsockopt(socket.IPPROTO_IPV6, _IPV6_MULTICAST_ALL, 0)
            except OSError:
                pass  # older kernels: SO_BINDTODEVICE and the group bind already filter
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, g.packed + struct.pack("@I", target.ifindex))
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, target.ifindex)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)
            dest = (group, port, 0, target.ifindex)
    except OSError as e:
        s.close()
        raise OperatorError(f"group {group}: cannot join on {target.text or 'the default interface'}"
                            f" ({errname(e)}); check that the interface is up and multicast-capable") from None
    except OperatorError:
        s.close()
        raise
    return UdpLink(s, [dest], "multicast", _label((group, port)))


def _open_broadcast(target: BindTarget, port: int, broadcast: str) -> UdpLink:
    try:
        b = ipaddress.ip_address(broadcast)
    except ValueError:
        raise OperatorError(f"broadcast {broadcast!r}: not an IPv4 address") from None
    if b.version != 4:
        raise OperatorError(f"broadcast {broadcast}: IPv6 has no broadcast; use group (multicast)")
    _check_family(target, socket.AF_INET, f"broadcast {broadcast}")
    if target.address and not target.ifname:
        raise OperatorError(f"bind {target.text}: no interface holds this address; broadcast needs"
                            " bind = an interface name or one of its addresses")
    s = _socket(socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # A socket bound to a unicast address never sees broadcasts: bind the wildcard and pin the
    # socket to the interface instead (an address in `bind` names its interface).
    _bind_device(s, target)
    _bind(s, ("0.0.0.0", port), target, port)
    return UdpLink(s, [(broadcast, port)], "broadcast", _label((target.address or "0.0.0.0", port)))
