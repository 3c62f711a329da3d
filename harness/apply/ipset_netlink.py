"""ipset over netlink with pyroute2, inside a lab namespace: the ``netlink`` apply strategy's set half.

pyroute2's ``AsyncIPSet`` opens its NETLINK_NETFILTER socket in the namespace of the thread that
first uses it and cannot be handed a socket (no ``use_socket`` in 0.9). So the whole set phase
runs in a ``netns.call_in`` worker thread that lives inside the namespace, and before the first
request the socket's namespace is checked with ``SIOCGSKNS`` against ``/run/netns/<name>``: a
socket of the root namespace is refused, never used.

What pyroute2 0.9 lacks and is done here with its own message classes and request machinery:
- ``nomatch`` entries (IPSET_ATTR_CADT_FLAGS = IPSET_FLAG_NOMATCH in the entry's data);
- batching: many entries in one IPSET_CMD_ADD message (IPSET_ATTR_ADT holding one
  IPSET_ATTR_DATA per entry, as ``ipset restore`` does), one ack per batch instead of per entry.
``swap``, ``flush``, ``create``, ``destroy`` and the set-name listing are pyroute2's own calls.
The sequence of operations is ``restore_text.ipset_ops``: the same TMP/swap (or flush/add) steps
kube-router feeds ``ipset restore``.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from pyroute2.ipset import AsyncIPSet, _nlmsg_error
from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nfnetlink.ipset import (
    IPSET_CMD_ADD,
    IPSET_FLAG_LIST_SETNAME,
    IPSET_FLAG_NOMATCH,
    ipset_msg,
)

from harness.apply.restore_text import IPSetOp
from harness.errors import KernelError
from harness.lab import netns

log = logging.getLogger(__name__)

SIOCGSKNS = 0x894C
DEFAULT_BATCH = 512  # entries per netlink message (~40 bytes each, well under the socket buffer)


@dataclass
class NetlinkStats:
    """What one netlink phase did: requests sent (each acked) and entries added."""

    requests: int = 0
    entries: int = 0


def _socket_netns_inode(sock: socket.socket) -> int:
    fd = fcntl.ioctl(sock.fileno(), SIOCGSKNS)
    try:
        return os.fstat(fd).st_ino
    finally:
        os.close(fd)


def _check_socket(ips: AsyncIPSet, netns_name: str) -> None:
    want = os.stat(netns.path(netns_name)).st_ino
    got = _socket_netns_inode(ips.socket)
    if got != want:
        raise KernelError(f"ipset netlink socket is not in namespace {netns_name}; refusing to use it")


def _parse_create(args: list[str]) -> dict:
    """pyroute2 ``create`` keyword arguments from ``<type> family inet hashsize N maxelem N timeout N``."""
    stype, opts = args[0], args[1:]
    kw: dict = {"stype": stype}
    i = 0
    while i < len(opts):
        key = opts[i]
        val = opts[i + 1] if i + 1 < len(opts) else None
        if key == "family":
            kw["family"] = socket.AF_INET6 if val == "inet6" else socket.AF_INET
        elif key in ("hashsize", "maxelem", "timeout"):
            kw[key] = int(val)  # type: ignore[arg-type]
        elif key in ("bucketsize", "initval"):
            pass  # kernel defaults; pyroute2 0.9 has no attribute for them
        elif key in ("counters", "comment", "forceadd", "skbinfo"):
            kw[key] = True
            i += 1
            continue
        else:
            raise ValueError(f"unsupported ipset create option {key!r}")
        i += 2
    return kw


def entry_data(entry_args: list[str], family: int = socket.AF_INET) -> list:
    """IPSET_ATTR_DATA attributes for one entry: ``10.0.0.0/8``, ``10.1.0.0/16 nomatch``,
    ``10.0.0.1 timeout 0``."""
    addr, opts = entry_args[0], entry_args[1:]
    version_attr = "IPSET_ATTR_IPADDR_IPV6" if family == socket.AF_INET6 else "IPSET_ATTR_IPADDR_IPV4"
    ip, _, cidr = addr.partition("/")
    attrs: list = [["IPSET_ATTR_IP_FROM", {"attrs": [[version_attr, ip]]}]]
    if cidr:
        attrs.append(["IPSET_ATTR_CIDR", int(cidr)])
    flags = 0
    i = 0
    while i < len(opts):
        if opts[i] == "nomatch":
            flags |= IPSET_FLAG_NOMATCH
            i += 1
        elif opts[i] == "timeout" and i + 1 < len(opts):
            attrs.append(["IPSET_ATTR_TIMEOUT", int(opts[i + 1])])
            i += 2
        else:
            raise ValueError(f"unsupported ipset entry option {opts[i]!r} in {' '.join(entry_args)!r}")
    if flags:
        attrs.append(["IPSET_ATTR_CADT_FLAGS", flags])
    return attrs


async def _add_batch(ips: AsyncIPSet, name: str, entries: list[list[str]], family: int) -> None:
    msg = ipset_msg()
    msg["attrs"] = [
        ["IPSET_ATTR_PROTOCOL", ips._proto_version],
        ["IPSET_ATTR_SETNAME", name],
        ["IPSET_ATTR_LINENO", 0],  # the kernel requires it with IPSET_ATTR_ADT
        ["IPSET_ATTR_ADT", {"attrs": [["IPSET_ATTR_DATA", {"attrs": entry_data(e, family)}]
                                      for e in entries]}],
    ]
    # no NLM_F_EXCL: an entry already present is fine (ipset -exist)
    await ips.request(msg, IPSET_CMD_ADD, msg_flags=NLM_F_REQUEST | NLM_F_ACK, terminate=_nlmsg_error)


class _Session:
    def __init__(self, ips: AsyncIPSet, batch: int):
        self.ips = ips
        self.batch = max(1, batch)
        self.stats = NetlinkStats()
        self.revisions: dict[str, int] = {}
        self.families: dict[str, int] = {}

    async def create(self, args: list[str]) -> None:
        name, kw = args[0], _parse_create(args[1:])
        stype = kw["stype"]
        if stype not in self.revisions:  # one TYPE query per set type, not one per create
            self.revisions[stype] = (await self.ips.get_supported_revisions(stype))[1]
            self.stats.requests += 1
        self.ips._attr_revision = self.revisions[stype]
        self.families[name] = kw.get("family", socket.AF_INET)
        await self.ips.create(name, exclusive=False, **kw)
        self.stats.requests += 1

    async def add(self, name: str, entries: list[list[str]]) -> None:
        family = self.families.get(name, socket.AF_INET)
        for i in range(0, len(entries), self.batch):
            await _add_batch(self.ips, name, entries[i:i + self.batch], family)
            self.stats.requests += 1
        self.stats.entries += len(entries)

    async def run(self, ops: Iterable[IPSetOp]) -> None:
        pending: list[list[str]] = []
        pending_set: str | None = None
        for op in ops:
            if op.verb == "add" and (pending_set is None or op.args[0] == pending_set):
                pending_set = op.args[0]
                pending.append(op.args[1:])
                continue
            if pending:
                await self.add(pending_set, pending)  # type: ignore[arg-type]
                pending, pending_set = [], None
            if op.verb == "add":
                pending_set, pending = op.args[0], [op.args[1:]]
            elif op.verb == "create":
                await self.create(op.args)
            elif op.verb == "flush":
                await self.ips.flush(op.args[0])
                self.stats.requests += 1
            elif op.verb == "swap":
                await self.ips.swap(op.args[0], op.args[1])
                self.stats.requests += 1
            elif op.verb == "destroy":
                await self.ips.destroy(op.args[0])
                self.stats.requests += 1
            else:
                raise ValueError(f"unsupported ipset operation {op.verb!r}")
        if pending:
            await self.add(pending_set, pending)  # type: ignore[arg-type]


async def _list_names(ips: AsyncIPSet) -> list[str]:
    names = []
    async for msg in await ips.list(flags=IPSET_FLAG_LIST_SETNAME):
        name = msg.get_attr("IPSET_ATTR_SETNAME")
        if name:
            names.append(name)
    return names


def _in_netns(netns_name: str, coro_fn, *args):
    """Run ``coro_fn(ips, *args)`` with a fresh AsyncIPSet, all inside namespace ``netns_name``."""

    async def main():
        ips = AsyncIPSet()
        try:
            _check_socket(ips, netns_name)
            await ips.setup_endpoint()
            return await coro_fn(ips, *args)
        finally:
            ips.close()

    def worker():
        try:
            return asyncio.run(main())
        except NetlinkError as e:
            raise KernelError(f"ipset netlink in {netns_name}: {e}") from e

    return netns.call_in(netns_name, worker)


def list_set_names(netns_name: str) -> list[str]:
    """Names of all sets in the namespace (one dump request, names only)."""
    return _in_netns(netns_name, _list_names)


def apply_ops(netns_name: str, ops: list[IPSetOp], batch: int = DEFAULT_BATCH) -> NetlinkStats:
    """Run ipset operations (``restore_text.ipset_ops``) over netlink inside the namespace;
    consecutive adds to one set go out ``batch`` entries per message."""

    async def go(ips: AsyncIPSet) -> NetlinkStats:
        session = _Session(ips, batch)
        await session.run(ops)
        return session.stats

    return _in_netns(netns_name, go)


def destroy_sets(netns_name: str, names: list[str]) -> NetlinkStats:
    """Destroy the named sets (each must be unreferenced)."""

    async def go(ips: AsyncIPSet) -> NetlinkStats:
        stats = NetlinkStats()
        for name in names:
            await ips.destroy(name)
            stats.requests += 1
        return stats

    return _in_netns(netns_name, go) if names else NetlinkStats()
