"""``bench proxy-load``: kube-proxy's rules for N Services under kube-router's syncs.

Pure: the synthetic Services and the rule counts they render to. Kernel (smoke size, both
strategies on one backend): kube-proxy's rules are really in the namespace while kube-router
syncs, and the cells, ratios and exec counts come out of measured syncs."""

from __future__ import annotations

import pytest

from harness.bench.common import run_id
from harness.bench.proxy_load import ProxyLoadConfig, run_proxy_load, synthetic_proxy_view
from harness.bench.proxy_load_commands import format_proxy_load
from harness.cluster.kube_proxy.render import render
from harness.errors import EnvironmentProblem


def test_synthetic_services_render_to_nat_rules_or_filter_rejects():
    ready = render(synthetic_proxy_view(30, 2)).restore_text()
    none = render(synthetic_proxy_view(30, 0)).restore_text()
    filter_ready, nat_ready = ready.split("*nat")
    filter_none, _ = none.split("*nat")
    assert filter_ready.count("-j REJECT") == 0 and filter_none.count("-j REJECT") == 30
    # per Service with 2 endpoints: capture + masquerade + 2 SEP jumps + 2 x (masq + DNAT)
    assert nat_ready.count("-A KUBE-SVC-") == 30 * 3 and nat_ready.count("-j DNAT") == 60
    view = synthetic_proxy_view(3, 2)
    assert [str(p.cluster_ip) for p in view.ports] == ["10.96.0.10", "10.96.0.11", "10.96.0.12"]
    assert len({ep for p in view.ports for ep in p.endpoints}) == 6


@pytest.mark.kernel
def test_smoke_run_measures_syncs_with_kube_proxy_rules_present():
    cfg = ProxyLoadConfig(services=(0, 20), variants=("none",), backends=("legacy",), nodes=3, pods_per_node=3,
                          policies=2, repeat=1, verbose=False)
    try:
        b = run_proxy_load(run_id(), cfg)
    except EnvironmentProblem as e:
        pytest.skip(str(e))
    cells = b.extra["cells"]
    assert [(c["strategy"], c["services"]) for c in cells] == [
        ("restore", 0), ("restore", 20), ("per-rule", 0), ("per-rule", 20)]
    assert [c["filter_rules"] for c in cells] == [3, 23, 3, 23]
    assert all(c["median_ms"] > 0 and c["execs"] > 10 for c in cells)
    assert cells[0]["ratio"] == 1.0 and cells[1]["ratio"] > 0
    assert cells[2]["execs"] > cells[0]["execs"]  # v1.1.1 spawns more processes than the restore sync
    assert "per-rule (v1.1.1)" in format_proxy_load(b)
