"""Pure tests of kube-router's event filters and the pod status path per tag
(``engines.kube_router.events``; ``render.kube_router.netpol_actionable``): a pod is created
without an IP and gets it by a status update, Pending->Running is another event, a finished pod
leaves the sets; finished and hostNetwork pods are ignored from v1.2.3, not before."""

from __future__ import annotations

import copy
import ipaddress

from harness.controller import events as ev
from harness.engines.kube_router.events import netpol_actionable, requests_sync
from harness.engines.kube_router.render.kube_router import render_node
from harness.model.synthetic import example_cluster

V = 1_700_000_000_000_000_000


def _entries(rs) -> set[str]:
    return {e.split()[0] for s in rs.sets for e in s.entries}


def _after(c, event):
    c2 = copy.deepcopy(c)
    ev.apply_event(c2, event)
    return c2


def test_pod_status_path_created_without_ip_then_ip_then_running_then_finished():
    c = example_cluster()
    pending = c.pods["x/pending"]  # app=a: selected by x/allow-http and peer of x/egress-b
    pending.phase = "Pending"
    add = ev.pod_added(pending)
    assert not requests_sync(add, c, "v2.10.0")  # AddFunc: not actionable (no PodIP)
    assert requests_sync(add, c, "v1.2.2")  # v1.2.2 AddFunc: every add
    got_ip = ev.pod_status(pending, ip="10.244.0.9")
    assert requests_sync(got_ip, c, "v2.10.0")  # UpdateFunc: PodIP changed
    c = _after(c, got_ip)
    # kubelet: IP while Pending, then Running: a second relevant update (phase)
    running = ev.pod_status(c.pods["x/pending"], phase="Running")
    assert requests_sync(running, c, "v2.10.0")
    c = _after(c, running)
    assert "10.244.0.9" in _entries(render_node(c, "node-a", profile="v2.10.0", sync_version=V))
    # the pod finishes (every CronJob pod does): relevant update, and it leaves every set
    done = ev.pod_status(c.pods["x/pending"], phase="Succeeded")
    assert requests_sync(done, c, "v2.10.0")
    c = _after(c, done)
    rs = render_node(c, "node-a", profile="v2.10.0", sync_version=V)
    assert "10.244.0.9" not in _entries(rs)
    assert not any("10.244.0.9" in r for ch in rs.chains for r in ch.rules)  # no pod chain or jump
    # before v1.2.3 (no isNetPolActionable) the finished pod stays programmed
    assert "10.244.0.9" in _entries(render_node(c, "node-a", profile="v1.2.2", sync_version=V))


def test_update_filter_is_phase_ip_node_labels():
    c = example_cluster()
    a = c.pods["x/a"]
    same = ev.pod_updated(a)
    assert not requests_sync(same, c, "v2.10.0")  # e.g. an annotation or container status change
    moved = copy.deepcopy(a)
    moved.node = "node-b"  # HostIP changed
    assert requests_sync(ev.pod_updated(moved), c, "v2.10.0")
    assert not requests_sync(ev.pod_updated(moved), c, "v1.2.2")  # v1.2.2 UpdateFunc: no HostIP
    assert requests_sync(ev.pod_relabeled(a, {"app": "z"}), c, "v2.10.0")
    assert requests_sync(ev.pod_removed("x/a"), c, "v2.10.0")


def test_host_network_and_finished_pods_are_not_actionable_from_v1_2_3():
    c = example_cluster()
    host = copy.deepcopy(c.pods["x/a"])
    host.name, host.host_network, host.ip = "hostnet", True, ipaddress.IPv4Address("10.244.0.50")
    assert not netpol_actionable(host, "v2.10.0") and netpol_actionable(host, "v1.2.2")
    assert not requests_sync(ev.pod_added(host), c, "v2.10.0")
    finished = copy.deepcopy(c.pods["x/b"])
    finished.phase = "Failed"
    assert not netpol_actionable(finished, "v1.3.1")


def test_namespace_events():
    c = example_cluster()
    assert not requests_sync(ev.namespace_relabeled("x", {"team": "red"}), c, "v2.10.0")  # labels unchanged
    assert requests_sync(ev.namespace_relabeled("x", {"team": "green"}), c, "v2.10.0")
    nil = ev.ClusterEvent(ev.EventKind.NAMESPACE_ADDED, "z", labels=None)
    assert not requests_sync(nil, c, "v2.10.0")  # handleNamespaceAdd: Labels == nil
    assert requests_sync(ev.namespace_added("z"), c, "v2.10.0")  # kubernetes.io/metadata.name


