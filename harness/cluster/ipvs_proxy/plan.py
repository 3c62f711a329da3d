"""kube-router's IPVS service proxy, planned: Services + endpoints -> the node state its
NetworkServicesController keeps (pure; no kernel, no tools).

What the plan holds, each piece cited to kube-router v2.10.0 ``pkg/controllers/proxy``
(``network_services_controller.go`` = NSC, ``service_endpoints_sync.go`` = SES,
``linux_networking.go`` = LN, ``utils.go``):

- ``kube-dummy-if``, a dummy link, up, holding every ClusterIP as a /32 with scope link, plus a
  ``local`` route per ClusterIP in table local with the node IP as preferred source
  (LN ``getKubeDummyInterface``, ``ipAddrAdd``; issue #376 explains the source route).
- one IPVS virtual service per (ClusterIP, protocol, port), scheduler ``rr`` unless the
  ``kube-router.io/service.scheduler`` annotation says otherwise, netmask /32, the persistent
  flag and timeout for ``sessionAffinity: ClientIP`` (LN ``ipvsAddService``, NSC
  ``ipvsSetPersistence``, NSC ``buildServicesInfo``); one real server per endpoint, weight 1,
  forwarding method masquerade (moby/ipvs ``Destination`` with ConnectionFlags 0 =
  IP_VS_CONN_F_MASQ; SES ``addEndpointsToIPVSService``).
- the sysctls NSC ``Run`` sets once at start (in this order): ``net/ipv4/vs/conntrack=1``,
  ``expire_nodest_conn=1``, ``expire_quiescent_template=1``, ``conn_reuse_mode=0``,
  ``conf/all/arp_ignore=1``, ``conf/all/arp_announce=2``; then ``rp_filter`` 1 -> 2 on all,
  kube-bridge, kube-dummy-if and the node interface (only where it is 1).
- the IPVS firewall (NSC ``setupIpvsFirewall``/``syncIpvsFirewall``, ``--ipvs-permit-all``
  default true): ipsets ``kube-router-local-ips`` (hash:ip), ``kube-router-svip`` (hash:ip),
  ``kube-router-svip-prt`` (hash:ip,port), all ``timeout 0``; chain ``KUBE-ROUTER-SERVICES``
  (3 ICMP accepts, accept ``svip-prt dst,dst``, REJECT icmp-port-unreachable to anything not
  in local-ips) jumped to from INPUT position 1 for ``svip dst``.
- the masquerade rules of NSC ``ensureMasqueradeIptablesRule`` in nat POSTROUTING:
  ``-m ipvs --ipvs --vdir ORIGINAL --vmethod MASQ ... -j SNAT --to-source <nodeIP>
  --random-fully`` for all traffic with ``--masquerade-all`` (default false), and always the
  same with ``! -s <podCIDR> ! -d <podCIDR>``.

Changes since v1.3 (v1.3.2 ``pkg/controllers/proxy/network_services_controller.go``, one file
then; not rendered here, only noted): the same four IPVS sysctls and arp_ignore/arp_announce, no
rp_filter step, IPv4 only; the ipsets were named ``kube-router-ipvs-services`` (ip,port) and
``kube-router-service-ips``; in KUBE-ROUTER-SERVICES the service accept was *inserted* at
position 1 ahead of the ICMP accepts (whose comments read "... to service IPs"); the same REJECT,
INPUT jump and SNAT rules (then with ``nsc.nodeIP``/``nsc.podCidr``).

Not modelled (say so, do not pretend): NodePort, ExternalIP/LoadBalancer, DSR, hairpin,
graceful termination (``--ipvs-graceful-termination`` is off by default), IPv6, the
NodePort health checks, ``internalTrafficPolicy: Local``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from harness.errors import ConfigError

KUBE_DUMMY_IF = "kube-dummy-if"  # NSC const KubeDummyIf
FIREWALL_CHAIN = "KUBE-ROUTER-SERVICES"  # NSC const ipvsFirewallChainName
LOCAL_IPS_SET = "kube-router-local-ips"  # NSC const localIPsIPSetName
SVIP_SET = "kube-router-svip"  # NSC const serviceIPsIPSetName
SVIP_PORT_SET = "kube-router-svip-prt"  # NSC const serviceIPPortsSetName
TMP_SET_PREFIX = "TMP-"  # kube-router v2.10.0 pkg/utils/ipset.go: tmpIPSetPrefix
# NSC buildServicesInfo: the schedulers the annotation may choose (moby/ipvs names + "mh")
SCHEDULERS = ("rr", "lc", "dh", "sh", "mh")
PROTOCOLS = ("TCP", "UDP", "SCTP")

# NSC Run: (sysctl path, value) in the order it sets them.
SYSCTLS: tuple[tuple[str, int], ...] = (
    ("net/ipv4/vs/conntrack", 1),  # ipvsConntrackEnable
    ("net/ipv4/vs/expire_nodest_conn", 1),  # ipvsExpireNodestConnEnable (RH solution 58653)
    ("net/ipv4/vs/expire_quiescent_template", 1),  # ipvsExpireQuiescentTemplateEnable
    ("net/ipv4/vs/conn_reuse_mode", 0),  # ipvsConnReuseModeDisableSpecialHandling (k8s PR 71114)
    ("net/ipv4/conf/all/arp_ignore", 1),  # arpIgnoreReplyOnlyIfTargetIPIsLocal (k8s PR 70530)
    ("net/ipv4/conf/all/arp_announce", 2),  # arpAnnounceUseBestLocalAddress
)
# NSC Run: rp_filter is set to 2 only on these interfaces and only where it reads 1.
RP_FILTER_IFACES = ("all", "kube-bridge", KUBE_DUMMY_IF)  # + the node interface

# kube-router v2.10.0 pkg/utils/iptables.go CommonICMPRules (IPv4): (icmp type, comment)
COMMON_ICMP = (("echo-request", "allow icmp echo requests"),
               ("destination-unreachable", "allow icmp destination unreachable messages"),
               ("time-exceeded", "allow icmp time exceeded messages"))


@dataclass(frozen=True)
class ServicePort:
    """One port of a ClusterIP Service with its ready endpoints: the proxy's whole input.

    (NSC ``buildServicesInfo`` makes one serviceInfo per Service port; ``endpoints`` are the
    ready addresses of its EndpointSlices with the target port.) ``scheduler`` mirrors the
    ``kube-router.io/service.scheduler`` annotation; ``affinity_timeout_s`` > 0 means
    ``sessionAffinity: ClientIP`` with that ``timeoutSeconds``."""

    cluster_ip: str
    port: int
    protocol: str = "TCP"
    endpoints: tuple[tuple[str, int], ...] = ()
    namespace: str = "default"
    name: str = ""
    scheduler: str = "rr"
    affinity_timeout_s: int = 0

    @property
    def key(self) -> tuple[str, str, int]:
        """(ClusterIP, protocol lower-case, port): kube-router's generateIPPortID parts."""
        return (self.cluster_ip, self.protocol.lower(), self.port)


