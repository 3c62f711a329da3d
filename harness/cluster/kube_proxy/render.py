"""kube-proxy's iptables mode, rendered from the model: pure text, no kernel.

Source read: kubernetes v1.28.0 ``pkg/proxy/iptables/proxier.go`` (the upstream tree as imported
in github:kevinhehc/k8s-1.28 at ffd718af; the stored kubernetes/kubernetes snapshot is a 2016
commit and the full repository is too large to fetch). Every rule below cites the function it
follows; ``P`` below stands for ``v1.28.0:pkg/proxy/iptables/proxier.go``.

What is reproduced: the jump rules of ``iptablesJumpChains`` and ``iptablesKubeletJumpChains``
(ensured one by one with ``iptables -C``/``-I``), then one ``iptables-restore --noflush
--counters`` of ``*filter`` + ``*nat`` as ``syncProxyRules`` writes it: KUBE-SERVICES (nat: the
ClusterIP capture; filter: the REJECT for a service port without endpoints), KUBE-SVC-<hash>
with ``-m statistic --mode random --probability`` (``%0.10f`` of 1/n), KUBE-SEP-<hash> (hairpin
``-s <ep> -j KUBE-MARK-MASQ`` and the DNAT), KUBE-MARK-MASQ / KUBE-POSTROUTING (mark 0x4000,
MASQUERADE ``--random-fully``), the local-traffic detector by cluster CIDR (``! -s <clusterCIDR>
-j KUBE-MARK-MASQ``), KUBE-NODEPORTS (empty: no NodePort services are modeled, but the chain and
its tail call exist), KUBE-FORWARD (ctstate INVALID drop, #74839; mark accept; conntrack accept),
comments, large-cluster mode (no per-endpoint comments above 1000 endpoints), partial syncs
(chains of unchanged services left out of the restore input), stale chain deletion and the UDP
conntrack cleanup after a sync (``stale_udp_conntrack``).

Assumptions, said here and in docs/services.md: ``--iptables-localhost-nodeports=false`` (no NodePorts
are modeled, so no ``route_localnet`` sysctl and no KUBE-FIREWALL rule are needed); the
``ClusterCIDR`` local-traffic detector with the model's cluster CIDR (kubeadm passes
``clusterCIDR``); IPv4 only; no canary chains (``ipt.Monitor``); service ports are written
sorted by name where kube-proxy iterates a Go map (rule order between distinct ClusterIP:port
matches does not change what matches).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from dataclasses import dataclass, field

from harness.model.cluster import Cluster
from harness.model.service import all_endpoint_slices, ready_endpoints

# P: const block
KUBE_SERVICES = "KUBE-SERVICES"
KUBE_EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
KUBE_NODEPORTS = "KUBE-NODEPORTS"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_FORWARD = "KUBE-FORWARD"
KUBE_PROXY_FIREWALL = "KUBE-PROXY-FIREWALL"
KUBELET_FIREWALL = "KUBE-FIREWALL"
LARGE_CLUSTER_ENDPOINTS_THRESHOLD = 1000  # P: largeClusterEndpointsThreshold
# P: servicePortPolicyClusterChainNamePrefix etc.; isServiceChainName
SERVICE_CHAIN_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-SEP-", "KUBE-FW-", "KUBE-EXT-")


@dataclass(frozen=True)
class KubeProxyConfig:
    """The KubeProxyConfiguration fields the iptables proxier reads (v1.28.0 defaults:
    ``pkg/proxy/apis/config/v1alpha1/defaults.go``)."""

    masquerade_bit: int = 14
    masquerade_all: bool = False
    cluster_cidr: str | None = None  # None: the model's cluster CIDR (kubeadm's podSubnet)
    min_sync_period_s: float = 1.0
    sync_period_s: float = 30.0
    random_fully: bool = True  # iptables >= 1.6.2 (HasRandomFully); Debian 12 has 1.8.9
    # P: KUBE-FORWARD "-m conntrack --ctstate INVALID -j DROP" (#74839), unconditional in v1.28.0.
    # False is a what-if: kube-proxy before that fix, or a later proxier.go (read in a fork with
    # nfacct, tag not pinned) that skips it when nf_conntrack_tcp_be_liberal is set.
    invalid_drop: bool = True

    @property
    def masquerade_mark(self) -> str:
        # P NewProxier: masqueradeMark := fmt.Sprintf("%#08x", masqueradeValue); Go's zero padding
        # gives 8 digits after the 0x (fmt/format.go fmtInteger): "0x00004000"
        return "0x" + format(1 << self.masquerade_bit, "08x")


DEFAULT_CONFIG = KubeProxyConfig()


@dataclass(frozen=True)
class JumpChain:
    """One entry of P ``iptablesJumpChains``: ``-I <src> [extra] [-m comment --comment c] -j <dst>``."""

    table: str
    dst: str
    src: str
    comment: str
    extra: tuple[str, ...] = ()

    def args(self) -> list[str]:
        """The rule's arguments after the chain name, as EnsureRule gets them."""
        out = list(self.extra)
        if self.comment:
            out += ["-m", "comment", "--comment", self.comment]
        return out + ["-j", self.dst]


