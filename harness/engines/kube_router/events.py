"""Which cluster events make kube-router request a full sync (its informer handlers), and which
pods it programs at all (isNetPolActionable). Pure.

v1.2.3+ (v2.10.0:pkg/controllers/netpol/pod.go newPodEventHandler, utils.go isNetPolActionable,
isPodUpdateNetPolRelevant):
- pod add: only an actionable pod (not finished, has a PodIP, not hostNetwork);
- pod update: when phase, PodIP(s), HostIP (here: the node) or labels changed, actionable or not
  (a pod leaving the actionable state, e.g. a finished CronJob pod, must leave the sets);
- pod delete: always.
v1.2.1/v1.2.2 (v1.2.2:pkg/controllers/netpol/pod.go): every add requests a sync; updates on
phase, PodIP or labels; a pod is programmed as soon as it has a PodIP (finished and hostNetwork
pods included: isNetPolActionable arrives in v1.2.3).
Namespaces (v2.10.0:pkg/controllers/netpol/namespace.go): add and delete request a sync only
when the namespace has labels (``obj.Labels == nil`` returns; the API server has set
kubernetes.io/metadata.name on every namespace since Kubernetes 1.21, so in practice always),
update only when the labels changed. Every policy event requests one.
"""

from __future__ import annotations

from harness.controller import events as ev
from harness.engines.kube_router.render.kube_router import FINISHED_PHASES, netpol_actionable
from harness.engines.kube_router.render.profiles import get_profile
from harness.model.cluster import Cluster, Pod

__all__ = ["FINISHED_PHASES", "netpol_actionable", "requests_sync"]

def _relevant_update(old: Pod, new: Pod, profile: str) -> bool:
    """isPodUpdateNetPolRelevant (v2.10.0:utils.go; v1.2.2:pod.go UpdateFunc without HostIP)."""
    changed = old.phase != new.phase or old.ip != new.ip or old.labels != new.labels
    if get_profile(profile).netpol_actionable:
        changed = changed or old.node != new.node
    return changed


def requests_sync(event: ev.ClusterEvent, before: Cluster, profile: str = "v2.10.0") -> bool:
    """Whether kube-router (``profile``) requests a full sync for ``event``, judged against the
    view ``before`` the event was applied (the informer hands UpdateFunc the old and new object)."""
    if event.resource == "namespace":
        if event.kind is ev.EventKind.NAMESPACE_UPDATED:
            return before.namespace_labels(event.key) != ev.namespace_labels(event.key, event.labels)
        return event.labels is not None  # handleNamespaceAdd: obj.Labels == nil -> nothing
    if event.resource != "pod":
        return True
    if event.kind is ev.EventKind.POD_DELETED:
        return True
    new = event.pod
    assert new is not None
    old = before.pods.get(event.key)
    if event.kind is ev.EventKind.POD_UPDATED and old is not None:
        return _relevant_update(old, new, profile)
    # AddFunc (an update of a pod the view never saw is an add to the informer)
    return netpol_actionable(new, profile) if get_profile(profile).netpol_actionable else True
