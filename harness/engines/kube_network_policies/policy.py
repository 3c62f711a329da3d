"""kube-network-policies' own NetworkPolicy evaluation, over its informer cache. Pure.

This is the engine's code, ported from the source, not ``harness.oracle`` (the oracle stays the
independent reference the engine is compared with). Every function cites the Go it follows
(kube-network-policies v1.1.1):

- ``PolicyCache``: the informers cmd/kube-network-policies/standard/main.go starts (Pods of all
  namespaces and nodes, Namespaces, NetworkPolicies; no Node informer: it is only for
  AdminNetworkPolicies) and pkg/podinfo/podinfo.go InformerProvider.GetPodInfoByIP (a pod by IP
  through pkg/podinfo/ipresolver.go's index; the namespace's labels from its lister, none when
  the namespace is not in the cache).
- ``evaluate_packet``: pkg/networkpolicy/engine.go PolicyEngine.EvaluatePacket (egress pipeline,
  then ingress; the one evaluator is StandardNetworkPolicy; no policy selecting a pod = Next =
  accept) and pkg/networkpolicy/networkpolicy.go for the rest.

An unknown source or destination IP (a pod not yet in the cache) is "not a pod": selectors never
match it, only ipBlocks can (networkpolicy.go evaluateSelectors: ``if pod == nil return false``),
and no policy applies to it as the selected pod.

Model note: the harness model does not keep ``ingress: null`` apart from ``ingress: []``; both
are the API server's nil after its round trip (protobuf drops empty lists), which the source
treats as "isolated, nothing allowed" (``if netpol.Spec.Ingress == nil ... continue``).
"""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass, field

from harness.controller.events import ClusterEvent, apply_event
from harness.engines.kube_network_policies.packet import Packet
from harness.model.cluster import Cluster, ContainerPort, Pod
from harness.model.policy import IPBlock, LabelSelector, NetworkPolicy, PolicyPort, PolicyRule

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class PodInfo:
    """pkg/api/helper.go NewPodInfo: what the evaluation knows of a pod."""

    name: str
    namespace: str
    labels: dict[str, str]
    namespace_labels: dict[str, str]
    node: str
    container_ports: tuple[ContainerPort, ...] = ()


@dataclass
class PolicyCache:
    """The informers' stores of one node's kube-network-policies (see the module docstring).
    Thread-safe: the verdict loop reads while deliveries write (``lock``)."""

    cluster: Cluster = field(default_factory=Cluster)
    lock: threading.RLock = field(default_factory=threading.RLock)
    _by_ip: dict[IPAddress, list[str]] | None = None  # the pod IP index, rebuilt after a change

    def replace(self, view: Cluster) -> None:
        """A relist: the cache becomes ``view`` (shared objects: the caller never mutates them)."""
        with self.lock:
            self.cluster = view
            self._by_ip = None

    def apply(self, event: ClusterEvent) -> None:
        """One informer event into the stores (``events.apply_event``)."""
        with self.lock:
            apply_event(self.cluster, event)
            if event.resource == "pod":
                self._by_ip = None

    def _pod_by_ip(self, ip: IPAddress) -> Pod | None:
        """ipresolver.go InformerResolver.LookupPod: the podIPKeyIndex (hostNetwork pods not
        indexed); of several pods with one IP the first (the model has no pod phase: every pod
        counts as Running)."""
        if self._by_ip is None:
            index: dict[IPAddress, list[str]] = {}
            for key, p in self.cluster.pods.items():
                if p.ip is not None and not is_host_network(p):
                    index.setdefault(p.ip, []).append(key)
            self._by_ip = index
        keys = self._by_ip.get(ip)
        return self.cluster.pods.get(keys[0]) if keys else None

    def pod_info(self, ip: IPAddress) -> PodInfo | None:
        """podinfo.go GetPodInfoByIP: the pod by IP (the resolver's index), its namespace's labels."""
        with self.lock:
            pod = self._pod_by_ip(ip)
            if pod is None:
                return None
            ns = self.cluster.namespaces.get(pod.namespace)
            return PodInfo(pod.name, pod.namespace, dict(pod.labels), dict(ns.labels) if ns else {},
                           pod.node, tuple(pod.ports))

    def policies_for(self, pod: PodInfo | None) -> list[NetworkPolicy]:
        """networkpolicy.go getNetworkPoliciesForPod: the policies of the pod's namespace whose
        podSelector matches it."""
        if pod is None:
            return []
        with self.lock:
            return [p for p in self.cluster.policies.values()
                    if p.namespace == pod.namespace and p.pod_selector.matches(pod.labels)]

    def local_pods_for(self, policy: NetworkPolicy | None, node: str) -> list[Pod]:
        """networkpolicy.go getLocalPodsForNetworkPolicy: pods of the policy's namespace it
        selects that run on ``node`` and are not hostNetwork."""
        if policy is None:
            return []
        with self.lock:
            return [p for p in self.cluster.pods.values()
                    if p.namespace == policy.namespace and policy.pod_selector.matches(p.labels)
                    and p.node == node and not is_host_network(p)]

    def managed_ips(self, node: str) -> list[IPAddress]:
        """networkpolicy.go ManagedIPs: the IPs of every local pod some policy selects (what
        the podips sets hold); standard NetworkPolicy never diverts all traffic."""
        with self.lock:
            out = {p.ip for pol in self.cluster.policies.values() for p in self.local_pods_for(pol, node)
                   if p.ip is not None}
        return sorted(out, key=lambda a: (a.version, int(a)))


def is_host_network(pod: Pod) -> bool:
    """The model has no hostNetwork pods (every pod has its own address); kept as the one place
    the source's ``pod.Spec.HostNetwork`` checks map to."""
    return False


