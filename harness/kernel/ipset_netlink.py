"""ipset over netlink inside a lab namespace: the ``netlink`` apply strategy's set half.

The ops (``ipset_ops.IPSetOp``, e.g. kube-router's TMP/swap sequence from
``restore_text.ipset_ops``) become nfnetlink ipset messages packed by the builders below with
``netlink.attr`` (byte-identical to pyroute2's ``ipset_msg`` encoding, checked by unit tests;
~70x faster for a 512-entry add, see ``harness.kernel.netlink``) and sent by
``netlink.Socket.run``, ``PIPELINE`` messages per window. What ``ipset restore`` does and a
one-entry-per-request client would not:
- batching: many entries in one IPSET_CMD_ADD message (IPSET_ATTR_ADT holding one
  IPSET_ATTR_DATA per entry, as ``ipset restore`` does);
- ``nomatch`` entries (IPSET_ATTR_CADT_FLAGS = IPSET_FLAG_NOMATCH in the entry's data);
- no NLM_F_EXCL on create and add: an identical set or a present entry is fine (``-exist``).
The kernel handles the messages in order, synchronously, so the semantics are those of the
sequential ``ipset`` calls; every message asks for an ack and all are checked.

The socket is made inside the namespace by a ``netns.call_in`` worker and its namespace is
checked with ``SIOCGSKNS`` against ``/run/netns/<name>`` before the first request: a socket of
the root namespace is refused, never used. The kernel's protocol version and set-type revisions
are asked once per process (IPSET_CMD_PROTOCOL, IPSET_CMD_TYPE) and reused.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from harness.errors import KernelError
from harness.kernel import netns
from harness.kernel.ipset_ops import IPSetOp, parse_create
from harness.kernel.netlink import (
    NLA_F_NESTED,
    NLA_F_NET_BYTEORDER,
    NLM_F_ACK,
    NLM_F_DUMP,
    Request,
    Socket,
    attr,
    attr_be32,
    attr_str,
    attr_u8,
    attrs,
    describe_errno,
)

SIOCGSKNS = 0x894C
DEFAULT_BATCH = 512  # entries per netlink message (~24-40 bytes each, well under a datagram)
PIPELINE = 64  # messages sent before their acks are read (the acks must fit the receive buffer)
NETLINK_NETFILTER = 12

# linux v6.1 include/uapi/linux/netfilter/nfnetlink.h and include/uapi/linux/netfilter/ipset/ip_set.h
NFNL_SUBSYS_IPSET = 6
IPSET_PROTOCOL = 7  # the message layout built here
IPSET_CMD_PROTOCOL, IPSET_CMD_CREATE, IPSET_CMD_DESTROY, IPSET_CMD_FLUSH = 1, 2, 3, 4
IPSET_CMD_SWAP, IPSET_CMD_LIST, IPSET_CMD_ADD, IPSET_CMD_TYPE = 6, 7, 9, 13
IPSET_ATTR_PROTOCOL, IPSET_ATTR_SETNAME, IPSET_ATTR_TYPENAME, IPSET_ATTR_REVISION = 1, 2, 3, 4
IPSET_ATTR_FAMILY, IPSET_ATTR_FLAGS, IPSET_ATTR_DATA, IPSET_ATTR_ADT, IPSET_ATTR_LINENO = 5, 6, 7, 8, 9
IPSET_ATTR_IP, IPSET_ATTR_CIDR, IPSET_ATTR_TIMEOUT, IPSET_ATTR_CADT_FLAGS = 1, 3, 6, 8
IPSET_ATTR_HASHSIZE, IPSET_ATTR_MAXELEM = 18, 19
IPSET_ATTR_IPADDR_IPV4, IPSET_ATTR_IPADDR_IPV6 = 1, 2
IPSET_FLAG_LIST_SETNAME = 1 << 1
IPSET_FLAG_NOMATCH = 1 << 2
IPSET_FLAG_WITH_COUNTERS, IPSET_FLAG_WITH_COMMENT = 1 << 3, 1 << 4
IPSET_FLAG_WITH_FORCEADD, IPSET_FLAG_WITH_SKBINFO = 1 << 5, 1 << 6
_EXTENSION_FLAGS = {"counters": IPSET_FLAG_WITH_COUNTERS, "comment": IPSET_FLAG_WITH_COMMENT,
                    "forceadd": IPSET_FLAG_WITH_FORCEADD, "skbinfo": IPSET_FLAG_WITH_SKBINFO}
_FAMILIES = {"inet": socket.AF_INET, "inet6": socket.AF_INET6}

# ipset's own error codes (enum ipset_errno in ip_set.h and ip_set_hash.h), worded as ipset(8)
# words them (lib/errcode.c); below IPSET_ERR_PRIVATE a code is an errno. Codes whose meaning
# depends on the command are keyed (command, code).
IPSET_ERR_PRIVATE = 4096
IPSET_ERR_PROTOCOL, IPSET_ERR_FIND_TYPE, IPSET_ERR_MAX_SETS, IPSET_ERR_BUSY = 4097, 4098, 4099, 4100
IPSET_ERR_EXIST_SETNAME2, IPSET_ERR_TYPE_MISMATCH, IPSET_ERR_EXIST = 4101, 4102, 4103
IPSET_ERR_INVALID_CIDR, IPSET_ERR_INVALID_NETMASK, IPSET_ERR_INVALID_FAMILY = 4104, 4105, 4106
IPSET_ERR_TIMEOUT, IPSET_ERR_REFERENCED, IPSET_ERR_IPADDR_IPV4, IPSET_ERR_IPADDR_IPV6 = 4107, 4108, 4109, 4110
IPSET_ERR_TYPE_SPECIFIC = 4352
IPSET_ERR_HASH_FULL, IPSET_ERR_HASH_ELEM = IPSET_ERR_TYPE_SPECIFIC, IPSET_ERR_TYPE_SPECIFIC + 1
_IPSET_ERRORS: dict[int | tuple[int, int], str] = {
    IPSET_ERR_PROTOCOL: "kernel error received: ipset protocol error",
    IPSET_ERR_FIND_TYPE: "kernel error received: set type not supported",
    IPSET_ERR_MAX_SETS: "kernel error received: maximal number of sets reached, cannot create more",
    IPSET_ERR_BUSY: "set cannot be destroyed: it is in use by a kernel component",
    (IPSET_CMD_SWAP, IPSET_ERR_EXIST_SETNAME2): "the second set does not exist",
    (IPSET_CMD_SWAP, IPSET_ERR_TYPE_MISMATCH): "the sets cannot be swapped: their type does not match",
    (IPSET_CMD_CREATE, IPSET_ERR_EXIST): "set cannot be created: set with the same name already exists",
    (IPSET_CMD_ADD, IPSET_ERR_EXIST): "element cannot be added to the set: it's already added",
    IPSET_ERR_INVALID_CIDR: "the value of the CIDR parameter of the IP address is invalid",
    IPSET_ERR_INVALID_NETMASK: "the value of the netmask parameter is invalid",
    IPSET_ERR_INVALID_FAMILY: "protocol family not supported by the set type",
    IPSET_ERR_TIMEOUT: "timeout cannot be used: set was created without timeout support",
    IPSET_ERR_REFERENCED: "set is in use by another component",
    IPSET_ERR_IPADDR_IPV4: "an IPv4 address is expected, but not received",
    IPSET_ERR_IPADDR_IPV6: "an IPv6 address is expected, but not received",
    IPSET_ERR_HASH_FULL: "hash is full, cannot add more elements",
    IPSET_ERR_HASH_ELEM: "null-valued element, cannot be stored in a hash type of set",
    (IPSET_CMD_CREATE, 17): "set cannot be created: set with the same name already exists",  # EEXIST
    (IPSET_CMD_SWAP, 2): "the first set does not exist",  # ENOENT
    2: "the set with the given name does not exist",  # ENOENT
}
_COMMANDS = {"create": IPSET_CMD_CREATE, "destroy": IPSET_CMD_DESTROY, "flush": IPSET_CMD_FLUSH,
             "swap": IPSET_CMD_SWAP, "list": IPSET_CMD_LIST, "add": IPSET_CMD_ADD}


@dataclass
class NetlinkStats:
    """What one netlink phase did: requests sent (each acked) and entries added."""

    requests: int = 0
    entries: int = 0


def describe_error(code: int, req: Request) -> str:
    """The error of a refused ipset request in ipset(8)'s words (errno text otherwise)."""
    cmd = req.type & 0xFF
    text = _IPSET_ERRORS.get((cmd, code)) or _IPSET_ERRORS.get(code)
    if text is None:
        return describe_errno(code) if code < IPSET_ERR_PRIVATE else f"ipset error {code}"
    return f"{text} [{code}]"


