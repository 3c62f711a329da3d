"""One IPVS sync of kube-router v2.10.0, as a list of operations (pure): what
``syncIpvsServices`` (``pkg/controllers/proxy/service_endpoints_sync.go``, SES) does given the
node's current IPVS table and dummy-link addresses and the desired plan.

The order and the call count follow the source, because the sync cost is what we measure:

1. SES ``setupClusterIPServices``, per service: ``ipAddrAdd`` on kube-dummy-if (netlink AddrAdd,
   EEXIST ignored, then RouteReplace of the local route: both on *every* sync), then
   LN ``ipvsAddService`` (no call if an identical service exists; an update if scheduler or
   persistence differ; else NewService), then SES ``addEndpointsToIPVSService`` per endpoint:
   LN ``ipvsAddServer`` = NewDestination, and on EEXIST UpdateDestination (so an unchanged
   endpoint still costs a call: ``edit-real`` here).
2. SES ``cleanupStaleVIPs``: addresses on kube-dummy-if of no active service are deleted.
3. SES ``cleanupStaleIPVSConfig``: services not active are deleted; destinations of active
   services that are no endpoint any more are deleted (``ipvsDeleteDestination`` without
   graceful termination = DelDestination).
4. NSC ``syncIpvsFirewall``: the three ipsets refreshed with one ``ipset restore -exist``.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.cluster.ipvs_proxy.plan import TMP_SET_PREFIX, IPSet, ProxyPlan, RealServer, VirtualService

# op kinds, in the vocabulary of the netlink calls kube-router makes
ADD_ADDRESS, ROUTE, DEL_ADDRESS = "add-address", "replace-route", "del-address"
ADD_SERVICE, EDIT_SERVICE, DEL_SERVICE = "add-service", "edit-service", "del-service"
ADD_REAL, EDIT_REAL, DEL_REAL = "add-real", "edit-real", "del-real"
IPVS_KINDS = (ADD_SERVICE, EDIT_SERVICE, DEL_SERVICE, ADD_REAL, EDIT_REAL, DEL_REAL)


@dataclass(frozen=True)
class Op:
    """One kernel call of a sync: ``vip`` for address ops, ``service`` (+ ``real``) for IPVS ops."""

    kind: str
    vip: str = ""
    service: VirtualService | None = None
    real: RealServer | None = None


def sync_ops(plan: ProxyPlan, current: list[VirtualService], current_addrs: list[str]) -> list[Op]:
    """The operations one full sync performs to take the node from (``current`` IPVS table,
    ``current_addrs`` on kube-dummy-if) to ``plan``, in kube-router's order."""
    ops: list[Op] = []
    have = {s.key: s for s in current}
    for svc in plan.services:
        ops.append(Op(ADD_ADDRESS, svc.vip))
        ops.append(Op(ROUTE, svc.vip))
        old = have.get(svc.key)
        if old is None:
            ops.append(Op(ADD_SERVICE, svc.vip, svc))
        elif (old.scheduler, old.persistent_s) != (svc.scheduler, svc.persistent_s):
            ops.append(Op(EDIT_SERVICE, svc.vip, svc))
        old_reals = {(r.ip, r.port) for r in old.reals} if old else set()
        for r in svc.reals:
            ops.append(Op(EDIT_REAL if (r.ip, r.port) in old_reals else ADD_REAL, svc.vip, svc, r))
    active_vips = {s.vip for s in plan.services}
    ops.extend(Op(DEL_ADDRESS, a) for a in current_addrs if a not in active_vips)
    wanted = {s.key: s for s in plan.services}
    for old in current:
        new = wanted.get(old.key)
        if new is None:
            ops.append(Op(DEL_SERVICE, old.vip, old))
            continue
        keep = {(r.ip, r.port) for r in new.reals}
        ops.extend(Op(DEL_REAL, old.vip, old, r) for r in old.reals if (r.ip, r.port) not in keep)
    return ops


def remove_real_ops(service: VirtualService, real: RealServer) -> list[Op]:
    """What SES ``cleanupStaleIPVSConfig`` does when one endpoint left (no graceful termination)."""
    return [Op(DEL_REAL, service.vip, service, real)]


def ipset_restore(sets: list[IPSet]) -> str:
    """kube-router v2.10.0 pkg/utils/ipset.go ``BuildIPSetRestore`` for ``sets`` (fed to
    ``ipset restore -exist``): one TMP set per distinct option string, filled, swapped in,
    flushed, destroyed at the end. The TMP name is ``TMP-`` + base32 of sha1("tmp:" + options)[:10]."""
    import base64
    import hashlib

    out: list[str] = []
    tmp: dict[str, str] = {}
    for s in sorted(sets, key=lambda s: s.name):
        opts = s.options
        name = tmp.get(opts)
        if name is None:
            digest = hashlib.sha1(("tmp:" + opts).encode()).digest()[:10]  # noqa: S324 - a name, as upstream
            name = TMP_SET_PREFIX + base64.b32encode(digest).decode()
            out += [f"create {name} {opts}", f"flush {name}"]
            tmp[opts] = name
        out += [f"add {name} {e} timeout 0" for e in s.entries]
        out += [f"create {s.name} {opts}", f"swap {name} {s.name}", f"flush {name}"]
    out += [f"destroy {n}" for n in sorted(tmp.values())]
    return "\n".join(out) + "\n"