_NEW = ("-m", "conntrack", "--ctstate", "NEW")
# P: var iptablesJumpChains (order matters: each is prepended, so the last lands on top)
JUMP_CHAINS: tuple[JumpChain, ...] = (
    JumpChain("filter", KUBE_EXTERNAL_SERVICES, "INPUT", "kubernetes externally-visible service portals", _NEW),
    JumpChain("filter", KUBE_EXTERNAL_SERVICES, "FORWARD", "kubernetes externally-visible service portals", _NEW),
    JumpChain("filter", KUBE_NODEPORTS, "INPUT", "kubernetes health check service ports"),
    JumpChain("filter", KUBE_SERVICES, "FORWARD", "kubernetes service portals", _NEW),
    JumpChain("filter", KUBE_SERVICES, "OUTPUT", "kubernetes service portals", _NEW),
    JumpChain("filter", KUBE_FORWARD, "FORWARD", "kubernetes forwarding rules"),
    JumpChain("filter", KUBE_PROXY_FIREWALL, "INPUT", "kubernetes load balancer firewall", _NEW),
    JumpChain("filter", KUBE_PROXY_FIREWALL, "OUTPUT", "kubernetes load balancer firewall", _NEW),
    JumpChain("filter", KUBE_PROXY_FIREWALL, "FORWARD", "kubernetes load balancer firewall", _NEW),
    JumpChain("nat", KUBE_SERVICES, "OUTPUT", "kubernetes service portals"),
    JumpChain("nat", KUBE_SERVICES, "PREROUTING", "kubernetes service portals"),
    JumpChain("nat", KUBE_POSTROUTING, "POSTROUTING", "kubernetes postrouting rules"),
    # P: var iptablesKubeletJumpChains (duplicates of kubelet's; no comment)
    JumpChain("filter", KUBELET_FIREWALL, "INPUT", ""),
    JumpChain("filter", KUBELET_FIREWALL, "OUTPUT", ""),
)


def port_proto_hash(service_port_name: str, protocol: str) -> str:
    """P portProtoHash: base32(sha256(servicePortName + protocol))[:16]."""
    digest = hashlib.sha256((service_port_name + protocol).encode()).digest()
    return base64.b32encode(digest).decode()[:16]


def service_port_chain_name(service_port_name: str, protocol: str) -> str:
    """P servicePortPolicyClusterChain: ``KUBE-SVC-<hash>`` (protocol lower-case)."""
    return "KUBE-SVC-" + port_proto_hash(service_port_name, protocol)