@dataclass(frozen=True)
class ProxyConfig:
    """The node and the flags of one kube-router instance (``pkg/options/options.go`` defaults)."""

    node_ip: str
    pod_cidr: str
    local_ips: tuple[str, ...] = ()  # getAllLocalIPs: addresses of links not named *dummy*/*kube*/*docker*
    node_interface: str = "eth0"
    masquerade_all: bool = False  # --masquerade-all (default false)
    permit_all: bool = True  # --ipvs-permit-all (default true)
    random_fully: bool = True  # iptables HasRandomFully(): true for iptables >= 1.6.2
    # (the sync loop is not modelled: NSC Run syncs every --ipvs-sync-period, default 5m,
    # and on requests through syncChan, a channel of capacity 2)


@dataclass(frozen=True)
class RealServer:
    ip: str
    port: int
    weight: int = 1
    method: str = "masq"


@dataclass(frozen=True)
class VirtualService:
    """An IPVS virtual service and its real servers, as ``ipvsadm -S -n`` would list it."""

    protocol: str  # tcp | udp | sctp
    vip: str
    port: int
    scheduler: str = "rr"
    persistent_s: int = 0  # 0: not persistent
    reals: tuple[RealServer, ...] = ()

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.vip, self.protocol, self.port)


@dataclass(frozen=True)
class IPSet:
    name: str
    type: str
    entries: tuple[str, ...]

    @property
    def options(self) -> str:
        return f"{self.type} timeout 0"


@dataclass
class ProxyPlan:
    """Everything the proxy keeps on one node, in the order kube-router establishes it."""

    dummy_link: str = KUBE_DUMMY_IF
    addresses: list[str] = field(default_factory=list)  # ClusterIPs held as /32 on kube-dummy-if
    node_ip: str = ""  # preferred source of each ClusterIP's local route
    services: list[VirtualService] = field(default_factory=list)
    sysctls: list[tuple[str, int]] = field(default_factory=list)
    rp_filter_ifaces: list[str] = field(default_factory=list)
    ipsets: list[IPSet] = field(default_factory=list)
    filter_rules: list[list[str]] = field(default_factory=list)  # iptables argv after "-t filter"
    nat_rules: list[list[str]] = field(default_factory=list)  # iptables argv after "-t nat"