# -- message builders ------------------------------------------------------------------------------
def _message(cmd: int, what: str, family: int, body_attrs: bytes, flags: int = NLM_F_ACK) -> Request:
    body = struct.pack("=BBH", family, 0, 0) + body_attrs  # nfgenmsg: family, NFNETLINK_V0, res_id
    return Request((NFNL_SUBSYS_IPSET << 8) | cmd, flags, body, what)


# The per-entry hot path (a 139k-entry sync packs 139k of these): fixed shapes packed in one
# struct call each, constant attributes prebuilt. Every piece is a multiple of 4 bytes long, so
# an entry needs no padding.
_IP4_ENTRY = struct.Struct("=HHHH4s")  # IPSET_ATTR_IP { IPSET_ATTR_IPADDR_IPV4 }
_IP4_ENTRY_HEAD = (12, IPSET_ATTR_IP | NLA_F_NESTED, 8, IPSET_ATTR_IPADDR_IPV4 | NLA_F_NET_BYTEORDER)
_CIDR = struct.Struct("=HHB3x")
_CIDR_HEAD = (5, IPSET_ATTR_CIDR | NLA_F_NET_BYTEORDER)
_TIMEOUT_0 = attr_be32(IPSET_ATTR_TIMEOUT, 0)
_NOMATCH = attr_be32(IPSET_ATTR_CADT_FLAGS, IPSET_FLAG_NOMATCH)
_DATA = struct.Struct("=HH")
_DATA_NESTED = IPSET_ATTR_DATA | NLA_F_NESTED


