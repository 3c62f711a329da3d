"""Pure tests of harness.kernel's netlink layer (no root): the shared attribute packer, the ipset
message builders checked byte for byte against pyroute2's independent encoder and decoder, and
the one batch sender / reply reader driven by a scripted kernel."""

from __future__ import annotations

import socket
import struct

import pytest
from pyroute2.netlink.nfnetlink import ipset as pr_ipset
from pyroute2.netlink.nfnetlink.ipset import ipset_msg

from harness.errors import KernelError
from harness.kernel import ipset_netlink as ipn
from harness.kernel import netlink
from harness.kernel.ipset_ops import CreateOptions, IPSetOp, parse_create

HDR = struct.Struct("=IHHII")


# -- attributes ------------------------------------------------------------------------------------
def test_attributes_are_padded_and_flagged():
    assert netlink.attr(3, b"ab") == struct.pack("=HH", 6, 3) + b"ab\0\0"
    assert netlink.attr(7, b"abcd", netlink.NLA_F_NESTED) == struct.pack("=HH", 8, 7 | 0x8000) + b"abcd"
    assert netlink.attr_str(1, "eth0") == struct.pack("=HH", 9, 1) + b"eth0\0\0\0\0"
    assert netlink.attr_u32(4, 258) == struct.pack("=HHI", 8, 4, 258)
    assert netlink.attr_be32(6, 258) == struct.pack("=HH", 8, 6 | 0x4000) + b"\0\0\1\2"
    nested = netlink.attr(1, netlink.attr_u8(2, 9) + netlink.attr_str(3, "x"), netlink.NLA_F_NESTED)
    outer = list(netlink.attrs(nested))
    assert [(k, len(p)) for k, p in outer] == [(1, 16)]
    assert [(k, bytes(p)) for k, p in netlink.attrs(outer[0][1])] == [(2, b"\x09"), (3, b"x\0")]


# -- ipset messages against pyroute2 ---------------------------------------------------------------
def _pyroute2_bytes(cmd: int, seq: int, attrs: list, flags: int = netlink.NLM_F_REQUEST | netlink.NLM_F_ACK,
                    family: int = socket.AF_INET) -> bytes:
    msg = ipset_msg()
    msg["header"]["type"] = (pr_ipset.NFNL_SUBSYS_IPSET << 8) | cmd
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg["nfgen_family"] = family
    msg["attrs"] = attrs
    msg.encode()
    return bytes(msg.data)


def _ip(addr: str, *more: list) -> dict:
    return {"attrs": [["IPSET_ATTR_IP_FROM", {"attrs": [["IPSET_ATTR_IPADDR_IPV4", addr]]}], *more]}


def test_ipset_messages_are_byte_identical_to_pyroute2():
    entries = [["172.16.0.0/12", "timeout", "0"], ["172.17.0.0/16", "timeout", "0", "nomatch"], ["10.0.0.1"]]
    assert netlink.pack(ipn.encode_add(7, "KUBE-SRC-X", entries), 5) == _pyroute2_bytes(pr_ipset.IPSET_CMD_ADD, 5, [
        ["IPSET_ATTR_PROTOCOL", 7], ["IPSET_ATTR_SETNAME", "KUBE-SRC-X"], ["IPSET_ATTR_LINENO", 0],
        ["IPSET_ATTR_ADT", {"attrs": [
            ["IPSET_ATTR_DATA", _ip("172.16.0.0", ["IPSET_ATTR_CIDR", 12], ["IPSET_ATTR_TIMEOUT", 0])],
            ["IPSET_ATTR_DATA", _ip("172.17.0.0", ["IPSET_ATTR_CIDR", 16], ["IPSET_ATTR_TIMEOUT", 0],
                                    ["IPSET_ATTR_CADT_FLAGS", pr_ipset.IPSET_FLAG_NOMATCH])],
            ["IPSET_ATTR_DATA", _ip("10.0.0.1")]]}]])
    assert netlink.pack(ipn.encode_create(7, "S", "hash:net", 7, maxelem=65536, hashsize=1024, timeout=0,
                                          cadt_flags=pr_ipset.IPSET_FLAG_WITH_COUNTERS), 6) == \
        _pyroute2_bytes(pr_ipset.IPSET_CMD_CREATE, 6, [
            ["IPSET_ATTR_PROTOCOL", 7], ["IPSET_ATTR_SETNAME", "S"], ["IPSET_ATTR_TYPENAME", "hash:net"],
            ["IPSET_ATTR_REVISION", 7], ["IPSET_ATTR_FAMILY", socket.AF_INET],
            ["IPSET_ATTR_DATA", {"attrs": [["IPSET_ATTR_CADT_FLAGS", pr_ipset.IPSET_FLAG_WITH_COUNTERS],
                                           ["IPSET_ATTR_MAXELEM", 65536], ["IPSET_ATTR_HASHSIZE", 1024],
                                           ["IPSET_ATTR_TIMEOUT", 0]]}]])
    assert netlink.pack(ipn.encode_simple(7, ipn.IPSET_CMD_SWAP, "TMP-A", "S"), 7) == _pyroute2_bytes(
        pr_ipset.IPSET_CMD_SWAP, 7, [["IPSET_ATTR_PROTOCOL", 7], ["IPSET_ATTR_SETNAME", "TMP-A"],
                                     ["IPSET_ATTR_TYPENAME", "S"]])
    assert netlink.pack(ipn.encode_simple(7, ipn.IPSET_CMD_DESTROY, "TMP-A"), 8) == _pyroute2_bytes(
        pr_ipset.IPSET_CMD_DESTROY, 8, [["IPSET_ATTR_PROTOCOL", 7], ["IPSET_ATTR_SETNAME", "TMP-A"]])
    assert netlink.pack(ipn.encode_type(7, "hash:ip"), 9) == _pyroute2_bytes(
        pr_ipset.IPSET_CMD_TYPE, 9, [["IPSET_ATTR_PROTOCOL", 7], ["IPSET_ATTR_TYPENAME", "hash:ip"],
                                     ["IPSET_ATTR_FAMILY", socket.AF_INET]], netlink.NLM_F_REQUEST)
    assert netlink.pack(ipn.encode_protocol(), 10) == _pyroute2_bytes(
        pr_ipset.IPSET_CMD_PROTOCOL, 10, [["IPSET_ATTR_PROTOCOL", 7]], netlink.NLM_F_REQUEST)


