"""kube-router's sync cost with kube-proxy's rules on the node (``bench proxy-load``).

On a real node kube-router's execs share the tables with kube-proxy's rules. iptables-legacy
reads and replaces a whole table per exec (IPT_SO_GET_ENTRIES + IPT_SO_SET_REPLACE of the blob),
so every ``-C``/``-I``/``-A``/``-S`` of a sync costs more the more rules that table holds;
iptables-nft fetches its cache per command. This bench puts kube-proxy's rules for N Services
(``harness.cluster.kube_proxy``: what kubernetes v1.28.0 syncProxyRules writes, restored with
``iptables-restore --noflush`` after its EnsureChain/EnsureRule jumps) into a fresh node namespace
and then times kube-router's syncs of one generated cluster on top, per backend and strategy:

- ``restore``: the full sync with its exec sequence at the engine profile (default v2.10);
- ``per-rule``: v1.1.1's call-by-call sync (profile v1.1.1), hundreds of execs per sync.

Each cell: one untimed first sync, then ``repeat`` full re-syncs (new sync version: every chain
renamed), median total and phases. kube-proxy's rules come in two shapes (``variants``):
``ready`` — each Service has ``endpoints`` ready endpoints, so its rules live in the nat table
(capture, KUBE-SVC, KUBE-SEP chains) and the filter table only has kube-proxy's handful of fixed
rules; ``none`` — no Service has an endpoint, so each gets a REJECT in the filter table's
KUBE-SERVICES (the table kube-router writes). Ratios are against N=0 of the same backend,
variant and strategy in the same run (the machine's load cancels out of them only partly: read
the load average recorded with the result).

Assumptions: synthetic Services ``svc-NNNNN/svc`` with one TCP port 80 and cluster IPs from
10.96.0.10 up, endpoints on 10.244.200.0/21 port 8080 (addresses only: nothing answers; the bench
times rule programming, no packet flows); kube-proxy's own syncs are not timed or repeated.
"""

from __future__ import annotations

import ipaddress
import logging
import statistics
from dataclasses import asdict, dataclass, field

from harness.bench.baseline import Baseline
from harness.bench.common import fresh_ns, progress
from harness.cluster.kube_proxy.apply import ExecLog, NodeIptables
from harness.cluster.kube_proxy.render import ProxyView, ServicePortView, render
from harness.engines import registry
from harness.engines.config import BACKEND_NAMES, DEFAULT_PROFILE, EnforcementConfig
from harness.model.synthetic import synthetic_cluster

log = logging.getLogger(__name__)

NODE = "node-000"
BACKENDS = tuple(sorted(BACKEND_NAMES))  # legacy first
DEFAULT_SERVICES = (0, 100, 1000, 5000)
SMOKE_SERVICES = (0, 20)
VARIANTS = ("ready", "none")
# strategy -> the kube-router profile it reproduces (per-rule: the last release before save/restore)
STRATEGY_PROFILES = {"restore": DEFAULT_PROFILE, "per-rule": "v1.1.1"}
PHASES = ("top_level_time", "iptables_save_time", "ipset_save_time", "ipset_restore_time",
          "list_chains_time", "iptables_restore_time", "stale_cleanup_time")
SERVICE_IP_BASE = ipaddress.IPv4Address("10.96.0.10")
ENDPOINT_BASE = ipaddress.IPv4Address("10.244.200.0")


def synthetic_proxy_view(services: int, endpoints: int, cluster_cidr: str = "10.244.0.0/16") -> ProxyView:
    """``services`` ClusterIP Services of one TCP port, ``endpoints`` ready endpoints each. Pure."""
    ports = []
    for i in range(services):
        eps = tuple(f"{ENDPOINT_BASE + (i * endpoints + j) % 2048}:8080" for j in range(endpoints))
        ports.append(ServicePortView(f"svc-{i:05d}/svc", SERVICE_IP_BASE + i, 80, "tcp", tuple(sorted(eps))))
    return ProxyView(tuple(ports), cluster_cidr)


@dataclass
class ProxyLoadConfig:
    """What to run: Service counts, variants, backends, strategies, the kube-router cluster
    (``nodes`` x ``pods_per_node`` x ``policies``, node-000 measured) and repeats."""

    services: tuple[int, ...] = DEFAULT_SERVICES
    variants: tuple[str, ...] = VARIANTS
    backends: tuple[str, ...] = BACKENDS
    strategies: tuple[str, ...] = tuple(STRATEGY_PROFILES)
    nodes: int = 10
    pods_per_node: int = 10
    policies: int = 10
    endpoints: int = 2
    repeat: int = 5
    seed: int = 1
    verbose: bool = True


