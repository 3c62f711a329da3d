"""CLI: ``netpol-harness kube-proxy TOPOLOGY`` prints what kube-proxy (iptables mode) programs on
every real node for a topology's Services: the jump rules it ensures one by one, then the
``iptables-restore --noflush`` input of its first (full) sync; ``--slices`` prints the
EndpointSlices instead. Pure: nothing is built."""

from __future__ import annotations

import argparse
import shlex
import sys

import yaml

from harness.cluster.kube_proxy.render import JUMP_CHAINS, KubeProxyConfig, proxy_view, render
from harness.model.service import all_endpoint_slices


def _show(args: argparse.Namespace) -> int:
    from harness.model.synthetic import load_cluster

    cluster = load_cluster(args.topology, args.manifest)
    if args.slices:
        docs = [s.to_manifest() for slices in all_endpoint_slices(cluster).values() for s in slices]
        sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False) if docs else "# no EndpointSlices\n")
        return 0
    config = KubeProxyConfig(masquerade_all=args.masquerade_all)
    out = ["# jump rules (EnsureChain + EnsureRule(Prepend), one iptables call each)"]
    for j in JUMP_CHAINS:
        out.append(f"# iptables -t {j.table} -N {j.dst}; iptables -t {j.table} -I {j.src} "
                   + " ".join(shlex.quote(a) for a in j.args()))
    out.append("# iptables-restore --noflush --counters <<EOF")
    sys.stdout.write("\n".join(out) + "\n" + render(proxy_view(cluster), config).restore_text())
    return 0


def register(sub: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Add ``kube-proxy`` to the top-level commands."""
    del bench
    p = sub.add_parser("kube-proxy", help="print what kube-proxy (iptables mode) programs for a topology's Services",
                       description="Render kube-proxy's (v1.28.0, iptables mode) rules for the Services of a "
                                   "topology: the jump rules, then the filter and nat restore input of a full "
                                   "sync (the same on every real node); --slices: the EndpointSlices.")
    p.add_argument("topology", help="shipped topology name or path")
    p.add_argument("--manifest", action="append", default=[], help="extra manifest file (repeatable)")
    p.add_argument("--slices", action="store_true", help="print the EndpointSlices (discovery.k8s.io/v1) instead")
    p.add_argument("--masquerade-all", action="store_true", help="kube-proxy --masquerade-all")
    p.set_defaults(func=_show)