def evaluate_packet(cache: PolicyCache, p: Packet) -> bool:
    """engine.go EvaluatePacket: egress of the source pod, then ingress of the destination pod."""
    src = cache.pod_info(p.src_ip)
    dst = cache.pod_info(p.dst_ip)
    # engine.go runEgressPipeline / StandardNetworkPolicy.EvaluateEgress
    egress = cache.policies_for(src)
    if egress and not evaluate_policy_direction(egress, "Egress", src, p.src_port, dst, p.dst_ip, p.dst_port, p.proto):
        return False
    # engine.go runIngressPipeline / StandardNetworkPolicy.EvaluateIngress: the argument order
    # is the source's (the selected pod first, its port = the packet's destination port)
    ingress = cache.policies_for(dst)
    if ingress and not evaluate_policy_direction(ingress, "Ingress", dst, p.dst_port, src, p.src_ip, p.src_port,
                                                 p.proto):
        return False
    return True


def evaluate_policy_direction(policies: list[NetworkPolicy], policy_type: str, src_pod: PodInfo | None,
                              src_port: int, dst_pod: PodInfo | None, dst_ip: IPAddress, dst_port: int,
                              proto: str) -> bool:
    """networkpolicy.go EvaluatePolicyDirection (its parameter names: for Ingress ``src_pod`` is
    the selected pod and ``dst_pod``/``dst_ip`` the peer)."""
    if not policies:
        return True
    verdict = True
    for pol in policies:
        for t in pol.policy_types:
            if t != policy_type:
                continue
            verdict = False  # at least one policy selects the pod in this direction
            if t == "Egress":
                if not pol.egress:  # nil (see the module docstring): isolates, allows nothing
                    continue
                if evaluate_egress(pol.namespace, pol.egress, src_pod, dst_pod, dst_ip, dst_port, proto):
                    return True
            else:
                if not pol.ingress:
                    continue
                if evaluate_ingress(pol.namespace, pol.ingress, src_pod, src_port, dst_pod, dst_ip, proto):
                    return True
    return verdict


def evaluate_ingress(ns: str, rules: tuple[PolicyRule, ...], src_pod: PodInfo | None, src_port: int,
                     dst_pod: PodInfo | None, dst_ip: IPAddress, proto: str) -> bool:
    """networkpolicy.go evaluateIngress (``src_pod``: the selected pod, ``src_port``: its port;
    ``dst_pod``/``dst_ip``: the peer the packet comes from)."""
    return any(evaluate_ports(rule.ports, src_pod, src_port, proto) and _peers_match(rule, ns, dst_pod, dst_ip)
               for rule in rules)


def evaluate_egress(ns: str, rules: tuple[PolicyRule, ...], src_pod: PodInfo | None, dst_pod: PodInfo | None,
                    dst_ip: IPAddress, dst_port: int, proto: str) -> bool:
    """networkpolicy.go evaluateEgress (named ports resolve on the destination pod)."""
    return any(evaluate_ports(rule.ports, dst_pod, dst_port, proto) and _peers_match(rule, ns, dst_pod, dst_ip)
               for rule in rules)


def _peers_match(rule: PolicyRule, ns: str, peer_pod: PodInfo | None, peer_ip: IPAddress) -> bool:
    """The peer loop evaluateIngress and evaluateEgress share: no peers match everything; an
    ipBlock matches by address; selectors match only a pod in the cache (traffic from outside the
    cache matches no selector)."""
    if not rule.peers:
        return True
    for peer in rule.peers:
        if peer.ip_block is not None:
            if evaluate_ip_block(peer.ip_block, peer_ip):
                return True
            continue
        if peer_pod is None:
            continue
        if (peer.namespace_selector is not None or peer.pod_selector is not None) and evaluate_selectors(
                peer.pod_selector, peer.namespace_selector, peer_pod, ns):
            return True
    return False


def evaluate_selectors(pod_selector: LabelSelector | None, ns_selector: LabelSelector | None,
                       pod: PodInfo | None, policy_ns: str) -> bool:
    """networkpolicy.go evaluateSelectors."""
    if pod is None:
        return False
    if pod_selector is not None:
        if not pod_selector.matches(pod.labels):
            return False
        if ns_selector is None:
            return pod.namespace == policy_ns
    if ns_selector is not None:
        if ns_selector.is_empty:
            return True
        return ns_selector.matches(pod.namespace_labels)
    return True


def evaluate_ip_block(block: IPBlock, ip: IPAddress) -> bool:
    """networkpolicy.go evaluateIPBlocks (``net.IPNet.Contains``: another family never matches)."""
    if ip.version != block.cidr.version or ip not in block.cidr:
        return False
    return not any(ip.version == e.version and ip in e for e in block.except_)


def _int_value(port: int | str | None) -> int:
    """intstr.IntValue: a name that is not a number is 0."""
    if isinstance(port, int):
        return port
    try:
        return int(port or 0)
    except ValueError:
        return 0


def evaluate_ports(ports: tuple[PolicyPort, ...], pod: PodInfo | None, port: int, proto: str) -> bool:
    """networkpolicy.go evaluatePorts (a named port resolves on ``pod``'s container ports)."""
    if not ports:
        return True
    for pp in ports:
        if proto != pp.protocol:
            continue
        if pp.port is None:
            return True
        if port == _int_value(pp.port):
            return True
        if pod is not None and isinstance(pp.port, str):
            if any(cp.name == pp.port and cp.port == port and cp.protocol == proto for cp in pod.container_ports):
                return True
        if pp.end_port is None:
            continue
        if _int_value(pp.port) < port <= pp.end_port:
            return True
    return False
