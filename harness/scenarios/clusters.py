"""The cluster a scenario's lab is built from: a shipped topology plus, for scale runs, seeded
synthetic policies, so every sync of the controller costs what it costs on a cluster that size.

The scenarios add their own pods on top (``db/mariadb-0`` or ``db/target-0`` on node-a, the
``batch`` job or client pods on node-b): they need the topology's ``node-a`` and ``node-b`` to be
real nodes. ``default`` is the two-node topology every scenario ran on first; ``scale-100`` has
100 nodes (node-a and node-b real, 98 virtual) and 5,000 pods, so node-a's ipsets and routes are
those of a 100-node cluster. The synthetic policies are generated before the scenario's pods
exist: they live in the topology's own namespaces and select only its pods, so they add sync
cost without changing what the scenario's policy allows.

    cluster = scenario_cluster("scale-100", synthetic_policies=100, seed=0)
"""

from __future__ import annotations

from typing import Any

from harness.errors import ConfigError
from harness.model.cluster import Cluster

SCENARIO_NODES = ("node-a", "node-b")
SCALE_POLICIES = 100  # synthetic policies on scale topologies: ~1.7 s restore syncs on scale-100


def scenario_cluster(topology: str = "default", synthetic_policies: int = 0, seed: int = 0) -> Cluster:
    """``topology`` (a shipped name or a path) loaded, plus ``synthetic_policies`` generated
    policies (``add_synthetic_policies``, seeded). ConfigError when node-a / node-b are not
    real nodes of that topology."""
    from harness.model.synthetic import add_synthetic_policies
    from harness.model.topology import load_topology

    cluster = load_topology(topology)
    for name in SCENARIO_NODES:
        node = cluster.nodes.get(name)
        if node is None or not node.is_real:
            raise ConfigError(topology, "nodes", f"the scenarios need a real node {name!r}")
    if synthetic_policies:
        add_synthetic_policies(cluster, synthetic_policies, seed, prefix="synthetic")
    return cluster


def is_default(topology: str, synthetic_policies: int) -> bool:
    """True when the lab is the plain topology the module's ``lab`` fixture builds."""
    return topology == "default" and not synthetic_policies


def scenario_lab(request: Any, topology: str, synthetic_policies: int = 0, seed: int = 0) -> Any:
    """The lab for a test's configuration: the ``lab`` fixture for the plain default topology,
    else one built by ``lab_factory`` from ``scenario_cluster`` (torn down after the test)."""
    if is_default(topology, synthetic_policies):
        return request.getfixturevalue("lab")
    return request.getfixturevalue("lab_factory")(scenario_cluster(topology, synthetic_policies, seed))
