"""The IPVS proxy applied to one node namespace: the plan of ``plan.py`` made real with
``ipvsadm -R`` (IPVS), rtnetlink through pyroute2 (kube-dummy-if, its addresses and
local routes: kube-router uses netlink there too), ``ipset restore`` and ``iptables``, timed
per phase on CLOCK_REALTIME.

Everything it creates lives in the node's network namespace (IPVS tables, the dummy link,
ipsets, iptables rules and the ``net/ipv4/vs`` sysctls are all per namespace), so the lab's
teardown and ``netpol-harness gc`` remove it with the namespace; ``teardown()`` removes it
explicitly while the lab stays up. Nothing here touches the root namespace.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass, field

from harness.cluster.ipvs_proxy import ipvsadm
from harness.cluster.ipvs_proxy.plan import (
    FIREWALL_CHAIN,
    KUBE_DUMMY_IF,
    LOCAL_IPS_SET,
    SVIP_PORT_SET,
    SVIP_SET,
    ProxyConfig,
    ProxyPlan,
    RealServer,
    ServicePort,
    VirtualService,
    plan,
)
from harness.cluster.ipvs_proxy.sync import (
    ADD_ADDRESS,
    DEL_ADDRESS,
    IPVS_KINDS,
    ROUTE,
    Op,
    ipset_restore,
    remove_real_ops,
    sync_ops,
)
from harness.errors import KernelError
from harness.kernel import netns

log = logging.getLogger(__name__)

RT_SCOPE_LINK, RT_SCOPE_HOST = 253, 254
RTN_LOCAL, RTPROT_KERNEL, RT_TABLE_LOCAL = 2, 2, 255


def _now() -> int:
    return time.clock_gettime_ns(time.CLOCK_REALTIME)


@dataclass
class SyncRecord:
    """One sync: phase durations (ms), op counts by kind, start/end (CLOCK_REALTIME ns)."""

    start_ns: int
    end_ns: int = 0
    phases_ms: dict[str, float] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)
    services: int = 0

    @property
    def total_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    def as_dict(self) -> dict:
        return {"start_ns": self.start_ns, "end_ns": self.end_ns, "total_ms": round(self.total_ms, 3),
                "phases_ms": {k: round(v, 3) for k, v in self.phases_ms.items()}, "ops": self.ops,
                "services": self.services}


class _Phases:
    def __init__(self, rec: SyncRecord) -> None:
        self.rec, self.t = rec, time.perf_counter()

    def mark(self, name: str) -> None:
        t = time.perf_counter()
        self.rec.phases_ms[name] = self.rec.phases_ms.get(name, 0.0) + (t - self.t) * 1e3
        self.t = t


class IpvsProxy:
    """kube-router's IPVS service proxy on node namespace ``netns_name``.

    ``start()`` does what NSC ``Run`` does once (sysctls, masquerade rules, IPVS firewall);
    ``sync(services)`` is one full ``syncIpvsServices``; ``remove_real`` takes one endpoint out
    the way a sync does when it left the EndpointSlice."""

    def __init__(self, netns_name: str, config: ProxyConfig) -> None:
        self.netns = netns_name
        self.config = config
        self.dummy_index = 0
        self.records: list[SyncRecord] = []
        self._started = False

    # -- tools -----------------------------------------------------------------------------------
    def _run(self, argv: list[str], input: str | None = None) -> str:
        return netns.run(self.netns, argv, input=input).stdout

    def iptables(self, *args: str) -> str:
        """One ``iptables`` call in the node (kube-router's handler does one exec per rule too)."""
        return self._run(["iptables", "-w", *args])

    def sysctl(self, path: str) -> str:
        """The node namespace's value of ``net/...`` ``path`` (as text)."""
        return netns.call_in(self.netns, lambda: open("/proc/sys/" + path).read().strip())

    def set_sysctl(self, path: str, value: int) -> None:
        def write() -> None:
            with open("/proc/sys/" + path, "w") as f:
                f.write(str(value))
        netns.call_in(self.netns, write)

    def state(self) -> list[VirtualService]:
        """The node's IPVS table (``ipvsadm -S -n``)."""
        return ipvsadm.parse_save(self._run(["ipvsadm", "-S", "-n"]))

    def dummy_addresses(self) -> list[str]:
        """IPv4 addresses on kube-dummy-if (SES cleanupStaleVIPs lists them each sync)."""
        with netns.ipr(self.netns) as ipr:
            return [a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=self.dummy_index, family=2)]

    # -- NSC Run, once ---------------------------------------------------------------------------
    def start(self) -> dict[str, float]:
        """Sysctls, kube-dummy-if, masquerade rules, IPVS firewall: the once-per-start part of
        NSC ``Run`` (its order). Returns phase durations in ms."""
        rec = SyncRecord(_now())
        ph = _Phases(rec)
        # NSC Run: ensureMasqueradeIptablesRule comes before the sysctls
        p0 = plan([], self._config_with_local_ips())
        for rule in p0.nat_rules:
            self.iptables("-t", "nat", *rule)
        ph.mark("masquerade")
        for path, value in p0.sysctls:
            self.set_sysctl(path, value)
        ph.mark("sysctls")
        self._ensure_dummy()
        for ifname in p0.rp_filter_ifaces:  # NSC Run: only where rp_filter reads 1
            path = f"net/ipv4/conf/{ifname}/rp_filter"
            try:
                if self.sysctl(path) == "1":
                    self.set_sysctl(path, 2)
            except OSError:
                continue  # an interface this node does not have (kube-router logs and goes on)
        ph.mark("dummy_link+rp_filter")
        # NSC setupIpvsFirewall: empty sets first (the rules reference them), then the chain
        self._run(["ipset", "restore", "-exist"], input=ipset_restore([s.__class__(s.name, s.type, ())
                                                                         for s in p0.ipsets]))
        for rule in p0.filter_rules:
            self.iptables("-t", "filter", *rule)
        ph.mark("firewall")
        rec.end_ns = _now()
        self._started = True
        return rec.phases_ms

    def _config_with_local_ips(self) -> ProxyConfig:
        """``config`` with local_ips read from the node as NSC getAllLocalIPs does (links whose
        name contains dummy/kube/docker skipped)."""
        if self.config.local_ips:
            return self.config
        ips = []
        with netns.ipr(self.netns) as ipr:
            names = {ln["index"]: ln.get_attr("IFLA_IFNAME") for ln in ipr.get_links()}
            for a in ipr.get_addr(family=2):
                name = names.get(a["index"], "")
                if not any(w in name for w in ("dummy", "kube", "docker")):
                    ips.append(a.get_attr("IFA_ADDRESS"))
        return ProxyConfig(**{**self.config.__dict__, "local_ips": tuple(dict.fromkeys(ips))})

    def _ensure_dummy(self) -> None:
        """LN getKubeDummyInterface: create kube-dummy-if (and set it up) if it is missing."""
        with netns.ipr(self.netns) as ipr:
            idx = ipr.link_lookup(ifname=KUBE_DUMMY_IF)
            if not idx:
                ipr.link("add", ifname=KUBE_DUMMY_IF, kind="dummy")
                idx = ipr.link_lookup(ifname=KUBE_DUMMY_IF)
                ipr.link("set", index=idx[0], state="up")
            self.dummy_index = idx[0]

    # -- one sync --------------------------------------------------------------------------------
    def plan(self, services: list[ServicePort]) -> ProxyPlan:
        return plan(services, self._config_with_local_ips())

    def sync(self, services: list[ServicePort]) -> SyncRecord:
        """One full sync (SES syncIpvsServices) to ``services``; the record has phases
        ``list`` (IPVS table + dummy addresses read), ``addresses`` (AddrAdd + RouteReplace per
        service, netlink), ``ipvs`` (one ``ipvsadm -R`` of every service/destination call),
        ``stale_vips``, ``ipset`` (one ipset restore) and the op counts."""
        if not self._started:
            self.start()
        rec = SyncRecord(_now(), services=len(services))
        ph = _Phases(rec)
        want = self.plan(services)
        ph.mark("plan+local_ips")
        current, addrs = self.state(), self.dummy_addresses()
        ph.mark("list")
        ops = sync_ops(want, current, addrs)
        for o in ops:
            rec.ops[o.kind] = rec.ops.get(o.kind, 0) + 1
        self._addresses([o for o in ops if o.kind in (ADD_ADDRESS, ROUTE)])
        ph.mark("addresses")
        self._ipvs(ops)
        ph.mark("ipvs")
        self._addresses([o for o in ops if o.kind == DEL_ADDRESS])
        ph.mark("stale_vips")
        self._run(["ipset", "restore", "-exist"], input=ipset_restore(want.ipsets))
        ph.mark("ipset")
        rec.end_ns = _now()
        self.records.append(rec)
        return rec

    def _ipvs(self, ops: list[Op]) -> None:
        text = ipvsadm.restore_text([o for o in ops if o.kind in IPVS_KINDS])
        if text:
            log.debug("ipvsadm -R in %s:\n%s", self.netns, text)
            try:
                self._run(["ipvsadm", "-R"], input=text)
            except KernelError as e:
                raise KernelError(f"{e} (input: {' / '.join(text.splitlines()[:6])})") from None

    def _addresses(self, ops: list[Op]) -> None:
        if not ops:
            return
        with netns.ipr(self.netns) as ipr:
            for o in ops:
                if o.kind == ADD_ADDRESS:  # LN ipAddrAdd: /32 scope link, EEXIST ignored
                    try:
                        ipr.addr("add", index=self.dummy_index, address=o.vip, prefixlen=32, scope=RT_SCOPE_LINK)
                    except Exception as e:  # pyroute2 NetlinkError(17) when present
                        if getattr(e, "code", None) != 17:
                            raise KernelError(f"kube-dummy-if: add {o.vip}/32 in {self.netns}: {e}") from None
                elif o.kind == ROUTE:  # LN ipAddrAdd: RouteReplace local route, node IP as source
                    ipr.route("replace", dst=f"{o.vip}/32", type=RTN_LOCAL, table=RT_TABLE_LOCAL,
                              proto=RTPROT_KERNEL, scope=RT_SCOPE_HOST, oif=self.dummy_index,
                              prefsrc=self.config.node_ip)
                elif o.kind == DEL_ADDRESS:  # LN ipAddrDel
                    ipr.addr("del", index=self.dummy_index, address=o.vip, prefixlen=32)

    def remove_real(self, service: ServicePort, ip: str, port: int) -> int:
        """Delete one real server of ``service`` (a non-graceful ``ipvsDeleteDestination``);
        returns CLOCK_REALTIME ns after ipvsadm returned (the kernel state changed)."""
        vs = VirtualService(service.protocol.lower(), service.cluster_ip, service.port, service.scheduler)
        self._ipvs(remove_real_ops(vs, RealServer(ip, port)))
        return _now()

    # -- teardown --------------------------------------------------------------------------------
    def teardown(self) -> None:
        """Remove the proxy's state from the node (the namespace's deletion would too)."""
        errors = []
        steps: list[list[str]] = [["ipvsadm", "-C"]]
        p0 = plan([], self._config_with_local_ips())
        steps += [["iptables", "-w", "-t", "nat", "-D", *r[1:]] for r in p0.nat_rules]
        steps += [["iptables", "-w", "-t", "filter", "-D", r[1], *r[3:]] for r in p0.filter_rules if r[0] == "-I"]
        steps += [["iptables", "-w", "-t", "filter", "-F", FIREWALL_CHAIN],
                  ["iptables", "-w", "-t", "filter", "-X", FIREWALL_CHAIN]]
        steps += [["ipset", "destroy", n] for n in (SVIP_PORT_SET, SVIP_SET, LOCAL_IPS_SET)]
        for argv in steps:
            proc = netns.run(self.netns, argv, check=False)
            if proc.returncode:
                errors.append(f"{' '.join(argv[:4])}: {proc.stderr.strip()}")
        with netns.ipr(self.netns) as ipr:
            if ipr.link_lookup(ifname=KUBE_DUMMY_IF):
                ipr.link("del", ifname=KUBE_DUMMY_IF)
        if errors:
            log.warning("ipvs proxy teardown in %s: %s", self.netns, "; ".join(errors))


def cluster_ip_of(index: int, cidr: str = "10.96.0.0/16") -> str:
    """The ``index``-th ClusterIP of the service CIDR (10.96.0.10 + index), for generated services."""
    return str(ipaddress.IPv4Network(cidr).network_address + 10 + index)
