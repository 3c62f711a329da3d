"""Programming one node's kernel for kube-network-policies: ``nft -f`` batches and, on kernels
without nft_queue, the iptables-nft queue rules of ``ruleset.Datapath.COMPAT``.

Why the ``nft`` binary and not python3-nftables (libnftables' binding): it is a Debian package
outside the venv (the venv does not see dist-packages), and the binding would have to be entered
into each node's namespace per call from a thread; one ``nft -f -`` exec per sync inside the
namespace is what ``netns.run`` already does, is atomic (one transaction) and costs ~ms per sync,
which this engine does at most once a second (its BoundedFrequencyRunner).
"""

from __future__ import annotations

import os
import shutil
import time

from harness.engines.kube_network_policies import ruleset as rs
from harness.errors import EnvironmentProblem, KernelError
from harness.kernel import netns

PROBE_TABLE = "kube-network-policies-probe"


def require_tools(datapath: rs.Datapath | None = None) -> None:
    """EnvironmentProblem with an install hint when ``nft`` (or iptables-nft for COMPAT) is missing."""
    if shutil.which("nft") is None:
        raise EnvironmentProblem("nft not found: install the Debian package nftables (scripts/bootstrap.sh)")
    if datapath is rs.Datapath.COMPAT and shutil.which("iptables-nft") is None:
        raise EnvironmentProblem("iptables-nft not found: install the Debian package iptables")


_SUPPORTED: dict[str, bool] = {}  # kernel release -> native_queue_supported


def native_queue_supported(netns_name: str) -> bool:
    """Whether this kernel takes an nft ``queue`` statement (CONFIG_NFT_QUEUE): one batch that
    adds a table with a queue rule and deletes it again in ``netns_name``; the transaction either
    fails whole (ENOENT: no nft_queue) or leaves nothing. Cached per kernel release (a kernel
    property: the first namespace asked answers for the process)."""
    release = os.uname().release
    if release in _SUPPORTED:
        return _SUPPORTED[release]
    batch = (f"table inet {PROBE_TABLE} {{\n  chain c {{\n    type filter hook postrouting priority 0;\n"
             f"    queue flags bypass to 65535\n  }}\n}}\ndelete table inet {PROBE_TABLE}\n")
    _SUPPORTED[release] = netns.run(netns_name, ["nft", "-f", "-"], input=batch, check=False).returncode == 0
    return _SUPPORTED[release]


def detect_datapath(netns_name: str) -> rs.Datapath:
    """NATIVE where the kernel has nft_queue, COMPAT otherwise."""
    return rs.Datapath.NATIVE if native_queue_supported(netns_name) else rs.Datapath.COMPAT


def apply(netns_name: str, batch: str) -> int:
    """Run one ``nft -f`` batch in the namespace; CLOCK_REALTIME ns when it was in force."""
    netns.run(netns_name, ["nft", "-f", "-"], input=batch)
    return time.time_ns()


def install_compat_queue(netns_name: str, opts: rs.NftOptions) -> None:
    """COMPAT's iptables-nft NFQUEUE rules (``ruleset.compat_iptables_rules``)."""
    for args in rs.compat_iptables_rules(opts):
        netns.run(netns_name, ["iptables-nft", "-w", *args])


def remove(netns_name: str, opts: rs.NftOptions) -> list[str]:
    """Delete the table and COMPAT's iptables rules; the problems (the namespace may be gone)."""
    problems = []
    if not netns.exists(netns_name):
        return problems
    try:
        netns.run(netns_name, ["nft", "-f", "-"], input=rs.delete_table())
    except KernelError as e:
        problems.append(str(e))
    if opts.datapath is rs.Datapath.COMPAT:
        for args in rs.compat_iptables_rules(opts):
            delete = [a if a != "-A" else "-D" for a in args]
            netns.run(netns_name, ["iptables-nft", "-w", *delete], check=False)
    return problems