def test_pod_phase_round_trips_through_the_event_wire():
    pod = copy.deepcopy(example_cluster().pods["x/a"])
    pod.phase, pod.host_network = "Succeeded", True
    back = ev.pod_from_dict(ev.pod_to_dict(pod))
    assert (back.phase, back.host_network) == ("Succeeded", True)
    assert "phase" not in ev.pod_to_dict(example_cluster().pods["x/a"])  # Running: wire unchanged


def test_lister_skew_programs_a_pod_of_the_second_listing_unfiltered():
    """kube-router lists pods twice per sync: buildNetworkPoliciesInfo (policy targets, peers, sets)
    and later syncPodFirewallChains (local pods; v2.10.0:pkg/controllers/netpol/pod.go,
    network_policy_controller.go fullPolicySync). A pod that arrives between the two gets a pod
    chain from the second listing but is in no policy's targets: DEFAULT jumps (allowed), not the
    deny-all policy that selects it, until the next sync; with --netpol-default-deny it is in
    kube-router-local-pods already, so the TAIL's gated REJECT does not catch it either."""
    from harness.engines.kube_router.render import naming as nm

    first = example_cluster()
    second = copy.deepcopy(first)
    new = copy.deepcopy(first.pods["x/b"])
    new.name, new.ip, new.labels = "new", ipaddress.IPv4Address("10.244.0.77"), {"app": "new"}
    second.pods[new.key] = new
    chain = nm.pod_chain("x", "new", str(V))
    deny_all = nm.policy_chain("x", "deny-all", str(V), family="IPv4")  # v2.x: family in the hash

    skewed = render_node(first, "node-a", profile="v2.10.0", sync_version=V, pods_view=second, default_deny=True)
    rules = skewed.chain(chain).rules
    jumps = [r.rsplit("-j ", 1)[1] for r in rules if "-j KUBE-" in r]
    assert nm.DEFAULT_CHAIN in jumps and not any(j.startswith("KUBE-NWPLCY-") and j not in (
        nm.DEFAULT_CHAIN, nm.COMMON_CHAIN) for j in jumps)
    local = next(s for s in skewed.sets if s.name == nm.LOCAL_PODS_SET)
    assert any(e.startswith("10.244.0.77 ") for e in local.entries)
    assert "10.244.0.77" not in {e.split()[0] for s in skewed.sets if s.name != nm.LOCAL_PODS_SET for e in s.entries}

    one_listing = render_node(second, "node-a", profile="v2.10.0", sync_version=V, default_deny=True)
    jumps = [r.rsplit("-j ", 1)[1] for r in one_listing.chain(chain).rules if "-j KUBE-" in r]
    policy_jumps = [j for j in jumps if j.startswith("KUBE-NWPLCY-") and j not in (nm.DEFAULT_CHAIN, nm.COMMON_CHAIN)]
    assert deny_all in policy_jumps  # x/deny-all selects it: its ingress goes through the policy chain


def test_second_listing_with_the_same_local_pods_reuses_the_first_render():
    """Lister skew is on by default (ControllerConfig.lister_skew): a second listing that finds the
    same local pods must cost no second render (it would count harness CPU as sync time); one that
    finds a new pod renders it from the second listing."""
    from harness.engines.config import EnforcementConfig
    from harness.engines.kube_router.engine import FullApplier, KubeRouterNode

    class Recorder(FullApplier):  # in memory: records the rulesets instead of applying them
        def apply(self, ruleset, *, full=False, relist=None):
            self.first, self.second = ruleset, relist()
            return type("T", (), {"as_dict": lambda _self: {"strategy": "restore", "total": 1}})()

    applier = Recorder("", "nft", "restore")
    node = KubeRouterNode("node-a", "", EnforcementConfig(profile="v2.10.0"), applier=applier)
    view = example_cluster()
    node.program(view, sync_version=V, relist_view=lambda: copy.deepcopy(view))
    assert applier.second is applier.first

    grown = copy.deepcopy(view)
    new = copy.deepcopy(view.pods["x/b"])
    new.name, new.ip = "new", ipaddress.IPv4Address("10.244.0.77")
    grown.pods[new.key] = new
    node.program(view, sync_version=V, relist_view=lambda: grown)
    assert applier.second is not applier.first
    assert any("10.244.0.77" in r for c in applier.second.chains for r in c.rules)
