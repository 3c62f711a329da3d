"""The nftables ruleset kube-network-policies programs on a node, as one ``nft -f`` batch. Pure.

kube-network-policies v1.1.1 pkg/dataplane/controller.go syncNFTablesRules (rule for rule, in
order; the Go builds netlink expressions with google/nftables, here the same rules are written in
nft's syntax): table ``inet kube-network-policies`` flushed by add+delete+add in one transaction
(so the batch is atomic), sets ``podips-v4``/``podips-v6`` (the local pods some policy selects:
ManagedIPs), and

- chain ``postrouting`` (filter, hook postrouting, priority srcnat - 5: "IPVS packets follow a
  different path ... so we process everything in the POSTROUTING hook before SNAT"): with
  --netfilter-bug-1766-fix ``udp dport 53 accept``; accept ICMPv6 133-137 (neighbour discovery);
  ``meta skuid 0 accept`` (root's own node traffic, issue #65); ``ct label <accept> ct state
  established,related accept``; queue every packet from or to a podips address; finally
  ``ct label set <accept>`` (the "fake" rule that enables the conntrack label extension);
- chain ``input`` (filter, hook input, priority srcnat + 1): ``iifname "lo" accept``; queue
  ``ct state new`` packets from a podips address (pod to node);
- chain ``prerouting`` (only with --netfilter-bug-1766-fix; priority dstnat + 5): accept what
  is not UDP to port 53, queue the rest from or to podips (after DNAT, kernels < 6.12).

The queue statement is ``queue [flags bypass] to <id>`` (bypass = --fail-open). ``render``
writes that (``Datapath.NATIVE``) for kernels with nft_queue (CONFIG_NFT_QUEUE).

``Datapath.COMPAT`` is this harness's departure for kernels without nft_queue (the CI host):
the same table and rules, but every ``queue`` statement becomes ``meta mark set meta mark |
QUEUE_MARK accept`` and the chains run just before iptables' mangle hooks (priority mangle - 1);
an iptables-nft rule in ``mangle`` (nft_compat + xt_NFQUEUE, which such kernels have) queues the
marked packets to the same queue number with ``--queue-bypass`` for fail-open
(``compat_iptables_rules``); the verdict loop accepts with ``ACCEPT_MARK`` set and chain
``label`` (priority mangle + 1) turns that mark into the conntrack label the source's verdict
sets through NFQA_CT (kernels without CONFIG_NETFILTER_NETLINK_GLUE_CT, like the CI host, cannot
take a label with a verdict), then clears both marks. What changes: the hook priority (-151
instead of 95 / 101; nothing of the lab hooks between them) and, in COMPAT, no prerouting chain
(no iptables table hooks prerouting after dstnat + 5; the DNS workaround is for kernels < 6.12,
the source's own flag help says so, and COMPAT forces it off).
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

TABLE = "kube-network-policies"  # controller.go Config.Defaults: NFTableName
DEFAULT_QUEUE_ID = 100  # pkg/cmd/cmd.go: --nfqueue-id default 100
DEFAULT_CT_LABEL_ACCEPT = 100  # controller.go Config.Defaults: CTLabelAccept
PODIPS_V4, PODIPS_V6 = "podips-v4", "podips-v6"  # controller.go podV4IPsSet / podV6IPsSet
# COMPAT's marks: bits no lab component uses (kube-proxy 0x4000/0x8000, kube-router 0x10000/0x20000)
QUEUE_MARK = 0x01000000
ACCEPT_MARK = 0x02000000
MANGLE_PRIORITY = -150  # NF_IP_PRI_MANGLE: iptables' mangle chains
# google/nftables ChainPriorityNATSource / NATDest = NF_IP_PRI_NAT_SRC (100) / NF_IP_PRI_NAT_DST (-100);
# written as numbers: nft refuses the name "srcnat" on the input hook
SRCNAT, DSTNAT = 100, -100


class Datapath(StrEnum):
    NATIVE = "native"  # nft queue statement (CONFIG_NFT_QUEUE)
    COMPAT = "compat"  # mark + iptables-nft NFQUEUE (nft_compat + xt_NFQUEUE)


def generate_label_mask(bit_index: int) -> bytes:
    """conntrack.go generateLabelMask: the 16 label bytes the source compares and sets
    (bit_index counted from the end of the byte array)."""
    mask = bytearray(16)
    if 0 <= bit_index <= 127:
        mask[len(mask) - bit_index // 8 - 1] = 1 << (bit_index % 8)
    return bytes(mask)


def kernel_label_bit(mask: bytes, byteorder: str = sys.byteorder) -> int:
    """The conntrack label bit number (nft's ``ct label N``) the kernel sees for ``mask``: the
    kernel's labels are an array of native-endian u32 words, and the source hands its bytes over
    unchanged, so on little-endian hosts label 100 is bit 28."""
    for word in range(4):
        value = int.from_bytes(mask[4 * word:4 * word + 4], byteorder)  # type: ignore[arg-type]
        if value:
            return 32 * word + value.bit_length() - 1
    raise ValueError("empty label mask")


@dataclass(frozen=True)
class NftOptions:
    """The source's options that shape the ruleset (pkg/cmd/cmd.go flags / dataplane.Config)."""

    fail_open: bool = True  # --fail-open (default true): queue flags bypass
    queue_id: int = DEFAULT_QUEUE_ID
    netfilter_bug_1766_fix: bool = True  # --netfilter-bug-1766-fix (default true)
    ct_label_accept: int = DEFAULT_CT_LABEL_ACCEPT
    skip_skuid_bypass: bool = False  # Config.skipSkuidBypass (tests only)
    datapath: Datapath = Datapath.NATIVE

    @property
    def label_bit(self) -> int:
        return kernel_label_bit(generate_label_mask(self.ct_label_accept))

    @property
    def dns_workaround(self) -> bool:
        """Whether the prerouting chain is built (never in COMPAT, see the module docstring)."""
        return self.netfilter_bug_1766_fix and self.datapath is Datapath.NATIVE


def queue_statement(opts: NftOptions) -> str:
    """What the source's ``queue`` expression is in this datapath."""
    if opts.datapath is Datapath.COMPAT:
        return f"meta mark set meta mark | {QUEUE_MARK:#010x} accept"
    return f"queue {'flags bypass ' if opts.fail_open else ''}to {opts.queue_id}"


def _elements(ips: Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address], version: int) -> str:
    chosen = [str(ip) for ip in ips if ip.version == version]
    return f"; elements = {{ {', '.join(chosen)} }}" if chosen else ""