def _entry_bytes(entry_args: list[str], family: int) -> bytes:
    """IPSET_ATTR_DATA's payload for ``10.0.0.0/8``, ``10.1.0.0/16 nomatch``, ``10.0.0.1 timeout 0``."""
    ip, _, cidr = entry_args[0].partition("/")
    if family == socket.AF_INET6:
        out = attr(IPSET_ATTR_IP, attr(IPSET_ATTR_IPADDR_IPV6, socket.inet_pton(socket.AF_INET6, ip),
                                       NLA_F_NET_BYTEORDER), NLA_F_NESTED)
    else:
        out = _IP4_ENTRY.pack(*_IP4_ENTRY_HEAD, socket.inet_aton(ip))
    if cidr:
        out += _CIDR.pack(*_CIDR_HEAD, int(cidr))
    n = len(entry_args)
    if n == 1:
        return out
    nomatch = False
    i = 1
    while i < n:
        opt = entry_args[i]
        if opt == "nomatch":
            nomatch = True
            i += 1
        elif opt == "timeout" and i + 1 < n:
            value = entry_args[i + 1]
            out += _TIMEOUT_0 if value == "0" else attr_be32(IPSET_ATTR_TIMEOUT, int(value))
            i += 2
        else:
            raise ValueError(f"unsupported ipset entry option {opt!r} in {' '.join(entry_args)!r}")
    if nomatch:  # after the timeout, as the old encoder and the byte-identity test have it
        out += _NOMATCH
    return out


_LINENO_0 = attr(IPSET_ATTR_LINENO, b"\0\0\0\0")  # the kernel requires it with IPSET_ATTR_ADT


def encode_add(proto: int, name: str, entries: list[list[str]], family: int = socket.AF_INET) -> Request:
    """One IPSET_CMD_ADD message carrying ``entries`` (IPSET_ATTR_ADT of IPSET_ATTR_DATA)."""
    pack, entry = _DATA.pack, _entry_bytes
    parts = []
    for e in entries:
        data = entry(e, family)
        parts.append(pack(4 + len(data), _DATA_NESTED))
        parts.append(data)
    body = attr_u8(IPSET_ATTR_PROTOCOL, proto) + attr_str(IPSET_ATTR_SETNAME, name) + _LINENO_0 \
        + attr(IPSET_ATTR_ADT, b"".join(parts), NLA_F_NESTED)
    return _message(IPSET_CMD_ADD, f"ipset add {name} ({len(entries)} entries from {' '.join(entries[0])})",
                    family, body)


