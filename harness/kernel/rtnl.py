"""rtnetlink request builders for the lab's hot path: links, addresses, neighbours, routes.

The messages the lab needs are a handful of fixed shapes, packed here with ``struct`` and the
shared ``netlink.attr`` (a few µs each; pyroute2's encoder costs 14-52x more, see
``harness.kernel.netlink``) and sent many per datagram by ``netlink.Socket``; only the last
request of a batch asks for an ack. pyroute2 stays the tool for reading state.

A ``Rtnl`` is a ``netlink.Socket`` on NETLINK_ROUTE bound to one namespace (see
``netns.netlink_socket``); the socket keeps its namespace whatever thread uses it.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from harness.kernel.netlink import (
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    Request,
    Socket,
    attr,
    attr_str,
    attr_u32,
)

NETLINK_ROUTE = 0

RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_SETLINK = 19
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_NEWROUTE = 24
RTM_NEWNEIGH = 28
RTM_DELNEIGH = 29
NDA_DST = 1
NDA_LLADDR = 2
NUD_PERMANENT = 0x80

IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
IFLA_BR_STP_STATE = 5

IFA_ADDRESS = 1
IFA_LOCAL = 2

RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5

IFF_UP = 0x1
RT_TABLE_MAIN = 254
RTPROT_STATIC = 4
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RTN_UNICAST = 1
RTNH_F_ONLINK = 4

_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_NDMSG = struct.Struct("=BxxxiHBB")
_ADDR_BODY = struct.Struct("=BBBBIHH4sHH4s")  # ifaddrmsg + IFA_LOCAL + IFA_ADDRESS (the hot path)

_IP_ATTR = struct.Struct("=HH4s")


def _ip(kind: int, ip: ipaddress.IPv4Address | str) -> bytes:
    packed = ip.packed if isinstance(ip, ipaddress.IPv4Address) else ipaddress.IPv4Address(ip).packed
    return _IP_ATTR.pack(8, kind, packed)


# -- request builders ------------------------------------------------------------------------------
def veth(name: str, peer: str, *, peer_netns_fd: int | None = None, master: int | None = None,
         index: int = 0, peer_index: int = 0, peer_mac: bytes | None = None, up: bool = True) -> Request:
    """Create veth ``name`` (optionally enslaved to bridge ifindex ``master``, and up) with its
    peer ``peer`` placed directly into the namespace behind ``peer_netns_fd``. The peer stays
    down: the kernel opens it before the pair is linked (veth_open: ENOTCONN), so bring it up
    from its own namespace.

    ``index``/``peer_index`` pin the ifindexes (the kernel honours the peer's only when the
    first is pinned too), so later requests can name the links without a lookup. ``peer_mac``
    fixes the peer's MAC (for permanent neighbour entries made before it ever speaks)."""
    flags = IFF_UP if up else 0
    peer_attrs = attr_str(IFLA_IFNAME, peer)
    if peer_netns_fd is not None:
        peer_attrs += attr_u32(IFLA_NET_NS_FD, peer_netns_fd)
    if peer_mac is not None:
        peer_attrs += attr(IFLA_ADDRESS, peer_mac)
    peer_body = _IFINFO.pack(socket.AF_UNSPEC, 0, peer_index, 0, 0) + peer_attrs
    info = attr_str(IFLA_INFO_KIND, "veth") + attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_body))
    attrs = attr_str(IFLA_IFNAME, name) + attr(IFLA_LINKINFO, info)
    if master is not None:
        attrs += attr_u32(IFLA_MASTER, master)
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, 0) + attrs
    return Request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"create veth {name}/{peer}")


def bridge(name: str, *, index: int = 0, mac: bytes | None = None) -> Request:
    """Create an up bridge, STP off. A fixed ``mac`` keeps the bridge from taking a port's MAC
    (which changes as ports come and go and would leave stale gateway ARP entries in pods)."""
    info = attr_str(IFLA_INFO_KIND, "bridge") + attr(IFLA_INFO_DATA, attr_u32(IFLA_BR_STP_STATE, 0))
    attrs = attr_str(IFLA_IFNAME, name) + attr(IFLA_LINKINFO, info)
    if mac is not None:
        attrs += attr(IFLA_ADDRESS, mac)
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, index, IFF_UP, 0) + attrs
    return Request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"create bridge {name}")


def link_up(index: int, what: str = "") -> Request:
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, index, IFF_UP, IFF_UP)
    return Request(RTM_NEWLINK, 0, body, f"set link {what or index} up")


def link_delete(name: str) -> Request:
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attr_str(IFLA_IFNAME, name)
    return Request(RTM_DELLINK, 0, body, f"delete link {name}")


def address(index: int, ip: ipaddress.IPv4Address | str, prefixlen: int, *, delete: bool = False) -> Request:
    """Add (or delete) ``ip/prefixlen`` on link ``index``."""
    packed = ip.packed if isinstance(ip, ipaddress.IPv4Address) else ipaddress.IPv4Address(ip).packed
    body = _ADDR_BODY.pack(socket.AF_INET, prefixlen, 0, RT_SCOPE_UNIVERSE, index, 8, IFA_LOCAL, packed, 8,
                           IFA_ADDRESS, packed)
    if delete:
        return Request(RTM_DELADDR, 0, body, f"delete address {ip}/{prefixlen}")
    return Request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, f"add address {ip}/{prefixlen}")


