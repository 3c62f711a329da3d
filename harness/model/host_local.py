"""Pod IP allocation on one node's pod CIDR the way the host-local CNI IPAM plugin does it:
round-robin from the last reserved address, so a deleted pod's IP comes back only after the
rest of the range was handed out (while the nodes' rules may still hold the old pod's IP, a new
pod that got it at once would inherit that pod's policy: docs/churn-and-simulation.md, "Found on the way").

From containernetworking/plugins v1.9.1 plugins/ipam/host-local/backend/allocator (one range,
no ``rangeStart``/``rangeEnd`` in the config, as a pod CIDR per node is configured):

- range.go ``Canonicalize``: the range is network + 1 .. ``lastIP`` (IPv4: the broadcast
  address - 1; IPv6: the last address); the gateway defaults to network + 1.
- allocator.go ``GetIter``: start at the last reserved IP + 1 when the range contains it, else
  at ``RangeStart``; ``Next``: wrap from ``RangeEnd`` to ``RangeStart``, skip the gateway, and
  give up on coming back to the first candidate (so the last reserved IP itself is tried last).
- allocator.go ``Get``: the first candidate ``store.Reserve`` accepts (not reserved already).
- disk/backend.go ``Reserve``: every reservation, a requested IP too, becomes the last reserved
  IP of the range (``last_reserved_ip.<range id>``); ``Release`` leaves it alone.

The caller keeps the last reserved address (``Cluster.last_reserved``, per node). Pure; generic
over ``ipaddress`` IPv4 and IPv6 networks (no list of the range is built: a /64 is fine).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Container

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def host_range(cidr: IPNetwork) -> tuple[int, int]:
    """First and last allocatable address of ``cidr`` as integers (range.go Canonicalize:
    network + 1 .. lastIP, which drops the broadcast address on IPv4 only)."""
    first = int(cidr.network_address) + 1
    last = int(cidr.broadcast_address) - (1 if cidr.version == 4 else 0)
    return first, last


def round_robin(cidr: IPNetwork, gateway: IPAddress | None, used: Container[IPAddress],
                last_reserved: IPAddress | None) -> IPAddress | None:
    """The address host-local hands out next: the first one after ``last_reserved`` (wrapping
    around; from the start of the range when ``last_reserved`` is None or outside it) that is
    neither ``gateway`` nor in ``used``; None when the range is full."""
    first, last = host_range(cidr)
    if last < first:  # a /31 or /32 (Canonicalize refuses them: "too small to allocate from")
        return None
    size = last - first + 1
    make = type(cidr.network_address)
    if last_reserved is not None and last_reserved.version == cidr.version and first <= int(last_reserved) <= last:
        offset = int(last_reserved) - first + 1  # GetIter: iter.cur = lastReservedIP; Next() adds one
    else:
        offset = 0
    for i in range(size):
        ip = make(first + (offset + i) % size)
        if ip != gateway and ip not in used:
            return ip
    return None


def lowest_free(cidr: IPNetwork, gateway: IPAddress | None, used: Container[IPAddress]) -> IPAddress | None:
    """The lowest address of the range that is neither ``gateway`` nor in ``used`` (what the lab
    handed out before it allocated like host-local; ``bench churn --ipam lowest`` keeps it to
    show the reuse); None when the range is full."""
    return round_robin(cidr, gateway, used, None)