def encode_create(proto: int, name: str, stype: str, revision: int, family: int = socket.AF_INET,
                  cadt_flags: int = 0, maxelem: int | None = None, hashsize: int | None = None,
                  timeout: int | None = None) -> Request:
    """One IPSET_CMD_CREATE message (without NLM_F_EXCL: an identical existing set is fine)."""
    data = b""
    if cadt_flags:
        data += attr_be32(IPSET_ATTR_CADT_FLAGS, cadt_flags)
    if maxelem is not None:
        data += attr_be32(IPSET_ATTR_MAXELEM, maxelem)
    if hashsize is not None:
        data += attr_be32(IPSET_ATTR_HASHSIZE, hashsize)
    if timeout is not None:
        data += attr_be32(IPSET_ATTR_TIMEOUT, timeout)
    body = (attr_u8(IPSET_ATTR_PROTOCOL, proto) + attr_str(IPSET_ATTR_SETNAME, name)
            + attr_str(IPSET_ATTR_TYPENAME, stype) + attr_u8(IPSET_ATTR_REVISION, revision)
            + attr_u8(IPSET_ATTR_FAMILY, family) + attr(IPSET_ATTR_DATA, data, NLA_F_NESTED))
    return _message(IPSET_CMD_CREATE, f"ipset create {name} {stype}", family, body)


def encode_simple(proto: int, cmd: int, name: str, name2: str | None = None) -> Request:
    """FLUSH/DESTROY (``name``) or SWAP (``name`` with ``name2``)."""
    body = attr_u8(IPSET_ATTR_PROTOCOL, proto) + attr_str(IPSET_ATTR_SETNAME, name)
    if name2 is not None:
        body += attr_str(IPSET_ATTR_TYPENAME, name2)  # the kernel reads swap's second name from TYPENAME
    verb = next(v for v, c in _COMMANDS.items() if c == cmd)
    return _message(cmd, f"ipset {verb} {name}" + (f" {name2}" if name2 else ""), socket.AF_INET, body)


def encode_list_names(proto: int) -> Request:
    """A dump of every set's name (``ipset list -n``)."""
    # network order without NLA_F_NET_BYTEORDER, as ipset(8) sends it
    body = attr_u8(IPSET_ATTR_PROTOCOL, proto) + attr(IPSET_ATTR_FLAGS, struct.pack(">I", IPSET_FLAG_LIST_SETNAME))
    return _message(IPSET_CMD_LIST, "ipset list -n", socket.AF_INET, body, NLM_F_DUMP)


def encode_protocol() -> Request:
    """IPSET_CMD_PROTOCOL: which protocol version the kernel speaks."""
    return _message(IPSET_CMD_PROTOCOL, "ipset protocol query", socket.AF_INET,
                    attr_u8(IPSET_ATTR_PROTOCOL, IPSET_PROTOCOL), 0)


def encode_type(proto: int, stype: str, family: int = socket.AF_INET) -> Request:
    """IPSET_CMD_TYPE: the revisions of set type ``stype`` the kernel has."""
    body = attr_u8(IPSET_ATTR_PROTOCOL, proto) + attr_str(IPSET_ATTR_TYPENAME, stype) \
        + attr_u8(IPSET_ATTR_FAMILY, family)
    return _message(IPSET_CMD_TYPE, f"ipset type query {stype}", family, body, 0)


def coalesce_adds(ops: Iterable[IPSetOp]) -> Iterator[tuple[str, Any]]:
    """``(verb, args)`` in order, with each run of consecutive ``add``s to one set merged into
    ``("add", (set_name, [entry_args, ...]))`` so it can be sent as batched messages."""
    pending: list[list[str]] = []
    pending_set: str | None = None
    for op in ops:
        if op.verb == "add" and op.args[0] == pending_set:
            pending.append(op.args[1:])
            continue
        if pending_set is not None:
            yield "add", (pending_set, pending)
            pending, pending_set = [], None
        if op.verb == "add":
            pending_set, pending = op.args[0], [op.args[1:]]
        else:
            yield op.verb, op.args
    if pending_set is not None:
        yield "add", (pending_set, pending)