@dataclass
class LoadCell:
    """One backend x variant x strategy x Service count; times in ms."""

    backend: str
    variant: str
    strategy: str
    profile: str
    services: int
    filter_rules: int  # kube-proxy's rules in the filter table
    nat_rules: int  # ... and in the nat table
    total_ms: list[float] = field(default_factory=list)
    phases_ms: dict[str, float] = field(default_factory=dict)  # medians
    execs: int = 0
    ratio: float | None = None  # median / median at 0 Services (same backend, variant, strategy)

    @property
    def median_ms(self) -> float | None:
        return statistics.median(self.total_ms) if self.total_ms else None

    @property
    def ms_per_exec(self) -> float | None:
        m = self.median_ms
        return m / self.execs if m is not None and self.execs else None


def _kube_proxy_rules(ns: str, backend: str, view: ProxyView) -> tuple[int, int]:
    """Program kube-proxy's rules of ``view`` into ``ns`` (ensure_jumps + restore); their counts."""
    ruleset = render(view)
    text = ruleset.restore_text()
    node = NodeIptables(ns, backend)
    xlog = ExecLog()
    node.ensure_jumps(xlog)
    node.restore(text, xlog)
    table, counts = None, {"filter": 0, "nat": 0}
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith("-A ") and table in counts:
            counts[table] += 1
    return counts["filter"], counts["nat"]


def _measure(engine, cfg: ProxyLoadConfig, cluster, backend: str, strategy: str, ns: str) -> list[dict]:
    config = EnforcementConfig(engine="kube-router", profile=STRATEGY_PROFILES[strategy], strategy=strategy,
                               backend=backend)
    engine.validate(config, "bench proxy-load")
    node = engine.node(NODE, ns, config, None)
    index = node.prepare(cluster)
    version = 1_700_000_000_000_000_000
    node.apply(node.render(cluster, sync_version=version, prepared=index), full=True)
    out = []
    for r in range(cfg.repeat):
        rs = node.render(cluster, sync_version=version + 1 + r, prepared=index)
        out.append(node.apply(rs, full=True))
    return out


def run_proxy_load(run: str, cfg: ProxyLoadConfig) -> Baseline:
    """Run every cell; a Baseline of suite ``proxy-load``: per cell a metric ``<backend>.<variant>.
    <strategy>.svc<N>.sync_ms`` (gated) and the table in ``extra["cells"]``. Machine not stamped."""
    engine = registry.get_engine("kube-router", "bench proxy-load")
    cluster = synthetic_cluster(cfg.nodes, cfg.pods_per_node, cfg.policies, cfg.seed)
    result = Baseline("proxy-load", params=asdict(cfg))
    result.params.pop("verbose", None)
    result.params["profiles"] = {s: STRATEGY_PROFILES[s] for s in cfg.strategies}
    cells: list[LoadCell] = []
    for backend in cfg.backends:
        for variant in cfg.variants:
            for strategy in cfg.strategies:
                base: float | None = None
                for n in cfg.services:
                    view = synthetic_proxy_view(n, cfg.endpoints if variant == "ready" else 0,
                                                str(cluster.cluster_cidr))
                    progress(f"proxy-load {backend} {variant} {strategy}: {n} Services", cfg.verbose)
                    with fresh_ns(f"nph-{run}-pl") as ns:
                        f_rules, n_rules = _kube_proxy_rules(ns, backend, view)
                        timings = _measure(engine, cfg, cluster, backend, strategy, ns)
                    cell = LoadCell(backend, variant, strategy, STRATEGY_PROFILES[strategy], n, f_rules, n_rules,
                                    total_ms=[t["total"] / 1e6 for t in timings],
                                    phases_ms={p: statistics.median(int(t.get(p) or 0) for t in timings) / 1e6
                                               for p in PHASES},
                                    execs=int(statistics.median(t.get("execs") or 0 for t in timings)))
                    if base is None:
                        base = cell.median_ms
                    cell.ratio = round(cell.median_ms / base, 3) if base and cell.median_ms else None
                    result.add(f"{backend}.{variant}.{strategy}.svc{n}.sync_ms", "ms", cell.total_ms)
                    cells.append(cell)
    result.extra = {"cells": [{**asdict(c), "median_ms": c.median_ms, "ms_per_exec": c.ms_per_exec} for c in cells]}
    result.notes.append("ratio: median sync time / median at 0 Services, same backend, variant and strategy, "
                        "same run")
    return result