def test_ipset_entries_decode_with_nomatch_timeout_and_ipv6():
    msg = ipset_msg(netlink.pack(ipn.encode_add(7, "B", [["172.17.0.0/16", "timeout", "0", "nomatch"],
                                                         ["10.0.0.1"]]), 1))
    msg.decode()
    data = [d for d in msg.get_attr("IPSET_ATTR_ADT").get_attrs("IPSET_ATTR_DATA")]
    assert data[0].get_attr("IPSET_ATTR_CIDR") == 16 and data[0].get_attr("IPSET_ATTR_TIMEOUT") == 0
    assert data[0].get_attr("IPSET_ATTR_CADT_FLAGS") == pr_ipset.IPSET_FLAG_NOMATCH
    assert data[0].get_attr("IPSET_ATTR_IP_FROM").get_attr("IPSET_ATTR_IPADDR_IPV4") == "172.17.0.0"
    assert data[1].get_attr("IPSET_ATTR_CADT_FLAGS") is None and data[1].get_attr("IPSET_ATTR_CIDR") is None
    v6 = ipset_msg(netlink.pack(ipn.encode_add(7, "C", [["fd00::1"]], socket.AF_INET6), 1))
    v6.decode()
    ip = v6.get_attr("IPSET_ATTR_ADT").get_attr("IPSET_ATTR_DATA").get_attr("IPSET_ATTR_IP_FROM")
    assert ip.get_attr("IPSET_ATTR_IPADDR_IPV6") == "fd00::1" and v6["nfgen_family"] == socket.AF_INET6
    with pytest.raises(ValueError, match="comment"):
        ipn.encode_add(7, "B", [["10.0.0.1", "comment", "x"]])


def test_ipset_constants_match_pyroute2():
    for name in ("IPSET_CMD_PROTOCOL", "IPSET_CMD_CREATE", "IPSET_CMD_DESTROY", "IPSET_CMD_FLUSH",
                 "IPSET_CMD_SWAP", "IPSET_CMD_LIST", "IPSET_CMD_ADD", "IPSET_CMD_TYPE", "IPSET_FLAG_NOMATCH",
                 "IPSET_FLAG_LIST_SETNAME", "IPSET_FLAG_WITH_COUNTERS", "IPSET_FLAG_WITH_COMMENT",
                 "IPSET_FLAG_WITH_FORCEADD", "IPSET_FLAG_WITH_SKBINFO", "IPSET_ERR_PROTOCOL", "IPSET_ERR_FIND_TYPE",
                 "IPSET_ERR_MAX_SETS", "IPSET_ERR_BUSY", "IPSET_ERR_EXIST_SETNAME2", "IPSET_ERR_TYPE_MISMATCH",
                 "IPSET_ERR_EXIST", "IPSET_ERR_INVALID_CIDR", "IPSET_ERR_INVALID_NETMASK", "IPSET_ERR_INVALID_FAMILY",
                 "IPSET_ERR_TIMEOUT", "IPSET_ERR_REFERENCED", "IPSET_ERR_IPADDR_IPV4", "IPSET_ERR_IPADDR_IPV6",
                 "IPSET_ERR_TYPE_SPECIFIC"):
        assert getattr(ipn, name) == getattr(pr_ipset, name), name
    assert ipn.NFNL_SUBSYS_IPSET == pr_ipset.NFNL_SUBSYS_IPSET
    assert ipn.describe_error(pr_ipset.IPSET_ERR_EXIST_SETNAME2, ipn.encode_simple(7, ipn.IPSET_CMD_SWAP, "A", "B")) \
        == "the second set does not exist [4101]"
    assert ipn.describe_error(pr_ipset.IPSET_ERR_TIMEOUT, ipn.encode_add(7, "A", [["10.0.0.1"]])).startswith(
        "timeout cannot be used")
    assert ipn.describe_error(1, ipn.encode_add(7, "A", [["10.0.0.1"]])) == "Operation not permitted [EPERM]"


