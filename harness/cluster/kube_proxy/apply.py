"""kube-proxy's iptables calls in a node's namespace: the jump rules one by one, ``iptables-save
-t nat`` for stale chains, one ``iptables-restore --noflush --counters`` (nft or legacy backend).

Source: kubernetes v1.28.0 ``pkg/proxy/iptables/proxier.go`` syncProxyRules (EnsureChain +
EnsureRule(Prepend) per jump chain on a full sync; SaveInto(TableNAT) for "Delete chains no
longer in use"; RestoreAll(NoFlushTables, RestoreCounters)) and ``pkg/util/iptables/iptables.go``
(EnsureChain runs ``-N`` and accepts "already exists"; EnsureRule runs ``-C`` then ``-I``).

Everything lives in the node's namespace, so deleting the namespace (lab teardown, ``gc``)
removes it: kube-proxy leaves no state anywhere else (no sysctl is written, see render.py).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from harness.cluster.kube_proxy.render import JUMP_CHAINS, is_service_chain
from harness.errors import KernelError
from harness.kernel import netns
from harness.kernel.backends import Backend, check_not_mixed, exec_env, get_backend, require_tools


@dataclass
class ExecLog:
    """Counts and times the tool executions of one sync."""

    execs: int = 0
    phases: dict[str, int] = field(default_factory=dict)  # phase -> ns


class NodeIptables:
    """The backend's tools in one node namespace (iptables-legacy: the node's own xtables lock)."""

    def __init__(self, netns_name: str, backend: str | Backend = "nft"):
        self.ns = netns_name
        self.b = require_tools(get_backend(backend))
        self.env = exec_env(self.b, netns_name)
        check_not_mixed(netns_name, self.b)

    def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True,
            log: ExecLog | None = None) -> subprocess.CompletedProcess:
        """Run one tool in the namespace; a failure with ``check`` is a KernelError with its stderr."""
        if log is not None:
            log.execs += 1
        child = netns.popen(self.ns, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=self.env)
        out, err = child.communicate(input, timeout=120)
        proc = subprocess.CompletedProcess(list(argv), child.returncode, out, err)
        if check and proc.returncode != 0:
            first = next((ln for ln in err.splitlines() if ln.strip()), f"exit code {proc.returncode}")
            raise KernelError(f"{argv[0]} in {self.ns}: {first}")
        return proc

    def iptables(self, table: str, *args: str, check: bool = True, log: ExecLog | None = None):
        return self.run([self.b.iptables, "-w", "-t", table, *args], check=check, log=log)

    def ensure_jumps(self, log: ExecLog) -> None:
        """P syncProxyRules (full sync only): for each jump chain, EnsureChain then EnsureRule(Prepend)."""
        for jump in JUMP_CHAINS:
            made = self.iptables(jump.table, "-N", jump.dst, check=False, log=log)
            if made.returncode != 0 and "exists" not in made.stderr:
                raise KernelError(f"{self.b.iptables} -t {jump.table} -N {jump.dst} in {self.ns}: {made.stderr.strip()}")
            if self.iptables(jump.table, "-C", jump.src, *jump.args(), check=False, log=log).returncode != 0:
                self.iptables(jump.table, "-I", jump.src, *jump.args(), log=log)

    def nat_chains(self, log: ExecLog) -> list[str]:
        """Chain names of the nat table (utiliptables.GetChainsFromTable over ``iptables-save -t nat``)."""
        text = self.run([self.b.save, "-t", "nat"], log=log).stdout
        return [line[1:].split()[0] for line in text.splitlines() if line.startswith(":")]

    def restore(self, text: str, log: ExecLog) -> None:
        """``iptables-restore --noflush --counters`` of ``text`` (RestoreAll(NoFlushTables, RestoreCounters))."""
        self.run([*self.b.restore_argv(), "--noflush", "--counters"], input=text, log=log)

    def route_service_cidr(self, service_cidr: str, gateway: str, gateway_mac: str | None = None) -> None:
        """Route the service CIDR out of eth0 via ``gateway`` (onlink), standing in for a real
        node's default route: without it a packet to a ClusterIP that nothing DNATs is dropped
        by routing ("network unreachable") before kube-proxy's filter REJECT in FORWARD. The
        gateway is the underlay's reserved ``.1``, which no namespace holds; ``gateway_mac``
        (the underlay bridge's own MAC) is pinned as a permanent neighbour, so such a packet is
        delivered to the underlay namespace, which forwards nothing and drops it silently, as a
        real gateway black-holes a ClusterIP (an unanswered ARP would instead return ICMP host
        unreachable after ~3 s, an artifact). Nothing leaves the lab."""
        self.run(["ip", "route", "replace", service_cidr, "via", gateway, "dev", "eth0", "onlink"])
        if gateway_mac:
            self.run(["ip", "neigh", "replace", gateway, "lladdr", gateway_mac, "nud", "permanent", "dev", "eth0"])

    def conntrack_delete(self, args: list[str], log: ExecLog) -> int:
        """One ``conntrack`` deletion; "0 flow entries have been deleted" is not an error
        (conntrack.go NoConnectionToDelete). Returns the entries deleted."""
        proc = self.run(["conntrack", *args], check=False, log=log)
        text = (proc.stderr + proc.stdout).strip()
        if proc.returncode != 0 and "0 flow entries have been deleted" not in text:
            last = text.splitlines()[-1] if text else f"exit code {proc.returncode}"
            raise KernelError(f"conntrack {' '.join(args)} in {self.ns}: {last}")
        words = text.split()
        return int(words[words.index("flow") - 1]) if "flow" in words else 0

    def save(self, table: str) -> str:
        """``iptables-save -t <table>`` (for tests and reports)."""
        return self.run([self.b.save, "-t", table]).stdout


def stale_service_chains(existing: Sequence[str], active: set[str]) -> list[str]:
    """P: existing nat chains that are kube-proxy's service chains and no longer in use."""
    return [c for c in existing if is_service_chain(c) and c not in active]


def timed(log: ExecLog, phase: str, fn, *args, **kwargs):
    """Call ``fn`` and add its wall time (ns) to ``log.phases[phase]``."""
    t0 = time.perf_counter_ns()
    try:
        return fn(*args, **kwargs)
    finally:
        log.phases[phase] = log.phases.get(phase, 0) + time.perf_counter_ns() - t0