def endpoint_chain_name(service_port_name: str, protocol: str, endpoint: str) -> str:
    """P servicePortEndpointChainName: ``KUBE-SEP-`` + base32(sha256(name + protocol + "ip:port"))[:16]."""
    digest = hashlib.sha256((service_port_name + protocol + endpoint).encode()).digest()
    return "KUBE-SEP-" + base64.b32encode(digest).decode()[:16]


def probability(n: int) -> str:
    """P computeProbability: ``fmt.Sprintf("%0.10f", 1.0/float64(n))``."""
    return f"{1.0 / n:0.10f}"


def is_service_chain(name: str) -> bool:
    """P isServiceChainName."""
    return name.startswith(SERVICE_CHAIN_PREFIXES)


# -- the view kube-proxy syncs from -------------------------------------------------------------

@dataclass(frozen=True)
class ServicePortView:
    """One service port as kube-proxy's svcPortMap + endpointsMap see it."""

    name: str  # ServicePortName.String(): ``ns/svc`` or ``ns/svc:port`` (types.go fmtPortName)
    cluster_ip: ipaddress.IPv4Address
    port: int
    protocol: str  # lower-case, as the rules write it
    endpoints: tuple[str, ...]  # ready "ip:port", sorted as endpointslicecache.go byEndpoint


@dataclass(frozen=True)
class ProxyView:
    """What a node's kube-proxy knows: every ClusterIP service port with its ready endpoints."""

    ports: tuple[ServicePortView, ...]
    cluster_cidr: str

    @property
    def total_endpoints(self) -> int:
        return sum(len(p.endpoints) for p in self.ports)


def proxy_view(cluster: Cluster) -> ProxyView:
    """The service ports and ready endpoints of ``cluster`` (headless Services are skipped: P
    newServiceInfo / ServiceChangeTracker skip ``clusterIP: None``)."""
    slices = all_endpoint_slices(cluster)
    ports = []
    for key, svc in cluster.services.items():
        if svc.cluster_ip is None:
            continue
        for sp in svc.ports:
            name = key + (f":{sp.name}" if sp.name else "")
            eps = tuple(f"{ip}:{port}" for ip, port in ready_endpoints(slices[key], sp))
            ports.append(ServicePortView(name, svc.cluster_ip, sp.port, sp.protocol.lower(), eps))
    ports.sort(key=lambda p: (p.name, p.protocol))
    return ProxyView(tuple(ports), str(cluster.cluster_cidr))


# -- UDP conntrack cleanup ----------------------------------------------------------------------

def stale_udp_conntrack(previous: ProxyView | None, current: ProxyView) -> list[list[str]]:
    """The ``conntrack`` argument lists kube-proxy runs after a sync (v1.28.0
    ``pkg/proxy/conntrack/cleanup.go`` CleanStaleEntries; ``conntrack.go`` ClearEntriesForIP /
    ClearEntriesForNAT): for UDP only, ``-D --orig-dst <clusterIP> -p udp`` for a service port
    deleted or newly active (0 -> some endpoints: "black hole" entries made while it had none),
    and ``-D --orig-dst <clusterIP> --dst-nat <endpointIP> -p udp`` for every removed endpoint,
    "so that if the same client keeps sending, the packets will get routed to a new endpoint".
    ``previous`` None: the first sync (every UDP port with endpoints is newly active). Pure."""
    before = {p.name: p for p in (previous.ports if previous else ()) if p.protocol == "udp"}
    now = {p.name: p for p in current.ports if p.protocol == "udp"}
    ips: list[str] = []
    for name, p in before.items():  # serviceUpdateResult.DeletedUDPClusterIPs
        if name not in now and str(p.cluster_ip) not in ips:
            ips.append(str(p.cluster_ip))
    for name, p in now.items():  # endpointUpdateResult.NewlyActiveUDPServices
        if p.endpoints and not (before[name].endpoints if name in before else ()) and str(p.cluster_ip) not in ips:
            ips.append(str(p.cluster_ip))
    out = [["-D", "--orig-dst", ip, "-p", "udp"] for ip in ips]
    for name, p in before.items():  # endpointUpdateResult.DeletedUDPEndpoints (for ports still present)
        if name not in now:
            continue
        for ep in p.endpoints:
            if ep not in now[name].endpoints:
                out.append(["-D", "--orig-dst", str(p.cluster_ip), "--dst-nat", ep.rsplit(":", 1)[0], "-p", "udp"])
    return out