def requests(ops: Iterable[IPSetOp], proto: int, revisions: dict[str, int], batch: int = DEFAULT_BATCH,
             stats: NetlinkStats | None = None) -> Iterator[Request]:
    """The netlink requests for ``ops`` in order: consecutive adds to one set ``batch`` entries per
    message; ``revisions`` gives each set type's revision (from the kernel). Counts entries in
    ``stats``."""
    batch = max(1, batch)
    families: dict[str, int] = {}
    for verb, args in coalesce_adds(ops):
        if verb == "add":
            name, entries = args
            family = families.get(name, socket.AF_INET)
            for i in range(0, len(entries), batch):
                yield encode_add(proto, name, entries[i:i + batch], family)
            if stats is not None:
                stats.entries += len(entries)
        elif verb == "create":
            opts = parse_create(args[1:])
            family = families[args[0]] = _FAMILIES[opts.family]
            cadt = 0
            for ext in opts.extensions:
                cadt |= _EXTENSION_FLAGS[ext]
            yield encode_create(proto, args[0], opts.stype, revisions[opts.stype], family, cadt,
                                opts.maxelem, opts.hashsize, opts.timeout)
        elif verb in ("flush", "destroy", "swap"):
            yield encode_simple(proto, _COMMANDS[verb], args[0], args[1] if verb == "swap" else None)
        else:
            raise ValueError(f"unsupported ipset operation {verb!r}")


# -- the socket ------------------------------------------------------------------------------------
def _socket_netns_inode(sock: socket.socket) -> int:
    fd = fcntl.ioctl(sock.fileno(), SIOCGSKNS)
    try:
        return os.fstat(fd).st_ino
    finally:
        os.close(fd)


def _open(netns_name: str) -> Socket:
    """A NETLINK_NETFILTER socket of the calling thread's namespace, which must be ``netns_name``."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        if _socket_netns_inode(sock) != os.stat(netns.path(netns_name)).st_ino:
            raise KernelError(f"netlink socket is not in namespace {netns_name}; refusing to use it")
        return Socket(sock, netns_name, describe_error, timeout=60)  # a lost ack must not hang a sync
    except BaseException:
        sock.close()
        raise


def _u8(payload: memoryview) -> int:
    return payload[0]


# The kernel's ipset protocol version and set-type revisions do not change while we run: asked
# once per process, then reused by every sync.
_kernel_info: dict[str, int] = {}
_info_lock = threading.Lock()


def _kernel_versions(nl: Socket, types: Iterable[str]) -> tuple[int, dict[str, int]]:
    """(protocol version, {type: newest revision}), asking the kernel what is not known yet."""
    types = list(dict.fromkeys(types))
    with _info_lock:
        if "__proto__" not in _kernel_info:
            reply = nl.query(encode_protocol())
            kernel = next(_u8(p) for msg in reply for k, p in attrs(msg, 4) if k == IPSET_ATTR_PROTOCOL)
            # never claim a newer protocol than the messages built here
            _kernel_info["__proto__"] = min(kernel, IPSET_PROTOCOL)
        proto = _kernel_info["__proto__"]
        for t in types:
            if t not in _kernel_info:
                reply = nl.query(encode_type(proto, t))
                _kernel_info[t] = next(_u8(p) for msg in reply for k, p in attrs(msg, 4) if k == IPSET_ATTR_REVISION)
        return proto, {t: _kernel_info[t] for t in types}


def list_set_names(netns_name: str) -> list[str]:
    """Names of all sets in the namespace (one dump request, names only)."""

    def worker() -> list[str]:
        with _open(netns_name) as nl:
            proto, _ = _kernel_versions(nl, [])
            return [bytes(p).split(b"\0", 1)[0].decode()
                    for msg in nl.query(encode_list_names(proto))
                    for k, p in attrs(msg, 4) if k == IPSET_ATTR_SETNAME]

    return netns.call_in(netns_name, worker)


def apply_ops(netns_name: str, ops: list[IPSetOp], batch: int = DEFAULT_BATCH) -> NetlinkStats:
    """Run ipset operations (e.g. ``restore_text.ipset_ops``) over netlink inside the namespace:
    consecutive adds to one set go out ``batch`` entries per message, ``PIPELINE`` messages
    before their acks are read. KernelError names the first refused operation."""

    def worker() -> NetlinkStats:
        with _open(netns_name) as nl:
            proto, revisions = _kernel_versions(nl, [op.args[1] for op in ops if op.verb == "create"])
            stats = NetlinkStats()
            stats.requests = nl.run(requests(ops, proto, revisions, batch, stats), window=PIPELINE)
            return stats

    return netns.call_in(netns_name, worker)


def destroy_sets(netns_name: str, names: list[str]) -> NetlinkStats:
    """Destroy the named sets (each must be unreferenced); pipelined like ``apply_ops``."""
    if not names:
        return NetlinkStats()
    return apply_ops(netns_name, [IPSetOp("destroy", [n]) for n in names])