def validate(services: list[ServicePort], source: str | None = None) -> None:
    """ConfigError naming ``services[i].<field>`` for a value the proxy cannot program."""
    seen: set[tuple[str, str, int]] = set()
    for i, s in enumerate(services):
        where = f"services[{i}]"
        try:
            if ipaddress.ip_address(s.cluster_ip).version != 4:
                raise ValueError
        except ValueError:
            raise ConfigError(source, f"{where}.cluster_ip", f"{s.cluster_ip!r} is not an IPv4 address") from None
        if not 1 <= s.port <= 65535:
            raise ConfigError(source, f"{where}.port", f"{s.port} is outside 1-65535")
        if s.protocol not in PROTOCOLS:
            raise ConfigError(source, f"{where}.protocol", f"{s.protocol!r} is not one of {', '.join(PROTOCOLS)}")
        if s.scheduler not in SCHEDULERS:
            raise ConfigError(source, f"{where}.scheduler", f"{s.scheduler!r} is not one of {', '.join(SCHEDULERS)}")
        if s.key in seen:
            raise ConfigError(source, f"{where}.port", f"{s.cluster_ip} {s.protocol}/{s.port} appears twice")
        seen.add(s.key)
        for j, (ip, port) in enumerate(s.endpoints):
            try:
                ipaddress.IPv4Address(ip)
            except ValueError:
                raise ConfigError(source, f"{where}.endpoints[{j}]", f"{ip!r} is not an IPv4 address") from None
            if not 1 <= port <= 65535:
                raise ConfigError(source, f"{where}.endpoints[{j}]", f"port {port} is outside 1-65535")


def plan(services: list[ServicePort], config: ProxyConfig) -> ProxyPlan:
    """The node state kube-router v2.10.0's IPVS proxy programs for ``services`` (validated)."""
    validate(services)
    p = ProxyPlan(node_ip=config.node_ip, sysctls=list(SYSCTLS),
                  rp_filter_ifaces=[*RP_FILTER_IFACES, config.node_interface])
    for s in sorted(services, key=lambda s: (ipaddress.IPv4Address(s.cluster_ip), s.protocol, s.port)):
        if s.cluster_ip not in p.addresses:
            p.addresses.append(s.cluster_ip)  # SES setupClusterIPServices: ipAddrAdd before the service
        # SES addEndpointsToIPVSService: every endpoint, weight 1, in EndpointSlice order
        reals = tuple(RealServer(ip, port) for ip, port in dict.fromkeys(s.endpoints))
        p.services.append(VirtualService(s.protocol.lower(), s.cluster_ip, s.port, s.scheduler,
                                         s.affinity_timeout_s, reals))
    p.ipsets = ipsets(p.services, config.local_ips)
    p.filter_rules = firewall_rules(config.permit_all)
    p.nat_rules = masquerade_rules(config)
    return p


def ipsets(services: list[VirtualService], local_ips: tuple[str, ...]) -> list[IPSet]:
    """NSC syncIpvsFirewall: local addresses, service IPs and ``ip,proto:port`` of every service."""
    vips = tuple(dict.fromkeys(s.vip for s in services))
    ports = tuple(f"{s.vip},{s.protocol if s.protocol != 'sctp' else '132'}:{s.port}" for s in services)
    return [IPSet(LOCAL_IPS_SET, "hash:ip", tuple(local_ips)),
            IPSet(SVIP_SET, "hash:ip", vips),
            IPSet(SVIP_PORT_SET, "hash:ip,port", ports)]


def firewall_rules(permit_all: bool = True) -> list[list[str]]:
    """NSC setupIpvsFirewall: the filter-table rules (``-N``/``-A``/``-I`` argv) in call order.
    Without ``--ipvs-permit-all`` only the (empty) chain is created."""
    rules = [["-N", FIREWALL_CHAIN]]
    if not permit_all:
        return rules
    for icmp_type, comment in COMMON_ICMP:
        rules.append(["-A", FIREWALL_CHAIN, "-m", "comment", "--comment", comment, "-p", "icmp",
                      "--icmp-type", icmp_type, "-j", "ACCEPT"])
    rules.append(["-A", FIREWALL_CHAIN, "-m", "comment", "--comment", "allow input traffic to ipvs services",
                  "-m", "set", "--match-set", SVIP_PORT_SET, "dst,dst", "-j", "ACCEPT"])
    rules.append(["-A", FIREWALL_CHAIN, "-m", "comment", "--comment", "reject all unexpected traffic to service IPs",
                  "-m", "set", "!", "--match-set", LOCAL_IPS_SET, "dst",
                  "-j", "REJECT", "--reject-with", "icmp-port-unreachable"])
    # utils.go getIPVSFirewallInputChainRule, inserted at INPUT position 1
    rules.append(["-I", "INPUT", "1", "-m", "comment", "--comment", "handle traffic to IPVS service IPs in custom chain",
                  "-m", "set", "--match-set", SVIP_SET, "dst", "-j", FIREWALL_CHAIN])
    return rules


def masquerade_rules(config: ProxyConfig) -> list[list[str]]:
    """NSC ensureMasqueradeIptablesRule: nat POSTROUTING ``-A`` argv (AppendUnique)."""
    base = ["-m", "ipvs", "--ipvs", "--vdir", "ORIGINAL", "--vmethod", "MASQ", "-m", "comment", "--comment", ""]
    tail = ["-j", "SNAT", "--to-source", config.node_ip] + (["--random-fully"] if config.random_fully else [])
    rules = []
    if config.masquerade_all:
        rules.append(["-A", "POSTROUTING", *base, *tail])
    rules.append(["-A", "POSTROUTING", *base, "!", "-s", config.pod_cidr, "!", "-d", config.pod_cidr, *tail])
    return rules