# -- rendering ----------------------------------------------------------------------------------

@dataclass
class ServiceRules:
    """The nat lines of one service port: its KUBE-SERVICES capture (always written) and its
    KUBE-SVC / KUBE-SEP chains and rules (what a partial sync leaves out when unchanged)."""

    capture: list[str] = field(default_factory=list)
    chains: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)


@dataclass
class ProxyRuleset:
    """One sync's output: the top-level filter/nat lines and the per-service nat groups."""

    filter_chains: list[str]
    filter_rules: list[str]
    nat_chains: list[str]
    nat_rules_head: list[str]  # KUBE-POSTROUTING, KUBE-MARK-MASQ
    services: dict[str, ServiceRules]
    nat_rules_tail: list[str]  # the KUBE-NODEPORTS tail call
    active_nat_chains: set[str]
    total_endpoints: int
    large_cluster_mode: bool

    def restore_text(self, *, skip: set[str] | frozenset[str] = frozenset(),
                     stale_nat_chains: list[str] | tuple[str, ...] = ()) -> str:
        """The ``iptables-restore --noflush`` input; service groups named in ``skip`` are left out
        (P: partial sync, "If the SVC/SVL/EXT/FW/SEP chains have not changed since the last
        sync then we can omit them from the restore input"), ``stale_nat_chains`` are flushed
        and deleted (P: "Delete chains no longer in use")."""
        nat_chains = list(self.nat_chains)
        nat_rules = list(self.nat_rules_head)
        for name, group in self.services.items():
            nat_rules += group.capture
            if name in skip:
                continue
            nat_chains += group.chains
            nat_rules += group.rules
        for chain in stale_nat_chains:
            nat_chains.append(f":{chain} - [0:0]")
            nat_rules.append(f"-X {chain}")
        nat_rules += self.nat_rules_tail
        # P syncProxyRules "Sync rules.": *filter then *nat, one COMMIT each
        lines = ["*filter", *self.filter_chains, *self.filter_rules, "COMMIT",
                 "*nat", *nat_chains, *nat_rules, "COMMIT"]
        return "\n".join(lines) + "\n"


def _chain_line(name: str) -> str:
    return f":{name} - [0:0]"  # utiliptables.MakeChainLine