def test_create_options_parse_like_ipset():
    assert parse_create(["hash:net", "family", "inet", "hashsize", "1024", "maxelem", "65536", "timeout", "0",
                         "bucketsize", "12", "counters"]) == CreateOptions("hash:net", "inet", 1024, 65536, 0,
                                                                           ("counters",))
    assert parse_create(["hash:ip", "family", "inet6"]).family == "inet6"
    with pytest.raises(ValueError, match="netmask"):
        parse_create(["hash:ip", "netmask", "24"])
    with pytest.raises(ValueError, match="no value"):
        parse_create(["hash:ip", "maxelem"])


def test_netlink_runner_batches_consecutive_adds_to_one_set_only():
    ops = [IPSetOp("create", ["A", "hash:ip"]), IPSetOp("add", ["A", "10.0.0.1"]),
           IPSetOp("add", ["A", "10.0.0.2", "timeout", "0"]), IPSetOp("add", ["B", "10.1.0.0/16", "nomatch"]),
           IPSetOp("swap", ["A", "B"]), IPSetOp("add", ["A", "10.0.0.3"])]
    assert list(ipn.coalesce_adds(ops)) == [
        ("create", ["A", "hash:ip"]),
        ("add", ("A", [["10.0.0.1"], ["10.0.0.2", "timeout", "0"]])),
        ("add", ("B", [["10.1.0.0/16", "nomatch"]])),
        ("swap", ["A", "B"]),
        ("add", ("A", [["10.0.0.3"]])),
    ]


def test_ops_become_requests_in_order_with_batched_adds():
    ops = [IPSetOp("create", ["S", "hash:ip", "family", "inet6", "counters"]),
           *(IPSetOp("add", ["S", f"fd00::{i}"]) for i in range(5)), IPSetOp("destroy", ["T"])]
    stats = ipn.NetlinkStats()
    reqs = list(ipn.requests(ops, 7, {"hash:ip": 4}, batch=2, stats=stats))
    assert [r.type & 0xFF for r in reqs] == [ipn.IPSET_CMD_CREATE] + [ipn.IPSET_CMD_ADD] * 3 + [ipn.IPSET_CMD_DESTROY]
    assert stats.entries == 5 and reqs[3].what == "ipset add S (1 entries from fd00::4)"
    create = ipset_msg(netlink.pack(reqs[0], 1))
    create.decode()
    assert create.get_attr("IPSET_ATTR_REVISION") == 4 and create["nfgen_family"] == socket.AF_INET6
    assert create.get_attr("IPSET_ATTR_DATA").get_attr("IPSET_ATTR_CADT_FLAGS") == pr_ipset.IPSET_FLAG_WITH_COUNTERS
    assert all(r.body[0] == socket.AF_INET6 for r in reqs[1:4])  # adds take the set's family
    with pytest.raises(ValueError, match="rename"):
        list(ipn.requests([IPSetOp("rename", ["A", "B"])], 7, {}))