def _priority(base: int, compat_offset: int, opts: NftOptions) -> str:
    if opts.datapath is Datapath.COMPAT:
        return str(MANGLE_PRIORITY + compat_offset)
    return str(base)


def render(managed_ips: Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address], opts: NftOptions) -> str:
    """The whole table as one ``nft -f`` batch (see the module docstring)."""
    ips = list(managed_ips)
    q = queue_statement(opts)
    label = opts.label_bit
    lines = [
        # controller.go: "add + delete + add for flushing all the table"
        f"add table inet {TABLE}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        f"  set {PODIPS_V4} {{ type ipv4_addr{_elements(ips, 4)}; }}",
        f"  set {PODIPS_V6} {{ type ipv6_addr{_elements(ips, 6)}; }}",
        "  chain postrouting {",
        f"    type filter hook postrouting priority {_priority(SRCNAT - 5, -1, opts)}; policy accept;",
    ]
    if opts.dns_workaround:
        lines.append("    meta l4proto udp udp dport 53 accept")
    for icmp_type in (133, 134, 135, 136, 137):  # RS, RA, NS, NA, redirect (issue #191)
        lines.append(f"    meta nfproto ipv6 meta l4proto ipv6-icmp icmpv6 type {icmp_type} accept")
    if not opts.skip_skuid_bypass:
        lines.append("    meta skuid 0 counter accept")
    lines += [
        f"    ct label {label} ct state established,related counter accept",
        f"    meta nfproto ipv4 ip saddr @{PODIPS_V4} {q}",
        f"    meta nfproto ipv4 ip daddr @{PODIPS_V4} {q}",
        f"    meta nfproto ipv6 ip6 saddr @{PODIPS_V6} {q}",
        f"    meta nfproto ipv6 ip6 daddr @{PODIPS_V6} {q}",
        f"    ct label set {label}",
        "  }",
        "  chain input {",
        f"    type filter hook input priority {_priority(SRCNAT + 1, -1, opts)}; policy accept;",
        '    iifname "lo" accept',
        f"    meta nfproto ipv4 ip saddr @{PODIPS_V4} ct state new {q}",
        f"    meta nfproto ipv6 ip6 saddr @{PODIPS_V6} ct state new {q}",
        "  }",
    ]
    if opts.dns_workaround:  # controller.go addDNSRacersWorkaroundRules
        lines += [
            "  chain prerouting {",
            f"    type filter hook prerouting priority {DSTNAT + 5}; policy accept;",
            "    meta l4proto != udp accept",
            "    meta l4proto udp udp dport != 53 accept",
            f"    meta nfproto ipv4 ip saddr @{PODIPS_V4} {q}",
            f"    meta nfproto ipv4 ip daddr @{PODIPS_V4} {q}",
            f"    meta nfproto ipv6 ip6 saddr @{PODIPS_V6} {q}",
            f"    meta nfproto ipv6 ip6 daddr @{PODIPS_V6} {q}",
            "  }",
        ]
    if opts.datapath is Datapath.COMPAT:
        # the harness's departure: the accept verdict's label, set from its mark (module docstring)
        for hook in ("postrouting", "input"):
            lines += [
                f"  chain label-{hook} {{",
                f"    type filter hook {hook} priority {MANGLE_PRIORITY + 1}; policy accept;",
                f"    meta mark & {ACCEPT_MARK:#010x} == {ACCEPT_MARK:#010x} ct label set {label}",
                f"    meta mark set meta mark & {~(QUEUE_MARK | ACCEPT_MARK) & 0xFFFFFFFF:#010x}",
                "  }",
            ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def delete_table() -> str:
    """controller.go cleanNFTablesRules: add + delete (idempotent when the table is absent)."""
    return f"add table inet {TABLE}\ndelete table inet {TABLE}\n"


def compat_iptables_rules(opts: NftOptions) -> list[list[str]]:
    """The iptables-nft ``-A`` argument lists of COMPAT's queue rules (table mangle): marked
    packets go to the queue, with ``--queue-bypass`` when fail-open."""
    bypass = ["--queue-bypass"] if opts.fail_open else []
    return [["-t", "mangle", "-A", chain, "-m", "mark", "--mark", f"{QUEUE_MARK:#x}/{QUEUE_MARK:#x}",
             "-m", "comment", "--comment", "kube-network-policies queue (harness compat)",
             "-j", "NFQUEUE", "--queue-num", str(opts.queue_id), *bypass]
            for chain in ("POSTROUTING", "INPUT")]
