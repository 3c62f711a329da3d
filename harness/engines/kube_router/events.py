"""Which cluster events make kube-router request a full sync (its informer handlers), pure.

kube-router v2.10.0 pkg/controllers/netpol/pod.go: newPodEventHandler (add: only an actionable
pod; update: isPodUpdateNetPolRelevant; delete: always) and utils.go: isNetPolActionable (an IP,
not finished, not hostNetwork; the model has only the IP). Departure: an update of a pod that
still has no IP is ignored here, where v2.10's UpdateFunc would sync on its label change too
(such an update renders no rule for the pod either way).
"""

from __future__ import annotations

from harness.controller import events as ev
from harness.model.cluster import Cluster, Pod


def _actionable(pod: Pod | None) -> bool:
    """kube-router's isNetPolActionable, as far as the model goes: the pod has an IP."""
    return pod is not None and pod.ip is not None


def requests_sync(event: ev.ClusterEvent, before: Cluster) -> bool:
    """Whether kube-router requests a full sync for ``event``, judged against the view
    ``before`` the event was applied (kube-router's pod handlers: OnPodUpdate compares old and
    new; pods without an IP are ignored; a pod deletion always requests a sync; every namespace
    and policy event requests one)."""
    if event.resource != "pod":
        if event.kind is ev.EventKind.NAMESPACE_UPDATED:
            return before.namespace_labels(event.key) != ev.namespace_labels(event.key, event.labels)
        return True
    if event.kind is ev.EventKind.POD_DELETED:
        return True
    new = event.pod
    if not _actionable(new):
        return False
    old = before.pods.get(event.key)
    if event.kind is ev.EventKind.POD_UPDATED and old is not None and _actionable(old):
        # kube-router: "skip update if pod IP and labels are unchanged"
        return old.labels != new.labels or old.ip != new.ip  # type: ignore[union-attr]
    return True