def neighbour(index: int, ip: ipaddress.IPv4Address | str, mac: bytes | None = None, *,
              delete: bool = False) -> Request:
    """Add (replace) a permanent ARP entry ``ip -> mac`` on link ``index``, or delete it.

    Permanent entries do not count against the neighbour table's gc_thresh3, which is one
    host-wide limit (1,024 by default) shared by every namespace."""
    packed = ip.packed if isinstance(ip, ipaddress.IPv4Address) else ipaddress.IPv4Address(ip).packed
    body = _NDMSG.pack(socket.AF_INET, index, NUD_PERMANENT, 0, 0) + _IP_ATTR.pack(8, NDA_DST, packed)
    if delete:
        return Request(RTM_DELNEIGH, 0, body, f"delete neighbour {ipaddress.IPv4Address(packed)}")
    assert mac is not None
    body += attr(NDA_LLADDR, mac)
    return Request(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, body,
                   f"add neighbour {ipaddress.IPv4Address(packed)}")


def route(dst: ipaddress.IPv4Network | str, *, gateway: ipaddress.IPv4Address | str | None = None,
          oif: int | None = None, onlink: bool = False) -> Request:
    """Add a unicast route in the main table: via ``gateway`` and/or out of link ``oif``."""
    net = ipaddress.IPv4Network(dst)
    return _route(socket.AF_INET, net, _ip, RT_SCOPE_LINK if gateway is None else RT_SCOPE_UNIVERSE,
                  gateway, oif, onlink)


def _route(family: int, net: ipaddress.IPv4Network | ipaddress.IPv6Network, addr_attr, scope: int,
           gateway, oif: int | None, onlink: bool) -> Request:
    """The RTM_NEWROUTE both families share; ``addr_attr`` packs an address of ``family``."""
    body = _RTMSG.pack(family, net.prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, scope, RTN_UNICAST,
                       RTNH_F_ONLINK if onlink else 0)
    if net.prefixlen:
        body += addr_attr(RTA_DST, net.network_address)
    if gateway is not None:
        body += addr_attr(RTA_GATEWAY, gateway)
    if oif is not None:
        body += attr_u32(RTA_OIF, oif)
    return Request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body,
                   f"add route {net}" + (f" via {gateway}" if gateway else ""))


# -- IPv6 (dual-stack labs; harness.model.dualstack) -----------------------------------------------
IFA_FLAGS = 8
IFA_F_NODAD = 0x02  # no duplicate address detection: the address is usable at once (lab addresses are unique)
_IP6_ATTR = struct.Struct("=HH16s")


def _ip6(kind: int, ip: ipaddress.IPv6Address | str) -> bytes:
    return _IP6_ATTR.pack(20, kind, ipaddress.IPv6Address(ip).packed)


def address6(index: int, ip: ipaddress.IPv6Address | str, prefixlen: int, *, delete: bool = False) -> Request:
    """Add (or delete) IPv6 ``ip/prefixlen`` on link ``index``, without DAD (``nodad``)."""
    addr = ipaddress.IPv6Address(ip)
    body = (_IFADDR.pack(socket.AF_INET6, prefixlen, IFA_F_NODAD, RT_SCOPE_UNIVERSE, index)
            + _ip6(IFA_ADDRESS, addr) + attr_u32(IFA_FLAGS, IFA_F_NODAD))
    if delete:
        return Request(RTM_DELADDR, 0, body, f"delete address {addr}/{prefixlen}")
    return Request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, f"add address {addr}/{prefixlen}")


def neighbour6(index: int, ip: ipaddress.IPv6Address | str, mac: bytes | None = None, *,
               delete: bool = False) -> Request:
    """``neighbour`` for IPv6: a permanent NDP entry (the ndisc table has the same host-wide limit)."""
    addr = ipaddress.IPv6Address(ip)
    body = _NDMSG.pack(socket.AF_INET6, index, NUD_PERMANENT, 0, 0) + _ip6(NDA_DST, addr)
    if delete:
        return Request(RTM_DELNEIGH, 0, body, f"delete neighbour {addr}")
    assert mac is not None
    body += attr(NDA_LLADDR, mac)
    return Request(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, body, f"add neighbour {addr}")


def route6(dst: ipaddress.IPv6Network | str, *, gateway: ipaddress.IPv6Address | str | None = None,
           oif: int | None = None, onlink: bool = False) -> Request:
    """``route`` for IPv6: a unicast route in the main table via ``gateway`` and/or out of ``oif``.
    IPv6 routes carry universe scope, link routes included."""
    return _route(socket.AF_INET6, ipaddress.IPv6Network(dst), _ip6, RT_SCOPE_UNIVERSE, gateway, oif, onlink)


# -- the socket ------------------------------------------------------------------------------------
class Rtnl(Socket):
    """A NETLINK_ROUTE ``netlink.Socket``: ``run(requests)`` sends a batch and raises KernelError
    naming the first failed request; ``namespace`` only names errors."""

    def __init__(self, sock: socket.socket, namespace: str):
        super().__init__(sock, namespace)
        self.namespace = namespace

    @classmethod
    def here(cls, namespace: str) -> Rtnl:
        """A socket in the calling thread's current namespace (use inside ``netns.entered``)."""
        return cls(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE), namespace)