# -- the batch sender and reply reader against a scripted kernel -----------------------------------
class ScriptedKernel:
    """Stands in for a netlink socket: answers each datagram as the kernel does (an error for
    every failing request, an ack where NLM_F_ACK is set; dumps answered from ``dump``), one
    reply per datagram, or all replies in one when ``coalesce``."""

    def __init__(self, fail: dict[int, int] | None = None, dump: list[list[bytes]] | None = None,
                 coalesce: bool = False):
        self.fail = fail or {}  # request index (0-based, over the socket's life) -> errno
        self.dump = dump or []
        self.coalesce = coalesce
        self.datagrams: list[bytes] = []
        self.requests: list[tuple[int, int, int]] = []  # (type, flags, seq)
        self.replies: list[bytes] = []

    def setsockopt(self, *args: object) -> None:
        pass

    def settimeout(self, t: float) -> None:
        pass

    def bind(self, addr: object) -> None:
        pass

    def close(self) -> None:
        pass

    def send(self, data: bytes) -> int:
        self.datagrams.append(data)
        out = []
        off = 0
        while off < len(data):
            length, mtype, flags, seq, _ = HDR.unpack_from(data, off)
            index = len(self.requests)
            self.requests.append((mtype, flags, seq))
            if flags & netlink.NLM_F_DUMP == netlink.NLM_F_DUMP:
                for part in self.dump:
                    out.append(b"".join(HDR.pack(16 + len(p), 99, netlink.NLM_F_MULTI, seq, 0) + p for p in part))
                out.append(HDR.pack(20, netlink.NLMSG_DONE, netlink.NLM_F_MULTI, seq, 0) + b"\0\0\0\0")
            else:
                code = self.fail.get(index, 0)
                if code or flags & netlink.NLM_F_ACK:
                    out.append(HDR.pack(36, netlink.NLMSG_ERROR, 0, seq, 0) + struct.pack("=i", -code)
                               + data[off:off + 16])
            off += (length + 3) & ~3
        self.replies.extend([b"".join(out)] if self.coalesce and out else out)
        return len(data)

    def recv_into(self, buf: bytearray, n: int, flags: int = 0) -> int:
        data = self.replies.pop(0)
        buf[:min(n, len(data))] = data[:n]
        return len(data)


def _reqs(n: int, size: int = 100) -> list[netlink.Request]:
    return [netlink.Request(16, netlink.NLM_F_CREATE, bytes(size), f"request {i}") for i in range(n)]


def test_batch_fills_datagrams_and_acks_only_the_last_request():
    k = ScriptedKernel()
    sent = netlink.Socket(k, "nph-x").run(_reqs(1000))  # type: ignore[arg-type]
    assert sent == 1000 and len(k.requests) == 1000
    assert all(len(d) <= netlink.MAX_DATAGRAM for d in k.datagrams) and len(k.datagrams) == 4
    assert [f & netlink.NLM_F_ACK for _, f, _ in k.requests].count(netlink.NLM_F_ACK) == 1
    assert k.requests[-1][1] & netlink.NLM_F_ACK and k.requests[0][1] & netlink.NLM_F_REQUEST
    assert len({seq for *_, seq in k.requests}) == 1000 and not k.replies


def test_first_failed_request_is_named_and_later_windows_are_not_sent():
    k = ScriptedKernel(fail={3: 17, 5: 2}, coalesce=True)
    nl = netlink.Socket(k, "nph-x")  # type: ignore[arg-type]
    with pytest.raises(KernelError, match=r"^request 3 in nph-x: File exists \[EEXIST\] \(\+1 more failed requests\)$"):
        nl.run(_reqs(20), window=8)
    assert len(k.requests) == 8  # the window with errors ran to its end, the next two were not sent
    assert [f & netlink.NLM_F_ACK for _, f, _ in k.requests] == [0] * 7 + [netlink.NLM_F_ACK]
    # the socket stays usable: the next batch's replies are told apart by sequence number
    assert nl.run(_reqs(3), window=2) == 3 and not k.replies


def test_requests_that_ask_for_acks_are_read_window_by_window():
    k = ScriptedKernel()
    reqs = [netlink.Request(r.type, netlink.NLM_F_ACK, r.body, r.what) for r in _reqs(10)]
    assert netlink.Socket(k, "nph-x").run(iter(reqs), window=4) == 10  # type: ignore[arg-type]
    assert len(k.datagrams) == 3 and not k.replies  # 4 + 4 + 2, every ack read before the next window


def test_query_reads_a_dump_across_datagrams_until_done():
    names = [[netlink.attr_str(ipn.IPSET_ATTR_SETNAME, n) for n in part] for part in (["A", "B"], ["C"])]
    k = ScriptedKernel(dump=[[b"\2\0\0\0" + a for a in part] for part in names])
    nl = netlink.Socket(k, "nph-x")  # type: ignore[arg-type]
    payloads = nl.query(ipn.encode_list_names(7))
    got = [bytes(p).rstrip(b"\0").decode() for msg in payloads for kind, p in netlink.attrs(msg, 4)]
    assert got == ["A", "B", "C"] and not k.replies
    assert k.requests[0][1] & netlink.NLM_F_DUMP == netlink.NLM_F_DUMP and not k.requests[0][1] & netlink.NLM_F_ACK
    k.fail = {1: 1}
    with pytest.raises(KernelError, match=r"ipset type query hash:ip in nph-x: Operation not permitted"):
        nl.query(ipn.encode_type(7, "hash:ip"))


def test_an_oversized_reply_is_an_error_not_a_silent_truncation():
    k = ScriptedKernel(dump=[[bytes(1 << 17)]])
    with pytest.raises(KernelError, match="overflowed"):
        netlink.Socket(k, "nph-x").query(ipn.encode_list_names(7))  # type: ignore[arg-type]
