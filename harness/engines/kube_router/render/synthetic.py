"""The generated clusters live in ``harness.model.synthetic`` (pure model data, no engine in
them); re-exported here for the render package's callers."""

from harness.model.synthetic import add_synthetic_policies, example_cluster, load_cluster, synthetic_cluster

__all__ = ["add_synthetic_policies", "example_cluster", "load_cluster", "synthetic_cluster"]