def render(view: ProxyView, config: KubeProxyConfig = DEFAULT_CONFIG) -> ProxyRuleset:
    """The filter and nat content ``syncProxyRules`` writes for ``view``; pure."""
    mark = config.masquerade_mark
    cluster_cidr = config.cluster_cidr or view.cluster_cidr
    # P: top-level chain lines
    filter_chains = [_chain_line(c) for c in (KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD,
                                               KUBE_NODEPORTS, KUBE_PROXY_FIREWALL)]
    nat_chains = [_chain_line(c) for c in (KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ)]
    # P: "Install the kubernetes-specific postrouting rules"
    masq = f'-A {KUBE_POSTROUTING} -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE'
    head = [f"-A {KUBE_POSTROUTING} -m mark ! --mark {mark}/{mark} -j RETURN",
            f"-A {KUBE_POSTROUTING} -j MARK --xor-mark {mark}",
            masq + (" --random-fully" if config.random_fully else ""),
            f"-A {KUBE_MARK_MASQ} -j MARK --or-mark {mark}"]
    filter_rules: list[str] = []
    services: dict[str, ServiceRules] = {}
    active: set[str] = set()
    total = view.total_endpoints
    large = total > LARGE_CLUSTER_ENDPOINTS_THRESHOLD  # P: proxier.largeClusterMode
    for sp in view.ports:
        _render_port(sp, config, cluster_cidr, large, filter_rules, services, active)
    # P: "Finally, tail-call to the nodePorts chain." (nodePortAddresses match all; localhost
    # NodePorts off -> ! -d 127.0.0.0/8)
    tail = [f'-A {KUBE_SERVICES} -m comment --comment "kubernetes service nodeports; NOTE: this must be the '
            f'last rule in this chain" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j {KUBE_NODEPORTS}']
    # P: KUBE-FORWARD: INVALID drop (#74839), marked traffic accept, conntrack accept
    if config.invalid_drop:
        filter_rules.append(f"-A {KUBE_FORWARD} -m conntrack --ctstate INVALID -j DROP")
    filter_rules += [
        f'-A {KUBE_FORWARD} -m comment --comment "kubernetes forwarding rules" -m mark --mark {mark}/{mark} -j ACCEPT',
        f'-A {KUBE_FORWARD} -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack '
        "--ctstate RELATED,ESTABLISHED -j ACCEPT",
    ]
    return ProxyRuleset(filter_chains, filter_rules, nat_chains, head, services, tail, active, total, large)


def _render_port(sp: ServicePortView, config: KubeProxyConfig, cluster_cidr: str, large: bool,
                 filter_rules: list[str], services: dict[str, ServiceRules], active: set[str]) -> None:
    proto = sp.protocol
    match = f"-m {proto} -p {proto} -d {sp.cluster_ip} --dport {sp.port}"
    if not sp.endpoints:
        # P: "The service has no endpoints at all": no nat chains, only the filter REJECT
        filter_rules.append(f'-A {KUBE_SERVICES} -m comment --comment "{sp.name} has no endpoints" {match} -j REJECT')
        return
    svc_chain = service_port_chain_name(sp.name, proto)
    active.add(svc_chain)
    group = ServiceRules()
    # P: "Capture the clusterIP."
    group.capture.append(f'-A {KUBE_SERVICES} -m comment --comment "{sp.name} cluster IP" {match} -j {svc_chain}')
    # P: "Set up internal traffic handling." (masqueradeAll, else the ClusterCIDR detector's IfNotLocal)
    internal = f'-A {svc_chain} -m comment --comment "{sp.name} cluster IP" {match}'
    if config.masquerade_all:
        group.rules.append(f"{internal} -j {KUBE_MARK_MASQ}")
    elif cluster_cidr:
        group.rules.append(f"{internal} ! -s {cluster_cidr} -j {KUBE_MARK_MASQ}")
    # P: natChains.Write(clusterPolicyChain); writeServiceToEndpointRules
    group.chains.append(_chain_line(svc_chain))
    n = len(sp.endpoints)
    sep_names = [endpoint_chain_name(sp.name, proto, ep) for ep in sp.endpoints]
    for i, (ep, sep) in enumerate(zip(sp.endpoints, sep_names, strict=True)):
        comment = "" if large else f' -m comment --comment "{sp.name} -> {ep}"'
        stat = f" -m statistic --mode random --probability {probability(n - i)}" if i < n - 1 else ""
        group.rules.append(f"-A {svc_chain}{comment}{stat} -j {sep}")
    # P: "Generate the per-endpoint chains." (appendServiceCommentLocked: unquoted name)
    for ep, sep in zip(sp.endpoints, sep_names, strict=True):
        active.add(sep)
        group.chains.append(_chain_line(sep))
        comment = "" if large else f" -m comment --comment {sp.name}"
        ip = ep.rsplit(":", 1)[0]
        group.rules.append(f"-A {sep}{comment} -s {ip} -j {KUBE_MARK_MASQ}")
        group.rules.append(f"-A {sep}{comment} -m {proto} -p {proto} -j DNAT --to-destination {ep}")
    services[sp.name] = group
